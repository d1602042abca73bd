"""``GLMILTrainer``: trains one fold of a planned, preprocessed dataset (``glmil_train ID FOLD``).

Hyperparameters are class attributes (``None`` = take the planner's ``trainer_defaults``), so a
variant is a small subclass (``variants.py``) found by name with ``-tr``. Output, as nnU-Net:

```
<glmil_results>/<DatasetNNN_Name>/<Trainer>__<plans>/fold_<k>/
    checkpoint_best.pt  checkpoint_latest.pt  checkpoint_final.pt
    training_log.json   progress.png   debug.json
    validation/predictions.csv   validation/summary.json   (final weights; other checkpoints:
    validation/predictions_<checkpoint>.csv, summary_<checkpoint>.json, see validation_files.py)
```

Reproducibility and exact resuming: the training loader and its augmentation workers are seeded
from (seed, epoch, rank) at the start of every epoch, so the batches of an epoch do not depend on
what happened before; the checkpoint holds the network, optimiser, scheduler, loss memories and
every random state, so ``--c`` continues exactly where training stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from glmil_auto.dataset.clinical_table import read_clinical_table
from glmil_auto.dataset.dataset_json import load_dataset_json
from glmil_auto.dataset.problems import DatasetError
from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME, load_plans
from glmil_auto.model import build_network
from glmil_auto.model.clinical_encoder import encode_clinical_table
from glmil_auto.paths import preprocessed_folder, resolve_dataset_name, results_folder
from glmil_auto.training.data_augmentation.augmentation import (
    get_training_transforms, get_validation_transforms, make_augmenter, shutdown_augmenter,
)
from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names
from glmil_auto.preprocessing.storage import load_properties
from glmil_auto.training.dataloading.data_loader import INPUT_KEYS, GLMILDataLoader, case_targets
from glmil_auto.training.dataloading.splits import fold_cases, load_or_create_splits
from glmil_auto.training.logging.progress_plot import plot_progress
from glmil_auto.training.loss.losses import GLMILLoss
from glmil_auto.training.starting_point.feature_harmonisation import CentreTransform, FeatureHarmoniser
from glmil_auto.training.starting_point.radiomics_offset_fit import fit_starting_point
from glmil_auto.training.trainers.checkpointing import load_checkpoint, rng_states, save_checkpoint, set_rng_states
from glmil_auto.training.validation.validation_files import validation_file_names
from glmil_auto.training.validation.validation_metrics import endpoint_metrics, paired_bootstrap_standard_error
from glmil_auto.utilities.atomic_files import atomic_path, write_json_atomic
from glmil_auto.utilities.content_hash import json_sha256
from glmil_auto.utilities.mixed_precision import autocast, mixed_precision_dtype, needs_grad_scaler

logger = logging.getLogger(__name__)
STARTING_POINT_SUFFIX = "_starting_point"  # validation columns of the starting point's predictions


class GLMILTrainer:
    """The default trainer. ``None`` attributes come from ``plans["training"]["trainer_defaults"]``."""

    num_epochs: int | None = None
    iterations_per_epoch: int | None = None
    initial_lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: int | None = None
    gradient_clip_norm: float | None = None
    lr_schedule = "cosine"  # or "poly" (nnU-Net's (1 - epoch / epochs) ** 0.9)
    save_every = 5  # epochs between checkpoint_latest.pt writes
    selection_ema = 0.7  # weight of the previous value in the EMA of the selection metric
    # an epoch replaces the starting point only when its validation EMA beats the starting point's validation
    # mean by this many paired bootstrap standard errors of their difference (_selection_margin)
    selection_margin_se = 1.0
    network_mode = "full"  # or an ablation: global_only, local_only, concat, clinical_only
    use_small_foci = True  # plans with small_foci: the foci channel and descriptor (False: both zero, noFociChannel)
    use_clinical_offset = True  # the starting point the network corrects (model/starting_point.py)
    use_radiomics_offset = True  # the starting point uses the stored radiomic features (False: clinical + volume)
    # the intensity/texture lesion features harmonised across the training centres (feature_harmonisation.py):
    # "combat" (empirical-Bayes ComBat), "centre" (per-centre standardisation) or None; fold_<k>/harmonisation.json
    harmonisation: str | None = "combat"
    # lesion-level outcomes (the raw dataset's lesion table) supervise the lesion logits of any_lesion endpoints
    use_lesion_labels = True
    lesion_loss_weight = 1.0
    select_best_checkpoint = True  # checkpoint_final.pt = the weights of the best validation EMA
    explain_validation = True  # SHAP of the final validation (validation_explanations.py)
    split_scheme = "random"  # or "centre": one fold per centre left out (splits.py; glmil_train --split centre)
    # The offset is a calibrated (unweighted) logistic fit; weighting positives by prevalence would
    # push every correction towards inflated probabilities, so the plans' weights are off by default.
    use_positive_class_weights = False
    class_balanced_endpoint: str | None = None  # oversample this binary endpoint's positives
    seed = 12345
    deterministic = False
    num_augmentation_workers: int | None = None  # None: glmil_n_proc_DA or the default
    # training batches hold at most the planned instance budget (plans["training"]["instance_budget"])
    use_instance_budget = True
    # log the planner's memory estimate against the measured peak of the second training step
    measure_memory = True
    # fine-tuning (glmil_train -pretrained_weights FILE): the encoders start from a glmil_pretrain checkpoint,
    # learn nothing for the first encoder_freeze_epochs epochs (the heads and experts adapt to them first),
    # then train at encoder_lr_factor times the schedule's learning rate. 0.1: over five folds it found as much
    # as 1.0 and drifted less than half as far in the epochs selection rejects (documentation/pretraining.md)
    pretrained_weights: str | None = None
    encoder_freeze_epochs = 2
    encoder_lr_factor = 0.1

    def __init__(self, dataset: str | int, fold: int | str, plans_name: str = DEFAULT_PLANS_NAME,
                 device: str | torch.device = "cpu", rank: int = 0, world_size: int = 1):
        self.dataset_name = resolve_dataset_name(dataset)
        self.fold = str(fold)
        self.plans_name = plans_name
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.preprocessed = preprocessed_folder() / self.dataset_name
        self.plans = load_plans(self.preprocessed / f"{plans_name}.json")
        defaults = self.plans["training"]["trainer_defaults"]
        for name in ("num_epochs", "iterations_per_epoch", "initial_lr", "weight_decay", "warmup_epochs"):
            if getattr(self, name) is None:
                setattr(self, name, defaults[name])
        if self.gradient_clip_norm is None:
            self.gradient_clip_norm = defaults.get("gradient_clip_norm", 1.0)
        self.output_folder = (results_folder() / self.dataset_name / f"{type(self).__name__}__{plans_name}"
                              / f"fold_{self.fold}")
        self.spec = load_dataset_json(self.preprocessed)
        self.endpoints = self.plans["endpoints"]
        self.table = read_clinical_table(self.preprocessed / "clinicalTr.csv", self.spec)
        self.splits = (load_or_create_splits(self.preprocessed, self.table, self.spec, scheme=self.split_scheme)
                       if self.is_main else None)
        if self.world_size > 1:
            holder = [self.splits]
            dist.broadcast_object_list(holder, src=0)
            self.splits = holder[0]
        self.train_cases, self.val_cases = fold_cases(self.splits, self.fold, list(self.table.index))
        self.current_epoch = 0
        self.best_ema: float | None = None
        self.ema: float | None = None
        self.log: list[dict[str, Any]] = []
        self.selected_epoch: int | None = None
        self.best_epoch: int | None = None  # None: the starting point (the clinical offset alone)
        self.starting_point_validation: dict[str, float] | None = None
        self.selection_margin = 0.0  # what an epoch must add to the starting point's validation mean
        self.memory_record: dict[str, Any] | None = None
        self.steps_run = 0  # training steps of this process (the memory is measured on the second)
        self.was_initialized = False
        self.foci_threshold: float | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ setup
    def initialize(self) -> None:
        if self.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        torch.manual_seed(self.seed)
        self.network = build_network(self.plans, mode=self.network_mode, **self.network_overrides()).to(self.device)
        self.pretrained_record: dict[str, Any] | None = None
        if self.pretrained_weights:
            from glmil_auto.model.pretrained_weights import load_pretrained_encoders

            self.pretrained_record = load_pretrained_encoders(self.network, self.pretrained_weights, self.plans)
            strict_fold = self.pretrained_record.get("fold")
            if strict_fold is not None and str(strict_fold) != self.fold:
                raise ValueError(f"{self.pretrained_weights} was pretrained on fold {strict_fold}'s training cases only; "
                                 f"fold {self.fold} needs its own (glmil_pretrain --fold {self.fold})")
            logger.info("encoders loaded from %s (%s, run %s)", self.pretrained_weights,
                        self.pretrained_record["method"], self.pretrained_record["run"])
        values, categories = self._clinical(self.train_cases)
        self.network.clinical_encoder.fit(values, categories)
        self.offset_record: dict[str, Any] | None = None
        folder = self.preprocessed / self.plans_name / "Tr"
        properties = [load_properties(folder, case) for case in self.train_cases]
        self.foci_threshold = self.fit_foci_threshold(properties)
        self.harmoniser = self.fit_harmoniser(properties)
        centres = self.case_centres
        # the starting point sees the harmonised features; this also fills the harmoniser's cache before the
        # augmentation workers are forked
        properties = [self.harmoniser.transform(p, centres.get(c), c) for p, c in zip(properties, self.train_cases)]
        if self.use_clinical_offset:
            targets = case_targets(self.table.loc[self.train_cases], self.endpoints, self.spec)
            section = self.plans["preprocessing"].get("lesion_features")
            self.offset_record = fit_starting_point(
                self.network, values, categories, properties, self.train_cases, targets, self.endpoints,
                lesion_feature_names(section), (section or {}).get("case_features", []),
                radiomics=self.use_radiomics_offset, seed=self.seed)
        self.model: nn.Module = self.network
        if self.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        losses = self.plans["training"]["losses"]
        # the planned size (enough recent risks for the Cox risk sets to hold events; old plans: 256);
        # a memory larger than the training set would only hold stale copies of the same cases
        cox_memory = int(self.plans["training"].get("cox_memory_size", 256))
        positive_weights = (losses["positive_class_weights"] if self.use_positive_class_weights
                            else {name: 1.0 for name in losses["positive_class_weights"]})
        self.loss = GLMILLoss(self.endpoints, losses["endpoint_weights"], positive_weights,
                              losses["load_balancing_weight"], memory_capacity=min(cox_memory, len(self.train_cases)),
                              lesion_loss_weight=self.lesion_loss_weight if self.use_lesion_labels else 0.0
                              ).to(self.device)
        self.optimizer = torch.optim.AdamW(self._parameter_groups(), lr=self.initial_lr, weight_decay=self.weight_decay)
        factors = [self._lr_factor] if self.pretrained_record is None else [self._lr_factor, self._encoder_lr_factor]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factors)
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(self.device))
        self.was_initialized = True

    def network_overrides(self) -> dict[str, Any]:
        """What this trainer changes in the plans' network configuration (kept in the checkpoint, so the
        predictor builds the same network)."""
        return {} if self.use_small_foci or not self.plans["preprocessing"].get("small_foci") else {"use_small_foci": False}

    def fit_foci_threshold(self, properties: list[dict[str, Any]]) -> float | None:
        """The small-foci descriptor's threshold (noise units), from the training cases' decoys, set in
        the network (a buffer: it travels in the checkpoint); None for plans without small foci."""
        section = self.plans["preprocessing"].get("small_foci")
        if not section:
            return None
        from glmil_auto.model.foci_descriptor import FociRecordError, fit_foci_threshold

        try:
            threshold = fit_foci_threshold(properties, self.train_cases, section)
        except FociRecordError as exc:
            raise DatasetError(str(exc)) from exc
        self.network.foci_threshold.fill_(threshold)
        logger.info("small foci: threshold %.2f noise units (%.2g decoys per training case above it allowed)%s",
                    threshold, float(section["false_positives_per_case"]),
                    "" if self.use_small_foci else "; channel and descriptor off (noFociChannel)")
        return threshold

    @property
    def case_centres(self) -> dict[str, Any]:
        """Each case's centre (dataset.json's ``group_column``); empty without one."""
        column = self.spec.group_column
        if not column or column not in self.table:
            return {}
        return {str(case): value for case, value in self.table[column].items()}

    def fit_harmoniser(self, properties: list[dict[str, Any]]) -> FeatureHarmoniser:
        """The fold's harmonisation of the lesion features, fitted on its training cases' lesions
        (``properties``, in ``train_cases`` order), written to ``fold_<k>/harmonisation.json``."""
        section = self.plans["preprocessing"].get("lesion_features")
        names, case_names = lesion_feature_names(section), list((section or {}).get("case_features", []))
        if not self.spec.group_column or self.spec.group_column not in self.table:
            harmoniser = FeatureHarmoniser.identity("dataset.json has no group_column (centre)", names, case_names)
        else:
            centres = self.case_centres
            harmoniser = FeatureHarmoniser.fit(properties, [centres.get(c) for c in self.train_cases], names,
                                               case_names, method=self.harmonisation, case_ids=self.train_cases)
        if harmoniser.is_identity:
            logger.info("lesion features are not harmonised: %s", harmoniser.reason)
        else:
            logger.info("lesion features harmonised (%s) over the training centres %s: %d intensity/texture features",
                        harmoniser.method, harmoniser.training_centres, len(harmoniser.feature_names))
        self._harmonisation_record = harmoniser.to_dict()
        if self.is_main:
            self.output_folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.output_folder / "harmonisation.json", self._harmonisation_record)
        return harmoniser

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """One group; with pretrained encoders two: everything else, then the encoders (their own
        learning-rate factor, :meth:`_encoder_lr_factor`)."""
        if self.pretrained_record is None:
            return [{"params": list(self.network.parameters())}]
        from glmil_auto.model.pretrained_weights import ENCODER_MODULES

        named = list(self.network.named_parameters())
        encoders = [p for n, p in named if n.split(".", 1)[0] in ENCODER_MODULES]
        return [{"params": [p for n, p in named if n.split(".", 1)[0] not in ENCODER_MODULES]}, {"params": encoders}]

    def _encoder_lr_factor(self, epoch: int) -> float:
        """The pretrained encoders' factor: 0 (frozen: AdamW's decoupled weight decay scales with the
        learning rate, so nothing moves) for the first ``encoder_freeze_epochs``, then
        ``encoder_lr_factor`` times the schedule."""
        if epoch < self.encoder_freeze_epochs:
            return 0.0
        return self.encoder_lr_factor * self._lr_factor(epoch)

    def _lr_factor(self, epoch: int) -> float:
        """Linear warm-up, then cosine (or poly) decay to 0 at the last epoch."""
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        progress = (epoch - self.warmup_epochs) / max(1, self.num_epochs - self.warmup_epochs)
        if self.lr_schedule == "poly":
            return (1 - progress) ** 0.9
        return 0.5 * (1 + math.cos(math.pi * progress))

    def _clinical(self, cases: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return encode_clinical_table(self.table.loc[cases], self.plans["clinical"]["features"])

    def _loader(self, cases: list[str], batch_size: int, infinite: bool, seed: int) -> GLMILDataLoader:
        values, categories = self._clinical(cases)
        targets = case_targets(self.table.loc[cases], self.endpoints, self.spec)
        probabilities = None
        if infinite and self.class_balanced_endpoint:
            probabilities = GLMILDataLoader.class_balanced_probabilities(targets, self.class_balanced_endpoint)
        return GLMILDataLoader(self.preprocessed / self.plans_name / "Tr", cases, self.plans, values, categories,
                               targets, batch_size, infinite=infinite, shuffle=infinite, seed=seed,
                               sampling_probabilities=probabilities,
                               max_instances_per_batch=self.max_instances_per_batch(batch_size) if infinite else None,
                               properties_transform=CentreTransform(self.harmoniser, self.case_centres))

    def max_instances_per_batch(self, batch_size: int) -> int | None:
        """This rank's share of the planned instance budget, in instances (the budget counts every
        scale of an instance); ``None`` for plans without one or with ``use_instance_budget = False``."""
        budget = self.plans["training"].get("instance_budget")
        if not self.use_instance_budget or budget is None:
            return None
        per_batch = int(budget) // len(self.plans["preprocessing"]["local"]["scales"])
        return max(1, math.ceil(per_batch * batch_size / self.plans["training"]["batch_size"]))

    @property
    def batch_size_per_rank(self) -> int:
        return max(1, math.ceil(self.plans["training"]["batch_size"] / self.world_size))

    def _epoch_augmenter(self, epoch: int):
        seed = self.seed + 1000 * epoch + 7919 * self.rank
        loader = self._loader(self.train_cases, self.batch_size_per_rank, infinite=True, seed=seed)
        return make_augmenter(loader, get_training_transforms(self.plans), self.num_augmentation_workers)

    def _to_device(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        inputs, targets = {}, {}
        for key, value in batch.items():
            if key == "case_ids":
                continue
            tensor = torch.as_tensor(np.asarray(value)).to(self.device, non_blocking=True)
            (inputs if key in _INPUT_KEYS else targets)[key] = tensor
        return inputs, targets

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.steps_run += 1
        # the second step of the run: the first also allocates one-time CPU kernel caches
        if self.measure_memory and self.memory_record is None and self.steps_run == 2:
            return self._measured_train_step(batch)
        return self._train_step(batch)

    def _measured_train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """A training step with its measured peak memory next to the planner's estimate for the
        plans and for this very batch (logged, and kept in the training log)."""
        from glmil_auto.model.memory_measurement import TrainingMemoryMeter
        from glmil_auto.utilities.peak_memory import cpu_allocation_peak, cuda_allocation_peak

        if self.device.type == "cuda":
            record, peak = cuda_allocation_peak(lambda: self._train_step(batch), self.device)
        else:  # the profiler sees allocations during the step; the weights, the optimiser state of an
            # earlier step and the batch (numpy memory shared with torch) existed before it
            held = sum(t.numel() * t.element_size() for t in self.network.parameters())
            held += sum(t.numel() * t.element_size() for state in self.optimizer.state.values()
                        for t in state.values() if isinstance(t, torch.Tensor))
            held += sum(np.asarray(batch[key]).nbytes for key in _INPUT_KEYS if key in batch)
            record, delta = cpu_allocation_peak(lambda: self._train_step(batch))
            peak = delta + held
        mask = np.asarray(batch["instance_mask"], dtype=bool)
        dtype = mixed_precision_dtype(self.device)
        meter = TrainingMemoryMeter(self.plans, dtype, self.network_mode)
        estimate = meter.estimate(mask.shape[0], int(mask.sum()), mask.shape[1]).total_bytes
        planned = self.plans.get("estimates", {}).get("training_memory_bytes", {}).get("total_bytes")
        self.memory_record = {"device": str(self.device), "bags": int(mask.shape[0]), "instances": int(mask.sum()),
                              "padded_instances_per_bag": int(mask.shape[1]), "measured_peak_bytes": int(peak),
                              "estimated_bytes_for_this_batch": int(estimate), "planned_estimate_bytes": planned,
                              "measured_with": "torch.cuda.max_memory_allocated" if self.device.type == "cuda"
                              else "torch.profiler allocation events + weights, optimiser state and batch"}
        logger.info("memory of a training step: measured peak %.1f MiB, estimate for this batch %.1f MiB "
                    "(%d bags, %d instances); the plans' estimate for a full batch %s", peak / 2**20, estimate / 2**20,
                    mask.shape[0], int(mask.sum()), "n/a" if planned is None else f"{planned / 2**20:.1f} MiB")
        return record

    def _train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        inputs, targets = self._to_device(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device):
            output = self.model(inputs)
        loss, parts = self.loss(output, targets)
        self.grad_scaler.scale(loss).backward()
        self.grad_scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.network.parameters(), self.gradient_clip_norm)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        return {"loss": float(loss.detach()), **parts}

    def run_training(self) -> None:
        if not self.was_initialized:
            self.initialize()
        self.output_folder.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            write_json_atomic(self.output_folder / "debug.json", self._debug_info())
            self.write_model_folder_files()
        if self.current_epoch == 0 and self.best_ema is None:
            self._validate_starting_point()
        while self.current_epoch < self.num_epochs:
            epoch, started = self.current_epoch, time.perf_counter()
            self.network.train()
            augmenter = self._epoch_augmenter(epoch)
            try:
                records = [self.train_step(next(augmenter)) for _ in range(self.iterations_per_epoch)]
            finally:
                shutdown_augmenter(augmenter)
            self.scheduler.step()
            metrics, predictions = self.validate()
            self.selection_margin = self._selection_margin(predictions)
            self._end_epoch(epoch, records, metrics, time.perf_counter() - started)
        best = self.output_folder / "checkpoint_best.pt"
        if self.select_best_checkpoint and best.is_file():
            last_epoch = self.current_epoch
            self.network.load_state_dict(load_checkpoint(best, map_location=self.device)["network"])
            self.selected_epoch = self.best_epoch
            when = ("at the starting point (no epoch beat it by the selection margin)" if self.selected_epoch is None
                    else f"after epoch {self.selected_epoch} of {last_epoch}")
            logger.info("final weights: the best validation EMA (%.4f) %s", self.best_ema, when)
        if self.is_main:
            self.save_checkpoint(self.output_folder / "checkpoint_final.pt")
            (self.output_folder / "checkpoint_latest.pt").unlink(missing_ok=True)
        self.perform_final_validation()

    def _validate_starting_point(self) -> None:
        """Validate the untrained network (= the clinical offset) so that model selection can keep
        it when no epoch does better: the trained model is then never worse than the linear model
        on the validation cases."""
        metrics, predictions = self.validate()
        mean = metrics.get("mean", math.nan)
        if math.isnan(mean):
            return
        self.ema = self.best_ema = mean
        self.starting_point_validation = metrics
        logger.info("starting point (the radiomics + clinical model alone): validation mean %.4f; an epoch must beat "
                    "it by %.1f paired bootstrap standard errors of the difference", mean, self.selection_margin_se)
        if self.is_main:
            self.save_checkpoint(self.output_folder / "checkpoint_best.pt")

    def _selection_margin(self, predictions: pd.DataFrame) -> float:
        """What this epoch's validation mean must exceed the starting point's by to replace it:
        ``selection_margin_se`` paired bootstrap standard errors of the difference between this
        epoch's metrics and the starting point's on the same validation cases (both are in
        ``predictions``; ``validation_metrics.paired_bootstrap_standard_error``). An epoch that
        merely matches the starting point on the validation fold falls below it elsewhere."""
        if not len(predictions) or self.selection_margin_se <= 0:
            return 0.0
        scores, targets = self._scores_and_targets(predictions)
        reference, _ = self._scores_and_targets(predictions, starting_point=True)
        if not reference:
            return 0.0
        error = paired_bootstrap_standard_error(scores, reference, targets, self.endpoints, seed=self.seed)
        return 0.0 if math.isnan(error) else self.selection_margin_se * error

    def _end_epoch(self, epoch: int, records: list[dict[str, float]], metrics: dict[str, float], seconds: float) -> None:
        mean = metrics.get("mean", math.nan)
        if not math.isnan(mean):
            self.ema = mean if self.ema is None else self.selection_ema * self.ema + (1 - self.selection_ema) * mean
        train = {key: float(np.mean([r[key] for r in records])) for key in records[0]}
        entry = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds,
                 "train": train, "validation": metrics, "selection_ema": self.ema,
                 "selection_margin": self.selection_margin}
        if self.memory_record is not None and not any("memory" in e for e in self.log):
            entry["memory"] = self.memory_record
        self.log.append(entry)
        self.current_epoch = epoch + 1
        if not self.is_main:
            return
        logger.info("epoch %d: train loss %.4f, validation mean %.4f (EMA %s), %.1f s", epoch, train["loss"], mean,
                    "n/a" if self.ema is None else f"{self.ema:.4f}", seconds)
        # leaving the starting point needs a margin that noise does not reach; after that, any gain that
        # also keeps that margin over the starting point
        start = (self.starting_point_validation or {}).get("mean")
        required = self.best_ema
        if start is not None and not math.isnan(start):
            required = max(required if required is not None else -math.inf, start + self.selection_margin)
        if self.ema is not None and (required is None or self.ema > required):
            self.best_ema, self.best_epoch = self.ema, epoch
            self.save_checkpoint(self.output_folder / "checkpoint_best.pt")
        if self.current_epoch % self.save_every == 0 and self.current_epoch < self.num_epochs:
            self.save_checkpoint(self.output_folder / "checkpoint_latest.pt")
        write_json_atomic(self.output_folder / "training_log.json", self.log)
        plot_progress(self.log, self.output_folder / "progress.png")

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def predict_cases(self, cases: list[str], explain: bool = False) -> pd.DataFrame:
        """One row per case: probability per binary endpoint, log-risk per survival endpoint. With
        ``explain``, the cases' fusion inputs (for SHAP) are kept in ``self.explanation_inputs``."""
        from glmil_auto.model.shap_explanations import ExplanationInputs, explanation_inputs

        self.network.eval()
        rows, explained = [], []
        if cases:
            loader = self._loader(cases, self.batch_size_per_rank, infinite=False, seed=self.seed)
            transforms = get_validation_transforms(self.plans)
            for batch in loader:
                batch = transforms(**batch)
                inputs, _ = self._to_device(batch)
                with autocast(self.device):
                    output = self.network(inputs)
                    if explain:
                        explained.append(explanation_inputs(self.network, inputs, batch["case_ids"]))
                columns = {n: torch.sigmoid(v).float().cpu().numpy() for n, v in output.logits.items()}
                columns.update({f"{n}_log_risk": v.float().cpu().numpy() for n, v in output.log_risks.items()})
                # the starting point on the same cases: what model selection compares with, and the
                # evaluation's "starting point (radiomics)" row
                start_logits, start_log_risks, _ = self.network.starting_point_outputs(inputs)
                columns.update({f"{n}{STARTING_POINT_SUFFIX}": torch.sigmoid(v).float().cpu().numpy()
                                for n, v in start_logits.items()})
                columns.update({f"{n}{STARTING_POINT_SUFFIX}_log_risk": v.float().cpu().numpy()
                                for n, v in start_log_risks.items()})
                for i, case in enumerate(batch["case_ids"]):
                    rows.append({"case_id": case, **{k: float(v[i]) for k, v in columns.items()}})
        frame = pd.DataFrame(rows)
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, (frame, explained))
            frame = pd.concat([f for f, _ in gathered], ignore_index=True)
            explained = [e for _, parts in gathered for e in parts]
        if explain:
            merged = ExplanationInputs.concatenate(explained) if explained else None
            if merged is not None:  # one entry per case, in case order (ranks may repeat a case)
                first = {case: i for i, case in reversed(list(enumerate(merged.case_ids)))}
                merged = merged.take([first[c] for c in sorted(first)])
            self.explanation_inputs = merged
        return frame.drop_duplicates("case_id").sort_values("case_id").reset_index(drop=True) if len(frame) else frame

    def validate(self, explain: bool = False) -> tuple[dict[str, float], pd.DataFrame]:
        """A full pass over the fold's validation cases (sharded over ranks, gathered everywhere)."""
        shard = self.val_cases[self.rank :: self.world_size]
        predictions = self.predict_cases(shard, explain=explain)
        scores, targets = self._scores_and_targets(predictions)
        return endpoint_metrics(scores, targets, self.endpoints), predictions

    def _scores_and_targets(self, predictions: pd.DataFrame, starting_point: bool = False
                            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Scores per endpoint (the model's, or with ``starting_point`` its starting point's; {} when
        the frame lacks those columns) and the cases' targets."""
        targets = case_targets(self.table.loc[predictions["case_id"]], self.endpoints, self.spec)
        suffix = STARTING_POINT_SUFFIX if starting_point else ""
        columns = {e["name"]: e["name"] + suffix + ("" if e["type"] == "binary" else "_log_risk") for e in self.endpoints}
        if not all(c in predictions for c in columns.values()):
            return {}, targets
        return {name: predictions[column].to_numpy() for name, column in columns.items()}, targets

    def perform_final_validation(self, checkpoint: str | None = None) -> dict[str, float]:
        """Out-of-fold predictions and metrics of the final (or best) weights, in ``validation/``."""
        if checkpoint is not None:
            self.load_checkpoint(self.output_folder / checkpoint, weights_only_network=True)
        metrics, predictions = self.validate(explain=self.explain_validation)
        if self.is_main:
            self.write_model_folder_files()
            folder = self.output_folder / "validation"
            folder.mkdir(parents=True, exist_ok=True)
            table = self.table.loc[predictions["case_id"]]
            truth = {c: table[c].to_numpy() for e in self.endpoints for c in self.spec.endpoints[e["name"]].columns}
            written = predictions.assign(**{f"true_{k}": v for k, v in truth.items()})
            predictions_name, summary_name = validation_file_names(checkpoint)
            with atomic_path(folder / predictions_name) as temporary:
                written.to_csv(temporary, index=False)
            write_json_atomic(folder / summary_name, {"fold": self.fold, "checkpoint": checkpoint or "final",
                                                         "selected_epoch": self.selected_epoch,
                                                         "starting_point_metrics": self.starting_point_validation,
                                                         "selection_margin": self.selection_margin,
                                                         "n_cases": len(predictions), "metrics": metrics})
            if self.explain_validation and getattr(self, "explanation_inputs", None) is not None:
                from glmil_auto.training.validation.validation_explanations import write_validation_explanations

                write_validation_explanations(self.network, self.explanation_inputs, folder, checkpoint,
                                              self.plans["clinical"]["features"], self.endpoints, seed=self.seed)
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: Path) -> None:
        save_checkpoint(path, {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loss": self.loss.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict(),
            "rng": rng_states(),
            "metadata": {
                "trainer": type(self).__name__, "plans_name": self.plans_name, "dataset": self.dataset_name,
                "fold": self.fold, "current_epoch": self.current_epoch, "ema": self.ema, "best_ema": self.best_ema,
                "network_mode": self.network_mode, "network_overrides": self.network_overrides(),
                "log": json.loads(json.dumps(self.log)),
                "selected_epoch": self.selected_epoch, "best_epoch": self.best_epoch,
                "starting_point_validation": json.loads(json.dumps(self.starting_point_validation)),
                "selection_margin": self.selection_margin,
                # the fold's harmonisation.json that these weights were trained with (the predictor checks it)
                "harmonisation_sha256": json_sha256(self._harmonisation_record),
                "pretrained_weights": self.pretrained_record,
            },
            "plans": json.dumps(self.plans),
        })

    def load_checkpoint(self, path: Path, weights_only_network: bool = False) -> None:
        if not self.was_initialized:
            self.initialize()
        content = load_checkpoint(path, map_location=self.device)
        self.network.load_state_dict(content["network"])
        if weights_only_network:
            return
        self.optimizer.load_state_dict(content["optimizer"])
        self.scheduler.load_state_dict(content["scheduler"])
        self.loss.load_state_dict(content["loss"])
        self.grad_scaler.load_state_dict(content["grad_scaler"])
        meta = content["metadata"]
        self.current_epoch, self.ema, self.best_ema = meta["current_epoch"], meta["ema"], meta["best_ema"]
        self.log = meta["log"]
        self.selected_epoch = meta.get("selected_epoch")
        self.best_epoch = meta.get("best_epoch")
        self.starting_point_validation = meta.get("starting_point_validation")
        self.selection_margin = float(meta.get("selection_margin", 0.0))
        set_rng_states(content["rng"])

    def resume(self) -> None:
        """``--c``: continue from checkpoint_final (nothing to do), checkpoint_latest or checkpoint_best."""
        for name in ("checkpoint_final.pt", "checkpoint_latest.pt", "checkpoint_best.pt"):
            path = self.output_folder / name
            if path.is_file():
                self.load_checkpoint(path)
                logger.info("resuming from %s at epoch %d", path, self.current_epoch)
                return
        logger.info("no checkpoint in %s: starting from scratch", self.output_folder)

    def write_model_folder_files(self) -> None:
        """plans.json, dataset.json and dataset_fingerprint.json beside the fold folders (as nnU-Net),
        so that the model folder alone suffices to predict (``glmil_predict_from_modelfolder``)."""
        model_folder = self.output_folder.parent
        write_json_atomic(model_folder / "plans.json", self.plans)
        # the folds this model folder was trained on (glmil_evaluate --cv fits its clinical model per fold)
        write_json_atomic(model_folder / "splits.json", {"scheme": self.split_scheme, "splits": self.splits})
        if self.pretrained_record is not None:  # where the encoders started from
            write_json_atomic(model_folder / "pretrained_weights.json", self.pretrained_record)
        for name in ("dataset.json", "dataset_fingerprint.json"):
            source = self.preprocessed / name
            if source.is_file():
                write_json_atomic(model_folder / name, json.loads(source.read_text()))

    def _debug_info(self) -> dict[str, Any]:
        return {"trainer": type(self).__name__, "dataset": self.dataset_name, "fold": self.fold,
                "plans_name": self.plans_name, "device": str(self.device), "world_size": self.world_size,
                "train_cases": len(self.train_cases), "val_cases": len(self.val_cases),
                "num_epochs": self.num_epochs, "iterations_per_epoch": self.iterations_per_epoch,
                "initial_lr": self.initial_lr, "weight_decay": self.weight_decay, "warmup_epochs": self.warmup_epochs,
                "batch_size": self.plans["training"]["batch_size"], "network_mode": self.network_mode,
                "seed": self.seed, "deterministic": self.deterministic,
                "use_clinical_offset": self.use_clinical_offset, "clinical_offset": self.offset_record,
                "small_foci": {"threshold": self.foci_threshold, "used": self.use_small_foci} if self.foci_threshold is not None else None,
                "harmonisation": self.harmoniser.describe(),
                "select_best_checkpoint": self.select_best_checkpoint,
                "pretrained_weights": self.pretrained_record,
                "encoder_freeze_epochs": self.encoder_freeze_epochs if self.pretrained_record else None,
                "encoder_lr_factor": self.encoder_lr_factor if self.pretrained_record else None,
                "parameters": sum(p.numel() for p in self.network.parameters())}


_INPUT_KEYS = set(INPUT_KEYS)
