"""The accuracy benchmark's numerics: expected AUC against a brute-force double loop, the table's
AUC / C against scikit-learn and scikit-survival, and the gap fraction."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from glmil_auto.evaluation.benchmarking.accuracy_table import endpoint_table, format_table
from glmil_auto.evaluation.benchmarking.expected_auc import expected_auc


def brute_force_expected_auc(scores, probabilities):
    num = den = 0.0
    for i in range(len(scores)):
        for j in range(len(scores)):
            if i != j:
                w = probabilities[i] * (1 - probabilities[j])
                den += w
                num += w * ((scores[i] > scores[j]) + 0.5 * (scores[i] == scores[j]))
    return num / den


@pytest.mark.parametrize("seed", range(5))
def test_expected_auc_equals_the_double_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    scores = np.round(rng.normal(size=n), 1)  # many ties
    probabilities = rng.uniform(size=n)
    probabilities[rng.random(n) < 0.1] = rng.choice([0.0, 1.0])
    assert expected_auc(scores, probabilities) == pytest.approx(brute_force_expected_auc(scores, probabilities), abs=1e-12)


def test_expected_auc_properties():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, size=400)
    truth = expected_auc(p, p)
    # the true probabilities are the best score on this scale; any monotone map of them ties it
    assert expected_auc(np.log(p / (1 - p)), p) == pytest.approx(truth)
    for _ in range(20):
        assert expected_auc(p + rng.normal(0, 0.2, size=400), p) < truth
    assert expected_auc(np.zeros(400), p) == pytest.approx(0.5)
    assert expected_auc(-p, p) == pytest.approx(1 - truth)
    # labels that are the probabilities' draws: the mean drawn AUC approaches the expected AUC
    draws = [roc_auc_score(rng.random(400) < p, p) for _ in range(300)]
    assert np.mean(draws) == pytest.approx(truth, abs=0.005)
    with pytest.raises(ValueError):
        expected_auc(np.array([1.0, np.nan]), np.array([0.5, 0.5]))


def test_endpoint_table_agrees_with_the_reference_libraries():
    rng = np.random.default_rng(1)
    n = 120
    p = rng.uniform(0.05, 0.9, size=n)
    y = (rng.random(n) < p).astype(float)
    y[:5] = np.nan  # unknown outcomes are left out of the AUC, not of the expected AUC
    rows = {"ceiling (truth)": p, "clinical baseline": p + rng.normal(0, 0.3, size=n), "model": p + rng.normal(0, 0.1, size=n)}
    table = endpoint_table("lf", "binary", rows, y, truth=p, baseline="clinical baseline", ceiling="ceiling (truth)",
                           n_bootstrap=200, seed=0).set_index("row")
    known = ~np.isnan(y)
    for name, score in rows.items():
        assert table.loc[name, "value"] == pytest.approx(roc_auc_score(y[known], score[known]))
        assert table.loc[name, "ci_low"] <= table.loc[name, "value"] <= table.loc[name, "ci_high"]
        assert table.loc[name, "expected_auc"] == pytest.approx(expected_auc(score, p))
        assert table.loc[name, "n"] == known.sum() and table.loc[name, "events"] == np.nansum(y)
    assert table.loc["clinical baseline", "gap_closed"] == pytest.approx(0.0)
    assert table.loc["ceiling (truth)", "gap_closed"] == pytest.approx(1.0)
    expected_gap = ((expected_auc(rows["model"], p) - expected_auc(rows["clinical baseline"], p))
                    / (expected_auc(p, p) - expected_auc(rows["clinical baseline"], p)))
    assert table.loc["model", "gap_closed"] == pytest.approx(expected_gap)
    assert "| model |" in format_table(table.reset_index())


def test_survival_rows_use_harrell_c():
    rng = np.random.default_rng(2)
    n = 150
    lp = rng.normal(size=n)
    time = rng.exponential(np.exp(-lp))
    event = (rng.random(n) < 0.7).astype(float)
    rows = {"ceiling (truth)": lp, "clinical baseline": lp + rng.normal(0, 1, n), "model": lp + rng.normal(0, 0.5, n)}
    table = endpoint_table("os", "survival", rows, event, time, baseline="clinical baseline",
                           ceiling="ceiling (truth)", n_bootstrap=100).set_index("row")
    for name, score in rows.items():
        reference = concordance_index_censored(event.astype(bool), time, score)[0]
        assert table.loc[name, "value"] == pytest.approx(reference)
        assert np.isnan(table.loc[name, "expected_auc"])
    c = table["value"]
    assert table.loc["model", "gap_closed"] == pytest.approx(
        (c["model"] - c["clinical baseline"]) / (c["ceiling (truth)"] - c["clinical baseline"]))
