"""Numerics for evaluating a survival endpoint predicted as a risk score (higher = worse).

Plain functions over array-likes; each returns a dict of plain Python / numpy values::

    harrell_c_with_ci(time, event, risk, n_bootstrap=1000, seed=0)
    uno_c_with_ci(train_time, train_event, time, event, risk, tau=None, n_bootstrap=1000, seed=0)
    paired_c_difference_test(time, event, risk_a, risk_b, n_bootstrap=1000, seed=0)
    time_dependent_auc(train_time, train_event, time, event, risk, horizons)
    breslow_baseline(train_time, train_event, train_risk) -> BreslowBaseline
    integrated_brier(train_time, train_event, time, event, survival_probabilities, times)
    kaplan_meier_by_group(time, event, groups, at_times)
    logrank_test(time, event, groups)
    hazard_ratio_between_groups(time, event, groups, reference)

Conventions
-----------
* ``time``: follow-up (e.g. months, any unit as long as it is the same everywhere), finite and >= 0.
  ``event``: 1 / True = event (death), 0 / False = censored.
* **Missing values.** A case whose ``time`` or ``event`` is missing (NaN, None, ``pd.NA``) has an
  unknown outcome and is dropped; a case whose score (``risk``, either of ``risk_a`` / ``risk_b``,
  a row of ``survival_probabilities``, its group label) is missing is dropped as well, so every
  statistic of one call is computed on the same cases. The results report how many were dropped
  (``n_dropped_outcome``, ``n_dropped_score``). Training data (``train_time`` / ``train_event``,
  only used for the censoring distribution or the Breslow baseline) drop missing outcomes the same
  way. Anything else that is wrong (non-numeric or infinite values, negative times, events other
  than 0/1, mismatched lengths, no events) raises :class:`ValueError` saying what.
* **Bootstrap.** Cases are resampled with replacement (``numpy.random.default_rng(seed)``, one
  draw of ``n`` indices per replicate, so results are reproducible for a given seed); the CI is
  the percentile interval of the replicates. Replicates on which the statistic is undefined (no
  event or no comparable pair drawn) are skipped and counted out of ``n_bootstrap_valid``. For
  Uno's C the censoring distribution (from the training cohort) is held fixed and only the test
  cases are resampled.

Point estimates are those of scikit-survival (``sksurv.metrics``, ``sksurv.nonparametric``,
``sksurv.compare``) and, for hazard ratios, lifelines' ``CoxPHFitter``; the tests check agreement
with these libraries on their shipped data sets.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Hashable

import numpy as np
import pandas as pd
from scipy import stats

from glmil_auto.numerics.breslow import BreslowBaseline, breslow_baseline
from glmil_auto.numerics.survival_inputs import (
    ArrayLike,
    as_times,
    is_missing,
    survival_cohort,
)

TIED_RISK_TOLERANCE = 1e-8  # sksurv's default tied_tol

__all__ = [
    "BreslowBaseline",
    "breslow_baseline",
    "harrell_c_with_ci",
    "hazard_ratio_between_groups",
    "integrated_brier",
    "kaplan_meier_by_group",
    "logrank_test",
    "paired_c_difference_test",
    "time_dependent_auc",
    "uno_c_with_ci",
]


def _check_bootstrap(n_bootstrap: int, confidence: float) -> None:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")


def _percentile_ci(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    if replicates.size == 0:
        return math.nan, math.nan
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def _bootstrap(
    n: int, n_bootstrap: int, seed: int | None, statistic: Callable[[np.ndarray], Any]
) -> list[Any]:
    """``statistic(indices)`` per replicate; replicates where it is undefined (ValueError) are skipped."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_bootstrap):
        index = rng.integers(0, n, size=n)
        try:
            values.append(statistic(index))
        except (ValueError, ZeroDivisionError):  # all censored / no comparable pair in this draw
            continue
    return values


# ------------------------------------------------------------------------------ concordance indices


def _harrell(event: np.ndarray, time: np.ndarray, risk: np.ndarray) -> tuple:
    from sksurv.metrics import concordance_index_censored

    return concordance_index_censored(event, time, risk, tied_tol=TIED_RISK_TOLERANCE)


def harrell_c_with_ci(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Harrell's concordance index of ``risk`` (higher = earlier event) with a bootstrap CI.

    The point estimate is ``sksurv.metrics.concordance_index_censored`` (risk ties within 1e-8
    count 1/2; an event is comparable with every later time and with censored cases at the same
    time). Returns ``c_index``, ``ci_low``, ``ci_high``, ``confidence``, ``concordant``,
    ``discordant``, ``tied_risk``, ``tied_time``, ``n_bootstrap``, ``n_bootstrap_valid``, ``seed``
    and the case counts ``n``, ``events``, ``n_dropped_outcome``, ``n_dropped_score``.
    """
    _check_bootstrap(n_bootstrap, confidence)
    cohort = survival_cohort(time, event, {"risk": risk})
    risk_array = cohort.scores["risk"]
    try:
        c_index, concordant, discordant, tied_risk, tied_time = _harrell(cohort.event, cohort.time, risk_array)
    except ValueError as exc:
        raise ValueError(f"Harrell's C is undefined for these data: {exc}") from exc
    replicates = np.asarray(
        _bootstrap(
            cohort.n, n_bootstrap, seed,
            lambda i: _harrell(cohort.event[i], cohort.time[i], risk_array[i])[0],
        ),
        dtype=float,
    )
    return _concordance_result((c_index, concordant, discordant, tied_risk, tied_time), replicates, cohort,
                               n_bootstrap, seed, confidence)


def _concordance_result(statistics: tuple, replicates: np.ndarray, cohort: Any, n_bootstrap: int,
                        seed: int | None, confidence: float, **extra: Any) -> dict[str, Any]:
    """The result of a C-index with its bootstrap CI: ``statistics`` is sksurv's
    ``(c_index, concordant, discordant, tied_risk, tied_time)``; ``extra`` keys follow ``confidence``."""
    c_index, concordant, discordant, tied_risk, tied_time = statistics
    ci_low, ci_high = _percentile_ci(replicates, confidence)
    return {
        "c_index": float(c_index),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "confidence": float(confidence),
        **extra,
        **cohort.counts(),
        "concordant": int(concordant),
        "discordant": int(discordant),
        "tied_risk": int(tied_risk),
        "tied_time": int(tied_time),
        "n_bootstrap": int(n_bootstrap),
        "n_bootstrap_valid": int(replicates.size),
        "seed": seed,
    }


def uno_c_with_ci(
    train_time: ArrayLike,
    train_event: ArrayLike,
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    tau: float | None = None,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Uno's IPCW concordance index of ``risk`` on the test cases, truncated at ``tau``.

    ``sksurv.metrics.concordance_index_ipcw``: the censoring distribution is the Kaplan-Meier
    estimate of the training cohort (``train_time`` / ``train_event``); only test events before
    ``tau`` (None: no truncation) count. The censoring survival must stay positive up to the test
    event times used (choose ``tau`` below the training cohort's last follow-up otherwise). The
    bootstrap resamples test cases with the censoring distribution fixed. Returns ``c_index``,
    ``ci_low``, ``ci_high``, ``confidence``, ``tau``, ``concordant``, ``discordant``,
    ``tied_risk``, ``tied_time``, ``n_bootstrap``, ``n_bootstrap_valid``, ``seed``, the test case
    counts ``n``, ``events``, ``n_dropped_outcome``, ``n_dropped_score`` and ``n_train``.
    """
    from sksurv.metrics import concordance_index_ipcw

    _check_bootstrap(n_bootstrap, confidence)
    train = survival_cohort(train_time, train_event, prefix="train_", require_events=False)
    cohort = survival_cohort(time, event, {"risk": risk})
    if tau is not None:
        tau = float(tau)
        if not math.isfinite(tau) or tau <= 0:
            raise ValueError(f"tau must be a positive finite time or None, got {tau!r}")
        if not (cohort.event & (cohort.time < tau)).any():
            raise ValueError(f"no test events before tau={tau:g}; Uno's C is undefined")
    survival_train = train.structured()
    risk_array = cohort.scores["risk"]

    def uno(index: np.ndarray | None) -> tuple:
        y = cohort.structured(index)
        estimate = risk_array if index is None else risk_array[index]
        return concordance_index_ipcw(survival_train, y, estimate, tau=tau, tied_tol=TIED_RISK_TOLERANCE)

    try:
        c_index, concordant, discordant, tied_risk, tied_time = uno(None)
    except ValueError as exc:
        hint = ""
        if "censoring survival function is zero" in str(exc):
            hint = (
                f" (the training cohort's censoring distribution reaches 0 at its last follow-up "
                f"{train.time.max():g}; pass a smaller tau)"
            )
        raise ValueError(f"Uno's C is undefined for these data: {exc}{hint}") from exc
    replicates = np.asarray(_bootstrap(cohort.n, n_bootstrap, seed, lambda i: uno(i)[0]), dtype=float)
    return _concordance_result((c_index, concordant, discordant, tied_risk, tied_time), replicates, cohort,
                               n_bootstrap, seed, confidence, tau=tau, n_train=train.n)


def paired_c_difference_test(
    time: ArrayLike,
    event: ArrayLike,
    risk_a: ArrayLike,
    risk_b: ArrayLike,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap comparison of Harrell's C of two risk scores on the same cases.

    Each replicate draws ``n`` cases with replacement and computes ``C(a) - C(b)`` on that same
    draw, so the correlation between the two scores is kept. From the ``B`` valid replicates
    ``d*``:

    * ``se``: standard deviation of ``d*`` (ddof=1);
    * ``ci_low`` / ``ci_high``: percentile interval of ``d*``;
    * ``z = difference / se`` and ``p_value = 2 * (1 - Phi(|z|))`` (normal approximation; the
      main p-value). With ``se == 0`` it is 1 when the difference is 0 (e.g. identical scores),
      else 0;
    * ``p_value_bootstrap = min(1, 2 * min(1 + #{d* <= 0}, 1 + #{d* >= 0}) / (B + 1))``: the
      two-sided proportion of replicates on the other side of 0 (the percentile interval
      inverted), never below ``2 / (B + 1)``.

    Cases with a missing outcome or a missing ``risk_a`` or ``risk_b`` are dropped from both.
    Returns ``c_a``, ``c_b``, ``difference``, ``se``, ``ci_low``, ``ci_high``, ``confidence``,
    ``z``, ``p_value``, ``p_value_bootstrap``, ``n_bootstrap``, ``n_bootstrap_valid``, ``seed``
    and the case counts ``n``, ``events``, ``n_dropped_outcome``, ``n_dropped_score``.
    """
    _check_bootstrap(n_bootstrap, confidence)
    if n_bootstrap < 2:
        raise ValueError("paired_c_difference_test needs n_bootstrap >= 2 for a standard error")
    cohort = survival_cohort(time, event, {"risk_a": risk_a, "risk_b": risk_b})
    a, b = cohort.scores["risk_a"], cohort.scores["risk_b"]
    try:
        c_a = float(_harrell(cohort.event, cohort.time, a)[0])
        c_b = float(_harrell(cohort.event, cohort.time, b)[0])
    except ValueError as exc:
        raise ValueError(f"Harrell's C is undefined for these data: {exc}") from exc
    difference = c_a - c_b

    def paired(index: np.ndarray) -> float:
        e, t = cohort.event[index], cohort.time[index]
        return float(_harrell(e, t, a[index])[0]) - float(_harrell(e, t, b[index])[0])

    replicates = np.asarray(_bootstrap(cohort.n, n_bootstrap, seed, paired), dtype=float)
    valid = int(replicates.size)
    if valid < 2:
        raise ValueError(f"only {valid} bootstrap replicates had a defined C; cannot estimate a standard error")
    se = float(np.std(replicates, ddof=1))
    ci_low, ci_high = _percentile_ci(replicates, confidence)
    if se > 0:
        z = difference / se
        p_value = float(2.0 * stats.norm.sf(abs(z)))
    else:
        z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
        p_value = 1.0 if difference == 0 else 0.0
    below = int((replicates <= 0).sum())
    above = int((replicates >= 0).sum())
    p_value_bootstrap = min(1.0, 2.0 * min(1 + below, 1 + above) / (valid + 1))
    return {
        "c_a": c_a,
        "c_b": c_b,
        "difference": float(difference),
        "se": se,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "confidence": float(confidence),
        "z": float(z),
        "p_value": p_value,
        "p_value_bootstrap": float(p_value_bootstrap),
        **cohort.counts(),
        "n_bootstrap": int(n_bootstrap),
        "n_bootstrap_valid": valid,
        "seed": seed,
    }


# ------------------------------------------------------------------------------- time-dependent AUC




def time_dependent_auc(
    train_time: ArrayLike,
    train_event: ArrayLike,
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    horizons: ArrayLike,
) -> dict[str, Any]:
    """Cumulative/dynamic AUC of ``risk`` at each horizon (``sksurv.metrics.cumulative_dynamic_auc``).

    Cases at horizon t: events at or before t (weighted by the inverse of the training cohort's
    censoring survival); controls: still under observation after t. A horizon outside the test
    follow-up range ``[min(time), max(time))`` or without a test event at or before it gets
    ``auc = NaN`` and a ``skipped_reason``; the others are computed together. Returns lists in the
    order of ``horizons``: ``horizons``, ``auc``, ``n_cases``, ``n_controls``, ``skipped_reason``
    (None when computed); ``mean_auc`` (sksurv's survival-weighted mean over the computed horizons,
    NaN if none), ``n_train`` and the test case counts ``n``, ``events``, ``n_dropped_outcome``,
    ``n_dropped_score``.
    """
    from sksurv.metrics import cumulative_dynamic_auc

    horizon_array = as_times(horizons, "horizons")
    train = survival_cohort(train_time, train_event, prefix="train_", require_events=False)
    cohort = survival_cohort(time, event, {"risk": risk})
    t_min, t_max = float(cohort.time.min()), float(cohort.time.max())
    auc = np.full(horizon_array.shape[0], np.nan)
    n_cases = [int((cohort.event & (cohort.time <= h)).sum()) for h in horizon_array]
    n_controls = [int((cohort.time > h).sum()) for h in horizon_array]
    reasons: list[str | None] = []
    for h, cases in zip(horizon_array, n_cases):
        if h < t_min or h >= t_max:
            reasons.append(f"horizon {h:g} is outside the test follow-up range [{t_min:g}, {t_max:g})")
        elif cases == 0:
            reasons.append(f"no test event at or before horizon {h:g}")
        else:
            reasons.append(None)
    computed = np.array([r is None for r in reasons])
    mean_auc = math.nan
    if computed.any():
        valid_times = np.unique(horizon_array[computed])  # sksurv sorts and deduplicates
        try:
            scores, mean_auc = cumulative_dynamic_auc(
                train.structured(), cohort.structured(), cohort.scores["risk"], valid_times,
                tied_tol=TIED_RISK_TOLERANCE,
            )
        except ValueError as exc:
            raise ValueError(
                f"time-dependent AUC is undefined for these data: {exc} (the training cohort's "
                f"censoring distribution must stay positive up to the test event times)"
            ) from exc
        auc[computed] = np.asarray(scores)[np.searchsorted(valid_times, horizon_array[computed])]
    return {
        "horizons": horizon_array.tolist(),
        "auc": auc.tolist(),
        "n_cases": n_cases,
        "n_controls": n_controls,
        "skipped_reason": reasons,
        "mean_auc": float(mean_auc),
        "n_train": train.n,
        **cohort.counts(),
    }


# -------------------------------------------------------------------------------- Breslow baseline


# ------------------------------------------------------------------------------------ Brier score


def integrated_brier(
    train_time: ArrayLike,
    train_event: ArrayLike,
    time: ArrayLike,
    event: ArrayLike,
    survival_probabilities: ArrayLike,
    times: ArrayLike,
) -> dict[str, Any]:
    """Integrated Brier score (``sksurv.metrics.integrated_brier_score``) and the Brier score per time.

    ``survival_probabilities[i, k]`` is the predicted probability that case i survives past
    ``times[k]`` (e.g. :meth:`BreslowBaseline.survival_at`); ``times`` must be strictly increasing
    (at least two) within the test follow-up range ``[min(time), max(time))``. Censoring weights
    come from the training cohort. A case with any missing probability is dropped like one with a
    missing outcome. Returns ``integrated_brier``, ``times``, ``brier`` (per time), ``n_train``
    and the test case counts ``n``, ``events``, ``n_dropped_outcome``, ``n_dropped_score``.
    """
    from sksurv.metrics import brier_score, integrated_brier_score

    time_points = as_times(times, "times")
    if time_points.size < 2:
        raise ValueError("times needs at least two time points for an integrated Brier score")
    if (np.diff(time_points) <= 0).any():
        raise ValueError("times must be strictly increasing")
    try:
        probabilities = np.asarray(survival_probabilities, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"survival_probabilities must be numeric ({exc})") from exc
    if probabilities.ndim != 2 or probabilities.shape[1] != time_points.size:
        raise ValueError(
            f"survival_probabilities must have shape (n_cases, {time_points.size}) (one column per time), "
            f"got {probabilities.shape}"
        )
    present = probabilities[~np.isnan(probabilities)]
    if ((present < 0) | (present > 1)).any():
        raise ValueError("survival_probabilities must lie in [0, 1]")
    row_missing = np.isnan(probabilities).any(axis=1)
    train = survival_cohort(train_time, train_event, prefix="train_", require_events=False)
    cohort = survival_cohort(time, event, score_missing={"survival_probabilities": row_missing}, require_events=False)
    probabilities = probabilities[cohort.keep]
    t_min, t_max = float(cohort.time.min()), float(cohort.time.max())
    if time_points[0] < t_min or time_points[-1] >= t_max:
        raise ValueError(
            f"times must lie within the test follow-up range [{t_min:g}, {t_max:g}); "
            f"got [{time_points[0]:g}, {time_points[-1]:g}]"
        )
    survival_train, survival_test = train.structured(), cohort.structured()
    ibs = integrated_brier_score(survival_train, survival_test, probabilities, time_points)
    _, brier = brier_score(survival_train, survival_test, probabilities, time_points)
    return {
        "integrated_brier": float(ibs),
        "times": time_points.tolist(),
        "brier": np.asarray(brier, dtype=float).tolist(),
        "n_train": train.n,
        **cohort.counts(),
    }


# ------------------------------------------------------------------------------------------ groups


def _group_labels(groups: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(labels as an object array, missing mask)."""
    if groups is None or isinstance(groups, (str, bytes)):
        raise ValueError("groups must be an array-like of group labels")
    labels = np.asarray(list(groups) if not isinstance(groups, np.ndarray) else groups, dtype=object)
    if labels.ndim != 1:
        raise ValueError(f"groups must be 1-D, got shape {labels.shape}")
    missing = np.array([is_missing(v) for v in labels], dtype=bool)
    return labels, missing


def _grouped_cohort(time: ArrayLike, event: ArrayLike, groups: ArrayLike, *, require_events: bool) -> tuple:
    labels, missing = _group_labels(groups)
    cohort = survival_cohort(time, event, score_missing={"groups": missing}, require_events=require_events, min_cases=1)
    kept = labels[cohort.keep]
    unique = list(pd.unique(pd.Series(kept, dtype=object)))
    try:
        unique = sorted(unique)
    except TypeError:
        pass  # unorderable labels: order of first appearance
    codes = np.empty(kept.shape[0], dtype=np.int64)
    for code, label in enumerate(unique):
        codes[np.array([v == label for v in kept], dtype=bool)] = code
    return cohort, unique, codes


def kaplan_meier_by_group(
    time: ArrayLike,
    event: ArrayLike,
    groups: ArrayLike,
    at_times: ArrayLike,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Kaplan-Meier curve per group (``sksurv.nonparametric.kaplan_meier_estimator``, log-log CI).

    Per group (``groups`` entries are labels; missing labels are dropped like missing outcomes,
    labels sorted when orderable) the curve at the group's distinct observed times (``time``,
    ``survival``, ``ci_low``, ``ci_high``; before the first time S = 1, which a plot adds at
    t = 0), ``n``, ``events``, and at ``at_times`` (for a risk table under a plot) ``n_at_risk``
    (cases with ``time >= t``) and ``survival_at_times`` (the step function's value).
    Returns ``{"groups": {label: {...}}, "at_times": [...], "confidence", "n", "events",
    "n_dropped_outcome", "n_dropped_score"}``.
    """
    from sksurv.nonparametric import kaplan_meier_estimator

    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    at = as_times(at_times, "at_times", allow_empty=True)
    cohort, labels, codes = _grouped_cohort(time, event, groups, require_events=False)
    curves: dict[Hashable, dict[str, Any]] = {}
    for code, label in enumerate(labels):
        member = codes == code
        t, e = cohort.time[member], cohort.event[member]
        curve_time, survival, ci = kaplan_meier_estimator(e, t, conf_level=confidence, conf_type="log-log")
        index = np.searchsorted(curve_time, at, side="right") - 1
        survival_at = np.where(index >= 0, np.r_[survival, 1.0][index], 1.0)  # index -1 -> 1.0
        curves[label] = {
            "time": np.asarray(curve_time, dtype=float),
            "survival": np.asarray(survival, dtype=float),
            "ci_low": np.asarray(ci[0], dtype=float),
            "ci_high": np.asarray(ci[1], dtype=float),
            "n": int(member.sum()),
            "events": int(e.sum()),
            "n_at_risk": [int((t >= a).sum()) for a in at],
            "survival_at_times": np.asarray(survival_at, dtype=float).tolist(),
        }
    return {"groups": curves, "at_times": at.tolist(), "confidence": float(confidence), **cohort.counts()}


def logrank_test(time: ArrayLike, event: ArrayLike, groups: ArrayLike) -> dict[str, Any]:
    """Log-rank test of equal survival across groups (``sksurv.compare.compare_survival``).

    Returns ``statistic`` (chi-squared), ``df`` (groups - 1), ``p_value``, per group
    ``{"groups": {label: {"n", "observed", "expected"}}}`` and the case counts ``n``, ``events``,
    ``n_dropped_outcome``, ``n_dropped_score`` (missing group labels).
    """
    from sksurv.compare import compare_survival

    cohort, labels, codes = _grouped_cohort(time, event, groups, require_events=True)
    if len(labels) < 2:
        raise ValueError(f"the log-rank test needs at least two groups, got {labels}")
    statistic, p_value, table, _ = compare_survival(cohort.structured(), codes, return_stats=True)
    per_group = {}
    for code, label in enumerate(labels):
        row = table.loc[code]
        per_group[label] = {
            "n": int(row["counts"]),
            "observed": int(row["observed"]),
            "expected": float(row["expected"]),
        }
    return {
        "statistic": float(statistic),
        "df": len(labels) - 1,
        "p_value": float(p_value),
        "groups": per_group,
        **cohort.counts(),
    }


def hazard_ratio_between_groups(
    time: ArrayLike,
    event: ArrayLike,
    groups: ArrayLike,
    reference: Hashable,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Hazard ratio of each group versus ``reference`` from one Cox model on group indicators.

    lifelines ``CoxPHFitter`` (Efron ties, no penalty) with one 0/1 column per non-reference
    group. Every group needs at least one event (otherwise the estimate diverges). Returns
    ``reference``, ``confidence``, ``{"groups": {label: {"hazard_ratio", "ci_low", "ci_high",
    "p_value", "log_hazard_ratio", "se", "n", "events"}}}`` for each non-reference group (Wald
    CI and p) and the case counts ``n``, ``events``, ``n_dropped_outcome``, ``n_dropped_score``.
    """
    from lifelines import CoxPHFitter

    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    cohort, labels, codes = _grouped_cohort(time, event, groups, require_events=True)
    if reference not in labels:
        raise ValueError(f"reference group {reference!r} is not among the groups {labels}")
    if len(labels) < 2:
        raise ValueError(f"hazard ratios need at least two groups, got {labels}")
    events_per_group = {label: int(cohort.event[codes == code].sum()) for code, label in enumerate(labels)}
    without = [label for label, e in events_per_group.items() if e == 0]
    if without:
        raise ValueError(f"groups without events (hazard ratio not estimable): {without}")
    others = [(code, label) for code, label in enumerate(labels) if label != reference]
    frame = pd.DataFrame({"time": cohort.time, "event": cohort.event.astype(int)})
    for code, _ in others:
        frame[f"group_{code}"] = (codes == code).astype(float)
    fitter = CoxPHFitter(alpha=1.0 - float(confidence))
    fitter.fit(frame, duration_col="time", event_col="event")
    summary = fitter.summary
    bounds = fitter.confidence_intervals_
    per_group = {}
    for code, label in others:
        column = f"group_{code}"
        per_group[label] = {
            "hazard_ratio": float(summary.loc[column, "exp(coef)"]),
            "ci_low": float(np.exp(bounds.loc[column].iloc[0])),
            "ci_high": float(np.exp(bounds.loc[column].iloc[1])),
            "p_value": float(summary.loc[column, "p"]),
            "log_hazard_ratio": float(summary.loc[column, "coef"]),
            "se": float(summary.loc[column, "se(coef)"]),
            "n": int((codes == code).sum()),
            "events": events_per_group[label],
        }
    return {
        "reference": reference,
        "confidence": float(confidence),
        "groups": per_group,
        **cohort.counts(),
    }
