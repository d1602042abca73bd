"""Head foreground, an approximate brain region, and bounding boxes.

MRI background is noise, not zero, so nnU-Net's crop-to-nonzero keeps almost the whole field
of view. The head is found instead by a threshold relative to each channel's own intensity range
(robust to the scanner's arbitrary scale and offset), keeping the largest connected component
and filling enclosed holes (dark skull and CSF inside the scalp). Holes are filled in 3D and
then axial slice by axial slice, because a field of view that cuts the neck (or the vertex) leaves
the head open there. The functions expect canonical arrays (axis 0 = inferior-superior, see
:mod:`glmil_auto.imaging.orientation`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

THRESHOLD_FRACTION = 0.1  # of the channel's [p1, p99.5] range above its p1 background level


def head_mask(images: np.ndarray) -> np.ndarray:
    """Boolean ``(Z, Y, X)`` head mask from canonical ``(C, Z, Y, X)`` channels (all channels vote)."""
    foreground = np.zeros(images.shape[1:], dtype=bool)
    for channel in images:
        sample = channel[::2, ::2, ::2]  # percentiles of a regular subsample are plenty here
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            continue
        low, high = np.percentile(sample, [1.0, 99.5])
        if high > low:
            foreground |= channel > low + THRESHOLD_FRACTION * (high - low)
    labels, n = ndimage.label(foreground)
    if n == 0:
        return foreground
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return fill_holes(fill_holes(labels == int(np.argmax(sizes))), slice_axis=0)


def fill_holes(mask: np.ndarray, slice_axis: int | None = None) -> np.ndarray:
    """Fill the background components that do not touch the array border.

    Same result as ``scipy.ndimage.binary_fill_holes`` (6-connected background), computed with
    one labelling pass instead of iterated dilations. With ``slice_axis`` the holes are filled
    slice by slice across that axis (2D, 4-connected in each slice).
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    if slice_axis is not None:
        index = [slice(None)] * mask.ndim
        index[slice_axis] = [0, 2]
        structure[tuple(index)] = False
    labels, n = ndimage.label(~mask, structure=structure)
    if n == 0:
        return mask.copy()
    border = np.zeros(n + 1, dtype=bool)
    for axis in range(mask.ndim):
        if axis == slice_axis:
            continue
        for end in (0, -1):
            border[np.unique(np.take(labels, end, axis=axis))] = True
    border[0] = True  # label 0 is the mask itself
    return ~border[labels] | mask


def depth_mm(head: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Distance in mm from each head voxel to the nearest voxel outside the head (0 outside).

    Beyond the field of view counts as outside the head, so a head cut by the field of view is
    treated like one whose surface is there, whatever the amount of air around it. Computed
    inside the head's bounding box padded by one voxel, which roughly halves the cost.
    """
    box = [(max(start - 1, 0), min(stop + 1, size)) for (start, stop), size in zip(bounding_box(head), head.shape)]
    region = tuple(slice(start, stop) for start, stop in box)
    padded = np.pad(head[region], 1, constant_values=False)
    distance = np.zeros(head.shape, dtype=np.float64)
    inner = ndimage.distance_transform_edt(padded, sampling=tuple(float(s) for s in spacing_zyx))
    distance[region] = inner[1:-1, 1:-1, 1:-1]
    return distance


def brain_region(
    head: np.ndarray, spacing_zyx: Sequence[float], margin_mm: float = 10.0, depth: np.ndarray | None = None
) -> np.ndarray:
    """The head mask eroded by ``margin_mm`` (removes scalp and skull): an approximate brain.

    Used for MRI intensity statistics and z-scoring, where a full brain extraction is not
    needed. Falls back to the head mask when the erosion leaves nothing (tiny images). Pass a
    precomputed :func:`depth_mm` to avoid computing it twice.
    """
    distance = depth if depth is not None else depth_mm(head, spacing_zyx)
    region = distance > margin_mm
    return region if region.any() else head.copy()


def bounding_box(mask: np.ndarray) -> list[tuple[int, int]]:
    """Per axis ``(start, stop)`` of the mask's nonzero voxels; the whole array when it is empty."""
    boxes = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        boxes.append((int(present[0]), int(present[-1]) + 1) if present.size else (0, mask.shape[axis]))
    return boxes
