"""SHAP at the end of training: the fold's validation cases explained against themselves.

Writes, beside the out-of-fold predictions (``validation_files.explanation_file_names``):

- ``shap_background*.npz``: the fusion inputs of the fold's validation cases
  (:class:`~glmil_auto.model.shap_explanations.ExplanationInputs`), the background that
  ``glmil_predict --explain`` explains new cases against: cases this fold did not train on;
- ``explanations*.json``: per validation case, the ``explanation`` block that ``glmil_predict``
  writes into ``<case>.json``, which ``glmil_evaluate --cv`` draws the SHAP summary plots from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from glmil_auto.model.shap_explanations import ExplanationInputs, case_explanation, display_values, shap_values
from glmil_auto.training.validation.validation_files import explanation_file_names
from glmil_auto.utilities.atomic_files import atomic_path, write_json_atomic

logger = logging.getLogger(__name__)


def write_validation_explanations(network: Any, inputs: ExplanationInputs, folder: str | Path,
                                  checkpoint: str | None, clinical_features: Sequence[dict[str, Any]],
                                  endpoints: Sequence[dict[str, Any]], seed: int = 0) -> Path:
    """Save the background and the validation cases' explanations; returns the explanations file."""
    folder = Path(folder)
    background_name, explanations_name = explanation_file_names(checkpoint)
    with atomic_path(folder / background_name) as temporary:
        inputs.save(temporary)
    result = shap_values(network, inputs, inputs, clinical_features, seed=seed)
    shown = display_values(inputs, clinical_features, result.feature_names)
    document = {case: case_explanation(result.values[i], result.base_values[i], result.feature_names, shown[i],
                                       endpoints)
                for i, case in enumerate(result.case_ids)}
    write_json_atomic(folder / explanations_name, document)
    logger.info("SHAP explanations of %d validation case(s) -> %s", len(inputs), folder / explanations_name)
    return folder / explanations_name
