"""Calibration measured on a smoothed curve (glmil_auto/evaluation/metrics/calibration.py): the
ICI, E50, E90 and Emax against the truth of a simulated miscalibration, against an independent
smoother (a spline logistic calibration model) and on a perfectly calibrated model; the ECE against
a hand computation; the bootstrap CIs and band; the risk groups of the plot; the wiring into
metrics.json, the figure and the report's calibration table.

The simulation: predictions p = expit(N(-1, 1)), true risks expit(a + b logit p) with a = -1,
b = 0.5 (risks too high and too extreme, the typical external-validation picture), outcomes
Bernoulli(true risk). The true ICI is mean |p - true risk| (about 0.115 here).

Where the tolerances come from (measured over 20 seeds at n = 20 000, estimate minus truth):
ICI mean +0.0008, sd 0.0016 (largest 0.0038); E50 +0.0001, sd 0.0028 (0.0057); E90 -0.0047, sd
0.0057 (0.019); LOESS minus spline ICI -0.0007, sd 0.0007 (0.0017), E50 sd 0.0019 (0.0042), E90
sd 0.0029 (0.0081). Each tolerance is about |mean| + 3 sd, and a test uses one fixed seed.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import statsmodels.api as sm
from matplotlib.image import imread
from patsy import dmatrix
from scipy.special import expit, logit
from statsmodels.nonparametric.smoothers_lowess import lowess

from glmil_auto.evaluation.cohort_metrics import binary_cohort
from glmil_auto.evaluation.metrics import calibration
from glmil_auto.evaluation.metrics.binary_metrics import wilson_ci
from glmil_auto.evaluation.report import report_plots
from glmil_auto.evaluation.report.report_html import render_report

A, B = -1.0, 0.5


def simulate(n: int, seed: int, a: float = A, b: float = B) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, true risk, y) of the miscalibration described in the module docstring."""
    rng = np.random.default_rng(seed)
    p = expit(rng.normal(-1.0, 1.0, n))
    truth = expit(a + b * logit(p))
    return p, truth, (rng.random(n) < truth).astype(float)


def true_errors(p: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    difference = np.abs(p - truth)
    return {"ici": difference.mean(), "e50": np.median(difference), "e90": np.percentile(difference, 90),
            "emax": difference.max()}


def spline_errors(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Austin & Steyerberg's other smoother: a logistic regression of y on a natural cubic spline
    of logit(p) (patsy ``cr``, 4 degrees of freedom), its fitted risks as the calibration curve."""
    design = np.asarray(dmatrix("cr(x, df=4, constraints='center')", {"x": logit(p)}, return_type="matrix"))
    fitted = sm.GLM(y, design, family=sm.families.Binomial()).fit().fittedvalues
    return true_errors(p, fitted)


def estimates(y: np.ndarray, p: np.ndarray, **kwargs) -> dict[str, float]:
    errors = calibration.calibration_errors(y, p, **{"n_bootstrap": 0, **kwargs})
    return {k: errors[k]["estimate"] for k in ("ici", "e50", "e90", "emax")}


# ------------------------------------------------------------------------ against the truth


def test_ici_e50_e90_recover_a_known_miscalibration():
    p, truth, y = simulate(20_000, seed=0)
    expected, got = true_errors(p, truth), estimates(y, p)
    assert expected["ici"] == pytest.approx(0.115, abs=0.005)  # the simulation is what it says
    assert got["ici"] == pytest.approx(expected["ici"], abs=0.006)
    assert got["e50"] == pytest.approx(expected["e50"], abs=0.01)
    assert got["e90"] == pytest.approx(expected["e90"], abs=0.025)
    assert got["e50"] <= got["e90"] <= got["emax"]


def test_the_smoother_is_unbiased_in_the_limit_except_emax_at_the_edges():
    """LOESS without robustness iterations is linear in y, so smoothing the true risks gives the
    estimator's expectation given p: what is left is the smoother's bias, not noise."""
    p, truth, y = simulate(20_000, seed=0)
    limit = true_errors(p, calibration._smooth(truth, p, calibration.SPAN))
    expected = true_errors(p, truth)
    assert limit["ici"] == pytest.approx(expected["ici"], abs=0.002)  # measured 0.0009
    assert limit["e50"] == pytest.approx(expected["e50"], abs=0.002)  # 0.0008
    assert limit["e90"] == pytest.approx(expected["e90"], abs=0.006)  # -0.0045
    # Emax: a local line cannot follow the curve at the sparse top end (bias 0.09 here). The
    # estimate matches its own limit (sd 0.02 over seeds), not the truth: Emax is unstable, as
    # Austin & Steyerberg note, and is shown without a CI.
    assert limit["emax"] - expected["emax"] == pytest.approx(0.089, abs=0.01)
    assert estimates(y, p)["emax"] == pytest.approx(limit["emax"], abs=0.06)


def test_loess_agrees_with_a_spline_logistic_calibration_model():
    p, truth, y = simulate(20_000, seed=1)
    loess, spline, expected = estimates(y, p), spline_errors(y, p), true_errors(p, truth)
    assert loess["ici"] == pytest.approx(spline["ici"], abs=0.003)
    assert loess["e50"] == pytest.approx(spline["e50"], abs=0.006)
    assert loess["e90"] == pytest.approx(spline["e90"], abs=0.012)
    assert spline["ici"] == pytest.approx(expected["ici"], abs=0.006)


def test_a_perfectly_calibrated_model_has_an_ici_near_zero():
    p, _, y = simulate(20_000, seed=2, a=0.0, b=1.0)
    assert estimates(y, p)["ici"] < 0.01  # measured 0.0038 on average, 0.0063 at most over 20 seeds
    assert spline_errors(y, p)["ici"] < 0.01
    p_bad, _, y_bad = simulate(20_000, seed=2)
    assert estimates(y_bad, p_bad)["ici"] > 10 * estimates(y, p)["ici"]
    # the noise floor of a small cohort: 0.035 on average at 300 cases (0.063 at most)
    p_small, _, y_small = simulate(300, seed=3, a=0.0, b=1.0)
    assert 0 < estimates(y_small, p_small)["ici"] < 0.08


def test_the_smoother_settings_and_why_no_robustness_iterations():
    p, _, y = simulate(2_000, seed=4)
    exact = np.clip(lowess(y, p, frac=0.75, it=0, return_sorted=False), 0, 1)
    assert np.abs(calibration.loess_calibration(y, p) - exact).max() < 1e-3  # delta: interpolation only
    # statsmodels' default 3 bisquare iterations treat the events as outliers and pull the curve
    # towards 0: a perfectly calibrated model would get an ICI of about 0.09 (0.2 at 20 % events)
    p, _, y = simulate(20_000, seed=5, a=0.0, b=1.0)
    robust = np.clip(lowess(y, p, frac=0.75, it=3, delta=0.01 * np.ptp(p), return_sorted=False), 0, 1)
    assert np.mean(np.abs(p - robust)) > 0.05 > 0.01 > estimates(y, p)["ici"]


# ------------------------------------------------------------------------------------ ECE


def test_ece_equals_an_equal_mass_hand_computation_and_its_binned_truth():
    p, truth, y = simulate(1_000, seed=6)
    chunks = np.array_split(np.argsort(p), 10)  # 1000 distinct values: the quantile bins hold 100 each
    by_hand = np.mean([abs(y[c].mean() - p[c].mean()) for c in chunks])
    assert calibration.expected_calibration_error(y, p) == pytest.approx(by_hand, abs=1e-12)
    p, truth, y = simulate(20_000, seed=6)
    chunks = np.array_split(np.argsort(p), 10)
    binned_truth = np.mean([abs(truth[c].mean() - p[c].mean()) for c in chunks])
    # measured over 20 seeds: +0.0004, sd 0.0018
    assert calibration.expected_calibration_error(y, p) == pytest.approx(binned_truth, abs=0.006)


# ------------------------------------------------------------------------------ bootstrap


def test_bootstrap_cis_are_seeded_capped_and_cover_the_truth():
    p, truth, y = simulate(300, seed=7)
    first = calibration.calibration_errors(y, p, n_bootstrap=100, seed=3)
    assert first == calibration.calibration_errors(y, p, n_bootstrap=100, seed=3)
    assert first["ici"] != calibration.calibration_errors(y, p, n_bootstrap=100, seed=4)["ici"]
    for key in ("ici", "e50", "e90"):
        assert first[key]["ci_low"] <= first[key]["estimate"] <= first[key]["ci_high"]
    assert first["emax"]["ci_low"] is None and first["n_bootstrap"] == 100
    none = calibration.calibration_errors(y, p, n_bootstrap=0)
    assert none["ici"]["ci_low"] is None and none["ici"]["estimate"] == first["ici"]["estimate"]
    assert calibration._replicates(10_000) == calibration.MAX_BOOTSTRAP
    # coverage of the true ICI: 30 cohorts of 300, 100 replicates each (measured 28 / 30; 97.5 %
    # over 40 cohorts with 200 replicates)
    covered = 0
    for seed in range(30):
        p, truth, y = simulate(300, seed=1000 + seed)
        ici = calibration.calibration_errors(y, p, n_bootstrap=100, seed=seed)["ici"]
        covered += ici["ci_low"] <= true_errors(p, truth)["ici"] <= ici["ci_high"]
    assert covered >= 24


def test_the_curve_and_its_band():
    p, _, y = simulate(2_000, seed=8)
    smoothed = calibration.calibration_curve_data(y, p, n_bootstrap=200, seed=0)["smoothed"]
    grid, curve = np.array(smoothed["predicted"]), np.array(smoothed["observed"])
    low, high = np.array(smoothed["ci_low"]), np.array(smoothed["ci_high"])
    assert grid.size == calibration.GRID_POINTS and grid[0] == p.min() and grid[-1] == p.max()
    np.testing.assert_allclose(np.interp(p, grid, curve), calibration.loess_calibration(y, p), atol=2e-3)
    assert np.all((low <= curve + 1e-12) & (curve <= high + 1e-12))
    true_curve = expit(A + B * logit(grid))
    assert np.mean((low <= true_curve) & (true_curve <= high)) >= 0.85  # a pointwise 95 % band
    p_small, _, y_small = simulate(300, seed=8)
    small = calibration.calibration_curve_data(y_small, p_small, n_bootstrap=200)["smoothed"]
    assert np.mean(np.subtract(small["ci_high"], small["ci_low"])) > 1.5 * np.mean(high - low)
    assert calibration.calibration_curve_data(y, p, n_bootstrap=0)["smoothed"]["ci_low"] == [None] * grid.size


# ---------------------------------------------------------------------------- risk groups


@pytest.mark.parametrize("events, non_events, groups", [
    (0, 50, 2), (12, 27, 2), (19, 100, 2), (35, 300, 3), (99, 1000, 9), (150, 150, 10), (5000, 5000, 10),
    (900, 40, 4)])
def test_the_groups_rule(events, non_events, groups):
    assert calibration.calibration_group_count(events, non_events) == groups


def test_the_plot_data_groups_predictions_and_json():
    p, _, y = simulate(300, seed=9)
    data = calibration.calibration_curve_data(y, p, n_bootstrap=20)
    json.dumps(data, allow_nan=False)
    events = int(y.sum())
    assert data["n"] == 300 and data["events"] == events
    assert data["n_groups"] == calibration.calibration_group_count(events, 300 - events) == len(data["groups"])
    assert sum(g["n"] for g in data["groups"]) == 300 and sum(g["events"] for g in data["groups"]) == events
    for group in data["groups"]:
        member = (p >= group["bin_low"]) & (p <= group["bin_high"])
        assert group["mean_predicted"] == pytest.approx(p[member].mean())
        assert (group["ci_low"], group["ci_high"]) == pytest.approx(wilson_ci(group["events"], group["n"]))
    np.testing.assert_allclose(data["predictions"], p, atol=1e-6)
    assert data["outcomes"] == y.astype(int).tolist()
    assert data["ici"] == pytest.approx(estimates(y, p)["ici"])


def test_missing_values_are_dropped_and_unusable_inputs_refused():
    p, _, y = simulate(300, seed=10)
    y_missing, p_missing = y.copy(), p.copy()
    y_missing[:5], p_missing[5:10] = np.nan, np.nan
    assert estimates(y_missing, p_missing) == estimates(y[10:], p[10:])
    with pytest.raises(ValueError, match="at least 20 cases"):
        calibration.calibration_errors(y[:19], p[:19])
    with pytest.raises(ValueError, match="3 distinct"):
        calibration.calibration_errors(y, np.where(p > 0.3, 0.6, 0.1))
    for tied in (225, 250, 295):  # a LOESS window of 225 tied cases: statsmodels would return 0 there
        with pytest.raises(ValueError, match="share one value"):
            calibration.calibration_errors(y, np.where(np.arange(300) < tied, 0.2, p))
    assert estimates(y, np.where(np.arange(300) < 200, 0.2, p))["ici"] >= 0  # 200 ties: windows of 225 work
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration.calibration_errors(y, p + 0.5)
    with pytest.raises(ValueError):
        calibration.calibration_errors(np.where(y == 1, 2.0, 0.0), p)


# ----------------------------------------------------------------------- metrics.json wiring


def test_binary_cohort_reports_the_calibration_of_every_probability_and_of_each_stage():
    p, _, y = simulate(200, seed=11)
    after = expit(A + B * logit(p))
    entry = binary_cohort(y, {"model": after, "clinical": p, "score": logit(p)}, n_bootstrap=50,
                          uncalibrated=after, before_update=p)
    json.dumps(entry, allow_nan=False)
    model = entry["scores"]["model"]
    for key in ("ici", "e50", "e90", "emax"):
        assert model[key]["estimate"] == pytest.approx(estimates(y, after, n_bootstrap=50)[key])
    assert model["ici"]["ci_low"] is not None and model["ece"]["n_bins"] == calibration.ECE_BINS
    assert model["calibration"]["slope_ci_low"] < model["calibration"]["slope"] < model["calibration"]["slope_ci_high"]
    before = model["before_update"]
    assert before["ici"]["estimate"] == pytest.approx(entry["scores"]["clinical"]["ici"]["estimate"])
    assert before["ici"]["estimate"] > 2 * model["ici"]["estimate"]
    assert model["calibration_before_update"] == before["calibration"]
    assert entry["scores"]["score"]["ici"] is None  # a log-odds is no probability
    # the uncalibrated probabilities equal the final ones (nothing recalibrated): no second curve
    assert model["uncalibrated"]["ici"] == model["ici"]
    assert set(entry["calibration_curve"]) == {"model", "clinical", "model (before update)"}
    assert entry["calibration_curve"]["model"]["n_groups"] == calibration.calibration_group_count(
        int(y.sum()), int((1 - y).sum()))
    assert set(entry["decision_curve"]["curves"]) == {"model", "clinical"}


def test_a_small_cohort_gets_a_reason_not_a_curve():
    p, _, y = simulate(12, seed=12)
    entry = binary_cohort(y, {"model": p}, n_bootstrap=10)
    assert entry["scores"]["model"]["ici"] is None and "20 cases" in entry["scores"]["model"]["calibration_reason"]
    assert entry["calibration_curve"] == {}


# ----------------------------------------------------------------------- figure and report


def _image(png: bytes | None) -> np.ndarray:
    assert png is not None and png.startswith(b"\x89PNG")
    image = imread(io.BytesIO(png))
    assert image[..., :3].std() > 0.05
    return image


def test_the_calibration_figure_before_and_after_and_older_metrics():
    p, _, y = simulate(40, seed=13)
    after = expit(A + B * logit(p))
    entry = binary_cohort(y, {"model": after}, n_bootstrap=50, before_update=p)
    both = _image(report_plots.calibration_figure(entry["calibration_curve"], "t", model="model"))
    alone = _image(report_plots.calibration_figure({"model": entry["calibration_curve"]["model"]}, "t"))
    assert both.shape[0] > alone.shape[0]  # the legend has the before-update entries
    groups_only = [{"mean_predicted": 0.2, "observed": 0.25, "ci_low": None, "ci_high": None, "n": 10},
                   {"mean_predicted": 0.5, "observed": 0.4, "ci_low": 0.2, "ci_high": 0.6, "n": 10}]
    _image(report_plots.calibration_figure({"m": groups_only}, "t"))  # a metrics.json from before
    assert report_plots.calibration_figure({"m": {"smoothed": {"predicted": [0.1], "observed": [None]},
                                                  "groups": []}}, "t") is None
    assert report_plots.calibration_figure({"baseline": groups_only}, "t", model="model") is not None


def test_the_report_shows_the_calibration_table():
    p, _, y = simulate(200, seed=14)
    after = expit(A + B * logit(p))
    entry = binary_cohort(y, {"model": after, "clinical": p}, n_bootstrap=20, uncalibrated=p * 0.9,
                          before_update=p)
    text = render_report({"endpoints": {"lf": {"type": "binary", "cohorts": {"all": entry}}}})
    for header in ("Calibration-in-the-large", "Calibration slope", "ICI [95% CI]", "E50 [95% CI]",
                   "E90 [95% CI]", "Emax", "ECE (secondary)", "Austin &amp; Steyerberg"):
        assert header in text
    assert "<td>model (before update)</td>" in text and "<td>model (uncalibrated)</td>" in text
    ici = entry["scores"]["model"]["ici"]
    assert f"{ici['estimate']:.3f} [{ici['ci_low']:.3f}, {ici['ci_high']:.3f}]" in text
    assert 'alt="Calibration of the model' in text  # the figure was drawn
