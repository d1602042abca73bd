"""The planner's choices respond to the data and to the device, and only to them."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from glmil_auto.experiment_planning import planning_rules as rules
from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.planners import GLMILPlanner, find_planner
from glmil_auto.experiment_planning.plans_io import plans_hash

CPU = DeviceProfile("cpu", "cpu", 4.0, 2)
GPU = DeviceProfile("cuda", "test-gpu", 80.0, 16)


def fingerprint(spacing=(1.0, 1.0, 1.0), shape=(180, 220, 180), lesion_mm=10.0, lesions_per_case=3, n_cases=40,
                channels=("T1c", "FLAIR")) -> dict:
    """A fingerprint with the fields the planner reads, for controlled experiments."""
    rng = np.random.default_rng(0)
    cases = {}
    for i in range(n_cases):
        jitter = 1 + 0.02 * rng.standard_normal(3)
        cases[f"c{i}"] = {"spacing_canonical": list(np.asarray(spacing) * jitter), "shape_canonical": list(shape)}
    extent = np.asarray(shape) * np.asarray(spacing) * 0.8
    return {
        "dataset_name": "Dataset999_Test",
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "num_training_cases": n_cases,
        "foreground_intensity_properties_per_channel": {
            str(i): {"mean": 40.0, "std": 300.0, "percentile_00_5": -900.0, "percentile_99_5": 1500.0} for i in range(len(channels))
        },
        "cases": cases,
        "summary": {
            "spacing_canonical": {"median": list(spacing)},
            "head_extent_mm": {"percentile_95": list(extent)},
            "lesion_extent_mm": {"percentile_95": [lesion_mm] * 3},
            "lesion_diameter_mm": {"percentile_95": lesion_mm},
            "lesions_per_case": {"percentile_95": lesions_per_case},
        },
        "endpoints": {
            "local_failure": {"type": "binary", "prevalence": 0.25},
            "leptomeningeal_failure": {"type": "binary", "prevalence": 0.05},
            "os": {"type": "survival", "event_rate": 0.7},
        },
    }


def plan(fp: dict, device: DeviceProfile = CPU, planner: type[GLMILPlanner] = GLMILPlanner) -> dict:
    return planner(fp, {}, device).plan()


def test_anisotropy_rule():
    iso = [[1.0, 1.0, 1.0]] * 5
    assert rules.anisotropic_target_spacing(iso, [[100, 100, 100]] * 5) == [1.0, 1.0, 1.0]
    thick = [[5.0, 0.9, 0.9]] * 8 + [[1.0, 0.9, 0.9]] * 2
    shapes = [[30, 256, 256]] * 10
    target = rules.anisotropic_target_spacing(thick, shapes)
    # the median (5 mm) would throw away the thin-slice cases: the 10th percentile is used instead
    assert target[0] == pytest.approx(np.percentile([5.0] * 8 + [1.0] * 2, 10)) and target[1:] == [0.9, 0.9]
    # never finer than the in-plane spacing
    very_thin = [[5.0, 0.9, 0.9]] * 8 + [[0.5, 0.9, 0.9]] * 2
    assert rules.anisotropic_target_spacing(very_thin, shapes)[0] == pytest.approx(0.9 + 1e-5)
    # many voxels along the thick axis: not treated as anisotropic
    assert rules.anisotropic_target_spacing(thick, [[200, 256, 256]] * 10)[0] == pytest.approx(5.0)


def test_larger_lesions_get_larger_patches_in_mm():
    small = plan(fingerprint(lesion_mm=8.0))["preprocessing"]["local"]
    large = plan(fingerprint(lesion_mm=30.0))["preprocessing"]["local"]
    fov = lambda p: np.asarray(p["patch_size"]) * np.asarray(p["target_spacing"])  # noqa: E731
    assert np.all(fov(large) > fov(small))
    assert np.all(fov(large) >= 30.0) and np.all(fov(small) >= 8.0)


def test_anisotropic_cohort_gets_anisotropic_spacing_and_in_plane_augmentation():
    plans = plan(fingerprint(spacing=(5.0, 0.9, 0.9), shape=(28, 240, 240)))
    local = plans["preprocessing"]["local"]["target_spacing"]
    assert local[0] > 3 * local[1] and local[1] == pytest.approx(local[2], rel=0.05)
    augmentation = plans["training"]["augmentation"]["local"]
    assert augmentation["dummy_2d"] is True and augmentation["thick_axis"] == 0
    assert augmentation["rotation_rad"][1] == [0.0, 0.0] and augmentation["rotation_rad"][0][1] > 0
    iso = plan(fingerprint())["training"]["augmentation"]["local"]
    assert iso["dummy_2d"] is False


def test_smaller_device_budget_gets_smaller_batch_or_input():
    fp = fingerprint()
    sizes = []
    for memory in (8.0, 1.0, 0.25, 0.05):
        plans = plan(fp, DeviceProfile("cpu", "cpu", memory, 2))
        sizes.append((plans["training"]["batch_size"], int(np.prod(plans["preprocessing"]["global"]["input_shape"]))))
        assert plans["estimates"]["activation_bytes_per_bag"] * plans["training"]["batch_size"] <= max(
            plans["estimates"]["memory_budget_bytes"], plans["estimates"]["activation_bytes_per_bag"] * 4)
    work = [b * v for b, v in sizes]
    assert work == sorted(work, reverse=True) and work[0] > work[-1]
    assert sizes[-1][1] < sizes[0][1]  # the smallest budget also shrinks the global input


def test_gpu_profile_plans_a_bigger_model():
    cpu, gpu = plan(fingerprint(), CPU), plan(fingerprint(), GPU)
    assert np.prod(gpu["preprocessing"]["global"]["input_shape"]) > np.prod(cpu["preprocessing"]["global"]["input_shape"])
    assert max(gpu["model"]["global_encoder"]["features_per_stage"]) > max(cpu["model"]["global_encoder"]["features_per_stage"])
    assert gpu["training"]["trainer_defaults"]["embedding_dim"] > cpu["training"]["trainer_defaults"]["embedding_dim"]


def test_global_shape_is_divisible_by_its_pooling():
    for memory in (8.0, 0.3):
        plans = plan(fingerprint(), DeviceProfile("cpu", "cpu", memory, 2))
        pools = plans["model"]["global_encoder"]["n_pools"]
        shape = plans["preprocessing"]["global"]["input_shape"]
        assert all(s % 2**pools == 0 for s in shape) and min(shape) // 2**pools >= 4
        assert len(plans["model"]["global_encoder"]["features_per_stage"]) == pools + 1


def test_normalisation_instances_and_loss_weights_follow_the_data():
    plans = plan(fingerprint(channels=("CT", "T1c"), lesions_per_case=6))
    norm = plans["preprocessing"]["normalisation"]
    assert norm["0"]["scheme"] == "ct" and norm["0"]["clip"] == [-900.0, 1500.0]
    assert norm["1"] == {"scheme": "zscore_brain"}
    assert plans["preprocessing"]["local"]["max_instances"] == 6
    assert plan(fingerprint(lesions_per_case=40))["preprocessing"]["local"]["max_instances"] == GLMILPlanner.max_instances_cap["cpu"]
    weights = plans["training"]["losses"]["positive_class_weights"]
    assert weights["local_failure"] == pytest.approx(3.0) and weights["leptomeningeal_failure"] == 10.0
    assert "os" not in weights and plans["num_input_channels"] == 3


def test_identical_data_identical_plans_and_hash_tracks_preprocessing():
    a, b = plan(fingerprint()), plan(copy.deepcopy(fingerprint()))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert plans_hash(a) == plans_hash(b)
    changed = copy.deepcopy(a)
    changed["training"]["batch_size"] += 1
    assert plans_hash(changed) == plans_hash(a)  # training choices do not invalidate preprocessing
    changed["preprocessing"]["local"]["patch_size"][0] += 8
    assert plans_hash(changed) != plans_hash(a)


def test_planner_variants_are_found_by_name():
    assert find_planner("GLMILPlanner") is GLMILPlanner
    wide = plan(fingerprint(), planner=find_planner("GLMILPlannerWideContext"))
    assert wide["preprocessing"]["local"]["scales"] == [1.0, 2.0, 4.0] and wide["planner"] == "GLMILPlannerWideContext"
    with pytest.raises(ValueError, match="unknown planner 'Nope'; available: GLMILPlanner"):
        find_planner("Nope")
