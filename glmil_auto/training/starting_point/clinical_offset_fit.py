"""Fitting the clinical + volumetric linear predictor (the clinical part of
``glmil_auto.model.starting_point``; the trainer fits the whole starting point with
``radiomics_offset_fit.fit_starting_point``).

Per binary endpoint an L2-penalised logistic regression (scikit-learn), per survival endpoint an
L2-penalised Cox regression with Efron ties (scikit-survival), on the design matrix of
``GLMILMoE.offset_design``. The trainer fits it on each fold's training cases; the accuracy
benchmark's clinical baseline is the same fit on all training cases, so "the network's offset" and
"the baseline it must beat" are one model.

The penalties are mild (``C = 1`` / ``alpha = 1`` on standardised inputs): they only keep the fit
finite when a category or a missing-indicator is rare or constant in a fold.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch

LOGISTIC_C = 1.0
COX_ALPHA = 1.0


def fit_logistic(design: np.ndarray, outcome: np.ndarray, c: float = LOGISTIC_C) -> tuple[np.ndarray, float]:
    """Coefficients and intercept of a logistic regression on the cases with a known outcome
    (NaN = unknown). With one class only, a zero slope and the logit of the (clipped) prevalence."""
    from sklearn.linear_model import LogisticRegression

    design, outcome = np.asarray(design, dtype=float), np.asarray(outcome, dtype=float)
    known = ~np.isnan(outcome)
    x, y = design[known], outcome[known]
    if len(np.unique(y)) < 2:
        rate = float(np.clip(y.mean() if y.size else 0.5, 1e-3, 1 - 1e-3))
        return np.zeros(design.shape[1]), float(np.log(rate / (1 - rate)))
    model = LogisticRegression(C=c, max_iter=5000)
    model.fit(x, y.astype(int))
    return model.coef_[0].astype(float), float(model.intercept_[0])


def fit_cox(design: np.ndarray, time: np.ndarray, event: np.ndarray, alpha: float = COX_ALPHA) -> np.ndarray:
    """Coefficients of a ridge Cox regression (Efron ties) on the cases with known time and event;
    zeros when there is no event."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    design = np.asarray(design, dtype=float)
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=float)
    known = ~np.isnan(time) & ~np.isnan(event)
    if not (event[known] > 0.5).any():
        return np.zeros(design.shape[1])
    x = design[known]
    # columns without variance carry nothing and only slow the Newton steps down
    varying = x.std(axis=0) > 1e-12
    coefficients = np.zeros(design.shape[1])
    if not varying.any():
        return coefficients
    model = CoxPHSurvivalAnalysis(alpha=alpha, ties="efron", n_iter=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x[:, varying], Surv.from_arrays(event[known] > 0.5, time[known]))
    coefficients[varying] = model.coef_
    return coefficients


def fit_linear_predictors(design: np.ndarray, targets: dict[str, np.ndarray], endpoints: Sequence[dict[str, Any]]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """``(K, D)`` weights and ``(K,)`` biases, one row per endpoint in ``endpoints`` order.

    ``targets`` as :func:`glmil_auto.training.dataloading.data_loader.case_targets` returns them."""
    design = np.asarray(design, dtype=float)
    weights = np.zeros((len(endpoints), design.shape[1]))
    biases = np.zeros(len(endpoints))
    for k, endpoint in enumerate(endpoints):
        name = endpoint["name"]
        if endpoint["type"] == "binary":
            weights[k], biases[k] = fit_logistic(design, targets[name])
        else:
            weights[k] = fit_cox(design, targets[f"{name}_time"], targets[f"{name}_event"])
    return weights, biases


def volumetric_inputs(properties: dict[str, Any], kept_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A case's bag as the offset sees it: ``instance_mask`` (1, N) and ``instance_descriptors``
    (1, N, 1) holding log1p(volume mm3) of every kept lesion (the ones the network receives), or
    of every lesion with ``kept_only=False`` (the clinical baseline's count and volume)."""
    volumes = [float(l["volume_mm3"]) for l in properties.get("lesions", []) if l.get("kept") or not kept_only]
    n = max(1, len(volumes))
    mask = np.zeros((1, n), dtype=bool)
    descriptors = np.zeros((1, n, 1), dtype=np.float32)
    mask[0, : len(volumes)] = True
    descriptors[0, : len(volumes), 0] = np.log1p(volumes)
    return mask, descriptors


@torch.no_grad()
def offset_design_matrix(network: torch.nn.Module, clinical_values: np.ndarray, clinical_categories: np.ndarray,
                         case_properties: Sequence[dict[str, Any]]) -> np.ndarray:
    """The design matrix (n, D) of ``network.offset_design`` for cases given by their clinical
    inputs and preprocessed properties, computed by the network's own code (one definition)."""
    rows = []
    for i, properties in enumerate(case_properties):
        mask, descriptors = volumetric_inputs(properties)
        batch = {"clinical_values": torch.as_tensor(np.asarray(clinical_values[i : i + 1], dtype=np.float32)),
                 "clinical_categories": torch.as_tensor(np.asarray(clinical_categories[i : i + 1], dtype=np.int64)),
                 "instance_mask": torch.as_tensor(mask), "instance_descriptors": torch.as_tensor(descriptors)}
        if getattr(network, "n_foci_candidates", 0):  # the small-foci descriptor's candidates
            from glmil_auto.model.foci_descriptor import candidate_responses

            batch["foci_responses"] = torch.as_tensor(
                candidate_responses(properties, network.n_foci_candidates, str(properties.get("case_id")))[None])
        batch = {k: v.to(network.offset.weight.device) for k, v in batch.items()}
        rows.append(network.offset_design(batch).cpu().numpy()[0])
    return np.asarray(rows, dtype=float)


def fit_network_offset(network: torch.nn.Module, clinical_values: np.ndarray, clinical_categories: np.ndarray,
                       case_properties: Sequence[dict[str, Any]], targets: dict[str, np.ndarray],
                       endpoints: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fit the offset of ``network`` on training cases and store it; returns a JSON-safe record."""
    design = offset_design_matrix(network, clinical_values, clinical_categories, case_properties)
    weights, biases = fit_linear_predictors(design, targets, endpoints)
    # the starting point's case design also holds the radiomic aggregates: they get weight 0 here
    weights = np.hstack([weights, np.zeros((len(endpoints), network.offset.design_dim - design.shape[1]))])
    device = network.offset.weight.device
    network.offset.set_coefficients(torch.as_tensor(weights, dtype=torch.float32, device=device),
                                    torch.as_tensor(biases, dtype=torch.float32, device=device))
    return {"n_cases": len(case_properties), "design_dim": int(design.shape[1]),
            "weights": {e["name"]: [float(w) for w in weights[k]] for k, e in enumerate(endpoints)},
            "biases": {e["name"]: float(biases[k]) for k, e in enumerate(endpoints)}}
