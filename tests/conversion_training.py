"""What the converter tests share: a converted dataset through plan-and-preprocess and two training
steps of fold 0 (the converted layout must be usable, not only verified)."""

from __future__ import annotations

from pathlib import Path

import pytest

from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
from glmil_auto.training.run_training import run_training
from glmil_auto.training.trainers.trainer import GLMILTrainer


class ConvertedTinyTrainer(GLMILTrainer):
    """One epoch of two steps, no augmentation workers, no SHAP: the tests need a run, not a model."""

    num_epochs = 1
    iterations_per_epoch = 2
    warmup_epochs = 0
    num_augmentation_workers = 0
    explain_validation = False


def plan_preprocess_and_train(dataset_id: int, raw: Path, work: Path, monkeypatch: pytest.MonkeyPatch
                              ) -> GLMILTrainer:
    """Plan and preprocess the raw dataset ``dataset_id`` of ``raw`` (outputs under ``work``) and train
    fold 0 with :class:`ConvertedTinyTrainer`; returns the trainer (its log has one epoch)."""
    monkeypatch.setenv("glmil_raw", str(raw))
    monkeypatch.setenv("glmil_preprocessed", str(work / "preprocessed"))
    monkeypatch.setenv("glmil_results", str(work / "results"))
    monkeypatch.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
    plan_and_preprocess(dataset_id, num_processes=1, device=DeviceProfile("cpu", "cpu", 0.5, 2), progress=False)
    return run_training(dataset_id, 0, ConvertedTinyTrainer.__name__)
