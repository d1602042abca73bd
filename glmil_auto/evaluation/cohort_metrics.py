"""Every number of one endpoint on one cohort: the model against its baselines.

``binary_cohort`` and ``survival_cohort`` return JSON-safe dicts (the entries of
``metrics.json``, schema in documentation/evaluation.md) built from the numerics of
:mod:`~glmil_auto.evaluation.metrics.binary_metrics`, :mod:`~glmil_auto.evaluation.metrics.calibration`,
:mod:`~glmil_auto.evaluation.metrics.delong` and :mod:`~glmil_auto.evaluation.metrics.survival_metrics`.
A number that cannot be computed on a cohort (one class only, too few events, a horizon beyond
follow-up) is ``None`` with a reason, never an exception: a small per-centre cohort must not stop
the report of the others.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from glmil_auto.evaluation.metrics import binary_metrics, calibration, survival_metrics
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
#: The model's probabilities at earlier stages, each evaluated for calibration beside the final one:
#: ``uncalibrated`` before the out-of-fold recalibration, ``before_update`` before a model update.
MODEL_VARIANTS = {"uncalibrated": "uncalibrated", "before_update": "before update"}
_CALIBRATION_KEYS = ("calibration", "ici", "e50", "e90", "emax", "ece")


def binary_score_metrics(y: np.ndarray, p: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """AUC [CI], AUPRC, Brier and the ROC curve of one score (Brier only for probabilities); the
    calibration numbers come from :func:`calibration_entries`."""
    out: dict[str, Any] = {}
    out["auc"], out["auc_reason"] = _safe(lambda: binary_metrics.auc_with_ci(y, p, n_bootstrap, seed))
    out["auprc"], _ = _safe(lambda: binary_metrics.auprc(y, p))
    out["brier"] = _safe(lambda: binary_metrics.brier(y, p))[0] if _is_probability(p) else None
    known = np.isfinite(y) & np.isfinite(p)
    if known.any() and len(set(y[known])) == 2:
        fpr, tpr, _ = roc_curve(y[known], p[known])
        out["roc"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    else:
        out["roc"] = None
    return out


def calibration_entries(y: np.ndarray, p: np.ndarray, n_bootstrap: int, seed: int
                        ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The calibration numbers of one probability and its calibration plot's data.

    Returns ``(numbers, curve)``: ``numbers`` has ``calibration`` (intercept and slope with CIs),
    ``ici``, ``e50``, ``e90``, ``emax`` (each ``{"estimate", "ci_low", "ci_high"}``, LOESS as
    Austin & Steyerberg 2019, :mod:`~glmil_auto.evaluation.metrics.calibration`), ``ece``
    (``{"estimate", "n_bins", "binning"}``, secondary) and ``calibration_reason`` when the smoothed
    curve cannot be computed; ``curve`` is
    :func:`~glmil_auto.evaluation.metrics.calibration.calibration_curve_data`'s dict, or None.
    A score that is no probability gets ``None`` everywhere."""
    numbers: dict[str, Any] = dict.fromkeys(_CALIBRATION_KEYS)
    if not _is_probability(p):
        return numbers, None
    numbers["calibration"] = _safe(lambda: binary_metrics.calibration_intercept_slope(y, p))[0]
    assessment, numbers["calibration_reason"] = _safe(
        lambda: calibration.calibration_assessment(y, p, n_bootstrap, seed))
    if assessment is not None:
        numbers.update({k: assessment["errors"][k] for k in ("ici", "e50", "e90", "emax")})
    ece, _ = _safe(lambda: calibration.expected_calibration_error(y, p))
    numbers["ece"] = None if ece is None else {"estimate": ece, "n_bins": calibration.ECE_BINS,
                                               "binning": "equal-mass (quantiles of p)"}
    return numbers, None if assessment is None else assessment["curve"]


def binary_cohort(y: np.ndarray, scores: Mapping[str, np.ndarray], n_bootstrap: int = 1000, seed: int = 0,
                  uncalibrated: np.ndarray | None = None, risk_cutoffs: Sequence[float] | None = None,
                  risk_score: np.ndarray | None = None, before_update: np.ndarray | None = None) -> dict[str, Any]:
    """One binary endpoint on one cohort. ``scores``: the model (key :data:`MODEL`) and each
    baseline, aligned with ``y`` (NaN = no prediction). ``uncalibrated``: the model's probabilities
    before the out-of-fold recalibration; ``before_update``: before a model update (the
    ``<endpoint>_before_update`` column); each gets its calibration numbers under
    ``scores["model"][variant]`` (and ``calibration_<variant>``, intercept and slope) and a curve
    ``"model (<variant>)"`` in ``calibration_curve``, so that the plot shows before and after.
    ``risk_cutoffs`` on ``risk_score`` (default: the model's score): the risk groups learnt on the
    training cohort."""
    y = np.asarray(y, dtype=float)
    model = np.asarray(scores[MODEL], dtype=float)
    known = np.isfinite(y) & np.isfinite(model)
    entry: dict[str, Any] = {"n": int(known.sum()), "events": int(y[known].sum()), "scores": {}, "comparisons": [],
                             "calibration_curve": {}}
    for name, values in scores.items():
        p = np.asarray(values, dtype=float)
        entry["scores"][name] = binary_score_metrics(y, p, n_bootstrap, seed)
        numbers, curve = calibration_entries(y, p, n_bootstrap, seed)
        entry["scores"][name].update(numbers)
        if curve is not None:
            entry["calibration_curve"][name] = curve
    variants = {"uncalibrated": uncalibrated, "before_update": before_update}
    for variant, values in variants.items():
        if values is None:
            continue
        values = np.asarray(values, dtype=float)
        if np.array_equal(values, model, equal_nan=True):  # e.g. --cv: nothing was recalibrated
            numbers, curve = {k: entry["scores"][MODEL].get(k) for k in _CALIBRATION_KEYS}, None
        else:
            numbers, curve = calibration_entries(y, values, n_bootstrap, seed)
        entry["scores"][MODEL][variant] = numbers
        entry["scores"][MODEL][f"calibration_{variant}"] = numbers["calibration"]
        if curve is not None:
            entry["calibration_curve"][f"{MODEL} ({MODEL_VARIANTS[variant]})"] = curve
    for name, values in scores.items():
        if name == MODEL:
            continue
        test, reason = _safe(lambda: delong_test(y, model, np.asarray(values, dtype=float)))
        entry["comparisons"].append({"baseline": name, **(test or {"reason": reason})})
    probabilities = {name: np.asarray(values, dtype=float) for name, values in scores.items()
                     if _is_probability(np.asarray(values, dtype=float))}
    entry["decision_curve"] = _decision_curve(y, probabilities)
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
