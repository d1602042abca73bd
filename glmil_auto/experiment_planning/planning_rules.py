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


def global_spacing_bound(smallest_lesion_diameter_mm: float | None, voxels_across: float = 2.0) -> float | None:
    """The coarsest global spacing at which the fingerprint's small lesions (``lesion_diameter_mm
    .percentile_05``) still span ``voxels_across`` voxels: coarser, a 3 mm micro-metastasis
    vanishes into one partial-volume voxel of the global input, and distant failure depends on them."""
    if smallest_lesion_diameter_mm is None or smallest_lesion_diameter_mm <= 0:
        return None
    return float(smallest_lesion_diameter_mm) / voxels_across


def instances_per_batch(batch_size: int, mean_per_case: float, p95_per_case: float, mode: str = "p95") -> int:
    """How many lesions a batch of ``batch_size`` randomly drawn bags must hold.

    ``p95``: the 95th percentile of the sum of ``batch_size`` draws, with the per-case spread read
    from the fingerprint (p95 - mean is about 1.645 standard deviations, and the sum of n draws
    spreads by sqrt(n)): ``n * mean + sqrt(n) * (p95 - mean)``, and never less than one p95 bag.
    ``median``: the mean bag (``n * mean``), at least one lesion per bag; ``one``: one lesion per bag.
    Worst-case bags (every bag at the p95) would reserve ``n * p95``: for a cohort whose median case
    has two lesions and whose p95 has eight, about four times what a batch holds."""
    n = max(1, int(batch_size))
    mean = max(0.0, float(mean_per_case))
    p95 = max(mean, float(p95_per_case))
    if mode == "p95":
        return int(max(math.ceil(p95), math.ceil(n * mean + math.sqrt(n) * (p95 - mean) - 1e-9), 1))
    if mode == "median":
        return int(max(n, math.ceil(n * mean - 1e-9)))
    if mode == "one":
        return n
    raise ValueError(f"unknown instance budget mode {mode!r} (p95, median or one)")


def rarest_endpoint_events(endpoints: dict[str, dict], n_cases: int) -> int | None:
    """The smallest number of informative outcomes over the endpoints: for a binary endpoint the
    rarer class (positives or negatives), for a survival endpoint its events. ``None`` without
    endpoints. This is what limits how long a model can train before it memorises the cohort."""
    counts = []
    for summary in endpoints.values():
        if summary.get("type") == "binary":
            known = summary.get("n_known", n_cases)
            positives = summary.get("n_positive")
            if positives is None and summary.get("prevalence") is not None:
                positives = round(summary["prevalence"] * known)
            if positives is not None:
                counts.append(int(min(positives, known - positives)))
        elif summary.get("type") == "survival":
            events = summary.get("n_events")
            if events is None and summary.get("event_rate") is not None:
                events = round(summary["event_rate"] * summary.get("n_known", n_cases))
            if events is not None:
                counts.append(int(events))
    return min(counts) if counts else None


def training_schedule(n_train: int, batch_size: int, events: int | None, steps_per_event: float,
                      step_range: tuple[int, int], epoch_range: tuple[int, int]) -> tuple[int, int]:
    """``(num_epochs, iterations_per_epoch)``: an epoch is one pass over the training cases of a fold
    (80 % of the cohort); the number of optimisation steps grows with the rarest endpoint's events
    (``steps_per_event``, within ``step_range``), because the events, not the images, are what a
    prognostic model learns from and what it overfits once they are memorised."""
    iterations = max(1, math.ceil(0.8 * n_train / max(1, batch_size)))
    steps = step_range[1] if events is None else steps_per_event * events
    steps = min(max(steps, step_range[0]), step_range[1])
    epochs = int(min(max(round(steps / iterations), epoch_range[0]), epoch_range[1]))
    return epochs, iterations


def cox_memory_size(n_train: int, event_rate: float | None, events_per_risk_set: int = 32, default: int = 256) -> int:
    """Recent risks the Cox loss keeps (``CoxRiskMemory``) so that a risk set holds about
    ``events_per_risk_set`` events however small the batch: at least ``default`` cases or
    ``events_per_risk_set / event_rate``, never more than a fold's training cases (a larger memory
    would only hold stale copies of the same cases)."""
    fold_cases = max(1, math.ceil(0.8 * n_train))
    needed = default if not event_rate else max(default, math.ceil(events_per_risk_set / event_rate))
    return int(min(fold_cases, needed))


def positive_class_weight(prevalence: float | None, cap: float = 10.0) -> float:
    """BCE ``pos_weight`` = negatives / positives, capped: rare endpoints still get gradient
    without letting a handful of positives dominate."""
    if prevalence is None or not 0.0 < prevalence < 1.0:
        return 1.0
    return float(min(max((1.0 - prevalence) / prevalence, 1.0), cap))
