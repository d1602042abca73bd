"""The Pretreat-MetsToBrain-Masks clinical table for the BraTS-METS converter: finding it, its
columns, and overall survival from ``Death`` plus a survival-time column.

Verified from public sources that read the real file: the name
``Pretreat-MetsToBrain-Masks_clin_20230918.xlsx``, the sheet ``Data``, the id column
``BraTS_MET_ID`` (the case folder name) and the death indicator ``Death`` (1 died, 0 alive; some
cells blank). Not confirmed: where the file sits relative to the image folder (it is searched
below ``-i`` and in its parent), and the names of the survival-time and demographic columns. The
time column is looked for under the names of :data:`TIME_NAMES` (ignoring case, spaces and
punctuation); when the table has ``Death`` but none of them, the conversion stops with one line
listing the table's columns and ``--column os_time=NAME``, before any image is read. The time unit
is taken from the column name (days, months, years) or ``--os-time-unit``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from glmil_auto.dataset.problems import DatasetError, Problem, error, note, warning
from glmil_auto.dataset_conversion.source_files import parse_column, require_columns, to_binary, to_number
from glmil_auto.dataset_conversion.ucsf_brats_sources import (
    ColumnSpec, TableSearch, columns_note, find_table, match_column, parsed_columns, read_keyed_table, rows_by_id)

CLINICAL_NAME = "Pretreat-MetsToBrain-Masks_clin_20230918.xlsx"
CLINICAL_SHEET = "Data"
CLINICAL_SEARCHES = [TableSearch((CLINICAL_NAME,)), TableSearch(("*_clin_*.xlsx", "*_clin_*.csv"))]
ID_COLUMN, EVENT_COLUMN = "BraTS_MET_ID", "Death"
# survival-time column names tried, in order [not confirmed: none is verified in the real file]
TIME_NAMES = ("OS_days", "OS (days)", "Survival_days", "Survival (days)", "Overall survival (days)",
              "OS_months", "OS (months)", "Survival_months", "Survival (months)", "Overall survival (months)")
DAYS_PER = {"days": 1.0, "months": 30.4375, "years": 365.25}
DAYS_PER_MONTH = DAYS_PER["months"]
FEATURES = [
    ColumnSpec("age", ("Age", "Age at diagnosis", "Age_at_MRI"), "age", "numeric", to_number, False),
    ColumnSpec("sex", ("Sex", "Gender"), "sex", "categorical", str, False),
    ColumnSpec("primary", ("Primary", "Primary cancer", "Primary cancer type", "Primary tumor", "Primary site"),
               "primary", "categorical", str, False),
]
COLUMN_KEYS = ("id", "os_time", "os_event") + tuple(spec.key for spec in FEATURES)


def find_clinical(source: Path) -> Path | None:
    """The clinical table below ``source`` (a few levels) or in its parent: the exact name first,
    then ``*_clin_*.xlsx`` / ``.csv``; None when there is none."""
    return find_table(Path(source), CLINICAL_SEARCHES, "--clinical")


def time_unit(column: str, unit: str | None, path: Path) -> str:
    """``unit`` when given, else the unit the column name says (``OS_days`` -> days); one-line
    :class:`DatasetError` when it says none."""
    if unit is not None:
        if unit not in DAYS_PER:
            raise ValueError(f"--os-time-unit must be one of {list(DAYS_PER)}, got {unit!r}")
        return unit
    words = set(re.findall(r"[a-z]+", column.lower()))
    for name, aliases in (("days", {"day", "days", "d"}), ("months", {"month", "months", "mo", "mos"}),
                          ("years", {"year", "years", "yr", "yrs", "y"})):
        if words & aliases:
            return name
    raise DatasetError(error(f"cannot tell the unit of the survival time {column!r} from its name; pass "
                             f"--os-time-unit {'|'.join(DAYS_PER)}", file=str(path)))


def survival_columns(table: pd.DataFrame, columns: dict[str, str], path: Path, unit: str | None
                     ) -> tuple[dict[str, str], list[Problem]]:
    """``{"os_time": NAME, "os_event": NAME, "os_unit": UNIT}`` when OS can be declared, ``{}`` and a
    warning when the table has no death column; one-line :class:`DatasetError` listing the table's
    columns and the ``--column os_time=`` option when it has the death column but no time column."""
    event = columns.get("os_event", EVENT_COLUMN)
    if event not in table.columns:
        if "os_event" in columns:
            require_columns(table, [event], path)
        return {}, [warning(f"table has no column {event!r} (verified in the real file): no OS endpoint; name it "
                            f"with --column os_event=NAME; the table's columns are {list(table.columns)}",
                            file=str(path))]
    if "os_time" in columns:
        require_columns(table, [columns["os_time"]], path)
        time = columns["os_time"]
    else:
        time = match_column(list(table.columns), TIME_NAMES)
    if time is None:
        raise DatasetError(error(f"the table has the death column {event!r} but no survival-time column (tried "
                                 f"{list(TIME_NAMES)}); its columns are {list(table.columns)}; name it with --column "
                                 "os_time=NAME (or convert without OS: --no-survival)", file=str(path)))
    return {"os_time": time, "os_event": event, "os_unit": time_unit(time, unit, path)}, []


def read_clinical(source: Path, clinical: Path | None, sheet: str | None, columns: dict[str, str],
                  survival: bool = True, unit: str | None = None
                  ) -> tuple[pd.DataFrame | None, Path | None, dict[str, str], list[Problem]]:
    """The clinical table (``clinical``, else :func:`find_clinical`), its path, key -> source column
    for the columns found (``os_unit`` too), and the notes and warnings saying what was found.
    Everything that can stop the conversion is checked here, before any image is read."""
    path = clinical if clinical is not None else find_clinical(source)
    if path is None:
        return None, None, {}, [note(f"no clinical table found (looked for {CLINICAL_NAME} and *_clin_*.xlsx below the "
                                     "source folder and in its parent): no clinical columns, no endpoint; pass "
                                     "--clinical PATH if there is one")]
    id_column = columns.get("id", ID_COLUMN)
    table, chosen, resolved, problems, found = read_keyed_table(path, CLINICAL_SHEET, id_column, sheet, FEATURES,
                                                                columns)
    resolved = {"id": id_column, **resolved}
    if survival:
        os_columns, lost = survival_columns(table, columns, path, unit)
        resolved.update(os_columns)
        found += lost
    where = f" (sheet {chosen!r})" if chosen is not None else ""
    notes = [note(f"clinical table{where}: {len(table)} rows", file=str(path)),
             columns_note(table, {k: v for k, v in resolved.items() if k != "os_unit"}, path)]
    if "os_unit" in resolved:
        notes.append(note(f"overall survival: event {resolved['os_event']!r}, time {resolved['os_time']!r} in "
                          f"{resolved['os_unit']}", file=str(path)))
    return table, path, resolved, problems + notes + found


def overall_survival(rows: pd.DataFrame, resolved: dict[str, str], cases: list[str], has_row: list[bool], path: Path
                     ) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """``os_months`` and ``os_event`` per case (NaN = unknown) and a warning for each case with a
    row whose OS is unknown: blank ``Death``, a value that does not parse (named), a blank or
    non-positive time."""
    time, event = resolved["os_time"], resolved["os_event"]
    times, problems = parse_column(rows[time], to_number, time, cases, path)
    events, parsed = parse_column(rows[event], to_binary, event, cases, path)
    problems += parsed
    months, died = np.full(len(cases), np.nan), np.full(len(cases), np.nan)
    for k, (case, t, e) in enumerate(zip(cases, times, events)):
        if not has_row[k]:
            continue  # already warned: no row
        raw_event = str(rows[event].iloc[k]).strip() if pd.notna(rows[event].iloc[k]) else ""
        if raw_event == "":
            problems.append(warning(f"column {event!r} is blank: overall survival unknown", case, str(path)))
        elif e is not None and (t is None or t <= 0):
            problems.append(warning(f"column {time!r}: no positive survival time: overall survival unknown", case,
                                    str(path)))
        elif e is not None:
            months[k] = round(t * DAYS_PER[resolved["os_unit"]] / DAYS_PER_MONTH, 3)
            died[k] = e
    return months, died, problems


def clinical_columns(cases: list[str], table: pd.DataFrame, path: Path, resolved: dict[str, str]
                     ) -> tuple[dict[str, object], dict[str, str], dict[str, dict], list[Problem]]:
    """clinicalTr.csv columns (age, sex, primary, ``os_months``, ``os_event``: those found), the
    declared features and endpoints, and the warnings (cases without a row, unknown values)."""
    rows, problems = rows_by_id(table, resolved["id"], cases, path, "clinical table")
    values, features, parsed = parsed_columns(rows, resolved, FEATURES, cases, path)
    problems += parsed
    endpoints: dict[str, dict] = {}
    if "os_unit" in resolved:
        has_row = [c in set(table[resolved["id"]]) for c in cases]
        values["os_months"], values["os_event"], found = overall_survival(rows, resolved, cases, has_row, path)
        problems += found
        endpoints["os"] = {"type": "survival", "time": "os_months", "event": "os_event"}
    return values, features, endpoints, problems
