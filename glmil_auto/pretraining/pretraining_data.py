"""Which preprocessed cases pretraining reads, and the loader that draws its batches.

A pretraining case is any preprocessed case made with the target dataset's plans (the same plans
hash): the target's own ``Tr`` and ``Ts`` cases, and those of extra datasets preprocessed with its
plans (``extra_datasets.py``). No outcome, clinical value or label beyond the lesion mask is read.

:class:`PretrainingLoader` (a batchgenerators ``DataLoader``) returns, per batch:

| key | shape | meaning |
| --- | --- | --- |
| ``global`` | (G, C+1, Z, Y, X) | G global volumes, drawn without replacement |
| ``instances`` | (1, L, S, C+1, pz, py, px) | L lesions (all scales), drawn without replacement from every lesion |
| ``instance_mask`` | (1, L) | True (False only for the dummy row of a cohort without lesions) |
| ``instance_descriptors`` | (1, L, D) | the lesions' descriptors (``instance_encoder.DESCRIPTOR_NAMES``) |
| ``case_ids`` | list of G str | ``<dataset>/<split>/<case>`` of the global volumes |

so the training augmentation's transforms apply unchanged, and the instance encoder reads the L
lesions as one bag. Draws come from a generator seeded by ``(seed, thread_id)``: a batch does not
depend on how many random numbers the augmentation used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
from batchgenerators.dataloading.data_loader import DataLoader
from tqdm import tqdm

from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.preprocessing.storage import case_paths, load_array, load_properties
from glmil_auto.training.dataloading.bag_collation import instance_descriptors
from glmil_auto.training.dataloading.data_loader import use_fork_safe_blosc2


@dataclass(frozen=True)
class PretrainingCase:
    dataset: str
    split: str
    folder: str  # the preprocessed case folder
    case: str
    descriptors: np.ndarray  # (N, D) of its kept lesions, in instance order

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.split}/{self.case}"

    @property
    def n_instances(self) -> int:
        return int(self.descriptors.shape[0])


def folder_cases(folder: Path, dataset: str, split: str, plans_hash: str, only: set[str] | None = None,
                 progress: bool = False) -> list[PretrainingCase]:
    """Every complete preprocessed case of ``folder`` (its JSON names ``plans_hash``), optionally
    only those in ``only``. A case of other plans is an error naming it: pretraining on data
    prepared differently from what the encoders will see is never wanted."""
    folder = Path(folder)
    names = sorted(p.stem for p in folder.glob("*.json"))
    if only is not None:
        missing = sorted(only - set(names))
        if missing:
            raise DatasetError(error(f"{len(missing)} case(s) of the split are not preprocessed, e.g. {missing[0]}: "
                                     "run glmil_preprocess", missing[0], str(folder)))
        names = [n for n in names if n in only]
    out = []
    for case in tqdm(names, desc=f"reading {dataset}/{split}", unit="case", disable=not progress):
        properties = load_properties(folder, case)
        if properties.get("plans_hash") != plans_hash:
            raise DatasetError(error("the case was preprocessed with other plans than the target's (plans hash "
                                     f"{properties.get('plans_hash')!r}, expected {plans_hash!r}): preprocess it again",
                                     case, str(case_paths(folder, case)["properties"])))
        if not all(p.is_file() for p in case_paths(folder, case).values()):
            continue
        out.append(PretrainingCase(dataset, split, str(folder), case, instance_descriptors(properties, case)))
    return out


def seen_record(cases: list[PretrainingCase]) -> dict[str, Any]:
    """What the checkpoint records about its data: datasets, splits, case names, lesion counts."""
    datasets: dict[str, dict[str, list[str]]] = {}
    for c in cases:
        datasets.setdefault(c.dataset, {}).setdefault(c.split, []).append(c.case)
    return {"datasets": sorted(datasets), "n_cases": len(cases), "n_lesions": int(sum(c.n_instances for c in cases)),
            "cases": {d: {s: sorted(v) for s, v in splits.items()} for d, splits in datasets.items()}}


class PretrainingLoader(DataLoader):
    """Batches of ``global_batch`` volumes and ``instance_batch`` lesions (module docstring)."""

    def __init__(self, cases: list[PretrainingCase], global_batch: int, instance_batch: int,
                 global_shape: tuple[int, ...], instance_shape: tuple[int, ...], seed: int, num_threads: int = 1):
        super().__init__(cases, global_batch, num_threads, seed, return_incomplete=False, shuffle=True, infinite=True)
        if not cases:
            raise ValueError("no preprocessed cases to pretrain on")
        self.cases = cases
        self.global_batch = min(int(global_batch), len(cases))
        self.lesions = np.array([(i, j) for i, c in enumerate(cases) for j in range(c.n_instances)], dtype=np.int64
                                ).reshape(-1, 2)
        self.instance_batch = min(int(instance_batch), len(self.lesions))
        self.global_shape, self.instance_shape = tuple(global_shape), tuple(instance_shape)
        self.seed = int(seed)
        self._rng: np.random.Generator | None = None

    def set_thread_id(self, thread_id: int) -> None:
        super().set_thread_id(thread_id)
        self._rng = None

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.thread_id]))
        return self._rng

    def _global(self, case: PretrainingCase) -> np.ndarray:
        volume = load_array(Path(case.folder), case.case, "global")
        if tuple(volume.shape) != self.global_shape:
            raise DatasetError(error(f"global array has shape {tuple(volume.shape)}, the target plans expect "
                                     f"{self.global_shape}: preprocess it with the target's plans", case.case,
                                     str(case_paths(Path(case.folder), case.case)["global"])))
        return volume

    def _instance(self, case: PretrainingCase, index: int) -> np.ndarray:
        path = case_paths(Path(case.folder), case.case)["local"]
        try:
            patch = blosc2.open(str(path), mode="r")[index]  # one chunk per instance: only this lesion is read
        except Exception as exc:  # blosc2 raises several types for damaged files
            raise DatasetError(error(f"preprocessed local array is missing or corrupt ({type(exc).__name__}): "
                                     "re-run glmil_preprocess", case.case, str(path))) from exc
        if tuple(patch.shape) != self.instance_shape:
            raise DatasetError(error(f"lesion patch has shape {tuple(patch.shape)}, the target plans expect "
                                     f"{self.instance_shape}", case.case, str(path)))
        return patch

    def generate_train_batch(self) -> dict[str, Any]:
        use_fork_safe_blosc2()
        rng = self.rng
        chosen = rng.choice(len(self.cases), self.global_batch, replace=False)
        batch: dict[str, Any] = {"global": np.stack([self._global(self.cases[i]) for i in chosen]).astype(np.float32),
                                 "case_ids": [self.cases[i].name for i in chosen]}
        if self.instance_batch:
            picked = self.lesions[rng.choice(len(self.lesions), self.instance_batch, replace=False)]
            patches = np.stack([self._instance(self.cases[i], j) for i, j in picked]).astype(np.float32)
            descriptors = np.stack([self.cases[i].descriptors[j] for i, j in picked]).astype(np.float32)
            mask = np.ones((1, len(picked)), dtype=bool)
        else:  # no lesion anywhere: a dummy row that every transform and the encoder skip
            patches = np.zeros((1, *self.instance_shape), dtype=np.float32)
            descriptors = np.zeros((1, self.cases[0].descriptors.shape[1]), dtype=np.float32)
            mask = np.zeros((1, 1), dtype=bool)
        batch.update(instances=patches[None], instance_mask=mask, instance_descriptors=descriptors[None])
        return batch

