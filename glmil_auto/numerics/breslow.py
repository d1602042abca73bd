"""Breslow's baseline cumulative hazard for a linear predictor: what turns a Cox-type risk score
into survival probabilities. Used by inference (a model folder's survival probabilities) and
evaluation (the integrated Brier score), hence here, below both."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from glmil_auto.numerics.survival_inputs import ArrayLike, as_float_vector, as_times, survival_cohort

BRESLOW_FORMAT = "glmil_auto.breslow_baseline"
BRESLOW_FORMAT_VERSION = 1


class BreslowBaseline:
    """Breslow's estimate of the baseline cumulative hazard for a linear predictor (log-hazard).

    ``H0(t) = sum over event times t_k <= t of d_k / sum_{j: T_j >= t_k} exp(r_j - c)`` with ``d_k``
    the number of events at ``t_k`` and ``c = risk_offset`` (the mean training risk, a constant
    that keeps ``exp`` in range; the survival does not depend on it). The survival of a case with
    linear predictor ``r`` is ``S(t | r) = exp(-H0(t) * exp(r - c))``, a right-continuous step
    function: 1 before the first training event time and constant after the last one (values
    beyond ``max_time``, the training cohort's last follow-up, are extrapolations).

    Attributes: ``times`` (distinct training event times, increasing), ``cumulative_hazard``
    (``H0`` at those times, relative to ``risk_offset``), ``risk_offset``, ``max_time``, ``n``,
    ``events``.
    """

    def __init__(
        self,
        times: ArrayLike,
        cumulative_hazard: ArrayLike,
        risk_offset: float = 0.0,
        max_time: float | None = None,
        n: int = 0,
        events: int = 0,
    ) -> None:
        self.times = np.asarray(times, dtype=np.float64).reshape(-1)
        self.cumulative_hazard = np.asarray(cumulative_hazard, dtype=np.float64).reshape(-1)
        if self.times.shape != self.cumulative_hazard.shape:
            raise ValueError(
                f"times and cumulative_hazard differ in length: {self.times.size} vs {self.cumulative_hazard.size}"
            )
        if not (np.isfinite(self.times).all() and np.isfinite(self.cumulative_hazard).all()):
            raise ValueError("times and cumulative_hazard must be finite")
        if self.times.size and ((np.diff(self.times) <= 0).any() or self.times[0] < 0):
            raise ValueError("times must be >= 0 and strictly increasing")
        if (self.cumulative_hazard < 0).any() or (np.diff(self.cumulative_hazard) < 0).any():
            raise ValueError("cumulative_hazard must be >= 0 and non-decreasing")
        self.risk_offset = float(risk_offset)
        if not math.isfinite(self.risk_offset):
            raise ValueError("risk_offset must be finite")
        self.max_time = float(max_time) if max_time is not None else (
            float(self.times[-1]) if self.times.size else 0.0
        )
        self.n = int(n)
        self.events = int(events)

    @classmethod
    def fit(cls, train_time: ArrayLike, train_event: ArrayLike, train_risk: ArrayLike) -> "BreslowBaseline":
        """Estimate from training outcomes and the model's linear predictor on the training cases."""
        cohort = survival_cohort(train_time, train_event, {"train_risk": train_risk}, prefix="train_", min_cases=1)
        risk = cohort.scores["train_risk"]
        offset = float(np.mean(risk))
        order = np.argsort(cohort.time, kind="stable")
        time, event = cohort.time[order], cohort.event[order]
        relative = np.exp(risk[order] - offset)
        at_risk = np.cumsum(relative[::-1])[::-1]  # sum over T_j >= T_i (sorted position i onward)
        unique_times, first = np.unique(time, return_index=True)
        deaths = np.add.reduceat(event.astype(np.float64), first)
        has_event = deaths > 0
        increments = deaths[has_event] / at_risk[first][has_event]
        if not np.isfinite(increments).all():
            raise ValueError("train_risk is too spread out: exp(train_risk) overflows")
        return cls(
            times=unique_times[has_event],
            cumulative_hazard=np.cumsum(increments),
            risk_offset=offset,
            max_time=float(time[-1]),
            n=cohort.n,
            events=cohort.events,
        )

    def cumulative_hazard_at(self, horizons: ArrayLike) -> np.ndarray:
        """``H0`` relative to ``risk_offset`` at ``horizons`` (shape ``(len(horizons),)``)."""
        horizon_array = as_times(horizons, "horizons", allow_empty=True)
        index = np.searchsorted(self.times, horizon_array, side="right") - 1
        padded = np.r_[0.0, self.cumulative_hazard]
        return padded[index + 1]

    def survival_at(self, risk: ArrayLike, horizons: ArrayLike) -> np.ndarray:
        """``S(t | r) = exp(-H0(t) * exp(r - risk_offset))``, shape ``(len(risk), len(horizons))``.

        A missing (NaN) risk gives a row of NaN; an infinite one raises.
        """
        risk_array = as_float_vector(np.atleast_1d(np.asarray(risk, dtype=object)), "risk")
        if np.isinf(risk_array).any():
            raise ValueError("risk contains infinite values")
        hazard = self.cumulative_hazard_at(horizons)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.exp(-np.outer(np.exp(risk_array - self.risk_offset), hazard))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (plain floats and ints; floats round-trip exactly)."""
        return {
            "format": BRESLOW_FORMAT,
            "version": BRESLOW_FORMAT_VERSION,
            "times": [float(t) for t in self.times],
            "cumulative_hazard": [float(h) for h in self.cumulative_hazard],
            "risk_offset": self.risk_offset,
            "max_time": self.max_time,
            "n": self.n,
            "events": self.events,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BreslowBaseline":
        """Inverse of :meth:`to_dict`; raises ValueError for anything else."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a dict from BreslowBaseline.to_dict(), got {type(data).__name__}")
        if data.get("format") != BRESLOW_FORMAT:
            raise ValueError(f"not a Breslow baseline: format is {data.get('format')!r}, expected {BRESLOW_FORMAT!r}")
        if data.get("version") != BRESLOW_FORMAT_VERSION:
            raise ValueError(f"unsupported Breslow baseline version {data.get('version')!r}")
        missing = [k for k in ("times", "cumulative_hazard", "risk_offset", "max_time", "n", "events") if k not in data]
        if missing:
            raise ValueError(f"Breslow baseline dict lacks {missing}")
        return cls(
            times=data["times"],
            cumulative_hazard=data["cumulative_hazard"],
            risk_offset=data["risk_offset"],
            max_time=data["max_time"],
            n=data["n"],
            events=data["events"],
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BreslowBaseline):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (
            f"BreslowBaseline({self.times.size} event times, n={self.n}, events={self.events}, "
            f"max_time={self.max_time:g})"
        )


def breslow_baseline(train_time: ArrayLike, train_event: ArrayLike, train_risk: ArrayLike) -> BreslowBaseline:
    """:meth:`BreslowBaseline.fit`: the Breslow baseline for the linear predictor ``train_risk``."""
    return BreslowBaseline.fit(train_time, train_event, train_risk)
