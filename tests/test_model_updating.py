"""Model updating for a new centre (glmil_auto.inference.model_updating): the hierarchy's steps
recover a known miscalibration, ``auto`` follows its documented rule, and no step changes a ranking."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from glmil_auto.inference import model_updating as mu
from glmil_auto.inference.recalibration import logit


def miscalibrated(n: int, intercept: float, slope: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Predictions ``p`` and outcomes drawn from ``sigmoid(intercept + slope * logit(p))``."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (1.0 + np.exp(-rng.normal(-0.5, 1.5, n)))
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(intercept + slope * logit(p))))).astype(float)
    return p, y


def with_events(events: int, n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` cases of which exactly ``events`` have the event, the likelier ones more often."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.6, n)
    y = np.zeros(n)
    y[rng.choice(n, size=events, replace=False, p=p / p.sum())] = 1.0
    return p, y


def test_a_known_miscalibration_is_recovered_within_its_ci():
    p, y = miscalibrated(3000, intercept=-1.0, slope=0.5)
    update = mu.fit_binary_update(p, y, "logistic")
    assert update["method"] == "logistic"
    assert update["intercept_ci"][0] < -1.0 < update["intercept_ci"][1]
    assert update["slope_ci"][0] < 0.5 < update["slope_ci"][1]
    # statsmodels' unpenalised logistic regression of y on logit(p) gives the same fit
    import statsmodels.api as sm

    reference = sm.Logit(y, sm.add_constant(logit(p))).fit(disp=0)
    np.testing.assert_allclose([update["intercept"], update["slope"]], reference.params, rtol=1e-7)
    np.testing.assert_allclose([update["intercept_se"], update["slope_se"]], reference.bse, rtol=1e-6)


def test_the_intercept_step_matches_the_observed_events_and_an_offset_glm():
    import statsmodels.api as sm

    p, y = miscalibrated(800, intercept=0.7, slope=1.0, seed=3)
    update = mu.fit_binary_update(p, y, "intercept")
    assert update["slope"] == 1.0
    assert mu.apply_binary_update(update, p).sum() == pytest.approx(y.sum(), rel=1e-9)
    reference = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=logit(p)).fit()
    assert update["intercept"] == pytest.approx(float(reference.params[0]), abs=1e-8)
    assert update["intercept_se"] == pytest.approx(float(reference.bse[0]), rel=1e-6)
    assert update["intercept_ci"][0] < 0.7 < update["intercept_ci"][1]


@pytest.mark.parametrize("events, expected", [(5, "intercept"), (9, "intercept"), (10, "closed_test"),
                                             (30, "closed_test"), (49, "closed_test"), (100, "logistic")])
def test_auto_takes_the_documented_step(events, expected):
    assert mu.auto_step(events) == expected
    p, y = with_events(events)
    update = mu.fit_binary_update(p, y, "auto")
    assert update["limiting_events"] == events and update["requested"] == "auto"
    if expected == "closed_test":  # the likelihood-ratio test of the slope decides, and is recorded
        test = update["closed_test"]
        assert update["method"] == ("logistic" if test["p_value"] < 0.05 else "intercept")
    else:
        assert "closed_test" not in update and update["method"] == expected


def test_the_closed_test_keeps_a_slope_the_data_demand():
    p, y = miscalibrated(3000, intercept=0.0, slope=0.3, seed=4)  # far from 1: the test rejects slope = 1
    keep = np.flatnonzero(y == 1)[:35].tolist() + np.flatnonzero(y == 0)[:400].tolist()
    update = mu.fit_binary_update(p[keep], y[keep], "auto")
    assert update["limiting_events"] == 35 and update["closed_test"]["p_value"] < 0.05
    assert update["method"] == "logistic"


def test_no_step_changes_the_ranking_and_a_backward_slope_falls_back():
    p, y = miscalibrated(500, intercept=-1.0, slope=0.5, seed=5)
    for method in ("intercept", "logistic"):
        updated = mu.apply_binary_update(mu.fit_binary_update(p, y, method), p)
        assert roc_auc_score(y, updated) == roc_auc_score(y, p)
        assert np.array_equal(np.argsort(updated, kind="stable"), np.argsort(p, kind="stable"))
    backwards = mu.fit_binary_update(p, 1.0 - y, "logistic")  # the model ranks backwards here
    assert backwards["method"] == "intercept" and "<= 0" in backwards["note"]
    isotonic = mu.apply_binary_update(mu.fit_binary_update(p, y, "isotonic"), p)
    assert (np.diff(isotonic[np.argsort(p)]) >= 0).all()  # monotone: the order is kept, ties allowed


def test_single_class_outcomes_and_unknown_methods_are_refused():
    with pytest.raises(ValueError, match="needs both outcomes"):
        mu.fit_binary_update([0.2, 0.3], [0.0, 0.0])
    with pytest.raises(ValueError, match="unknown update method"):
        mu.fit_binary_update([0.2, 0.3], [0.0, 1.0], "platt")


def survival_cohort(n: int, beta: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(1.0 / (0.05 * np.exp(beta * risk)))
    censor = rng.exponential(40.0, n)
    return risk, np.minimum(time, censor), (time <= censor).astype(float)


def test_the_cox_partial_likelihood_and_coefficient_agree_with_lifelines():
    import pandas as pd
    from lifelines import CoxPHFitter

    risk, time, event = survival_cohort(300, beta=0.6)
    cox = CoxPHFitter().fit(pd.DataFrame({"risk": risk, "time": time, "event": event}), "time", "event")
    beta, se = mu._fit_cox_slope(risk, time, event)
    assert beta == pytest.approx(float(cox.params_["risk"]), abs=1e-5)
    assert se == pytest.approx(float(cox.standard_errors_["risk"]), rel=1e-3)
    assert mu.cox_partial_loglik(beta * risk, time, event) == pytest.approx(cox.log_likelihood_, abs=1e-6)


def test_cox_partial_likelihood_with_ties_equals_a_brute_force_breslow_sum():
    time = np.array([2.0, 2.0, 3.0, 5.0, 5.0, 5.0, 8.0])
    event = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    lp = np.array([0.3, -0.2, 0.5, 1.0, -1.0, 0.1, 0.0])
    brute = sum(lp[i] - np.log(np.exp(lp[time >= time[i]]).sum()) for i in range(len(time)) if event[i])
    assert mu.cox_partial_loglik(lp, time, event) == pytest.approx(brute, abs=1e-12)


@pytest.mark.parametrize("events, expected", [(8, "baseline"), (100, "baseline_and_slope")])
def test_survival_updates_refit_the_baseline_and_with_enough_events_the_coefficient(events, expected):
    risk, time, event = survival_cohort(2000, beta=1.2, seed=2)
    order = np.argsort(time)
    keep = np.r_[np.flatnonzero(event == 1)[:events], np.flatnonzero(event == 0)[:150]]
    update = mu.fit_survival_update(risk[keep], time[keep], event[keep], {"beta": 0.6}, "auto")
    assert update["method"] == expected and update["events"] == events
    assert update["beta"] == (0.6 if expected == "baseline" else update["refitted_beta"])
    if expected == "baseline_and_slope":
        assert update["refitted_beta_ci"][0] < 1.2 < update["refitted_beta_ci"][1]
    from glmil_auto.inference.survival_probabilities import survival_probabilities

    surv = survival_probabilities(update, risk[order[:50]], [5.0])[:, 0]
    # survival at a horizon falls with the risk: the ranking (C-index) of the risk is kept
    assert (np.diff(surv[np.argsort(risk[order[:50]])]) <= 1e-12).all()
