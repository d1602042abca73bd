"""BraTS-METS 2023 / Pretreat-MetsToBrain-Masks -> a raw dataset.

Source layout (as published; see documentation/dataset_conversion.md)::

    SOURCE/BraTS-MET-XXXXX-YYY/BraTS-MET-XXXXX-YYY-t1c.nii.gz   T1 post-contrast (reference grid)
                              /BraTS-MET-XXXXX-YYY-t1n.nii.gz   T1 native
                              /BraTS-MET-XXXXX-YYY-t2f.nii.gz   T2-FLAIR
                              /BraTS-MET-XXXXX-YYY-t2w.nii.gz   T2
                              /BraTS-MET-XXXXX-YYY-seg.nii.gz   1 necrotic core, 2 oedema, 3 enhancing

All 1 mm isotropic in SRI24 space, skull-stripped. ``XXXXX`` is the patient, ``YYY`` the time
point, so ``patient_id`` = ``BraTS-MET-XXXXX`` and dataset.json gets
``"patient_column": "patient_id"``. Lesion = necrotic core + enhancing tumour (lesion_labels
[1, 3]); oedema (2) stays in the mask as a context label but is not part of any instance.
Case folders without a ``seg`` file (the challenge's validation and test sets) are skipped with a
warning: the raw contract needs a lesion mask.

An optional clinical table (Pretreat-MetsToBrain-Masks ships one) is joined on its id column.
Its column names below are ASSUMED [check against the real file]; every one can be renamed with
``columns`` (``--column KEY=NAME``). Only the columns present are declared.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from glmil_auto.dataset.problems import DatasetError, Problem, error, warning
from glmil_auto.dataset_conversion.case_conversion import SourceCase, convert_cases
from glmil_auto.dataset_conversion.raw_writer import RawDatasetWriter
from glmil_auto.dataset_conversion.source_files import read_table, require_columns, to_binary, to_number

DATASET_ID, DATASET_NAME = 102, "BraTSMETS"
CHANNELS = (("T1c", "t1c"), ("T1", "t1n"), ("FLAIR", "t2f"), ("T2", "t2w"))
LABELS = {"background": 0, "necrotic_core": 1, "oedema": 2, "enhancing_tumour": 3}
LESION_LABELS = [1, 3]
CASE_FOLDER = re.compile(r"^(BraTS-MET-\d{5})-(\d{3})$")
DAYS_PER_MONTH = 30.4375

# key -> ASSUMED column name of the clinical table [check]
DEFAULT_COLUMNS = {
    "id": "BraTS_MET_ID",         # the case folder name, BraTS-MET-XXXXX-YYY
    "age": "Age",                 # years
    "sex": "Sex",
    "primary": "Primary",         # primary cancer type
    "os_time": "OS_days",         # days from the pre-treatment MRI to death or last follow-up
    "os_event": "Deceased",       # 1/yes = died
}


def patient_of(case_id: str) -> str:
    """``BraTS-MET-00012-001`` -> ``BraTS-MET-00012`` (the time point dropped)."""
    match = CASE_FOLDER.match(case_id)
    return match.group(1) if match else case_id


def find_cases(source: Path) -> tuple[list[SourceCase], list[Problem]]:
    """Every ``BraTS-MET-XXXXX-YYY`` folder with its five files; folders without ``seg`` are skipped
    (warning), other missing files are errors naming the file."""
    cases, problems = [], []
    for folder in sorted(p for p in Path(source).iterdir() if p.is_dir() and CASE_FOLDER.match(p.name)):
        case = folder.name
        images = tuple(folder / f"{case}-{suffix}.nii.gz" for _, suffix in CHANNELS)
        mask = folder / f"{case}-seg.nii.gz"
        if not mask.is_file():
            problems.append(warning("skipped: no segmentation (the raw contract needs a lesion mask)", case, str(mask)))
            continue
        missing = [f for f in images if not f.is_file()]
        problems += [error("file is missing", case, str(f)) for f in missing]
        if not missing:
            cases.append(SourceCase(case, images, mask))
    return cases, problems


def clinical_table(cases: list[str], table: pd.DataFrame | None, table_path: Path | None,
                   columns: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str], dict[str, dict], list[Problem]]:
    """``case_id``, ``patient_id`` and, from the optional table, age, sex, primary and overall
    survival (``os_months`` = days / 30.4375, ``os_event``); features and endpoints declared only
    for the columns present."""
    frame = pd.DataFrame({"case_id": cases, "patient_id": [patient_of(c) for c in cases]})
    if table is None:
        return frame, {}, {}, []
    require_columns(table, [columns["id"]], table_path)
    rows = table.drop_duplicates(columns["id"]).set_index(columns["id"]).reindex(cases)
    problems = [warning("no row in the clinical table: clinical variables and outcome unknown", c, str(table_path))
                for c in cases if c not in set(table[columns["id"]])]
    features: dict[str, str] = {}
    for key, kind, parse in (("age", "numeric", to_number), ("sex", "categorical", str),
                             ("primary", "categorical", str)):
        if columns[key] in rows:
            frame[key] = [None if pd.isna(v) or v == "" else parse(v) for v in rows[columns[key]]]
            features[key] = kind
    endpoints: dict[str, dict] = {}
    if columns["os_time"] in rows and columns["os_event"] in rows:
        days = np.array([to_number(v) for v in rows[columns["os_time"]].fillna("")])
        event = np.array([to_binary(v) for v in rows[columns["os_event"]].fillna("")])
        known = (days > 0) & np.isfinite(event)
        problems += [warning("overall survival left unknown (time missing or <= 0, or event not 0/1)", c,
                             str(table_path)) for c, k in zip(cases, known) if not k]
        frame["os_months"] = np.where(known, np.round(days / DAYS_PER_MONTH, 3), np.nan)
        frame["os_event"] = np.where(known, event, np.nan)
        endpoints["os"] = {"type": "survival", "time": "os_months", "event": "os_event"}
    return frame, features, endpoints, problems


def convert_brats_mets(source: Path, raw_folder: Path, clinical: Path | None = None,
                       columns: dict[str, str] | None = None, dataset_id: int = DATASET_ID,
                       name: str = DATASET_NAME, overwrite: bool = False, progress: bool = True
                       ) -> tuple[Path, list[Problem]]:
    """Convert, write and verify; returns the dataset folder and the warnings (every error at once in
    a :class:`DatasetError`). ``columns`` overrides entries of :data:`DEFAULT_COLUMNS`."""
    unknown = sorted(set(columns or {}) - set(DEFAULT_COLUMNS))
    if unknown:
        raise ValueError(f"unknown column key(s) {unknown}; use {sorted(DEFAULT_COLUMNS)}")
    columns = {**DEFAULT_COLUMNS, **(columns or {})}
    cases, problems = find_cases(source)
    if not cases and not [p for p in problems if p.severity == "error"]:
        raise DatasetError(error("no BraTS-MET-XXXXX-YYY folder with a segmentation found", file=str(source)))
    table = read_table(clinical) if clinical is not None else None
    writer = RawDatasetWriter(raw_folder, dataset_id, name, [c for c, _ in CHANNELS], LABELS, LESION_LABELS,
                              overwrite)
    problems += convert_cases(writer, cases, progress=progress)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(errors)
    frame, features, endpoints, notes = clinical_table(writer.cases(), table, clinical, columns)
    folder = writer.finish({"Tr": frame}, features, endpoints, patient_column="patient_id",
                           description="BraTS-METS / Pretreat-MetsToBrain-Masks, converted by "
                                       "glmil_auto.dataset_conversion.brats_mets")
    return folder, problems + notes
