"""Necrosis, enhancement and texture of one lesion from its box of T1c values."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

NECROSIS_FRACTION_OF_P90 = 0.5  # a voxel enhancing less than half the lesion's 90th percentile is necrotic
HISTOGRAM_BIN_WIDTH = 0.25  # z-score units, fixed so that entropies compare across lesions and scanners


def histogram_entropy(values: np.ndarray, bin_width: float = HISTOGRAM_BIN_WIDTH) -> float:
    """Shannon entropy (bits) of the values in fixed-width bins (absolute, not per-lesion, bins)."""
    if values.size == 0:
        return float("nan")
    counts = np.unique(np.floor(values / bin_width).astype(np.int64), return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def neighbour_contrast(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared difference of face-neighbour voxel pairs inside the mask, averaged over axes
    with pairs (GLCM contrast at offset 1 without quantisation); NaN without any pair."""
    per_axis = []
    for axis in range(3):
        both = np.logical_and(
            np.take(mask, range(1, mask.shape[axis]), axis=axis), np.take(mask, range(0, mask.shape[axis] - 1), axis=axis)
        )
        if both.any():
            diff = np.diff(values, axis=axis)[both]
            per_axis.append(float(np.mean(diff**2)))
    return float(np.mean(per_axis)) if per_axis else float("nan")


def enhancement_features(enhancement: np.ndarray, ratio: np.ndarray | None, mask: np.ndarray,
                         spacing_zyx: Sequence[float]) -> dict[str, float]:
    """Necrosis and texture of one lesion from its box of T1c values.

    ``enhancement``: T1c in brain z-units minus the normal-appearing-brain median; ``ratio``: T1c
    over normal brain with air as zero (None when that scale is undefined); ``mask`` the lesion.
    Voxels on the lesion surface mix lesion and surrounding tissue (partial volume), so the
    necrosis measures use the interior (the mask eroded by one voxel) when it has voxels;
    ``core_rim_difference`` compares the inner half (by distance to the surface) with the outer
    half: strongly negative for a ring-enhancing (necrotic) lesion.
    """
    values = enhancement[mask]
    interior = ndimage.binary_erosion(mask)
    inner = enhancement[interior] if interior.any() else values
    p10, p90 = np.percentile(values, [10.0, 90.0])
    mean, std = float(values.mean()), float(values.std())
    depth_inside = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=tuple(spacing_zyx))[1:-1, 1:-1, 1:-1][mask]
    core = depth_inside > 0.5 * depth_inside.max()
    out = {
        "necrotic_fraction": float(np.mean(inner < NECROSIS_FRACTION_OF_P90 * p90)) if p90 > 0 else 1.0,
        "dark_fraction": float(np.mean(inner < 0.0)),
        "core_rim_difference": float(values[core].mean() - values[~core].mean()) if core.any() and (~core).any() else 0.0,
        "enhancement_mean": mean,
        "enhancement_std": std,
        "enhancement_cv": std / abs(mean) if abs(mean) > 1e-6 else float("nan"),
        "enhancement_p10": float(p10),
        "enhancement_p90": float(p90),
        "relative_intensity_mean": float("nan"),
        "relative_cv": float("nan"),
        "interior_std": float(enhancement[interior].std()) if interior.sum() >= 2 else float("nan"),
        "histogram_entropy": histogram_entropy(values),
        "neighbour_contrast": neighbour_contrast(enhancement, mask),
    }
    if ratio is not None:
        r = ratio[mask]
        out["relative_intensity_mean"] = float(r.mean())
        out["relative_cv"] = float(r.std() / r.mean()) if r.mean() > 1e-6 else float("nan")
    if min(mask.shape) > 1:
        magnitude = np.sqrt(sum(g**2 for g in np.gradient(enhancement, *spacing_zyx)))
        out["gradient_mean"] = float(magnitude[interior].mean() if interior.any() else magnitude[mask].mean())
    else:
        out["gradient_mean"] = float("nan")
    return out
