"""Agreement tests for the binary-endpoint metrics: DeLong against the O(n^2) definition and the
bootstrap, calibration against statsmodels, net benefit against dcurves, counts by hand."""

from __future__ import annotations

import math

import dcurves
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy.special import expit
from scipy.stats import chi2_contingency, fisher_exact
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from glmil_auto.evaluation.metrics import binary_metrics as bm
from glmil_auto.evaluation.metrics import delong


def _tied_sample(seed: int, n: int = 90, decimals: int = 1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.round(0.8 * y + rng.normal(size=n), decimals)  # rounding makes many ties
    b = np.round(0.5 * a + 0.4 * y + rng.normal(size=n), decimals)  # correlated with a
    return y, a, b


def _placements_double_loop(y, s):
    """DeLong et al. (1988) structural components straight from the definition, O(m n)."""
    pos = [float(v) for v, t in zip(s, y) if t == 1]
    neg = [float(v) for v, t in zip(s, y) if t == 0]

    def psi(x, z):
        return 1.0 if x > z else (0.5 if x == z else 0.0)

    v10 = [sum(psi(x, z) for z in neg) / len(neg) for x in pos]
    v01 = [sum(psi(x, z) for x in pos) / len(pos) for z in neg]
    return np.array(v10), np.array(v01)


def _covariance_double_loop(y, a, b):
    a10, a01 = _placements_double_loop(y, a)
    b10, b01 = _placements_double_loop(y, b)
    m, n = a10.size, a01.size
    s10 = sum((a10[i] - a10.mean()) * (b10[i] - b10.mean()) for i in range(m)) / (m - 1)
    s01 = sum((a01[j] - a01.mean()) * (b01[j] - b01.mean()) for j in range(n)) / (n - 1)
    return s10 / m + s01 / n


# ------------------------------------------------------------------------------------ DeLong


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_auc_equals_sklearn_with_ties(seed):
    y, a, _ = _tied_sample(seed)
    assert len(np.unique(a)) < a.size  # there are ties
    auc, var = delong.delong_auc_variance(y, a)
    assert auc == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert var > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_variance_and_covariance_equal_double_loop(seed):
    y, a, b = _tied_sample(seed)
    _, v10, v01 = delong.delong_placements(y, a)
    ref10, ref01 = _placements_double_loop(y, a)
    np.testing.assert_allclose(v10, ref10, atol=1e-12)
    np.testing.assert_allclose(v01, ref01, atol=1e-12)

    _, var = delong.delong_auc_variance(y, a)
    assert var == pytest.approx(_covariance_double_loop(y, a, a), abs=1e-10)

    aucs, cov = delong.delong_auc_covariance(y, a, b)
    np.testing.assert_allclose(aucs, [roc_auc_score(y, a), roc_auc_score(y, b)], atol=1e-12)
    assert cov[0, 1] == pytest.approx(_covariance_double_loop(y, a, b), abs=1e-10)
    assert cov[1, 0] == pytest.approx(cov[0, 1], abs=1e-15)
    assert cov[1, 1] == pytest.approx(_covariance_double_loop(y, b, b), abs=1e-10)

    res = delong.delong_test(y, a, b)
    assert res["cov_ab"] == pytest.approx(cov[0, 1], abs=1e-15)
    se = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert res["se"] == pytest.approx(se, rel=1e-12)
    assert res["z"] == pytest.approx((aucs[0] - aucs[1]) / se, rel=1e-12)


def test_delong_variance_close_to_bootstrap_variance():
    rng = np.random.default_rng(2024)
    n = 2000
    y = rng.integers(0, 2, n)
    s = np.round(0.9 * y + rng.normal(size=n), 2)
    auc, var = delong.delong_auc_variance(y, s)

    order = np.argsort(-y, kind="stable")  # positives first, as _auc_of_rows expects
    idx = bm._stratified_bootstrap_indices(y[order], 2000, np.random.default_rng(7))
    boot = np.concatenate([bm._auc_of_rows(s[order][idx[i:i + 500]], int(y.sum()))
                           for i in range(0, 2000, 500)])
    assert var == pytest.approx(boot.var(ddof=1), rel=0.15)
    assert boot.mean() == pytest.approx(auc, abs=0.01)


def test_delong_identical_scores_and_clearly_better_score():
    y, a, _ = _tied_sample(3)
    same = delong.delong_test(y, a, a.copy())
    assert same["difference"] == 0
    assert same["z"] == 0
    assert same["p_value"] == 1

    rng = np.random.default_rng(11)
    n = 400
    y = rng.integers(0, 2, n)
    good = 1.5 * y + rng.normal(size=n)
    poor = 0.2 * y + rng.normal(size=n)
    res = delong.delong_test(y, good, poor)
    assert res["difference"] > 0.2
    assert res["p_value"] < 0.01
    # swapping the scores flips the sign and keeps the p-value
    swapped = delong.delong_test(y, poor, good)
    assert swapped["z"] == pytest.approx(-res["z"])
    assert swapped["p_value"] == pytest.approx(res["p_value"])


def test_delong_ci_and_nan_dropping():
    y, a, b = _tied_sample(4)
    ci = delong.delong_ci(y, a)
    assert ci["ci_low"] == pytest.approx(ci["auc"] - 1.959963984540054 * ci["se"])
    assert ci["ci_high"] == pytest.approx(min(1.0, ci["auc"] + 1.959963984540054 * ci["se"]))
    assert ci["se"] ** 2 == pytest.approx(ci["variance"])

    y_nan = y.astype(float)
    y_nan[0] = np.nan
    a_nan = a.copy()
    a_nan[1] = np.nan
    res = delong.delong_test(y_nan, a_nan, b)
    ref = delong.delong_test(y[2:], a[2:], b[2:])
    assert res["n"] == y.size - 2
    for key in ("auc_a", "auc_b", "se", "p_value"):
        assert res[key] == pytest.approx(ref[key], abs=1e-14)


def test_delong_errors():
    with pytest.raises(ValueError, match="no positive"):
        delong.delong_auc_variance([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="no negative"):
        delong.delong_test([1, 1, np.nan], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="at least 2"):
        delong.delong_auc_variance([1, 0, 0], [0.9, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        delong.delong_ci([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="cases"):
        delong.delong_test([0, 1, 1], [0.1, 0.2], [0.1, 0.2, 0.3])


# ---------------------------------------------------------------------------- bootstrap AUC


def test_auc_with_ci_bootstrap():
    y, a, _ = _tied_sample(5, n=150)
    res = bm.auc_with_ci(y, a, n_bootstrap=500, seed=3)
    assert res["auc"] == roc_auc_score(y, a)
    assert res["ci_low"] < res["auc"] < res["ci_high"]
    assert res == bm.auc_with_ci(list(y), list(a), n_bootstrap=500, seed=3)  # reproducible
    other = bm.auc_with_ci(y, a, n_bootstrap=500, seed=4)
    assert (other["ci_low"], other["ci_high"]) != (res["ci_low"], res["ci_high"])

    # NaN outcomes / predictions are dropped
    y_nan = np.r_[y.astype(float), np.nan, 1.0]
    a_nan = np.r_[a, 0.3, np.nan]
    assert bm.auc_with_ci(y_nan, a_nan, n_bootstrap=500, seed=3) == res


def test_bootstrap_is_stratified_and_replicate_auc_equals_sklearn():
    y, a, _ = _tied_sample(6, n=60)
    order = np.argsort(-y, kind="stable")
    y, a = y[order], a[order]
    m = int(y.sum())
    idx = bm._stratified_bootstrap_indices(y, 200, np.random.default_rng(0))
    assert idx.shape == (200, y.size)
    assert np.all(y[idx[:, :m]] == 1) and np.all(y[idx[:, m:]] == 0)  # both classes, always
    aucs = bm._auc_of_rows(a[idx], m)
    for r in range(0, 200, 40):
        assert aucs[r] == pytest.approx(roc_auc_score(y[idx[r]], a[idx[r]]), abs=1e-12)


def test_auprc_brier_match_sklearn():
    rng = np.random.default_rng(8)
    p = rng.uniform(size=80)
    y = (rng.uniform(size=80) < p).astype(int)
    assert bm.auprc(y, p) == pytest.approx(average_precision_score(y, p))
    assert bm.brier(y, p) == pytest.approx(brier_score_loss(y, p))
    with pytest.raises(ValueError, match="probabilities"):
        bm.brier(y, p + 1)


# ------------------------------------------------------------------------------ calibration


def _logistic_cohort(seed: int, n: int = 4000):
    rng = np.random.default_rng(seed)
    lp = -0.7 + 1.3 * rng.normal(size=n)
    y = (rng.uniform(size=n) < expit(lp)).astype(int)
    return y, lp


def test_calibration_of_true_probabilities_and_statsmodels_agreement():
    y, lp = _logistic_cohort(0)
    res = bm.calibration_intercept_slope(y, expit(lp))
    assert res["slope_ci_low"] < 1 < res["slope_ci_high"]
    assert res["intercept_ci_low"] < 0 < res["intercept_ci_high"]
    assert res["slope"] == pytest.approx(1, abs=0.15)
    assert res["intercept"] == pytest.approx(0, abs=0.15)

    direct_slope = sm.Logit(y, sm.add_constant(lp)).fit(disp=0)
    assert res["slope"] == pytest.approx(direct_slope.params[1], abs=1e-6)
    assert res["slope_se"] == pytest.approx(direct_slope.bse[1], rel=1e-5)
    data = pd.DataFrame({"y": y, "lp": lp})
    direct_int = smf.glm("y ~ 1", data, offset=data["lp"], family=sm.families.Binomial()).fit()
    assert res["intercept"] == pytest.approx(direct_int.params["Intercept"], abs=1e-8)
    assert res["intercept_p"] == pytest.approx(direct_int.pvalues["Intercept"], rel=1e-6)
    lo, hi = direct_int.conf_int().loc["Intercept"]
    assert (res["intercept_ci_low"], res["intercept_ci_high"]) == pytest.approx((lo, hi))


def test_calibration_of_inflated_probabilities():
    y, lp = _logistic_cohort(1)
    res = bm.calibration_intercept_slope(y, expit(lp + 1))
    assert res["intercept"] == pytest.approx(-1, abs=0.15)
    assert res["intercept_ci_low"] < -1 < res["intercept_ci_high"]
    assert res["intercept_p"] < 1e-6
    assert res["slope"] == pytest.approx(1, abs=0.15)

    # too extreme predictions: slope < 1
    over = bm.calibration_intercept_slope(y, expit(2 * lp))
    assert over["slope"] == pytest.approx(0.5, abs=0.1)
    assert over["slope_p"] < 1e-6


def test_calibration_clips_zero_and_one():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0, 1, 0])
    p = np.array([0.0, 0.2, 1.0, 0.7, 0.4, 0.5, 0.3, 0.6, 0.8, 0.1])
    res = bm.calibration_intercept_slope(y, p)
    assert np.isfinite(res["slope"]) and np.isfinite(res["intercept"])
    clipped = bm.calibration_intercept_slope(y, np.clip(p, 1e-6, 1 - 1e-6))
    assert res["slope"] == pytest.approx(clipped["slope"], abs=1e-12)


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_calibration_curve_points_match_sklearn(strategy):
    rng = np.random.default_rng(9)
    p = rng.beta(2, 3, size=500)
    y = (rng.uniform(size=500) < p).astype(int)
    pts = bm.calibration_curve_points(y, p, n_bins=8, strategy=strategy)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(pts["observed"], prob_true, atol=1e-12)
    np.testing.assert_allclose(pts["mean_predicted"], prob_pred, atol=1e-12)
    assert pts["n"].sum() == 500 and pts["events"].sum() == y.sum()
    low, high = proportion_confint(pts["events"], pts["n"], method="wilson")
    np.testing.assert_allclose(pts["ci_low"], low)
    np.testing.assert_allclose(pts["ci_high"], high)


# ---------------------------------------------------------------------------- net benefit


def test_net_benefit_equals_dcurves():
    rng = np.random.default_rng(12)
    p = np.round(rng.uniform(size=70), 2)  # values on the threshold grid test p >= t
    y = (rng.uniform(size=70) < p).astype(int)
    thresholds = np.round(np.arange(0, 0.96, 0.05), 2)
    ours = bm.net_benefit(y, p, thresholds)
    assert list(ours.columns) == ["threshold", "model", "treat_all", "treat_none"]

    ref = dcurves.dca(data=pd.DataFrame({"y": y, "p": p}), outcome="y", modelnames=["p"],
                      thresholds=thresholds)
    for ours_col, ref_model in (("model", "p"), ("treat_all", "all"), ("treat_none", "none")):
        curve = ref[ref["model"] == ref_model].sort_values("threshold")
        np.testing.assert_allclose(curve["threshold"], thresholds, atol=1e-12)
        np.testing.assert_allclose(ours[ours_col], curve["net_benefit"].astype(float), atol=1e-9)

    with pytest.raises(ValueError, match="thresholds"):
        bm.net_benefit(y, p, [0.5, 1.0])


# ------------------------------------------------------------------------------- cut-offs


def test_threshold_metrics_hand_counted():
    y = [1, 1, 1, 0, 0, 0, 0, 1, np.nan]
    p = [0.9, 0.6, 0.3, 0.5, 0.2, 0.7, 0.1, 0.5, 0.8]
    res = bm.threshold_metrics(y, p, 0.5)
    # p >= 0.5: cases 0,1,7 (events) and 3,5 (non-events); below: case 2 (event), 4,6
    assert (res["n"], res["tp"], res["fp"], res["tn"], res["fn"]) == (8, 3, 2, 2, 1)
    assert res["sensitivity"] == 3 / 4
    assert res["specificity"] == 2 / 4
    assert res["ppv"] == 3 / 5
    assert res["npv"] == 2 / 3

    # Wilson interval written out for sensitivity (3/4, z = 1.96)
    z, k, n = 1.959963984540054, 3, 4
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    assert res["sensitivity_ci_low"] == pytest.approx(centre - half, abs=1e-12)
    assert res["sensitivity_ci_high"] == pytest.approx(centre + half, abs=1e-12)

    nothing_positive = bm.threshold_metrics(y, p, 0.95)
    assert nothing_positive["tp"] + nothing_positive["fp"] == 0
    assert math.isnan(nothing_positive["ppv"]) and math.isnan(nothing_positive["ppv_ci_low"])


# ---------------------------------------------------------------------------- risk groups


def test_risk_group_chi_square_against_scipy():
    rng = np.random.default_rng(13)
    groups = rng.choice(["low", "mid", "high"], size=300)
    rate = {"low": 0.2, "mid": 0.35, "high": 0.5}
    y = (rng.uniform(size=300) < np.vectorize(rate.get)(groups)).astype(float)
    groups = groups.astype(object)
    groups[0] = None  # dropped
    y[1] = np.nan  # dropped

    table, test = bm.risk_group_event_rates(y, groups)
    assert list(table["group"]) == ["high", "low", "mid"]
    assert table["n"].sum() == 298
    observed = np.array([[((groups[2:] == g) & (y[2:] == 1)).sum(),
                          ((groups[2:] == g) & (y[2:] == 0)).sum()] for g in table["group"]])
    np.testing.assert_array_equal(table[["events"]].to_numpy().ravel(), observed[:, 0])
    ref = chi2_contingency(observed)
    assert test["test"] == "chi2"
    assert test["statistic"] == pytest.approx(ref.statistic)
    assert test["p_value"] == pytest.approx(ref.pvalue)
    assert test["dof"] == 2
    low, high = proportion_confint(observed[:, 0], observed.sum(axis=1), method="wilson")
    np.testing.assert_allclose(table["ci_low"], low)
    np.testing.assert_allclose(table["ci_high"], high)


def test_risk_group_two_by_two_fisher_and_chi_square():
    # small table: expected counts < 5 -> Fisher
    y = [1, 1, 1, 0, 0, 0, 0, 0, 1, 0]
    g = ["high"] * 4 + ["low"] * 6
    table, test = bm.risk_group_event_rates(y, g)
    assert list(table["events"]) == [3, 1]
    odds, p = fisher_exact([[3, 1], [1, 5]])
    assert test["test"] == "fisher"
    assert test["statistic"] == pytest.approx(odds)
    assert test["p_value"] == pytest.approx(p)

    # large 2x2: chi-square with scipy's default (Yates) correction
    y = [1] * 30 + [0] * 20 + [1] * 15 + [0] * 35
    g = [1] * 50 + [2] * 50
    _, test = bm.risk_group_event_rates(y, g)
    ref = chi2_contingency([[30, 20], [15, 35]])
    assert test["test"] == "chi2"
    assert test["p_value"] == pytest.approx(ref.pvalue)

    # a single group: nothing to test
    _, test = bm.risk_group_event_rates([0, 1, 1], ["a", "a", "a"])
    assert test["test"] == "none" and math.isnan(test["p_value"])
