"""Firth's penalised likelihood where maximum likelihood has no finite estimate.

In a small cohort a covariate (or a combination) can separate the outcome: every patient of a
category had the event (logistic regression: complete or quasi-complete separation), or at every
event time the patient who failed had the largest value in the risk set (Cox regression: monotone
likelihood). The maximum-likelihood estimate is then infinite; statsmodels and lifelines stop at
odds or hazard ratios of 1e8 with huge standard errors. Firth's penalty (the log-likelihood plus
``0.5 * log det I(beta)``, Jeffreys' prior) gives finite estimates with less small-sample bias:
Heinze & Schemper 2002 (logistic), Heinze & Schemper 2001 (Cox).

What is used:

* detection: logistic separation by the linear program of Konis (2007) (``firthmodels.
  detect_separation``, the method of R's ``detectseparation``); Cox monotone likelihood by the
  analogous linear program written here (:func:`monotone_likelihood_terms`);
* the fits: ``firthmodels`` (``FirthLogisticRegression``, ``FirthCoxPH``; MIT licence, tested
  against R's ``logistf`` and ``coxphf``): Newton-Raphson with step halving on the modified score,
  profile penalised-likelihood CIs and penalised likelihood-ratio p-values, as ``logistf`` and
  ``coxphf`` report them. The Cox fit treats tied event times as Breslow does (as ``coxphf``);
  the unpenalised Cox fit (lifelines) uses Efron's method.

``tests/test_firth.py`` checks the estimates against a direct maximisation of the penalised
log-likelihood with scipy and against the published ``logistf`` results on the endometrial cancer
data of Heinze & Schemper (2002).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

FIRTH_TOLERANCE = 1e-6  # gradient and step tolerance of the Newton-Raphson fits (1e-8 is below the noise)
MAX_ITERATIONS = 200
MAX_LP_PAIRS = 1_000_000  # (event, at-risk) pairs above which the Cox linear program is not run
LP_TOLERANCE = 1e-6  # a direction with an objective above this (standardised design) diverges
LOGISTIC_METHOD = ("Firth penalised likelihood (Heinze & Schemper 2002): profile penalised-likelihood CIs, "
                   "penalised likelihood-ratio p-values")
COX_METHOD = ("Firth penalised partial likelihood (Heinze & Schemper 2001; Breslow ties): profile "
              "penalised-likelihood CIs, penalised likelihood-ratio p-values")


@dataclass
class FirthFit:
    """Coefficients of the design's terms (no intercept) with SE, CI bounds and p-value per term,
    and the fit's own warnings (a bound or p-value that fell back to Wald is named there)."""

    coefficient: np.ndarray
    se: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    converged: bool
    warnings: list[str] = field(default_factory=list)


def _standardised(design: np.ndarray) -> np.ndarray:
    """Columns divided by their standard deviation, so that one LP tolerance fits every scale."""
    scale = design.std(axis=0)
    return design / np.where(scale > 0, scale, 1.0)


def logistic_separation_terms(design: pd.DataFrame, y: np.ndarray) -> list[str]:
    """The terms of ``design`` (and ``"intercept"``) whose maximum-likelihood estimate in a logistic
    regression with an intercept is infinite; [] without separation (or for a rank-deficient
    design, where the fit itself says what is wrong)."""
    import scipy.linalg
    from firthmodels import detect_separation

    try:
        result = detect_separation(_standardised(design.to_numpy(dtype=float)), np.asarray(y, dtype=float))
    except (scipy.linalg.LinAlgError, ValueError):
        return []
    names = [*map(str, design.columns), "intercept"]
    return [name for name, finite in zip(names, result.is_finite) if not finite]


def risk_set_differences(time: np.ndarray, event: np.ndarray, design: np.ndarray) -> np.ndarray:
    """``x_i - x_j`` for every event ``i`` and every other case ``j`` still at risk at its time
    (``t_j >= t_i``): one row per pair."""
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=bool)
    rows = []
    for i in np.flatnonzero(event):
        at_risk = (time >= time[i]) & (np.arange(len(time)) != i)
        rows.append(design[i] - design[at_risk])
    return np.concatenate(rows) if rows else np.empty((0, design.shape[1]))


def monotone_direction(differences: np.ndarray, tolerance: float = LP_TOLERANCE) -> np.ndarray:
    """A direction ``d`` (entries in [-1, 1]) along which the Cox partial likelihood keeps
    increasing, or zeros when there is none.

    Each event's term ``exp(x_i b) / sum_{j at risk} exp(x_j b)`` does not decrease along ``d`` when
    ``d . (x_i - x_j) >= 0`` for every ``j`` at risk, and increases when one is > 0. The linear
    program maximises the sum of ``d . (x_i - x_j)`` under those constraints (Konis' program for
    logistic separation, with risk-set pairs in place of cases): a positive optimum is monotone
    likelihood, and the terms with ``d != 0`` have infinite estimates."""
    from scipy.optimize import linprog

    k = differences.shape[1]
    if len(differences) == 0:
        return np.zeros(k)
    solution = linprog(-differences.sum(axis=0), A_ub=-differences, b_ub=np.zeros(len(differences)),
                       bounds=[(-1.0, 1.0)] * k, method="highs")
    if solution.status != 0 or -solution.fun <= tolerance:
        return np.zeros(k)
    return np.where(np.abs(solution.x) > tolerance, solution.x, 0.0)


def monotone_likelihood_terms(time: np.ndarray, event: np.ndarray, design: pd.DataFrame) -> list[str]:
    """The terms of ``design`` whose Cox partial-likelihood estimate is infinite (monotone
    likelihood); [] when there is none, or when the cohort is too large for the linear program
    (then the unpenalised fit's own signs of divergence decide)."""
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=bool)
    pairs = sum(int((time >= t).sum()) - 1 for t in time[event])
    if pairs > MAX_LP_PAIRS:
        return []
    differences = risk_set_differences(time, event, _standardised(design.to_numpy(dtype=float)))
    direction = monotone_direction(differences)
    return [str(name) for name, d in zip(design.columns, direction) if d != 0]


def _messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return sorted({str(w.message).split("\n")[0] for w in caught})


def _with_fallback(estimator, alpha: float, n_terms: int, messages: list[str],
                   names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ci_low, ci_high, p) of the first ``n_terms`` parameters: profile penalised-likelihood CIs
    and penalised likelihood-ratio p-values, a Wald value (named in ``messages``) where one failed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = np.asarray(estimator.conf_int(alpha=alpha, method="pl", max_iter=MAX_ITERATIONS),
                             dtype=float)[:n_terms]
        estimator.lrt()
    messages.extend(_messages(caught))
    wald = np.asarray(estimator.conf_int(alpha=alpha, method="wald"), dtype=float)[:n_terms]
    p_value = np.asarray(estimator.lrt_pvalues_, dtype=float)[:n_terms]
    for index, name in enumerate(names):
        if not np.isfinite(profile[index]).all() or not np.isfinite(p_value[index]):
            messages.append(f"{name}: the profile penalised likelihood did not converge; Wald CI and p-value shown")
            profile[index] = wald[index]
            p_value[index] = np.asarray(estimator.pvalues_, dtype=float)[index]
    return profile[:, 0], profile[:, 1], p_value


def firth_logistic(design: pd.DataFrame, y: np.ndarray, alpha: float = 0.05) -> FirthFit:
    """Firth's logistic regression of 0/1 ``y`` on ``design`` with an intercept (not reported)."""
    from firthmodels import FirthLogisticRegression

    names = [str(c) for c in design.columns]
    estimator = FirthLogisticRegression(backend="numpy", max_iter=MAX_ITERATIONS, gtol=FIRTH_TOLERANCE,
                                        xtol=FIRTH_TOLERANCE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(design.to_numpy(dtype=float), np.asarray(y, dtype=float))
    messages = _messages(caught)
    low, high, p_value = _with_fallback(estimator, alpha, len(names), messages, names)
    return FirthFit(np.asarray(estimator.coef_, dtype=float), np.asarray(estimator.bse_, dtype=float)[:len(names)],
                    low, high, p_value, bool(estimator.converged_), messages)


def firth_cox(time: np.ndarray, event: np.ndarray, design: pd.DataFrame, alpha: float = 0.05) -> FirthFit:
    """Firth's Cox regression (Heinze & Schemper 2001) of (``time``, 0/1 ``event``) on ``design``."""
    from firthmodels import FirthCoxPH

    names = [str(c) for c in design.columns]
    estimator = FirthCoxPH(backend="numpy", max_iter=MAX_ITERATIONS, gtol=FIRTH_TOLERANCE, xtol=FIRTH_TOLERANCE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(design.to_numpy(dtype=float),
                      (np.asarray(event, dtype=float) == 1.0, np.asarray(time, dtype=float)))
    messages = _messages(caught)
    low, high, p_value = _with_fallback(estimator, alpha, len(names), messages, names)
    return FirthFit(np.asarray(estimator.coef_, dtype=float), np.asarray(estimator.bse_, dtype=float),
                    low, high, p_value, bool(estimator.converged_), messages)
