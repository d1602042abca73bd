"""glmil_convert_dicom_rt on real DICOM files written with pydicom: an oblique, anisotropic T1c
series, a FLAIR on another grid in the same frame of reference, an RTSTRUCT with spheres, a ring
(hole), two islands on one slice and structures that must be ignored; a patient with two studies
(and an MR-only follow-up); the clinical join; then verification, planning and a few training steps."""

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
    generate_uid,
    linear_intensity,
    rotation,
    sphere_contours,
    write_mr_series,
    write_rtstruct,
)
from glmil_auto.dataset.verify import verify_dataset  # noqa: E402
from glmil_auto.dataset_conversion.dicom_rt_entry import convert_dicom_rt_entry  # noqa: E402

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
    return {"root": root, "clinical": clinical, "truth": truth, "raw": root.parent / "raw"}


def _argv(cohort: dict, *extra: str, dataset_id: int = 510, name: str = "DicomRT") -> list[str]:
    return ["-i", str(cohort["root"]), "-o", str(cohort["raw"]), "-d", str(dataset_id), "-n", name,
            "--channel", r"T1c=post|gd", "--channel", "FLAIR=flair", "--structures", "^gtv",
            "--clinical", str(cohort["clinical"]), "--patient-column", "MRN", "--feature", "age=numeric",
            "--binary-endpoint", "local_failure", "--survival-endpoint", "os=os_months,os_event",
            "--no_progress", *extra]


@pytest.fixture(scope="module")
def converted(cohort) -> Path:
    assert convert_dicom_rt_entry(_argv(cohort)) == 0
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
