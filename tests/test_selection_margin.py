"""The selection margin: the paired bootstrap standard error of "this epoch minus the starting
point" on the same validation cases (``validation_metrics.paired_bootstrap_standard_error``),
checked against DeLong's analytic standard error of a difference of correlated AUCs."""

from __future__ import annotations

import numpy as np
import pytest

from glmil_auto.evaluation.metrics.delong import delong_auc_covariance
from glmil_auto.training.validation.validation_metrics import paired_bootstrap_standard_error

ENDPOINTS = [{"name": "event", "type": "binary"}]


def correlated_scores(n: int, seed: int, correction: float):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(float)
    start = y * 0.8 + rng.normal(size=n)
    epoch = start + correction * (y + rng.normal(size=n))  # a small correction of the starting point
    return y, start, epoch


@pytest.mark.parametrize("correction", [0.1, 0.3])
def test_paired_bootstrap_error_matches_delong_for_a_difference_of_correlated_aucs(correction):
    y, start, epoch = correlated_scores(400, seed=1, correction=correction)
    bootstrap = paired_bootstrap_standard_error({"event": epoch}, {"event": start}, {"event": y}, ENDPOINTS,
                                                n_resamples=400, seed=0)
    _, covariance = delong_auc_covariance(y, epoch, start)
    analytic = float(np.sqrt(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]))
    assert bootstrap == pytest.approx(analytic, rel=0.2)
    # the margin of an unpaired comparison would be several times larger
    assert bootstrap < 0.5 * float(np.sqrt(covariance[1, 1]))


def test_identical_predictions_have_no_noise_and_tiny_cohorts_no_estimate():
    y, start, _ = correlated_scores(60, seed=2, correction=0.0)
    assert paired_bootstrap_standard_error({"event": start}, {"event": start}, {"event": y}, ENDPOINTS) == 0.0
    assert np.isnan(paired_bootstrap_standard_error({"event": start[:1]}, {"event": start[:1]}, {"event": y[:1]},
                                                    ENDPOINTS))
