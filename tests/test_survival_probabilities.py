"""Survival probabilities from a standardised risk: the one-variable Cox slope and the Breslow
baseline agree with lifelines' Cox model on the same data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from glmil_auto.inference.survival_probabilities import (
    fit_survival_model,
    horizon_label,
    pooled_standardised_risks,
    survival_probabilities,
)


def simulated(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(20.0 * np.exp(-0.7 * risk))
    censor = rng.uniform(5, 60, n)
    return pd.DataFrame({"risk": risk, "time": np.minimum(time, censor), "event": (time <= censor).astype(float)})


def test_slope_and_survival_agree_with_lifelines():
    data = simulated()
    model = fit_survival_model(data["risk"], data["time"], data["event"])
    json.dumps(model)
    cox = CoxPHFitter().fit(data, duration_col="time", event_col="event")
    assert model["beta"] == pytest.approx(cox.params_["risk"], rel=1e-6)
    assert model["beta"] == pytest.approx(0.7, abs=0.15)
    event_times = np.sort(data.loc[data["event"] == 1, "time"].to_numpy())
    horizons = list(event_times[[10, 100, 200]])  # lifelines interpolates between event times; we step
    new = np.array([-1.5, 0.0, 0.4, 2.0])
    ours = survival_probabilities(model, new, horizons)
    theirs = cox.predict_survival_function(pd.DataFrame({"risk": new}), times=horizons).to_numpy().T
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert horizon_label(12.0) == "12" and horizon_label(6.5) == "6.5"


def test_out_of_fold_risks_are_standardised_per_fold_and_missing_outcomes_dropped():
    tables = {"0": pd.DataFrame({"os_log_risk": [1.0, 3.0], "true_t": [5.0, 9.0], "true_e": [1.0, 0.0]}),
              "1": pd.DataFrame({"os_log_risk": [10.0, 30.0], "true_t": [4.0, np.nan], "true_e": [1.0, np.nan]})}
    scales = {"0": {"mean": 2.0, "std": 1.0}, "1": {"mean": 20.0, "std": 10.0}}
    risks, times, events = pooled_standardised_risks(tables, "os", "t", "e", scales)
    np.testing.assert_array_equal(risks, [-1.0, 1.0, -1.0, 1.0])
    np.testing.assert_array_equal(times[:3], [5.0, 9.0, 4.0])
    with pytest.raises(ValueError, match="lack"):
        pooled_standardised_risks(tables, "os", "time", "e", scales)
    with pytest.raises(ValueError, match="no events"):
        fit_survival_model([0.1, 0.2], [3.0, 4.0], [0.0, 0.0])
