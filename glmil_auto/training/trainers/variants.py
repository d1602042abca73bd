"""Trainer variants: each changes a few attributes of ``GLMILTrainer`` (select with ``-tr NAME``)."""

from __future__ import annotations

from glmil_auto.training.trainers.trainer import GLMILTrainer


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
    """Without any starting point (the network must learn the clinical and lesion models itself)."""

    use_clinical_offset = False


class GLMILTrainer_radiomicsOffset(GLMILTrainer):
    """The starting point alone, no CNN training: the per-fold radiomics + clinical model (a lesion
    noisy-OR for any_lesion endpoints, logistic / Cox on patient aggregates for the others) that the
    network starts from. ``benchmarks/accuracy.py``'s ``radiomicsOffset`` row: what the CNNs add is
    the model minus this one."""

    num_epochs = 0


class GLMILTrainer_clinicalOffset(GLMILTrainer):
    """The starting point without radiomic features: clinical inputs, lesion count and volume only
    (and, for any_lesion endpoints, a noisy-OR whose lesions differ only by the clinical shift)."""

    use_radiomics_offset = False


class GLMILTrainer_noHarmonisation(GLMILTrainer):
    """The lesion features as preprocessing stored them, without ComBat across the training centres."""

    harmonisation = None


class GLMILTrainer_centreStandardisation(GLMILTrainer):
    """Per-centre standardisation of the intensity/texture features instead of ComBat."""

    harmonisation = "centre"


class GLMILTrainer_noLesionLabels(GLMILTrainer):
    """Ignores the raw dataset's lesion table: any_lesion endpoints learn from the case labels only."""

    use_lesion_labels = False


class GLMILTrainer_classBalancedLMD(GLMILTrainer):
    """Oversamples leptomeningeal failures, the rarest binary endpoint of brain-metastasis cohorts."""

    class_balanced_endpoint = "leptomeningeal_failure"


class GLMILTrainer_noFociChannel(GLMILTrainer):
    """Without the small-foci evidence: the global volume's foci channel and the per-case foci
    descriptor are zero in training and prediction (plans with ``small_foci``; other plans: unchanged)."""

    use_small_foci = False


ABLATION_ATTRIBUTES = {
    "globalOnly": {"network_mode": "global_only"}, "localOnly": {"network_mode": "local_only"},
    "concat": {"network_mode": "concat"}, "clinicalOnly": {"network_mode": "clinical_only"},
    "radiomicsOffset": {"num_epochs": 0}, "clinicalOffset": {"use_radiomics_offset": False},
    "noLesionLabels": {"use_lesion_labels": False}, "noHarmonisation": {"harmonisation": None},
    "noFociChannel": {"use_small_foci": False},
}


def _ablations_of(base: type[GLMILTrainer]) -> None:
    """``<base>_<ablation>`` for every ablation of :data:`ABLATION_ATTRIBUTES`, for a trainer whose
    schedule differs from the default one, so that ``benchmarks/accuracy.py --trainer <base>``
    compares ablations trained exactly like the model."""
    for suffix, attributes in ABLATION_ATTRIBUTES.items():
        name = f"{base.__name__}_{suffix}"
        globals()[name] = type(name, (base,), {**attributes, "__module__": __name__,
                                               "__doc__": f"{base.__name__} with {attributes}."})


_ablations_of(GLMILTrainer_demo)
_ablations_of(GLMILTrainer_2epochs)


class GLMILTrainer_fastEncoders(GLMILTrainer):
    """Fine-tuning (``-pretrained_weights``) with the pretrained encoders at the schedule's full learning rate
    after the freeze (the default until the five-fold comparison in documentation/pretraining.md chose 0.1)."""

    encoder_lr_factor = 1.0


class GLMILTrainer_noEncoderFreeze_fastEncoders(GLMILTrainer_fastEncoders):
    """Fine-tuning with the pretrained encoders training from the first epoch, at the full learning rate."""

    encoder_freeze_epochs = 0
