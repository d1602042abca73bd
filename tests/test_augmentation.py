"""Augmentation of GL-MIL batches: contracts (shapes, dtypes, masks, padding), each transform, and
the anisotropic (dummy 2D) case. Batches are built by hand, the plans section by the planner."""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np
import pytest
from scipy import ndimage

from glmil_auto.experiment_planning.planners.default_planner import GLMILPlanner
from glmil_auto.training.data_augmentation.augmentation import (
    DEFAULT_PROBABILITIES,
    BrightnessMultiplicativeTransform,
    ContrastTransform,
    GammaTransform,
    GaussianBlurTransform,
    GaussianNoiseTransform,
    InstanceDropoutTransform,
    LowResolutionTransform,
    MirrorTransform,
    SpatialTransform,
    get_training_transforms,
    get_validation_transforms,
)

C_IMAGES = 2
SCALES = 2
GLOBAL_SHAPE = (12, 14, 10)
PATCH = (6, 8, 8)
ALL_ONE = {k: 1.0 for k in DEFAULT_PROBABILITIES if k != "mirror"}


def planned(global_spacing=(2.0, 2.0, 2.0), local_spacing=(1.0, 1.0, 1.0), max_instances: int = 4) -> dict[str, Any]:
    """A plans dict whose augmentation section is what the planner writes."""
    augmentation = GLMILPlanner.plan_augmentation(
        None, {"target_spacing": list(global_spacing)},  # type: ignore[arg-type]  # the rule uses no state
        {"target_spacing": list(local_spacing), "max_instances": max_instances})
    return {"training": {"augmentation": augmentation}}


def soft_blob(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    centre = [rng.uniform(0.3, 0.7) * (s - 1) for s in shape]
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return np.exp(-r2 / 6.0).astype(np.float32)


def smooth_image(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    image = ndimage.gaussian_filter(rng.normal(size=shape), 1.0) * 3
    return (image + np.linspace(-1, 1, shape[-1])).astype(np.float32)


def make_batch(bags: tuple[int, ...] = (2, 0, 3), seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    b, n = len(bags), max(1, max(bags))
    global_volumes = np.zeros((b, C_IMAGES + 1, *GLOBAL_SHAPE), np.float32)
    instances = np.zeros((b, n, SCALES, C_IMAGES + 1, *PATCH), np.float32)
    mask = np.zeros((b, n), bool)
    descriptors = np.zeros((b, n, 2), np.float32)
    for i, size in enumerate(bags):
        for c in range(C_IMAGES):
            global_volumes[i, c] = smooth_image(GLOBAL_SHAPE, rng)
        global_volumes[i, -1] = soft_blob(GLOBAL_SHAPE, rng)
        for j in range(size):
            for s in range(SCALES):
                for c in range(C_IMAGES):
                    instances[i, j, s, c] = smooth_image(PATCH, rng)
                instances[i, j, s, -1] = soft_blob(PATCH, rng)
            descriptors[i, j] = (rng.uniform(1, 8), rng.uniform(0, 6))
        mask[i, :size] = True
    return {"global": global_volumes, "instances": instances, "instance_mask": mask,
            "instance_descriptors": descriptors, "clinical_values": rng.normal(size=(b, 3)),
            "clinical_categories": np.zeros((b, 1), np.int64), "lf": np.zeros(b, np.float32),
            "case_ids": [f"c{i}" for i in range(b)]}


def check_contract(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Shapes, dtypes, masks in [0, 1], finite values, padding (and dropped instances) all zero."""
    for key in ("global", "instances", "instance_descriptors"):
        assert after[key].shape == before[key].shape and after[key].dtype == np.float32, key
        assert after[key].flags.c_contiguous and np.isfinite(after[key]).all(), key
    assert after["instance_mask"].dtype == bool and after["clinical_categories"].dtype == np.int64
    assert after["case_ids"] == before["case_ids"]
    for masks in (after["global"][:, -1], after["instances"][:, :, :, -1]):
        assert masks.min() >= 0.0 and masks.max() <= 1.0
    padding = ~after["instance_mask"]
    assert not after["instances"][padding].any() and not after["instance_descriptors"][padding].any()
    assert not (after["instance_mask"] & ~before["instance_mask"]).any()  # nothing is ever added


# ---------------------------------------------------------------------- the pipeline
def test_transforms_take_their_ranges_from_the_plans():
    plans = planned(local_spacing=(6.0, 1.0, 1.0))
    augmentation = plans["training"]["augmentation"]
    augmentation["intensity"]["gamma"] = [0.9, 1.1]
    augmentation["global"]["scale"] = [0.95, 1.05]
    augmentation["instance_dropout_probability"] = 0.3
    transforms = get_training_transforms(plans).transforms
    spatial = {t.target: t for t in transforms if isinstance(t, SpatialTransform)}
    assert spatial["global"].scale == (0.95, 1.05) and not spatial["global"].dummy_2d
    assert spatial["instances"].dummy_2d and spatial["instances"].thick_axis == 0
    assert spatial["instances"].rotation_rad[0] == (-math.pi, math.pi)
    assert all(t.gamma == (0.9, 1.1) for t in transforms if isinstance(t, GammaTransform))
    assert [t.p for t in transforms if isinstance(t, InstanceDropoutTransform)] == [0.3]
    assert all(t.ignore_axes == (0,) for t in transforms if isinstance(t, LowResolutionTransform)
               and t.target == "instances")


@pytest.mark.parametrize("probabilities", [None, ALL_ONE], ids=["default", "all_forced"])
@pytest.mark.parametrize("anisotropic", [False, True])
def test_training_pipeline_keeps_the_batch_contract(probabilities, anisotropic):
    plans = planned(local_spacing=(6.0, 1.0, 1.0) if anisotropic else (1.0, 1.0, 1.0))
    transforms = get_training_transforms(plans, probabilities)
    np.random.seed(0)
    for seed in range(6 if probabilities is None else 2):
        batch = make_batch(seed=seed)
        after = transforms(**copy.deepcopy(batch))
        check_contract(batch, after)
        assert after["instance_mask"][:, :].sum(1).min(initial=0) >= 0
        assert (after["instance_mask"].sum(1) >= np.minimum(batch["instance_mask"].sum(1), 1)).all()


def test_forced_pipeline_changes_every_real_sample():
    batch = make_batch()
    np.random.seed(1)
    after = get_training_transforms(planned(), ALL_ONE | {"instance_dropout": 0.0})(**copy.deepcopy(batch))
    for i in range(3):
        assert not np.allclose(after["global"][i, :-1], batch["global"][i, :-1])
    real = batch["instance_mask"]
    for i, j in zip(*np.nonzero(real)):
        assert not np.allclose(after["instances"][i, j], batch["instances"][i, j])


def test_validation_transforms_only_convert():
    batch = make_batch()
    batch["global"] = batch["global"].astype(np.float64)[..., ::1]
    batch["instances"] = np.asfortranarray(batch["instances"])
    after = get_validation_transforms(planned())(**copy.deepcopy(batch))
    check_contract(batch, after)
    np.testing.assert_array_equal(after["global"], batch["global"].astype(np.float32))
    np.testing.assert_array_equal(after["instances"], batch["instances"])
    assert after["clinical_values"].dtype == np.float32


def test_same_random_state_same_augmentation():
    transforms = get_training_transforms(planned(), ALL_ONE)
    results = []
    for _ in range(2):
        np.random.seed(42)
        results.append(transforms(**make_batch()))
    for key in ("global", "instances", "instance_mask"):
        np.testing.assert_array_equal(results[0][key], results[1][key])


def test_probability_overrides_are_checked():
    with pytest.raises(ValueError, match="unknown"):
        get_training_transforms(planned(), {"rotaton": 1.0})
    with pytest.raises(ValueError, match="mirroring"):
        get_training_transforms(planned(), {"mirror": 0.3})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        get_training_transforms(planned(), {"gamma": 2.0})
    no_mirror = get_training_transforms(planned(), {"mirror": 0.0}).transforms
    assert not any(isinstance(t, MirrorTransform) for t in no_mirror)


# ---------------------------------------------------------------------- every transform
INTENSITY = {"brightness_multiplicative": [0.75, 1.25], "contrast": [0.75, 1.25], "gamma": [0.7, 1.5],
             "gaussian_noise_variance": [0.0, 0.1], "gaussian_blur_sigma": [0.5, 1.0], "low_resolution_zoom": [0.5, 1.0]}
FACTORIES: dict[str, Callable[[str], Any]] = {
    "rotation": lambda t: SpatialTransform(t, [[-0.5, 0.5]] * 3, [1.0, 1.0], p_rotation=1, p_scale=0),
    "scale": lambda t: SpatialTransform(t, [[0.0, 0.0]] * 3, [0.7, 1.4], p_rotation=0, p_scale=1),
    "noise": lambda t: GaussianNoiseTransform(t, [0.05, 0.1], 1),
    "blur": lambda t: GaussianBlurTransform(t, INTENSITY["gaussian_blur_sigma"], p_per_sample=1, p_per_channel=1),
    "brightness": lambda t: BrightnessMultiplicativeTransform(t, INTENSITY["brightness_multiplicative"], 1),
    "contrast": lambda t: ContrastTransform(t, INTENSITY["contrast"], 1),
    "low_resolution": lambda t: LowResolutionTransform(t, [0.5, 0.6], p_per_sample=1, p_per_channel=1),
    "gamma": lambda t: GammaTransform(t, INTENSITY["gamma"], False, 1),
    "gamma_inverted": lambda t: GammaTransform(t, INTENSITY["gamma"], True, 1),
    "mirror": lambda t: MirrorTransform(t, [2]),
}
SPATIAL = {"rotation", "scale", "mirror"}


@pytest.mark.parametrize("target", ["global", "instances"])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_each_transform_changes_real_data_only(name, target):
    transform = FACTORIES[name](target)
    np.random.seed(3)
    changed = False
    for attempt in range(8):  # mirroring flips with p = 0.5; everything else changes at once
        batch = make_batch(seed=attempt)
        after = transform(**copy.deepcopy(batch))
        check_contract(batch, after)
        np.testing.assert_array_equal(after["instance_mask"], batch["instance_mask"])
        other = "instances" if target == "global" else "global"
        np.testing.assert_array_equal(after[other], batch[other])  # routed to its target only
        if target == "global":
            new, old = after["global"], batch["global"]
        else:
            new, old = after["instances"][batch["instance_mask"]], batch["instances"][batch["instance_mask"]]
        channels = slice(None) if name in SPATIAL else slice(0, -1)
        changed = changed or not np.allclose(new[..., channels, :, :, :], old[..., channels, :, :, :], atol=1e-4)
        if name not in SPATIAL:  # intensity: never the lesion mask
            np.testing.assert_array_equal(new[..., -1, :, :, :], old[..., -1, :, :, :])
        if changed:
            break
    assert changed, f"{name} did not change the {target} data"


def test_rotation_moves_the_lesion_mask_with_the_image():
    batch = make_batch(bags=(1,))
    np.random.seed(5)
    after = SpatialTransform("global", [[0.6, 0.6], [0.0, 0.0], [0.0, 0.0]], [1.0, 1.0], p_rotation=1,
                             p_scale=0)(**copy.deepcopy(batch))
    mask_before, mask_after = batch["global"][0, -1], after["global"][0, -1]
    assert not np.allclose(mask_before, mask_after, atol=1e-3)
    assert mask_after.sum() == pytest.approx(mask_before.sum(), rel=0.1)  # moved, not lost


def test_mirroring_flips_only_left_right_and_whole_samples():
    batch = make_batch()
    np.random.seed(0)
    flips = 0
    for _ in range(6):
        after = MirrorTransform("instances", [2])(**copy.deepcopy(batch))
        for i, j in zip(*np.nonzero(batch["instance_mask"])):
            old, new = batch["instances"][i, j], after["instances"][i, j]
            if np.array_equal(new, old[..., ::-1]):
                flips += 1
            else:
                np.testing.assert_array_equal(new, old)
    assert 0 < flips < 30


# ---------------------------------------------------------------------- instance dropout
def test_instance_dropout_never_empties_a_bag():
    np.random.seed(0)
    always = InstanceDropoutTransform(1.0)
    batch = make_batch(bags=(1, 2, 5, 0))
    after = always(**copy.deepcopy(batch))
    np.testing.assert_array_equal(after["instance_mask"].sum(1), [1, 1, 1, 0])
    check_contract(batch, after)
    for i, j in zip(*np.nonzero(after["instance_mask"])):
        np.testing.assert_array_equal(after["instances"][i, j], batch["instances"][i, j])  # kept ones untouched
    dropped = 0
    half = InstanceDropoutTransform(0.5)
    for seed in range(50):
        batch = make_batch(bags=(1, 2, 5), seed=seed)
        counts = half(**batch)["instance_mask"].sum(1)
        assert counts[0] == 1 and (counts >= 1).all()
        dropped += 5 - counts[2]
    assert 0.35 < dropped / 250 < 0.65


# ---------------------------------------------------------------------- anisotropy
def along(axis: int, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An array of ``shape`` that varies only along ``axis``."""
    view = [1, 1, 1]
    view[axis] = shape[axis]
    return np.broadcast_to(values.reshape(view), shape).astype(np.float32)


def instance_batch(volume: np.ndarray) -> dict[str, Any]:
    """One case, one instance, every scale and channel (mask channel in [0, 1]) equal to ``volume``."""
    instances = np.broadcast_to(volume, (1, 1, SCALES, C_IMAGES + 1, *volume.shape)).copy()
    instances[:, :, :, -1] /= max(1.0, float(volume.max()))
    return {"instances": instances, "instance_mask": np.ones((1, 1), bool)}


@pytest.mark.parametrize("thick_axis", [0, 2])
def test_dummy_2d_rotates_only_in_plane(thick_axis):
    spacing = [1.0, 1.0, 1.0]
    spacing[thick_axis] = 6.0
    local = planned(local_spacing=spacing)["training"]["augmentation"]["local"]
    assert local["dummy_2d"] and local["thick_axis"] == thick_axis
    assert all(r == [0.0, 0.0] for a, r in enumerate(local["rotation_rad"]) if a != thick_axis)
    rotate = SpatialTransform("instances", local["rotation_rad"], [1.0, 1.0], True, thick_axis, p_rotation=1, p_scale=0)
    shape = (8, 10, 12)
    profile = np.linspace(0.0, 1.0, shape[thick_axis]) ** 2

    # a volume that varies only along the thick axis is unchanged by rotation and scaling, even with
    # out-of-plane ranges given: nothing mixes slices
    np.random.seed(0)
    flat = instance_batch(along(thick_axis, profile, shape))
    rotate_and_scale = SpatialTransform("instances", [[-0.5, 0.5]] * 3, [0.7, 1.4], True, thick_axis,
                                        p_rotation=1, p_scale=1)
    for transform in (rotate, rotate_and_scale):
        out = transform(**copy.deepcopy(flat))["instances"]
        np.testing.assert_allclose(out, flat["instances"], atol=1e-5)
    in_3d = SpatialTransform("instances", [[-0.5, 0.5]] * 3, [0.7, 1.4], False, p_rotation=1, p_scale=1)
    assert not np.allclose(in_3d(**copy.deepcopy(flat))["instances"], flat["instances"], atol=1e-3)

    # slice k = (k + 1) * pattern: every slice gets the same in-plane rotation, scaled by its own factor
    inplane = [s for a, s in enumerate(shape) if a != thick_axis]
    pattern = np.zeros(inplane, np.float32)
    pattern[2:5, 3:9] = 1.0  # off-centre and asymmetric, so any rotation shows
    pattern = np.expand_dims(pattern, thick_axis)
    factors = along(thick_axis, np.arange(1, shape[thick_axis] + 1, dtype=np.float32), shape)
    for _ in range(5):
        batch = instance_batch(pattern * factors)
        out = rotate(**copy.deepcopy(batch))["instances"][0, 0, 0, 0]
        per_slice = out / factors
        reference = np.take(per_slice, [0], axis=thick_axis)
        np.testing.assert_allclose(per_slice, np.broadcast_to(reference, shape), atol=1e-5)
        if not np.allclose(out, batch["instances"][0, 0, 0, 0], atol=1e-3):
            break
    else:
        pytest.fail("the in-plane pattern was never rotated")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rotation_ranges_are_per_array_axis(axis):
    """``rotation_rad[i]`` rotates around array axis i: a volume varying only along axis i is
    unchanged, one varying along another axis is not (3D mode)."""
    rotation = [[0.0, 0.0]] * 3
    rotation[axis] = [0.5, 0.5]
    rotate = SpatialTransform("instances", rotation, [1.0, 1.0], p_rotation=1, p_scale=0)
    shape = (10, 10, 10)
    ramp = np.linspace(0.0, 1.0, 10)
    np.random.seed(0)
    same = instance_batch(along(axis, ramp, shape))
    np.testing.assert_allclose(rotate(**copy.deepcopy(same))["instances"], same["instances"], atol=1e-5)
    other = instance_batch(along((axis + 1) % 3, ramp, shape))
    assert not np.allclose(rotate(**copy.deepcopy(other))["instances"], other["instances"], atol=1e-3)


def test_dummy_2d_low_resolution_keeps_the_thick_axis():
    shape = (8, 10, 12)
    profile = np.linspace(-1.0, 1.0, 8) ** 3
    batch = instance_batch(along(0, profile, shape))
    np.random.seed(0)
    out = LowResolutionTransform("instances", [0.5, 0.5], True, 0, p_per_sample=1, p_per_channel=1)(**batch)
    np.testing.assert_allclose(out["instances"][0, 0, :, :-1, :, 5, 6], np.broadcast_to(profile, (SCALES, C_IMAGES, 8)),
                               atol=1e-5)


# ---------------------------------------------------------------------- torch resampling vs batchgenerators
@pytest.mark.parametrize("thick_axis", [None, 0, 2])
def test_spatial_transform_matches_batchgenerators_augment_spatial(thick_axis):
    """Same seed, same draws, same output as batchgenerators' own (scipy) ``augment_spatial`` with
    linear interpolation and a replicated border, for 3D and for slice-wise (dummy 2D) rotation."""
    from batchgenerators.augmentations.spatial_transformations import augment_spatial

    rng = np.random.default_rng(0)
    shape = (9, 10, 12)
    samples = np.stack([np.stack([smooth_image(shape, rng) for _ in range(2)] + [soft_blob(shape, rng)])
                        for _ in range(8)])[:, None]  # (M=8, G=1, C+1=3, *shape)
    rotation = [[-0.6, 0.6], [-0.4, 0.4], [-0.3, 0.3]]
    dummy_2d = thick_axis is not None
    transform = SpatialTransform("global", rotation, [0.7, 1.4], dummy_2d, thick_axis, p_rotation=0.6, p_scale=0.6)
    np.random.seed(11)
    ours = transform.augment(samples.copy())[:, 0]

    np.random.seed(11)
    data = samples[:, 0]
    common = dict(do_elastic_deform=False, do_rotation=True, do_scale=True, scale=(0.7, 1.4), border_mode_data="nearest",
                  order_data=1, random_crop=False, p_rot_per_sample=0.6, p_scale_per_sample=0.6)
    if dummy_2d:
        moved = np.moveaxis(data, 2 + thick_axis, 2)
        slices = np.ascontiguousarray(moved).reshape(len(data), -1, *moved.shape[3:])
        out, _ = augment_spatial(slices, None, moved.shape[3:], angle_x=rotation[thick_axis], **common)
        reference = np.moveaxis(out.reshape(moved.shape), 2, 2 + thick_axis)
    else:
        reference, _ = augment_spatial(data, None, shape, angle_x=rotation[0], angle_y=rotation[1],
                                       angle_z=rotation[2], **common)
    changed = [not np.array_equal(ours[i], data[i]) for i in range(len(data))]
    assert 0 < sum(changed) < len(data)  # some samples drawn a transform, some left alone
    np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_low_resolution_keeps_constants_and_loses_detail():
    from glmil_auto.training.data_augmentation.torch_resampling import simulate_low_resolution

    constant = np.full((2, 8, 10, 12), 3.5, np.float32)
    np.testing.assert_allclose(simulate_low_resolution(constant, 0.5), constant, atol=1e-6)
    checker = (np.indices((8, 10, 12)).sum(0) % 2).astype(np.float32)[None]
    blurred = simulate_low_resolution(checker, 0.5)
    assert blurred.shape == checker.shape and blurred.std() < 0.6 * checker.std()
    np.testing.assert_array_equal(simulate_low_resolution(checker, 1.0), checker)  # zoom 1: unchanged
