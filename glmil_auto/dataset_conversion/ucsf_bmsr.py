"""UCSF-BMSR (UCSF Brain Metastases Stereotactic Radiosurgery MRI) -> a raw dataset.

Source layout (as published; see documentation/dataset_conversion.md)::

    SOURCE/<SubjectID>/<SubjectID>_T1pre.nii.gz
                      /<SubjectID>_T1post.nii.gz
                      /<SubjectID>_FLAIR.nii.gz
                      /<SubjectID>_subtraction.nii.gz      (T1post - T1pre)
                      /<SubjectID>_seg.nii.gz              binary: 0 background, 1 metastasis
    subject table (CSV or XLSX): SubjectID, Sex, Age, CancerType, Scanner Strength (Tesla),
        Prior Craniotomy/Biopsy/Resection, BraTS_ID

SubjectID is the patient id followed by an exam letter (``100101A``, ``100101B``: two exams of
patient ``100101``), so the clinical table gets a ``patient_id`` column and dataset.json
``"patient_column": "patient_id"`` (exams of one patient never land in different folds). The
dataset has no outcomes: no endpoint is declared.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from glmil_auto.dataset.problems import DatasetError, Problem, error, warning
from glmil_auto.dataset_conversion.case_conversion import SourceCase, convert_cases
from glmil_auto.dataset_conversion.raw_writer import RawDatasetWriter
from glmil_auto.dataset_conversion.source_files import read_table, require_columns, to_binary, to_number

DATASET_ID, DATASET_NAME = 101, "UCSFBMSR"
# (channel name in dataset.json, file suffix); the first is the reference grid
CHANNELS = (("T1c", "T1post"), ("T1", "T1pre"), ("FLAIR", "FLAIR"), ("subtraction", "subtraction"))
LABELS = {"background": 0, "metastasis": 1}
SUBJECT_ID = re.compile(r"^(\d+)([A-Za-z]+)$")
ID_COLUMN = "SubjectID"
# source column -> (clinical table column, type, parser)
FEATURES = {
    "Sex": ("sex", "categorical", str),
    "Age": ("age", "numeric", to_number),
    "CancerType": ("cancer_type", "categorical", str),
    "Scanner Strength (Tesla)": ("field_strength_t", "numeric", lambda v: to_number(str(v).rstrip("Tt "))),
    "Prior Craniotomy/Biopsy/Resection": ("prior_surgery", "binary", to_binary),
}
KEPT = {"BraTS_ID": "brats_id"}  # copied, not declared (links cases also in BraTS-METS)


def patient_of(subject_id: str) -> str:
    """``100101A`` -> ``100101``; an id without the trailing exam letters is its own patient."""
    match = SUBJECT_ID.match(subject_id)
    return match.group(1) if match else subject_id


def find_cases(source: Path) -> tuple[list[SourceCase], list[Problem]]:
    """One case per ``<SubjectID>`` folder holding ``<SubjectID>_T1post.nii.gz``; folders with some
    of the five files missing are errors naming the file."""
    cases, problems = [], []
    for folder in sorted(p for p in Path(source).iterdir() if p.is_dir() and not p.name.startswith(".")):
        subject = folder.name
        files = [folder / f"{subject}_{suffix}.nii.gz" for _, suffix in CHANNELS] + [folder / f"{subject}_seg.nii.gz"]
        missing = [f for f in files if not f.is_file()]
        if len(missing) == len(files):
            continue  # not a subject folder
        problems += [error("file is missing", subject, str(f)) for f in missing]
        if not missing:
            cases.append(SourceCase(subject, tuple(files[:-1]), files[-1]))
    return cases, problems


def binary_mask(mask: sitk.Image, case: str, path: Path) -> sitk.Image:
    """The published segmentations are binary: any other value is an error naming the file."""
    values = np.unique(sitk.GetArrayViewFromImage(mask))
    if not set(values.tolist()) <= {0, 1}:
        raise DatasetError(error(f"expected a binary segmentation (0, 1), found values {values.tolist()}", case,
                                 str(path)))
    return mask


def clinical_table(cases: list[str], table: pd.DataFrame | None, table_path: Path | None
                   ) -> tuple[pd.DataFrame, dict[str, str], list[Problem]]:
    """``case_id``, ``patient_id`` and the subject-table variables (typed), one row per case, plus
    the declared features and warnings for subjects without a row."""
    frame = pd.DataFrame({"case_id": cases, "patient_id": [patient_of(c) for c in cases]})
    if table is None:
        return frame, {}, []
    require_columns(table, [ID_COLUMN], table_path)
    rows = table.drop_duplicates(ID_COLUMN).set_index(ID_COLUMN).reindex(cases)
    problems = [warning("no row in the subject table: clinical variables unknown", c, str(table_path))
                for c in cases if c not in set(table[ID_COLUMN])]
    features = {}
    for source_column, (column, kind, parse) in FEATURES.items():
        if source_column in rows:
            frame[column] = [None if pd.isna(v) or v == "" else parse(v) for v in rows[source_column]]
            features[column] = kind
    for source_column, column in KEPT.items():
        if source_column in rows:
            frame[column] = rows[source_column].fillna("").to_numpy()
    return frame, features, problems


def convert_ucsf_bmsr(source: Path, raw_folder: Path, table: Path | None = None, dataset_id: int = DATASET_ID,
                      name: str = DATASET_NAME, overwrite: bool = False, progress: bool = True
                      ) -> tuple[Path, list[Problem]]:
    """Convert, write and verify; returns the dataset folder and the warnings. Every error (missing
    or unreadable file, non-binary mask, bad table) is raised at once in a :class:`DatasetError`."""
    cases, problems = find_cases(source)
    if not cases and not problems:
        raise DatasetError(error("no <SubjectID>/<SubjectID>_T1post.nii.gz found", file=str(source)))
    subject_table = read_table(table) if table is not None else None
    writer = RawDatasetWriter(raw_folder, dataset_id, name, [c for c, _ in CHANNELS], LABELS, [1], overwrite)
    problems += convert_cases(writer, cases, mask_transform=binary_mask, progress=progress)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(errors)
    frame, features, notes = clinical_table(writer.cases(), subject_table, table)
    folder = writer.finish({"Tr": frame}, features, {}, patient_column="patient_id",
                           description="UCSF-BMSR, converted by glmil_auto.dataset_conversion.ucsf_bmsr",
                           reference="UCSF Brain Metastases Stereotactic Radiosurgery MRI dataset (UCSF-BMSR)")
    return folder, problems + notes
