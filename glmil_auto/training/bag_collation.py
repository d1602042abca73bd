"""Padding variable-size lesion bags into one batch, and the per-lesion descriptors.

Shared by the training loader and anything else that builds the network's batch from
preprocessed cases (a case is ``global (C+1, Z, Y, X)``, ``local (N, S, C+1, pz, py, px)`` and its
properties JSON, as :func:`glmil_auto.preprocessing.storage.load_case` returns them).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.model.instance_encoder import DESCRIPTOR_NAMES


def relative_position(centroid_index_zyx: Any, head_bbox_zyx: Any) -> tuple[float, float, float]:
    """Where a lesion sits in the head's bounding box of the canonical (LPS-ordered) array:
    (height 0 inferior..1 superior, posteriority 0 anterior..1 posterior, distance from the
    midline 0..1). Array axes (Z, Y, X) point superior, posterior and left in canonical order."""
    out = []
    for c, (start, stop) in zip(centroid_index_zyx, head_bbox_zyx):
        out.append(float(np.clip((float(c) - start) / max(1.0, stop - 1 - start), 0.0, 1.0)))
    return out[0], out[1], abs(out[2] - 0.5) * 2.0


def instance_descriptors(properties: dict[str, Any], case: str) -> np.ndarray:
    """``(N, len(DESCRIPTOR_NAMES))`` float32 for the kept lesions in ``instance_index`` order:
    ``[log1p(volume mm3), depth below the head surface in mm / 10, relative height, relative
    posteriority, relative distance from the midline]`` (see :func:`relative_position`).

    All are O(1) numbers for the network (volumes span four orders of magnitude, hence the log);
    a kept lesion without the values is a corrupt properties file and names the case."""
    kept = [lesion for lesion in properties.get("lesions", []) if lesion.get("kept")]
    n = int(properties.get("n_instances", len(kept)))
    out = np.zeros((n, len(DESCRIPTOR_NAMES)), dtype=np.float32)
    seen = set()
    head_box = properties.get("head_bbox_canonical")
    for lesion in kept:
        index = lesion.get("instance_index")
        try:
            volume = float(lesion["volume_mm3"])
            depth = float(lesion["depth_below_head_surface_mm"])
            position = relative_position(lesion["centroid_index_zyx"], head_box)
        except (KeyError, TypeError, ValueError):
            raise DatasetError(error(f"lesion {lesion.get('label')} lacks volume_mm3, depth_below_head_surface_mm or "
                                     "centroid_index_zyx, or the case lacks head_bbox_canonical: re-run "
                                     "glmil_preprocess", case)) from None
        if not isinstance(index, int) or not 0 <= index < n or index in seen:
            raise DatasetError(error(f"lesion {lesion.get('label')} has an invalid instance_index {index!r} "
                                     f"for {n} instances: re-run glmil_preprocess", case))
        seen.add(index)
        out[index] = (math.log1p(max(volume, 0.0)), depth / 10.0, *position)
    if len(seen) != n:
        raise DatasetError(error(f"the properties list {len(seen)} kept lesions but n_instances is {n}: "
                                 "re-run glmil_preprocess", case))
    return out


def collate_bags(
    global_volumes: Sequence[np.ndarray], bags: Sequence[np.ndarray], descriptors: Sequence[np.ndarray]
) -> dict[str, np.ndarray]:
    """Stack cases into ``global`` (B, C+1, Z, Y, X), ``instances`` (B, N, S, C+1, pz, py, px),
    ``instance_mask`` (B, N) and ``instance_descriptors`` (B, N, D), with N the largest bag of the
    batch (at least 1, so that a batch of lesion-free cases still has a well-formed tensor).
    Padding rows are zeros and masked out."""
    if not bags:
        raise ValueError("cannot collate an empty batch")
    b = len(bags)
    n_max = max(1, max(bag.shape[0] for bag in bags))
    instances = np.zeros((b, n_max, *bags[0].shape[1:]), dtype=np.float32)
    mask = np.zeros((b, n_max), dtype=bool)
    described = np.zeros((b, n_max, len(DESCRIPTOR_NAMES)), dtype=np.float32)
    for i, (bag, desc) in enumerate(zip(bags, descriptors)):
        n = bag.shape[0]
        instances[i, :n] = bag
        mask[i, :n] = True
        described[i, :n] = desc
    return {
        "global": np.stack([np.asarray(g, dtype=np.float32) for g in global_volumes]),
        "instances": instances,
        "instance_mask": mask,
        "instance_descriptors": described,
    }


def instances_within_budget(descriptors: Sequence[np.ndarray], budget: int) -> list[np.ndarray]:
    """Which instances of each bag a batch keeps so that it holds at most ``budget`` instances in all.

    While the batch is over budget, the bag holding the most instances gives up its smallest lesion
    (by the log-volume descriptor, column 0; ties: the later instance), so every bag keeps its
    largest lesions and lesion-poor bags are never cut for lesion-rich ones. Returns, per bag, the
    kept instance indices in their original order. A bag ends empty only when ``budget`` is below
    the number of bags with lesions (the planner never plans fewer instances than bags).
    """
    if budget < 0:
        raise ValueError(f"the instance budget must be >= 0, got {budget}")
    order = [list(np.lexsort((-np.arange(len(d)), -np.asarray(d, dtype=float)[:, 0])) if len(d) else [])
             for d in descriptors]  # largest first; ties: the earlier instance first
    kept = [len(o) for o in order]
    while sum(kept) > budget:
        richest = int(np.argmax(kept))  # the first of the bags with the most instances
        kept[richest] -= 1
    return [np.sort(np.asarray(o[:k], dtype=np.int64)) for o, k in zip(order, kept)]
