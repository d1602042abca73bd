"""Figures of the evaluation report, drawn from the JSON-safe ``metrics`` dict of ``glmil_evaluate``.

Every function takes plain lists / dicts (numbers may be ``None`` where a value is missing, as
JSON has no NaN), draws on its own :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot state)
and returns the PNG bytes, or ``None`` when there is nothing to draw, so that the report can say
"not available" instead of showing an empty panel:

    roc_figure(scores, title)                                    ROC curves with AUC [CI] legend
    calibration_figure(curves, title, model)                     smoothed curve + band, risk groups,
                                                                 histogram of the predictions
    decision_curve_figure(dca, title)                            net benefit vs threshold
    kaplan_meier_figure(km, title, logrank_p, hazard_ratios)     KM curves + number-at-risk table
    forest_figure(table_rows, title, ratio_name)                 odds / hazard ratios on a log axis
    shap_summary_figure(summary, title)                          SHAP beeswarm (``shap.plots``; it
                                                                 uses pyplot, whose figures are closed)

Scores keep the order of the dict they come in, and the i-th score gets the i-th colour of
:data:`PALETTE` in every figure, so the model and each baseline look the same throughout.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

__all__ = [
    "PALETTE",
    "DPI",
    "roc_figure",
    "calibration_figure",
    "decision_curve_figure",
    "kaplan_meier_figure",
    "forest_figure",
    "shap_summary_figure",
]

#: Colours by position of the score / group (colour-blind friendly "tab10" order).
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]
#: Resolution of every PNG.
DPI = 110

_TITLE_SIZE = 13
_LABEL_SIZE = 12
_TICK_SIZE = 11
_LEGEND_SIZE = 10


# --------------------------------------------------------------------------------- helpers


def as_number(value: Any) -> float:
    """``value`` as a float; ``None``, text and other non-numbers become NaN."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _array(values: Any) -> np.ndarray:
    """A 1-d float array of ``values`` (``None`` entries become NaN; ``None`` itself is empty)."""
    if values is None:
        return np.empty(0)
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        return np.empty(0)
    return np.asarray([as_number(v) for v in values], dtype=float)


def _fmt(value: Any, digits: int = 2) -> str:
    number = as_number(value)
    return "n/a" if not math.isfinite(number) else f"{number:.{digits}f}"


def _fmt_p(value: Any) -> str:
    """p-value as text: "p<0.001" below 0.001, else three decimals."""
    number = as_number(value)
    if not math.isfinite(number):
        return "p=n/a"
    return "p<0.001" if number < 0.001 else f"p={number:.3f}"


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _style(axes: Any, title: str | None, xlabel: str, ylabel: str) -> None:
    if title:
        axes.set_title(title, fontsize=_TITLE_SIZE)
    axes.set_xlabel(xlabel, fontsize=_LABEL_SIZE)
    axes.set_ylabel(ylabel, fontsize=_LABEL_SIZE)
    axes.tick_params(labelsize=_TICK_SIZE)
    axes.grid(True, color="#e5e5e5", linewidth=0.8)
    axes.set_axisbelow(True)


_NICE_TICKS = ((1, 2, 5), (1, 2, 3, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8))


def _log_ticks(low: float, high: float, most: int = 9) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k, finer when the range is narrow; 1 when in range)
    between ``low`` and ``high``."""
    ticks: list[float] = []
    for mantissas in _NICE_TICKS:
        ticks = [round(m * 10.0 ** k, 12)
                 for k in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
                 for m in mantissas]
        ticks = [t for t in ticks if low <= t <= high]
        if len(ticks) >= 4:
            break
    if len(ticks) > most:  # a wide range: decades only, thinned out around 1
        decades = [10.0 ** k for k in range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)]
        step = max(1, math.ceil(len(decades) / most))
        ticks = [t for t in decades if round(math.log10(t)) % step == 0]
    return ticks or [1.0]


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


# --------------------------------------------------------------------------------- figures


def roc_figure(scores: Mapping[str, Any] | None, title: str) -> bytes | None:
    """ROC curve of every score that has one.

    ``scores[name]["roc"] = {"fpr": [...], "tpr": [...]}``; the legend reads
    ``name (AUC 0.xx [lo, hi])`` from ``scores[name]["auc"] = {"auc", "ci_low", "ci_high"}``
    when present. Returns PNG bytes, or ``None`` when no score has a drawable curve.
    """
    curves = []
    for index, (name, score) in enumerate((scores or {}).items()):
        roc = (score or {}).get("roc") or {}
        fpr, tpr = _array(roc.get("fpr")), _array(roc.get("tpr"))
        if fpr.size < 2 or fpr.size != tpr.size:
            continue
        keep = np.isfinite(fpr) & np.isfinite(tpr)
        if keep.sum() < 2:
            continue
        label = str(name)
        auc = (score or {}).get("auc") or {}
        if math.isfinite(as_number(auc.get("auc"))):
            label += f" (AUC {_fmt(auc.get('auc'))}"
            if math.isfinite(as_number(auc.get("ci_low"))) and math.isfinite(as_number(auc.get("ci_high"))):
                label += f" [{_fmt(auc.get('ci_low'))}, {_fmt(auc.get('ci_high'))}]"
            label += ")"
        curves.append((fpr[keep], tpr[keep], label, _color(index)))
    if not curves:
        return None
    figure = _new_figure(5.8, 5.2)
    axes = figure.add_subplot(1, 1, 1)
    axes.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=1, label="Chance")
    for fpr, tpr, label, color in curves:
        axes.step(fpr, tpr, where="post", color=color, linewidth=2, label=label)
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect("equal")
    _style(axes, title, "1 − specificity (false positive rate)", "Sensitivity (true positive rate)")
    axes.legend(loc="lower right", fontsize=_LEGEND_SIZE, framealpha=0.9)
    return _png(figure)


#: The model (after any update): PALETTE[0] as in every figure, solid, filled circles.
_CALIBRATION_MAIN = ("#1f77b4", "-", "o")
#: Earlier stages of the model's probabilities, in legend order: colour, line style, open marker.
_CALIBRATION_VARIANTS = {"before update": ("#d62728", "--", "o"), "uncalibrated": ("#7f7f7f", ":", "s")}
_CALIBRATION_OTHER = ("#9467bd", "-.", "^")


def _calibration_curve(raw: Any) -> dict[str, Any] | None:
    """Arrays of one score's calibration data: ``curve`` (grid, observed, low, high), ``groups``
    (mean predicted, observed, low, high), ``predictions``, ``outcomes``, ``ici``. A plain list is
    the groups alone (metrics.json before the smoothed curve). None when nothing is drawable."""
    data = {"groups": raw} if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)) else raw
    if not isinstance(data, Mapping):
        return None
    smoothed = data.get("smoothed") if isinstance(data.get("smoothed"), Mapping) else {}
    curve = np.vstack([_array(smoothed.get(k)) for k in ("predicted", "observed")]) \
        if _array(smoothed.get("predicted")).size == _array(smoothed.get("observed")).size else np.empty((2, 0))
    keep = np.isfinite(curve).all(axis=0)
    band = [_array(smoothed.get(k)) for k in ("ci_low", "ci_high")]
    band = [b[keep] if b.size == keep.size else np.full(int(keep.sum()), np.nan) for b in band]
    groups = []
    for row in data.get("groups") or []:
        row = row if isinstance(row, Mapping) else {}
        x, y = as_number(row.get("mean_predicted")), as_number(row.get("observed"))
        if math.isfinite(x) and math.isfinite(y):
            low, high = as_number(row.get("ci_low")), as_number(row.get("ci_high"))
            groups.append((x, y, low if math.isfinite(low) else y, high if math.isfinite(high) else y))
    if keep.sum() < 2 and not groups:
        return None
    predictions, outcomes = _array(data.get("predictions")), _array(data.get("outcomes"))
    if predictions.size != outcomes.size:
        outcomes = np.full(predictions.size, np.nan)
    return {"curve": np.vstack([curve[:, keep], *band]) if keep.sum() >= 2 else np.empty((4, 0)),
            "groups": np.asarray(sorted(groups)).reshape(-1, 4), "predictions": predictions,
            "outcomes": outcomes, "ici": as_number(data.get("ici"))}


def _calibration_stage(name: str, main: str) -> str | None:
    """"before update" of "model (before update)" when ``main`` is "model"; None otherwise."""
    return name[len(main) + 2:-1] if name.startswith(f"{main} (") and name.endswith(")") else None


def _calibration_series(curves: Mapping[str, Any], main: str) -> list[tuple[str, dict[str, Any], tuple[str, ...]]]:
    """(name, data, style) of the main score, then of its earlier stages ``"<main> (...)"`` in the
    order of :data:`_CALIBRATION_VARIANTS`; scores without drawable data are left out."""
    series = []
    for key, raw in curves.items():
        name = str(key)
        stage = _calibration_stage(name, main)
        data = _calibration_curve(raw) if name == main or stage is not None else None
        if data is not None:
            style = _CALIBRATION_MAIN if name == main else _CALIBRATION_VARIANTS.get(stage, _CALIBRATION_OTHER)
            series.append((name, data, style))
    order = [None, *_CALIBRATION_VARIANTS]
    rank = {name: order.index(_calibration_stage(name, main)) if _calibration_stage(name, main) in order
            else len(order) for name, _, _ in series}
    return sorted(series, key=lambda item: rank[item[0]])


def _calibration_limit(drawn: Sequence[tuple[str, dict[str, Any], tuple[str, ...]]]) -> float:
    """Both axes run from 0 to the largest prediction, smoothed risk or group proportion (CIs
    may run off), rounded up to 0.1 with a margin: a model predicting at most 30 % is not
    squeezed into a corner, and the diagonal stays the diagonal."""
    values = [np.r_[d["curve"][0], d["curve"][1], d["groups"][:, 0], d["groups"][:, 1],
                    d["predictions"][np.isfinite(d["predictions"])]] for _, d, _ in drawn]
    top = float(np.max(np.concatenate(values))) if values else 1.0
    return min(1.0, math.ceil((top + 0.04) * 10) / 10)


def _calibration_label(name: str, data: dict[str, Any], what: str) -> str:
    label = f"{name}: {what}"
    return label + (f", ICI {_fmt(data['ici'], 3)}" if math.isfinite(data["ici"]) else "")


def _legend_rank(label: str, names: Sequence[str]) -> tuple[int, int]:
    """Legend order: the diagonal, then per score (model first) its curve, band and groups."""
    owner = max((i for i, name in enumerate(names) if label.startswith(f"{name}: ")), default=-1,
                key=lambda i: len(names[i]))
    kind = 0 if "LOESS" in label else 1 if "CI of the curve" in label else 2
    return owner + 1, kind


def _draw_calibration(axes: Any, name: str, data: dict[str, Any], style: tuple[str, ...], main: bool) -> None:
    """One score's smoothed curve (with its band for the main score) and its risk groups (with
    Wilson CIs for the main score; open markers for an earlier stage)."""
    color, line, marker = style
    grid, observed, low, high = data["curve"]
    if grid.size:
        inside = np.isfinite(low) & np.isfinite(high)
        if main and inside.sum() >= 2:
            axes.fill_between(grid, np.where(inside, low, 0), np.where(inside, high, 0), where=inside, color=color,
                              alpha=0.16, linewidth=0, label=f"{name}: 95% CI of the curve (bootstrap)")
        axes.plot(grid, observed, color=color, linestyle=line, linewidth=2.4 if main else 1.8,
                  label=_calibration_label(name, data, "LOESS curve"))
    groups = data["groups"]
    if groups.size:
        x, y, g_low, g_high = groups.T
        label = f"{name}: observed in {len(x)} risk groups" + (" (95% CI)" if main else "")
        if main:
            error = np.vstack([np.clip(y - g_low, 0, None), np.clip(g_high - y, 0, None)])
            axes.errorbar(x, y, yerr=error, linestyle="none", marker=marker, markersize=7, color=color,
                          markeredgecolor="white", elinewidth=1.4, capsize=4, label=label, zorder=4)
        else:
            axes.plot(x, y, linestyle="none", marker=marker, markersize=7, markerfacecolor="white",
                      markeredgecolor=color, markeredgewidth=1.6, label=label, zorder=4)
        if not grid.size:  # groups only (an old metrics.json): join them, as the curve would
            axes.plot(x, y, color=color, linestyle=line, linewidth=1.2, alpha=0.7)


def _draw_prediction_histogram(axes: Any, data: dict[str, Any], color: str, limit: float) -> None:
    """The main score's predictions: events as bars upwards, non-events downwards."""
    p, y = data["predictions"], data["outcomes"]
    keep = np.isfinite(p)
    bins = np.linspace(0.0, limit, 41)
    events = np.histogram(p[keep & (y == 1)], bins)[0]
    others = np.histogram(p[keep & (y != 1)], bins)[0]
    width = bins[1] - bins[0]
    axes.bar(bins[:-1], events, width=width, align="edge", color=color, alpha=0.85, linewidth=0)
    axes.bar(bins[:-1], -others, width=width, align="edge", color="#9a9a9a", alpha=0.85, linewidth=0)
    axes.axhline(0, color="#555555", linewidth=0.8)
    top = max(int(events.max(initial=0)), int(others.max(initial=0)), 1)
    axes.set_ylim(-top * 1.15, top * 1.15)
    axes.yaxis.set_major_locator(FixedLocator([-top, 0, top]))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{abs(value):g}"))
    axes.text(0.99, 0.93, f"events ({int((keep & (y == 1)).sum())})", transform=axes.transAxes, va="top",
              ha="right", fontsize=_LEGEND_SIZE - 1, color=color)
    axes.text(0.99, 0.07, f"non-events ({int((keep & (y != 1)).sum())})", transform=axes.transAxes,
              va="bottom", ha="right", fontsize=_LEGEND_SIZE - 1, color="#555555")
    axes.tick_params(labelsize=_TICK_SIZE - 1)
    axes.set_xlabel("Predicted probability", fontsize=_LABEL_SIZE)
    axes.set_ylabel("Cases", fontsize=_LABEL_SIZE - 1)


def calibration_figure(curves: Mapping[str, Any] | None, title: str, model: str | None = None) -> bytes | None:
    """Calibration plot of the model: observed against predicted risk.

    ``curves[name]`` is :func:`glmil_auto.evaluation.metrics.calibration.calibration_curve_data`'s
    dict (``smoothed`` curve with its ``ci_low`` / ``ci_high`` band, ``groups`` with Wilson CIs,
    ``predictions`` and ``outcomes``, ``ici``); a plain list of groups (an older metrics.json) is
    drawn as points. Drawn are the score ``model`` (default: the first), solid with its band and
    its risk groups' CIs, and its earlier stages ``"<model> (before update)"`` (dashed) and
    ``"<model> (uncalibrated)"`` (dotted) with open markers; baselines are left to the report's
    calibration table (their curves would cross the model's on a small cohort). Under the plot a
    histogram of the model's predictions (events up, non-events down); the dashed grey diagonal is
    ideal; both axes run from 0 to just above the largest value. Returns ``None`` when the model
    has neither a curve nor a group.
    """
    curves = curves if isinstance(curves, Mapping) else {}
    names = [str(n) for n in curves]
    main = model if model in names else (names[0] if names else None)
    drawn = _calibration_series(curves, main) if main is not None else []
    if not drawn or drawn[0][0] != main:
        return None
    main_data = drawn[0][1]
    limit = _calibration_limit(drawn)
    with_histogram = main_data["predictions"].size > 0
    figure = _new_figure(6.2, 7.4 if with_histogram else 6.0)
    grid = figure.add_gridspec(2 if with_histogram else 1, 1, height_ratios=[5, 1.3] if with_histogram else [1],
                               hspace=0.08)
    axes = figure.add_subplot(grid[0])
    axes.plot([0, limit], [0, limit], linestyle="--", color="#9a9a9a", linewidth=1.2,
              label="Ideal (observed = predicted)")
    for name, data, style in drawn:
        _draw_calibration(axes, name, data, style, main=name == main)
    margin = 0.02 * limit  # a group observed at 0 % shows its whole marker
    axes.set_xlim(-margin, limit)
    axes.set_ylim(-margin, limit)
    _style(axes, title, "" if with_histogram else "Predicted probability", "Observed proportion")
    if with_histogram:
        histogram = figure.add_subplot(grid[1], sharex=axes)
        axes.tick_params(labelbottom=False)
        _draw_prediction_histogram(histogram, main_data, _CALIBRATION_MAIN[0], limit)
        histogram.grid(True, axis="x", color="#e5e5e5", linewidth=0.8)
    handles, labels = axes.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: _legend_rank(labels[i], [d[0] for d in drawn]))
    figure.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper center",
                  bbox_to_anchor=(0.5, 0.02), fontsize=_LEGEND_SIZE, framealpha=0.9, ncol=1)
    return _png(figure)


def decision_curve_figure(dca: Mapping[str, Any] | None, title: str) -> bytes | None:
    """Decision curve: net benefit against threshold probability.

    ``dca = {"thresholds", "treat_all", "treat_none", "curves": {name: [...]}}`` (lists aligned
    with ``thresholds``). The y-axis runs from slightly below 0 to 1.1 x the largest net benefit,
    so a treat-all line falling far below 0 is clipped by the axis, not by the data. Returns
    ``None`` without thresholds or without any finite model curve.
    """
    dca = dca or {}
    thresholds = _array(dca.get("thresholds"))
    if thresholds.size == 0:
        return None

    def aligned(values: Any) -> np.ndarray | None:
        array = _array(values)
        return array if array.size == thresholds.size and np.isfinite(array).any() else None

    models = []
    for index, (name, values) in enumerate((dca.get("curves") or {}).items()):
        array = aligned(values)
        if array is not None:
            models.append((str(name), array, _color(index)))
    if not models:
        return None
    treat_all = aligned(dca.get("treat_all"))
    treat_none = aligned(dca.get("treat_none"))
    if treat_none is None:
        treat_none = np.zeros_like(thresholds)

    figure = _new_figure(6.4, 5.2)
    axes = figure.add_subplot(1, 1, 1)
    if treat_all is not None:
        axes.plot(thresholds, treat_all, color="#7f7f7f", linewidth=1.5, label="Treat all")
    axes.plot(thresholds, treat_none, color="black", linestyle="--", linewidth=1.2, label="Treat none")
    for name, values, color in models:
        axes.plot(thresholds, values, color=color, linewidth=2, label=name)

    candidates = [values for _, values, _ in models] + [treat_none]
    if treat_all is not None:
        candidates.append(treat_all)
    finite = np.concatenate([c[np.isfinite(c)] for c in candidates])
    top = float(finite.max()) if finite.size else 0.0
    top = top * 1.1 if top > 0 else 0.05
    axes.set_ylim(-0.1 * top, top)
    finite_t = thresholds[np.isfinite(thresholds)]
    axes.set_xlim(float(finite_t.min()), float(finite_t.max()))
    _style(axes, title, "Threshold probability", "Net benefit")
    axes.legend(loc="upper right", fontsize=_LEGEND_SIZE, framealpha=0.9)
    return _png(figure)


def kaplan_meier_figure(
    km: Mapping[str, Any] | None,
    title: str,
    logrank_p: float | None = None,
    hazard_ratios: Mapping[str, Any] | None = None,
    reference: str | None = None,
) -> bytes | None:
    """Kaplan-Meier curves per group with shaded CI and a number-at-risk table underneath.

    ``km = {"groups": {label: {"time", "survival", "ci_low", "ci_high", "n_at_risk", "n"?}},
    "at_times": [...]}``; each curve starts at S = 1 at t = 0. The legend carries each group's n
    and, from ``hazard_ratios = {label: {"hazard_ratio", "ci_low", "ci_high", "p_value"}}``, its
    HR [CI] and p (``reference`` is marked "reference"); its title carries the log-rank p-value.
    Returns ``None`` when no group has a curve.
    """
    km = km or {}
    hazard_ratios = hazard_ratios or {}
    groups = []
    for index, (label, group) in enumerate((km.get("groups") or {}).items()):
        group = group or {}
        time, survival = _array(group.get("time")), _array(group.get("survival"))
        if time.size == 0 or time.size != survival.size:
            continue
        low, high = _array(group.get("ci_low")), _array(group.get("ci_high"))
        if low.size != time.size or high.size != time.size:
            low = high = np.full_like(time, np.nan)
        keep = np.isfinite(time) & np.isfinite(survival)
        if not keep.any():
            continue
        order = np.argsort(time[keep], kind="stable")
        time, survival = time[keep][order], survival[keep][order]
        low, high = low[keep][order], high[keep][order]
        groups.append({
            "label": str(label),
            "time": np.r_[0.0, time],
            "survival": np.r_[1.0, survival],
            "low": np.r_[1.0, low],
            "high": np.r_[1.0, high],
            "n": group.get("n"),
            "at_risk": list(group.get("n_at_risk") or []),
            "color": _color(index),
        })
    if not groups:
        return None
    at_times = _array(km.get("at_times"))
    at_times = at_times[np.isfinite(at_times)]
    max_time = max(float(g["time"].max()) for g in groups)
    if at_times.size:
        max_time = max(max_time, float(at_times.max()))
    max_time = max_time if max_time > 0 else 1.0

    table_rows = len(groups) if at_times.size else 0
    table_height = 0.45 + 0.32 * table_rows if table_rows else 0.0
    figure = _new_figure(8.6, 5.6 + table_height)
    if table_rows:
        grid = figure.add_gridspec(2, 1, height_ratios=[5.6, table_height], hspace=0.32)
        axes = figure.add_subplot(grid[0])
        table = figure.add_subplot(grid[1], sharex=axes)
    else:
        axes, table = figure.add_subplot(1, 1, 1), None

    for group in groups:
        label = group["label"]
        n = as_number(group["n"])
        legend = f"{label} (n={int(n)})" if math.isfinite(n) else label
        if reference is not None and label == str(reference):
            legend += ": reference"
        ratio = hazard_ratios.get(label) if isinstance(hazard_ratios, Mapping) else None
        if ratio and math.isfinite(as_number(ratio.get("hazard_ratio"))):
            legend += (f": HR {_fmt(ratio.get('hazard_ratio'))} "
                       f"[{_fmt(ratio.get('ci_low'))}, {_fmt(ratio.get('ci_high'))}], "
                       f"{_fmt_p(ratio.get('p_value'))}")
        axes.step(group["time"], group["survival"], where="post", color=group["color"], linewidth=2,
                  label=legend)
        band = np.isfinite(group["low"]) & np.isfinite(group["high"])
        if band.sum() >= 2:
            axes.fill_between(group["time"], np.where(band, group["low"], np.nan),
                              np.where(band, group["high"], np.nan), step="post",
                              color=group["color"], alpha=0.15, linewidth=0)
    axes.set_ylim(0, 1.02)
    axes.set_xlim(0, max_time * 1.02)
    _style(axes, title, "" if table is not None else "Time", "Survival probability")
    legend_title = None
    if logrank_p is not None and math.isfinite(as_number(logrank_p)):
        legend_title = f"Log-rank {_fmt_p(logrank_p)}"
    axes.legend(loc="best", fontsize=_LEGEND_SIZE, title=legend_title,
                title_fontsize=_LEGEND_SIZE, framealpha=0.9)

    if table is not None:
        axes.tick_params(labelbottom=True)
        table.set_xlabel("Time", fontsize=_LABEL_SIZE)
        table.set_ylim(-0.5, table_rows - 0.5)
        table.set_yticks(range(table_rows))
        table.set_yticklabels([g["label"] for g in reversed(groups)], fontsize=_TICK_SIZE)
        for tick, group in zip(table.get_yticklabels(), reversed(groups)):
            tick.set_color(group["color"])
            tick.set_fontweight("bold")
        for row, group in enumerate(reversed(groups)):
            for column, at in enumerate(at_times):
                count = group["at_risk"][column] if column < len(group["at_risk"]) else None
                text = str(int(as_number(count))) if math.isfinite(as_number(count)) else "–"
                table.text(at, row, text, ha="center", va="center", fontsize=_TICK_SIZE)
        table.set_title("Number at risk", fontsize=_TICK_SIZE, loc="left")
        table.tick_params(axis="y", length=0, pad=22)  # clear of the counts at t = 0
        table.tick_params(axis="x", labelsize=_TICK_SIZE)
        table.set_xticks(at_times)
        for side in ("top", "right", "left"):
            table.spines[side].set_visible(False)
    return _png(figure)


def _ratio_text(short: str, ratio: float, low: float, high: float, p_value: Any) -> str:
    """"OR 1.23 [0.90, 1.68]  p=0.012", leaving out what is missing."""
    if not math.isfinite(ratio):
        return f"{short} n/a"
    text = f"{short} {_fmt(ratio)}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{_fmt(low)}, {_fmt(high)}]"
    if math.isfinite(as_number(p_value)):
        text += f"  {_fmt_p(p_value)}"
    return text


def forest_figure(table_rows: Sequence[Mapping[str, Any]] | None, title: str,
                  ratio_name: str = "odds_ratio") -> bytes | None:
    """Forest plot of a multivariable model: ratio with CI per term on a log x-axis.

    ``table_rows`` are ``{"term", ratio_name, "ci_low", "ci_high", "p_value"}`` (``ratio_name``
    is ``"odds_ratio"`` or ``"hazard_ratio"``), the first term at the top; a dashed line marks 1
    and each row's "ratio [CI], p" is written on the right. Terms without a positive finite ratio
    are listed without a marker; returns ``None`` when no term has one.
    """
    rows = [row for row in (table_rows or []) if row]
    ratio = np.asarray([as_number(row.get(ratio_name)) for row in rows])
    low = np.asarray([as_number(row.get("ci_low")) for row in rows])
    high = np.asarray([as_number(row.get("ci_high")) for row in rows])
    shown = np.isfinite(ratio) & (ratio > 0)
    if not shown.any():
        return None
    values = np.concatenate([ratio[shown], low[np.isfinite(low) & (low > 0)],
                             high[np.isfinite(high) & (high > 0)], [1.0]])
    x_min, x_max = float(values.min()) / 1.3, float(values.max()) * 1.3
    # keep a CI reaching 0 or infinity from stretching the axis beyond reason
    x_min = max(x_min, float(ratio[shown].min()) / 1e3)
    x_max = min(x_max, float(ratio[shown].max()) * 1e3)
    low_drawn = np.clip(np.where(np.isfinite(low) & (low > 0), low, x_min), x_min, x_max)
    high_drawn = np.clip(np.where(np.isfinite(high), high, x_max), x_min, x_max)
    short = "OR" if ratio_name == "odds_ratio" else "HR" if ratio_name == "hazard_ratio" else ratio_name

    positions = np.arange(len(rows))[::-1]
    figure = _new_figure(9.5, 1.5 + 0.45 * len(rows))
    axes = figure.add_subplot(1, 1, 1)
    axes.axvline(1.0, color="#999999", linestyle="--", linewidth=1)
    for position, r, lo, hi, ok in zip(positions, ratio, low_drawn, high_drawn, shown):
        if ok:
            axes.plot([lo, hi], [position, position], color="black", linewidth=1.4)
            axes.plot([r], [position], marker="s", color=_color(0), markersize=7)
    axes.set_xscale("log")
    axes.set_xlim(x_min, x_max)
    axes.xaxis.set_major_locator(FixedLocator(_log_ticks(x_min, x_max)))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_ylim(-0.7, len(rows) - 0.3)
    axes.set_yticks(positions)
    axes.set_yticklabels([str(row.get("term", "")) for row in rows], fontsize=_TICK_SIZE)
    axes.tick_params(axis="y", length=0)
    label = {"odds_ratio": "Odds ratio", "hazard_ratio": "Hazard ratio"}.get(ratio_name, ratio_name)
    _style(axes, title, f"{label} (95% CI, log scale)", "")
    axes.grid(False, axis="y")

    right = axes.twinx()
    right.set_ylim(axes.get_ylim())
    right.set_yticks(positions)
    right.set_yticklabels([_ratio_text(short, r, lo, hi, row.get("p_value"))
                           for row, r, lo, hi in zip(rows, ratio, low, high)],
                          fontsize=_TICK_SIZE, family="monospace")
    right.tick_params(axis="y", length=0)
    return _png(figure)


def shap_summary_figure(summary: Mapping[str, Any] | None, title: str) -> bytes | None:
    """SHAP summary (beeswarm) plot of one endpoint, drawn by ``shap.plots.beeswarm``: one row per
    feature (largest mean |SHAP| at the top), one dot per case at its SHAP value, coloured by the
    feature's value (grey: categories, missing values and the image branches, which have none).

    ``summary`` is an entry of ``metrics["shap"]`` (``glmil_auto.evaluation.report.shap_summary``).
    """
    if not summary or not summary.get("values"):
        return None
    import warnings

    import shap
    from matplotlib import pyplot
    names = [str(n) for n in summary["feature_names"]]
    values = np.asarray([[as_number(v) for v in row] for row in summary["values"]], dtype=float)
    data = np.asarray([[as_number(v) for v in row] for row in summary["feature_values"]], dtype=float)
    if values.size == 0 or not np.isfinite(values).any():
        return None
    explanation = shap.Explanation(values=np.nan_to_num(values), base_values=float(summary.get("base_value") or 0.0),
                                   data=data, feature_names=names)
    figure = _new_figure(8.5, 1.6 + 0.42 * len(names))
    axes = figure.add_subplot(1, 1, 1)
    open_before = set(pyplot.get_fignums())
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)  # all-grey rows
            shap.plots.beeswarm(explanation, max_display=len(names), ax=axes, show=False, plot_size=None,
                                color_bar_label="feature value (grey: none)")
    finally:  # shap may open pyplot figures of its own; they must not pile up in a long run
        for number in set(pyplot.get_fignums()) - open_before:
            pyplot.close(number)
    output = str(summary.get("output") or "output")
    axes.set_xlabel(f"SHAP value (impact on the {output})", fontsize=_LABEL_SIZE)
    axes.set_title(title, fontsize=_TITLE_SIZE)
    return _png(figure)
