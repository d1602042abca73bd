"""The dataset fingerprint: schema, lesion instances, orientation, outcomes, workers, errors, CLI.

Extractions here lower nnU-Net's foreground sample budget (10e7 per channel) to keep the tests
fast; tests/test_fingerprint_nnunet.py checks the real budget against nnU-Net.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

import handmade_dataset as handmade
from glmil_auto.dataset import DatasetError, RawDataset
from glmil_auto.experiment_planning.fingerprint import DatasetFingerprintExtractor
from glmil_auto.experiment_planning.fingerprint.entry_points import extract_fingerprint_entry
from glmil_auto.synthetic import generate_synthetic_dataset

SMALL_BUDGET = 2e5

TOP_LEVEL_KEYS = {
    "fingerprint_version", "dataset_name", "channel_names", "num_training_cases", "spacings",
    "shapes_after_crop", "foreground_intensity_properties_per_channel",
    "median_relative_size_after_cropping", "cases", "summary", "endpoints", "clinical_features", "groups",
    "inputs_sha256",
}
CASE_KEYS = {
    "spacing_canonical", "shape_canonical", "head_bbox_shape", "head_extent_mm", "head_volume_mm3",
    "brain_region_intensity", "lesion_intensity_brain_sd", "lesions", "n_lesions", "group", "skull_stripped",
    "skull_stripping",
}
SUMMARY_KEYS = {
    "spacing_canonical": {"median", "percentile_10", "percentile_90", "min", "max"},
    "shape_canonical": {"median"},
    "head_extent_mm": {"median", "percentile_95", "max"},
    "lesions_per_case": {"mean", "median", "percentile_95", "max", "min", "n_cases_without_lesions"},
    "lesion_diameter_mm": {"min", "percentile_05", "median", "percentile_95", "max"},
    "lesion_volume_mm3": {"min", "median", "percentile_95", "max", "total_median_per_case"},
    "lesion_extent_mm": {"median", "percentile_95", "max"},
    "skull_stripping": {"n_cases", "n_skull_stripped", "fraction_skull_stripped", "cohort"},
}
INTENSITY_KEYS = {"mean", "median", "std", "min", "max", "percentile_99_5", "percentile_00_5"}
BRAIN_KEYS = {"mean", "std", "median", "percentile_00_5", "percentile_99_5"}
LESION_KEYS = {"label", "n_voxels", "volume_mm3", "equivalent_diameter_mm", "centroid_index_zyx",
               "centroid_world_mm", "bbox", "extent_mm"}


@pytest.fixture(scope="module")
def _synthetic_template(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("fingerprint_synthetic")
    return generate_synthetic_dataset(raw, n_train=5, n_test=0, n_centres=3, size="tiny", seed=11,
                                      num_processes=1, progress=False)


@pytest.fixture
def synthetic(_synthetic_template, tmp_path) -> Path:
    """A writable copy of a 5-case tiny synthetic dataset, as ``<tmp>/raw/Dataset001_SynthBrainMets``."""
    return Path(shutil.copytree(_synthetic_template, tmp_path / "raw" / _synthetic_template.name))


@pytest.fixture(scope="module")
def synthetic_fingerprint(_synthetic_template, tmp_path_factory) -> dict:
    return extract(_synthetic_template, tmp_path_factory.mktemp("fp_out"))


def extract(folder: Path, output: Path, num_processes: int = 1, extractor_class=DatasetFingerprintExtractor) -> dict:
    extractor = extractor_class(Path(folder), num_processes=num_processes, progress=False, output_folder=output)
    extractor.total_foreground_samples = SMALL_BUDGET
    fingerprint = extractor.run(overwrite_existing=True)
    assert extractor.output_file.is_file()
    assert json.loads(extractor.output_file.read_text()) == fingerprint
    return fingerprint


def lesion_mask(folder: Path, case: str) -> np.ndarray:
    dataset = RawDataset(folder)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset.label_file(case, "Tr"))))
    return np.isin(label, dataset.spec.lesion_labels)


def test_schema_complete_and_strict_json(synthetic_fingerprint):
    fp = synthetic_fingerprint
    assert TOP_LEVEL_KEYS <= set(fp)
    json.dumps(fp, allow_nan=False)  # no NaN / inf anywhere
    assert fp["fingerprint_version"] == 3
    assert fp["dataset_name"] == "Dataset001_SynthBrainMets"
    assert fp["channel_names"] == {"0": "T1c", "1": "FLAIR"}
    assert fp["num_training_cases"] == 5 == len(fp["cases"]) == len(fp["spacings"]) == len(fp["shapes_after_crop"])
    assert list(fp["cases"]) == sorted(fp["cases"])
    for channel in ("0", "1"):
        assert set(fp["foreground_intensity_properties_per_channel"][channel]) == INTENSITY_KEYS
        assert set(fp["summary"]["brain_region_intensity_per_channel"][channel]) == BRAIN_KEYS
    for record in fp["cases"].values():
        assert CASE_KEYS <= set(record)
        assert set(record["brain_region_intensity"]) == {"0", "1"}
        assert all(set(lesion) == LESION_KEYS for lesion in record["lesions"])
        assert record["n_lesions"] == len(record["lesions"])
        assert all(len(record[k]) == 3 for k in ("spacing_canonical", "shape_canonical", "head_bbox_shape", "head_extent_mm"))
        np.testing.assert_allclose(record["head_extent_mm"],
                                   np.multiply(record["head_bbox_shape"], record["spacing_canonical"]))
        assert 0 < record["head_volume_mm3"] <= np.prod(record["head_extent_mm"]) + 1e-6
    for key, statistics in SUMMARY_KEYS.items():
        assert statistics <= set(fp["summary"][key]), key
    assert {e["type"] for e in fp["endpoints"].values()} == {"binary", "survival"}
    assert {"type", "n_known", "n_missing", "n_events", "event_rate", "median_time", "median_follow_up",
            "max_time"} <= set(fp["endpoints"]["os"])


def test_lesion_counts_are_26_connected_components(synthetic_fingerprint, _synthetic_template):
    for case, record in synthetic_fingerprint["cases"].items():
        mask = lesion_mask(_synthetic_template, case)
        _, expected = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        assert record["n_lesions"] == expected, case
        assert sum(lesion["n_voxels"] for lesion in record["lesions"]) == int(mask.sum())


def test_endpoints_clinical_and_groups_match_the_table(synthetic_fingerprint, _synthetic_template):
    table = pd.read_csv(_synthetic_template / "clinicalTr.csv")
    endpoints = synthetic_fingerprint["endpoints"]
    for name in ("local_failure", "distant_failure", "leptomeningeal_failure"):
        known = table[name].dropna()
        assert endpoints[name]["n_known"] == len(known)
        assert endpoints[name]["n_missing"] == int(table[name].isna().sum())
        assert endpoints[name]["prevalence"] == pytest.approx(known.mean())
    os_known = table.dropna(subset=["os_months", "os_event"])
    assert endpoints["os"]["n_known"] == len(os_known)
    assert endpoints["os"]["n_events"] == int(os_known["os_event"].sum())
    assert endpoints["os"]["max_time"] == pytest.approx(os_known["os_months"].max())
    assert synthetic_fingerprint["groups"] == {str(k): int(v) for k, v in table["center"].value_counts().items()}
    assert sum(synthetic_fingerprint["groups"].values()) == 5
    for case, record in synthetic_fingerprint["cases"].items():
        assert record["group"] == table.set_index("case_id").at[case, "center"]
    age = synthetic_fingerprint["clinical_features"]["age"]
    assert age["type"] == "numeric"
    assert age["mean"] == pytest.approx(table["age"].mean())
    assert age["missing_fraction"] == pytest.approx(table["age"].isna().mean())
    primary = synthetic_fingerprint["clinical_features"]["primary"]
    assert primary["categories"] == {str(k): int(v) for k, v in table["primary"].value_counts().items()}


def test_one_and_two_workers_give_identical_json(synthetic_fingerprint, _synthetic_template, tmp_path):
    two = extract(_synthetic_template, tmp_path, num_processes=2)
    assert json.dumps(two, sort_keys=True) == json.dumps(synthetic_fingerprint, sort_keys=True)


def test_case_without_lesions(synthetic, tmp_path):
    case = RawDataset(synthetic).cases("Tr")[1]
    label_path = synthetic / "labelsTr" / f"{case}.nii.gz"
    label = sitk.ReadImage(str(label_path))
    empty = sitk.GetImageFromArray(np.zeros_like(sitk.GetArrayFromImage(label)))
    empty.CopyInformation(label)
    sitk.WriteImage(empty, str(label_path), useCompression=True)

    fp = extract(synthetic, tmp_path / "out")
    assert fp["cases"][case]["lesions"] == [] and fp["cases"][case]["n_lesions"] == 0
    assert fp["summary"]["lesions_per_case"]["n_cases_without_lesions"] == 1
    assert fp["summary"]["lesions_per_case"]["min"] == 0


def test_dataset_without_any_lesion_gives_nulls(synthetic, tmp_path):
    for label_path in (synthetic / "labelsTr").glob("*.nii.gz"):
        label = sitk.ReadImage(str(label_path))
        empty = sitk.GetImageFromArray(np.zeros_like(sitk.GetArrayFromImage(label)))
        empty.CopyInformation(label)
        sitk.WriteImage(empty, str(label_path), useCompression=True)
    fp = extract(synthetic, tmp_path / "out")
    json.dumps(fp, allow_nan=False)
    assert fp["summary"]["lesion_diameter_mm"]["median"] is None
    assert fp["summary"]["lesion_extent_mm"]["max"] is None
    assert fp["summary"]["lesion_volume_mm3"]["total_median_per_case"] == 0.0
    assert all(v is None for v in fp["foreground_intensity_properties_per_channel"]["0"].values())


def test_permuted_and_flipped_direction(handmade_dataset, tmp_path):
    """Image x along world -y, image y along world z, image z along world x (a sagittal-like file)."""
    case = handmade.CASES_TR[0]
    direction = (0.0, 0.0, 1.0,
                 -1.0, 0.0, 0.0,
                 0.0, 1.0, 0.0)
    for path in [*(handmade_dataset / "imagesTr").glob(f"{case}_*.nii.gz"), handmade_dataset / "labelsTr" / f"{case}.nii.gz"]:
        image = sitk.ReadImage(str(path))
        handmade.write_volume(sitk.GetArrayFromImage(image), path, image.GetOrigin(), direction=direction)

    fp = extract(handmade_dataset, tmp_path / "out")
    record = fp["cases"][case]
    sx, sy, sz = handmade.SPACING
    # NIfTI stores float32 spacings, hence approx; canonical z <- image y, y <- image x, x <- image z
    assert record["spacing_canonical"] == pytest.approx([sy, sx, sz], rel=1e-6)
    assert record["shape_canonical"] == [handmade.SHAPE[1], handmade.SHAPE[2], handmade.SHAPE[0]]
    assert fp["spacings"][0] == pytest.approx([sz, sy, sx], rel=1e-6)  # nnU-Net's key: the file's own order
    other = fp["cases"][handmade.CASES_TR[1]]
    assert other["spacing_canonical"] == pytest.approx([sz, sy, sx], rel=1e-6)
    assert record["n_lesions"] == 2
    # the same voxels in another order: the volumes do not change
    assert sorted(lesion["volume_mm3"] for lesion in record["lesions"]) == pytest.approx(
        sorted(lesion["volume_mm3"] for lesion in other["lesions"]), rel=1e-9
    )


def test_handmade_dataset(handmade_dataset, tmp_path):
    """A dataset glmil_auto did not generate: 3 int16 channels, labels 1..3 with lesion_labels [1, 3]."""
    fp = extract(handmade_dataset, tmp_path / "out", num_processes=2)
    json.dumps(fp, allow_nan=False)
    assert fp["channel_names"] == {"0": "T1c", "1": "T1n", "2": "FLAIR"}
    assert fp["num_training_cases"] == 4 and list(fp["cases"]) == handmade.CASES_TR
    assert fp["lesion_labels"] == [1, 3]
    for case, record in fp["cases"].items():
        assert record["n_lesions"] == 2  # the oedema (label 2) is not a lesion
        assert record["spacing_canonical"] == pytest.approx(list(reversed(handmade.SPACING)))
    # every label > 0 (oedema included) is nnU-Net foreground: images are ~N(300 + 100 c, 20) + 400 there
    for channel in range(3):
        properties = fp["foreground_intensity_properties_per_channel"][str(channel)]
        assert properties["mean"] == pytest.approx(700 + 100 * channel, rel=0.02)
    assert fp["groups"] == {"A": 2, "B": 2}
    assert fp["cases"][handmade.CASES_TR[2]]["group"] == "B"
    assert fp["endpoints"]["lmd"] == {"type": "binary", "n_known": 3, "n_missing": 1, "prevalence": pytest.approx(1 / 3),
                                      "n_positive": 1}
    survival = fp["endpoints"]["os"]
    assert (survival["n_known"], survival["n_missing"], survival["n_events"]) == (3, 1, 2)
    assert survival["event_rate"] == pytest.approx(2 / 3)
    assert survival["max_time"] == 700
    assert fp["clinical_features"]["age"]["missing_fraction"] == 0.25
    assert fp["clinical_features"]["sex"]["categories"] == {"F": 2, "M": 1}
    assert fp["clinical_features"]["prior_resection"]["prevalence"] == pytest.approx(1 / 3)


def test_corrupt_image_stops_naming_case_and_file(synthetic, tmp_path):
    case = RawDataset(synthetic).cases("Tr")[2]
    path = synthetic / "imagesTr" / f"{case}_0001.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    extractor = DatasetFingerprintExtractor(synthetic, num_processes=2, progress=False, output_folder=tmp_path / "out")
    extractor.total_foreground_samples = SMALL_BUDGET
    with pytest.raises(DatasetError) as caught:
        extractor.run()
    assert case in str(caught.value) and str(path) in str(caught.value)
    assert not extractor.output_file.exists()


class CrashingExtractor(DatasetFingerprintExtractor):
    """A worker that dies without raising (as when the system kills it for memory)."""

    @staticmethod
    def analyze_case(dataset_folder, case, num_foreground_samples):
        os._exit(3)


def test_dead_worker_raises_instead_of_hanging(synthetic, tmp_path):
    extractor = CrashingExtractor(synthetic, num_processes=2, progress=False, output_folder=tmp_path / "out")
    with pytest.raises(RuntimeError, match="worker process died"):
        extractor.run()


def test_cli_writes_to_preprocessed_folder(synthetic, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("glmil_raw", str(synthetic.parent))
    monkeypatch.setenv("glmil_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setattr(DatasetFingerprintExtractor, "total_foreground_samples", SMALL_BUDGET)
    assert extract_fingerprint_entry(["-d", "1", "-np", "1", "--no_progress"]) == 0
    output = tmp_path / "preprocessed" / "Dataset001_SynthBrainMets" / "dataset_fingerprint.json"
    assert output.is_file() and str(output) in capsys.readouterr().out
    fingerprint = json.loads(output.read_text())
    assert fingerprint["num_training_cases"] == 5

    # an existing fingerprint of the same cases is reused (as nnU-Net does); --clean recomputes it
    fingerprint["marker"] = True
    output.write_text(json.dumps(fingerprint))
    assert extract_fingerprint_entry(["-d", "SynthBrainMets", "--no_progress"]) == 0
    assert json.loads(output.read_text())["marker"] is True
    assert extract_fingerprint_entry(["-d", "1", "-np", "1", "--no_progress", "--clean"]) == 0
    assert "marker" not in json.loads(output.read_text())


def test_edited_inputs_are_noticed_without_clean(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv("glmil_raw", str(synthetic.parent))
    monkeypatch.setenv("glmil_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setattr(DatasetFingerprintExtractor, "total_foreground_samples", SMALL_BUDGET)
    output = tmp_path / "preprocessed" / "Dataset001_SynthBrainMets" / "dataset_fingerprint.json"

    def run_with_marker() -> dict:
        assert extract_fingerprint_entry(["-d", "1", "-np", "1", "--no_progress"]) == 0
        fingerprint = json.loads(output.read_text())
        output.write_text(json.dumps({**fingerprint, "marker": True}))
        return fingerprint

    first = run_with_marker()
    assert extract_fingerprint_entry(["-d", "1", "-np", "1", "--no_progress"]) == 0
    assert json.loads(output.read_text())["marker"] is True  # nothing changed: reused

    table = pd.read_csv(synthetic / "clinicalTr.csv", dtype=str, keep_default_na=False)
    table.loc[0, "age"] = str(int(table.loc[0, "age"]) + 1)  # a clinical value
    table.to_csv(synthetic / "clinicalTr.csv", index=False)
    second = run_with_marker()
    assert "marker" not in second and second["inputs_sha256"] != first["inputs_sha256"]

    label = sorted((synthetic / "labelsTr").glob("*.nii.gz"))[1]  # a mask edited in place
    image = sitk.ReadImage(str(label))
    array = sitk.GetArrayFromImage(image)
    array[array > 0] = 0
    edited = sitk.GetImageFromArray(array)
    edited.CopyInformation(image)
    sitk.WriteImage(edited, str(label))
    assert extract_fingerprint_entry(["-d", "1", "-np", "1", "--no_progress"]) == 0
    third = json.loads(output.read_text())
    assert "marker" not in third and third["cases"][label.name[:-7]]["n_lesions"] == 0


class SlowLastCaseExtractor(DatasetFingerprintExtractor):
    """The last case takes 2 s longer than the others."""

    @staticmethod
    def analyze_case(dataset_folder, case, num_foreground_samples):
        import time

        if case == RawDataset(dataset_folder).cases("Tr")[-1]:
            time.sleep(2.0)
        return DatasetFingerprintExtractor.analyze_case(dataset_folder, case, num_foreground_samples)


def test_the_progress_bar_moves_as_each_case_finishes(synthetic, tmp_path, monkeypatch):
    import time

    import glmil_auto.experiment_planning.fingerprint.extractor as extractor_module

    updates: list[float] = []

    class RecordingBar:
        def __init__(self, *args, **kwargs):
            pass

        def update(self, n=1):
            updates.append(time.monotonic())

        def close(self):
            pass

    monkeypatch.setattr(extractor_module, "tqdm", RecordingBar)
    extract(synthetic, tmp_path / "out", num_processes=2, extractor_class=SlowLastCaseExtractor)
    assert len(updates) == 5
    assert updates[-1] - updates[0] > 1.0  # the first cases were counted while the slow one still ran


def test_cli_reports_missing_dataset_and_bad_data(synthetic, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("glmil_raw", str(synthetic.parent))
    monkeypatch.setenv("glmil_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setattr(DatasetFingerprintExtractor, "total_foreground_samples", SMALL_BUDGET)
    assert extract_fingerprint_entry(["-d", "7", "--no_progress"]) == 2
    label = next((synthetic / "labelsTr").glob("*.nii.gz"))
    label.write_bytes(b"not an image")
    assert extract_fingerprint_entry(["-d", "1", "-np", "1", "--no_progress"]) == 1
    assert label.name in capsys.readouterr().err


def test_lesion_intensity_in_brain_standard_deviations_is_the_brain_z_score_of_lesion_voxels():
    import numpy as np

    from glmil_auto.experiment_planning.fingerprint.case_fingerprint import lesion_intensity_in_brain_sd

    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 10.0, (6, 6, 6))
    mask = np.zeros((6, 6, 6), bool)
    mask[2:4, 2:4, 2:4] = True
    image[mask] = 150.0 + np.arange(8)
    out = lesion_intensity_in_brain_sd(image, mask, {"mean": 100.0, "std": 10.0})
    z = (150.0 + np.arange(8) - 100.0) / 10.0
    assert out["median"] == pytest.approx(np.median(z))
    assert out["percentile_00_5"] == pytest.approx(np.percentile(z, 0.5))
    assert out["percentile_99_5"] == pytest.approx(np.percentile(z, 99.5))
    assert lesion_intensity_in_brain_sd(image, np.zeros_like(mask), {"mean": 1.0, "std": 1.0}) is None
