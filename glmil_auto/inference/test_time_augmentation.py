"""Mirror test-time augmentation, and the leave-one-lesion-out bags behind per-lesion contributions.

Mirroring is allowed along the axes the plans allow in training (``mirror_axes`` of the global
volume and of the lesion patches; left-right only by default, because brain anatomy and
therefore the failure pattern is not symmetric front-back or top-bottom). Every subset of those
axes is one variant, the identity first, as nnU-Net's mirroring TTA.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

MirrorVariant = tuple[tuple[int, ...], tuple[int, ...]]  # (global axes, patch axes), spatial z=0


def mirror_variants(global_axes: Sequence[int], local_axes: Sequence[int], enabled: bool = True) -> list[MirrorVariant]:
    """Identity first, then every subset of the union of the axes (each applied where allowed)."""
    variants: list[MirrorVariant] = [((), ())]
    if not enabled:
        return variants
    union = sorted(set(int(a) for a in global_axes) | set(int(a) for a in local_axes))
    for r in range(1, len(union) + 1):
        for subset in combinations(union, r):
            variant = (tuple(a for a in subset if a in global_axes), tuple(a for a in subset if a in local_axes))
            if variant not in variants:
                variants.append(variant)
    return variants


def mirror_case_batch(batch: dict[str, np.ndarray], variant: MirrorVariant) -> dict[str, np.ndarray]:
    """A copy of a network batch mirrored by ``variant``: ``global`` (B, C+1, Z, Y, X) along
    its spatial axes, ``instances`` (B, N, S, C+1, pz, py, px) along theirs; the rest unchanged."""
    global_axes, local_axes = variant
    out = dict(batch)
    if global_axes:
        out["global"] = np.ascontiguousarray(np.flip(batch["global"], axis=tuple(2 + a for a in global_axes)))
    if local_axes:
        out["instances"] = np.ascontiguousarray(np.flip(batch["instances"], axis=tuple(4 + a for a in local_axes)))
    return out


def leave_one_out_batches(batch: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """For a one-case batch with n real instances, n copies each without one instance (masked and
    zeroed, as instance dropout does in training)."""
    if batch["global"].shape[0] != 1:
        raise ValueError("leave-one-out needs a batch of one case")
    out = []
    for i in np.flatnonzero(batch["instance_mask"][0]):
        copy = {key: np.array(value, copy=True) for key, value in batch.items()}
        copy["instance_mask"][0, i] = False
        copy["instances"][0, i] = 0.0
        copy["instance_descriptors"][0, i] = 0.0
        out.append(copy)
    return out


def concatenate_batches(batches: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack same-shaped network batches along the batch axis."""
    return {key: np.concatenate([b[key] for b in batches], axis=0) for key in batches[0]}
