"""The accuracy benchmark end to end on a tiny cohort (a few epochs): every stage runs, every row
is there, and the model beats a constant predictor. The full run is documented in
documentation/accuracy.md; this only guards the script."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from script_modules import load_script

SCRIPT = "benchmarks/accuracy.py"


def test_reduced_accuracy_benchmark_runs_end_to_end(tmp_path, monkeypatch):
    for name in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"glmil_{name}", str(tmp_path / name))
    monkeypatch.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
    doc = tmp_path / "accuracy.md"
    results = load_script(SCRIPT).main([
        "--dataset", "7", "--n-train", "40", "--n-test", "24", "--centres", "3", "--size", "tiny", "--seed", "3",
        "--trainer", "GLMILTrainer_2epochs", "--folds", "0", "1", "--ablations", "clinicalOnly", "--ablation-folds", "0",
        "--bootstrap", "20", "--np", "1", "--quiet", "--doc", str(doc), "--json", str(tmp_path / "accuracy.json")])
    tables = results["tables"]
    endpoints = ("local_failure", "distant_failure", "leptomeningeal_failure", "os")
    assert set(tables) == {f"{split}/{e}" for split in ("Tr", "Ts") for e in endpoints}
    external_rows = {r["row"] for r in tables["Ts/local_failure"]}
    assert external_rows == {"ceiling (truth)", "GLMILTrainer_2epochs", "GLMILTrainer_2epochs_clinicalOnly",
                             "GLMILTrainer_2epochs (--harmonise)", "GLMILTrainer_2epochs_radiomicsOffset (starting point)",
                             "clinical baseline", "radiomics peer (logistic / Cox)", "radiomics peer (noisy-OR)"}
    # out of fold: the ablation trained one fold only, so it is not pooled with the model's two
    assert "GLMILTrainer_2epochs_clinicalOnly" not in {r["row"] for r in tables["Tr/local_failure"]}
    # the model's starting point, out of fold too (the folds' validation predictions carry it)
    assert "GLMILTrainer_2epochs_radiomicsOffset (starting point)" in {r["row"] for r in tables["Tr/local_failure"]}
    assert {r["row"] for r in tables["Ts/os"]} == external_rows - {"radiomics peer (noisy-OR)"}
    for key, rows in tables.items():
        by_row = {r["row"]: r for r in rows}
        judged = "expected_auc" if key.split("/")[1] != "os" else "value"
        if by_row["ceiling (truth)"][judged] != by_row["clinical baseline"][judged]:  # else the gap is undefined
            assert by_row["clinical baseline"]["gap_closed"] == pytest.approx(0.0)
            assert by_row["ceiling (truth)"]["gap_closed"] == pytest.approx(1.0)
        for r in rows:
            assert 0.0 <= r["value"] <= 1.0 and r["n"] > 0, (key, r)
    # better than a constant predictor (expected AUC 0.5 exactly) on the external centre: the mean
    # over the binary endpoints (deterministic: 0.69 at this seed, where the clinical baseline has 0.66)
    model = [next(r for r in tables[f"Ts/{e}"] if r["row"] == "GLMILTrainer_2epochs")["expected_auc"]
             for e in endpoints[:3]]
    assert np.mean(model) > 0.55, model
    stages = [s["stage"] for s in results["stages"]]
    assert stages[:2] == ["generate synthetic cohort", "plan and preprocess"]
    assert sum(s.startswith("train ") for s in stages) == 3 and sum(s.startswith("predict ") for s in stages) == 3
    assert all(s["seconds"] > 0 for s in results["stages"])
    text = doc.read_text()
    assert "### local_failure: external centre" in text and "| clinical baseline |" in text
    assert json.loads((tmp_path / "accuracy.json").read_text())["tables"].keys() == tables.keys()


def test_pretrained_rows_name_their_trainer_and_checkpoint(tmp_path):
    """``[TRAINER=]FILE`` fine-tunes a checkpoint with that trainer (default --trainer); per-fold
    checkpoints make one row, and each fold trains from its own."""
    import torch

    from glmil_auto.model.pretrained_weights import CHECKPOINT_FORMAT

    module = load_script(SCRIPT)
    shared = tmp_path / "shared.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "run": "contrastive_extra-011"}, shared)
    for fold in range(2):
        (tmp_path / f"f{fold}").mkdir()
        torch.save({"format": CHECKPOINT_FORMAT, "run": f"contrastive_fold{fold}", "fold": fold},
                   tmp_path / f"f{fold}" / "checkpoint_final.pt")
    pattern = str(tmp_path / "f{fold}" / "checkpoint_final.pt")
    args = module.parse_args(["--folds", "0", "1", "--pretrained", str(shared), f"GLMILTrainer_fastEncoders={shared}",
                              "--pretrained-per-fold", pattern, "--ablations"])
    rows = module.pretrained_trainers(args)
    assert sorted(rows) == ["GLMILTrainer_fastEncoders_pretrained-contrastive_extra-011",
                            "GLMILTrainer_pretrained-contrastive_extra-011", "GLMILTrainer_pretrained-contrastive_foldwise"]
    command = module.train_command(args, "GLMILTrainer_fastEncoders_pretrained-contrastive_extra-011", "1")
    assert command[command.index("-tr") + 1] == "GLMILTrainer_fastEncoders"
    assert command[command.index("-pretrained_weights") + 1] == str(shared)
    strict = module.train_command(args, "GLMILTrainer_pretrained-contrastive_foldwise", "1")
    assert strict[strict.index("-tr") + 1] == "GLMILTrainer"
    assert strict[strict.index("-pretrained_weights") + 1] == pattern.format(fold=1)
    plain = module.train_command(args, "GLMILTrainer", "0")
    assert "-pretrained_weights" not in plain and plain[plain.index("-tr") + 1] == "GLMILTrainer"
    assert [name for name, _ in module.trainer_names(args)][0] == "GLMILTrainer" and len(module.trainer_names(args)) == 4
    # a '=' inside a path is not a trainer name
    assert module._trainer_and_path(args, "/data/run=3/checkpoint_final.pt") == ("GLMILTrainer", "/data/run=3/checkpoint_final.pt")


def test_a_fold_trained_with_other_plans_is_trained_again(tmp_path, monkeypatch):
    """A re-planned dataset (e.g. a new plans section) must not reuse models of the old plans."""
    import torch

    monkeypatch.setenv("glmil_preprocessed", str(tmp_path / "preprocessed"))
    monkeypatch.setenv("glmil_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("glmil_results", str(tmp_path / "results"))
    folder = tmp_path / "preprocessed" / "Dataset042_Plans"
    folder.mkdir(parents=True)
    plans = {"plans_name": "plans", "preprocessing": {"global": {"target_spacing": [3.4] * 3}}}
    (folder / "plans.json").write_text(json.dumps(plans))
    module = load_script(SCRIPT)
    same, other = tmp_path / "same.pt", tmp_path / "other.pt"
    torch.save({"plans": json.dumps(plans)}, same)
    torch.save({"plans": json.dumps({**plans, "preprocessing": {**plans["preprocessing"], "small_foci": {}}})}, other)
    assert module.trained_with_current_plans(same, "42")
    assert not module.trained_with_current_plans(other, "42")
