"""Dataset104_BrainTRGammaKnife: Brain-TR-GammaKnife (Gamma Knife radiosurgery of brain metastases,
47 patients; DICOM MR + RTSTRUCT + RTDOSE per treatment course, lesion-level recurrence table).

    python dataset_conversion/Dataset104_BrainTRGammaKnife.py -i SOURCE [-o RAW] [--overwrite]
        [--channel T1c=REGEX] [--structures REGEX] [--table XLSX]

Expected source layout (as downloaded; the DICOM tree is searched recursively, so the folder
names below do not matter, only the DICOM headers do)::

    SOURCE/
      Brain_TR_GammaKnife_Clinical_Information.xlsx    sheets "lesion_level" and "course_level"
      Brain-TR-GammaKnife/<PatientID>/<study>/<series>/*.dcm
          MR     the planning T1 post-contrast series (one or more MR series per course)
          RTSTRUCT  one structure set per course, one ROI per treated lesion, referencing the MR
          RTPLAN / RTDOSE  optional; used for the prescription dose when the table has none

Assumed table columns. They were reproduced from the dataset's published description, not read
from the real file: CHECK THEM against the spreadsheet before use and edit the constants below
if they differ. A missing required column stops the conversion with the sheet and column named.

    lesion_level: unique_pt_id, Course # (1, 2, ...), Lesion Name (ROI name), Dose (Gy) (prescription
                  to that lesion; optional), Recurrence (yes/no, 1/0, true/false, recurrence/stable;
                  empty = unknown)
    course_level (optional sheet): unique_pt_id, Course #, Age, Gender, Primary Diagnosis

Derivations (one case per converted course, documentation/dicom_conversion.md):

- Case ids: the PatientID; ``<PatientID>_<StudyDate>`` when a patient has several courses. A
  course is a study with an RTSTRUCT; a patient's courses are numbered 1, 2, ... by study date and
  matched to ``Course #``. Patient ids match when equal as text or, failing that, when their
  digits are the same number (``GK_007`` and ``7``).
- ``local_failure`` (binary endpoint, declared ``"aggregation": "any_lesion"``): 1 when any lesion
  of the course recurred, 0 when every lesion is known not to have recurred, unknown (empty)
  otherwise; this rolls the lesion-level local recurrence up to the case (local failure = any
  treated lesion recurred).
- ``lesionsTr.csv``: the lesion-level recurrence itself, one row per lesion: each lesion_level row
  is matched to the ROI of its course's RTSTRUCT named like its ``Lesion Name`` (case and runs of
  spaces ignored), and located by a voxel inside that ROI's mask (``x_mm``, ``y_mm``, ``z_mm``,
  LPS world mm); ``roi_name``, ``patient_id``, ``course`` and the lesion's ``dose_gy`` are kept
  beside it. A lesion name that is no lesion ROI of its course stops the conversion (naming the
  patient, the ROI and the spreadsheet); rows of courses without images are skipped (warning).
- ``n_lesions_treated`` (numeric): lesion rows of the course.
- ``prescription_dose_gy`` (numeric, declared only when some course has one): the smallest
  lesion prescription of the course from ``Dose (Gy)`` (the least-covered lesion drives local
  failure); else the smallest TargetPrescriptionDose of the course's RTPLAN; else, from the
  RTDOSE, the smallest over lesions of the dose covering 98 % of the lesion (D98, an estimate
  of the marginal dose that Gamma Knife prescribes to the lesion edge). The source of each value
  is kept in the column ``prescription_dose_source`` (table, rtplan, rtdose; not a feature).
- ``age`` (numeric), ``sex`` and ``primary`` (categorical) from course_level, when present.
- ``patient_column`` is ``patient_id``, so the courses of one patient stay in one fold.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk
from scipy import ndimage

from glmil_auto.dataset.problems import DatasetError
from glmil_auto.dataset_conversion.dicom_errors import DicomConversionError, DicomProblem, fail
from glmil_auto.dataset_conversion.dicom_rt_conversion import ConvertedCase, convert_dicom_rt
from glmil_auto.dataset_conversion.dicom_rt_dose import RtObject, find_rt_objects, plan_prescription_gy, read_dose_grid
from glmil_auto.dataset_conversion.lesion_outcome_table import (
    LesionOutcomeTable,
    any_lesion_endpoint,
    lesion_outcomes_from_frame,
)
from glmil_auto.paths import raw_folder as default_raw_folder

DATASET_ID = 104
NAME = "BrainTRGammaKnife"
TABLE_FILE = "Brain_TR_GammaKnife_Clinical_Information.xlsx"
LESION_SHEET, COURSE_SHEET = "lesion_level", "course_level"
# assumed column names (see the module docstring: check against the real spreadsheet)
PATIENT, COURSE, LESION, DOSE, RECURRENCE = "unique_pt_id", "Course #", "Lesion Name", "Dose (Gy)", "Recurrence"
COURSE_FEATURES = {"Age": ("age", "numeric"), "Gender": ("sex", "categorical"),
                   "Primary Diagnosis": ("primary", "categorical")}
# every ROI except common organs at risk and helper structures
DEFAULT_STRUCTURES = r"^(?!.*(skull|brain ?stem|body|external|chiasm|optic|eye|lens|cochlea|ring|shell|isodose)).+"
DEFAULT_CHANNEL = "T1c=."  # any MR series: the one the RTSTRUCT references wins when several match
_NEGATIVE = {"0", "0.0", "no", "n", "false", "stable", "no recurrence", "none", "absent"}
_POSITIVE = {"1", "1.0", "yes", "y", "true", "recurrence", "recurred", "local recurrence", "progression"}


def recurrence_value(cell: str) -> float:
    """1.0 recurred, 0.0 did not, NaN unknown (empty or unrecognised text)."""
    token = str(cell).strip().lower()
    if token in _NEGATIVE:
        return 0.0
    if token in _POSITIVE:
        return 1.0
    return float("nan")


def _number(cell: str) -> float:
    try:
        value = float(str(cell).strip())
    except ValueError:
        return float("nan")
    return value if np.isfinite(value) else float("nan")


def read_tables(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The lesion_level sheet (required) and course_level sheet (optional), cells as text."""
    if not path.is_file():
        raise fail("clinical spreadsheet not found", file=path)
    if path.suffix.lower() == ".csv":  # a CSV export of the lesion sheet (course sheet beside it, optional)
        sheets = {LESION_SHEET: pd.read_csv(path, dtype=str, keep_default_na=False)}
        course_csv = path.with_name(path.name.replace(LESION_SHEET, COURSE_SHEET))
        if course_csv != path and course_csv.is_file():
            sheets[COURSE_SHEET] = pd.read_csv(course_csv, dtype=str, keep_default_na=False)
    else:
        try:
            sheets = pd.read_excel(path, sheet_name=None, dtype=str, keep_default_na=False)
        except (OSError, ValueError, ImportError) as exc:
            raise fail(f"cannot read the spreadsheet ({exc}); reading .xlsx needs openpyxl", file=path) from exc
    if LESION_SHEET not in sheets:
        raise fail(f"sheet {LESION_SHEET!r} is missing; sheets found: {list(sheets)}", file=path)
    lesions = sheets[LESION_SHEET].rename(columns=lambda c: str(c).strip())
    missing = [c for c in (PATIENT, COURSE, LESION, RECURRENCE) if c not in lesions.columns]
    if missing:
        raise fail(f"sheet {LESION_SHEET!r} lacks column(s) {missing}; columns found: {list(lesions.columns)} "
                   "(the assumed names are at the top of Dataset104_BrainTRGammaKnife.py)", file=path)
    courses = sheets.get(COURSE_SHEET)
    if courses is not None:
        courses = courses.rename(columns=lambda c: str(c).strip())
        if not {PATIENT, COURSE} <= set(courses.columns):
            raise fail(f"sheet {COURSE_SHEET!r} lacks {PATIENT!r} or {COURSE!r}", file=path)
    return lesions, courses


def _key(patient: str, course: str) -> tuple[str, int]:
    number = _number(course)
    return str(patient).strip(), int(number) if np.isfinite(number) else -1


def roll_up(lesions: pd.DataFrame, courses: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (patient, course): local_failure, n_lesions_treated, table dose and course features."""
    rows: dict[tuple[str, int], dict] = {}
    for (patient, course), group in lesions.groupby([lesions[PATIENT].str.strip(), lesions[COURSE]], sort=True):
        recurred = [recurrence_value(v) for v in group[RECURRENCE]]
        if any(v == 1.0 for v in recurred):
            failure = 1.0
        elif recurred and all(v == 0.0 for v in recurred):
            failure = 0.0
        else:
            failure = float("nan")
        doses = [d for d in (_number(v) for v in group[DOSE]) if np.isfinite(d)] if DOSE in group else []
        rows[_key(patient, course)] = {"local_failure": failure, "n_lesions_treated": float(len(group)),
                                       "table_dose_gy": min(doses) if doses else float("nan")}
    if courses is not None:
        for _, row in courses.iterrows():
            key = _key(row[PATIENT], row[COURSE])
            if key in rows:
                for column, (name, _) in COURSE_FEATURES.items():
                    if column in courses.columns:
                        rows[key][name] = row[column]
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["patient", "course"])
    return table


def _match_patient(dicom_id: str, table_ids: set[str]) -> str | None:
    if dicom_id in table_ids:
        return dicom_id
    digits = re.sub(r"\D", "", dicom_id)
    candidates = [t for t in table_ids if digits and re.sub(r"\D", "", t) and int(re.sub(r"\D", "", t)) == int(digits)]
    return candidates[0] if len(candidates) == 1 else None


def course_numbers(records: list[ConvertedCase]) -> dict[str, int]:
    """Case id -> course number (1, 2, ... by study date within the patient); ``records`` may also
    be the conversion's case plans, which carry the same fields."""
    out = {}
    for patient in {r.patient_id for r in records}:
        own = sorted((r for r in records if r.patient_id == patient), key=lambda r: (r.study_date, r.study_uid))
        out.update({r.case_id: number for number, r in enumerate(own, start=1)})
    return out


def lesion_outcomes(lesions: pd.DataFrame, source: Path) -> LesionOutcomeTable:
    """The lesion_level sheet as lesion-level outcomes: ``local_failure`` from ``Recurrence`` per
    lesion, matched to its course (``Course #``, the course numbers of :func:`course_numbers`) and
    to the course's ROI named like ``Lesion Name``; ``Dose (Gy)`` is kept as ``dose_gy``."""
    courses = lesions[COURSE].astype(str).str.strip()
    frame = pd.DataFrame({
        "patient": lesions[PATIENT].astype(str).str.strip(),
        "course_key": courses,  # matched to the case's course number
        "roi": lesions[LESION].astype(str).str.strip(),
        "local_failure": [{1.0: "1", 0.0: "0"}.get(recurrence_value(v), "") for v in lesions[RECURRENCE]],
        "course": courses,  # kept in lesionsTr.csv as it is
        "dose_gy": lesions[DOSE].astype(str).str.strip() if DOSE in lesions.columns else "",
    })
    return lesion_outcomes_from_frame(
        frame, source, "patient", "roi", "course_key", ["local_failure"], study_of_cell=lambda c: str(_key("", c)[1]),
        study_label="course number", match_patient=_match_patient,
        study_key=lambda plan, plans: str(course_numbers(plans)[plan.case_id]), unmatched="warning")


def _rt_for_case(record: ConvertedCase, objects: list[RtObject]) -> tuple[RtObject | None, RtObject | None]:
    """The RTPLAN and RTDOSE of one case: by reference chain, else by study, else by frame of reference."""
    header = pydicom.dcmread(record.rtstruct, stop_before_pixels=True)
    rtstruct_uid, rtstruct_study = str(header.SOPInstanceUID), str(header.get("StudyInstanceUID", ""))
    own = [o for o in objects if o.patient_id == record.patient_id]
    studies = {rtstruct_study, record.study_uid}
    plans = [o for o in own if o.modality == "RTPLAN" and rtstruct_uid in o.referenced_structure_sets] or \
        [o for o in own if o.modality == "RTPLAN" and o.study_uid in studies]
    plan = plans[0] if len(plans) == 1 else None
    doses = [o for o in own if o.modality == "RTDOSE" and plan is not None and plan.sop_uid in o.referenced_plans] or \
        [o for o in own if o.modality == "RTDOSE" and o.study_uid in studies]
    return plan, (doses[0] if len(doses) == 1 else None)


def dose_d98_gy(dose_path: Path, mask_path: Path) -> float:
    """The smallest lesion D98 (Gy) of the dose grid resampled onto the case's mask grid."""
    mask = sitk.ReadImage(str(mask_path))
    dose = sitk.Resample(read_dose_grid(dose_path), mask, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(dose)
    components, count = ndimage.label(sitk.GetArrayFromImage(mask) > 0, structure=np.ones((3, 3, 3)))
    if count == 0:
        return float("nan")
    return float(min(np.percentile(values[components == k], 2) for k in range(1, count + 1)))


def derived_columns(lesion_table: pd.DataFrame, source: Path, warnings: list[DicomProblem]):
    """The ``add_columns`` hook of :func:`convert_dicom_rt` for this dataset."""

    def add(records: list[ConvertedCase], folder: Path, table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
        numbers = course_numbers(records)
        table_ids = set(lesion_table.index.get_level_values("patient"))
        objects = find_rt_objects(source)
        derived = []
        for record in records:
            patient = _match_patient(record.patient_id, table_ids)
            key = (patient, numbers[record.case_id])
            row = dict(lesion_table.loc[key]) if patient is not None and key in lesion_table.index else {}
            if not row:
                warnings.append(DicomProblem(f"no lesion_level rows for course {numbers[record.case_id]}: its outcome "
                                             "is left unknown", record.patient_id, record.rtstruct, "warning"))
            dose, origin = row.pop("table_dose_gy", float("nan")), "table"
            if not np.isfinite(dose):
                plan, dose_file = _rt_for_case(record, objects)
                if plan is not None and plan_prescription_gy(plan.path) is not None:
                    dose, origin = plan_prescription_gy(plan.path), "rtplan"
                elif dose_file is not None:
                    dose, origin = dose_d98_gy(dose_file.path, folder / "labelsTr" / f"{record.case_id}.nii.gz"), "rtdose"
            row["prescription_dose_gy"] = round(dose, 3) if np.isfinite(dose) else float("nan")
            row["prescription_dose_source"] = origin if np.isfinite(dose) else ""
            row["course"] = numbers[record.case_id]
            derived.append({"case_id": record.case_id, **row})
        extra = pd.DataFrame(derived)
        merged = table.merge(extra, on="case_id", how="left")
        features = {"n_lesions_treated": "numeric"}
        if merged["prescription_dose_gy"].notna().any():
            features["prescription_dose_gy"] = "numeric"
        for name, kind in COURSE_FEATURES.values():
            if name in merged.columns:
                features[name] = kind
        if "local_failure" not in merged.columns:
            merged["local_failure"] = float("nan")
        return merged, features

    return add


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--input", required=True, type=Path, help="the downloaded Brain-TR-GammaKnife folder")
    parser.add_argument("-o", "--output", type=Path, default=None, help="raw folder (default: $glmil_raw)")
    parser.add_argument("--table", type=Path, default=None, help=f"the clinical spreadsheet (default: INPUT/{TABLE_FILE})")
    parser.add_argument("--channel", default=DEFAULT_CHANNEL, metavar="NAME=REGEX",
                        help="the MR channel and its SeriesDescription regex (default: %(default)s)")
    parser.add_argument("--structures", default=DEFAULT_STRUCTURES, help="ROI-name regex of the treated lesions")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    name, _, regex = args.channel.partition("=")
    if not args.input.is_dir() or not name or not regex:
        print(f"ERROR: input folder {args.input} not found or --channel not NAME=REGEX", file=sys.stderr)
        return 2
    warnings: list[DicomProblem] = []
    try:
        table_path = args.table or args.input / TABLE_FILE
        lesions, courses = read_tables(table_path)
        rolled = roll_up(lesions, courses)
        result = convert_dicom_rt(
            args.input, args.output or default_raw_folder(), DATASET_ID, NAME, [(name, regex)], args.structures,
            endpoints={"local_failure": any_lesion_endpoint()}, overwrite=args.overwrite, progress=not args.no_progress,
            add_columns=derived_columns(rolled, args.input, warnings),
            lesion_outcomes=lesion_outcomes(lesions, table_path),
            description="Brain-TR-GammaKnife: Gamma Knife radiosurgery of brain metastases; local_failure = any "
                        "treated lesion of the course recurred (lesion_level sheet)")
    except (DicomConversionError, DatasetError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except (FileExistsError, ValueError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    for warning in result.warnings + warnings:
        print(warning, file=sys.stderr)
    print(f"Wrote {len(result.cases)} case(s) to {result.folder} (verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
