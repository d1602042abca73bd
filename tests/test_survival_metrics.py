"""Agreement tests of glmil_auto.evaluation.metrics.survival_metrics with scikit-survival and lifelines.

Data: scikit-survival's ``load_whas500`` (Worcester Heart Attack Study, follow-up in days, here
converted to months) and lifelines' ``load_rossi`` (recidivism, weeks), both shipped with the
libraries; risk scores are the linear predictors of lifelines Cox models fitted to them.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from glmil_auto.evaluation.metrics.survival_metrics import (
    BreslowBaseline,
    breslow_baseline,
    harrell_c_with_ci,
    hazard_ratio_between_groups,
    integrated_brier,
    kaplan_meier_by_group,
    logrank_test,
    paired_c_difference_test,
    time_dependent_auc,
    uno_c_with_ci,
)

lifelines = pytest.importorskip("lifelines")
sksurv_metrics = pytest.importorskip("sksurv.metrics")

from lifelines import CoxPHFitter, KaplanMeierFitter  # noqa: E402
from lifelines.datasets import load_rossi  # noqa: E402
from lifelines.statistics import multivariate_logrank_test  # noqa: E402
from lifelines.utils import concordance_index  # noqa: E402
from sksurv.compare import compare_survival  # noqa: E402
from sksurv.datasets import load_whas500  # noqa: E402
from sksurv.linear_model.coxph import BreslowEstimator  # noqa: E402
from sksurv.metrics import (  # noqa: E402
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import kaplan_meier_estimator  # noqa: E402
from sksurv.util import Surv  # noqa: E402

DAYS_PER_MONTH = 365.25 / 12
WHAS_COVARIATES = ["age", "bmi", "hr", "sysbp", "diasbp", "gender", "chf", "sho", "mitype", "av3"]


def _fit_cox(frame: pd.DataFrame, duration: str, event: str) -> CoxPHFitter:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoxPHFitter().fit(frame, duration_col=duration, event_col=event)


def _linear_predictor(fitter: CoxPHFitter, covariates: pd.DataFrame) -> np.ndarray:
    """Uncentred x . beta (lifelines centres its covariates; the C and Breslow survival do not care)."""
    return covariates[fitter.params_.index].to_numpy(float) @ fitter.params_.to_numpy()


@pytest.fixture(scope="module")
def whas():
    """whas500 split 60/40 (seeded); a lifelines Cox model fitted on the training part."""
    X, y = load_whas500()
    frame = X[WHAS_COVARIATES].astype(float)
    frame["time"] = y["lenfol"] / DAYS_PER_MONTH
    frame["event"] = y["fstat"].astype(int)
    order = np.random.default_rng(20240601).permutation(len(frame))
    train, test = frame.iloc[order[:300]].reset_index(drop=True), frame.iloc[order[300:]].reset_index(drop=True)
    fitter = _fit_cox(train, "time", "event")
    return {
        "train": train,
        "test": test,
        "train_risk": _linear_predictor(fitter, train),
        "test_risk": _linear_predictor(fitter, test),
        "y_train": Surv.from_arrays(train["event"].astype(bool), train["time"]),
        "y_test": Surv.from_arrays(test["event"].astype(bool), test["time"]),
    }


@pytest.fixture(scope="module")
def rossi():
    frame = load_rossi()
    fitter = _fit_cox(frame, "week", "arrest")
    covariates = frame.drop(columns=["week", "arrest"])
    return {"frame": frame, "fitter": fitter, "covariates": covariates, "risk": _linear_predictor(fitter, covariates)}


def _simulated(n: int = 300, seed: int = 7):
    """Exponential survival with log-hazard = x (true linear predictor), uniform censoring."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    event_time = rng.exponential(1.0 / (0.03 * np.exp(x)))
    censor_time = rng.uniform(6, 60, size=n)
    time = np.minimum(event_time, censor_time)
    event = (event_time <= censor_time).astype(int)
    return time, event, x, rng.normal(size=n)


# ------------------------------------------------------------------------------------ Harrell's C


def test_harrell_c_equals_sksurv_and_lifelines(whas, rossi):
    test, risk = whas["test"], whas["test_risk"]
    result = harrell_c_with_ci(test["time"], test["event"], risk, n_bootstrap=0)
    expected = concordance_index_censored(test["event"].astype(bool), test["time"], risk)
    assert result["c_index"] == expected[0]
    assert (result["concordant"], result["discordant"], result["tied_risk"], result["tied_time"]) == tuple(expected[1:])
    assert result["c_index"] == pytest.approx(concordance_index(test["time"], -risk, test["event"]), abs=1e-12)
    assert result["n"] == len(test) and result["events"] == int(test["event"].sum())
    assert math.isnan(result["ci_low"]) and result["n_bootstrap_valid"] == 0

    frame = rossi["frame"]  # many tied weeks
    result = harrell_c_with_ci(frame["week"], frame["arrest"], rossi["risk"], n_bootstrap=0)
    assert result["c_index"] == pytest.approx(concordance_index(frame["week"], -rossi["risk"], frame["arrest"]), abs=1e-12)
    assert result["c_index"] == pytest.approx(rossi["fitter"].concordance_index_, abs=1e-12)


def test_harrell_bootstrap_is_seeded_and_contains_estimate(whas):
    test, risk = whas["test"], whas["test_risk"]
    first = harrell_c_with_ci(test["time"], test["event"], risk, n_bootstrap=200, seed=3)
    again = harrell_c_with_ci(test["time"], test["event"], risk, n_bootstrap=200, seed=3)
    other = harrell_c_with_ci(test["time"], test["event"], risk, n_bootstrap=200, seed=4)
    assert first == again
    assert (first["ci_low"], first["ci_high"]) != (other["ci_low"], other["ci_high"])
    assert first["ci_low"] < first["c_index"] < first["ci_high"]
    assert first["n_bootstrap_valid"] == 200
    assert 0.5 < first["ci_low"] and first["ci_high"] - first["ci_low"] < 0.2

    # the replicates are sksurv on the resampled cases: rebuild the interval by hand
    rng = np.random.default_rng(3)
    event, time = test["event"].to_numpy().astype(bool), test["time"].to_numpy()
    replicates = []
    for _ in range(200):
        i = rng.integers(0, len(test), size=len(test))
        replicates.append(concordance_index_censored(event[i], time[i], risk[i])[0])
    assert (first["ci_low"], first["ci_high"]) == tuple(np.quantile(replicates, [0.025, 0.975]))


def test_missing_outcomes_and_scores_are_dropped_consistently(whas):
    test, risk = whas["test"], whas["test_risk"].copy()
    time, event = test["time"].to_numpy().copy(), test["event"].to_numpy().astype(float)
    time[[0, 5]] = np.nan
    event[7] = np.nan
    risk[[5, 11, 12]] = np.nan
    keep = ~np.isnan(time) & ~np.isnan(event) & ~np.isnan(risk)
    result = harrell_c_with_ci(list(time), pd.Series(event), risk, n_bootstrap=20)
    clean = harrell_c_with_ci(time[keep], event[keep], risk[keep], n_bootstrap=20)
    assert result["c_index"] == clean["c_index"] and result["ci_low"] == clean["ci_low"]
    assert result["n"] == keep.sum() == len(test) - 5
    assert (result["n_dropped_outcome"], result["n_dropped_score"]) == (3, 2)
    # None / pd.NA count as missing too
    as_objects = [None if np.isnan(v) else v for v in risk]
    assert harrell_c_with_ci(time, event, as_objects, n_bootstrap=0)["c_index"] == clean["c_index"]
    as_nullable = pd.array([pd.NA if np.isnan(v) else v for v in risk], dtype="Float64")
    assert harrell_c_with_ci(time, event, as_nullable, n_bootstrap=0)["c_index"] == clean["c_index"]


@pytest.mark.parametrize(
    "time, event, risk, message",
    [
        ([1, 2, 3], [1, 0], [0.1, 0.2, 0.3], "differ in length"),
        ([1, 2, 3], [1, 2, 0], [0.1, 0.2, 0.3], "1 \\(event\\) or 0"),
        ([1, -2, 3], [1, 1, 0], [0.1, 0.2, 0.3], ">= 0"),
        ([1, 2, 3], [0, 0, 0], [0.1, 0.2, 0.3], "all 3 cases are censored"),
        ([1, 2, 3], [1, 0, 1], ["a", 0.2, 0.3], "risk must be numeric"),
        ([1, 2, 3], [1, 0, 1], [np.inf, 0.2, 0.3], "infinite"),
        ([1, np.nan, 3], [1, 0, np.nan], [0.1, 0.2, 0.3], "1 cases with a known outcome"),
        ([1, 2, 3], [1, 0, 1], [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], "1-D"),
    ],
)
def test_input_errors(time, event, risk, message):
    with pytest.raises(ValueError, match=message):
        harrell_c_with_ci(time, event, risk, n_bootstrap=0)
    with pytest.raises(ValueError, match="n_bootstrap"):
        harrell_c_with_ci([1, 2, 3], [1, 0, 1], [0.1, 0.2, 0.3], n_bootstrap=-1)


# --------------------------------------------------------------------------------------- Uno's C


def test_uno_c_equals_sksurv(whas):
    train, test, risk = whas["train"], whas["test"], whas["test_risk"]
    for tau in (24.0, 48.0):
        result = uno_c_with_ci(train["time"], train["event"], test["time"], test["event"], risk, tau=tau, n_bootstrap=100)
        expected = concordance_index_ipcw(whas["y_train"], whas["y_test"], risk, tau=tau)
        assert result["c_index"] == expected[0]
        assert (result["concordant"], result["discordant"]) == tuple(expected[1:3])
        assert result["ci_low"] <= result["c_index"] <= result["ci_high"]
        assert result["tau"] == tau and result["n_train"] == len(train)
    again = uno_c_with_ci(train["time"], train["event"], test["time"], test["event"], risk, tau=48.0, n_bootstrap=100)
    assert again == result


def test_uno_c_explains_a_censoring_distribution_that_reaches_zero():
    train_time, train_event = [1, 2, 3, 4, 5], [1, 0, 1, 1, 0]  # last training case censored at 5
    time, event, risk = [1.5, 3.5, 6.0, 7.0], [1, 0, 1, 0], [3.0, 2.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="smaller tau"):
        uno_c_with_ci(train_time, train_event, time, event, risk, n_bootstrap=0)
    result = uno_c_with_ci(train_time, train_event, time, event, risk, tau=4.5, n_bootstrap=0)
    assert result["c_index"] == concordance_index_ipcw(
        Surv.from_arrays(np.array(train_event, bool), train_time), Surv.from_arrays(np.array(event, bool), time),
        np.array(risk), tau=4.5,
    )[0]


# ---------------------------------------------------------------------------- time-dependent AUC


def test_time_dependent_auc_equals_sksurv_and_skips_out_of_range(whas):
    train, test, risk = whas["train"], whas["test"], whas["test_risk"]
    horizons = [24, 12, 1000, 36, 6]
    result = time_dependent_auc(train["time"], train["event"], test["time"], test["event"], risk, horizons)
    auc, mean_auc = cumulative_dynamic_auc(whas["y_train"], whas["y_test"], risk, [6, 12, 24, 36])
    by_horizon = dict(zip([6, 12, 24, 36], auc))
    assert result["horizons"] == [24.0, 12.0, 1000.0, 36.0, 6.0]
    for h, value, reason in zip(horizons, result["auc"], result["skipped_reason"]):
        if h == 1000:
            assert math.isnan(value) and "outside the test follow-up range" in reason
        else:
            assert reason is None and value == by_horizon[h]
            single, _ = cumulative_dynamic_auc(whas["y_train"], whas["y_test"], risk, [h])
            assert value == pytest.approx(single[0], abs=1e-15)
    assert result["mean_auc"] == mean_auc
    time = test["time"].to_numpy()
    assert result["n_controls"][1] == int((time > 12).sum())
    assert result["n_cases"][1] == int(((time <= 12) & (test["event"] == 1)).sum())

    nothing = time_dependent_auc(train["time"], train["event"], test["time"], test["event"], risk, [1e-6])
    assert math.isnan(nothing["auc"][0]) and math.isnan(nothing["mean_auc"])


# ----------------------------------------------------------------------------------------- Breslow


def test_breslow_survival_equals_lifelines_and_sksurv(rossi):
    frame, risk = rossi["frame"], rossi["risk"]
    baseline = breslow_baseline(frame["week"], frame["arrest"], risk)
    times = np.r_[0.5, np.unique(frame["week"]), 60.0]
    survival = baseline.survival_at(risk, times)
    assert survival.shape == (len(frame), len(times))

    # (lifelines back-fills before its first time, so compare from the first observed week on)
    observed = times[1:]
    lifelines_survival = rossi["fitter"].predict_survival_function(rossi["covariates"], times=observed).to_numpy().T
    np.testing.assert_allclose(survival[:, 1:], lifelines_survival, rtol=1e-6, atol=0)

    sksurv_baseline = BreslowEstimator().fit(risk, frame["arrest"].to_numpy().astype(bool), frame["week"].to_numpy(float))
    inside = times[(times >= frame["week"].min()) & (times <= frame["week"].max())]
    sksurv_survival = np.array([f(inside) for f in sksurv_baseline.get_survival_function(risk)])
    np.testing.assert_allclose(baseline.survival_at(risk, inside), sksurv_survival, rtol=1e-6, atol=0)
    np.testing.assert_allclose(
        baseline.cumulative_hazard_at(inside) * np.exp(-baseline.risk_offset),
        sksurv_baseline.cum_baseline_hazard_(inside), rtol=1e-9,
    )
    assert np.all(survival[:, 0] == 1.0)  # before the first event
    np.testing.assert_array_equal(survival[:, -1], survival[:, -2])  # flat after the last time

    # a constant shift of the linear predictor (lifelines' centring) changes nothing
    shifted = breslow_baseline(frame["week"], frame["arrest"], risk + 12.5)
    np.testing.assert_allclose(shifted.survival_at(risk + 12.5, times), survival, rtol=1e-12)


def test_breslow_dict_round_trip_is_exact(rossi):
    frame, risk = rossi["frame"], rossi["risk"]
    baseline = breslow_baseline(frame["week"], frame["arrest"], risk)
    restored = BreslowBaseline.from_dict(json.loads(json.dumps(baseline.to_dict())))
    assert restored == baseline
    times = [1, 10, 26, 52]
    np.testing.assert_array_equal(restored.survival_at(risk[:20], times), baseline.survival_at(risk[:20], times))
    assert baseline.n == len(frame) and baseline.events == int(frame["arrest"].sum())
    assert np.isnan(baseline.survival_at([np.nan, 0.0], times)[0]).all()
    with pytest.raises(ValueError, match="format"):
        BreslowBaseline.from_dict({"times": [1.0]})
    broken = baseline.to_dict()
    broken["cumulative_hazard"] = broken["cumulative_hazard"][::-1]
    with pytest.raises(ValueError, match="non-decreasing"):
        BreslowBaseline.from_dict(broken)


# -------------------------------------------------------------------------------- Brier score


def test_integrated_brier_equals_sksurv(whas):
    train, test = whas["train"], whas["test"]
    baseline = breslow_baseline(train["time"], train["event"], whas["train_risk"])
    times = np.linspace(3, 48, 16)
    probabilities = baseline.survival_at(whas["test_risk"], times)
    result = integrated_brier(train["time"], train["event"], test["time"], test["event"], probabilities, times)
    assert result["integrated_brier"] == integrated_brier_score(whas["y_train"], whas["y_test"], probabilities, times)
    assert len(result["brier"]) == len(times) and 0 < result["integrated_brier"] < 0.25

    damaged = probabilities.copy()
    damaged[4, 3] = np.nan
    dropped = integrated_brier(train["time"], train["event"], test["time"], test["event"], damaged, times)
    keep = np.ones(len(test), bool)
    keep[4] = False
    assert dropped["n_dropped_score"] == 1 and dropped["integrated_brier"] == integrated_brier_score(
        whas["y_train"], whas["y_test"][keep], probabilities[keep], times
    )
    args = (train["time"], train["event"], test["time"], test["event"])
    with pytest.raises(ValueError, match="strictly increasing"):
        integrated_brier(*args, probabilities, times[::-1])
    with pytest.raises(ValueError, match="shape"):
        integrated_brier(*args, probabilities[:, :5], times)
    with pytest.raises(ValueError, match="follow-up range"):
        integrated_brier(*args, baseline.survival_at(whas["test_risk"], [12, 1000]), [12, 1000])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        integrated_brier(*args, probabilities * 2, times)


# ------------------------------------------------------------------------------------------ groups


def _age_tertiles(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(pd.qcut(frame["age"], 3, labels=["young", "middle", "old"]).astype(str))


def test_kaplan_meier_by_group_equals_sksurv_and_lifelines(whas):
    test = whas["test"]
    groups = np.where(test["gender"] == 1, "female", "male")
    at_times = [0, 6, 12, 24, 36]
    result = kaplan_meier_by_group(test["time"], test["event"], groups, at_times)
    assert list(result["groups"]) == ["female", "male"]
    for label, curve in result["groups"].items():
        member = groups == label
        t, e = test["time"].to_numpy()[member], test["event"].to_numpy()[member].astype(bool)
        times, survival, ci = kaplan_meier_estimator(e, t, conf_type="log-log")
        np.testing.assert_array_equal(curve["time"], times)
        np.testing.assert_array_equal(curve["survival"], survival)
        np.testing.assert_array_equal(curve["ci_low"], ci[0])
        np.testing.assert_array_equal(curve["ci_high"], ci[1])
        assert curve["n_at_risk"] == [int((t >= a).sum()) for a in at_times]
        km = KaplanMeierFitter().fit(t, e)
        np.testing.assert_allclose(curve["survival_at_times"], km.survival_function_at_times(at_times), rtol=1e-10)
        assert curve["n"] == member.sum() and curve["events"] == e.sum()


def test_logrank_equals_sksurv_and_lifelines(whas):
    test = whas["test"]
    for groups in (test["gender"].to_numpy(), _age_tertiles(test)):
        result = logrank_test(test["time"], test["event"], groups)
        statistic, p_value = compare_survival(whas["y_test"], groups)
        assert result["statistic"] == pytest.approx(statistic, rel=1e-12)
        assert result["p_value"] == pytest.approx(p_value, rel=1e-10)
        reference = multivariate_logrank_test(test["time"], groups, test["event"])
        assert result["statistic"] == pytest.approx(reference.test_statistic, rel=1e-8)
        assert result["p_value"] == pytest.approx(reference.p_value, rel=1e-6)
        assert result["df"] == len(np.unique(groups)) - 1
        assert sum(g["observed"] for g in result["groups"].values()) == result["events"]

    labels = list(_age_tertiles(test))
    labels[0] = None
    dropped = logrank_test(test["time"], test["event"], labels)
    assert dropped["n_dropped_score"] == 1 and dropped["n"] == len(test) - 1
    with pytest.raises(ValueError, match="at least two groups"):
        logrank_test(test["time"], test["event"], ["a"] * len(test))


def test_hazard_ratio_equals_lifelines_cox(whas):
    test = whas["test"]
    groups = np.where(test["chf"] == 1, "chf", "no chf")
    result = hazard_ratio_between_groups(test["time"], test["event"], groups, reference="no chf")
    direct = _fit_cox(pd.DataFrame({"t": test["time"], "e": test["event"], "chf": test["chf"]}), "t", "e")
    row = direct.summary.loc["chf"]
    hr = result["groups"]["chf"]
    assert hr["hazard_ratio"] == pytest.approx(row["exp(coef)"], rel=1e-8)
    assert hr["ci_low"] == pytest.approx(row["exp(coef) lower 95%"], rel=1e-8)
    assert hr["ci_high"] == pytest.approx(row["exp(coef) upper 95%"], rel=1e-8)
    assert hr["p_value"] == pytest.approx(row["p"], rel=1e-6)
    assert hr["hazard_ratio"] > 1 and hr["p_value"] < 0.01
    assert list(result["groups"]) == ["chf"] and result["reference"] == "no chf"

    three = hazard_ratio_between_groups(test["time"], test["event"], _age_tertiles(test), reference="young")
    assert set(three["groups"]) == {"middle", "old"}
    assert three["groups"]["old"]["hazard_ratio"] > three["groups"]["middle"]["hazard_ratio"] > 1
    with pytest.raises(ValueError, match="reference group"):
        hazard_ratio_between_groups(test["time"], test["event"], groups, reference="missing")
    no_events = np.where(test["event"] == 1, "a", "b")
    with pytest.raises(ValueError, match="without events"):
        hazard_ratio_between_groups(test["time"], test["event"], no_events, reference="a")


# ------------------------------------------------------------------------- paired difference test


def test_paired_test_identical_scores_gives_zero_and_p_one(whas):
    test, risk = whas["test"], whas["test_risk"]
    result = paired_c_difference_test(test["time"], test["event"], risk, risk.copy(), n_bootstrap=50)
    assert result["difference"] == 0.0 and result["se"] == 0.0
    assert result["p_value"] == 1.0 and result["p_value_bootstrap"] == 1.0
    assert result["c_a"] == result["c_b"] == concordance_index_censored(test["event"].astype(bool), test["time"], risk)[0]


def test_paired_test_true_predictor_beats_noise():
    time, event, true_lp, noise = _simulated()
    result = paired_c_difference_test(time, event, true_lp, noise, n_bootstrap=200, seed=1)
    assert result["c_a"] > 0.65 and abs(result["c_b"] - 0.5) < 0.07
    assert result["difference"] == result["c_a"] - result["c_b"]
    assert result["p_value"] < 0.01 and result["p_value_bootstrap"] < 0.01
    assert result["ci_low"] < result["difference"] < result["ci_high"] and result["ci_low"] > 0
    assert result["z"] == pytest.approx(result["difference"] / result["se"])
    assert result == paired_c_difference_test(time, event, true_lp, noise, n_bootstrap=200, seed=1)
    # C of a single score from the paired test equals harrell_c_with_ci's
    assert result["c_a"] == harrell_c_with_ci(time, event, true_lp, n_bootstrap=0)["c_index"]
    # swapping the scores flips the sign and keeps the p-values
    swapped = paired_c_difference_test(time, event, noise, true_lp, n_bootstrap=200, seed=1)
    assert swapped["difference"] == -result["difference"] and swapped["p_value"] == pytest.approx(result["p_value"])


def test_paired_test_drops_cases_missing_either_score():
    time, event, true_lp, noise = _simulated(n=120)
    noise = noise.copy()
    noise[:3] = np.nan
    result = paired_c_difference_test(time, event, true_lp, noise, n_bootstrap=20)
    assert result["n"] == 117 and result["n_dropped_score"] == 3
    assert result["c_a"] == harrell_c_with_ci(time[3:], event[3:], true_lp[3:], n_bootstrap=0)["c_index"]
