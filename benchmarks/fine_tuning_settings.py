"""How do fine-tuning settings (freezing the pretrained encoders, their learning rate) behave per fold?

    python benchmarks/fine_tuning_settings.py --dataset 10 \
        GLMILTrainer GLMILTrainer_pretrained-contrastive_extra-011 GLMILTrainer_fastEncoders_pretrained-contrastive_extra-011

For every model folder (``<Trainer>[_pretrained-<run>]``, as ``glmil_train`` names it) and fold, from the
fold's ``checkpoint_final.pt`` metadata: the starting point's validation mean (the radiomics + clinical
model alone, which model selection keeps unless an epoch beats it by the selection margin), the best
and the last epoch's validation mean, the last epoch's training loss and the selected epoch. The
last rows average each model's differences against its starting point over the folds: how much the
best epoch gains (what selection can find) and how much the last epoch loses (how far training drifts
when nothing stops it). The pooled out-of-fold and external AUCs of the selected models are
``benchmarks/accuracy.py``'s job; this table says why they move or do not.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np


def fold_row(checkpoint: Path) -> dict[str, Any]:
    """The selection history of one trained fold."""
    from glmil_auto.training.trainers.checkpointing import load_checkpoint

    meta = load_checkpoint(checkpoint)["metadata"]
    debug_file = checkpoint.parent / "debug.json"
    debug = json.loads(debug_file.read_text()) if debug_file.is_file() else {}
    log = meta["log"]
    means = [float(e["validation"].get("mean", math.nan)) for e in log]
    best = int(np.nanargmax(means))
    start = (meta.get("starting_point_validation") or {}).get("mean", math.nan)
    return {"fold": meta["fold"], "start": float(start), "best": means[best], "best_epoch": best,
            "last": means[-1], "last_epoch": len(log) - 1, "last_train_loss": float(log[-1]["train"]["loss"]),
            "selected_epoch": meta.get("selected_epoch"), "trainer": meta["trainer"],
            "encoder_freeze_epochs": debug.get("encoder_freeze_epochs"), "encoder_lr_factor": debug.get("encoder_lr_factor"),
            "pretrained_run": (meta.get("pretrained_weights") or {}).get("run")}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over folds of the best and last epoch against the starting point, and how many folds left it."""
    best = np.array([r["best"] - r["start"] for r in rows])
    last = np.array([r["last"] - r["start"] for r in rows])
    return {"folds": len(rows), "best_minus_start": float(np.mean(best)), "last_minus_start": float(np.mean(last)),
            "worst_last_minus_start": float(np.min(last)),
            "left_starting_point": sum(r["selected_epoch"] is not None for r in rows)}


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| model | fold | starting point | best epoch (validation mean) | last epoch | last training loss | selected |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for model, rows in results.items():
        for r in rows:
            selected = "starting point" if r["selected_epoch"] is None else f"epoch {r['selected_epoch']}"
            lines.append(f"| {model} | {r['fold']} | {r['start']:.4f} | {r['best']:.4f} ({r['best_epoch']}) | "
                         f"{r['last']:.4f} ({r['last_epoch']}) | {r['last_train_loss']:.2f} | {selected} |")
    lines += ["", "| model | folds | best − start (mean) | last − start (mean) | last − start (worst fold) | "
              "folds that left the starting point |", "| --- | --- | --- | --- | --- | --- |"]
    for model, rows in results.items():
        s = summary(rows)
        lines.append(f"| {model} | {s['folds']} | {s['best_minus_start']:+.4f} | {s['last_minus_start']:+.4f} | "
                     f"{s['worst_last_minus_start']:+.4f} | {s['left_starting_point']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model folder names without the plans suffix (<Trainer>[_pretrained-<run>])")
    parser.add_argument("--dataset", default="10")
    parser.add_argument("--folds", nargs="+", default=["0", "1", "2", "3", "4"])
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    from glmil_auto.inference.model_folder import model_folder_for

    results = {}
    for model in args.models:
        folder = model_folder_for(args.dataset, model)
        missing = [f for f in args.folds if not (folder / f"fold_{f}" / "checkpoint_final.pt").is_file()]
        if missing:
            raise SystemExit(f"{folder}: folds {' '.join(missing)} have no checkpoint_final.pt (train them first)")
        results[model] = [fold_row(folder / f"fold_{f}" / "checkpoint_final.pt") for f in args.folds]
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
