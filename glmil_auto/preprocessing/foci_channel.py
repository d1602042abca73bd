"""The small-foci channel of the global volume and the candidates a case keeps in its properties.

With a ``small_foci`` section in the plans the global volume is ``[image channels, foci, lesion
mask]``: the foci channel is the detector's response (:func:`glmil_auto.preprocessing.small_foci
.case_foci`, computed on the reference channel at its native resolution, in the case's noise
units) above the plans' floor, clipped and scaled, and reduced to the global grid by **maximum**
(:func:`~glmil_auto.preprocessing.small_foci.max_pool_to_grid`), so a 1-3 mm focus that linear
interpolation would average into noise keeps its height. Outside the search region (outside the
brain, near a lesion, near the brain's surface) it is 0.

The case's properties keep the strongest candidates (``max_candidates``) with their physical
positions and the dark-blob decoys; the per-case descriptor (count and summed response above a
threshold fitted on each fold's training cases) is computed from them at training and
prediction time (:mod:`glmil_auto.model.foci_descriptor`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.preprocessing.small_foci import FociSettings, case_foci, max_pool_to_grid

RECORD_VERSION = 1


def has_foci_channel(plans: Mapping[str, Any]) -> bool:
    return bool(plans.get("preprocessing", {}).get("small_foci"))


def global_input_channels(plans: Mapping[str, Any]) -> int:
    """Channels of the global volume: the lesion patches' (images + mask) plus the foci channel."""
    return int(plans["num_input_channels"]) + int(has_foci_channel(plans))


def image_channel_count(plans: Mapping[str, Any]) -> int:
    """The image channels (those that intensity augmentation may change), before foci and mask."""
    return int(plans["num_input_channels"]) - 1


def foci_channel_index(plans: Mapping[str, Any]) -> int | None:
    """Index of the foci channel in the global volume (None without one)."""
    return image_channel_count(plans) if has_foci_channel(plans) else None


def channel_values(response: np.ndarray, section: Mapping[str, Any]) -> np.ndarray:
    """The response (noise units) as channel values: above the floor, clipped, scaled; float32."""
    floor, clip, scale = float(section["floor"]), float(section["channel_clip"]), float(section["channel_scale"])
    return (np.clip(np.asarray(response, dtype=np.float32) - floor, 0.0, clip) / scale).astype(np.float32)


def foci_channel_and_record(reference: np.ndarray, canonical: Geometry, brain: np.ndarray, lesion_mask: np.ndarray,
                            target: Geometry, section: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The channel on ``target`` and the properties record (``properties["small_foci"]``) of one case.

    ``reference``: the canonical reference channel (T1c) at its native resolution; any affine
    intensity scale gives the same result (the response is in the case's own noise units)."""
    settings = FociSettings.from_dict(section)
    found = case_foci(reference, canonical, brain, lesion_mask, settings)
    channel = max_pool_to_grid(channel_values(found.response, section), canonical, target)
    kept = found.foci[: int(section["max_candidates"])]
    record = {
        "version": RECORD_VERSION,
        "candidates": [{"world_mm": [round(c, 3) for c in f.world_xyz], "response": round(f.response, 4),
                        "radius_mm": f.radius_mm, "blobness": round(f.blobness, 4)} for f in kept],
        "n_candidates": len(found.foci),
        "decoys": [round(float(d), 4) for d in found.decoys],
        "noise_scale": [float(s) for s in found.noise_scale],
        "channel_max": float(channel.max()) if channel.size else 0.0,
    }
    return channel, record
