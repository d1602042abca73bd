"""Cross-validation splits: five stratified folds (``random``, the default) or one fold per
centre (``centre``).

``random``: ``splits_final.json`` is created once in the preprocessed dataset folder and reused by
every trainer (as in nnU-Net); a file the user put there is respected (checked, not changed). The
stratification key is the combination of every binary outcome (unknown counted as its own value),
every survival event and the centre. Combinations too rare to be spread over the folds are merged,
dropping the least important component first (the group, then survival events, then binary
endpoints from last to first), until each key occurs at least ``n_folds`` times. With a
``patient_column`` in dataset.json the folds are drawn by scikit-learn's ``StratifiedGroupKFold``
with the patient as the group: several exams or SRS courses of one patient are never split
between training and validation (they would leak the patient's outcome into validation).

``centre``: ``splits_centre.json``, fold k leaves out every case of the k-th centre of
``group_column`` (sorted by name) and trains on the others, the usual way multi-centre studies
show how a model transfers to a new centre.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.utilities.atomic_files import write_json_atomic

SPLITS_FILE = "splits_final.json"
CENTRE_SPLITS_FILE = "splits_centre.json"
SCHEMES = ("random", "centre")
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


def make_splits(case_ids: list[str], labels: np.ndarray, n_folds: int = 5, seed: int = DEFAULT_SEED,
                groups: list[str] | np.ndarray | None = None) -> list[dict[str, list[str]]]:
    """``[{"train": [...], "val": [...]}, ...]`` with sorted ids, reproducible from ``seed``; with
    ``groups`` (one patient id per case) a group never spans training and validation."""
    ids = np.asarray(case_ids)
    if len(ids) < n_folds:
        raise ValueError(f"{len(ids)} training cases cannot be split into {n_folds} folds")
    if groups is None:
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(ids, labels)
    else:
        groups = np.asarray(groups, dtype=str)
        if len(set(groups)) < n_folds:
            raise ValueError(f"{len(set(groups))} patients cannot be split into {n_folds} folds")
        folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(ids, labels, groups)
    return [{"train": sorted(ids[train].tolist()), "val": sorted(ids[val].tolist())} for train, val in folds]


def centre_splits(table: pd.DataFrame, spec: DatasetSpec) -> list[dict[str, Any]]:
    """One fold per centre of ``group_column`` (sorted): ``{"centre", "train", "val"}``."""
    if not spec.group_column or spec.group_column not in table:
        raise ValueError("the centre-held-out scheme needs a 'group_column' in dataset.json (the centre of each "
                         "case)")
    centres = table[spec.group_column].astype(str)
    names = sorted(centres.unique())
    if len(names) < 2:
        raise ValueError(f"the centre-held-out scheme needs at least two centres in '{spec.group_column}', "
                         f"found {names}")
    if spec.patient_column and spec.patient_column in table:
        spread = table.groupby(table[spec.patient_column].astype(str))[spec.group_column].nunique()
        if (spread > 1).any():
            raise ValueError(f"patient(s) {sorted(spread[spread > 1].index)[:5]} have cases in more than one centre "
                             f"('{spec.group_column}'); a centre-held-out fold would then see them in training")
    ids = table.index.astype(str)
    return [{"centre": name, "train": sorted(ids[(centres != name).to_numpy()].tolist()),
             "val": sorted(ids[(centres == name).to_numpy()].tolist())} for name in names]


def patients_in_two_sets(splits: list[dict[str, Any]], table: pd.DataFrame, spec: DatasetSpec
                         ) -> dict[int, list[str]]:
    """Per fold, the patients (``patient_column``) with cases in both its training and validation
    cases; {} without a patient column."""
    if not spec.patient_column or spec.patient_column not in table:
        return {}
    patient = table[spec.patient_column].astype(str)
    out = {}
    for k, fold in enumerate(splits):
        shared = set(patient.reindex(fold["train"]).dropna()) & set(patient.reindex(fold["val"]).dropna())
        if shared:
            out[k] = sorted(shared)
    return out


def load_or_create_splits(
    preprocessed_dataset_folder: Path, table: pd.DataFrame, spec: DatasetSpec, n_folds: int = 5,
    seed: int = DEFAULT_SEED, scheme: str = "random",
) -> list[dict[str, Any]]:
    """The dataset's splits of ``scheme``: read its file if it exists, else create and write it.

    A user-supplied file is checked (every fold's ids must be training cases, and no patient of the
    ``patient_column`` may be on both sides of a fold) but not changed.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; use one of {list(SCHEMES)}")
    path = Path(preprocessed_dataset_folder) / (SPLITS_FILE if scheme == "random" else CENTRE_SPLITS_FILE)
    if path.is_file():
        splits = json.loads(path.read_text(encoding="utf-8"))
        known = set(table.index)
        for k, fold in enumerate(splits):
            unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
            if unknown:
                raise ValueError(f"{path}: fold {k} names cases that are not training cases: {unknown[:5]}")
        leaking = patients_in_two_sets(splits, table, spec)
        if leaking:
            k, patients = next(iter(leaking.items()))
            raise ValueError(f"{path}: fold {k} has patient(s) {patients[:5]} ('{spec.patient_column}') in both its "
                             "training and validation cases; delete the file to have it made again by patient")
        return splits
    if scheme == "centre":
        splits = centre_splits(table, spec)
    else:
        groups = table[spec.patient_column].astype(str).to_numpy() if spec.patient_column else None
        splits = make_splits(list(table.index), stratification_labels(table, spec, n_folds), n_folds, seed, groups)
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
