"""Skull-stripped inputs: per-case detection, and the head, brain and depth of a stripped case.

Public brain-metastasis datasets (BraTS-METS, UCSF-BMSR, NYUMets) are skull-stripped: every voxel
outside the brain mask is set to exactly 0. On such an image the head mask of
:mod:`glmil_auto.imaging.head_mask` finds the brain, so its 10 mm erosion would remove the cortex
from the normalisation region, and the distance to the head mask's surface would be the distance
below the brain surface instead of the scalp.

nnU-Net notices a zero background at the dataset level only (``median_relative_size_after_cropping``
below 3/4 switches on ``use_nonzero_mask_for_norm``). Here every case is checked on its own,
because a cohort may mix stripped and unstripped cases and a new centre may be of either kind.
A case counts as skull-stripped when all of these hold (constants below, rationale in
documentation/preprocessing.md):

1. **exact-zero background, on every channel**: the nonzero region (voxels nonzero in any channel,
   largest 26-connected component, holes filled like the head mask) leaves at least
   ``MIN_BACKGROUND_FRACTION`` of the field of view outside it, and on every channel at most
   ``MAX_STRAY_FRACTION`` of those outside voxels are nonzero and at most
   ``MAX_INSIDE_ZERO_FRACTION`` of the region's voxels are 0. MRI air is noise, not exactly 0 over
   a quarter of the field of view unless software zeroed it; the last condition rejects integer
   images whose faint air noise is often exactly 0 (their nonzero voxels form a sponge whose filled
   holes are full of zeros);
2. **no skull under the surface**: cortical bone gives no MRI signal on any sequence, so on an
   unstripped head whose air happens to be exactly 0 (zero-filled or masked by the scanner or a
   pipeline) the shell just below the surface (scalp) is brighter than the shell 4-12 mm deep
   (skull). The case is *not* stripped when that holds on every channel (:func:`surface_contrast`
   above ``MIN_SCALP_CONTRAST``). On a stripped image the surface is CSF and cortex, darker than
   the brain below it on T1 and FLAIR; a stripped T2 (bright CSF) alone could look unstripped,
   which is why one channel without the pattern is enough to call the case stripped.

For a stripped case the nonzero region is the head mask (the global crop) and the normalisation
region (no erosion), and the depth below the head surface is the distance below the brain surface
plus ``SCALP_AND_SKULL_MM``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from glmil_auto.imaging.head_mask import depth_mm, fill_holes

MIN_BACKGROUND_FRACTION = 0.25  # of the field of view outside the nonzero region (nnU-Net: crop to < 3/4)
MAX_STRAY_FRACTION = 1e-3  # of the outside voxels that may be nonzero (interpolation specks)
MAX_INSIDE_ZERO_FRACTION = 0.02  # of the region's voxels that may be exactly 0 (holes, dark CSF)
# Adult scalp (5-6 mm) + skull (6-7 mm) is about 12 mm; the synthetic generator draws scalp_mm
# uniform(4.5, 7.0) and skull_mm uniform(5.0, 7.5), mean 5.75 + 6.25 = 12.0 mm (synthetic/anatomy.py).
SCALP_AND_SKULL_MM = 12.0
OUTER_SHELL_MM = 4.0  # the scalp: depth up to this (at least the surface voxel layer)
SKULL_SHELL_MM = (4.0, 12.0)  # the skull: depth in this range (beyond the outer shell)
MIN_SCALP_CONTRAST = 0.0  # (median outer - median skull shell) / the region's p1-p99 range
FULL = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class SkullStrippingCheck:
    """The per-case detection and the numbers it rests on (JSON-safe via :meth:`to_dict`)."""

    skull_stripped: bool
    zero_fraction: list[float]  # per channel, exactly-zero voxels / all voxels
    background_fraction: float | None  # field of view outside the nonzero region (None: not needed)
    stray_fraction: list[float]  # per channel, nonzero voxels among those outside the region
    inside_zero_fraction: list[float]  # per channel, zero voxels among those of the region
    surface_contrast: list[float | None]  # per channel, see surface_contrast()
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def nonzero_region(images: np.ndarray) -> np.ndarray:
    """Largest 26-connected component of the voxels nonzero in any channel of ``(C, Z, Y, X)``,
    holes filled in 3D and axial slice by axial slice (as the head mask is)."""
    nonzero = np.any((images != 0) & np.isfinite(images), axis=0)
    labels, n = ndimage.label(nonzero, structure=FULL)
    if n == 0:
        return nonzero
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return fill_holes(fill_holes(labels == int(np.argmax(sizes))), slice_axis=0)


def detect_skull_stripping(images: np.ndarray, spacing_zyx: Sequence[float]) -> tuple[SkullStrippingCheck, np.ndarray]:
    """Check one canonical case ``(C, Z, Y, X)``; returns the check and the nonzero region."""
    n_voxels = int(np.prod(images.shape[1:]))
    zero_fraction = [float(np.count_nonzero(channel == 0)) / n_voxels for channel in images]
    if min(zero_fraction) < MIN_BACKGROUND_FRACTION:  # the common case, decided without labelling
        reason = f"not enough exact-zero background on every channel (< {MIN_BACKGROUND_FRACTION:.0%})"
        check = SkullStrippingCheck(False, zero_fraction, None, [], [], [], reason)
        return check, np.zeros(images.shape[1:], dtype=bool)
    region = nonzero_region(images)
    outside = ~region
    n_outside = int(outside.sum())
    background = n_outside / n_voxels
    stray = [float(np.count_nonzero(channel[outside])) / max(n_outside, 1) for channel in images]
    n_region = max(int(region.sum()), 1)
    inside_zero = [float(np.count_nonzero(channel[region] == 0)) / n_region for channel in images]
    depth = depth_mm(region, spacing_zyx)
    contrast = [surface_contrast(channel, region, depth) for channel in images]
    if background < MIN_BACKGROUND_FRACTION:
        stripped = False
        reason = f"the nonzero region leaves {background:.1%} of the field of view (< {MIN_BACKGROUND_FRACTION:.0%})"
    elif max(stray) > MAX_STRAY_FRACTION:
        stripped, reason = False, "nonzero voxels outside the nonzero region (the background is not exactly zero)"
    elif max(inside_zero) > MAX_INSIDE_ZERO_FRACTION:
        stripped = False
        reason = f"{max(inside_zero):.1%} of the nonzero region is 0 on a channel (noise, or a channel not covering it)"
    elif all(c is not None and c > MIN_SCALP_CONTRAST for c in contrast):
        stripped, reason = False, "zero background, but a bright scalp over a dark skull on every channel"
    else:
        stripped, reason = True, "exact-zero background around one region without a skull under its surface"
    return SkullStrippingCheck(stripped, zero_fraction, background, stray, inside_zero, contrast, reason), region


def surface_contrast(channel: np.ndarray, region: np.ndarray, depth: np.ndarray) -> float | None:
    """``(median(outer shell) - median(skull shell)) / (p99 - p1 of the region)``: positive when a
    bright layer lies over a dark one, as scalp over skull (invariant to the scanner's scale and
    offset).

    The outer shell is the region's voxels at most ``OUTER_SHELL_MM`` deep (at least the surface
    voxel layer); the skull shell those ``SKULL_SHELL_MM`` deep (``depth``: :func:`depth_mm` of the
    region). ``None`` when a shell is empty (a region too thin or too coarse to tell) or the region
    has no intensity range."""
    inside = depth[region]
    if inside.size == 0:
        return None
    outer_limit = max(OUTER_SHELL_MM, float(inside.min()))
    outer = region & (depth <= outer_limit)
    skull = region & (depth > max(SKULL_SHELL_MM[0], outer_limit)) & (depth <= SKULL_SHELL_MM[1])
    if not outer.any() or not skull.any():
        return None
    values = channel[region].astype(np.float64)
    low, high = np.percentile(values, [1.0, 99.0])
    if not high > low:
        return None
    difference = float(np.median(channel[outer].astype(np.float64)) - np.median(channel[skull].astype(np.float64)))
    return difference / float(high - low)


def stripped_depth_mm(region: np.ndarray, spacing_zyx: Sequence[float],
                      offset_mm: float = SCALP_AND_SKULL_MM) -> np.ndarray:
    """Depth below the head surface of a stripped case: the distance below the brain (nonzero
    region) surface plus the scalp-and-skull thickness inside the region, 0 outside."""
    depth = depth_mm(region, spacing_zyx)
    depth[region] += float(offset_mm)
    return depth
