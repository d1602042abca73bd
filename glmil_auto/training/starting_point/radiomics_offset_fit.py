"""Fitting the network's starting point (``glmil_auto.model.starting_point``) on a fold's training
cases: the best hand-crafted model on the network's own inputs.

Per endpoint, on the stored radiomic features of preprocessing and the network's clinical design
``z`` (clinical encoder inputs, log1p(lesion count), log1p(total volume mL), computed by the
network's own code so that the offset and the fit see one definition):

- ``any_lesion`` binary endpoints: :class:`~glmil_auto.training.starting_point.lesion_models.NoisyOrLesionModel`,
  a lesion-level noisy-OR over each kept lesion's features with the clinical design shifting every
  lesion and as the leak; the lesion feature set (the classical per-lesion predictors, or those
  and the IBSI families) and the L2 penalty chosen by inner cross-validation on the held-out
  log-loss;
- other binary endpoints: :class:`~glmil_auto.training.starting_point.lesion_models.RadiomicsLogistic` (L2
  logistic, C by inner cross-validation) on ``z`` plus a patient-aggregate feature set (none,
  the compact set or all of them), the set chosen on the held-out log-loss;
- survival endpoints: :class:`~glmil_auto.training.starting_point.lesion_models.RadiomicsCox` (ridge Cox, Efron
  ties, alpha by inner cross-validation on Harrell's C), the set chosen on the held-out C.

The models standardise and impute internally; their coefficients are folded back to the raw inputs
(weight / scale, the centring into the bias, the lesion medians as the network's imputation), so the
untrained network reproduces the fitted model's own predictions (``tests/test_radiomics_offset.py``,
to 1e-5). With ``radiomics=False`` only ``z`` is used (the clinical offset of earlier versions, with
the inner cross-validated penalty), which is what the ``clinicalOffset`` trainer variant fits.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from glmil_auto.preprocessing.lesion_features.patients import BURDEN_FEATURES, COMPACT_PATIENT_FEATURES
from glmil_auto.training.dataloading.bag_collation import case_feature_vector, instance_features
from glmil_auto.training.starting_point.clinical_offset_fit import fit_logistic, offset_design_matrix

logger = logging.getLogger(__name__)

CASE_FEATURE_SETS = ("burden", "compact", "full")  # burden: z alone (it holds count and volume)
LESION_FEATURE_SETS = ("classical", "classical+ibsi")


def _case_set_columns(names: Sequence[str], feature_set: str) -> list[int]:
    """Indices into the stored patient aggregates ``names`` of a case feature set."""
    if feature_set == "burden":
        return []
    if feature_set == "compact":
        wanted = set(COMPACT_PATIENT_FEATURES) - set(BURDEN_FEATURES)
        return [i for i, n in enumerate(names) if n in wanted]
    if feature_set == "full":
        return [i for i, n in enumerate(names) if n not in BURDEN_FEATURES]
    raise ValueError(f"unknown case feature set {feature_set!r}; use one of {CASE_FEATURE_SETS}")


def _lesion_set_columns(names: Sequence[str], feature_set: str) -> list[str]:
    from glmil_auto.training.starting_point.lesion_models.noisy_or_model import LESION_MODEL_FEATURES

    classical = [n for n in LESION_MODEL_FEATURES if n in names]
    if feature_set == "classical":
        return classical
    if feature_set == "classical+ibsi":
        from glmil_auto.preprocessing.lesion_features.lesion_frame import LESION_FEATURES

        return classical + [n for n in names if n not in LESION_FEATURES]
    raise ValueError(f"unknown lesion feature set {feature_set!r}; use one of {LESION_FEATURE_SETS}")


def _fold_linear(coef: np.ndarray, intercept: float, mean: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, float]:
    """A linear model on standardised inputs ``(x - mean) / scale`` as weights on the raw inputs."""
    weight = np.asarray(coef, dtype=float) / scale  # scale inf (a constant column): weight 0
    return weight, float(intercept - np.sum(np.asarray(coef, dtype=float) * mean / scale))


class StartingPointInputs:
    """A fold's training cases as the starting point sees them (numpy, case order)."""

    def __init__(self, network: Any, clinical_values: np.ndarray, clinical_categories: np.ndarray,
                 case_properties: Sequence[dict[str, Any]], case_ids: Sequence[str],
                 lesion_feature_names: Sequence[str], case_feature_names: Sequence[str]):
        self.case_ids = [str(c) for c in case_ids]
        self.design = offset_design_matrix(network, clinical_values, clinical_categories, case_properties)
        self.lesion_feature_names = list(lesion_feature_names)
        self.case_feature_names = list(case_feature_names)
        if self.case_feature_names:
            self.case_features = np.stack([case_feature_vector(p, self.case_feature_names, c).astype(float)
                                           for p, c in zip(case_properties, self.case_ids)])
        else:
            self.case_features = np.zeros((len(self.case_ids), 0))
        rows = []
        for properties, case in zip(case_properties, self.case_ids):
            features = (instance_features(properties, self.lesion_feature_names, case) if self.lesion_feature_names
                        else np.zeros((sum(1 for l in properties.get("lesions", []) if l.get("kept")), 0)))
            for row in features.astype(float):
                rows.append({"case_id": case, **dict(zip(self.lesion_feature_names, row))})
        self.lesions = pd.DataFrame(rows, columns=["case_id", *self.lesion_feature_names])

    def case_design(self, columns: Sequence[int]) -> np.ndarray:
        return np.hstack([self.design, self.case_features[:, list(columns)]])

    def full_weight(self, weight: np.ndarray, columns: Sequence[int]) -> np.ndarray:
        """Weights on :meth:`case_design` ``(columns)`` placed on the whole case design
        ``[z, every case feature]`` (0 for the aggregates the chosen set leaves out)."""
        z = self.design.shape[1]
        full = np.zeros(z + self.case_features.shape[1])
        full[:z] = weight[:z]
        full[z + np.asarray(columns, dtype=int)] = weight[z:]
        return full


def _fit_binary(inputs: StartingPointInputs, y: np.ndarray, seed: int, radiomics: bool
                ) -> tuple[np.ndarray, float, dict[str, Any]]:
    from glmil_auto.training.starting_point.lesion_models.linear_models import RadiomicsLogistic

    sets = CASE_FEATURE_SETS if radiomics and inputs.case_feature_names else ("burden",)
    known = y[~np.isnan(y)]
    if len(np.unique(known)) < 2:  # one class in this fold: the prevalence alone
        weight, bias = fit_logistic(inputs.design, y)
        return np.concatenate([weight, np.zeros(inputs.case_features.shape[1])]), bias, {"model": "prevalence"}
    fits, columns = {}, {}
    for name in sets:
        columns[name] = _case_set_columns(inputs.case_feature_names, name)
        fits[name] = RadiomicsLogistic(seed=seed).fit(inputs.case_design(columns[name]), y)
    score = {name: fit.cv_log_loss_.get(fit.C_, math.inf) for name, fit in fits.items()}
    best = min(sets, key=lambda name: (score[name], sets.index(name)))
    fit = fits[best]
    weight, bias = _fold_linear(fit.model_.coef_[0], float(fit.model_.intercept_[0]), fit.standardiser_.mean,
                                fit.standardiser_.scale)
    return inputs.full_weight(weight, columns[best]), bias, {"model": "logistic", "feature_set": best, "C": fit.C_, "fitted": (fit, columns[best]),
                        "cv_log_loss": {k: (None if not math.isfinite(v) else v) for k, v in score.items()}}


def _fit_survival(inputs: StartingPointInputs, time: np.ndarray, event: np.ndarray, seed: int, radiomics: bool
                  ) -> tuple[np.ndarray, float, dict[str, Any]]:
    from glmil_auto.training.starting_point.lesion_models.linear_models import RadiomicsCox

    width = inputs.design.shape[1] + inputs.case_features.shape[1]
    known = ~np.isnan(time) & ~np.isnan(event)
    if event[known].sum() < 2:
        return np.zeros(width), 0.0, {"model": "none (fewer than two events)"}
    sets = CASE_FEATURE_SETS if radiomics and inputs.case_feature_names else ("burden",)
    fits, columns = {}, {}
    for name in sets:
        columns[name] = _case_set_columns(inputs.case_feature_names, name)
        fits[name] = RadiomicsCox(seed=seed).fit(inputs.case_design(columns[name]), time, event)
    score = {name: fit.cv_scores_.get(fit.alpha_, -math.inf) for name, fit in fits.items()}
    best = max(sets, key=lambda name: (score[name], -sets.index(name)))
    fit = fits[best]
    weight, bias = _fold_linear(fit.model_.coef_, 0.0, fit.standardiser_.mean, fit.standardiser_.scale)
    return inputs.full_weight(weight, columns[best]), bias, {"model": "cox", "feature_set": best, "alpha": fit.alpha_, "fitted": (fit, columns[best]),
                        "cv_harrell_c": {k: (None if not math.isfinite(v) else v) for k, v in score.items()}}


def _fit_lesion_endpoint(inputs: StartingPointInputs, y: np.ndarray, seed: int, radiomics: bool
                         ) -> tuple[dict[str, np.ndarray | float], dict[str, Any]]:
    """The noisy-OR of an any_lesion endpoint, as raw-input coefficients (see ``StartingPoint``)."""
    from glmil_auto.training.starting_point.lesion_models.noisy_or_model import NoisyOrLesionModel

    names = inputs.lesion_feature_names
    ibsi = radiomics and any(n not in _lesion_set_columns(names, "classical") for n in names)
    sets = LESION_FEATURE_SETS if ibsi else ("classical",)
    known = y[~np.isnan(y)]
    if len(np.unique(known)) < 2:
        raise ValueError("one class only")
    fits = {}
    for name in sets:
        columns = _lesion_set_columns(names, name) if radiomics else []
        fits[name] = NoisyOrLesionModel(seed=seed, feature_columns=columns).fit(inputs.lesions, inputs.case_ids, y,
                                                                                 inputs.design)
    score = {name: fit.cv_log_loss_.get(fit.l2_, math.inf) for name, fit in fits.items()}
    best = min(sets, key=lambda name: (score[name], sets.index(name)))
    fit = fits[best]
    weight = np.zeros(len(names))
    median = np.zeros(len(names))
    index = {n: i for i, n in enumerate(names)}
    for j, column in enumerate(fit.feature_columns):
        weight[index[column]] = fit.coef_[j]
        median[index[column]] = fit.lesion_standardiser_.median[j]
    coefficients = {"median": median, "weight": weight, "shift": fit.lesion_clinical_coef_,
                    "bias": fit.intercept_, "leak_weight": fit.clinical_coef_, "leak_bias": fit.clinical_intercept_}
    record = {"model": "noisy-OR", "feature_set": best if radiomics else "none", "l2": fit.l2_,
              "n_lesion_features": len(fit.feature_columns), "fitted": (fit, list(fit.feature_columns)),
              "cv_log_loss": {k: (None if not math.isfinite(v) else v) for k, v in score.items()}}
    return coefficients, record


def fit_starting_point(network: torch.nn.Module, clinical_values: np.ndarray, clinical_categories: np.ndarray,
                       case_properties: Sequence[dict[str, Any]], case_ids: Sequence[str],
                       targets: dict[str, np.ndarray], endpoints: Sequence[dict[str, Any]],
                       lesion_feature_names: Sequence[str] = (), case_feature_names: Sequence[str] = (),
                       radiomics: bool = True, seed: int = 0, fitted_models: dict[str, Any] | None = None
                       ) -> dict[str, Any]:
    """Fit the starting point of ``network`` on training cases and store it in ``network.offset``;
    returns a JSON-safe record (per endpoint: the model, feature set, penalty, held-out scores).
    ``fitted_models``: a dict that receives, per endpoint, ``(fitted model, its columns, the
    inputs)``, so that a caller can compare the network with the models' own predictions."""
    inputs = StartingPointInputs(network, clinical_values, clinical_categories, case_properties, case_ids,
                                 lesion_feature_names, case_feature_names)
    offset = network.offset
    k_total = len(endpoints)
    weights = np.zeros((k_total, offset.design_dim))
    biases = np.zeros(k_total)
    a = len(offset.lesion_endpoints)
    lesion = {"median": np.zeros(offset.lesion_feature_dim), "weight": np.zeros((a, offset.lesion_feature_dim)),
              "shift": np.zeros((a, offset.clinical_dim)), "bias": np.full(a, -60.0)}  # no fit: lesions never fail
    record: dict[str, Any] = {"n_cases": len(inputs.case_ids), "radiomics": bool(radiomics), "endpoints": {}}
    for k, endpoint in enumerate(endpoints):
        name = endpoint["name"]
        if k in offset.lesion_endpoints:
            y = np.asarray(targets[name], dtype=float)
            try:
                coefficients, entry = _fit_lesion_endpoint(inputs, y, seed, radiomics)
            except ValueError as exc:  # one class in the fold: the leak alone, at the prevalence
                weight, bias = fit_logistic(inputs.design, y)
                weights[k, : inputs.design.shape[1]], biases[k] = weight, bias
                record["endpoints"][name] = {"model": f"prevalence ({exc})"}
                continue
            j = offset.lesion_endpoints.index(k)
            lesion["weight"][j], lesion["shift"][j], lesion["bias"][j] = (coefficients["weight"],
                                                                          coefficients["shift"], coefficients["bias"])
            lesion["median"] = np.where(coefficients["weight"] != 0, coefficients["median"], lesion["median"])
            weights[k, : inputs.design.shape[1]] = coefficients["leak_weight"]
            biases[k] = coefficients["leak_bias"]
            record["endpoints"][name] = entry
        elif endpoint["type"] == "binary":
            weights[k], biases[k], record["endpoints"][name] = _fit_binary(inputs, np.asarray(targets[name], float),
                                                                           seed, radiomics)
        else:
            weights[k], biases[k], record["endpoints"][name] = _fit_survival(
                inputs, np.asarray(targets[f"{name}_time"], float), np.asarray(targets[f"{name}_event"], float),
                seed, radiomics)
        fitted = record["endpoints"][name].pop("fitted", None)
        if fitted_models is not None and fitted is not None:
            fitted_models[name] = (*fitted, inputs)
        logger.info("starting point for %s: %s", name, record["endpoints"][name])
    device = offset.weight.device
    as_tensor = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float32), device=device)  # noqa: E731
    offset.set_coefficients(as_tensor(weights), as_tensor(biases))
    offset.set_lesion_coefficients(as_tensor(lesion["median"]), as_tensor(lesion["weight"]),
                                   as_tensor(lesion["shift"]), as_tensor(lesion["bias"]))
    record["weights"] = {e["name"]: [float(w) for w in weights[k]] for k, e in enumerate(endpoints)}
    record["biases"] = {e["name"]: float(biases[k]) for k, e in enumerate(endpoints)}
    return record
