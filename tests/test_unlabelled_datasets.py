"""Datasets without outcomes (extra data for self-supervised pretraining): the unlabelled synthetic
cohort, the verifier and the fingerprint on it, and preprocessing with the target dataset's plans."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glmil_auto.dataset.dataset_json import spec_from_dict
from glmil_auto.dataset.problems import DatasetError
from glmil_auto.dataset.raw_dataset import RawDataset
from glmil_auto.dataset.verify import verify_dataset
from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from glmil_auto.experiment_planning.plans_io import plans_hash
from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
from glmil_auto.preprocessing.storage import load_case
from glmil_auto.pretraining.extra_datasets import (
    check_lesion_convention,
    preprocess_with_target_plans,
    target_plans_name,
)
from glmil_auto.synthetic import generate_synthetic_dataset, load_truth
from glmil_auto.synthetic.cases import CSV_COLUMNS
from glmil_auto.synthetic.cohort import OUTCOME_COLUMNS
from glmil_auto.synthetic.entry_points import generate_synthetic_entry

CPU = DeviceProfile("cpu", "cpu", 2.0, 2)
TARGET = "Dataset010_SynthTarget"
LABELLED = "Dataset021_SynthLabelled"
UNLABELLED = "Dataset022_SynthUnlabelled"
COHORT = dict(n_train=4, n_test=1, n_centres=3, size="tiny", seed=7, num_processes=2, progress=False)
PLANS = target_plans_name(TARGET, "plans")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A planned and preprocessed target, and a labelled and an unlabelled cohort of one seed."""
    root = tmp_path_factory.mktemp("unlabelled")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
        for name in ("raw", "preprocessed", "results"):
            mp.setenv(f"glmil_{name}", str(root / name))
        raw = root / "raw"
        generate_synthetic_dataset(raw, n_train=5, n_test=1, n_centres=3, size="tiny", seed=5, num_processes=2,
                                   dataset_id=10, dataset_name="SynthTarget", progress=False)
        plans = plan_and_preprocess(10, num_processes=2, device=CPU, progress=False)
        generate_synthetic_dataset(raw, dataset_id=21, dataset_name="SynthLabelled", **COHORT)
        generate_synthetic_dataset(raw, dataset_id=22, dataset_name="SynthUnlabelled", unlabelled=True, **COHORT)
        yield {"root": root, "raw": raw, "preprocessed": root / "preprocessed", "plans": plans}


def copy_dataset(env, source: str, new_name: str, edit=None) -> Path:
    """A copy of a raw dataset under another name, its dataset.json changed by ``edit(content)``."""
    folder = Path(shutil.copytree(env["raw"] / source, env["raw"] / new_name))
    if edit is not None:
        content = json.loads((folder / "dataset.json").read_text())
        edit(content)
        (folder / "dataset.json").write_text(json.dumps(content))
    return folder


def case_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") for p in sorted((folder / sub).glob("*"))}


def test_unlabelled_cohort_has_no_outcomes_and_the_labelled_cohorts_images(env):
    labelled, unlabelled = env["raw"] / LABELLED, env["raw"] / UNLABELLED
    meta = json.loads((unlabelled / "dataset.json").read_text())
    assert "endpoints" not in meta and "unlabelled" in meta["description"].lower()
    assert meta["synthetic"]["unlabelled"] is True and meta["synthetic"]["lesion_table"] is False
    assert json.loads((labelled / "dataset.json").read_text())["synthetic"]["unlabelled"] is False
    assert not list(unlabelled.glob("lesions*.csv")) and (labelled / "lesionsTr.csv").is_file()
    for split in ("Tr", "Ts"):
        table = pd.read_csv(unlabelled / f"clinical{split}.csv", dtype=str, keep_default_na=False)
        reference = pd.read_csv(labelled / f"clinical{split}.csv", dtype=str, keep_default_na=False)
        assert list(table.columns) == [c for c in CSV_COLUMNS if c not in OUTCOME_COLUMNS]
        pd.testing.assert_frame_equal(table, reference[list(table.columns)])
    files = case_files(unlabelled)
    assert len(files) == 5 * 3 and files == case_files(labelled)  # the same draws, only what is written differs
    truth = load_truth(unlabelled)
    assert truth["cases"] == load_truth(labelled)["cases"]
    assert all("n_micro_lesions" in case and case["lesions"] for case in truth["cases"].values())


def test_unlabelled_cli_without_test_cases(tmp_path):
    generate_synthetic_entry(["-o", str(tmp_path), "-ntr", "2", "-nts", "0", "-nc", "2", "-s", "6", "-np", "1",
                              "--no_progress", "--unlabelled"])
    folder = tmp_path / "Dataset001_SynthBrainMets"
    assert (folder / "imagesTr").is_dir() and not (folder / "imagesTs").exists()
    assert not (folder / "clinicalTs.csv").exists() and not list(folder.glob("lesions*.csv"))
    assert "endpoints" not in json.loads((folder / "dataset.json").read_text())
    assert (tmp_path / "Dataset001_SynthBrainMets_truth.json").is_file()
    assert verify_dataset(folder, progress=False).ok


def test_verifier_and_fingerprint_accept_a_dataset_without_endpoints(env):
    report = verify_dataset(env["raw"] / UNLABELLED, progress=False)
    assert report.ok and not report.warnings, report.format()
    fingerprint = DatasetFingerprintExtractor(env["raw"] / UNLABELLED, num_processes=1, progress=False).run()
    assert fingerprint["endpoints"] == {} and fingerprint["num_training_cases"] == 4
    assert set(fingerprint["clinical_features"]) == {"age", "kps", "primary", "extracranial_disease", "prior_wbrt"}
    empty = copy_dataset(env, UNLABELLED, "Dataset023_EmptyEndpoints", lambda d: d.update(endpoints={}))
    assert verify_dataset(empty, progress=False).ok


def test_without_endpoints_other_problems_still_fail(env):
    folder = copy_dataset(env, UNLABELLED, "Dataset024_BrokenUnlabelled")
    (folder / "imagesTr" / "SBM_0002_0001.nii.gz").unlink()
    table = pd.read_csv(folder / "clinicalTr.csv", dtype=str, keep_default_na=False)
    table.loc[0, "age"] = "old"
    table.to_csv(folder / "clinicalTr.csv", index=False)
    messages = [p.message for p in verify_dataset(folder, progress=False).errors]
    assert any("channel 1 (FLAIR) is missing" in m for m in messages), messages
    assert any("'age' must be a finite number" in m for m in messages), messages


def _images_and_masks_only(content: dict) -> None:
    for key in ("clinical_features", "group_column"):
        content.pop(key)


def test_dataset_without_clinical_table(env):
    """Images and masks only (a public collection): fine when dataset.json names no clinical column."""
    folder = copy_dataset(env, UNLABELLED, "Dataset025_ImagesOnly", _images_and_masks_only)
    for split in ("Tr", "Ts"):
        (folder / f"clinical{split}.csv").unlink()
    report = verify_dataset(folder, progress=False)
    assert report.ok and not report.warnings, report.format()
    assert RawDataset(folder).clinical_table("Tr").shape == (4, 0)
    fingerprint = DatasetFingerprintExtractor(folder, num_processes=1, progress=False).run()
    assert fingerprint["clinical_features"] == {} and fingerprint["groups"] == {}

    declared = copy_dataset(env, UNLABELLED, "Dataset026_FeaturesWithoutTable")  # still declares features
    (declared / "clinicalTr.csv").unlink()
    messages = [p.message for p in verify_dataset(declared, progress=False).errors]
    assert messages == ["clinical table is missing"]


def test_preprocess_with_target_plans_matches_the_target_and_resumes(env):
    folders = preprocess_with_target_plans(22, 10, num_processes=2, progress=False)
    root = env["preprocessed"] / UNLABELLED
    assert folders == [root / PLANS / "Tr", root / PLANS / "Ts"]
    assert json.loads((root / f"{PLANS}.json").read_text()) == env["plans"]
    target_case = env["preprocessed"] / TARGET / "plans" / "Tr"
    g_target, l_target, p_target = load_case(target_case, "SBM_0001")
    expected_hash = plans_hash(env["plans"])
    assert p_target["plans_hash"] == expected_hash
    cases = {"Tr": [f"SBM_000{i}" for i in range(1, 5)], "Ts": ["SBM_0005"]}
    for folder in folders:
        done = sorted(p.stem for p in folder.glob("*.json"))
        assert done == cases[folder.name]
        for case in done:
            g, l, properties = load_case(folder, case)
            assert g.shape == g_target.shape and l.shape[1:] == l_target.shape[1:]
            assert properties["plans_hash"] == expected_hash and np.isfinite(g).all()
    stamps = {p: p.stat().st_mtime_ns for folder in folders for p in sorted(folder.iterdir())}
    assert preprocess_with_target_plans(UNLABELLED, TARGET, num_processes=2, progress=False) == folders
    assert {p: p.stat().st_mtime_ns for folder in folders for p in sorted(folder.iterdir())} == stamps


def test_lesion_outcomes_of_a_labelled_extra_dataset_are_not_read(env):
    (folder,) = preprocess_with_target_plans(LABELLED, TARGET, num_processes=1, progress=False)[:1]
    _, _, properties = load_case(folder, "SBM_0001")
    assert properties["lesions"] and all("outcomes" not in lesion for lesion in properties["lesions"])
    _, _, target = load_case(env["preprocessed"] / TARGET / "plans" / "Tr", "SBM_0001")
    assert all("outcomes" in lesion for lesion in target["lesions"])  # the target's own are


def test_images_only_dataset_preprocesses_with_target_plans(env):
    folder = copy_dataset(env, UNLABELLED, "Dataset027_ImagesOnlyExtra", _images_and_masks_only)
    for split in ("Tr", "Ts"):
        (folder / f"clinical{split}.csv").unlink()
    (folder / "imagesTs").rename(folder / "unusedTs")
    shutil.rmtree(folder / "labelsTs")
    assert [f.name for f in preprocess_with_target_plans(27, 10, num_processes=1, progress=False)] == ["Tr"]


def test_channel_mismatch_is_refused_naming_both_lists(env):
    copy_dataset(env, UNLABELLED, "Dataset028_OtherChannels",
                 lambda d: d.update(channel_names={"0": "T1c", "1": "T2"}))
    with pytest.raises(ValueError) as caught:
        preprocess_with_target_plans(28, 10, progress=False)
    message = str(caught.value)
    assert "['T1c', 'T2']" in message and "['T1c', 'FLAIR']" in message
    assert not (env["preprocessed"] / "Dataset028_OtherChannels").exists()


def test_a_dataset_failing_verification_is_refused_naming_it(env):
    folder = copy_dataset(env, UNLABELLED, "Dataset029_BrokenExtra")
    (folder / "labelsTr" / "SBM_0003.nii.gz").unlink()
    with pytest.raises(DatasetError) as caught:
        preprocess_with_target_plans(29, 10, progress=False)
    assert "Dataset029_BrokenExtra" in str(caught.value) and "lesion mask (label) is missing" in str(caught.value)


def _spec(**changes) -> object:
    content = {"channel_names": {"0": "T1c"}, "labels": {"background": 0, "metastasis": 1}, "numTraining": 1,
               "file_ending": ".nii.gz", **changes}
    return spec_from_dict(content)


def test_lesion_convention():
    target = _spec(lesion_labels=[1])
    brats = {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 3}
    check_lesion_convention("E", _spec(), "T", target)  # one lesion label: unambiguous
    check_lesion_convention("E", _spec(labels=brats, lesion_labels=[1, 3]), "T", target)
    check_lesion_convention("E", _spec(labels=brats), "T", _spec(labels=brats))  # the target's own convention
    with pytest.raises(ValueError, match="declare 'lesion_labels'"):
        check_lesion_convention("E", _spec(labels=brats), "T", target)
