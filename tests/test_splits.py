"""Five-fold splits: stratified jointly, reproducible, created once, user files respected."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from glmil_auto.dataset.dataset_json import spec_from_dict
from glmil_auto.training.dataloading.splits import fold_cases, load_or_create_splits, make_splits, stratification_labels

SPEC = spec_from_dict({
    "channel_names": {"0": "T1c"}, "labels": {"background": 0, "met": 1}, "numTraining": 0, "file_ending": ".nii.gz",
    "group_column": "center",
    "endpoints": {"lf": {"type": "binary"}, "lmd": {"type": "binary"},
                  "os": {"type": "survival", "time": "os_months", "event": "os_event"}},
})


def cohort(n=200, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lf = (rng.random(n) < 0.3).astype(float)
    lf[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame({
        "lf": lf,
        "lmd": (rng.random(n) < 0.1).astype(float),
        "os_months": rng.exponential(10, n) + 0.1,
        "os_event": (rng.random(n) < 0.7).astype(float),
        "center": rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2]),
    }, index=pd.Index([f"case_{i:03d}" for i in range(n)], name="case_id"))


def test_folds_partition_the_cases_and_are_balanced():
    table = cohort()
    splits = make_splits(list(table.index), stratification_labels(table, SPEC, 5))
    assert len(splits) == 5
    vals = [set(f["val"]) for f in splits]
    assert set().union(*vals) == set(table.index) and sum(len(v) for v in vals) == len(table)
    for fold in splits:
        assert not set(fold["train"]) & set(fold["val"])
        val = table.loc[fold["val"]]
        # every fold mirrors the cohort: positives, events and centres within a few cases of 1/5
        for column, value in (("lf", 1.0), ("lmd", 1.0), ("os_event", 1.0), ("center", "A"), ("center", "C")):
            expected = (table[column] == value).sum() / 5
            assert abs((val[column] == value).sum() - expected) <= 3, (column, value)


def test_stratified_folds_are_closer_to_the_cohort_than_random_folds():
    def imbalance(table, splits):
        total = 0.0
        for column, value in (("lf", 1.0), ("lmd", 1.0), ("os_event", 1.0), ("center", "A"), ("center", "C")):
            expected = (table[column] == value).sum() / len(splits)
            total += sum(abs((table.loc[f["val"], column] == value).sum() - expected) for f in splits)
        return total

    stratified = random = 0.0
    for seed in range(5):
        table = cohort(seed=seed)
        stratified += imbalance(table, make_splits(list(table.index), stratification_labels(table, SPEC, 5)))
        random += imbalance(table, make_splits(list(table.index), np.zeros(len(table))))
    assert stratified < 0.75 * random


def test_rare_combinations_are_merged_until_every_key_fits():
    table = cohort(n=40, seed=2)
    labels = stratification_labels(table, SPEC, 5)
    counts = pd.Series(labels).value_counts()
    assert counts.min() >= 5


def test_reproducible_and_seeded():
    table = cohort()
    labels = stratification_labels(table, SPEC, 5)
    assert make_splits(list(table.index), labels, seed=3) == make_splits(list(table.index), labels, seed=3)
    assert make_splits(list(table.index), labels, seed=3) != make_splits(list(table.index), labels, seed=4)


def test_created_once_and_user_file_respected(tmp_path):
    table = cohort(n=30)
    first = load_or_create_splits(tmp_path, table, SPEC)
    assert json.loads((tmp_path / "splits_final.json").read_text()) == first
    assert load_or_create_splits(tmp_path, table, SPEC) == first
    custom = [{"train": list(table.index[:20]), "val": list(table.index[20:])}]
    (tmp_path / "splits_final.json").write_text(json.dumps(custom))
    assert load_or_create_splits(tmp_path, table, SPEC) == custom
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["ghost"], "val": []}]))
    with pytest.raises(ValueError, match="not training cases: \\['ghost'\\]"):
        load_or_create_splits(tmp_path, table, SPEC)


def test_fold_all_and_bad_fold():
    table = cohort(n=30)
    splits = make_splits(list(table.index), np.zeros(30))
    train, val = fold_cases(splits, "all", list(table.index))
    assert train == val == sorted(table.index)
    assert fold_cases(splits, 2, list(table.index)) == (splits[2]["train"], splits[2]["val"])
    with pytest.raises(ValueError, match="fold 7 does not exist"):
        fold_cases(splits, 7, list(table.index))


PATIENT_SPEC = spec_from_dict({**SPEC.raw, "patient_column": "patient_id"})


def cohort_with_repeat_exams(n_patients=60, seed=0) -> pd.DataFrame:
    """1-4 exams (SRS courses) per patient, one centre per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        centre = rng.choice(["A", "B", "C"])
        for exam in range(int(rng.integers(1, 5))):
            rows.append({"case_id": f"pt{p:03d}_exam{exam}", "patient_id": f"pt{p:03d}", "center": centre,
                         "lf": float(rng.random() < 0.3), "lmd": float(rng.random() < 0.1),
                         "os_months": float(rng.exponential(10) + 0.1), "os_event": float(rng.random() < 0.7)})
    return pd.DataFrame(rows).set_index("case_id")


def test_exams_of_one_patient_never_span_training_and_validation(tmp_path):
    from glmil_auto.training.dataloading.splits import patients_in_two_sets

    table = cohort_with_repeat_exams()
    assert table["patient_id"].value_counts().max() > 1
    splits = load_or_create_splits(tmp_path, table, PATIENT_SPEC)
    assert patients_in_two_sets(splits, table, PATIENT_SPEC) == {}
    vals = [set(f["val"]) for f in splits]
    assert set().union(*vals) == set(table.index) and sum(len(v) for v in vals) == len(table)
    for fold in splits:
        train_patients = set(table.loc[fold["train"], "patient_id"])
        val_patients = set(table.loc[fold["val"], "patient_id"])
        assert not train_patients & val_patients
    # the same cohort split by case (no patient column) does put a patient on both sides
    by_case = make_splits(list(table.index), stratification_labels(table, SPEC, 5))
    assert patients_in_two_sets(by_case, table, PATIENT_SPEC)
    # a splits file made before the patient column was declared is refused, with what to do
    (tmp_path / "splits_final.json").write_text(json.dumps(by_case))
    with pytest.raises(ValueError, match="in both its training and validation cases; delete the file"):
        load_or_create_splits(tmp_path, table, PATIENT_SPEC)


def test_centre_held_out_gives_one_fold_per_centre(tmp_path):
    table = cohort_with_repeat_exams(seed=1)
    splits = load_or_create_splits(tmp_path, table, PATIENT_SPEC, scheme="centre")
    assert (tmp_path / "splits_centre.json").is_file() and not (tmp_path / "splits_final.json").exists()
    assert [f["centre"] for f in splits] == ["A", "B", "C"]
    for fold in splits:
        assert set(table.loc[fold["val"], "center"]) == {fold["centre"]}
        assert fold["centre"] not in set(table.loc[fold["train"], "center"])
        assert set(fold["train"]) | set(fold["val"]) == set(table.index)
    one_centre = table.assign(center="A")
    with pytest.raises(ValueError, match="at least two centres"):
        load_or_create_splits(tmp_path / "one", one_centre, PATIENT_SPEC, scheme="centre")
    moved = table.copy()  # one exam of a patient with several exams moved to another centre
    patient = moved["patient_id"].value_counts().index[0]
    case = moved.index[moved["patient_id"] == patient][0]
    moved.loc[case, "center"] = "B" if moved.loc[case, "center"] != "B" else "C"
    with pytest.raises(ValueError, match="more than one centre"):
        load_or_create_splits(tmp_path / "moved", moved, PATIENT_SPEC, scheme="centre")
    no_group = spec_from_dict({k: v for k, v in SPEC.raw.items() if k != "group_column"})
    with pytest.raises(ValueError, match="needs a 'group_column'"):
        load_or_create_splits(tmp_path / "none", table, no_group, scheme="centre")


def test_patient_column_is_validated_and_read():
    from glmil_auto.dataset.problems import DatasetError

    assert PATIENT_SPEC.patient_column == "patient_id"
    with pytest.raises(DatasetError, match="'patient_column' must be a non-empty string"):
        spec_from_dict({**SPEC.raw, "patient_column": ""})
