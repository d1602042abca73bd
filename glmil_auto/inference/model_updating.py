"""Updating a trained model for a new centre with a few of its labelled cases.

A model trained at some centres is used at another. Its ranking may travel; its probabilities
usually do not. The model-updating hierarchy (Steyerberg, *Clinical Prediction Models*, 2nd ed.,
ch. 20; Janssen et al. 2008, J Clin Epidemiol 61:76) refits as little as the new centre's data
support, in steps:

1. **intercept** (recalibration in the large): ``logit p' = a + logit p``. One parameter: the
   predicted events then sum to the observed ones. Survival: the baseline hazard re-estimated by
   Breslow at the new centre with the model's linear predictor kept (``baseline``).
2. **logistic** (intercept and slope, weak calibration in Van Calster et al. 2016, J Clin
   Epidemiol 74:167): ``logit p' = a + b logit p``. Survival: the Cox coefficient of the
   standardised risk refitted with the baseline (``baseline_and_slope``).
3. **isotonic**: a monotone map (binary endpoints only; a survival endpoint gets step 2). It needs
   hundreds of events and may merge ranks into ties, so it is never chosen automatically.

``auto`` chooses the step from the *limiting* number of events (the smaller of events and
non-events for a binary endpoint, the number of events for a survival endpoint):

- fewer than :data:`AUTO_INTERCEPT_BELOW` (10): intercept only. A slope estimated from a handful of
  events is mostly noise, and a test of it has next to no power: Steyerberg et al. (2004, Stat Med
  23:2567) found that with few events re-estimating the intercept alone gave the best-calibrated
  predictions in new patients.
- from :data:`AUTO_LOGISTIC_FROM` (50): intercept and slope. About 50 events give the slope a
  standard error near 0.2 at typical spreads of the linear predictor, enough to move it.
- in between: the closed test of Vergouwe et al. (2017, Stat Med 36:4529). The slope is refitted
  only when the likelihood-ratio test of the slope against the intercept-only update rejects at
  0.05; else intercept only. The test keeps the simpler update unless the centre's data reject
  it, which is what protects a small sample from an overfitted slope. On Dataset010's external
  centre (``benchmarks/model_updating.py``, documentation/prediction.md) a true slope of about 2
  was found by the test at 18 events, where a fixed "intercept below 20 events" rule missed it.

No step reverses the ranking: a refitted slope (or Cox coefficient) <= 0 falls back to the
previous step, so AUC and C-index are the same before and after (isotonic: the order is kept, but
ties may appear). The updates are JSON-safe dicts; ``glmil_recalibrate`` records them in a copy of
the model folder (``model_update.json``), and ``glmil_predict`` applies them.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import optimize, stats
from sklearn.isotonic import IsotonicRegression

from glmil_auto.inference.recalibration import logit
from glmil_auto.numerics.breslow import BreslowBaseline

METHODS = ("auto", "intercept", "logistic", "isotonic")
AUTO_INTERCEPT_BELOW = 10
AUTO_LOGISTIC_FROM = 50
CLOSED_TEST_ALPHA = 0.05
SURVIVAL_STEPS = {"intercept": "baseline", "logistic": "baseline_and_slope", "isotonic": "baseline_and_slope"}


def auto_step(limiting_events: int) -> str:
    """The step ``auto`` takes for this many limiting events: ``"intercept"``, ``"closed_test"``
    (decided by the likelihood-ratio test) or ``"logistic"`` (see the module docstring)."""
    if limiting_events < AUTO_INTERCEPT_BELOW:
        return "intercept"
    if limiting_events < AUTO_LOGISTIC_FROM:
        return "closed_test"
    return "logistic"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _bernoulli_loglik(y: np.ndarray, eta: np.ndarray) -> float:
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def _fit_intercept(offset: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The maximum-likelihood ``a`` of ``logit p' = a + offset`` and its standard error (Fisher)."""
    def excess(a: float) -> float:
        return float(_sigmoid(a + offset).sum() - y.sum())

    a = float(optimize.brentq(excess, -30.0, 30.0, xtol=1e-12))
    fitted = _sigmoid(a + offset)
    return a, float(1.0 / math.sqrt(max(float(np.sum(fitted * (1.0 - fitted))), 1e-300)))


def _fit_intercept_slope(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` of ``logit p' = a + b x`` (unpenalised maximum likelihood: Newton-Raphson from 0
    with step halving) and their standard errors from the Fisher information."""
    design = np.column_stack([np.ones_like(x), x])

    def information(beta: np.ndarray) -> np.ndarray:
        fitted = _sigmoid(design @ beta)
        return design.T @ (design * (fitted * (1.0 - fitted))[:, None])

    beta = np.zeros(2)
    loglik = _bernoulli_loglik(y, design @ beta)
    for _ in range(200):
        step = np.linalg.lstsq(information(beta), design.T @ (y - _sigmoid(design @ beta)), rcond=None)[0]
        for _ in range(60):  # halve the step until the likelihood does not fall
            candidate = beta + step
            new = _bernoulli_loglik(y, design @ candidate)
            if new >= loglik - 1e-12:
                break
            step = step / 2.0
        beta, loglik = candidate, new
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta, np.sqrt(np.diag(np.linalg.pinv(information(beta))))


def _interval(estimate: float, se: float, level: float = 0.95) -> list[float]:
    z = float(stats.norm.ppf(0.5 + level / 2))
    return [estimate - z * se, estimate + z * se]


def fit_binary_update(probabilities: Sequence[float], outcomes: Sequence[float], method: str = "auto"
                      ) -> dict[str, Any]:
    """The update of one binary endpoint's probabilities (NaN pairs dropped); see the module
    docstring for the steps and ``auto``'s rule. Raises ValueError for an unknown method or when
    the outcomes hold a single class."""
    if method not in METHODS:
        raise ValueError(f"unknown update method {method!r}: use one of {list(METHODS)}")
    p, y = np.asarray(probabilities, dtype=float), np.asarray(outcomes, dtype=float)
    known = np.isfinite(p) & np.isfinite(y)
    p, y = p[known], y[known]
    events, n = int(y.sum()), int(len(y))
    limiting = min(events, n - events)
    if limiting == 0:
        raise ValueError(f"{n} labelled case(s) with {events} event(s): an update needs both outcomes")
    record: dict[str, Any] = {"type": "binary", "requested": method, "n": n, "events": events,
                              "non_events": n - events, "limiting_events": limiting}
    step = auto_step(limiting) if method == "auto" else method
    if method == "auto":
        record["rule"] = (f"{limiting} limiting events: below {AUTO_INTERCEPT_BELOW} intercept only, from "
                          f"{AUTO_LOGISTIC_FROM} intercept and slope, in between the closed test")
    offset = logit(p)
    a, a_se = _fit_intercept(offset, y)
    intercept_only = {"method": "intercept", "intercept": a, "slope": 1.0, "intercept_se": a_se,
                      "intercept_ci": _interval(a, a_se)}
    if step == "isotonic":
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return {**record, "method": "isotonic", "x": [float(v) for v in model.X_thresholds_],
                "y": [float(v) for v in model.y_thresholds_], "note": "monotone: the order is kept, ties may appear"}
    if step == "intercept":
        return {**record, **intercept_only}
    (b0, b1), (se0, se1) = _fit_intercept_slope(offset, y)
    logistic = {"method": "logistic", "intercept": float(b0), "slope": float(b1), "intercept_se": float(se0),
                "slope_se": float(se1), "intercept_ci": _interval(b0, se0), "slope_ci": _interval(b1, se1)}
    if step == "closed_test":
        statistic = 2.0 * (_bernoulli_loglik(y, b0 + b1 * offset) - _bernoulli_loglik(y, a + offset))
        p_value = float(stats.chi2.sf(max(statistic, 0.0), df=1))
        record["closed_test"] = {"lr_statistic": float(statistic), "p_value": p_value, "alpha": CLOSED_TEST_ALPHA}
        if p_value >= CLOSED_TEST_ALPHA:
            return {**record, **intercept_only}
    if b1 <= 0:  # an update may shift and stretch, never reverse the ranking
        return {**record, **intercept_only, "note": f"fitted slope {b1:.3g} <= 0: intercept only"}
    return {**record, **logistic}


def apply_binary_update(update: dict[str, Any], probabilities: Sequence[float]) -> np.ndarray:
    """The updated probabilities under ``update`` (from :func:`fit_binary_update`)."""
    p = np.asarray(probabilities, dtype=float)
    if update["method"] in ("intercept", "logistic"):
        return _sigmoid(update["intercept"] + update["slope"] * logit(p))
    if update["method"] == "isotonic":
        return np.interp(p, update["x"], update["y"])
    raise ValueError(f"unknown update method {update['method']!r}")


def cox_partial_loglik(linear_predictor: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Cox's partial log-likelihood of ``linear_predictor`` with Breslow's handling of ties."""
    order = np.argsort(-time, kind="stable")  # decreasing time: the risk set is a running sum
    lp, t, e = linear_predictor[order], time[order], event[order]
    log_risk_set = np.logaddexp.accumulate(lp)
    # tied times share the risk set of the last of them in this order (all with T >= t)
    last_of_tie = np.r_[t[1:] != t[:-1], True]
    shared = np.empty_like(log_risk_set)
    index = np.flatnonzero(last_of_tie)
    for start, stop in zip(np.r_[0, index[:-1] + 1], index + 1):
        shared[start:stop] = log_risk_set[stop - 1]
    return float(np.sum(e * (lp - shared)))


def _fit_cox_slope(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[float, float]:
    """The one-variable Cox coefficient of ``risk`` (maximum partial likelihood) and its SE."""
    result = optimize.minimize_scalar(lambda b: -cox_partial_loglik(b * risk, time, event), bounds=(-20.0, 20.0),
                                      method="bounded", options={"xatol": 1e-10})
    beta, h = float(result.x), 1e-4
    curvature = (cox_partial_loglik((beta + h) * risk, time, event) - 2 * cox_partial_loglik(beta * risk, time, event)
                 + cox_partial_loglik((beta - h) * risk, time, event)) / h ** 2
    return beta, float(1.0 / math.sqrt(-curvature)) if curvature < 0 else float("inf")


def fit_survival_update(risks: Sequence[float], time: Sequence[float], event: Sequence[float],
                        source_model: dict[str, Any], method: str = "auto") -> dict[str, Any]:
    """The update of one survival endpoint: the Breslow baseline at the new centre, with the source
    model's coefficient ``beta`` of the standardised risk (``baseline``) or a refitted one
    (``baseline_and_slope``); same shape as
    :func:`~glmil_auto.inference.survival_probabilities.fit_survival_model` (``beta``,
    ``baseline``), so survival probabilities come out the same way."""
    if method not in METHODS:
        raise ValueError(f"unknown update method {method!r}: use one of {list(METHODS)}")
    r, t, e = (np.asarray(v, dtype=float) for v in (risks, time, event))
    known = np.isfinite(r) & np.isfinite(t) & np.isfinite(e)
    r, t, e = r[known], t[known], e[known]
    events = int(e.sum())
    if events == 0:
        raise ValueError(f"{len(r)} labelled case(s) without an event: a survival update needs some")
    record: dict[str, Any] = {"type": "survival", "requested": method, "n": int(len(r)), "events": events,
                              "limiting_events": events, "source_beta": float(source_model["beta"])}
    step = auto_step(events) if method == "auto" else method
    if method == "auto":
        record["rule"] = (f"{events} events: below {AUTO_INTERCEPT_BELOW} the baseline only, from {AUTO_LOGISTIC_FROM} "
                          "the baseline and the coefficient, in between the closed test")
    if method == "isotonic":
        record["note"] = "isotonic has no survival analogue: the baseline and the coefficient are refitted"
    beta = float(source_model["beta"])
    chosen = SURVIVAL_STEPS.get(step, step)
    if chosen != "baseline":
        new_beta, se = _fit_cox_slope(r, t, e)
        record.update({"refitted_beta": new_beta, "refitted_beta_se": se, "refitted_beta_ci": _interval(new_beta, se)})
        if step == "closed_test":
            statistic = 2.0 * (cox_partial_loglik(new_beta * r, t, e) - cox_partial_loglik(beta * r, t, e))
            p_value = float(stats.chi2.sf(max(statistic, 0.0), df=1))
            record["closed_test"] = {"lr_statistic": float(statistic), "p_value": p_value, "alpha": CLOSED_TEST_ALPHA}
            chosen = "baseline_and_slope" if p_value < CLOSED_TEST_ALPHA else "baseline"
        if chosen == "baseline_and_slope" and new_beta <= 0:
            record["note"] = f"refitted coefficient {new_beta:.3g} <= 0: the baseline only"
            chosen = "baseline"
        if chosen == "baseline_and_slope":
            beta = new_beta
    baseline = BreslowBaseline.fit(t, e, beta * r)
    return {**record, "method": chosen, "beta": beta, "baseline": baseline.to_dict()}
