"""GLMILDataLoader and the augmenter on a tiny planned and preprocessed synthetic cohort."""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

import blosc2
import numpy as np
import pandas as pd
import pytest
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose

from glmil_auto.dataset.clinical_table import read_clinical_table
from glmil_auto.dataset.dataset_json import load_dataset_json, spec_from_dict
from glmil_auto.dataset.problems import DatasetError
from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from glmil_auto.model.clinical_encoder import encode_clinical_table
from glmil_auto.model.instance_encoder import NUM_DESCRIPTORS
from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
from glmil_auto.preprocessing.storage import case_paths, load_case
from glmil_auto.synthetic import generate_synthetic_dataset
from glmil_auto.training.data_augmentation.augmentation import (
    NUM_PROCESSES_ENV,
    SeededSingleThreadedAugmenter,
    default_num_processes,
    get_training_transforms,
    get_validation_transforms,
    make_augmenter,
)
from glmil_auto.training.dataloading.bag_collation import collate_bags, instances_within_budget
from glmil_auto.training.dataloading.data_loader import GLMILDataLoader, case_targets
from radiomic_inputs import global_channels

NAME = "Dataset001_SynthBrainMets"
N_CASES = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("loader")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
        for name in ("raw", "preprocessed", "results"):
            mp.setenv(f"glmil_{name}", str(root / name))
        generate_synthetic_dataset(root / "raw", n_train=N_CASES, n_test=0, size=4.0, seed=11, num_processes=1,
                                   progress=False)
        plans = plan_and_preprocess(1, num_processes=1, device=DeviceProfile("cpu", "cpu", 2.0, 2), progress=False)
    dataset = root / "preprocessed" / NAME
    spec = load_dataset_json(dataset)
    table = read_clinical_table(dataset / "clinicalTr.csv", spec)
    cases = sorted(table.index)
    values, categories = encode_clinical_table(table.loc[cases], plans["clinical"]["features"])
    return {"folder": dataset / "plans" / "Tr", "plans": plans, "spec": spec, "table": table, "cases": cases,
            "values": values, "categories": categories,
            "targets": case_targets(table.loc[cases], plans["endpoints"], spec)}


def make_loader(data: dict[str, Any], batch_size: int = 3, folder: Path | None = None, **kwargs: Any) -> GLMILDataLoader:
    return GLMILDataLoader(folder or data["folder"], data["cases"], data["plans"], data["values"], data["categories"],
                           data["targets"], batch_size, **kwargs)


def epoch(loader: Any) -> list[dict[str, Any]]:
    return list(loader)


def next_within(iterator: Any, seconds: float) -> Any:
    """``next(iterator)`` in a daemon thread: the test fails instead of hanging."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = next(iterator)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"no batch and no error within {seconds} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


# ---------------------------------------------------------------------- targets
def test_case_targets_binary_and_survival():
    spec = spec_from_dict({
        "channel_names": {"0": "T1c"}, "labels": {"background": 0, "metastasis": 1}, "numTraining": 3,
        "file_ending": ".nii.gz",
        "endpoints": {"lf": {"type": "binary"}, "os": {"type": "survival", "time": "os_months", "event": "os_event"}},
    })
    table = pd.DataFrame({"lf": [1.0, np.nan, 0.0], "os_months": [3.5, np.nan, 12.0], "os_event": [1.0, np.nan, 0.0]},
                         index=pd.Index(["a", "b", "c"], name="case_id"))
    endpoints = [{"name": "lf", "type": "binary"}, {"name": "os", "type": "survival"}]
    targets = case_targets(table.loc[["c", "a", "b"]], endpoints, spec)
    assert set(targets) == {"lf", "lf_known", "os_time", "os_event", "os_known"}
    np.testing.assert_array_equal(targets["lf"], [0.0, 1.0, np.nan])
    np.testing.assert_array_equal(targets["lf_known"], [True, True, False])
    np.testing.assert_array_equal(targets["os_time"], [12.0, 3.5, np.nan])
    np.testing.assert_array_equal(targets["os_event"], [0.0, 1.0, np.nan])
    np.testing.assert_array_equal(targets["os_known"], [True, True, False])
    assert targets["lf_known"].dtype == bool
    with pytest.raises(ValueError, match="unknown type"):
        case_targets(table, [{"name": "lf", "type": "ordinal"}], spec)


# ---------------------------------------------------------------------- batches
def test_batch_shapes_and_dtypes_follow_the_plans(data):
    plans = data["plans"]
    batch = make_loader(data, batch_size=4, seed=3).generate_train_batch()
    c1 = plans["num_input_channels"]
    local = plans["preprocessing"]["local"]
    b, n = batch["instance_mask"].shape
    assert b == 4 and 1 <= n <= local["max_instances"]
    assert batch["global"].shape == (4, global_channels(plans), *plans["preprocessing"]["global"]["input_shape"])
    assert batch["instances"].shape == (4, n, len(local["scales"]), c1, *local["patch_size"])
    assert batch["instance_descriptors"].shape == (4, n, NUM_DESCRIPTORS)
    assert batch["clinical_values"].shape == (4, data["values"].shape[1])
    assert batch["clinical_categories"].shape == (4, data["categories"].shape[1])
    for key in ("global", "instances", "instance_descriptors", "clinical_values"):
        assert batch[key].dtype == np.float32, key
    assert batch["instance_mask"].dtype == bool and batch["clinical_categories"].dtype == np.int64
    assert n == batch["instance_mask"].sum(1).max()  # padded to the largest bag of this batch
    for key, array in data["targets"].items():
        assert batch[key].shape == (4,) and batch[key].dtype == (bool if array.dtype == bool else np.float32)
    assert isinstance(batch["case_ids"], list) and len(batch["case_ids"]) == 4


def test_every_case_matches_its_files_padding_and_descriptors(data):
    """Instances, global volume, descriptors (from the JSON), clinical values and targets of every
    case, in a full pass; padding rows zero and masked."""
    seen = []
    for batch in make_loader(data, batch_size=3, infinite=False, shuffle=True, seed=5):
        for i, case in enumerate(batch["case_ids"]):
            seen.append(case)
            g, bag, props = load_case(data["folder"], case)
            n = bag.shape[0]
            np.testing.assert_array_equal(batch["global"][i], g)
            np.testing.assert_array_equal(batch["instances"][i, :n], bag)
            assert batch["instance_mask"][i, :n].all() and not batch["instance_mask"][i, n:].any()
            assert not batch["instances"][i, n:].any() and not batch["instance_descriptors"][i, n:].any()
            expected = np.zeros((n, NUM_DESCRIPTORS))
            (z0, z1), (y0, y1), (x0, x1) = props["head_bbox_canonical"]
            for lesion in props["lesions"]:
                if lesion["kept"]:
                    cz, cy, cx = lesion["centroid_index_zyx"]
                    expected[lesion["instance_index"]] = (
                        math.log1p(lesion["volume_mm3"]), lesion["depth_below_head_surface_mm"] / 10,
                        (cz - z0) / (z1 - 1 - z0), (cy - y0) / (y1 - 1 - y0), abs((cx - x0) / (x1 - 1 - x0) - 0.5) * 2)
            np.testing.assert_allclose(batch["instance_descriptors"][i, :n], expected, rtol=1e-6)
            row = data["cases"].index(case)
            np.testing.assert_array_equal(batch["clinical_values"][i], data["values"][row].astype(np.float32))
            np.testing.assert_array_equal(batch["clinical_categories"][i], data["categories"][row])
            for key, array in data["targets"].items():
                np.testing.assert_array_equal(batch[key][i], array[row].astype(batch[key].dtype))
    assert sorted(seen) == data["cases"]


def test_instance_budget_keeps_the_largest_lesions_of_the_richest_bags():
    volumes = [np.log1p([10.0, 500.0, 40.0]), np.log1p([7.0]), np.zeros(0), np.log1p([90.0, 1.0, 900.0, 30.0])]
    descriptors = [np.stack([v, np.zeros_like(v)], axis=1) for v in volumes]
    kept = instances_within_budget(descriptors, 100)
    assert [k.tolist() for k in kept] == [[0, 1, 2], [0], [], [0, 1, 2, 3]]  # under budget: nothing dropped
    kept = instances_within_budget(descriptors, 5)
    # the four-lesion bag gives up its two smallest, then the three-lesion bag its smallest
    assert [k.tolist() for k in kept] == [[1, 2], [0], [], [0, 2]]
    assert [k.tolist() for k in instances_within_budget(descriptors, 3)] == [[1], [0], [], [2]]
    with pytest.raises(ValueError, match="budget must be >= 0"):
        instances_within_budget(descriptors, -1)


def test_training_batches_hold_at_most_the_planned_instances(data, caplog):
    """The loader packs batches to an instance budget: lesion-rich bags keep their largest lesions
    (logged once per case)."""
    free = make_loader(data, batch_size=4, seed=3)
    counts = [b["instance_mask"].sum() for b in (free.generate_train_batch() for _ in range(6))]
    budget = max(4, int(min(counts)) - 1)
    assert max(counts) > budget  # the budget bites on these batches
    packed = make_loader(data, batch_size=4, seed=3, max_instances_per_batch=budget)
    with caplog.at_level("INFO", logger="glmil_auto.training.dataloading.data_loader"):
        for _ in range(6):
            batch = packed.generate_train_batch()
            assert batch["instance_mask"].sum() <= budget
            for i, case in enumerate(batch["case_ids"]):
                stored = packed._load(case)[2]  # every stored lesion's descriptors
                kept = int(batch["instance_mask"][i].sum())
                largest = np.sort(stored[:, 0])[::-1][:kept]
                np.testing.assert_allclose(np.sort(batch["instance_descriptors"][i, :kept, 0])[::-1], largest)
                assert kept >= 1 or len(stored) == 0
    assert "do not fit the batch's instance budget" in caplog.text and "kept the largest" in caplog.text


def test_targets_follow_the_table_rows(data):
    """The target of a case in a batch is the one in the clinical table, not a neighbour's."""
    table, spec = data["table"], data["spec"]
    batch = make_loader(data, batch_size=8, infinite=False, shuffle=True, seed=1).generate_train_batch()
    for endpoint in data["plans"]["endpoints"]:
        name = endpoint["name"]
        if endpoint["type"] == "binary":
            expected = table.loc[batch["case_ids"], name].to_numpy(float)
            np.testing.assert_array_equal(batch[name], expected.astype(np.float32))
        else:
            expected = table.loc[batch["case_ids"], spec.endpoints[name].time].to_numpy(float)
            np.testing.assert_array_equal(batch[f"{name}_time"], expected.astype(np.float32))


def test_lesion_free_bags_get_one_masked_row():
    g = [np.zeros((3, 4, 4, 4), np.float32)] * 2
    empty = np.zeros((0, 2, 3, 2, 2, 2), np.float32)
    batch = collate_bags(g, [empty, empty], [np.zeros((0, NUM_DESCRIPTORS), np.float32)] * 2)
    assert batch["instances"].shape == (2, 1, 2, 3, 2, 2, 2) and not batch["instance_mask"].any()


@pytest.mark.parametrize("shuffle", [False, True])
def test_finite_mode_visits_every_case_once_per_epoch(data, shuffle):
    loader = make_loader(data, batch_size=3, infinite=False, shuffle=shuffle, seed=2)
    for _ in range(2):  # two epochs
        batches = epoch(loader)
        assert [len(b["case_ids"]) for b in batches] == [3, 3, 2]  # return_incomplete
        visited = [c for b in batches for c in b["case_ids"]]
        assert sorted(visited) == data["cases"]
        if not shuffle:
            assert visited == data["cases"]


def test_finite_mode_through_two_workers_visits_every_case_once(data):
    """Also the regression test of a hang: workers forked from a process that had decompressed with
    blosc2's thread pool waited forever in their first read (within a few forks)."""
    blosc2.set_nthreads(2)
    for case in data["cases"]:
        load_case(data["folder"], case)  # this process now has used blosc2 threads
    for seed in range(8):
        loader = make_loader(data, batch_size=3, infinite=False, shuffle=True, seed=seed)
        epoch(loader)  # reads in this process too, as the trainer's validation does
        augmenter = make_augmenter(loader, get_validation_transforms(data["plans"]), num_processes=2)
        visited = []
        try:
            while True:
                try:
                    visited += next_within(augmenter, 30)["case_ids"]
                except StopIteration:
                    break
        finally:
            augmenter._finish(timeout=2)
        assert sorted(visited) == data["cases"]


def test_same_seed_same_batches(data):
    def sequence(seed: int) -> list[dict[str, Any]]:
        loader = make_loader(data, batch_size=2, seed=seed)
        return [loader.generate_train_batch() for _ in range(4)]

    a, b, c = sequence(7), sequence(7), sequence(8)
    assert [x["case_ids"] for x in a] == [x["case_ids"] for x in b]
    for x, y in zip(a, b):
        for key in ("global", "instances", "instance_descriptors"):
            np.testing.assert_array_equal(x[key], y[key])
    assert [x["case_ids"] for x in a] != [x["case_ids"] for x in c]


def test_same_seed_same_augmented_batches_and_global_state_untouched(data):
    transforms = get_training_transforms(data["plans"])

    def run(seed: int) -> list[dict[str, Any]]:
        augmenter = make_augmenter(make_loader(data, batch_size=2, seed=seed), transforms, num_processes=0)
        assert isinstance(augmenter, SeededSingleThreadedAugmenter)
        return [next(augmenter) for _ in range(3)]

    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first, second = run(9), run(9)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    for x, y in zip(first, second):
        assert x["case_ids"] == y["case_ids"]
        np.testing.assert_array_equal(x["global"], y["global"])
        np.testing.assert_array_equal(x["instances"], y["instances"])
        np.testing.assert_array_equal(x["instance_mask"], y["instance_mask"])


def test_one_worker_gives_the_in_process_batches(data):
    """Worker i is seeded from (loader seed, i) and the in-process augmenter uses worker 0's seed."""
    transforms = get_training_transforms(data["plans"])
    in_process = make_augmenter(make_loader(data, batch_size=2, seed=10), transforms, num_processes=0)
    expected = [next(in_process) for _ in range(3)]
    worker = make_augmenter(make_loader(data, batch_size=2, seed=10), transforms, num_processes=1)
    try:
        got = [next_within(worker, 60) for _ in range(3)]
    finally:
        worker._finish()
    for x, y in zip(expected, got):
        assert x["case_ids"] == y["case_ids"]
        np.testing.assert_array_equal(x["global"], y["global"])
        np.testing.assert_array_equal(x["instances"], y["instances"])


def test_class_balanced_probabilities():
    values = np.array([1, 0, 0, 0, 0, 0, 0, np.nan, 0, 1], dtype=float)
    p = GLMILDataLoader.class_balanced_probabilities({"lf": values}, "lf")
    assert p.sum() == pytest.approx(1.0)
    assert p[7] == pytest.approx(1 / len(values))  # unknown: the average weight
    assert p[values == 1].sum() == pytest.approx(p[values == 0].sum())
    uniform = GLMILDataLoader.class_balanced_probabilities({"lf": np.zeros(4)}, "lf")
    np.testing.assert_allclose(uniform, 0.25)


def test_oversampling_draws_half_positives(data):
    targets = dict(data["targets"])
    rare = np.zeros(N_CASES)
    rare[3] = 1.0  # one positive in eight
    targets["rare"], targets["rare_known"] = rare, np.ones(N_CASES, bool)
    p = GLMILDataLoader.class_balanced_probabilities(targets, "rare")
    loader = GLMILDataLoader(data["folder"], data["cases"], data["plans"], data["values"], data["categories"], targets,
                             64, seed=0, sampling_probabilities=p)
    draws = np.concatenate([loader.get_indices() for _ in range(100)])
    assert abs(rare[draws].mean() - 0.5) < 0.03
    plain = make_loader(data, batch_size=64, seed=0)
    assert rare[np.concatenate([plain.get_indices() for _ in range(100)])].mean() < 0.2


def test_loader_rejects_misaligned_inputs(data):
    with pytest.raises(ValueError, match="rows"):
        GLMILDataLoader(data["folder"], data["cases"], data["plans"], data["values"][:-1], data["categories"],
                        data["targets"], 2)
    with pytest.raises(ValueError, match="target"):
        GLMILDataLoader(data["folder"], data["cases"], data["plans"], data["values"], data["categories"],
                        {"lf": np.zeros(3)}, 2)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("which", ["global", "local"])
def test_corrupt_array_names_the_case(data, tmp_path, which):
    case = data["cases"][2]
    for path in case_paths(data["folder"], case).values():
        shutil.copy(path, tmp_path / path.name)
    target = case_paths(tmp_path, case)[which]
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 4096] = os.urandom(4096)
    target.write_bytes(bytes(raw[: len(raw) * 2 // 3]))
    loader = GLMILDataLoader(tmp_path, [case], data["plans"], data["values"][:1], data["categories"][:1],
                             {k: v[:1] for k, v in data["targets"].items()}, 1)
    with pytest.raises(DatasetError, match=case) as info:
        loader.generate_train_batch()
    assert target.name in str(info.value)


def test_missing_properties_name_the_case(data, tmp_path):
    case = data["cases"][0]
    for key in ("global", "local"):
        shutil.copy(case_paths(data["folder"], case)[key], tmp_path)
    loader = GLMILDataLoader(tmp_path, [case], data["plans"], data["values"][:1], data["categories"][:1], {}, 1)
    with pytest.raises(DatasetError, match=case):
        loader.generate_train_batch()


# ---------------------------------------------------------------------- multi-process augmentation
class RaiseInWorker(AbstractTransform):
    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        raise ValueError("transform failed on purpose")


class DieInWorker(AbstractTransform):
    """Ends its process like the OOM killer would, but only in a worker (never in the test process)."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        if os.getpid() != self.parent:
            os._exit(3)
        return data_dict


def test_two_workers_yield_distinct_augmented_batches(data):
    loader = make_loader(data, batch_size=2, seed=6)
    augmenter = make_augmenter(loader, get_training_transforms(data["plans"]), num_processes=2)
    assert isinstance(augmenter, MultiThreadedAugmenter) and loader.number_of_threads_in_multithreaded == 2
    try:
        batches = [next_within(augmenter, 60) for _ in range(4)]
    finally:
        augmenter._finish()
    plans = data["plans"]
    for batch in batches:
        assert batch["global"].shape == (2, global_channels(plans), *plans["preprocessing"]["global"]["input_shape"])
        assert batch["global"].dtype == np.float32 and batch["global"].flags.c_contiguous
    # the two workers draw different cases or augmentations (seeds derived per worker)
    assert not np.array_equal(batches[0]["global"], batches[1]["global"])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # batchgenerators' results thread
@pytest.mark.parametrize("failure", [RaiseInWorker, DieInWorker], ids=["raises", "killed"])
def test_a_failing_worker_raises_in_the_main_process(data, failure: Callable[[], AbstractTransform]):
    loader = make_loader(data, batch_size=2, seed=0)
    augmenter = make_augmenter(loader, Compose([failure()]), num_processes=2)
    started = time.perf_counter()
    try:
        with pytest.raises(RuntimeError, match="no longer alive"):
            for _ in range(10):
                next_within(augmenter, 30)
    finally:
        augmenter._finish(timeout=2)
    assert time.perf_counter() - started < 30


class HangInWorker(AbstractTransform):
    """A deadlocked worker: alive, never delivers."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        while os.getpid() != self.parent:
            time.sleep(0.1)
        return data_dict


def test_a_stuck_worker_raises_after_the_stall_timeout(data):
    augmenter = make_augmenter(make_loader(data, batch_size=1, seed=0), Compose([HangInWorker()]), num_processes=2,
                               stall_timeout=1.0)
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="stuck"):
        next_within(augmenter, 30)
    assert time.perf_counter() - started < 10
    assert not multiprocessing.active_children()  # the stuck workers were stopped


def test_a_corrupt_case_in_a_worker_is_reported(data, tmp_path, capfd):
    case = data["cases"][1]
    for path in case_paths(data["folder"], case).values():
        shutil.copy(path, tmp_path / path.name)
    target = case_paths(tmp_path, case)["global"]
    target.write_bytes(target.read_bytes()[:100])
    loader = GLMILDataLoader(tmp_path, [case], data["plans"], data["values"][:1], data["categories"][:1], {}, 1)
    augmenter = make_augmenter(loader, get_validation_transforms(data["plans"]), num_processes=1)
    try:
        with pytest.raises(RuntimeError):
            next_within(augmenter, 30)
    finally:
        augmenter._finish(timeout=2)
    assert case in capfd.readouterr().err  # the worker's traceback names the case


def test_default_worker_count(monkeypatch):
    monkeypatch.setenv(NUM_PROCESSES_ENV, "3")
    assert default_num_processes() == 3
    monkeypatch.setenv(NUM_PROCESSES_ENV, "zero")
    with pytest.raises(ValueError, match=NUM_PROCESSES_ENV):
        default_num_processes()
    monkeypatch.delenv(NUM_PROCESSES_ENV)
    assert 0 <= default_num_processes() <= 12
    import torch

    for gpu, cores, expected in [(False, 2, 0), (False, 3, 0), (False, 8, 2), (False, 64, 4),
                                 (True, 2, 1), (True, 8, 6), (True, 64, 12)]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cores=cores: set(range(cores)))
        assert default_num_processes() == expected, (gpu, cores)
