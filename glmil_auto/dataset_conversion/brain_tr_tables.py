"""The Brain-TR-GammaKnife clinical workbook: its ``lesion_level`` and ``course_level`` sheets as
lesion rows (recurrence at an explicit horizon) and course rows (diagnosis and demographics).

Column names and the meaning of ``mri_type`` follow the verified layout (documentation/
dicom_conversion.md, "Brain-TR-GammaKnife"); the value vocabularies of ``mri_type`` and
``Diagnosis (Only want Mets)`` are not confirmed, so every value not understood is a warning
naming the patient, the sheet row, the column and the value, and ``--mri-type`` /
``--diagnosis`` extend the vocabularies without editing code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.dataset_conversion.dicom_errors import DicomProblem
from glmil_auto.dataset_conversion.source_files import read_table, to_number

LESION_SHEET, COURSE_SHEET = "lesion_level", "course_level"
PATIENT = "unique_pt_id"
LESION_COURSE, LESION_NUMBER, LESION_LOCATION = "Treatment Course", "Lesion #", "Lesion Location"
LESION_NAME, MRI_TYPE, DURATION, FRACTIONS = ("Lesion Name in NRRD files", "mri_type", "duration_tx_to_imag (months)",
                                              "Fractions")
COURSE_NUMBER, DIAGNOSIS, PRIMARY, AGE, GENDER = ("Course #", "Diagnosis (Only want Mets)", "Primary Diagnosis",
                                                  "Age at Diagnosis", "Gender")
LESION_COLUMNS = {"required": (PATIENT, LESION_COURSE, LESION_NAME, MRI_TYPE),
                  "optional": (LESION_NUMBER, LESION_LOCATION, DURATION, FRACTIONS)}
COURSE_COLUMNS = {"required": (PATIENT, COURSE_NUMBER), "optional": (DIAGNOSIS, PRIMARY, AGE, GENDER)}
DEFAULT_HORIZON_MONTHS = 12.0

RECURRED, NOT_RECURRED = "recurrence", "no_recurrence"
# mri_type: "recurrence" is verified; the other words are a guess at the sheet's vocabulary
MRI_TYPE_WORDS = {
    RECURRED: ("recurrence", "recurred", "recurrent", "local recurrence", "progression", "progressive"),
    NOT_RECURRED: ("stable", "follow up", "followup", "fu", "no recurrence", "non recurrence", "nonrecurrence",
                   "response", "responding", "regression", "shrinking", "complete response", "partial response",
                   "radiation necrosis", "necrosis", "treatment effect"),
}
METASTASIS, OTHER_DIAGNOSIS = "metastasis", "other"
_NOT_METASTASIS = re.compile(r"\b(non|not|no)\s*met")
_METASTASIS = re.compile(r"\bmet|^(yes|y|true|1)$")
OTHER_DIAGNOSIS_WORDS = ("no", "n", "false", "0", "meningioma", "schwannoma", "vestibular schwannoma",
                         "acoustic neuroma", "avm", "arteriovenous malformation", "glioma", "glioblastoma", "gbm",
                         "pituitary adenoma", "adenoma", "trigeminal neuralgia", "primary", "primary brain tumor")
SEX_WORDS = {"m": "M", "male": "M", "f": "F", "female": "F"}


@dataclass(frozen=True)
class LesionRow:
    """One row of ``lesion_level``; ``local_failure`` is the outcome at the horizon (1, 0, NaN)."""

    sheet_row: int  # row in the sheet as read (header = row 1; blank rows are dropped first)
    patient: str  # unique_pt_id as written
    course: int
    number: str  # Lesion #
    name: str  # Lesion Name in NRRD files
    location: str
    mri_type: str
    recurred: float  # mri_type read as 1 / 0 / NaN, whatever the follow-up
    months: float  # duration_tx_to_imag (months), NaN when unknown
    fractions: float
    local_failure: float


@dataclass(frozen=True)
class CourseRow:
    """One row of ``course_level``."""

    sheet_row: int
    patient: str
    course: int
    diagnosis: str
    primary: str
    age: float
    sex: str


def normalised(text: str) -> str:
    """Case, hyphens, underscores and runs of spaces ignored: ``Follow-Up`` -> ``follow up``."""
    return " ".join(re.sub(r"[-_/]+", " ", str(text)).split()).casefold()


def vocabulary_options(pairs: list[str], kinds: tuple[str, ...], option: str) -> dict[str, str]:
    """``["pending=no_recurrence", ...]`` -> ``{"pending": "no_recurrence"}`` (keys normalised);
    ValueError naming ``option`` when malformed."""
    out = {}
    for text in pairs:
        value, found, kind = text.rpartition("=")
        if not found or not value.strip() or kind.strip() not in kinds:
            raise ValueError(f"{option} must look like VALUE=KIND with KIND in {list(kinds)}, got {text!r}")
        out[normalised(value)] = kind.strip()
    return out


def recurrence_of(cell: str, extra: dict[str, str] | None = None) -> float | None:
    """``mri_type`` as 1.0 (recurred), 0.0 (not recurred), NaN (empty); None when not understood."""
    token = normalised(cell)
    if not token:
        return float("nan")
    kind = (extra or {}).get(token) or next((k for k, words in MRI_TYPE_WORDS.items() if token in words), None)
    return None if kind is None else 1.0 if kind == RECURRED else 0.0


def outcome_at_horizon(recurred: float, months: float, horizon: float | None) -> float:
    """Local failure within ``horizon`` months (None: ever). A recurrence seen at ``months`` <= the
    horizon is 1 and one seen later is 0 (the lesion had not been seen to recur by the horizon); a
    lesion without recurrence is 0 when followed at least ``horizon`` months, else unknown (NaN)."""
    if np.isnan(recurred) or horizon is None:
        return recurred
    if np.isnan(months):
        return float("nan")
    if recurred == 1.0:
        return 1.0 if months <= horizon else 0.0
    return 0.0 if months >= horizon else float("nan")


def any_lesion(values: list[float]) -> float:
    """1 when any value is 1; 0 when every value is 0; NaN otherwise (or without values)."""
    if any(v == 1.0 for v in values):
        return 1.0
    return 0.0 if values and all(v == 0.0 for v in values) else float("nan")


def diagnosis_kind(cell: str, extra: dict[str, str] | None = None) -> str | None:
    """``metastasis`` or ``other`` for a ``Diagnosis (Only want Mets)`` cell; ``metastasis`` for an
    empty cell (the collection is one of metastases); None when not understood."""
    token = normalised(cell)
    if not token:
        return METASTASIS
    if token in (extra or {}):
        return extra[token]
    if _NOT_METASTASIS.search(token):
        return OTHER_DIAGNOSIS
    if _METASTASIS.search(token):
        return METASTASIS
    return OTHER_DIAGNOSIS if token in OTHER_DIAGNOSIS_WORDS else None


def course_number(cell: str) -> int | None:
    """``1``, ``1.0``, ``Course 2`` -> the number; None when there is no single whole number."""
    number = to_number(cell)
    if np.isfinite(number) and number == int(number) and number > 0:
        return int(number)
    digits = re.findall(r"\d+", str(cell))
    return int(digits[0]) if len(digits) == 1 and int(digits[0]) > 0 else None


def read_sheet(path: Path, sheet: str, columns: dict[str, tuple[str, ...]]) -> tuple[pd.DataFrame, list[DicomProblem]]:
    """One sheet, its headers renamed to the expected names where they differ only in case or
    spacing; :class:`DatasetError` naming the sheet, the columns and the file for a missing
    required column, one warning per missing optional column."""
    table = read_table(path, sheet)
    keys = {" ".join(str(c).split()).casefold(): c for c in table.columns}
    wanted = columns["required"] + columns["optional"]
    table = table.rename(columns={keys[" ".join(w.split()).casefold()]: w for w in wanted
                                  if w not in table.columns and " ".join(w.split()).casefold() in keys})
    missing = [c for c in columns["required"] if c not in table.columns]
    if missing:
        raise DatasetError(error(f"sheet {sheet!r} lacks column(s) {missing}; its columns are {list(table.columns)}",
                                 file=str(path)))
    notes = [DicomProblem(f"sheet {sheet!r} has no column {c!r} (left unknown); its columns are {list(table.columns)}",
                          file=path, severity="warning") for c in columns["optional"] if c not in table.columns]
    for column in columns["optional"]:
        if column not in table.columns:
            table[column] = ""
    return table, notes


class _Notes:
    """Warnings about cells, each naming the patient, the sheet row, the column and the value."""

    def __init__(self, path: Path, sheet: str) -> None:
        self.path, self.sheet, self.items = path, sheet, []

    def add(self, patient: str, row: int, message: str) -> None:
        self.items.append(DicomProblem(f"{self.sheet} row {row}: {message}", patient or None, self.path, "warning"))

    def parsed(self, patient: str, row: int, column: str, cell: str, parse: Callable[[str], float | None],
               hint: str = "") -> float:
        """``parse(cell)``; NaN with a warning when a non-empty cell does not parse."""
        value = parse(cell) if str(cell).strip() else float("nan")
        if value is None or (not np.isfinite(value) and str(cell).strip()):
            self.add(patient, row, f"column {column!r}: value {cell!r} not understood, left unknown{hint}")
            return float("nan")
        return value


def _course_rows(table: pd.DataFrame, course_column: str, notes: "_Notes"
                 ) -> Iterator[tuple[int, str, int, pd.Series]]:
    """``(sheet row, patient, course number, row)`` of every row with a patient and a course
    number; the others are warnings (left out)."""
    for index, record in table.iterrows():
        line, patient = int(index) + 2, str(record[PATIENT]).strip()
        course = course_number(record[course_column])
        if not patient or course is None:
            notes.add(patient, line, f"no patient or no course number ({PATIENT!r} {patient!r}, "
                                     f"{course_column!r} {record[course_column]!r}): row left out")
            continue
        yield line, patient, course, record


def lesion_rows(table: pd.DataFrame, path: Path, horizon: float | None, mri_types: dict[str, str] | None = None
                ) -> tuple[list[LesionRow], list[DicomProblem]]:
    """Every ``lesion_level`` row with a patient and a course; the others are warnings."""
    notes = _Notes(path, LESION_SHEET)
    hint = f" (known values: documentation/dicom_conversion.md; add --mri-type VALUE={RECURRED}|{NOT_RECURRED})"
    rows = []
    for line, patient, course, record in _course_rows(table, LESION_COURSE, notes):
        recurred = notes.parsed(patient, line, MRI_TYPE, record[MRI_TYPE], lambda c: recurrence_of(c, mri_types), hint)
        months = notes.parsed(patient, line, DURATION, record[DURATION], to_number)
        if np.isfinite(months) and months < 0:
            notes.add(patient, line, f"column {DURATION!r}: value {record[DURATION]!r} is negative, left unknown")
            months = float("nan")
        fractions = notes.parsed(patient, line, FRACTIONS, record[FRACTIONS], to_number)
        rows.append(LesionRow(line, patient, course, str(record[LESION_NUMBER]), str(record[LESION_NAME]),
                              str(record[LESION_LOCATION]), str(record[MRI_TYPE]), recurred, months, fractions,
                              outcome_at_horizon(recurred, months, horizon)))
    return rows, notes.items


def course_rows(table: pd.DataFrame, path: Path) -> tuple[dict[tuple[str, int], CourseRow], list[DicomProblem]]:
    """``(unique_pt_id, Course #) -> CourseRow``; rows without a course number, or repeating one,
    are warnings (the first row is kept)."""
    notes = _Notes(path, COURSE_SHEET)
    rows: dict[tuple[str, int], CourseRow] = {}
    for line, patient, course, record in _course_rows(table, COURSE_NUMBER, notes):
        if (patient, course) in rows:
            notes.add(patient, line, f"course {course} repeats row {rows[patient, course].sheet_row}: row left out")
            continue
        age = notes.parsed(patient, line, AGE, record[AGE], to_number)
        sex_cell = str(record[GENDER]).strip()
        sex = SEX_WORDS.get(sex_cell.casefold(), "")
        if sex_cell and not sex:
            notes.add(patient, line, f"column {GENDER!r}: value {sex_cell!r} not understood (M/F), left unknown")
        rows[patient, course] = CourseRow(line, patient, course, str(record[DIAGNOSIS]).strip(),
                                          str(record[PRIMARY]).strip(), age, sex)
    return rows, notes.items
