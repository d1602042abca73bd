"""glmil_evaluate is never silently wrong about its inputs: a probability outside [0, 1], a
non-finite risk or an empty prediction cell is one clear error naming the case and the column
(nothing written, nothing lost); a prediction whose case is not in the clinical table and a
clinical case without a prediction are reported (console and metrics.json), and errors with
--strict. A hand-written predictions.csv against a small raw dataset without images: no training."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from glmil_auto.dataset.dataset_json import spec_from_dict
from glmil_auto.evaluation.entry_points import evaluate_predictions_entry
from glmil_auto.evaluation.evaluate_command import evaluate_entry
from glmil_auto.evaluation.evaluation_inputs import coverage_messages, input_coverage
from glmil_auto.evaluation.prediction_metrics import PredictionEvaluationError, checked_output_column

N = 16
DATASET_JSON = {
    "channel_names": {"0": "T1c"}, "labels": {"background": 0, "metastasis": 1}, "numTraining": 0,
    "file_ending": ".nii.gz", "case_column": "case_id", "clinical_features": {"age": "numeric"},
    "endpoints": {"local_failure": {"type": "binary"},
                  "os": {"type": "survival", "time": "os_months", "event": "os_event"}},
}
SPEC = spec_from_dict(DATASET_JSON)
IDS = [f"BM_{i:03d}" for i in range(N)]


def _clinical_rows(seed: int = 0) -> list[list]:
    rng = np.random.default_rng(seed)
    lf = np.r_[np.zeros(N // 2), np.ones(N // 2)][rng.permutation(N)]
    return [[case, round(float(rng.normal(60, 10)), 1), int(y), round(float(rng.exponential(15)) + 1, 1),
             int(rng.random() < 0.7)] for case, y in zip(IDS, lf)]


def _predictions(rows: list[list], seed: int = 1) -> pd.DataFrame:
    """The columns glmil_predict writes (probabilities, risks, risk groups, survival at 12 and 24)."""
    rng = np.random.default_rng(seed)
    y = np.array([r[2] for r in rows], dtype=float)
    p = np.clip(0.3 + 0.3 * y + rng.normal(0, 0.15, N), 0.02, 0.98).round(3)
    risk = rng.normal(size=N).round(3)
    return pd.DataFrame({
        "case_id": IDS, "local_failure": p, "local_failure_uncalibrated": np.clip(p + 0.05, 0, 1),
        "os_risk": risk, "os_risk_group": np.where(risk > 0.4, "high", np.where(risk < -0.4, "low", "intermediate")),
        "os_surv_12": np.exp(-0.05 * 12 * np.exp(risk)).round(4), "os_surv_24": np.exp(-0.05 * 24 * np.exp(risk)).round(4),
    })


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A raw dataset (dataset.json, clinicalTr/Ts.csv; evaluation needs no image) and the
    predictions.csv of its 16 test cases."""
    folder = tmp_path / "raw" / "Dataset043_InputMets"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON))
    rows = _clinical_rows()
    for split in ("Tr", "Ts"):
        with open(folder / f"clinical{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case_id", "age", "local_failure", "os_months", "os_event"])
            writer.writerows(rows)
    monkeypatch.setenv("glmil_raw", str(tmp_path / "raw"))
    out = tmp_path / "predicted"
    out.mkdir()
    predictions = _predictions(rows)
    predictions.to_csv(out / "predictions.csv", index=False)
    return {"folder": folder, "csv": out / "predictions.csv", "predictions": predictions, "output": tmp_path / "ev"}


def _run(dataset, *extra: str, entry=evaluate_entry) -> int:
    return entry(["-d", "43", "-i", str(dataset["csv"]), "-o", str(dataset["output"]), "--n_bootstrap", "0",
                  "--no_progress", *extra])


def _metrics(dataset) -> dict:
    return json.loads((dataset["output"] / "metrics.json").read_text())


def _edit(dataset, change) -> None:
    frame = dataset["predictions"].astype(object).copy()
    change(frame)
    frame.to_csv(dataset["csv"], index=False)


def test_untouched_predictions_evaluate_all_sixteen_cases_without_a_warning(dataset, capsys):
    assert _run(dataset) == 0
    assert "warning" not in capsys.readouterr().err
    metrics = _metrics(dataset)
    assert metrics["endpoints"]["local_failure"]["cohorts"]["all"]["n"] == N
    assert metrics["inputs"]["unmatched_predictions"] == {"count": 0, "first": []}
    assert metrics["inputs"]["missing_predictions"] == {"count": 0, "first": []}


# ------------------------------------------------------------------------ values that are errors


@pytest.mark.parametrize("column, value, problem", [
    ("local_failure", "7.0", "7 is not a probability in [0, 1]"),  # the reported edit
    ("local_failure", "", "empty (NaN)"),  # the reported edit: a NaN prediction
    ("local_failure", "nan", "empty (NaN)"),
    ("local_failure_uncalibrated", "-0.1", "-0.1 is not a probability in [0, 1]"),
    ("os_surv_12", "1.5", "1.5 is not a probability in [0, 1]"),
    ("os_risk", "inf", "inf is not finite"),
    ("os_risk", "", "empty (NaN)"),
])
def test_a_bad_cell_is_one_error_naming_case_and_column_and_nothing_is_lost(dataset, capsys, column, value,
                                                                            problem):
    assert _run(dataset) == 0  # an earlier evaluation in the same folder
    before = {p.name: p.read_bytes() for p in dataset["output"].iterdir()}
    capsys.readouterr()
    _edit(dataset, lambda frame: frame.__setitem__(column, frame[column].where(frame.case_id != IDS[5], value)))
    assert _run(dataset) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"case '{IDS[5]}', column '{column}': {problem}" in err and str(dataset["csv"]) in err, err
    assert {p.name: p.read_bytes() for p in dataset["output"].iterdir()} == before


def test_several_bad_cells_are_counted_in_the_one_message(dataset, capsys):
    _edit(dataset, lambda frame: frame.__setitem__("local_failure", [7.0, 0.5, 1.2] + list(frame.local_failure[3:])))
    assert _run(dataset, entry=evaluate_predictions_entry) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"case '{IDS[0]}'" in err and "2 cells of this column are bad" in err
    assert not dataset["output"].exists()


def test_checked_output_column_accepts_the_bounds_and_names_the_case():
    values = pd.Series(["0", "1", "0.25", " 1e-3 "], index=["a", "b", "c", "d"])
    np.testing.assert_array_equal(checked_output_column(values, "p", probability=True), [0, 1, 0.25, 1e-3])
    np.testing.assert_array_equal(checked_output_column(pd.Series([-40.0, 3.0]), "r", probability=False), [-40, 3])
    with pytest.raises(PredictionEvaluationError, match=r"case 'b', column 'r': -inf is not finite"):
        checked_output_column(pd.Series(["1", "-inf"], index=["a", "b"]), "r", probability=False)


# ------------------------------------------------------------------ cases that do not match


def test_an_unknown_case_and_a_case_without_prediction_are_reported(dataset, capsys):
    # the reported edit: one prediction's case id changed to one the clinical table does not have
    _edit(dataset, lambda frame: frame.__setitem__("case_id", frame.case_id.replace(IDS[3], "BM_999")))
    assert _run(dataset) == 0
    err = capsys.readouterr().err
    assert "1 prediction(s) for cases that are not in clinicalTs.csv, not evaluated (first: ['BM_999'])" in err
    assert f"1 case(s) of clinicalTs.csv with a known outcome have no prediction, not evaluated (first: ['{IDS[3]}'])" \
        in err
    metrics = _metrics(dataset)
    assert metrics["inputs"]["unmatched_predictions"] == {"count": 1, "first": ["BM_999"]}
    assert metrics["inputs"]["missing_predictions"] == {"count": 1, "first": [IDS[3]]}
    assert metrics["endpoints"]["local_failure"]["cohorts"]["all"]["n"] == N - 1


def test_an_extra_prediction_and_a_dropped_row_are_reported_separately(dataset, capsys):
    extra = dict(dataset["predictions"].iloc[0], case_id="BM_500")
    frame = pd.concat([dataset["predictions"], pd.DataFrame([extra])], ignore_index=True)
    frame.to_csv(dataset["csv"], index=False)
    assert _run(dataset) == 0
    inputs = _metrics(dataset)["inputs"]
    assert inputs["unmatched_predictions"]["count"] == 1 and inputs["missing_predictions"]["count"] == 0
    assert _metrics(dataset)["endpoints"]["os"]["cohorts"]["all"]["n"] == N

    dataset["predictions"][~dataset["predictions"].case_id.isin(IDS[7:10])].to_csv(dataset["csv"], index=False)
    (dataset["csv"].parent / "failed_cases.json").write_text(json.dumps({IDS[8]: "unreadable image"}))
    assert _run(dataset) == 0
    inputs = _metrics(dataset)["inputs"]
    assert inputs["missing_predictions"] == {"count": 3, "first": IDS[7:10], "failed_in_prediction": 1}
    assert "1 of them failed in glmil_predict" in capsys.readouterr().err


def test_strict_turns_them_into_one_error_and_writes_nothing(dataset, capsys):
    _edit(dataset, lambda frame: frame.__setitem__("case_id", frame.case_id.replace(IDS[3], "BM_999")))
    assert _run(dataset, "--strict") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("glmil_evaluate: error: --strict: ")
    assert "['BM_999']" in err and f"['{IDS[3]}']" in err
    assert not dataset["output"].exists()
    dataset["predictions"].to_csv(dataset["csv"], index=False)
    assert _run(dataset, "--strict", entry=evaluate_predictions_entry) == 0  # nothing to report: evaluated


def test_no_case_in_common_names_the_unmatched_ids(dataset, capsys):
    _edit(dataset, lambda frame: frame.__setitem__("case_id", "X" + frame.case_id))
    assert _run(dataset) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has a prediction" in err and "none of the 16 predicted case ids" in err


def test_expected_cases_have_a_known_outcome_and_belong_to_the_evaluated_ids():
    table = pd.DataFrame({"local_failure": [1, 0, np.nan, np.nan, 1], "os_months": [5, 6, np.nan, 7, 8],
                          "os_event": [1, 0, np.nan, 1, 0]}, index=["a", "b", "c", "d", "e"])
    predicted = pd.Index(["a", "z"])
    coverage = input_coverage(predicted, table, SPEC, ["local_failure", "os"])
    # c has no outcome at all (not expected); d has a survival outcome
    assert coverage["missing_predictions"] == {"count": 3, "first": ["b", "d", "e"]}
    assert coverage["unmatched_predictions"] == {"count": 1, "first": ["z"]}
    only_binary = input_coverage(predicted, table, SPEC, ["local_failure"])
    assert only_binary["missing_predictions"]["first"] == ["b", "e"]  # d: no label for the predicted endpoint
    in_folds = input_coverage(predicted, table, SPEC, ["local_failure", "os"], expected=["a", "b", "c"])
    assert in_folds["missing_predictions"] == {"count": 1, "first": ["b"]}  # --cv: the evaluated folds' cases
    assert coverage_messages(in_folds, "clinicalTr.csv")[1].startswith("1 case(s) of clinicalTr.csv")
