"""The UCSF-BMSR and BraTS-METS / Pretreat-MetsToBrain-Masks converters on fake source trees."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from conversion_sources import brats_labels, rendered_cases, save, script
from sources_ucsf_brats import write_brats_mets, write_ucsf_bmsr
from glmil_auto.dataset.image_io import Geometry, geometry_mismatches, read_image
from glmil_auto.dataset.verify import verify_dataset


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_ucsf_bmsr_keeps_exams_of_a_patient_together(tmp_path, capsys):
    source, subjects = write_ucsf_bmsr(tmp_path / "UCSF-BMSR", exams_per_patient=(2, 1, 2))
    main = script("Dataset101_UCSFBMSR")
    assert main(["-i", str(source), "-o", str(tmp_path / "raw"), "--no_progress"]) == 0
    folder = tmp_path / "raw" / "Dataset101_UCSFBMSR"
    assert verify_dataset(folder, progress=False).ok
    spec = read_json(folder / "dataset.json")
    assert spec["channel_names"] == {"0": "T1c", "1": "T1", "2": "FLAIR", "3": "subtraction"}
    assert spec["labels"] == {"background": 0, "metastasis": 1} and spec["lesion_labels"] == [1]
    assert spec["numTraining"] == 5 and spec["patient_column"] == "patient_id" and spec["endpoints"] == {}
    assert spec["clinical_features"] == {"sex": "categorical", "age": "numeric", "cancer_type": "categorical",
                                         "field_strength_t": "numeric", "prior_surgery": "binary"}
    table = pd.read_csv(folder / "clinicalTr.csv", dtype=str, keep_default_na=False)
    assert list(table["case_id"]) == ["100101A", "100101B", "100102A", "100103A", "100103B"]
    assert list(table["patient_id"]) == ["100101", "100101", "100102", "100103", "100103"]
    merged = table.merge(subjects, left_on="case_id", right_on="SubjectID")
    assert (merged["sex"] == merged["Sex"]).all() and (merged["cancer_type"] == merged["CancerType"]).all()
    assert [float(v) for v in merged["field_strength_t"]] == [float(v) for v in merged["Scanner Strength (Tesla)"]]
    assert list(merged["prior_surgery"].astype(float)) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert list(merged["brats_id"]) == list(merged["BraTS_ID"])
    for k, (_, rc) in enumerate(rendered_cases(5)):  # exams in order: channel 0 is T1post, the mask as drawn
        case = table["case_id"][k]
        np.testing.assert_array_equal(read_image(folder / "imagesTr" / f"{case}_0000.nii.gz")[0], rc.t1c)
        np.testing.assert_array_equal(read_image(folder / "labelsTr" / f"{case}.nii.gz")[0], rc.mask)

    # a segmentation that is not binary stops the conversion, naming the file
    _, rc = rendered_cases(5)[0]
    save(brats_labels(rc.mask), rc.grid, source / "100101A" / "100101A_seg.nii.gz", sitk.sitkUInt8)
    assert main(["-i", str(source), "-o", str(tmp_path / "raw"), "--overwrite", "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert "expected a binary segmentation" in err and "100101A_seg.nii.gz" in err


def test_brats_mets_keeps_oedema_as_context_and_reads_survival(tmp_path, capsys):
    source = write_brats_mets(tmp_path / "BraTS-METS", timepoints=(1, 2, 1))
    (source / "BraTS-MET-00009-000").mkdir()  # a validation case: images but no segmentation
    save(np.zeros((4, 4, 4), np.float32), Geometry((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
         source / "BraTS-MET-00009-000" / "BraTS-MET-00009-000-t1c.nii.gz")
    clinical = pd.DataFrame({"BraTS_MET_ID": ["BraTS-MET-00002-000", "BraTS-MET-00003-000", "BraTS-MET-00003-001"],
                             "Age": ["61", "70", "70"], "Sex": ["F", "M", "M"], "Primary": ["lung", "breast", "breast"],
                             "OS_days": ["300", "0", "95"], "Deceased": ["Yes", "No", "no"]})
    clinical.to_csv(tmp_path / "pretreat.csv", index=False)
    main = script("Dataset102_BraTSMETS")
    assert main(["-i", str(source), "-o", str(tmp_path / "raw"), "--clinical", str(tmp_path / "pretreat.csv"),
                 "--no_progress"]) == 0
    err = capsys.readouterr().err
    assert "case BraTS-MET-00009-000" in err and "skipped: no segmentation" in err
    assert "case BraTS-MET-00004-000" in err and "no row in the clinical table" in err
    folder = tmp_path / "raw" / "Dataset102_BraTSMETS"
    assert verify_dataset(folder, progress=False).ok
    spec = read_json(folder / "dataset.json")
    assert spec["labels"] == {"background": 0, "necrotic_core": 1, "oedema": 2, "enhancing_tumour": 3}
    assert spec["lesion_labels"] == [1, 3] and spec["patient_column"] == "patient_id"
    assert spec["channel_names"] == {"0": "T1c", "1": "T1", "2": "FLAIR", "3": "T2"}
    assert spec["endpoints"] == {"os": {"type": "survival", "time": "os_months", "event": "os_event"}}
    assert spec["clinical_features"] == {"age": "numeric", "sex": "categorical", "primary": "categorical"}
    table = pd.read_csv(folder / "clinicalTr.csv", dtype={"case_id": str, "patient_id": str})
    assert list(table["case_id"]) == ["BraTS-MET-00002-000", "BraTS-MET-00003-000", "BraTS-MET-00003-001",
                                      "BraTS-MET-00004-000"]
    assert list(table["patient_id"]) == ["BraTS-MET-00002", "BraTS-MET-00003", "BraTS-MET-00003", "BraTS-MET-00004"]
    np.testing.assert_allclose(table["os_months"], [round(300 / 30.4375, 3), np.nan, round(95 / 30.4375, 3), np.nan])
    np.testing.assert_allclose(table["os_event"], [1, np.nan, 0, np.nan])  # time 0: unknown
    values = set()
    for k, (_, rc) in enumerate(rendered_cases(4, seed=1)):
        label, geometry = read_image(folder / "labelsTr" / f"{table['case_id'][k]}.nii.gz")
        np.testing.assert_array_equal(label, brats_labels(rc.mask))  # labels kept exactly, oedema included
        assert geometry_mismatches(rc.grid, geometry) == []
        values |= set(np.unique(label).tolist())
    assert values == {0, 1, 2, 3}

    # renamed columns, then an id column that does not exist
    clinical.rename(columns={"OS_days": "Survival_days"}).to_csv(tmp_path / "renamed.csv", index=False)
    args = ["-i", str(source), "-o", str(tmp_path / "raw"), "--overwrite", "--no_progress", "--clinical",
            str(tmp_path / "renamed.csv")]
    assert main(args + ["--column", "os_time=Survival_days"]) == 0
    assert "os" in read_json(folder / "dataset.json")["endpoints"]
    assert main(args) == 0 and read_json(folder / "dataset.json")["endpoints"] == {}  # no time column: not declared
    assert main(args + ["--column", "id=Patient"]) == 1
    assert "lacks column(s) ['Patient']" in capsys.readouterr().err
    assert main(args + ["--column", "nonsense=x"]) == 2


def test_converted_ucsf_bmsr_and_brats_mets_plan_preprocess_and_train(tmp_path, monkeypatch):
    """Both outputs run through glmil_plan_and_preprocess; BraTS-METS with its survival table also
    trains (UCSF-BMSR publishes no outcome, so there is nothing to train on: it is planned and
    preprocessed for use as an unlabelled or externally labelled cohort)."""
    from conversion_training import plan_preprocess_and_train

    from glmil_auto.experiment_planning.device_profile import DeviceProfile
    from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess

    raw = tmp_path / "raw"
    source, _ = write_ucsf_bmsr(tmp_path / "UCSF-BMSR", exams_per_patient=(2, 1, 2))
    assert script("Dataset101_UCSFBMSR")(["-i", str(source), "-o", str(raw), "--no_progress"]) == 0
    monkeypatch.setenv("glmil_raw", str(raw))
    monkeypatch.setenv("glmil_preprocessed", str(tmp_path / "preprocessed"))
    plan_and_preprocess(101, num_processes=1, device=DeviceProfile("cpu", "cpu", 0.5, 2), progress=False)
    preprocessed = tmp_path / "preprocessed" / "Dataset101_UCSFBMSR"
    assert len(list((preprocessed / "plans" / "Tr").glob("*.json"))) == 5

    source = write_brats_mets(tmp_path / "BraTS-METS", timepoints=(1, 2, 1, 1, 1))
    ids = sorted(p.name for p in source.iterdir())
    pd.DataFrame({"BraTS_MET_ID": ids, "Age": ["60"] * len(ids), "Sex": ["F", "M"] * (len(ids) // 2) + ["F"] * (len(ids) % 2),
                  "Primary": ["lung"] * len(ids), "OS_days": [str(100 + 40 * k) for k in range(len(ids))],
                  "Deceased": ["Yes", "No"] * (len(ids) // 2) + ["Yes"] * (len(ids) % 2)}).to_csv(tmp_path / "os.csv",
                                                                                                 index=False)
    assert script("Dataset102_BraTSMETS")(["-i", str(source), "-o", str(raw), "--clinical", str(tmp_path / "os.csv"),
                                           "--no_progress"]) == 0
    trainer = plan_preprocess_and_train(102, raw, tmp_path, monkeypatch)
    assert len(trainer.log) == 1 and math.isfinite(trainer.log[0]["train"]["loss"])
    assert [e["name"] for e in trainer.endpoints] == ["os"]
