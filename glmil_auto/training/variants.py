"""Trainer variants: each changes a few attributes of ``GLMILTrainer`` (select with ``-tr NAME``)."""

from __future__ import annotations

from glmil_auto.training.trainer import GLMILTrainer


class GLMILTrainer_5epochs(GLMILTrainer):
    num_epochs = 5


class GLMILTrainer_demo(GLMILTrainer):
    """The quick-start trainer: short enough for five folds of the demo cohort on two CPU cores."""

    num_epochs = 8
    iterations_per_epoch = 4
    warmup_epochs = 1
    initial_lr = 1e-3
    save_every = 4


class GLMILTrainer_globalOnly(GLMILTrainer):
    network_mode = "global_only"


class GLMILTrainer_localOnly(GLMILTrainer):
    network_mode = "local_only"


class GLMILTrainer_concat(GLMILTrainer):
    """Both image branches and the clinical encoder, one MLP instead of the mixture of experts."""

    network_mode = "concat"


class GLMILTrainer_classBalancedLMD(GLMILTrainer):
    """Oversamples leptomeningeal failures, the rarest binary endpoint of brain-metastasis cohorts."""

    class_balanced_endpoint = "leptomeningeal_failure"
