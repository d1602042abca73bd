"""Join a clinical table to the cases of a DICOM-RT conversion by patient id (and study date).

The table has one row per patient (every study of the patient gets that row), or, with
``date_column``, one row per patient and study (dates in any form whose digits read YYYYMMDD,
such as ``2021-03-04`` or ``20210304``). Patient ids are compared as stripped text, exactly as
DICOM's PatientID, so ``0042`` and ``42`` differ. A case without a row is an error naming the
patient; rows without a case are ignored with a warning (patients not in the DICOM folder).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from glmil_auto.dataset_conversion.dicom_errors import DicomConversionError, DicomProblem, fail
from glmil_auto.dataset_conversion.dicom_study_matching import CasePlan

CASE_COLUMN = "case_id"
PATIENT_COLUMN = "patient_id"
STUDY_DATE_COLUMN = "study_date"


def read_clinical_csv(path: Path) -> pd.DataFrame:
    """Every cell as stripped text ("" when empty)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read the clinical CSV ({exc})", file=path) from exc
    table.columns = [str(c).strip() for c in table.columns]
    return table.apply(lambda column: column.str.strip())


def date_key(value: str) -> str:
    """The first eight digits of a date in any form (``2021-03-04`` -> ``20210304``)."""
    digits = re.sub(r"\D", "", str(value))
    return digits[:8] if len(digits) >= 8 else digits


def join_clinical(plans: list[CasePlan], table: pd.DataFrame | None, patient_column: str | None,
                  date_column: str | None = None, source: str | Path | None = None
                  ) -> tuple[pd.DataFrame, list[DicomProblem]]:
    """One row per case: ``case_id``, ``patient_id``, ``study_date`` and the table's other columns."""
    base = pd.DataFrame({CASE_COLUMN: [p.case_id for p in plans],
                         PATIENT_COLUMN: [p.patient_id for p in plans],
                         STUDY_DATE_COLUMN: [p.study_date for p in plans]})
    if table is None:
        return base, []
    if not patient_column or patient_column not in table.columns:
        raise fail(f"the clinical table has no patient column {patient_column!r}; columns: {list(table.columns)}",
                   file=source)
    if date_column is not None and date_column not in table.columns:
        raise fail(f"the clinical table has no study-date column {date_column!r}", file=source)
    reserved = {CASE_COLUMN, PATIENT_COLUMN, STUDY_DATE_COLUMN} - {patient_column, date_column}
    clashing = sorted(reserved & set(table.columns))
    if clashing:
        raise fail(f"the clinical table has column(s) {clashing}, which the conversion writes itself; rename them",
                   file=source)
    keys = table[patient_column].astype(str).str.strip()
    if date_column is not None:
        keys = keys + "|" + table[date_column].map(date_key)
    repeated = sorted(keys[keys.duplicated()].unique())
    if repeated:
        what = "patient (and study date)" if date_column else "patient"
        raise fail(f"the clinical table has several rows for {what} {repeated}", file=source)
    rows = table.assign(_key=keys.values).set_index("_key")
    wanted = [p.patient_id + ("|" + date_key(p.study_date) if date_column else "") for p in plans]
    problems = [DicomProblem(f"no row in the clinical table (key {key!r} in column {patient_column!r}"
                             + (f" and {date_column!r}" if date_column else "") + ")", plan.patient_id, source)
                for plan, key in zip(plans, wanted) if key not in rows.index]
    if problems:
        raise DicomConversionError(problems)
    unused = sorted(set(rows.index) - set(wanted))
    warnings = [DicomProblem(f"{len(unused)} row(s) of the clinical table match no converted study: "
                             f"{unused[:10]}{' ...' if len(unused) > 10 else ''}", file=source, severity="warning")
                ] if unused else []
    extra = rows.loc[wanted].drop(columns=[c for c in (patient_column, date_column) if c]).reset_index(drop=True)
    return pd.concat([base, extra], axis=1), warnings
