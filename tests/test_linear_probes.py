"""Linear probes on embeddings (glmil_auto.evaluation.benchmarking.linear_probes): they find a linearly held
target and nothing in noise, never split a case across folds, and the paired case bootstrap
separates an informative embedding from noise but not noise from noise."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import r2_score, roc_auc_score

from glmil_auto.evaluation.benchmarking.linear_probes import (
    paired_probe_comparison,
    probe_folds,
    probe_predictions,
    probe_score,
)

N_CASES, PER_CASE, WIDTH = 120, 3, 32


@pytest.fixture(scope="module")
def cohort() -> dict[str, np.ndarray]:
    """Lesions of cases with a case effect (what grouped folds must not leak), an embedding that
    holds a continuous and a binary target linearly, and two noise embeddings."""
    rng = np.random.default_rng(0)
    groups = np.repeat([f"case_{i:03d}" for i in range(N_CASES)], PER_CASE)
    n = len(groups)
    informative = rng.normal(size=(n, WIDTH))
    target = informative[:, :4] @ np.array([1.0, -0.5, 0.8, 0.3]) + 0.1 * rng.normal(size=n)
    binary = (target > np.median(target)).astype(int)
    return {"groups": groups, "informative": informative, "target": target, "binary": binary,
            "noise_1": rng.normal(size=(n, WIDTH)), "noise_2": rng.normal(size=(n, WIDTH))}


def test_probe_finds_a_linear_target_and_nothing_in_noise(cohort):
    g = cohort["groups"]
    r2 = probe_score(cohort["target"], probe_predictions(cohort["informative"], cohort["target"], g, "regression"),
                     "regression")
    auc = probe_score(cohort["binary"], probe_predictions(cohort["informative"], cohort["binary"], g,
                                                          "classification"), "classification")
    assert r2 > 0.9 and auc > 0.95, (r2, auc)
    r2_noise = probe_score(cohort["target"], probe_predictions(cohort["noise_1"], cohort["target"], g, "regression"),
                           "regression")
    auc_noise = probe_score(cohort["binary"], probe_predictions(cohort["noise_1"], cohort["binary"], g,
                                                                "classification"), "classification")
    assert abs(r2_noise) < 0.05 and abs(auc_noise - 0.5) < 0.1, (r2_noise, auc_noise)


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_folds_never_split_a_case(cohort, kind):
    y = cohort["target"] if kind == "regression" else cohort["binary"]
    folds = probe_folds(y, cohort["groups"], kind, n_splits=5, seed=3)
    assert set(folds) == set(range(5))
    for case in np.unique(cohort["groups"]):
        assert len(set(folds[cohort["groups"] == case])) == 1, case
    if kind == "classification":  # stratified: every fold holds both classes
        assert all(len(set(y[folds == f])) == 2 for f in range(5))
    # the seed decides the folds (paired comparisons use one seed), and different seeds differ
    assert (probe_folds(y, cohort["groups"], kind, 5, 3) == folds).all()
    assert not (probe_folds(y, cohort["groups"], kind, 5, 4) == folds).all()


def test_fewer_cases_than_folds_uses_one_fold_per_case():
    folds = probe_folds(np.arange(6.0), ["a", "a", "b", "b", "c", "c"], "regression", n_splits=5)
    assert sorted(set(folds)) == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 2 groups"):
        probe_folds(np.arange(3.0), ["a"] * 3, "regression")


def test_probe_score_is_the_sklearn_metric(cohort):
    rng = np.random.default_rng(1)
    prediction = cohort["target"] + rng.normal(size=len(cohort["target"]))
    assert probe_score(cohort["target"], prediction, "regression") == pytest.approx(r2_score(cohort["target"], prediction))
    assert probe_score(cohort["binary"], prediction, "classification") == pytest.approx(
        roc_auc_score(cohort["binary"], prediction))
    weights = rng.integers(0, 3, len(prediction)).astype(float)
    # integer weights are the replicated samples (what the case bootstrap relies on)
    replicated = np.repeat(np.arange(len(prediction)), weights.astype(int))
    assert probe_score(cohort["binary"], prediction, "classification", weights) == pytest.approx(
        roc_auc_score(cohort["binary"][replicated], prediction[replicated]))
    assert probe_score(cohort["target"], prediction, "regression", weights) == pytest.approx(
        r2_score(cohort["target"][replicated], prediction[replicated]))
    with pytest.raises(ValueError, match="kind"):
        probe_score(cohort["target"], prediction, "ranking")


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_paired_bootstrap_separates_signal_from_noise_but_not_noise_from_noise(cohort, kind):
    y, g = (cohort["target"], cohort["groups"]) if kind == "regression" else (cohort["binary"], cohort["groups"])
    noise_1 = probe_predictions(cohort["noise_1"], y, g, kind)
    noise_2 = probe_predictions(cohort["noise_2"], y, g, kind)
    informative = probe_predictions(cohort["informative"], y, g, kind)
    better = paired_probe_comparison(y, noise_1, informative, g, kind, n_boot=300, seed=0)
    assert better["excludes_zero"] and better["ci_difference"][0] > 0
    assert better["difference"] == pytest.approx(better["score_b"] - better["score_a"])
    assert better["ci_b"][0] <= better["score_b"] <= better["ci_b"][1]
    assert better["n"] == len(y) and better["n_groups"] == N_CASES and better["n_boot"] == 300
    same = paired_probe_comparison(y, noise_1, noise_2, g, kind, n_boot=300, seed=0)
    assert not same["excludes_zero"] and same["ci_difference"][0] < 0 < same["ci_difference"][1], same
    # reproducible from its seed
    assert paired_probe_comparison(y, noise_1, noise_2, g, kind, n_boot=300, seed=0) == same


def test_bootstrap_resamples_cases_not_lesions():
    """Two cases, each holding all lesions of one class: a lesion-level bootstrap would give many
    different AUCs; a case-level one can only draw both cases (AUC 1) or one (skipped)."""
    y = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    prediction = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    result = paired_probe_comparison(y, prediction, prediction, groups, "classification", n_boot=50, seed=0)
    assert result["ci_a"] == [1.0, 1.0] and result["ci_difference"] == [0.0, 0.0] and result["n_boot"] == 50
