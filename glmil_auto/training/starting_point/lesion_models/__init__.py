"""Penalised lesion and patient models on radiomic features: the fits behind the network's
starting point (``glmil_auto.training.starting_point.radiomics_offset_fit``) and the radiomics peer of the
evaluation (``glmil_auto.evaluation.radiomics_peer``).

``fitting`` (standardiser, folds, checks), ``linear_models`` (:class:`RadiomicsLogistic`,
:class:`RadiomicsCox`), ``noisy_or`` (the noisy-OR numerics) and ``noisy_or_model``
(:class:`NoisyOrLesionModel`).
"""
