"""``GLMILPredictor``: the fold ensemble of a trained model folder applied to new cases.

Per case: the raw images and lesion mask go through the exact preprocessing of training
(:class:`~glmil_auto.preprocessing.case_preprocessor.CasePreprocessor` with the model's plans);
every fold's network reads one batch holding the mirror test-time-augmentation variants and the
leave-one-lesion-out bags; the folds are ensembled (binary endpoints: mean probability; survival
endpoints: mean of the per-fold standardised log-risks, see
:mod:`glmil_auto.inference.risk_groups`). Each case is predicted on its own, so a case gets the
same numbers whether it is predicted alone or among others.

Outputs of :meth:`GLMILPredictor.predict_from_files` in ``OUT``:

- ``predictions.csv``: ``case_id``, per binary endpoint the recalibrated probability
  ``<endpoint>`` (:mod:`~glmil_auto.inference.recalibration`), the ensemble's own
  ``<endpoint>_uncalibrated`` and its starting point's ``<endpoint>_starting_point`` (the folds'
  fitted radiomics + clinical model alone, ``GLMILMoE.starting_point_outputs``; survival:
  ``<endpoint>_starting_point_risk``, the folds' linear predictors standardised with the same
  per-fold scales as the model's risk, so that a fold that kept its starting point contributes
  the same number to both),
  ``<endpoint>_risk``, ``<endpoint>_risk_group`` and ``<endpoint>_surv_<t>`` (survival
  probability at each horizon ``t``, :mod:`~glmil_auto.inference.survival_probabilities`) per
  survival endpoint;
- from a model folder updated for a new centre (``glmil_recalibrate``, ``model_update.json``):
  ``<endpoint>`` is the updated probability and ``<endpoint>_before_update`` the one before
  (survival: ``<endpoint>_surv_<t>`` and ``<endpoint>_surv_<t>_before_update``); risks and risk
  groups are unchanged (:mod:`~glmil_auto.inference.model_updating`);
- ``<case>.json``: the same numbers, each fold's, the lesion table (world centroid in mm,
  volume, attention weight and leave-one-out contribution per endpoint and, for an ``any_lesion``
  endpoint, each lesion's own failure probability in the noisy-OR, ``lesion_probability``), the
  expert gate weights, and the warnings about the case's inputs;
- with ``explain``, an ``explanation`` block in ``<case>.json``: per endpoint, the SHAP
  contribution of every clinical variable, the lesion count and volume and the two image branches,
  largest first (:mod:`~glmil_auto.model.shap_explanations`);
- ``<case>_<endpoint>_gradcam.nii.gz`` with ``save_gradcam``: the global encoder's Grad-CAM in the
  input image's geometry;
- ``plans.json``, ``prediction_settings.json`` (command line, model folder, folds, checkpoint,
  TTA, risk scales) and, when cases failed, ``failed_cases.json``.

A case's JSON is written last (atomically) and carries the fingerprint of what produced it
(:meth:`GLMILPredictor.produced_by`: model folder, checkpoint hashes, folds, TTA, clinical table,
harmonisation), so ``continue_prediction`` reuses exactly the cases that the same settings produced
and predicts the others again; ``predictions.csv`` is rebuilt from the case JSONs at the end.

Harmonised lesion features (:mod:`glmil_auto.training.starting_point.feature_harmonisation`): each fold's
``harmonisation.json`` (a fold without one, trained before harmonisation: none) maps a case's
intensity and texture features to that fold's training scale when the clinical table gives the case
a training centre; any other case passes unchanged. With ``harmonise`` every fold's harmoniser is
first extended to the run's new centres, each fitted on its own cases of this run (a first pass
preprocesses every case; cases without a centre form one group named after the images folder), and
then a case's numbers depend on the other cases of its centre in the run.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.dataset.image_io import Geometry, write_image
from glmil_auto.dataset.safe_names import path_inside
from glmil_auto.inference.case_reader import list_prediction_cases, read_prediction_case
from glmil_auto.inference.clinical_inputs import ClinicalInputs
from glmil_auto.inference.model_folder import DEFAULT_CHECKPOINT, ModelFolderError, open_model_folder
from glmil_auto.inference.model_update_file import read_model_update, update_for_centre
from glmil_auto.inference.model_updating import apply_binary_update
from glmil_auto.inference.recalibration import apply_recalibration, fit_recalibration_maps, identity_maps
from glmil_auto.inference.risk_groups import assign_risk_groups, fit_risk_scales, read_oof_tables
from glmil_auto.model.shap_explanations import (
    ExplanationInputs,
    case_explanation,
    display_values,
    explanation_inputs,
    shap_values,
)
from glmil_auto.inference.test_time_augmentation import (
    concatenate_batches,
    leave_one_out_batches,
    mirror_case_batch,
    mirror_variants,
)
from glmil_auto.inference.survival_probabilities import (
    DEFAULT_HORIZONS,
    fit_survival_model,
    horizon_label,
    pooled_standardised_risks,
    survival_probabilities,
)
from glmil_auto.model import build_network
from glmil_auto.model.network import GLMILMoE
from glmil_auto.preprocessing.case_preprocessor import CasePreprocessor
from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names
from glmil_auto.training.dataloading.bag_collation import case_extras, collate_bags, collate_extras, instance_descriptors
from glmil_auto.training.starting_point.feature_harmonisation import FeatureHarmoniser, centre_label
from glmil_auto.training.trainers.checkpointing import load_checkpoint
from glmil_auto.utilities.atomic_files import remove_stale_temporaries, write_csv_atomic, write_json_atomic
from glmil_auto.utilities.content_hash import file_sha256, json_sha256
from glmil_auto.utilities.mixed_precision import autocast
from glmil_auto.utilities.worker_init import single_threaded_image_worker

logger = logging.getLogger(__name__)


@dataclass
class PreprocessedCase:
    case_id: str
    global_array: np.ndarray  # (C+1, Z, Y, X)
    local_array: np.ndarray  # (N, S, C+1, pz, py, px)
    properties: dict[str, Any]


@dataclass
class CasePrediction:
    case_id: str
    row: dict[str, Any]  # the predictions.csv row
    per_fold: dict[str, dict[str, float]]  # fold -> probability / log-risk per endpoint
    lesions: list[dict[str, Any]]
    gate_weights: dict[str, list[float]]
    warnings: list[str] = field(default_factory=list)
    gradcam: dict[str, np.ndarray] = field(default_factory=dict)  # endpoint -> map in the input's geometry
    properties: dict[str, Any] = field(default_factory=dict)
    explanation: dict[str, Any] | None = None  # SHAP per endpoint (explain=True)
    harmonisation: dict[str, Any] | None = None  # the centre used and, per fold, what was done
    small_foci: dict[str, Any] | None = None  # the candidate foci above the folds' threshold (plans with small_foci)
    model_update: dict[str, Any] | None = None  # which centre's update was applied (updated model folders)

    def to_json(self) -> dict[str, Any]:
        props = self.properties
        content = {"case_id": self.case_id, "predictions": {k: v for k, v in self.row.items() if k != "case_id"},
                   "per_fold": self.per_fold, "lesions": self.lesions, "gate_weights": self.gate_weights,
                   "n_lesions": props.get("n_lesions"), "n_instances": props.get("n_instances"),
                   "dropped_lesion_labels": props.get("dropped_lesion_labels", []),
                   "skull_stripped": props.get("skull_stripped"), "warnings": self.warnings}
        if self.harmonisation is not None:
            content["harmonisation"] = self.harmonisation
        if self.small_foci is not None:
            content["small_foci"] = self.small_foci
        if self.model_update is not None:
            content["model_update"] = self.model_update
        if self.explanation is not None:
            content["explanation"] = self.explanation
        return content


def preprocess_files(images_folder: str, masks_folder: str, case: str, spec: DatasetSpec,
                     plans: dict[str, Any]) -> PreprocessedCase:
    """Read one case from the input folders and preprocess it as in training (runs in workers)."""
    images, mask, geometry = read_prediction_case(images_folder, masks_folder, case, spec)
    global_array, local_array, properties = CasePreprocessor(plans).run_case(images, mask, geometry, case)
    return PreprocessedCase(case, global_array, local_array, properties)


def _preprocess_or_error(*args: Any) -> PreprocessedCase | BaseException:
    try:
        return preprocess_files(*args)
    except Exception as exc:  # noqa: BLE001 - one bad case must not stop the others; reported by the caller
        return exc


class _no_folder:
    """A context manager that gives no folder (prediction without the ``harmonise`` first pass)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


class _FirstPass:
    """The ``harmonise`` first pass: every case preprocessed once, its arrays kept in ``folder`` (a
    temporary folder) and its properties in memory, read back case by case for prediction."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.properties: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, BaseException] = {}
        self._files: dict[str, tuple[Path, Path]] = {}

    def keep(self, case: str, result: PreprocessedCase | BaseException) -> None:
        if isinstance(result, BaseException):
            self.errors[case] = result
            return
        paths = (self.folder / f"{len(self._files)}_global.npy", self.folder / f"{len(self._files)}_local.npy")
        np.save(paths[0], result.global_array)
        np.save(paths[1], result.local_array)
        self._files[case] = paths
        self.properties[case] = result.properties

    def cases(self, cases: Sequence[str]) -> Iterator[tuple[str, PreprocessedCase | BaseException]]:
        for case in cases:
            if case in self.errors:
                yield case, self.errors[case]
            else:
                global_path, local_path = self._files[case]
                yield case, PreprocessedCase(case, np.load(global_path), np.load(local_path), self.properties[case])


class GLMILPredictor:
    """The folds of one model folder, ready to predict (``folds=None``: every trained fold)."""

    def __init__(self, model_folder: str | Path, folds: Sequence[int | str] | None = None,
                 checkpoint_name: str = DEFAULT_CHECKPOINT, device: str | torch.device | None = None,
                 use_tta: bool = True, horizons: Sequence[float] = DEFAULT_HORIZONS, record: bool = True):
        self.record = record  # False: write nothing into the model folder (glmil_recalibrate reads a source)
        self.model = open_model_folder(model_folder, folds, checkpoint_name)
        self.plans, self.spec = self.model.plans, self.model.spec
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._checkpoint_metadata: dict[str, dict[str, Any]] = {}
        self.networks: dict[str, GLMILMoE] = {fold: self._load_network(fold) for fold in self.model.folds}
        self.harmonisers: dict[str, FeatureHarmoniser] = {fold: self._load_harmoniser(fold) for fold in self.model.folds}
        self.endpoints = self.plans["endpoints"]
        self.binary = [e["name"] for e in self.endpoints if e["type"] == "binary"]
        self.survival = [e["name"] for e in self.endpoints if e["type"] == "survival"]
        augmentation = self.plans["training"]["augmentation"]
        self.variants = mirror_variants(augmentation["global"].get("mirror_axes", []),
                                        augmentation["local"].get("mirror_axes", []), enabled=use_tta)
        self.preprocessor = CasePreprocessor(self.plans)
        self.oof_files = {fold: self.model.validation_predictions(fold) for fold in self.model.folds}
        self._oof_cache: dict[str, pd.DataFrame] | None = None
        self.risk_scales = self._risk_scales()
        self.recalibration = self._recalibration()
        self.horizons = [float(h) for h in horizons]
        if any(not np.isfinite(h) or h <= 0 for h in self.horizons):
            raise ValueError(f"survival horizons must be positive numbers, got {list(horizons)}")
        self.survival_models = self._survival_models()
        self.update = read_model_update(self.model.path)
        if self.update is not None and (self.update.get("folds") != self.model.folds
                                        or self.update.get("checkpoint") != self.model.checkpoint_name):
            logger.warning("%s's update was fitted on the predictions of folds %s (%s); predicting with folds %s (%s) "
                           "gives other probabilities before the update", self.model.path, self.update.get("folds"),
                           self.update.get("checkpoint"), self.model.folds, self.model.checkpoint_name)
        self.checkpoint_sha256 = {fold: file_sha256(self.model.checkpoint(fold)) for fold in self.model.folds}
        self._backgrounds: dict[str, ExplanationInputs] | None = None

    # ------------------------------------------------------------------ setup
    def _load_network(self, fold: str) -> GLMILMoE:
        content = load_checkpoint(self.model.checkpoint(fold), map_location="cpu")
        self._checkpoint_metadata[fold] = dict(content.get("metadata", {}))
        mode = content.get("metadata", {}).get("network_mode", "full")
        overrides = content.get("metadata", {}).get("network_overrides", {})
        network = build_network(json.loads(content["plans"]), mode=mode, **overrides)
        network.load_state_dict(content["network"])
        return network.to(self.device).eval()

    def _load_harmoniser(self, fold: str) -> FeatureHarmoniser:
        """The fold's ``harmonisation.json``; the identity for a fold trained before harmonisation.
        A checkpoint that was trained on harmonised features needs its file."""
        path = self.model.path / f"fold_{fold}" / "harmonisation.json"
        expected = self._checkpoint_metadata.get(fold, {}).get("harmonisation_sha256")
        if not path.is_file():
            if expected is not None:
                raise ModelFolderError(f"{path} is missing: fold {fold}'s {self.model.checkpoint_name} was trained on "
                                       "harmonised lesion features; copy the fold's harmonisation.json with the model")
            return FeatureHarmoniser.identity("the fold has no harmonisation.json (trained before harmonisation)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            harmoniser = FeatureHarmoniser.from_dict(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelFolderError(f"{path} cannot be read ({exc}): re-run 'glmil_train DATASET {fold} --val'") from None
        if expected is not None and json_sha256(data) != expected:
            logger.warning("%s is not the harmonisation fold %s's %s was trained with (a re-fit?); predicting with it",
                           path, fold, self.model.checkpoint_name)
        return harmoniser

    def _store_with_model(self, path: Path, endpoints: dict[str, Any]) -> None:
        """Record what was fitted from the out-of-fold predictions in the model folder (a read-only
        copy of the folder still predicts: the record is for the user, prediction does not read it)."""
        if not self.record:
            return
        record = {"checkpoint": self.model.checkpoint_name, "folds": self.model.folds, "endpoints": endpoints}
        try:
            write_json_atomic(path, record)
        except OSError:
            pass

    def _oof_tables(self) -> dict[str, pd.DataFrame]:
        """The out-of-fold predictions of the folds and checkpoint in use, read once (risk scales,
        recalibration and survival models all start from them)."""
        if self._oof_cache is None:
            self._oof_cache = read_oof_tables(self.oof_files)
        return self._oof_cache

    def _risk_scales(self) -> dict[str, dict]:
        if not self.survival:
            return {}
        files = self.oof_files
        missing = [fold for fold, path in files.items() if not path.is_file()]
        if missing:  # never scale one checkpoint's risks with another checkpoint's predictions
            best = "" if self.model.checkpoint_name == "checkpoint_final.pt" else " --val_best"
            raise ModelFolderError(
                f"{files[missing[0]]} is missing: the risk groups of {self.model.checkpoint_name} need the out-of-fold "
                f"predictions of that checkpoint for fold(s) {missing}; write them with 'glmil_train DATASET FOLD "
                f"--val{best}'" + ("" if best else " (or predict with the checkpoint that was validated)"))
        scales = fit_risk_scales(self._oof_tables(), self.survival)
        self._store_with_model(self.model.risk_groups_file(), scales)
        return scales

    def _recalibration(self) -> dict[str, dict]:
        """Per binary endpoint, the map of :mod:`~glmil_auto.inference.recalibration` fitted on the
        out-of-fold predictions of the folds and checkpoint in use (identity where there are none)."""
        if not self.binary:
            return {}
        missing = [fold for fold, path in self.oof_files.items() if fold == "all" or not path.is_file()]
        if missing:
            reason = (f"no out-of-fold predictions of {self.model.checkpoint_name} for fold(s) {missing}: "
                      "probabilities are not recalibrated")
            logger.warning("%s (%s)", reason, self.model.path)
            return identity_maps(self.binary, reason)
        maps = fit_recalibration_maps(self._oof_tables(), self.binary)
        self._store_with_model(self.model.recalibration_file(), maps)
        return maps

    def _survival_models(self) -> dict[str, dict]:
        """Per survival endpoint, beta and the Breslow baseline of
        :mod:`~glmil_auto.inference.survival_probabilities`, from the same out-of-fold predictions
        as the risk scales."""
        if not self.survival:
            return {}
        tables = self._oof_tables()
        models = {}
        for name in self.survival:
            endpoint = self.spec.endpoints[name]
            risks, times, events = pooled_standardised_risks(tables, name, endpoint.time, endpoint.event,
                                                             self.risk_scales[name]["folds"])
            models[name] = fit_survival_model(risks, times, events)
        self._store_with_model(self.model.survival_model_file(), models)
        return models

    def shap_backgrounds(self) -> dict[str, ExplanationInputs]:
        """Each fold's SHAP background (its validation cases' fusion inputs), read once."""
        if self._backgrounds is None:
            missing = [fold for fold in self.model.folds if not self.model.shap_background(fold).is_file()]
            if missing:
                best = "" if self.model.checkpoint_name == "checkpoint_final.pt" else " --val_best"
                raise ModelFolderError(
                    f"{self.model.shap_background(missing[0])} is missing: --explain needs the SHAP background that "
                    f"the final validation of {self.model.checkpoint_name} writes for fold(s) {missing}; write it with "
                    f"'glmil_train DATASET FOLD --val{best}'")
            self._backgrounds = {fold: ExplanationInputs.load(self.model.shap_background(fold))
                                 for fold in self.model.folds}
        return self._backgrounds

    def explain(self, batch: dict[str, np.ndarray], case_id: str,
                fold_batches: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
        """SHAP of one case (the un-mirrored batch; ``fold_batches``: a fold's own batch where its
        harmonisation changed the features), averaged over the folds: logits for binary endpoints,
        standardised log-risks (as ensembled) for survival endpoints."""
        shared = {key: torch.as_tensor(value).to(self.device) for key, value in batch.items()}
        features = self.plans["clinical"]["features"]
        values = base = inputs = names = None
        for fold, network in self.networks.items():
            tensors = shared if not fold_batches or fold not in fold_batches else {
                key: torch.as_tensor(value).to(self.device) for key, value in fold_batches[fold].items()}
            with torch.no_grad(), autocast(self.device):
                inputs = explanation_inputs(network, tensors, [case_id])
            result = shap_values(network, inputs, self.shap_backgrounds()[fold], features)
            fold_values, fold_base = result.values[0].copy(), result.base_values[0].copy()
            for k, endpoint in enumerate(self.endpoints):
                if endpoint["type"] == "survival":
                    scale = self.risk_scales[endpoint["name"]]["folds"][fold]
                    fold_values[:, k] /= scale["std"]
                    fold_base[k] = (fold_base[k] - scale["mean"]) / scale["std"]
            values = fold_values / len(self.networks) + (0 if values is None else values)
            base = fold_base / len(self.networks) + (0 if base is None else base)
            names = result.feature_names
        shown = display_values(inputs, features, names)[0]
        return case_explanation(values, base, names, shown, self.endpoints)

    def produced_by(self, clinical_file: str | Path | None, explain: bool = False,
                    harmonisers: dict[str, FeatureHarmoniser] | None = None, harmonise: bool = False) -> dict[str, Any]:
        """What a case's numbers depend on besides its own images: the model folder, each fold's
        checkpoint file (sha256), the folds, test-time mirroring, the risk scales, the clinical
        table (sha256) and the harmonisation (``harmonise``, and the sha256 of every fold's
        harmoniser as used, new centres included). ``fingerprint`` hashes the rest;
        ``continue_prediction`` reuses a case only when its JSON carries the same fingerprint."""
        harmonisers = self.harmonisers if harmonisers is None else harmonisers
        record: dict[str, Any] = {
            "model_folder": str(self.model.path.resolve()), "checkpoint": self.model.checkpoint_name,
            "folds": list(self.model.folds), "checkpoint_sha256": self.checkpoint_sha256,
            "test_time_mirroring": [[list(g), list(l)] for g, l in self.variants],
            "risk_scales_sha256": json_sha256(self.risk_scales),
            "recalibration_sha256": json_sha256(self.recalibration),
            "survival_horizons": self.horizons, "survival_models_sha256": json_sha256(self.survival_models),
            "model_update_sha256": None if self.update is None else json_sha256(self.update),
            "clinical_sha256": None if clinical_file is None else file_sha256(clinical_file),
            "explain": bool(explain),
            "harmonise": bool(harmonise),
            "harmonisation": {fold: h.method for fold, h in harmonisers.items()},
            "harmonisation_sha256": json_sha256({fold: h.to_dict() for fold, h in harmonisers.items()}),
        }
        record["fingerprint"] = json_sha256(record)[:32]
        return record

    # ------------------------------------------------------------------ one case
    def preprocess_case(self, images: np.ndarray, lesion_mask: np.ndarray, geometry: Geometry,
                        case_id: str) -> PreprocessedCase:
        return PreprocessedCase(case_id, *self.preprocessor.run_case(images, lesion_mask, geometry, case_id))

    def case_batch(self, case: PreprocessedCase, clinical_values: np.ndarray, clinical_categories: np.ndarray
                   ) -> dict[str, np.ndarray]:
        """The network's batch of one case (B = 1), as the training loader builds it."""
        batch = collate_bags([case.global_array], [case.local_array],
                             [instance_descriptors(case.properties, case.case_id)])
        batch.update(self._feature_arrays(case.properties, case.case_id, batch["instance_mask"].shape[1]))
        batch["clinical_values"] = np.asarray(clinical_values, dtype=np.float32).reshape(1, -1)
        batch["clinical_categories"] = np.asarray(clinical_categories, dtype=np.int64).reshape(1, -1)
        return batch

    def _feature_arrays(self, properties: dict[str, Any], case_id: str, n_max: int) -> dict[str, np.ndarray]:
        """``instance_features`` (1, n_max, L), ``case_features`` (1, P) and ``foci_responses`` (1, M)
        of a case's properties."""
        section = self.plans["preprocessing"].get("lesion_features")
        foci = int((self.plans["preprocessing"].get("small_foci") or {}).get("max_candidates", 0))
        extras = case_extras(properties, case_id, lesion_feature_names(section), (section or {}).get("case_features", []),
                             foci_candidates=foci)
        return collate_extras([extras], n_max)

    def foci_summary(self, case: PreprocessedCase) -> dict[str, Any] | None:
        """The case's small-foci descriptor for its JSON: each fold's threshold (noise units, fitted on its
        training cases), and at their median the count, summed response and the foci themselves
        (physical positions, ``world_mm`` as the image header's x, y, z); None for plans without small foci."""
        if not self.plans["preprocessing"].get("small_foci"):
            return None
        from glmil_auto.model.foci_descriptor import foci_above

        thresholds = {fold: float(network.foci_threshold) for fold, network in self.networks.items()}
        threshold = float(np.median(list(thresholds.values())))
        above = foci_above(case.properties, threshold, case.case_id)
        used = {fold: bool(network.use_small_foci) for fold, network in self.networks.items()}
        return {"threshold": threshold, "fold_thresholds": thresholds, "used_by_folds": used,
                "count": len(above), "summed_response": float(sum(f["response"] for f in above)), "foci": above,
                "n_candidates": int(case.properties["small_foci"]["n_candidates"])}

    def fold_feature_arrays(self, case: PreprocessedCase, centre: Any,
                            harmonisers: dict[str, FeatureHarmoniser] | None = None, n_max: int | None = None
                            ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
        """Per fold whose harmoniser changes this case (centre ``centre``), its harmonised feature
        arrays (as :meth:`_feature_arrays`, bags padded to ``n_max``: default the case's own bag);
        and per fold what was done, for the case's JSON."""
        harmonisers = self.harmonisers if harmonisers is None else harmonisers
        n_max = max(1, int(case.properties.get("n_instances", 0))) if n_max is None else int(n_max)
        arrays: dict[str, dict[str, np.ndarray]] = {}
        done: dict[str, str] = {}
        for fold in self.networks:
            harmoniser = harmonisers.get(fold)
            if harmoniser is None or harmoniser.is_identity:
                done[fold] = "unchanged: " + (harmoniser.reason if harmoniser is not None else "no harmoniser")
                continue
            if not harmoniser.knows(centre):
                done[fold] = "unchanged: centre not seen in training (glmil_predict --harmonise fits it)"
                continue
            transformed = harmoniser.transform(case.properties, centre, case.case_id, warn_unseen=False)
            done[fold] = ("harmonised as training centre" if centre_label(centre) in harmoniser.training_centres
                          else "harmonised as a new centre fitted on this run's cases")
            if transformed is not case.properties and self.plans["preprocessing"].get("lesion_features"):
                arrays[fold] = self._feature_arrays(transformed, case.case_id, n_max)
        return arrays, done

    def _forward(self, network: GLMILMoE, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        tensors = {key: torch.as_tensor(value).to(self.device) for key, value in batch.items()}
        with torch.no_grad(), autocast(self.device):
            output = network(tensors)
            start_logits, start_log_risks, _ = network.starting_point_outputs(tensors)

        def cpu(values: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
            return {k: v.float().cpu().numpy() for k, v in values.items()}

        return {"logits": cpu(output.logits), "log_risks": cpu(output.log_risks),
                "attention": cpu(output.attention), "gate_weights": cpu(output.gate_weights),
                "instance_logits": cpu(output.instance_logits),
                "start_logits": cpu(start_logits), "start_log_risks": cpu(start_log_risks)}

    def predict_case(self, case: PreprocessedCase, clinical_values: np.ndarray, clinical_categories: np.ndarray,
                     gradcam_endpoints: Sequence[str] = (), warnings: Sequence[str] = (),
                     explain: bool = False, centre: Any = None,
                     harmonisers: dict[str, FeatureHarmoniser] | None = None) -> CasePrediction:
        """Ensemble prediction of one preprocessed case (see the module docstring). ``centre``: the
        case's centre, for each fold's harmonisation of its lesion features (``harmonisers``, default
        the model folder's; a centre a fold does not know leaves that fold's features unchanged)."""
        batch = self.case_batch(case, clinical_values, clinical_categories)
        variants = [mirror_case_batch(batch, v) for v in self.variants]
        left_out = leave_one_out_batches(batch)
        full = concatenate_batches(variants + left_out)
        v, n = len(variants), len(left_out)
        # the variants and left-out bags share the case's feature arrays: a fold's harmonised ones replace them
        harmonised, harmonisation = self.fold_feature_arrays(case, centre, harmonisers, batch["instance_mask"].shape[1])
        rows = full["global"].shape[0]
        fold_batches = {fold: {**batch, **arrays} for fold, arrays in harmonised.items()}
        per_fold: dict[str, dict[str, float]] = {}
        attention = {e["name"]: np.zeros(n) for e in self.endpoints}
        contribution = {e["name"]: np.zeros(n) for e in self.endpoints}
        lesion_probability: dict[str, np.ndarray] = {}
        gates: dict[str, np.ndarray] = {}
        ensemble = {name: 0.0 for name in self.binary + self.survival}
        starting_point = {name: 0.0 for name in self.binary + self.survival}  # what the networks started from
        for fold, network in self.networks.items():
            fold_full = full if fold not in harmonised else {
                **full, **{key: np.repeat(value, rows, axis=0) for key, value in harmonised[fold].items()}}
            out = self._forward(network, fold_full)
            fold_values = {}
            for name in self.binary:
                p = 1.0 / (1.0 + np.exp(-out["logits"][name].astype(np.float64)))
                fold_values[name] = float(p[:v].mean())
                ensemble[name] += fold_values[name] / len(self.networks)
                contribution[name] += (p[0] - p[v:]) / len(self.networks)
            for name in self.survival:
                r = out["log_risks"][name].astype(np.float64)
                scale = self.risk_scales[name]["folds"][fold]
                fold_values[f"{name}_log_risk"] = float(r[:v].mean())
                ensemble[name] += (r[:v].mean() - scale["mean"]) / scale["std"] / len(self.networks)
                contribution[name] += (r[0] - r[v:]) / scale["std"] / len(self.networks)
            for name, logits in out["start_logits"].items():  # mirror-invariant: the first variant's
                starting_point[name] += float(1.0 / (1.0 + np.exp(-float(logits[0])))) / len(self.networks)
            for name, risks in out["start_log_risks"].items():  # standardised like the model's risks
                scale = self.risk_scales[name]["folds"][fold]
                starting_point[name] += (float(risks[0]) - scale["mean"]) / scale["std"] / len(self.networks)
            for name, weights in out["attention"].items():
                attention[name] += weights[:v, :n].mean(axis=0) / len(self.networks)
            for name, logits in out["instance_logits"].items():  # each lesion's own noisy-OR probability
                p = 1.0 / (1.0 + np.exp(-logits[:v, :n].astype(np.float64)))
                lesion_probability[name] = lesion_probability.get(name, 0.0) + p.mean(axis=0) / len(self.networks)
            for name, weights in out["gate_weights"].items():
                gates[name] = gates.get(name, 0.0) + weights[:v].mean(axis=0) / len(self.networks)
            per_fold[fold] = fold_values
        row: dict[str, Any] = {"case_id": case.case_id}
        for name in self.binary:
            row[name] = float(apply_recalibration(self.recalibration[name], [ensemble[name]])[0])
            row[f"{name}_uncalibrated"] = float(ensemble[name])
        for name in self.survival:
            row[f"{name}_risk"] = float(ensemble[name])
            row[f"{name}_risk_group"] = assign_risk_groups([ensemble[name]], self.risk_scales[name]["cutoffs"])[0]
            survival = survival_probabilities(self.survival_models[name], [ensemble[name]], self.horizons)[0]
            for horizon, value in zip(self.horizons, survival):
                row[f"{name}_surv_{horizon_label(horizon)}"] = float(value)
        for name in self.binary:  # the fold-averaged starting point, for the evaluation's comparison
            row[f"{name}_starting_point"] = float(starting_point[name])
        for name in self.survival:
            row[f"{name}_starting_point_risk"] = float(starting_point[name])
        warnings = list(warnings)
        update_used = self.apply_update(row, centre, warnings) if self.update is not None else None
        prediction = CasePrediction(case.case_id, row, per_fold,
                                    self._lesion_table(case, attention, contribution, lesion_probability),
                                    {k: [float(x) for x in w] for k, w in gates.items()}, warnings,
                                    properties=case.properties,
                                    harmonisation={"centre": centre_label(centre), "folds": harmonisation},
                                    small_foci=self.foci_summary(case), model_update=update_used)
        if gradcam_endpoints:
            prediction.gradcam = self.gradcam(case, batch, gradcam_endpoints, fold_batches)
        if explain:
            prediction.explanation = self.explain(batch, case.case_id, fold_batches)
        return prediction

    def apply_update(self, row: dict[str, Any], centre: Any, warnings: list[str]) -> dict[str, Any]:
        """Replace ``row``'s probabilities by the updated ones of the case's centre, keeping the
        previous ones as ``*_before_update``; returns what was applied (for the case's JSON). A
        centre without an update keeps its probabilities, with a warning."""
        key, updates = update_for_centre(self.update, centre)
        if updates is None:
            warnings.append(f"no model update for centre {centre!r} (the update covers centres "
                            f"{sorted(self.update['centres'])}): probabilities as before the update")
        for name in self.binary:
            row[f"{name}_before_update"] = row[name]
            update = (updates or {}).get(name)
            if update and update["method"] != "none":
                row[name] = float(apply_binary_update(update, [row[name]])[0])
        for name in self.survival:
            update = (updates or {}).get(name)
            columns = [f"{name}_surv_{horizon_label(h)}" for h in self.horizons]
            for column in columns:
                row[f"{column}_before_update"] = row[column]
            if update and update["method"] != "none":
                values = survival_probabilities(update, [row[f"{name}_risk"]], self.horizons)[0]
                row.update({column: float(v) for column, v in zip(columns, values)})
        return {"centre": key, "methods": {name: u["method"] for name, u in (updates or {}).items()}}

    def _lesion_table(self, case: PreprocessedCase, attention: dict[str, np.ndarray],
                      contribution: dict[str, np.ndarray], lesion_probability: dict[str, np.ndarray] | None = None
                      ) -> list[dict[str, Any]]:
        original = Geometry.from_dict(case.properties["original_geometry"])
        table = []
        for lesion in case.properties.get("lesions", []):
            index = lesion.get("instance_index")
            world = [float(x) for x in lesion["centroid_world_mm"]]
            table.append({
                "label": lesion["label"],
                "centroid_world_mm": world,
                "centroid_voxel_zyx": [round(float(x), 2) for x in original.world_to_index(np.asarray(world))],
                "volume_mm3": float(lesion["volume_mm3"]),
                "depth_below_head_surface_mm": float(lesion["depth_below_head_surface_mm"]),
                "kept": bool(lesion.get("kept")),
                "attention": {k: float(w[index]) for k, w in attention.items()} if index is not None else None,
                "contribution": {k: float(c[index]) for k, c in contribution.items()} if index is not None else None,
                "lesion_probability": ({k: float(p[index]) for k, p in (lesion_probability or {}).items()}
                                       if index is not None and lesion_probability else None),
            })
        return table

    def gradcam(self, case: PreprocessedCase, batch: dict[str, np.ndarray], endpoints: Sequence[str],
                fold_batches: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
        """Fold-averaged Grad-CAM of the global encoder per endpoint, in the input image's geometry
        (``fold_batches``: a fold's own batch where its harmonisation changed the features)."""
        from glmil_auto.inference.gradcam import global_gradcam, gradcam_in_image_geometry

        shared = {key: torch.as_tensor(value).to(self.device) for key, value in batch.items()}
        tensors = {fold: shared if not fold_batches or fold not in fold_batches else
                   {key: torch.as_tensor(value).to(self.device) for key, value in fold_batches[fold].items()}
                   for fold in self.networks}
        global_geometry = Geometry.from_dict(case.properties["global_geometry"])
        original = Geometry.from_dict(case.properties["original_geometry"])
        maps = {}
        for endpoint in endpoints:
            cam = np.mean([global_gradcam(network, tensors[fold], endpoint)[0]
                           for fold, network in self.networks.items()], axis=0)
            maps[endpoint] = gradcam_in_image_geometry(cam, global_geometry, original)
        return maps

    # ------------------------------------------------------------------ folders
    def predict_from_files(self, images_folder: str | Path, masks_folder: str | Path, output_folder: str | Path,
                           clinical_file: str | Path | None = None, save_gradcam: bool = False,
                           continue_prediction: bool = False, num_processes: int = 0, progress: bool = True,
                           command_line: Sequence[str] | None = None, explain: bool = False, harmonise: bool = False
                           ) -> tuple[pd.DataFrame, dict[str, str]]:
        """Predict every case of ``images_folder``; returns the predictions table and the failed
        cases (case -> error). See the module docstring for what is written. ``harmonise``: fit every
        fold's harmoniser on the run's new centres first (their own cases, a first pass that
        preprocesses every case); without it each case is preprocessed and predicted on its own."""
        out = Path(output_folder)
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        cases = list_prediction_cases(images_folder, self.spec)
        clinical = ClinicalInputs(clinical_file, self.spec, self.plans["clinical"]["features"])
        gradcam_endpoints = [e["name"] for e in self.endpoints] if save_gradcam else []
        if gradcam_endpoints and not all(network.use_global for network in self.networks.values()):
            logger.warning("no Grad-CAM maps: the model (%s) has no global branch", self.model.path)
            gradcam_endpoints = []
        if explain:
            self.shap_backgrounds()  # a missing background stops here, before any case
        centres = self.case_centres(clinical, cases)
        with tempfile.TemporaryDirectory(prefix="glmil_harmonise_") if harmonise else _no_folder() as cache_folder:
            harmonisers, new_centres, first_pass = self.harmonisers, {}, None
            if harmonise:
                first_pass = _FirstPass(Path(cache_folder))
                for case_id, result in tqdm(self._preprocessed(cases, images_folder, masks_folder, num_processes),
                                            total=len(cases), desc="preprocessing (--harmonise)", unit="case",
                                            disable=not progress):
                    first_pass.keep(case_id, result)
                harmonisers, new_centres = self.fit_new_centres(first_pass.properties, centres, clinical,
                                                                Path(images_folder).resolve().name or "input")
            produced_by = self.produced_by(clinical_file, explain, harmonisers, harmonise)
            write_json_atomic(out / "plans.json", self.plans)
            write_json_atomic(out / "prediction_settings.json", {
                **self._settings(images_folder, masks_folder, clinical_file, save_gradcam, command_line),
                "explain": explain,
                "harmonisation": self._harmonisation_settings(harmonisers, harmonise, centres, new_centres),
                "produced_by": produced_by})
            fingerprint = produced_by["fingerprint"]
            todo = [c for c in cases
                    if not (continue_prediction and self._is_done(out, c, gradcam_endpoints, fingerprint))]
            if continue_prediction:
                logger.info("continuing: %d of %d case(s) reused from %s (same model, folds, checkpoints, TTA, clinical "
                            "table and harmonisation); %d to predict", len(cases) - len(todo), len(cases), out, len(todo))
            self._warn_unharmonised(todo, centres, harmonisers)
            failures: dict[str, str] = {}
            bar = tqdm(total=len(todo), desc="predicting", unit="case", disable=not progress)
            source = (self._preprocessed(todo, images_folder, masks_folder, num_processes) if first_pass is None
                      else first_pass.cases(todo))
            for case_id, result in source:
                try:
                    if isinstance(result, BaseException):
                        raise result
                    values, categories, clinical_warnings = clinical.encode(case_id)
                    for message in clinical_warnings:
                        logger.warning("case %s: %s", case_id, message)
                    warnings = [*result.properties.get("warnings", []), *clinical_warnings]
                    prediction = self.predict_case(result, values, categories, gradcam_endpoints, warnings, explain,
                                                   centre=centres.get(case_id), harmonisers=harmonisers)
                    self._write_case(out, prediction, fingerprint)
                except Exception as exc:  # noqa: BLE001 - reported per case; the other cases go on
                    failures[case_id] = str(exc)
                    logger.error("case %s was not predicted: %s", case_id, exc)
                bar.update()
            bar.close()
        frame = self._collect(out, cases)
        if failures:
            write_json_atomic(out / "failed_cases.json", failures)
        else:
            (out / "failed_cases.json").unlink(missing_ok=True)
        return frame, failures

    # ------------------------------------------------------------------ harmonisation of new centres
    def case_centres(self, clinical: ClinicalInputs, cases: Sequence[str]) -> dict[str, str | None]:
        """Each case's centre from the clinical table's ``group_column`` (None: no table, no row or
        no such column)."""
        column = self.spec.group_column
        table = clinical.table
        out: dict[str, str | None] = {}
        for case in cases:
            value = None
            if column and column in table.columns and case in table.index:
                cell = table.loc[[case], column]
                value = cell.iloc[0] if len(cell) else None
            out[case] = centre_label(value)
        return out

    def fit_new_centres(self, properties: dict[str, dict[str, Any]], centres: dict[str, str | None],
                        clinical: ClinicalInputs, unnamed_group: str
                        ) -> tuple[dict[str, FeatureHarmoniser], dict[str, list[str]]]:
        """Every fold's harmoniser extended to the centres of this run that it does not know, each
        fitted on its own preprocessed cases (``properties``: case -> properties, the cases that
        preprocessed). Cases without a centre form one group, ``unnamed_group`` (renamed when a
        fold knows that name), and ``centres`` is updated with it; cases whose clinical row is
        missing or bad (they fail later) are left out. Returns the harmonisers and the groups."""
        known = {c for h in self.harmonisers.values() for c in h.centres}
        group = unnamed_group
        while group in known:
            group += "_new"
        groups: dict[str, list[str]] = {}
        for case in properties:
            usable = clinical.path is None or (case in clinical.table.index and case not in clinical.problems_by_case)
            if not usable:
                continue
            if centres.get(case) is None:
                centres[case] = group
            groups.setdefault(centres[case], []).append(case)
        harmonisers: dict[str, FeatureHarmoniser] = {}
        new_centres: dict[str, list[str]] = {}
        for fold, harmoniser in self.harmonisers.items():
            for label, members in groups.items():
                if harmoniser.is_identity or harmoniser.knows(label):
                    continue
                harmoniser = harmoniser.fit_new_centre([properties[c] for c in members], label, members)
                new_centres[label] = members
                logger.info("fold %s: lesion features of the new centre %r fitted on its %d case(s) of this run",
                            fold, label, len(members))
            harmonisers[fold] = harmoniser
        return harmonisers, new_centres

    def _warn_unharmonised(self, cases: Sequence[str], centres: dict[str, str | None],
                           harmonisers: dict[str, FeatureHarmoniser]) -> None:
        """One warning per centre whose cases some fold leaves unharmonised."""
        unseen: dict[str | None, list[str]] = {}
        for case in cases:
            folds = [f for f, h in harmonisers.items() if not h.is_identity and not h.knows(centres.get(case))]
            if folds:
                unseen.setdefault(centres.get(case), folds)
        for centre, folds in unseen.items():
            logger.warning("lesion features of centre %s are not harmonised by fold(s) %s: not a training centre of "
                           "the fold (pass --harmonise to fit the centre from its own cases)",
                           "(none given)" if centre is None else repr(centre), folds)

    def _harmonisation_settings(self, harmonisers: dict[str, FeatureHarmoniser], harmonise: bool,
                                centres: dict[str, str | None], new_centres: dict[str, list[str]]) -> dict[str, Any]:
        return {"harmonise": bool(harmonise),
                "folds": {fold: h.describe() for fold, h in harmonisers.items()},
                "case_centres": centres,
                "new_centres": new_centres}

    def _preprocessed(self, cases: list[str], images_folder: str | Path, masks_folder: str | Path,
                      num_processes: int) -> Iterator[tuple[str, PreprocessedCase | BaseException]]:
        """Preprocessed cases in order; with workers, at most 2 per worker in flight (bounded memory)."""
        args = (str(images_folder), str(masks_folder))
        if num_processes <= 0 or len(cases) <= 1:
            for case in cases:
                yield case, _preprocess_or_error(*args, case, self.spec, self.plans)
            return
        context = multiprocessing.get_context("spawn")  # no fork after threads (torch, SimpleITK)
        with ProcessPoolExecutor(num_processes, mp_context=context, initializer=single_threaded_image_worker) as pool:
            pending: list[tuple[str, Future]] = []
            queue = list(cases)
            while queue or pending:
                while queue and len(pending) < 2 * num_processes:
                    case = queue.pop(0)
                    pending.append((case, pool.submit(_preprocess_or_error, *args, case, self.spec, self.plans)))
                case, future = pending.pop(0)
                yield case, future.result()

    def _gradcam_file(self, out: Path, case: str, endpoint: str) -> Path:
        return path_inside(out, f"{case}_{endpoint}_gradcam{self.spec.file_ending}")

    def _is_done(self, out: Path, case: str, gradcam_endpoints: Sequence[str], fingerprint: str) -> bool:
        """The case's JSON exists, was produced with ``fingerprint`` and its Grad-CAM files exist."""
        path = path_inside(out, f"{case}.json")
        if not path.is_file():
            return False
        try:
            same = json.loads(path.read_text(encoding="utf-8")).get("produced_by") == fingerprint
        except (ValueError, OSError, AttributeError):
            return False
        return same and all(self._gradcam_file(out, case, e).is_file() for e in gradcam_endpoints)

    def _write_case(self, out: Path, prediction: CasePrediction, fingerprint: str | None = None) -> None:
        original = Geometry.from_dict(prediction.properties["original_geometry"])
        files = {}
        for endpoint, array in prediction.gradcam.items():
            path = self._gradcam_file(out, prediction.case_id, endpoint)
            write_image(array.astype(np.float32), original, path)
            files[endpoint] = path.name
        content = prediction.to_json()
        content["gradcam_files"] = files
        content["produced_by"] = fingerprint
        write_json_atomic(path_inside(out, f"{prediction.case_id}.json"), content)

    def prediction_columns(self) -> list[str]:
        columns = ["case_id"]
        updated = self.update is not None
        for name in self.binary:
            columns += [name, f"{name}_uncalibrated"] + ([f"{name}_before_update"] if updated else [])
        for name in self.survival:
            columns += [f"{name}_risk", f"{name}_risk_group"]
            columns += [f"{name}_surv_{horizon_label(h)}" for h in self.horizons]
            columns += [f"{name}_surv_{horizon_label(h)}_before_update" for h in self.horizons] if updated else []
        columns += [f"{name}_starting_point" for name in self.binary]
        columns += [f"{name}_starting_point_risk" for name in self.survival]
        return columns

    def _collect(self, out: Path, cases: list[str]) -> pd.DataFrame:
        rows = []
        for case in cases:
            path = path_inside(out, f"{case}.json")
            if path.is_file():
                rows.append({"case_id": case, **json.loads(path.read_text())["predictions"]})
        columns = self.prediction_columns()
        write_csv_atomic(out / "predictions.csv", columns, rows)
        return pd.DataFrame(rows, columns=columns)

    def _settings(self, images_folder: Any, masks_folder: Any, clinical_file: Any, save_gradcam: bool,
                  command_line: Sequence[str] | None) -> dict[str, Any]:
        return {"command_line": list(command_line) if command_line else None,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model_folder": str(self.model.path), "folds": self.model.folds,
                "checkpoint": self.model.checkpoint_name, "device": str(self.device),
                "test_time_mirroring": [[list(g), list(l)] for g, l in self.variants],
                "images": str(images_folder), "masks": str(masks_folder),
                "clinical": None if clinical_file is None else str(clinical_file), "save_gradcam": save_gradcam,
                "risk_scales": self.risk_scales, "recalibration": self.recalibration, "model_update": self.update,
                "survival_horizons": self.horizons, "survival_models": self.survival_models, "torch": torch.__version__}
