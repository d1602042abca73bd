"""``metrics.json`` of ``glmil_evaluate``: every endpoint, the whole cohort and each group, the
model against its baselines, plus the cohort table and the multivariable models.

Inputs are aligned by case id:

- ``predictions``: ``glmil_predict``'s table indexed by case id (``<endpoint>`` and
  ``<endpoint>_uncalibrated`` for binary endpoints; ``<endpoint>_risk``, ``<endpoint>_risk_group``
  and ``<endpoint>_surv_<t>`` for survival endpoints);
- ``table``: the typed clinical table of the evaluated cohort (outcomes, clinical variables,
  the group column);
- ``baselines``: name -> a table indexed by case id with the same score columns (probability or
  score per binary endpoint, ``<endpoint>_risk`` per survival endpoint; higher = worse);
- ``train_survival``: per survival endpoint the training cohort's (time, event), for the
  censoring weights of Uno's C, the time-dependent AUC and the Brier score;
- ``binary_cutoffs``: per binary endpoint the risk-group cut-offs learnt on the training cohort's
  out-of-fold predictions, on the scale of ``<endpoint>_uncalibrated``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.evaluation.clinical_models.multivariable import (
    FIRTH,
    UNSTABLE_RATIO,
    multivariable_cox,
    multivariable_logistic,
)
from glmil_auto.evaluation.cohort_metrics import MODEL, binary_cohort, survival_cohort
from glmil_auto.inference.survival_probabilities import horizon_label

ALL = "all"


def _column(frame: pd.DataFrame, column: str, cases: pd.Index) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(cases), np.nan)
    return pd.to_numeric(frame[column].reindex(cases), errors="coerce").to_numpy(dtype=float)


def score_column(spec: DatasetSpec, endpoint: str) -> str:
    return endpoint if spec.endpoints[endpoint].type == "binary" else f"{endpoint}_risk"


def cohort_table(table: pd.DataFrame, spec: DatasetSpec, endpoints: Sequence[str], groups: pd.Series | None
                 ) -> list[dict[str, Any]]:
    """TRIPOD-style counts per group: cases, and per endpoint known outcomes, events, missing and
    (survival) censored; plus missing values of each clinical variable."""
    rows = []
    for label, cases in cohorts(table.index, groups):
        part = table.loc[cases]
        row: dict[str, Any] = {"group": label, "n": int(len(part))}
        for name in endpoints:
            declared = spec.endpoints[name]
            if declared.type == "binary":
                values = pd.to_numeric(part.get(name), errors="coerce") if name in part else pd.Series(dtype=float)
                row[name] = {"known": int(values.notna().sum()), "events": int(values.sum()),
                             "missing": int(len(part) - values.notna().sum())}
            else:
                time = pd.to_numeric(part.get(declared.time), errors="coerce") if declared.time in part else None
                event = pd.to_numeric(part.get(declared.event), errors="coerce") if declared.event in part else None
                known = (time.notna() & event.notna()) if time is not None and event is not None else pd.Series(False)
                events = int(event[known].sum()) if event is not None else 0
                row[name] = {"known": int(known.sum()), "events": events, "censored": int(known.sum()) - events,
                             "missing": int(len(part) - known.sum())}
        row["missing_clinical"] = {f: int(part[f].isna().sum()) for f in spec.clinical_features if f in part}
        rows.append(row)
    return rows


def _groups(cases: pd.Index, groups: pd.Series | None) -> list[tuple[str, pd.Index]]:
    if groups is None:
        return []
    labels = groups.reindex(cases)
    return [(label, cases[(labels.astype(str) == label).to_numpy() & labels.notna().to_numpy()])
            for label in sorted({str(v) for v in labels.dropna()})]


def cohorts(cases: pd.Index, groups: pd.Series | None) -> list[tuple[str, pd.Index]]:
    """``all`` and each group with its cases. A group that holds every case (a single centre, a
    single fold) is left out: its numbers are those of ``all``, and the report would show each
    table twice (:func:`single_group` names it)."""
    return [(ALL, cases)] + [(label, part) for label, part in _groups(cases, groups) if len(part) < len(cases)]


def single_group(cases: pd.Index, groups: pd.Series | None) -> str | None:
    """The label of the one group that holds every case, or None."""
    return next((label for label, part in _groups(cases, groups) if len(part) == len(cases) and len(cases)), None)


def evaluate_cohort(predictions: pd.DataFrame, table: pd.DataFrame, spec: DatasetSpec,
                    baselines: Mapping[str, pd.DataFrame] | None = None, groups: pd.Series | None = None,
                    train_survival: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
                    binary_cutoffs: Mapping[str, Sequence[float]] | None = None,
                    horizons: Sequence[float] = (12.0, 24.0), n_bootstrap: int = 1000, seed: int = 0,
                    progress: Any = None) -> dict[str, Any]:
    """The ``cohort_table``, ``endpoints`` and ``multivariable`` parts of ``metrics.json``.

    Evaluated are the cases of ``table`` that have a prediction; ``progress`` (a tqdm bar or None)
    is advanced once per endpoint and cohort."""
    baselines = dict(baselines or {})
    cases = table.index[table.index.isin(predictions.index)]
    table = table.loc[cases]
    endpoints = [name for name in spec.endpoints if score_column(spec, name) in predictions.columns]
    out: dict[str, Any] = {"cohort_table": cohort_table(table, spec, endpoints, groups), "endpoints": {},
                           "multivariable": {}}
    if single_group(cases, groups) is not None:  # evaluated once, as "all"
        out["single_group"] = single_group(cases, groups)
    for name in endpoints:
        declared = spec.endpoints[name]
        column = score_column(spec, name)
        entry: dict[str, Any] = {"type": declared.type, "cohorts": {}}
        for label, part in cohorts(cases, groups):
            scores = {MODEL: _column(predictions, column, part)}
            for baseline, frame in baselines.items():
                if column in frame.columns:
                    scores[baseline] = _column(frame, column, part)
            if declared.type == "binary":
                y = _column(table, name, part)
                uncalibrated = (_column(predictions, f"{name}_uncalibrated", part)
                                if f"{name}_uncalibrated" in predictions.columns else None)
                before_update = (_column(predictions, f"{name}_before_update", part)  # an updated model folder's
                                 if f"{name}_before_update" in predictions.columns else None)
                entry["cohorts"][label] = binary_cohort(
                    y, scores, n_bootstrap, seed, uncalibrated=uncalibrated, before_update=before_update,
                    risk_cutoffs=(binary_cutoffs or {}).get(name),
                    risk_score=uncalibrated if uncalibrated is not None else scores[MODEL])
            else:
                time, event = _column(table, declared.time, part), _column(table, declared.event, part)
                surv_columns = [f"{name}_surv_{horizon_label(h)}" for h in horizons]
                probabilities = (np.column_stack([_column(predictions, c, part) for c in surv_columns])
                                 if all(c in predictions.columns for c in surv_columns) else None)
                groups_column = f"{name}_risk_group"
                risk_groups = (predictions[groups_column].reindex(part).to_numpy(dtype=object)
                               if groups_column in predictions.columns else None)
                train = (train_survival or {}).get(name, (time, event))
                entry["cohorts"][label] = survival_cohort(time, event, scores, train, horizons, n_bootstrap, seed,
                                                          risk_groups=risk_groups,
                                                          survival_probabilities=probabilities)
            if progress is not None:
                progress.update()
        out["endpoints"][name] = entry
        out["multivariable"][name] = _multivariable(predictions, table, spec, name, cases)
    return out


def _multivariable(predictions: pd.DataFrame, table: pd.DataFrame, spec: DatasetSpec, name: str,
                   cases: pd.Index) -> dict[str, Any] | None:
    """The model score (per standard deviation) with the dataset's clinical variables: maximum
    likelihood, or Firth's penalised likelihood where the data separate (``method``,
    ``estimation`` and ``separation`` say which and why)."""
    declared = spec.endpoints[name]
    score = pd.Series(_column(predictions, score_column(spec, name), cases), index=cases)
    sd = float(score.std())
    if not math.isfinite(sd) or sd == 0:
        return {"reason": "the model score does not vary"}
    score = (score - score.mean()) / sd
    covariates = table[[f for f in spec.clinical_features if f in table.columns]].copy()
    covariates = covariates.loc[:, covariates.notna().any()]
    try:
        with warnings.catch_warnings():  # the fits keep their own warnings in the result; none is printed
            warnings.simplefilter("ignore")
            result, ratio = _fit_multivariable(table, declared, name, score, covariates)
    except Exception as exc:  # noqa: BLE001 - a singular design must not stop the report
        return {"reason": f"{type(exc).__name__}: {exc}"}
    rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in result.table.to_dict(orient="records")]
    out = {"rows": rows, "ratio_name": ratio, "n": int(result.n), "events": int(result.events),
           "dropped": int(result.dropped), "warnings": list(result.warnings), "method": result.method,
           "estimation": result.estimation}
    if result.separation is not None:
        out["separation"] = result.separation
    unstable = _unstable(rows, ratio, result)
    if unstable:
        out["unstable"] = (f"the {'Firth ' if result.method == FIRTH else ''}fit is not reliable "
                           f"({int(result.events)} events for {len(rows)} terms; {unstable}): the estimates are not "
                           "interpretable")
    return out


def _unstable(rows: list[dict[str, Any]], ratio: str, result: Any) -> str | None:
    """Why the reported fit (maximum likelihood kept, or Firth's) is still not a usable estimate:
    a ratio beyond ``UNSTABLE_RATIO`` or without a CI, a fit that did not converge, or a warning
    about convergence or separation."""
    extreme = [row["term"] for row in rows if row.get("ci_low") is None or row.get("ci_high") is None
               or row.get(ratio) is None or not 1 / UNSTABLE_RATIO < float(row[ratio]) < UNSTABLE_RATIO]
    signs = [] if result.method == FIRTH else [m for m in result.warnings  # Firth's: the fit's own flag
                                               if "converge" in m.lower() or "separation" in m.lower()]
    reasons = ([f"ratios beyond 1e4 or without a CI for {extreme}"] if extreme else []) + signs[:1]
    if not result.converged and not signs:
        reasons.append("the fit did not converge")
    return "; ".join(reasons) or None


def _fit_multivariable(table: pd.DataFrame, declared: Any, name: str, score: pd.Series, covariates: pd.DataFrame):
    if declared.type == "binary":
        result = multivariable_logistic(table[name].to_numpy(dtype=float), score, covariates,
                                        score_name="model score (per SD)")
        return result, "odds_ratio"
    result = multivariable_cox(table[declared.time].to_numpy(dtype=float), table[declared.event].to_numpy(dtype=float),
                               score, covariates, score_name="model score (per SD)")
    return result, "hazard_ratio"
