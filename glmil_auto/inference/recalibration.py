"""Recalibrating the ensemble's probabilities on the out-of-fold predictions.

A network's probabilities need not be calibrated: a prevalence-weighted loss inflates them, and
a model trained on one cohort's case mix is rarely calibrated on another's. Decision-curve
analysis and any threshold a clinician uses need calibrated probabilities, so each binary
endpoint gets a recalibration map fitted on the pooled out-of-fold predictions of the folds in
use (every training case scored once, by the fold that never trained on it):

- ``logistic`` (Platt scaling on the logit, the default): ``p' = sigmoid(a + b logit(p))``, two
  parameters, stable with a few dozen events; a fitted ``b <= 0`` (out-of-fold predictions that
  rank backwards) falls back to the intercept alone, so that recalibration never reverses the
  model's ranking (and never changes an AUC);
- ``isotonic`` (scikit-learn's ``IsotonicRegression``, clipped outside the fitted range): a
  monotone step map, only when there are at least :data:`MIN_EVENTS_FOR_ISOTONIC` events and as
  many non-events, because with fewer it overfits;
- ``identity`` when no out-of-fold predictions exist (fold ``all``, or folds validated before
  this map existed): the probabilities are published as they are, and the record says so.

The map is applied to the fold ensemble's mean probability; both are written (``<endpoint>`` and
``<endpoint>_uncalibrated``). Maps are JSON-safe dicts, stored in the model folder beside
``risk_groups.json``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

MIN_EVENTS_FOR_ISOTONIC = 200
_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p))


def fit_recalibration(probabilities: Sequence[float], outcomes: Sequence[float], method: str = "auto"
                      ) -> dict[str, Any]:
    """A recalibration map of ``probabilities`` to ``outcomes`` (0/1; NaN pairs are dropped).

    ``method``: ``"logistic"``, ``"isotonic"`` or ``"auto"`` (isotonic with at least
    :data:`MIN_EVENTS_FOR_ISOTONIC` events and non-events, else logistic)."""
    p = np.asarray(probabilities, dtype=float)
    y = np.asarray(outcomes, dtype=float)
    known = np.isfinite(p) & np.isfinite(y)
    p, y = p[known], y[known]
    events, n = int(y.sum()), int(len(y))
    if events == 0 or events == n:
        return {"method": "identity", "reason": f"{n} known outcome(s), {events} event(s): nothing to fit",
                "n": n, "events": events}
    if method == "auto":
        method = "isotonic" if min(events, n - events) >= MIN_EVENTS_FOR_ISOTONIC else "logistic"
    if method == "logistic":
        model = LogisticRegression(C=np.inf, solver="lbfgs", tol=1e-10, max_iter=10000)  # unpenalised
        model.fit(logit(p)[:, None], y.astype(int))
        slope = float(model.coef_[0, 0])
        if slope <= 0:  # a map may shift and stretch, never reverse the model's ranking
            return {"method": "logistic", "intercept": _intercept_only(logit(p), y), "slope": 1.0, "n": n,
                    "events": events, "note": f"fitted slope {slope:.3g} <= 0: intercept-only recalibration"}
        return {"method": "logistic", "intercept": float(model.intercept_[0]), "slope": slope,
                "n": n, "events": events}
    if method == "isotonic":
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return {"method": "isotonic", "x": [float(v) for v in model.X_thresholds_],
                "y": [float(v) for v in model.y_thresholds_], "n": n, "events": events}
    raise ValueError(f"unknown recalibration method {method!r}: use logistic, isotonic or auto")


def _intercept_only(offset: np.ndarray, y: np.ndarray) -> float:
    """The maximum-likelihood intercept with the logit as an offset (slope fixed at 1): the
    predicted events then sum to the observed ones (calibration in the large)."""
    def excess(a: float) -> float:
        return float((1.0 / (1.0 + np.exp(-(a + offset)))).sum() - y.sum())

    return float(optimize.brentq(excess, -30.0, 30.0, xtol=1e-12))


def apply_recalibration(recalibration: dict[str, Any], probabilities: Sequence[float]) -> np.ndarray:
    """The recalibrated probabilities (the map from :func:`fit_recalibration`)."""
    p = np.asarray(probabilities, dtype=float)
    method = recalibration["method"]
    if method == "identity":
        return p.copy()
    if method == "logistic":
        return 1.0 / (1.0 + np.exp(-(recalibration["intercept"] + recalibration["slope"] * logit(p))))
    if method == "isotonic":
        return np.interp(p, recalibration["x"], recalibration["y"])  # constant beyond the ends, as clipping
    raise ValueError(f"unknown recalibration method {method!r}")


def fit_recalibration_maps(oof_tables: dict[str, pd.DataFrame], binary_endpoints: Sequence[str],
                           method: str = "auto") -> dict[str, dict[str, Any]]:
    """Per binary endpoint, the map fitted on the pooled out-of-fold tables (``fold -> table`` with
    ``<endpoint>`` and ``true_<endpoint>`` columns, as ``validation/predictions.csv``)."""
    maps = {}
    for endpoint in binary_endpoints:
        p, y = [], []
        for fold, table in oof_tables.items():
            if endpoint not in table or f"true_{endpoint}" not in table:
                raise ValueError(f"fold {fold}'s validation predictions lack '{endpoint}' or 'true_{endpoint}'")
            p.append(table[endpoint].to_numpy(dtype=float))
            y.append(table[f"true_{endpoint}"].to_numpy(dtype=float))
        maps[endpoint] = fit_recalibration(np.concatenate(p) if p else [], np.concatenate(y) if y else [], method)
    return maps


def identity_maps(binary_endpoints: Sequence[str], reason: str) -> dict[str, dict[str, Any]]:
    return {endpoint: {"method": "identity", "reason": reason} for endpoint in binary_endpoints}

