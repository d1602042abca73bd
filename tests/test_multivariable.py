"""The multivariable tables agree with direct statsmodels / lifelines fits; the forest plot is written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter
from lifelines.datasets import load_rossi

from glmil_auto.evaluation.clinical_models.multivariable import (
    COX_COLUMNS,
    LOGISTIC_COLUMNS,
    encode_covariates,
    forest_plot,
    multivariable_cox,
    multivariable_logistic,
)


def _simulated(n: int = 400, seed: int = 7) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    score = rng.normal(size=n)
    age = rng.normal(62, 10, size=n)
    primary = rng.choice(["lung", "breast", "melanoma"], size=n)
    linear = -0.5 + 0.8 * score + 0.02 * (age - 62) + np.where(primary == "melanoma", 0.6, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-linear))).astype(float)
    return y, score, pd.DataFrame({"age": age, "primary": primary})


def test_logistic_matches_statsmodels():
    y, score, covariates = _simulated()
    result = multivariable_logistic(y, score, covariates, score_name="deep score")
    assert list(result.table.columns) == LOGISTIC_COLUMNS
    assert list(result.table["term"]) == ["deep score", "age", "primary[lung]", "primary[melanoma]"]
    assert result.n == len(y) and result.events == int(y.sum()) and result.dropped == 0

    design = pd.DataFrame({
        "deep score": score, "age": covariates["age"],
        "primary[lung]": (covariates["primary"] == "lung").astype(float),  # 'breast' (first sorted) = reference
        "primary[melanoma]": (covariates["primary"] == "melanoma").astype(float),
    })
    direct = sm.Logit(y, sm.add_constant(design)).fit(disp=0)
    terms = list(design.columns)
    table = result.table.set_index("term").loc[terms]
    np.testing.assert_allclose(table["coefficient"], direct.params[terms], rtol=0, atol=1e-8)
    np.testing.assert_allclose(table["odds_ratio"], np.exp(direct.params[terms]), rtol=1e-8)
    np.testing.assert_allclose(table["ci_low"], np.exp(direct.conf_int().loc[terms, 0]), rtol=1e-8)
    np.testing.assert_allclose(table["ci_high"], np.exp(direct.conf_int().loc[terms, 1]), rtol=1e-8)
    np.testing.assert_allclose(table["p_value"], direct.pvalues[terms], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(table["se"], direct.bse[terms], rtol=0, atol=1e-8)
    assert table.loc["deep score", "odds_ratio"] > 1.5 and table.loc["deep score", "p_value"] < 1e-6


def test_logistic_drops_missing_rows():
    y, score, covariates = _simulated()
    y[:3] = np.nan
    score[10] = np.nan
    covariates.loc[20, "primary"] = None
    covariates.loc[21, "age"] = np.nan
    result = multivariable_logistic(pd.Series(y, index=covariates.index), score, covariates)
    assert result.dropped == 6 and result.n == len(y) - 6
    keep = np.ones(len(y), bool)
    keep[[0, 1, 2, 10, 20, 21]] = False
    reference = multivariable_logistic(y[keep], score[keep], covariates[keep].reset_index(drop=True))
    pd.testing.assert_frame_equal(result.table, reference.table)


def test_logistic_input_checks():
    y, score, covariates = _simulated(50)
    with pytest.raises(ValueError, match="index"):
        multivariable_logistic(pd.Series(y, index=np.arange(50) + 100), score, covariates)
    with pytest.raises(ValueError, match="values for"):
        multivariable_logistic(y[:-1], score, covariates)
    with pytest.raises(ValueError, match="0/1"):
        multivariable_logistic(y * 2, score, covariates)
    with pytest.raises(ValueError, match="also a covariate"):
        multivariable_logistic(y, score, covariates, score_name="age")


def test_categorical_reference_level():
    frame = pd.DataFrame({"grade": pd.Categorical(["high", "low", "mid", "low"], categories=["low", "mid", "high"]),
                          "site": ["b", "a", "c", "a"], "flag": [True, False, True, False]})
    encoded = encode_covariates(frame)
    assert list(encoded.columns) == ["grade[mid]", "grade[high]", "site[b]", "site[c]", "flag"]
    np.testing.assert_array_equal(encoded["grade[high]"], [1, 0, 0, 0])
    np.testing.assert_array_equal(encoded["flag"], [1, 0, 1, 0])


def test_cox_matches_lifelines_on_rossi():
    rossi = load_rossi()
    covariates = rossi[["age", "fin"]]
    result = multivariable_cox(rossi["week"], rossi["arrest"], rossi["prio"], covariates, score_name="prio")
    assert list(result.table.columns) == COX_COLUMNS
    assert list(result.table["term"]) == ["prio", "age", "fin"]
    assert result.n == len(rossi) and result.events == int(rossi["arrest"].sum()) and result.dropped == 0

    direct = CoxPHFitter().fit(rossi[["week", "arrest", "prio", "age", "fin"]], "week", "arrest").summary
    table = result.table.set_index("term").loc[direct.index]
    np.testing.assert_allclose(table["coefficient"], direct["coef"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(table["hazard_ratio"], direct["exp(coef)"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(table["ci_low"], direct["exp(coef) lower 95%"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(table["ci_high"], direct["exp(coef) upper 95%"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(table["p_value"], direct["p"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(table["se"], direct["se(coef)"], rtol=0, atol=1e-8)


def test_forest_plot_written(tmp_path):
    rossi = load_rossi()
    result = multivariable_cox(rossi["week"], rossi["arrest"], rossi["prio"], rossi[["age", "fin"]])
    path = forest_plot(result.table, "Re-arrest (Rossi)", tmp_path / "plots" / "forest.png")
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    y, score, covariates = _simulated(200)
    logistic = multivariable_logistic(y, score, covariates)
    assert forest_plot(logistic.table, "Simulated", tmp_path / "logistic.png").stat().st_size > 1000
