"""The clinical + volumetric baseline: logistic (binary) or Cox (survival) regression on the
clinical variables, the lesion count and the total lesion volume, fitted on training cases.

Its design matrix is the one of the network's offset (``glmil_auto.model.clinical_offset``):
the clinical encoder's inputs (standardised with the fitting cases' statistics, missing
indicators, one-hot categories), log1p(count) and log1p(total volume in mL); here count and volume
cover every lesion of the case, including those beyond the plans' ``max_instances``. The fit is
the offset's (``glmil_auto.training.starting_point.clinical_offset_fit.fit_linear_predictors``), so the baseline
and the network's starting point are one model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from glmil_auto.model.clinical_encoder import ClinicalEncoder
from glmil_auto.model.clinical_offset import volumetric_design
from glmil_auto.training.starting_point.clinical_offset_fit import fit_linear_predictors, volumetric_inputs


def baseline_design(encoder: ClinicalEncoder, clinical_values: np.ndarray, clinical_categories: np.ndarray,
                    case_properties: Sequence[dict[str, Any]]) -> np.ndarray:
    """(n, D) design: encoder inputs, log1p(lesion count), log1p(total lesion volume mL)."""
    with torch.no_grad():
        inputs = encoder.encode_inputs(torch.as_tensor(np.asarray(clinical_values, dtype=np.float32)),
                                       torch.as_tensor(np.asarray(clinical_categories, dtype=np.int64))).numpy()
        volumetric = []
        for properties in case_properties:
            mask, descriptors = volumetric_inputs(properties, kept_only=False)
            volumetric.append(volumetric_design(torch.as_tensor(mask), torch.as_tensor(descriptors)).numpy()[0])
    return np.concatenate([inputs, np.asarray(volumetric).reshape(len(case_properties), -1)], axis=1).astype(float)


@dataclass
class ClinicalBaseline:
    """Fitted baseline: ``predict`` gives probabilities (binary) and linear predictors (survival)."""

    features: list[dict[str, Any]]
    endpoints: list[dict[str, Any]]
    encoder: ClinicalEncoder
    weights: np.ndarray
    biases: np.ndarray

    @classmethod
    def fit(cls, features: list[dict[str, Any]], endpoints: list[dict[str, Any]], clinical_values: np.ndarray,
            clinical_categories: np.ndarray, case_properties: Sequence[dict[str, Any]],
            targets: dict[str, np.ndarray]) -> "ClinicalBaseline":
        encoder = ClinicalEncoder(features, 1)
        encoder.fit(clinical_values, clinical_categories)
        design = baseline_design(encoder, clinical_values, clinical_categories, case_properties)
        weights, biases = fit_linear_predictors(design, targets, endpoints)
        return cls(features, list(endpoints), encoder, weights, biases)

    def predict(self, clinical_values: np.ndarray, clinical_categories: np.ndarray,
                case_properties: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        design = baseline_design(self.encoder, clinical_values, clinical_categories, case_properties)
        linear = design @ self.weights.T + self.biases
        out = {}
        for k, endpoint in enumerate(self.endpoints):
            out[endpoint["name"]] = 1 / (1 + np.exp(-linear[:, k])) if endpoint["type"] == "binary" else linear[:, k]
        return out
