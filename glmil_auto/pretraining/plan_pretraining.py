"""The pretraining plan: method, batch, schedule and views, from the data and the device.

- **method**: ``contrastive`` unless asked otherwise. The OpenMind benchmark (114k brain MRIs)
  found contrastive pretraining best for classification-like downstream tasks and masked
  reconstruction best for segmentation; outcome prediction is the former.
- **batch**: one step encodes two views, so it holds half the training batch's global volumes and
  half of its instance budget (``plans["training"]``), which the planner sized to the device's
  memory: a pretraining step then fits wherever a training step fits. The contrastive loss draws
  its negatives from the batch: at least 4 volumes and 8 lesions.
- **schedule**: an epoch draws every case's global volume once; the number of steps is the
  device's budget (``STEP_BUDGET``: on a CPU what about 15 minutes allow with the CPU plan's
  encoders, on a GPU the number of steps SimCLR-style pretraining of small 3D CNNs usually runs),
  within ``EPOCH_RANGE`` epochs. AdamW, linear warm-up over the first ``warmup_fraction`` of the
  steps, then cosine decay.
"""

from __future__ import annotations

import math
from typing import Any

from glmil_auto.pretraining.views import view_description

METHODS = ("contrastive", "masked")
STEP_BUDGET = {"cpu": 1000, "cuda": 20000}
EPOCH_RANGE = (2, 400)
MIN_GLOBAL_PAIRS, MIN_INSTANCE_PAIRS = 4, 8


def plan_pretraining(plans: dict[str, Any], n_cases: int, n_lesions: int, method: str | None = None,
                     device_kind: str | None = None, epochs: int | None = None) -> dict[str, Any]:
    """The settings of one pretraining run (JSON-safe; recorded in the checkpoint).

    ``device_kind`` defaults to the device the plans were made for (``plans["device_profile"]``);
    ``epochs`` overrides the planned number (tests, a quick look)."""
    method = method or "contrastive"
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_cases < 2:
        raise ValueError(f"pretraining needs at least 2 preprocessed cases, found {n_cases}")
    kind = device_kind or plans.get("device_profile", {}).get("kind", "cpu")
    kind = "cuda" if kind == "cuda" else "cpu"
    training = plans["training"]
    scales = len(plans["preprocessing"]["local"]["scales"])
    global_batch = min(n_cases, max(MIN_GLOBAL_PAIRS, int(training["batch_size"]) // 2))
    instance_batch = min(n_lesions, max(MIN_INSTANCE_PAIRS, int(training["instance_budget"]) // (2 * scales)))
    if method == "contrastive" and instance_batch == 1:
        instance_batch = 0  # one lesion has no negative
    iterations = max(1, math.ceil(n_cases / global_batch))
    planned_epochs = int(min(max(round(STEP_BUDGET[kind] / iterations), EPOCH_RANGE[0]), EPOCH_RANGE[1]))
    n_epochs = int(epochs) if epochs is not None else planned_epochs
    if n_epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    embedding = int(training["trainer_defaults"]["embedding_dim"])
    settings: dict[str, Any] = {
        "method": method, "device_kind": kind, "n_cases": int(n_cases), "n_lesions": int(n_lesions),
        "global_batch": int(global_batch), "instance_batch": int(instance_batch),
        "iterations_per_epoch": int(iterations), "num_epochs": n_epochs, "planned_epochs": planned_epochs,
        "initial_lr": 1e-3, "weight_decay": 1e-4, "warmup_fraction": 0.05, "gradient_clip_norm": 1.0,
        "views": view_description(plans),
    }
    if method == "contrastive":
        settings.update(temperature=0.1, projection_hidden_dim=2 * embedding, projection_dim=embedding)
    else:
        global_shape = plans["preprocessing"]["global"]["input_shape"]
        patch = plans["preprocessing"]["local"]["patch_size"]
        settings.update(mask_ratio=0.5, global_block=[max(2, s // 8) for s in global_shape],
                        instance_block=[max(2, s // 4) for s in patch])
    return settings


def learning_rate_factor(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Linear warm-up then cosine decay to 0, per optimisation step."""
    warmup = max(1, round(warmup_fraction * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
