"""Five-fold splits stratified jointly by the binary endpoints, the survival events and the group.

``splits_final.json`` is created once in the preprocessed dataset folder and reused by every
trainer (as in nnU-Net); a file the user put there is respected as it is. The stratification
key is the combination of every binary outcome (unknown counted as its own value), every
survival event and the centre. Combinations too rare to be spread over the folds are merged,
dropping the least important component first (the group, then survival events, then binary
endpoints from last to first), until each key occurs at least ``n_folds`` times.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.utilities.atomic_files import write_json_atomic

SPLITS_FILE = "splits_final.json"
DEFAULT_SEED = 12345


def stratification_labels(table: pd.DataFrame, spec: DatasetSpec, n_folds: int) -> np.ndarray:
    """One string key per case, coarsened until every key has at least ``n_folds`` cases."""
    components: list[list[str]] = []
    for name in spec.binary_endpoints:
        components.append([("na" if np.isnan(v) else str(int(v))) for v in table[name].to_numpy(float)])
    for name in spec.survival_endpoints:
        event = table[spec.endpoints[name].event].to_numpy(float)
        components.append([("na" if np.isnan(v) else str(int(v))) for v in event])
    if spec.group_column and spec.group_column in table:
        components.append([str(v) for v in table[spec.group_column]])
    # drop order: group first, then survival, then binary endpoints from the last
    order = list(range(len(components)))[::-1]
    n = len(table)
    active = list(range(len(components)))
    while True:
        keys = np.array(["|".join(components[c][i] for c in active) or "all" for i in range(n)])
        counts = Counter(keys)
        if min(counts.values()) >= n_folds or not active:
            return keys
        rare = {k for k, c in counts.items() if c < n_folds}
        if sum(counts[k] for k in rare) >= n_folds and len(rare) > 1:
            merged = np.where(np.isin(keys, list(rare)), "rare", keys)
            if min(Counter(merged).values()) >= n_folds:
                return merged
        active.remove(order.pop(0))


def make_splits(case_ids: list[str], labels: np.ndarray, n_folds: int = 5, seed: int = DEFAULT_SEED) -> list[dict[str, list[str]]]:
    """``[{"train": [...], "val": [...]}, ...]`` with sorted ids, reproducible from ``seed``."""
    ids = np.asarray(case_ids)
    if len(ids) < n_folds:
        raise ValueError(f"{len(ids)} training cases cannot be split into {n_folds} folds")
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [
        {"train": sorted(ids[train].tolist()), "val": sorted(ids[val].tolist())}
        for train, val in folds.split(ids, labels)
    ]


def load_or_create_splits(
    preprocessed_dataset_folder: Path, table: pd.DataFrame, spec: DatasetSpec, n_folds: int = 5, seed: int = DEFAULT_SEED
) -> list[dict[str, list[str]]]:
    """The dataset's splits: read ``splits_final.json`` if it exists, else create and write it.

    A user-supplied file is checked (every fold's ids must be training cases) but not changed.
    """
    path = Path(preprocessed_dataset_folder) / SPLITS_FILE
    if path.is_file():
        splits = json.loads(path.read_text(encoding="utf-8"))
        known = set(table.index)
        for k, fold in enumerate(splits):
            unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
            if unknown:
                raise ValueError(f"{path}: fold {k} names cases that are not training cases: {unknown[:5]}")
        return splits
    splits = make_splits(list(table.index), stratification_labels(table, spec, n_folds), n_folds, seed)
    write_json_atomic(path, splits)
    return splits


def fold_cases(splits: list[dict[str, list[str]]], fold: int | str, all_cases: list[str]) -> tuple[list[str], list[str]]:
    """Training and validation ids of a fold; fold ``"all"`` trains on every case and validates on
    the training cases themselves (as nnU-Net does, only to monitor)."""
    if str(fold) == "all":
        return sorted(all_cases), sorted(all_cases)
    fold = int(fold)
    if not 0 <= fold < len(splits):
        raise ValueError(f"fold {fold} does not exist: the splits have folds 0-{len(splits) - 1} and 'all'")
    return splits[fold]["train"], splits[fold]["val"]
