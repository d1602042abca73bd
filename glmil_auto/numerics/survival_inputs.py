"""Checked survival inputs shared by every stage that computes with outcomes: time, event and
scores as float vectors, missing values dropped consistently (see
:mod:`glmil_auto.evaluation.metrics.survival_metrics` for the conventions). Plain numerics below
the pipeline's stages, so that inference (survival probabilities) and evaluation (metrics) share
them without one importing the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

ArrayLike = Any  # sequences, numpy arrays, pandas Series


def as_float_vector(values: ArrayLike, name: str) -> np.ndarray:
    """1-D float64 copy with NaN for missing entries; raises for non-numeric entries."""
    if values is None:
        raise ValueError(f"{name} is required, got None")
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be an array-like of numbers, got a string")
    array = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    if array.ndim == 0:
        raise ValueError(f"{name} must be a 1-D array-like, got a scalar")
    if array.ndim != 1:
        if array.ndim == 2 and 1 in array.shape:
            array = array.reshape(-1)
        else:
            raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.dtype.kind in "biuf":
        return array.astype(np.float64)
    if array.dtype.kind not in "OUS":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    series = pd.Series(array, dtype=object)
    missing = series.map(is_missing).astype(bool)
    try:
        numbers = pd.to_numeric(series.where(~missing, np.nan), errors="raise")
    except (ValueError, TypeError) as exc:
        bad = [repr(v) for v in series[~missing] if not is_number(v)][:3]
        raise ValueError(f"{name} must be numeric; non-numeric values: {', '.join(bad) or exc}") from exc
    return np.asarray(numbers, dtype=np.float64)


def is_missing(value: Any) -> bool:
    """None, NaN, pd.NA, NaT (not an empty string: that is a label / a parse error)."""
    if value is None:
        return True
    if isinstance(value, str):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # array-valued entries
        return False


def is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def check_time(time: np.ndarray, name: str) -> None:
    present = time[~np.isnan(time)]
    if np.isinf(present).any():
        raise ValueError(f"{name} contains infinite values")
    if (present < 0).any():
        raise ValueError(f"{name} must be >= 0; found {present[present < 0][:3].tolist()}")


def check_event(event: np.ndarray, name: str) -> None:
    present = event[~np.isnan(event)]
    bad = present[(present != 0) & (present != 1)]
    if bad.size:
        raise ValueError(f"{name} must be 1 (event) or 0 (censored); found {np.unique(bad)[:3].tolist()}")


def check_same_length(arrays: Mapping[str, np.ndarray | Sequence[Any]]) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError("inputs differ in length: " + ", ".join(f"{k}={v}" for k, v in lengths.items()))
    return next(iter(lengths.values()))


@dataclass
class Cohort:
    """Cases with a known outcome and all scores present, and what was dropped."""

    time: np.ndarray
    event: np.ndarray  # bool
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    n_input: int = 0
    n_dropped_outcome: int = 0
    n_dropped_score: int = 0
    keep: np.ndarray | None = None  # mask over the input cases that were kept

    @property
    def n(self) -> int:
        return int(self.time.shape[0])

    @property
    def events(self) -> int:
        return int(self.event.sum())

    def counts(self) -> dict[str, int]:
        return {
            "n": self.n,
            "events": self.events,
            "n_dropped_outcome": self.n_dropped_outcome,
            "n_dropped_score": self.n_dropped_score,
        }

    def structured(self, index: np.ndarray | None = None) -> np.ndarray:
        """The sksurv ``Surv`` structured array (event: bool, time: float)."""
        y = np.empty(self.n if index is None else index.shape[0], dtype=[("event", bool), ("time", float)])
        y["event"] = self.event if index is None else self.event[index]
        y["time"] = self.time if index is None else self.time[index]
        return y


def survival_cohort(
    time: ArrayLike,
    event: ArrayLike,
    scores: Mapping[str, ArrayLike] | None = None,
    *,
    prefix: str = "",
    score_missing: Mapping[str, np.ndarray] | None = None,
    require_events: bool = True,
    min_cases: int = 2,
) -> Cohort:
    """Validate, then drop cases with a missing outcome and then those with a missing score.

    ``scores`` are 1-D numeric scores (NaN = missing, +-inf rejected). ``score_missing`` are
    precomputed "missing" masks for other per-case inputs (2-D probabilities, group labels).
    """
    time_array = as_float_vector(time, prefix + "time")
    event_array = as_float_vector(event, prefix + "event")
    check_time(time_array, prefix + "time")
    check_event(event_array, prefix + "event")
    score_arrays = {name: as_float_vector(values, name) for name, values in (scores or {}).items()}
    for name, values in score_arrays.items():
        if np.isinf(values).any():
            raise ValueError(f"{name} contains infinite values")
    check_same_length(
        {prefix + "time": time_array, prefix + "event": event_array, **score_arrays, **(score_missing or {})}
    )
    known = ~np.isnan(time_array) & ~np.isnan(event_array)
    scored = np.ones_like(known)
    for values in score_arrays.values():
        scored &= ~np.isnan(values)
    for mask in (score_missing or {}).values():
        scored &= ~np.asarray(mask, dtype=bool)
    keep = known & scored
    cohort = Cohort(
        time=time_array[keep],
        event=event_array[keep].astype(bool),
        scores={name: values[keep] for name, values in score_arrays.items()},
        n_input=int(time_array.shape[0]),
        n_dropped_outcome=int((~known).sum()),
        n_dropped_score=int((known & ~scored).sum()),
        keep=keep,
    )
    label = "training cases" if prefix else "cases"
    if cohort.n < min_cases:
        raise ValueError(
            f"{cohort.n} {label} with a known outcome{' and score' if score_arrays or score_missing else ''} "
            f"remain (of {cohort.n_input}); at least {min_cases} are needed"
        )
    if require_events and cohort.events == 0:
        raise ValueError(f"all {cohort.n} {label} are censored; at least one event is needed")
    return cohort

def as_times(values: ArrayLike, name: str, *, allow_empty: bool = False) -> np.ndarray:
    array = as_float_vector(np.atleast_1d(np.asarray(values, dtype=object)), name)
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got {array[~np.isfinite(array)][:3].tolist()}")
    if (array < 0).any():
        raise ValueError(f"{name} must be >= 0, got {array[array < 0][:3].tolist()}")
    return array
