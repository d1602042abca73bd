"""Calibration of predicted probabilities measured on a smoothed calibration curve.

Plain functions of an outcome ``y`` (0/1) and a predicted probability ``p``:

    loess_calibration             the smoothed observed risk at each prediction (the curve)
    calibration_errors            ICI, E50, E90, Emax with bootstrap CIs (Austin & Steyerberg 2019)
    expected_calibration_error    ECE over equal-mass bins (a secondary, bin-dependent figure)
    calibration_group_count       how many risk groups a calibration plot can afford
    calibration_curve_data        the data of a calibration plot (curve + band, groups, predictions)
    calibration_assessment        errors and plot data from one shared bootstrap (metrics.json)

**The smoothed curve.** Austin PC, Steyerberg EW. The Integrated Calibration Index (ICI) and
related metrics for quantifying the calibration of logistic regression models. Stat Med 2019;
38:4051-4065. They regress the outcome on the predicted probability with a LOESS (R ``loess(Y ~
P)``, its defaults) and measure the absolute difference between each case's prediction p_i and
the smoothed observed risk p̂_i at p_i:

    ICI  = mean_i |p_i - p̂_i|      E50 = median_i |p_i - p̂_i|
    E90  = 90th percentile          Emax = max_i |p_i - p̂_i|

Here the smoother is statsmodels' ``lowess`` with

* ``frac`` = :data:`SPAN` = 0.75, the default span of R's ``loess`` that Austin & Steyerberg
  used (statsmodels' own default is 2/3);
* ``it`` = 0 robustness iterations (R ``loess``' default ``family = "gaussian"``). statsmodels'
  default of 3 bisquare reweightings would treat the rare events of a low-risk region as
  outliers and pull the curve towards 0;
* local *linear* fits: statsmodels' lowess has no local quadratic (R ``loess``' default degree
  2). Local linear is what Harrell's ``val.prob`` draws; the tests show that on a known
  miscalibration its ICI agrees with the truth and with a spline logistic calibration model;
* ``delta`` = 1 % of the prediction range (R ``lowess``' default): fits at points closer than
  that are linearly interpolated (changes the curve by < 1e-3, makes it ~100x faster on large
  cohorts), so the curve between the cases is linear interpolation, as here on the plot's grid;
* the smoothed risks clipped to [0, 1] (a local line can leave it at the ends).

The curve exists only over the range of the predictions (no extrapolation). The ICI of a
perfectly calibrated model is not 0 in a finite sample: the smoother's noise alone gives about
0.01-0.03 at a few hundred cases, more at 40. The bootstrap CIs are percentile intervals of the
estimate (cases resampled with replacement, ``numpy.random.default_rng(seed)``); they describe
the estimate's sampling spread, not a test against 0. Emax has no CI: the bootstrap of a maximum
is not consistent.

**Risk groups on the plot.** n_groups = clip(min(events, non-events) // 10, 2, 10) groups of
equal size (quantiles of p), so that each group holds about 10 events (or non-events, whichever is
rarer), at least 2 and at most 10 groups; each with its observed proportion and Wilson 95 % CI.

**ECE** (Naeini, Cooper, Hauskrecht, AAAI 2015; equal-mass bins as Nixon et al. 2019):
sum_b n_b / n * |observed_b - mean predicted_b| over 10 quantile bins of p. It depends on the
binning and carries the binning noise, so it is reported as a secondary figure only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from statsmodels.nonparametric.smoothers_lowess import lowess

from glmil_auto.evaluation.metrics.binary_metrics import calibration_curve_points
from glmil_auto.evaluation.metrics.delong import clean_binary

__all__ = [
    "SPAN",
    "loess_calibration",
    "calibration_errors",
    "expected_calibration_error",
    "calibration_group_count",
    "calibration_curve_data",
    "calibration_assessment",
]

#: LOESS span: the fraction of the cases in each local fit (R ``loess``' default).
SPAN = 0.75
#: Robustness iterations of the LOESS (none, as R ``loess(family = "gaussian")``).
ROBUSTNESS_ITERATIONS = 0
#: Fits closer than this fraction of the prediction range are interpolated (R ``lowess``' default).
DELTA_FRACTION = 0.01
#: Fewest cases for a smoothed curve: below it a 75 % window holds < 15 cases, and a local line
#: through a handful of 0/1 outcomes is noise.
MIN_CASES = 20
#: Points of the smoothed curve's grid on the plot.
GRID_POINTS = 101
#: Equal-mass bins of the ECE.
ECE_BINS = 10
#: Risk groups of the plot: about this many of the rarer outcome per group, within the bounds.
EVENTS_PER_GROUP, MIN_GROUPS, MAX_GROUPS = 10, 2, 10
#: Most bootstrap replicates of the calibration numerics (each refits the LOESS).
MAX_BOOTSTRAP = 500

_ERRORS = ("ici", "e50", "e90", "emax")
_WITH_CI = ("ici", "e50", "e90")


# ----------------------------------------------------------------------------- the smoother


def _checked(y: ArrayLike, p: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """0/1 outcomes and probabilities without NaN, enough of them and spread out for a curve."""
    y_arr, p_arr = clean_binary(y, p)
    if p_arr.size and (p_arr.min() < 0 or p_arr.max() > 1):
        raise ValueError(f"p must be probabilities in [0, 1]; found [{p_arr.min()}, {p_arr.max()}]")
    if y_arr.size < MIN_CASES:
        raise ValueError(f"a smoothed calibration curve needs at least {MIN_CASES} cases; "
                         f"{y_arr.size} left after dropping NaN")
    if np.unique(p_arr).size < 3:
        raise ValueError("a smoothed calibration curve needs at least 3 distinct predicted probabilities")
    return y_arr.astype(float), p_arr


def _window_of_ties(p: np.ndarray, span: float) -> bool:
    """Whether one predicted value is shared by a whole LOESS window (``int(span * n)`` cases,
    as statsmodels counts): its local fit has a zero bandwidth, and statsmodels then returns NaN
    or, silently, 0."""
    return int(np.unique(p, return_counts=True)[1].max()) >= max(int(span * p.size + 1e-10), 1)


def _smooth(y: np.ndarray, p: np.ndarray, span: float) -> np.ndarray:
    """LOESS of y on p at each case (input order), clipped to [0, 1]; callers first make sure
    that no window is all ties (:func:`_window_of_ties`)."""
    delta = DELTA_FRACTION * float(p.max() - p.min())
    with np.errstate(divide="ignore", invalid="ignore"):
        fitted = lowess(y, p, frac=span, it=ROBUSTNESS_ITERATIONS, delta=delta, return_sorted=False)
    return np.clip(fitted, 0.0, 1.0)


def loess_calibration(y: ArrayLike, p: ArrayLike, span: float = SPAN) -> np.ndarray:
    """The smoothed observed risk p̂_i at each case's prediction p_i (cases with NaN dropped, the
    others in input order): LOESS of the outcome on p as described in the module docstring.

    Raises ValueError for fewer than :data:`MIN_CASES` cases, fewer than 3 distinct
    predictions, or predictions so concentrated on one value that a local window has no spread.
    """
    return _fitted(*_checked(y, p), span)


def _fitted(y: np.ndarray, p: np.ndarray, span: float) -> np.ndarray:
    fitted = np.full(p.size, np.nan) if _window_of_ties(p, span) else _smooth(y, p, span)
    if not np.isfinite(fitted).all():
        raise ValueError(f"more than {span:.0%} of the predictions share one value: no smoothed curve")
    return fitted


def _error_summary(p: np.ndarray, smoothed: np.ndarray) -> np.ndarray:
    """[ICI, E50, E90, Emax] of |p - p̂| (Austin & Steyerberg 2019)."""
    difference = np.abs(p - smoothed)
    return np.array([difference.mean(), np.median(difference), np.percentile(difference, 90), difference.max()])


# ----------------------------------------------------------------------------- bootstrap


def _on_grid(p: np.ndarray, smoothed: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The curve at ``grid`` by linear interpolation between the cases (as lowess' ``delta``).

    The grid spans the observed predictions, so the curve itself is never extrapolated; a
    bootstrap replicate that did not draw the most extreme cases is extended flat from its own
    extreme prediction. (Leaving it out there instead would compute the band's ends from the few
    replicates that drew those cases, which makes the band jump at every sparse prediction.)"""
    unique, first = np.unique(p, return_index=True)
    return np.interp(grid, unique, smoothed[first])


def _bootstrap(y: np.ndarray, p: np.ndarray, grid: np.ndarray, n_bootstrap: int, seed: int,
               span: float) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate (cases drawn with replacement): the four errors and the curve on ``grid``.
    Replicates whose smoother fails (a window of tied predictions) are left out."""
    rng = np.random.default_rng(seed)
    errors, curves = [], []
    for _ in range(n_bootstrap):
        index = rng.integers(0, y.size, y.size)
        y_b, p_b = y[index], p[index]
        if np.unique(p_b).size < 3 or _window_of_ties(p_b, span):
            continue
        smoothed = _smooth(y_b, p_b, span)
        if not np.isfinite(smoothed).all():
            continue
        errors.append(_error_summary(p_b, smoothed))
        curves.append(_on_grid(p_b, smoothed, grid))
    return np.reshape(errors, (-1, len(_ERRORS))), np.reshape(curves, (-1, grid.size))


def _percentiles(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise percentile interval; NaN for a column without any finite value."""
    tail = (1 - level) / 2 * 100
    low = np.full(values.shape[1], np.nan)
    high = np.full(values.shape[1], np.nan)
    finite = np.isfinite(values).any(axis=0) if values.size else np.zeros(values.shape[1], dtype=bool)
    if finite.any():
        low[finite], high[finite] = np.nanpercentile(values[:, finite], [tail, 100 - tail], axis=0)
    return low, high


def _replicates(n_bootstrap: int) -> int:
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be at least 0; got {n_bootstrap}")
    return min(int(n_bootstrap), MAX_BOOTSTRAP)


# ----------------------------------------------------------------------------- public numbers


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _numbers(values: np.ndarray, digits: int | None = None) -> list[float | None]:
    return [None if not math.isfinite(v) else (round(float(v), digits) if digits else float(v)) for v in values]


def calibration_group_count(events: int, non_events: int) -> int:
    """Risk groups of a calibration plot: clip(min(events, non-events) // 10, 2, 10), so that each
    group holds about 10 of the rarer outcome (a group with 2 events has a useless CI)."""
    return int(np.clip(min(events, non_events) // EVENTS_PER_GROUP, MIN_GROUPS, MAX_GROUPS))


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = ECE_BINS) -> float:
    """ECE over ``n_bins`` equal-mass bins of p: sum_b n_b / n * |observed_b - mean predicted_b|
    (bins of :func:`~glmil_auto.evaluation.metrics.binary_metrics.calibration_curve_points`,
    tied edges merged). Depends on the binning and includes its noise: a secondary figure."""
    table = calibration_curve_points(y, p, n_bins=n_bins, strategy="quantile")
    weights = table["n"].to_numpy(dtype=float)
    gaps = np.abs(table["observed"].to_numpy(dtype=float) - table["mean_predicted"].to_numpy(dtype=float))
    return float((weights * gaps).sum() / weights.sum())


def calibration_assessment(y: ArrayLike, p: ArrayLike, n_bootstrap: int = 200, seed: int = 0,
                           level: float = 0.95, span: float = SPAN,
                           grid_points: int = GRID_POINTS) -> dict[str, Any]:
    """ICI, E50, E90, Emax (with CIs) and the calibration plot's data from one bootstrap.

    ``n_bootstrap`` replicates (at most :data:`MAX_BOOTSTRAP`; 0: no CI, no band), seeded:
    the same inputs and seed give the same numbers. Returns ``{"errors": ..., "curve": ...}``
    as :func:`calibration_errors` and :func:`calibration_curve_data` describe, JSON-safe.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level}")
    replicates = _replicates(n_bootstrap)
    y_arr, p_arr = _checked(y, p)
    smoothed = _fitted(y_arr, p_arr, span)
    grid = np.linspace(p_arr.min(), p_arr.max(), grid_points)
    boot_errors, boot_curves = _bootstrap(y_arr, p_arr, grid, replicates, seed, span)
    settings = {"level": level, "n_bootstrap": int(boot_errors.shape[0]), "seed": seed}
    return {"errors": _errors_dict(p_arr, smoothed, boot_errors, settings, span),
            "curve": _curve_dict(y_arr, p_arr, smoothed, grid, boot_curves, settings, span)}


def _errors_dict(p: np.ndarray, smoothed: np.ndarray, boot: np.ndarray, settings: dict[str, Any],
                 span: float) -> dict[str, Any]:
    estimates = _error_summary(p, smoothed)
    low, high = _percentiles(boot, settings["level"])
    out: dict[str, Any] = {}
    for i, name in enumerate(_ERRORS):
        with_ci = name in _WITH_CI and boot.shape[0] > 0
        out[name] = {"estimate": float(estimates[i]), "ci_low": _number(low[i]) if with_ci else None,
                     "ci_high": _number(high[i]) if with_ci else None}
    return {**out, "n": int(p.size), "span": span, **settings}


def _curve_dict(y: np.ndarray, p: np.ndarray, smoothed: np.ndarray, grid: np.ndarray, boot: np.ndarray,
                settings: dict[str, Any], span: float) -> dict[str, Any]:
    events = int(y.sum())
    n_groups = calibration_group_count(events, int(y.size) - events)
    groups = calibration_curve_points(y, p, n_bins=n_groups, strategy="quantile")
    low, high = _percentiles(boot, settings["level"])
    return {
        "n": int(y.size),
        "events": events,
        "ici": float(_error_summary(p, smoothed)[0]),
        "smoothed": {"predicted": _numbers(grid), "observed": _numbers(_on_grid(p, smoothed, grid)),
                     "ci_low": _numbers(low), "ci_high": _numbers(high),
                     "method": "lowess", "span": span, "band": "pointwise bootstrap percentile", **settings},
        "groups": [{k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}
                   for row in groups.to_dict(orient="records")],
        "n_groups": n_groups,
        "predictions": _numbers(p, 6),
        "outcomes": [int(v) for v in y],
    }


def calibration_errors(y: ArrayLike, p: ArrayLike, n_bootstrap: int = 200, seed: int = 0,
                       level: float = 0.95, span: float = SPAN) -> dict[str, Any]:
    """ICI, E50, E90 and Emax of the LOESS calibration curve (Austin & Steyerberg 2019; module
    docstring), each ``{"estimate", "ci_low", "ci_high"}`` (bootstrap percentile CI at ``level``;
    ``None`` for Emax and without replicates), plus ``n``, ``span``, ``level``, ``n_bootstrap``
    (replicates used) and ``seed``. 0 is ideal for every one of them."""
    return calibration_assessment(y, p, n_bootstrap, seed, level, span)["errors"]


def calibration_curve_data(y: ArrayLike, p: ArrayLike, n_bootstrap: int = 200, seed: int = 0,
                           level: float = 0.95, span: float = SPAN,
                           grid_points: int = GRID_POINTS) -> dict[str, Any]:
    """The data of a calibration plot, JSON-safe (NaN as ``None``):

    * ``smoothed``: the LOESS curve on ``grid_points`` points spanning the predictions
      (``predicted``, ``observed``) with a pointwise bootstrap percentile band (``ci_low``,
      ``ci_high``; ``None`` without replicates), and its settings;
    * ``groups``: :func:`calibration_group_count` quantile groups of p, each with ``bin_low``,
      ``bin_high``, ``n``, ``events``, ``mean_predicted``, ``observed``, ``ci_low``, ``ci_high``
      (Wilson 95 %), and ``n_groups``;
    * ``predictions`` and ``outcomes`` of the cases (a rug or histogram), ``n``, ``events``,
      ``ici`` (the point estimate, for a legend).
    """
    return calibration_assessment(y, p, n_bootstrap, seed, level, span, grid_points)["curve"]
