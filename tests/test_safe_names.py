"""Names that reach file names are checked where they enter (dataset.json, case file names, a
model folder's plans), output paths cannot leave their folder, and dataset.json may not repeat a key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from glmil_auto.dataset.dataset_json import load_dataset_json, validate_dataset_json
from glmil_auto.dataset.problems import DatasetError
from glmil_auto.dataset.raw_dataset import RawDataset
from glmil_auto.dataset.safe_names import path_inside, unsafe_reason
from glmil_auto.dataset.verify import verify_dataset
from glmil_auto.inference.case_reader import list_prediction_cases
from glmil_auto.utilities.strict_json import DuplicateKeyError, loads_strict

GOOD = {"channel_names": {"0": "T1c", "1": "FLAIR"}, "labels": {"background": 0, "metastasis": 1},
        "numTraining": 1, "file_ending": ".nii.gz",
        "clinical_features": {"age": "numeric", "KPS (%)": "numeric"},
        "endpoints": {"local_failure": {"type": "binary"},
                      "os": {"type": "survival", "time": "os_months", "event": "os_event"}}}


@pytest.mark.parametrize("name", ["local_failure", "T1c", "KPS (%)", "age_years", "T1-post+Gd", "os 2y", "_x", "a.b"])
def test_ordinary_names_are_safe(name):
    assert unsafe_reason(name) is None


@pytest.mark.parametrize("name", ["../../../evil_lf", "..", ".", "a/b", "a\\\\b", "/etc/passwd", "x..y", "", "~root",
                                  "name.", "name ", "a\\nb", "é", "a:b", "x" * 129, 3, None])
def test_hostile_names_are_refused(name):
    assert unsafe_reason(name) is not None


def test_path_inside_keeps_files_in_their_folder(tmp_path):
    assert path_inside(tmp_path, "case_1.json") == tmp_path / "case_1.json"
    assert path_inside(tmp_path / "sub" / ".." / "sub", "x.nii.gz") == tmp_path / "sub" / "x.nii.gz"
    for hostile in ("../x.json", "a/../../x", "/tmp/x", "..", ".", "", "sub/x.json"):
        with pytest.raises(ValueError, match="not a file directly inside"):
            path_inside(tmp_path, hostile)


@pytest.mark.parametrize("key, value, message", [
    ("endpoints", {"../evil": {"type": "binary"}}, "endpoint name '../evil'"),
    ("channel_names", {"0": "T1c", "1": "../x"}, "channel name '../x'"),
    ("channel_names", {"0": "T1c", "1": "T1c"}, "['T1c'] name more than one channel"),
    ("clinical_features", {"a/b": "numeric"}, "clinical feature name 'a/b'"),
    ("file_ending", "./../../evil", "'file_ending' must be a string starting with '.', holding only"),
])
def test_dataset_json_refuses_names_that_cannot_be_file_names(key, value, message):
    assert validate_dataset_json(GOOD) == []
    problems = validate_dataset_json({**GOOD, key: value}, "dataset.json")
    assert any(message in p.message for p in problems), problems


def test_a_repeated_key_is_an_error_not_a_silent_overwrite(tmp_path):
    assert loads_strict('{"a": {"b": 1}, "c": 2}') == {"a": {"b": 1}, "c": 2}
    with pytest.raises(DuplicateKeyError, match="'b'"):
        loads_strict('{"a": {"b": 1, "b": 2}}')
    text = json.dumps(GOOD)[:-1] + ', "endpoints": {"distant_failure": {"type": "binary"}}}'
    assert json.loads(text)["endpoints"] == {"distant_failure": {"type": "binary"}}  # what json alone would do
    (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(DatasetError, match="'endpoints' appears more than once") as info:
        load_dataset_json(tmp_path)
    assert str(tmp_path / "dataset.json") in str(info.value)


def test_case_ids_from_file_names_are_checked(handmade_dataset: Path, tmp_path):
    images = handmade_dataset / "imagesTr"
    first = sorted(images.iterdir())[0]
    hostile = images / ("x..y_0000" + ".nii.gz")
    first.rename(hostile)
    with pytest.raises(DatasetError, match=r"case id 'x\.\.y' .*must not contain '\.\.'") as info:
        RawDataset(handmade_dataset).cases("Tr")
    assert "x..y_0000.nii.gz" in str(info.value)
    report = verify_dataset(handmade_dataset)
    assert any("case id 'x..y'" in str(p) for p in report.problems)
    with pytest.raises(DatasetError, match="case id 'x..y'"):
        list_prediction_cases(images, load_dataset_json(handmade_dataset))


def _refuse_constant(name: str):
    raise ValueError(f"non-standard JSON token {name}")


def test_json_files_are_strict_json_without_nan(tmp_path):
    """validation/summary.json once held NaN (an AUC without positives), which is not JSON."""
    from glmil_auto.utilities.atomic_files import write_json_atomic

    summary = {"metrics": {"local_failure": float("nan"), "os": np.float64("inf"), "ok": 0.7},
               "per_fold": [float("-inf"), 1.0], "n_cases": 3}
    write_json_atomic(tmp_path / "summary.json", summary)
    strict = json.loads((tmp_path / "summary.json").read_text(), parse_constant=_refuse_constant)
    assert strict == {"metrics": {"local_failure": None, "os": None, "ok": 0.7}, "per_fold": [None, 1.0], "n_cases": 3}


def test_dataset_json_checks_the_clinical_scores_block():
    content = {**GOOD, "clinical_scores": {"kps": "KPS (%)", "age": "age"}}
    assert validate_dataset_json(content) == []
    problems = validate_dataset_json({**GOOD, "clinical_scores": {"kps": "karnofsky"}}, "dataset.json")
    assert any("'karnofsky', which is not declared in 'clinical_features'" in p.message for p in problems), problems
