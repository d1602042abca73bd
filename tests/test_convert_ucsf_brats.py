"""The UCSF-BMSR and BraTS-METS / Pretreat-MetsToBrain-Masks converters on fake downloads in the
verified layouts (tests/sources_ucsf_brats.py), each run with ``-i`` at the download root."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from conversion_sources import brats_labels, rendered_cases, save, script
from sources_ucsf_brats import (BRATS_ADDITIONAL, BRATS_TRAINING, PRETREAT_INNER, PRETREAT_TABLE, UCSF_TRAIN,
                                pretreat_clinical, shifted, write_brats2023_training, write_brats_case,
                                write_pretreat, write_ucsf_bmsr, write_ucsf_table)
from glmil_auto.dataset.image_io import geometry_mismatches, read_image
from glmil_auto.dataset.verify import verify_dataset

BRATS_LABELS = {"background": 0, "non_enhancing_tumour_core": 1, "surrounding_flair_hyperintensity": 2,
                "enhancing_tumour": 3}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def clinical(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "clinicalTr.csv", dtype=str, keep_default_na=False)


def convert(name: str, source: Path, raw: Path, *options: str) -> int:
    return script(name)(["-i", str(source), "-o", str(raw), "--overwrite", "--no_progress", *options])


def test_ucsf_bmsr_from_the_download_root(tmp_path, capsys):
    root, subjects = write_ucsf_bmsr(tmp_path, exams_per_patient=(2, 1, 2))
    assert convert("Dataset101_UCSFBMSR", root, tmp_path / "raw") == 0
    err = capsys.readouterr().err
    assert "TableS1_UCSF_BrainMetastases_SubjectInfo.xlsx" in err and "(sheet 'RENAMED'): 5 rows" in err
    assert "sex <- 'Sex'" in err and "age <- 'Age'" in err and "prior_surgery <- 'Prior Craniotomy" in err
    assert "1 exams also have <SubjectID>_BRaTS-seg.nii.gz" in err and "WARNING" not in err
    folder = tmp_path / "raw" / "Dataset101_UCSFBMSR"
    assert verify_dataset(folder, progress=False).ok
    spec = read_json(folder / "dataset.json")
    assert spec["channel_names"] == {"0": "T1c", "1": "T1", "2": "FLAIR", "3": "subtraction"}
    assert spec["labels"] == {"background": 0, "metastasis": 1} and spec["lesion_labels"] == [1]
    assert spec["numTraining"] == 5 and spec["patient_column"] == "patient_id" and spec["endpoints"] == {}
    assert spec["clinical_features"] == {"cancer_type": "categorical", "field_strength_t": "numeric",
                                         "sex": "categorical", "age": "numeric", "prior_surgery": "binary"}
    table = clinical(folder)
    assert list(table["case_id"]) == ["100101A", "100101B", "100102A", "100103A", "100103B"]
    assert list(table["patient_id"]) == ["100101", "100101", "100102", "100103", "100103"]
    merged = table.merge(subjects, left_on="case_id", right_on="SubjectID")  # the sheet's rows are in reverse order
    assert len(merged) == 5 and (merged["sex"] == merged["Sex"]).all()
    assert (merged["cancer_type"] == merged["CancerType"]).all()
    assert [float(v) for v in merged["field_strength_t"]] == [1.5, 3.0, 1.5, 1.5, 3.0]
    assert [float(v) for v in merged["age"]] == [float(v) for v in merged["Age"]]
    assert [float(v) for v in merged["prior_surgery"]] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert list(merged["brats_id"]) == ["", "", "BraTS-MET-00004-000", "", ""]
    for k, (_, rc) in enumerate(rendered_cases(5)):  # exams in order: channel 0 is T1post, the mask as drawn
        case = table["case_id"][k]
        np.testing.assert_array_equal(read_image(folder / "imagesTr" / f"{case}_0000.nii.gz")[0], rc.t1c)
        np.testing.assert_array_equal(read_image(folder / "labelsTr" / f"{case}.nii.gz")[0], rc.mask)

    # -i at the TRAIN folder: the same cases, the table found in its parent
    assert convert("Dataset101_UCSFBMSR", root / UCSF_TRAIN, tmp_path / "raw") == 0
    assert "(sheet 'RENAMED'): 5 rows" in capsys.readouterr().err
    assert clinical(folder).equals(table)

    # a flat folder of subject folders without a table: converted, the missing table warned
    flat = tmp_path / "flat"
    flat.mkdir()
    for subject in ("100101A", "100102A"):
        (flat / subject).symlink_to(root / UCSF_TRAIN / subject, target_is_directory=True)
    assert convert("Dataset101_UCSFBMSR", flat, tmp_path / "raw") == 0
    assert "no subject table found" in capsys.readouterr().err
    assert list(clinical(folder).columns) == ["case_id", "patient_id"]

    # a segmentation that is not binary stops the conversion, naming the file
    _, rc = rendered_cases(5)[0]
    save(brats_labels(rc.mask), rc.grid, root / UCSF_TRAIN / "100101A" / "100101A_seg.nii.gz", sitk.sitkUInt8)
    assert convert("Dataset101_UCSFBMSR", root, tmp_path / "raw") == 1
    err = capsys.readouterr().err
    assert "expected a binary segmentation" in err and "100101A_seg.nii.gz" in err


def test_ucsf_bmsr_warns_for_absent_columns_and_unknown_values(tmp_path, capsys):
    root, subjects = write_ucsf_bmsr(tmp_path, exams_per_patient=(2, 1))
    edited = subjects.drop(columns=["Sex", "Prior Craniotomy/Biopsy/Resection"]).astype(object)
    edited.loc[edited["SubjectID"] == "100101B", "Scanner Strength (Tesla)"] = "unknown"
    edited.loc[edited["SubjectID"] == "100102A", "Age"] = "sixty"
    write_ucsf_table(root, edited)
    assert convert("Dataset101_UCSFBMSR", root, tmp_path / "raw") == 0
    err = capsys.readouterr().err
    assert "table has no column 'Sex' (name not confirmed): sex left out" in err
    assert "table has no column 'Prior Craniotomy/Biopsy/Resection' (name not confirmed)" in err
    assert "case 100101B" in err and "column 'Scanner Strength (Tesla)': value 'unknown' not understood" in err
    assert "case 100102A" in err and "column 'Age': value 'sixty' not understood" in err
    folder = tmp_path / "raw" / "Dataset101_UCSFBMSR"
    assert read_json(folder / "dataset.json")["clinical_features"] == {
        "cancer_type": "categorical", "field_strength_t": "numeric", "age": "numeric"}
    table = clinical(folder)
    assert list(table["field_strength_t"]) == ["1.5", "", "1.5"] and table["age"][2] == ""

    # a verified column absent: a warning naming it; a renamed column found with --column
    write_ucsf_table(root, edited.rename(columns={"CancerType": "Primary"}))
    assert convert("Dataset101_UCSFBMSR", root, tmp_path / "raw") == 0
    assert "table has no column 'CancerType' (verified in the real file)" in capsys.readouterr().err
    assert convert("Dataset101_UCSFBMSR", root, tmp_path / "raw", "--column", "cancer_type=Primary") == 0
    assert "cancer_type <- 'Primary'" in capsys.readouterr().err
    assert list(clinical(folder)["cancer_type"]) == list(edited["CancerType"])

    # --sheet that the workbook lacks: the sheets are listed
    assert convert("Dataset101_UCSFBMSR", root, tmp_path / "raw", "--sheet", "Sheet1") == 1
    assert "['ORIGINAL', 'RENAMED']" in capsys.readouterr().err


def test_ucsf_bmsr_brats_segmentation_as_the_mask(tmp_path, capsys):
    root, _ = write_ucsf_bmsr(tmp_path, exams_per_patient=(2, 1, 2), brats_seg=("100101B", "100102A"))
    assert convert("Dataset101_UCSFBMSR", root, tmp_path / "raw", "--mask", "brats") == 0
    err = capsys.readouterr().err
    for left_out in ("100101A", "100103A", "100103B"):
        assert f"case {left_out}" in err and f"{left_out}_BRaTS-seg.nii.gz]: left out: no BraTS segmentation" in err
    folder = tmp_path / "raw" / "Dataset101_UCSFBMSR"
    assert verify_dataset(folder, progress=False).ok
    spec = read_json(folder / "dataset.json")
    assert spec["labels"] == BRATS_LABELS and spec["lesion_labels"] == [1, 3] and spec["numTraining"] == 2
    assert list(clinical(folder)["case_id"]) == ["100101B", "100102A"]
    for k, case in ((1, "100101B"), (2, "100102A")):
        _, rc = rendered_cases(5)[k]
        np.testing.assert_array_equal(read_image(folder / "labelsTr" / f"{case}.nii.gz")[0], brats_labels(rc.mask))

    # a BraTS segmentation in another space misses the lesions of seg: stopped, naming the file
    shifted(root / UCSF_TRAIN / "100102A" / "100102A_BRaTS-seg.nii.gz")
    assert convert("Dataset101_UCSFBMSR", root, tmp_path / "raw", "--mask", "brats") == 1
    err = capsys.readouterr().err
    assert "case 100102A" in err and "100102A_BRaTS-seg.nii.gz" in err and "does not overlap the lesions" in err


def test_pretreat_from_the_package_folder(tmp_path, capsys):
    package, ids, table = write_pretreat(tmp_path, patients=(2, 3, 4, 5))
    assert convert("Dataset102_BraTSMETS", package, tmp_path / "raw") == 0
    printed = capsys.readouterr()
    err = printed.err
    report = printed.out.splitlines()  # the closing report, read back from the written folder
    assert report[report.index("Converted Dataset102_BraTSMETS:") + 1:][:8] == [
        "  cases: 4 Tr", "  channels: 0 T1c, 1 T1, 2 FLAIR, 3 T2",
        "  labels: {'background': 0, 'non_enhancing_tumour_core': 1, 'surrounding_flair_hyperintensity': 2, "
        "'enhancing_tumour': 3}; lesion labels [1, 3]",
        "  clinical features: age (numeric), sex (categorical), primary (categorical)",
        "  other columns kept: patient_id", "  endpoints:",
        "    os (survival: os_months, os_event): 3 known, events 1", "  lesion table: none"]
    assert f"{PRETREAT_TABLE}]: clinical table (sheet 'Data'): 5 rows" in err
    assert "os_time <- 'Survival_days'" in err and "os_event <- 'Death'" in err and "age <- 'Age'" in err
    assert "case BraTS-MET-00004-000" in err and "column 'Death' is blank: overall survival unknown" in err
    assert "rows of the clinical table without a converted case folder: 1 (first: BraTS-MET-09999-000)" in err
    folder = tmp_path / "raw" / "Dataset102_BraTSMETS"
    assert verify_dataset(folder, progress=False).ok
    spec = read_json(folder / "dataset.json")
    assert spec["labels"] == BRATS_LABELS and spec["lesion_labels"] == [1, 3]
    assert spec["channel_names"] == {"0": "T1c", "1": "T1", "2": "FLAIR", "3": "T2"}
    assert spec["patient_column"] == "patient_id"
    assert spec["endpoints"] == {"os": {"type": "survival", "time": "os_months", "event": "os_event"}}
    assert spec["clinical_features"] == {"age": "numeric", "sex": "categorical", "primary": "categorical"}
    out = pd.read_csv(folder / "clinicalTr.csv", dtype={"case_id": str, "patient_id": str, "sex": str})
    assert list(out["case_id"]) == ids and list(out["patient_id"]) == [c[:-4] for c in ids]
    assert list(out["age"]) == [55.0, 58.0, 61.0, 64.0] and list(out["sex"]) == ["F", "M", "F", "M"]
    assert list(out["primary"]) == ["lung", "breast", "melanoma", "lung"]
    np.testing.assert_allclose(out["os_months"], [round(d / 30.4375, 3) if k != 2 else np.nan
                                                  for k, d in enumerate((300, 360, 420, 480))])
    np.testing.assert_allclose(out["os_event"], [1, 0, np.nan, 0])  # Death blank: unknown
    values = set()
    for k, (_, rc) in enumerate(rendered_cases(4, seed=1)):
        label, geometry = read_image(folder / "labelsTr" / f"{ids[k]}.nii.gz")
        np.testing.assert_array_equal(label, brats_labels(rc.mask))  # labels kept exactly, label 2 included
        assert geometry_mismatches(rc.grid, geometry) == []
        values |= set(np.unique(label).tolist())
    assert values == {0, 1, 2, 3}

    # -i at the inner folder: the table is found in its parent (the package folder)
    assert convert("Dataset102_BraTSMETS", package / PRETREAT_INNER, tmp_path / "raw") == 0
    assert "(sheet 'Data'): 5 rows" in capsys.readouterr().err
    assert read_json(folder / "dataset.json")["endpoints"] == spec["endpoints"]


def test_pretreat_without_a_known_time_column_stops_with_one_line(tmp_path, capsys):
    ids = [f"BraTS-MET-{p:05d}-000" for p in (2, 3, 4)]
    package, _, _ = write_pretreat(tmp_path, patients=(2, 3, 4), clinical=pretreat_clinical(ids, "Follow-up"),
                                   table_in="parent")
    raw = tmp_path / "raw"
    assert convert("Dataset102_BraTSMETS", package, raw) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and PRETREAT_TABLE in err
    assert "no survival-time column" in err and "'Follow-up'" in err and "'BraTS_MET_ID'" in err
    assert "--column os_time=NAME" in err
    assert not (raw / "Dataset102_BraTSMETS").exists()  # stopped before any image was read

    # the column named, but its name gives no unit: one line again, then converted in months
    assert convert("Dataset102_BraTSMETS", package, raw, "--column", "os_time=Follow-up") == 1
    assert "--os-time-unit days|months|years" in capsys.readouterr().err
    assert convert("Dataset102_BraTSMETS", package, raw, "--column", "os_time=Follow-up", "--os-time-unit",
                   "months") == 0
    out = pd.read_csv(raw / "Dataset102_BraTSMETS" / "clinicalTr.csv")
    np.testing.assert_allclose(out["os_months"], [300, 360, np.nan])
    assert convert("Dataset102_BraTSMETS", package, raw, "--no-survival") == 0
    assert read_json(raw / "Dataset102_BraTSMETS" / "dataset.json")["endpoints"] == {}
    assert convert("Dataset102_BraTSMETS", package, raw, "--column", "nonsense=x") == 2


def test_pretreat_warns_for_absent_columns_and_unknown_values(tmp_path, capsys):
    ids = [f"BraTS-MET-{p:05d}-000" for p in (2, 3, 4)]
    table = pretreat_clinical(ids).drop(columns=["Sex"]).astype(object)
    table.loc[0, "Death"], table.loc[1, "Age"] = "maybe", "old"
    package, _, _ = write_pretreat(tmp_path, patients=(2, 3, 4), clinical=table, table_in="inner")
    assert convert("Dataset102_BraTSMETS", package, tmp_path / "raw") == 0
    err = capsys.readouterr().err
    assert "table has no column 'Sex' (name not confirmed): sex left out" in err
    assert "case BraTS-MET-00002-000" in err and "column 'Death': value 'maybe' not understood" in err
    assert "case BraTS-MET-00003-000" in err and "column 'Age': value 'old' not understood" in err
    out = pd.read_csv(tmp_path / "raw" / "Dataset102_BraTSMETS" / "clinicalTr.csv")
    np.testing.assert_allclose(out["os_event"], [np.nan, 0, np.nan])
    assert "sex" not in out and math.isnan(out["age"][1])
    assert convert("Dataset102_BraTSMETS", package, tmp_path / "raw", "--column", "id=Patient") == 1
    assert "lacks column(s) ['Patient']" in capsys.readouterr().err


def test_brats2023_training_main_and_additional(tmp_path, capsys):
    parent, ids = write_brats2023_training(tmp_path / "BraTS2023", main=(2, 3), additional=(4, 5),
                                           timepoints={3: 2})
    _, rc = rendered_cases(1, seed=2)[0]
    write_brats_case(parent / BRATS_TRAINING / "BraTS-MET-00009-000", rc, seg=False)  # a validation case
    assert convert("Dataset102_BraTSMETS", parent, tmp_path / "raw") == 0
    err = capsys.readouterr().err
    assert "case BraTS-MET-00009-000" in err and "skipped: no segmentation" in err
    assert "no clinical table found" in err
    folder = tmp_path / "raw" / "Dataset102_BraTSMETS"
    spec = read_json(folder / "dataset.json")
    assert spec["endpoints"] == {} and spec["clinical_features"] == {} and spec["labels"] == BRATS_LABELS
    table = clinical(folder)
    assert list(table["case_id"]) == ids == ["BraTS-MET-00002-000", "BraTS-MET-00003-000", "BraTS-MET-00003-001",
                                             "BraTS-MET-00004-000", "BraTS-MET-00005-000"]
    assert list(table["patient_id"]) == ["BraTS-MET-00002", "BraTS-MET-00003", "BraTS-MET-00003",
                                         "BraTS-MET-00004", "BraTS-MET-00005"]
    for k, (_, rc) in enumerate(rendered_cases(len(ids), seed=1)):
        np.testing.assert_array_equal(read_image(folder / "labelsTr" / f"{ids[k]}.nii.gz")[0], brats_labels(rc.mask))

    # an id in both folders: an error naming both
    shutil.copytree(parent / BRATS_TRAINING / "BraTS-MET-00002-000", parent / BRATS_ADDITIONAL / "BraTS-MET-00002-000")
    assert convert("Dataset102_BraTSMETS", parent, tmp_path / "raw") == 1
    err = capsys.readouterr().err
    assert "case BraTS-MET-00002-000" in err and "in 2 places" in err
    assert f"{BRATS_TRAINING}/BraTS-MET-00002-000" in err and f"{BRATS_ADDITIONAL}/BraTS-MET-00002-000" in err


def test_converted_ucsf_bmsr_and_brats_mets_plan_preprocess_and_train(tmp_path, monkeypatch):
    """Both outputs run through glmil_plan_and_preprocess; Pretreat-MetsToBrain-Masks with its
    survival table also trains (UCSF-BMSR publishes no outcome, so there is nothing to train on: it
    is planned and preprocessed for use as an unlabelled or externally labelled cohort)."""
    from conversion_training import plan_preprocess_and_train

    from glmil_auto.experiment_planning.device_profile import DeviceProfile
    from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess

    raw = tmp_path / "raw"
    root, _ = write_ucsf_bmsr(tmp_path, exams_per_patient=(2, 1, 2))
    assert convert("Dataset101_UCSFBMSR", root, raw) == 0
    monkeypatch.setenv("glmil_raw", str(raw))
    monkeypatch.setenv("glmil_preprocessed", str(tmp_path / "preprocessed"))
    plan_and_preprocess(101, num_processes=1, device=DeviceProfile("cpu", "cpu", 0.5, 2), progress=False)
    preprocessed = tmp_path / "preprocessed" / "Dataset101_UCSFBMSR"
    assert len(list((preprocessed / "plans" / "Tr").glob("*.json"))) == 5

    ids = [f"BraTS-MET-{p:05d}-000" for p in range(2, 8)]
    table = pretreat_clinical(ids)
    table["Death"] = [1, 0, 1, 0, 1, 1, 0]  # every case known
    package, _, _ = write_pretreat(tmp_path, patients=tuple(range(2, 8)), clinical=table)
    assert convert("Dataset102_BraTSMETS", package, raw) == 0
    trainer = plan_preprocess_and_train(102, raw, tmp_path, monkeypatch)
    assert len(trainer.log) == 1 and math.isfinite(trainer.log[0]["train"]["loss"])
    assert [e["name"] for e in trainer.endpoints] == ["os"]
