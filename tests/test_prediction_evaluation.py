"""Evaluation of a predictions.csv: AUC / Harrell's C agree with sklearn / sksurv, bootstrap CI,
truth ceiling, exclusions, and the ``glmil_evaluate_predictions`` command line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from glmil_auto.dataset.dataset_json import spec_from_dict
from glmil_auto.evaluation.entry_points import evaluate_predictions_entry
from glmil_auto.evaluation.prediction_metrics import (
    RESULT_COLUMNS,
    PredictionEvaluationError,
    bootstrap_replicates,
    evaluate_predictions,
)

DATASET_JSON = {
    "channel_names": {"0": "T1c"},
    "labels": {"background": 0, "metastasis": 1},
    "numTraining": 0,
    "file_ending": ".nii.gz",
    "case_column": "case_id",
    "clinical_features": {"age": "numeric"},
    "endpoints": {
        "local_failure": {"type": "binary"},
        "os": {"type": "survival", "time": "os_months", "event": "os_event"},
    },
}
SPEC = spec_from_dict(DATASET_JSON)


def _cohort(n: int = 80, seed: int = 0):
    """Typed table + predictions with tied scores, tied times, censoring and unknown outcomes."""
    rng = np.random.default_rng(seed)
    ids = [f"SBM_{i:04d}" for i in range(n)]
    p_true = rng.uniform(0.05, 0.95, n)
    lp_true = rng.normal(size=n)
    y = (rng.random(n) < p_true).astype(float)
    y[rng.random(n) < 0.1] = np.nan
    time = np.round(rng.exponential(12 * np.exp(-lp_true)), 0) + 1.0  # rounded: tied times
    event = (rng.random(n) < 0.7).astype(float)
    table = pd.DataFrame(
        {"age": rng.normal(60, 10, n), "local_failure": y, "os_months": time, "os_event": event},
        index=pd.Index(ids, name="case_id"),
    )
    prob = np.round(np.clip(p_true + rng.normal(0, 0.25, n), 0, 1), 1)  # rounded: tied scores
    risk = np.round(lp_true + rng.normal(0, 0.8, n), 1)
    predictions = pd.DataFrame({
        "case_id": ids, "local_failure": prob, "os_risk": risk,
        "os_risk_group": np.where(risk > 0.5, "high", np.where(risk < -0.5, "low", "intermediate")),
    })
    truth = {"format": "glmil_auto synthetic truth", "cases": {
        c: {"probabilities": {"local_failure": float(p)}, "os": {"linear_predictor": float(lp)}}
        for c, p, lp in zip(ids, p_true, lp_true)
    }}
    return table, predictions, truth


def _row(result: pd.DataFrame, endpoint: str) -> pd.Series:
    return result.set_index("endpoint").loc[endpoint]


def test_point_estimates_equal_sklearn_auc_and_sksurv_c_index():
    table, predictions, _ = _cohort()
    result = evaluate_predictions(predictions, table, SPEC, n_bootstrap=0)
    assert list(result.columns) == RESULT_COLUMNS and list(result.endpoint) == ["local_failure", "os"]

    known = table.local_failure.notna().to_numpy()
    auc = roc_auc_score(table.local_failure[known], predictions.local_failure[known])
    lf = _row(result, "local_failure")
    assert lf.metric == "AUC" and lf.model == pytest.approx(auc, abs=1e-12)
    assert lf.n == known.sum() and lf.events == table.local_failure.sum() and lf.unknown_outcome == (~known).sum()

    c = concordance_index_censored(table.os_event.astype(bool), table.os_months, predictions.os_risk)[0]
    os_row = _row(result, "os")
    assert os_row.metric == "Harrell's C" and os_row.model == pytest.approx(c, abs=1e-12)
    assert os_row.n == len(table) and os_row.events == table.os_event.sum()
    assert np.isnan(os_row.ci_low) and np.isnan(os_row.truth_ceiling)  # no bootstrap, no truth


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bootstrap_replicates_equal_the_libraries_on_each_resample(seed):
    table, predictions, _ = _cohort(n=40, seed=seed)
    known = table.local_failure.notna().to_numpy()
    y, p = table.local_failure.to_numpy()[known], predictions.local_failure.to_numpy()[known]
    reps = bootstrap_replicates("binary", p, y, None, 25, np.random.default_rng(seed))
    draws = np.random.default_rng(seed).integers(0, len(p), size=(25, len(p)))
    for value, d in zip(reps, draws):
        expected = roc_auc_score(y[d], p[d]) if np.unique(y[d]).size == 2 else np.nan
        np.testing.assert_allclose(value, expected, atol=1e-12)

    t, e, r = table.os_months.to_numpy(), table.os_event.to_numpy(), predictions.os_risk.to_numpy()
    reps = bootstrap_replicates("survival", r, e, t, 25, np.random.default_rng(seed))
    draws = np.random.default_rng(seed).integers(0, len(r), size=(25, len(r)))
    for value, d in zip(reps, draws):
        expected = concordance_index_censored(e[d].astype(bool), t[d], r[d])[0]
        np.testing.assert_allclose(value, expected, atol=1e-12)


def test_bootstrap_ci_contains_the_estimate_and_is_reproducible():
    table, predictions, _ = _cohort()
    a = evaluate_predictions(predictions, table, SPEC, n_bootstrap=300, seed=7)
    b = evaluate_predictions(predictions, table, SPEC, n_bootstrap=300, seed=7)
    c = evaluate_predictions(predictions, table, SPEC, n_bootstrap=300, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.ci_low, c.ci_low)
    assert (a.ci_low <= a.model).all() and (a.model <= a.ci_high).all() and (a.ci_low < a.ci_high).all()
    assert (a.n_bootstrap_valid == 300).all()
    # an endpoint's interval does not depend on which other endpoints are evaluated
    alone = evaluate_predictions(predictions.drop(columns=["local_failure"]), table, SPEC, n_bootstrap=300, seed=7)
    assert _row(alone, "os").ci_low == _row(a, "os").ci_low


def test_truth_ceiling_from_a_handmade_truth_dict():
    table, predictions, truth = _cohort()
    result = evaluate_predictions(predictions, table, SPEC, truth=truth, n_bootstrap=0)
    ids = list(table.index)
    known = table.local_failure.notna().to_numpy()
    p_true = np.array([truth["cases"][c]["probabilities"]["local_failure"] for c in ids])
    lp_true = np.array([truth["cases"][c]["os"]["linear_predictor"] for c in ids])
    assert _row(result, "local_failure").truth_ceiling == pytest.approx(
        roc_auc_score(table.local_failure[known], p_true[known]), abs=1e-12)
    assert _row(result, "os").truth_ceiling == pytest.approx(
        concordance_index_censored(table.os_event.astype(bool), table.os_months, lp_true)[0], abs=1e-12)
    assert (result.n_truth == result.n).all()

    # a case without truth: no ceiling rather than one on other cases
    del truth["cases"][ids[0]]
    partial = evaluate_predictions(predictions, table, SPEC, truth=truth, n_bootstrap=0)
    assert _row(partial, "os").n_truth == len(ids) - 1 and np.isnan(_row(partial, "os").truth_ceiling)


def test_missing_predictions_and_unknown_outcomes_are_excluded():
    table, predictions, _ = _cohort()
    ids = list(table.index)
    predictions = predictions.copy()
    predictions.loc[predictions.case_id == ids[1], "os_risk"] = np.nan   # empty prediction
    predictions = predictions[predictions.case_id != ids[2]]           # no row at all
    extra = pd.DataFrame({"case_id": ["NOT_IN_TABLE"], "local_failure": [0.5], "os_risk": [0.0],
                          "os_risk_group": ["intermediate"]})
    predictions = pd.concat([predictions, extra], ignore_index=True)
    table = table.copy()
    table.loc[ids[3], ["os_months", "os_event"]] = np.nan                # unknown outcome

    result = evaluate_predictions(predictions, table, SPEC, n_bootstrap=0)
    os_row = _row(result, "os")
    assert os_row.missing_prediction == 2 and os_row.unknown_outcome == 2 and os_row.n == len(ids) - 3
    keep = [c for c in ids if c not in ids[1:4]]
    p = predictions.set_index("case_id").loc[keep, "os_risk"]
    expected = concordance_index_censored(table.loc[keep, "os_event"].astype(bool), table.loc[keep, "os_months"], p)[0]
    assert os_row.model == pytest.approx(expected, abs=1e-12)

    lf = _row(result, "local_failure")
    n_unknown = int(table.local_failure.isna().sum())
    assert lf.missing_prediction == (0 if np.isnan(table.loc[ids[2], "local_failure"]) else 1)
    assert lf.unknown_outcome == n_unknown + 1  # the unknown ones still predicted + NOT_IN_TABLE


def test_text_predictions_endpoint_subset_and_skipped_outcomes():
    table, predictions, _ = _cohort(n=30)
    as_text = predictions.astype(str).replace("nan", "")
    numeric = evaluate_predictions(predictions, table, SPEC, n_bootstrap=0)
    text = evaluate_predictions(as_text, table, SPEC, n_bootstrap=0)
    np.testing.assert_allclose(text.model, numeric.model, atol=1e-12)
    only_binary = evaluate_predictions(predictions[["case_id", "local_failure"]], table, SPEC, n_bootstrap=0)
    assert list(only_binary.endpoint) == ["local_failure"]
    no_os = evaluate_predictions(predictions, table.drop(columns=["os_months", "os_event"]), SPEC, n_bootstrap=0)
    assert list(no_os.endpoint) == ["local_failure"] and "os" in no_os.attrs["skipped"]


@pytest.mark.parametrize("change, message", [
    (lambda p: p.drop(columns=["os_risk"]), "column 'os_risk' is missing"),
    (lambda p: p.drop(columns=["local_failure", "os_risk", "os_risk_group"]), "no prediction column"),
    (lambda p: p.drop(columns=["case_id"]), "no case id column 'case_id'"),
    (lambda p: p.assign(case_id="X" + p.case_id), "no case id of the predictions is in the clinical table"),
    (lambda p: p.assign(local_failure="high"), "column 'local_failure' holds values that are not numbers"),
    (lambda p: pd.concat([p, p.iloc[:1]]), "more than one row"),
])
def test_bad_predictions_raise_a_clear_error(change, message):
    table, predictions, _ = _cohort(n=20)
    with pytest.raises(PredictionEvaluationError, match=message):
        evaluate_predictions(change(predictions), table, SPEC, n_bootstrap=0)


# ------------------------------------------------------------------------------------------- command line


def _raw_dataset(tmp_path, monkeypatch, with_truth: bool) -> tuple:
    """dataset.json + clinicalTs.csv (no images: evaluation needs none) and maybe a truth file."""
    raw = tmp_path / "raw"
    folder = raw / "Dataset042_EvalMets"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON))
    table, predictions, truth = _cohort(n=30, seed=4)
    with open(folder / "clinicalTs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "age", "local_failure", "os_months", "os_event"])
        for case, r in table.iterrows():
            writer.writerow([case, f"{r.age:.1f}", "" if np.isnan(r.local_failure) else int(r.local_failure),
                             r.os_months, int(r.os_event)])
    if with_truth:
        (raw / "Dataset042_EvalMets_truth.json").write_text(json.dumps({**truth, "version": 1}))
    out = tmp_path / "inference"
    out.mkdir()
    predictions.to_csv(out / "predictions.csv", index=False)
    monkeypatch.setenv("glmil_raw", str(raw))
    return table, predictions, out / "predictions.csv"


def test_cli_prints_the_table_and_writes_json_with_the_ceiling(tmp_path, monkeypatch, capsys):
    table, predictions, csv_path = _raw_dataset(tmp_path, monkeypatch, with_truth=True)
    assert evaluate_predictions_entry(["-d", "42", "-i", str(csv_path), "--n_bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "model [95% CI]" in printed and "truth ceiling" in printed and "Harrell's C" in printed
    document = json.loads((csv_path.parent / "evaluation.json").read_text())
    assert document["dataset"] == "Dataset042_EvalMets" and document["split"] == "Ts"
    assert document["truth_file"].endswith("Dataset042_EvalMets_truth.json") and document["n_bootstrap"] == 200
    rows = {r["endpoint"]: r for r in document["endpoints"]}
    expected = concordance_index_censored(table.os_event.astype(bool), table.os_months, predictions.os_risk)[0]
    assert rows["os"]["model"] == pytest.approx(expected, abs=1e-12)
    assert rows["os"]["truth_ceiling"] is not None and rows["local_failure"]["ci_low"] <= rows["local_failure"]["model"]
    assert not [p for p in csv_path.parent.iterdir() if p.name.startswith(".tmp_")]  # atomic write left nothing


def test_cli_without_truth_and_with_output_option(tmp_path, monkeypatch, capsys):
    _, _, csv_path = _raw_dataset(tmp_path, monkeypatch, with_truth=False)
    out_json = tmp_path / "elsewhere" / "metrics.json"
    assert evaluate_predictions_entry(["-d", "EvalMets", "-i", str(csv_path), "--n_bootstrap", "0",
                                       "-s", "Ts", "-o", str(out_json)]) == 0
    assert "no truth file" in capsys.readouterr().out
    document = json.loads(out_json.read_text())
    assert document["truth_file"] is None and all(r["truth_ceiling"] is None for r in document["endpoints"])


def test_cli_missing_column_gives_one_clear_error(tmp_path, monkeypatch, capsys):
    _, predictions, csv_path = _raw_dataset(tmp_path, monkeypatch, with_truth=False)
    predictions.drop(columns=["os_risk"]).to_csv(csv_path, index=False)
    assert evaluate_predictions_entry(["-d", "42", "-i", str(csv_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(csv_path) in err and "'os_risk' is missing" in err
    assert not (csv_path.parent / "evaluation.json").exists()


def test_rare_outcome_drops_unusable_resamples_and_says_so():
    from glmil_auto.evaluation.prediction_metrics import format_result

    table, predictions, _ = _cohort(n=20)
    table = table.assign(local_failure=[1.0] + [0.0] * 19)  # one positive
    result = evaluate_predictions(predictions, table, SPEC, n_bootstrap=200)
    lf = _row(result, "local_failure")
    assert lf.events == 1 and 0 < lf.n_bootstrap_valid < 200 and lf.ci_low <= lf.model <= lf.ci_high
    assert "local_failure: only" in format_result(result) and "the CI is unreliable" in format_result(result)
