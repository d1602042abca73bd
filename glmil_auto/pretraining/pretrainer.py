"""``GLMILPretrainer``: self-supervised pretraining of both image encoders (``glmil_pretrain``).

The encoders are those of the network the plans build (``build_network(plans)``), so their
weights load into fine-tuning key for key. Output::

    <glmil_results>/<Dataset>/pretrained/<run>__<plans>/
        checkpoint_final.pt     the encoders + architecture block + what it saw + settings
        checkpoint_latest.pt    the same + every training state (``--c`` resumes from it)
        pretraining_plan.json   the settings (plan_pretraining.py)
        pretraining_log.json    loss per epoch and branch
        progress.png            the same as a plot
        debug.json              cases per dataset and split, device, parameters

Methods (``plan_pretraining.METHODS``):

- ``contrastive``: two views of each of G volumes and L lesions (``views.py``); each encoder's
  image features (before the lesion burden / descriptors, which are the same in both views and
  would let the loss match views without the image) go through a projection head into SimCLR's
  NT-Xent loss, negatives from the batch;
- ``masked``: blocks of one view are hidden (``masking.py``); each encoder's stage maps go through
  a light decoder that must paint them in (loss on hidden voxels only).

Exact resuming: an epoch's batches come from a loader seeded by ``(seed, epoch)``, its dropout and
masks from torch generators seeded the same way, and ``checkpoint_latest.pt`` (written after every
epoch) holds the weights, heads, optimiser, scheduler and log, so ``--c`` continues exactly.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from glmil_auto.experiment_planning.plans_io import plans_hash
from glmil_auto.model import build_network
from glmil_auto.preprocessing.foci_channel import global_input_channels
from glmil_auto.pretraining.heads import ProjectionHead, ReconstructionDecoder
from glmil_auto.pretraining.losses import masked_reconstruction_loss, nt_xent_loss
from glmil_auto.pretraining.masking import block_mask, hide
from glmil_auto.pretraining.plan_pretraining import learning_rate_factor
from glmil_auto.model.pretrained_weights import (
    CHECKPOINT_FORMAT, CHECKPOINT_VERSION, architecture_block, architecture_sha256, encoder_state,
)
from glmil_auto.pretraining.pretraining_data import PretrainingCase, PretrainingLoader, seen_record
from glmil_auto.pretraining.pretraining_progress import plot_pretraining_progress
from glmil_auto.pretraining.views import OneView, TwoViews, view_transforms
from glmil_auto.training.data_augmentation.augmentation import make_augmenter, shutdown_augmenter
from glmil_auto.training.trainers.checkpointing import load_checkpoint, save_checkpoint
from glmil_auto.utilities.atomic_files import write_json_atomic
from glmil_auto.utilities.mixed_precision import autocast, needs_grad_scaler

logger = logging.getLogger(__name__)
BRANCHES = ("global", "instances")


class GLMILPretrainer:
    seed = 12345
    num_augmentation_workers: int | None = None  # None: glmil_n_proc_DA or the default (as training)

    def __init__(self, plans: dict[str, Any], plans_name: str, dataset_name: str, cases: list[PretrainingCase],
                 settings: dict[str, Any], output_folder: Path, device: str | torch.device = "cpu",
                 run_name: str | None = None, fold: int | None = None):
        self.plans, self.plans_name, self.dataset_name = plans, plans_name, dataset_name
        self.cases, self.settings = cases, settings
        self.method = settings["method"]
        self.output_folder = Path(output_folder)
        self.device = torch.device(device)
        self.run_name = run_name or self.output_folder.name.split("__")[0]
        self.fold = fold  # the strict setting: only this fold's training cases of the target
        self.current_epoch = 0
        self.log: list[dict[str, Any]] = []
        self.seen = seen_record(cases)
        self.total_steps = settings["num_epochs"] * settings["iterations_per_epoch"]
        self.was_initialized = False

    # ------------------------------------------------------------------ setup
    def initialize(self) -> None:
        torch.manual_seed(self.seed)
        network = build_network(self.plans, mode="full")
        self.global_encoder, self.instance_encoder = network.global_encoder, network.instance_encoder
        self.encoders = nn.ModuleDict({"global_encoder": self.global_encoder, "instance_encoder": self.instance_encoder})
        self.heads = self._make_heads()
        self.modules = nn.ModuleDict({"encoders": self.encoders, "heads": self.heads}).to(self.device)
        s = self.settings
        self.optimizer = torch.optim.AdamW(self.modules.parameters(), lr=s["initial_lr"], weight_decay=s["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate_factor(step, self.total_steps, s["warmup_fraction"]))
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(self.device))
        self.transforms = (TwoViews if self.method == "contrastive" else OneView)(view_transforms(self.plans))
        pre = self.plans["preprocessing"]
        channels = int(self.plans["num_input_channels"])  # the image channels + the lesion mask
        self.global_shape = (global_input_channels(self.plans), *pre["global"]["input_shape"])
        self.instance_shape = (len(pre["local"]["scales"]), channels, *pre["local"]["patch_size"])
        self.was_initialized = True

    def _make_heads(self) -> nn.ModuleDict:
        s = self.settings
        if self.method == "contrastive":
            return nn.ModuleDict({b: ProjectionHead(self._representation_width(b), s["projection_hidden_dim"],
                                                    s["projection_dim"]) for b in BRANCHES})
        # what is painted in: every channel but the mask (the global volume's small-foci channel too)
        painted = {"global": global_input_channels(self.plans) - 1, "instances": int(self.plans["num_input_channels"]) - 1}
        decoders = {}
        for branch, encoder in (("global", self.global_encoder), ("instances", self.instance_encoder)):
            inner = getattr(encoder, "encoder", None)
            if inner is None or not hasattr(inner, "features_per_stage"):
                raise ValueError(f"the masked method needs the {branch} encoder to expose its ResidualEncoder3d as "
                                 f"`.encoder` ({type(encoder).__name__} does not); use --method contrastive")
            decoders[branch] = ReconstructionDecoder(list(inner.features_per_stage), painted[branch])
        return nn.ModuleDict(decoders)

    def _representation_width(self, branch: str) -> int:
        """Width of what the contrastive loss reads (:meth:`_representation`), from a meta-device pass."""
        pre = self.plans["preprocessing"]
        channels = int(self.plans["num_input_channels"])
        if branch == "global":
            probe = torch.zeros((1, global_input_channels(self.plans), *pre["global"]["input_shape"]), device="meta")
        else:
            probe = torch.zeros((1, 1, len(pre["local"]["scales"]), channels, *pre["local"]["patch_size"]), device="meta")
        encoder = self.global_encoder if branch == "global" else self.instance_encoder
        meta = copy.deepcopy(encoder).to("meta")
        return int(self._representation(branch, meta, probe, torch.zeros((1, 1, 5), device="meta"),
                                        torch.ones((1, 1), dtype=torch.bool, device="meta")).shape[-1])

    @staticmethod
    def _representation(branch: str, encoder: nn.Module, inputs: torch.Tensor, descriptors: torch.Tensor | None = None,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
        """What the contrastive loss compares: the encoders' image features before the inputs that are
        identical in both views join them (the lesion burden of a volume, the descriptors of a
        lesion: with them, views could be matched without looking at the image). An encoder class
        without ``pooled_features`` / ``patch_summary`` is compared on its embedding."""
        if branch == "global":
            pooled = getattr(encoder, "pooled_features", None)
            return pooled(inputs) if callable(pooled) else encoder(inputs)
        summary = getattr(encoder, "patch_summary", None)
        if callable(summary):
            return summary(inputs[0] if inputs.is_meta else inputs[mask])
        return encoder(inputs, descriptors, mask)[0 if inputs.is_meta else mask]

    # ------------------------------------------------------------------ steps
    def _generator(self, epoch: int, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch, step, 0x55]).generate_state(1)[0]))

    def _contrastive_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        temperature = self.settings["temperature"]
        losses = {}
        if batch["global_a"].shape[0] >= 2:
            z = [self.heads["global"](self._representation("global", self.global_encoder, batch[f"global_{v}"]))
                 for v in "ab"]
            losses["global"] = nt_xent_loss(z[0], z[1], temperature)
        mask = batch["instance_mask"]
        if int(mask.sum()) >= 2:
            z = [self.heads["instances"](self._representation("instances", self.instance_encoder, batch[f"instances_{v}"],
                                                              batch["instance_descriptors"], mask)) for v in "ab"]
            losses["instances"] = nt_xent_loss(z[0], z[1], temperature)
        return losses

    def _masked_losses(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        s = self.settings
        losses = {}
        volumes = batch["global"]
        losses["global"] = self._reconstruction(self.global_encoder.encoder, self.heads["global"], volumes,
                                                s["global_block"], generator)
        mask = batch["instance_mask"]
        if bool(mask.any()):
            patches = batch["instances"][mask].flatten(0, 1)  # (L * S, C+1, pz, py, px)
            losses["instances"] = self._reconstruction(self.instance_encoder.encoder, self.heads["instances"], patches,
                                                       s["instance_block"], generator)
        return losses

    def _reconstruction(self, encoder: nn.Module, decoder: nn.Module, volumes: torch.Tensor, block: list[int],
                        generator: torch.Generator) -> torch.Tensor:
        spatial = tuple(volumes.shape[2:])
        hidden = block_mask(volumes.shape[0], spatial, block, self.settings["mask_ratio"], generator).to(volumes.device)
        reconstruction = decoder(encoder(hide(volumes, hidden)), spatial)
        return masked_reconstruction_loss(reconstruction, volumes[:, :-1], hidden)

    def train_step(self, batch: dict[str, Any], epoch: int, step: int) -> dict[str, float]:
        tensors = {k: torch.as_tensor(np.asarray(v)).to(self.device, non_blocking=True)
                   for k, v in batch.items() if k != "case_ids"}
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device):
            losses = (self._contrastive_losses(tensors) if self.method == "contrastive"
                      else self._masked_losses(tensors, self._generator(epoch, step)))
        if not losses:
            raise ValueError("a pretraining batch gave no loss: the cohort needs at least 2 cases")
        loss = sum(losses.values())
        self.grad_scaler.scale(loss).backward()
        self.grad_scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.modules.parameters(), self.settings["gradient_clip_norm"])
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        self.scheduler.step()
        return {"loss": float(loss.detach()), **{f"loss_{k}": float(v.detach()) for k, v in losses.items()}}

    # ------------------------------------------------------------------ loop
    def _augmenter(self, epoch: int):
        s = self.settings
        loader = PretrainingLoader(self.cases, s["global_batch"], s["instance_batch"], self.global_shape,
                                   self.instance_shape, seed=self.seed + 1000 * epoch)
        return make_augmenter(loader, self.transforms, self.num_augmentation_workers)

    def run(self, until_epoch: int | None = None, progress: bool = True) -> Path:
        """Pretrain to the planned number of epochs (or stop after ``until_epoch``, as an interrupted
        run would) and return the final checkpoint's path (the latest one when stopped early)."""
        if not self.was_initialized:
            self.initialize()
        self.output_folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.output_folder / "pretraining_plan.json", self.settings)
        write_json_atomic(self.output_folder / "debug.json", self._debug_info())
        stop = self.settings["num_epochs"] if until_epoch is None else min(until_epoch, self.settings["num_epochs"])
        iterations = self.settings["iterations_per_epoch"]
        while self.current_epoch < stop:
            epoch, started = self.current_epoch, time.perf_counter()
            torch.manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]))
            self.modules.train()
            augmenter = self._augmenter(epoch)
            records = []
            bar = tqdm(range(iterations), desc=f"pretraining epoch {epoch + 1}/{self.settings['num_epochs']}",
                       unit="step", disable=not progress, leave=False)
            try:
                for step in bar:
                    records.append(self.train_step(next(augmenter), epoch, step))
                    bar.set_postfix(loss=f"{records[-1]['loss']:.3f}")
            finally:
                bar.close()
                shutdown_augmenter(augmenter)
            self._end_epoch(epoch, records, time.perf_counter() - started)
        if self.current_epoch < self.settings["num_epochs"]:
            return self.output_folder / "checkpoint_latest.pt"
        final = self.output_folder / "checkpoint_final.pt"
        save_checkpoint(final, self._content(with_state=False))
        logger.info("pretrained encoders written to %s", final)
        return final

    def _end_epoch(self, epoch: int, records: list[dict[str, float]], seconds: float) -> None:
        keys = sorted({k for r in records for k in r})
        entry = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds,
                 "train": {k: float(np.mean([r[k] for r in records if k in r])) for k in keys}}
        self.log.append(entry)
        self.current_epoch = epoch + 1
        logger.info("pretraining epoch %d: %s, %.1f s", epoch,
                    ", ".join(f"{k} {v:.4f}" for k, v in entry["train"].items()), seconds)
        save_checkpoint(self.output_folder / "checkpoint_latest.pt", self._content(with_state=True))
        write_json_atomic(self.output_folder / "pretraining_log.json", self.log)
        plot_pretraining_progress(self.log, self.output_folder / "progress.png", self.method)

    # ------------------------------------------------------------------ checkpoints
    def _content(self, with_state: bool) -> dict[str, Any]:
        content: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "run": self.run_name,
            "encoders": encoder_state(self.encoders),
            "architecture": architecture_block(self.plans), "architecture_sha256": architecture_sha256(self.plans),
            "dataset": self.dataset_name, "plans_name": self.plans_name, "plans_sha256": plans_hash(self.plans),
            "seen": self.seen, "settings": json.loads(json.dumps(self.settings)), "seed": self.seed,
            "epochs_done": self.current_epoch, "fold": self.fold,
        }
        if with_state:
            content["training_state"] = {
                "modules": {k: v.detach().cpu() for k, v in self.modules.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "grad_scaler": self.grad_scaler.state_dict(), "log": json.loads(json.dumps(self.log)),
            }
        return content

    def resume(self) -> bool:
        """``--c``: continue from ``checkpoint_latest.pt``; True when ``checkpoint_final.pt`` exists
        already (nothing left to do). A checkpoint of other settings or cases is refused."""
        if not self.was_initialized:
            self.initialize()
        if (self.output_folder / "checkpoint_final.pt").is_file():
            logger.info("%s is finished (checkpoint_final.pt exists)", self.output_folder)
            return True
        path = self.output_folder / "checkpoint_latest.pt"
        if not path.is_file():
            logger.info("no checkpoint in %s: starting from scratch", self.output_folder)
            return False
        content = load_checkpoint(path, map_location=self.device)
        if content["settings"] != json.loads(json.dumps(self.settings)) or content["seen"] != self.seen:
            raise ValueError(f"{path} was made with other settings or cases than this run; remove the folder or "
                             "run without --c")
        state = content["training_state"]
        self.modules.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.log = state["log"]
        self.current_epoch = int(content["epochs_done"])
        logger.info("resuming pretraining from %s at epoch %d", path, self.current_epoch)
        return False

    def _debug_info(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for c in self.cases:
            counts[f"{c.dataset}/{c.split}"] = counts.get(f"{c.dataset}/{c.split}", 0) + 1
        return {"dataset": self.dataset_name, "plans_name": self.plans_name, "run": self.run_name,
                "device": str(self.device), "seed": self.seed, "cases_per_folder": counts,
                "n_cases": len(self.cases), "n_lesions": self.seen["n_lesions"],
                "total_steps": self.total_steps, "architecture_sha256": architecture_sha256(self.plans),
                "parameters": {"encoders": sum(p.numel() for p in self.encoders.parameters()),
                               "heads": sum(p.numel() for p in self.heads.parameters())}}


def pretrained_folder(results: Path, dataset_name: str, run_name: str, plans_name: str) -> Path:
    """``<glmil_results>/<Dataset>/pretrained/<run>__<plans>``."""
    return Path(results) / dataset_name / "pretrained" / f"{run_name}__{plans_name}"

