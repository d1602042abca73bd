"""glmil_predict: the fold ensemble on the synthetic cohort's held-out centre, consistency
(ensemble = mean of folds, alone = in a batch, workers = in-process, copied model folder), bad
input per case, and continuing an interrupted prediction."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from glmil_auto.inference.entry_points import predict_entry, predict_from_modelfolder_entry
from glmil_auto.inference.predictor import GLMILPredictor
from glmil_auto.inference.risk_groups import assign_risk_groups, cutoffs_from_risks, fit_risk_scales
from glmil_auto.inference.test_time_augmentation import mirror_case_batch, mirror_variants
from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
from glmil_auto.synthetic import generate_synthetic_dataset
from glmil_auto.training.run_training import run_training
from glmil_auto.training.trainers.trainer import GLMILTrainer

NAME = "Dataset001_SynthBrainMets"
BINARY = ["local_failure", "distant_failure", "leptomeningeal_failure"]
UNCALIBRATED = [f"{b}_uncalibrated" for b in BINARY]


class PredictionTestTrainer(GLMILTrainer):
    """Two short epochs: the tests need trained folds, not good ones."""

    num_epochs = 2
    iterations_per_epoch = 2
    warmup_epochs = 1
    initial_lr = 2e-3
    num_augmentation_workers = 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("prediction")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
        for name in ("raw", "preprocessed", "results"):
            mp.setenv(f"glmil_{name}", str(root / name))
        raw = generate_synthetic_dataset(root / "raw", n_train=20, n_test=5, n_centres=3, size=4.0, seed=5,
                                         num_processes=1, progress=False)
        plan_and_preprocess(1, num_processes=1, device=DeviceProfile("cpu", "cpu", 0.5, 2), progress=False)
        for fold in (0, 1):
            run_training(1, fold, "PredictionTestTrainer")
        model = root / "results" / NAME / "PredictionTestTrainer__plans"
        yield {"root": root, "raw": Path(raw), "model": model, "mp": mp}


def predict(trained, out: Path, images: Path | None = None, masks: Path | None = None, **kwargs):
    raw = trained["raw"]
    predictor_args = {k: kwargs.pop(k) for k in ("folds", "use_tta") if k in kwargs}
    predictor = GLMILPredictor(trained["model"], device="cpu", **predictor_args)
    kwargs.setdefault("clinical_file", raw / "clinicalTs.csv")
    return predictor.predict_from_files(images or raw / "imagesTs", masks or raw / "labelsTs", out, progress=False,
                                        **kwargs)


@pytest.fixture(scope="module")
def ensemble(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble")
    frame, failures = predict(trained, out, save_gradcam=True)
    return out, frame, failures


def test_the_held_out_centre_is_predicted_with_every_column(trained, ensemble):
    out, frame, failures = ensemble
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (trained["raw"] / "imagesTs").glob("*_0000.nii.gz"))
    assert failures == {} and len(cases) == 5
    written = pd.read_csv(out / "predictions.csv")
    assert list(written.columns) == ["case_id", *[c for b in BINARY for c in (b, f"{b}_uncalibrated")],
                                     "os_risk", "os_risk_group", "os_surv_12", "os_surv_24",
                                     *[f"{b}_starting_point" for b in BINARY], "os_starting_point_risk"]
    assert list(written["case_id"]) == cases
    starting = written[[f"{b}_starting_point" for b in BINARY]]
    assert ((starting > 0) & (starting < 1)).all().all() and np.isfinite(written["os_starting_point_risk"]).all()
    assert ((written[BINARY] > 0) & (written[BINARY] < 1)).all().all()
    assert np.isfinite(written["os_risk"]).all()
    assert set(written["os_risk_group"]) <= {"low", "intermediate", "high"}
    assert (out / "plans.json").is_file()
    settings = json.loads((out / "prediction_settings.json").read_text())
    assert settings["folds"] == ["0", "1"] and settings["test_time_mirroring"] == [[[], []], [[2], [2]]]
    for case in cases:
        content = json.loads((out / f"{case}.json").read_text())
        assert content["n_lesions"] == len(content["lesions"])
        kept = [lesion for lesion in content["lesions"] if lesion["kept"]]
        assert len(kept) == content["n_instances"]
        for endpoint in [*BINARY, "os"]:
            weights = [lesion["attention"][endpoint] for lesion in kept]
            if weights:
                assert sum(weights) == pytest.approx(1.0, abs=1e-4)  # attention over the real lesions only
            assert all(np.isfinite(lesion["contribution"][endpoint]) for lesion in kept)
            assert sum(content["gate_weights"][endpoint]) == pytest.approx(1.0, abs=1e-4)
        for lesion in content["lesions"]:
            assert len(lesion["centroid_world_mm"]) == 3 and lesion["volume_mm3"] > 0
        # the small-foci descriptor: the folds' thresholds and the candidates at or above their median
        foci = content["small_foci"]
        assert set(foci["fold_thresholds"]) == {"0", "1"} and foci["threshold"] >= 2.5
        assert foci["threshold"] == pytest.approx(float(np.median(list(foci["fold_thresholds"].values()))))
        assert foci["count"] == len(foci["foci"]) <= foci["n_candidates"]
        assert all(f["response"] >= foci["threshold"] and len(f["world_mm"]) == 3 for f in foci["foci"])
        assert foci["summed_response"] == pytest.approx(sum(f["response"] for f in foci["foci"]))


def test_probabilities_are_recalibrated_with_the_out_of_fold_map(trained, ensemble):
    from glmil_auto.inference.recalibration import apply_recalibration, fit_recalibration_maps
    from glmil_auto.inference.risk_groups import read_oof_tables

    out, frame, _ = ensemble
    model = trained["model"]
    record = json.loads((model / "recalibration.json").read_text())
    oof = read_oof_tables({f: model / f"fold_{f}" / "validation" / "predictions.csv" for f in ("0", "1")})
    assert record["endpoints"] == fit_recalibration_maps(oof, BINARY)
    assert json.loads((out / "prediction_settings.json").read_text())["recalibration"] == record["endpoints"]
    for endpoint in BINARY:
        mapping = record["endpoints"][endpoint]
        known = sum(int(table[f"true_{endpoint}"].notna().sum()) for table in oof.values())
        assert mapping["method"] == "logistic" and mapping["n"] == known > 0  # each validation case once
        np.testing.assert_allclose(frame[endpoint], apply_recalibration(mapping, frame[f"{endpoint}_uncalibrated"]),
                                   rtol=1e-9)


def test_survival_probabilities_at_the_horizons_come_from_the_stored_breslow_model(trained, ensemble):
    from glmil_auto.inference.survival_probabilities import survival_probabilities

    out, frame, _ = ensemble
    record = json.loads((trained["model"] / "survival_model.json").read_text())
    model = record["endpoints"]["os"]
    assert model["n"] > 0 and model["events"] > 0 and np.isfinite(model["beta"])
    expected = survival_probabilities(model, frame["os_risk"], [12.0, 24.0])
    np.testing.assert_allclose(frame[["os_surv_12", "os_surv_24"]].to_numpy(float), expected, rtol=1e-9)
    assert ((expected > 0) & (expected <= 1)).all() and (expected[:, 1] <= expected[:, 0]).all()
    order = np.argsort(frame["os_risk"].to_numpy())  # a higher risk never survives longer (beta > 0)
    if model["beta"] > 0:
        assert (np.diff(expected[order, 1]) <= 1e-12).all()


def test_gradcam_maps_have_the_input_geometry(trained, ensemble):
    out, _, _ = ensemble
    case = pd.read_csv(out / "predictions.csv")["case_id"].iloc[0]
    image = sitk.ReadImage(str(trained["raw"] / "imagesTs" / f"{case}_0000.nii.gz"))
    for endpoint in [*BINARY, "os"]:
        cam = sitk.ReadImage(str(out / f"{case}_{endpoint}_gradcam.nii.gz"))
        assert cam.GetSize() == image.GetSize()
        np.testing.assert_allclose(cam.GetSpacing(), image.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(cam.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(cam.GetDirection(), image.GetDirection(), atol=1e-6)
        values = sitk.GetArrayFromImage(cam)
        assert values.min() >= 0 and values.max() <= 1 + 1e-6


def test_the_ensemble_is_the_mean_of_the_single_fold_runs(trained, ensemble, tmp_path):
    _, frame, _ = ensemble
    singles = [predict(trained, tmp_path / f"fold{f}", folds=[f])[0].set_index("case_id") for f in (0, 1)]
    both = frame.set_index("case_id")
    for column in [*UNCALIBRATED, "os_risk"]:  # each fold set has its own recalibration map
        np.testing.assert_allclose(both[column], (singles[0][column] + singles[1][column]) / 2, rtol=1e-5, atol=1e-7)
    assert not np.allclose(singles[0]["local_failure"], singles[1]["local_failure"])  # the folds do differ


def test_a_case_alone_gets_the_numbers_it_gets_in_a_batch(trained, ensemble, tmp_path):
    _, frame, _ = ensemble
    case = frame["case_id"].iloc[2]
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for path in (trained["raw"] / "imagesTs").glob(f"{case}_*.nii.gz"):
        shutil.copy(path, images / path.name)
    shutil.copy(trained["raw"] / "labelsTs" / f"{case}.nii.gz", masks / f"{case}.nii.gz")
    alone, _ = predict(trained, tmp_path / "out", images, masks)
    numeric = [*BINARY, "os_risk"]
    np.testing.assert_allclose(alone[numeric].to_numpy(float), frame.loc[frame["case_id"] == case, numeric].to_numpy(float),
                               rtol=1e-6, atol=1e-7)


def test_preprocessing_workers_give_the_in_process_numbers(trained, ensemble, tmp_path):
    _, frame, _ = ensemble
    with_workers, failures = predict(trained, tmp_path / "npp", num_processes=2)
    assert failures == {}
    numeric = [*BINARY, "os_risk"]
    np.testing.assert_allclose(with_workers[numeric].to_numpy(float), frame[numeric].to_numpy(float), rtol=1e-6, atol=1e-7)


def test_a_copied_model_folder_predicts_on_a_clean_path(trained, ensemble, tmp_path, monkeypatch, capsys):
    _, frame, _ = ensemble
    copy = tmp_path / "elsewhere" / "my_model"
    shutil.copytree(trained["model"], copy)
    for name in ("raw", "preprocessed", "results"):  # nothing of the training machine is reachable
        monkeypatch.setenv(f"glmil_{name}", str(tmp_path / "empty" / name))
    raw = trained["raw"]
    out = tmp_path / "out"
    code = predict_from_modelfolder_entry(["-i", str(raw / "imagesTs"), "-l", str(raw / "labelsTs"), "-o", str(out),
                                           "-m", str(copy), "-c", str(raw / "clinicalTs.csv"), "--no_progress",
                                           "-device", "cpu"])
    assert code == 0, capsys.readouterr().err
    again = pd.read_csv(out / "predictions.csv")
    numeric = [*BINARY, "os_risk"]
    np.testing.assert_allclose(again[numeric].to_numpy(float), frame[numeric].to_numpy(float), rtol=1e-6, atol=1e-7)
    assert json.loads((out / "prediction_settings.json").read_text())["command_line"][0] == "glmil_predict_from_modelfolder"


def test_bad_cases_fail_alone_with_clear_errors_and_warnings(trained, tmp_path, capsys):
    raw = trained["raw"]
    images, masks = tmp_path / "images", tmp_path / "masks"
    shutil.copytree(raw / "imagesTs", images)
    shutil.copytree(raw / "labelsTs", masks)
    cases = sorted(p.name[: -len(".nii.gz")] for p in masks.glob("*.nii.gz"))
    missing_channel, bad_mask, no_clinical, odd_clinical, good = cases
    (images / f"{missing_channel}_0001.nii.gz").unlink()
    mask = sitk.ReadImage(str(masks / f"{bad_mask}.nii.gz"))
    mask.SetSpacing([s * 1.5 for s in mask.GetSpacing()])
    sitk.WriteImage(mask, str(masks / f"{bad_mask}.nii.gz"))
    empty = sitk.ReadImage(str(masks / f"{odd_clinical}.nii.gz"))
    empty = empty * 0  # a mask without any lesion
    sitk.WriteImage(empty, str(masks / f"{odd_clinical}.nii.gz"))
    table = pd.read_csv(raw / "clinicalTs.csv", dtype=str, keep_default_na=False)
    table = table[table["case_id"] != no_clinical]
    table.loc[table["case_id"] == odd_clinical, "age"] = "130"
    table.loc[table["case_id"] == odd_clinical, "primary"] = "thyroid"
    table.to_csv(tmp_path / "clinical.csv", index=False)
    out = tmp_path / "out"
    code = predict_entry(["-i", str(images), "-m", str(masks), "-o", str(out), "-d", "1", "-tr", "PredictionTestTrainer",
                          "-c", str(tmp_path / "clinical.csv"), "--disable_tta", "--no_progress", "-device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    failed = json.loads((out / "failed_cases.json").read_text())
    assert set(failed) == {missing_channel, bad_mask, no_clinical}
    assert f"{missing_channel}_0001.nii.gz" in failed[missing_channel] and "missing" in failed[missing_channel]
    assert "geometry" in failed[bad_mask] and f"{bad_mask}.nii.gz" in failed[bad_mask]
    assert "no row in the clinical table" in failed[no_clinical] and "clinical.csv" in failed[no_clinical]
    assert all(case in err for case in failed)
    predicted = pd.read_csv(out / "predictions.csv")
    assert sorted(predicted["case_id"]) == sorted([odd_clinical, good])
    warnings = json.loads((out / f"{odd_clinical}.json").read_text())["warnings"]
    assert any("'age' = 130 is outside the training range" in w for w in warnings)
    assert any("'primary' = 'thyroid' was never seen" in w for w in warnings)
    assert any("the lesion mask holds no lesion" in w for w in warnings)
    assert json.loads((out / f"{good}.json").read_text())["warnings"] == []


def test_continue_prediction_skips_the_cases_already_written(trained, ensemble, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(ensemble[0], out)
    first = sorted(out.glob("*_local_failure_gradcam.nii.gz"))[0].name.split("_local_failure")[0]
    (out / f"{first}.json").unlink()  # as if interrupted before this case was written
    calls = []
    original = GLMILPredictor.predict_case

    def counting(self, case, *args, **kwargs):
        calls.append(case.case_id)
        return original(self, case, *args, **kwargs)

    monkeypatch.setattr(GLMILPredictor, "predict_case", counting)
    frame, failures = predict(trained, out, save_gradcam=True, continue_prediction=True)
    assert calls == [first] and failures == {} and len(frame) == 5
    pd.testing.assert_frame_equal(frame, ensemble[1], rtol=1e-6)


def _counting_predict_case(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = GLMILPredictor.predict_case

    def counting(self, case, *args, **kwargs):
        calls.append(case.case_id)
        return original(self, case, *args, **kwargs)

    monkeypatch.setattr(GLMILPredictor, "predict_case", counting)
    return calls


def test_continue_prediction_predicts_again_what_other_settings_produced(trained, ensemble, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(ensemble[0], out)
    (out / ".tmp_predictions.csv.12345.csv").write_text("half-written by a killed run")
    calls = _counting_predict_case(monkeypatch)
    frame, failures = predict(trained, out, save_gradcam=True, continue_prediction=True)
    assert calls == [] and failures == {}  # same settings: every case reused
    assert not list(out.glob(".tmp_*"))  # the killed run's temporary file is gone
    pd.testing.assert_frame_equal(frame, ensemble[1], rtol=1e-6)

    single, _ = predict(trained, out, folds=[0], save_gradcam=True, continue_prediction=True)  # another model
    assert len(calls) == 5
    assert not np.allclose(single[BINARY].to_numpy(float), ensemble[1][BINARY].to_numpy(float))
    settings = json.loads((out / "prediction_settings.json").read_text())
    assert settings["folds"] == ["0"]
    assert all(json.loads((out / f"{c}.json").read_text())["produced_by"] == settings["produced_by"]["fingerprint"]
               for c in single["case_id"])

    calls.clear()
    predict(trained, out, folds=[0], save_gradcam=True, continue_prediction=True, use_tta=False)
    assert len(calls) == 5  # TTA changed
    calls.clear()
    table = pd.read_csv(trained["raw"] / "clinicalTs.csv", dtype=str, keep_default_na=False)
    table.loc[0, "age"] = str(int(table.loc[0, "age"]) + 1)
    table.to_csv(tmp_path / "clinical.csv", index=False)
    predict(trained, out, folds=[0], save_gradcam=True, continue_prediction=True, use_tta=False,
            clinical_file=tmp_path / "clinical.csv")
    assert len(calls) == 5  # the clinical table changed


def test_hostile_names_in_a_copied_model_folder_write_nothing_outside_the_output(trained, tmp_path, capsys):
    raw = trained["raw"]
    copy = tmp_path / "models" / "copied"
    shutil.copytree(trained["model"], copy)
    hostile = "../../../evil_lf"
    for name in ("plans.json", "dataset.json"):
        content = json.loads((copy / name).read_text())
        if name == "plans.json":
            content["endpoints"][0]["name"] = hostile
        else:
            content["endpoints"][hostile] = content["endpoints"].pop("local_failure")
        (copy / name).write_text(json.dumps(content))
    before = {p for p in tmp_path.rglob("*")}
    out = tmp_path / "a" / "b" / "out"
    code = predict_from_modelfolder_entry(["-i", str(raw / "imagesTs"), "-l", str(raw / "labelsTs"), "-o", str(out),
                                           "-m", str(copy), "--save_gradcam", "--no_progress", "-device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2
    assert "plans.json: endpoint name '../../../evil_lf' may only hold letters" in err
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(out in p.parents or p == out or out.is_relative_to(p) for p in created), created
    assert not list(tmp_path.rglob("*evil*"))


def test_input_and_output_folder_problems_are_one_line_errors_with_exit_code_2(trained, tmp_path, capsys):
    raw = trained["raw"]
    model = ["-m", str(raw / "labelsTs"), "-d", "1", "-tr", "PredictionTestTrainer", "--no_progress", "-device", "cpu"]

    def run(images: Path, out: Path) -> str:
        assert predict_entry(["-i", str(images), "-o", str(out), *model]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err
        return err

    (tmp_path / "empty").mkdir()
    assert "no image files named {case}_{cccc}.nii.gz" in run(tmp_path / "empty", tmp_path / "o1")
    assert "found nothing" in run(tmp_path / "empty", tmp_path / "o1")

    uncompressed = tmp_path / "uncompressed"
    uncompressed.mkdir()
    case = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))[0].name[: -len("_0000.nii.gz")]
    for channel in (0, 1):
        sitk.WriteImage(sitk.ReadImage(str(raw / "imagesTs" / f"{case}_{channel:04d}.nii.gz")),
                        str(uncompressed / f"{case}_{channel:04d}.nii"))
    err = run(uncompressed, tmp_path / "o2")
    assert f"found {case}_0000.nii, {case}_0001.nii" in err and "0000 = T1c, 0001 = FLAIR" in err

    no_suffix = tmp_path / "no_suffix"
    no_suffix.mkdir()
    shutil.copy(raw / "imagesTs" / f"{case}_0000.nii.gz", no_suffix / f"{case}.nii.gz")  # SBM_0021 -> 'SBM', 21
    err = run(no_suffix, tmp_path / "o3")
    assert "the channel suffix is missing" in err and f"{case}_0000.nii.gz" in err

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    err = run(raw / "imagesTs", blocker / "out")
    assert "cannot write the predictions to" in err and len(err.strip().splitlines()) == 1


def test_risk_groups_come_from_the_out_of_fold_predictions_of_the_checkpoint_used(trained, ensemble, tmp_path,
                                                                                  capsys):
    from glmil_auto.inference.model_folder import ModelFolderError

    model = trained["model"]
    final_tables = {f: (model / f"fold_{f}" / "validation" / "predictions.csv").read_text() for f in (0, 1)}
    with pytest.raises(ModelFolderError, match="predictions_checkpoint_best.csv is missing.*--val --val_best"):
        GLMILPredictor(model, checkpoint_name="checkpoint_best.pt", device="cpu")
    for fold in (0, 1):
        run_training(1, fold, "PredictionTestTrainer", only_validate=True, validate_best=True)
        assert (model / f"fold_{fold}" / "validation" / "predictions.csv").read_text() == final_tables[fold]
    predictor = GLMILPredictor(model, checkpoint_name="checkpoint_best.pt", device="cpu")
    record = json.loads((model / "risk_groups_checkpoint_best.json").read_text())
    assert record["checkpoint"] == "checkpoint_best.pt" and record["endpoints"] == predictor.risk_scales
    assert json.loads((model / "risk_groups.json").read_text())["checkpoint"] == "checkpoint_final.pt"


def test_explain_writes_shap_contributions_that_add_up_to_the_ensemble(trained, tmp_path, capsys):
    """--explain: every case's JSON has, per endpoint, every feature's SHAP value, largest first,
    adding up to the folds' mean logit (binary) or to the ensembled standardised risk (survival)."""
    from glmil_auto.model.shap_explanations import FOCI_FEATURE, GLOBAL_FEATURE, LESION_FEATURE, LOCAL_FEATURE

    out = tmp_path / "explained"
    frame, failures = predict(trained, out, use_tta=False, explain=True)
    assert not failures
    features = [f["name"] for f in json.loads((trained["model"] / "plans.json").read_text())["clinical"]["features"]]
    for row in frame.itertuples():
        content = json.loads((out / f"{row.case_id}.json").read_text())
        explanation = content["explanation"]
        assert set(explanation) == {*BINARY, "os"}
        for name, block in explanation.items():
            contributions = block["contributions"]
            assert {c["feature"] for c in contributions} == {*features, "lesion count", "total lesion volume (mL)",
                                                              FOCI_FEATURE, GLOBAL_FEATURE, LOCAL_FEATURE,
                                                              LESION_FEATURE}
            magnitudes = [abs(c["shap"]) for c in contributions]
            assert magnitudes == sorted(magnitudes, reverse=True)
            assert block["base_value"] + sum(c["shap"] for c in contributions) == pytest.approx(
                block["output_value"], abs=1e-4)
        folds = content["per_fold"].values()
        mean_logit = np.mean([np.log(f["local_failure"] / (1 - f["local_failure"])) for f in folds])
        assert explanation["local_failure"]["output_value"] == pytest.approx(mean_logit, abs=1e-3)
        assert explanation["os"]["output_value"] == pytest.approx(row.os_risk, abs=1e-3)
        count = next(c for c in explanation["os"]["contributions"] if c["feature"] == "lesion count")
        assert count["value"] == content["n_instances"]

    # a model folder without the SHAP background says how to write it, and predicts nothing
    copy = tmp_path / "copied_model"
    shutil.copytree(trained["model"], copy)
    (copy / "fold_1" / "validation" / "shap_background.npz").unlink()
    raw = trained["raw"]
    code = predict_from_modelfolder_entry(["-m", str(copy), "-i", str(raw / "imagesTs"), "-l", str(raw / "labelsTs"),
                                           "-o", str(tmp_path / "none"), "--explain", "-device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "shap_background.npz is missing" in err and "--val" in err
    assert not list((tmp_path / "none").glob("*.json"))


def test_glmil_evaluate_held_out_and_cross_validation(trained, ensemble, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score
    from sksurv.metrics import concordance_index_censored

    from glmil_auto.evaluation.evaluate_command import evaluate_entry

    out, frame, _ = ensemble
    raw = trained["raw"]
    code = evaluate_entry(["-d", "1", "-i", str(out / "predictions.csv"), "-o", str(tmp_path / "ev"),
                           "--n_bootstrap", "50", "--no_progress"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text(), parse_constant=lambda c: 1 / 0)
    table = pd.read_csv(raw / "clinicalTs.csv", dtype={"case_id": str}).set_index("case_id").loc[frame["case_id"]]
    entry = metrics["endpoints"]["local_failure"]["cohorts"]["all"]
    known = table["local_failure"].notna().to_numpy()
    y, p = table["local_failure"].to_numpy()[known], frame["local_failure"].to_numpy()[known]
    if 0 < y.sum() < len(y):
        assert entry["scores"]["model"]["auc"]["auc"] == pytest.approx(roc_auc_score(y, p))
        baseline = metrics["baselines"]["clinical model"]
        assert baseline == "evaluated", baseline
        comparison = entry["comparisons"][0]
        assert comparison["baseline"] == "clinical model" and 0 <= comparison["p_value"] <= 1
    os_entry = metrics["endpoints"]["os"]["cohorts"]["all"]
    c = concordance_index_censored(table["os_event"].astype(bool).to_numpy(), table["os_months"].to_numpy(),
                                   frame["os_risk"].to_numpy())[0]
    assert os_entry["scores"]["model"]["harrell"]["c_index"] == pytest.approx(c)
    assert metrics["cohort_table"][0]["group"] == "all" and metrics["cohort_table"][0]["n"] == len(frame)
    assert set(metrics["multivariable"]) == {*BINARY, "os"}
    assert "local_failure" in printed.out and "Harrell's C" in printed.out
    report = (tmp_path / "ev" / "report.html").read_text()
    assert metrics["report"] == str(tmp_path / "ev" / "report.html") and "local_failure" in report
    assert metrics["shap"] == {}  # predicted without --explain
    assert "no SHAP values: predict with glmil_predict --explain" in report

    code = evaluate_entry(["-d", "1", "-tr", "PredictionTestTrainer", "--cv", "-o", str(tmp_path / "cv"),
                           "--n_bootstrap", "20", "--no_progress"])
    assert code == 0, capsys.readouterr().err
    cv = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert cv["group_column"] == "fold" and set(cv["endpoints"]["os"]["cohorts"]) == {"all", "0", "1"}
    # the clinical model is fitted per fold on that fold's training cases
    assert cv["baselines"]["clinical model"] == "evaluated", cv["baselines"]
    assert "clinical model" in cv["endpoints"]["os"]["cohorts"]["all"]["scores"]
    # SHAP from the folds' final validation: every out-of-fold case
    assert cv["shap"]["os"]["n_cases"] == cv["cohort_table"][0]["n"]
    assert "SHAP summary" in (tmp_path / "cv" / "report.html").read_text()
    assert evaluate_entry(["-d", "1", "-o", str(tmp_path / "x")]) == 2  # neither -i nor --cv


@pytest.fixture(scope="module")
def labelled_centre(trained, tmp_path_factory):
    """The training centres' cases predicted by the model (20 labelled cases to update from)."""
    out = tmp_path_factory.mktemp("labelled")
    raw = trained["raw"]
    predict(trained, out, raw / "imagesTr", raw / "labelsTr", clinical_file=raw / "clinicalTr.csv", use_tta=False)
    return out


def _file_hashes(folder: Path) -> dict[str, str]:
    from glmil_auto.utilities.content_hash import file_sha256

    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_updated_model_folder_round_trips_through_glmil_predict(trained, ensemble, labelled_centre, tmp_path,
                                                                    capsys):
    from sklearn.metrics import roc_auc_score

    from glmil_auto.inference.model_update_file import read_model_update
    from glmil_auto.inference.model_updating import apply_binary_update
    from glmil_auto.inference.recalibrate_command import recalibrate_entry

    raw, source = trained["raw"], trained["model"]
    before = _file_hashes(source)
    updated = tmp_path / "updated"
    args = ["-m", str(source), "-i", str(labelled_centre / "predictions.csv"), "-c", str(raw / "clinicalTr.csv"),
            "--method", "intercept"]
    assert recalibrate_entry([*args, "-o", str(source / "inside")]) == 2  # never into the source folder
    assert "the source model stays untouched" in capsys.readouterr().err
    assert recalibrate_entry([*args, "-o", str(updated), "--centre", "training centres"]) == 0
    printed = capsys.readouterr().out
    assert _file_hashes(source) == before  # the original folder is untouched
    record = read_model_update(updated)
    assert record["source_model_folder"] == str(source.resolve()) and record["centre"] == "training centres"
    centre = record["centres"]["*"]
    assert centre["cases"] == 20
    for name in BINARY + ["os"]:
        update = centre["endpoints"][name]
        assert update["method"] == ("baseline" if name == "os" else "intercept"), update
        assert f"{name}: {update['method']} ({update['n']} cases, {update['events']} events" in printed

    predictor = GLMILPredictor(updated, device="cpu")
    frame, failures = predictor.predict_from_files(raw / "imagesTs", raw / "labelsTs", tmp_path / "out",
                                                   clinical_file=raw / "clinicalTs.csv", progress=False)
    _, original, _ = ensemble
    assert failures == {}
    frame, original = frame.set_index("case_id"), original.set_index("case_id")
    for name in BINARY:  # the probabilities before the update are the source model's own
        np.testing.assert_allclose(frame[f"{name}_before_update"], original[name], rtol=1e-12)
        np.testing.assert_allclose(frame[name], apply_binary_update(centre["endpoints"][name], original[name]),
                                   rtol=1e-12)
        assert np.array_equal(np.argsort(frame[name].to_numpy()), np.argsort(original[name].to_numpy()))
    np.testing.assert_allclose(frame["os_risk"], original["os_risk"], rtol=1e-12)  # the ranking is not touched
    np.testing.assert_allclose(frame["os_surv_12_before_update"], original["os_surv_12"], rtol=1e-12)
    assert (frame["os_risk_group"] == original["os_risk_group"]).all()
    truth = pd.read_csv(raw / "clinicalTs.csv", dtype={"case_id": str}).set_index("case_id").loc[frame.index]
    for name in BINARY:
        known = truth[name].notna()
        if truth.loc[known, name].nunique() == 2:
            assert roc_auc_score(truth.loc[known, name], frame.loc[known, name]) == \
                roc_auc_score(truth.loc[known, name], original.loc[known, name])
    case = json.loads((tmp_path / "out" / f"{frame.index[0]}.json").read_text())
    assert case["model_update"] == {"centre": "*", "methods": {n: centre["endpoints"][n]["method"]
                                                               for n in BINARY + ["os"]}}


def test_recalibrate_refuses_bad_probabilities_and_updates_per_centre(trained, labelled_centre, tmp_path, capsys):
    from glmil_auto.inference.model_update_file import read_model_update
    from glmil_auto.inference.recalibrate_command import recalibrate_entry

    raw, source = trained["raw"], trained["model"]
    edited = tmp_path / "edited"
    shutil.copytree(labelled_centre, edited)
    table = pd.read_csv(edited / "predictions.csv", dtype={"case_id": str})
    table.loc[3, "distant_failure"] = 7.0
    table.to_csv(edited / "predictions.csv", index=False)
    args = ["-m", str(source), "-c", str(raw / "clinicalTr.csv")]
    assert recalibrate_entry([*args, "-i", str(edited / "predictions.csv"), "-o", str(tmp_path / "bad")]) == 1
    assert f"case {table.loc[3, 'case_id']}, column 'distant_failure': '7.0' is not a probability" in \
        capsys.readouterr().err
    assert not (tmp_path / "bad").exists()

    out = tmp_path / "per_centre"
    assert recalibrate_entry([*args, "-i", str(labelled_centre / "predictions.csv"), "-o", str(out), "--per-centre",
                              "--method", "intercept"]) == 0
    record = read_model_update(out)
    centres = pd.read_csv(raw / "clinicalTr.csv")["center"]
    assert record["centre_column"] == "center" and sorted(record["centres"]) == sorted(centres.unique())
    assert sum(c["cases"] for c in record["centres"].values()) == 20
    predictor = GLMILPredictor(out, device="cpu", use_tta=False)  # the held-out centre has no update of its own
    frame, _ = predictor.predict_from_files(raw / "imagesTs", raw / "labelsTs", tmp_path / "ts",
                                            clinical_file=raw / "clinicalTs.csv", progress=False)
    for name in BINARY:
        np.testing.assert_array_equal(frame[name], frame[f"{name}_before_update"])
    case = json.loads((tmp_path / "ts" / f"{frame['case_id'][0]}.json").read_text())
    assert any("no model update for centre" in w for w in case["warnings"]) and case["model_update"]["centre"] is None


def test_model_folder_problems_are_clear(trained, tmp_path, capsys):
    raw = trained["raw"]
    args = ["-i", str(raw / "imagesTs"), "-m", str(raw / "labelsTs"), "-o", str(tmp_path / "o"), "-d", "1"]
    assert predict_entry(args + ["-tr", "NoSuchTrainer"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert predict_entry(args + ["-tr", "PredictionTestTrainer", "-f", "3"]) == 2
    assert "fold(s) ['3']" in capsys.readouterr().err


# ---------------------------------------------------------------------- numerics
def test_mirror_variants_and_mirroring():
    assert mirror_variants([2], [2]) == [((), ()), ((2,), (2,))]
    assert mirror_variants([2], [2], enabled=False) == [((), ())]
    assert mirror_variants([0, 2], [2]) == [((), ()), ((0,), ()), ((2,), (2,)), ((0, 2), (2,))]
    rng = np.random.default_rng(0)
    batch = {"global": rng.normal(size=(1, 2, 3, 4, 5)), "instances": rng.normal(size=(1, 2, 2, 2, 3, 4, 5)),
             "instance_mask": np.ones((1, 2), bool)}
    flipped = mirror_case_batch(batch, ((2,), (0,)))
    np.testing.assert_array_equal(flipped["global"], batch["global"][..., ::-1])
    np.testing.assert_array_equal(flipped["instances"], batch["instances"][:, :, :, :, ::-1])
    assert flipped["instance_mask"] is batch["instance_mask"]


def test_risk_groups_from_out_of_fold_tertiles():
    rng = np.random.default_rng(1)
    tables = {"0": pd.DataFrame({"os_log_risk": rng.normal(3.0, 2.0, 300)}),
              "1": pd.DataFrame({"os_log_risk": rng.normal(-1.0, 0.5, 300)})}
    scales = fit_risk_scales(tables, ["os"])["os"]
    assert scales["folds"]["0"]["mean"] == pytest.approx(tables["0"]["os_log_risk"].mean())
    assert scales["folds"]["1"]["std"] == pytest.approx(tables["1"]["os_log_risk"].std(ddof=0))
    pooled = np.concatenate([(t["os_log_risk"] - scales["folds"][f]["mean"]) / scales["folds"][f]["std"]
                             for f, t in tables.items()])
    groups = pd.Series(assign_risk_groups(pooled, scales["cutoffs"])).value_counts()
    assert groups.to_dict() == pytest.approx({"low": 200, "intermediate": 200, "high": 200}, abs=1)
    assert assign_risk_groups([-1.0, 0.0, 0.5, 1.0, 2.0], [0.0, 1.0]) == ["low", "intermediate", "intermediate",
                                                                        "high", "high"]
    assert cutoffs_from_risks(np.array([1.0, 2.0, 3.0, np.nan]), [0.5]) == [2.0]
    with pytest.raises(ValueError, match="cut-offs need"):
        assign_risk_groups([0.0], [0.0, 1.0], names=["a", "b"])
