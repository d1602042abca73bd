"""A hand-crafted radiomics peer: the model the deep network is benchmarked against.

    train = extract_dataset_features(folder, "Tr", num_processes=2)   # one row per lesion
    test = extract_dataset_features(folder, "Ts", num_processes=2)
    predictions = fit_and_predict_peer(train, train_table, test, test_table, spec, seed=0)

or piece by piece:

    patients = patient_features(train, train.attrs["case_ids"])     # one row per case, no NaN
    clinical = clinical_design_matrix(train_table, spec)             # dataset.json's variables
    logistic = RadiomicsLogistic(seed=0).fit(pd.concat([patients, clinical], axis=1), y)
    noisy_or = NoisyOrLesionModel(seed=0).fit(train, case_ids, y, clinical)
    cox = RadiomicsCox(seed=0).fit(pd.concat([patients, clinical], axis=1), time, event)

Why it exists: the GL-MIL MoE network is only worth its complexity if it beats what a careful
analyst gets from per-lesion measurements and a linear model. The features are the classical
ones for brain metastases after radiosurgery: size and shape, necrosis (ring enhancement),
enhancement heterogeneity (texture), peritumoral oedema on FLAIR, distance to CSF/ventricles,
depth and posterior-fossa position (see :func:`lesion_features`). They are measured in the same
canonical orientation and with the same brain z-score as preprocessing
(:mod:`glmil_auto.preprocessing.case_preprocessor`), so the peer and the network start from
identical intensities.

Models (all seeded and deterministic; missing values imputed with training medians):
- :class:`RadiomicsLogistic`: standardisation + L2 logistic regression, C chosen by inner
  cross-validation, on patient-level features + the clinical design matrix.
- :class:`RadiomicsCox`: the same for survival endpoints (scikit-survival's ridge Cox model).
- :class:`NoisyOrLesionModel`: P(case) = 1 - prod_i (1 - sigmoid(w.x_i + d.z + b)) (1 - sigmoid(c.z + b0)),
  lesion features x_i and patient covariates z, fitted by penalised maximum likelihood. A patient
  fails when any one of its lesions fails: the natural peer for local failure.
- :func:`fit_and_predict_peer`: all of them per endpoint, the patient feature set (lesion burden
  only, a compact set, everything) chosen by inner cross-validation.

Intensity units: T1c/FLAIR values are brain z-scores (as preprocessing) minus the median of
*normal-appearing brain* (the brain region more than 10 mm from any lesion), so that 0 is
ordinary tissue whatever the scanner; "ratio" features divide by normal brain with air as zero.

Layout (every name is importable from this package, loaded on first use). The lesion features live at
the preprocessing stage (``glmil_auto.preprocessing.lesion_features``: ``lesion_frame``, ``channels``,
``shape``, ``enhancement``, ``surroundings``, ``features``, ``dataset_features``, ``patients``) and the
models at the training stage (``glmil_auto.training.starting_point.lesion_models``), because the network's starting
point fits the same models on the same stored features. This package keeps ``clinical_design`` (the
clinical design matrix) and ``peer`` (:class:`RadiomicsPeer`, :func:`fit_and_predict_peer`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {
    "glmil_auto.preprocessing.lesion_features.lesion_frame": ("CASE_COLUMN", "LABEL_COLUMN", "CSF_DISTANCE_CAP_MM", "VENTRICLE_DISTANCE_CAP_MM",
                     "LESION_FEATURES", "POSITION_COLUMNS", "LESION_FRAME_COLUMNS", "empty_lesion_frame"),
    "glmil_auto.preprocessing.lesion_features.channels": ("T1C_TOKENS", "FLAIR_TOKENS", "t1c_channel", "flair_channel"),
    "glmil_auto.preprocessing.lesion_features.shape": ("covariance_shape", "mesh_sphericity"),
    "glmil_auto.preprocessing.lesion_features.enhancement": ("NECROSIS_FRACTION_OF_P90", "HISTOGRAM_BIN_WIDTH", "histogram_entropy", "neighbour_contrast",
                    "enhancement_features"),
    "glmil_auto.preprocessing.lesion_features.surroundings": ("SHELLS_MM", "CSF_RATIO", "AIR_MARGIN_Z"),
    "glmil_auto.preprocessing.lesion_features.features": ("BRAIN_MARGIN_MM", "NORMAL_BRAIN_MARGIN_MM", "DEEP_CSF_DEPTH_FRACTION", "OEDEMA_PERCENTILE",
                 "POSTERIOR_FOSSA_MAX_RELATIVE_Z", "POSTERIOR_FOSSA_MIN_RELATIVE_Y", "lesion_features"),
    # _case_features: spawn workers of a pool started before the split unpickle it by this module's name
    "glmil_auto.preprocessing.lesion_features.dataset_features": ("extract_dataset_features", "_case_features"),
    "glmil_auto.preprocessing.lesion_features.patients": ("MIN_AGGREGATED", "SUM_AGGREGATED", "VOLUME_WEIGHTED", "patient_features", "BURDEN_FEATURES",
                 "COMPACT_PATIENT_FEATURES", "FEATURE_SETS", "feature_set_columns"),
    "glmil_auto.evaluation.radiomics_peer.clinical_design": ("clinical_features", "clinical_design_matrix"),
    "glmil_auto.training.starting_point.lesion_models.linear_models": ("RadiomicsLogistic", "RadiomicsCox"),
    "glmil_auto.training.starting_point.lesion_models.noisy_or": ("log1mexp", "softplus", "sigmoid", "noisy_or_log_survival", "noisy_or_probability",
                 "noisy_or_objective"),
    "glmil_auto.training.starting_point.lesion_models.noisy_or_model": ("LESION_MODEL_FEATURES", "NoisyOrLesionModel"),
    "glmil_auto.evaluation.radiomics_peer.peer": ("RadiomicsPeer", "fit_and_predict_peer"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [name for name in _MODULE_OF if not name.startswith("_")]


def __getattr__(name: str) -> Any:
    """Import the submodule holding ``name`` on first use (the feature extraction pulls in the imaging
    stack, the models scikit-learn and scikit-survival: a caller of one need not load the other)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
