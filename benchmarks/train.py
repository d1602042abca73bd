"""Is the data loader fast enough for the model? Bags per second for the loader alone, the model
step alone and both together, with 0, 1 and 2 augmentation workers, plus peak memory.

The goal: loader + model together reach at least 90 % of the model-alone rate (the loader hides
behind the training step). Usage:

    python benchmarks/train.py [--dataset 1] [--steps 20] [--workers 0 1 2]

Uses the preprocessed demo cohort when ``make demo`` has run (``glmil_preprocessed``), otherwise
generates and preprocesses a 40-case demo-size cohort in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path


def ensure_data(dataset: str, work: Path) -> str:
    from glmil_auto.paths import DatasetNotFoundError, preprocessed_folder, resolve_dataset_name

    try:
        name = resolve_dataset_name(dataset, [preprocessed_folder()])
        if (preprocessed_folder() / name / "plans" / "Tr").is_dir():
            return name
    except DatasetNotFoundError:
        pass
    from glmil_auto.experiment_planning.device_profile import detect_device_profile
    from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
    from glmil_auto.synthetic import generate_synthetic_dataset

    for variable in ("raw", "preprocessed", "results"):
        os.environ[f"glmil_{variable}"] = str(work / variable)
    generate_synthetic_dataset(work / "raw", n_train=40, n_test=0, size="demo", seed=0, num_processes=2, progress=False)
    plan_and_preprocess(1, num_processes=2, device=detect_device_profile("cpu"), progress=False)
    return "1"


def peak_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="1")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()

    import torch

    from glmil_auto.training.data_augmentation.augmentation import default_num_processes, get_training_transforms, make_augmenter
    from glmil_auto.training.trainers.trainer import GLMILTrainer

    with tempfile.TemporaryDirectory(prefix="glmil_train_bench_") as tmp:
        dataset = ensure_data(args.dataset, Path(tmp))
        trainer = GLMILTrainer(dataset, 0)
        trainer.initialize()
        batch_size = trainer.batch_size_per_rank
        transforms = get_training_transforms(trainer.plans)

        def augmenter(workers: int):
            loader = trainer._loader(trainer.train_cases, batch_size, infinite=True, seed=0)
            return make_augmenter(loader, transforms, workers)

        rows = []
        fixed = next(augmenter(0))
        trainer.train_step(fixed)  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(fixed)
        model_rate = args.steps * batch_size / (time.perf_counter() - start)
        rows.append(("model step alone (one fixed batch)", "-", model_rate, peak_mib()))
        for workers in args.workers:
            source = augmenter(workers)
            next(source)  # start-up of the workers is not part of the rate
            start = time.perf_counter()
            for _ in range(args.steps):
                next(source)
            rows.append(("loader + augmentation alone", workers, args.steps * batch_size / (time.perf_counter() - start),
                         peak_mib()))
            start = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step(next(source))
            rate = args.steps * batch_size / (time.perf_counter() - start)
            rows.append(("loader + model together", workers, rate, peak_mib()))
            stop = getattr(source, "_finish", None)
            if callable(stop):
                stop()

    print(f"\nbatch size {batch_size}, {args.steps} steps per row, torch threads {torch.get_num_threads()}, "
          f"default DA workers here {default_num_processes()}")
    print(f"{'what':<38} {'DA workers':>10} {'bags/s':>8} {'of model':>9} {'peak MiB':>9}")
    for what, workers, rate, peak in rows:
        print(f"{what:<38} {workers!s:>10} {rate:>8.2f} {rate / model_rate:>8.0%} {peak:>9.0f}")


if __name__ == "__main__":
    main()
