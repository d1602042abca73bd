"""The planner's choices respond to the data and to the device, and only to them."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from glmil_auto.experiment_planning import planning_rules as rules
from glmil_auto.experiment_planning.device_profile import DeviceProfile, detect_device_profile
from glmil_auto.experiment_planning.planners import GLMILPlanner, find_planner
from glmil_auto.experiment_planning.planners.default_planner import PlanningError
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
            "lesion_diameter_mm": {"percentile_05": lesion_mm / 3, "median": lesion_mm / 2, "percentile_95": lesion_mm},
            "lesions_per_case": {"mean": lesions_per_case / 2, "median": lesions_per_case / 2,
                                 "percentile_95": lesions_per_case},
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
    for memory in (8.0, 0.1, 0.03, 0.015):  # GiB
        plans = plan(fp, DeviceProfile("cpu", "cpu", memory, 2))
        estimates = plans["estimates"]
        assert estimates["training_memory_bytes"]["total_bytes"] <= estimates["memory_budget_bytes"]
        sizes.append((plans["training"]["batch_size"], int(np.prod(plans["preprocessing"]["global"]["input_shape"]))))
    work = [b * v for b, v in sizes]
    assert work == sorted(work, reverse=True) and work[0] > work[-1]
    assert sizes[-1][1] < sizes[0][1]  # the smallest budget also shrinks the global input
    assert sizes[-1][0] < GLMILPlanner.min_batch_size  # the batch of 4 is not forced where it does not fit


def test_gpu_profile_plans_a_bigger_model():
    cpu, gpu = plan(fingerprint(), CPU), plan(fingerprint(), GPU)
    assert np.prod(gpu["preprocessing"]["global"]["input_shape"]) > np.prod(cpu["preprocessing"]["global"]["input_shape"])
    features = lambda p: p["model"]["global_encoder"]["arch_kwargs"]["features_per_stage"]  # noqa: E731
    assert max(features(gpu)) > max(features(cpu))
    assert gpu["training"]["trainer_defaults"]["embedding_dim"] > cpu["training"]["trainer_defaults"]["embedding_dim"]


def test_global_shape_is_divisible_by_its_pooling():
    for memory in (8.0, 0.3):
        plans = plan(fingerprint(), DeviceProfile("cpu", "cpu", memory, 2))
        pools = plans["model"]["global_encoder"]["n_pools"]
        shape = plans["preprocessing"]["global"]["input_shape"]
        assert all(s % 2**pools == 0 for s in shape) and min(shape) // 2**pools >= 4
        assert len(plans["model"]["global_encoder"]["arch_kwargs"]["features_per_stage"]) == pools + 1


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


def test_too_small_a_device_is_a_clear_error():
    with pytest.raises(PlanningError, match=r"no configuration fits cpu with 0.002 GiB: the smallest one .* needs "
                                            r"[0-9.]+ GiB .*--device-memory-gb"):
        plan(fingerprint(), DeviceProfile("cpu", "cpu", 0.002, 2))


def test_instance_budget_counts_lesions_of_a_batch_not_worst_case_bags():
    few, many = plan(fingerprint(lesions_per_case=2)), plan(fingerprint(lesions_per_case=12))
    for plans, (mean, p95) in ((few, (1.0, 2.0)), (many, (6.0, 12.0))):
        training, local = plans["training"], plans["preprocessing"]["local"]
        b, scales = training["batch_size"], len(local["scales"])
        per_batch = training["instance_budget"] // scales
        assert training["instance_budget"] == per_batch * scales
        # the 95th percentile of a batch's lesion count: far below every bag at its 95th percentile
        assert per_batch == min(rules.instances_per_batch(b, mean, p95), b * local["max_instances"]) < b * p95
        assert per_batch >= b * mean and local["max_instances"] == min(int(p95), GLMILPlanner.max_instances_cap["cpu"])
    assert many["training"]["instance_budget"] > few["training"]["instance_budget"]
    assert rules.instances_per_batch(4, 2.0, 8.0) == math.ceil(4 * 2 + 2 * 6)  # n*mean + sqrt(n)*(p95-mean)
    assert rules.instances_per_batch(1, 2.0, 8.0) == 8 and rules.instances_per_batch(4, 2.0, 8.0, "median") == 8
    assert rules.instances_per_batch(4, 0.2, 1.0, "median") == 4 and rules.instances_per_batch(4, 9.0, 9.0, "one") == 4


def test_trainer_defaults_follow_cases_and_events():
    def defaults(n_cases, prevalence, event_rate):
        fp = fingerprint(n_cases=n_cases)
        fp["endpoints"] = {"local_failure": {"type": "binary", "n_known": n_cases,
                                             "n_positive": round(prevalence * n_cases), "prevalence": prevalence},
                           "os": {"type": "survival", "n_known": n_cases, "n_events": round(event_rate * n_cases),
                                  "event_rate": event_rate}}
        plans = plan(fp)
        return plans["training"]["trainer_defaults"], plans["training"]["batch_size"], plans["training"]["cox_memory_size"]

    small, b_small, memory_small = defaults(60, 0.3, 0.7)
    large, b_large, memory_large = defaults(400, 0.3, 0.7)
    rare, _, memory_rare = defaults(400, 0.05, 0.05)
    # an epoch is one pass over a fold's training cases
    assert small["iterations_per_epoch"] == math.ceil(0.8 * 60 / b_small)
    assert large["iterations_per_epoch"] == math.ceil(0.8 * 400 / b_large) > small["iterations_per_epoch"]
    # steps follow the rarest endpoint's events: 18 events -> 180 steps, 120 events -> 600 (the cap)
    steps = lambda d: d["num_epochs"] * d["iterations_per_epoch"]  # noqa: E731
    assert steps(small) == pytest.approx(180, rel=0.25) and steps(large) == pytest.approx(600, rel=0.25)
    assert steps(rare) < steps(large)  # 20 events: overfitting comes sooner
    # the Cox memory holds enough events at a low event rate, never more than a fold's training cases
    assert memory_small == math.ceil(0.8 * 60) and memory_large == 256 and memory_rare == 320
    assert rules.cox_memory_size(10_000, 0.05) == 640


def test_architecture_is_in_the_plans_and_a_variant_planner_swaps_it():
    from glmil_auto.model import build_network
    from glmil_auto.model.global_encoder import MaskGuidedGlobalEncoder
    from glmil_auto.model.memory_measurement import meta_network

    plans = plan(fingerprint(), GPU)
    encoder = plans["model"]["global_encoder"]
    assert encoder["network_class_name"] == "glmil_auto.model.global_encoder.MaskGuidedGlobalEncoder"
    kwargs = encoder["arch_kwargs"]
    assert set(kwargs) == {"features_per_stage", "blocks_per_stage", "first_stride"}
    assert kwargs["blocks_per_stage"] == [1] + [2] * (len(kwargs["features_per_stage"]) - 1)
    assert plans["model"]["local_encoder"]["network_class_name"].endswith("instance_encoder.InstanceEncoder")
    deep = plan(fingerprint(), GPU, find_planner("GLMILPlannerDeepResidual"))
    deep_blocks = deep["model"]["global_encoder"]["arch_kwargs"]["blocks_per_stage"]
    assert sum(deep_blocks) > sum(kwargs["blocks_per_stage"])
    network = meta_network(deep)  # build_network on the meta device (no weights initialised)
    assert isinstance(network.global_encoder, MaskGuidedGlobalEncoder)
    assert [len(stage) if isinstance(stage, torch.nn.Sequential) else 1
            for stage in network.global_encoder.encoder.stages] == deep_blocks
    # plans written before the class names (features directly under the encoder) still build
    old = copy.deepcopy(plan(fingerprint()))
    for branch in ("global_encoder", "local_encoder"):
        entry = old["model"][branch]
        old["model"][branch] = {"n_pools": entry["n_pools"], **entry["arch_kwargs"]}
        old["model"][branch].pop("blocks_per_stage")
    torch.manual_seed(0)
    legacy = build_network(old)
    torch.manual_seed(0)
    current = build_network(plan(fingerprint()))
    assert all(torch.equal(a, b) for a, b in zip(legacy.state_dict().values(), current.state_dict().values()))
    broken = copy.deepcopy(deep)
    broken["model"]["global_encoder"]["network_class_name"] = "glmil_auto.model.nowhere.Encoder"
    with pytest.raises(ValueError, match="cannot find class 'glmil_auto.model.nowhere.Encoder' named in the plans"):
        build_network(broken)


def test_cuda_plans_need_no_gpu_on_the_planning_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device = detect_device_profile("cuda", 24.0)
    assert device.kind == "cuda" and device.memory_gb == 24.0
    plans = plan(fingerprint(), device)
    assert plans["device_profile"]["kind"] == "cuda"
    memory = plans["estimates"]["training_memory_bytes"]
    assert 0 < memory["total_bytes"] <= plans["estimates"]["memory_budget_bytes"] < 24 * 2**30
    assert "bfloat16" in plans["estimates"]["memory_measured_with"]
    with pytest.raises(RuntimeError, match="--device-memory-gb"):
        detect_device_profile("cuda", None)


# ---------------------------------------------------------------- the table of documentation/planning.md
def _table_script():
    spec = importlib.util.spec_from_file_location("planning_table", Path(__file__).parents[1] / "benchmarks" / "planning_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _coarseness(plans: dict) -> tuple:
    """What a coarser plan has more of: global spacing, first stride, patch spacing; and less of:
    field of view, scales."""
    local = plans["preprocessing"]["local"]
    return (plans["preprocessing"]["global"]["target_spacing"][0],
            plans["model"]["global_encoder"]["arch_kwargs"]["first_stride"],
            max(local["target_spacing"]), -plans["estimates"]["local_field_of_view_mm"], -len(local["scales"]))


def test_planning_table_fits_every_budget_never_coarser_on_a_larger_device_and_respects_the_lesion_bound():
    table = _table_script()
    plans_by_case: dict = {}
    for cohort, resolution, device, plans in table.all_plans():
        estimates = plans["estimates"]
        assert estimates["training_memory_bytes"]["total_bytes"] <= estimates["memory_budget_bytes"]
        plans_by_case.setdefault((cohort, resolution), []).append((device, plans))
        bound, spacing = estimates["global_spacing_bound_mm"], plans["preprocessing"]["global"]["target_spacing"][0]
        if device.kind == "cuda":
            planner = table.planner_for(cohort, resolution, device)
            if spacing > bound + 1e-6:  # only where memory does not allow the bound
                assert estimates["global_spacing_limited_by"] == "memory"
                configuration = planner.choose_configuration()[0]
                assert not planner.fits(dataclasses.replace(configuration, global_spacing=bound), 1)
            # the batch was filled: one more bag would not fit (or the batch is at its cap)
            configuration, batch = planner.choose_configuration()
            assert batch == planner.batch_cap() or not planner.fits(configuration, batch + 1)
    for case, entries in plans_by_case.items():
        gpus = sorted((d.memory_gb, _coarseness(p)) for d, p in entries if d.kind == "cuda")
        for (small_gb, small), (large_gb, large) in zip(gpus, gpus[1:]):
            assert all(l <= s + 1e-9 for s, l in zip(small, large)), (case, small_gb, small, large_gb, large)
    # the global spacing is below the smallest-lesion bound on every GPU in these cohorts
    assert all(p["preprocessing"]["global"]["target_spacing"][0] <= p["estimates"]["global_spacing_bound_mm"] + 1e-6
               for entries in plans_by_case.values() for d, p in entries if d.kind == "cuda")
    assert "| many lesions | 0.5x0.5x3 mm | 80 GB |" in table.table()
