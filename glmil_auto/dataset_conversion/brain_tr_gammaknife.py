"""Brain-TR-GammaKnife (TCIA) -> a raw dataset: one case per treated metastasis course, with the
local failure of every lesion (at an explicit horizon) in ``lesionsTr.csv`` and rolled up to the
case (documentation/dicom_conversion.md, "Brain-TR-GammaKnife").

Steps: find the clinical workbook and read its sheets (:mod:`brain_tr_tables`); read the DICOM
headers of the download (:mod:`brain_tr_download`, from ``metadata.csv`` when present) and number
each patient's courses by study date; leave out the courses whose diagnosis is not a metastasis;
tie every lesion row to one ROI of its course's RTSTRUCT (:mod:`brain_tr_lesion_names`); then
convert with :func:`convert_dicom_rt`, whose ``add_columns`` hook adds the course columns and the
dose estimated from the RTDOSE.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage

from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.dataset_conversion import brain_tr_tables as sheets
from glmil_auto.dataset_conversion.brain_tr_download import (
    Download,
    StudyCourse,
    find_metadata,
    number_courses,
    read_download,
    without_studies,
)
from glmil_auto.dataset_conversion.brain_tr_lesion_names import describe, match_course
from glmil_auto.dataset_conversion.dicom_errors import DicomConversionError, DicomProblem
from glmil_auto.dataset_conversion.dicom_rt_conversion import (
    CONVERSION_LOG,
    ConvertedCase,
    convert_dicom_rt,
    parse_channel_rules,
)
from glmil_auto.dataset_conversion.dicom_rt_dose import RtObject, read_dose_grid
from glmil_auto.dataset_conversion.dicom_study_matching import CasePlan, plan_cases
from glmil_auto.dataset_conversion.lesion_outcome_table import (
    LesionOutcomeTable,
    any_lesion_endpoint,
    lesion_outcomes_from_frame,
)

DATASET_ID, DATASET_NAME = 104, "BrainTRGammaKnife"
TABLE_FILE = "Brain_TR_GammaKnife_Clinical_Information.xlsx"  # the usual name; any xlsx with both sheets is found
ENDPOINT = "local_failure"
# every ROI except common organs at risk and helper structures
DEFAULT_STRUCTURES = r"^(?!.*(skull|brain ?stem|body|external|chiasm|optic|eye|lens|cochlea|ring|shell|isodose)).+"
DEFAULT_CHANNEL = ("T1c", ".")  # any MR series: the one the RTSTRUCT references wins when several match
DOSE_SOURCE = "rtdose_d98"


@dataclass
class Workbook:
    """The two sheets, parsed."""

    path: Path
    lesions: list[sheets.LesionRow]
    courses: dict[tuple[str, int], sheets.CourseRow]
    notes: list[DicomProblem]

    @cached_property
    def lesions_of(self) -> dict[tuple[str, int], list[sheets.LesionRow]]:
        """``(unique_pt_id, course) -> its lesion rows``."""
        grouped: dict[tuple[str, int], list[sheets.LesionRow]] = defaultdict(list)
        for row in self.lesions:
            grouped[(row.patient, row.course)].append(row)
        return dict(grouped)

    def patients(self) -> set[str]:
        return {r.patient for r in self.lesions} | {p for p, _ in self.courses}


def find_workbook(root: Path) -> Path:
    """The one .xlsx with both sheets directly in ``root`` or beside its metadata.csv;
    :class:`DatasetError` listing the workbooks (and their sheets) otherwise."""
    metadata = find_metadata(root)
    folders = dict.fromkeys([Path(root)] + ([metadata.parent] if metadata is not None else []))
    found: dict[Path, list[str]] = {}
    for path in sorted(p for f in folders for p in f.glob("*.xlsx") if not p.name.startswith(("~$", "."))):
        try:
            found[path] = pd.ExcelFile(path).sheet_names
        except (OSError, ValueError, ImportError) as exc:
            found[path] = [f"unreadable: {exc}"]
    fitting = [p for p, names in found.items() if {sheets.LESION_SHEET, sheets.COURSE_SHEET} <= set(names)]
    if len(fitting) == 1:
        return fitting[0]
    what = "no .xlsx workbook" if not fitting else f"{len(fitting)} .xlsx workbooks"
    raise DatasetError(error(f"{what} with sheets {sheets.LESION_SHEET!r} and {sheets.COURSE_SHEET!r} "
                             f"in the download folder (workbooks found: "
                             f"{ {p.name: names for p, names in found.items()} }); pass it with --table",
                             file=str(root)))


def read_workbook(path: Path, horizon: float | None, mri_types: dict[str, str] | None = None) -> Workbook:
    """Both sheets of the clinical workbook (errors for missing sheets or required columns)."""
    lesion_table, notes = sheets.read_sheet(path, sheets.LESION_SHEET, sheets.LESION_COLUMNS)
    course_table, course_notes = sheets.read_sheet(path, sheets.COURSE_SHEET, sheets.COURSE_COLUMNS)
    lesions, lesion_notes = sheets.lesion_rows(lesion_table, path, horizon, mri_types)
    courses, row_notes = sheets.course_rows(course_table, path)
    return Workbook(path, lesions, courses, notes + course_notes + lesion_notes + row_notes)


def match_patient(dicom_id: str, table_ids: set[str]) -> str | None:
    """The spreadsheet's id of a DICOM PatientID: equal as text, else the only id whose digits are
    the same number (``GK_007`` and ``7``)."""
    if dicom_id in table_ids:
        return dicom_id
    digits = re.sub(r"\D", "", dicom_id)
    if not digits:
        return None
    same = [t for t in table_ids if re.sub(r"\D", "", t) and int(re.sub(r"\D", "", t)) == int(digits)]
    return same[0] if len(same) == 1 else None


def select_courses(courses: list[StudyCourse], patients: dict[str, str | None], workbook: Workbook,
                   diagnoses: dict[str, str] | None = None) -> tuple[list[StudyCourse], list[StudyCourse],
                                                                      list[DicomProblem]]:
    """(converted, skipped, warnings): a course whose ``Diagnosis (Only want Mets)`` is not a
    metastasis, or is not understood, is skipped; one without a course_level row is converted."""
    kept, skipped, notes = [], [], []
    lesions = workbook.lesions_of
    for course in courses:
        patient = patients.get(course.patient_id)
        row = workbook.courses.get((patient, course.number)) if patient is not None else None
        where = f"course {course.number} (study {course.study_date or course.study_uid})"
        if row is None:
            missing = "the patient is not in the workbook" if patient is None else "no course_level row"
            notes.append(DicomProblem(f"{where}: {missing}; converted with its demographics unknown",
                                      course.patient_id, workbook.path, "warning"))
            kept.append(course)
            continue
        kind = sheets.diagnosis_kind(row.diagnosis, diagnoses)
        if kind == sheets.METASTASIS:
            kept.append(course)
            continue
        rows = len(lesions.get((patient, course.number), []))
        reason = ("is not a metastasis" if kind == sheets.OTHER_DIAGNOSIS
                  else "is not understood (add --diagnosis VALUE=metastasis to keep it)")
        notes.append(DicomProblem(f"{where}: column {sheets.DIAGNOSIS!r} value {row.diagnosis!r} (course_level row "
                                  f"{row.sheet_row}) {reason}: course skipped with its {rows} lesion row(s)",
                                  course.patient_id, workbook.path, "warning"))
        skipped.append(course)
    return kept, skipped, notes


@dataclass
class CourseLink:
    """What ties the converted cases to the spreadsheet."""

    workbook: Workbook
    patients: dict[str, str | None]  # DICOM PatientID -> spreadsheet id
    course_of: dict[str, StudyCourse]  # RTSTRUCT path -> course
    download: Download
    notes: list[DicomProblem] = field(default_factory=list)

    def course_of_case(self, rtstruct: str) -> StudyCourse | None:
        return self.course_of.get(str(rtstruct))

    def rows_of(self, course: StudyCourse | None) -> list[sheets.LesionRow]:
        patient = self.patients.get(course.patient_id) if course is not None else None
        return self.workbook.lesions_of.get((patient, course.number), []) if course is not None else []

    def course_row(self, course: StudyCourse | None) -> sheets.CourseRow | None:
        patient = self.patients.get(course.patient_id) if course is not None else None
        return self.workbook.courses.get((patient, course.number)) if course is not None else None


def _lesion_record(row: sheets.LesionRow, roi: str, plan: CasePlan) -> dict[str, str]:
    return {"patient": plan.patient_id, "roi": roi, "case": plan.case_id,
            ENDPOINT: "" if np.isnan(row.local_failure) else str(int(row.local_failure)),
            f"{ENDPOINT}_time": f"{row.months:g}" if np.isfinite(row.months) and row.months > 0 else "",
            "followup_months": f"{row.months:g}" if np.isfinite(row.months) else "",
            "course": str(row.course), "lesion_number": row.number, "lesion_location": row.location,
            "lesion_name_nrrd": row.name, "mri_type": row.mri_type,
            "fractions": f"{row.fractions:g}" if np.isfinite(row.fractions) else "", "sheet_row": str(row.sheet_row)}


def lesion_records(plans: list[CasePlan], link: CourseLink) -> tuple[list[dict[str, str]], list[DicomProblem]]:
    """The lesion rows tied to one ROI each, and one warning per patient listing the rows matched
    with doubt or left out (with the ROIs of those courses)."""
    records, reported = [], defaultdict(list)
    for plan in plans:
        course = link.course_of_case(str(plan.structure_set.path))
        rows = link.rows_of(course)
        rois = [s.name for s in plan.structures]
        doubtful = False
        for row, match in zip(rows, match_course(rows, rois)):
            if match.roi is not None:
                records.append(_lesion_record(row, match.roi, plan))
            if match.reported:
                reported[plan.patient_id].append(describe(row, match))
                doubtful = True
        if doubtful:
            reported[plan.patient_id].append(f"course {course.number} selected ROIs: {rois}")
    notes = [DicomProblem("lesion_level rows matched to RTSTRUCT ROIs with doubt or left out of the lesion table: "
                          + "; ".join(lines), patient, link.workbook.path, "warning")
             for patient, lines in reported.items()]
    return records, notes


def unconverted_row_notes(link: CourseLink, converted: list[StudyCourse], skipped: list[StudyCourse]
                          ) -> list[DicomProblem]:
    """A warning per spreadsheet course with lesion rows but no converted (or skipped) study."""
    reached = {(link.patients.get(c.patient_id), c.number) for c in converted + skipped}
    notes = []
    for (patient, number), rows in sorted(link.workbook.lesions_of.items()):
        if (patient, number) not in reached:
            notes.append(DicomProblem(f"course {number}: {len(rows)} lesion_level row(s) (rows "
                                      f"{[r.sheet_row for r in rows]}) but no converted study of that course: left out",
                                      patient, link.workbook.path, "warning"))
    return notes


def dose_d98_gy(dose_path: Path, mask_path: Path) -> float:
    """The smallest lesion D98 (Gy): the dose grid resampled onto the case's mask grid, per lesion
    (26-connected component) the dose that 98 % of its voxels receive; NaN when a lesion leaves
    the dose grid."""
    mask = sitk.ReadImage(str(mask_path))
    dose = sitk.Resample(read_dose_grid(dose_path), mask, sitk.Transform(), sitk.sitkLinear, float("nan"),
                         sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(dose)
    components, count = ndimage.label(sitk.GetArrayFromImage(mask) > 0, structure=np.ones((3, 3, 3)))
    if count == 0:
        return float("nan")
    return float(min(np.percentile(values[components == k], 2) for k in range(1, count + 1)))


def dose_file(record: ConvertedCase, course: StudyCourse | None, link: CourseLink) -> tuple[RtObject | None, str]:
    """The RTDOSE of a case (by study, else by frame of reference) and, when there is none or
    several, why."""
    own = [d for d in link.download.doses if d.patient_id == record.patient_id]
    studies = {record.study_uid} | ({course.study_uid} if course is not None else set())
    found = [d for d in own if d.study_uid in studies]
    if not found:
        series = link.download.inventory.series.get(record.reference_series)
        frame = series.frame_of_reference if series is not None else ""
        found = [d for d in own if frame and d.frame_of_reference == frame]
    if len(found) == 1:
        return found[0], ""
    return None, ("no RTDOSE in its study" if not found else
                  f"{len(found)} RTDOSE files in its study ({[str(d.path) for d in found]})")


def _maximum(values: list[float]) -> float:
    known = [v for v in values if np.isfinite(v)]
    return max(known) if known else float("nan")


def course_columns(record: ConvertedCase, folder: Path, link: CourseLink) -> dict:
    """The derived clinical columns of one case (documentation/dicom_conversion.md)."""
    course = link.course_of_case(record.rtstruct)
    rows, info = link.rows_of(course), link.course_row(course)
    if not rows:
        link.notes.append(DicomProblem(f"no lesion_level row for course {course.number if course else '?'}: its "
                                       "outcome is unknown", record.patient_id, record.rtstruct, "warning"))
    fractions = _maximum([r.fractions for r in rows])
    dose = float("nan")
    rtdose, why = dose_file(record, course, link)
    if rtdose is not None:
        dose = dose_d98_gy(rtdose.path, folder / "labelsTr" / f"{record.case_id}.nii.gz")
        why = "" if np.isfinite(dose) else f"a lesion lies outside the dose grid of {rtdose.path}"
    if why:
        link.notes.append(DicomProblem(f"dose unknown: {why}", record.patient_id, record.rtstruct, "warning"))
    return {"case_id": record.case_id, "course": course.number if course else float("nan"),
            "n_lesions_treated": float(len(rows)),
            ENDPOINT: sheets.any_lesion([r.local_failure for r in rows]),
            "followup_months": _maximum([r.months for r in rows]),
            "fractions": fractions, "multi_fraction": float(fractions > 1) if np.isfinite(fractions) else float("nan"),
            "age": info.age if info else float("nan"), "sex": info.sex if info else "",
            "primary": info.primary if info else "", "diagnosis": info.diagnosis if info else "",
            "prescription_dose_gy": round(dose, 3) if np.isfinite(dose) else float("nan"),
            "prescription_dose_source": DOSE_SOURCE if np.isfinite(dose) else ""}


FEATURES = {"n_lesions_treated": "numeric", "fractions": "numeric", "multi_fraction": "binary", "age": "numeric",
            "sex": "categorical", "primary": "categorical", "prescription_dose_gy": "numeric"}


def case_columns_hook(link: CourseLink) -> Callable[[list[ConvertedCase], Path, pd.DataFrame],
                                                    tuple[pd.DataFrame, dict[str, str]]]:
    """The ``add_columns`` hook of :func:`convert_dicom_rt`: the course columns of every case; a
    feature is declared only when some case has a value."""

    def add(records: list[ConvertedCase], folder: Path, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
        extra = pd.DataFrame([course_columns(record, folder, link) for record in records])
        merged = table.merge(extra, on="case_id", how="left")
        known = {c for c in FEATURES if merged[c].replace("", np.nan).notna().any()}
        return merged, {c: kind for c, kind in FEATURES.items() if c in known}

    return add


def lesion_outcome_table(records: list[dict[str, str]], path: Path) -> LesionOutcomeTable | None:
    """The matched lesion rows as the lesion outcomes of :func:`convert_dicom_rt` (None without rows)."""
    if not records:
        return None
    frame = pd.DataFrame(records)
    return lesion_outcomes_from_frame(frame, path, "patient", "roi", "case", [ENDPOINT], study_label="case",
                                      study_key=lambda plan, plans: plan.case_id)


def convert_brain_tr_gammaknife(
    source: Path,
    raw_folder: Path,
    table: Path | None = None,
    horizon_months: float | None = sheets.DEFAULT_HORIZON_MONTHS,
    channel: tuple[str, str] = DEFAULT_CHANNEL,
    structures: str = DEFAULT_STRUCTURES,
    mri_types: dict[str, str] | None = None,
    diagnoses: dict[str, str] | None = None,
    dataset_id: int = DATASET_ID,
    name: str = DATASET_NAME,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[Path, list[DicomProblem]]:
    """Convert, write and verify; returns the dataset folder and the warnings. Raises
    :class:`DicomConversionError` (DICOM problems, each naming the patient and the file) or
    :class:`DatasetError` (the workbook, or the written dataset's verification)."""
    source = Path(source)
    workbook = read_workbook(Path(table) if table else find_workbook(source), horizon_months, mri_types)
    download, notes = read_download(source, progress)
    courses = number_courses(download.inventory)
    patients = {c.patient_id: match_patient(c.patient_id, workbook.patients()) for c in courses}
    kept, skipped, course_notes = select_courses(courses, patients, workbook, diagnoses)
    download.inventory = without_studies(download.inventory, {(c.patient_id, c.study_uid) for c in skipped})
    link = CourseLink(workbook, patients, {p: c for c in kept for p in c.rtstructs}, download)
    plans = plan_cases(download.inventory, parse_channel_rules([channel]), re.compile(structures, re.IGNORECASE),
                       allow_registration=False).plans
    records, match_notes = lesion_records(plans, link)
    horizon = "ever" if horizon_months is None else f"within {horizon_months:g} months"
    result = convert_dicom_rt(
        source, raw_folder, dataset_id, name, [channel], structures, endpoints={ENDPOINT: any_lesion_endpoint()},
        overwrite=overwrite, progress=progress, add_columns=case_columns_hook(link),
        lesion_outcomes=lesion_outcome_table(records, workbook.path), inventory=download.inventory,
        description=f"Brain-TR-GammaKnife: Gamma Knife radiosurgery of brain metastases; {ENDPOINT} = a treated "
                    f"lesion recurred {horizon} of treatment (lesion_level mri_type and duration_tx_to_imag), per "
                    "lesion in lesionsTr.csv and any lesion per course",
        reference="Wang et al., Brain-TR-GammaKnife, The Cancer Imaging Archive, doi:10.7937/xb6d-py67")
    notes += workbook.notes + course_notes + unconverted_row_notes(link, kept, skipped) + match_notes
    notes += link.notes
    log_warnings(result.folder, notes)
    return result.folder, notes + result.warnings


def log_warnings(folder: Path, notes: list[DicomProblem]) -> None:
    """Add this converter's warnings to those :func:`convert_dicom_rt` logged in dicom_conversion.json."""
    from glmil_auto.utilities.atomic_files import write_json_atomic

    path = folder / CONVERSION_LOG
    log = json.loads(path.read_text())
    log["warnings"] = [str(n) for n in notes] + log.get("warnings", [])
    write_json_atomic(path, log)


def run(args: argparse.Namespace, convert: Callable[[], tuple[Path, list[DicomProblem]]]) -> int:
    """``convert`` with ``script_support.run_conversion``'s exit codes and closing report; DICOM
    problems, which name the patient, are bad source data (1), a bad ``--structures`` pattern a
    problem of the run (2)."""
    from glmil_auto.dataset_conversion.script_support import run_conversion

    return run_conversion(args, convert, source_errors=(DicomConversionError, DatasetError),
                          run_errors=(FileExistsError, ValueError, re.error))
