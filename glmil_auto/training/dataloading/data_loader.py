"""The training data loader: targets per case, and batches of padded lesion bags.

``GLMILDataLoader`` is a batchgenerators ``DataLoader``; every ``generate_train_batch()`` returns
the network's batch dictionary (see ``glmil_auto/model/network.py`` and
documentation/training_data.md) as numpy arrays, plus every target array and ``case_ids``:

| key | shape | dtype |
| --- | --- | --- |
| ``global`` | (B, C+1, Z, Y, X) | float32 (C+2 with the small-foci channel before the mask) |
| ``instances`` | (B, N, S, C+1, pz, py, px) | float32, zero padding |
| ``instance_mask`` | (B, N) | bool |
| ``instance_descriptors`` | (B, N, D) | float32 (D = ``NUM_DESCRIPTORS``) |
| ``clinical_values`` | (B, F) | float32, NaN = missing |
| ``clinical_categories`` | (B, K) | int64, -1 = missing |
| ``instance_features`` | (B, N, L) | float32, the stored radiomic features of each lesion, NaN = undefined (plans with ``lesion_features``) |
| ``case_features`` | (B, P) | float32, their stored patient aggregates (plans with ``lesion_features``) |
| ``foci_responses`` | (B, M) | float32, the case's small-foci candidate responses, NaN-padded (plans with ``small_foci``) |
| ``instance_outcomes`` | (B, N, A) | float32, lesion-level outcomes of the ``any_lesion`` endpoints, NaN = unknown (a target) |
| ``<binary>``, ``<survival>_time``, ``<survival>_event`` | (B,) | float32, NaN = unknown |
| ``<endpoint>_known`` | (B,) | bool |
| ``case_ids`` | list of B str | |

Randomness: ``infinite=True`` draws every batch with replacement (optionally with
``sampling_probabilities``) from a generator seeded by ``(seed, thread_id)``, so the workers of a
multi-process augmenter draw different but reproducible batches; ``infinite=False`` visits every
case once per epoch (the last batch may be smaller), shuffled with ``seed`` when ``shuffle``.

``properties_transform(case, properties) -> properties`` (optional) is applied to every case's
properties as it is read: the trainer passes the fold's harmonisation of the lesion features
(:class:`~glmil_auto.training.starting_point.feature_harmonisation.CentreTransform`), so ``instance_features`` and
``case_features`` are on the pooled training scale.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import blosc2
import numpy as np
import pandas as pd
from batchgenerators.dataloading.data_loader import DataLoader

from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.preprocessing.foci_channel import global_input_channels
from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names
from glmil_auto.preprocessing.storage import case_paths, load_case
from glmil_auto.training.dataloading.bag_collation import (
    CASE_LEVEL_EXTRAS, case_extras, collate_bags, collate_extras, instance_descriptors, instances_within_budget,
)

logger = logging.getLogger(__name__)

def use_fork_safe_blosc2() -> None:
    """Decompress with one blosc2 thread in this process (and in the workers it forks).

    A process that has decompressed with blosc2's thread pool and then forks (batchgenerators'
    MultiThreadedAugmenter forks its workers) leaves the children with a pool whose threads do not
    exist: the first read in a worker then waits forever (reproduced: a hang within ~5 forks). The
    loader reads one chunk per array, and parallelism comes from the worker processes, so one
    thread costs nothing measurable. Called by the loader and by ``make_augmenter``."""
    if blosc2.nthreads != 1:
        blosc2.set_nthreads(1)


INPUT_KEYS = ("global", "instances", "instance_mask", "instance_descriptors", "clinical_values", "clinical_categories",
              "instance_features", "case_features", "foci_responses")
INSTANCE_TARGET_KEY = "instance_outcomes"


def case_targets(table: pd.DataFrame, endpoints: list[dict[str, str]], spec: DatasetSpec) -> dict[str, np.ndarray]:
    """Target arrays in the row order of ``table`` (the typed clinical table, e.g.
    ``table.loc[case_ids]``) for ``endpoints`` = ``plans["endpoints"]``.

    Binary ``name``: float64 in {0, 1, NaN}; survival ``name_time`` and ``name_event``: float64
    (NaN when unknown), with the column names from ``spec.endpoints[name]``; every endpoint also
    gets ``name_known`` (bool), so that losses and metrics skip unknown outcomes without
    testing for NaN themselves. A survival outcome is known only when both time and event are."""
    targets: dict[str, np.ndarray] = {}
    n = len(table)
    for endpoint in endpoints:
        name, kind = endpoint["name"], endpoint["type"]
        if kind == "binary":
            values = table[name].to_numpy(dtype=float) if name in table else np.full(n, np.nan)
            targets[name] = values
            targets[f"{name}_known"] = ~np.isnan(values)
        elif kind == "survival":
            if name not in spec.endpoints:
                raise ValueError(f"survival endpoint '{name}' of the plans is not declared in dataset.json")
            declared = spec.endpoints[name]
            time = table[declared.time].to_numpy(dtype=float) if declared.time in table else np.full(n, np.nan)
            event = table[declared.event].to_numpy(dtype=float) if declared.event in table else np.full(n, np.nan)
            known = ~np.isnan(time) & ~np.isnan(event)
            targets[f"{name}_time"] = np.where(known, time, np.nan)
            targets[f"{name}_event"] = np.where(known, event, np.nan)
            targets[f"{name}_known"] = known
        else:
            raise ValueError(f"endpoint '{name}' has unknown type {kind!r} (binary or survival)")
    return targets


def any_lesion_endpoints(plans: dict[str, Any]) -> list[str]:
    """The binary endpoints the plans declare ``"aggregation": "any_lesion"``, in plans order."""
    return [e["name"] for e in plans["endpoints"] if e.get("aggregation") == "any_lesion"]


class GLMILDataLoader(DataLoader):
    """Batches of preprocessed cases for the GL-MIL network (see the module docstring)."""

    def __init__(
        self,
        folder: Path,
        case_ids: list[str],
        plans: dict[str, Any],
        clinical_values: np.ndarray,
        clinical_categories: np.ndarray,
        targets: dict[str, np.ndarray],
        batch_size: int,
        infinite: bool = True,
        shuffle: bool = True,
        seed: int = 0,
        sampling_probabilities: np.ndarray | None = None,
        num_threads_in_multithreaded: int = 1,
        max_instances_per_batch: int | None = None,
        properties_transform: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
    ):
        case_ids = [str(c) for c in case_ids]
        n = len(case_ids)
        if n == 0:
            raise ValueError("GLMILDataLoader needs at least one case")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_instances_per_batch is not None and max_instances_per_batch < 1:
            raise ValueError(f"max_instances_per_batch must be >= 1 or None, got {max_instances_per_batch}")
        if len(set(case_ids)) != n:
            raise ValueError("case_ids contains duplicates")
        clinical_values = np.asarray(clinical_values, dtype=np.float32)
        clinical_categories = np.asarray(clinical_categories, dtype=np.int64)
        if clinical_values.ndim != 2 or clinical_categories.ndim != 2:
            raise ValueError("clinical_values and clinical_categories must be 2-D (n_cases, n_features)")
        for what, array in (("clinical_values", clinical_values), ("clinical_categories", clinical_categories)):
            if array.shape[0] != n:
                raise ValueError(f"{what} has {array.shape[0]} rows for {n} cases")
        checked_targets: dict[str, np.ndarray] = {}
        for key, array in targets.items():
            if key in INPUT_KEYS or key == "case_ids":
                raise ValueError(f"target name '{key}' collides with a batch key")
            array = np.asarray(array)
            if array.shape != (n,):
                raise ValueError(f"target '{key}' has shape {array.shape}, expected ({n},)")
            checked_targets[key] = array.astype(bool) if array.dtype == bool else array.astype(np.float32)
        if sampling_probabilities is not None:
            p = np.asarray(sampling_probabilities, dtype=float)
            if p.shape != (n,) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
                raise ValueError(f"sampling_probabilities must be {n} finite non-negative numbers with a positive sum")
            sampling_probabilities = p / p.sum()
        super().__init__(
            case_ids, batch_size, num_threads_in_multithreaded, seed_for_shuffle=seed,
            return_incomplete=not infinite, shuffle=shuffle, infinite=infinite,
            sampling_probabilities=sampling_probabilities,
        )
        use_fork_safe_blosc2()
        self.indices = np.arange(n)
        self.folder = Path(folder)
        self.case_ids = case_ids
        self.plans = plans
        self.seed = int(seed)
        self.clinical_values = clinical_values
        self.clinical_categories = clinical_categories
        self.targets = checked_targets
        local = plans["preprocessing"]["local"]
        channels = int(plans["num_input_channels"])
        self.global_shape = (global_input_channels(plans), *plans["preprocessing"]["global"]["input_shape"])
        self.instance_shape = (len(local["scales"]), channels, *local["patch_size"])
        self._sampling_rng: np.random.Generator | None = None
        self.max_instances_per_batch = max_instances_per_batch
        self._reported_trimmed: set[str] = set()
        section = plans["preprocessing"].get("lesion_features")
        self.lesion_feature_names = lesion_feature_names(section)
        self.case_feature_names = list(section.get("case_features", [])) if section else []
        self.lesion_endpoints = any_lesion_endpoints(plans)
        self.foci_candidates = int((plans["preprocessing"].get("small_foci") or {}).get("max_candidates", 0))
        # (case, properties) -> properties applied to every case read, e.g. the fold's harmonisation of the
        # lesion features (training/starting_point/feature_harmonisation.py); must be picklable (augmentation workers)
        self.properties_transform = properties_transform

    # ------------------------------------------------------------------ sampling
    def set_thread_id(self, thread_id: int) -> None:
        super().set_thread_id(thread_id)
        self._sampling_rng = None  # re-derived from (seed, thread_id) on the next draw

    def get_indices(self) -> list[int] | np.ndarray:
        if not self.infinite:
            return super().get_indices()
        # batchgenerators samples from numpy's global state here, which the augmentations share;
        # a private generator keeps the case sequence independent of how many random numbers the
        # transforms used, and distinct per worker.
        if self._sampling_rng is None:
            self._sampling_rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.thread_id]))
        return self._sampling_rng.choice(self.indices, self.batch_size, replace=True, p=self.sampling_probabilities)

    @staticmethod
    def class_balanced_probabilities(targets: dict[str, np.ndarray], endpoint: str) -> np.ndarray:
        """Sampling probabilities that give a binary endpoint's positives and negatives equal total
        probability (oversampling the rare class); cases with an unknown outcome keep the average
        weight 1/n. Uniform when one class is absent."""
        values = np.asarray(targets[endpoint], dtype=float)
        n = len(values)
        if n == 0:
            raise ValueError("no cases")
        known = ~np.isnan(values)
        positive, negative = known & (values == 1), known & (values == 0)
        p = np.full(n, 1.0 / n)
        if positive.any() and negative.any():
            share = known.sum() / n / 2.0  # the known cases' mass, split in halves
            p[positive] = share / positive.sum()
            p[negative] = share / negative.sum()
        return p / p.sum()

    # ------------------------------------------------------------------ batches
    def _load(self, case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        global_volume, bag, properties = load_case(self.folder, case)
        if self.properties_transform is not None:
            properties = self.properties_transform(case, properties)
        paths = case_paths(self.folder, case)
        if tuple(global_volume.shape) != self.global_shape:
            raise DatasetError(error(f"global array has shape {tuple(global_volume.shape)}, the plans expect "
                                     f"{self.global_shape}: re-run glmil_preprocess", case, str(paths["global"])))
        if bag.ndim != 1 + len(self.instance_shape) or tuple(bag.shape[1:]) != self.instance_shape:
            raise DatasetError(error(f"local array has shape {tuple(bag.shape)}, the plans expect "
                                     f"(N, {', '.join(map(str, self.instance_shape))}): re-run glmil_preprocess",
                                     case, str(paths["local"])))
        descriptors = instance_descriptors(properties, case)
        if len(descriptors) != bag.shape[0]:
            raise DatasetError(error(f"the properties describe {len(descriptors)} instances, the local array holds "
                                     f"{bag.shape[0]}: re-run glmil_preprocess", case, str(paths["properties"])))
        return global_volume, bag, descriptors, self._extras(properties, case)

    def _extras(self, properties: dict[str, Any], case: str) -> dict[str, np.ndarray]:
        """The per-instance radiomic features and lesion outcomes, and the case's aggregates."""
        return case_extras(properties, case, self.lesion_feature_names, self.case_feature_names, self.lesion_endpoints,
                           self.foci_candidates)

    def load_batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch of the cases at ``indices`` (positions in ``case_ids``)."""
        indices = np.asarray(indices, dtype=np.int64)
        cases = [self.case_ids[i] for i in indices]
        loaded = [self._load(case) for case in cases]
        if self.max_instances_per_batch is not None:
            loaded = self._pack(cases, loaded)
        batch: dict[str, Any] = collate_bags([g for g, _, _, _ in loaded], [b for _, b, _, _ in loaded],
                                             [d for _, _, d, _ in loaded])
        batch.update(collate_extras([e for _, _, _, e in loaded], batch["instance_mask"].shape[1]))
        batch["clinical_values"] = self.clinical_values[indices]
        batch["clinical_categories"] = self.clinical_categories[indices]
        for key, array in self.targets.items():
            batch[key] = array[indices]
        batch["case_ids"] = cases
        return batch

    def _pack(self, cases: list[str], loaded: list[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]]
              ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
        """Keep at most ``max_instances_per_batch`` instances in the batch (the planned instance budget
        divided by the scales): the memory of a step is planned for that many, not for every bag at
        its maximum. Lesion-rich bags give up their smallest lesions first (like instance dropout,
        this only happens in training batches; validation and prediction see every stored lesion)."""
        kept = instances_within_budget([d for _, _, d, _ in loaded], self.max_instances_per_batch)
        packed = []
        for case, (volume, bag, descriptors, extras), keep in zip(cases, loaded, kept):
            if len(keep) < bag.shape[0]:
                if case not in self._reported_trimmed:
                    self._reported_trimmed.add(case)
                    dropped = sorted(set(range(bag.shape[0])) - set(keep.tolist()))
                    logger.info("case %s: %d of its %d lesions do not fit the batch's instance budget (%d); "
                                "kept the largest, left out instances %s", case, len(dropped), bag.shape[0],
                                self.max_instances_per_batch, dropped)
                bag, descriptors = bag[keep], descriptors[keep]
                extras = {k: (v if k in CASE_LEVEL_EXTRAS else v[keep]) for k, v in extras.items()}
            packed.append((volume, bag, descriptors, extras))
        return packed

    def generate_train_batch(self) -> dict[str, Any]:
        return self.load_batch(self.get_indices())
