"""What lies around each lesion: distances to CSF and ventricles, CSF itself, and the FLAIR oedema
shells (each shell voxel belongs to the lesion whose surface is nearest)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

SHELLS_MM = ((0.0, 5.0), (5.0, 10.0))  # oedema shells around each lesion surface
CSF_RATIO = 0.5  # CSF: below this fraction of normal brain (air = 0) on T1c and on FLAIR
AIR_MARGIN_Z = 0.5  # the ratio scale needs air at least this far (z-units) below normal brain


def _edt(mask: np.ndarray, spacing_zyx: Sequence[float], **kwargs: Any):
    return ndimage.distance_transform_edt(mask, sampling=tuple(float(s) for s in spacing_zyx), **kwargs)


def _padded_box(box: Sequence[tuple[int, int]], pad: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(start - p, 0), min(stop + p, size)) for (start, stop), p, size in zip(box, pad, shape))


def _distance_to(target: np.ndarray, labelled: np.ndarray, boxes: Sequence[tuple[slice, ...]],
                 spacing_zyx: Sequence[float], cap_mm: float) -> np.ndarray:
    """Per lesion (``boxes`` from ``find_objects``, label = position + 1): the smallest distance
    (mm, voxel centre to voxel centre) from any of its voxels to a ``target`` voxel, capped at
    ``cap_mm``. Only the lesion's surface voxels can be nearest to an outside voxel, and only
    targets within the cap of its box matter, so a KD-tree over those is much cheaper than a
    distance transform of the whole volume."""
    from scipy.spatial import cKDTree

    spacing = np.asarray(spacing_zyx, dtype=float)
    pad = [int(math.ceil(cap_mm / s)) + 1 for s in spacing]
    out = np.full(len(boxes), cap_mm)
    for i, box in enumerate(boxes):
        region = _padded_box([(b.start, b.stop) for b in box], pad, labelled.shape)
        targets = np.argwhere(target[region])
        if not len(targets):
            continue
        mask = labelled[box] == i + 1
        surface = np.argwhere(mask & ~ndimage.binary_erosion(mask)) + [b.start - r.start for b, r in zip(box, region)]
        distance, _ = cKDTree(targets * spacing).query(surface * spacing, distance_upper_bound=cap_mm)
        out[i] = min(float(distance.min()), cap_mm)
    return out


def _dark(channel: np.ndarray, reference: float, background: float, brain: np.ndarray) -> np.ndarray:
    """Voxels darker than :data:`CSF_RATIO` x normal brain on the ratio scale (air = 0): CSF is
    0.2-0.4 x white matter on T1c and ~0.1-0.3 on FLAIR, grey matter ~0.7-1.1, so the cut is
    robust to bias fields and independent of how much CSF the brain region holds. Without an
    air level below tissue (a field of view inside the head), half-way between the brain's 2nd
    percentile and its median."""
    if reference - background > AIR_MARGIN_Z:
        return channel < background + CSF_RATIO * (reference - background)
    values = channel[brain]
    return channel < 0.5 * (np.percentile(values, 2.0) + np.median(values))


def _oedema(label: int, fl_rel: np.ndarray | None, hyper_threshold: float,
            box: tuple[slice, ...], mask: np.ndarray, region: tuple[slice, ...], distance: np.ndarray,
            owner: np.ndarray, head: np.ndarray, csf: np.ndarray, voxel_volume: float) -> dict[str, float]:
    """FLAIR inside the lesion and in shells around it. A shell voxel belongs to the lesion whose
    surface is nearest (so other lesions' oedema is not counted twice and lesions are excluded);
    CSF and voxels outside the head are left out."""
    keys = ("flair_mean", "oedema_flair_0_5", "oedema_flair_5_10", "oedema_volume_0_5_mm3",
            "oedema_volume_5_10_mm3", "oedema_fraction_0_5")
    if fl_rel is None:
        return {k: float("nan") for k in keys}
    out = {"flair_mean": float(fl_rel[box][mask].mean())}
    fl_near = fl_rel[region]
    valid = (owner == label) & head[region] & ~csf[region]
    for (inner, outer), suffix in zip(SHELLS_MM, ("0_5", "5_10")):
        shell = valid & (distance > inner) & (distance <= outer)
        shell_values = fl_near[shell]
        hyper = int(np.count_nonzero(shell_values > hyper_threshold))
        out[f"oedema_flair_{suffix}"] = float(shell_values.mean()) if shell_values.size else float("nan")
        out[f"oedema_volume_{suffix}_mm3"] = hyper * voxel_volume
        if suffix == "0_5":
            out["oedema_fraction_0_5"] = hyper / shell_values.size if shell_values.size else float("nan")
    return out
