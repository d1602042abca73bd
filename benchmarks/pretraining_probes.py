"""Do pretrained encoders hold more of what the images show than randomly initialised ones? Linear
probes on frozen embeddings of a synthetic cohort, against its truth file.

    python benchmarks/pretraining_probes.py --dataset 10 [--plans plans] [--checkpoint NAME=FILE ...]
                                            [--seed 0] [--n-splits 5] [--bootstrap 1000] [--device cpu]
                                            [--json out.json] [--doc out.md]

The network of the preprocessed dataset's plans is built once at random (``torch.manual_seed(seed)``)
and once per ``--checkpoint`` with its encoders from a ``glmil_pretrain`` checkpoint
(``load_pretrained_encoders``; ``NAME=`` is optional, the default name is the checkpoint's folder).
Every case of both splits is embedded (the probe targets are image content, no outcome is used):
each kept lesion by the instance encoder, each volume by the global encoder. Three probes, fitted
out of fold with folds grouped by case (``glmil_auto.evaluation.benchmarking.linear_probes``):

- enhancement heterogeneity of a lesion (the truth's ``heterogeneity``, a float): R² of a ridge
  probe on the lesion embedding;
- necrosis of a lesion (``necrosis``, ring enhancement, a bool): ROC AUC of a logistic probe;
- micro-lesions of a case (``n_micro_lesions``, not in the mask): R² of a ridge probe of
  ``log1p(count)`` on the global embedding.

Truth lesions are matched to the preprocessed lesions as ``benchmarks/feature_ceiling.py`` does:
each truth lesion's centroid (world mm) to the nearest stored lesion centroid, within 1 mm; a lesion
preprocessing did not keep (beyond ``max_instances``) has no instance embedding and is left out.
Each checkpoint is compared with random initialisation on the same folds: the difference of the
scores and its case-level bootstrap 95 % interval. "Pretrained beats random initialisation" means
that interval lies above 0. For reference it also prints the lesion probes on the five instance
descriptors alone (log volume, depth, position), which the instance encoder receives directly:
necrosis follows size, so a random encoder already reaches much of that probe through them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# (probe = the truth field, embedding, kind, metric)
PROBES = (
    ("heterogeneity", "lesion", "regression", "R²"),
    ("necrosis", "lesion", "classification", "AUC"),
    ("n_micro_lesions", "global", "regression", "R² of log1p"),
)
RANDOM = "random init"
MATCH_DISTANCE_MM = 1.0


def parse_checkpoints(values: list[str]) -> dict[str, Path]:
    """``NAME=FILE`` or ``FILE`` (named after its folder) -> {name: path}; names must differ."""
    out: dict[str, Path] = {}
    for value in values:
        name, _, file = value.rpartition("=") if "=" in value else ("", "", value)
        path = Path(file)
        name = name or path.parent.name or path.stem
        if name in out or name == RANDOM:
            raise SystemExit(f"checkpoint name {name!r} is given twice (or is reserved): use NAME=FILE")
        out[name] = path
    return out


def match_truth_lesions(truth_case: dict[str, Any], properties: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The truth lesions of one case matched to the preprocessed lesions (nearest centroid in world
    mm within ``MATCH_DISTANCE_MM``, one to one): a frame of the kept matches (``instance_index``,
    ``heterogeneity``, ``necrosis``) and counts of truth lesions matched, not kept and unmatched."""
    from scipy.spatial import cKDTree

    stored = properties.get("lesions", [])
    truth_lesions = truth_case["lesions"]
    counts = {"truth": len(truth_lesions), "kept": 0, "not_kept": 0, "unmatched": 0}
    rows = []
    if not truth_lesions:
        return pd.DataFrame(rows, columns=["instance_index", "heterogeneity", "necrosis"]), counts
    if not stored:
        counts["unmatched"] = len(truth_lesions)
        return pd.DataFrame(rows, columns=["instance_index", "heterogeneity", "necrosis"]), counts
    tree = cKDTree(np.asarray([lesion["centroid_world_mm"] for lesion in stored], dtype=float))
    distance, index = tree.query(np.asarray([lesion["centroid_world_mm"] for lesion in truth_lesions], dtype=float))
    taken = np.bincount(index[distance <= MATCH_DISTANCE_MM], minlength=len(stored))
    for lesion, d, i in zip(truth_lesions, distance, index):
        if d > MATCH_DISTANCE_MM or taken[i] != 1:  # too far, or two truth lesions on one stored lesion
            counts["unmatched"] += 1
        elif not stored[i].get("kept"):
            counts["not_kept"] += 1
        else:
            counts["kept"] += 1
            rows.append({"instance_index": int(stored[i]["instance_index"]),
                         "heterogeneity": float(lesion["heterogeneity"]), "necrosis": float(bool(lesion["necrosis"]))})
    return pd.DataFrame(rows, columns=["instance_index", "heterogeneity", "necrosis"]), counts


def load_cohort(dataset: str, plans_name: str) -> dict[str, Any]:
    """Plans, the preprocessed split folders and their cases (those of the truth file that were
    preprocessed), the lesion targets by (case, instance) and the micro-lesion counts by case."""
    from glmil_auto.experiment_planning.plans_io import load_plans
    from glmil_auto.paths import preprocessed_folder, raw_folder, resolve_dataset_name
    from glmil_auto.preprocessing.storage import case_paths, load_properties
    from glmil_auto.synthetic.truth import load_truth

    name = resolve_dataset_name(dataset)
    pre = preprocessed_folder() / name
    plans = load_plans(pre / f"{plans_name}.json")
    try:
        truth = load_truth(raw_folder() / name)
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc}: the probes need a synthetic dataset's truth file") from None
    splits, targets, micro = {}, [], {}
    counts = {"truth": 0, "kept": 0, "not_kept": 0, "unmatched": 0}
    for split in ("Tr", "Ts"):
        folder = pre / plans_name / split
        cases = sorted(c for c, record in truth["cases"].items()
                       if record["split"] == split and case_paths(folder, c)["properties"].is_file())
        if not cases:
            continue
        splits[split] = {"folder": folder, "cases": cases}
        for case in cases:
            matched, found = match_truth_lesions(truth["cases"][case], load_properties(folder, case))
            counts = {k: counts[k] + found[k] for k in counts}
            targets.append(matched.assign(case_id=case))
            micro[case] = int(truth["cases"][case]["n_micro_lesions"])
    if not splits:
        raise SystemExit(f"no case of {name}'s truth file is preprocessed under {pre / plans_name}: "
                         f"run glmil_plan_and_preprocess -d {dataset} first")
    return {"name": name, "plans": plans, "plans_name": plans_name, "splits": splits, "lesion_counts": counts,
            "lesion_targets": pd.concat(targets, ignore_index=True), "micro": pd.Series(micro)}


def embed(network: Any, cohort: dict[str, Any], device: str, representation: str = "embedding") -> dict[str, Any]:
    """Lesion and global embeddings of every case of both splits, with the probe targets aligned."""
    from glmil_auto.pretraining.embeddings import global_embeddings, lesion_embeddings

    frames, lesion_x, cases, global_x = [], [], [], []
    for split in cohort["splits"].values():
        frame, x = lesion_embeddings(network, split["folder"], split["cases"], device=device,
                                     representation=representation)
        frames.append(frame)
        lesion_x.append(x)
        ids, g = global_embeddings(network, split["folder"], split["cases"], device=device,
                                   representation=representation)
        cases += ids
        global_x.append(g)
    frame = pd.concat(frames, ignore_index=True)
    x = np.concatenate(lesion_x)
    merged = frame.merge(cohort["lesion_targets"], on=["case_id", "instance_index"], how="left", validate="1:1")
    known = merged["heterogeneity"].notna().to_numpy()
    return {"lesions": merged[known].reset_index(drop=True), "lesion_x": x[known], "cases": cases,
            "global_x": np.concatenate(global_x), "n_lesions_embedded": len(frame)}


def probe_data(embedded: dict[str, Any], cohort: dict[str, Any], probe: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, groups) of one probe."""
    if probe == "n_micro_lesions":
        y = np.log1p(cohort["micro"].reindex(embedded["cases"]).to_numpy(float))
        return embedded["global_x"], y, np.asarray(embedded["cases"])
    lesions = embedded["lesions"]
    return embedded["lesion_x"], lesions[probe].to_numpy(float), lesions["case_id"].to_numpy()


def descriptor_matrix(cohort: dict[str, Any], lesions: pd.DataFrame) -> np.ndarray:
    """The instance descriptors of the probed lesions (what the instance encoder receives as is)."""
    from glmil_auto.preprocessing.storage import load_properties
    from glmil_auto.training.dataloading.bag_collation import instance_descriptors

    by_case = {}
    for split in cohort["splits"].values():
        for case in split["cases"]:
            by_case[case] = instance_descriptors(load_properties(split["folder"], case), case)
    return np.stack([by_case[c][i] for c, i in zip(lesions["case_id"], lesions["instance_index"])])


def _score(value: float, ci: list[float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def format_tables(results: dict[str, Any]) -> str:
    """One Markdown table per checkpoint (random init, the checkpoint, the difference), or the
    random-init scores alone without checkpoints; then the descriptor reference."""
    probes = results["probes"]
    text = []
    names = [n for n in results["networks"] if n != RANDOM]
    if not names:
        text += ["| probe | n (cases) | random init [95 % CI] |", "|---|---|---|"]
        for probe, _, _, metric in PROBES:
            c = results["comparisons"][RANDOM][probe]
            text.append(f"| {probe} ({metric}) | {c['n']} ({c['n_groups']}) | {_score(c['score_a'], c['ci_a'])} |")
    for name in names:
        text += [f"### {name} against random initialisation", "",
                 f"| probe | n (cases) | random init [95 % CI] | {name} [95 % CI] | difference [95 % CI] | "
                 "CI excludes 0? |", "|---|---|---|---|---|---|"]
        for probe, _, _, metric in PROBES:
            c = results["comparisons"][name][probe]
            verdict = ("yes, better" if c["ci_difference"][0] > 0 else "yes, worse") if c["excludes_zero"] else "no"
            text.append(f"| {probe} ({metric}) | {c['n']} ({c['n_groups']}) | {_score(c['score_a'], c['ci_a'])} | "
                        f"{_score(c['score_b'], c['ci_b'])} | {c['difference']:+.3f} [{c['ci_difference'][0]:+.3f}, "
                        f"{c['ci_difference'][1]:+.3f}] | {verdict} |")
        text.append("")
    reference = results["reference"]
    text += ["", "Reference, the five instance descriptors alone: "
             + ", ".join(f"{p} {probes[p]['metric']} {_score(r['score_b'], r['ci_b'])}" for p, r in reference.items())]
    return "\n".join(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="10", help="dataset id or name (preprocessed, with a truth file)")
    parser.add_argument("--plans", default="plans", help="plans name of the preprocessed data")
    parser.add_argument("--checkpoint", nargs="+", action="extend", default=[], metavar="NAME=FILE",
                        help="glmil_pretrain checkpoint(s) to compare with random initialisation")
    parser.add_argument("--seed", type=int, default=0, help="random initialisation, probe folds and bootstrap")
    parser.add_argument("--n-splits", type=int, default=5, help="outer folds of the probes")
    parser.add_argument("--bootstrap", type=int, default=1000, help="case-level bootstrap draws")
    parser.add_argument("--device", default="cpu", help="device of the encoders (cpu, cuda)")
    parser.add_argument("--representation", choices=("embedding", "image_features"), default="embedding",
                        help="what the probes read: the encoders' embeddings (default), or their image features "
                             "before the descriptors / lesion burden join (what contrastive pretraining trains)")
    parser.add_argument("--doc", default=None, help="also write the tables as Markdown to this file")
    parser.add_argument("--json", default=None, help="also write every number as JSON to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from glmil_auto.evaluation.benchmarking.linear_probes import paired_probe_comparison, probe_predictions
    from glmil_auto.pretraining.embeddings import probe_network

    started = time.perf_counter()
    checkpoints = parse_checkpoints(args.checkpoint)
    cohort = load_cohort(args.dataset, args.plans)
    results: dict[str, Any] = {"dataset": cohort["name"], "plans": args.plans, "seed": args.seed,
                               "n_splits": args.n_splits, "bootstrap": args.bootstrap,
                               "lesion_counts": cohort["lesion_counts"], "networks": {}, "comparisons": {},
                               "probes": {p: {"embedding": e, "kind": k, "metric": m} for p, e, k, m in PROBES}}
    predictions: dict[str, dict[str, np.ndarray]] = {}
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, checkpoint in [(RANDOM, None), *checkpoints.items()]:
        t0 = time.perf_counter()
        network, record = probe_network(cohort["plans"], args.seed, checkpoint)
        embedded = embed(network, cohort, args.device, args.representation)
        t1 = time.perf_counter()
        predictions[name] = {}
        for probe, _, kind, _ in PROBES:
            x, y, groups = probe_data(embedded, cohort, probe)
            data[probe] = (y, groups)  # the same for every network: the embedded cases and lesions do not change
            predictions[name][probe] = probe_predictions(x, y, groups, kind, args.n_splits, args.seed)
        results["networks"][name] = {"checkpoint": record, "embed_seconds": t1 - t0,
                                     "probe_seconds": time.perf_counter() - t1,
                                     "n_lesions_embedded": embedded["n_lesions_embedded"],
                                     "n_lesions_probed": len(embedded["lesions"]), "n_cases": len(embedded["cases"])}
        if name == RANDOM:
            descriptors = descriptor_matrix(cohort, embedded["lesions"])
    for name in [RANDOM, *checkpoints]:  # random init against itself: its own scores and intervals
        results["comparisons"][name] = {}
        for probe, _, kind, _ in PROBES:
            y, groups = data[probe]
            results["comparisons"][name][probe] = paired_probe_comparison(
                y, predictions[RANDOM][probe], predictions[name][probe], groups, kind, args.bootstrap, args.seed)
    results["reference"] = {}
    for probe, embedding, kind, _ in PROBES:
        if embedding == "lesion":
            y, groups = data[probe]
            reference = probe_predictions(descriptors, y, groups, kind, args.n_splits, args.seed)
            results["reference"][probe] = paired_probe_comparison(y, predictions[RANDOM][probe], reference, groups,
                                                                  kind, args.bootstrap, args.seed)
    total = time.perf_counter() - started
    counts = cohort["lesion_counts"]
    random_run = results["networks"][RANDOM]
    header = (f"Dataset {cohort['name']} (plans {args.plans}): {random_run['n_cases']} cases (Tr + Ts), "
              f"{random_run['n_lesions_probed']} kept lesions matched to the truth ({counts['truth']} truth lesions: "
              f"{counts['not_kept']} not kept, {counts['unmatched']} unmatched); {args.n_splits}-fold probes grouped "
              f"by case, {args.bootstrap} case-bootstrap draws, seed {args.seed}; probes on the {args.representation}; "
              f"{args.device}, "
              f"{os.cpu_count()} CPU(s); wall time {total:.0f} s")
    times = "; ".join(f"{n}: embedding {r['embed_seconds']:.1f} s, probes {r['probe_seconds']:.1f} s"
                      for n, r in results["networks"].items())
    report = "\n".join([header, "", format_tables(results), "", f"Stages: {times}.", ""])
    print("\n" + report)
    results.update(header=header, total_seconds=total,
                   command=" ".join(["python benchmarks/pretraining_probes.py", *(argv if argv is not None else sys.argv[1:])]))
    if args.doc:
        Path(args.doc).write_text(f"# Pretraining probes (measured)\n\n`{results['command']}`\n\n{report}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return results


if __name__ == "__main__":
    main()
