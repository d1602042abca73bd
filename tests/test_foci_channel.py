"""The small-foci path around the detector: planned settings, the global volume's foci channel and
the candidates a case keeps, the per-case descriptor and its threshold, augmentation that leaves the
channel alone, and the network's noFociChannel switch."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from glmil_auto.experiment_planning.small_foci_rules import foci_radii, plan_small_foci
from glmil_auto.model.foci_descriptor import candidate_responses, fit_foci_threshold, foci_above, foci_descriptor
from glmil_auto.preprocessing.foci_channel import (
    channel_values, foci_channel_and_record, foci_channel_index, global_input_channels, image_channel_count,
)
from glmil_auto.preprocessing.resampling import grid_centred_on, resample_to_grid
from glmil_auto.preprocessing.small_foci import decoy_threshold
from test_small_foci import IDENTITY, grid, sphere_image


# ---------------------------------------------------------------------- planning
def test_radii_run_from_the_native_resolution_to_the_global_grid_or_the_smallest_lesions():
    assert foci_radii([2.0, 2.0, 2.0], 2.65, 3.39) == [1.0, 1.414, 2.0]  # the synthetic cohort's CPU plan
    assert foci_radii([3.0, 1.8, 1.8], 2.65, 3.39) == [1.0, 1.414, 2.0]  # thick slices: the in-plane edge counts
    assert foci_radii([2.0, 2.0, 2.0], 2.65, 1.3) == [1.0]  # a GPU grid that resolves them itself: one radius
    assert foci_radii([0.9, 0.9, 0.9], None, 3.4) == [1.0, 1.414, 2.0]  # no lesion sizes: up to 2 mm (4 mm foci)
    assert foci_radii([1.5, 1.5, 1.5], 8.0, 4.5) == [1.0, 1.414, 2.0]  # large lesions only: still foci of <= 4 mm
    assert foci_radii([5.0, 5.0, 5.0], 10.0, 3.0) == [2.5]  # coarse scans: nothing below half a voxel
    section = plan_small_foci({"spacing_canonical": {"median": [2.0, 2.0, 2.0]},
                               "lesion_diameter_mm": {"percentile_05": 2.65}}, 0, 3.39)
    assert section["lesion_margin_mm"] == 4.0 and section["surface_margin_mm"] == 4.0
    assert section["reference_channel"] == 0 and section["false_positives_per_case"] == 0.5


def test_channel_layout_of_the_global_volume():
    plans = {"num_input_channels": 3, "preprocessing": {"small_foci": {"max_candidates": 8}}}
    assert global_input_channels(plans) == 4 and image_channel_count(plans) == 2 and foci_channel_index(plans) == 2
    without = {"num_input_channels": 3, "preprocessing": {}}
    assert global_input_channels(without) == 3 and foci_channel_index(without) is None


# ---------------------------------------------------------------------- channel and record
def planted_case(seed=0):
    """A 1 mm brain-like cube with a contoured lesion and two uncontoured 1.5 mm foci."""
    spacing = (1.0, 1.0, 1.0)
    shape = (64, 64, 64)
    foci_mm = [(22.0, 40.0, 30.0), (44.0, 24.0, 38.0)]
    image = sphere_image(shape, spacing, foci_mm + [(32.0, 30.0, 18.0)], 1.5, contrast=2.0, noise_sd=0.3, seed=seed)
    image += sphere_image(shape, spacing, [(32.0, 30.0, 18.0)], 4.0, contrast=2.0, noise_sd=0.0)  # the lesion
    geometry = grid(shape, spacing, (-10.0, 5.0, 2.0))
    zz, yy, xx = np.indices(shape)
    brain = (np.abs(zz - 32) < 28) & (np.abs(yy - 32) < 28) & (np.abs(xx - 32) < 28)
    lesion = (zz - 32) ** 2 + (yy - 30) ** 2 + (xx - 18) ** 2 <= 16
    world = [geometry.index_to_world(np.asarray(f)) for f in foci_mm]
    return image, geometry, brain, lesion, world


SECTION = {"reference_channel": 0, "radii_mm": [1.0, 1.414, 2.0], "lesion_margin_mm": 4.0, "surface_margin_mm": 2.0,
           "min_blobness": 0.3, "floor": 2.5, "false_positives_per_case": 0.5, "max_candidates": 64,
           "channel_clip": 10.0, "channel_scale": 2.5}


def test_the_channel_keeps_foci_that_linear_downsampling_averages_away():
    image, geometry, brain, lesion, world = planted_case()
    centre = geometry.index_to_world(np.asarray([31.5, 31.5, 31.5]))
    target = grid_centred_on(centre, [4.0, 4.0, 4.0], [16, 16, 16], IDENTITY)
    channel, record = foci_channel_and_record(image, geometry, brain, lesion, target, SECTION)
    assert channel.shape == (16, 16, 16) and channel.dtype == np.float32 and channel.min() == 0.0
    background = image[brain & ~lesion].std()
    linear = resample_to_grid(image, geometry, target, order=1)
    for point in world:
        index = tuple(int(i) for i in np.rint(target.world_to_index(np.asarray(point))))
        near = tuple(slice(max(0, i - 1), i + 2) for i in index)
        # max pooling: the focus keeps its height on the coarse grid ...
        assert channel[near].max() > 1.0
        # ... where interpolation left it within about two noise SDs of the brain (it is 2 / 0.3 = 6.7 SDs bright)
        assert linear[near].max() < 2.5 * background + float(np.median(linear[brain[::4, ::4, ::4]]))
        distances = [np.linalg.norm(np.asarray(c["world_mm"]) - point) for c in record["candidates"]]
        assert min(distances) < 1.5  # its candidate, in physical coordinates
    # nothing on or next to the contoured lesion
    lesion_index = tuple(int(i) for i in np.rint(target.world_to_index(geometry.index_to_world(np.asarray([32, 30, 18])))))
    assert channel[lesion_index] == 0.0
    assert record["n_candidates"] >= 2 and all(c["response"] >= SECTION["floor"] for c in record["candidates"])
    assert sorted(c["response"] for c in record["candidates"])[::-1] == [c["response"] for c in record["candidates"]]
    responses = sorted(c["response"] for c in record["candidates"])[-2:]
    assert channel.max() == pytest.approx(float(channel_values(np.asarray([max(responses)]), SECTION)[0]), rel=1e-4)


def test_channel_values_are_above_the_floor_clipped_and_scaled():
    values = channel_values(np.array([0.0, 2.5, 5.0, 40.0]), SECTION)
    np.testing.assert_allclose(values, [0.0, 0.0, 1.0, 4.0])


# ---------------------------------------------------------------------- descriptor
def test_descriptor_counts_and_sums_what_reaches_the_threshold():
    rng = np.random.default_rng(4)
    responses = rng.uniform(2.5, 9.0, (6, 5)).astype(np.float32)
    responses[rng.uniform(size=responses.shape) < 0.3] = np.nan
    threshold = 5.0
    out = foci_descriptor(torch.as_tensor(responses), threshold).numpy()
    for row, got in zip(responses, out):  # brute force
        above = [r for r in row if not math.isnan(r) and r >= threshold]
        np.testing.assert_allclose(got, [math.log1p(len(above)), math.log1p(sum(above))], rtol=1e-6)
    assert np.all(foci_descriptor(torch.as_tensor(responses), float("inf")).numpy() == 0.0)


def test_candidates_and_threshold_from_the_properties():
    cases = [{"small_foci": {"candidates": [{"response": r, "world_mm": [0, 0, i]} for i, r in enumerate(rs)],
                             "decoys": ds}} for rs, ds in (([3.0, 8.0], [3.1, 4.0]), ([6.0], [2.6, 5.5, 7.0]), ([], []))]
    np.testing.assert_array_equal(candidate_responses(cases[0], 4, "a"), [8.0, 3.0, np.nan, np.nan])
    threshold = fit_foci_threshold(cases, ["a", "b", "c"], SECTION)
    # 0.5 decoys per case over 3 cases: one decoy (the highest, 7.0) may stay above
    assert threshold == decoy_threshold([[3.1, 4.0], [2.6, 5.5, 7.0], []], 0.5, 2.5) and 5.5 < threshold <= 5.5 + 1e-9
    assert [c["response"] for c in foci_above(cases[0], threshold, "a")] == [8.0]
    with pytest.raises(ValueError, match="case x.*re-run glmil_preprocess"):
        candidate_responses({}, 4, "x")


# ---------------------------------------------------------------------- augmentation
def test_intensity_augmentation_leaves_the_foci_channel_and_the_mask_alone():
    from glmil_auto.training.data_augmentation.augmentation import DEFAULT_PROBABILITIES, get_training_transforms

    plans = {"num_input_channels": 3, "preprocessing": {"small_foci": dict(SECTION)},
             "training": {"augmentation": {
                 "global": {"rotation_rad": [[0, 0]] * 3, "scale": [1.0, 1.0], "mirror_axes": []},
                 "local": {"rotation_rad": [[0, 0]] * 3, "scale": [1.0, 1.0], "mirror_axes": []},
                 "intensity": {"gaussian_noise_variance": [0.1, 0.2], "gaussian_blur_sigma": [0.5, 1.0],
                               "brightness_multiplicative": [0.7, 1.3], "contrast": [0.65, 1.5],
                               "low_resolution_zoom": [0.5, 1.0], "gamma": [0.7, 1.5]}}}}
    everything = {k: 1.0 for k in DEFAULT_PROBABILITIES if k not in ("mirror", "rotation", "scale")}
    transforms = get_training_transforms(plans, {**everything, "mirror": 0.0, "rotation": 0.0, "scale": 0.0,
                                                 "instance_dropout": 0.0})
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(2, 4, 12, 12, 12)).astype(np.float32)
    volume[:, 2] = np.abs(volume[:, 2])  # foci
    volume[:, 3] = (rng.uniform(size=(2, 12, 12, 12)) > 0.8)  # mask
    batch = {"global": volume.copy(), "instances": rng.normal(size=(2, 1, 1, 3, 6, 6, 6)).astype(np.float32),
             "instance_mask": np.ones((2, 1), bool), "instance_descriptors": np.zeros((2, 1, 5), np.float32),
             "clinical_values": np.zeros((2, 1), np.float32), "clinical_categories": np.zeros((2, 0), np.int64)}
    np.random.seed(0)
    out = transforms(**copy.deepcopy(batch))
    np.testing.assert_array_equal(out["global"][:, 2:], volume[:, 2:])  # foci and mask untouched
    assert not np.allclose(out["global"][:, :2], volume[:, :2])  # the images were augmented


# ---------------------------------------------------------------------- network
def foci_network(use_small_foci: bool, seed: int = 0):
    from glmil_auto.model import build_network
    from test_branch_learning import tiny_plans

    plans = tiny_plans(patch=8, grid=16)
    plans["preprocessing"]["small_foci"] = {**SECTION, "max_candidates": 6}
    torch.manual_seed(seed)
    network = build_network(plans, use_small_foci=use_small_foci).eval()
    network.foci_threshold.fill_(4.0)
    for head in network.heads.modules():  # non-zero heads, so the fusion's inputs reach the output
        if isinstance(head, torch.nn.Linear):
            torch.nn.init.normal_(head.weight, std=0.5)
    network.offset.weight.normal_()
    return network


def foci_batch(seed: int, foci_scale: float = 1.0, responses: float = 6.0):
    g = torch.Generator().manual_seed(seed)
    volume = torch.randn(3, 3, 16, 16, 16, generator=g)  # [image, foci, mask]
    volume[:, 1] = volume[:, 1].abs() * foci_scale
    volume[:, 2] = (volume[:, 2] > 1.0).float()
    candidates = torch.full((3, 6), float("nan"))
    candidates[:, :3] = torch.tensor([responses, 3.0, 5.0])
    return {"global": volume, "instances": torch.randn(3, 2, 1, 2, 8, 8, 8, generator=g),
            "instance_mask": torch.tensor([[True, True], [True, False], [False, False]]),
            "instance_descriptors": torch.randn(3, 2, 5, generator=g), "clinical_values": torch.randn(3, 1, generator=g),
            "clinical_categories": torch.zeros(3, 0, dtype=torch.long), "foci_responses": candidates}


def test_no_foci_channel_ignores_the_channel_and_the_candidates():
    off, on = foci_network(False), foci_network(True)
    assert off.global_encoder.encoder.stages[0].conv1.in_channels == 3  # [image, foci, mask]: the same shapes
    with torch.no_grad():
        base, changed = foci_batch(1), foci_batch(1, foci_scale=5.0, responses=9.0)
        for name in base:
            if name not in ("global", "foci_responses"):
                changed[name] = base[name]
        a, b = off(base), off(changed)
        c, d = on(base), on(changed)
    for name in a.logits:
        torch.testing.assert_close(a.logits[name], b.logits[name])  # neither the channel nor the descriptor counts
        assert not torch.allclose(c.logits[name], d.logits[name])  # with both, the output moves
    z_on = on.offset_design(base)
    assert torch.all(off.offset_design(base)[:, -2:] == 0)
    np.testing.assert_allclose(z_on[:, -2:].numpy(), [[math.log1p(2), math.log1p(11.0)]] * 3, rtol=1e-6)


def test_shap_treats_the_foci_pair_as_one_feature_and_adds_up():
    from glmil_auto.model.shap_explanations import FOCI_FEATURE, explanation_inputs, shap_values

    network = foci_network(True)
    clinical = [{"name": "age", "type": "numeric", "mean": 60.0, "std": 10.0}]
    explained = explanation_inputs(network, foci_batch(2, responses=9.0), ["a", "b", "c"])
    background_batch = foci_batch(3, responses=4.5)
    background_batch["foci_responses"][:, 2] = float("nan")  # fewer foci above the threshold than the explained cases
    background = explanation_inputs(network, background_batch, ["x", "y", "z"])
    result = shap_values(network, explained, background, clinical)
    assert result.feature_names.count(FOCI_FEATURE) == 1 and len(result.feature_names) == 6  # age, 2 lesion, foci, 2 images
    np.testing.assert_allclose(result.base_values + result.values.sum(axis=1), result.outputs, atol=1e-4)
    foci = result.feature_names.index(FOCI_FEATURE)
    assert np.all(np.abs(result.values[:, foci, :]) > 1e-4)  # the foci moved the output, and SHAP says so
