"""glmil_convert_folder: one folder per patient, channels on other grids resampled onto the first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from conversion_sources import image, rendered_cases, save
from glmil_auto.dataset.image_io import Geometry, read_image
from glmil_auto.dataset.verify import verify_dataset
from glmil_auto.dataset_conversion.folder_entry import convert_folder_entry
from glmil_auto.dataset_conversion.resample_to_reference import resample_channel, resample_mask

N_PATIENTS = 3


def world_ramp(geometry: Geometry) -> np.ndarray:
    """A linear function of the world position, 100 + x + 2y - 0.5z (mm): linear interpolation
    reproduces it exactly, so any error in resampling geometry shows as a value error."""
    idx = np.indices(geometry.shape).reshape(3, -1).T
    world = geometry.index_to_world(idx)
    return (100 + world @ np.array([1.0, 2.0, -0.5])).reshape(geometry.shape).astype(np.float32)


def other_grid(reference: Geometry, spacing_factor: float, shift_mm: tuple[float, float, float]) -> Geometry:
    """A grid covering about the same field of view with another spacing and origin (same direction)."""
    spacing = tuple(s * spacing_factor for s in reference.spacing)
    shape = tuple(int(np.ceil(n / spacing_factor)) + 2 for n in reference.shape)
    origin = np.asarray(reference.origin) + np.asarray(shift_mm) - reference.matrix @ np.ones(3) * spacing_factor
    return Geometry(shape, spacing, tuple(origin), reference.direction)


def fine_grid(reference: Geometry, k: int = 3) -> Geometry:
    """``k`` times finer (k odd): voxel 3i+1 of the fine grid has the centre of voxel i."""
    spacing = tuple(s / k for s in reference.spacing)
    origin = np.asarray(reference.origin) - reference.matrix @ np.full(3, (k - 1) / (2 * k))
    return Geometry(tuple(n * k for n in reference.shape), spacing, tuple(origin), reference.direction)


@pytest.fixture
def source(tmp_path) -> Path:
    """``P00x/`` folders with ``t1c.nii.gz`` (reference), a FLAIR ramp on a coarser, shifted grid in a
    sub-folder and the lesion mask on a 3x finer grid; plus a clinical CSV."""
    root = tmp_path / "source"
    rows = []
    for i, (spec, rc) in enumerate(rendered_cases(N_PATIENTS)):
        folder = root / f"P{i:03d}"
        save(rc.t1c, rc.grid, folder / f"P{i:03d}_T1C_post.nii.gz")
        flair_grid = other_grid(rc.grid, 1.5, (2.5, -1.7, 3.1))
        save(world_ramp(flair_grid), flair_grid, folder / "other" / "flair_ax.nii.gz")
        fine = fine_grid(rc.grid)
        upsampled = np.repeat(np.repeat(np.repeat(rc.mask, 3, 0), 3, 1), 3, 2)
        save(upsampled, fine, folder / "lesions_seg.nii.gz", sitk.sitkUInt8)
        rows.append({"patient": f"P{i:03d}", "age": spec.clinical["age"], "centre": spec.plan.centre,
                     "os_months": f"{spec.os_months:.2f}", "os_event": spec.os_event,
                     "local_failure": spec.outcomes["local_failure"]})
    pd.DataFrame(rows).to_csv(root.parent / "clinical.csv", index=False)
    return root


def _args(source: Path, raw: Path, *extra: str) -> list[str]:
    return ["-i", str(source), "-o", str(raw), "-d", "201", "-n", "Folders", "--channel", "T1c=*t1c*.nii.gz",
            "--channel", "FLAIR=re:flair.*\\.nii\\.gz$", "--mask", "*seg*", "--no_progress", *extra]


def test_folder_conversion_resamples_onto_the_first_channel(source, tmp_path):
    raw = tmp_path / "raw"
    code = convert_folder_entry(_args(source, raw, "--clinical", str(tmp_path / "clinical.csv"), "--patient-column",
                                      "patient", "--feature", "age=numeric", "--binary-endpoint", "local_failure",
                                      "--survival-endpoint", "os=os_months,os_event", "--group-column", "centre"))
    assert code == 0
    folder = raw / "Dataset201_Folders"
    assert verify_dataset(folder, progress=False).ok
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "T1c", "1": "FLAIR"} and spec["numTraining"] == N_PATIENTS
    assert spec["endpoints"] == {"local_failure": {"type": "binary"},
                                 "os": {"type": "survival", "time": "os_months", "event": "os_event"}}
    assert spec["clinical_features"] == {"age": "numeric"} and spec["group_column"] == "centre"
    table = pd.read_csv(folder / "clinicalTr.csv", dtype=str)
    assert list(table["case_id"]) == [f"P{i:03d}" for i in range(N_PATIENTS)]

    for i, (_, rc) in enumerate(rendered_cases(N_PATIENTS)):
        case = f"P{i:03d}"
        t1c, g0 = read_image(folder / "imagesTr" / f"{case}_0000.nii.gz")
        flair, g1 = read_image(folder / "imagesTr" / f"{case}_0001.nii.gz")
        mask, g2 = read_image(folder / "labelsTr" / f"{case}.nii.gz")
        for g in (g0, g1, g2):  # every file on the reference (T1c) grid
            assert g.shape == rc.grid.shape
            np.testing.assert_allclose(g.spacing, rc.grid.spacing, rtol=1e-5)
            np.testing.assert_allclose(g.origin, rc.grid.origin, atol=1e-3)
            np.testing.assert_allclose(g.direction, rc.grid.direction, atol=1e-6)
        np.testing.assert_array_equal(t1c, rc.t1c)
        # the FLAIR ramp, sampled at the reference voxel centres, is the ramp of those centres
        inside = flair != 0
        assert inside.mean() > 0.8
        np.testing.assert_allclose(flair[inside], world_ramp(rc.grid)[inside], atol=0.05)
        # nearest neighbour from the 3x finer grid gives back the original mask exactly
        np.testing.assert_array_equal(mask, rc.mask)
        assert mask.dtype == np.uint8


def test_resampling_keeps_label_values_and_bspline_geometry(tmp_path):
    _, rc = rendered_cases(N_PATIENTS)[0]
    reference = image(rc.t1c, rc.grid)
    labels = (rc.mask.astype(np.uint8) * 3)
    labels[labels.shape[0] // 2, labels.shape[1] // 2, :] = 7
    coarse = other_grid(rc.grid, 1.3, (1.0, 2.0, -0.7))
    moved = resample_mask(image(labels, rc.grid), image(np.zeros(coarse.shape, np.float32), coarse))
    assert set(np.unique(sitk.GetArrayFromImage(moved))) <= {0, 3, 7}
    ramp_grid = other_grid(rc.grid, 0.8, (0.3, 0.3, 0.3))
    bspline = sitk.GetArrayFromImage(resample_channel(image(world_ramp(ramp_grid), ramp_grid), reference, "bspline"))
    interior = np.zeros(bspline.shape, bool)
    interior[3:-3, 3:-3, 3:-3] = True
    np.testing.assert_allclose(bspline[interior], world_ramp(rc.grid)[interior], atol=0.05)


def test_bad_patient_folders_are_all_reported_with_exit_1(source, tmp_path, capsys):
    (source / "P001" / "P001_T1C_post.nii.gz").rename(source / "P001" / "notes.nii.gz")
    save(np.zeros((4, 4, 4), np.float32), Geometry((4, 4, 4), (1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
         source / "P002" / "P002_t1c_copy.nii.gz")
    assert convert_folder_entry(_args(source, tmp_path / "raw")) == 1
    err = capsys.readouterr().err
    assert "case P001" in err and "no file matches the T1c pattern" in err and str(source / "P001") in err
    assert "case P002" in err and "2 files match the T1c pattern" in err
    assert not (tmp_path / "raw" / "Dataset201_Folders" / "dataset.json").exists()
    # skipping incomplete folders still refuses the ambiguous one
    assert convert_folder_entry(_args(source, tmp_path / "raw", "--skip-incomplete", "--overwrite")) == 1
    (source / "P002" / "P002_t1c_copy.nii.gz").unlink()
    assert convert_folder_entry(_args(source, tmp_path / "raw", "--skip-incomplete", "--overwrite")) == 0
    assert "skipped" in capsys.readouterr().err
    assert json.loads((tmp_path / "raw" / "Dataset201_Folders" / "dataset.json").read_text())["numTraining"] == 2


def test_undeclared_mask_values_and_usage_errors(source, tmp_path, capsys):
    _, rc = rendered_cases(N_PATIENTS)[0]
    save((rc.mask * 2).astype(np.uint8), rc.grid, source / "P000" / "lesions_seg.nii.gz", sitk.sitkUInt8)
    assert convert_folder_entry(_args(source, tmp_path / "raw")) == 1
    err = capsys.readouterr().err
    assert "mask values [2] are not declared" in err and "lesions_seg.nii.gz" in err and "case P000" in err
    # declaring the value fixes it; a second run without --overwrite is refused (exit 2)
    assert convert_folder_entry(_args(source, tmp_path / "raw", "--labels", "background=0", "met=1", "met2=2",
                                      "--overwrite")) == 0
    assert convert_folder_entry(_args(source, tmp_path / "raw")) == 2
    assert "already exists" in capsys.readouterr().err
    assert convert_folder_entry(_args(source, tmp_path / "raw2", "--channel", "T2")) == 2
    assert convert_folder_entry(_args(tmp_path / "missing", tmp_path / "raw2")) == 2
    assert convert_folder_entry(_args(source, tmp_path / "raw2", "--feature", "age=numeric")) == 2


def test_raw_writer_checks_cases_and_tables(tmp_path):
    from glmil_auto.dataset.problems import DatasetError
    from glmil_auto.dataset_conversion.raw_writer import RawDatasetWriter
    from glmil_auto.dataset_conversion.source_files import read_table

    _, rc = rendered_cases(N_PATIENTS)[0]
    t1c, mask = image(rc.t1c, rc.grid), image(rc.mask, rc.grid)
    writer = RawDatasetWriter(tmp_path, 202, "Writer", ["T1c"], {"background": 0, "metastasis": 1}, [1])
    shifted = image(rc.t1c, Geometry(rc.grid.shape, rc.grid.spacing, tuple(o + 1 for o in rc.grid.origin),
                                     rc.grid.direction))
    with pytest.raises(DatasetError, match="channel T1c is not on the mask's grid: origin"):
        writer.add_case("A", [shifted], mask)
    with pytest.raises(DatasetError, match="case id '../A'"):
        writer.add_case("../A", [t1c], mask)
    writer.add_case("A", [t1c], mask)
    writer.add_case("B", [t1c], mask, split="Ts")
    with pytest.raises(DatasetError, match="already written"):
        writer.add_case("A", [t1c], mask)
    with pytest.raises(DatasetError, match="case has no clinical row"):
        writer.finish({"Tr": pd.DataFrame({"case_id": ["A"]}), "Ts": pd.DataFrame({"case_id": ["C"]})}, {}, {})
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['patient'\]"):
        writer.finish({"Tr": pd.DataFrame({"case_id": ["A"]})}, {}, {}, patient_column="patient")
    with pytest.raises(FileExistsError):
        RawDatasetWriter(tmp_path, 202, "Writer", ["T1c"], {"background": 0, "metastasis": 1}, [1])
    folder = writer.finish({"Tr": pd.DataFrame({"case_id": ["A"], "patient": ["p1"]}),
                            "Ts": pd.DataFrame({"case_id": ["B"], "patient": ["p2"]})}, {}, {}, patient_column="patient")
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["numTraining"] == 1 and spec["numTest"] == 1 and spec["patient_column"] == "patient"
    (tmp_path / "semicolons.csv").write_text("patient;age\n007;61\n")
    assert read_table(tmp_path / "semicolons.csv").to_dict("records") == [{"patient": "007", "age": "61"}]
