"""dataset_conversion/Dataset104_BrainTRGammaKnife.py on a fake TCIA download in the verified layout
(tests/brain_tr_sources.py): metadata.csv with File Location, studies of MR + RTSTRUCT + RTDOSE
(no RTPLAN), the workbook with course_level before lesion_level; several courses of one patient,
a multi-fraction course, follow-up shorter than the horizon, a non-metastasis course, doubtful
lesion names. Checks the cases, the clinical columns, the endpoint at its horizon, the lesion
table and the verifier's matching of it, the warnings, and planning and a few training steps."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brain_tr_sources import COURSES, LESIONS, FakeStudy, write_download, write_metadata, write_study, write_workbook
from conversion_training import plan_preprocess_and_train
from glmil_auto.dataset.entry_points import verify_dataset_entry
from glmil_auto.dataset.verify import verify_dataset
from glmil_auto.dataset_conversion.brain_tr_download import read_download
from glmil_auto.dataset_conversion.brain_tr_lesion_names import AMBIGUOUS, DUPLICATE, EXACT, LOOSE, NONE, NUMBER
from glmil_auto.dataset_conversion.brain_tr_lesion_names import match_course, match_roi
from glmil_auto.dataset_conversion.brain_tr_tables import (
    diagnosis_kind,
    outcome_at_horizon,
    recurrence_of,
    vocabulary_options,
)

SCRIPT = Path(__file__).resolve().parents[1] / "dataset_conversion" / "Dataset104_BrainTRGammaKnife.py"
DATASET = "Dataset104_BrainTRGammaKnife"
CASES = ["GK_101", "GK_102_20181201", "GK_102_20200110", "GK_103", "GK_104", "GK_105"]
NAN = float("nan")


def _load_script():
    spec = importlib.util.spec_from_file_location("dataset104_brain_tr_gammaknife", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _load_script().main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gk") / "Brain-TR-GammaKnife-download"
    return {"root": root, "studies": write_download(root)}


@pytest.fixture(scope="module")
def run(download, tmp_path_factory) -> dict:
    raw = tmp_path_factory.mktemp("gk_raw")
    code, out, err = _run(["-i", str(download["root"]), "-o", str(raw), "--no_progress"])
    assert code == 0, err
    return {"folder": raw / DATASET, "out": out, "err": err}


@pytest.fixture(scope="module")
def converted(run) -> Path:
    return run["folder"]


def _clinical(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "clinicalTr.csv", dtype=str, keep_default_na=False).set_index("case_id")


def _lesions(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "lesionsTr.csv", dtype=str, keep_default_na=False)


def _warnings(folder: Path, patient: str) -> list[str]:
    log = json.loads((folder / "dicom_conversion.json").read_text())
    return [w for w in log["warnings"] if w.startswith(f"WARNING [patient {patient} |")]


def test_cases_and_clinical_columns(converted):
    table = _clinical(converted)
    assert sorted(table.index) == CASES  # GK_102's second course (a meningioma) is skipped
    assert table["course"].to_dict() == {"GK_101": "1", "GK_102_20181201": "1", "GK_102_20200110": "3",
                                         "GK_103": "1", "GK_104": "1", "GK_105": "1"}
    assert table.loc["GK_102_20181201", "patient_id"] == table.loc["GK_102_20200110", "patient_id"] == "GK_102"
    assert table.loc["GK_104", "patient_id"] == "GK_104"  # unique_pt_id 104 matched by its digits
    assert table["age"].astype(float).to_dict() == {"GK_101": 61, "GK_102_20181201": 54, "GK_102_20200110": 56,
                                                    "GK_103": 70, "GK_104": 48, "GK_105": 66}
    assert table["sex"].to_dict() == {"GK_101": "F", "GK_102_20181201": "M", "GK_102_20200110": "M",
                                      "GK_103": "F", "GK_104": "M", "GK_105": "F"}  # "Male" read as M
    assert table.loc["GK_102_20200110", "primary"] == "Melanoma" and table.loc["GK_103", "primary"] == "Breast"
    assert table["fractions"].astype(float).to_dict() == {c: 5.0 if c == "GK_102_20200110" else 1.0 for c in CASES}
    assert table["multi_fraction"].astype(float).to_dict() == {c: float(c == "GK_102_20200110") for c in CASES}
    assert table["n_lesions_treated"].astype(float).to_dict() == {"GK_101": 2, "GK_102_20181201": 1,
                                                                  "GK_102_20200110": 2, "GK_103": 4, "GK_104": 2,
                                                                  "GK_105": 1}
    dose = table["prescription_dose_gy"].astype(float).to_dict()  # D98 of each course's RTDOSE
    assert dose == pytest.approx({"GK_101": 20.0, "GK_102_20181201": 18.0, "GK_102_20200110": 25.0,
                                  "GK_103": 16.0, "GK_104": 22.0, "GK_105": 24.0}, abs=0.05)
    assert set(table["prescription_dose_source"]) == {"rtdose_d98"}
    spec = json.loads((converted / "dataset.json").read_text())
    assert spec["clinical_features"] == {"n_lesions_treated": "numeric", "fractions": "numeric",
                                         "multi_fraction": "binary", "age": "numeric", "sex": "categorical",
                                         "primary": "categorical", "prescription_dose_gy": "numeric"}
    assert spec["endpoints"] == {"local_failure": {"type": "binary", "aggregation": "any_lesion"}}
    assert spec["patient_column"] == "patient_id" and spec["channel_names"] == {"0": "T1c"}
    assert "within 12 months" in spec["description"]


def test_local_failure_at_the_horizon(converted):
    table = _clinical(converted)
    assert table["local_failure"].to_dict() == {
        "GK_101": "1.0",  # a recurrence at 6 months
        "GK_102_20181201": "0.0",  # followed 20 months without recurrence
        "GK_102_20200110": "",  # 6 months without recurrence (unknown), a recurrence at 18 months (0)
        "GK_103": "1.0",  # the lesion that recurred could not be tied to a ROI, but it recurred
        "GK_104": "",  # an mri_type not understood
        "GK_105": "0.0",
    }
    assert table["followup_months"].astype(float).to_dict() == {"GK_101": 14, "GK_102_20181201": 20,
                                                                "GK_102_20200110": 18, "GK_103": 15,
                                                                "GK_104": 24, "GK_105": 30}
    lesions = _lesions(converted)
    rows = sorted(zip(lesions["case_id"], lesions["roi_name"], lesions["local_failure"],
                      lesions["local_failure_time"], lesions["followup_months"], lesions["course"],
                      lesions["fractions"]))
    assert rows == [  # the time of an unknown outcome is left empty; followup_months keeps the duration
        ("GK_101", "Lesion 1", "1", "6", "6", "1", "1"), ("GK_101", "Lesion 2", "0", "14", "14", "1", "1"),
        ("GK_102_20181201", "Lesion 1", "0", "20", "20", "1", "1"),
        ("GK_102_20200110", "Lesion 1", "", "", "6", "3", "5"),
        ("GK_102_20200110", "Lesion 2", "0", "18", "18", "3", "5"),
        ("GK_103", "Lesion 1", "0", "13", "13", "1", "1"), ("GK_103", "Lesion 2", "0", "15", "15", "1", "1"),
        ("GK_104", "Lesion 1", "0", "24", "24", "1", "1"), ("GK_104", "Lesion 2", "", "", "24", "1", "1"),
        ("GK_105", "Lesion 1", "0", "30", "30", "1", "1"),
    ]
    assert lesions.set_index(["case_id", "roi_name"]).loc[("GK_103", "Lesion 1"), "lesion_name_nrrd"] == "lesion_1"


def test_verifier_matches_every_lesion_row(converted, download, monkeypatch):
    report = verify_dataset(converted, progress=False)  # a lesion row matching no lesion would be an error
    assert report.ok and [str(p) for p in report.problems] == []
    import SimpleITK as sitk

    truth = {case: study for (patient, date), study in download["studies"].items()
             for case in CASES if case in (patient, f"{patient}_{date}")}
    for _, row in _lesions(converted).iterrows():
        image = sitk.ReadImage(str(converted / "labelsTr" / f"{row['case_id']}.nii.gz"))
        index = image.TransformPhysicalPointToIndex((float(row["x_mm"]), float(row["y_mm"]), float(row["z_mm"])))
        assert sitk.GetArrayFromImage(image)[index[::-1]] > 0, (row["case_id"], row["roi_name"])
        centre = np.asarray(image.TransformIndexToPhysicalPoint(index))
        inside = [name for name, s in truth[row["case_id"]].spheres.items() if s.contains(centre)]
        assert inside == [row["roi_name"]], (row["case_id"], row["roi_name"], inside)
    monkeypatch.setenv("glmil_raw", str(converted.parent))
    assert verify_dataset_entry(["-d", "104", "-np", "1", "--no_progress"]) == 0


def test_each_lesion_is_an_instance_and_the_skull_is_ignored(converted):
    import SimpleITK as sitk
    from scipy import ndimage

    for case, expected in (("GK_101", 2), ("GK_103", 4)):
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(converted / "labelsTr" / f"{case}.nii.gz")))
        assert ndimage.label(mask > 0, structure=np.ones((3, 3, 3)))[1] == expected
        assert mask.sum() < 0.05 * mask.size  # not the 30 mm Skull ROI


def test_doubtful_lesion_names_are_reported_per_patient(converted):
    (line,) = _warnings(converted, "GK_103")  # one warning for the patient, naming every doubtful row
    assert "course 1, lesion_level row 8 (Lesion # '1', name 'lesion_1'): matched ROI 'Lesion 1'" in line
    assert "row 10 (Lesion # '3', name 'Met_3'): ambiguous, candidate ROIs ['Lt Met 3', 'Rt Met 3']; left out" in line
    assert "row 11 (Lesion # '4', name 'Lesion 4'): no ROI matches; left out" in line
    assert "['Lesion 1', 'Lesion 2', 'Lt Met 3', 'Rt Met 3']" in line and "row 9" not in line
    assert _warnings(converted, "GK_101") == []  # exact names: nothing to report
    assert sorted(_lesions(converted).query("case_id == 'GK_103'")["roi_name"]) == ["Lesion 1", "Lesion 2"]


def test_unknown_values_and_skipped_courses_are_warned(converted):
    (mri_type,) = _warnings(converted, "104")
    assert "lesion_level row 13: column 'mri_type': value 'pending review' not understood, left unknown" in mri_type
    (skipped,) = [w for w in _warnings(converted, "GK_102") if "skipped" in w]
    assert "course 2 (study 20190305): column 'Diagnosis (Only want Mets)' value 'Meningioma'" in skipped
    (no_images,) = _warnings(converted, "GK_109")
    assert "no converted study of that course" in no_images


def test_output_ends_with_the_conversion_report(run):
    lines = run["out"].strip().splitlines()
    assert lines[0] == f"Converted {DATASET}:" and lines[-1].startswith("Wrote and verified")
    report = "\n".join(lines)
    assert "cases: 6 Tr" in report and "channels: 0 T1c" in report
    assert "local_failure (binary, any lesion): 4 known, positive 2" in report
    assert "lesion table: 10 lesions in 6 cases; local_failure positive 1" in report
    assert "pending review" in run["err"]  # the warnings go to stderr


def test_horizon_option_ever(download, tmp_path):
    code, _, err = _run(["-i", str(download["root"]), "-o", str(tmp_path), "--horizon-months", "0",
                         "--mri-type", "pending review=no_recurrence", "--no_progress"])
    assert code == 0, err
    table = _clinical(tmp_path / DATASET)
    assert table.loc["GK_102_20200110", "local_failure"] == "1.0"  # the recurrence at 18 months counts
    assert table.loc["GK_104", "local_failure"] == "0.0"  # 'pending review' read as no recurrence
    assert "ever" in json.loads((tmp_path / DATASET / "dataset.json").read_text())["description"]


def test_outcome_at_the_horizon():
    assert outcome_at_horizon(1.0, 6, 12) == 1.0 and outcome_at_horizon(1.0, 12, 12) == 1.0
    assert outcome_at_horizon(1.0, 18, 12) == 0.0  # recurred after the horizon: 0 at the horizon
    assert outcome_at_horizon(0.0, 12, 12) == 0.0 and np.isnan(outcome_at_horizon(0.0, 6, 12))
    assert np.isnan(outcome_at_horizon(1.0, NAN, 12)) and np.isnan(outcome_at_horizon(NAN, 30, 12))
    assert outcome_at_horizon(1.0, 18, None) == 1.0 and outcome_at_horizon(0.0, 1, None) == 0.0


def test_value_vocabularies():
    words = ("recurrence", "Recurrence", "stable", "Follow-up", "follow_up")
    assert [recurrence_of(v) for v in words] == [1, 1, 0, 0, 0]
    assert np.isnan(recurrence_of("")) and recurrence_of("pending") is None
    assert recurrence_of("pending", vocabulary_options(["Pending=recurrence"], ("recurrence",), "--mri-type")) == 1
    assert [diagnosis_kind(v) for v in ("Mets", "brain metastasis", "yes", "", "Meningioma", "non-mets", "no")] == \
        ["metastasis"] * 4 + ["other"] * 3
    assert diagnosis_kind("Lymphoma") is None
    with pytest.raises(ValueError, match="--diagnosis"):
        vocabulary_options(["Lymphoma"], ("metastasis", "other"), "--diagnosis")


def test_lesion_name_rules():
    rois = ["Lesion 1", "Lesion 11", "Lt Met 3", "Rt Met 3", "met-3"]
    assert match_roi("Lesion 1", "1", rois).how == EXACT
    assert (match_roi("lesion_11", "", rois).roi, match_roi("lesion_11", "", rois).how) == ("Lesion 11", LOOSE)
    assert match_roi("GK_4871_L_Lesion1.nrrd", "", rois).roi == "Lesion 1"  # NRRD file name
    assert match_roi("target", "11", rois).roi == "Lesion 11"  # by Lesion # alone, not 'Lesion 1'
    assert match_roi("target", "11", rois).how == NUMBER
    assert (match_roi("Met_3", "3", rois).how, match_roi("Met_3", "3", rois).roi) == (LOOSE, "met-3")
    assert (match_roi("x", "3", rois[:4]).how, match_roi("x", "3", rois[:4]).candidates) == (AMBIGUOUS,
                                                                                             ("Lt Met 3", "Rt Met 3"))
    assert match_roi("MET 3", "", ["Met 3", "met_3"]).how == AMBIGUOUS  # several ROIs by name
    assert match_roi("MET 3", "3", ["Met 3", "met_3"]).how == AMBIGUOUS  # which Lesion # cannot tell apart
    assert match_roi("Lesion 7", "7", rois).how == NONE
    rows = [_row("Lesion 1", "1"), _row("lesion_1", "2")]
    assert [m.how for m in match_course(rows, rois)] == [DUPLICATE, DUPLICATE]
    assert match_course([_row("Met 3", "")], ["Met 3", "met  3"])[0].how == AMBIGUOUS  # equal up to case and spaces


def _row(name: str, number: str):
    from glmil_auto.dataset_conversion.brain_tr_tables import LesionRow

    return LesionRow(2, "GK_1", 1, number, name, "", "stable", 0.0, 20.0, 1.0, 0.0)


def test_series_from_metadata_or_a_header_search(tmp_path):
    study = FakeStudy("GK_201", "20180101", {"Lesion 1": 4.0}, 20.0)
    rows = write_study(tmp_path, study, backslashes=True)
    searched, notes = read_download(tmp_path)  # no metadata.csv: every file is read
    assert notes == [] and searched.metadata is None
    write_metadata(tmp_path, rows + [{**rows[0], "File Location": "./Brain-TR-GammaKnife/GK_201/gone/1-1"}])
    listed, notes = read_download(tmp_path)
    assert listed.metadata == tmp_path / "metadata.csv" and listed.folders == 3
    assert [str(n) for n in notes] == [f"WARNING [patient GK_201 | {tmp_path / 'metadata.csv'}]: File Location "
                                       "'./Brain-TR-GammaKnife/GK_201/gone/1-1' (MR) is not a folder of the "
                                       "download: series left out"]
    for found in (searched, listed):
        assert [len(s.files) for s in found.inventory.series.values()] == [14]
        assert len(found.inventory.rtstructs) == 1 and [d.modality for d in found.doses] == ["RTDOSE"]


def test_missing_column_names_the_sheet(download, tmp_path):
    broken = write_workbook(tmp_path / "broken.xlsx", LESIONS, COURSES)
    with pd.ExcelWriter(broken, mode="a", if_sheet_exists="replace") as writer:  # lesion_level without mri_type
        pd.read_excel(broken, sheet_name="lesion_level").drop(columns="mri_type").to_excel(
            writer, sheet_name="lesion_level", index=False)
    code, _, err = _run(["-i", str(download["root"]), "-o", str(tmp_path / "raw"), "--table", str(broken),
                         "--no_progress"])
    assert code == 1
    assert "sheet 'lesion_level' lacks column(s) ['mri_type']" in err and "broken.xlsx" in err


def test_no_workbook_is_an_error(tmp_path):
    code, _, err = _run(["-i", str(tmp_path), "-o", str(tmp_path / "raw"), "--no_progress"])
    assert code == 1 and "no .xlsx workbook with sheets 'lesion_level' and 'course_level'" in err


def test_plan_preprocess_and_a_few_training_steps(converted, tmp_path, monkeypatch):
    assert (converted / "lesionsTr.csv").is_file()  # the round trip runs with the lesion table
    trainer = plan_preprocess_and_train(104, converted.parent, tmp_path, monkeypatch)
    assert len(trainer.log) == 1 and np.isfinite(trainer.log[0]["train"]["loss"])
