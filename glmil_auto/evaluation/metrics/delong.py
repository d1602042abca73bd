"""DeLong's method for the ROC AUC: its variance, a confidence interval and the paired test.

The AUC of a score is the Mann-Whitney statistic: the probability that a random positive case
scores higher than a random negative one, ties counting one half. DeLong, DeLong and
Clarke-Pearson (1988) estimate its variance, and the covariance of the AUCs of several scores on
the same cases, from the "structural components" (placement values) of each case:

    V10[i] = AUC of positive i against all negatives,   V01[j] = AUC of all positives against negative j

    Var(AUC) = S10 / m + S01 / n,   S10, S01 = sample (co)variances (ddof=1) of V10 and V01

with m positives and n negatives. Sun and Xu (2014) get the placement values from midranks in
O(N log N) instead of the O(m n) double loop:

    V10[i] = (Z[i] - X[i]) / n,   V01[j] = 1 - (Z[m + j] - Y[j]) / m

where Z are the midranks of the score among all cases, X among the positives only and Y among the
negatives only.

References
----------
DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated receiver
operating characteristic curves: a nonparametric approach. Biometrics 1988;44(3):837-845.
Sun X, Xu W. Fast implementation of DeLong's algorithm for comparing the areas under correlated
receiver operating characteristic curves. IEEE Signal Processing Letters 2014;21(11):1389-1393.

Missing values: every function drops the cases whose outcome or any of its scores is NaN (the
same cases for both scores of the paired test), then needs outcomes coded 0/1 (or bool) and at
least one case of each class; the variance needs at least two of each.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import norm, rankdata

__all__ = [
    "clean_binary",
    "midrank",
    "delong_placements",
    "delong_auc_covariance",
    "delong_auc_variance",
    "delong_ci",
    "delong_test",
]


def clean_binary(y: ArrayLike, *scores: ArrayLike) -> tuple[np.ndarray, ...]:
    """Outcome and scores as float arrays, without the cases where any of them is NaN.

    Returns ``(y, *scores)`` with ``y`` as an int array of 0/1. Raises ValueError when the arrays
    differ in length, are not 1-D, or ``y`` holds a value other than 0/1 (after dropping NaN).
    """
    if np.ndim(y) > 1:
        raise ValueError("y must be one-dimensional")
    y_arr = np.asarray(y, dtype=float).ravel()
    arrays = []
    for s in scores:
        if np.ndim(s) > 1:
            raise ValueError("scores must be one-dimensional")
        arr = np.asarray(s, dtype=float).ravel()
        if arr.shape != y_arr.shape:
            raise ValueError(f"y has {y_arr.size} cases but a score has {arr.size}")
        arrays.append(arr)
    keep = ~np.isnan(y_arr)
    for arr in arrays:
        keep &= ~np.isnan(arr)
    y_arr = y_arr[keep]
    if not np.all((y_arr == 0) | (y_arr == 1)):
        bad = np.unique(y_arr[(y_arr != 0) & (y_arr != 1)])[:5]
        raise ValueError(f"y must be coded 0/1 (or bool); found {bad.tolist()}")
    return (y_arr.astype(int), *(arr[keep] for arr in arrays))


def _require_both_classes(y: np.ndarray, minimum: int = 1) -> tuple[int, int]:
    m = int(y.sum())
    n = int(y.size - m)
    if m == 0 or n == 0:
        empty = "positive (y=1)" if m == 0 else "negative (y=0)"
        raise ValueError(
            f"the ROC AUC needs both classes, but there is no {empty} case "
            f"(after dropping NaN: {m} positive, {n} negative)"
        )
    if m < minimum or n < minimum:
        raise ValueError(
            f"the DeLong variance needs at least {minimum} positive and {minimum} negative "
            f"cases; got {m} positive, {n} negative"
        )
    return m, n


def midrank(x: ArrayLike) -> np.ndarray:
    """Midranks (1-based; tied values share the mean of their ranks) of a 1-D array."""
    return rankdata(np.asarray(x, dtype=float), method="average")


def delong_placements(y: ArrayLike, scores: ArrayLike) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components of one score, by midranks (Sun & Xu 2014).

    Returns ``(auc, v10, v01)``: ``v10`` has one value per positive case (in the order of the
    positives in the input), the fraction of negatives it outscores (ties 1/2); ``v01`` one per
    negative case, the fraction of positives that outscore it. ``auc`` = mean(v10) = mean(v01).
    """
    y_arr, s = clean_binary(y, scores)
    m, n = _require_both_classes(y_arr)
    pos, neg = s[y_arr == 1], s[y_arr == 0]
    z = midrank(np.concatenate([pos, neg]))
    v10 = (z[:m] - midrank(pos)) / n
    v01 = 1.0 - (z[m:] - midrank(neg)) / m
    return float(v10.mean()), v10, v01


def delong_auc_covariance(y: ArrayLike, *scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several scores on the same cases and their DeLong covariance matrix.

    Cases with NaN outcome or NaN in any score are dropped for all scores. Returns
    ``(aucs, cov)``: ``aucs`` of shape (k,), ``cov`` of shape (k, k) = S10 / m + S01 / n, the
    covariance matrix of the AUC estimates (DeLong et al. 1988; midrank algorithm of Sun & Xu 2014).
    """
    if not scores:
        raise ValueError("give at least one score")
    y_arr, *clean = clean_binary(y, *scores)
    m, n = _require_both_classes(y_arr, minimum=2)
    parts = [delong_placements(y_arr, s) for s in clean]
    aucs = np.array([auc for auc, _, _ in parts])
    v10 = np.vstack([p[1] for p in parts])  # (k, m)
    v01 = np.vstack([p[2] for p in parts])  # (k, n)
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / m + s01 / n


def delong_auc_variance(y: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """AUC of one score and its DeLong variance: ``(auc, variance)``."""
    aucs, cov = delong_auc_covariance(y, scores)
    return float(aucs[0]), float(cov[0, 0])


def delong_ci(y: ArrayLike, scores: ArrayLike, level: float = 0.95) -> dict[str, Any]:
    """AUC with a Wald confidence interval from the DeLong variance.

    The interval is ``auc +/- z * se`` (z the normal quantile of ``level``, 1.96 for 95 %),
    clipped to [0, 1]. Returns a dict with ``auc``, ``variance``, ``se``, ``ci_low``,
    ``ci_high``, ``level``, ``n``, ``n_positive``, ``n_negative``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    y_arr, s = clean_binary(y, scores)
    auc, var = delong_auc_variance(y_arr, s)
    se = float(np.sqrt(var))
    half = float(norm.ppf(0.5 + level / 2)) * se
    return {
        "auc": auc,
        "variance": var,
        "se": se,
        "ci_low": max(0.0, auc - half),
        "ci_high": min(1.0, auc + half),
        "level": level,
        "n": int(y_arr.size),
        "n_positive": int(y_arr.sum()),
        "n_negative": int(y_arr.size - y_arr.sum()),
    }


def delong_test(y: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike) -> dict[str, Any]:
    """DeLong's paired test of two correlated AUCs (two scores of the same cases).

    z = (auc_a - auc_b) / se, se = sqrt(var_a + var_b - 2 cov_ab) from the DeLong covariance
    matrix; two-sided p-value from the standard normal. When se is 0 the difference is 0 (for
    example identical scores: z = 0, p = 1) or, if not, z = +/-inf and p = 0.

    Returns a dict with ``auc_a``, ``auc_b``, ``difference`` (a - b), ``se`` (of the difference),
    ``z``, ``p_value``, ``var_a``, ``var_b``, ``cov_ab``, ``n``, ``n_positive``, ``n_negative``.
    Cases where y or either score is NaN are dropped from both.
    """
    y_arr, a, b = clean_binary(y, scores_a, scores_b)
    aucs, cov = delong_auc_covariance(y_arr, a, b)
    diff = float(aucs[0] - aucs[1])
    var_diff = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = float(np.sqrt(max(var_diff, 0.0)))
    if se > 0:
        z = diff / se
    elif diff == 0:
        z = 0.0
    else:
        z = float(np.copysign(np.inf, diff))
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": diff,
        "se": se,
        "z": z,
        "p_value": float(2.0 * norm.sf(abs(z))),
        "var_a": float(cov[0, 0]),
        "var_b": float(cov[1, 1]),
        "cov_ab": float(cov[0, 1]),
        "n": int(y_arr.size),
        "n_positive": int(y_arr.sum()),
        "n_negative": int(y_arr.size - y_arr.sum()),
    }
