"""BraTS-METS 2023 / Pretreat-MetsToBrain-Masks -> a raw dataset.

Download layouts (see documentation/dataset_conversion.md; [verified] = verified from public
sources that read the real files, [not confirmed] = not)::

    BraTS-MET-XXXXX-YYY/BraTS-MET-XXXXX-YYY-{t1c,t1n,t2f,t2w,seg}.nii.gz       [verified]
        1 mm isotropic, SRI24 space, skull-stripped                           [verified]
        seg: 1 non-enhancing tumour core, 2 surrounding FLAIR hyperintensity
             (SNFH, oedema), 3 enhancing tumour                               [verified]

    Pretreat-MetsToBrain-Masks (Yale, TCIA):
    PKG - Pretreat-MetsToBrain-Masks/Pretreat-MetsToBrain-Masks/BraTS-MET-XXXXX-000/...  [verified]
    Pretreat-MetsToBrain-Masks_clin_20230918.xlsx, sheet Data, id BraTS_MET_ID,
        death indicator Death (some cells blank)                              [verified]
        where it sits; survival-time and demographic column names             [not confirmed]

    BraTS 2023 training data: ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData/ and
    ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData_Additional/              [verified]

Case folders are found up to three levels below ``-i``, so the package folder, its inner folder
and a parent of the main and ``_Additional`` training folders all work; a case id found in two
folders is an error naming both. ``XXXXX`` is the patient, ``YYY`` the time point, so
``patient_id`` = ``BraTS-MET-XXXXX`` and dataset.json gets ``"patient_column": "patient_id"``.
Lesion = non-enhancing tumour core + enhancing tumour (lesion_labels [1, 3]); label 2 stays in
the mask as a context label but is not part of any instance. Case folders without a ``seg`` file
(the challenge's validation and test sets) are skipped with a warning: the raw contract needs a
lesion mask. The clinical table: :mod:`glmil_auto.dataset_conversion.brats_clinical`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from glmil_auto.dataset.problems import DatasetError, Problem, error, warning
from glmil_auto.dataset_conversion import brats_clinical
from glmil_auto.dataset_conversion.case_conversion import SourceCase, convert_cases
from glmil_auto.dataset_conversion.raw_writer import RawDatasetWriter
from glmil_auto.dataset_conversion.ucsf_brats_sources import find_folders, unique_by_name

DATASET_ID, DATASET_NAME = 102, "BraTSMETS"
CHANNELS = (("T1c", "t1c"), ("T1", "t1n"), ("FLAIR", "t2f"), ("T2", "t2w"))
LABELS = {"background": 0, "non_enhancing_tumour_core": 1, "surrounding_flair_hyperintensity": 2,
          "enhancing_tumour": 3}
LESION_LABELS = [1, 3]
CASE_FOLDER = re.compile(r"^(BraTS-MET-\d{5})-(\d{3})$")


def patient_of(case_id: str) -> str:
    """``BraTS-MET-00012-001`` -> ``BraTS-MET-00012`` (the time point dropped)."""
    match = CASE_FOLDER.match(case_id)
    return match.group(1) if match else case_id


def is_case_folder(folder: Path) -> bool:
    return CASE_FOLDER.match(folder.name) is not None


def find_cases(source: Path) -> tuple[list[SourceCase], list[Problem]]:
    """Every ``BraTS-MET-XXXXX-YYY`` folder up to three levels below ``source`` with its five files;
    folders without ``seg`` are skipped (warning), other missing files are errors naming the file,
    and an id found in two folders is an error naming both."""
    folders, problems = unique_by_name(find_folders(Path(source), is_case_folder))
    cases = []
    for folder in folders:
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


def convert_brats_mets(source: Path, raw_folder: Path, clinical: Path | None = None,
                       columns: dict[str, str] | None = None, dataset_id: int = DATASET_ID,
                       name: str = DATASET_NAME, overwrite: bool = False, progress: bool = True,
                       sheet: str | None = None, survival: bool = True, os_time_unit: str | None = None
                       ) -> tuple[Path, list[Problem]]:
    """Convert, write and verify; returns the dataset folder and the warnings and notes (every error
    at once in a :class:`DatasetError`). ``clinical`` None: searched below ``source`` and in its
    parent. ``columns`` names table columns (keys ``brats_clinical.COLUMN_KEYS``); ``survival``
    False converts without OS. The table is checked before any image is read."""
    unknown = sorted(set(columns or {}) - set(brats_clinical.COLUMN_KEYS))
    if unknown:
        raise ValueError(f"unknown column key(s) {unknown}; use {list(brats_clinical.COLUMN_KEYS)}")
    cases, problems = find_cases(source)
    if not cases and not [p for p in problems if p.severity == "error"]:
        raise DatasetError(error("no BraTS-MET-XXXXX-YYY folder with a segmentation found up to three folder levels "
                                 "below the source folder", file=str(source)))
    table, table_path, resolved, notes = brats_clinical.read_clinical(Path(source), clinical, sheet, columns or {},
                                                                      survival, os_time_unit)
    writer = RawDatasetWriter(raw_folder, dataset_id, name, [c for c, _ in CHANNELS], LABELS, LESION_LABELS,
                              overwrite)
    problems += convert_cases(writer, cases, progress=progress)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(errors)
    frame = pd.DataFrame({"case_id": writer.cases(), "patient_id": [patient_of(c) for c in writer.cases()]})
    features, endpoints = {}, {}
    if table is not None:
        values, features, endpoints, found = brats_clinical.clinical_columns(writer.cases(), table, table_path, resolved)
        for column, column_values in values.items():
            frame[column] = column_values
        notes += found
    folder = writer.finish({"Tr": frame}, features, endpoints, patient_column="patient_id",
                           description="BraTS-METS / Pretreat-MetsToBrain-Masks, converted by "
                                       "glmil_auto.dataset_conversion.brats_mets")
    return folder, problems + notes
