"""Lesion-level outcomes of a DICOM-RT conversion: from a table keyed by patient and ROI name to
the raw contract's lesion table ``lesionsTr.csv`` (documentation/dicom_conversion.md).

The source table has one row per treated lesion: the patient, the ROI name of the lesion in the
RTSTRUCT, optionally the study (a date, or a course number for Brain-TR-GammaKnife), one 0/1
column per lesion-level endpoint (empty = unknown) and optionally ``<endpoint>_time``. Steps:

1. :func:`read_lesion_outcomes_csv` (or :func:`lesion_outcomes_from_frame`) parses it; every bad
   cell is reported naming the patient, the ROI, the line and the file.
2. :func:`assign_rows` ties every row to a case and one selected structure of it, from the
   headers only, so that a row naming an unknown ROI or a patient without a converted study stops
   the conversion before anything is written.
3. After the cases are converted, :func:`lesion_table` writes one row per lesion component the
   structure keeps, located by a voxel inside it (:mod:`lesion_points`), and
   :func:`apply_case_labels` makes each case's endpoint consistent with its lesions: any lesion 1
   -> 1; every lesion known 0 -> 0; otherwise the clinical table's value (or unknown).

Such an endpoint is declared ``{"type": "binary", "aggregation": "any_lesion"}``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np
import pandas as pd

from glmil_auto.dataset.safe_names import unsafe_reason
from glmil_auto.dataset_conversion.contour_lesion_mask import structure_mask_names
from glmil_auto.dataset_conversion.dicom_clinical_join import date_key, read_clinical_csv
from glmil_auto.dataset_conversion.dicom_errors import DicomConversionError, DicomProblem, fail

if TYPE_CHECKING:
    from glmil_auto.dataset_conversion.dicom_study_matching import CasePlan
    from glmil_auto.dataset_conversion.lesion_points import StructureLesion

ROI_COLUMN = "roi_name"
POINT_COLUMNS = ("x_mm", "y_mm", "z_mm")
COMPONENT_COLUMN = "lesion_component"  # extra column: label of the 26-connected component in the labels file
TIME_SUFFIX = "_time"
ANY_LESION = "any_lesion"
# cells as the raw contract reads binary columns (glmil_auto/dataset/clinical_table.py)
_MISSING = frozenset({"", "na", "nan", "null", "none", "n/a"})
_TRUE = frozenset({"1", "1.0", "true", "yes"})
_FALSE = frozenset({"0", "0.0", "false", "no"})


def any_lesion_endpoint() -> dict[str, str]:
    """The dataset.json declaration of a binary endpoint meaning "any lesion fails"."""
    return {"type": "binary", "aggregation": ANY_LESION}


@dataclass(frozen=True)
class LesionOutcomeRow:
    """One lesion of the source table; ``values`` endpoint -> 1.0 / 0.0 / NaN (unknown)."""

    line: int  # line of the source file (header = line 1), for messages
    patient: str
    roi: str
    study: str | None
    values: dict[str, float]
    times: dict[str, str] = field(default_factory=dict)  # endpoint -> time cell ("" = unknown)
    extra: dict[str, str] = field(default_factory=dict)  # other columns, copied to the lesion table


def exact_patient(dicom_id: str, table_ids: set[str]) -> str | None:
    """The table's patient id equal (as stripped text) to the DICOM PatientID, else None."""
    return dicom_id.strip() if dicom_id.strip() in table_ids else None


def date_study_key(plan: "CasePlan", plans: list["CasePlan"]) -> str:
    """A study's key for a lesion table with a date column: the digits of its StudyDate."""
    return date_key(plan.study_date)


@dataclass
class LesionOutcomeTable:
    """The parsed source table and how its rows find their cases.

    ``match_patient(dicom_patient_id, table_patient_ids)`` returns the table's id of a converted
    patient; ``study_key(plan, all_plans)`` the key a row's ``study`` must equal (used only when
    the table has a study column). ``unmatched`` is the severity of rows without a converted
    patient or study: ``"error"`` for a centre's own table, ``"warning"`` for a public
    collection whose table also covers courses without images.
    """

    source: Path
    endpoints: list[str]
    rows: list[LesionOutcomeRow]
    has_study: bool = False
    study_label: str = "study date"
    extra_columns: list[str] = field(default_factory=list)
    match_patient: Callable[[str, set[str]], str | None] = exact_patient
    study_key: Callable[["CasePlan", list["CasePlan"]], str] = date_study_key
    unmatched: str = "error"

    @property
    def time_endpoints(self) -> list[str]:
        """Endpoints that have a ``<endpoint>_time`` column."""
        return [e for e in self.endpoints if any(e in row.times for row in self.rows)]


def roi_key(name: str) -> str:
    """ROI names are matched case-insensitively with runs of white space collapsed."""
    return " ".join(str(name).split()).casefold()


def _binary(cell: Any) -> float | None:
    """1.0 / 0.0, NaN for unknown, None for a cell that is not a binary value."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return float("nan")
    if isinstance(cell, (int, float, np.integer, np.floating)):
        return float(cell) if float(cell) in (0.0, 1.0) else None
    token = str(cell).strip().lower()
    if token in _MISSING:
        return float("nan")
    return 1.0 if token in _TRUE else 0.0 if token in _FALSE else None


def _time_problem(cell: str) -> str | None:
    token = cell.strip()
    if token.lower() in _MISSING:
        return None
    try:
        value = float(token) if "_" not in token else float("nan")
    except ValueError:
        value = float("nan")
    return None if np.isfinite(value) and value > 0 else "is not a time > 0"


def read_lesion_outcomes_csv(path: Path, patient_column: str, roi_column: str = ROI_COLUMN,
                             date_column: str | None = None, endpoints: list[str] | None = None
                             ) -> LesionOutcomeTable:
    """Parse the ``--lesion-outcomes`` CSV; raises :class:`DicomConversionError` listing every problem.

    Without ``endpoints``, every column other than the patient, ROI and date columns is a lesion
    endpoint, and ``<endpoint>_time`` its time; with it, the other columns are copied to the
    lesion table as they are.
    """
    frame = read_clinical_csv(Path(path))
    return lesion_outcomes_from_frame(frame, Path(path), patient_column, roi_column, date_column, endpoints,
                                      study_of_cell=date_key)


def _endpoint_columns(frame: pd.DataFrame, keys: list[str], endpoints: list[str] | None, source: Path
                      ) -> tuple[list[str], list[str]]:
    """(endpoints, extra columns) of the source table."""
    others = [c for c in frame.columns if c not in keys]
    if endpoints is None:
        endpoints = [c for c in others if not (c.endswith(TIME_SUFFIX) and c[: -len(TIME_SUFFIX)] in others)]
    missing = [e for e in endpoints if e not in frame.columns]
    if missing:
        raise fail(f"the lesion table has no endpoint column(s) {missing}; columns: {list(frame.columns)}", file=source)
    if not endpoints:
        raise fail("the lesion table has no endpoint column (only the patient, ROI and study columns)", file=source)
    problems = [DicomProblem(f"lesion endpoint {e!r} {unsafe_reason(e)}", file=source) for e in endpoints
                if unsafe_reason(e)]
    reserved = sorted(set(others) & {"case_id", "patient_id", COMPONENT_COLUMN, *POINT_COLUMNS, ROI_COLUMN})
    problems += [DicomProblem(f"the lesion table has a column {c!r}, which the conversion writes itself; rename it",
                              file=source) for c in reserved]
    if problems:
        raise DicomConversionError(problems)
    times = {e + TIME_SUFFIX for e in endpoints}
    return list(endpoints), [c for c in others if c not in endpoints and c not in times]


def lesion_outcomes_from_frame(frame: pd.DataFrame, source: Path, patient_column: str, roi_column: str = ROI_COLUMN,
                               study_column: str | None = None, endpoints: list[str] | None = None,
                               study_of_cell: Callable[[str], str] = str, study_label: str = "study date",
                               **table_options: Any) -> LesionOutcomeTable:
    """Parse a lesion table whose cells are text (see :func:`read_lesion_outcomes_csv`);
    ``study_of_cell`` turns a study cell into the key compared with ``study_key`` of the table
    (``table_options``: ``match_patient``, ``study_key``, ``unmatched``)."""
    keys = [patient_column, roi_column] + ([study_column] if study_column else [])
    missing = [c for c in keys if c not in frame.columns]
    if missing:
        raise fail(f"the lesion table has no column(s) {missing}; columns: {list(frame.columns)}", file=source)
    endpoint_names, extra = _endpoint_columns(frame, keys, endpoints, source)
    rows, problems = [], []
    for number, (_, record) in enumerate(frame.iterrows(), start=2):
        row, row_problems = _parse_row(record, number, source, patient_column, roi_column, study_column,
                                       endpoint_names, extra, study_of_cell)
        problems += row_problems
        if row is not None:
            rows.append(row)
    if problems:
        raise DicomConversionError(problems)
    return LesionOutcomeTable(source, endpoint_names, rows, has_study=study_column is not None, study_label=study_label,
                              extra_columns=extra, **table_options)


def _parse_row(record: pd.Series, line: int, source: Path, patient_column: str, roi_column: str,
               study_column: str | None, endpoints: list[str], extra: list[str], study_of_cell: Callable[[str], str]
               ) -> tuple[LesionOutcomeRow | None, list[DicomProblem]]:
    patient, roi = str(record[patient_column]).strip(), str(record[roi_column]).strip()
    study = str(record[study_column]).strip() if study_column else None
    where = f"lesion table line {line}, ROI {roi!r}"
    problems = []
    if not patient or not roi or (study_column and not study):
        empty = [c for c, v in ((patient_column, patient), (roi_column, roi), (study_column, study)) if c and not v]
        return None, [DicomProblem(f"lesion table line {line}: empty {empty}", patient or None, source)]
    values, times = {}, {}
    for endpoint in endpoints:
        value = _binary(record[endpoint])
        if value is None:
            problems.append(DicomProblem(f"{where}: column {endpoint!r} holds {record[endpoint]!r}; expected 0 or 1 "
                                         "(true/false, yes/no; empty = unknown)", patient, source))
        values[endpoint] = value
        time_column = endpoint + TIME_SUFFIX
        if time_column in record.index:
            reason = _time_problem(str(record[time_column]))
            if reason:
                problems.append(DicomProblem(f"{where}: column {time_column!r} holds {record[time_column]!r}, which "
                                             f"{reason}", patient, source))
            times[endpoint] = str(record[time_column]).strip()
    if problems:
        return None, problems
    return LesionOutcomeRow(line, patient, roi, study_of_cell(study) if study_column else None, values, times,
                            {c: str(record[c]) for c in extra}), []


@dataclass(frozen=True)
class AssignedRow:
    """A source row tied to a case and to the key of one selected structure (``structure_mask_names``)."""

    row: LesionOutcomeRow
    case_id: str
    patient_id: str  # DICOM PatientID
    structure: str


class _Problems:
    """Errors and warnings collected while assigning rows."""

    def __init__(self) -> None:
        self.errors: list[DicomProblem] = []
        self.warnings: list[DicomProblem] = []

    def add(self, severity: str, message: str, patient: str | None, file: Path) -> None:
        problem = DicomProblem(message, patient, file, severity)
        (self.errors if severity == "error" else self.warnings).append(problem)


def assign_rows(table: LesionOutcomeTable, plans: list["CasePlan"]) -> tuple[list[AssignedRow], list[DicomProblem]]:
    """Tie every row to a case and a selected structure, from headers only (before anything is
    written). Returns the rows and the warnings; raises :class:`DicomConversionError` with every
    error: a patient (or, with a study column, a study) without a converted case, a patient with
    several converted studies and no study column, a ROI that is not a selected structure of the
    case, a ROI given twice."""
    table_patients = {row.patient for row in table.rows}
    plans_of: dict[str, list["CasePlan"]] = defaultdict(list)
    for plan in plans:
        patient = table.match_patient(plan.patient_id, table_patients)
        if patient is not None:
            plans_of[patient].append(plan)
    rows_of: dict[str, list[LesionOutcomeRow]] = defaultdict(list)
    for row in table.rows:
        rows_of[row.patient].append(row)
    problems = _Problems()
    assigned: list[AssignedRow] = []
    for patient, rows in rows_of.items():
        for row, plan in _rows_to_plans(table, patient, rows, plans_of.get(patient, []), plans, problems):
            structure = _structure_of(table, row, plan, problems)
            if structure is not None:
                assigned.append(AssignedRow(row, plan.case_id, plan.patient_id, structure))
    _check_duplicates(table, assigned, problems)
    if problems.errors:
        raise DicomConversionError(problems.errors)
    return assigned, problems.warnings


def _rows_to_plans(table: LesionOutcomeTable, patient: str, rows: list[LesionOutcomeRow], own: list["CasePlan"],
                   plans: list["CasePlan"], problems: _Problems) -> list[tuple[LesionOutcomeRow, "CasePlan"]]:
    rois = [r.roi for r in rows]
    if not own:
        problems.add(table.unmatched, f"{len(rows)} row(s) of the lesion table (ROIs {rois}, lines "
                     f"{[r.line for r in rows]}) but no converted study of this patient", patient, table.source)
        return []
    if not table.has_study:
        if len(own) > 1:
            problems.add("error", f"{len(own)} converted studies ({sorted(p.study_date for p in own)}) but the lesion "
                         f"table (ROIs {rois}) has no study column to tell them apart (--lesion-date-column)",
                         own[0].patient_id, table.source)
            return []
        return [(row, own[0]) for row in rows]
    by_key = {table.study_key(plan, plans): plan for plan in own}
    out = []
    for row in rows:
        if row.study in by_key:
            out.append((row, by_key[row.study]))
        else:
            problems.add(table.unmatched, f"lesion table line {row.line}, ROI {row.roi!r}: no converted study with "
                         f"{table.study_label} {row.study!r} (converted: {sorted(by_key)})", own[0].patient_id,
                         table.source)
    return out


def _structure_of(table: LesionOutcomeTable, row: LesionOutcomeRow, plan: "CasePlan", problems: _Problems
                  ) -> str | None:
    names = structure_mask_names(plan.structures)
    matches = [name for name, s in zip(names, plan.structures) if roi_key(s.name) == roi_key(row.roi)]
    if len(matches) == 1:
        return matches[0]
    where = f"lesion table line {row.line}: ROI {row.roi!r}"
    if matches:
        message = f"{where} names {len(matches)} selected structures of the RTSTRUCT {plan.structure_set.path}"
    else:
        in_set = any(roi_key(s.name) == roi_key(row.roi) for s in plan.structure_set.structures)
        hint = (" (the structure set has it, but --structures does not select it or it has no closed contour)"
                if in_set else "")
        message = (f"{where} is not among the selected structures {[s.name for s in plan.structures]} of case "
                   f"{plan.case_id} (RTSTRUCT {plan.structure_set.path}){hint}")
    problems.add("error", message, plan.patient_id, table.source)
    return None


def _check_duplicates(table: LesionOutcomeTable, assigned: list[AssignedRow], problems: _Problems) -> None:
    lines: dict[tuple[str, str], list[int]] = defaultdict(list)
    for item in assigned:
        lines[(item.case_id, item.structure)].append(item.row.line)
    for (case, structure), found in lines.items():
        if len(found) > 1:
            patient = next(a.patient_id for a in assigned if a.case_id == case)
            problems.add("error", f"ROI {structure!r} of case {case} has {len(found)} rows in the lesion table "
                         f"(lines {found})", patient, table.source)


class _Record(Protocol):  # the parts of dicom_rt_conversion.ConvertedCase used here
    case_id: str
    patient_id: str
    rtstruct: str
    structure_voxels: dict[str, int]
    lesions: list["StructureLesion"]


def lesion_table(table: LesionOutcomeTable, assigned: list[AssignedRow], records: list[_Record],
                 case_column: str = "case_id") -> tuple[pd.DataFrame, list[DicomProblem]]:
    """The rows of ``lesionsTr.csv``: one per lesion component holding an assigned structure, in
    case and ROI order, located by a voxel of that structure, and warnings about structures with
    different outcomes merged into one lesion. Raises :class:`DicomConversionError` for a row
    whose structure keeps no voxel (its outcome could not be placed).

    A structure with several islands gives one row per island (same outcome). Structures kept
    touching form one component, which gets one row (the raw contract allows one row per lesion):
    1 when any of them is 1, 0 when all are known 0, else unknown (a structure without a row is
    unknown), with a warning when they differ.
    """
    outcome = {(a.case_id, a.structure): a for a in assigned}
    placed = {(record.case_id, lesion.structure) for record in records for lesion in record.lesions}
    errors = [DicomProblem(f"lesion table line {a.row.line}: ROI {a.row.roi!r} keeps no voxel in the lesion mask of "
                           f"case {a.case_id} (see the warnings about it); its outcome cannot be placed", a.patient_id,
                           table.source) for a in assigned if (a.case_id, a.structure) not in placed]
    if errors:
        raise DicomConversionError(errors)
    rows, warnings = [], []
    for record in records:
        members: dict[int, list["StructureLesion"]] = defaultdict(list)
        for lesion in record.lesions:
            members[lesion.component].append(lesion)
        for component, lesions in members.items():
            items = [outcome.get((record.case_id, lesion.structure)) for lesion in lesions]
            if not any(items):
                continue
            rows.append(_component_row(table, record, lesions, items, case_column))
            warning = _merge_warning(table, record, component, lesions, items)
            if warning is not None:
                warnings.append(warning)
    columns = ([case_column, "patient_id", ROI_COLUMN, *POINT_COLUMNS] + table.endpoints
               + [e + TIME_SUFFIX for e in table.time_endpoints] + [COMPONENT_COLUMN] + table.extra_columns)
    return pd.DataFrame(rows, columns=columns), warnings


def _cell(value: float) -> str:
    return "" if np.isnan(value) else str(int(value))


def _any_lesion(values: list[float]) -> float:
    """1 when any value is 1, 0 when all are 0, else NaN (unknown)."""
    if 1.0 in values:
        return 1.0
    return 0.0 if values and all(v == 0.0 for v in values) else float("nan")


def _time_of(values: list[float], times: list[str], combined: float) -> str:
    """The time of a merged lesion: the earliest of the failed lesions when it failed, the
    earliest given when none failed, else unknown."""
    if np.isnan(combined):
        return ""
    candidates = [t for v, t in zip(values, times) if t and (combined == 0.0 or v == 1.0)]
    return min(candidates, key=float) if candidates else ""


def _component_row(table: LesionOutcomeTable, record: _Record, lesions: list["StructureLesion"],
                   items: list[AssignedRow | None], case_column: str) -> dict:
    first = next(i for i, item in enumerate(items) if item is not None)
    given = [item for item in items if item is not None]
    row = {case_column: record.case_id, "patient_id": record.patient_id,
           ROI_COLUMN: " + ".join(item.row.roi for item in given)}
    row.update({column: round(value, 4) for column, value in zip(POINT_COLUMNS, lesions[first].point_mm)})
    for endpoint in table.endpoints:
        values = [item.row.values[endpoint] if item is not None else float("nan") for item in items]
        combined = _any_lesion(values)
        row[endpoint] = _cell(combined)
        if endpoint in table.time_endpoints:
            times = [item.row.times.get(endpoint, "") if item is not None else "" for item in items]
            row[endpoint + TIME_SUFFIX] = _time_of(values, times, combined)
    row[COMPONENT_COLUMN] = lesions[first].component
    row.update(given[0].row.extra)
    return row


def _merge_warning(table: LesionOutcomeTable, record: _Record, component: int, lesions: list["StructureLesion"],
                   items: list[AssignedRow | None]) -> DicomProblem | None:
    """A warning when the structures of one lesion component have different outcomes."""
    if len(lesions) < 2:
        return None
    shown = {lesion.structure: ("no row" if item is None else
                                "/".join(_cell(item.row.values[e]) or "unknown" for e in table.endpoints))
             for lesion, item in zip(lesions, items)}
    if len(set(shown.values())) < 2:
        return None
    listed = ", ".join(f"{name!r}: {value}" for name, value in shown.items())
    return DicomProblem(f"ROIs {list(shown)} touch and form one lesion (component {component} of case "
                        f"{record.case_id}) but have different outcomes in {table.source} ({'/'.join(table.endpoints)}: "
                        f"{listed}); that lesion's row gets 1 if any is 1, 0 if all are 0, else unknown",
                        record.patient_id, record.rtstruct, "warning")


def apply_case_labels(clinical: pd.DataFrame, table: LesionOutcomeTable, assigned: list[AssignedRow],
                      records: list[_Record], case_column: str = "case_id") -> tuple[pd.DataFrame, list[DicomProblem]]:
    """Each lesion endpoint's case column made consistent with the case's lesions: any lesion 1 ->
    1; every lesion (selected structure with voxels) known 0 -> 0; otherwise the clinical table's
    value, or unknown when it has none. A clinical value the lesions contradict is replaced, with a
    warning naming the case."""
    clinical = clinical.copy()
    warnings = []
    rows_of: dict[str, dict[str, LesionOutcomeRow]] = defaultdict(dict)
    for item in assigned:
        rows_of[item.case_id][item.structure] = item.row
    position = {case: i for i, case in enumerate(clinical[case_column].astype(str))}
    for endpoint in table.endpoints:
        if endpoint not in clinical.columns:
            clinical[endpoint] = ""
        numeric = pd.api.types.is_numeric_dtype(clinical[endpoint])
        cells = clinical[endpoint].tolist()
        for record in records:
            lesions = [s for s, voxels in record.structure_voxels.items() if voxels > 0]
            values = [rows_of[record.case_id][s].values[endpoint] for s in lesions if s in rows_of[record.case_id]]
            derived = 1.0 if 1.0 in values else 0.0 if len(values) == len(lesions) and values and all(
                v == 0.0 for v in values) else None
            index = position[record.case_id]
            given = _binary(cells[index])
            if derived is None or given is None:  # a bad clinical cell is left for the verifier to report
                continue
            if not np.isnan(given) and given != derived:
                warnings.append(DicomProblem(
                    f"case {record.case_id}: the clinical table gives {endpoint} = {int(given)}, its lesions "
                    f"({table.source}) give {int(derived)}; the lesions' value is written", record.patient_id,
                    record.rtstruct, "warning"))
            if np.isnan(given) or given != derived:
                cells[index] = derived if numeric else str(int(derived))
        clinical[endpoint] = cells
    return clinical, warnings
