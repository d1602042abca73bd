"""The planner's rules as plain functions, each with the reason it exists.

See documentation/planning.md for the rules in prose.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

ANISOTROPY_THRESHOLD = 3.0


def anisotropic_target_spacing(
    spacings_zyx: Sequence[Sequence[float]],
    shapes_zyx: Sequence[Sequence[int]],
    threshold: float = ANISOTROPY_THRESHOLD,
) -> list[float]:
    """High-resolution target spacing with nnU-Net's anisotropy rule.

    The median spacing is the default. When the coarsest axis is more than ``threshold`` times
    coarser than the others (and has correspondingly fewer voxels), resampling every case to the
    median would interpolate most cases along that axis; the 10th percentile of that axis'
    spacings is taken instead, but never finer than the other axes.
    """
    spacings = np.asarray(spacings_zyx, dtype=float)
    shapes = np.asarray(shapes_zyx, dtype=float)
    target = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    anisotropic_spacing = target[worst] > threshold * max(target[others])
    anisotropic_voxels = median_shape[worst] * threshold < min(median_shape[others])
    if anisotropic_spacing and anisotropic_voxels:
        candidate = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(candidate, max(target[others]) + 1e-5)
    return [float(s) for s in target]


def is_anisotropic(spacing_zyx: Sequence[float], threshold: float = ANISOTROPY_THRESHOLD) -> bool:
    return max(spacing_zyx) > threshold * min(spacing_zyx)


def pools_until_edge(shape_zyx: Sequence[int], min_edge: int = 4, max_pools: int = 5) -> int:
    """How many 2x poolings an isotropic encoder can apply before the smallest edge drops below ``min_edge``."""
    return int(max(0, min(max_pools, math.floor(math.log2(max(min(shape_zyx), 1) / min_edge)))))


def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def encoder_features(n_stages: int, base: int, cap: int) -> list[int]:
    """Widths doubling per stage up to a cap (nnU-Net's rule for its encoders)."""
    return [int(min(base * 2**s, cap)) for s in range(n_stages)]


def encoder_activation_bytes(
    shape_zyx: Sequence[int], features: Sequence[int], bytes_per_value: int = 4, tensors_per_stage: int = 6
) -> float:
    """Activations of one sample through a residual encoder, forward plus what backward keeps.

    Each stage at 1/2**s resolution holds about ``tensors_per_stage`` feature maps (two convs,
    their norms, activations and the residual sum); autograd keeps them for backward and the
    gradients double the peak.
    """
    voxels = float(np.prod(shape_zyx))
    per_stage = [f * voxels / 8**s for s, f in enumerate(features)]
    return 2.0 * tensors_per_stage * bytes_per_value * float(sum(per_stage))


def positive_class_weight(prevalence: float | None, cap: float = 10.0) -> float:
    """BCE ``pos_weight`` = negatives / positives, capped: rare endpoints still get gradient
    without letting a handful of positives dominate."""
    if prevalence is None or not 0.0 < prevalence < 1.0:
        return 1.0
    return float(min(max((1.0 - prevalence) / prevalence, 1.0), cap))
