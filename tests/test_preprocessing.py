"""glmil_plan_and_preprocess end to end: outputs, geometry round trip, resuming and bad input."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.dataset.problems import DatasetError
from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from glmil_auto.experiment_planning.plans_io import load_plans, save_plans
from glmil_auto.preprocessing.dataset_preprocessor import DatasetPreprocessor, _Task, preprocessed_case_folder
from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
from glmil_auto.preprocessing.storage import case_paths, load_case
from glmil_auto.synthetic import generate_synthetic_dataset

CPU = DeviceProfile("cpu", "cpu", 2.0, 2)
NAME = "Dataset001_SynthBrainMets"
FULL = np.ones((3, 3, 3), dtype=bool)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Tiny synthetic cohort, planned and preprocessed once for the module."""
    root = tmp_path_factory.mktemp("pipeline")
    with pytest.MonkeyPatch.context() as mp:
        # nnU-Net's 1e8 intensity samples are not what these tests are about
        mp.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
        for name in ("raw", "preprocessed", "results"):
            mp.setenv(f"glmil_{name}", str(root / name))
        generate_synthetic_dataset(root / "raw", n_train=5, n_test=2, n_centres=4, size=4.0, seed=5,
                                   num_processes=2, progress=False)
        plans = plan_and_preprocess(1, num_processes=2, device=CPU, verify=True, progress=False)
        yield {"root": root, "plans": plans, "mp": mp}


def raw_lesion_centroids(label_path: Path) -> np.ndarray:
    """World centroids of the 26-connected components, computed with SimpleITK directly."""
    image = sitk.ReadImage(str(label_path))
    labelled, n = ndimage.label(sitk.GetArrayFromImage(image) > 0, structure=FULL)
    centres = ndimage.center_of_mass(np.ones(labelled.shape), labelled, range(1, n + 1))
    return np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in c[::-1])) for c in centres])


def test_writes_fingerprint_plans_and_every_case(env):
    folder = env["root"] / "preprocessed" / NAME
    assert (folder / "dataset_fingerprint.json").is_file() and (folder / "plans.json").is_file()
    assert (folder / "dataset.json").is_file() and (folder / "clinicalTr.csv").is_file() and (folder / "clinicalTs.csv").is_file()
    plans = env["plans"]
    local = plans["preprocessing"]["local"]
    for split, n in (("Tr", 5), ("Ts", 2)):
        cases = sorted(p.name[:-5] for p in (folder / "plans" / split).glob("*.json"))
        assert len(cases) == n
        for case in cases:
            g, l, props = load_case(folder / "plans" / split, case)
            # [T1c, FLAIR, small foci, lesion mask]
            assert g.shape == (4, *plans["preprocessing"]["global"]["input_shape"]) and g.dtype == np.float32
            assert l.shape == (props["n_instances"], len(local["scales"]), 3, *local["patch_size"])
            assert props["split"] == split and props["n_instances"] == min(props["n_lesions"], local["max_instances"])
            assert np.isfinite(g).all() and np.isfinite(l).all()
            assert 0.0 <= g[-1].min() and g[-1].max() <= 1.0 + 1e-6  # lesion-mask channel
            foci = plans["preprocessing"]["small_foci"]
            assert g[-2].min() == 0.0 and g[-2].max() <= foci["channel_clip"] / foci["channel_scale"] + 1e-6
            assert not np.any(g[-2][g[-1] > 0.5])  # never on a lesion (the search region keeps its margin)
            record = props["small_foci"]
            assert len(record["candidates"]) <= foci["max_candidates"] <= 64 and record["decoys"] is not None
            assert all(c["response"] >= foci["floor"] and c["blobness"] >= foci["min_blobness"]
                       for c in record["candidates"])
    assert not list(folder.rglob(".tmp_*"))


def test_brain_is_z_scored(env):
    g, _, props = load_case(env["root"] / "preprocessed" / NAME / "plans" / "Tr", "SBM_0001")
    for channel in ("0", "1"):
        stats = props["normalisation"][channel]
        assert stats["std"] > 0 and stats["background"] < -0.5  # air is darker than the brain mean


def test_lesion_centroids_survive_the_round_trip(env):
    """World centroid of every kept lesion, recovered from its patch and the JSON, within one voxel."""
    root = env["root"]
    local = env["plans"]["preprocessing"]["local"]
    checked = 0
    for split in ("Tr", "Ts"):
        folder = root / "preprocessed" / NAME / "plans" / split
        for props_path in sorted(folder.glob("*.json")):
            case = props_path.name[:-5]
            _, l, props = load_case(folder, case)
            raw = raw_lesion_centroids(root / "raw" / NAME / f"labels{split}" / f"{case}.nii.gz")
            for lesion in (x for x in props["lesions"] if x["kept"]):
                k = lesion["instance_index"]
                for s, scale in enumerate(local["scales"]):
                    patch_mask = l[k, s, -1]
                    geometry = Geometry.from_dict(props["patch_geometries"][k][s])
                    centre = ndimage.center_of_mass(patch_mask)
                    world = geometry.index_to_world(np.asarray(centre))
                    voxel = max(local["target_spacing"]) * scale
                    nearest = raw[np.argmin(np.linalg.norm(raw - world, axis=1))]
                    if lesion["equivalent_diameter_mm"] < local["patch_size"][0] * min(local["target_spacing"]) * scale / 2:
                        assert np.linalg.norm(world - nearest) <= voxel, (case, lesion["label"], scale)
                        # centred: the mask's centroid sits at the patch centre within one voxel
                        np.testing.assert_allclose(centre, (np.asarray(local["patch_size"]) - 1) / 2, atol=1.0)
                        checked += 1
    assert checked >= 5


def test_global_mask_channel_marks_the_lesions(env):
    folder = env["root"] / "preprocessed" / NAME / "plans" / "Tr"
    for case in ("SBM_0001", "SBM_0002"):
        g, _, props = load_case(folder, case)
        geometry = Geometry.from_dict(props["global_geometry"])
        for lesion in props["lesions"]:
            index = np.round(geometry.world_to_index(np.asarray(lesion["centroid_world_mm"]))).astype(int)
            window = g[-1][tuple(slice(max(i - 1, 0), i + 2) for i in index)]
            assert window.max() > 0.05, (case, lesion["label"])


def test_resumes_and_redoes_only_what_changed(env):
    raw_folder = env["root"] / "raw" / NAME
    preprocessor = DatasetPreprocessor(raw_folder, "plans", num_processes=1)
    assert preprocessor.run(progress=False) == {"processed": 0, "skipped": 7}
    folder = preprocessed_case_folder(NAME, "plans", "Tr")
    case_paths(folder, "SBM_0002")["properties"].unlink()  # interrupted before its JSON
    properties = case_paths(folder, "SBM_0003")["properties"]
    content = json.loads(properties.read_text())
    content["plans_hash"] = "stale"
    properties.write_text(json.dumps(content))
    assert preprocessor.run(progress=False) == {"processed": 2, "skipped": 5}


@pytest.fixture
def copy_env(env, tmp_path):
    """A private copy of the raw dataset and the plans under another dataset id."""
    raw = tmp_path / "raw"
    shutil.copytree(env["root"] / "raw" / NAME, raw / "Dataset002_Broken")
    preprocessed = tmp_path / "preprocessed" / "Dataset002_Broken"
    preprocessed.mkdir(parents=True)
    shutil.copy(env["root"] / "preprocessed" / NAME / "plans.json", preprocessed / "plans.json")
    env["mp"].setenv("glmil_raw", str(raw))
    env["mp"].setenv("glmil_preprocessed", str(tmp_path / "preprocessed"))
    yield raw / "Dataset002_Broken", preprocessed
    env["mp"].setenv("glmil_raw", str(env["root"] / "raw"))
    env["mp"].setenv("glmil_preprocessed", str(env["root"] / "preprocessed"))


def test_corrupt_file_names_case_and_file_and_keeps_finished_work(copy_env):
    raw, preprocessed = copy_env
    bad = raw / "imagesTr" / "SBM_0004_0001.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DatasetError) as info:
        DatasetPreprocessor(raw, "plans", num_processes=1).run(progress=False)
    problem = info.value.problems[0]
    assert problem.case == "SBM_0004" and problem.file == str(bad) and "truncated" in problem.message
    done = sorted(p.name for p in (preprocessed / "plans" / "Tr").glob("*.json"))
    assert done == ["SBM_0001.json", "SBM_0002.json", "SBM_0003.json"]
    assert not (preprocessed / "plans" / "Tr" / "SBM_0004_global.b2nd").exists()
    # the same error crosses the process pool intact
    with pytest.raises(DatasetError, match="case SBM_0004"):
        DatasetPreprocessor(raw, "plans", num_processes=2).run(progress=False)


def test_edited_inputs_are_redone_and_clean_redoes_everything(copy_env, capsys):
    import os

    import pandas as pd

    from glmil_auto.preprocessing.entry_points import preprocess_entry

    raw, preprocessed = copy_env
    preprocessor = DatasetPreprocessor(raw, "plans", num_processes=1)
    assert preprocessor.run(progress=False) == {"processed": 7, "skipped": 0}
    assert preprocessor.run(progress=False) == {"processed": 0, "skipped": 7}

    table = pd.read_csv(raw / "clinicalTr.csv", dtype=str, keep_default_na=False)
    table.loc[table["case_id"] == "SBM_0002", "kps"] = "40"  # a clinical value
    table.to_csv(raw / "clinicalTr.csv", index=False)
    image = raw / "imagesTr" / "SBM_0004_0000.nii.gz"  # an image replaced by another file
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert preprocessor.run(progress=False) == {"processed": 2, "skipped": 5}
    properties = json.loads(case_paths(preprocessed / "plans" / "Tr", "SBM_0004")["properties"].read_text())
    assert properties["inputs"]["files"]["SBM_0004_0000.nii.gz"] == [stat.st_size, stat.st_mtime_ns + 10**9]

    assert preprocess_entry(["-d", "2", "-np", "1", "--no_progress", "--clean"]) == 0
    assert "preprocessed 7 case(s), 0 already up to date" in capsys.readouterr().out


def test_huge_finite_intensities_are_normalised_in_float64(copy_env):
    raw, preprocessed = copy_env
    path = raw / "imagesTr" / "SBM_0001_0000.nii.gz"
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    scaled = sitk.GetImageFromArray(sitk.GetArrayFromImage(image) * np.float32(1e33) + np.float32(1e33))
    scaled.CopyInformation(image)
    sitk.WriteImage(scaled, str(path))
    DatasetPreprocessor(raw, "plans", num_processes=1).run(progress=False)
    g, l, props = load_case(preprocessed / "plans" / "Tr", "SBM_0001")
    assert np.isfinite(g).all() and np.isfinite(l).all()
    assert np.isfinite(props["normalisation"]["0"]["mean"]) and props["normalisation"]["0"]["mean"] > 1e33
    reference, _, _ = load_case(preprocessed / "plans" / "Tr", "SBM_0002")
    assert abs(float(np.median(g[0])) - float(np.median(reference[0]))) < 1.0  # an ordinary z-score


def test_a_non_finite_array_is_never_written(tmp_path):
    from glmil_auto.preprocessing.normalisation import zscore_in_region
    from glmil_auto.preprocessing.storage import save_case

    channel = np.full((4, 4, 4), 3e33, np.float32)
    channel[0] = 1e33
    out, stats = zscore_in_region(channel, np.ones(channel.shape, bool))
    assert np.isfinite(out).all() and np.isclose(out.mean(), 0.0, atol=1e-5)
    bad = np.zeros((2, 4, 4, 4), np.float32)
    bad[0, 1, 2, 3] = np.nan
    with pytest.raises(DatasetError, match="holds 1 NaN or infinite") as info:
        save_case(tmp_path / "Tr", "SBM_0007", bad, np.zeros((0, 1, 2, 4, 4, 4), np.float32), {})
    problem = info.value.problems[0]
    assert problem.case == "SBM_0007" and problem.file.endswith("SBM_0007_global.b2nd")
    assert not (tmp_path / "Tr").exists() or not list((tmp_path / "Tr").iterdir())


def test_suspicious_inputs_are_warned_about():
    from glmil_auto.preprocessing.case_preprocessor import input_warnings

    images = np.ones((2, 1, 8, 8), np.float32)
    warnings = input_warnings(images, np.zeros((1, 8, 8), bool))
    assert len(warnings) == 2 and "single slice along z" in warnings[0] and "holds no lesion" in warnings[1]
    mask = np.zeros((4, 8, 8), bool)
    mask[2, 3, 3] = True
    assert input_warnings(np.ones((2, 4, 8, 8), np.float32), mask) == []


def test_case_without_lesions_gets_an_empty_bag(copy_env):
    raw, preprocessed = copy_env
    label = raw / "labelsTr" / "SBM_0001.nii.gz"
    image = sitk.ReadImage(str(label))
    empty = sitk.GetImageFromArray(np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8))
    empty.CopyInformation(image)
    sitk.WriteImage(empty, str(label))
    lesion_table = raw / "lesionsTr.csv"  # the case's lesion outcomes go with its lesions
    if lesion_table.is_file():
        lines = lesion_table.read_text().splitlines(keepends=True)
        lesion_table.write_text("".join([lines[0]] + [line for line in lines[1:] if not line.startswith("SBM_0001,")]))
    DatasetPreprocessor(raw, "plans", num_processes=1).run(progress=False)
    g, l, props = load_case(preprocessed / "plans" / "Tr", "SBM_0001")
    assert l.shape[0] == 0 and l.ndim == 6 and props["n_instances"] == 0 and props["lesions"] == []
    assert g[-1].max() == 0.0


def test_extra_lesions_are_dropped_largest_kept_and_logged(copy_env, caplog):
    raw, preprocessed = copy_env
    plans = load_plans(preprocessed / "plans.json")
    plans["preprocessing"]["local"]["max_instances"] = 1
    save_plans(plans, preprocessed / "plans.json")
    with caplog.at_level(logging.WARNING):
        DatasetPreprocessor(raw, "plans", num_processes=1).run(progress=False)
    for props_path in (preprocessed / "plans" / "Tr").glob("*.json"):
        props = json.loads(props_path.read_text())
        if props["n_lesions"] > 1:
            kept = [x for x in props["lesions"] if x["kept"]]
            assert len(kept) == 1 and kept[0]["n_voxels"] == max(x["n_voxels"] for x in props["lesions"])
            assert f"case {props['case_id']} has {props['n_lesions']} lesions" in caplog.text
            assert sorted(props["dropped_lesion_labels"]) == sorted(x["label"] for x in props["lesions"] if not x["kept"])


def test_a_killed_worker_is_an_error_not_a_hang(copy_env):
    from crashing_worker import die

    raw, _ = copy_env
    preprocessor = DatasetPreprocessor(raw, "plans", num_processes=2)
    tasks = [_Task(str(raw), case, "Tr", "/nonexistent") for case in ("SBM_0001", "SBM_0002")]
    from tqdm import tqdm

    with pytest.raises(RuntimeError, match="worker died"):
        preprocessor._run_pool(tasks, tqdm(disable=True), worker=die)


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_pool_workers_exit_when_the_parent_is_killed(copy_env):
    import os
    import signal
    import subprocess
    import sys
    import time

    code = ("from glmil_auto.preprocessing.entry_points import preprocess_entry; "
            "preprocess_entry(['-d', '2', '-np', '2', '--clean', '--no_progress'])")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 3:  # the resource tracker and two workers
            time.sleep(0.05)
            workers = _children(parent.pid)
        assert len(workers) >= 3, "the pool did not start"
        time.sleep(0.5)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "orphaned workers kept running"
    finally:
        for pid in [parent.pid, *_children(parent.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_dataset_this_project_did_not_generate(handmade_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
    monkeypatch.setenv("glmil_raw", str(handmade_dataset.parent))
    monkeypatch.setenv("glmil_preprocessed", str(tmp_path / "preprocessed"))
    plans = plan_and_preprocess(917, num_processes=1, device=CPU, verify=True, progress=False)
    assert plans["num_input_channels"] == 4
    folder = tmp_path / "preprocessed" / handmade_dataset.name / "plans"
    for split, n in (("Tr", 4), ("Ts", 2)):
        assert len(list((folder / split).glob("*.json"))) == n
    g, l, props = load_case(folder / "Tr", "BraTS-MET-00001-000")
    # lesion labels 1 and 3 form two separate lesions; oedema (2) is not a lesion
    assert props["n_lesions"] == 2 and g.shape[0] == 5 and l.shape[2] == 4  # the global volume has the foci channel


def test_command_lines(copy_env, capsys):
    from glmil_auto.experiment_planning.plan_entry_points import plan_experiment_entry
    from glmil_auto.preprocessing.entry_points import plan_and_preprocess_entry, preprocess_entry

    raw, preprocessed = copy_env
    assert plan_and_preprocess_entry(["-d", "2", "-np", "1", "--no_progress", "-device", "cpu",
                                      "--device-memory-gb", "1", "--no_preprocessing"]) == 0
    assert "planned Dataset002_Broken" in capsys.readouterr().out
    assert not (preprocessed / "plans" / "Tr").exists()
    assert plan_experiment_entry(["-d", "2", "-device", "cpu", "--planner", "GLMILPlannerSingleScale",
                                  "-p", "single"]) == 0
    assert load_plans(preprocessed / "single.json")["preprocessing"]["local"]["scales"] == [1.0]
    # GPU plans for another machine, written here without a GPU (the memory is measured on the meta device)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("torch.cuda.is_available", lambda: False)
        assert plan_experiment_entry(["-d", "2", "-device", "cuda", "--device-memory-gb", "24", "-p", "gpu24"]) == 0
        assert "wrote" in capsys.readouterr().out
        gpu = load_plans(preprocessed / "gpu24.json")
        assert gpu["device_profile"]["kind"] == "cuda" and gpu["device_profile"]["memory_gb"] == 24.0
        memory = gpu["estimates"]["training_memory_bytes"]["total_bytes"]
        assert 0 < memory <= gpu["estimates"]["memory_budget_bytes"] < 24 * 2**30
        assert plan_experiment_entry(["-d", "2", "-device", "cuda", "-p", "nogpu"]) == 1
        assert "--device-memory-gb" in capsys.readouterr().err and not (preprocessed / "nogpu.json").exists()
    assert preprocess_entry(["-d", "2", "-p", "single", "-np", "1", "--no_progress"]) == 0
    assert "preprocessed 7 case(s), 0 already up to date" in capsys.readouterr().out
    # a broken dataset stops before anything is planned when verification is asked for
    (raw / "labelsTr" / "SBM_0003.nii.gz").unlink()
    assert plan_and_preprocess_entry(["-d", "2", "-np", "1", "--no_progress", "--verify_dataset_integrity"]) == 1
    assert "lesion mask (label) is missing" in capsys.readouterr().err
