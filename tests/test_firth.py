"""Firth's penalised likelihood in the multivariable tables: separation and monotone likelihood are
detected, the estimates are finite and equal the optimum of the penalised log-likelihood found by
brute force with scipy, agree with the published logistf / coxphf results, and fits without
separation are unchanged; a single-group cohort's tables appear once in the report."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from glmil_auto.dataset.dataset_json import spec_from_dict
from glmil_auto.evaluation.clinical_models.firth import (
    firth_cox,
    firth_logistic,
    logistic_separation_terms,
    monotone_likelihood_terms,
)
from glmil_auto.evaluation.clinical_models.multivariable import (
    FIRTH,
    MAXIMUM_LIKELIHOOD,
    divergence,
    multivariable_cox,
    multivariable_logistic,
)
from glmil_auto.evaluation.cohort_evaluation import evaluate_cohort
from glmil_auto.evaluation.report.report_html import render_report

# The endometrial cancer data of Heinze & Schemper (2002) as R's logistf ships it: 79 patients,
# neovasculization NV (quasi-complete separation: every NV = 1 patient has HG = 1), pulsatility
# index PI, endometrium height EH, histology grade HG.
ENDOMETRIAL_NV = "0000000000000000000001111100000000000000000000011110000000000000000000100011010"
ENDOMETRIAL_PI = [13, 16, 8, 34, 20, 5, 17, 10, 26, 17, 8, 7, 20, 10, 18, 16, 18, 8, 29, 12, 20, 38, 22, 7, 25, 15,
                  7, 28, 11, 19, 10, 10, 18, 14, 21, 11, 17, 25, 16, 19, 15, 33, 24, 48, 12, 19, 2, 22, 40, 5, 0,
                  21, 15, 29, 15, 12, 3, 20, 23, 12, 22, 42, 15, 13, 14, 19, 12, 13, 10, 12, 49, 6, 5, 17, 11, 21,
                  5, 19, 33]
ENDOMETRIAL_EH = [1.64, 2.26, 3.14, 2.68, 1.28, 2.31, 1.8, 1.68, 1.56, 2.31, 2.01, 1.89, 3.15, 1.23, 1.27, 1.76, 2,
                  2.64, 0.88, 1.27, 1.37, 0.97, 1.14, 0.88, 0.91, 0.58, 0.97, 1.5, 1.33, 2.37, 1.82, 3.13, 1.31,
                  1.92, 1.64, 2.01, 1.88, 1.93, 2.11, 1.29, 1.72, 0.75, 1.92, 1.84, 1.11, 1.61, 1.18, 1.44, 1.18,
                  0.93, 1.17, 1.19, 1.06, 2.02, 2.29, 2.33, 2.9, 1.7, 1.41, 2.25, 1.54, 1.97, 1.75, 2.16, 2.57,
                  1.37, 3.61, 2.04, 2.17, 1.69, 0.27, 1.84, 1.3, 0.96, 1.01, 0.98, 0.35, 1.02, 0.85]
ENDOMETRIAL_HG = "0000000000000000011111111110000000000000000111111111100000000000000001111111111"
# logistf 1.x, logistf(HG ~ NV + PI + EH): coefficients and profile penalised-likelihood 95 % CIs
LOGISTF_COEF = {"intercept": 3.77455951, "NV": 2.92927330, "PI": -0.03475175, "EH": -2.60416387}
LOGISTF_CI = {"intercept": (1.0825371, 7.20928050), "NV": (0.6097244, 7.85463171),
              "PI": (-0.1244587, 0.04045547), "EH": (-4.3651832, -1.23272106)}


def endometrial() -> tuple[pd.DataFrame, np.ndarray]:
    nv, hg = (np.array([int(c) for c in text], dtype=float) for text in (ENDOMETRIAL_NV, ENDOMETRIAL_HG))
    return pd.DataFrame({"NV": nv, "PI": np.array(ENDOMETRIAL_PI, float), "EH": np.array(ENDOMETRIAL_EH)}), hg


# ------------------------------------------------------------------- brute-force penalised likelihoods


def logistic_penalised_loglik(beta: np.ndarray, design: np.ndarray, y: np.ndarray) -> float:
    """l(beta) + 0.5 log det I(beta) of a logistic regression (design with its intercept column)."""
    eta = design @ beta
    loglik = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
    p = expit(eta)
    return loglik + 0.5 * np.linalg.slogdet(design.T @ (design * (p * (1 - p))[:, None]))[1]


def cox_penalised_loglik(beta: np.ndarray, design: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Breslow partial log-likelihood + 0.5 log det of its information matrix, event by event."""
    eta = design @ beta
    loglik, information = 0.0, np.zeros((design.shape[1], design.shape[1]))
    for i in np.flatnonzero(event):
        at_risk = time >= time[i]
        weights = np.exp(eta[at_risk])
        x = design[at_risk]
        mean = weights @ x / weights.sum()
        loglik += eta[i] - np.log(weights.sum())
        information += (x * weights[:, None]).T @ x / weights.sum() - np.outer(mean, mean)
    return loglik + 0.5 * np.linalg.slogdet(information)[1]


def brute_force_maximum(function, k: int) -> np.ndarray:
    result = minimize(lambda b: -function(b), np.zeros(k), method="BFGS", options={"gtol": 1e-10, "maxiter": 5000})
    polished = minimize(lambda b: -function(b), result.x, method="Nelder-Mead",
                        options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000})
    return polished.x


def separated_logistic(n: int = 40, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """A binary covariate with only events (quasi-complete separation) and a noisy numeric one."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    group = (rng.random(n) < 0.25).astype(float)
    y = (rng.random(n) < expit(0.8 * x)).astype(float)
    y[group == 1] = 1.0
    return pd.DataFrame({"x": x, "group": group}), y


def monotone_cox(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """No event in group 0: the group's hazard ratio diverges (monotone likelihood)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n).astype(float)
    x = rng.normal(size=n)
    time = np.round(rng.exponential(10 * np.exp(-0.5 * x)), 1) + 0.1  # rounded: tied times
    event = (rng.random(n) < 0.7).astype(float)
    event[group == 0] = 0.0
    return time, event, pd.DataFrame({"x": x, "group": group})


# ------------------------------------------------------------------------------------ detection


def test_separation_is_detected_by_the_linear_programs():
    covariates, y = separated_logistic()
    assert "group" in logistic_separation_terms(covariates, y)
    rng = np.random.default_rng(1)
    mixed = (rng.random(len(y)) < 0.5).astype(float)
    assert logistic_separation_terms(covariates, mixed) == []
    design, hg = endometrial()
    assert logistic_separation_terms(design, hg) == ["NV"]  # as in Heinze & Schemper (2002)

    time, event, frame = monotone_cox()
    assert monotone_likelihood_terms(time, event, frame) == ["group"]
    assert monotone_likelihood_terms(time, (np.random.default_rng(2).random(len(time)) < 0.7).astype(float),
                                     frame) == []
    # a combination: each failing patient has the largest x1 - x2 of those still at risk
    rng = np.random.default_rng(4)
    x1, x2 = rng.normal(size=30), rng.normal(size=30)
    combined = pd.DataFrame({"x1": x1, "x2": x2})
    time = np.argsort(np.argsort(-(x1 - x2))) + 1.0
    assert sorted(monotone_likelihood_terms(time, np.ones(30), combined)) == ["x1", "x2"]


def test_divergent_maximum_likelihood_is_recognised_by_its_signs():
    table = pd.DataFrame({"term": ["a", "b"], "odds_ratio": [2.0, 1e8], "se": [0.3, 2500.0]})
    assert "['b']" in divergence(table, "odds_ratio", [])
    table["odds_ratio"] = [2.0, 3.0]
    assert divergence(table, "odds_ratio", []) is None
    assert "converge" in divergence(table, "odds_ratio", ["Maximum Likelihood optimization failed to converge."])


# ------------------------------------------------------------------------------------- estimates


def test_firth_logistic_equals_the_brute_force_optimum_on_separated_data():
    covariates, y = separated_logistic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        never = multivariable_logistic(y, covariates["x"], covariates[["group"]], score_name="score", firth="never")
    assert never.method == MAXIMUM_LIKELIHOOD and divergence(never.table, "odds_ratio", never.warnings)

    result = multivariable_logistic(y, covariates["x"], covariates[["group"]], score_name="score")
    assert result.method == FIRTH and "Firth" in result.estimation
    assert result.separation["detected_by"] == "linear program" and "group" in result.separation["terms"]
    assert result.converged and np.isfinite(result.table[["odds_ratio", "ci_low", "ci_high", "se"]]).all().all()
    design = np.column_stack([covariates["x"], covariates["group"], np.ones(len(y))])
    optimum = brute_force_maximum(lambda b: logistic_penalised_loglik(b, design, y), 3)
    np.testing.assert_allclose(result.table["coefficient"], optimum[:2], atol=2e-5)
    assert result.table["ci_low"].iloc[1] < result.table["odds_ratio"].iloc[1] < result.table["ci_high"].iloc[1]


def test_firth_logistic_matches_logistf_on_the_endometrial_data():
    design, hg = endometrial()
    fit = firth_logistic(design, hg)
    assert fit.converged and fit.warnings == []
    np.testing.assert_allclose(fit.coefficient, [LOGISTF_COEF[t] for t in design.columns], rtol=1e-5)
    np.testing.assert_allclose(fit.ci_low, [LOGISTF_CI[t][0] for t in design.columns], rtol=1e-4)
    np.testing.assert_allclose(fit.ci_high, [LOGISTF_CI[t][1] for t in design.columns], rtol=1e-4)
    full = np.column_stack([design.to_numpy(), np.ones(len(hg))])
    optimum = brute_force_maximum(lambda b: logistic_penalised_loglik(b, full, hg), 4)
    np.testing.assert_allclose(optimum[-1], LOGISTF_COEF["intercept"], rtol=1e-4)
    np.testing.assert_allclose(fit.coefficient, optimum[:3], atol=1e-4)


def test_firth_cox_equals_the_brute_force_optimum_under_monotone_likelihood():
    time, event, frame = monotone_cox()
    result = multivariable_cox(time, event, frame["x"], frame[["group"]], score_name="score")
    assert result.method == FIRTH and result.separation["terms"] == ["group"]
    assert result.converged and np.isfinite(result.table[["hazard_ratio", "ci_low", "ci_high"]]).all().all()
    assert 1 < result.table["hazard_ratio"].iloc[1] < 1e3
    design = frame[["x", "group"]].to_numpy()
    optimum = brute_force_maximum(lambda b: cox_penalised_loglik(b, design, time, event.astype(bool)), 2)
    np.testing.assert_allclose(result.table["coefficient"], optimum, atol=2e-5)


def test_firth_cox_matches_coxphf_on_monotone_data():
    """The data and the coxphf (R) values recorded in firthmodels' test suite."""
    rng = np.random.default_rng(42)
    n = 100
    separator = rng.choice([0, 1], n, p=[0.35, 0.65])
    x1, x2, x3 = rng.standard_normal(n), rng.uniform(-1, 1, n), rng.choice([0, 1], n, p=[0.6, 0.4])
    design = np.column_stack([separator, x1, x2, x3]).astype(float)
    survival = rng.exponential(1 / (0.1 * np.exp(design @ np.array([0.0, 0.5, -0.3, 0.7]))))
    censoring = rng.exponential(scale=15.0, size=n)
    time, event = np.minimum(survival, censoring), (survival <= censoring) & (separator == 1)
    frame = pd.DataFrame(design, columns=["separator", "x1", "x2", "x3"])
    assert monotone_likelihood_terms(time, event.astype(float), frame) == ["separator"]
    fit = firth_cox(time, event.astype(float), frame)
    np.testing.assert_allclose(fit.coefficient, [3.8815800583, 0.6042066427, -0.4202139201, 1.0415063080], rtol=1e-5)
    np.testing.assert_allclose(np.column_stack([fit.ci_low, fit.ci_high]),
                               [[1.9343469272, 8.7215676015], [0.2921186188, 0.9164270978],
                                [-0.9217200647, 0.0699415336], [0.4348431279, 1.6550461482]], rtol=1e-4)


def test_fits_without_separation_are_unchanged():
    rng = np.random.default_rng(7)
    n = 300
    covariates = pd.DataFrame({"age": rng.normal(62, 10, n), "primary": rng.choice(["lung", "breast"], n)})
    score = rng.normal(size=n)
    y = (rng.random(n) < expit(-0.3 + 0.8 * score)).astype(float)
    auto = multivariable_logistic(y, score, covariates)
    never = multivariable_logistic(y, score, covariates, firth="never")
    assert auto.method == MAXIMUM_LIKELIHOOD and auto.separation is None
    pd.testing.assert_frame_equal(auto.table, never.table)
    time = rng.exponential(10 * np.exp(-0.5 * score))
    event = (rng.random(n) < 0.8).astype(float)
    auto = multivariable_cox(time, event, score, covariates)
    never = multivariable_cox(time, event, score, covariates, firth="never")
    assert auto.method == MAXIMUM_LIKELIHOOD and auto.separation is None
    pd.testing.assert_frame_equal(auto.table, never.table)
    with pytest.raises(ValueError, match="firth must be one of"):
        multivariable_logistic(y, score, covariates, firth="sometimes")


# ------------------------------------------------------------------------------ metrics and report

SPEC = spec_from_dict({"channel_names": {"0": "T1c"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 1,
                       "file_ending": ".nii.gz", "group_column": "site",
                       "clinical_features": {"age": "numeric", "primary": "categorical"},
                       "endpoints": {"lf": {"type": "binary"},
                                     "os": {"type": "survival", "time": "t", "event": "e"}}})


def _cohort(n: int, seed: int, separate: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    lf = (rng.random(n) < expit(x)).astype(float)
    primary = np.where(lf == 1, "melanoma", "lung") if separate else rng.choice(["lung", "breast"], n)
    table = pd.DataFrame({"site": "A", "age": rng.normal(60, 10, n), "primary": primary, "lf": lf,
                          "t": rng.exponential(10 * np.exp(-0.5 * x)), "e": (rng.random(n) < 0.8).astype(float)},
                         index=pd.Index([f"c{i}" for i in range(n)], name="case_id"))
    return table, pd.DataFrame({"lf": expit(x), "os_risk": x}, index=table.index)


def test_metrics_and_report_label_firth_estimates():
    table, predictions = _cohort(60, 1, separate=True)
    metrics = evaluate_cohort(predictions, table, SPEC, n_bootstrap=0)
    model = metrics["multivariable"]["lf"]
    assert model["method"] == "firth" and "unstable" not in model
    assert "separation" in model["separation"]["reason"] and "primary[melanoma]" in model["separation"]["terms"]
    assert all(1e-4 < row["odds_ratio"] < 1e4 for row in model["rows"])
    assert metrics["multivariable"]["os"]["method"] == "maximum likelihood"
    html = render_report({"dataset": "x", **metrics})
    section = html[html.index('id="multivariable"'):]
    assert "Firth" in section and "Odds ratio (Firth)" in section and "profile penalised-likelihood" in section
    assert "Forest plot" in section


def test_a_single_group_cohort_is_shown_once():
    table, predictions = _cohort(50, 2, separate=False)
    metrics = evaluate_cohort(predictions, table, SPEC, groups=table["site"], n_bootstrap=10)
    assert metrics["single_group"] == "A"
    assert set(metrics["endpoints"]["lf"]["cohorts"]) == {"all"} and [r["group"] for r in metrics["cohort_table"]] \
        == ["all"]
    html = render_report({"dataset": "x", **metrics})
    assert len(re.findall(r"<h3>Cohort: ", html)) == 2  # one per endpoint
    assert "Cohort: A" not in html
    assert html.count('id="multivariable-0-lf"') == 1 and html.count('id="multivariable-1-os"') == 1
    assert html.count("<td>model score (per SD)</td>") == 2  # each endpoint's multivariable table once
    two = table.assign(site=np.where(np.arange(len(table)) < 25, "A", "B"))
    metrics = evaluate_cohort(predictions, two, SPEC, groups=two["site"], n_bootstrap=10)
    assert "single_group" not in metrics and set(metrics["endpoints"]["lf"]["cohorts"]) == {"all", "A", "B"}
