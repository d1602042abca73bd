"""The whole peer, end to end: per endpoint the logistic / Cox model on the chosen patient feature set
plus the clinical design matrix, and the lesion-level noisy-OR."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.evaluation.radiomics_peer.clinical_design import clinical_design_matrix, clinical_features
from glmil_auto.preprocessing.lesion_features.lesion_frame import (
    CASE_COLUMN, LABEL_COLUMN, LESION_FEATURES, POSITION_COLUMNS,
)
from glmil_auto.preprocessing.lesion_features.patients import FEATURE_SETS, feature_set_columns, patient_features
from glmil_auto.training.starting_point.lesion_models.linear_models import RadiomicsCox, RadiomicsLogistic
from glmil_auto.training.starting_point.lesion_models.noisy_or_model import NoisyOrLesionModel


class RadiomicsPeer:
    """The whole peer for a dataset's endpoints, fitted on training cases:

        peer = RadiomicsPeer.fit(lesions, train_ids, train_table, spec, endpoints, targets, seed=0)
        rows = peer.predict(test_lesions, test_ids, test_table)
        # {"radiomics peer (logistic / Cox)": {endpoint: scores}, "radiomics peer (noisy-OR)": {...}}

    Per binary endpoint a :class:`RadiomicsLogistic` and a :class:`NoisyOrLesionModel` (with the
    clinical design matrix as covariates), per survival endpoint a :class:`RadiomicsCox` (scores:
    the linear predictor, higher = worse). The logistic and Cox inputs are the clinical design
    matrix (vocabulary from the training table) plus one of ``feature_sets`` of
    :func:`patient_features`, chosen per endpoint by the model's own inner cross-validation
    (held-out log-loss, Harrell's C), so the peer falls back to the clinical model where image
    features only add noise; ``feature_sets_`` records the choice. The noisy-OR row holds binary
    endpoints only (a lesion-level noisy-OR has no survival form).

    ``lesions`` is a lesion frame: the features preprocessing stored
    (:func:`glmil_auto.preprocessing.lesion_features.stored_features.read_stored_lesion_features`,
    one implementation of each feature for the peer and the network) or a raw-image extraction.
    Lesion columns beyond the hand-crafted ones (the IBSI families) enter the patient aggregates
    by their maximum and mean.

    ``endpoints``: the plans' list (``{"name", "type"}``) or None for every endpoint of ``spec``;
    ``targets``: :func:`glmil_auto.training.dataloading.data_loader.case_targets`-style arrays in ``case_ids``
    order (binary ``name``; survival ``name_time`` and ``name_event``), or None to read them from
    ``table``. Tables are typed clinical tables indexed by case id.
    """

    LOGISTIC_ROW = "radiomics peer (logistic / Cox)"
    NOISY_OR_ROW = "radiomics peer (noisy-OR)"

    @classmethod
    def fit(cls, lesions: pd.DataFrame, case_ids: Sequence[str], table: pd.DataFrame,
            spec: DatasetSpec, endpoints: Sequence[Mapping[str, str]] | None = None,
            targets: Mapping[str, np.ndarray] | None = None, seed: int = 0,
            feature_sets: Sequence[str] = FEATURE_SETS) -> "RadiomicsPeer":
        self = cls()
        case_ids = [str(c) for c in case_ids]
        table = table.set_axis(table.index.astype(str)).loc[case_ids]
        self.endpoints = ([dict(e) for e in endpoints] if endpoints is not None
                          else [{"name": n, "type": e.type} for n, e in spec.endpoints.items()])
        self.clinical_features = clinical_features(spec, table)
        clinical = clinical_design_matrix(table, self.clinical_features).set_axis(case_ids)
        self.extra_features = extra_lesion_columns(lesions)
        patients = patient_features(lesions, case_ids, self.extra_features)
        self.logistic: dict[str, RadiomicsLogistic] = {}
        self.noisy_or: dict[str, NoisyOrLesionModel] = {}
        self.cox: dict[str, RadiomicsCox] = {}
        self.feature_sets_: dict[str, str] = {}
        for endpoint in self.endpoints:
            name = endpoint["name"]
            if endpoint["type"] == "binary":
                y = np.asarray(targets[name] if targets is not None else table[name], dtype=float)
                fits = {s: RadiomicsLogistic(seed=seed).fit(_design(patients, clinical, s), y) for s in feature_sets}
                best = min(feature_sets, key=lambda s: fits[s].cv_log_loss_.get(fits[s].C_, np.inf))
                self.logistic[name] = fits[best]
                self.noisy_or[name] = NoisyOrLesionModel(seed=seed).fit(lesions, case_ids, y, clinical)
            else:
                if targets is not None:
                    time, event = targets[f"{name}_time"], targets[f"{name}_event"]
                else:
                    declared = spec.endpoints[name]
                    time, event = table[declared.time], table[declared.event]
                time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=float)
                fits = {s: RadiomicsCox(seed=seed).fit(_design(patients, clinical, s), time, event) for s in feature_sets}
                best = max(feature_sets, key=lambda s: fits[s].cv_scores_.get(fits[s].alpha_, -np.inf))
                self.cox[name] = fits[best]
            self.feature_sets_[name] = best
        return self

    def predict(self, lesions: pd.DataFrame, case_ids: Sequence[str], table: pd.DataFrame
                ) -> dict[str, dict[str, np.ndarray]]:
        """Scores of the cases ``case_ids`` (in that order) per row and endpoint."""
        case_ids = [str(c) for c in case_ids]
        table = table.set_axis(table.index.astype(str)).loc[case_ids]
        clinical = clinical_design_matrix(table, self.clinical_features).set_axis(case_ids)
        patients = patient_features(lesions, case_ids, self.extra_features)
        linear: dict[str, np.ndarray] = {}
        noisy_or: dict[str, np.ndarray] = {}
        for endpoint in self.endpoints:
            name, chosen = endpoint["name"], self.feature_sets_[endpoint["name"]]
            if endpoint["type"] == "binary":
                linear[name] = self.logistic[name].predict_proba(_design(patients, clinical, chosen))
                noisy_or[name] = self.noisy_or[name].predict_proba(lesions, case_ids, clinical)
            else:
                linear[name] = self.cox[name].predict(_design(patients, clinical, chosen))
        return {self.LOGISTIC_ROW: linear, self.NOISY_OR_ROW: noisy_or}


def extra_lesion_columns(lesions: pd.DataFrame) -> list[str]:
    """Lesion feature columns beyond the hand-crafted ones (the IBSI families of stored features)."""
    fixed = {CASE_COLUMN, LABEL_COLUMN, "kept", *POSITION_COLUMNS, *LESION_FEATURES}
    return [c for c in lesions.columns if c not in fixed and pd.api.types.is_numeric_dtype(lesions[c])]


def _design(patients: pd.DataFrame, clinical: pd.DataFrame, feature_set: str) -> pd.DataFrame:
    return pd.concat([patients[feature_set_columns(patients, feature_set)], clinical], axis=1)


def fit_and_predict_peer(train_lesions: pd.DataFrame, train_table: pd.DataFrame, test_lesions: pd.DataFrame,
                         test_table: pd.DataFrame, spec: DatasetSpec, seed: int = 0,
                         endpoints: Sequence[str] | None = None,
                         feature_sets: Sequence[str] = FEATURE_SETS) -> pd.DataFrame:
    """:class:`RadiomicsPeer` fitted on every case of ``train_table`` (which holds the outcomes)
    and applied to every case of ``test_table``, as a ``predictions.csv``-like frame: ``case_id``,
    ``<endpoint>`` (logistic probability) and ``<endpoint>_noisy_or`` for binary endpoints,
    ``<endpoint>_risk`` (Cox linear predictor) for survival endpoints (``endpoints``: names, default
    all of ``spec``); ``attrs["feature_sets"]`` says which patient feature set each endpoint used."""
    names = list(endpoints) if endpoints is not None else list(spec.endpoints)
    declared = [{"name": n, "type": spec.endpoints[n].type} for n in names]
    train_ids = [str(c) for c in train_table.index]
    test_ids = [str(c) for c in test_table.index]
    peer = RadiomicsPeer.fit(train_lesions, train_ids, train_table, spec, declared, seed=seed,
                             feature_sets=feature_sets)
    rows = peer.predict(test_lesions, test_ids, test_table)
    out = pd.DataFrame({CASE_COLUMN: test_ids})
    for endpoint in declared:
        name = endpoint["name"]
        if endpoint["type"] == "binary":
            out[name] = rows[peer.LOGISTIC_ROW][name]
            out[f"{name}_noisy_or"] = rows[peer.NOISY_OR_ROW][name]
        else:
            out[f"{name}_risk"] = rows[peer.LOGISTIC_ROW][name]
    out.attrs["feature_sets"] = dict(peer.feature_sets_)
    return out
