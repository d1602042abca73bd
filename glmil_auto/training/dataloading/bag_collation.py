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


def _kept_by_index(properties: dict[str, Any], case: str) -> list[dict[str, Any]]:
    """The kept lesions of a case's properties in ``instance_index`` order (checked by
    :func:`instance_descriptors`, which every loader calls first)."""
    kept = [lesion for lesion in properties.get("lesions", []) if lesion.get("kept")]
    return sorted(kept, key=lambda lesion: int(lesion["instance_index"]))


def instance_features(properties: dict[str, Any], names: Sequence[str], case: str) -> np.ndarray:
    """``(N, len(names))`` float32: the stored radiomic features of the kept lesions in instance
    order (``properties["lesions"][i]["features"]``, written by preprocessing); NaN where a feature
    is undefined (the network imputes it). A case preprocessed without them names the case."""
    from glmil_auto.preprocessing.lesion_features.stored_features import lesion_feature_matrix

    return lesion_feature_matrix(_kept_by_index(properties, case), names, case).astype(np.float32)


def case_feature_vector(properties: dict[str, Any], names: Sequence[str], case: str) -> np.ndarray:
    """``(len(names),)`` float32: the case's stored patient aggregates of its lesion features."""
    stored = properties.get("case_features")
    if stored is None or any(n not in stored for n in names):
        raise DatasetError(error("the case has no stored patient aggregates of its radiomic features for these "
                                 "plans: re-run glmil_preprocess", case))
    return np.asarray([np.nan if stored[n] is None else float(stored[n]) for n in names], dtype=np.float32)


def instance_outcomes(properties: dict[str, Any], endpoints: Sequence[str], case: str) -> np.ndarray:
    """``(N, len(endpoints))`` float32 lesion-level outcomes of the kept lesions (the raw dataset's
    lesion table, matched in preprocessing: ``properties["lesions"][i]["outcomes"]``); NaN = unknown."""
    kept = _kept_by_index(properties, case)
    out = np.full((len(kept), len(endpoints)), np.nan, dtype=np.float32)
    for i, lesion in enumerate(kept):
        known = lesion.get("outcomes") or {}
        for j, name in enumerate(endpoints):
            value = known.get(name)
            out[i, j] = np.nan if value is None else float(value)
    return out


def case_extras(properties: dict[str, Any], case: str, lesion_feature_names: Sequence[str],
                case_feature_names: Sequence[str], lesion_endpoints: Sequence[str] = (),
                foci_candidates: int = 0) -> dict[str, np.ndarray]:
    """A case's per-instance radiomic features (``instance_features``), their patient aggregates
    (``case_features``), for the given any_lesion endpoints its lesion-level outcomes
    (``instance_outcomes``) and, with ``foci_candidates``, its small-foci candidate responses
    (``foci_responses``): what the loader and the predictor add to the bag."""
    extras: dict[str, np.ndarray] = {}
    if foci_candidates:
        from glmil_auto.model.foci_descriptor import FociRecordError, candidate_responses

        try:
            extras["foci_responses"] = candidate_responses(properties, foci_candidates, case)
        except FociRecordError as exc:
            raise DatasetError(str(exc)) from exc
    if lesion_feature_names:
        extras["instance_features"] = instance_features(properties, lesion_feature_names, case)
    if case_feature_names:
        extras["case_features"] = case_feature_vector(properties, case_feature_names, case)
    if lesion_endpoints:
        extras["instance_outcomes"] = instance_outcomes(properties, lesion_endpoints, case)
    return extras


CASE_LEVEL_EXTRAS = ("case_features", "foci_responses")  # one row per case; the other extras are per instance


def collate_extras(extras: Sequence[dict[str, np.ndarray]], n_max: int) -> dict[str, np.ndarray]:
    """Batch arrays of :func:`case_extras`: per-instance arrays padded to ``n_max`` (NaN), the
    case aggregates stacked."""
    out: dict[str, np.ndarray] = {}
    for key in extras[0] if extras else ():
        if key in CASE_LEVEL_EXTRAS:
            out[key] = np.stack([e[key] for e in extras]).astype(np.float32)
        else:
            out[key] = pad_instance_arrays([e[key] for e in extras], n_max)
    return out


def pad_instance_arrays(arrays: Sequence[np.ndarray], n_max: int, fill: float = np.nan) -> np.ndarray:
    """Stack per-case ``(N_i, ...)`` arrays into ``(B, n_max, ...)`` float32, padded with ``fill``."""
    tail = arrays[0].shape[1:]
    out = np.full((len(arrays), n_max, *tail), fill, dtype=np.float32)
    for i, array in enumerate(arrays):
        out[i, : array.shape[0]] = array
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
