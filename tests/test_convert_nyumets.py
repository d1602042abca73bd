"""The NYUMets-Brain converter on a fake download in the verified layout; the converted cohort
plans, preprocesses and trains."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conversion_sources import rendered_cases, script
from sources_nyumets import write_nyumets
from glmil_auto.dataset.image_io import geometry_mismatches, read_image
from glmil_auto.dataset.verify import verify_dataset
from glmil_auto.dataset_conversion import nyumets_outcomes as outcomes
from glmil_auto.dataset_conversion.nyumets_layout import Study, candidate_studies

CLINICAL = ("age_diagnosis", "primary_histology", "extracranial_disease_active", "num_tumors_init", "prior_wbrt",
            "kps_at_gks", "gk_target_volume", "gk_margin_dose")
OUTCOMES = ("local_failure", "distant_failure", "os_months", "os_event")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def read_clinical(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "clinicalTr.csv", dtype={"case_id": str, "patient_id": str,
                                                         "study_id": str}).set_index("case_id")


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6)


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    return write_nyumets(tmp_path_factory.mktemp("nyumets") / "NYUMets", n_patients=5)


def convert(download_root: Path, raw: Path, *options: str) -> int:
    return script("Dataset103_NYUMets")(["-i", str(download_root), "-o", str(raw), "--no_progress", *options])


def test_nyumets_download_root_converts_with_baseline_and_outcomes(download, tmp_path, capsys):
    source, expected = download
    assert convert(source, tmp_path / "raw") == 0
    err = capsys.readouterr().err
    folder = tmp_path / "raw" / "Dataset103_NYUMets"
    assert verify_dataset(folder, progress=False).ok
    spec = read_json(folder / "dataset.json")
    assert spec["channel_names"] == {"0": "T1c"}  # the default: the planning T1c, else CT1
    assert spec["endpoints"] == {"local_failure": {"type": "binary"}, "distant_failure": {"type": "binary"},
                                 "os": {"type": "survival", "time": "os_months", "event": "os_event"}}
    assert spec["patient_column"] == "patient_id" and spec["endpoint_horizon_days"] == 365
    assert set(CLINICAL) | {"rpa"} == set(spec["clinical_features"])
    assert spec["clinical_features"]["primary_histology"] == "categorical"
    table = read_clinical(folder)
    # 1001: studies 11873 (t=90), 52301 (t=-200), 90412 (t=0): the one at 0, neither the lowest id nor the earliest
    assert sorted(table.index) == sorted(expected) == ["1001_90412", "1002_70455", "1003_30981", "1004_64002"]
    for case, truth in expected.items():
        row = table.loc[case]
        assert row["patient_id"] == truth["patient_id"] and row["t1c_file"] == truth["t1c_file"]
        for column in CLINICAL + OUTCOMES:  # baseline: the first procedure (kps 80, dose 20), not the later one
            assert same(float(row[column]), truth[column]), (case, column, row[column], truth[column])
    assert "case 1005]: patient skipped: no segmented study at RelativeTimepoint <= 0" in err
    assert "case 1004_64002" in err and "'extracranial_disease_status': value '3'" in err
    assert "'new_metastases': value '?'" in err
    assert "NOTE [" in err and "clinical tables recognised by their columns" in err
    assert "the Gamma Knife details table 20230301_clinical_procedures.csv" in err
    assert "optional columns found: " in err and "20230301_clinical_procedures.csv: kps_at_gks, target_volume" in err
    assert "no clinical table has column" not in err

    for k, (_, rc) in enumerate(rendered_cases(5, seed=2)[:4]):
        case = sorted(expected)[k]
        mask, grid = read_image(folder / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(mask, (rc.mask > 0).astype(np.uint8))  # also the warped mask of 1002
        assert geometry_mismatches(rc.grid, grid) == []
    warped = [line for line in err.splitlines() if "mask is not binary" in line]
    assert len(warped) == 1 and "case 1002_70455" in warped[0] and "thresholded at >= 0.5" in warped[0]

    # -i data/ finds metadata/ beside it; "ever" makes the early-censored patient's failures 0
    assert convert(source / "data", tmp_path / "raw", "--overwrite", "--horizon-days", "0") == 0
    table = read_clinical(folder)
    assert sorted(table.index) == sorted(expected)
    assert table.loc["1004_64002", "local_failure"] == 0 and table.loc["1004_64002", "distant_failure"] == 0


def test_nyumets_studies_follow_relative_timepoint_not_id(download, tmp_path):
    source, expected = download
    assert convert(source, tmp_path / "raw", "--study-rule", "earliest") == 0
    table = read_clinical(tmp_path / "raw" / "Dataset103_NYUMets")
    assert sorted(table.index) == sorted([t["earliest"] for t in expected.values()] + ["1005_48211"])
    assert table.loc["1001_52301", "relative_timepoint"] == -200

    def study(sid: str, t: float, row: int) -> Study:  # segmented (an empty file is enough here), no planning scan
        folder = tmp_path / "studies" / sid
        folder.mkdir(parents=True)
        (folder / "RTSTRUCT_segmentation.nii.gz").touch()
        return Study("9", sid, t, "0", row, folder)
    studies = [study("11", 5, 0), study("99", -10, 1), study("55", 0, 2), study("33", -1, 3)]
    assert [s.study for s in candidate_studies(studies, "gk")] == ["55", "33", "99"]
    assert [s.study for s in candidate_studies(studies, "earliest")] == ["99", "33", "55", "11"]


def test_nyumets_sequence_choice(download, tmp_path, capsys):
    source, expected = download
    assert convert(source, tmp_path / "raw", "--sequences", "RTSTRUCT_MRI") == 0  # the planning T1c alone
    err = capsys.readouterr().err
    folder = tmp_path / "raw" / "Dataset103_NYUMets"
    assert read_json(folder / "dataset.json")["channel_names"] == {"0": "T1c"}
    assert sorted(read_clinical(folder).index) == ["1001_90412", "1003_30981", "1004_64002"]
    assert "case 1002_70455 | " in err and "70455/RTSTRUCT_MRI.nii.gz]: study skipped: lacks RTSTRUCT_MRI.nii.gz" in err

    assert convert(source, tmp_path / "raw", "--overwrite", "--sequences", "T1c", "T1", "T2", "FLAIR") == 0
    err = capsys.readouterr().err
    assert read_json(folder / "dataset.json")["channel_names"] == {"0": "T1c", "1": "T1", "2": "T2", "3": "FLAIR"}
    assert sorted(read_clinical(folder).index) == ["1001_90412", "1004_64002"]
    assert "70455/T2.nii.gz]: study skipped: lacks T2.nii.gz" in err  # the study lacking T2
    rc = rendered_cases(5, seed=2)[0][1]
    _, g2 = read_image(folder / "imagesTr" / "1001_90412_0002.nii.gz")  # T2 came on a 2x coarser grid
    assert geometry_mismatches(rc.grid, g2) == []


def test_nyumets_tables_found_by_columns_or_named(download, tmp_path, capsys):
    source, expected = download
    copy = tmp_path / "NYUMets"
    shutil.copytree(source / "metadata", copy / "metadata")
    (copy / "data").symlink_to(source / "data", target_is_directory=True)
    procedures = copy / "metadata" / "20230301_clinical_procedures.csv"
    moved = shutil.move(procedures, tmp_path / "gk.csv")
    assert convert(copy, tmp_path / "raw") == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR") and "the Gamma Knife details table" in lines[0]
    for name in ("20220915_imaging.csv", "20220822_traintestsplits.csv", "20230301_clinical_patients.csv",
                 "20230301_clinical_visits.csv", "'age_diagnosis'", "'RelativeTimepoint'"):
        assert name in lines[0]

    # named explicitly; kps_at_gks moved to the time series' Gamma Knife rows; rpa absent
    gk = pd.read_csv(moved, dtype=str, keep_default_na=False)
    gk.drop(columns="kps_at_gks").to_csv(moved, index=False)
    visits = pd.read_csv(copy / "metadata" / "20230301_clinical_visits.csv", dtype=str, keep_default_na=False)
    visits["kps_at_gks"] = np.where(visits["time_from_gk_days"] == "0", "80", "")
    later = visits.groupby("patient_identifier").head(1).assign(time_from_gk_days="210", kps_at_gks="60")
    pd.concat([later, visits]).to_csv(copy / "metadata" / "20230301_clinical_visits.csv", index=False)
    patients = pd.read_csv(copy / "metadata" / "20230301_clinical_patients.csv", dtype=str, keep_default_na=False)
    patients.drop(columns="rpa").to_csv(copy / "metadata" / "20230301_clinical_patients.csv", index=False)
    assert convert(copy, tmp_path / "raw", "--overwrite", "--gk-table", str(moved)) == 0
    err = capsys.readouterr().err
    assert "no clinical table has column 'rpa' (feature rpa left out)" in err
    folder = tmp_path / "raw" / "Dataset103_NYUMets"
    assert "rpa" not in read_json(folder / "dataset.json")["clinical_features"]
    table = read_clinical(folder)
    assert (table["kps_at_gks"] == 80).all() and sorted(table.index) == sorted(expected)


def test_nyumets_binary_failure_rule():
    times, counts = np.array([-5, 30, 200, 500.0]), np.array([0, 0, 1, 0.0])
    assert outcomes.binary_failure(times, counts, 365, 500, math.nan) == 1
    assert outcomes.binary_failure(times, counts, 100, 500, math.nan) == 0  # event after the horizon
    assert math.isnan(outcomes.binary_failure(times[:2], counts[:2], 365, 30, math.nan))  # censored early
    assert outcomes.binary_failure(times[:2], counts[:2], 365, 30, 60) == 0  # died first: competing event
    assert math.isnan(outcomes.binary_failure(np.array([-5.0]), np.array([3.0]), None, 0, math.nan))  # pre-GK only
    assert all(math.isnan(v) for v in outcomes.overall_survival(math.nan, 0))
    assert outcomes.overall_survival(math.nan, 61) == (round(61 / 30.4375, 3), 0.0)
    assert all(math.isnan(v) for v in outcomes.overall_survival(math.nan, 61, died_at_unknown_time=True))
    assert outcomes.death_days(math.nan, np.array([10, 50.0]), np.array([0, 1.0])) == 50


def test_converted_nyumets_plans_preprocesses_and_trains(tmp_path, monkeypatch):
    from conversion_training import plan_preprocess_and_train

    source, expected = write_nyumets(tmp_path / "NYUMets", n_patients=9)
    assert convert(source, tmp_path / "raw") == 0
    assert read_json(tmp_path / "raw" / "Dataset103_NYUMets" / "dataset.json")["numTraining"] == 8

    trainer = plan_preprocess_and_train(103, tmp_path / "raw", tmp_path, monkeypatch)
    preprocessed = tmp_path / "preprocessed" / "Dataset103_NYUMets"
    assert (preprocessed / "plans.json").is_file()
    assert len(trainer.log) == 1 and math.isfinite(trainer.log[0]["train"]["loss"])
    fold = tmp_path / "results" / "Dataset103_NYUMets" / "ConvertedTinyTrainer__plans" / "fold_0"
    assert (fold / "checkpoint_final.pt").is_file()
    predictions = pd.read_csv(fold / "validation" / "predictions.csv", dtype={"case_id": str})
    assert set(predictions["case_id"]) <= set(expected) and len(predictions) >= 1
