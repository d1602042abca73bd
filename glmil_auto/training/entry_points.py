"""``glmil_train DATASET FOLD [-tr TRAINER] [-p PLANS] [--c] [--val] [--val_best] [-device cpu|cuda] [--num-gpus N]
[-pretrained_weights FILE]``.

Exit status 0 when the fold was trained (or validated); 1 when the data has problems (the message
names the case and the file); 2 when the dataset is not found.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME


def train_entry(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glmil_train", description="Train one fold of a planned, preprocessed dataset.")
    parser.add_argument("dataset", help="dataset id or name")
    parser.add_argument("fold", help="fold 0-4, or 'all' to train on every training case")
    parser.add_argument("-tr", "--trainer", default="GLMILTrainer", help="trainer class (default: %(default)s)")
    parser.add_argument("-p", "--plans", default=DEFAULT_PLANS_NAME, help="plans identifier (default: %(default)s)")
    parser.add_argument("--c", dest="continue_training", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--val", dest="only_validate", action="store_true", help="only run the final validation")
    parser.add_argument("--val_best", action="store_true", help="validate checkpoint_best.pt instead of the final one")
    parser.add_argument("-device", "--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--num-gpus", dest="num_gpus", type=int, default=1,
                        help="DDP processes on this machine (GPUs with NCCL; on the CPU, processes with gloo)")
    parser.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    parser.add_argument("--split", choices=("random", "centre"), default=None,
                        help="folds: 'random' (5 stratified folds, by patient when dataset.json has a patient_column; "
                             "the default) or 'centre' (one fold per centre of group_column left out; results go to "
                             "<Trainer>_centreHeldOut__<plans>)")
    parser.add_argument("-pretrained_weights", "--pretrained_weights", default=None, metavar="FILE",
                        help="start the encoders from a glmil_pretrain checkpoint (checkpoint_final.pt); the folds "
                             "go to <Trainer>_pretrained-<run>__<plans>")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    import torch

    from glmil_auto.training.run_training import run_distributed, run_training, run_under_torchrun

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = dict(dataset=args.dataset, fold=args.fold, trainer_name=args.trainer, plans_name=args.plans,
                  device=device, continue_training=args.continue_training, only_validate=args.only_validate,
                  validate_best=args.val_best, overrides=_overrides(args))
    from glmil_auto.dataset.problems import DatasetError
    from glmil_auto.paths import DatasetNotFoundError

    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            run_under_torchrun(**kwargs)
        elif args.num_gpus > 1:
            run_distributed(args.num_gpus, **kwargs)
        else:
            run_training(**kwargs)
    except DatasetNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:  # bad preprocessed or clinical data: the message names the case and file
        print(f"ERROR: the data has problems:\n{exc}", file=sys.stderr)
        return 1
    return 0


def _overrides(args: argparse.Namespace) -> dict | None:
    overrides = {}
    if args.deterministic:
        overrides["deterministic"] = True
    if args.split is not None:
        overrides["split_scheme"] = args.split
    if args.pretrained_weights is not None:
        overrides["pretrained_weights"] = args.pretrained_weights
    return overrides or None


if __name__ == "__main__":
    sys.exit(train_entry())
