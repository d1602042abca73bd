"""Trainers found by class name (``-tr NAME``) in any module of ``glmil_auto.training`` (searched
recursively, as nnU-Net does), so a variant in a new file needs no registration."""

from __future__ import annotations

from glmil_auto.training.trainers.trainer import GLMILTrainer
from glmil_auto.utilities.class_lookup import recursive_find_class

TRAINER_PACKAGE = "glmil_auto.training"


def find_trainer(name: str) -> type[GLMILTrainer]:
    """The trainer class called ``name``; a clear error lists the ones that exist."""
    return recursive_find_class(TRAINER_PACKAGE, name, GLMILTrainer, "trainer")
