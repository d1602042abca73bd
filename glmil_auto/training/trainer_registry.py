"""Trainers found by class name (``-tr NAME``), so variants need no registration."""

from __future__ import annotations

from glmil_auto.training import variants  # noqa: F401  (defines the subclasses)
from glmil_auto.training.trainer import GLMILTrainer
from glmil_auto.utilities.class_lookup import find_subclass


def find_trainer(name: str) -> type[GLMILTrainer]:
    return find_subclass(GLMILTrainer, name, "trainer")
