"""Block masks for the masked method: which voxels are hidden from the encoder.

A CNN sees through scattered single-voxel holes by interpolating its neighbours, so, as in Models
Genesis' in-/out-painting and SparK's masked CNN pretraining, whole cubes are hidden: the grid is
cut into blocks of ``block`` voxels per axis and a ``ratio`` of them is hidden per sample. Hidden
voxels of the image channels are set to 0 (the brain's mean after z-scoring); the lesion-mask
channel (last) stays visible, so the task is to paint in tissue, not to find the lesion.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


def block_mask(batch: int, shape: Sequence[int], block: Sequence[int], ratio: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, 1, *shape) bool, True = hidden: ``round(ratio * blocks)`` blocks per sample (at least one)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"the masking ratio must lie in (0, 1), got {ratio}")
    grid = [max(1, math.ceil(s / max(1, int(b)))) for s, b in zip(shape, block)]
    n_blocks = math.prod(grid)
    hidden = max(1, round(ratio * n_blocks))
    scores = torch.rand((batch, n_blocks), generator=generator)
    order = scores.argsort(dim=1)
    coarse = torch.zeros((batch, n_blocks), dtype=torch.bool)
    coarse.scatter_(1, order[:, :hidden], True)
    coarse = coarse.view(batch, 1, *grid).float()
    full = F.interpolate(coarse, size=[g * max(1, int(b)) for g, b in zip(grid, block)], mode="nearest")
    return full[(slice(None), slice(None), *[slice(0, s) for s in shape])] > 0.5


def hide(volumes: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """``volumes`` (M, C+1, *spatial) with the image channels zeroed where ``hidden`` (M, 1, *spatial)."""
    images = volumes[:, :-1].masked_fill(hidden.to(volumes.device), 0.0)
    return torch.cat([images, volumes[:, -1:]], dim=1)
