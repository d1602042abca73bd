"""Radiomic inputs for hand-built network batches: what the loader adds when the plans store lesion
features (``instance_features`` (B, N, L) and ``case_features`` (B, P))."""

from __future__ import annotations

from typing import Any

import torch

from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names


def add_radiomic_inputs(batch: dict[str, Any], plans: dict[str, Any], generator: torch.Generator | None = None
                        ) -> dict[str, Any]:
    """Random standard-normal radiomic inputs of the plans' shapes (nothing for plans without them)."""
    section = plans["preprocessing"].get("lesion_features")
    if not section:
        return batch
    b, n = batch["instance_mask"].shape
    batch["instance_features"] = torch.randn(b, n, len(lesion_feature_names(section)), generator=generator)
    batch["case_features"] = torch.randn(b, len(section["case_features"]), generator=generator)
    return batch
