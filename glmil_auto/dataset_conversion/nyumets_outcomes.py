"""NYUMets-Brain outcome derivations, per patient, from the (first) Gamma Knife (GK) treatment on.

The NYUMets clinical tables have no ready-made endpoint columns; these functions derive them from
the patient-level values (``total_fu_time``, ``days_to_death_from_gk``, ``death``) and the time
series (one row per visit, ``time_from_gk_days``). The column names are the data dictionary's
(verified from public sources); that the times count days from the first GK procedure, and which
table holds ``death``, are *not confirmed*. A visit at time <= 0 is before treatment.

- **local failure**: a follow-up visit (time > 0) within the horizon with
  ``num_tumor_progress`` > 0 (progression of a treated lesion) -> 1. No such visit -> 0 when the
  patient was followed up to the horizon or died before it without failure (death is a competing
  event: a patient who died without local failure never had one); otherwise unknown (censored
  before the horizon). With no horizon (``None``): 1 if ever, 0 with at least one follow-up visit.
- **distant failure**: the same with ``new_metastases`` > 0 (new brain metastases; 0/1).
- **OS**: event 1 at ``days_to_death_from_gk`` when given, else at the first visit with
  ``death`` = 1 (when ``death`` is a time-series column); a patient-level ``death`` = 1 without
  a time leaves OS unknown; otherwise censored (event 0) at ``total_fu_time`` or, when that is
  empty, at the last visit. Months = days / 30.4375. A time <= 0 leaves OS unknown.
"""

from __future__ import annotations

import math

import numpy as np

DAYS_PER_MONTH = 30.4375


def follow_up_days(total_fu_time: float, visit_times: np.ndarray, death_days: float) -> float:
    """The longest time the patient is known to have been observed (NaN when nothing is known)."""
    values = [v for v in (total_fu_time, death_days, *np.asarray(visit_times, float)) if math.isfinite(v)]
    return max(values) if values else float("nan")


def binary_failure(visit_times: np.ndarray, counts: np.ndarray, horizon_days: float | None,
                   observed_days: float, death_days: float) -> float:
    """1.0 / 0.0 / NaN (unknown) for one patient; see the module docstring for the rule.

    ``counts`` is the per-visit count of the event (progressing treated lesions or new
    metastases); an empty count (NaN) is not an event.
    """
    times, counts = np.asarray(visit_times, float), np.asarray(counts, float)
    after = np.isfinite(times) & (times > 0)
    window = after if horizon_days is None else after & (times <= horizon_days)
    if np.any(np.nan_to_num(counts[window]) > 0):
        return 1.0
    if horizon_days is None:
        return 0.0 if after.any() else float("nan")
    if (math.isfinite(observed_days) and observed_days >= horizon_days) or (
            math.isfinite(death_days) and 0 < death_days <= horizon_days):
        return 0.0
    return float("nan")


def death_days(days_to_death_from_gk: float, visit_times: np.ndarray, visit_death: np.ndarray) -> float:
    """Days from GK to death: the patient-level value, else the first visit recording death."""
    if math.isfinite(days_to_death_from_gk):
        return days_to_death_from_gk
    times = np.asarray(visit_times, float)
    died = np.nan_to_num(np.asarray(visit_death, float)) > 0
    return float(times[died & np.isfinite(times)].min()) if (died & np.isfinite(times)).any() else float("nan")


def overall_survival(died_days: float, observed_days: float, died_at_unknown_time: bool = False
                     ) -> tuple[float, float]:
    """``(os_months, os_event)``: death -> (days / 30.4375, 1); else censored at the follow-up
    -> (days / 30.4375, 0); (NaN, NaN) when no positive time is known, or when the patient is known
    to have died (``died_at_unknown_time``) but not when (censoring them would be wrong)."""
    if math.isfinite(died_days):
        return (round(died_days / DAYS_PER_MONTH, 3), 1.0) if died_days > 0 else (float("nan"), float("nan"))
    if died_at_unknown_time:
        return float("nan"), float("nan")
    if math.isfinite(observed_days) and observed_days > 0:
        return round(observed_days / DAYS_PER_MONTH, 3), 0.0
    return float("nan"), float("nan")
