"""Fake UCSF-BMSR v1.3, Pretreat-MetsToBrain-Masks and BraTS-METS 2023 downloads for the converter
tests, in the layouts verified from public sources that read the real files: the download
folders (names with spaces), the table file names and sheets (the sheet used is not the first of
the workbook), blank rows after the filled ones, blank ``Death`` cells, the ``_Additional``
training folder, ``<SubjectID>_BRaTS-seg.nii.gz`` for the exams also in BraTS-METS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from conversion_sources import brats_labels, rendered_cases, save, t1_pre
from glmil_auto.synthetic.render import RenderedCase

UCSF_ROOT = "UCSF_BrainMetastases_v1.3"
UCSF_TRAIN = "UCSF_BrainMetastases_TRAIN"
UCSF_TABLE = "TableS1_UCSF_BrainMetastases_SubjectInfo.xlsx"
PRETREAT_PACKAGE = "PKG - Pretreat-MetsToBrain-Masks"
PRETREAT_INNER = "Pretreat-MetsToBrain-Masks"
PRETREAT_TABLE = "Pretreat-MetsToBrain-Masks_clin_20230918.xlsx"
BRATS_TRAINING = "ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData"
BRATS_ADDITIONAL = BRATS_TRAINING + "_Additional"
BLANK_ROWS = pd.DataFrame({"filler": ["", " ", ""]})  # what a spreadsheet's formatted but empty rows read as


def write_workbook(path: Path, sheets: dict[str, pd.DataFrame]) -> Path:
    """An .xlsx with ``sheets`` in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, frame in sheets.items():
            frame.to_excel(writer, sheet_name=name, index=False)
    return path


def with_blank_rows(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` followed by rows whose cells are empty or blank."""
    blanks = pd.DataFrame({c: list(BLANK_ROWS["filler"]) for c in table.columns})
    return pd.concat([table, blanks], ignore_index=True)


def ucsf_subjects(exams_per_patient: tuple[int, ...]) -> list[str]:
    return [f"{100101 + p}{'ABCDEFG'[e]}" for p, n in enumerate(exams_per_patient) for e in range(n)]


def write_ucsf_table(root: Path, table: pd.DataFrame) -> Path:
    """``root/TableS1_UCSF_BrainMetastases_SubjectInfo.xlsx``: a first sheet ``ORIGINAL`` (other
    ids, also with a SubjectID column), then ``RENAMED`` = ``table`` (rows in reverse order) and
    blank rows."""
    original = pd.DataFrame({"SubjectID": [f"UCSF-{k:04d}" for k in range(len(table))], "Notes": ["x"] * len(table)})
    renamed = with_blank_rows(table.iloc[::-1].reset_index(drop=True))
    return write_workbook(root / UCSF_TABLE, {"ORIGINAL": original, "RENAMED": renamed})


def write_ucsf_bmsr(parent: Path, exams_per_patient: tuple[int, ...] = (2, 1, 2), brats_seg: tuple[str, ...] = ("100102A",)
                    ) -> tuple[Path, pd.DataFrame]:
    """``parent/UCSF_BrainMetastases_v1.3/`` with the subject table and
    ``UCSF_BrainMetastases_TRAIN/<SubjectID>/<SubjectID>_{T1pre,T1post,FLAIR,subtraction,seg}.nii.gz``
    (SubjectID = 6-digit patient id + exam letter), plus ``<SubjectID>_BRaTS-seg.nii.gz`` (BraTS
    labels on the exam's grid) for the exams in ``brats_seg``. Returns the download root and the
    table's filled rows (every optional column present; rewrite it with :func:`write_ucsf_table`)."""
    root = parent / UCSF_ROOT
    subjects = ucsf_subjects(exams_per_patient)
    rows = []
    for k, (subject, (spec, rc)) in enumerate(zip(subjects, rendered_cases(len(subjects)))):
        folder = root / UCSF_TRAIN / subject
        pre = t1_pre(rc)
        for suffix, array in (("T1pre", pre), ("T1post", rc.t1c), ("FLAIR", rc.flair), ("subtraction", rc.t1c - pre)):
            save(array, rc.grid, folder / f"{subject}_{suffix}.nii.gz")
        save(rc.mask, rc.grid, folder / f"{subject}_seg.nii.gz", sitk.sitkUInt8)
        if subject in brats_seg:
            save(brats_labels(rc.mask), rc.grid, folder / f"{subject}_BRaTS-seg.nii.gz", sitk.sitkUInt8)
        patient = int(subject[:6]) - 100101
        rows.append({"SubjectID": subject, "BraTS_ID": f"BraTS-MET-{k + 2:05d}-000" if subject in brats_seg else "",
                     "CancerType": spec.clinical["primary"], "Scanner Strength (Tesla)": 3 if subject[-1] == "B" else 1.5,
                     "Sex": "F" if patient % 2 else "M", "Age": int(spec.clinical["age"]),
                     "Prior Craniotomy/Biopsy/Resection": "Yes" if patient == 0 else "No"})
    table = pd.DataFrame(rows)
    write_ucsf_table(root, table)
    return root, table


def write_brats_case(folder: Path, rc: RenderedCase, seg: bool = True) -> Path:
    """``folder/<case>-{t1c,t1n,t2f,t2w}.nii.gz`` (+ ``-seg`` with labels 1/2/3), case = folder name."""
    case = folder.name
    for suffix, array in (("t1c", rc.t1c), ("t1n", t1_pre(rc)), ("t2f", rc.flair), ("t2w", rc.flair[::-1])):
        save(array, rc.grid, folder / f"{case}-{suffix}.nii.gz")
    if seg:
        save(brats_labels(rc.mask), rc.grid, folder / f"{case}-seg.nii.gz", sitk.sitkUInt8)
    return folder


def brats_ids(patients: tuple[int, ...], timepoints: tuple[int, ...] | None = None) -> list[str]:
    """``BraTS-MET-XXXXX-YYY`` ids, sorted: patient numbers ``patients``, time points 0..n-1."""
    timepoints = timepoints or (1,) * len(patients)
    return sorted(f"BraTS-MET-{p:05d}-{t:03d}" for p, n in zip(patients, timepoints) for t in range(n))


def pretreat_clinical(ids: list[str], time_column: str = "Survival_days") -> pd.DataFrame:
    """The ``Data`` sheet: BraTS_MET_ID, Age, Sex, Primary, ``time_column``, Death (1/0, the third
    case blank), plus a row for a patient without images."""
    n = len(ids)
    return pd.DataFrame({
        "BraTS_MET_ID": ids + ["BraTS-MET-09999-000"],
        "Age": [55 + 3 * k for k in range(n)] + [70],
        "Sex": [("F", "M")[k % 2] for k in range(n)] + ["M"],
        "Primary": [("lung", "breast", "melanoma")[k % 3] for k in range(n)] + ["renal"],
        time_column: [300 + 60 * k for k in range(n)] + [50],
        "Death": pd.Series([None if k == 2 else 1 - k % 2 for k in range(n)] + [1], dtype=object),
    })


def write_pretreat(parent: Path, patients: tuple[int, ...] = (2, 3, 4, 5), clinical: pd.DataFrame | None = None,
                   table_in: str = "package") -> tuple[Path, list[str], pd.DataFrame]:
    """``parent/PKG - Pretreat-MetsToBrain-Masks/Pretreat-MetsToBrain-Masks/BraTS-MET-XXXXX-000/``
    (one time point per patient, rendered cases of seed 1 in id order) and the clinical workbook
    (sheets ``Dictionary`` then ``Data``, blank rows after the data) in the package folder
    (``table_in="package"``), the inner folder (``"inner"``) or beside the package (``"parent"``).
    Returns the package folder, the case ids and the clinical table written."""
    package = parent / PRETREAT_PACKAGE
    ids = brats_ids(patients)
    for case, (_, rc) in zip(ids, rendered_cases(len(ids), seed=1)):
        write_brats_case(package / PRETREAT_INNER / case, rc)
    clinical = pretreat_clinical(ids) if clinical is None else clinical
    where = {"package": package, "inner": package / PRETREAT_INNER, "parent": parent}[table_in]
    dictionary = pd.DataFrame({"Variable": list(clinical.columns), "Description": ["..."] * len(clinical.columns)})
    write_workbook(where / PRETREAT_TABLE, {"Dictionary": dictionary, "Data": with_blank_rows(clinical)})
    return package, ids, clinical


def write_brats2023_training(parent: Path, main: tuple[int, ...] = (2, 3), additional: tuple[int, ...] = (4, 5),
                             timepoints: dict[int, int] | None = None) -> tuple[Path, list[str]]:
    """``parent/ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData/`` with the patients ``main`` and
    ``..._Additional/`` with ``additional`` (time points per patient from ``timepoints``, default 1);
    rendered cases of seed 1 in the order of the sorted ids. Returns the parent and the ids."""
    timepoints = timepoints or {}
    folders = {case: BRATS_TRAINING for case in brats_ids(main, tuple(timepoints.get(p, 1) for p in main))}
    folders |= {case: BRATS_ADDITIONAL for case in brats_ids(additional, tuple(timepoints.get(p, 1) for p in additional))}
    ids = sorted(folders)
    for case, (_, rc) in zip(ids, rendered_cases(len(ids), seed=1)):
        write_brats_case(parent / folders[case] / case, rc)
    return parent, ids


def shifted(path: Path, offset_mm: float = 500.0) -> Path:
    """Move the image at ``path`` ``offset_mm`` along x (same voxels, another place in the world)."""
    image = sitk.ReadImage(str(path))
    image.SetOrigin(tuple(np.add(image.GetOrigin(), (offset_mm, 0.0, 0.0))))
    sitk.WriteImage(image, str(path), useCompression=True)
    return path
