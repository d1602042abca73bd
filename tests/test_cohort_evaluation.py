"""The evaluation of one cohort never stops on a small group: what cannot be computed is None with
a reason, and a multivariable fit that separates gets Firth's estimates (a maximum-likelihood fit
kept as it is would be flagged instead of drawn)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from glmil_auto.dataset.dataset_json import spec_from_dict
from glmil_auto.evaluation import cohort_evaluation
from glmil_auto.evaluation.clinical_models.multivariable import multivariable_logistic
from glmil_auto.evaluation.cohort_evaluation import evaluate_cohort
from glmil_auto.evaluation.cohort_metrics import binary_cohort, survival_cohort
from glmil_auto.inference.risk_groups import assign_risk_groups

SPEC = spec_from_dict({"channel_names": {"0": "T1c"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 1,
                       "file_ending": ".nii.gz", "group_column": "site",
                       "clinical_features": {"age": "numeric", "primary": "categorical"},
                       "endpoints": {"lf": {"type": "binary"},
                                     "os": {"type": "survival", "time": "t", "event": "e"}}})


def cohort(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    table = pd.DataFrame({"site": np.where(np.arange(n) < n - 3, "A", "B"), "age": rng.normal(60, 10, n),
                          "primary": rng.choice(["lung", "breast"], n),
                          "lf": (rng.random(n) < 1 / (1 + np.exp(-x))).astype(float),
                          "t": rng.exponential(10 * np.exp(-0.5 * x)), "e": (rng.random(n) < 0.8).astype(float)},
                         index=pd.Index([f"c{i}" for i in range(n)], name="case_id"))
    predictions = pd.DataFrame({"lf": 1 / (1 + np.exp(-x)), "os_risk": x,
                                "os_risk_group": assign_risk_groups(x, [-0.4, 0.4])}, index=table.index)
    return table, predictions


def test_a_three_case_group_gets_reasons_not_exceptions():
    table, predictions = cohort()
    metrics = evaluate_cohort(predictions, table, SPEC, groups=table["site"], n_bootstrap=50)
    small = metrics["endpoints"]["os"]["cohorts"]["B"]
    assert small["n"] == 3 and set(metrics["endpoints"]["lf"]["cohorts"]) == {"all", "A", "B"}
    whole = metrics["endpoints"]["lf"]["cohorts"]["all"]
    assert 0.5 < whole["scores"]["model"]["auc"]["auc"] <= 1
    assert [r["group"] for r in metrics["cohort_table"]] == ["all", "A", "B"]
    assert metrics["cohort_table"][2]["os"]["known"] == 3
    assert "unstable" not in metrics["multivariable"]["lf"] and metrics["multivariable"]["lf"]["rows"][0]["term"] \
        == "model score (per SD)"


def test_a_separating_multivariable_fit_gets_firth_estimates(monkeypatch):
    table, predictions = cohort(60, seed=1)
    table["primary"] = np.where(table["lf"] == 1, "melanoma", "lung")  # the primary separates the outcome
    metrics = evaluate_cohort(predictions, table, SPEC, n_bootstrap=0)
    model = metrics["multivariable"]["lf"]
    assert model["method"] == "firth" and "unstable" not in model and "separation" in model["separation"]["reason"]
    assert all(1e-4 < row["odds_ratio"] < 1e4 and row["ci_low"] is not None for row in model["rows"])
    # the maximum-likelihood fit of the same data, kept as it is, is still flagged
    monkeypatch.setattr(cohort_evaluation, "multivariable_logistic", partial(multivariable_logistic, firth="never"))
    metrics = evaluate_cohort(predictions, table, SPEC, n_bootstrap=0)
    assert "not reliable" in metrics["multivariable"]["lf"]["unstable"]
    assert metrics["multivariable"]["lf"]["method"] == "maximum likelihood"


def test_binary_and_survival_entries_with_baselines_and_groups():
    rng = np.random.default_rng(3)
    y = (rng.random(200) < 0.3).astype(float)
    p = np.clip(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.1, 200), 0.01, 0.99)
    entry = binary_cohort(y, {"model": p, "noise": rng.random(200)}, n_bootstrap=50, risk_cutoffs=[0.25, 0.35])
    assert entry["comparisons"][0]["baseline"] == "noise" and entry["comparisons"][0]["p_value"] < 0.05
    assert entry["decision_curve"]["curves"].keys() == {"model", "noise"}
    assert sum(row["n"] for row in entry["risk_groups"]["table"]) == 200
    time = rng.exponential(10, 200)
    entry = survival_cohort(time, np.ones(200), {"model": -time + rng.normal(0, 1, 200)}, (time, np.ones(200)),
                            horizons=[5.0, 10.0], n_bootstrap=20, risk_groups=np.array(["low", "high"] * 100))
    assert entry["scores"]["model"]["harrell"]["c_index"] > 0.9
    assert entry["risk_groups"]["logrank"]["p_value"] > 0  # groups unrelated to time: any p
