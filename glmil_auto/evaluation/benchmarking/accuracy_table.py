"""The rows of the accuracy benchmark: one score per case per model, judged against the drawn
outcomes (AUC or Harrell's C with a bootstrap 95 % CI) and, on a synthetic cohort, against the
true probabilities (expected AUC, ``expected_auc.py``), with the fraction of the baseline ->
ceiling gap that each row closes.

Used by ``benchmarks/accuracy.py``; plain functions on arrays so that tests can check them.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pandas as pd

from glmil_auto.evaluation.benchmarking.expected_auc import expected_auc
from glmil_auto.evaluation.prediction_metrics import bootstrap_replicates
from glmil_auto.training.validation.validation_metrics import binary_auc, harrell_c

TABLE_COLUMNS = ("row", "n", "events", "metric", "value", "ci_low", "ci_high", "expected_auc", "gap_closed")


def score_metric(kind: str, score: np.ndarray, outcome: np.ndarray, time: np.ndarray | None,
                 n_bootstrap: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """AUC (binary) or Harrell's C (survival) on the cases with a known outcome, with a percentile
    bootstrap 95 % CI (NaN bounds without resamples)."""
    score, outcome = np.asarray(score, dtype=float), np.asarray(outcome, dtype=float)
    known = np.isfinite(score) & np.isfinite(outcome) & (np.isfinite(time) if time is not None else True)
    s, o = score[known], outcome[known]
    t = None if time is None else np.asarray(time, dtype=float)[known]
    value = binary_auc(s, o) if kind == "binary" else harrell_c(s, t, o)
    replicates = bootstrap_replicates(kind, s, o, t, n_bootstrap, rng) if n_bootstrap > 0 else np.array([])
    replicates = replicates[np.isfinite(replicates)]
    if replicates.size == 0:
        return float(value), float("nan"), float("nan")
    return float(value), float(np.percentile(replicates, 2.5)), float(np.percentile(replicates, 97.5))


def endpoint_table(endpoint: str, kind: str, rows: dict[str, np.ndarray], outcome: np.ndarray,
                   time: np.ndarray | None = None, truth: np.ndarray | None = None, baseline: str | None = None,
                   ceiling: str | None = None, n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One line per row (model) of one endpoint.

    ``rows``: name -> score per case (higher = more risk); ``outcome``: 0/1 (binary) or the event
    indicator (survival, with ``time``), NaN = unknown; ``truth``: the true probabilities (binary)
    for the expected AUC. ``gap_closed`` = (row - baseline) / (ceiling - baseline) on the expected
    AUC for binary endpoints and on Harrell's C for survival ones, where both rows are given.
    Every row is bootstrapped with the same resamples (one seed per endpoint)."""
    lines: list[dict[str, Any]] = []
    known = np.isfinite(np.asarray(outcome, dtype=float))
    for name, score in rows.items():
        rng = np.random.default_rng([int(seed), zlib.crc32(endpoint.encode("utf-8"))])
        value, low, high = score_metric(kind, score, outcome, time, n_bootstrap, rng)
        score = np.asarray(score, dtype=float)
        e_auc = float("nan")
        if kind == "binary" and truth is not None and np.isfinite(score).all():
            e_auc = expected_auc(score, np.asarray(truth, dtype=float))
        lines.append({"row": name, "n": int((known & np.isfinite(score)).sum()),
                      "events": int(np.nansum(np.asarray(outcome, dtype=float)[known & np.isfinite(score)])),
                      "metric": "AUC" if kind == "binary" else "Harrell C", "value": value, "ci_low": low,
                      "ci_high": high, "expected_auc": e_auc})
    table = pd.DataFrame(lines, columns=[c for c in TABLE_COLUMNS if c != "gap_closed"])
    judged = "expected_auc" if kind == "binary" and truth is not None else "value"
    table["gap_closed"] = np.nan
    if baseline in rows and ceiling in rows:
        base = float(table.loc[table["row"] == baseline, judged].iloc[0])
        top = float(table.loc[table["row"] == ceiling, judged].iloc[0])
        if np.isfinite(base) and np.isfinite(top) and top != base:
            table["gap_closed"] = (table[judged] - base) / (top - base)
    return table


def format_table(table: pd.DataFrame) -> str:
    """A Markdown table of :func:`endpoint_table`'s output."""
    header = "| row | n (events) | metric [95 % CI] | expected AUC | gap closed |\n|---|---|---|---|---|"
    lines = [header]
    for _, r in table.iterrows():
        ci = "" if not np.isfinite(r["ci_low"]) else f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        e_auc = "–" if not np.isfinite(r["expected_auc"]) else f"{r['expected_auc']:.3f}"
        gap = "–" if not np.isfinite(r["gap_closed"]) else f"{100 * r['gap_closed']:.0f} %"
        lines.append(f"| {r['row']} | {r['n']} ({r['events']}) | {r['metric']} {r['value']:.3f}{ci} | {e_auc} | {gap} |")
    return "\n".join(lines)
