"""Does updating with a few labelled cases of a new centre make its probabilities trustworthy?

    python benchmarks/model_updating.py --dataset 10 [--trainer GLMILTrainer] [--predictions CSV]
        [--clinical CSV] [--fractions 0.25 0.5 1.0] [--seeds 20] [--methods intercept logistic auto]
        [--json OUT.json]

The external centre's predictions (``glmil_predict`` of the model folder on ``imagesTs``; by
default those ``benchmarks/accuracy.py`` wrote under ``<glmil_results>/accuracy_<ID>/predictions/``)
and its outcomes (``clinicalTs.csv``). For every seed, a random ``fraction`` of the centre's cases
(stratified per endpoint by outcome) is the labelled sample the update is fitted on
(:func:`glmil_auto.inference.model_updating.fit_binary_update`, what ``glmil_recalibrate`` runs),
and the rest is held back. Calibration (intercept and slope of the logistic recalibration
framework, ICI and E90 of the LOESS curve, Austin & Steyerberg 2019) is measured on the held-back
cases, before and after the update, on the same cases. With 100 % nothing is held back: those rows
are the apparent (in-sample) calibration, marked so, and cannot show what a new patient gets.

The table gives per endpoint, fraction and method the mean and standard deviation over seeds, the
mean paired change of ICI (after - before; negative is better) and in how many seeds ICI improved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

STATISTICS = ("intercept", "slope", "ici", "e90")


def labelled_external_centre(args: argparse.Namespace) -> tuple[pd.DataFrame, list[str]]:
    """Predictions joined with the outcomes, indexed by case; the binary endpoints."""
    from glmil_auto.dataset.dataset_json import load_dataset_json
    from glmil_auto.paths import raw_folder, resolve_dataset_name, results_folder

    name = resolve_dataset_name(args.dataset, [raw_folder()])
    spec = load_dataset_json(raw_folder() / name)
    binary = [e for e, d in spec.endpoints.items() if d.type == "binary"]
    predictions = Path(args.predictions or results_folder() / f"accuracy_{args.dataset}" / "predictions" / args.trainer
                       / "predictions.csv")
    clinical = Path(args.clinical or raw_folder() / name / "clinicalTs.csv")
    frame = pd.read_csv(predictions, dtype={"case_id": str}).set_index("case_id")
    truth = pd.read_csv(clinical, dtype={spec.case_column: str}).set_index(spec.case_column)
    joined = frame[binary].join(truth[binary], rsuffix="_true", how="inner")
    return joined, binary


def calibration_numbers(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from glmil_auto.evaluation.metrics.binary_metrics import calibration_intercept_slope
    from glmil_auto.evaluation.metrics.calibration import calibration_errors

    framework = calibration_intercept_slope(y, p)
    errors = calibration_errors(y, p, n_bootstrap=0)
    return {"intercept": framework["intercept"], "slope": framework["slope"], "ici": errors["ici"]["estimate"],
            "e90": errors["e90"]["estimate"]}


def stratified_sample(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask choosing ``fraction`` of the events and of the non-events."""
    chosen = np.zeros(len(y), dtype=bool)
    for value in (0.0, 1.0):
        members = np.flatnonzero(y == value)
        take = int(round(fraction * len(members)))
        chosen[rng.choice(members, size=take, replace=False)] = True
    return chosen


def run(frame: pd.DataFrame, binary: list[str], fractions: list[float], seeds: int, methods: list[str]
        ) -> list[dict]:
    from glmil_auto.inference.model_updating import apply_binary_update, fit_binary_update

    records = []
    for endpoint in binary:
        known = frame[f"{endpoint}_true"].notna()
        p_all = frame.loc[known, endpoint].to_numpy(dtype=float)
        y_all = frame.loc[known, f"{endpoint}_true"].to_numpy(dtype=float)
        for fraction in fractions:
            for seed in range(seeds if fraction < 1.0 else 1):
                chosen = stratified_sample(y_all, fraction, np.random.default_rng(seed))
                held = ~chosen if fraction < 1.0 else chosen
                before = calibration_numbers(y_all[held], p_all[held])
                for method in methods:
                    update = fit_binary_update(p_all[chosen], y_all[chosen], method)
                    after = calibration_numbers(y_all[held], apply_binary_update(update, p_all[held]))
                    records.append({"endpoint": endpoint, "fraction": fraction, "seed": seed, "method": method,
                                    "chosen_step": update["method"], "n_update": int(chosen.sum()),
                                    "events_update": int(y_all[chosen].sum()), "n_evaluated": int(held.sum()),
                                    "apparent": fraction >= 1.0,
                                    **{f"before_{k}": v for k, v in before.items()},
                                    **{f"after_{k}": v for k, v in after.items()}})
    return records


def summary(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    rows = []
    for (endpoint, fraction, method), group in frame.groupby(["endpoint", "fraction", "method"], sort=False):
        row = {"endpoint": endpoint, "labelled": f"{fraction:.0%}" + (" (apparent)" if fraction >= 1.0 else ""),
               "method": method, "steps": "/".join(f"{s} {n}" for s, n in group["chosen_step"].value_counts().items()),
               "n fit": int(group["n_update"].iloc[0]), "events fit": int(group["events_update"].iloc[0]),
               "n eval": int(group["n_evaluated"].iloc[0]), "seeds": len(group)}
        for statistic in STATISTICS:
            for when in ("before", "after"):
                values = group[f"{when}_{statistic}"]
                row[f"{statistic} {when}"] = f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0:.3f}"
        change = group["after_ici"] - group["before_ici"]
        row["ICI change"] = f"{change.mean():+.3f}"
        row["ICI better"] = f"{int((change < 0).sum())}/{len(group)}"
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="10")
    parser.add_argument("--trainer", default="GLMILTrainer")
    parser.add_argument("--predictions", default=None, help="glmil_predict's predictions.csv of the external centre")
    parser.add_argument("--clinical", default=None, help="its outcomes (default: the raw dataset's clinicalTs.csv)")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.5, 1.0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=["intercept", "logistic", "auto"])
    parser.add_argument("--json", default=None, help="write every seed's numbers here")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    frame, binary = labelled_external_centre(args)
    records = run(frame, binary, args.fractions, args.seeds, args.methods)
    table = summary(records)
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.max_colwidth", 40):
        print(table.to_string(index=False))
    print(f"\n{len(frame)} external cases, {args.seeds} seeds, {time.perf_counter() - start:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"records": records, "summary": table.to_dict("records")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
