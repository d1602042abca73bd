"""The fingerprint's numerics as plain functions: nnU-Net's crop and sampling, statistics, Kaplan-Meier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glmil_auto.experiment_planning.fingerprint.nnunet_compatible import (
    WeightedSample,
    crop_to_nonzero,
    intensity_properties,
    pool_samples,
    sample_foreground,
    samples_per_case,
    weighted_percentiles,
)
from glmil_auto.experiment_planning.fingerprint.summaries import (
    distribution,
    kaplan_meier_median,
    lesion_summary,
    to_json_compatible,
)


def test_crop_to_nonzero_fills_holes_and_marks_outside():
    images = np.zeros((2, 6, 7, 8), dtype=np.float32)
    images[0, 1:5, 2:6, 1:7] = 1.0
    images[0, 2:4, 3:5, 3:5] = 0.0  # an enclosed hole: filled, so inside the mask
    images[1, 5, 6, 7] = 2.0  # a lone voxel in another channel widens the box
    label = np.zeros((6, 7, 8), dtype=np.int16)
    label[2, 3, 3] = 1  # in the hole
    label[0, 0, 0] = 2  # outside the box: cropped away
    cropped, cropped_label, box = crop_to_nonzero(images, label)
    assert box == [(1, 6), (2, 7), (1, 8)]
    assert cropped.shape == (2, 5, 5, 7)
    assert cropped_label[1, 1, 2] == 1
    assert cropped_label[1, 1, 3] == 0  # hole voxel: inside the filled mask, stays background
    assert cropped_label[4, 0, 0] == -1  # zero in every channel and not enclosed: outside the mask
    assert cropped_label[0, 0, 0] == 0  # nonzero image voxel
    assert label[0, 0, 0] == 2  # the input is not modified


def test_crop_of_all_zero_case_keeps_everything():
    cropped, cropped_label, box = crop_to_nonzero(np.zeros((1, 3, 4, 5), dtype=np.float32), np.zeros((3, 4, 5)))
    assert cropped.shape == (1, 3, 4, 5) and box == [(0, 3), (0, 4), (0, 5)]
    assert (cropped_label == -1).all()


def test_sampling_equals_drawing_the_values_themselves():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 5, 6, 7)).astype(np.float32)
    label = (rng.random((5, 6, 7)) < 0.2).astype(np.int8) * rng.integers(1, 4, (5, 6, 7)).astype(np.int8)
    samples = sample_foreground(images, label, num_samples=5000)
    generator = np.random.RandomState(1234)  # what nnU-Net does: one generator, channel after channel
    for channel, sample in enumerate(samples):
        direct = generator.choice(images[channel][label > 0], 5000, replace=True)
        expanded = np.repeat(sample.values, sample.counts)
        np.testing.assert_array_equal(np.sort(expanded), np.sort(direct))


def test_every_positive_label_is_foreground():
    images = np.zeros((1, 2, 2, 2), dtype=np.float32)
    label = np.zeros((2, 2, 2), dtype=np.int8)
    images[0, 0, 0, 0], label[0, 0, 0] = 1.0, 1
    images[0, 1, 1, 1], label[1, 1, 1] = 5.0, 2  # e.g. oedema, not a lesion label
    properties = intensity_properties(pool_samples(sample_foreground(images, label, 1000)))
    assert (properties["min"], properties["max"]) == (1.0, 5.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_statistics_equal_numpy_on_the_expanded_sample(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(100, 30, size=int(rng.integers(1, 50))).astype(np.float32)
    counts = rng.integers(1, 20, size=values.size)
    sample = WeightedSample(values, counts)
    expanded = np.repeat(values, counts)
    q = [0.0, 0.5, 5.0, 50.0, 99.5, 100.0]
    assert weighted_percentiles(sample, q) == [float(v) for v in np.percentile(expanded, np.array(q))]
    properties = intensity_properties(sample)
    assert properties["mean"] == pytest.approx(float(np.mean(expanded, dtype=np.float64)), rel=1e-12)
    assert properties["std"] == pytest.approx(float(np.std(expanded, dtype=np.float64)), rel=1e-9)
    assert (properties["min"], properties["max"]) == (float(expanded.min()), float(expanded.max()))


def test_samples_per_case_is_nnunets_integer_division():
    assert samples_per_case(8) == 12_500_000 and samples_per_case(3) == 33_333_333
    assert all(v is None for v in intensity_properties(WeightedSample.empty()).values())


def test_kaplan_meier_medians_match_lifelines():
    lifelines = pytest.importorskip("lifelines")
    rng = np.random.default_rng(4)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        time = np.round(rng.exponential(10, n), 0) + 1  # ties on purpose
        event = (rng.random(n) < 0.6).astype(float)
        for e in (event, 1 - event):  # survival, then reverse KM (follow-up)
            fitter = lifelines.KaplanMeierFitter().fit(time, e)
            expected = fitter.median_survival_time_
            ours = kaplan_meier_median(time, e)
            assert (ours is None) if np.isinf(expected) else ours == pytest.approx(expected)


def test_kaplan_meier_exact_half():
    assert kaplan_meier_median(np.array([1.0, 2.0]), np.array([1.0, 1.0])) == 1.0
    assert kaplan_meier_median(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 1.0, 0.0])) == 3.0
    assert kaplan_meier_median(np.array([5.0]), np.array([0.0])) is None
    assert kaplan_meier_median(np.array([]), np.array([])) is None


def test_summaries_over_nothing_are_null():
    assert distribution([], ("min", "median", "percentile_95")) == {"min": None, "median": None, "percentile_95": None}
    summary = lesion_summary([{"lesions": [], "n_lesions": 0}])
    assert summary["lesion_diameter_mm"]["median"] is None and summary["lesion_extent_mm"]["median"] is None
    assert summary["lesions_per_case"]["n_cases_without_lesions"] == 1
    assert distribution([1.0, 2.0, 3.0, 4.0], ("percentile_05", "percentile_00_5")) == {
        "percentile_05": pytest.approx(1.15), "percentile_00_5": pytest.approx(1.015)}


def test_json_compatible_has_no_nan():
    obj = {1: np.float32(np.nan), "a": (np.int64(3), np.inf, np.bool_(True)), "b": np.arange(2)}
    converted = to_json_compatible(obj)
    assert converted == {"1": None, "a": [3, None, True], "b": [0, 1]}
    json.dumps(converted, allow_nan=False)
