"""The HTML report of ``glmil_evaluate``: a results section, ready to read and to screenshot.

    write_report(metrics, "report.html")

``metrics`` is the JSON-safe dict of the evaluation (numbers may be ``None`` where JSON has no
NaN). The report is one self-contained file: inline CSS, figures embedded as base64 PNG, no
script and no external resource. It holds, in order:

* the title (``metrics["dataset"]``), the exact command (``metrics["command"]``, a list of
  strings), the predictions file (``metrics["predictions"]``), the model folder
  (``metrics["model_folder"]``), when present ``mode``, ``clinical_table``, ``group_column``,
  ``n_bootstrap`` / ``seed``, and the date (``metrics["date"]``, else now);
* the cohort table (``metrics["cohort_table"]``, a list of rows);
* per endpoint (``metrics["endpoints"][name]``, ``"type"`` ``"binary"`` or ``"survival"``):
  per cohort a metric table (rows = scores), for binary endpoints a calibration table (intercept,
  slope, ICI, E50, E90, Emax, ECE; the model also before an update / recalibration) and a
  comparison table (model vs each baseline), then the figures of the ``"all"`` cohort (ROC,
  calibration, decision curve; or Kaplan-Meier of the risk groups with log-rank test and hazard
  ratios) and its risk-group table;
* per endpoint the multivariable model (``metrics["multivariable"][name]``): forest plot, table;
  Firth-penalised estimates (``"method": "firth"``) are labelled as such, with why.

Numbers are written with 3 decimals, p-values below 0.001 as "<0.001"; a missing piece (key
absent or ``None``) is left out or reported as "not available". Every string from ``metrics`` is
HTML-escaped (jinja2 autoescape).
"""

from __future__ import annotations

import base64
import datetime
import logging
import math
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from glmil_auto.evaluation.report import report_plots
from glmil_auto.evaluation.report.report_plots import as_number
from glmil_auto.utilities.atomic_files import write_bytes_atomic

__all__ = ["write_report", "render_report", "format_number", "format_p_value"]

logger = logging.getLogger(__name__)

MISSING = "–"
_DIGITS = 3


# ------------------------------------------------------------------------------ formatting




def format_number(value: Any, digits: int = _DIGITS) -> str:
    """A number with ``digits`` decimals; an integer as it is; missing / NaN as "–"."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    number = as_number(value)
    if not math.isfinite(number):
        return MISSING if value is None or math.isnan(number) else str(number)
    return f"{number:.{digits}f}"


def format_count(value: Any) -> str:
    """A count (``n``, events) as an integer; missing as "–"."""
    number = as_number(value)
    if not math.isfinite(number):
        return MISSING
    return str(int(round(number)))


def format_p_value(value: Any) -> str:
    """A p-value: "<0.001" below 0.001, else 3 decimals; missing as "–"."""
    number = as_number(value)
    if not math.isfinite(number):
        return MISSING
    return "<0.001" if number < 0.001 else f"{number:.{_DIGITS}f}"


def format_ci(estimate: Any, low: Any, high: Any) -> str:
    """``estimate [low, high]``; the interval is left out when it is missing."""
    text = format_number(estimate)
    if text == MISSING:
        return MISSING
    if math.isfinite(as_number(low)) and math.isfinite(as_number(high)):
        text += f" [{format_number(low)}, {format_number(high)}]"
    return text


def _format_cell(value: Any) -> str:
    """Any cohort-table value: counts as integers, fractions with 3 decimals, text as is."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    number = as_number(value)
    if math.isfinite(number) and float(number).is_integer():
        return str(int(number))
    return format_number(value)


def _p_phrase(value: Any) -> str:
    """"p = 0.012" or "p < 0.001" for running text."""
    text = format_p_value(value)
    return f"p < {text[1:]}" if text.startswith("<") else f"p = {text}"


_HEADERS = {"group": "Group", "known": "Known", "events": "Events", "missing": "Missing", "censored": "Censored"}


def _header(name: str) -> str:
    """A cohort-table column name as a header: the count names capitalised, others (variable
    names) as they are."""
    return _HEADERS.get(name, name)


def _format_time(value: Any) -> str:
    number = as_number(value)
    return MISSING if not math.isfinite(number) else f"{number:g}"


# ---------------------------------------------------------------------------- view models


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _rows(value: Any) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    return []


def _table(headers: list[str], rows: list[list[str]], header_groups: list[tuple[str, int]] | None = None,
           note: str | None = None) -> dict[str, Any]:
    return {"headers": headers, "rows": rows, "header_groups": header_groups, "note": note}


def _figure(title: str, draw: Callable[[], bytes | None], reason: str, wide: bool = False) -> dict[str, Any]:
    """A figure for the template: its data URI, or the reason it is not available."""
    try:
        png = draw()
    except Exception as error:  # a broken figure must not cost the whole report
        logger.warning("figure %r failed: %s", title, error, exc_info=True)
        png, reason = None, f"the figure could not be drawn ({type(error).__name__}: {error})"
    source = None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return {"title": title, "src": source, "reason": reason, "wide": wide}


_GROUP_LABELS = {"missing_clinical": "Missing clinical values"}


def _cohort_table(rows: Any) -> dict[str, Any] | None:
    """The cohort table: plain row values become columns; a nested dict per endpoint (directly
    under the row, or under ``row["endpoints"]``) becomes a column group of its counts."""
    rows = [row for row in _rows(rows) if isinstance(row, Mapping)]
    if not rows:
        return None
    columns: list[tuple[str, str]] = []
    flat_rows = []
    for row in rows:
        flat: dict[tuple[str, str], Any] = {}
        for key, value in row.items():
            if key == "endpoints" and isinstance(value, Mapping):
                for endpoint, counts in value.items():
                    if isinstance(counts, Mapping):
                        for sub, count in counts.items():
                            flat[(str(endpoint), str(sub))] = count
                    else:
                        flat[(str(endpoint), "")] = counts
            elif isinstance(value, Mapping):
                for sub, count in value.items():
                    flat[(str(key), str(sub))] = count
            else:
                flat[("", str(key))] = value
        for column in flat:
            if column not in columns:
                columns.append(column)
        flat_rows.append(flat)
    # plain columns first (group, n, ...), then the endpoint groups in order of appearance
    columns = [c for c in columns if c[0] == ""] + [c for c in columns if c[0] != ""]
    groups: list[tuple[str, int]] = []
    for top, _ in columns:
        top = _GROUP_LABELS.get(top, top)
        if groups and groups[-1][0] == top:
            groups[-1] = (top, groups[-1][1] + 1)
        else:
            groups.append((top, 1))
    nested = any(top for top, _ in columns)
    headers = [_header(sub if sub else top) for top, sub in columns]
    body = [[_format_cell(flat.get(column)) for column in columns] for flat in flat_rows]
    return _table(headers, body, header_groups=groups if nested else None)


def _model_name(entry: Mapping[str, Any]) -> str | None:
    """The model's score name: ``entry["model"]``, else the first score that is no baseline."""
    scores = list(_mapping(entry.get("scores")))
    if isinstance(entry.get("model"), str):
        return entry["model"]
    baselines = {str(c.get("baseline")) for c in _rows(entry.get("comparisons")) if isinstance(c, Mapping)}
    for name in scores:
        if str(name) not in baselines:
            return str(name)
    return scores[0] if scores else None


def _comparison_table(entry: Mapping[str, Any], metric: str, key_a: str, key_b: str) -> dict[str, Any] | None:
    comparisons = [c for c in _rows(entry.get("comparisons")) if isinstance(c, Mapping)]
    if not comparisons:
        return None
    model = _model_name(entry) or "model"
    with_test = any(c.get("test") for c in comparisons)
    headers = ["Baseline", f"{metric} ({model})", f"{metric} (baseline)", "Difference", "p-value"]
    if with_test:
        headers.append("Test")
    body = []
    for comparison in comparisons:
        row = [str(comparison.get("baseline", MISSING)), format_number(comparison.get(key_a)),
               format_number(comparison.get(key_b)), format_number(comparison.get("difference")),
               format_p_value(comparison.get("p_value"))]
        if with_test:
            row.append(str(comparison.get("test") or MISSING))
        body.append(row)
    return _table(headers, body)


def _binary_metric_table(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    scores = _mapping(entry.get("scores"))
    if not scores:
        return None
    headers = ["Score", "AUC [95% CI]", "AUPRC", "Brier"]
    body = []
    for name, score in scores.items():
        score = _mapping(score)
        auc = _mapping(score.get("auc"))
        body.append([
            str(name),
            format_ci(auc.get("auc"), auc.get("ci_low"), auc.get("ci_high")),
            format_number(score.get("auprc")),
            format_number(score.get("brier")),
        ])
    return _table(headers, body)


#: The model's earlier probabilities (metrics.json key, row label), evaluated for calibration too.
_CALIBRATION_VARIANTS = (("before_update", "before update"), ("uncalibrated", "uncalibrated"))
_CALIBRATION_NOTE = (
    "Calibration-in-the-large: 0 is ideal (< 0: risks too high); slope: 1 is ideal (< 1: risks too extreme); "
    "Wald 95% CIs. ICI, E50, E90, Emax: mean, median, 90th percentile and maximum over the cases of "
    "|predicted risk − smoothed observed risk| (LOESS, span 0.75; Austin & Steyerberg, Stat Med 2019), "
    "0 is ideal, bootstrap percentile 95% CIs; on a small cohort the noise of the curve alone gives a few "
    "percent. ECE (secondary): expected calibration error over 10 equal-mass bins; it depends on the binning.")


def _calibration_row(label: str, numbers: Mapping[str, Any]) -> list[str]:
    calibration = _mapping(numbers.get("calibration"))

    def error(key: str) -> str:
        value = _mapping(numbers.get(key))
        return format_ci(value.get("estimate"), value.get("ci_low"), value.get("ci_high"))

    return [label,
            format_ci(calibration.get("intercept"), calibration.get("intercept_ci_low"),
                      calibration.get("intercept_ci_high")),
            format_ci(calibration.get("slope"), calibration.get("slope_ci_low"), calibration.get("slope_ci_high")),
            error("ici"), error("e50"), error("e90"), error("emax"), error("ece")]


def _binary_calibration_table(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """Calibration per score that is a probability, and of the model's probabilities before an
    update and before recalibration (rows "<model> (before update)", "<model> (uncalibrated)")."""
    scores = _mapping(entry.get("scores"))
    model = _model_name(entry)
    body = []
    for name, score in scores.items():
        score = _mapping(score)
        if any(score.get(k) for k in ("calibration", "ici", "ece")):
            body.append(_calibration_row(str(name), score))
        if str(name) != model:
            continue
        for key, label in _CALIBRATION_VARIANTS:  # the nested numbers, else an older file's intercept and slope
            numbers = _mapping(score.get(key)) or {"calibration": score.get(f"calibration_{key}")}
            if any(numbers.get(k) for k in ("calibration", "ici", "ece")):
                body.append(_calibration_row(f"{name} ({label})", numbers))
    if not body:
        return None
    headers = ["Score", "Calibration-in-the-large [95% CI]", "Calibration slope [95% CI]", "ICI [95% CI]",
               "E50 [95% CI]", "E90 [95% CI]", "Emax", "ECE (secondary)"]
    return _table(headers, body, note=_CALIBRATION_NOTE)


def _survival_metric_table(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    scores = _mapping(entry.get("scores"))
    if not scores:
        return None
    horizons: list[float] = []
    for score in scores.values():
        td = _mapping(_mapping(score).get("td_auc"))
        for horizon in _rows(td.get("horizons")):
            if math.isfinite(as_number(horizon)) and as_number(horizon) not in horizons:
                horizons.append(as_number(horizon))
    headers = ["Score", "Harrell's C [95% CI]", "Uno's C [95% CI]"]
    headers += [f"AUC(t = {_format_time(h)})" for h in horizons]
    body = []
    for name, score in scores.items():
        score = _mapping(score)
        harrell, uno = _mapping(score.get("harrell")), _mapping(score.get("uno"))
        td = _mapping(score.get("td_auc"))
        by_horizon = {as_number(h): a for h, a in zip(_rows(td.get("horizons")), _rows(td.get("auc")))}
        body.append([
            str(name),
            format_ci(harrell.get("c_index"), harrell.get("ci_low"), harrell.get("ci_high")),
            format_ci(uno.get("c_index"), uno.get("ci_low"), uno.get("ci_high")),
            *[format_number(by_horizon.get(h)) for h in horizons],
        ])
    note = None
    integrated = _mapping(entry.get("integrated_brier"))
    if math.isfinite(as_number(integrated.get("integrated_brier"))):
        note = f"Integrated Brier score: {format_number(integrated.get('integrated_brier'))}"
    return _table(headers, body, note=note)


_TEST_NAMES = {"chi2": "Chi-square test", "fisher": "Fisher's exact test", "none": "no test"}


def _binary_risk_groups(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    risk = _mapping(entry.get("risk_groups"))
    rows = [row for row in _rows(risk.get("table")) if isinstance(row, Mapping)]
    if not rows:
        return None
    body = [[str(row.get("group", MISSING)), format_count(row.get("n")), format_count(row.get("events")),
             format_ci(row.get("rate"), row.get("ci_low"), row.get("ci_high"))] for row in rows]
    test = _mapping(risk.get("test"))
    note = None
    if test:
        name = _TEST_NAMES.get(str(test.get("test")), str(test.get("test") or "Test"))
        if str(test.get("test")) == "none" or not math.isfinite(as_number(test.get("p_value"))):
            note = f"Test of equal event rates: {name}."
        else:
            statistic = "odds ratio" if str(test.get("test")) == "fisher" else "statistic"
            note = (f"{name}: {statistic} {format_number(test.get('statistic'))}, "
                    f"{_p_phrase(test.get('p_value'))}")
    return _table(["Risk group", "n", "Events", "Event rate [95% CI]"], body, note=note)


def _survival_risk_groups(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    risk = _mapping(entry.get("risk_groups"))
    groups = _mapping(_mapping(risk.get("km")).get("groups"))
    ratios = _mapping(risk.get("hazard_ratios"))
    per_group = _mapping(ratios.get("groups"))
    labels = list(groups) or list(per_group)
    if not labels:
        return None
    reference = ratios.get("reference")
    body = []
    for label in labels:
        group = _mapping(groups.get(label))
        ratio = _mapping(per_group.get(label))
        if reference is not None and str(label) == str(reference):
            hr, p = "1 (reference)", MISSING
        else:
            hr = format_ci(ratio.get("hazard_ratio"), ratio.get("ci_low"), ratio.get("ci_high"))
            p = format_p_value(ratio.get("p_value"))
        body.append([str(label), format_count(group.get("n", ratio.get("n"))),
                     format_count(group.get("events", ratio.get("events"))), hr, p])
    logrank = _mapping(risk.get("logrank"))
    note = None
    if logrank:
        note = (f"Log-rank test: chi-square {format_number(logrank.get('statistic'))}, "
                f"{_p_phrase(logrank.get('p_value'))}")
    return _table(["Risk group", "n", "Events", "Hazard ratio [95% CI]", "p-value"], body, note=note)


_CALIBRATION_CAPTION = ("Calibration of the model (after, solid; before an update or recalibration, dashed / "
                        "dotted): LOESS curve with its 95% bootstrap band, observed proportion in risk groups "
                        "(quantiles of the predictions, about 10 events each) with Wilson 95% CIs, histogram of "
                        "the predictions; baselines: see the calibration table")


def _binary_figures(name: str, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    scores = _mapping(entry.get("scores"))
    return [
        _figure("ROC curves", lambda: report_plots.roc_figure(scores, f"{name}: ROC"),
                "no ROC curve in the metrics"),
        _figure(_CALIBRATION_CAPTION, lambda: report_plots.calibration_figure(
            _mapping(entry.get("calibration_curve")), f"{name}: calibration", model=_model_name(entry)),
            "no calibration curve in the metrics"),
        _figure("Decision curve", lambda: report_plots.decision_curve_figure(
            _mapping(entry.get("decision_curve")), f"{name}: decision curve"),
            "no decision curve in the metrics"),
    ]


def _survival_figures(name: str, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    risk = _mapping(entry.get("risk_groups"))
    ratios = _mapping(risk.get("hazard_ratios"))
    return [_figure(
        "Kaplan-Meier curves of the risk groups",
        lambda: report_plots.kaplan_meier_figure(
            _mapping(risk.get("km")), f"{name}: Kaplan-Meier by risk group",
            logrank_p=_mapping(risk.get("logrank")).get("p_value"),
            hazard_ratios=_mapping(ratios.get("groups")),
            reference=None if ratios.get("reference") is None else str(ratios.get("reference"))),
        "no Kaplan-Meier curve of risk groups in the metrics", wide=True)]


def _anchor(prefix: str, name: str, index: int) -> str:
    return f"{prefix}-{index}-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x")


def _shap_figure(name: str, summary: Any) -> dict[str, Any]:
    summary = _mapping(summary)
    return _figure(f"SHAP summary ({format_count(summary.get('n_cases'))} cases)" if summary else "SHAP summary",
                   lambda: report_plots.shap_summary_figure(summary, f"{name}: SHAP"),
                   "no SHAP values: predict with glmil_predict --explain (with --cv: the folds' final validation "
                   "writes them)")


def _endpoint_view(index: int, name: str, entry: Any, shap_summary: Any = None) -> dict[str, Any]:
    entry = _mapping(entry)
    kind = str(entry.get("type") or "")
    view: dict[str, Any] = {"name": name, "type": kind, "anchor": _anchor("endpoint", name, index),
                            "cohorts": [], "figures": [], "risk_table": None, "figure_cohort": None,
                            "reason": None}
    cohorts = _mapping(entry.get("cohorts"))
    if kind not in ("binary", "survival"):
        view["reason"] = f"unknown endpoint type {kind!r}" if kind else "no endpoint type in the metrics"
        return view
    if not cohorts:
        view["reason"] = "no cohort evaluated"
        return view
    binary = kind == "binary"
    ordered = (["all"] if "all" in cohorts else []) + [c for c in cohorts if c != "all"]
    for cohort in ordered:
        cohort_entry = cohorts[cohort]
        if not isinstance(cohort_entry, Mapping):
            view["cohorts"].append({"name": str(cohort), "n": MISSING, "events": MISSING,
                                    "metrics": None, "comparison": None, "calibration": None})
            continue
        view["cohorts"].append({
            "name": str(cohort),
            "n": format_count(cohort_entry.get("n")),
            "events": format_count(cohort_entry.get("events")),
            "metrics": _binary_metric_table(cohort_entry) if binary else _survival_metric_table(cohort_entry),
            "calibration": _binary_calibration_table(cohort_entry) if binary else None,
            "comparison": (_comparison_table(cohort_entry, "AUC", "auc_a", "auc_b") if binary
                           else _comparison_table(cohort_entry, "C-index", "c_a", "c_b")),
        })
    main = next((c for c in ordered if isinstance(cohorts[c], Mapping)), None)
    if main is not None:
        view["figure_cohort"] = str(main)
        main_entry = cohorts[main]
        view["figures"] = _binary_figures(name, main_entry) if binary else _survival_figures(name, main_entry)
        view["figures"].append(_shap_figure(name, shap_summary))
        view["risk_table"] = _binary_risk_groups(main_entry) if binary else _survival_risk_groups(main_entry)
    return view


def _multivariable_view(index: int, name: str, model: Any, endpoint_type: str | None) -> dict[str, Any]:
    model = _mapping(model)
    rows = [row for row in _rows(model.get("rows")) if isinstance(row, Mapping)]
    ratio_name = str(model.get("ratio_name") or ("hazard_ratio" if endpoint_type == "survival" else "odds_ratio"))
    label = {"odds_ratio": "Odds ratio", "hazard_ratio": "Hazard ratio"}.get(ratio_name, ratio_name)
    firth = model.get("method") == "firth"
    table = None
    if rows:
        table = _table(["Term", f"{label} (Firth) [95% profile CI]" if firth else f"{label} [95% CI]", "p-value"], [
            [str(row.get("term", MISSING)), format_ci(row.get(ratio_name), row.get("ci_low"), row.get("ci_high")),
             format_p_value(row.get("p_value"))] for row in rows])
    counts = [f"{what} = {format_count(model.get(key))}" for what, key in
              (("n", "n"), ("events", "events"), ("dropped (missing values)", "dropped")) if key in model]
    note = model.get("unstable") or model.get("reason")
    figure = None
    if not model.get("unstable"):  # a forest plot spanning 1e-5 to 1e25 would only mislead
        figure = _figure(f"Forest plot ({label.lower()})",
                         lambda: report_plots.forest_figure(rows, f"{name}: multivariable model", ratio_name),
                         "no term with a finite ratio" if rows else "no term in the model", wide=True)
    return {
        "name": name,
        "anchor": _anchor("multivariable", name, index),
        "counts": ", ".join(counts),
        "table": table,
        "note": None if note is None else str(note),
        "method": _firth_note(model) if firth else None,
        "figure": figure,
    }


def _firth_note(model: Mapping[str, Any]) -> str:
    """Why the table holds Firth's penalised estimates instead of maximum likelihood's."""
    reason = _mapping(model.get("separation")).get("reason")
    return ("Firth-penalised estimates, not maximum likelihood"
            + (f" ({reason})" if reason else "") + ": " + str(model.get("estimation") or "Firth penalised likelihood")
            + ". Maximum likelihood has no finite estimate here: its odds or hazard ratios would run to infinity.")


def _command_text(command: Any) -> str | None:
    if command is None:
        return None
    if isinstance(command, str):
        return command
    return shlex.join(str(part) for part in _rows(command))


def _first(metrics: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if metrics.get(key) not in (None, ""):
            return metrics[key]
    return None


def _view(metrics: Mapping[str, Any]) -> dict[str, Any]:
    endpoints = _mapping(metrics.get("endpoints"))
    multivariable = _mapping(metrics.get("multivariable"))
    date = _first(metrics, "date", "created")
    if date is None:
        date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    dataset = _first(metrics, "dataset", "dataset_name")
    extra = []
    for label, key in (("Mode", "mode"), ("Clinical table", "clinical_table"), ("Cohorts by", "group_column")):
        if metrics.get(key) not in (None, ""):
            extra.append((label, str(metrics[key])))
    if metrics.get("n_bootstrap") is not None:
        bootstrap = f"{format_count(metrics['n_bootstrap'])} resamples"
        if metrics.get("seed") is not None:
            bootstrap += f", seed {metrics['seed']}"
        extra.append(("Bootstrap", bootstrap))
    return {
        "dataset": None if dataset is None else str(dataset),
        "extra_meta": extra,
        "command": _command_text(metrics.get("command")),
        "predictions": _first(metrics, "predictions", "predictions_file"),
        "model_folder": _first(metrics, "model_folder", "model"),
        "date": str(date),
        # the clinical variables' missing counts get a table of their own: one table would be too wide
        "cohort_table": _cohort_table([{k: v for k, v in row.items() if k != "missing_clinical"}
                                       for row in _rows(metrics.get("cohort_table")) if isinstance(row, Mapping)]),
        "missing_table": _cohort_table([{"group": row.get("group"), **row["missing_clinical"]}
                                        for row in _rows(metrics.get("cohort_table"))
                                        if isinstance(row, Mapping) and isinstance(row.get("missing_clinical"), Mapping)
                                        and row["missing_clinical"]]),
        "endpoints": [_endpoint_view(i, str(name), entry, _mapping(metrics.get("shap")).get(name))
                      for i, (name, entry) in enumerate(endpoints.items())],
        "multivariable": [
            _multivariable_view(i, str(name), model, _mapping(endpoints.get(name)).get("type"))
            for i, (name, model) in enumerate(multivariable.items()) if model
        ],
    }


# -------------------------------------------------------------------------------- template

_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Outcome prediction results{% if dataset %}: {{ dataset }}{% endif %}</title>
<style>
  body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: #1d2430; background: #ffffff;
         margin: 0; line-height: 1.45; font-size: 15px; }
  main { max-width: 1320px; margin: 0 auto; padding: 28px 36px 48px; }
  h1 { font-size: 27px; margin: 0 0 14px; }
  h2 { font-size: 22px; margin: 38px 0 10px; padding-bottom: 6px; border-bottom: 2px solid #2f5d8a; }
  h3 { font-size: 17px; margin: 24px 0 8px; color: #2f5d8a; }
  h4 { font-size: 15px; margin: 18px 0 6px; }
  .meta { border-collapse: collapse; margin-bottom: 10px; }
  .meta th { text-align: left; padding: 3px 16px 3px 0; color: #555; font-weight: 600; vertical-align: top;
             white-space: nowrap; }
  .meta td { padding: 3px 0; }
  code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
  pre { background: #f4f6f9; border: 1px solid #dde3ea; border-radius: 4px; padding: 8px 10px; margin: 0;
        white-space: pre-wrap; word-break: break-all; }
  table.data { border-collapse: collapse; margin: 6px 0 4px; font-variant-numeric: tabular-nums; }
  table.data th, table.data td { border: 1px solid #d5dbe3; padding: 5px 10px; }
  table.data th { background: #eef2f7; font-weight: 600; text-align: center; }
  table.data td { text-align: right; white-space: nowrap; }
  table.data td:first-child { text-align: left; font-weight: 600; }
  table.data tr:nth-child(even) td { background: #fafbfd; }
  .note { color: #444; font-size: 14px; margin: 4px 0 10px; }
  .na { color: #8a5a00; font-style: italic; }
  .kind { font-size: 14px; font-weight: normal; color: #555; margin-left: 8px; }
  .figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(600px, 1fr)); gap: 18px;
             margin: 10px 0; }
  figure { margin: 0; padding: 8px; border: 1px solid #e3e7ed; border-radius: 4px; background: #fff; }
  figure.wide { grid-column: 1 / -1; }
  figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
  figcaption { font-size: 14px; color: #444; margin-top: 4px; text-align: center; }
  nav ul { margin: 4px 0; padding-left: 20px; }
  nav a { color: #2f5d8a; }
  footer { margin-top: 40px; font-size: 12px; color: #777; }
</style>
</head>
<body>
<main>
{%- macro data_table(t) -%}
<table class="data">
  <thead>
  {%- if t.header_groups %}
  <tr>{% for label, span in t.header_groups %}<th colspan="{{ span }}">{{ label }}</th>{% endfor %}</tr>
  {%- endif %}
  <tr>{% for h in t.headers %}<th>{{ h }}</th>{% endfor %}</tr>
  </thead>
  <tbody>
  {%- for row in t.rows %}
  <tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
  {%- endfor %}
  </tbody>
</table>
{%- if t.note %}<p class="note">{{ t.note }}</p>{% endif %}
{%- endmacro -%}
{%- macro show_figure(f) -%}
<figure{% if f.wide %} class="wide"{% endif %}>
  {%- if f.src %}
  <img src="{{ f.src }}" alt="{{ f.title }}">
  <figcaption>{{ f.title }}</figcaption>
  {%- else %}
  <figcaption><strong>{{ f.title }}</strong>: <span class="na">not available: {{ f.reason }}</span></figcaption>
  {%- endif %}
</figure>
{%- endmacro %}
<h1>Outcome prediction results{% if dataset %}: {{ dataset }}{% endif %}</h1>
<table class="meta">
  <tr><th>Command</th><td>{% if command %}<pre>{{ command }}</pre>{% else %}<span class="na">not available</span>{% endif %}</td></tr>
  <tr><th>Predictions</th><td>{% if predictions %}<code>{{ predictions }}</code>{% else %}<span class="na">not available</span>{% endif %}</td></tr>
  <tr><th>Model folder</th><td>{% if model_folder %}<code>{{ model_folder }}</code>{% else %}<span class="na">not available</span>{% endif %}</td></tr>
  {%- for label, value in extra_meta %}
  <tr><th>{{ label }}</th><td>{{ value }}</td></tr>
  {%- endfor %}
  <tr><th>Date</th><td>{{ date }}</td></tr>
</table>
{%- if endpoints or multivariable %}
<nav><strong>Contents</strong>
<ul>
  <li><a href="#cohort">Cohort</a></li>
  {%- for e in endpoints %}
  <li><a href="#{{ e.anchor }}">Endpoint {{ e.name }}</a></li>
  {%- endfor %}
  {%- if multivariable %}
  <li><a href="#multivariable">Multivariable analysis</a></li>
  {%- endif %}
</ul>
</nav>
{%- endif %}

<h2 id="cohort">Cohort</h2>
{%- if cohort_table %}
{{ data_table(cohort_table) }}
{%- else %}
<p class="na">Cohort table not available.</p>
{%- endif %}
{%- if missing_table %}
<h3>Missing clinical values</h3>
{{ data_table(missing_table) }}
{%- endif %}

{%- if not endpoints %}
<h2>Endpoints</h2>
<p class="na">No endpoint evaluated.</p>
{%- endif %}
{%- for e in endpoints %}

<h2 id="{{ e.anchor }}">Endpoint: {{ e.name }}{% if e.type %}<span class="kind">({{ e.type }})</span>{% endif %}</h2>
{%- if e.reason %}
<p class="na">Not available: {{ e.reason }}.</p>
{%- endif %}
{%- for c in e.cohorts %}
<h3>Cohort: {{ c.name }} <span class="kind">n = {{ c.n }}, events = {{ c.events }}</span></h3>
{%- if c.metrics %}
{{ data_table(c.metrics) }}
{%- else %}
<p class="na">Metrics not available.</p>
{%- endif %}
{%- if c.calibration %}
<h4>Calibration</h4>
{{ data_table(c.calibration) }}
{%- endif %}
{%- if c.comparison %}
<h4>Model vs baselines</h4>
{{ data_table(c.comparison) }}
{%- endif %}
{%- endfor %}
{%- if e.figures %}
<h3>Figures{% if e.figure_cohort %} <span class="kind">cohort: {{ e.figure_cohort }}</span>{% endif %}</h3>
<div class="figures">
{%- for f in e.figures %}
{{ show_figure(f) }}
{%- endfor %}
</div>
{%- endif %}
{%- if e.figure_cohort %}
<h3>Risk groups <span class="kind">cohort: {{ e.figure_cohort }}</span></h3>
{%- if e.risk_table %}
{{ data_table(e.risk_table) }}
{%- else %}
<p class="na">Risk groups not available.</p>
{%- endif %}
{%- endif %}
{%- endfor %}
{%- if multivariable %}

<h2 id="multivariable">Multivariable analysis</h2>
{%- for m in multivariable %}
<h3 id="{{ m.anchor }}">{{ m.name }}{% if m.counts %} <span class="kind">{{ m.counts }}</span>{% endif %}</h3>
{%- if m.method %}
<p class="note">{{ m.method }}</p>
{%- endif %}
{%- if m.note %}
<p class="na">{{ m.note }}</p>
{%- endif %}
{%- if m.figure %}
<div class="figures">
{{ show_figure(m.figure) }}
</div>
{%- endif %}
{%- if m.table %}
{{ data_table(m.table) }}
{%- else %}
<p class="na">Model table not available.</p>
{%- endif %}
{%- endfor %}
{%- endif %}
<footer>Generated by glmil_auto (glmil_evaluate) on {{ date }}.</footer>
</main>
</body>
</html>
"""

_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined,
                                  trim_blocks=False, lstrip_blocks=False)


def render_report(metrics: Mapping[str, Any]) -> str:
    """The report's HTML text (see the module docstring for what it holds)."""
    return _ENVIRONMENT.from_string(_TEMPLATE).render(**_view(_mapping(metrics)))


def write_report(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Write the self-contained HTML report of ``metrics`` to ``path`` (parents created)."""
    path = Path(path)
    html = render_report(metrics)
    write_bytes_atomic(path, html.encode("utf-8"))  # a killed run never leaves half a report
    return path
