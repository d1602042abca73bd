"""Radiomic inputs for hand-built network batches: what the loader adds when the plans store lesion
features (``instance_features`` (B, N, L) and ``case_features`` (B, P)) and small-foci candidates
(``foci_responses`` (B, M)); and the global volume's channel count."""

from __future__ import annotations

from typing import Any

import torch

from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names


def add_radiomic_inputs(batch: dict[str, Any], plans: dict[str, Any], generator: torch.Generator | None = None
                        ) -> dict[str, Any]:
    """Random standard-normal radiomic inputs of the plans' shapes (nothing for plans without them),
    and candidate responses (NaN-padded, some above any plausible threshold) with small foci."""
    foci = plans["preprocessing"].get("small_foci")
    if foci:
        b = batch["instance_mask"].shape[0]
        responses = torch.full((b, int(foci["max_candidates"])), float("nan"))
        responses[:, :3] = 3.0 + 4.0 * torch.rand(b, 3, generator=generator)
        batch["foci_responses"] = responses
    section = plans["preprocessing"].get("lesion_features")
    if not section:
        return batch
    b, n = batch["instance_mask"].shape
    batch["instance_features"] = torch.randn(b, n, len(lesion_feature_names(section)), generator=generator)
    batch["case_features"] = torch.randn(b, len(section["case_features"]), generator=generator)
    return batch


def global_channels(plans: dict[str, Any]) -> int:
    """Channels of the plans' global volume (images, the small-foci channel where planned, mask)."""
    from glmil_auto.preprocessing.foci_channel import global_input_channels

    return global_input_channels(plans)
