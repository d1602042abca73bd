"""glmil_train: learning on an easy cohort, outputs, exact resuming, DDP on the CPU, bad data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from glmil_auto.dataset.problems import DatasetError
from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
from glmil_auto.synthetic import generate_synthetic_dataset
from glmil_auto.training.entry_points import train_entry
from glmil_auto.training.run_training import run_distributed, run_training
from glmil_auto.training.trainers.checkpointing import load_checkpoint
from glmil_auto.training.trainers.trainer import GLMILTrainer

NAME = "Dataset001_SynthBrainMets"
N_TRAIN, N_VAL = 36, 20


class TinyTrainer(GLMILTrainer):
    """Small and fast; no augmentation workers so that tests stay quick."""

    num_epochs = 4
    iterations_per_epoch = 3
    warmup_epochs = 1
    initial_lr = 2e-3
    save_every = 2
    num_augmentation_workers = 0


class LearningTrainer(TinyTrainer):
    """Without the clinical offset (which would already hold the volume rule at epoch 0), so that
    the falling loss shows the network itself learning it."""

    num_epochs = 12
    iterations_per_epoch = 5
    use_clinical_offset = False


class DeterministicTrainer(TinyTrainer):
    deterministic = True


class InterruptedTrainer(DeterministicTrainer):
    """Stops (like a killed job) right after the checkpoint of epoch 2 is written."""

    def _end_epoch(self, *args, **kwargs):
        super()._end_epoch(*args, **kwargs)
        if self.current_epoch == 2:
            raise KeyboardInterrupt("simulated interruption")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """An easy cohort: local_failure := total lesion volume in the mask above the median, a quantity
    the network sees directly (the global lesion-mask channel and every instance's log volume)."""
    root = tmp_path_factory.mktemp("training")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
        for name in ("raw", "preprocessed", "results"):
            mp.setenv(f"glmil_{name}", str(root / name))
        generate_synthetic_dataset(root / "raw", n_train=N_TRAIN + N_VAL, n_test=0, n_centres=3, size=4.0,
                                            seed=21, num_processes=2, progress=False)
        plan_and_preprocess(1, num_processes=2, device=DeviceProfile("cpu", "cpu", 0.5, 2), progress=False)
        preprocessed = root / "preprocessed" / NAME
        # batches of 4, on which these tests were calibrated (the planner fills 0.5 GiB with 11 bags;
        # with the same 60 steps, LearningTrainer learns the volume rule from batches of 4 only)
        plans = json.loads((preprocessed / "plans.json").read_text())
        plans["training"]["batch_size"] = 4
        (preprocessed / "plans.json").write_text(json.dumps(plans))
        table = pd.read_csv(preprocessed / "clinicalTr.csv", dtype=str, keep_default_na=False)
        volume = np.array([sum(lesion["volume_mm3"] for lesion in json.loads(
            (preprocessed / "plans" / "Tr" / f"{case}.json").read_text())["lesions"]) for case in table["case_id"]])
        table["local_failure"] = (volume > np.median(volume)).astype(int).astype(str)
        table.to_csv(preprocessed / "clinicalTr.csv", index=False)  # the trainer reads this copy
        ids = sorted(table["case_id"])
        rng = np.random.default_rng(0)
        val = sorted(rng.choice(ids, N_VAL, replace=False).tolist())
        splits = [{"train": sorted(set(ids) - set(val)), "val": val}] * 5
        (root / "preprocessed" / NAME / "splits_final.json").write_text(json.dumps(splits))
        yield {"root": root, "mp": mp}


def fold_folder(env, trainer: str, fold: str = "0"):
    return env["root"] / "results" / NAME / f"{trainer}__plans" / f"fold_{fold}"


def test_a_short_training_learns_the_easy_endpoint(env):
    trainer = run_training(1, 0, "LearningTrainer")
    summary = json.loads((fold_folder(env, "LearningTrainer") / "validation" / "summary.json").read_text())
    auc = summary["metrics"]["local_failure"]
    # 10 positives / 10 negatives held out: chance reaches AUC >= 0.8 with probability < 1 %
    assert auc >= 0.8, summary
    assert trainer.log[-1]["train"]["loss"] < trainer.log[0]["train"]["loss"]


def test_outputs_of_a_fold(env):
    folder = fold_folder(env, "LearningTrainer")
    for name in ("checkpoint_final.pt", "checkpoint_best.pt", "training_log.json", "progress.png", "debug.json"):
        assert (folder / name).is_file(), name
    assert not (folder / "checkpoint_latest.pt").exists()
    predictions = pd.read_csv(folder / "validation" / "predictions.csv")
    assert len(predictions) == N_VAL and predictions["case_id"].is_unique
    for column in ("local_failure", "distant_failure", "leptomeningeal_failure", "os_log_risk", "true_local_failure",
                   "true_os_months", "true_os_event"):
        assert column in predictions
    assert predictions["local_failure"].between(0, 1).all()
    log = json.loads((folder / "training_log.json").read_text())
    assert [e["epoch"] for e in log] == list(range(12))
    assert {"local_failure", "os", "mean"} <= set(log[-1]["validation"])
    # the planner's memory estimate next to the measured peak of a training step (the second)
    memory = log[0]["memory"]
    assert memory["device"] == "cpu" and memory["bags"] >= 1 and memory["measured_peak_bytes"] > 2**20
    assert abs(memory["estimated_bytes_for_this_batch"] - memory["measured_peak_bytes"]) <= 0.25 * memory["measured_peak_bytes"]
    assert memory["planned_estimate_bytes"] > 0 and sum("memory" in e for e in log) == 1
    checkpoint = load_checkpoint(folder / "checkpoint_final.pt")  # weights_only=True inside
    assert checkpoint["metadata"]["current_epoch"] == 12
    assert torch.is_tensor(checkpoint["network"]["clinical_encoder.mean"])  # fold statistics travel with the weights


def test_final_validation_explains_the_validation_cases_with_shap(env):
    """explanations.json holds every validation case; each case's SHAP values add up to the logit
    that the fold predicted; on a cohort whose label is the lesion volume, the lesion evidence
    (volume, count, the image branches) outweighs the clinical variables."""
    from glmil_auto.model.shap_explanations import ExplanationInputs

    folder = fold_folder(env, "LearningTrainer") / "validation"
    explanations = json.loads((folder / "explanations.json").read_text())
    background = ExplanationInputs.load(folder / "shap_background.npz")
    predictions = pd.read_csv(folder / "predictions.csv", dtype={"case_id": str}).set_index("case_id")
    assert sorted(explanations) == sorted(predictions.index) == sorted(background.case_ids)
    lesion_evidence = {"lesion count", "total lesion volume (mL)", "image: global branch", "image: lesion branch",
                       "lesions: radiomics and lesion scores"}
    importance = {}
    for case, block in explanations.items():
        entry = block["local_failure"]
        p = predictions.loc[case, "local_failure"]
        assert entry["output_value"] == pytest.approx(np.log(p / (1 - p)), abs=1e-3)
        assert entry["base_value"] + sum(c["shap"] for c in entry["contributions"]) == pytest.approx(
            entry["output_value"], abs=1e-4)
        for item in entry["contributions"]:
            importance[item["feature"]] = importance.get(item["feature"], 0.0) + abs(item["shap"]) / len(explanations)
    lesion = sum(v for k, v in importance.items() if k in lesion_evidence)
    clinical = sum(v for k, v in importance.items() if k not in lesion_evidence)
    assert lesion > clinical, importance


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(env):
    run_training(1, 1, "DeterministicTrainer")
    with pytest.raises(KeyboardInterrupt):
        run_training(1, 1, "InterruptedTrainer")
    interrupted = fold_folder(env, "InterruptedTrainer", "1")
    assert (interrupted / "checkpoint_latest.pt").is_file() and not (interrupted / "checkpoint_final.pt").exists()
    # continue the interrupted run under the uninterrupted trainer's class, in its folder
    reference = fold_folder(env, "DeterministicTrainer", "1")
    resumed = env["root"] / "results" / NAME / "DeterministicTrainer__plans" / "fold_1_resumed"
    shutil.copytree(interrupted, resumed)
    trainer = DeterministicTrainer(1, 1)
    trainer.output_folder = resumed
    trainer.resume()
    assert trainer.current_epoch == 2
    trainer.run_training()
    a = load_checkpoint(reference / "checkpoint_final.pt")["network"]
    b = load_checkpoint(resumed / "checkpoint_final.pt")["network"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_offset_is_fitted_and_the_final_model_is_the_selected_one(env):
    """DeterministicTrainer keeps the default offset and model selection (fold 1 was trained above)."""
    folder = fold_folder(env, "DeterministicTrainer", "1")
    offset = json.loads((folder / "debug.json").read_text())["clinical_offset"]
    assert offset["n_cases"] == N_TRAIN and set(offset["weights"]) == {"local_failure", "distant_failure",
                                                                        "leptomeningeal_failure", "os"}
    summary = json.loads((folder / "validation" / "summary.json").read_text())
    assert set(summary["starting_point_metrics"]) >= {"local_failure", "os", "mean"}
    final = load_checkpoint(folder / "checkpoint_final.pt")
    best = load_checkpoint(folder / "checkpoint_best.pt")
    for key, value in best["network"].items():  # the final model is the best checkpoint's weights
        torch.testing.assert_close(final["network"][key], value, rtol=0, atol=0, msg=key)
    meta = final["metadata"]
    assert meta["selected_epoch"] == meta["best_epoch"] == summary["selected_epoch"]
    assert meta["current_epoch"] == TinyTrainer.num_epochs  # training ran to the end all the same
    log = json.loads((folder / "training_log.json").read_text())
    emas = [e["selection_ema"] for e in log]
    if summary["selected_epoch"] is None:  # the starting point won: no epoch's EMA beat it by the selection margin
        assert max(emas) <= meta["best_ema"] + meta["selection_margin"]
    else:
        assert emas[summary["selected_epoch"]] == max(emas) == meta["best_ema"]


def test_cli_validation_only_and_missing_checkpoint(env, capsys):
    assert train_entry([str(1), "0", "-tr", "LearningTrainer", "--val", "-device", "cpu"]) == 0
    assert (fold_folder(env, "LearningTrainer") / "validation" / "summary.json").is_file()
    with pytest.raises(ValueError, match="unknown trainer 'Nope'"):
        train_entry(["1", "0", "-tr", "Nope", "-device", "cpu"])


def test_two_process_gloo_ddp_trains_and_checkpoints(env):
    # spawned ranks import glmil_auto afresh, so the variant is given as attribute overrides
    overrides = {"num_epochs": 2, "iterations_per_epoch": 2, "warmup_epochs": 1, "num_augmentation_workers": 0}
    run_distributed(2, dataset=1, fold=2, trainer_name="GLMILTrainer", plans_name="plans", device="cpu",
                    continue_training=False, only_validate=False, validate_best=False, overrides=overrides)
    folder = fold_folder(env, "GLMILTrainer", "2")
    assert (folder / "checkpoint_final.pt").is_file()
    log = json.loads((folder / "training_log.json").read_text())
    assert len(log) == 2 and np.isfinite(log[-1]["train"]["loss"])
    assert len(pd.read_csv(folder / "validation" / "predictions.csv")) == N_VAL  # gathered from both ranks


def _train_subprocess(command: list[str], timeout: int = 420) -> None:
    import subprocess

    from glmil_auto.utilities.peak_memory import PROFILER_NOISE

    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)  # a deadlock fails here
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = (result.stdout + result.stderr).splitlines()
    # the memory measurement is logged, the profiler's native noise (USDT, CPUAllocator) is not
    assert any("memory of a training step: measured peak" in line for line in output), output[-20:]
    assert not [line for line in output if PROFILER_NOISE.search(line) or "USDT" in line or "CPUAllocator" in line]


def test_ddp_val_best_finishes_and_torchrun_gives_the_num_gpus_numbers(env):
    """``--num-gpus 2 --val_best`` once hung: rank 0 validated alone and waited for rank 1 in the
    gather. Both launchers must finish and agree (gloo, deterministic algorithms)."""
    import sys

    folder = fold_folder(env, "GLMILTrainer_2epochs", "2")
    common = ["1", "2", "-tr", "GLMILTrainer_2epochs", "-device", "cpu", "--val_best", "--deterministic"]
    glmil_train = [sys.executable, "-m", "glmil_auto.training.entry_points"]
    _train_subprocess([*glmil_train, *common, "--num-gpus", "2"])
    spawned_log = json.loads((folder / "training_log.json").read_text())
    spawned_best = pd.read_csv(folder / "validation" / "predictions_checkpoint_best.csv")
    final = pd.read_csv(folder / "validation" / "predictions.csv")
    assert len(spawned_best) == len(final) == N_VAL  # gathered from both ranks; the final one's kept
    assert json.loads((folder / "validation" / "summary_checkpoint_best.json").read_text())["checkpoint"] == \
        "checkpoint_best.pt"

    _train_subprocess([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                       "-m", "glmil_auto.training.entry_points", *common])
    torchrun_log = json.loads((folder / "training_log.json").read_text())
    torchrun_best = pd.read_csv(folder / "validation" / "predictions_checkpoint_best.csv")
    assert len(torchrun_log) == len(spawned_log) == 2
    for a, b in zip(spawned_log, torchrun_log):
        np.testing.assert_allclose(a["train"]["loss"], b["train"]["loss"], rtol=1e-5)
    numeric = [c for c in spawned_best.columns if c != "case_id" and not c.startswith("true_")]
    pd.testing.assert_frame_equal(spawned_best.sort_values("case_id").reset_index(drop=True)[numeric],
                                  torchrun_best.sort_values("case_id").reset_index(drop=True)[numeric], rtol=1e-5,
                                  atol=1e-6)  # float32 weights all-reduced in another order: ~1e-7 on log-risks near 0


def test_missing_preprocessed_file_names_the_case(env):
    folder = env["root"] / "preprocessed" / NAME / "plans" / "Tr"
    victim = sorted(folder.glob("*_local.b2nd"))[0]
    case = victim.name[: -len("_local.b2nd")]
    backup = victim.read_bytes()
    victim.write_bytes(b"not blosc2 at all")
    try:
        trainer = TinyTrainer(1, "all")
        trainer.initialize()
        with pytest.raises(DatasetError) as info:
            trainer.predict_cases([case])
        assert info.value.problems[0].case == case and info.value.problems[0].file == str(victim)
    finally:
        victim.write_bytes(backup)


def test_a_trainer_in_a_new_file_is_found_by_glmil_train(env, capsys):
    """``-tr NAME`` searches every module of glmil_auto.training, as nnU-Net's
    recursive_find_python_class: a subclass in a new file needs no registry."""
    import subprocess
    import sys
    import uuid

    from glmil_auto.training.trainers.trainer_registry import find_trainer

    # a module that nothing imports is found (in a fresh interpreter, to see it is not imported before)
    code = ("import sys; from glmil_auto.training.trainers.trainer_registry import find_trainer; "
            "assert 'glmil_auto.training.trainers.variants_budget' not in sys.modules; "
            "print(find_trainer('GLMILTrainer_noInstanceBudget').__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "glmil_auto.training.trainers.variants_budget"
    name = f"found_by_name_{uuid.uuid4().hex[:8]}"
    path = Path(find_trainer.__code__.co_filename).parent / f"{name}.py"  # a file in a sub-package is found too
    trainer = f"GLMILTrainer_{name}"
    path.write_text("from glmil_auto.training.trainers.trainer import GLMILTrainer\n\n\n"
                    f"class {trainer}(GLMILTrainer):\n"
                    "    num_epochs = 1\n    iterations_per_epoch = 1\n    warmup_epochs = 0\n"
                    "    num_augmentation_workers = 0\n    explain_validation = False\n")
    try:
        assert train_entry(["1", "0", "-tr", trainer, "-device", "cpu"]) == 0
        assert find_trainer(trainer).__module__ == f"glmil_auto.training.trainers.{name}"
    finally:
        path.unlink()
    summary = json.loads((fold_folder(env, trainer) / "validation" / "summary.json").read_text())
    assert summary["n_cases"] == N_VAL
    with pytest.raises(ValueError, match="unknown trainer 'GLMILTrainer_nowhere'; available: .*GLMILTrainer_demo"):
        find_trainer("GLMILTrainer_nowhere")


def test_centre_held_out_training_validates_on_the_left_out_centre(env):
    """glmil_train --split centre: fold k validates on every case of the k-th centre and trains on
    the others, in its own model folder (the random folds' fold_0 is not overwritten)."""
    from glmil_auto.dataset.dataset_json import load_dataset_json

    assert train_entry(["1", "0", "-tr", "TinyTrainer", "--split", "centre", "-device", "cpu"]) == 0
    folder = env["root"] / "results" / NAME / "TinyTrainer_centreHeldOut__plans"
    recorded = json.loads((folder / "splits.json").read_text())
    preprocessed = env["root"] / "preprocessed" / NAME
    spec = load_dataset_json(preprocessed)
    table = pd.read_csv(preprocessed / "clinicalTr.csv", dtype=str).set_index("case_id")
    centres = sorted(table[spec.group_column].unique())
    assert len(centres) >= 2 and recorded["scheme"] == "centre"
    assert [f["centre"] for f in recorded["splits"]] == centres  # one fold per training centre
    fold = recorded["splits"][0]
    assert set(table.loc[fold["val"], spec.group_column]) == {fold["centre"]}
    assert fold["centre"] not in set(table.loc[fold["train"], spec.group_column])
    predictions = pd.read_csv(folder / "fold_0" / "validation" / "predictions.csv", dtype={"case_id": str})
    assert sorted(predictions["case_id"]) == fold["val"]
