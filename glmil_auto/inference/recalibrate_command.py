"""``glmil_recalibrate``: update a model's probabilities for a new centre from some of its labelled cases.

    glmil_recalibrate -m MODEL_FOLDER -i PREDICTIONS.csv -c CLINICAL.csv -o NEW_MODEL_FOLDER
        [--method auto|intercept|logistic|isotonic] [--per-centre [--centre-column COLUMN]]
        [--centre NAME] [--overwrite]

``PREDICTIONS.csv`` is ``glmil_predict``'s output of MODEL_FOLDER on the new centre's cases, and
``CLINICAL.csv`` holds their outcomes (the columns of the dataset's clinical table). Every binary
endpoint's probability and every survival endpoint's baseline hazard (and, with enough events,
its risk coefficient) is updated (:mod:`~glmil_auto.inference.model_updating`). The result is a copy
of MODEL_FOLDER with ``model_update.json``: the source folder, its checkpoints' hashes, the files
the update was fitted on, and per centre and endpoint the cases, events, method and coefficients.
``glmil_predict -m NEW_MODEL_FOLDER`` then writes the updated probabilities as ``<endpoint>`` with
the previous ones beside them (``<endpoint>_before_update``); risks and risk groups, hence every
ranking, are unchanged. The source folder is never written to.

``--per-centre``: one update per centre of ``--centre-column`` (default dataset.json's
``group_column``), for a labelled cohort that spans several new centres; a predicted case of a
centre without an update keeps its probabilities, with a warning.

Exit codes: 0 updated; 1 bad input (named: the file, the case, the column); 2 a problem of the
run (a missing model folder, an output that is the source or exists without ``--overwrite``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from glmil_auto.dataset.clinical_table import read_clinical_table
from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.dataset.problems import DatasetError
from glmil_auto.inference.model_folder import ModelFolderError, open_model_folder
from glmil_auto.inference.model_update_file import (
    ALL_CENTRES,
    UPDATE_FILE,
    UPDATE_FORMAT,
    UPDATE_VERSION,
    read_model_update,
)
from glmil_auto.inference.model_updating import METHODS, fit_binary_update, fit_survival_update
from glmil_auto.utilities.atomic_files import write_json_atomic
from glmil_auto.utilities.content_hash import file_sha256

logger = logging.getLogger(__name__)


class RecalibrationInputError(ValueError):
    """Bad labelled input: the message names the file, the case and the column."""


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output(source: Path, output: Path, overwrite: bool) -> None:
    """Never write into the source folder; an existing output needs ``overwrite``."""
    if _inside(output, source) or _inside(source, output):
        raise FileExistsError(f"-o {output} is the model folder {source} or lies inside (or around) it: the source "
                              "model stays untouched, choose another folder")
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty: use --overwrite to replace it")


def read_labelled_predictions(path: Path, spec: DatasetSpec, binary: Sequence[str], survival: Sequence[str]
                              ) -> pd.DataFrame:
    """The predictions table indexed by case, with every needed column present and valid: a
    probability outside [0, 1] or a non-finite value is an error naming the case and column."""
    if not path.is_file():
        raise RecalibrationInputError(f"{path}: predictions file not found (glmil_predict writes predictions.csv)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)  # cells as written, for the messages
    if "case_id" not in table:
        raise RecalibrationInputError(f"{path}: no 'case_id' column (is this glmil_predict's predictions.csv?)")
    columns = {**{name: "probability" for name in binary}, **{f"{name}_risk": "risk" for name in survival}}
    absent = [c for c in columns if c not in table]
    if absent:
        raise RecalibrationInputError(f"{path}: column(s) {absent} missing; the model predicts "
                                      f"{list(binary) + list(survival)}")
    if "_before_update" in " ".join(table.columns):
        raise RecalibrationInputError(f"{path}: these predictions come from an updated model folder; update the "
                                      "original model with the predictions it wrote itself")
    for column, kind in columns.items():
        text = table[column]
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float)
        table[column] = values
        bad = ~np.isfinite(values) | ((values < 0) | (values > 1) if kind == "probability" else False)
        if bad.any():
            case, value = table["case_id"][bad].iloc[0], text[bad].iloc[0]
            raise RecalibrationInputError(f"{path}: case {case}, column {column!r}: {value!r} is not a "
                                          f"{'probability in [0, 1]' if kind == 'probability' else 'finite risk'}"
                                          f" ({int(bad.sum())} such row(s))")
    if table["case_id"].duplicated().any():
        raise RecalibrationInputError(f"{path}: case {table['case_id'][table['case_id'].duplicated()].iloc[0]} "
                                      "appears twice")
    return table.set_index("case_id")


def joined_cases(predictions: pd.DataFrame, clinical: pd.DataFrame, predictions_path: Path, clinical_path: Path
                 ) -> list[str]:
    """Cases with both a prediction and a clinical row; the others are reported (count, first ids)."""
    both = [c for c in predictions.index if c in clinical.index]
    for what, ids, where in (("predictions without a clinical row", [c for c in predictions.index if c not in
                                                                     clinical.index], clinical_path),
                             ("clinical rows without a prediction", [c for c in clinical.index if c not in
                                                                     predictions.index], predictions_path)):
        if ids:
            logger.warning("%d %s (not in %s; left out): %s%s", len(ids), what, where, ", ".join(ids[:5]),
                           " ..." if len(ids) > 5 else "")
    if not both:
        raise RecalibrationInputError(f"no case of {predictions_path} has a row in {clinical_path}")
    return both


def fit_centre_update(cases: list[str], predictions: pd.DataFrame, clinical: pd.DataFrame, spec: DatasetSpec,
                      survival_models: dict[str, dict], binary: Sequence[str], survival: Sequence[str], method: str
                      ) -> dict[str, Any]:
    """Every endpoint's update fitted on ``cases`` (an endpoint that cannot be fitted is recorded
    with its reason and left as it was)."""
    endpoints: dict[str, Any] = {}
    for name in binary:
        try:
            endpoints[name] = fit_binary_update(predictions.loc[cases, name].to_numpy(dtype=float),
                                                clinical.loc[cases, name].to_numpy(dtype=float), method)
        except ValueError as exc:
            endpoints[name] = {"type": "binary", "method": "none", "reason": str(exc)}
    for name in survival:
        declared = spec.endpoints[name]
        try:
            endpoints[name] = fit_survival_update(predictions.loc[cases, f"{name}_risk"].to_numpy(dtype=float),
                                                  clinical.loc[cases, declared.time].to_numpy(dtype=float),
                                                  clinical.loc[cases, declared.event].to_numpy(dtype=float),
                                                  survival_models[name], method)
        except ValueError as exc:
            endpoints[name] = {"type": "survival", "method": "none", "reason": str(exc)}
    return {"cases": len(cases), "endpoints": endpoints}


def prediction_folds(predictions_file: Path, model_folder: Any) -> tuple[list[str], str]:
    """The folds and checkpoint that wrote ``predictions_file`` (its ``prediction_settings.json``),
    checked against the model folder's checkpoints: an update fitted on another model's
    predictions would be applied to numbers it never saw. Without the settings file: every fold."""
    settings_file = predictions_file.parent / "prediction_settings.json"
    if not settings_file.is_file():
        logger.warning("%s not found beside %s: assuming the predictions used every fold and %s", settings_file.name,
                       predictions_file, model_folder.checkpoint_name)
        return list(model_folder.folds), model_folder.checkpoint_name
    settings = json.loads(settings_file.read_text())
    folds, checkpoint = [str(f) for f in settings["folds"]], settings["checkpoint"]
    written = settings.get("produced_by", {}).get("checkpoint_sha256", {})
    for fold in folds:
        path = model_folder.path / f"fold_{fold}" / checkpoint
        if not path.is_file() or (fold in written and file_sha256(path) != written[fold]):
            raise RecalibrationInputError(f"{predictions_file} was predicted with fold {fold}'s {checkpoint} of another "
                                          f"model ({settings.get('model_folder')}), not {model_folder.path}'s")
    return folds, checkpoint


def _source_survival_models(model_folder: Any) -> dict[str, dict]:
    """The source folder's survival models (beta, baseline), as its predictor fits them."""
    if not any(e["type"] == "survival" for e in model_folder.plans["endpoints"]):
        return {}
    from glmil_auto.inference.predictor import GLMILPredictor

    return GLMILPredictor(model_folder.path, model_folder.folds, model_folder.checkpoint_name, device="cpu",
                          use_tta=False, record=False).survival_models


def recalibrate(model: str | Path, predictions_file: str | Path, clinical_file: str | Path, output: str | Path,
                method: str = "auto", per_centre: bool = False, centre_column: str | None = None,
                centre: str | None = None, overwrite: bool = False, command_line: Sequence[str] | None = None
                ) -> dict[str, Any]:
    """Fit the update and write the new model folder (see the module docstring); returns the record."""
    source, out = Path(model), Path(output)
    if method not in METHODS:
        raise ValueError(f"--method must be one of {list(METHODS)}, got {method!r}")
    folder = open_model_folder(source)
    folds, checkpoint = prediction_folds(Path(predictions_file), folder)
    folder = open_model_folder(source, folds, checkpoint)
    if (source / UPDATE_FILE).is_file():
        raise FileExistsError(f"{source} is itself an updated model folder ({UPDATE_FILE}); update the original one")
    check_output(source, out, overwrite)
    spec = folder.spec
    binary = [e["name"] for e in folder.plans["endpoints"] if e["type"] == "binary"]
    survival = [e["name"] for e in folder.plans["endpoints"] if e["type"] == "survival"]
    predictions = read_labelled_predictions(Path(predictions_file), spec, binary, survival)
    clinical = read_clinical_table(clinical_file, spec, require_endpoints=True)
    cases = joined_cases(predictions, clinical, Path(predictions_file), Path(clinical_file))
    groups: dict[str, list[str]] = {ALL_CENTRES: cases}
    column = None
    if per_centre:
        column = centre_column or spec.group_column
        if not column or column not in clinical:
            raise RecalibrationInputError(f"{clinical_file}: --per-centre needs the centre column "
                                          f"{column!r} (--centre-column, or dataset.json's group_column)")
        labels = clinical.loc[cases, column]
        groups = {str(label): [c for c, v in labels.items() if str(v) == str(label)]
                  for label in sorted(labels.dropna().astype(str).unique())}
    survival_models = _source_survival_models(folder)
    centres = {label: fit_centre_update(members, predictions, clinical, spec, survival_models, binary, survival, method)
               for label, members in groups.items()}
    record = {
        "format": UPDATE_FORMAT, "version": UPDATE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": list(command_line) if command_line else None,
        "source_model_folder": str(source.resolve()),
        "source_checkpoints_sha256": {f: file_sha256(folder.checkpoint(f)) for f in folder.folds},
        "checkpoint": folder.checkpoint_name,
        "folds": list(folder.folds),
        "predictions_file": str(Path(predictions_file).resolve()),
        "predictions_sha256": file_sha256(predictions_file),
        "clinical_file": str(Path(clinical_file).resolve()),
        "requested_method": method,
        "centre": centre if not per_centre else None,
        "centre_column": column,
        "centres": centres,
    }
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out)
    write_json_atomic(out / UPDATE_FILE, record)
    read_model_update(out)  # what was written reads back
    return record


def summary_lines(record: dict[str, Any]) -> list[str]:
    """One line per centre and endpoint: cases, events, the method and its coefficients."""
    lines = []
    for label, centre in record["centres"].items():
        where = f"centre {label}" if label != ALL_CENTRES else (record.get("centre") or "the new centre")
        for name, update in centre["endpoints"].items():
            if update["method"] == "none":
                lines.append(f"{where}, {name}: not updated ({update['reason']})")
                continue
            counts = f"{update['n']} cases, {update['events']} events"
            if update["type"] == "binary" and update["method"] != "isotonic":
                detail = f"intercept {update['intercept']:.3f}, slope {update['slope']:.3f}"
            elif update["type"] == "binary":
                detail = f"{len(update['x'])} steps"
            else:
                detail = f"beta {update['beta']:.3f} (source {update['source_beta']:.3f}), baseline refitted"
            test = update.get("closed_test")
            decided = f"; closed test p = {test['p_value']:.3g}" if test else ""
            lines.append(f"{where}, {name}: {update['method']} ({counts}{decided}): {detail}")
    return lines


def recalibrate_entry(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glmil_recalibrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True, help="the trained model folder (left untouched)")
    parser.add_argument("-i", "--predictions", required=True, help="glmil_predict's predictions.csv of the new centre")
    parser.add_argument("-c", "--clinical", required=True, help="the outcomes of those cases (clinical table CSV)")
    parser.add_argument("-o", "--output", required=True, help="the new, updated model folder")
    parser.add_argument("--method", choices=METHODS, default="auto",
                        help="the step of the updating hierarchy (default auto: by the number of events)")
    parser.add_argument("--per-centre", action="store_true", help="one update per centre of --centre-column")
    parser.add_argument("--centre-column", default=None, help="centre column (default: dataset.json group_column)")
    parser.add_argument("--centre", default=None, help="a name for the new centre, recorded with the update")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        record = recalibrate(args.model, args.predictions, args.clinical, args.output, args.method, args.per_centre,
                             args.centre_column, args.centre, args.overwrite, sys.argv if argv is None else argv)
    except (RecalibrationInputError, DatasetError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    except (ModelFolderError, FileExistsError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    for line in summary_lines(record):
        print(line)
    print(f"Wrote {Path(args.output) / UPDATE_FILE} (predict with glmil_predict_from_modelfolder -m {args.output})")
    return 0


if __name__ == "__main__":
    sys.exit(recalibrate_entry())

