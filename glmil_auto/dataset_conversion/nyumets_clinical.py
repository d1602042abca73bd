"""NYUMets-Brain clinical table: per converted case the baseline variables (from the first Gamma
Knife procedure) and the derived endpoints.

Baseline values are taken from the table :data:`~nyumets_tables.LOOKUP` names for each column:
the patient's row of the patient-level table; the rows of the first procedure of the Gamma Knife
details table (the lowest ``procedure_order`` value; ``target_volume`` summed and ``margin_dose``
the minimum over them, for a table with one row per target); or time-series rows at time <= 0,
the latest first (``kps_at_gks`` only from those; other columns also from later rows when the
earlier ones are empty). Values that do not parse are warnings naming the case, column and value.
Outcome rules: :mod:`glmil_auto.dataset_conversion.nyumets_outcomes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from glmil_auto.dataset.problems import Problem, warning
from glmil_auto.dataset_conversion import nyumets_outcomes as outcomes
from glmil_auto.dataset_conversion.nyumets_layout import normal_id
from glmil_auto.dataset_conversion.nyumets_tables import ClinicalTables
from glmil_auto.dataset_conversion.source_files import parse_column, to_binary, to_number

HISTOLOGY_CODES = range(1, 14)  # the data dictionary's codes; their names are not confirmed, so kept as codes
EXTRACRANIAL = {1.0: 0.0, 2.0: 1.0}  # 1 controlled -> 0, 2 active -> 1


def histology_code(text: str) -> str | None:
    """``"3"`` / ``"3.0"`` -> ``"3"``; None (a warning) for anything but a code 1-13."""
    number = to_number(text)
    return str(int(number)) if math.isfinite(number) and number == int(number) and int(number) in HISTOLOGY_CODES \
        else None


def extracranial_active(text: str) -> float | None:
    """``extracranial_disease_status``: 1 (controlled) -> 0.0, 2 (active) -> 1.0, else None (a warning)."""
    return EXTRACRANIAL.get(to_number(text))


# clinical column -> (column key, type, parser)
FEATURES: dict[str, tuple[str, str, Callable]] = {
    "age_diagnosis": ("age", "numeric", to_number),
    "primary_histology": ("primary", "categorical", histology_code),
    "extracranial_disease_active": ("extracranial", "binary", extracranial_active),
    "num_tumors_init": ("num_tumors", "numeric", to_number),
    "rpa": ("rpa", "categorical", normal_id),
    "prior_wbrt": ("prior_wbrt", "binary", to_binary),
    "kps_at_gks": ("kps", "numeric", to_number),
}
# clinical column -> (column key, aggregate over the first procedure's rows)
AGGREGATES: dict[str, tuple[str, Callable]] = {"gk_target_volume": ("target_volume", np.sum),
                                               "gk_margin_dose": ("margin_dose", np.min)}
BINARY_ENDPOINTS = {"local_failure": "progress", "distant_failure": "new_mets"}


@dataclass
class PatientRecords:
    """One converted case's rows of the three tables: the visits sorted by time (``_time`` parsed)."""

    case: str
    patient: pd.DataFrame
    visits: pd.DataFrame
    first_procedure: pd.DataFrame


def _parsed(values, parse: Callable, column: str, case: str, path) -> tuple[list, list[Problem]]:
    values = list(values)
    return parse_column(values, parse, column, [case] * len(values), path)


def _order_value(text: str) -> float | None:
    """A procedure's order: a number (days), else a date."""
    number = to_number(text)
    if math.isfinite(number):
        return number
    try:
        return float(pd.Timestamp(text).value)
    except (ValueError, TypeError):
        return None


def first_procedure(rows: pd.DataFrame, tables: ClinicalTables, case: str) -> tuple[pd.DataFrame, list[Problem]]:
    """The rows of the patient's first Gamma Knife procedure: those with the lowest order value;
    without an order column (or no readable value), the patient's first row."""
    if rows.empty or tables.sources["procedure_order"] is None:
        return rows.iloc[:1], []
    column = tables.column("procedure_order")
    order, problems = _parsed(rows[column], _order_value, column, case, tables.paths["gk"])
    known = [v for v in order if v is not None]
    if not known:
        return rows.iloc[:1], problems
    return rows[[v == min(known) for v in order]], problems


def patient_records(tables: ClinicalTables, groups: dict[str, dict[str, pd.DataFrame]], patient: str, case: str
                    ) -> tuple[PatientRecords, list[Problem]]:
    """The case's rows of each table (empty frames when it has none)."""
    rows = {role: groups[role].get(patient, tables.frames[role].iloc[:0]) for role in groups}
    column = tables.column("time")
    times, problems = _parsed(rows["timeseries"][column], to_number, column, case, tables.paths["timeseries"])
    visits = rows["timeseries"].assign(_time=[np.nan if t is None else t for t in times])
    visits = visits.sort_values("_time", kind="stable", na_position="last")
    procedure, notes = first_procedure(rows["gk"], tables, case)
    return PatientRecords(case, rows["patient"], visits, procedure), problems + notes


def _baseline_visits(visits: pd.DataFrame, at_gk_only: bool) -> pd.DataFrame:
    """Visits at time <= 0, the latest first; then (unless ``at_gk_only``) the later ones."""
    before = visits[visits["_time"] <= 0].iloc[::-1]
    return before if at_gk_only else pd.concat([before, visits[~(visits["_time"] <= 0)]])


def baseline_texts(records: PatientRecords, tables: ClinicalTables, key: str) -> list[str]:
    """The non-empty cells of ``key``'s column in its table's baseline rows (see the module docstring)."""
    role = tables.sources.get(key)
    if role is None:
        return []
    rows = {"patient": records.patient.iloc[:1], "gk": records.first_procedure}.get(role)
    if rows is None:
        rows = _baseline_visits(records.visits, at_gk_only=key == "kps")
    return [v for v in rows[tables.column(key)] if v != ""]


def _first_number(records: PatientRecords, tables: ClinicalTables, key: str, parse: Callable = to_number
                  ) -> tuple[float, list[Problem]]:
    """The first baseline value of ``key`` parsed (NaN when empty or unreadable, with a warning)."""
    texts = baseline_texts(records, tables, key)[:1]
    if not texts:
        return float("nan"), []
    values, problems = _parsed(texts, parse, tables.column(key), records.case, tables.paths[tables.sources[key]])
    return (float("nan") if values[0] is None else values[0]), problems


def aggregate(records: PatientRecords, tables: ClinicalTables, key: str, combine: Callable
              ) -> tuple[float, list[Problem]]:
    """``combine`` of the readable values of ``key`` in its baseline rows (NaN when none)."""
    texts = baseline_texts(records, tables, key)
    if not texts:
        return float("nan"), []
    values, problems = _parsed(texts, to_number, tables.column(key), records.case, tables.paths[tables.sources[key]])
    known = [v for v in values if v is not None]
    return (float(combine(known)) if known else float("nan")), problems


def _visit_values(records: PatientRecords, tables: ClinicalTables, key: str, parse: Callable
                  ) -> tuple[np.ndarray, list[Problem]]:
    """Per-visit values of a time-series column (NaN: empty, unreadable or no such column)."""
    if tables.sources.get(key) != "timeseries":
        return np.full(len(records.visits), np.nan), []
    column = tables.column(key)
    values, problems = _parsed(records.visits[column], parse, column, records.case, tables.paths["timeseries"])
    return np.array([np.nan if v is None else v for v in values], float), problems


def endpoint_values(records: PatientRecords, tables: ClinicalTables, horizon_days: float | None
                    ) -> tuple[dict[str, float], list[Problem]]:
    """local_failure, distant_failure, os_months and os_event of one case (NaN = unknown)."""
    problems: list[Problem] = []
    times = records.visits["_time"].to_numpy(float)
    visit_death, notes = _visit_values(records, tables, "death", to_binary)
    to_death, more = _first_number(records, tables, "days_to_death")
    follow_up, most = _first_number(records, tables, "follow_up")
    problems += notes + more + most
    flag = float("nan")
    if tables.sources.get("death") == "patient":
        flag, notes = _first_number(records, tables, "death", to_binary)
        problems += notes
        if flag == 0 and math.isfinite(to_death):
            problems.append(warning(f"{tables.column('death')} = 0 but {tables.column('days_to_death')} = "
                                    f"{to_death:g}: taken as died", records.case))
    died = outcomes.death_days(to_death, times, visit_death)
    observed = outcomes.follow_up_days(follow_up, times, died)
    row: dict[str, float] = {}
    for endpoint, key in BINARY_ENDPOINTS.items():
        counts, notes = _visit_values(records, tables, key, to_number)
        problems += notes
        row[endpoint] = outcomes.binary_failure(times, counts, horizon_days, observed, died)
    row["os_months"], row["os_event"] = outcomes.overall_survival(died, observed, died_at_unknown_time=flag == 1)
    return row, problems


def clinical_row(records: PatientRecords, tables: ClinicalTables, horizon_days: float | None
                 ) -> tuple[dict, list[Problem]]:
    """The case's baseline cells (text, parsed later column by column), aggregates and endpoints."""
    row: dict = {column: (baseline_texts(records, tables, key)[:1] or [""])[0]
                 for column, (key, _, _) in FEATURES.items()}
    problems: list[Problem] = []
    for column, (key, combine) in AGGREGATES.items():
        row[column], notes = aggregate(records, tables, key, combine)
        problems += notes
    values, notes = endpoint_values(records, tables, horizon_days)
    return {**row, **values}, problems + notes


def parse_features(frame: pd.DataFrame, tables: ClinicalTables) -> tuple[pd.DataFrame, list[Problem]]:
    """The FEATURES columns of ``frame`` (text) parsed, one warning per unreadable value naming
    the case, the column and the value."""
    problems: list[Problem] = []
    cases = list(frame["case_id"])
    for column, (key, _, parse) in FEATURES.items():
        role = tables.sources.get(key)
        path = tables.paths[role] if role else None
        frame[column], notes = parse_column(frame[column], parse, tables.column(key), cases, path)
        problems += notes
    return frame, problems


def declared(tables: ClinicalTables) -> tuple[dict[str, str], dict[str, dict]]:
    """Features and endpoints whose source column some table holds (only those are declared)."""
    features = {c: kind for c, (key, kind, _) in FEATURES.items() if tables.sources.get(key)}
    features.update({c: "numeric" for c, (key, _) in AGGREGATES.items() if tables.sources.get(key)})
    endpoints: dict[str, dict] = {e: {"type": "binary"} for e, key in BINARY_ENDPOINTS.items()
                                  if tables.sources.get(key)}
    endpoints["os"] = {"type": "survival", "time": "os_months", "event": "os_event"}
    return features, endpoints
