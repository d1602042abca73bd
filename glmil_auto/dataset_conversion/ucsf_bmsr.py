"""UCSF-BMSR (UCSF Brain Metastases Stereotactic Radiosurgery MRI) v1.3 -> a raw dataset.

Download layout (see documentation/dataset_conversion.md; [verified] = verified from public
sources that read the real files, [not confirmed] = not)::

    UCSF_BrainMetastases_v1.3/                                             [verified]
        TableS1_UCSF_BrainMetastases_SubjectInfo.xlsx   sheet RENAMED,     [verified]
            filled rows then blank rows; columns SubjectID, BraTS_ID (often empty), CancerType,
            Scanner Strength (Tesla) [verified]; Sex, Age, Prior Craniotomy/Biopsy/Resection
            [not confirmed: read when present, the report says which were found]
        UCSF_BrainMetastases_TRAIN/<SubjectID>/                            [verified]
            <SubjectID>_{T1pre,T1post,FLAIR,subtraction}.nii.gz            [verified]
            <SubjectID>_seg.nii.gz         binary: 0 background, 1 metastasis [verified]
            <SubjectID>_BRaTS-seg.nii.gz   exams also in BraTS-METS only: BraTS labels 1/2/3
                                           [verified]; its grid [not confirmed: checked against seg]

``-i`` may be the download root, the TRAIN folder or any folder with the subject folders up to
three levels below it. The subject table is searched below ``-i`` and in its parent (the
TableS1 name first); sheet ``RENAMED`` unless ``sheet`` says otherwise.

SubjectID is the patient id followed by an exam letter (``100101A``, ``100101B``: two exams of
patient ``100101``), so the clinical table gets a ``patient_id`` column and dataset.json
``"patient_column": "patient_id"`` (exams of one patient never land in different folds). The
dataset has no outcomes: no endpoint is declared.

Masks: ``mask="seg"`` (default) the binary ``seg`` (labels {background 0, metastasis 1}, lesion
labels [1]); ``mask="brats"`` the ``_BRaTS-seg`` file with the BraTS-METS labels (lesion labels
[1, 3], label 2 kept as context), for the exams that have it; the others are left out (a warning
each), because one dataset cannot mix the two label sets.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from glmil_auto.dataset.problems import DatasetError, Problem, error, note, warning
from glmil_auto.dataset_conversion.brats_mets import LABELS as BRATS_LABELS
from glmil_auto.dataset_conversion.brats_mets import LESION_LABELS as BRATS_LESION_LABELS
from glmil_auto.dataset_conversion.case_conversion import SourceCase, convert_cases
from glmil_auto.dataset_conversion.raw_writer import RawDatasetWriter
from glmil_auto.dataset_conversion.resample_to_reference import resample_mask, same_grid
from glmil_auto.dataset_conversion.source_files import read_volume, to_binary, to_number
from glmil_auto.dataset_conversion.ucsf_brats_sources import (
    ColumnSpec, TableSearch, columns_note, find_folders, find_table, parsed_columns, read_keyed_table, rows_by_id,
    unique_by_name)

DATASET_ID, DATASET_NAME = 101, "UCSFBMSR"
# (channel name in dataset.json, file suffix); the first is the reference grid
CHANNELS = (("T1c", "T1post"), ("T1", "T1pre"), ("FLAIR", "FLAIR"), ("subtraction", "subtraction"))
# --mask choice -> (file suffix, labels, lesion labels)
MASKS = {
    "seg": ("seg", {"background": 0, "metastasis": 1}, [1]),
    "brats": ("BRaTS-seg", BRATS_LABELS, BRATS_LESION_LABELS),
}
LABELS = MASKS["seg"][1]
SUFFIXES = tuple(s for _, s in CHANNELS) + tuple(m[0] for m in MASKS.values())
SUBJECT_ID = re.compile(r"^(\d+)([A-Za-z]+)$")
ID_COLUMN = "SubjectID"
TABLE_NAME = "TableS1_UCSF_BrainMetastases_SubjectInfo.xlsx"
TABLE_SHEET = "RENAMED"
TABLE_SEARCHES = [TableSearch((TABLE_NAME,)), TableSearch(("*SubjectInfo*.xlsx", "*SubjectInfo*.csv")),
                  TableSearch(("*.xlsx", "*.csv"), depth=0, parent=False)]


def field_strength(value: str) -> float:
    """``3``, ``3T``, ``1.5 T`` -> tesla (NaN when not a number)."""
    return to_number(str(value).strip().rstrip("Tt").strip())


COLUMNS = [
    ColumnSpec("cancer_type", ("CancerType",), "cancer_type", "categorical", str, True),
    ColumnSpec("field_strength", ("Scanner Strength (Tesla)",), "field_strength_t", "numeric", field_strength, True),
    ColumnSpec("sex", ("Sex", "Gender"), "sex", "categorical", str, False),
    ColumnSpec("age", ("Age",), "age", "numeric", to_number, False),
    ColumnSpec("prior_surgery", ("Prior Craniotomy/Biopsy/Resection",), "prior_surgery", "binary", to_binary, False),
    # copied, not declared: links the exams also in BraTS-METS (a combined study can drop duplicates)
    ColumnSpec("brats_id", ("BraTS_ID",), "brats_id", None, str, True),
]
COLUMN_KEYS = ("id",) + tuple(spec.key for spec in COLUMNS)


def patient_of(subject_id: str) -> str:
    """``100101A`` -> ``100101``; an id without the trailing exam letters is its own patient."""
    match = SUBJECT_ID.match(subject_id)
    return match.group(1) if match else subject_id


def is_subject_folder(folder: Path) -> bool:
    """A ``<SubjectID>`` folder holds at least one ``<SubjectID>_<suffix>.nii.gz``."""
    return any((folder / f"{folder.name}_{suffix}.nii.gz").is_file() for suffix in SUFFIXES)


def find_cases(source: Path, mask: str = "seg") -> tuple[list[SourceCase], list[Problem]]:
    """One case per ``<SubjectID>`` folder up to three levels below ``source``; a missing channel
    (or, with ``mask="seg"``, a missing seg) is an error naming the file; with ``mask="brats"`` an
    exam without ``_BRaTS-seg`` is left out with a warning."""
    folders, problems = unique_by_name(find_folders(Path(source), is_subject_folder))
    cases = []
    for folder in folders:
        subject = folder.name
        images = [folder / f"{subject}_{suffix}.nii.gz" for _, suffix in CHANNELS]
        mask_file = folder / f"{subject}_{MASKS[mask][0]}.nii.gz"
        if mask == "brats" and not mask_file.is_file():
            problems.append(warning("left out: no BraTS segmentation (--mask brats)", subject, str(mask_file)))
            continue
        missing = [f for f in images + [mask_file] if not f.is_file()]
        problems += [error("file is missing", subject, str(f)) for f in missing]
        if not missing:
            cases.append(SourceCase(subject, tuple(images), mask_file))
    return cases, problems


def binary_mask(mask: sitk.Image, case: str, path: Path) -> sitk.Image:
    """The published segmentations are binary: any other value is an error naming the file."""
    values = np.unique(sitk.GetArrayViewFromImage(mask))
    if not set(values.tolist()) <= {0, 1}:
        raise DatasetError(error(f"expected a binary segmentation (0, 1), found values {values.tolist()}", case,
                                 str(path)))
    return mask


def brats_mask(mask: sitk.Image, case: str, path: Path) -> sitk.Image:
    """The ``_BRaTS-seg`` file as it is, after checking that its tumour core (labels 1, 3) overlaps
    the exam's binary ``seg`` (where both exist): whether the BraTS file is on the exam's grid is
    not confirmed, and a file in another space would give a mask that misses every lesion."""
    seg_path = path.with_name(f"{case}_seg.nii.gz")
    if not seg_path.is_file():
        return mask
    seg = read_volume(seg_path, case)
    core = np.isin(sitk.GetArrayViewFromImage(mask if same_grid(mask, seg) else resample_mask(mask, seg)),
                   BRATS_LESION_LABELS)
    lesion = sitk.GetArrayViewFromImage(seg) > 0
    if lesion.any() and not (core & lesion).any():
        raise DatasetError(error(f"the BraTS tumour core (labels 1, 3) does not overlap the lesions of {seg_path.name}: "
                                 "is the file in another space? (use --mask seg)", case, str(path)))
    return mask


def subject_table(source: Path, table: Path | None, sheet: str | None, columns: dict[str, str]
                  ) -> tuple[pd.DataFrame | None, Path | None, dict[str, str], list[Problem]]:
    """The subject table (``table``, else found below ``source`` or in its parent), the path it was
    read from, key -> source column of the columns found, and the notes and warnings saying what
    was found; ``(None, None, {}, [warning])`` when there is none."""
    path = table if table is not None else find_table(Path(source), TABLE_SEARCHES, "--table")
    if path is None:
        return None, None, {}, [warning(f"no subject table found (looked for {TABLE_NAME} in the source folder, its "
                                        "sub-folders and its parent): no clinical variables; pass --table PATH")]
    id_column = columns.get("id", ID_COLUMN)
    frame, chosen, resolved, problems, found = read_keyed_table(path, TABLE_SHEET, id_column, sheet, COLUMNS, columns)
    where = f" (sheet {chosen!r})" if chosen is not None else ""
    notes = [note(f"subject table{where}: {len(frame)} rows", file=str(path)),
             columns_note(frame, {"id": id_column, **resolved}, path)]
    return frame, path, {"id": id_column, **resolved}, problems + notes + found


def clinical_table(cases: list[str], table: pd.DataFrame | None, table_path: Path | None, resolved: dict[str, str]
                   ) -> tuple[pd.DataFrame, dict[str, str], list[Problem]]:
    """``case_id``, ``patient_id`` and the subject-table variables found (typed), one row per case,
    plus the declared features and warnings (subjects without a row, values that do not parse)."""
    frame = pd.DataFrame({"case_id": cases, "patient_id": [patient_of(c) for c in cases]})
    if table is None:
        return frame, {}, []
    rows, problems = rows_by_id(table, resolved["id"], cases, table_path, "subject table")
    values, features, parsed = parsed_columns(rows, resolved, COLUMNS, cases, table_path)
    for column, column_values in values.items():
        frame[column] = column_values
    if "brats_id" in frame:
        frame["brats_id"] = frame["brats_id"].fillna("")
    return frame, features, problems + parsed


def brats_seg_note(cases: list[SourceCase]) -> list[Problem]:
    """With the binary masks: say how many exams also have a ``_BRaTS-seg`` file (``--mask brats``)."""
    n = sum((c.mask.with_name(f"{c.case_id}_BRaTS-seg.nii.gz")).is_file() for c in cases)
    return [note(f"{n} exams also have <SubjectID>_BRaTS-seg.nii.gz (BraTS labels); --mask brats converts those "
                 "with the BraTS labels")] if n else []


def convert_ucsf_bmsr(source: Path, raw_folder: Path, table: Path | None = None, dataset_id: int = DATASET_ID,
                      name: str = DATASET_NAME, overwrite: bool = False, progress: bool = True,
                      sheet: str | None = None, mask: str = "seg", columns: dict[str, str] | None = None
                      ) -> tuple[Path, list[Problem]]:
    """Convert, write and verify; returns the dataset folder and the warnings and notes. ``table``
    None: found below ``source`` or in its parent. ``columns`` renames table columns (keys
    :data:`COLUMN_KEYS`). Every error (missing or unreadable file, bad mask, bad table) is raised
    at once in a :class:`DatasetError`; the table is checked before any image is read."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {sorted(MASKS)}, got {mask!r}")
    unknown = sorted(set(columns or {}) - set(COLUMN_KEYS))
    if unknown:
        raise ValueError(f"unknown column key(s) {unknown}; use {list(COLUMN_KEYS)}")
    cases, problems = find_cases(source, mask)
    if not cases and not [p for p in problems if p.severity == "error"]:
        raise DatasetError(error(f"no <SubjectID>/<SubjectID>_T1post.nii.gz with its {MASKS[mask][0]} file found up "
                                 "to three folder levels below the source folder", file=str(source)))
    subjects, table_path, resolved, notes = subject_table(Path(source), table, sheet, columns or {})
    _, labels, lesion_labels = MASKS[mask]
    writer = RawDatasetWriter(raw_folder, dataset_id, name, [c for c, _ in CHANNELS], labels, lesion_labels, overwrite)
    problems += convert_cases(writer, cases, mask_transform=binary_mask if mask == "seg" else brats_mask,
                              progress=progress)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(errors)
    frame, features, found = clinical_table(writer.cases(), subjects, table_path, resolved)
    folder = writer.finish({"Tr": frame}, features, {}, patient_column="patient_id",
                           description=f"UCSF-BMSR ({mask} masks), converted by glmil_auto.dataset_conversion.ucsf_bmsr",
                           reference="UCSF Brain Metastases Stereotactic Radiosurgery MRI dataset (UCSF-BMSR)")
    return folder, problems + notes + found + (brats_seg_note(cases) if mask == "seg" else [])
