"""``glmil_evaluate_predictions -d DATASET -i PREDICTIONS_CSV [-s Ts|Tr] [--n_bootstrap N] [--seed S] [-o OUT_JSON]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glmil_auto.dataset import layout

PROG = "glmil_evaluate_predictions"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate a predictions.csv against the outcomes in the raw dataset's clinical table: "
        "AUC per binary endpoint, Harrell's C per survival endpoint, 95 % bootstrap CIs and, for the "
        "synthetic cohort, the truth ceiling.",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset id (1) or name (Dataset001_SynthBrainMets)")
    p.add_argument("-i", "--input", required=True, type=Path, help="the predictions.csv to evaluate")
    p.add_argument("-s", "--split", choices=layout.SPLITS, default=layout.TEST,
                   help="clinical table holding the outcomes: clinicalTs.csv or clinicalTr.csv (default: %(default)s)")
    p.add_argument("--n_bootstrap", type=int, default=1000, help="bootstrap resamples for the CI (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="JSON to write (default: evaluation.json next to the predictions)")
    return p


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def evaluate_predictions_entry(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.n_bootstrap < 0:
        return _fail("--n_bootstrap must be >= 0")

    from glmil_auto.dataset.clinical_table import read_clinical_table
    from glmil_auto.dataset.problems import DatasetError
    from glmil_auto.dataset.raw_dataset import RawDataset
    from glmil_auto.evaluation.prediction_metrics import (
        PredictionEvaluationError,
        evaluate_predictions,
        format_result,
        read_predictions,
        result_to_json,
        truth_for_dataset,
    )
    from glmil_auto.paths import DatasetNotFoundError
    from glmil_auto.utilities.atomic_files import write_json_atomic

    try:
        dataset = RawDataset.from_identifier(args.dataset)
    except (DatasetNotFoundError, DatasetError) as exc:
        return _fail(str(exc))
    clinical = layout.clinical_file(dataset.folder, args.split)
    try:
        # outcomes only: the table is not checked against the images (evaluation needs none)
        table = read_clinical_table(clinical, dataset.spec, expected_cases=None, require_endpoints=False)
    except DatasetError as exc:
        return _fail(f"{clinical}: {exc}")
    try:
        predictions = read_predictions(args.input)
        truth_file, truth = truth_for_dataset(dataset.folder)
        result = evaluate_predictions(predictions, table, dataset.spec, truth=truth,
                                      n_bootstrap=args.n_bootstrap, seed=args.seed)
    except PredictionEvaluationError as exc:
        message = str(exc)
        return _fail(message if str(args.input) in message else f"{args.input}: {message}")
    except (ValueError, FileNotFoundError) as exc:  # an unreadable truth file
        return _fail(str(exc))

    output = args.output if args.output is not None else args.input.parent / "evaluation.json"
    document = {
        "dataset": dataset.name,
        "split": args.split,
        "predictions": str(args.input.resolve()),
        "clinical_table": str(clinical.resolve()),
        "truth_file": None if truth_file is None else str(truth_file.resolve()),
        **result_to_json(result),
    }
    write_json_atomic(output, document)
    print(f"{dataset.name} {args.split}: {args.input}")
    print(format_result(result))
    if truth is None:
        print("(no truth file: the truth ceiling exists only for the synthetic cohort)")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(evaluate_predictions_entry())
