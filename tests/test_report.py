"""The HTML report of glmil_evaluate: figures (report_plots), the report (report_html) and the
Chromium screenshot (render_report), on a realistic synthetic ``metrics`` dict."""

from __future__ import annotations

import io
import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from markupsafe import escape
from matplotlib.image import imread
from scipy.stats import chi2_contingency, norm

from glmil_auto.evaluation.report import report_plots
from glmil_auto.evaluation.report.render_report import render_to_png
from glmil_auto.evaluation.report.report_html import format_ci, format_number, format_p_value, render_report, write_report

DATASET = 'Dataset001_BrainMets <script>alert("x")</script>'
COMMAND = ["glmil_evaluate", "-d", "Dataset001_BrainMets", "-p", "/data/predictions/oof predictions.csv",
           "-m", "/models/Dataset001_BrainMets/GlmilTrainer__plans__3d", "--bootstrap", "2000"]
BINARY = "local_failure"
SURVIVAL = "overall_survival"
HAS_CHROMIUM = Path("/usr/bin/chromium").exists()


# ------------------------------------------------------------------------ synthetic metrics


def _json_safe(value: Any) -> Any:
    """NaN / inf -> None and numpy scalars / arrays -> Python, as the metrics JSON has them."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    pos, neg = p[y == 1], p[y == 0]
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def _roc(y: np.ndarray, p: np.ndarray) -> dict[str, list[float]]:
    order = np.argsort(-p, kind="stable")
    tp = np.r_[0, np.cumsum(y[order] == 1)] / max((y == 1).sum(), 1)
    fp = np.r_[0, np.cumsum(y[order] == 0)] / max((y == 0).sum(), 1)
    return {"fpr": fp.tolist(), "tpr": tp.tolist()}


def _binary_entry(rng: np.random.Generator, y: np.ndarray, scores: dict[str, np.ndarray]) -> dict[str, Any]:
    entry: dict[str, Any] = {"n": int(y.size), "events": int(y.sum()), "scores": {}, "comparisons": [],
                             "calibration_curve": {}}
    thresholds = np.round(np.arange(0.01, 0.61, 0.01), 2)
    prevalence = y.mean()
    odds = thresholds / (1 - thresholds)
    dca = {"thresholds": thresholds, "treat_all": prevalence - (1 - prevalence) * odds,
           "treat_none": np.zeros_like(thresholds), "curves": {}}
    for name, p in scores.items():
        auc = _auc(y, p)
        se = 0.035 + 0.01 * rng.random()
        entry["scores"][name] = {
            "auc": {"auc": auc, "ci_low": auc - 1.96 * se, "ci_high": min(auc + 1.96 * se, 1.0)},
            "auprc": float(np.mean(p[y == 1])) + 0.05,
            "brier": float(np.mean((p - y) ** 2)),
            "calibration": {"intercept": 0.08, "intercept_ci_low": -0.25, "intercept_ci_high": 0.41,
                            "slope": 0.92, "slope_ci_low": 0.61, "slope_ci_high": 1.23},
            "ici": {"estimate": 0.031, "ci_low": 0.012, "ci_high": 0.058},
            "e50": {"estimate": 0.024, "ci_low": 0.008, "ci_high": 0.049},
            "e90": {"estimate": 0.067, "ci_low": 0.027, "ci_high": 0.121},
            "emax": {"estimate": 0.094, "ci_low": None, "ci_high": None},
            "ece": {"estimate": 0.052, "n_bins": 10},
            "roc": _roc(y, p),
        }
        edges = np.quantile(p, np.linspace(0, 1, 9))
        bins = np.clip(np.searchsorted(edges[1:-1], p, side="left"), 0, 7)
        rows = []
        for b in range(8):
            member = bins == b
            k, n = int(y[member].sum()), int(member.sum())
            low, high = _wilson(k, n)
            rows.append({"mean_predicted": float(p[member].mean()), "observed": k / n,
                         "ci_low": low, "ci_high": high, "n": n})
        # the curve: linear between the groups, a band of +-0.1 (the report only draws it)
        grid = np.linspace(p.min(), p.max(), 21)
        observed = np.interp(grid, [r["mean_predicted"] for r in rows], [r["observed"] for r in rows])
        entry["calibration_curve"][name] = {
            "smoothed": {"predicted": grid, "observed": observed, "ci_low": np.clip(observed - 0.1, 0, 1),
                         "ci_high": np.clip(observed + 0.1, 0, 1)},
            "groups": rows, "n_groups": len(rows), "predictions": p, "outcomes": y.astype(int), "ici": 0.031}
        positive = p[None, :] >= thresholds[:, None]
        tp = (positive & (y == 1)).sum(axis=1) / y.size
        fp = (positive & (y == 0)).sum(axis=1) / y.size
        dca["curves"][name] = tp - fp * odds
    model = next(iter(scores))
    for name in list(scores)[1:]:
        a, b = entry["scores"][model]["auc"]["auc"], entry["scores"][name]["auc"]["auc"]
        entry["comparisons"].append({"baseline": name, "auc_a": a, "auc_b": b, "difference": a - b,
                                     "p_value": float(2 * norm.sf(abs(a - b) / 0.04)), "test": "DeLong"})
    entry["decision_curve"] = dca
    groups = np.digitize(scores[model], np.quantile(scores[model], [1 / 3, 2 / 3]))
    labels = np.array(["low", "intermediate", "high"])[groups]
    table, counts = [], []
    for label in ("low", "intermediate", "high"):
        member = labels == label
        k, n = int(y[member].sum()), int(member.sum())
        low, high = _wilson(k, n)
        table.append({"group": label, "n": n, "events": k, "rate": k / n, "ci_low": low, "ci_high": high})
        counts.append([k, n - k])
    statistic, p_value, _, _ = chi2_contingency(np.asarray(counts))
    entry["risk_groups"] = {"table": table, "test": {"test": "chi2", "statistic": statistic, "p_value": p_value}}
    return entry


def _kaplan_meier(time: np.ndarray, event: np.ndarray, at_times: list[float]) -> dict[str, Any]:
    unique = np.unique(time)
    survival, variance, s = [], [], 1.0
    greenwood = 0.0
    for u in unique:
        at_risk = int((time >= u).sum())
        died = int(((time == u) & (event == 1)).sum())
        s *= 1 - died / at_risk
        if at_risk > died:
            greenwood += died / (at_risk * (at_risk - died))
        survival.append(s)
        variance.append(greenwood)
    survival_arr, var = np.asarray(survival), np.asarray(variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.log(survival_arr)
        half = 1.96 * np.sqrt(var) / np.abs(log_s)
        low = np.where(log_s < 0, survival_arr ** np.exp(half), 1.0)
        high = np.where(log_s < 0, survival_arr ** np.exp(-half), 1.0)
    return {"time": unique, "survival": survival_arr, "ci_low": low, "ci_high": high,
            "n": int(time.size), "events": int(event.sum()),
            "n_at_risk": [int((time >= a).sum()) for a in at_times]}


def _harrell(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    comparable = (time[:, None] < time[None, :]) & (event[:, None] == 1)
    concordant = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    return float((concordant * comparable).sum() / comparable.sum())


def _survival_entry(rng: np.random.Generator, time: np.ndarray, event: np.ndarray,
                    risks: dict[str, np.ndarray]) -> dict[str, Any]:
    entry: dict[str, Any] = {"n": int(time.size), "events": int(event.sum()), "scores": {}, "comparisons": []}
    horizons = [12.0, 24.0, 36.0]
    for name, risk in risks.items():
        c = _harrell(time, event, risk)
        entry["scores"][name] = {
            "harrell": {"c_index": c, "ci_low": c - 0.06, "ci_high": c + 0.06},
            "uno": {"c_index": c - 0.01, "ci_low": c - 0.08, "ci_high": c + 0.06},
            "td_auc": {"horizons": horizons, "auc": [c + 0.02 * rng.standard_normal() for _ in horizons]},
        }
    model = next(iter(risks))
    for name in list(risks)[1:]:
        a, b = entry["scores"][model]["harrell"]["c_index"], entry["scores"][name]["harrell"]["c_index"]
        entry["comparisons"].append({"baseline": name, "c_a": a, "c_b": b, "difference": a - b, "p_value": 0.0004})
    entry["integrated_brier"] = {"integrated_brier": 0.164}
    at_times = [0.0, 12.0, 24.0, 36.0, 48.0]
    risk = risks[model]
    labels = np.where(risk >= np.median(risk), "high risk", "low risk")
    km = {"groups": {label: _kaplan_meier(time[labels == label], event[labels == label], at_times)
                     for label in ("low risk", "high risk")}, "at_times": at_times}
    entry["risk_groups"] = {
        "km": km,
        "logrank": {"statistic": 14.2, "p_value": 0.00016},
        "hazard_ratios": {"reference": "low risk", "groups": {
            "high risk": {"hazard_ratio": 2.41, "ci_low": 1.52, "ci_high": 3.82, "p_value": 0.0002}}},
    }
    return entry


def build_metrics(seed: int = 0) -> dict[str, Any]:
    """A realistic, JSON-safe metrics dict: 2 endpoints (binary with model + clinical baseline,
    survival), cohorts all / two centres, cohort table and multivariable models."""
    rng = np.random.default_rng(seed)
    n = 180
    centre = np.where(rng.random(n) < 0.55, "centre A", "centre B")
    latent = rng.standard_normal(n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.4 * latent - 0.8)))).astype(int)
    model = 1 / (1 + np.exp(-(1.2 * latent + 0.6 * rng.standard_normal(n) - 0.8)))
    clinical = 1 / (1 + np.exp(-(0.5 * latent + 1.0 * rng.standard_normal(n) - 0.8)))
    binary_scores = {"model": model, "clinical (RPA)": clinical}
    true_time = rng.exponential(30 * np.exp(-0.8 * latent))
    censor = rng.uniform(6, 60, n)
    time = np.round(np.minimum(true_time, censor), 1)
    event = (true_time <= censor).astype(int)
    risks = {"model": 0.9 * latent + 0.5 * rng.standard_normal(n), "GPA": 0.4 * latent + rng.standard_normal(n)}

    binary_cohorts, survival_cohorts, cohort_rows = {}, {}, []
    for label in ("all", "centre A", "centre B"):
        member = np.ones(n, bool) if label == "all" else centre == label
        binary_cohorts[label] = _binary_entry(rng, y[member], {k: v[member] for k, v in binary_scores.items()})
        survival_cohorts[label] = _survival_entry(rng, time[member], event[member],
                                                  {k: v[member] for k, v in risks.items()})
        cohort_rows.append({
            "group": label, "n": int(member.sum()),
            BINARY: {"known": int(member.sum()) - 3, "events": int(y[member].sum()), "missing": 3},
            SURVIVAL: {"known": int(member.sum()), "events": int(event[member].sum()),
                       "censored": int((1 - event[member]).sum()), "missing": 0},
            "missing_clinical": {"age": 0, "KPS": int(member.sum() // 30)},
        })
    metrics = {
        "dataset": DATASET,
        "command": COMMAND,
        "predictions": "/data/predictions/oof predictions.csv",
        "model_folder": "/models/Dataset001_BrainMets/GlmilTrainer__plans__3d",
        "date": "2025-01-31T14:05:00+00:00",
        "mode": "cross-validation (out-of-fold)",
        "group_column": "centre",
        "n_bootstrap": 2000,
        "seed": 0,
        "cohort_table": cohort_rows,
        "endpoints": {
            BINARY: {"type": "binary", "cohorts": binary_cohorts},
            SURVIVAL: {"type": "survival", "cohorts": survival_cohorts},
        },
        "multivariable": {
            BINARY: {"ratio_name": "odds_ratio", "n": 170, "events": 61, "dropped": 10, "rows": [
                {"term": "model score", "odds_ratio": 3.12, "ci_low": 2.01, "ci_high": 4.85, "p_value": 2e-7},
                {"term": "age", "odds_ratio": 1.01, "ci_low": 0.98, "ci_high": 1.04, "p_value": 0.52},
                {"term": "sex[male]", "odds_ratio": 0.83, "ci_low": 0.42, "ci_high": 1.63, "p_value": 0.59},
                {"term": "KPS", "odds_ratio": 0.97, "ci_low": 0.94, "ci_high": 1.00, "p_value": 0.048},
                {"term": "histology[melanoma]", "odds_ratio": 1.9, "ci_low": 0.71, "ci_high": 5.1, "p_value": 0.2},
            ]},
            SURVIVAL: {"ratio_name": "hazard_ratio", "n": 180, "events": int(event.sum()), "dropped": 0, "rows": [
                {"term": "model score", "hazard_ratio": 2.05, "ci_low": 1.61, "ci_high": 2.61, "p_value": 1e-8},
                {"term": "GPA", "hazard_ratio": 0.88, "ci_low": 0.70, "ci_high": 1.11, "p_value": 0.28},
                {"term": "extracranial disease", "hazard_ratio": 1.45, "ci_low": 0.98, "ci_high": 2.14,
                 "p_value": 0.063},
            ]},
        },
        "shap": {name: _shap_entry(name, seed) for seed, name in enumerate((BINARY, SURVIVAL))},
    }
    return _json_safe(metrics)


def _shap_entry(endpoint: str, seed: int) -> dict[str, Any]:
    """``metrics["shap"][endpoint]`` as glmil_evaluate writes it (shap_summary.py), 40 cases."""
    rng = np.random.default_rng(seed)
    names = ["age", "KPS", "histology", "lesion count", "total lesion volume (mL)", "image: global branch",
             "image: lesion branch"]
    values = rng.normal(0, [0.2, 0.5, 0.3, 0.4, 0.6, 0.3, 0.5], size=(40, len(names)))
    shown = [[float(rng.normal(62, 9)), float(rng.choice([70, 80, 90])), None, int(rng.integers(1, 9)),
              float(rng.gamma(2, 1.5)), None, None] for _ in range(40)]
    return {"n_cases": 40, "cases": [f"case{i}" for i in range(40)], "base_value": -0.4,
            "output": "logit" if endpoint == BINARY else "standardised log-risk", "feature_names": names,
            "values": values.tolist(), "feature_values": shown,
            "mean_abs": dict(zip(names, np.abs(values).mean(axis=0).tolist()))}


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    return build_metrics()


# ---------------------------------------------------------------------------------- helpers


def _assert_nonblank_png(data: bytes | None) -> np.ndarray:
    assert isinstance(data, bytes) and data.startswith(b"\x89PNG")
    image = imread(io.BytesIO(data), format="png")
    rgb = image[..., :3] if image.ndim == 3 else image
    non_white = (rgb < 0.95).any(axis=-1) if rgb.ndim == 3 else rgb < 0.95
    assert non_white.mean() > 0.01, "the image is (nearly) blank"
    assert float(rgb.std()) > 0.01
    return image


# ------------------------------------------------------------------------------------ tests


def test_fixture_is_json_safe(metrics):
    json.dumps(metrics, allow_nan=False)


def test_formatting():
    assert format_number(0.12345) == "0.123"
    assert format_number(12) == "12"
    assert format_number(None) == format_number(math.nan) == "–"
    assert format_p_value(0.0004) == "<0.001"
    assert format_p_value(0.001) == "0.001"
    assert format_p_value(0.04567) == "0.046"
    assert format_p_value(None) == "–"
    assert format_ci(0.7, 0.6, 0.8) == "0.700 [0.600, 0.800]"
    assert format_ci(0.7, None, 0.8) == "0.700"


def test_plots_are_nonblank_pngs(metrics):
    binary = metrics["endpoints"][BINARY]["cohorts"]["all"]
    survival = metrics["endpoints"][SURVIVAL]["cohorts"]["all"]["risk_groups"]
    multivariable = metrics["multivariable"]
    figures = {
        "roc": report_plots.roc_figure(binary["scores"], "ROC"),
        "calibration": report_plots.calibration_figure(binary["calibration_curve"], "Calibration"),
        "dca": report_plots.decision_curve_figure(binary["decision_curve"], "Decision curve"),
        "km": report_plots.kaplan_meier_figure(survival["km"], "KM", logrank_p=survival["logrank"]["p_value"],
                                               hazard_ratios=survival["hazard_ratios"]["groups"],
                                               reference="low risk"),
        "km_plain": report_plots.kaplan_meier_figure({"groups": survival["km"]["groups"]}, "KM"),
        "forest_or": report_plots.forest_figure(multivariable[BINARY]["rows"], "OR", "odds_ratio"),
        "forest_hr": report_plots.forest_figure(multivariable[SURVIVAL]["rows"], "HR", "hazard_ratio"),
    }
    for name, data in figures.items():
        image = _assert_nonblank_png(data)
        assert min(image.shape[:2]) > 200, name


def test_plots_return_none_without_data():
    assert report_plots.roc_figure({}, "t") is None
    assert report_plots.roc_figure(None, "t") is None
    assert report_plots.roc_figure({"m": {"roc": None, "auc": None}}, "t") is None
    assert report_plots.roc_figure({"m": {"roc": {"fpr": [0.0], "tpr": [0.0]}}}, "t") is None
    assert report_plots.calibration_figure({"m": []}, "t") is None
    assert report_plots.calibration_figure({"m": [{"mean_predicted": None, "observed": 0.2}]}, "t") is None
    assert report_plots.decision_curve_figure({"thresholds": []}, "t") is None
    assert report_plots.decision_curve_figure({"thresholds": [0.1, 0.2], "curves": {"m": [None, None]}}, "t") is None
    assert report_plots.kaplan_meier_figure({"groups": {}}, "t") is None
    assert report_plots.kaplan_meier_figure({"groups": {"a": {"time": [], "survival": []}}}, "t") is None
    assert report_plots.forest_figure([], "t", "odds_ratio") is None
    assert report_plots.forest_figure([{"term": "x", "odds_ratio": None}], "t", "odds_ratio") is None


def test_plots_tolerate_partial_data():
    # missing CIs, an infinite CI bound, a treat-all line far below 0, missing points
    _assert_nonblank_png(report_plots.roc_figure({"m": {"roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.8, 1]}}}, "t"))
    _assert_nonblank_png(report_plots.calibration_figure(
        {"m": [{"mean_predicted": 0.2, "observed": 0.25, "ci_low": None, "ci_high": None, "n": 10}]}, "t"))
    _assert_nonblank_png(report_plots.decision_curve_figure(
        {"thresholds": [0.1, 0.5, 0.9], "treat_all": [0.2, -1.0, -20.0], "treat_none": None,
         "curves": {"m": [0.15, None, 0.0]}}, "t"))
    _assert_nonblank_png(report_plots.kaplan_meier_figure(
        {"groups": {"a": {"time": [1, 2, 5], "survival": [0.9, 0.7, 0.5]}}, "at_times": [0, 2, 4]}, "t",
        logrank_p=None, hazard_ratios={"a": None}))
    _assert_nonblank_png(report_plots.forest_figure(
        [{"term": "x", "hazard_ratio": 2.0, "ci_low": 0.0, "ci_high": None, "p_value": None},
         {"term": "y", "hazard_ratio": None}], "t", "hazard_ratio"))


def test_write_report(metrics, tmp_path):
    out = tmp_path / "report"
    path = write_report(metrics, out / "report.html")
    assert path == out / "report.html"
    assert [p.name for p in out.iterdir()] == ["report.html"]
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # self-contained: no external reference, every image embedded
    assert not re.search(r"https?://", text)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 8  # ROC, calibration, DCA, KM, 2 forest plots, 2 SHAP summaries
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    # escaping of user strings
    assert "<script" not in text
    assert str(escape(DATASET)) in text
    assert str(escape(shlex.join(COMMAND))) in text
    for name in (BINARY, SURVIVAL, "centre A", "centre B", "clinical (RPA)", "GPA", "histology[melanoma]"):
        assert str(escape(name)) in text
    # order: header, cohort table, binary endpoint, survival endpoint, multivariable
    positions = [text.index(marker) for marker in (
        str(escape(shlex.join(COMMAND))), 'id="cohort"', f"Endpoint: {BINARY}", f"Endpoint: {SURVIVAL}",
        'id="multivariable"')]
    assert positions == sorted(positions)
    assert "&lt;0.001" in text  # p-value formatting
    assert "Harrell" in text and "Uno" in text and "AUC(t = 24)" in text
    assert "Calibration slope" in text and "Integrated Brier score: 0.164" in text
    assert "ICI [95% CI]" in text and "0.031 [0.012, 0.058]" in text and "ECE (secondary)" in text
    assert "Missing clinical values" in text and "2000 resamples, seed 0" in text
    assert "not available" not in text and "SHAP summary (40 cases)" in text


def test_report_with_missing_pieces(tmp_path):
    for metrics in (
        {},
        {"endpoints": None, "cohort_table": None, "multivariable": None, "command": None},
        {"dataset": "x", "cohort_table": [{"group": "all", "n": None}], "endpoints": {
            "a": {"type": "binary", "cohorts": {"all": None}},
            "b": {"type": "binary", "cohorts": {"all": {
                "n": 10, "events": None, "comparisons": None, "calibration_curve": None,
                "decision_curve": None, "risk_groups": None,
                "scores": {"m": {"auc": None, "auprc": None, "brier": None, "calibration": None, "roc": None}}}}},
            "c": {"type": "survival", "cohorts": {"all": {
                "n": 5, "events": 2, "integrated_brier": None, "comparisons": [], "risk_groups": {"km": None},
                "scores": {"m": {"harrell": None, "uno": None, "td_auc": None}}}}},
            "d": {"type": "survival", "cohorts": {}},
            "e": None,
        }, "multivariable": {"b": {"rows": [], "n": 10}, "c": None, "e": {"rows": [{"term": "t"}]}}},
    ):
        text = render_report(metrics)
        assert "</html>" in text
        assert "<img" not in text
    assert "not available" in text.lower()
    path = write_report({}, tmp_path / "empty.html")
    assert path.is_file()


@pytest.mark.skipif(not HAS_CHROMIUM, reason="headless Chromium (/usr/bin/chromium) is not installed")
def test_render_to_png(metrics, tmp_path):
    html_path = write_report(metrics, tmp_path / "report.html")
    png = render_to_png(html_path, tmp_path / "report.png", width=1400)
    image = _assert_nonblank_png(png.read_bytes())
    height, width = image.shape[:2]
    assert width == 1400
    assert height > 3 * width  # the full page, not one screen
    # cropped to the content: the last rows are background, but only a thin band of them
    rgb = image[..., :3]
    content = np.flatnonzero((rgb != rgb[-1][None]).reshape(height, -1).any(axis=1))
    assert height - (content[-1] + 1) < 100
