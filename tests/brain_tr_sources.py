"""A fake Brain-TR-GammaKnife download in the verified TCIA layout, written with pydicom and openpyxl:
``metadata.csv`` (Subject ID, Study UID, Study Date, Modality, File Location), studies of one MR,
one RTSTRUCT and one RTDOSE (no RTPLAN) under ``Brain-TR-GammaKnife/<subject>/<study>/<series>``,
and the clinical workbook with its ``course_level`` sheet first and ``lesion_level`` second."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from dicom_test_data import (
    Grid,
    Sphere,
    generate_uid,
    linear_intensity,
    sphere_contours,
    write_mr_series,
    write_rtdose,
    write_rtstruct,
)

COLLECTION = "Brain-TR-GammaKnife"
WORKBOOK = "Brain_TR_GammaKnife_Clinical_Information.xlsx"
T1C = linear_intensity(300.0, (1.0, 0.5, -0.5))
# lesion centres (voxel index x, y, z) of the first, second, ... ROI of a study
SLOTS = ((9.0, 9.0, 7.0), (26.0, 9.0, 7.0), (9.0, 26.0, 7.0), (26.0, 26.0, 7.0))
LESION_COLUMNS = ["unique_pt_id", "Treatment Course", "Lesion #", "Lesion Location", "Lesion Name in NRRD files",
                  "mri_type", "duration_tx_to_imag (months)", "Fractions"]
COURSE_COLUMNS = ["unique_pt_id", "Course #", "Diagnosis (Only want Mets)", "Primary Diagnosis", "Age at Diagnosis",
                  "Gender"]


@dataclass
class FakeStudy:
    """One study: ROI name -> sphere radius (mm), and the dose (Gy) inside a box around the lesions."""

    patient: str
    date: str  # YYYYMMDD
    rois: dict[str, float]
    dose_gy: float
    offset: float = 0.0
    spheres: dict[str, Sphere] = field(default_factory=dict)  # filled when written


def _tcia_date(date: str) -> str:
    """YYYYMMDD -> MM-DD-YYYY, as NBIA writes dates into folder names and metadata.csv."""
    return f"{date[4:6]}-{date[6:]}-{date[:4]}"


def write_study(root: Path, study: FakeStudy, backslashes: bool = False) -> list[dict[str, str]]:
    """The study's three series under ``root/Brain-TR-GammaKnife``; returns its metadata.csv rows."""
    uid = generate_uid()
    study_folder = Path(COLLECTION) / study.patient / f"{_tcia_date(study.date)}-NA-MRI Brain and Treatment-{uid[-5:]}"
    grid = Grid((36, 36, 14), (1.0, 1.0, 2.0), np.zeros(3)).centred_on(np.array([study.offset, 0.0, 0.0]))
    folders = {"MR": study_folder / "1.000000-T1 AX POST GK-10101", "RTSTRUCT": study_folder / "2.000000-NA-20202",
               "RTDOSE": study_folder / "3.000000-NA-30303"}
    t1c = write_mr_series(root / folders["MR"], study.patient, uid, study.date, "T1 AX POST GK", grid, T1C)
    study.spheres = {name: Sphere(grid.index_to_world(np.array(slot)), radius)
                     for slot, (name, radius) in zip(SLOTS, study.rois.items())}
    structures = {name: sphere_contours(s, grid) for name, s in study.spheres.items()}
    structures["Skull"] = sphere_contours(Sphere(grid.index_to_world(np.array([17.5, 17.5, 7.0])), 30.0), grid)
    write_rtstruct(root / folders["RTSTRUCT"] / "1-1.dcm", study.patient, uid, study.date, t1c, structures)
    low, high = grid.index_to_world(np.array([1.0, 1.0, 1.0])), grid.index_to_world(np.array([34.0, 34.0, 12.0]))

    def dose(points: np.ndarray) -> np.ndarray:
        inside = np.all((points >= low - 1e-6) & (points <= high + 1e-6), axis=-1)
        return np.where(inside, study.dose_gy, 2.0)

    centre = grid.index_to_world(np.array([17.5, 17.5, 6.5]))
    dose_grid = Grid((22, 22, 14), (2.0, 2.0, 2.5), np.zeros(3)).centred_on(centre)
    write_rtdose(root / folders["RTDOSE"] / "1-1.dcm", study.patient, uid, study.date, t1c.frame, dose_grid, dose)
    rows = []
    for modality, folder in folders.items():
        location = "./" + folder.as_posix()
        rows.append({"Series UID": generate_uid(), "Collection": COLLECTION, "Subject ID": study.patient,
                     "Study UID": uid, "Study Date": _tcia_date(study.date), "Modality": modality,
                     "File Location": location.replace("/", "\\") if backslashes else location})
    return rows


def write_metadata(root: Path, rows: list[dict[str, str]]) -> Path:
    path = root / "metadata.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_workbook(path: Path, lesions: list[tuple], courses: list[tuple]) -> Path:
    """The workbook with ``course_level`` as its first sheet, cells as the spreadsheet has them."""
    with pd.ExcelWriter(path) as writer:
        pd.DataFrame(courses, columns=COURSE_COLUMNS).to_excel(writer, sheet_name="course_level", index=False)
        pd.DataFrame(lesions, columns=LESION_COLUMNS).to_excel(writer, sheet_name="lesion_level", index=False)
    return path


# the test download: patient -> studies; GK_102 has three courses, the second not a metastasis
STUDIES = [
    FakeStudy("GK_101", "20180305", {"Lesion 1": 5.0, "Lesion 2": 4.0}, 20.0),
    FakeStudy("GK_102", "20181201", {"Lesion 1": 5.0}, 18.0),
    FakeStudy("GK_102", "20190305", {"Meningioma": 5.0}, 14.0),
    FakeStudy("GK_102", "20200110", {"Lesion 1": 4.5, "Lesion 2": 4.0}, 25.0, offset=4.0),
    FakeStudy("GK_103", "20180520", {"Lesion 1": 4.5, "Lesion 2": 4.0, "Lt Met 3": 4.0, "Rt Met 3": 4.0}, 16.0),
    FakeStudy("GK_104", "20180602", {"Lesion 1": 4.5, "Lesion 2": 4.0}, 22.0),
    FakeStudy("GK_105", "20190101", {"Lesion 1": 5.0}, 24.0),
]
LESIONS = [
    # unique_pt_id, Treatment Course, Lesion #, Lesion Location, Lesion Name in NRRD files, mri_type, months, Fractions
    ("GK_101", 1, 1, "L frontal", "Lesion 1", "recurrence", 6, 1),
    ("GK_101", 1, 2, "R parietal", "Lesion 2", "stable", 14, 1),
    ("GK_102", 1, 1, "cerebellum", "Lesion 1", "Follow-up", 20, 1),
    ("GK_102", 2, 1, "falx", "Meningioma", "stable", 24, 1),
    ("GK_102", 3, 1, "L occipital", "Lesion 1", "stable", 6, 5),  # follow-up shorter than 12 months
    ("GK_102", 3, 2, "R occipital", "Lesion 2", "recurrence", 18, 5),  # recurred after 12 months
    ("GK_103", 1, 1, "L temporal", "lesion_1", "stable", 13, 1),  # differs in case and punctuation
    ("GK_103", 1, 2, "R temporal", "Lesion 2", "stable", 15, 1),
    ("GK_103", 1, 3, "L insula", "Met_3", "recurrence", 3, 1),  # Lesion # 3: 'Lt Met 3' and 'Rt Met 3'
    ("GK_103", 1, 4, "pons", "Lesion 4", "stable", 12, 1),  # no such ROI
    ("104", 1, 1, "L frontal", "Lesion 1", "stable", 24, 1),  # patient id by its digits
    ("104", 1, 2, "R frontal", "Lesion 2", "pending review", 24, 1),  # an mri_type not understood
    ("GK_105", 1, 1, "vermis", "Lesion 1", "stable", 30, 1),
    ("GK_109", 1, 1, "L frontal", "Lesion 1", "recurrence", 3, 1),  # a patient without images
]
COURSES = [
    ("GK_101", 1, "Mets", "Lung", 61, "F"),
    ("GK_102", 1, "Mets", "Melanoma", 54, "M"),
    ("GK_102", 2, "Meningioma", "", 55, "M"),
    ("GK_102", 3, "Brain metastases", "Melanoma", 56, "Male"),
    ("GK_103", 1, "Mets", "Breast", 70, "F"),
    ("104", 1, "Mets", "Lung", 48, "M"),
    ("GK_105", 1, "Mets", "Renal", 66, "F"),
    ("GK_109", 1, "Mets", "Lung", 59, "F"),
]


def write_download(root: Path) -> dict[tuple[str, str], FakeStudy]:
    """The whole test download under ``root``; returns ``(patient, date) -> study`` (with spheres)."""
    rows, studies = [], [replace(s) for s in STUDIES]
    for study in studies:
        rows += write_study(root, study, backslashes=study.patient == "GK_105")
    write_metadata(root, rows)
    write_workbook(root / WORKBOOK, LESIONS, COURSES)
    return {(s.patient, s.date): s for s in studies}
