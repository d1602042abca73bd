"""Metrics of a predicted probability for a binary endpoint (e.g. local failure yes/no).

Plain functions of an outcome ``y`` (0/1 or bool) and a prediction ``p`` (a probability in
[0, 1], or for the AUC and the cut-off metrics any score where higher = more likely positive):

    auc_with_ci                  ROC AUC with a stratified bootstrap percentile CI
    auprc, brier                 average precision, Brier score
    calibration_intercept_slope  calibration-in-the-large intercept and calibration slope
    calibration_curve_points     observed vs predicted per bin (data for a calibration plot)
    net_benefit                  decision curve: model, treat all, treat none
    threshold_metrics            sensitivity, specificity, PPV, NPV at a cut-off
    risk_group_event_rates       event rate per risk group and a test between groups

Missing values: every function drops the cases whose outcome or prediction (or group) is NaN,
the same cases for every number it returns, and reports ``n``, the cases it used. Outcomes other
than 0/1 raise ValueError, as do probabilities outside [0, 1] where a probability is needed.
DeLong's variance and paired test of the AUC are in :mod:`glmil_auto.evaluation.metrics.delong`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from numpy.typing import ArrayLike
from scipy.stats import chi2_contingency, fisher_exact, norm, rankdata
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from glmil_auto.evaluation.metrics.delong import clean_binary

__all__ = [
    "auc_with_ci",
    "auprc",
    "brier",
    "calibration_intercept_slope",
    "calibration_curve_points",
    "net_benefit",
    "threshold_metrics",
    "risk_group_event_rates",
    "wilson_ci",
]

PROBABILITY_CLIP = 1e-6
_BOOTSTRAP_CHUNK_VALUES = 2_000_000  # values ranked at once in the bootstrap


def _both_classes(y: np.ndarray, what: str) -> tuple[int, int]:
    m = int(y.sum())
    n = int(y.size - m)
    if m == 0 or n == 0:
        raise ValueError(
            f"{what} needs both classes, but after dropping NaN there are {m} positive "
            f"and {n} negative cases"
        )
    return m, n


def _probabilities(p: np.ndarray) -> np.ndarray:
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"p must be probabilities in [0, 1]; found [{p.min()}, {p.max()}]")
    return p


def wilson_ci(count: int, nobs: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of ``count / nobs`` (statsmodels ``proportion_confint``); NaN if nobs = 0."""
    if nobs == 0:
        return float("nan"), float("nan")
    low, high = proportion_confint(count, nobs, alpha=alpha, method="wilson")
    return float(low), float(high)


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


# --------------------------------------------------------------------------------------- AUC


def _stratified_bootstrap_indices(
    y: np.ndarray, n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_bootstrap, N) case indices: each row draws the positives among the positives and the
    negatives among the negatives (with replacement), so every replicate keeps both class sizes."""
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    return np.hstack([
        rng.choice(pos, size=(n_bootstrap, pos.size), replace=True),
        rng.choice(neg, size=(n_bootstrap, neg.size), replace=True),
    ])


def _auc_of_rows(scores: np.ndarray, m: int) -> np.ndarray:
    """AUC of each row of ``scores`` whose first ``m`` columns are the positives (rank-sum form,
    ties counted 1/2: equal to ``roc_auc_score``)."""
    n = scores.shape[1] - m
    ranks = rankdata(scores, method="average", axis=1)
    return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)


def auc_with_ci(
    y: ArrayLike, p: ArrayLike, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """ROC AUC (``sklearn.metrics.roc_auc_score``) with a stratified bootstrap percentile CI.

    Each of ``n_bootstrap`` replicates resamples the positives and the negatives separately, with
    replacement (``numpy.random.default_rng(seed)``), so every replicate has both classes and the
    observed class sizes; the CI is the (1 - level)/2 and (1 + level)/2 percentiles of the
    replicate AUCs. Returns a dict with ``auc``, ``ci_low``, ``ci_high``, ``level``,
    ``n_bootstrap``, ``seed``, ``n``, ``n_positive``, ``n_negative``.
    """
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be at least 1; got {n_bootstrap}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    y_arr, p_arr = clean_binary(y, p)
    m, n = _both_classes(y_arr, "the ROC AUC")
    auc = float(roc_auc_score(y_arr, p_arr))

    rng = np.random.default_rng(seed)
    idx = _stratified_bootstrap_indices(y_arr, n_bootstrap, rng)  # positives first in each row
    chunk = max(1, _BOOTSTRAP_CHUNK_VALUES // y_arr.size)
    replicates = np.concatenate(
        [_auc_of_rows(p_arr[idx[i:i + chunk]], m) for i in range(0, n_bootstrap, chunk)]
    )
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return {
        "auc": auc,
        "ci_low": float(low),
        "ci_high": float(high),
        "level": level,
        "n_bootstrap": int(n_bootstrap),
        "seed": seed,
        "n": int(y_arr.size),
        "n_positive": m,
        "n_negative": n,
    }


def auprc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the precision-recall curve as average precision (sklearn ``average_precision_score``)."""
    y_arr, p_arr = clean_binary(y, p)
    _both_classes(y_arr, "the average precision")
    return float(average_precision_score(y_arr, p_arr))


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score, the mean of (p - y)^2 (sklearn ``brier_score_loss``); lower is better."""
    y_arr, p_arr = clean_binary(y, p)
    if y_arr.size == 0:
        raise ValueError("no case left after dropping NaN")
    return float(brier_score_loss(y_arr, _probabilities(p_arr), pos_label=1))


# ------------------------------------------------------------------------------- calibration


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return np.log(q / (1 - q))


def calibration_intercept_slope(y: ArrayLike, p: ArrayLike, level: float = 0.95) -> dict[str, Any]:
    """Calibration-in-the-large intercept and calibration slope (logistic recalibration).

    With lp = logit(p), p clipped to [1e-6, 1 - 1e-6], and statsmodels GLM (Binomial, logit link):

    * slope: the coefficient b of ``logit P(y=1) = a + b * lp``. 1 is ideal; < 1 means the
      predictions are too extreme (overfitting). ``slope_p`` tests H0: slope = 1 (Wald).
    * intercept (calibration-in-the-large): a of ``logit P(y=1) = a + offset(lp)``, slope fixed at
      1. 0 is ideal; < 0 means the predicted risks are too high on average. ``intercept_p``
      tests H0: intercept = 0 (Wald).

    Returns a dict with ``intercept``, ``intercept_se``, ``intercept_ci_low``,
    ``intercept_ci_high``, ``intercept_p``, ``slope``, ``slope_se``, ``slope_ci_low``,
    ``slope_ci_high``, ``slope_p``, ``level``, ``n``. CIs are Wald intervals at ``level``.
    """
    y_arr, p_arr = clean_binary(y, p)
    _both_classes(y_arr, "calibration")
    lp = _logit(_probabilities(p_arr))
    alpha = 1 - level
    family = sm.families.Binomial()

    cal_large = sm.GLM(y_arr, np.ones((y_arr.size, 1)), family=family, offset=lp).fit()
    a_low, a_high = cal_large.conf_int(alpha=alpha)[0]
    slope_fit = sm.GLM(y_arr, sm.add_constant(lp, has_constant="add"), family=family).fit()
    b, b_se = float(slope_fit.params[1]), float(slope_fit.bse[1])
    b_low, b_high = slope_fit.conf_int(alpha=alpha)[1]
    return {
        "intercept": float(cal_large.params[0]),
        "intercept_se": float(cal_large.bse[0]),
        "intercept_ci_low": float(a_low),
        "intercept_ci_high": float(a_high),
        "intercept_p": float(cal_large.pvalues[0]),
        "slope": b,
        "slope_se": b_se,
        "slope_ci_low": float(b_low),
        "slope_ci_high": float(b_high),
        "slope_p": float(2 * norm.sf(abs(b - 1) / b_se)),
        "level": level,
        "n": int(y_arr.size),
    }


def calibration_curve_points(
    y: ArrayLike, p: ArrayLike, n_bins: int = 10, strategy: str = "quantile"
) -> pd.DataFrame:
    """Observed event rate against mean predicted probability per bin, for a calibration plot.

    ``strategy="quantile"`` cuts at the quantiles of p (bins of about equal count; tied edges
    merge bins), ``"uniform"`` at equal widths over [0, 1]. Bins are closed on the right, as in
    ``sklearn.calibration.calibration_curve``, and empty bins are left out. Returns a DataFrame
    with one row per bin: ``bin_low``, ``bin_high`` (edges), ``n``, ``events``,
    ``mean_predicted``, ``observed`` (events / n), ``ci_low``, ``ci_high`` (Wilson 95 % CI of
    observed).
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1; got {n_bins}")
    y_arr, p_arr = clean_binary(y, p)
    if y_arr.size == 0:
        raise ValueError("no case left after dropping NaN")
    _probabilities(p_arr)
    if strategy == "quantile":
        edges = np.percentile(p_arr, np.linspace(0, 100, n_bins + 1))
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform'; got {strategy!r}")
    bin_of = np.searchsorted(edges[1:-1], p_arr, side="left")
    rows = []
    for b in range(n_bins):
        in_bin = bin_of == b
        count = int(in_bin.sum())
        if count == 0:
            continue
        events = int(y_arr[in_bin].sum())
        low, high = wilson_ci(events, count)
        rows.append({
            "bin_low": float(edges[b]),
            "bin_high": float(edges[b + 1]),
            "n": count,
            "events": events,
            "mean_predicted": float(p_arr[in_bin].mean()),
            "observed": events / count,
            "ci_low": low,
            "ci_high": high,
        })
    return pd.DataFrame(rows, columns=[
        "bin_low", "bin_high", "n", "events", "mean_predicted", "observed", "ci_low", "ci_high",
    ])


# ------------------------------------------------------------------------- decision curves


def net_benefit(y: ArrayLike, p: ArrayLike, thresholds: ArrayLike) -> pd.DataFrame:
    """Decision curve (Vickers & Elkin 2006): net benefit at each threshold probability t.

    model = TP/n - FP/n * t / (1 - t), predicted positive when p >= t (as ``dcurves.dca``);
    treat_all = prevalence - (1 - prevalence) * t / (1 - t); treat_none = 0. Thresholds must lie
    in [0, 1). Returns a DataFrame with columns ``threshold``, ``model``, ``treat_all``,
    ``treat_none``, one row per threshold in the given order.
    """
    y_arr, p_arr = clean_binary(y, p)
    if y_arr.size == 0:
        raise ValueError("no case left after dropping NaN")
    _probabilities(p_arr)
    t = np.asarray(thresholds, dtype=float).ravel()
    if t.size and (np.isnan(t).any() or t.min() < 0 or t.max() >= 1):
        raise ValueError("thresholds must lie in [0, 1)")
    n = y_arr.size
    positive = p_arr[None, :] >= t[:, None]  # (thresholds, cases)
    tp = (positive & (y_arr == 1)).sum(axis=1)
    fp = (positive & (y_arr == 0)).sum(axis=1)
    odds = t / (1 - t)
    prevalence = y_arr.mean()
    return pd.DataFrame({
        "threshold": t,
        "model": tp / n - fp / n * odds,
        "treat_all": prevalence - (1 - prevalence) * odds,
        "treat_none": np.zeros_like(t),
    })


# -------------------------------------------------------------------------------- cut-offs


def threshold_metrics(y: ArrayLike, p: ArrayLike, cutoff: float) -> dict[str, Any]:
    """Sensitivity, specificity, PPV and NPV at a cut-off (predicted positive when p >= cutoff).

    Each comes with a Wilson 95 % CI (``<name>_ci_low``, ``<name>_ci_high``); a metric whose
    denominator is 0 is NaN. Returns a dict with ``cutoff``, ``n``, ``tp``, ``fp``, ``tn``,
    ``fn``, ``sensitivity`` = tp/(tp+fn), ``specificity`` = tn/(tn+fp), ``ppv`` = tp/(tp+fp),
    ``npv`` = tn/(tn+fn), and their CIs.
    """
    y_arr, p_arr = clean_binary(y, p)
    predicted = p_arr >= cutoff
    actual = y_arr == 1
    tp = int((predicted & actual).sum())
    fp = int((predicted & ~actual).sum())
    tn = int((~predicted & ~actual).sum())
    fn = int((~predicted & actual).sum())
    out: dict[str, Any] = {"cutoff": float(cutoff), "n": int(y_arr.size),
                           "tp": tp, "fp": fp, "tn": tn, "fn": fn}
    for name, num, den in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                           ("ppv", tp, tp + fp), ("npv", tn, tn + fn)):
        out[name] = _ratio(num, den)
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = wilson_ci(num, den)
    return out


# ----------------------------------------------------------------------------- risk groups


def risk_group_event_rates(y: ArrayLike, groups: ArrayLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Event rate per risk group and a test of equal rates across groups.

    Cases with NaN outcome or missing group are dropped. The test is on the groups x (event,
    no event) table: Fisher's exact test (``scipy.stats.fisher_exact``, two-sided) for a 2x2
    table with any expected count < 5, otherwise the chi-square test of independence
    (``scipy.stats.chi2_contingency``, with its default Yates correction for a 2x2 table).
    With a single group, or no events or no non-events at all, there is nothing to test.

    Returns ``(table, test)``: ``table`` has one row per group (sorted) with ``group``, ``n``,
    ``events``, ``rate``, ``ci_low``, ``ci_high`` (Wilson 95 %); ``test`` is a dict with
    ``test`` ("chi2", "fisher" or "none"), ``statistic`` (chi-square, or the odds ratio for
    Fisher), ``p_value`` and ``dof`` (NaN where not applicable).
    """
    if np.ndim(y) > 1 or np.ndim(groups) > 1:
        raise ValueError("y and groups must be one-dimensional")
    g = pd.Series(np.asarray(groups, dtype=object).ravel())
    y_float = np.asarray(y, dtype=float).ravel()
    if g.size != y_float.size:
        raise ValueError(f"y has {y_float.size} cases but groups has {g.size}")
    keep = ~(g.isna().to_numpy() | np.isnan(y_float))
    (y_arr,) = clean_binary(y_float[keep])
    g = g[keep].reset_index(drop=True)

    counts = pd.crosstab(g, y_arr).reindex(columns=[1, 0], fill_value=0).sort_index()
    rows = []
    for group, (events, non_events) in counts.iterrows():
        total = int(events + non_events)
        low, high = wilson_ci(int(events), total)
        rows.append({"group": group, "n": total, "events": int(events),
                     "rate": events / total, "ci_low": low, "ci_high": high})
    table = pd.DataFrame(rows, columns=["group", "n", "events", "rate", "ci_low", "ci_high"])

    observed = counts.to_numpy()
    nan = float("nan")
    test: dict[str, Any] = {"test": "none", "statistic": nan, "p_value": nan, "dof": nan}
    if observed.shape[0] < 2 or (observed.sum(axis=0) == 0).any():
        return table, test
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0) / observed.sum()
    if observed.shape == (2, 2) and (expected < 5).any():
        odds_ratio, p_value = fisher_exact(observed, alternative="two-sided")
        test.update(test="fisher", statistic=float(odds_ratio), p_value=float(p_value))
    else:
        result = chi2_contingency(observed)
        test.update(test="chi2", statistic=float(result.statistic),
                    p_value=float(result.pvalue), dof=int(result.dof))
    return table, test
