"""Does the model learn what the images hold? The accuracy benchmark against the truth ceiling,
the clinical + volumetric baseline, a hand-crafted radiomics peer and the ablations.

    python benchmarks/accuracy.py [--dataset ID] [--trainer T] [--folds 0 1 2 3 4]
                                  [--ablations radiomicsOffset noLesionLabels noFociChannel clinicalOffset globalOnly
                                               localOnly concat clinicalOnly] [--ablation-folds ...]
                                  [--n-train 200 --n-test 150 --centres 3 --size small --seed 0] [--no-lesion-table]
                                  [--pretrained FILE ...] [--pretrained-per-fold PATTERN_WITH_{fold}]
                                  [--doc documentation/accuracy_measured.md]

Without an existing ``--dataset`` it generates the synthetic cohort (two training centres and an
external one by default) into ``glmil_raw``. Then, each stage as its own process (wall time and
peak memory measured per stage): ``glmil_plan_and_preprocess``, ``glmil_train`` for every fold of
the model and of each ablation (trainer ``<T>_<ablation>``), ``glmil_predict`` of the external
centre with each fold ensemble, and in this process the clinical baseline and the radiomics peer.

It prints one table per endpoint and cohort (the training centres' out-of-fold predictions, the
external centre) with rows: ceiling (truth file), the model, its starting point
(``<T>_radiomicsOffset (starting point)``: the folds' fitted radiomics + clinical models alone, from
the predictions' ``<endpoint>_starting_point`` columns), the ablations (by default
``noLesionLabels``, the model trained without the lesion table, and ``noFociChannel``, without the
small-foci channel and descriptor), the clinical baseline (logistic / Cox on the clinical variables + lesion
count + total volume, fitted on the training cases), the radiomics peer (logistic on per-patient
aggregates, and a lesion-level noisy-OR, both on the lesion features preprocessing stored);
each with AUC (binary) or Harrell's C (OS), a bootstrap 95 % CI, the expected AUC under the true
probabilities and the fraction of the baseline -> ceiling gap it closes. Finished trainings and
preprocessed cases are reused (``--retrain`` trains again).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# cheapest first; radiomicsOffset trains the starting point alone (no CNN: the same numbers as the model's own
# "<T>_radiomicsOffset (starting point)" row, which every run shows), noLesionLabels the model trained without
# the lesion table, clinicalOffset the model starting from the clinical model only, noFociChannel the model without
# the small-foci channel and descriptor
ABLATIONS = ("radiomicsOffset", "clinicalOnly", "localOnly", "globalOnly", "concat", "noLesionLabels", "clinicalOffset",
             "noHarmonisation", "noFociChannel")
DEFAULT_ABLATIONS = ("noLesionLabels", "noFociChannel")


# ---------------------------------------------------------------------------------------- stages
class StageTimer:
    """Runs commands as child processes and records wall time and the child's peak RSS."""

    def __init__(self, log_folder: Path, quiet: bool = False):
        self.log_folder = log_folder
        self.log_folder.mkdir(parents=True, exist_ok=True)
        self.quiet = quiet
        self.rows: list[dict[str, Any]] = []

    def run(self, stage: str, command: list[str]) -> None:
        log = self.log_folder / f"{stage.replace(' ', '_').replace('/', '_')}.log"
        if not self.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {stage}: {' '.join(command)}", flush=True)
        started = time.perf_counter()
        with open(log, "w") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        self.rows.append({"stage": stage, "seconds": seconds, "peak_mib": usage.ru_maxrss / 1024})
        if code != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
            raise SystemExit(f"stage '{stage}' failed (exit {code}); log {log}:\n{tail}")

    def record(self, stage: str, seconds: float, peak_mib: float = float("nan")) -> None:
        self.rows.append({"stage": stage, "seconds": seconds, "peak_mib": peak_mib})

    def table(self) -> str:
        lines = ["| stage | wall s | peak MiB (that process) |", "|---|---|---|"]
        for r in self.rows:
            peak = "–" if not np.isfinite(r["peak_mib"]) else f"{r['peak_mib']:.0f}"
            lines.append(f"| {r['stage']} | {r['seconds']:.0f} | {peak} |")
        return "\n".join(lines)


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


# ---------------------------------------------------------------------------------------- data
def ensure_dataset(args: argparse.Namespace, timer: StageTimer) -> Path:
    from glmil_auto.paths import DatasetNotFoundError, raw_folder, resolve_dataset_name

    try:
        return raw_folder() / resolve_dataset_name(args.dataset, [raw_folder()])
    except DatasetNotFoundError:
        pass
    timer.run("generate synthetic cohort", [
        _bin("glmil_generate_synthetic"), "-ntr", str(args.n_train), "-nts", str(args.n_test), "-nc", str(args.centres),
        "-s", str(args.size), "--seed", str(args.seed), "-np", str(args.np), "-d", str(args.dataset),
        "--name", args.name, "--no_progress", *(["--no-lesion-table"] if args.no_lesion_table else [])])
    return raw_folder() / resolve_dataset_name(args.dataset, [raw_folder()])


def trainer_names(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    out = [(args.trainer, list(args.folds))]
    for ablation in args.ablations:
        out.append((f"{args.trainer}_{ablation}", list(args.ablation_folds or args.folds)))
    out += [(name, list(args.folds)) for name in pretrained_trainers(args)]
    return out


def _trainer_and_path(args: argparse.Namespace, entry: str) -> tuple[str, str]:
    """``[TRAINER=]PATH`` -> (trainer, path); without ``TRAINER=`` (nothing before a ``=`` that names a
    class) the ``--trainer``."""
    trainer, separator, path = entry.partition("=")
    return (trainer, path) if separator and trainer.isidentifier() else (args.trainer, entry)


def pretrained_trainers(args: argparse.Namespace) -> dict[str, tuple[str, dict[str, str]]]:
    """The fine-tuned models: results folder name (``<T>_pretrained-<run>``) -> (trainer T, fold -> checkpoint).
    ``--pretrained [T=]FILE`` is one checkpoint for every fold; ``--pretrained-per-fold [T=]PATTERN`` (with
    ``{fold}``) one per fold, each pretrained on that fold's training cases only (the strict setting)."""
    from glmil_auto.training.run_training import pretrained_suffix

    out: dict[str, tuple[str, dict[str, str]]] = {}
    for entry in args.pretrained:
        trainer, path = _trainer_and_path(args, entry)
        out[f"{trainer}_{pretrained_suffix(path)}"] = (trainer, {fold: path for fold in args.folds})
    for entry in args.pretrained_per_fold:
        trainer, pattern = _trainer_and_path(args, entry)
        files = {fold: pattern.format(fold=fold) for fold in args.folds}
        suffixes = {pretrained_suffix(f) for f in files.values()}
        if len(suffixes) != 1:
            raise SystemExit(f"--pretrained-per-fold {pattern}: the checkpoints name different runs {sorted(suffixes)}")
        out[f"{trainer}_{suffixes.pop()}"] = (trainer, files)
    return out


def train_command(args: argparse.Namespace, trainer: str, fold: str) -> list[str]:
    """``glmil_train`` for one fold of a trainer row (a fine-tuned row: its trainer + its checkpoint)."""
    pretrained = pretrained_trainers(args).get(trainer)
    base = [_bin("glmil_train"), str(args.dataset), str(fold), "-device", args.device]
    if pretrained is None:
        return [*base, "-tr", trainer]
    return [*base, "-tr", pretrained[0], "-pretrained_weights", pretrained[1][fold]]


def trained_with_current_plans(checkpoint: Path, dataset: str) -> bool:
    """Whether a finished fold was trained with the dataset's current plans (a re-planned dataset,
    e.g. after a new plans section, trains again instead of reusing a model of the old plans)."""
    from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME, load_plans
    from glmil_auto.paths import preprocessed_folder, resolve_dataset_name
    from glmil_auto.training.trainers.checkpointing import load_checkpoint

    current = load_plans(preprocessed_folder() / resolve_dataset_name(dataset) / f"{DEFAULT_PLANS_NAME}.json")
    same = json.loads(load_checkpoint(checkpoint, map_location="cpu")["plans"]) == current
    if not same:
        print(f"{checkpoint} was trained with other plans than the current ones: training it again", flush=True)
    return same


def train_and_predict(args: argparse.Namespace, raw: Path, timer: StageTimer, work: Path) -> dict[str, Path]:
    """Trains every fold of every trainer (reusing finished folds) and predicts the external centre."""
    from glmil_auto.inference.model_folder import model_folder_for

    predictions = {}
    for trainer, folds in trainer_names(args):
        folder = model_folder_for(args.dataset, trainer)
        for fold in folds:
            checkpoint = folder / f"fold_{fold}" / "checkpoint_final.pt"
            if args.retrain or not checkpoint.is_file() or not trained_with_current_plans(checkpoint, args.dataset):
                timer.run(f"train {trainer} fold {fold}", train_command(args, trainer, fold))
        if (raw / "imagesTs").is_dir():
            out = work / "predictions" / trainer
            shutil.rmtree(out, ignore_errors=True)
            command = [_bin("glmil_predict"), "-d", str(args.dataset), "-tr", trainer, "-i", str(raw / "imagesTs"),
                       "-m", str(raw / "labelsTs"), "-c", str(raw / "clinicalTs.csv"), "-o", str(out), "-f", *folds,
                       "-device", args.device, "--no_progress"]
            if not args.tta:
                command.append("--disable_tta")
            timer.run(f"predict external {trainer} ({len(folds)} folds)", command)
            predictions[trainer] = out / "predictions.csv"
            if trainer == args.trainer and not args.no_harmonise_row:  # ComBat fitted on the new centre's own cases
                out = work / "predictions" / f"{trainer}_harmonise"
                shutil.rmtree(out, ignore_errors=True)
                command = [*command[: command.index("-o") + 1], str(out), *command[command.index("-o") + 2:], "--harmonise"]
                timer.run(f"predict external {trainer} --harmonise", command)
                predictions[f"{trainer} (--harmonise)"] = out / "predictions.csv"
    return predictions


def standardised(scores: pd.Series) -> pd.Series:
    """One fold's survival scores on a common scale (each fold's log-risk scale is arbitrary)."""
    return (scores - scores.mean()) / (scores.std() or 1.0)


START = "_starting_point"  # the starting point's columns beside the model's in the predictions


def out_of_fold(folder: Path, folds: list[str], endpoints: list[dict[str, str]], starting_point: bool = False
                ) -> pd.DataFrame:
    """Out-of-fold validation predictions of the folds, indexed by case; survival log-risks are
    standardised per fold (each fold's scale is arbitrary) so that they pool. ``starting_point``:
    the folds' starting points instead (their ``<endpoint>_starting_point`` columns)."""
    frames = []
    suffix = START if starting_point else ""
    for fold in folds:
        frame = pd.read_csv(folder / f"fold_{fold}" / "validation" / "predictions.csv", dtype={"case_id": str})
        out = pd.DataFrame(index=frame["case_id"])
        for endpoint in endpoints:
            name = endpoint["name"]
            column = name + suffix + ("" if endpoint["type"] == "binary" else "_log_risk")
            if column not in frame:
                continue
            values = frame[column].to_numpy(dtype=float)
            out[name] = standardised(pd.Series(values)).to_numpy() if endpoint["type"] == "survival" else values
        frames.append(out)
    return pd.concat(frames)


# ---------------------------------------------------------------------------------------- peers
def stored_features(context: dict[str, Any], split: str) -> pd.DataFrame:
    """The lesion features preprocessing stored for a split (the peer and the network read the same)."""
    from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names
    from glmil_auto.preprocessing.lesion_features.stored_features import read_stored_lesion_features

    names = lesion_feature_names(context["plans"]["preprocessing"].get("lesion_features"))
    if not names:
        raise SystemExit("the plans store no lesion features: re-run glmil_plan_and_preprocess with this version")
    cases = [str(c) for c in context["cohorts"][split]["table"].index]
    return read_stored_lesion_features(context["preprocessed"] / context["plans_name"] / split, cases, names)


def fit_peers(args: argparse.Namespace, raw: Path, context: dict[str, Any], timer: StageTimer
              ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Clinical baseline and radiomics peer: out-of-fold on the training centres (per fold fit on
    the fold's training cases) and on the external centre (fit on every training case)."""
    from glmil_auto.evaluation import radiomics_peer
    from glmil_auto.evaluation.clinical_models.clinical_baseline import ClinicalBaseline

    endpoints, plans = context["endpoints"], context["plans"]
    features = plans["clinical"]["features"]
    started = time.perf_counter()
    lesions = {split: stored_features(context, split) for split in context["splits_present"]}
    timer.record("radiomics peer: stored lesion features read (Tr + Ts)", time.perf_counter() - started)
    started = time.perf_counter()

    def fit_predict(train: list[str], test: list[str], test_split: str) -> dict[str, pd.DataFrame]:
        tr, te = context["cohorts"]["Tr"], context["cohorts"][test_split]
        targets = tr["targets_of"](train)
        baseline = ClinicalBaseline.fit(features, endpoints, *tr["inputs_of"](train), targets)
        out = {"clinical baseline": pd.DataFrame(baseline.predict(*te["inputs_of"](test)), index=test)}
        peer = radiomics_peer.RadiomicsPeer.fit(lesions["Tr"], train, tr["table"].loc[train], context["spec"],
                                                endpoints, targets, seed=args.seed)
        predicted = peer.predict(lesions[test_split], test, te["table"].loc[test])
        for row, scores in predicted.items():
            out[row] = pd.DataFrame(scores, index=test)
        return out

    oof: dict[str, list[pd.DataFrame]] = {}
    for fold in args.folds:
        split = context["splits"][int(fold)]
        for row, frame in fit_predict(split["train"], split["val"], "Tr").items():
            oof.setdefault(row, []).append(frame)
    internal = {row: pd.concat(frames) for row, frames in oof.items()}
    for row, frame in internal.items():  # pool survival scores as the model's: standardised per fold
        for endpoint in endpoints:
            if endpoint["type"] == "survival" and endpoint["name"] in frame.columns:
                parts = [f[endpoint["name"]] for f in oof[row]]
                frame[endpoint["name"]] = pd.concat([standardised(p) for p in parts])
    external = {}
    if "Ts" in context["cohorts"]:
        all_train = list(context["cohorts"]["Tr"]["table"].index)
        external = fit_predict(all_train, list(context["cohorts"]["Ts"]["table"].index), "Ts")
    timer.record("clinical baseline + radiomics peer fits", time.perf_counter() - started)
    return internal, external


# ---------------------------------------------------------------------------------------- tables
def build_context(args: argparse.Namespace, raw: Path) -> dict[str, Any]:
    from glmil_auto.dataset.clinical_table import read_clinical_table
    from glmil_auto.dataset.dataset_json import load_dataset_json
    from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME, load_plans
    from glmil_auto.model.clinical_encoder import encode_clinical_table
    from glmil_auto.paths import preprocessed_folder
    from glmil_auto.preprocessing.storage import load_properties
    from glmil_auto.training.dataloading.data_loader import case_targets

    pre = preprocessed_folder() / raw.name
    plans = load_plans(pre / f"{DEFAULT_PLANS_NAME}.json")
    spec = load_dataset_json(raw)
    endpoints = plans["endpoints"]
    cohorts = {}
    for split in ("Tr", "Ts"):
        table_file = raw / f"clinical{split}.csv"
        if not table_file.is_file() or not (pre / DEFAULT_PLANS_NAME / split).is_dir():
            continue
        table = read_clinical_table(table_file, spec)

        def inputs_of(cases, table=table, split=split):
            values, categories = encode_clinical_table(table.loc[cases], plans["clinical"]["features"])
            return values, categories, [load_properties(pre / DEFAULT_PLANS_NAME / split, c) for c in cases]

        cohorts[split] = {"table": table, "inputs_of": inputs_of,
                          "targets_of": lambda cases, table=table: case_targets(table.loc[cases], endpoints, spec)}
    splits = json.loads((pre / "splits_final.json").read_text())
    return {"plans": plans, "spec": spec, "endpoints": endpoints, "cohorts": cohorts, "splits": splits,
            "splits_present": list(cohorts), "preprocessed": pre, "plans_name": DEFAULT_PLANS_NAME}


def cohort_tables(args: argparse.Namespace, context: dict[str, Any], cohort: str, cases: list[str],
                  rows: dict[str, pd.DataFrame], truth: dict | None) -> dict[str, pd.DataFrame]:
    from glmil_auto.evaluation.benchmarking.accuracy_table import endpoint_table
    from glmil_auto.evaluation.prediction_metrics import truth_scores

    spec, table = context["spec"], context["cohorts"][cohort]["table"]
    tables = {}
    for endpoint in context["endpoints"]:
        name, kind = endpoint["name"], endpoint["type"]
        scores = {}
        truth_values = None
        if truth is not None:
            truth_values = truth_scores(truth, spec, name, cases)
            scores["ceiling (truth)"] = truth_values
        for row, frame in rows.items():
            if name in frame.columns:
                scores[row] = frame[name].reindex(cases).to_numpy(dtype=float)
        if kind == "binary":
            outcome, time_ = table.loc[cases, name].to_numpy(dtype=float), None
        else:
            declared = spec.endpoints[name]
            outcome = table.loc[cases, declared.event].to_numpy(dtype=float)
            time_ = table.loc[cases, declared.time].to_numpy(dtype=float)
        tables[name] = endpoint_table(name, kind, scores, outcome, time_,
                                      truth_values if kind == "binary" else None, "clinical baseline",
                                      "ceiling (truth)" if truth is not None else None, args.bootstrap, args.seed)
    return tables


def external_rows(predictions: dict[str, Path], endpoints: list[dict[str, str]], main_trainer: str
                  ) -> dict[str, pd.DataFrame]:
    """The external centre's predictions per trainer, and the main trainer's starting point as the
    ``radiomicsOffset`` row (the fold ensemble of the fitted radiomics + clinical models alone)."""
    rows = {}
    for trainer, path in predictions.items():
        frame = pd.read_csv(path, dtype={"case_id": str}).set_index("case_id")
        start = pd.DataFrame(index=frame.index)
        for endpoint in endpoints:
            name = endpoint["name"]
            if endpoint["type"] == "survival":
                frame[name] = frame[f"{name}_risk"]
            column = name + START + ("" if endpoint["type"] == "binary" else "_risk")
            if column in frame:
                start[name] = frame[column]
        rows[trainer] = frame
        if trainer == main_trainer and len(start.columns):
            rows[starting_point_row(trainer)] = start
    return rows


def starting_point_row(trainer: str) -> str:
    return f"{trainer}_radiomicsOffset (starting point)"


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="10", help="dataset id (generated when it does not exist)")
    parser.add_argument("--name", default="SynthAccuracy", help="name of a generated dataset")
    parser.add_argument("--trainer", default="GLMILTrainer")
    parser.add_argument("--folds", nargs="+", default=["0", "1", "2", "3", "4"])
    parser.add_argument("--ablations", nargs="*", default=list(DEFAULT_ABLATIONS), choices=ABLATIONS)
    parser.add_argument("--ablation-folds", nargs="+", default=None, help="folds of the ablations (default: --folds)")
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=150)
    parser.add_argument("--centres", type=int, default=3, help="including the external one")
    parser.add_argument("--size", default="small", help="synthetic size preset or spacing factor")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained", nargs="*", default=[], metavar="[TRAINER=]FILE",
                        help="also fine-tune every fold from these glmil_pretrain checkpoints, with --trainer or the "
                             "TRAINER named (rows <TRAINER>_pretrained-<run>; transductive: the checkpoint may have "
                             "seen validation and external images, never an outcome)")
    parser.add_argument("--pretrained-per-fold", nargs="*", default=[], metavar="[TRAINER=]PATTERN",
                        help="checkpoints with {fold} in the path, each pretrained on that fold's training cases "
                             "only (glmil_pretrain --fold K): the strict setting")
    parser.add_argument("--no-lesion-table", action="store_true",
                        help="generate the cohort without its lesion table (lesionsTr.csv / lesionsTs.csv)")
    parser.add_argument("--np", type=int, default=2, help="processes for generation and preprocessing")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--tta", action="store_true", help="mirror test-time augmentation at prediction")
    parser.add_argument("--no-harmonise-row", action="store_true",
                        help="skip the external prediction with glmil_predict --harmonise (ComBat on the new centre)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--retrain", action="store_true", help="train again even where checkpoint_final.pt exists")
    parser.add_argument("--work", default=None, help="folder for logs and predictions (default: glmil_results/accuracy_<ID>)")
    parser.add_argument("--doc", default=None, help="also write the tables as Markdown to this file")
    parser.add_argument("--json", default=None, help="also write every number as JSON to this file")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from glmil_auto.evaluation.benchmarking.accuracy_table import format_table
    from glmil_auto.evaluation.prediction_metrics import truth_for_dataset
    from glmil_auto.inference.model_folder import model_folder_for
    from glmil_auto.paths import results_folder

    started = time.perf_counter()
    work = Path(args.work) if args.work else results_folder() / f"accuracy_{args.dataset}"
    timer = StageTimer(work / "logs", args.quiet)
    raw = ensure_dataset(args, timer)
    timer.run("plan and preprocess", [_bin("glmil_plan_and_preprocess"), "-d", str(args.dataset), "-np", str(args.np)])
    predictions = train_and_predict(args, raw, timer, work)
    context = build_context(args, raw)
    _, truth = truth_for_dataset(raw)
    peers_internal, peers_external = fit_peers(args, raw, context, timer)

    results: dict[str, Any] = {"tables": {}, "stages": timer.rows}
    internal_rows = {}
    for trainer, folds in trainer_names(args):
        if set(folds) == set(args.folds):  # pooled out-of-fold rows only over the same cases
            internal_rows[trainer] = out_of_fold(model_folder_for(args.dataset, trainer), folds, context["endpoints"])
            if trainer == args.trainer:
                start = out_of_fold(model_folder_for(args.dataset, trainer), folds, context["endpoints"], True)
                if len(start.columns):
                    internal_rows[starting_point_row(trainer)] = start
    internal_rows.update(peers_internal)
    oof_cases = sorted(set().union(*(context["splits"][int(f)]["val"] for f in args.folds)))
    cohorts = [("training centres, out-of-fold", "Tr", oof_cases, internal_rows)]
    if "Ts" in context["cohorts"]:
        external = {**external_rows(predictions, context["endpoints"], args.trainer), **peers_external}
        cohorts.append(("external centre", "Ts", list(context["cohorts"]["Ts"]["table"].index), external))
    text = []
    for title, split, cases, rows in cohorts:
        for endpoint, table in cohort_tables(args, context, split, cases, rows, truth).items():
            results["tables"][f"{split}/{endpoint}"] = table.to_dict(orient="records")
            text.append(f"### {endpoint}: {title}\n\n{format_table(table)}\n")
    total = time.perf_counter() - started
    header = (f"Dataset {raw.name}: {len(context['cohorts']['Tr']['table'])} training cases"
              + (f", {len(context['cohorts']['Ts']['table'])} external" if "Ts" in context["cohorts"] else "")
              + f"; trainer {args.trainer}, folds {' '.join(args.folds)}; ablations {', '.join(args.ablations) or 'none'}"
              + (f" (folds {' '.join(args.ablation_folds)})" if args.ablation_folds else "")
              + f"; {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; total {total / 60:.1f} min")
    report = "\n".join([header, "", *text, "### Stages", "", timer.table(), ""])
    print("\n" + report)
    results.update(header=header, total_seconds=total, command=" ".join(["python benchmarks/accuracy.py", *(argv or sys.argv[1:])]))
    if args.doc:
        Path(args.doc).write_text(f"# Accuracy benchmark (measured)\n\n`{results['command']}`\n\n{report}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return results


if __name__ == "__main__":
    main()
