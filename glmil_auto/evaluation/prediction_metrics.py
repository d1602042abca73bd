"""Evaluate a ``predictions.csv`` against the outcomes of a clinical table.

    result = evaluate_predictions(predictions, table, spec, truth=None, n_bootstrap=1000, seed=0)

One row per endpoint of ``spec`` that the predictions hold: AUC (binary endpoints, the column
``<endpoint>``, a probability) or Harrell's C (survival endpoints, the column ``<endpoint>_risk``,
higher = worse), with a seeded 95 % percentile bootstrap CI over cases and, given the synthetic
cohort's truth file, the truth ceiling: the same metric of the true probabilities (true linear
predictor for survival) on the same cases.

Point estimates are ``sklearn.metrics.roc_auc_score`` and ``sksurv.metrics.concordance_index_censored``
(through :mod:`glmil_auto.training.validation_metrics`). The bootstrap uses the pairwise form of the
same statistics, weighted by how often each case was drawn, which equals those functions on each
resampled data set (tests check this) and is much faster than calling them 1000 times.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.training.validation_metrics import binary_auc, harrell_c

CASE_COLUMN = "case_id"
RISK_SUFFIX = "_risk"
RISK_GROUP_SUFFIX = "_risk_group"
METRIC_NAMES = {"binary": "AUC", "survival": "Harrell's C"}
TIED_RISK_TOLERANCE = 1e-8  # sksurv.metrics.concordance_index_censored's default tied_tol
_MAX_PAIRWISE_CASES = 3000  # above this the bootstrap calls sklearn / sksurv per replicate
_MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a"})

RESULT_COLUMNS = [
    "endpoint", "type", "metric", "n", "events", "missing_prediction", "unknown_outcome",
    "model", "ci_low", "ci_high", "n_bootstrap_valid", "truth_ceiling", "n_truth",
]


class PredictionEvaluationError(ValueError):
    """Predictions (or outcomes) that cannot be evaluated; the message says what is wrong."""


def prediction_column(spec: DatasetSpec, endpoint: str) -> str:
    """``<endpoint>`` for a binary endpoint, ``<endpoint>_risk`` for a survival endpoint."""
    return endpoint if spec.endpoints[endpoint].type == "binary" else endpoint + RISK_SUFFIX


# ----------------------------------------------------------------------------------------------- input


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a ``predictions.csv`` keeping every cell as text (case ids stay strings, e.g. ``0001``)."""
    path = Path(path)
    if not path.is_file():
        raise PredictionEvaluationError(f"predictions file not found: {path}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PredictionEvaluationError(f"{path}: cannot be parsed as CSV ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    return table.apply(lambda column: column.str.strip())


def _case_column(predictions: pd.DataFrame, spec: DatasetSpec) -> str:
    for column in dict.fromkeys((CASE_COLUMN, spec.case_column)):
        if column in predictions.columns:
            return column
    raise PredictionEvaluationError(
        f"the predictions have no case id column '{CASE_COLUMN}'"
        + (f" (or '{spec.case_column}')" if spec.case_column != CASE_COLUMN else "")
        + f"; columns found: {list(predictions.columns)}"
    )


def _numeric(values: pd.Series, column: str) -> np.ndarray:
    """float64 with NaN for missing cells; raises naming the column and the first bad cells."""
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=float)
    text = values.astype(str).str.strip()
    missing = text.str.lower().isin(_MISSING_TOKENS) | values.isna()
    parsed = pd.to_numeric(text.where(~missing), errors="coerce")
    bad = parsed.isna() & ~missing
    if bad.any():
        examples = ", ".join(f"{i}: {v!r}" for i, v in list(text[bad].items())[:3])
        raise PredictionEvaluationError(f"column '{column}' holds values that are not numbers ({examples})")
    out = parsed.to_numpy(dtype=float)
    out[~np.isfinite(out)] = np.nan
    return out


def predicted_endpoints(predictions: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """The endpoints of ``spec`` that the predictions hold, checked for half-present columns.

    Raises :class:`PredictionEvaluationError` when a survival endpoint has ``<e>_risk_group`` but
    not ``<e>_risk``, or when no endpoint of the dataset is predicted at all.
    """
    present = []
    for name, endpoint in spec.endpoints.items():
        column = prediction_column(spec, name)
        if column in predictions.columns:
            present.append(name)
        elif endpoint.type == "survival" and name + RISK_GROUP_SUFFIX in predictions.columns:
            raise PredictionEvaluationError(
                f"column '{column}' is missing: survival endpoint '{name}' has '{name}{RISK_GROUP_SUFFIX}' "
                f"but the risk score '{column}' is needed to compute Harrell's C"
            )
    if not present:
        expected = [prediction_column(spec, n) for n in spec.endpoints]
        raise PredictionEvaluationError(
            f"no prediction column for any endpoint of the dataset: expected one of {expected}, "
            f"found columns {list(predictions.columns)}"
        )
    return present


def indexed_predictions(predictions: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Predictions indexed by case id (string), with a case column checked for blanks/duplicates."""
    column = _case_column(predictions, spec)
    ids = predictions[column].astype(str).str.strip()
    if (ids == "").any() or predictions[column].isna().any():
        raise PredictionEvaluationError(f"column '{column}' has empty case ids")
    duplicated = sorted(set(ids[ids.duplicated()]))
    if duplicated:
        raise PredictionEvaluationError(f"case ids appear in more than one row: {duplicated[:5]}")
    return predictions.set_axis(pd.Index(ids.to_numpy(), name=column), axis=0)


# ----------------------------------------------------------------------------------------------- truth


def truth_scores(truth: dict, spec: DatasetSpec, endpoint: str, cases: list[str]) -> np.ndarray:
    """The truth file's true score per case (NaN where unknown).

    Binary endpoint: ``cases[c]["probabilities"][endpoint]``; survival endpoint:
    ``cases[c][endpoint]["linear_predictor"]`` (the synthetic cohort's ``os`` record).
    """
    records = truth.get("cases", {})
    survival = spec.endpoints[endpoint].type == "survival"
    out = np.full(len(cases), np.nan)
    for i, case in enumerate(cases):
        record = records.get(case)
        if not isinstance(record, dict):
            continue
        source = record.get(endpoint) if survival else record.get("probabilities")
        key = "linear_predictor" if survival else endpoint
        value = source.get(key) if isinstance(source, dict) else None
        if value is not None:
            out[i] = float(value)
    return out


def truth_for_dataset(dataset_folder: str | Path) -> tuple[Path | None, dict | None]:
    """``(path, content)`` of the synthetic truth file beside a raw dataset folder, or ``(None, None)``.

    Uses :func:`glmil_auto.synthetic.truth.load_truth` (the existing reader); a real dataset simply
    has no truth file.
    """
    from glmil_auto.synthetic.truth import load_truth, truth_path

    path = truth_path(dataset_folder)
    if not path.is_file():
        return None, None
    return path, load_truth(path)


# ----------------------------------------------------------------------------------------------- metrics


def _pair_matrices(kind: str, score: np.ndarray, time: np.ndarray | None, event: np.ndarray | None):
    """``(numerator, denominator)`` pair matrices so that a statistic on a resample with case counts
    ``w`` is ``w @ N @ w / w @ D @ w`` (diagonals are 0, so a case never pairs with its own copies)."""
    if kind == "binary":
        positive = event.astype(bool)
        diff = score[:, None] - score[None, :]
        win = (diff > 0) + 0.5 * (diff == 0)
        both = positive[:, None] & ~positive[None, :]
        return np.where(both, win, 0.0), both.astype(float)
    e = event.astype(bool)
    comparable = e[:, None] & ((time[:, None] < time[None, :]) | ((time[:, None] == time[None, :]) & ~e[None, :]))
    diff = score[:, None] - score[None, :]
    tie = np.abs(diff) <= TIED_RISK_TOLERANCE
    win = np.where(tie, 0.5, (diff > 0).astype(float))
    return np.where(comparable, win, 0.0), comparable.astype(float)


def _statistic(kind: str, score: np.ndarray, outcome: np.ndarray, time: np.ndarray | None) -> float:
    if kind == "binary":
        return binary_auc(score, outcome)
    return harrell_c(score, time, outcome)


def bootstrap_replicates(kind: str, score: np.ndarray, outcome: np.ndarray, time: np.ndarray | None,
                         n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """The statistic on ``n_bootstrap`` case resamples (NaN where a resample has no usable pair).

    ``outcome`` is the 0/1 label (binary) or the event indicator (survival, with ``time``); all
    cases must have a known outcome. Resample ``b`` draws ``rng.integers(0, n, n)``.
    """
    n = len(score)
    draws = rng.integers(0, n, size=(n_bootstrap, n)) if n_bootstrap > 0 else np.empty((0, n), int)
    if n > _MAX_PAIRWISE_CASES:
        return np.array([_statistic(kind, score[d], outcome[d], None if time is None else time[d]) for d in draws])
    numerator, denominator = _pair_matrices(kind, score, time, outcome)
    out = np.empty(len(draws))
    for start in range(0, len(draws), 200):
        chunk = draws[start:start + 200]
        counts = np.zeros((len(chunk), n))
        np.add.at(counts, (np.repeat(np.arange(len(chunk)), n), chunk.ravel()), 1.0)
        num = np.einsum("bi,bi->b", counts @ numerator, counts)
        den = np.einsum("bi,bi->b", counts @ denominator, counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + len(chunk)] = np.where(den > 0, num / den, np.nan)
    return out


def _endpoint_seed(seed: int, endpoint: str) -> np.random.Generator:
    """A stream per endpoint, independent of which other endpoints are evaluated."""
    return np.random.default_rng([int(seed), zlib.crc32(endpoint.encode("utf-8"))])


def evaluate_predictions(predictions: pd.DataFrame, table: pd.DataFrame, spec: DatasetSpec,
                         truth: dict | None = None, n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per endpoint of ``spec`` present in ``predictions`` (columns :data:`RESULT_COLUMNS`).

    ``predictions``: a ``case_id`` column (or the dataset's case column) plus ``<endpoint>`` /
    ``<endpoint>_risk`` columns (text or numbers). ``table``: the typed clinical table indexed by
    case id (``RawDataset.clinical_table``). Evaluated are the cases with both a prediction and a
    known outcome; ``missing_prediction`` counts the table's cases with a known outcome but no
    (or an empty) prediction, ``unknown_outcome`` the predicted cases whose outcome is unknown or
    which are not in the table. ``ci_low``/``ci_high``: 2.5/97.5 percentiles of the bootstrap over
    the evaluated cases (resamples without a usable pair are dropped; ``n_bootstrap_valid`` says how
    many were kept). ``truth_ceiling``: the metric of the truth's scores on the same cases (NaN
    without a truth dict or when a case has no truth; ``n_truth`` counts cases with one).

    Endpoints whose outcome columns the table lacks are skipped: ``result.attrs["skipped"]`` maps
    them to the reason. Raises :class:`PredictionEvaluationError` for missing columns, no case in
    common, or nothing left to evaluate.
    """
    indexed = indexed_predictions(predictions, spec)
    endpoints = predicted_endpoints(indexed, spec)
    table_ids = pd.Index(table.index.astype(str))
    table = table.set_axis(table_ids, axis=0)
    common = indexed.index.intersection(table_ids)
    if len(common) == 0:
        raise PredictionEvaluationError(
            f"no case id of the predictions is in the clinical table (predictions: "
            f"{list(indexed.index[:3])}..., table: {list(table_ids[:3])}...)"
        )

    rows, skipped = [], {}
    for name in endpoints:
        declared = spec.endpoints[name]
        outcome_columns = list(declared.columns)
        absent = [c for c in outcome_columns if c not in table.columns]
        if absent:
            skipped[name] = f"the clinical table has no outcome column(s) {absent}"
            continue
        column = prediction_column(spec, name)
        score_all = pd.Series(_numeric(indexed[column], column), index=indexed.index)
        if declared.type == "binary":
            known_all = table[name].notna()
        else:
            known_all = table[declared.time].notna() & table[declared.event].notna()
        predicted = score_all.index[score_all.notna().to_numpy()]
        known = table_ids[known_all.to_numpy()]
        usable = set(known) & set(predicted)
        cases = [c for c in table_ids if c in usable]  # table order
        row = dict(
            endpoint=name, type=declared.type, metric=METRIC_NAMES[declared.type], n=len(cases),
            missing_prediction=len(set(known) - set(predicted)),
            unknown_outcome=len(set(predicted) - set(known)),
        )
        score = score_all.loc[cases].to_numpy(dtype=float)
        if declared.type == "binary":
            outcome, time = table.loc[cases, name].to_numpy(dtype=float), None
        else:
            outcome = table.loc[cases, declared.event].to_numpy(dtype=float)
            time = table.loc[cases, declared.time].to_numpy(dtype=float)
        row["events"] = int(outcome.sum())
        row["model"] = _statistic(declared.type, score, outcome, time) if cases else math.nan
        if cases and not math.isnan(row["model"]) and n_bootstrap > 0:
            reps = bootstrap_replicates(declared.type, score, outcome, time, n_bootstrap,
                                        _endpoint_seed(seed, name))
            reps = reps[np.isfinite(reps)]
        else:
            reps = np.empty(0)
        row["n_bootstrap_valid"] = int(reps.size)
        row["ci_low"], row["ci_high"] = (
            (float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))) if reps.size else (math.nan, math.nan)
        )
        row["truth_ceiling"], row["n_truth"] = math.nan, 0
        if truth is not None and cases:
            true_score = truth_scores(truth, spec, name, cases)
            row["n_truth"] = int(np.isfinite(true_score).sum())
            if row["n_truth"] == len(cases):
                row["truth_ceiling"] = _statistic(declared.type, true_score, outcome, time)
        rows.append(row)

    if not rows:
        raise PredictionEvaluationError(
            "nothing to evaluate: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    result = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    result.attrs["skipped"] = skipped
    result.attrs["n_bootstrap"] = int(n_bootstrap)
    result.attrs["seed"] = int(seed)
    return result


# ----------------------------------------------------------------------------------------------- output


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def format_result(result: pd.DataFrame) -> str:
    """A plain text table: ``endpoint  metric  n  events  model [95% CI]  truth ceiling``."""
    header = ["endpoint", "metric", "n", "events", "model [95% CI]", "truth ceiling"]
    lines = []
    for r in result.itertuples():
        ci = f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if not math.isnan(r.ci_low) else "[n/a]"
        lines.append([r.endpoint, r.metric, str(r.n), str(r.events), f"{_fmt(r.model)} {ci}", _fmt(r.truth_ceiling)])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    right = {2, 3}

    def render(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [render(header), render(["-" * w for w in widths])] + [render(line) for line in lines]
    notes = []
    for r in result.itertuples():
        if r.missing_prediction or r.unknown_outcome:
            notes.append(f"{r.endpoint}: excluded {r.missing_prediction} case(s) without a prediction, "
                         f"{r.unknown_outcome} predicted case(s) without a known outcome")
        n_boot = result.attrs.get("n_bootstrap", 0)
        if n_boot and r.n_bootstrap_valid < n_boot and not math.isnan(r.model):
            notes.append(f"{r.endpoint}: only {r.n_bootstrap_valid} of {n_boot} resamples were usable "
                         f"(too few {'events' if r.type == 'survival' else 'positives or negatives'}); "
                         "the CI is unreliable")
        if 0 < r.n_truth < r.n:
            notes.append(f"{r.endpoint}: truth ceiling not computed, {r.n - r.n_truth} case(s) have no truth")
    for name, reason in result.attrs.get("skipped", {}).items():
        notes.append(f"{name}: not evaluated, {reason}")
    return "\n".join(out + notes)


def result_to_json(result: pd.DataFrame) -> dict:
    """JSON-safe: ``{"n_bootstrap", "seed", "endpoints": [row, ...], "skipped": {...}}`` (NaN -> null)."""
    records = []
    for row in result.to_dict(orient="records"):
        records.append({
            k: (None if isinstance(v, float) and math.isnan(v) else (v.item() if isinstance(v, np.generic) else v))
            for k, v in row.items()
        })
    return {
        "n_bootstrap": result.attrs.get("n_bootstrap"),
        "seed": result.attrs.get("seed"),
        "confidence_interval": "95 % percentile bootstrap over cases",
        "endpoints": records,
        "skipped": dict(result.attrs.get("skipped", {})),
    }
