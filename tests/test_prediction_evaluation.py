"""Evaluating a predictions.csv with ``glmil_evaluate`` and its old name ``glmil_evaluate_predictions``:
AUC / Harrell's C agree with sklearn / sksurv, the case bootstrap equals the libraries on every
resample, the synthetic truth ceiling, exclusions, and one clear error for bad predictions."""

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
from glmil_auto.evaluation.evaluate_command import evaluate_entry
from glmil_auto.evaluation.prediction_metrics import bootstrap_replicates

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


def _raw_dataset(tmp_path, monkeypatch, with_truth: bool, n: int = 30) -> tuple:
    """dataset.json + clinicalTr/Ts.csv (no images: evaluation needs none) and maybe a truth file."""
    raw = tmp_path / "raw"
    folder = raw / "Dataset042_EvalMets"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON))
    table, predictions, truth = _cohort(n=n, seed=4)
    for split in ("Tr", "Ts"):
        with open(folder / f"clinical{split}.csv", "w", newline="") as f:
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
    return table, predictions, truth, out / "predictions.csv"


def _scores(metrics: dict, endpoint: str) -> dict:
    return metrics["endpoints"][endpoint]["cohorts"]["all"]["scores"]


def test_old_and_new_name_agree_with_sklearn_sksurv_and_the_truth_ceiling(tmp_path, monkeypatch, capsys):
    table, predictions, truth, csv_path = _raw_dataset(tmp_path, monkeypatch, with_truth=True)
    assert evaluate_predictions_entry(["-d", "42", "-i", str(csv_path), "--n_bootstrap", "200", "--no_progress"]) == 0
    printed = capsys.readouterr().out
    assert "truth (synthetic ceiling)" in printed and "Harrell's C" in printed
    metrics = json.loads((csv_path.parent / "evaluation" / "metrics.json").read_text())  # the default folder
    assert (csv_path.parent / "evaluation" / "report.html").is_file()

    known = table.local_failure.notna().to_numpy()
    binary = _scores(metrics, "local_failure")
    assert binary["model"]["auc"]["auc"] == pytest.approx(
        roc_auc_score(table.local_failure[known], predictions.local_failure[known]), abs=1e-12)
    p_true = np.array([truth["cases"][c]["probabilities"]["local_failure"] for c in table.index])
    assert binary["truth (synthetic ceiling)"]["auc"]["auc"] == pytest.approx(
        roc_auc_score(table.local_failure[known], p_true[known]), abs=1e-12)
    auc = binary["model"]["auc"]
    assert auc["ci_low"] <= auc["auc"] <= auc["ci_high"]
    survival = _scores(metrics, "os")
    assert survival["model"]["harrell"]["c_index"] == pytest.approx(
        concordance_index_censored(table.os_event.astype(bool), table.os_months, predictions.os_risk)[0], abs=1e-12)
    lp_true = np.array([truth["cases"][c]["os"]["linear_predictor"] for c in table.index])
    assert survival["truth (synthetic ceiling)"]["harrell"]["c_index"] == pytest.approx(
        concordance_index_censored(table.os_event.astype(bool), table.os_months, lp_true)[0], abs=1e-12)
    assert metrics["endpoints"]["local_failure"]["cohorts"]["all"]["n"] == known.sum()

    # the new name with an explicit folder gives the same numbers
    assert evaluate_entry(["-d", "42", "-i", str(csv_path), "--n_bootstrap", "200", "--no_progress",
                           "-o", str(tmp_path / "new")]) == 0
    again = json.loads((tmp_path / "new" / "metrics.json").read_text())
    assert again["endpoints"] == metrics["endpoints"]
    assert not [p for p in (tmp_path / "new").iterdir() if p.name.startswith(".tmp_")]


def test_old_split_option_reads_the_training_table_and_no_truth_means_no_ceiling(tmp_path, monkeypatch):
    _, _, _, csv_path = _raw_dataset(tmp_path, monkeypatch, with_truth=False)
    out = tmp_path / "elsewhere"
    assert evaluate_predictions_entry(["-d", "EvalMets", "-i", str(csv_path), "--n_bootstrap", "0", "-s", "Tr",
                                       "-o", str(out), "--no_progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clinical_table"].endswith("clinicalTr.csv")
    assert "truth (synthetic ceiling)" not in _scores(metrics, "os")


def test_missing_predictions_and_text_cells_are_handled(tmp_path, monkeypatch, capsys):
    table, predictions, _, csv_path = _raw_dataset(tmp_path, monkeypatch, with_truth=False)
    ids = list(table.index)
    changed = predictions.astype(str).replace("nan", "")
    changed.loc[changed.case_id == ids[1], "os_risk"] = ""  # empty prediction: an error, not a silent drop
    changed = changed[changed.case_id != ids[2]]  # no row at all
    changed.to_csv(csv_path, index=False)
    assert evaluate_entry(["-d", "42", "-i", str(csv_path), "--n_bootstrap", "0", "--no_progress"]) == 2
    assert f"case '{ids[1]}', column 'os_risk': empty" in capsys.readouterr().err
    changed = changed[changed.case_id != ids[1]]  # the case left out by removing its row instead
    changed.to_csv(csv_path, index=False)
    assert evaluate_entry(["-d", "42", "-i", str(csv_path), "--n_bootstrap", "0", "--no_progress"]) == 0
    metrics = json.loads((csv_path.parent / "evaluation" / "metrics.json").read_text())
    assert metrics["inputs"]["missing_predictions"] == {"count": 2, "first": ids[1:3]}
    assert "2 case(s) of clinicalTs.csv with a known outcome have no prediction" in capsys.readouterr().err
    keep = [c for c in ids if c not in ids[1:3]]
    p = predictions.set_index("case_id").loc[keep, "os_risk"]
    expected = concordance_index_censored(table.loc[keep, "os_event"].astype(bool), table.loc[keep, "os_months"], p)[0]
    assert _scores(metrics, "os")["model"]["harrell"]["c_index"] == pytest.approx(expected, abs=1e-12)
    assert metrics["endpoints"]["os"]["cohorts"]["all"]["n"] == len(keep)


@pytest.mark.parametrize("change, message", [
    (lambda p: p.drop(columns=["os_risk"]), "column 'os_risk' is missing"),
    (lambda p: p.drop(columns=["local_failure", "os_risk", "os_risk_group"]), "no prediction column"),
    (lambda p: p.drop(columns=["case_id"]), "no case id column 'case_id'"),
    (lambda p: p.assign(case_id="X" + p.case_id), "has a prediction"),
    (lambda p: p.assign(local_failure="high"), "column 'local_failure' holds values that are not numbers"),
    (lambda p: pd.concat([p, p.iloc[:1]]), "more than one row"),
])
def test_bad_predictions_give_one_clear_error_and_write_nothing(tmp_path, monkeypatch, capsys, change, message):
    _, predictions, _, csv_path = _raw_dataset(tmp_path, monkeypatch, with_truth=False, n=20)
    change(predictions).to_csv(csv_path, index=False)
    assert evaluate_predictions_entry(["-d", "42", "-i", str(csv_path), "--no_progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (csv_path.parent / "evaluation").exists()
