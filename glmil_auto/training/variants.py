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


class GLMILTrainer_2epochs(GLMILTrainer):
    """Two epochs of three steps: a smoke test of the whole pipeline (the reduced accuracy
    benchmark in the test suite); the model is then essentially its clinical offset."""

    num_epochs = 2
    iterations_per_epoch = 3
    warmup_epochs = 0
    save_every = 2


class GLMILTrainer_globalOnly(GLMILTrainer):
    network_mode = "global_only"


class GLMILTrainer_localOnly(GLMILTrainer):
    network_mode = "local_only"


class GLMILTrainer_concat(GLMILTrainer):
    """Both image branches and the clinical encoder, one MLP instead of the mixture of experts."""

    network_mode = "concat"


class GLMILTrainer_clinicalOnly(GLMILTrainer):
    """No image branch: the clinical inputs, lesion count and total volume through the same offset,
    clinical encoder and heads (what the images add is the full model minus this one)."""

    network_mode = "clinical_only"


class GLMILTrainer_noOffset(GLMILTrainer):
    """Without the clinical + volumetric linear predictor (the network must learn it itself)."""

    use_clinical_offset = False


class GLMILTrainer_classBalancedLMD(GLMILTrainer):
    """Oversamples leptomeningeal failures, the rarest binary endpoint of brain-metastasis cohorts."""

    class_balanced_endpoint = "leptomeningeal_failure"


def _ablations_of(base: type[GLMILTrainer]) -> None:
    """``<base>_globalOnly``, ``_localOnly``, ``_concat`` and ``_clinicalOnly`` for a trainer whose
    schedule differs from the default one, so that ``benchmarks/accuracy.py --trainer <base>``
    compares ablations trained exactly like the model."""
    modes = {"globalOnly": "global_only", "localOnly": "local_only", "concat": "concat", "clinicalOnly": "clinical_only"}
    for suffix, mode in modes.items():
        name = f"{base.__name__}_{suffix}"
        globals()[name] = type(name, (base,), {"network_mode": mode, "__module__": __name__,
                                               "__doc__": f"{base.__name__} with network_mode '{mode}'."})


_ablations_of(GLMILTrainer_demo)
_ablations_of(GLMILTrainer_2epochs)
