"""NYUMets-Brain -> a raw dataset: one case per patient, the pre-treatment (Gamma Knife planning)
study, with local failure, distant failure and overall survival derived from the clinical CSVs.

Source layout (from the published description; see documentation/dataset_conversion.md)::

    SOURCE/imaging/patientId/<pid>/studyId/<sid>/{CT1,T1,T2,FLAIR,RTSTRUCT_segmentation}.nii.gz
    SOURCE/individual.csv    one row per patient
    SOURCE/timeseries.csv    one row per visit (times in days from Gamma Knife)
    SOURCE/gkdetails.csv     one row per treated target

The column names in :data:`DEFAULT_COLUMNS` are ASSUMED from the published data dictionary
[check them against the real files]; each can be renamed (``--column KEY=NAME``).

The pre-treatment study of a patient is the study with the selected channels and
``RTSTRUCT_segmentation`` whose visit time (``timeseries.csv``, matched on patient and study id)
is <= 0 and closest to 0; when no segmented study has a visit row, the lowest study id is taken
(warning). Patients without such a study are skipped (warning). The segmentation's non-zero
voxels form the lesion mask (label 1; lesion instances are its connected components).
Outcome derivations: :mod:`glmil_auto.dataset_conversion.nyumets_outcomes`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from glmil_auto.dataset.problems import DatasetError, Problem, error, warning
from glmil_auto.dataset_conversion import nyumets_outcomes as outcomes
from glmil_auto.dataset_conversion.case_conversion import SourceCase, convert_cases
from glmil_auto.dataset_conversion.raw_writer import RawDatasetWriter
from glmil_auto.dataset_conversion.source_files import read_table, require_columns, to_binary, to_number

DATASET_ID, DATASET_NAME = 103, "NYUMets"
SEQUENCES = {"CT1": "T1c", "T1": "T1", "T2": "T2", "FLAIR": "FLAIR"}  # file stem -> channel name
DEFAULT_SEQUENCES = ("CT1", "T1", "T2", "FLAIR")  # CT1 first: the reference grid
SEGMENTATION = "RTSTRUCT_segmentation"
LABELS = {"background": 0, "metastasis": 1}
DEFAULT_HORIZON_DAYS = 365.0

# key -> ASSUMED column name [check]; the table each comes from in the comment
DEFAULT_COLUMNS = {
    "patient": "patient_id",                      # all three tables
    "study": "study_id",                          # timeseries.csv
    "age": "age_diagnosis",                       # individual.csv
    "primary": "primary_histology",
    "extracranial": "extracranial_disease_status",
    "num_tumors": "num_tumors_init",
    "rpa": "rpa",
    "prior_wbrt": "prior_wbrt",
    "days_to_death": "days_to_death_from_gk",
    "follow_up": "total_fu_time",                 # days
    "visit_class": "visit_class",                 # timeseries.csv (kept for reference only)
    "time": "time_from_gk_days",
    "kps": "kps_at_gks",
    "progress": "num_tumor_progress",
    "new_mets": "new_metastases",
    "death": "death",
    "target_volume": "target_volume",             # gkdetails.csv
    "margin_dose": "margin_dose",
}
# clinical-table column <- (column key, type, parser), from individual.csv
INDIVIDUAL_FEATURES = {
    "age_diagnosis": ("age", "numeric", to_number),
    "primary_histology": ("primary", "categorical", str),
    "extracranial_disease": ("extracranial", "categorical", str),
    "num_tumors_init": ("num_tumors", "numeric", to_number),
    "rpa": ("rpa", "categorical", str),
    "prior_wbrt": ("prior_wbrt", "binary", to_binary),
}


def imaging_root(source: Path) -> Path:
    """``SOURCE/imaging/patientId`` (or ``SOURCE/patientId`` when the imaging folder was unpacked flat)."""
    for candidate in (Path(source) / "imaging" / "patientId", Path(source) / "patientId"):
        if candidate.is_dir():
            return candidate
    raise DatasetError(error("no imaging/patientId folder found", file=str(source)))


def segmented_studies(root: Path, sequences: tuple[str, ...]) -> dict[str, list[Path]]:
    """Patient id -> study folders that hold every selected sequence and the segmentation."""
    out: dict[str, list[Path]] = {}
    for patient in sorted(p for p in root.iterdir() if p.is_dir()):
        folder = patient / "studyId"
        studies = sorted(s for s in folder.iterdir() if s.is_dir()) if folder.is_dir() else []
        out[patient.name] = [s for s in studies if all((s / f"{n}.nii.gz").is_file() for n in (*sequences, SEGMENTATION))]
    return out


def pretreatment_study(patient: str, studies: list[Path], visits: pd.DataFrame, columns: dict[str, str]
                       ) -> tuple[Path | None, list[Problem]]:
    """The segmented study with visit time <= 0 closest to 0 (see the module docstring)."""
    if not studies:
        return None, [warning("skipped: no study with every selected sequence and a segmentation", patient)]
    times = {}
    if columns["study"] in visits:
        by_study = visits.groupby(visits[columns["study"]].astype(str))["_time"].min()
        times = {s: by_study[s.name] for s in studies if s.name in by_study.index and math.isfinite(by_study[s.name])}
    if not times:
        chosen = min(studies, key=lambda s: (len(s.name), s.name))
        return chosen, [warning(f"no visit time for the segmented studies: took the lowest study id {chosen.name}",
                                patient, str(chosen))]
    before = {s: t for s, t in times.items() if t <= 0}
    if not before:
        return None, [warning("skipped: every segmented study is after Gamma Knife (no pre-treatment study)", patient)]
    return max(before, key=before.get), []


def patient_row(patient: str, individual: pd.Series | None, visits: pd.DataFrame, gk: pd.DataFrame,
                columns: dict[str, str], horizon_days: float | None) -> dict:
    """Clinical variables and derived outcomes of one patient (NaN = unknown)."""
    get = (lambda key: individual.get(columns[key], "")) if individual is not None else (lambda key: "")
    row: dict = {}
    for column, (key, _, parse) in INDIVIDUAL_FEATURES.items():
        row[column] = parse(get(key)) if get(key) != "" else None
    times = visits["_time"].to_numpy(float)
    kps = [to_number(v) for v in visits.get(columns["kps"], pd.Series(dtype=str))]
    pre = [k for k, t in zip(kps, times) if math.isfinite(k) and t <= 0]
    row["kps"] = pre[-1] if pre else next((k for k in kps if math.isfinite(k)), float("nan"))
    died = outcomes.death_days(to_number(get("days_to_death")), times,
                               np.array([to_binary(v) for v in visits.get(columns["death"], [])], float)
                               if columns["death"] in visits else np.full(len(times), np.nan))
    observed = outcomes.follow_up_days(to_number(get("follow_up")), times, died)
    for endpoint, key in (("local_failure", "progress"), ("distant_failure", "new_mets")):
        counts = np.array([to_number(v) for v in visits[columns[key]]]) if columns[key] in visits else np.full(len(times), np.nan)
        row[endpoint] = outcomes.binary_failure(times, counts, horizon_days, observed, died)
    row["os_months"], row["os_event"] = outcomes.overall_survival(died, observed)
    volumes = [to_number(v) for v in gk.get(columns["target_volume"], [])]
    doses = [to_number(v) for v in gk.get(columns["margin_dose"], [])]
    row["gk_num_targets"] = float(len(gk)) if len(gk) else float("nan")
    row["gk_total_target_volume"] = float(np.nansum(volumes)) if any(map(math.isfinite, volumes)) else float("nan")
    row["gk_min_margin_dose"] = float(np.nanmin(doses)) if any(map(math.isfinite, doses)) else float("nan")
    return row


def _declared(tables: dict[str, pd.DataFrame], columns: dict[str, str]) -> tuple[dict[str, str], dict[str, dict]]:
    """Features and endpoints whose source columns exist (only those are declared)."""
    individual, timeseries, gk = tables["individual"], tables["timeseries"], tables["gkdetails"]
    features = {c: kind for c, (key, kind, _) in INDIVIDUAL_FEATURES.items() if columns[key] in individual}
    if columns["kps"] in timeseries:
        features["kps"] = "numeric"
    if len(gk.columns):
        features["gk_num_targets"] = "numeric"
    for column, key in (("gk_total_target_volume", "target_volume"), ("gk_min_margin_dose", "margin_dose")):
        if columns[key] in gk:
            features[column] = "numeric"
    endpoints: dict[str, dict] = {}
    for endpoint, key in (("local_failure", "progress"), ("distant_failure", "new_mets")):
        if columns[key] in timeseries:
            endpoints[endpoint] = {"type": "binary"}
    endpoints["os"] = {"type": "survival", "time": "os_months", "event": "os_event"}
    return features, endpoints


def read_tables(clinical_folder: Path, columns: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The three CSVs (text cells), each required to have the patient column; timeseries also
    the time column. ``_time`` holds the parsed visit time."""
    tables = {}
    for name in ("individual", "timeseries", "gkdetails"):
        path = Path(clinical_folder) / f"{name}.csv"
        tables[name] = read_table(path)
        require_columns(tables[name], [columns["patient"]] + ([columns["time"]] if name == "timeseries" else []), path)
    tables["timeseries"]["_time"] = [to_number(v) for v in tables["timeseries"][columns["time"]]]
    return tables


def binary_lesion_mask(mask: sitk.Image, case: str, path: Path) -> sitk.Image:
    """Every non-zero voxel of the rasterised RTSTRUCT is lesion (label 1)."""
    return sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)


def convert_nyumets(source: Path, raw_folder: Path, clinical_folder: Path | None = None,
                    sequences: tuple[str, ...] = DEFAULT_SEQUENCES, horizon_days: float | None = DEFAULT_HORIZON_DAYS,
                    columns: dict[str, str] | None = None, dataset_id: int = DATASET_ID, name: str = DATASET_NAME,
                    overwrite: bool = False, progress: bool = True) -> tuple[Path, list[Problem]]:
    """Convert, write and verify; returns the dataset folder and the warnings (errors all at once in
    a :class:`DatasetError`). ``sequences`` picks the channels (the first is the reference grid);
    ``horizon_days`` is the binary endpoints' horizon (None: ever during follow-up)."""
    unknown_keys = sorted(set(columns or {}) - set(DEFAULT_COLUMNS))
    unknown_sequences = sorted(set(sequences) - set(SEQUENCES))
    if unknown_keys or unknown_sequences or not sequences:
        raise ValueError(f"unknown column key(s) {unknown_keys} (use {sorted(DEFAULT_COLUMNS)}) or sequence(s) "
                         f"{unknown_sequences or list(sequences)} (use {list(SEQUENCES)})")
    columns = {**DEFAULT_COLUMNS, **(columns or {})}
    tables = read_tables(Path(clinical_folder or source), columns)
    visits_by_patient = dict(list(tables["timeseries"].groupby(tables["timeseries"][columns["patient"]])))
    gk_by_patient = dict(list(tables["gkdetails"].groupby(tables["gkdetails"][columns["patient"]])))
    individual = tables["individual"].drop_duplicates(columns["patient"]).set_index(columns["patient"], drop=False)
    empty_visits = tables["timeseries"].iloc[:0]

    problems: list[Problem] = []
    cases, rows = [], {}
    for patient, studies in segmented_studies(imaging_root(source), tuple(sequences)).items():
        visits = visits_by_patient.get(patient, empty_visits)
        study, notes = pretreatment_study(patient, studies, visits, columns)
        problems += notes
        if study is None:
            continue
        case = f"{patient}_{study.name}"
        cases.append(SourceCase(case, tuple(study / f"{n}.nii.gz" for n in sequences), study / f"{SEGMENTATION}.nii.gz"))
        if patient not in individual.index:
            problems.append(warning("no row in individual.csv: clinical variables unknown", case))
        rows[case] = {"case_id": case, "patient_id": patient, "study_id": study.name,
                      **patient_row(patient, individual.loc[patient] if patient in individual.index else None, visits,
                                    gk_by_patient.get(patient, tables["gkdetails"].iloc[:0]), columns, horizon_days)}
    if not cases:
        raise DatasetError([error("no patient with a pre-treatment segmented study", file=str(source))]
                           + [p for p in problems if p.severity == "error"])
    writer = RawDatasetWriter(raw_folder, dataset_id, name, [SEQUENCES[s] for s in sequences], LABELS, [1], overwrite)
    problems += convert_cases(writer, cases, mask_transform=binary_lesion_mask, progress=progress)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(errors)
    features, endpoints = _declared(tables, columns)
    frame = pd.DataFrame([rows[c] for c in writer.cases()])
    frame = frame[["case_id", "patient_id", "study_id", *features, *[c for e, d in endpoints.items() for c in
                                                                     ([e] if d["type"] == "binary" else [d["time"], d["event"]])]]]
    horizon = "ever during follow-up" if horizon_days is None else f"within {horizon_days:g} days of Gamma Knife"
    folder = writer.finish({"Tr": frame}, features, endpoints, patient_column="patient_id",
                           description=f"NYUMets-Brain pre-treatment studies; local/distant failure {horizon}; "
                                       "converted by glmil_auto.dataset_conversion.nyumets",
                           endpoint_horizon_days=horizon_days)
    return folder, problems
