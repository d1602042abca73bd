"""benchmarks/fine_tuning_settings.py: the per-fold selection history and its summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from script_modules import load_script

SCRIPT = "benchmarks/fine_tuning_settings.py"


def fake_fold(folder: Path, fold: int, start: float, means: list[float], selected: int | None) -> Path:
    folder.mkdir(parents=True)
    log = [{"epoch": e, "train": {"loss": 1.0 - 0.1 * e}, "validation": {"mean": m}} for e, m in enumerate(means)]
    torch.save({"metadata": {"fold": str(fold), "trainer": "GLMILTrainer", "log": log,
                             "selected_epoch": selected, "starting_point_validation": {"mean": start},
                             "pretrained_weights": {"run": "contrastive"}}}, folder / "checkpoint_final.pt")
    (folder / "debug.json").write_text(json.dumps({"encoder_freeze_epochs": 2, "encoder_lr_factor": 0.1}))
    return folder / "checkpoint_final.pt"


def test_rows_and_summary_follow_the_logs(tmp_path, monkeypatch):
    module = load_script(SCRIPT)
    a = module.fold_row(fake_fold(tmp_path / "f0", 0, 0.60, [0.58, 0.63, 0.61, 0.55], None))
    assert (a["best"], a["best_epoch"], a["last"], a["last_epoch"]) == (0.63, 1, 0.55, 3)
    assert a["last_train_loss"] == pytest.approx(0.7) and a["selected_epoch"] is None
    assert (a["encoder_freeze_epochs"], a["encoder_lr_factor"], a["pretrained_run"]) == (2, 0.1, "contrastive")
    b = module.fold_row(fake_fold(tmp_path / "f1", 1, 0.70, [0.72, 0.75], 1))
    s = module.summary([a, b])
    assert s["best_minus_start"] == pytest.approx(((0.63 - 0.60) + (0.75 - 0.70)) / 2)
    assert s["last_minus_start"] == pytest.approx(((0.55 - 0.60) + (0.75 - 0.70)) / 2)
    assert s["worst_last_minus_start"] == pytest.approx(-0.05) and s["left_starting_point"] == 1
    text = module.table({"M": [a, b]})
    assert "| M | 0 | 0.6000 | 0.6300 (1) | 0.5500 (3) | 0.70 | starting point |" in text
    assert "| M | 1 | 0.7000 | 0.7500 (1) | 0.7500 (1) | 0.90 | epoch 1 |" in text


def test_missing_folds_are_named(tmp_path, monkeypatch):
    module = load_script(SCRIPT)
    monkeypatch.setenv("glmil_results", str(tmp_path))
    fake_fold(tmp_path / "Dataset007_X" / "GLMILTrainer__plans" / "fold_0", 0, 0.6, [0.6], None)
    with pytest.raises(SystemExit, match="folds 1 have no checkpoint_final.pt"):
        module.main(["GLMILTrainer", "--dataset", "7", "--folds", "0", "1"])
    assert module.main(["GLMILTrainer", "--dataset", "7", "--folds", "0"])["GLMILTrainer"][0]["fold"] == "0"
