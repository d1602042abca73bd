"""The schema of dataset.json's optional ``clinical_scores`` block: which clinical features feed
the published prognostic scores (RPA, GPA, DS-GPA) of
:mod:`glmil_auto.evaluation.clinical_models.prognostic_scores`. It is part of the raw dataset
contract, so the verifier checks it here, without importing the evaluation stage."""

from __future__ import annotations

from typing import Any

from glmil_auto.dataset.problems import Problem, error

CLINICAL_SCORES_KEY = "clinical_scores"
CLINICAL_SCORES_VARIABLES = (
    "kps", "age", "extracranial_metastases", "primary", "controlled_primary", "breast_subtype",
)
# the clinical feature types (dataset.json "clinical_features") each variable may be declared as
VARIABLE_FEATURE_TYPES: dict[str, tuple[str, ...]] = {
    "kps": ("numeric",),
    "age": ("numeric",),
    "extracranial_metastases": ("binary", "categorical"),
    "controlled_primary": ("binary", "categorical"),
    "primary": ("categorical",),
    "breast_subtype": ("categorical",),
}


def validate_clinical_scores_block(block: Any, clinical_features: dict[str, str], file: str) -> list[Problem]:
    """Every problem (errors) with dataset.json's optional ``clinical_scores`` block.

    It must be an object whose keys are score variables (:data:`CLINICAL_SCORES_VARIABLES`) and
    whose values name declared clinical features of a fitting type (:data:`VARIABLE_FEATURE_TYPES`),
    each feature at most once. An empty list when it is valid.
    """
    if not isinstance(block, dict):
        return [error(f"'{CLINICAL_SCORES_KEY}' must be an object mapping score variables "
                      f"{list(CLINICAL_SCORES_VARIABLES)} to clinical feature names, like "
                      "{\"kps\": \"kps\", \"age\": \"age\"}, "
                      f"got {type(block).__name__}", file=file)]
    features = clinical_features if isinstance(clinical_features, dict) else {}
    problems: list[Problem] = []
    for key, value in block.items():
        where = f"'{CLINICAL_SCORES_KEY}' key {key!r}"
        if key not in CLINICAL_SCORES_VARIABLES:
            problems.append(error(f"{where} is not a score variable; use one of {list(CLINICAL_SCORES_VARIABLES)}",
                                  file=file))
            continue
        if not (isinstance(value, str) and value):
            problems.append(error(f"{where} must name a clinical feature (a non-empty string), got {value!r}",
                                  file=file))
            continue
        if value not in features:
            declared = sorted(features) if features else "none"
            problems.append(error(f"{where} names {value!r}, which is not declared in 'clinical_features' "
                                  f"(declared: {declared})", file=file))
            continue
        allowed = VARIABLE_FEATURE_TYPES[key]
        if features[value] not in allowed:
            problems.append(error(f"{where} names clinical feature {value!r} of type {features[value]!r}; "
                                  f"{key} needs a feature of type {' or '.join(allowed)}", file=file))
    named: dict[str, list[str]] = {}
    for key, value in block.items():
        if key in CLINICAL_SCORES_VARIABLES and isinstance(value, str) and value:
            named.setdefault(value, []).append(key)
    for value, keys in named.items():
        if len(keys) > 1:
            problems.append(error(f"'{CLINICAL_SCORES_KEY}' maps {keys} to the same clinical feature {value!r}; "
                                  "each score variable needs its own column", file=file))
    return problems
