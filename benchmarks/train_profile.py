"""Where does a training step's time go? Seconds per bag of each part of one fold's training on
the plans of a preprocessed dataset: loading + augmentation, the global encoder (forward +
backward), the instance encoder (forward + backward), the whole training step, and the
validation pass of an epoch, plus the projected time of one fold and of five folds.

    python benchmarks/train_profile.py --dataset 10 [--trainer GLMILTrainer] [--plans plans] [--steps 10]

The dataset must be planned and preprocessed (``glmil_plan_and_preprocess -d ID``).
"""

from __future__ import annotations

import argparse
import resource
import time


def _timed(function, repeats: int) -> float:
    function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="10")
    parser.add_argument("--trainer", default="GLMILTrainer")
    parser.add_argument("--fold", default="0")
    parser.add_argument("--plans", default="plans", help="plans name (e.g. one planned with --planner GLMILPlannerNoSmallFoci)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import torch

    from glmil_auto.training.data_augmentation.augmentation import get_training_transforms, make_augmenter
    from glmil_auto.training.trainers.trainer_registry import find_trainer

    trainer = find_trainer(args.trainer)(args.dataset, args.fold, plans_name=args.plans)
    trainer.initialize()
    batch_size = trainer.batch_size_per_rank
    source = make_augmenter(trainer._loader(trainer.train_cases, batch_size, infinite=True, seed=0),
                            get_training_transforms(trainer.plans), 0)
    loading = _timed(lambda: next(source), args.steps)
    batch = next(source)
    inputs, _ = trainer._to_device(batch)
    network = trainer.network
    network.train()
    rows = [("loading + augmentation (in-process)", loading)]
    if network.global_encoder is not None:
        rows.append(("global encoder forward + backward",
                     _timed(lambda: network.global_encoder(inputs["global"]).sum().backward(), args.steps)))
    if network.use_local:
        mask = inputs["instance_mask"].bool()
        rows.append(("instance encoder forward + backward", _timed(
            lambda: network.instance_encoder(inputs["instances"], inputs["instance_descriptors"], mask).sum().backward(),
            args.steps)))
    step = _timed(lambda: trainer.train_step(batch), args.steps)
    rows.append(("whole training step (network, loss, optimiser)", step))
    start = time.perf_counter()
    trainer.validate()
    validation = time.perf_counter() - start
    n_val = len(trainer.val_cases)

    per_epoch = trainer.iterations_per_epoch * (step + loading) + validation  # validation every epoch
    fold_minutes = trainer.num_epochs * per_epoch / 60 + validation / 60
    print(f"\n{args.trainer} on {trainer.dataset_name} ({args.plans}), fold {args.fold}: batch {batch_size}, "
          f"{len(trainer.train_cases)} training / {n_val} validation cases, {trainer.num_epochs} epochs x "
          f"{trainer.iterations_per_epoch} steps, torch threads {torch.get_num_threads()}")
    print(f"instances in the profiled batch: {int(batch['instance_mask'].sum())} real of "
          f"{batch['instance_mask'].size} slots; global input {tuple(batch['global'].shape[1:])}, "
          f"patch {tuple(batch['instances'].shape[2:])}")
    print(f"{'part':<48} {'s/batch':>8} {'s/bag':>8}")
    for what, seconds in rows:
        print(f"{what:<48} {seconds:>8.3f} {seconds / batch_size:>8.4f}")
    print(f"{'validation pass (all validation cases)':<48} {validation:>8.2f} {validation / max(1, n_val):>8.4f}")
    print(f"projected: {per_epoch:.1f} s per epoch, {fold_minutes:.1f} min per fold, {5 * fold_minutes:.0f} min "
          f"for 5 folds; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
