"""Every number of one endpoint on one cohort: the model against its baselines.

``binary_cohort`` and ``survival_cohort`` return JSON-safe dicts (the entries of
``metrics.json``, schema in documentation/evaluation.md) built from the numerics of
:mod:`~glmil_auto.evaluation.metrics.binary_metrics`, :mod:`~glmil_auto.evaluation.metrics.delong` and
:mod:`~glmil_auto.evaluation.metrics.survival_metrics`. A number that cannot be computed on a cohort
(one class only, too few events, a horizon beyond follow-up) is ``None`` with a reason, never an
exception: a small per-centre cohort must not stop the report of the others.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from glmil_auto.evaluation.metrics import binary_metrics, survival_metrics
from glmil_auto.evaluation.metrics.delong import delong_test
from glmil_auto.inference.risk_groups import RISK_GROUP_NAMES, assign_risk_groups

MODEL = "model"
DCA_THRESHOLDS = np.round(np.arange(0.01, 0.81, 0.01), 2)
KM_TIMES_COUNT = 6


def _safe(compute: Callable[[], Any]) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, reason)`` when the numerics refuse this cohort."""
    try:
        return compute(), None
    except (ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
        return None, str(exc)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def _is_probability(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.min() >= 0.0 and finite.max() <= 1.0


# ------------------------------------------------------------------------------------------ binary
def binary_score_metrics(y: np.ndarray, p: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """AUC [CI], AUPRC, Brier, calibration and the ROC curve of one score (Brier and calibration
    only for probabilities)."""
    out: dict[str, Any] = {}
    out["auc"], out["auc_reason"] = _safe(lambda: binary_metrics.auc_with_ci(y, p, n_bootstrap, seed))
    out["auprc"], _ = _safe(lambda: binary_metrics.auprc(y, p))
    probability = _is_probability(p)
    out["brier"] = _safe(lambda: binary_metrics.brier(y, p))[0] if probability else None
    out["calibration"] = _safe(lambda: binary_metrics.calibration_intercept_slope(y, p))[0] if probability else None
    known = np.isfinite(y) & np.isfinite(p)
    if known.any() and len(set(y[known])) == 2:
        fpr, tpr, _ = roc_curve(y[known], p[known])
        out["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    else:
        out["roc"] = None
    return out


def binary_cohort(y: np.ndarray, scores: Mapping[str, np.ndarray], n_bootstrap: int = 1000, seed: int = 0,
                  uncalibrated: np.ndarray | None = None, risk_cutoffs: Sequence[float] | None = None,
                  risk_score: np.ndarray | None = None) -> dict[str, Any]:
    """One binary endpoint on one cohort. ``scores``: the model (key :data:`MODEL`) and each
    baseline, aligned with ``y`` (NaN = no prediction). ``uncalibrated``: the model's probabilities
    before recalibration (calibration before and after). ``risk_cutoffs`` on ``risk_score``
    (default: the model's score): the risk groups learnt on the training cohort."""
    y = np.asarray(y, dtype=float)
    model = np.asarray(scores[MODEL], dtype=float)
    known = np.isfinite(y) & np.isfinite(model)
    entry: dict[str, Any] = {"n": int(known.sum()), "events": int(y[known].sum()), "scores": {}, "comparisons": []}
    for name, values in scores.items():
        entry["scores"][name] = binary_score_metrics(y, np.asarray(values, dtype=float), n_bootstrap, seed)
    if uncalibrated is not None:
        entry["scores"][MODEL]["calibration_uncalibrated"] = _safe(
            lambda: binary_metrics.calibration_intercept_slope(y, np.asarray(uncalibrated, dtype=float)))[0]
    for name, values in scores.items():
        if name == MODEL:
            continue
        test, reason = _safe(lambda: delong_test(y, model, np.asarray(values, dtype=float)))
        entry["comparisons"].append({"baseline": name, **(test or {"reason": reason})})
    curves = {name: values for name, values in scores.items() if _is_probability(np.asarray(values, dtype=float))}
    if uncalibrated is not None:
        curves[f"{MODEL} (uncalibrated)"] = np.asarray(uncalibrated, dtype=float)
    entry["calibration_curve"] = {}
    for name, values in curves.items():
        points, _ = _safe(lambda: binary_metrics.calibration_curve_points(y, values))
        if points is not None:
            entry["calibration_curve"][name] = _records(points)
    entry["decision_curve"] = _decision_curve(y, {n: v for n, v in curves.items() if n != f"{MODEL} (uncalibrated)"})
    entry["risk_groups"] = _binary_risk_groups(y, model if risk_score is None else np.asarray(risk_score, float),
                                               risk_cutoffs)
    return entry


def _decision_curve(y: np.ndarray, probabilities: Mapping[str, np.ndarray]) -> dict[str, Any] | None:
    out: dict[str, Any] = {"thresholds": DCA_THRESHOLDS.tolist(), "curves": {}}
    for name, p in probabilities.items():
        table, _ = _safe(lambda: binary_metrics.net_benefit(y, p, DCA_THRESHOLDS))
        if table is None:
            continue
        out["curves"][name] = table["model"].tolist()
        out.setdefault("treat_all", table["treat_all"].tolist())
        out.setdefault("treat_none", table["treat_none"].tolist())
    return out if out["curves"] else None


def _binary_risk_groups(y: np.ndarray, score: np.ndarray, cutoffs: Sequence[float] | None) -> dict[str, Any] | None:
    if not cutoffs:
        return None
    names = RISK_GROUP_NAMES if len(cutoffs) == 2 else [f"group {i + 1}" for i in range(len(cutoffs) + 1)]
    groups = np.array(assign_risk_groups(score, cutoffs, names), dtype=object)
    groups[~np.isfinite(score)] = np.nan
    table, test = binary_metrics.risk_group_event_rates(y, groups)
    high, _ = _safe(lambda: binary_metrics.threshold_metrics(y, score, float(max(cutoffs))))
    return {"cutoffs": [float(c) for c in cutoffs], "table": _records(table), "test": test,
            "threshold_metrics_high_risk": high}


# ------------------------------------------------------------------------------------------ survival
def survival_score_metrics(time: np.ndarray, event: np.ndarray, risk: np.ndarray, train: tuple[np.ndarray, np.ndarray],
                           horizons: Sequence[float], n_bootstrap: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["harrell"], out["harrell_reason"] = _safe(
        lambda: survival_metrics.harrell_c_with_ci(time, event, risk, n_bootstrap, seed))
    out["uno"], out["uno_reason"] = _safe(
        lambda: survival_metrics.uno_c_with_ci(*train, time, event, risk, n_bootstrap=n_bootstrap, seed=seed))
    out["td_auc"], out["td_auc_reason"] = _safe(
        lambda: survival_metrics.time_dependent_auc(*train, time, event, risk, list(horizons)))
    return out


def survival_cohort(time: np.ndarray, event: np.ndarray, scores: Mapping[str, np.ndarray],
                    train: tuple[np.ndarray, np.ndarray], horizons: Sequence[float] = (12.0, 24.0),
                    n_bootstrap: int = 1000, seed: int = 0, risk_groups: np.ndarray | None = None,
                    survival_probabilities: np.ndarray | None = None) -> dict[str, Any]:
    """One survival endpoint on one cohort: every score's Harrell / Uno C and time-dependent AUC,
    the paired test of the model against each baseline, the integrated Brier score of the model's
    survival probabilities at ``horizons`` and Kaplan-Meier, log-rank and hazard ratios of the
    model's risk groups. ``train`` = (time, event) of the training cohort (censoring weights)."""
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=float)
    model = np.asarray(scores[MODEL], dtype=float)
    known = np.isfinite(time) & np.isfinite(event) & np.isfinite(model)
    entry: dict[str, Any] = {"n": int(known.sum()), "events": int(event[known].sum()), "scores": {},
                             "comparisons": []}
    for name, values in scores.items():
        entry["scores"][name] = survival_score_metrics(time, event, np.asarray(values, dtype=float), train, horizons,
                                                       n_bootstrap, seed)
    for name, values in scores.items():
        if name == MODEL:
            continue
        test, reason = _safe(lambda: survival_metrics.paired_c_difference_test(
            time, event, model, np.asarray(values, dtype=float), n_bootstrap, seed))
        entry["comparisons"].append({"baseline": name, **(test or {"reason": reason})})
    entry["integrated_brier"], entry["integrated_brier_reason"] = (None, "no survival probabilities")
    if survival_probabilities is not None:
        entry["integrated_brier"], entry["integrated_brier_reason"] = _safe(
            lambda: survival_metrics.integrated_brier(*train, time, event, survival_probabilities, list(horizons)))
    entry["risk_groups"] = _survival_risk_groups(time, event, risk_groups)
    return entry


def _survival_risk_groups(time: np.ndarray, event: np.ndarray, groups: np.ndarray | None) -> dict[str, Any] | None:
    if groups is None:
        return None
    groups = np.asarray(groups, dtype=object)
    present = [g for g in ("low", "intermediate", "high") if np.any(groups == g)]
    present += sorted({str(g) for g in groups if isinstance(g, str)} - set(present))
    if len(present) < 2:
        return {"reason": f"fewer than two risk groups among the cases ({present})"}
    finite = time[np.isfinite(time)]
    at_times = np.linspace(0.0, float(np.percentile(finite, 90)), KM_TIMES_COUNT).round(1).tolist()
    km, km_reason = _safe(lambda: survival_metrics.kaplan_meier_by_group(time, event, groups, at_times))
    logrank, logrank_reason = _safe(lambda: survival_metrics.logrank_test(time, event, groups))
    hazard, hazard_reason = _safe(lambda: survival_metrics.hazard_ratio_between_groups(time, event, groups,
                                                                                      reference=present[0]))
    return {"km": km, "km_reason": km_reason, "logrank": logrank, "logrank_reason": logrank_reason,
            "hazard_ratios": hazard, "hazard_ratios_reason": hazard_reason}
