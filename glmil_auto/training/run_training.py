"""Python API of ``glmil_train``: one process, or DDP over several (``torchrun`` or ``--num-gpus``).

DDP uses NCCL on GPUs and gloo on the CPU; each rank trains on its share of every batch
(``batch_size / world_size`` bags) and validates its share of the validation cases, which are
gathered on every rank; rank 0 writes checkpoints, logs and predictions.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME
from glmil_auto.training.trainers.trainer import GLMILTrainer
from glmil_auto.training.trainers.trainer_registry import find_trainer


SPLIT_SCHEME_SUFFIX = {"random": "randomSplits", "centre": "centreHeldOut"}


def _device_for(device: str, rank: int) -> torch.device:
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("-device cuda was requested but torch sees no CUDA device")
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def run_training(dataset: str | int, fold: int | str, trainer_name: str = "GLMILTrainer",
                 plans_name: str = DEFAULT_PLANS_NAME, device: str = "cpu", continue_training: bool = False,
                 only_validate: bool = False, validate_best: bool = False, rank: int = 0, world_size: int = 1,
                 overrides: dict[str, Any] | None = None) -> GLMILTrainer:
    """Train (or only validate) one fold in this process; ``overrides`` set trainer attributes."""
    trainer_class = find_trainer(trainer_name)
    if overrides:
        name = trainer_class.__name__
        scheme = overrides.get("split_scheme", trainer_class.split_scheme)
        if scheme != trainer_class.split_scheme:  # another scheme's folds must not share the fold folders
            name = f"{name}_{SPLIT_SCHEME_SUFFIX[scheme]}"
        if overrides.get("pretrained_weights"):  # a fine-tuned model is another model than the one from scratch
            name = f"{name}_{pretrained_suffix(overrides['pretrained_weights'])}"
        trainer_class = type(name, (trainer_class,), dict(overrides))
    trainer = trainer_class(dataset, fold, plans_name, _device_for(device, rank), rank, world_size)
    if only_validate:
        trainer.initialize()
        checkpoint = "checkpoint_best.pt" if validate_best else "checkpoint_final.pt"
        trainer.perform_final_validation(checkpoint)
        return trainer
    if continue_training:
        trainer.resume()
    trainer.run_training()
    if validate_best:  # every rank: the validation is sharded and gathered (rank 0 alone would wait forever)
        trainer.perform_final_validation("checkpoint_best.pt")
    return trainer


def pretrained_suffix(path: str) -> str:
    """``pretrained-<run>`` of a glmil_pretrain checkpoint (its run name), so that the fine-tuned
    folds go to ``<Trainer>_pretrained-<run>__<plans>`` beside the model trained from scratch; the
    per-fold checkpoints of the strict setting (``_fold<K>``) share ``pretrained-<run>_foldwise``."""
    from glmil_auto.dataset.safe_names import unsafe_reason
    from glmil_auto.model.pretrained_weights import read_pretrained

    content = read_pretrained(path)
    run = str(content.get("run") or "unnamed")
    fold = content.get("fold")
    if fold is not None:  # glmil_pretrain --fold K: the five folds' checkpoints make one model folder
        run = run.replace(f"_fold{fold}", "_foldwise")
    return f"pretrained-{run}" if unsafe_reason(run) is None else "pretrained"


def leave_together(trainer: GLMILTrainer) -> None:
    """Before the process group is destroyed: drop the DDP wrapper (its reducer holds the group and
    pending work; the trainer's reference cycles would keep it alive until interpreter shutdown,
    where gloo's threads can abort the process with std::terminate / SIGABRT), then wait for every
    rank (rank 0 still writes files after the last gather)."""
    if isinstance(getattr(trainer, "model", None), torch.nn.parallel.DistributedDataParallel):
        trainer.model = trainer.network
    gc.collect()
    dist.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, kwargs: dict[str, Any]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "nccl" if kwargs["device"] == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        if kwargs["device"] == "cuda":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(levelname)s %(message)s")
        leave_together(run_training(**kwargs, rank=rank, world_size=world_size))
    finally:
        dist.destroy_process_group()


def run_distributed(world_size: int, **kwargs: Any) -> None:
    """Spawn ``world_size`` ranks on this machine (``--num-gpus N``)."""
    mp.spawn(_ddp_worker, args=(world_size, _free_port(), kwargs), nprocs=world_size, join=True)


def run_under_torchrun(**kwargs: Any) -> GLMILTrainer:
    """Join the process group that ``torchrun`` set up through the environment."""
    backend = "nccl" if kwargs["device"] == "cuda" else "gloo"
    dist.init_process_group(backend)
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        if kwargs["device"] == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
        trainer = run_training(**kwargs, rank=rank, world_size=world_size)
        leave_together(trainer)
        return trainer
    finally:
        dist.destroy_process_group()
