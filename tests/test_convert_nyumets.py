"""The NYUMets-Brain converter on a fake source tree; the converted cohort plans, preprocesses and trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conversion_sources import rendered_cases, script
from sources_nyumets import write_nyumets
from glmil_auto.dataset.image_io import geometry_mismatches, read_image
from glmil_auto.dataset.verify import verify_dataset
from glmil_auto.dataset_conversion import nyumets_outcomes as outcomes


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_nyumets_outcomes_at_the_pretreatment_study(tmp_path, capsys):
    source, expected = write_nyumets(tmp_path / "NYUMets", n_patients=5)
    main = script("Dataset103_NYUMets")
    assert main(["-i", str(source), "-o", str(tmp_path / "raw"), "--no_progress"]) == 0
    assert "case 1005" in capsys.readouterr().err  # its only segmented study is after Gamma Knife
    folder = tmp_path / "raw" / "Dataset103_NYUMets"
    assert verify_dataset(folder, progress=False).ok
    spec = read_json(folder / "dataset.json")
    assert spec["channel_names"] == {"0": "T1c", "1": "T1", "2": "T2", "3": "FLAIR"}
    assert spec["endpoints"] == {"local_failure": {"type": "binary"}, "distant_failure": {"type": "binary"},
                                 "os": {"type": "survival", "time": "os_months", "event": "os_event"}}
    assert spec["patient_column"] == "patient_id" and spec["endpoint_horizon_days"] == 365
    assert {"age_diagnosis", "primary_histology", "prior_wbrt", "kps", "gk_total_target_volume",
            "gk_min_margin_dose"} <= set(spec["clinical_features"])
    table = pd.read_csv(folder / "clinicalTr.csv", dtype={"case_id": str, "patient_id": str}).set_index("case_id")
    assert sorted(table.index) == sorted(expected) == ["1001_s2", "1002_s1", "1003_s1", "1004_s1"]
    for case, truth in expected.items():
        row = table.loc[case]
        for column in ("local_failure", "distant_failure", "os_months", "os_event"):
            assert (math.isnan(truth[column]) and math.isnan(row[column])) or row[column] == truth[column], (case, column)
        assert row["patient_id"] == truth["patient_id"] and row["gk_num_targets"] == truth["n_targets"]
        assert row["gk_total_target_volume"] == pytest.approx(truth["total_volume"], abs=1e-6)
    assert (table["kps"] == 80).all()
    for k, (_, rc) in enumerate(rendered_cases(5, seed=2)[:4]):
        case = sorted(expected)[k]
        mask, g = read_image(folder / "labelsTr" / f"{case}.nii.gz")
        np.testing.assert_array_equal(mask, (rc.mask > 0).astype(np.uint8))  # numbered lesions -> label 1
        t2, g2 = read_image(folder / "imagesTr" / f"{case}_0002.nii.gz")  # T2 came on a 2x coarser grid
        assert geometry_mismatches(rc.grid, g) == [] and g2.shape == rc.grid.shape
        np.testing.assert_allclose(g2.origin, rc.grid.origin, atol=1e-3)
        np.testing.assert_allclose(g2.spacing, rc.grid.spacing, rtol=1e-5)

    # the horizon changes what is known: "ever" makes the censored patient's failures 0
    assert main(["-i", str(source), "-o", str(tmp_path / "raw"), "--overwrite", "--no_progress",
                 "--horizon-days", "0"]) == 0
    table = pd.read_csv(folder / "clinicalTr.csv", dtype={"case_id": str}).set_index("case_id")
    assert table.loc["1004_s1", "local_failure"] == 0 and table.loc["1004_s1", "distant_failure"] == 0


def test_nyumets_binary_failure_rule():
    times, counts = np.array([-5, 30, 200, 500.0]), np.array([0, 0, 1, 0.0])
    assert outcomes.binary_failure(times, counts, 365, 500, math.nan) == 1
    assert outcomes.binary_failure(times, counts, 100, 500, math.nan) == 0  # event after the horizon
    assert math.isnan(outcomes.binary_failure(times[:2], counts[:2], 365, 30, math.nan))  # censored early
    assert outcomes.binary_failure(times[:2], counts[:2], 365, 30, 60) == 0  # died first: competing event
    assert math.isnan(outcomes.binary_failure(np.array([-5.0]), np.array([3.0]), None, 0, math.nan))  # pre-GK only
    assert all(math.isnan(v) for v in outcomes.overall_survival(math.nan, 0))
    assert outcomes.overall_survival(math.nan, 61) == (round(61 / 30.4375, 3), 0.0)
    assert outcomes.death_days(math.nan, np.array([10, 50.0]), np.array([0, 1.0])) == 50


def test_converted_nyumets_plans_preprocesses_and_trains(tmp_path, monkeypatch):
    from conversion_training import plan_preprocess_and_train

    source, expected = write_nyumets(tmp_path / "NYUMets", n_patients=9)
    main = script("Dataset103_NYUMets")
    assert main(["-i", str(source), "-o", str(tmp_path / "raw"), "--sequences", "CT1", "FLAIR", "--no_progress"]) == 0
    assert read_json(tmp_path / "raw" / "Dataset103_NYUMets" / "dataset.json")["numTraining"] == 8

    trainer = plan_preprocess_and_train(103, tmp_path / "raw", tmp_path, monkeypatch)
    preprocessed = tmp_path / "preprocessed" / "Dataset103_NYUMets"
    assert (preprocessed / "plans.json").is_file()
    assert len(trainer.log) == 1 and math.isfinite(trainer.log[0]["train"]["loss"])
    fold = tmp_path / "results" / "Dataset103_NYUMets" / "ConvertedTinyTrainer__plans" / "fold_0"
    assert (fold / "checkpoint_final.pt").is_file()
    predictions = pd.read_csv(fold / "validation" / "predictions.csv", dtype={"case_id": str})
    assert set(predictions["case_id"]) <= set(expected) and len(predictions) >= 1

