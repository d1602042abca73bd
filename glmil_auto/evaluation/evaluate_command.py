"""``glmil_evaluate``: the results section of a clinical paper from the predictions.

    glmil_evaluate -d DATASET -i OUT_OF_glmil_predict/predictions.csv [-c clinical.csv] [-o OUT]
                   [--baseline NAME=scores.csv ...] [--by GROUP_COLUMN] [--horizons 12 24] [--strict]
    glmil_evaluate -d DATASET -tr TRAINER [-p PLANS] --cv -o OUT      (the folds' out-of-fold predictions)

Writes ``OUT/metrics.json`` (every number, documentation/evaluation.md), ``OUT/report.html``
(self-contained, plots embedded) and prints a summary; ``OUT`` defaults to ``evaluation/`` beside
the predictions. ``glmil_evaluate_predictions`` is the same command under its old name
(:mod:`glmil_auto.evaluation.entry_points`). Exit status 0 when written, 2 when the
inputs cannot be evaluated (the message says why; nothing is written then).

The model's outputs are checked cell by cell: a probability outside [0, 1], a non-finite risk
score or an empty cell is an error naming the case and the column. Predictions whose case is not
in the clinical table and expected cases without a prediction are left out, printed as warnings
and counted in ``metrics["inputs"]``; ``--strict`` makes them errors.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROG = "glmil_evaluate"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    p.add_argument("-i", "--input", type=Path, default=None, help="predictions.csv written by glmil_predict")
    p.add_argument("-c", "--clinical", type=Path, default=None,
                   help="clinical table with the outcomes (default: the raw dataset's clinicalTs.csv)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output folder (default: evaluation/ beside -i; required with --cv)")
    p.add_argument("--cv", action="store_true", help="evaluate the folds' out-of-fold predictions instead of -i")
    p.add_argument("-tr", "--trainer", default="GLMILTrainer", help="with --cv: trainer (default: %(default)s)")
    p.add_argument("-p", "--plans", default="plans", help="with --cv: plans identifier (default: %(default)s)")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=scores.csv",
                   help="a baseline's scores (columns as predictions.csv); repeatable")
    p.add_argument("--by", default=None, help="also evaluate per value of this clinical column "
                                              "(default: the dataset's group_column; with --cv: the fold)")
    p.add_argument("--horizons", nargs="+", type=float, default=[12.0, 24.0],
                   help="survival horizons, in the unit of the time column (default: %(default)s)")
    p.add_argument("--strict", action="store_true",
                   help="stop (exit 2) when a prediction's case is not in the clinical table or an expected case "
                        "(a clinical case with a known outcome; with --cv: of the evaluated folds' validation cases) "
                        "has no prediction; without it they are reported and left out")
    p.add_argument("--n_bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_progress", action="store_true")
    return p


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def evaluate_entry(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from glmil_auto.dataset.problems import DatasetError
    from glmil_auto.evaluation.prediction_metrics import PredictionEvaluationError
    from glmil_auto.paths import DatasetNotFoundError

    if args.cv == (args.input is not None):
        return _fail("give either -i predictions.csv (a held-out cohort) or --cv (out-of-fold predictions)")
    if args.output is None:
        if args.cv:
            return _fail("--cv needs -o OUTPUT_FOLDER")
        args.output = args.input.parent / "evaluation"
    if args.n_bootstrap < 0:
        return _fail("--n_bootstrap must be >= 0")
    try:
        metrics = run_evaluation(args, [PROG, *argv])
    except (DatasetNotFoundError, DatasetError, PredictionEvaluationError, FileNotFoundError) as exc:
        return _fail(str(exc))
    for line in metrics.get("inputs", {}).get("messages", []):
        print(f"{PROG}: warning: {line}", file=sys.stderr)
    print(format_summary(metrics))
    print(f"wrote {args.output / 'metrics.json'}")
    if metrics.get("report"):
        print(f"report: {metrics['report']}")
    return 0


def run_evaluation(args: argparse.Namespace, command: list[str]) -> dict[str, Any]:
    from tqdm import tqdm

    from glmil_auto.dataset import layout
    from glmil_auto.dataset.clinical_table import read_clinical_table
    from glmil_auto.dataset.raw_dataset import RawDataset
    from glmil_auto.evaluation import evaluation_inputs as inputs
    from glmil_auto.evaluation.cohort_evaluation import cohorts, evaluate_cohort
    from glmil_auto.evaluation.prediction_metrics import PredictionEvaluationError, read_predictions
    from glmil_auto.inference.model_folder import model_folder_for
    from glmil_auto.utilities.atomic_files import write_json_atomic

    dataset = RawDataset.from_identifier(args.dataset)
    spec = dataset.spec
    train_table = read_clinical_table(layout.clinical_file(dataset.folder, "Tr"), spec, expected_cases=None)
    baselines_info: dict[str, str] = {}
    if args.cv:
        model_folder = model_folder_for(args.dataset, args.trainer, args.plans)
        predictions = inputs.cross_validation_predictions(model_folder, spec)
        try:
            predictions = inputs.checked_outputs(predictions, spec)
        except PredictionEvaluationError as exc:
            raise PredictionEvaluationError(f"the out-of-fold predictions of {model_folder}: {exc}") from None
        table, clinical_path = train_table, layout.clinical_file(dataset.folder, "Tr")
        coverage = _coverage(predictions, table, spec, inputs.cross_validation_expected_cases(model_folder, dataset),
                             [], Path(clinical_path), args.strict)
        documents = {}
        groups = predictions["fold"] if args.by is None else None
        baselines = inputs.read_baseline_arguments(args.baseline, spec)
        try:  # fitted per fold on the fold's training cases, scored on its validation cases
            baselines[inputs.CLINICAL_MODEL] = inputs.cross_validation_clinical_baseline(spec, dataset, model_folder,
                                                                                        train_table)
        except (OSError, ValueError, KeyError) as exc:
            baselines_info[inputs.CLINICAL_MODEL] = f"skipped: {exc}"
    else:
        predictions = inputs.model_predictions(read_predictions(args.input), spec, str(args.input))
        clinical_path = args.clinical or layout.clinical_file(dataset.folder, "Ts")
        table = read_clinical_table(clinical_path, spec, expected_cases=None, require_endpoints=False)
        coverage = _coverage(predictions, table, spec, None, inputs.failed_cases(args.input.parent),
                             Path(clinical_path), args.strict)
        model_folder = inputs.model_folder_of(args.input.parent)
        groups = None
        baselines = inputs.read_baseline_arguments(args.baseline, spec)
        documents = inputs.case_documents(args.input.parent, [c for c in table.index.astype(str)
                                                              if c in predictions.index])
        baselines.update(_automatic_baselines(spec, dataset, train_table, table, predictions, documents,
                                              model_folder, baselines_info))
    table = table.set_axis(pd.Index(table.index.astype(str), name=table.index.name), axis=0)
    by = args.by if args.by is not None else (None if args.cv else spec.group_column)
    if by is not None:
        if by not in table.columns:
            raise PredictionEvaluationError(f"--by {by!r}: the clinical table has no such column")
        groups = table[by]
    evaluated = table.index[table.index.isin(predictions.index)]
    if len(evaluated) == 0:
        unmatched = coverage["unmatched_predictions"]
        raise PredictionEvaluationError(f"no case of {clinical_path} has a prediction "
                                        + (f"(none of the {unmatched['count']} predicted case ids is in it; first: "
                                           f"{unmatched['first']})" if unmatched["count"] else "(no prediction rows)"))
    starting_point = inputs.starting_point_baseline(predictions, spec)
    if starting_point is not None:  # what the network started from: it must not score below it
        baselines[inputs.STARTING_POINT] = starting_point
    truth = inputs.truth_baseline(dataset.folder, spec, list(evaluated))
    if truth is not None:  # the synthetic cohort's true risks: what a perfect model would score
        baselines[inputs.TRUTH_CEILING] = truth
    train_survival = {name: (train_table[e.time].to_numpy(dtype=float), train_table[e.event].to_numpy(dtype=float))
                      for name, e in spec.endpoints.items() if e.type == "survival"}
    cutoffs = (inputs.binary_cutoffs(inputs.oof_tables(model_folder), [n for n, e in spec.endpoints.items()
                                                                       if e.type == "binary"])
               if model_folder is not None else {})
    n_groups = len(cohorts(evaluated, groups))
    bar = tqdm(total=len(spec.endpoints) * n_groups, desc="evaluating (bootstrap)", unit="cohort",
               disable=args.no_progress)
    body = evaluate_cohort(predictions, table, spec, baselines, groups, train_survival, cutoffs, args.horizons,
                           args.n_bootstrap, args.seed, progress=bar)
    bar.close()
    metrics = {"dataset": dataset.name, "command": command,
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "mode": "cross-validation (out-of-fold)" if args.cv else "held-out cohort",
               "predictions": str(args.input.resolve()) if args.input else None,
               "clinical_table": str(Path(clinical_path).resolve()),
               "model_folder": None if model_folder is None else str(Path(model_folder).resolve()),
               "group_column": by if by is not None else ("fold" if args.cv else None),
               "horizons": list(args.horizons), "n_bootstrap": args.n_bootstrap, "seed": args.seed,
               "inputs": coverage,
               "baselines": {**{name: "evaluated" for name in baselines}, **baselines_info}, **body,
               "shap": _shap(args, model_folder, documents, list(evaluated), list(spec.endpoints))}
    args.output.mkdir(parents=True, exist_ok=True)
    metrics["report"] = _write_report(metrics, args.output / "report.html")
    write_json_atomic(args.output / "metrics.json", metrics)
    return metrics


def _coverage(predictions: pd.DataFrame, table: pd.DataFrame, spec: Any, expected: list[str] | None,
              failed: list[str], clinical_path: Path, strict: bool) -> dict[str, Any]:
    """``metrics["inputs"]``: unmatched and missing predictions (``evaluation_inputs.input_coverage``)
    with the sentences printed as warnings; with ``strict`` any of them is the error."""
    from glmil_auto.evaluation import evaluation_inputs as inputs
    from glmil_auto.evaluation.prediction_metrics import PredictionEvaluationError, predicted_endpoints

    coverage = inputs.input_coverage(predictions.index, table, spec, predicted_endpoints(predictions, spec),
                                     expected, failed)
    messages = inputs.coverage_messages(coverage, clinical_path.name)
    if strict and messages:
        raise PredictionEvaluationError("--strict: " + "; ".join(messages))
    return {**coverage, "strict": strict, "messages": messages}


def _automatic_baselines(spec, dataset, train_table, table, predictions, documents, model_folder,
                         info: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The clinical model (needs the model's plans, the preprocessed training cases and the
    predicted cases' lesion tables) and the prognostic scores (need ``clinical_scores``)."""
    import json

    from glmil_auto.evaluation import evaluation_inputs as inputs
    from glmil_auto.paths import preprocessed_folder
    from glmil_auto.preprocessing.storage import load_properties

    out: dict[str, pd.DataFrame] = {}
    cases = [c for c in table.index.astype(str) if c in predictions.index]
    eval_properties = inputs.case_properties(documents, cases)
    plans_file = None if model_folder is None else Path(model_folder) / "plans.json"
    if eval_properties is None or plans_file is None or not plans_file.is_file():
        info[inputs.CLINICAL_MODEL] = ("skipped: needs glmil_predict's <case>.json files beside the predictions and "
                                       "the model folder's plans.json")
    else:
        plans = json.loads(plans_file.read_text(encoding="utf-8"))
        folder = preprocessed_folder() / dataset.name / plans["plans_name"] / "Tr"
        try:
            train_cases = [c for c in train_table.index.astype(str)]
            train_properties = [load_properties(folder, c) for c in train_cases]
            eval_table = table.set_axis(pd.Index(table.index.astype(str)), axis=0).loc[cases]
            out[inputs.CLINICAL_MODEL] = inputs.clinical_model_baseline(spec, plans, train_table, train_properties,
                                                                        eval_table, eval_properties)
        except Exception as exc:  # noqa: BLE001 - the model's own metrics do not depend on it
            info[inputs.CLINICAL_MODEL] = f"skipped: {exc}"
    if eval_properties is not None and spec.raw.get("clinical_scores"):
        counts = pd.Series([p.get("n_lesions", np.nan) for p in eval_properties], index=cases, dtype=float)
        eval_table = table.set_axis(pd.Index(table.index.astype(str)), axis=0).loc[cases]
        try:
            out.update(inputs.prognostic_score_baselines(spec, eval_table, counts))
        except ValueError as exc:
            info["prognostic scores"] = f"skipped: {exc}"
    elif not spec.raw.get("clinical_scores"):
        info["prognostic scores"] = "skipped: dataset.json has no clinical_scores block"
    return out


def _shap(args: argparse.Namespace, model_folder: Path | None, documents: dict[str, dict[str, Any]],
          cases: list[str], endpoints: list[str]) -> dict[str, Any]:
    """The evaluated cases' SHAP values (``shap_summary``): {} when none were written. Held-out:
    the ``explanation`` blocks of the already-read ``<case>.json`` documents."""
    from glmil_auto.evaluation.report.shap_summary import cross_validation_explanations, shap_summary

    if args.cv:
        explanations = cross_validation_explanations(model_folder) if model_folder is not None else {}
    else:
        explanations = {c: d["explanation"] for c, d in documents.items() if d.get("explanation")}
    wanted = set(cases)
    return shap_summary({c: e for c, e in explanations.items() if c in wanted}, endpoints)


def _write_report(metrics: dict[str, Any], path: Path) -> str | None:
    try:
        from glmil_auto.evaluation.report.report_html import write_report
    except ImportError:
        return None
    return str(write_report(metrics, path))


def _fmt(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3f}"


def format_summary(metrics: dict[str, Any]) -> str:
    """One line per endpoint and score of the whole cohort: metric [CI] and the test against the model."""
    lines = [f"{metrics['dataset']} ({metrics['mode']})",
             f"{'endpoint':<24} {'score':<27} {'metric':<12} {'value [95 % CI]':<24} p vs model"]
    for name, endpoint in metrics["endpoints"].items():
        entry = endpoint["cohorts"]["all"]
        tests = {c["baseline"]: c.get("p_value") for c in entry["comparisons"]}
        for score, values in entry["scores"].items():
            key, label = ("auc", "AUC") if endpoint["type"] == "binary" else ("harrell", "Harrell's C")
            result = values.get(key) or {}
            point = result.get("auc", result.get("c_index"))
            ci = f"{_fmt(point)} [{_fmt(result.get('ci_low'))}, {_fmt(result.get('ci_high'))}]"
            p = "" if score == "model" else _fmt(tests.get(score))
            lines.append(f"{name:<24} {score:<27} {label:<12} {ci:<24} {p}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(evaluate_entry())
