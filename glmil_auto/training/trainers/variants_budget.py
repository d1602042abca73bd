"""Trainer variants about what a training batch holds.

Nothing imports this module: ``-tr NAME`` finds its classes by searching every module of
``glmil_auto.training`` (``trainer_registry.find_trainer``), which is how a variant in a new file
works without a registry.
"""

from __future__ import annotations

from glmil_auto.training.trainers.trainer import GLMILTrainer


class GLMILTrainer_noInstanceBudget(GLMILTrainer):
    """Every stored lesion of every bag in every batch (the behaviour before planned instance
    budgets): to measure what packing batches by lesions costs or saves. Its memory can exceed the
    plans' estimate on lesion-rich batches."""

    use_instance_budget = False
