"""Recalibration maps: logistic (Platt on the logit) recovers a known miscalibration, isotonic is
monotone and used only with enough events, identity without anything to fit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from glmil_auto.inference.recalibration import (
    MIN_EVENTS_FOR_ISOTONIC,
    apply_recalibration,
    fit_recalibration,
    fit_recalibration_maps,
    logit,
)


def miscalibrated(n: int, seed: int, a: float = -0.8, b: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn with logit(true p) = a + b logit(published p): the published p is too extreme."""
    rng = np.random.default_rng(seed)
    published = 1 / (1 + np.exp(-rng.normal(-0.5, 2.0, n)))
    true = 1 / (1 + np.exp(-(a + b * logit(published))))
    return published, (rng.random(n) < true).astype(float)


def test_logistic_recalibration_is_the_maximum_likelihood_fit_and_recovers_the_truth():
    p, y = miscalibrated(4000, seed=0)
    mapping = fit_recalibration(p, y, method="logistic")
    reference = sm.GLM(y, sm.add_constant(logit(p)), family=sm.families.Binomial()).fit()
    assert mapping["intercept"] == pytest.approx(reference.params[0], abs=1e-4)
    assert mapping["slope"] == pytest.approx(reference.params[1], abs=1e-4)
    assert mapping["intercept"] == pytest.approx(-0.8, abs=0.15) and mapping["slope"] == pytest.approx(0.6, abs=0.08)
    recalibrated = apply_recalibration(mapping, p)
    after = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=logit(recalibrated)).fit()
    before = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=logit(p)).fit()
    assert abs(after.params[0]) < 1e-3 < abs(before.params[0])  # calibration in the large: 0 after
    json.dumps(mapping)  # stored with the model


def test_auto_takes_isotonic_only_with_enough_events_and_it_is_monotone():
    p, y = miscalibrated(300, seed=1)
    assert fit_recalibration(p, y)["method"] == "logistic"  # fewer than MIN_EVENTS_FOR_ISOTONIC events
    p, y = miscalibrated(6 * MIN_EVENTS_FOR_ISOTONIC, seed=2)
    mapping = fit_recalibration(p, y)
    assert mapping["method"] == "isotonic"
    grid = np.linspace(0, 1, 501)
    mapped = apply_recalibration(mapping, grid)
    assert np.all(np.diff(mapped) >= 0) and mapped.min() >= 0 and mapped.max() <= 1
    from sklearn.isotonic import IsotonicRegression

    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    np.testing.assert_allclose(mapped, reference.predict(grid), atol=1e-12)


def test_nothing_to_fit_gives_the_identity_and_nan_pairs_are_dropped():
    assert fit_recalibration([0.2, 0.4], [0, 0])["method"] == "identity"
    identity = {"method": "identity"}
    np.testing.assert_array_equal(apply_recalibration(identity, [0.1, 0.7]), [0.1, 0.7])
    p, y = miscalibrated(500, seed=3)
    y_missing = y.copy()
    y_missing[:50] = np.nan
    assert fit_recalibration(p, y_missing, "logistic") == fit_recalibration(p[50:], y[50:], "logistic")
    tables = {"0": pd.DataFrame({"lf": p[:250], "true_lf": y[:250]}), "1": pd.DataFrame({"lf": p[250:], "true_lf": y[250:]})}
    assert fit_recalibration_maps(tables, ["lf"])["lf"] == fit_recalibration(p, y)
    with pytest.raises(ValueError, match="lack 'distant'"):
        fit_recalibration_maps(tables, ["distant"])


def test_an_anti_predictive_fit_never_reverses_the_ranking():
    p, y = miscalibrated(1000, seed=4, a=0.3, b=-0.5)  # outcomes fall as the published probability rises
    mapping = fit_recalibration(p, y, method="logistic")
    assert mapping["slope"] == 1.0 and "intercept-only" in mapping["note"]
    recalibrated = apply_recalibration(mapping, p)
    assert np.all(np.diff(recalibrated[np.argsort(p)]) >= 0)  # same order as before
    assert recalibrated.sum() == pytest.approx(y.sum(), rel=1e-9)  # calibrated in the large
