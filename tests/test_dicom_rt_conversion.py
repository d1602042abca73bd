"""glmil_convert_dicom_rt on real DICOM files written with pydicom: an oblique, anisotropic T1c
series, a FLAIR on another grid in the same frame of reference, an RTSTRUCT with spheres, a ring
(hole), two islands on one slice and structures that must be ignored; a patient with two studies
(and an MR-only follow-up); the clinical join; the lesion-level outcome table (lesionsTr.csv with
a point inside each lesion, case labels made consistent with the lesions, every error); then
verification, planning and a few training steps with the lesion table present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conversion_training import plan_preprocess_and_train
from dicom_test_data import (
    Grid,
    Sphere,
    box_contours,
    generate_uid,
    linear_intensity,
    rotation,
    sphere_contours,
    write_mr_series,
    write_rtstruct,
)
from glmil_auto.dataset.entry_points import verify_dataset_entry  # noqa: E402
from glmil_auto.dataset.verify import verify_dataset  # noqa: E402
from glmil_auto.dataset_conversion.dicom_rt_entry import convert_dicom_rt_entry  # noqa: E402
from glmil_auto.dataset_conversion.lesion_outcome_table import roi_key  # noqa: E402
from glmil_auto.dataset_conversion.lesion_points import point_inside  # noqa: E402

DATASET = "Dataset510_DicomRT"
T1C = linear_intensity(200.0, (2.0, -1.0, 0.5))
FLAIR = linear_intensity(500.0, (1.0, 2.0, -1.0))
OBLIQUE = rotation(20, -10, 15)


def _simple_patient(root: Path, patient: str, study_date: str, centre: np.ndarray, spacing: tuple[float, float, float],
                    radii: list[float], separate_rt_study: bool = False) -> dict:
    """An axial T1c + a FLAIR on a coarser grid, one GTV per radius (spread along x)."""
    study = generate_uid()
    grid = Grid((32, 32, 12), spacing, np.zeros(3)).centred_on(centre)
    t1c = write_mr_series(root / patient / study_date / "t1c", patient, study, study_date, "AX T1 POST GD", grid, T1C)
    flair_grid = Grid((24, 24, 10), (1.6 * spacing[0], 1.6 * spacing[1], 1.5 * spacing[2]), np.zeros(3)).centred_on(centre)
    write_mr_series(root / patient / study_date / "flair", patient, study, study_date, "AX FLAIR", flair_grid, FLAIR,
                    frame=t1c.frame)
    spheres = {}
    for number, radius in enumerate(radii):
        index = np.array([8.0 + 14.0 * number, 14.0, 5.5])
        spheres[f"GTV{number + 1}"] = Sphere(grid.index_to_world(index), radius)
    rt_study = generate_uid() if separate_rt_study else study  # planning systems often export into a new study
    write_rtstruct(root / patient / study_date / "rt" / "rtstruct.dcm", patient, rt_study, study_date, t1c,
                   {name: sphere_contours(s, grid) for name, s in spheres.items()})
    return {"grid": grid, "spheres": spheres, "study": study}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dicom") / "dicom"
    truth: dict = {}
    # P001: oblique, anisotropic T1c; FLAIR axial on another grid, same frame of reference
    study = generate_uid()
    grid = Grid((40, 40, 16), (0.9, 1.0, 2.5), np.zeros(3), OBLIQUE).centred_on(np.array([5.0, -10.0, 30.0]))
    t1c = write_mr_series(root / "P001" / "t1c", "P001", study, "20210105", "T1 MPRAGE post contrast", grid, T1C)
    flair_grid = Grid((50, 50, 40), (1.3, 1.3, 1.5), np.zeros(3)).centred_on(np.array([5.0, -10.0, 30.0]))
    write_mr_series(root / "P001" / "flair", "P001", study, "20210105", "Sag FLAIR 3D", flair_grid, FLAIR,
                    frame=t1c.frame)
    write_mr_series(root / "P001" / "loc", "P001", study, "20210105", "localizer",
                    Grid((16, 16, 3), (2.0, 2.0, 5.0), np.zeros(3)), T1C, frame=t1c.frame)
    world = grid.index_to_world
    spheres = {
        "GTV_1": Sphere(world(np.array([10.0, 12.0, 5.0])), 6.0),
        "GTV_ring": Sphere(world(np.array([28.0, 12.0, 8.0])), 7.5, inner=3.5),
        "GTV_pair_a": Sphere(world(np.array([10.0, 30.0, 10.0])), 4.0),
        "GTV_pair_b": Sphere(world(np.array([28.0, 30.0, 10.0])), 4.0),
    }
    structures = {
        "GTV_1": sphere_contours(spheres["GTV_1"], grid),
        "GTV_ring": sphere_contours(spheres["GTV_ring"], grid),
        # two islands of one structure: two contours on each of its slices
        "gtv pair": sphere_contours(spheres["GTV_pair_a"], grid) + sphere_contours(spheres["GTV_pair_b"], grid),
        "Brainstem": sphere_contours(Sphere(world(np.array([20.0, 21.0, 13.0])), 5.0), grid),
        "PTV_1": sphere_contours(Sphere(spheres["GTV_1"].centre, 8.0), grid),
    }
    write_rtstruct(root / "P001" / "rt" / "RS.dcm", "P001", study, "20210105", t1c, structures)
    truth["P001"] = {"grid": grid, "flair_grid": flair_grid, "spheres": spheres,
                     "brainstem": Sphere(world(np.array([20.0, 21.0, 13.0])), 5.0)}
    # P002: two treated studies (the second exported into a study of its own) and an MR-only follow-up
    truth["P002_20200101"] = _simple_patient(root, "P002", "20200101", np.array([0.0, 0.0, 0.0]), (1.0, 1.0, 2.0), [5.0])
    truth["P002_20200601"] = _simple_patient(root, "P002", "20200601", np.array([0.0, 0.0, 0.0]), (1.0, 1.0, 2.0),
                                             [4.0, 3.0], separate_rt_study=True)
    follow_up = generate_uid()
    write_mr_series(root / "P002" / "20201201", "P002", follow_up, "20201201", "AX T1 POST GD",
                    Grid((16, 16, 4), (1.0, 1.0, 2.0), np.zeros(3)), T1C)
    for number, patient in enumerate(("P003", "P004", "P005", "P006")):
        spacing = (0.9 + 0.1 * number, 0.9 + 0.1 * number, 2.0 + 0.5 * (number % 2))
        truth[patient] = _simple_patient(root, patient, f"2019010{number + 1}", np.array([3.0 * number, 0.0, 10.0]),
                                         spacing, [4.0 + number] + ([3.0] if number % 2 else []))
    table = pd.DataFrame({
        "MRN": ["P001", "P002", "P003", "P004", "P005", "P006", "P999"],
        "age": ["61", "55", "70", "48", "66", "59", "80"],
        "local_failure": ["1", "0", "1", "0", "1", "0", "1"],
        "os_months": ["12.5", "30", "8", "24", "15", "40", "3"],
        "os_event": ["1", "0", "1", "0", "1", "0", "1"],
    })
    clinical = root.parent / "clinical.csv"
    table.to_csv(clinical, index=False)
    lesions = root.parent / "lesions.csv"
    pd.DataFrame(LESION_ROWS, columns=["MRN", "date", "roi_name", "local_failure", "local_failure_time", "reader"]
                 ).to_csv(lesions, index=False)
    return {"root": root, "clinical": clinical, "lesions": lesions, "truth": truth, "raw": root.parent / "raw"}


# the lesion-level outcomes of the cohort; clinical local_failure: P001 1, P002 0, P003 1, P004 0, P005 1, P006 0
LESION_ROWS = [
    ("P001", "2021-01-05", "GTV_1", "1", "6.5", "AB"),
    ("P001", "2021-01-05", "GTV_Ring", "0", "12", "AB"),  # ROI names match ignoring case
    ("P001", "2021-01-05", "gtv pair", "0", "12", "AB"),  # two islands: two lesions, two rows
    ("P002", "2020-01-01", "GTV1", "0", "24", "CD"),
    ("P002", "2020-06-01", "GTV1", "", "", "CD"),
    ("P002", "2020-06-01", "GTV2", "1", "3", "CD"),  # clinical 0 -> 1
    ("P003", "20190101", "GTV1", "0", "10", "AB"),  # its only lesion is 0: clinical 1 -> 0
    ("P004", "20190102", "GTV1", "0", "8", "AB"),  # GTV2 has no row: the clinical 0 stays
    ("P006", "2019-01-04", "GTV1", "yes", "4", "AB"),  # clinical 0 -> 1
]
EXPECTED_CASE_LABELS = {"P001": "1", "P002_20200101": "0", "P002_20200601": "1", "P003": "0", "P004": "0",
                        "P005": "1", "P006": "1"}
LESION_OPTIONS = ["--lesion-patient-column", "MRN", "--lesion-date-column", "date", "--lesion-endpoint",
                  "local_failure"]


def _argv(cohort: dict, *extra: str, dataset_id: int = 510, name: str = "DicomRT") -> list[str]:
    return ["-i", str(cohort["root"]), "-o", str(cohort["raw"]), "-d", str(dataset_id), "-n", name,
            "--channel", r"T1c=post|gd", "--channel", "FLAIR=flair", "--structures", "^gtv",
            "--clinical", str(cohort["clinical"]), "--patient-column", "MRN", "--feature", "age=numeric",
            "--binary-endpoint", "local_failure", "--survival-endpoint", "os=os_months,os_event",
            "--no_progress", *extra]


@pytest.fixture(scope="module")
def converted(cohort) -> Path:
    assert convert_dicom_rt_entry(_argv(cohort, "--lesion-outcomes", str(cohort["lesions"]), *LESION_OPTIONS)) == 0
    return cohort["raw"] / DATASET


def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_geometry_of_the_oblique_anisotropic_reference(converted, cohort):
    grid = cohort["truth"]["P001"]["grid"]
    for path in (converted / "imagesTr" / "P001_0000.nii.gz", converted / "imagesTr" / "P001_0001.nii.gz",
                 converted / "labelsTr" / "P001.nii.gz"):
        image = sitk.ReadImage(str(path))
        assert image.GetSize() == grid.size
        np.testing.assert_allclose(image.GetSpacing(), grid.spacing, rtol=1e-5)
        np.testing.assert_allclose(image.GetOrigin(), grid.origin, atol=1e-3)
        np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), grid.direction, atol=1e-5)
    values, image = _read(converted / "imagesTr" / "P001_0000.nii.gz")
    for index in ((0, 0, 0), (39, 0, 0), (0, 39, 15), (17, 5, 9)):  # the test's grid convention is ITK's
        np.testing.assert_allclose(image.TransformContinuousIndexToPhysicalPoint(index),
                                   grid.index_to_world(np.array(index, dtype=float)), atol=1e-3)
    # the T1c voxels where they were written: slices ordered by position, not by InstanceNumber
    np.testing.assert_allclose(values, T1C(grid.voxel_centres()), atol=0.3)


def test_masks_match_the_spheres(converted, cohort):
    truth = cohort["truth"]["P001"]
    grid: Grid = truth["grid"]
    centres = grid.voxel_centres()
    mask, _ = _read(converted / "labelsTr" / "P001.nii.gz")
    assert set(np.unique(mask)) == {0, 1}
    expected = np.zeros(mask.shape, bool)
    for sphere in truth["spheres"].values():
        expected |= sphere.contains(centres)
    assert _dice(mask > 0, expected) > 0.95
    components, count = ndimage.label(mask > 0, structure=np.ones((3, 3, 3)))
    assert count == 4  # GTV_1, the ring, the two islands of "gtv pair"; Brainstem and PTV_1 ignored
    for name, sphere in truth["spheres"].items():
        own = sphere.contains(centres)
        label = np.bincount(components[own]).argmax() if own.any() else 0
        component = components == label
        assert label > 0 and _dice(component, own) > 0.95, name
        centroid_zyx = np.argwhere(component).mean(axis=0)
        expected_index = grid.world_to_index(sphere.centre)[::-1]
        assert np.all(np.abs(centroid_zyx - expected_index) < 1.0), (name, centroid_zyx, expected_index)
    # the hole of the ring is empty
    ring = truth["spheres"]["GTV_ring"]
    hole = np.linalg.norm(centres - ring.centre, axis=-1) < ring.inner - 0.5
    assert hole.sum() > 10 and mask[hole].sum() == 0
    # the unselected Brainstem contributes nothing
    brainstem_only = truth["brainstem"].contains(centres) & ~expected
    assert brainstem_only.sum() > 20 and mask[brainstem_only].sum() == 0


def test_second_channel_is_resampled_onto_the_reference_grid(converted, cohort):
    grid = cohort["truth"]["P001"]["grid"]
    flair, _ = _read(converted / "imagesTr" / "P001_0001.nii.gz")
    # FLAIR is linear in world position, so linear resampling gives it back at the T1c voxel centres
    np.testing.assert_allclose(flair, FLAIR(grid.voxel_centres()), atol=0.5)
    # the coarser FLAIR of the simple patients too
    truth = cohort["truth"]["P003"]
    flair, image = _read(converted / "imagesTr" / "P003_0001.nii.gz")
    assert image.GetSize() == truth["grid"].size
    inside = flair != 0
    assert inside.mean() > 0.5
    np.testing.assert_allclose(flair[inside], FLAIR(truth["grid"].voxel_centres())[inside], atol=0.5)


def test_case_ids_clinical_join_and_verification(converted, cohort):
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (converted / "imagesTr").glob("*_0000.nii.gz"))
    assert cases == ["P001", "P002_20200101", "P002_20200601", "P003", "P004", "P005", "P006"]
    spec = json.loads((converted / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "T1c", "1": "FLAIR"}
    assert spec["lesion_labels"] == [1] and spec["labels"] == {"background": 0, "metastasis": 1}
    assert spec["patient_column"] == "patient_id" and spec["numTraining"] == 7
    assert spec["clinical_features"] == {"age": "numeric"}
    assert spec["endpoints"]["os"] == {"type": "survival", "time": "os_months", "event": "os_event"}
    table = pd.read_csv(converted / "clinicalTr.csv", dtype=str).set_index("case_id")
    assert table.loc["P002_20200101", "patient_id"] == table.loc["P002_20200601", "patient_id"] == "P002"
    assert table.loc["P002_20200601", "age"] == "55" and table.loc["P001", "os_months"] == "12.5"
    assert "P999" not in set(table["patient_id"])
    # the second P002 study's structure set (exported into a study of its own) joined its MR study
    mask, _ = _read(converted / "labelsTr" / "P002_20200601.nii.gz")
    assert ndimage.label(mask > 0, structure=np.ones((3, 3, 3)))[1] == 2
    log = json.loads((converted / "dicom_conversion.json").read_text())
    assert any("20201201" in w and "no RTSTRUCT" in w for w in log["warnings"])
    assert any("P999" in w for w in log["warnings"])
    record = next(c for c in log["cases"] if c["case_id"] == "P001")
    assert set(record["structure_voxels"]) == {"GTV_1", "GTV_ring", "gtv pair"}
    assert verify_dataset(converted, progress=False).ok


def test_simple_patients_masks(converted, cohort):
    for case in ("P002_20200101", "P004", "P005"):
        truth = cohort["truth"][case]
        mask, _ = _read(converted / "labelsTr" / f"{case}.nii.gz")
        expected = np.zeros(mask.shape, bool)
        for sphere in truth["spheres"].values():
            expected |= sphere.contains(truth["grid"].voxel_centres())
        assert _dice(mask > 0, expected) > 0.95, case


def test_bad_input_gives_one_line_errors(cohort, capsys, tmp_path):
    raw = ["-o", str(tmp_path / "raw"), "-d", "511", "-n", "Bad", "--no_progress"]
    base = ["-i", str(cohort["root"]), *raw]
    assert convert_dicom_rt_entry(base + ["--channel", "T1c=post|gd", "--channel", "T2=t2w", "--structures", "gtv"]) == 1
    err = capsys.readouterr().err
    assert "ERROR [patient P001 |" in err and "no MR series of the study matches channel T2" in err
    # every study's problem is listed in one run, one line each
    assert sum(line.startswith("ERROR [patient ") and "channel T2" in line for line in err.splitlines()) == 7
    assert convert_dicom_rt_entry(base + ["--channel", "T1c=post|gd", "--structures", "^CTV"]) == 1
    err = capsys.readouterr().err
    assert "no structure name matches /^CTV/" in err and "Brainstem" in err
    assert convert_dicom_rt_entry(base + ["--channel", "T1c=(", "--structures", "gtv"]) == 2
    assert "bad regular expression" in capsys.readouterr().err
    assert convert_dicom_rt_entry(base + ["--channel", "T1c=post|gd", "--channel", "FLAIR=flair|loc",
                                          "--structures", "gtv"]) == 1
    err = capsys.readouterr().err  # FLAIR and the localizer both match, and neither is the referenced series
    assert "ERROR [patient P001 |" in err and "2 MR series match channel FLAIR" in err
    partial = tmp_path / "partial.csv"
    pd.read_csv(cohort["clinical"], dtype=str).query("MRN != 'P004'").to_csv(partial, index=False)
    assert convert_dicom_rt_entry(base + ["--channel", "T1c=post|gd", "--structures", "gtv", "--clinical",
                                          str(partial), "--patient-column", "MRN"]) == 1
    err = capsys.readouterr().err
    assert "ERROR [patient P004 |" in err and "no row in the clinical table" in err
    assert not (tmp_path / "raw" / "Dataset511_Bad").exists()  # nothing written for bad input
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not DICOM")
    assert convert_dicom_rt_entry(["-i", str(tmp_path / "empty"), *raw, "--channel", "T1c=.", "--structures", "."]) == 1
    assert "no study with an RTSTRUCT and MR series found" in capsys.readouterr().err


def test_other_frame_of_reference_needs_register(tmp_path, capsys):
    """A FLAIR from another frame of reference (a scanner shift of a few mm): refused without
    --register; with it, a rigid registration brings the blob back onto the T1c one."""
    root = tmp_path / "dicom"
    blob = lambda points: 100.0 + 400.0 * np.exp(-np.sum((points - np.array([4.0, -3.0, 2.0])) ** 2, -1) / 60.0) \
        + 200.0 * np.exp(-np.sum((points - np.array([-8.0, 6.0, -4.0])) ** 2, -1) / 30.0)
    shift = np.array([3.0, -2.0, 2.0])
    study = generate_uid()
    grid = Grid((32, 32, 20), (1.2, 1.2, 1.5), np.zeros(3)).centred_on(np.zeros(3))
    t1c = write_mr_series(root / "t1c", "R1", study, "20220202", "T1 post", grid, blob)
    write_mr_series(root / "flair", "R1", study, "20220202", "FLAIR", grid, lambda p: blob(p + shift))
    write_rtstruct(root / "rs.dcm", "R1", study, "20220202", t1c,
                   {"GTV": sphere_contours(Sphere(np.array([4.0, -3.0, 2.0]), 5.0), grid)})
    argv = ["-i", str(root), "-o", str(tmp_path / "raw"), "-d", "512", "-n", "Reg", "--channel", "T1c=post",
            "--channel", "FLAIR=flair", "--structures", "gtv", "--no_progress"]
    assert convert_dicom_rt_entry(argv) == 1
    assert "--register" in capsys.readouterr().err
    assert convert_dicom_rt_entry(argv + ["--register"]) == 0
    flair, _ = _read(tmp_path / "raw" / "Dataset512_Reg" / "imagesTr" / "R1_0001.nii.gz")
    t1, _ = _read(tmp_path / "raw" / "Dataset512_Reg" / "imagesTr" / "R1_0000.nii.gz")
    peak_flair = np.unravel_index(np.argmax(flair), flair.shape)
    peak_t1 = np.unravel_index(np.argmax(t1), t1.shape)
    assert np.all(np.abs(np.subtract(peak_flair, peak_t1)) <= 1)


def test_plan_preprocess_and_a_few_training_steps(converted, tmp_path, monkeypatch):
    """The round trip with the lesion table present: converted -> verified -> planned and
    preprocessed -> trained."""
    assert (converted / "lesionsTr.csv").is_file()
    trainer = plan_preprocess_and_train(510, converted.parent, tmp_path, monkeypatch)
    assert len(trainer.log) == 1 and np.isfinite(trainer.log[0]["train"]["loss"])
    splits = json.loads((tmp_path / "preprocessed" / DATASET / "splits_final.json").read_text())
    for fold in splits:  # the two P002 studies stay together
        assert not ({"P002_20200101", "P002_20200601"} & set(fold["train"]) and
                    {"P002_20200101", "P002_20200601"} & set(fold["val"]))


def test_touching_structures_stay_separate_lesions():
    from glmil_auto.dataset_conversion.contour_lesion_mask import lesion_mask

    a = np.zeros((10, 12, 12), bool)
    b = np.zeros_like(a)
    a[2:8, 2:6, 2:8] = True
    b[2:8, 6:10, 2:8] = True  # face to face with a
    overlapping = np.zeros_like(a)
    overlapping[3:5, 4:8, 3:5] = True  # inside a and b: nothing of its own away from them
    out = lesion_mask({"GTV1": a, "GTV2": b, "GTV3": overlapping})
    components, count = ndimage.label(out.mask, structure=np.ones((3, 3, 3)))
    assert count == 2  # GTV1 and GTV2 apart; GTV3 has no voxel of its own
    assert out.voxels["GTV1"] == a.sum() and 0 < out.voxels["GTV2"] < b.sum() and out.voxels["GTV3"] == 0
    assert any("GTV2" in n and "cleared" in n for n in out.notes)
    assert any("GTV3" in n and "overlaps" in n for n in out.notes)


def test_clinical_join_per_patient_and_study_date():
    from types import SimpleNamespace

    from glmil_auto.dataset_conversion.dicom_clinical_join import join_clinical
    from glmil_auto.dataset_conversion.dicom_errors import DicomConversionError

    plans = [SimpleNamespace(case_id="P1_20200101", patient_id="P1", study_date="20200101"),
             SimpleNamespace(case_id="P1_20200601", patient_id="P1", study_date="20200601")]
    table = pd.DataFrame({"id": ["P1", "P1"], "date": ["2020-06-01", "2020-01-01"], "kps": ["70", "90"]})
    joined, warnings = join_clinical(plans, table, "id", "date")
    assert joined.set_index("case_id")["kps"].to_dict() == {"P1_20200101": "90", "P1_20200601": "70"}
    assert not warnings
    with pytest.raises(DicomConversionError, match="several rows"):
        join_clinical(plans, table, "id")  # one row per patient expected without a date column


# ----------------------------------------------------------------------------- lesion-level outcomes


def _roi_spheres(truth: dict, roi: str) -> list[Sphere]:
    """The spheres a ROI of the fake cohort was drawn from ("gtv pair" is two islands)."""
    if roi_key(roi) == "gtv pair":
        return [truth["spheres"]["GTV_pair_a"], truth["spheres"]["GTV_pair_b"]]
    return [sphere for name, sphere in truth["spheres"].items() if roi_key(name) == roi_key(roi)]


def _within(sphere: Sphere, point: np.ndarray, tolerance_mm: float) -> bool:
    distance = float(np.linalg.norm(point - sphere.centre))
    return sphere.inner - tolerance_mm <= distance <= sphere.radius + tolerance_mm if sphere.inner > 0 else \
        distance <= sphere.radius + tolerance_mm


def _lesions(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "lesionsTr.csv", dtype=str, keep_default_na=False)


def test_lesion_table_has_a_row_per_lesion(converted):
    lesions = _lesions(converted)
    assert list(lesions.columns[:6]) == ["case_id", "patient_id", "roi_name", "x_mm", "y_mm", "z_mm"]
    rows = sorted(zip(lesions["case_id"], lesions["roi_name"], lesions["local_failure"], lesions["local_failure_time"]))
    assert rows == sorted([
        ("P001", "GTV_1", "1", "6.5"), ("P001", "GTV_Ring", "0", "12"),
        ("P001", "gtv pair", "0", "12"), ("P001", "gtv pair", "0", "12"),
        ("P002_20200101", "GTV1", "0", "24"), ("P002_20200601", "GTV1", "", ""), ("P002_20200601", "GTV2", "1", "3"),
        ("P003", "GTV1", "0", "10"), ("P004", "GTV1", "0", "8"), ("P006", "GTV1", "1", "4"),
    ])
    assert set(lesions["reader"]) == {"AB", "CD"}  # other columns of the source table are kept
    assert (lesions.set_index("case_id").loc["P002_20200601", "patient_id"] == "P002").all()
    pair = lesions[lesions["roi_name"] == "gtv pair"]
    assert pair["lesion_component"].nunique() == 2  # one row per island


def test_each_point_lies_inside_its_roi_in_the_labels_file(converted, cohort):
    for _, row in _lesions(converted).iterrows():
        mask, image = _read(converted / "labelsTr" / f"{row['case_id']}.nii.gz")
        index = image.TransformPhysicalPointToIndex((float(row["x_mm"]), float(row["y_mm"]), float(row["z_mm"])))
        assert mask[index[::-1]] > 0, (row["case_id"], row["roi_name"])
        centre = np.asarray(image.TransformIndexToPhysicalPoint(index))
        spheres = _roi_spheres(cohort["truth"][row["case_id"]], row["roi_name"])
        # the ring's point is the ring voxel nearest its centroid, on the edge of the hole, whose
        # contours (72-gons) lie a few hundredths of a mm inside the analytic circle
        assert spheres and any(_within(s, centre, 0.05) for s in spheres), (row["case_id"], row["roi_name"])
        components = ndimage.label(mask > 0, structure=np.ones((3, 3, 3)))[0]
        assert components[index[::-1]] == int(row["lesion_component"])
    # the ring's centroid lies in its hole: its point is a voxel of the ring instead
    ring = cohort["truth"]["P001"]["spheres"]["GTV_ring"]
    row = _lesions(converted).set_index("roi_name").loc["GTV_Ring"]
    distance = np.linalg.norm(np.array([float(row["x_mm"]), float(row["y_mm"]), float(row["z_mm"])]) - ring.centre)
    assert ring.inner - 0.05 <= distance <= ring.radius


def test_case_labels_follow_the_lesions(converted):
    table = pd.read_csv(converted / "clinicalTr.csv", dtype=str, keep_default_na=False).set_index("case_id")
    assert table["local_failure"].to_dict() == EXPECTED_CASE_LABELS
    spec = json.loads((converted / "dataset.json").read_text())
    assert spec["endpoints"]["local_failure"] == {"type": "binary", "aggregation": "any_lesion"}
    warnings = json.loads((converted / "dicom_conversion.json").read_text())["warnings"]
    for case, given, derived in (("P002_20200601", 0, 1), ("P003", 1, 0), ("P006", 0, 1)):
        assert any(f"case {case}: the clinical table gives local_failure = {given}, its lesions" in w
                   and f"give {derived}" in w for w in warnings), case
    assert not any("case P004:" in w or "case P001:" in w for w in warnings)


def test_verifier_accepts_the_converted_lesion_table(converted, monkeypatch, tmp_path):
    import shutil

    from glmil_auto.dataset.dataset_json import load_dataset_json
    from glmil_auto.dataset.lesion_outcomes import load_lesion_table

    monkeypatch.setenv("glmil_raw", str(converted.parent))
    assert verify_dataset_entry(["-d", "510", "-np", "1", "--no_progress"]) == 0
    report = verify_dataset(converted, progress=False)
    assert report.ok and not [p for p in report.problems if "lesionsTr" in str(p)]
    typed = load_lesion_table(converted, "Tr", load_dataset_json(converted))
    assert len(typed) == 10 and typed["local_failure"].isna().sum() == 1
    # the verifier does read the table: a point moved out of its lesion, or a case label the
    # lesions contradict, fail it
    copy = tmp_path / DATASET
    shutil.copytree(converted, copy)
    lesions = _lesions(copy)
    lesions.loc[0, "x_mm"] = str(float(lesions.loc[0, "x_mm"]) + 200.0)
    lesions.to_csv(copy / "lesionsTr.csv", index=False)
    assert any("matches no lesion" in str(p) for p in verify_dataset(copy, progress=False).errors)
    shutil.copy(converted / "lesionsTr.csv", copy / "lesionsTr.csv")
    clinical = pd.read_csv(copy / "clinicalTr.csv", dtype=str, keep_default_na=False)
    clinical.loc[clinical["case_id"] == "P003", "local_failure"] = "1"
    clinical.to_csv(copy / "clinicalTr.csv", index=False)
    assert any(p.case == "P003" and "local_failure" in p.message for p in verify_dataset(copy, progress=False).errors)


def test_lesion_table_errors_name_patient_roi_and_file(cohort, tmp_path, capsys):
    raw = tmp_path / "raw"
    base = ["-i", str(cohort["root"]), "-o", str(raw), "-d", "513", "-n", "LesionErrors", "--channel", "T1c=post|gd",
            "--structures", "^gtv", "--no_progress"]

    def run(rows: list[tuple], *options: str, columns=("MRN", "date", "roi_name", "local_failure")) -> str:
        path = tmp_path / "lesions.csv"
        pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
        assert convert_dicom_rt_entry(base + ["--lesion-outcomes", str(path), "--lesion-patient-column", "MRN",
                                              *options]) == 1
        return capsys.readouterr().err

    dated = ["--lesion-date-column", "date"]
    err = run([("P001", "20210105", "Brainstem", "1"), ("P001", "20210105", "GTV_9", "0"),
               ("P999", "20210105", "GTV1", "1")], *dated)
    lines = [line for line in err.splitlines() if line.startswith("ERROR")]
    brainstem = next(line for line in lines if "'Brainstem'" in line)
    assert brainstem.startswith("ERROR [patient P001 |") and "lesions.csv" in brainstem
    assert "not among the selected structures" in brainstem and "structure set has it" in brainstem
    assert "GTV_9" in err and "RS.dcm" in err
    assert any(line.startswith("ERROR [patient P999 |") and "no converted study" in line for line in lines)
    # a patient with two converted studies needs the study date
    err = run([("P002", "20200101", "GTV1", "1")], "--lesion-endpoint", "local_failure")
    assert "ERROR [patient P002 |" in err and "no study column" in err
    err = run([("P002", "20200301", "GTV1", "1")], *dated)
    assert "ERROR [patient P002 |" in err and "no converted study with study date '20200301'" in err
    # a bad cell, a bad time, a ROI given twice
    err = run([("P003", "20190101", "GTV1", "maybe", "")], *dated,
              columns=("MRN", "date", "roi_name", "local_failure", "local_failure_time"))
    assert "ERROR [patient P003 |" in err and "ROI 'GTV1'" in err and "'maybe'" in err
    err = run([("P003", "20190101", "GTV1", "1", "-2")], *dated,
              columns=("MRN", "date", "roi_name", "local_failure", "local_failure_time"))
    assert "local_failure_time" in err and "time > 0" in err
    err = run([("P003", "20190101", "GTV1", "1"), ("P003", "2019-01-01", "gtv1", "0")], *dated)
    assert "ERROR [patient P003 |" in err and "2 rows in the lesion table" in err
    # an extra column without --lesion-endpoint is taken for an endpoint, so its cells are checked
    err = run([("P003", "20190101", "GTV1", "1", "Dr X")], *dated,
              columns=("MRN", "date", "roi_name", "local_failure", "reader"))
    assert "column 'reader' holds 'Dr X'" in err
    assert not (raw / "Dataset513_LesionErrors").exists()  # found from the headers: nothing written
    # usage
    assert convert_dicom_rt_entry(base + ["--roi-column", "ROI"]) == 2
    assert "need --lesion-outcomes" in capsys.readouterr().err
    assert convert_dicom_rt_entry(base + ["--lesion-outcomes", str(tmp_path / "missing.csv")]) == 2


@pytest.fixture(scope="module")
def touching(tmp_path_factory) -> dict:
    """One patient whose structures are boxes: GTV_A and a one-voxel slab GTV_B lying against it
    (kept touching: one lesion), GTV_C apart, GTV_D inside GTV_A (keeps no voxel of its own)."""
    root = tmp_path_factory.mktemp("touching") / "dicom"
    study = generate_uid()
    grid = Grid((24, 20, 8), (1.0, 1.0, 2.0), np.zeros(3)).centred_on(np.zeros(3))
    t1c = write_mr_series(root / "t1c", "T01", study, "20230303", "T1 post", grid, T1C)
    boxes = {"GTV_A": ((4, 6, 2), (9, 12, 5)), "GTV_B": ((10, 6, 2), (10, 12, 5)), "GTV_C": ((16, 6, 2), (19, 10, 5)),
             "GTV_D": ((5, 8, 3), (7, 10, 4))}
    write_rtstruct(root / "rs.dcm", "T01", study, "20230303", t1c,
                   {name: box_contours(grid, low, high) for name, (low, high) in boxes.items()})
    return {"root": root, "grid": grid, "boxes": boxes}


def _convert_touching(touching: dict, raw: Path, rows: list[tuple]) -> int:
    lesions = raw.parent / "touching_lesions.csv"
    pd.DataFrame(rows, columns=["patient_id", "roi_name", "local_failure", "local_failure_time"]
                 ).to_csv(lesions, index=False)
    return convert_dicom_rt_entry(["-i", str(touching["root"]), "-o", str(raw), "-d", "514", "-n", "Touching",
                                   "--channel", "T1c=post", "--structures", "^gtv", "--lesion-outcomes", str(lesions),
                                   "--no_progress"])


def test_touching_rois_with_different_outcomes_share_one_row(touching, tmp_path, capsys):
    raw = tmp_path / "raw"
    assert _convert_touching(touching, raw, [("T01", "GTV_A", "1", "5"), ("T01", "GTV_B", "0", "9"),
                                             ("T01", "GTV_C", "0", "11")]) == 0
    err = capsys.readouterr().err
    merged = next(line for line in err.splitlines() if "touch and form one lesion" in line)
    assert merged.startswith("WARNING [patient T01 |") and "rs.dcm" in merged
    assert "'GTV_A': 1" in merged and "'GTV_B': 0" in merged
    folder = raw / "Dataset514_Touching"
    lesions = _lesions(folder)
    assert sorted(zip(lesions["roi_name"], lesions["local_failure"], lesions["local_failure_time"])) == [
        ("GTV_A + GTV_B", "1", "5"), ("GTV_C", "0", "11")]  # one row per lesion, as the contract wants
    mask, image = _read(folder / "labelsTr" / "T01.nii.gz")
    for _, row in lesions.iterrows():
        index = image.TransformPhysicalPointToIndex((float(row["x_mm"]), float(row["y_mm"]), float(row["z_mm"])))
        low, high = touching["boxes"][row["roi_name"].split(" + ")[0]]
        assert mask[index[::-1]] > 0 and all(lo <= i <= hi for lo, i, hi in zip(low, index, high))
    table = pd.read_csv(folder / "clinicalTr.csv", dtype=str, keep_default_na=False)
    assert table["local_failure"].tolist() == ["1"]  # no clinical table: the case label comes from the lesions
    assert verify_dataset(folder, progress=False).ok


def test_a_roi_that_keeps_no_voxel_cannot_take_an_outcome(touching, tmp_path, capsys):
    assert _convert_touching(touching, tmp_path / "raw", [("T01", "GTV_A", "0", ""), ("T01", "GTV_D", "1", "")]) == 1
    err = capsys.readouterr().err
    assert "ERROR [patient T01 |" in err and "ROI 'GTV_D' keeps no voxel" in err and "touching_lesions.csv" in err


def test_point_inside_a_ring_is_a_ring_voxel():
    z, y, x = np.meshgrid(np.arange(5), np.arange(21), np.arange(21), indexing="ij")
    distance = np.hypot(y - 10, x - 10)
    ring = (distance >= 6) & (distance <= 8) & (z >= 1) & (z <= 3)
    index = point_inside(ring)
    assert ring[index]  # the centroid (2, 10, 10) is in the hole
    nearest = np.min(np.abs(distance[ring] - 0))  # no ring voxel is nearer to the centroid than 6
    assert abs(np.hypot(index[1] - 10, index[2] - 10) - nearest) < 1e-9 and index[0] == 2
    ball = distance <= 3
    assert point_inside(ball & (z == 2)) == (2, 10, 10)  # a convex lesion keeps its centroid's voxel


def test_point_inside_measures_distance_in_mm():
    mask = np.zeros((3, 1, 5), bool)
    mask[0, 0, 0] = mask[0, 0, 4] = mask[2, 0, 2] = True  # centroid (0.67, 0, 2): its voxel is empty
    assert point_inside(mask) == (2, 0, 2)  # nearest in voxels
    assert point_inside(mask, spacing_zyx=(3.0, 1.0, 1.0)) == (0, 0, 0)  # nearest in mm with 3 mm slices
    with pytest.raises(ValueError):
        point_inside(np.zeros((2, 2, 2), bool))
