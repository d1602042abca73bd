"""The NYUMets-Brain clinical tables, found by the columns they hold, and the table each column is
taken from.

Verified from public sources: the tables key patients by ``patient_identifier``, and the column
names in :data:`DEFAULT_COLUMNS` (except ``procedure_order``) are the data dictionary's. *Not
confirmed*: the tables' file names, and which table holds which column; so a table is recognised
by its columns (:data:`ROLES`), and each column is looked up in the tables of :data:`LOOKUP`, in
that order. ``procedure_order`` (the column ordering the Gamma Knife procedures of a patient,
default ``time_from_gk_days``) is *not confirmed* either. Each name can be changed with
``--column KEY=NAME``, each table named with ``--patient-table`` / ``--timeseries-table`` /
``--gk-table``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from glmil_auto.dataset.problems import DatasetError, Problem, error, note, warning
from glmil_auto.dataset_conversion.nyumets_layout import listing, normal_id
from glmil_auto.dataset_conversion.source_files import read_table, require_columns

DEFAULT_COLUMNS = {
    "patient": "patient_identifier",
    "age": "age_diagnosis",
    "primary": "primary_histology",              # codes 1-13
    "extracranial": "extracranial_disease_status",  # 1 controlled, 2 active
    "num_tumors": "num_tumors_init",
    "rpa": "rpa",
    "prior_wbrt": "prior_wbrt",
    "follow_up": "total_fu_time",                # days
    "days_to_death": "days_to_death_from_gk",
    "death": "death",
    "time": "time_from_gk_days",                 # the time series' visit time, days from Gamma Knife
    "progress": "num_tumor_progress",
    "new_mets": "new_metastases",                # 0/1
    "kps": "kps_at_gks",                         # Gamma Knife rows only (follow-up KPS is kps_fu)
    "target_volume": "target_volume",
    "margin_dose": "margin_dose",
    "procedure_order": "time_from_gk_days",      # NOT CONFIRMED: orders the procedures of the details table
}
# role -> (what it is, keys it must hold, keys of which it must hold one, the option naming it)
ROLES = {
    "patient": ("the patient-level table", ("patient", "age"), (), "--patient-table"),
    "timeseries": ("the time series", ("patient", "time"), ("progress", "new_mets"), "--timeseries-table"),
    "gk": ("the Gamma Knife details table", ("patient",), ("target_volume", "margin_dose"), "--gk-table"),
}
_BASELINE = ("patient", "gk", "timeseries")
# key -> the tables it is looked up in, in order (the first holding the column is used)
LOOKUP = {
    **{key: _BASELINE for key in ("age", "primary", "extracranial", "num_tumors", "rpa", "prior_wbrt",
                                  "follow_up", "days_to_death")},
    "death": ("timeseries", "patient"),
    "kps": ("gk", "timeseries", "patient"),
    "target_volume": ("gk", "patient"),
    "margin_dose": ("gk", "patient"),
    "progress": ("timeseries",),
    "new_mets": ("timeseries",),
    "procedure_order": ("gk",),
}
# key -> what is lost without it (for the absent-column warnings)
LOST = {"age": "feature age_diagnosis left out", "primary": "feature primary_histology left out",
        "extracranial": "feature extracranial_disease_active left out",
        "num_tumors": "feature num_tumors_init left out", "rpa": "feature rpa left out",
        "prior_wbrt": "feature prior_wbrt left out", "kps": "feature kps_at_gks left out",
        "target_volume": "feature gk_target_volume left out", "margin_dose": "feature gk_margin_dose left out",
        "progress": "endpoint local_failure left out", "new_mets": "endpoint distant_failure left out",
        "follow_up": "OS censored at the last visit instead", "days_to_death": "OS death times left out",
        "death": "OS death flags left out",
        "procedure_order": "each patient's first row is taken as its first Gamma Knife procedure"}


@dataclass
class ClinicalTables:
    """The three tables (text cells), their files, and the role whose table each key is read from."""

    frames: dict[str, pd.DataFrame]
    paths: dict[str, Path]
    columns: dict[str, str]
    sources: dict[str, str | None] = field(default_factory=dict)

    def by_patient(self, role: str) -> dict[str, pd.DataFrame]:
        """Patient id (normalised) -> that table's rows, in file order."""
        frame = self.frames[role]
        ids = frame[self.columns["patient"]].map(normal_id)
        return {pid: rows for pid, rows in frame.groupby(ids, sort=False)}

    def column(self, key: str) -> str:
        return self.columns[key]


def _matches(table: pd.DataFrame, role: str, columns: dict[str, str]) -> bool:
    _, every, one_of, _ = ROLES[role]
    return all(columns[k] in table for k in every) and (not one_of or any(columns[k] in table for k in one_of))


def _signature(role: str, columns: dict[str, str]) -> str:
    what, every, one_of, option = ROLES[role]
    text = ", ".join(columns[k] for k in every)
    if one_of:
        text += " and one of " + "/".join(columns[k] for k in one_of)
    return f"{what} (a csv with {text}; or name it with {option})"


def _table_for(role: str, seen: dict[Path, pd.DataFrame], explicit: Path | None, columns: dict[str, str],
               folder: Path | None) -> tuple[Path, pd.DataFrame] | None:
    """The file named for ``role`` (must hold the patient column), else the one csv of ``seen``
    fitting it; None when none fits, an error when several do."""
    if explicit is not None:
        table = read_table(explicit)
        require_columns(table, [columns["patient"]], explicit)
        return Path(explicit), table
    fits = [p for p, t in seen.items() if _matches(t, role, columns)]
    if len(fits) > 1:
        raise DatasetError(error(f"several csv files look like {ROLES[role][0]}: {[p.name for p in fits]}; "
                                 f"name one with {ROLES[role][3]}", file=str(folder) if folder else None))
    return (fits[0], seen[fits[0]]) if fits else None


def find_tables(seen: dict[Path, pd.DataFrame], explicit: dict[str, Path | None], columns: dict[str, str],
                folder: Path | None) -> tuple[ClinicalTables, list[Problem]]:
    """Each role's table (:func:`_table_for`). One error line, listing every csv seen and its
    columns, when a role has no table; a note naming the tables recognised by their columns."""
    found = {role: _table_for(role, seen, explicit.get(role), columns, folder) for role in ROLES}
    missing = [_signature(role, columns) for role, hit in found.items() if hit is None]
    where = str(folder) if folder else None
    if missing:
        raise DatasetError(error(f"clinical table(s) not found: {'; '.join(missing)}; csv files seen: {listing(seen)}",
                                 file=where))
    tables = ClinicalTables({r: t for r, (_, t) in found.items()}, {r: p for r, (p, _) in found.items()}, columns)
    require_columns(tables.frames["timeseries"], [columns["time"]], tables.paths["timeseries"])
    tables.sources = {key: next((r for r in roles if columns[key] in tables.frames[r]), None)
                      for key, roles in LOOKUP.items()}
    recognised = [f"{ROLES[r][0]} {tables.paths[r].name}" for r in ROLES if explicit.get(r) is None]
    problems = [note("clinical tables recognised by their columns (file names are not confirmed; check them): "
                     + ", ".join(recognised), file=where)] if recognised else []
    return tables, problems + column_report(tables)


def column_report(tables: ClinicalTables) -> list[Problem]:
    """A note listing the optional columns found and the table each is read from; one warning per
    optional column no table holds, naming the column and what is lost."""
    found = {r: [tables.columns[k] for k, source in tables.sources.items() if source == r] for r in ROLES}
    problems = [note("optional columns found: " + "; ".join(f"{tables.paths[r].name}: {', '.join(c)}"
                                                             for r, c in found.items() if c))]
    for key, role in tables.sources.items():
        if role is not None:
            continue
        roles = LOOKUP[key]
        column = repr(tables.columns[key])
        what = (f"{ROLES[roles[0]][0]} {tables.paths[roles[0]].name} has no column {column}" if len(roles) == 1
                else f"no clinical table has column {column}")
        searched = ", ".join(f"{r} {tables.paths[r].name}" for r in roles)
        problems.append(warning(f"{what} ({LOST[key]}); searched: {searched}",
                                file=str(tables.paths[roles[0]]) if len(roles) == 1 else None))
    return problems
