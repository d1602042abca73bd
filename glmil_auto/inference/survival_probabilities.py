"""Survival probabilities at horizons from the ensemble's standardised risk.

The ensemble publishes a standardised log-risk per survival endpoint (see
:mod:`~glmil_auto.inference.risk_groups`), which ranks patients but is not yet a hazard. From
the pooled out-of-fold predictions (every training case scored by the fold that never trained
on it, standardised with that fold's scale, as new patients are), a one-variable Cox model gives
the log hazard ratio ``beta`` per unit of standardised risk (lifelines), and the Breslow
estimator gives the baseline cumulative hazard ``H0`` of the linear predictor ``beta * risk``
(:class:`~glmil_auto.numerics.breslow.BreslowBaseline`). A new patient's survival is

    S(t | risk) = exp(-H0(t) exp(beta * risk - offset))

``glmil_predict`` writes it as ``<endpoint>_surv_<t>`` for each horizon ``t`` (in the unit of the
dataset's time column: months in the synthetic cohort); beyond the last event time of the
training cohort the curve stays flat. The fitted model is JSON-safe and stored in the model
folder beside ``risk_groups.json``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from glmil_auto.numerics.breslow import BreslowBaseline

DEFAULT_HORIZONS = (12.0, 24.0)


def horizon_label(horizon: float) -> str:
    """``12`` for 12.0, ``6.5`` for 6.5: the ``<t>`` of a ``<endpoint>_surv_<t>`` column."""
    return f"{horizon:g}"


def fit_survival_model(risks: Sequence[float], time: Sequence[float], event: Sequence[float]) -> dict[str, Any]:
    """``beta`` of a one-variable Cox model of the standardised ``risks`` and the Breslow baseline
    of ``beta * risk`` (cases with a missing value dropped); JSON-safe."""
    from lifelines import CoxPHFitter

    frame = pd.DataFrame({"risk": np.asarray(risks, dtype=float), "time": np.asarray(time, dtype=float),
                          "event": np.asarray(event, dtype=float)}).dropna()
    if frame.empty or frame["event"].sum() == 0:
        raise ValueError(f"no events among {len(frame)} out-of-fold case(s): survival probabilities need some")
    cox = CoxPHFitter().fit(frame, duration_col="time", event_col="event")
    beta = float(cox.params_["risk"])
    baseline = BreslowBaseline.fit(frame["time"], frame["event"], beta * frame["risk"])
    return {"beta": beta, "beta_se": float(cox.standard_errors_["risk"]), "n": int(len(frame)),
            "events": int(frame["event"].sum()), "baseline": baseline.to_dict()}


def survival_probabilities(model: dict[str, Any], risks: Sequence[float], horizons: Sequence[float]) -> np.ndarray:
    """``(n, len(horizons))`` survival probabilities of standardised ``risks`` under ``model``."""
    baseline = BreslowBaseline.from_dict(model["baseline"])
    return baseline.survival_at(model["beta"] * np.asarray(risks, dtype=float), list(horizons))


def pooled_standardised_risks(oof_tables: dict[str, pd.DataFrame], endpoint: str, time_column: str,
                              event_column: str, scales: dict[str, dict[str, float]]
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every fold's out-of-fold log-risks standardised with that fold's scale, with their outcomes
    (``true_<time_column>``, ``true_<event_column>`` of ``validation/predictions.csv``)."""
    risks, times, events = [], [], []
    for fold, table in oof_tables.items():
        columns = [f"{endpoint}_log_risk", f"true_{time_column}", f"true_{event_column}"]
        absent = [c for c in columns if c not in table]
        if absent:
            raise ValueError(f"fold {fold}'s validation predictions lack {absent}")
        scale = scales[fold]
        risks.append((table[columns[0]].to_numpy(dtype=float) - scale["mean"]) / scale["std"])
        times.append(table[columns[1]].to_numpy(dtype=float))
        events.append(table[columns[2]].to_numpy(dtype=float))
    return np.concatenate(risks), np.concatenate(times), np.concatenate(events)
