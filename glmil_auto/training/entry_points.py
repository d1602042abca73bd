"""``glmil_train DATASET FOLD [-tr TRAINER] [-p PLANS] [--c] [--val] [--val_best] [-device cpu|cuda] [--num-gpus N]``."""

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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    import torch

    from glmil_auto.training.run_training import run_distributed, run_training, run_under_torchrun

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kwargs = dict(dataset=args.dataset, fold=args.fold, trainer_name=args.trainer, plans_name=args.plans,
                  device=device, continue_training=args.continue_training, only_validate=args.only_validate,
                  validate_best=args.val_best, overrides={"deterministic": True} if args.deterministic else None)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        run_under_torchrun(**kwargs)
    elif args.num_gpus > 1:
        run_distributed(args.num_gpus, **kwargs)
    else:
        run_training(**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(train_entry())
