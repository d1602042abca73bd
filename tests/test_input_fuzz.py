"""Fuzzing the two hand-written inputs of a dataset, dataset.json and the clinical CSV, with a
seeded generator: every input is either accepted or refused with a DatasetError whose message
names the file; nothing else (a KeyError, a TypeError, a traceback from pandas) ever escapes.
Also the clinical-table cases that once parsed silently wrong."""

from __future__ import annotations

import copy
import csv
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest

import handmade_dataset as handmade
from glmil_auto.dataset.clinical_table import parse_clinical_table, read_csv_as_text
from glmil_auto.dataset.dataset_json import DatasetSpec, load_dataset_json, spec_from_dict
from glmil_auto.dataset.problems import ERROR, DatasetError

JUNK_VALUES = [None, True, False, 0, -1, 1.5, 10**20, "", " ", "..", "../x", "a/b", "T1c", ".nii.gz", "nii",
               [], [1], ["a"], {}, {"0": "T1c"}, {"type": "binary"}, {"type": "survival"}, "\x00", "é", float("nan")]
KEYS = list(handmade.DATASET_JSON) + ["labels_extra", "0", ""]


def mutate_json(rng: random.Random, content: dict) -> dict:
    """One to three random edits at any depth: delete, replace by junk, add a junk key."""
    content = copy.deepcopy(content)
    for _ in range(rng.randint(1, 3)):
        target = content
        path = [content]
        while isinstance(target, dict) and target and rng.random() < 0.5:
            key = rng.choice(list(target))
            if not isinstance(target[key], dict):
                break
            target = target[key]
            path.append(target)
        if not isinstance(target, dict):
            continue
        action = rng.random()
        if action < 0.3 and target:
            del target[rng.choice(list(target))]
        elif action < 0.8 and target:
            target[rng.choice(list(target))] = rng.choice(JUNK_VALUES)
        else:
            target[rng.choice(KEYS)] = rng.choice(JUNK_VALUES)
    return content


def test_fuzzed_dataset_json_is_accepted_or_refused_with_a_named_file(tmp_path):
    rng = random.Random(0)
    accepted = refused = 0
    for i in range(300):
        content = mutate_json(rng, handmade.DATASET_JSON)
        if i % 10 == 0:  # a repeated key, which json alone would resolve silently
            text = json.dumps(content)[:-1] + ', "endpoints": {}}' if content else "{}"
        elif i % 17 == 0:
            text = json.dumps(content)[: rng.randint(0, 40)]  # truncated file
        else:
            text = json.dumps(content)
        (tmp_path / "dataset.json").write_text(text)
        try:
            spec = load_dataset_json(tmp_path)
        except DatasetError as exc:
            refused += 1
            assert all(p.severity == ERROR for p in exc.problems)
            assert str(tmp_path / "dataset.json") in str(exc)
        else:
            accepted += 1
            assert isinstance(spec, DatasetSpec)
    assert accepted > 10 and refused > 100  # both branches are exercised


CELLS = ["", " ", "NA", "nan", "inf", "-inf", "1e400", "4_5", "45", "45.5", "-3", "1,5", "0x10", "F", "M", "f",
         "yes", "no", "true", "2", "0", "1", "\"quoted, comma\"", "é", "\u00a0", "--", "1e-3", "1 000"]


def random_table(rng: random.Random) -> str:
    header = list(handmade.HEADER)
    if rng.random() < 0.2:
        header.remove(rng.choice(header))
    if rng.random() < 0.1:
        header.append(rng.choice(header))  # a repeated column
    if rng.random() < 0.1:
        header.append("extra column")
    cases = list(handmade.CASES_TR) + ([rng.choice(handmade.CASES_TR)] if rng.random() < 0.1 else [])
    rows = []
    for case in cases:
        row = [rng.choice(CELLS) for _ in header]
        if "subject" in header:
            row[header.index("subject")] = case if rng.random() < 0.95 else rng.choice(CELLS)
        rows.append(row)
    buffer = io.StringIO()
    delimiter = ";" if rng.random() < 0.05 else ","
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if rng.random() < 0.05:
        text = text[: rng.randint(0, len(text))]
    return text


def test_fuzzed_clinical_tables_are_accepted_or_refused_with_named_problems(tmp_path):
    spec = spec_from_dict(handmade.DATASET_JSON)
    rng = random.Random(1)
    path = tmp_path / "clinicalTr.csv"
    outcomes = {"typed": 0, "problems": 0, "unreadable": 0}
    for _ in range(300):
        path.write_text(random_table(rng), encoding="utf-8")
        try:
            typed, problems = parse_clinical_table(read_csv_as_text(path), spec, str(path),
                                                   expected_cases=list(handmade.CASES_TR))
        except DatasetError as exc:
            outcomes["unreadable"] += 1
            assert str(path) in str(exc)
            continue
        errors = [p for p in problems if p.severity == ERROR]
        assert all(p.file == str(path) for p in problems)
        if errors:
            outcomes["problems"] += 1
        else:
            outcomes["typed"] += 1
            for column, kind in spec.clinical_features.items():
                if kind == "numeric":
                    values = typed[column].to_numpy(float)
                    assert np.all(np.isfinite(values) | np.isnan(values))
    assert outcomes["problems"] > 100 and outcomes["typed"] + outcomes["unreadable"] > 0


def write_table(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def test_underscores_are_not_digit_separators_in_a_table(tmp_path):
    spec = spec_from_dict(handmade.DATASET_JSON)
    rows = [list(r) for r in handmade.CLINICAL_TR]
    rows[0][2] = "4_5"
    write_table(tmp_path / "c.csv", handmade.HEADER, rows)
    _, problems = parse_clinical_table(read_csv_as_text(tmp_path / "c.csv"), spec, "c.csv")
    assert any(p.case == handmade.CASES_TR[0] and "'age'" in p.message and "4_5" in p.message for p in problems), problems


def test_a_semicolon_separated_table_gets_a_delimiter_hint(tmp_path):
    spec = spec_from_dict(handmade.DATASET_JSON)
    write_table(tmp_path / "c.csv", handmade.HEADER, handmade.CLINICAL_TR, delimiter=";")
    _, problems = parse_clinical_table(read_csv_as_text(tmp_path / "c.csv"), spec, "c.csv")
    assert len(problems) == 1 and "case column 'subject'" in problems[0].message
    assert "separated by semicolons, save it comma-separated" in problems[0].message


@pytest.mark.parametrize("cell", ["45", "45.0", " 45 ", "4.5e1"])
def test_ordinary_numbers_still_parse(tmp_path, cell):
    spec = spec_from_dict(handmade.DATASET_JSON)
    rows = [list(r) for r in handmade.CLINICAL_TR]
    rows[0][2] = cell
    write_table(tmp_path / "c.csv", handmade.HEADER, rows)
    typed, problems = parse_clinical_table(read_csv_as_text(tmp_path / "c.csv"), spec, "c.csv")
    assert [p for p in problems if p.severity == ERROR] == [] and typed.loc[handmade.CASES_TR[0], "age"] == 45.0
