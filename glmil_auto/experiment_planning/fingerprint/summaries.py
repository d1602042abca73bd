"""Dataset-level numbers of the fingerprint, as plain functions of per-case records and tables.

Percentiles are numpy's default (linear interpolation). A statistic over nothing (no lesion in
the dataset, no known outcome) is ``None``, never NaN, so the JSON stays valid.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from glmil_auto.dataset import DatasetSpec, binary_targets, survival_targets

# an S(t) this close above 0.5 counts as 0.5: products like (3/4)*(2/3) are not exact in floats
_KM_TOLERANCE = 1e-12


def to_json_compatible(obj: Any) -> Any:
    """numpy scalars/arrays to Python, tuples to lists, dict keys to str, NaN and inf to ``None``."""
    if isinstance(obj, dict):
        return {str(k): to_json_compatible(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [to_json_compatible(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def distribution(values: Iterable[float], statistics: Sequence[str]) -> dict[str, float | None]:
    """Named statistics of a 1D sample: ``min``, ``max``, ``mean``, ``median``, ``percentile_NN``
    (``percentile_05`` is the 5th, ``percentile_00_5`` the 0.5th). ``None`` when empty."""
    values = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
    return {name: _statistic(values, name) if values.size else None for name in statistics}


def axis_distribution(rows: Sequence[Sequence[float]], statistics: Sequence[str]) -> dict[str, list[float] | None]:
    """Per-axis (column) statistics of ``(n, 3)`` rows such as spacings or extents; ``None`` when empty."""
    array = np.asarray(rows, dtype=float).reshape(-1, 3)
    if array.shape[0] == 0:
        return {name: None for name in statistics}
    return {name: [_statistic(array[:, axis], name) for axis in range(3)] for name in statistics}


def _statistic(values: np.ndarray, name: str) -> float:
    if name in ("min", "max", "mean", "median", "std"):  # std: population (ddof 0)
        return float(getattr(np, name)(values))
    if name.startswith("percentile_"):
        return float(np.percentile(values, float(name[len("percentile_"):].replace("_", "."))))
    raise ValueError(f"unknown statistic '{name}'")


def geometry_summary(records: Sequence[dict]) -> dict[str, dict]:
    """Distributions of canonical spacing and shape and of the head box extent over cases."""
    return {
        "spacing_canonical": axis_distribution(
            [r["spacing_canonical"] for r in records], ("median", "percentile_10", "percentile_90", "min", "max")
        ),
        "shape_canonical": axis_distribution([r["shape_canonical"] for r in records], ("median", "min", "max")),
        "head_extent_mm": axis_distribution(
            [r["head_extent_mm"] for r in records], ("median", "percentile_95", "max", "min")
        ),
    }


def lesion_summary(records: Sequence[dict]) -> dict[str, dict]:
    """Lesion counts per case, and size distributions over all lesions of all cases."""
    lesions = [lesion for r in records for lesion in r["lesions"]]
    counts = [r["n_lesions"] for r in records]
    volumes = distribution((lesion["volume_mm3"] for lesion in lesions), ("min", "median", "percentile_95", "max"))
    volumes["total_median_per_case"] = distribution(
        (sum(lesion["volume_mm3"] for lesion in r["lesions"]) for r in records), ("median",)
    )["median"]
    per_case = distribution(counts, ("mean", "median", "percentile_95", "max", "min"))
    per_case["n_cases_without_lesions"] = int(sum(1 for c in counts if c == 0))
    return {
        "lesions_per_case": per_case,
        "lesion_diameter_mm": distribution(
            (lesion["equivalent_diameter_mm"] for lesion in lesions),
            ("min", "percentile_05", "median", "percentile_95", "max"),
        ),
        "lesion_volume_mm3": volumes,
        "lesion_extent_mm": axis_distribution(
            [lesion["extent_mm"] for lesion in lesions], ("median", "percentile_95", "max")
        ),
        "n_lesions_total": len(lesions),
    }


def skull_stripping_summary(records: Sequence[dict]) -> dict[str, Any]:
    """How many cases are skull-stripped (per-case detection, imaging/skull_stripping.py), and the
    cohort's kind: ``unstripped``, ``skull_stripped`` or ``mixed``."""
    n = len(records)
    k = sum(1 for r in records if r.get("skull_stripped"))
    return {
        "n_cases": n,
        "n_skull_stripped": k,
        "fraction_skull_stripped": k / n if n else None,
        "cohort": "unstripped" if k == 0 else "skull_stripped" if k == n else "mixed",
    }


def pooled_intensity_summary(samples_per_channel: Sequence[np.ndarray]) -> dict[str, dict]:
    """mean, std, median, percentile_00_5, percentile_99_5 of each channel's pooled sample."""
    statistics = ("mean", "std", "median", "percentile_00_5", "percentile_99_5")
    return {str(channel): distribution(sample, statistics) for channel, sample in enumerate(samples_per_channel)}


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival just after each distinct time: ``(times, S(t))``.

    At a distinct time ``t`` the risk set is every case with time ``>= t`` and the events are
    the cases with an event at ``t`` (censoring at ``t`` counts as still at risk, the usual convention).
    """
    time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=float)
    times = np.unique(time)
    at_risk = np.array([(time >= t).sum() for t in times], dtype=float)
    events = np.array([((time == t) & (event == 1)).sum() for t in times], dtype=float)
    return times, np.cumprod(1.0 - events / at_risk)


def kaplan_meier_median(time: np.ndarray, event: np.ndarray) -> float | None:
    """The first time at which the Kaplan-Meier survival is <= 0.5; ``None`` if it never gets there."""
    if len(time) == 0:
        return None
    times, survival = kaplan_meier(time, event)
    reached = np.flatnonzero(survival <= 0.5 + _KM_TOLERANCE)
    return float(times[reached[0]]) if reached.size else None


def endpoint_summaries(table: pd.DataFrame, spec: DatasetSpec) -> dict[str, dict]:
    """Per declared endpoint: known/missing counts and prevalence, or event rate and follow-up.

    ``median_time`` is the Kaplan-Meier median survival; ``median_follow_up`` the reverse
    Kaplan-Meier median (the same estimator with censoring as the event and events as
    censored), the usual estimate of potential follow-up.
    """
    out: dict[str, dict] = {}
    for name, endpoint in spec.endpoints.items():
        if endpoint.type == "binary":
            values = binary_targets(table, name)
            known = values[~np.isnan(values)]
            out[name] = {
                "type": "binary",
                "n_known": int(known.size),
                "n_missing": int(values.size - known.size),
                "prevalence": float(known.mean()) if known.size else None,
                "n_positive": int(known.sum()),
            }
        else:
            time, event = survival_targets(table, spec, name)
            known = ~np.isnan(time) & ~np.isnan(event)
            time, event = time[known], event[known]
            n_events = int(event.sum())
            out[name] = {
                "type": "survival",
                "n_known": int(known.sum()),
                "n_missing": int((~known).sum()),
                "n_events": n_events,
                "event_rate": n_events / time.size if time.size else None,
                "median_time": kaplan_meier_median(time, event),
                "median_follow_up": kaplan_meier_median(time, 1.0 - event),
                "max_time": float(time.max()) if time.size else None,
            }
    return out


def clinical_feature_summaries(table: pd.DataFrame, spec: DatasetSpec) -> dict[str, dict]:
    """Per declared clinical feature: type, missing fraction and its distribution (std with ddof 0)."""
    out: dict[str, dict] = {}
    for name, kind in spec.clinical_features.items():
        column = table[name]
        missing = column.isna().to_numpy()
        summary: dict[str, Any] = {"type": kind, "missing_fraction": float(missing.mean()) if len(column) else None}
        if kind == "numeric":
            summary.update(distribution(column.to_numpy(dtype=float)[~missing], ("mean", "std", "min", "max", "median")))
        elif kind == "binary":
            known = column.to_numpy(dtype=float)[~missing]
            summary["prevalence"] = float(known.mean()) if known.size else None
        else:
            counts = column[~missing].astype(str).value_counts()
            summary["categories"] = {str(value): int(counts[value]) for value in sorted(counts.index)}
        out[name] = summary
    return out


def group_counts(table: pd.DataFrame, spec: DatasetSpec) -> dict[str, int]:
    """Cases per group (sorted by group name); ``{}`` without a group column."""
    if not spec.group_column:
        return {}
    counts = table[spec.group_column].dropna().astype(str).value_counts()
    return {str(group): int(counts[group]) for group in sorted(counts.index)}
