"""What ``glmil_evaluate`` evaluates, gathered from the files a user has.

- a held-out cohort: ``glmil_predict``'s output folder (``predictions.csv``, the ``<case>.json``
  files with each case's lesions, ``prediction_settings.json`` naming the model folder) and the
  cohort's clinical table;
- cross-validation (``--cv``): the out-of-fold predictions of a model folder's folds
  (``fold_<k>/validation/predictions.csv``) and the training clinical table.

Baselines: the clinical + volumetric model fitted on the training cohort
(:class:`~glmil_auto.evaluation.clinical_models.clinical_baseline.ClinicalBaseline`), the prognostic scores of
the dataset's ``clinical_scores`` block (survival endpoints), and any table the user brings.
A baseline that cannot be built says why in ``metrics.json`` instead of stopping the evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.evaluation.prediction_metrics import (
    PredictionEvaluationError,
    checked_output_column,
    indexed_predictions,
    model_output_columns,
    numeric_column,
    predicted_endpoints,
    prediction_column,
    read_predictions,
)

CLINICAL_MODEL = "clinical model"
TRUTH_CEILING = "truth (synthetic ceiling)"
STARTING_POINT = "starting point (radiomics)"
STARTING_POINT_SUFFIX = "_starting_point"
FIRST_IDS = 5  # case ids listed in a report of unmatched or missing predictions


def indexed_scores(frame: pd.DataFrame, spec: DatasetSpec, source: str) -> pd.DataFrame:
    """A predictions or baseline table indexed by case id (``case_id`` or the dataset's case
    column), its score columns as numbers (NaN = no prediction); an error naming ``source`` for a
    missing case column, duplicated ids, no score column or a cell that is not a number."""
    try:
        indexed = indexed_predictions(frame, spec)
        for name in predicted_endpoints(indexed, spec):
            column = prediction_column(spec, name)
            indexed[column] = numeric_column(indexed[column], column)
        return indexed
    except PredictionEvaluationError as exc:
        raise PredictionEvaluationError(f"{source}: {exc}") from None


def checked_outputs(predictions: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The predictions (indexed by case id) with every model output as checked numbers
    (:func:`~glmil_auto.evaluation.prediction_metrics.checked_output_column`): a probability outside
    [0, 1], a non-finite risk score or an empty cell is an error naming the case and the column."""
    out = predictions.copy()
    endpoints = predicted_endpoints(out, spec)
    for column, probability in model_output_columns(list(out.columns), spec, endpoints).items():
        out[column] = checked_output_column(out[column], column, probability)
    return out


def model_predictions(frame: pd.DataFrame, spec: DatasetSpec, source: str) -> pd.DataFrame:
    """``glmil_predict``'s table indexed by case id, every model output checked; errors name
    ``source``. (Baseline tables go through :func:`indexed_scores`, where a missing score only
    leaves that case out of that baseline.)"""
    try:
        return checked_outputs(indexed_predictions(frame, spec), spec)
    except PredictionEvaluationError as exc:
        raise PredictionEvaluationError(f"{source}: {exc}") from None


def known_outcome(table: pd.DataFrame, spec: DatasetSpec, endpoints: Sequence[str]) -> pd.Series:
    """Per case of ``table``: whether any of ``endpoints`` has a known outcome (binary: the label;
    survival: time and event)."""
    known = pd.Series(False, index=table.index)
    for name in endpoints:
        declared = spec.endpoints[name]
        columns = [name] if declared.type == "binary" else [declared.time, declared.event]
        if all(c in table.columns for c in columns):
            known |= pd.concat([pd.to_numeric(table[c], errors="coerce").notna() for c in columns], axis=1).all(axis=1)
    return known


def _ids(cases: Sequence[str]) -> dict[str, Any]:
    return {"count": len(cases), "first": [str(c) for c in list(cases)[:FIRST_IDS]]}


def input_coverage(predicted: pd.Index, table: pd.DataFrame, spec: DatasetSpec, endpoints: Sequence[str],
                   expected: Sequence[str] | None = None, failed: Sequence[str] = ()) -> dict[str, Any]:
    """``metrics["inputs"]``: which predictions and which clinical cases are left out.

    - ``unmatched_predictions``: predicted cases that are not in the clinical table;
    - ``missing_predictions``: expected cases without a prediction. Expected are the cases of the
      clinical table (with ``expected``: only those of it, e.g. the validation cases of the folds
      evaluated with ``--cv``) that have a known outcome for a predicted endpoint; a case without
      any known outcome could not enter any number. ``failed_in_prediction`` counts those of them
      that ``glmil_predict`` listed in ``failed_cases.json`` (``failed``).

    Each holds ``count`` and the ``first`` few ids, in the tables' order."""
    table_ids = pd.Index(table.index.astype(str))
    unmatched = [c for c in predicted.astype(str) if c not in set(table_ids)]
    candidates = table_ids if expected is None else table_ids[table_ids.isin([str(c) for c in expected])]
    known = known_outcome(table.set_axis(table_ids, axis=0).loc[candidates], spec, endpoints)
    have = set(predicted.astype(str))
    missing = [c for c in candidates[known.to_numpy()] if c not in have]
    out = {"unmatched_predictions": _ids(unmatched), "missing_predictions": _ids(missing)}
    failed_ids = set(str(c) for c in failed)
    if failed_ids:
        out["missing_predictions"]["failed_in_prediction"] = sum(c in failed_ids for c in missing)
    return out


def coverage_messages(coverage: dict[str, Any], clinical_name: str) -> list[str]:
    """One sentence per non-empty part of :func:`input_coverage` (warnings, or with ``--strict``
    the error)."""
    lines = []
    unmatched, missing = coverage["unmatched_predictions"], coverage["missing_predictions"]
    if unmatched["count"]:
        lines.append(f"{unmatched['count']} prediction(s) for cases that are not in {clinical_name}, not evaluated "
                     f"(first: {unmatched['first']})")
    if missing["count"]:
        failed = missing.get("failed_in_prediction")
        lines.append(f"{missing['count']} case(s) of {clinical_name} with a known outcome have no prediction, not "
                     f"evaluated (first: {missing['first']})"
                     + (f"; {failed} of them failed in glmil_predict (failed_cases.json)" if failed else ""))
    return lines


def failed_cases(predictions_folder: Path) -> list[str]:
    """The cases that ``glmil_predict`` listed in ``failed_cases.json`` beside the predictions."""
    path = Path(predictions_folder) / "failed_cases.json"
    if not path.is_file():
        return []
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(c) for c in content] if isinstance(content, (dict, list)) else []


def starting_point_baseline(predictions: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame | None:
    """The model's own starting point (the fitted radiomics + clinical model the network corrects)
    from the ``<endpoint>_starting_point`` columns that ``glmil_predict`` and the trainer's
    validation write (``<endpoint>_starting_point_risk`` for survival endpoints), as a score table;
    None for predictions without them (models trained before the starting point existed)."""
    frame = pd.DataFrame(index=predictions.index)
    for name, endpoint in spec.endpoints.items():
        column = name + STARTING_POINT_SUFFIX + ("" if endpoint.type == "binary" else "_risk")
        if column in predictions.columns:
            frame[prediction_column(spec, name)] = numeric_column(predictions[column], column)
    return frame if len(frame.columns) else None


def read_baseline_arguments(arguments: Sequence[str], spec: DatasetSpec) -> dict[str, pd.DataFrame]:
    """``NAME=scores.csv`` arguments: tables with the predictions' score columns."""
    out = {}
    for argument in arguments:
        name, sep, path = argument.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise PredictionEvaluationError(f"--baseline {argument!r}: give NAME=scores.csv")
        out[name.strip()] = indexed_scores(read_predictions(Path(path.strip())), spec, path.strip())
    return out


def case_documents(predictions_folder: Path, cases: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``glmil_predict``'s ``<case>.json`` of each case that has one, read once for everything the
    evaluation takes from them (lesion tables, SHAP explanations)."""
    out = {}
    for case in cases:
        path = Path(predictions_folder) / f"{case}.json"
        if path.is_file():
            out[case] = json.loads(path.read_text(encoding="utf-8"))
    return out


def case_properties(documents: dict[str, dict[str, Any]], cases: Sequence[str]) -> list[dict[str, Any]] | None:
    """Each case's ``<case>.json`` (its lesion table) in ``cases`` order; None when any is missing."""
    return [documents[c] for c in cases] if all(c in documents for c in cases) else None


def model_folder_of(predictions_folder: Path) -> Path | None:
    """The model folder that ``glmil_predict`` recorded in ``prediction_settings.json``."""
    settings = predictions_folder / "prediction_settings.json"
    if not settings.is_file():
        return None
    folder = json.loads(settings.read_text(encoding="utf-8")).get("model_folder")
    return Path(folder) if folder and Path(folder).is_dir() else None


def oof_tables(model_folder: Path) -> dict[str, pd.DataFrame]:
    """``fold -> validation/predictions.csv`` of the model folder's numeric folds that have one."""
    from glmil_auto.inference.model_folder import available_folds
    from glmil_auto.inference.risk_groups import read_oof_tables

    files = {fold: Path(model_folder) / f"fold_{fold}" / "validation" / "predictions.csv"
             for fold in available_folds(Path(model_folder)) if fold.isdigit()}
    return read_oof_tables({fold: path for fold, path in files.items() if path.is_file()})


def binary_cutoffs(tables: dict[str, pd.DataFrame], endpoints: Sequence[str]) -> dict[str, list[float]]:
    """Risk-group cut-offs per binary endpoint: the tertiles of the pooled out-of-fold
    probabilities (the networks' own scale, which ``<endpoint>_uncalibrated`` shares)."""
    from glmil_auto.inference.risk_groups import cutoffs_from_risks

    out = {}
    for name in endpoints:
        values = [t[name].to_numpy(dtype=float) for t in tables.values() if name in t]
        if values and np.isfinite(np.concatenate(values)).any():
            out[name] = cutoffs_from_risks(np.concatenate(values))
    return out


def cross_validation_predictions(model_folder: Path, spec: DatasetSpec) -> pd.DataFrame:
    """The folds' out-of-fold predictions as one predictions table (a ``fold`` column): binary
    probabilities as the networks gave them (``<endpoint>`` and ``<endpoint>_uncalibrated``: a
    recalibration fitted on these very cases would be in-sample), survival log-risks standardised
    per fold with risk groups from the pooled tertiles, as ``glmil_predict`` does."""
    from glmil_auto.inference.risk_groups import assign_risk_groups, fit_risk_scales

    tables = oof_tables(model_folder)
    if not tables:
        raise PredictionEvaluationError(f"no fold_*/validation/predictions.csv in {model_folder}: train the folds "
                                        "(glmil_train) or run glmil_train DATASET FOLD --val")
    survival = [n for n, e in spec.endpoints.items() if e.type == "survival"]
    scales = fit_risk_scales(tables, [n for n in survival if all(f"{n}_log_risk" in t for t in tables.values())])
    frames = []
    for fold, table in tables.items():
        frame = pd.DataFrame({"case_id": table["case_id"].astype(str), "fold": fold})
        for name, endpoint in spec.endpoints.items():
            if endpoint.type == "binary" and name in table:
                frame[name] = table[name].to_numpy(dtype=float)
                frame[f"{name}_uncalibrated"] = frame[name]
            elif name in scales:
                scale = scales[name]["folds"][fold]
                risk = (table[f"{name}_log_risk"].to_numpy(dtype=float) - scale["mean"]) / scale["std"]
                frame[f"{name}_risk"] = risk
                frame[f"{name}_risk_group"] = assign_risk_groups(risk, scales[name]["cutoffs"])
            start = name + STARTING_POINT_SUFFIX + ("" if endpoint.type == "binary" else "_log_risk")
            if start in table:  # the fold's starting point (survival: standardised within the fold)
                values = table[start].to_numpy(dtype=float)
                if endpoint.type != "binary":
                    values = (values - values.mean()) / (values.std() or 1.0)
                frame[name + STARTING_POINT_SUFFIX + ("" if endpoint.type == "binary" else "_risk")] = values
        frames.append(frame)
    return pd.concat(frames, ignore_index=True).set_index("case_id")


def clinical_model_baseline(spec: DatasetSpec, plans: dict[str, Any], train_table: pd.DataFrame,
                            train_properties: Sequence[dict[str, Any]], eval_table: pd.DataFrame,
                            eval_properties: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The clinical + volumetric model fitted on the training cohort, scored on the evaluated one
    (columns as the predictions: probability per binary endpoint, ``<endpoint>_risk`` per survival
    endpoint)."""
    from glmil_auto.evaluation.clinical_models.clinical_baseline import ClinicalBaseline
    from glmil_auto.model.clinical_encoder import encode_clinical_table
    from glmil_auto.training.dataloading.data_loader import case_targets

    features, endpoints = plans["clinical"]["features"], plans["endpoints"]
    values, categories = encode_clinical_table(train_table, features)
    targets = case_targets(train_table, endpoints, spec)
    baseline = ClinicalBaseline.fit(features, endpoints, values, categories, train_properties, targets)
    eval_values, eval_categories = encode_clinical_table(eval_table, features)
    scores = baseline.predict(eval_values, eval_categories, eval_properties)
    frame = pd.DataFrame(index=pd.Index(eval_table.index.astype(str), name="case_id"))
    for endpoint in endpoints:
        column = endpoint["name"] if endpoint["type"] == "binary" else f"{endpoint['name']}_risk"
        frame[column] = scores[endpoint["name"]]
    return frame


def cross_validation_splits(model_folder: Path, dataset: Any) -> list[dict[str, list[str]]]:
    """The folds of the model folder (its ``splits.json``: random or by centre), else the
    preprocessed dataset's ``splits_final.json``."""
    from glmil_auto.paths import preprocessed_folder
    from glmil_auto.training.dataloading.splits import SPLITS_FILE

    recorded = Path(model_folder) / "splits.json"
    if recorded.is_file():
        return json.loads(recorded.read_text(encoding="utf-8"))["splits"]
    return json.loads((preprocessed_folder() / dataset.name / SPLITS_FILE).read_text(encoding="utf-8"))


def cross_validation_expected_cases(model_folder: Path, dataset: Any) -> list[str] | None:
    """The validation cases of the folds that have out-of-fold predictions: the cases ``--cv``
    should find predictions for; None when the splits cannot be read (then every case of the
    training table with a known outcome is expected)."""
    try:
        splits = cross_validation_splits(model_folder, dataset)
        return [str(c) for fold in oof_tables(model_folder) for c in splits[int(fold)]["val"]]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def cross_validation_clinical_baseline(spec: DatasetSpec, dataset: Any, model_folder: Path,
                                       train_table: pd.DataFrame) -> pd.DataFrame:
    """The clinical model in cross-validation: per fold of ``splits_final.json``, fitted on the fold's
    training cases and scored on its validation cases, for the folds that have out-of-fold
    predictions. Survival linear predictors are standardised per fold, as the model's risks are."""
    from glmil_auto.paths import preprocessed_folder
    from glmil_auto.preprocessing.storage import load_properties

    plans = json.loads((Path(model_folder) / "plans.json").read_text(encoding="utf-8"))
    splits = cross_validation_splits(model_folder, dataset)
    properties_folder = preprocessed_folder() / dataset.name / plans["plans_name"] / "Tr"
    table = train_table.set_axis(pd.Index(train_table.index.astype(str)), axis=0)
    frames = []
    for fold in oof_tables(model_folder):
        split = splits[int(fold)]
        train, val = [c for c in split["train"] if c in table.index], [c for c in split["val"] if c in table.index]
        frame = clinical_model_baseline(spec, plans, table.loc[train], [load_properties(properties_folder, c)
                                                                        for c in train],
                                        table.loc[val], [load_properties(properties_folder, c) for c in val])
        for column in [c for c in frame.columns if c.endswith("_risk")]:
            values = frame[column].to_numpy(dtype=float)
            frame[column] = (values - np.nanmean(values)) / max(float(np.nanstd(values)), 1e-12)
        frames.append(frame)
    if not frames:
        raise ValueError(f"no fold of {model_folder} has out-of-fold predictions")
    return pd.concat(frames)


def truth_baseline(dataset_folder: Path, spec: DatasetSpec, cases: Sequence[str]) -> pd.DataFrame | None:
    """The synthetic cohort's true probabilities and linear predictors as a score table (None for
    a real dataset, which has no truth file, or when a case has no truth)."""
    from glmil_auto.evaluation.prediction_metrics import truth_for_dataset, truth_scores

    _, truth = truth_for_dataset(dataset_folder)
    if truth is None:
        return None
    frame = pd.DataFrame(index=pd.Index([str(c) for c in cases], name="case_id"))
    for name, endpoint in spec.endpoints.items():
        scores = truth_scores(truth, spec, name, list(frame.index))
        if not np.isfinite(scores).all():
            return None
        frame[name if endpoint.type == "binary" else f"{name}_risk"] = scores
    return frame


def prognostic_score_baselines(spec: DatasetSpec, table: pd.DataFrame, n_metastases: pd.Series
                               ) -> dict[str, pd.DataFrame]:
    """RPA class, GPA and DS-GPA (as risks: higher = worse) for every survival endpoint, from the
    dataset's ``clinical_scores`` block; {} without one."""
    from glmil_auto.evaluation.clinical_models.prognostic_scores import compute_scores, scores_as_risk

    mapping = spec.raw.get("clinical_scores")
    if not mapping:
        return {}
    risks = scores_as_risk(compute_scores(table, mapping, n_metastases))
    survival = [n for n, e in spec.endpoints.items() if e.type == "survival"]
    names = {"rpa_class": "RPA class", "gpa": "GPA", "ds_gpa": "DS-GPA"}
    out = {}
    for column, label in names.items():
        if column in risks and risks[column].notna().any():
            out[label] = pd.DataFrame({f"{name}_risk": risks[column].to_numpy(dtype=float) for name in survival},
                                      index=pd.Index(table.index.astype(str), name="case_id"))
    return out
