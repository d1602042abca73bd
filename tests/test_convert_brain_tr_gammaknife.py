"""dataset_conversion/Dataset104_BrainTRGammaKnife.py on a fake source tree in the published layout:
DICOM MR + RTSTRUCT (+ RTPLAN / RTDOSE) per course written with pydicom, the clinical spreadsheet
with its lesion_level and course_level sheets; recurrence rolled up to the course and written per
lesion to lesionsTr.csv (a point inside each lesion's ROI), the prescription dose from the table,
the RTPLAN or the RTDOSE, verification, planning and a few training steps with the lesion table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conversion_training import plan_preprocess_and_train
from dicom_test_data import (
    Grid,
    Sphere,
    generate_uid,
    linear_intensity,
    sphere_contours,
    write_mr_series,
    write_rtdose,
    write_rtplan,
    write_rtstruct,
)
from glmil_auto.dataset.entry_points import verify_dataset_entry  # noqa: E402
from glmil_auto.dataset.verify import verify_dataset  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "dataset_conversion" / "Dataset104_BrainTRGammaKnife.py"
DATASET = "Dataset104_BrainTRGammaKnife"
T1C = linear_intensity(300.0, (1.0, 0.5, -0.5))


def _load_script():
    spec = importlib.util.spec_from_file_location("dataset104_brain_tr_gammaknife", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _course(root: Path, patient: str, date: str, lesions: dict[str, float], plan_doses: list[float] | None = None,
            dose_inside_gy: float | None = None, offset: float = 0.0) -> dict[str, Sphere]:
    """One course: an axial T1 post-contrast, an RTSTRUCT with one ROI per lesion (plus a Skull ROI that
    is not a lesion), and optionally an RTPLAN and an RTDOSE (``dose_inside_gy`` in a box around the lesions)."""
    folder = root / "Brain-TR-GammaKnife" / patient / date
    study = generate_uid()
    grid = Grid((36, 36, 14), (1.0, 1.0, 2.0), np.zeros(3)).centred_on(np.array([offset, 0.0, 0.0]))
    t1c = write_mr_series(folder / "MR", patient, study, date, "T1 AX POST GK", grid, T1C)
    spheres = {name: Sphere(grid.index_to_world(np.array([8.0 + 10.0 * i, 17.0, 7.0])), radius)
               for i, (name, radius) in enumerate(lesions.items())}
    structures = {name: sphere_contours(s, grid) for name, s in spheres.items()}
    structures["Skull"] = sphere_contours(Sphere(grid.index_to_world(np.array([17.0, 17.0, 7.0])), 30.0), grid)
    rtstruct = write_rtstruct(folder / "RTSTRUCT" / "1-1.dcm", patient, study, date, t1c, structures)
    plan = write_rtplan(folder / "RTPLAN" / "1-1.dcm", patient, study, date, rtstruct, plan_doses) if plan_doses else None
    if dose_inside_gy is not None:
        dose_grid = Grid((20, 20, 12), (2.0, 2.0, 2.5), np.zeros(3)).centred_on(grid.index_to_world(np.array([17.5, 17.5, 6.5])))
        box_low, box_high = grid.index_to_world(np.array([0.0, 8.0, 2.0])), grid.index_to_world(np.array([35.0, 26.0, 12.0]))

        def dose(points: np.ndarray) -> np.ndarray:
            inside = np.all((points >= box_low - 1e-6) & (points <= box_high + 1e-6), axis=-1)
            return np.where(inside, dose_inside_gy, 2.0)

        write_rtdose(folder / "RTDOSE" / "1-1.dcm", patient, study, date, t1c.frame, dose_grid, dose, plan)
    return spheres


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> dict:
    """The download folder and, per case id, the spheres its lesion ROIs were drawn from."""
    root = tmp_path_factory.mktemp("gk") / "Brain-TR-GammaKnife-download"
    truth = {
        "GK_001": _course(root, "GK_001", "20180305", {"Lesion 1": 5.0, "Lesion 2": 4.0}, plan_doses=[24.0]),
        "GK_002": _course(root, "GK_002", "20180411", {"Lesion 1": 6.0}, plan_doses=[22.0, 21.0]),
        "GK_003": _course(root, "GK_003", "20180520", {"Lesion 1": 5.0, "Lesion 2": 3.5}, dose_inside_gy=16.0),
        "GK_004": _course(root, "GK_004", "20180602", {"Lesion 1": 4.5, "Lesion 2": 4.0}),
        "GK_005_20190101": _course(root, "GK_005", "20190101", {"Lesion 1": 5.0}),
        "GK_005_20190701": _course(root, "GK_005", "20190701", {"Lesion 1": 4.0, "Lesion 2": 3.0, "Lesion 3": 3.0},
                                   offset=4.0),
    }
    lesions = pd.DataFrame([
        # patient, course, lesion, dose, recurrence
        ("1", "1", "Lesion 1", "20", "No"), ("1", "1", "Lesion 2", "18", "Yes"),
        ("2", "1", "Lesion 1", "", "no"),  # dose from the RTPLAN (smallest target: 21 Gy)
        ("3", "1", "Lesion 1", "", "stable"), ("3", "1", "Lesion 2", "", "0"),  # dose from the RTDOSE
        ("4", "1", "Lesion 1", "", ""), ("4", "1", "Lesion 2", "", "no"),  # one unknown, none recurred
        ("5", "1", "Lesion 1", "24", "recurrence"),
        ("5", "2", "Lesion 1", "20", "No"), ("5", "2", "Lesion 2", "20", "No"), ("5", "2", "Lesion 3", "18", "No"),
        ("9", "1", "Lesion 1", "20", "Yes"),  # a patient without images
    ], columns=["unique_pt_id", "Course #", "Lesion Name", "Dose (Gy)", "Recurrence"])
    courses = pd.DataFrame([("1", "1", "61", "F", "Lung"), ("2", "1", "54", "M", "Melanoma"),
                            ("3", "1", "70", "F", "Breast"), ("4", "1", "48", "M", "Lung"),
                            ("5", "1", "66", "F", "Renal"), ("5", "2", "66", "F", "Renal")],
                           columns=["unique_pt_id", "Course #", "Age", "Gender", "Primary Diagnosis"])
    _write_sheets(root / "Brain_TR_GammaKnife_Clinical_Information.xlsx", lesions, courses)
    return {"root": root, "truth": truth, "lesions": lesions, "courses": courses}


def _write_sheets(path: Path, lesions: pd.DataFrame, courses: pd.DataFrame) -> None:
    with pd.ExcelWriter(path) as writer:
        lesions.to_excel(writer, sheet_name="lesion_level", index=False)
        courses.to_excel(writer, sheet_name="course_level", index=False)


@pytest.fixture(scope="module")
def source(source_tree) -> Path:
    return source_tree["root"]


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("gk_raw")
    assert _load_script().main(["-i", str(source), "-o", str(raw), "--no_progress"]) == 0
    return raw / DATASET


def test_recurrence_rolled_up_and_dose_kept(converted):
    table = pd.read_csv(converted / "clinicalTr.csv", dtype=str, keep_default_na=False).set_index("case_id")
    assert sorted(table.index) == ["GK_001", "GK_002", "GK_003", "GK_004", "GK_005_20190101", "GK_005_20190701"]
    assert table["local_failure"].to_dict() == {"GK_001": "1.0", "GK_002": "0.0", "GK_003": "0.0", "GK_004": "",
                                                "GK_005_20190101": "1.0", "GK_005_20190701": "0.0"}
    assert table.loc["GK_005_20190701", "n_lesions_treated"] == "3.0"
    assert table.loc["GK_005_20190701", "course"] == "2" and table.loc["GK_005_20190101", "course"] == "1"
    dose = table["prescription_dose_gy"].to_dict()
    source = table["prescription_dose_source"].to_dict()
    assert (float(dose["GK_001"]), source["GK_001"]) == (18.0, "table")  # the table wins over the RTPLAN's 24 Gy
    assert (float(dose["GK_002"]), source["GK_002"]) == (21.0, "rtplan")
    assert source["GK_003"] == "rtdose" and float(dose["GK_003"]) == pytest.approx(16.0, abs=0.05)
    assert (dose["GK_004"], source["GK_004"]) == ("", "")
    assert table.loc["GK_002", "primary"] == "Melanoma" and table.loc["GK_003", "age"] == "70"
    assert table.loc["GK_005_20190101", "patient_id"] == table.loc["GK_005_20190701", "patient_id"] == "GK_005"
    spec = json.loads((converted / "dataset.json").read_text())
    assert spec["endpoints"] == {"local_failure": {"type": "binary", "aggregation": "any_lesion"}}
    assert spec["clinical_features"] == {"n_lesions_treated": "numeric", "prescription_dose_gy": "numeric",
                                         "age": "numeric", "sex": "categorical", "primary": "categorical"}
    assert spec["patient_column"] == "patient_id" and spec["channel_names"] == {"0": "T1c"}
    assert verify_dataset(converted, progress=False).ok


def test_each_lesion_is_an_instance_and_the_skull_is_ignored(converted):
    import SimpleITK as sitk
    from scipy import ndimage

    for case, expected in (("GK_001", 2), ("GK_005_20190701", 3)):
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(converted / "labelsTr" / f"{case}.nii.gz")))
        assert ndimage.label(mask > 0, structure=np.ones((3, 3, 3)))[1] == expected
        assert mask.sum() < 0.05 * mask.size  # not the 30 mm Skull ROI


def test_recurrence_cells():
    module = _load_script()
    assert [module.recurrence_value(v) for v in ("Yes", "no", "Recurrence", "stable", "1", "0")] == [1, 0, 1, 0, 1, 0]
    assert np.isnan(module.recurrence_value("")) and np.isnan(module.recurrence_value("pending"))


def test_missing_column_names_the_sheet(source, tmp_path, capsys):
    broken = tmp_path / "broken.xlsx"
    with pd.ExcelWriter(broken) as writer:
        pd.DataFrame({"unique_pt_id": ["1"], "Course #": ["1"]}).to_excel(writer, sheet_name="lesion_level", index=False)
    assert _load_script().main(["-i", str(source), "-o", str(tmp_path / "raw"), "--table", str(broken),
                                "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert "lesion_level" in err and "Recurrence" in err and "broken.xlsx" in err


def test_plan_preprocess_and_a_few_training_steps(converted, tmp_path, monkeypatch):
    assert (converted / "lesionsTr.csv").is_file()  # the round trip runs with the lesion table
    trainer = plan_preprocess_and_train(104, converted.parent, tmp_path, monkeypatch)
    assert len(trainer.log) == 1 and np.isfinite(trainer.log[0]["train"]["loss"])


def _lesions(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "lesionsTr.csv", dtype=str, keep_default_na=False)


def test_lesion_level_recurrence_is_written_per_lesion(converted):
    lesions = _lesions(converted)
    rows = sorted(zip(lesions["case_id"], lesions["roi_name"], lesions["local_failure"], lesions["course"],
                      lesions["dose_gy"]))
    assert rows == [
        ("GK_001", "Lesion 1", "0", "1", "20"), ("GK_001", "Lesion 2", "1", "1", "18"),
        ("GK_002", "Lesion 1", "0", "1", ""),
        ("GK_003", "Lesion 1", "0", "1", ""), ("GK_003", "Lesion 2", "0", "1", ""),
        ("GK_004", "Lesion 1", "", "1", ""), ("GK_004", "Lesion 2", "0", "1", ""),
        ("GK_005_20190101", "Lesion 1", "1", "1", "24"),
        ("GK_005_20190701", "Lesion 1", "0", "2", "20"), ("GK_005_20190701", "Lesion 2", "0", "2", "20"),
        ("GK_005_20190701", "Lesion 3", "0", "2", "18"),
    ]
    # the rolled-up case label agrees with its lesions (any lesion recurred -> 1)
    table = pd.read_csv(converted / "clinicalTr.csv", dtype=str, keep_default_na=False).set_index("case_id")
    for case, own in lesions.groupby("case_id"):
        values = set(own["local_failure"])
        expected = "1.0" if "1" in values else "0.0" if values == {"0"} else ""
        assert table.loc[case, "local_failure"] == expected, case
    log = json.loads((converted / "dicom_conversion.json").read_text())
    assert any(w.startswith("WARNING [patient 9 |") and "no converted study" in w for w in log["warnings"])


def test_each_lesion_point_lies_in_its_roi(converted, source_tree):
    import SimpleITK as sitk

    for _, row in _lesions(converted).iterrows():
        image = sitk.ReadImage(str(converted / "labelsTr" / f"{row['case_id']}.nii.gz"))
        mask = sitk.GetArrayFromImage(image)
        index = image.TransformPhysicalPointToIndex((float(row["x_mm"]), float(row["y_mm"]), float(row["z_mm"])))
        assert mask[index[::-1]] > 0, (row["case_id"], row["roi_name"])
        centre = np.asarray(image.TransformIndexToPhysicalPoint(index))
        spheres = source_tree["truth"][row["case_id"]]
        inside = [name for name, sphere in spheres.items() if sphere.contains(centre)]
        assert inside == [row["roi_name"]], (row["case_id"], row["roi_name"], inside)


def test_verifier_accepts_the_lesion_table(converted, monkeypatch):
    monkeypatch.setenv("glmil_raw", str(converted.parent))
    assert verify_dataset_entry(["-d", "104", "-np", "1", "--no_progress"]) == 0


def test_a_lesion_name_without_its_roi_stops_the_conversion(source_tree, tmp_path, capsys):
    lesions = source_tree["lesions"].copy()
    lesions.loc[1, "Lesion Name"] = "Lesion 7"  # patient 1, course 1: its RTSTRUCT has Lesion 1 and Lesion 2
    table = tmp_path / "renamed.xlsx"
    _write_sheets(table, lesions, source_tree["courses"])
    raw = tmp_path / "raw"
    assert _load_script().main(["-i", str(source_tree["root"]), "-o", str(raw), "--table", str(table),
                                "--no_progress"]) == 1
    line = next(line for line in capsys.readouterr().err.splitlines() if "Lesion 7" in line)
    assert line.startswith("ERROR [patient GK_001 |") and "renamed.xlsx" in line
    assert "not among the selected structures ['Lesion 1', 'Lesion 2']" in line
    assert not (raw / DATASET).exists()
