"""NYUMets-Brain -> a raw dataset: one case per patient, its pre-treatment (Gamma Knife planning)
study, with baseline variables from the first Gamma Knife procedure and local failure, distant
failure and overall survival derived from the clinical tables.

Layout (see documentation/dataset_conversion.md for the table of what is verified)::

    ROOT/data/imaging/patientId/<PatientID>/studyId/<StudyID>/
        {T1,CT1,T2,FLAIR,RTSTRUCT_MRI,RTSTRUCT_segmentation}.nii.gz   verified from public sources
    ROOT/metadata/<date>_imaging.csv    PatientID, StudyID, ExpertAdjusted, RelativeTimepoint
                                        verified from public sources
    ROOT/metadata/<clinical tables>.csv keyed by patient_identifier (verified); file names and
                                        which table holds which column not confirmed: recognised
                                        by their columns (nyumets_tables)

``-i`` is the download root or its ``data/`` folder (:func:`nyumets_layout.locate`).

- Studies are put in time order by RelativeTimepoint, never by their (random) ids. The case of a
  patient is the segmented study at RelativeTimepoint <= 0 closest to 0 (``study_rule="gk"``;
  what RelativeTimepoint counts is not confirmed, so ``"earliest"`` takes the earliest segmented
  study instead) that holds every selected sequence (:func:`nyumets_layout.choose_study`).
- Channels: ``sequences`` (default ``("T1c",)``: the planning T1c RTSTRUCT_MRI when the study has
  it, else CT1); the first is the reference grid.
- Mask: RTSTRUCT_segmentation holds PTVs warped with linear interpolation, so values between 0
  and 1 occur: voxels >= ``mask_threshold`` (0.5) are label 1, with a warning per case whose mask
  is not binary. Lesion instances are its connected components.
- There is no leptomeningeal column: no leptomeningeal endpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from glmil_auto.dataset.problems import DatasetError, Problem, error, warning
from glmil_auto.dataset_conversion import nyumets_clinical as clinical
from glmil_auto.dataset_conversion.case_conversion import MaskTransform, SourceCase, convert_cases
from glmil_auto.dataset_conversion.nyumets_layout import (
    DEFAULT_SEQUENCES,
    SEGMENTATION,
    SEQUENCES,
    STUDY_RULES,
    Study,
    choose_study,
    csv_tables,
    imaging_table,
    locate,
    patient_studies,
)
from glmil_auto.dataset_conversion.nyumets_tables import DEFAULT_COLUMNS, ROLES, ClinicalTables, find_tables
from glmil_auto.dataset_conversion.raw_writer import RawDatasetWriter

DATASET_ID, DATASET_NAME = 103, "NYUMets"
LABELS = {"background": 0, "metastasis": 1}
DEFAULT_HORIZON_DAYS = 365.0
DEFAULT_MASK_THRESHOLD = 0.5


def thresholded_mask(threshold: float, notes: list[Problem]) -> MaskTransform:
    """A mask transform: voxels >= ``threshold`` are label 1; a mask with values other than 0 and 1
    (the linear interpolation of a warped PTV) adds a warning to ``notes`` naming the case and file."""
    def transform(mask: sitk.Image, case: str, path: Path) -> sitk.Image:
        values = sitk.GetArrayFromImage(mask)
        odd = values[(values != 0) & (values != 1)]
        if odd.size:
            notes.append(warning(f"mask is not binary: {odd.size} voxel(s) with values other than 0 and 1 (range "
                                 f"{float(odd.min()):g} to {float(odd.max()):g}); thresholded at >= {threshold:g}",
                                 case, str(path)))
        binary = sitk.GetImageFromArray((values >= threshold).astype(np.uint8))
        binary.CopyInformation(mask)
        return binary
    return transform


def _check_options(sequences: tuple[str, ...], study_rule: str, columns: dict[str, str] | None,
                   tables: dict[str, Path | None] | None, mask_threshold: float) -> None:
    """ValueError (exit code 2) for an unknown option value."""
    unknown = {"column key(s)": sorted(set(columns or {}) - set(DEFAULT_COLUMNS)),
               "sequence(s)": sorted(set(sequences) - set(SEQUENCES)),
               "table role(s)": sorted(set(tables or {}) - set(ROLES))}
    problems = [f"unknown {what} {names}" for what, names in unknown.items() if names]
    channels = [SEQUENCES[s][0] for s in sequences if s in SEQUENCES]
    if not sequences or len(set(channels)) < len(channels):
        problems.append(f"sequences {list(sequences)} must be non-empty and give each channel once "
                        "(T1c, RTSTRUCT_MRI and CT1 are all the T1c channel)")
    if study_rule not in STUDY_RULES:
        problems.append(f"study rule {study_rule!r} is not one of {list(STUDY_RULES)}")
    if not 0 < mask_threshold <= 1:
        problems.append(f"mask threshold {mask_threshold} must be in (0, 1]")
    if problems:
        raise ValueError("; ".join(problems) + f" (sequences: {list(SEQUENCES)}; column keys: {list(DEFAULT_COLUMNS)})")


def select_cases(studies: dict[str, list[Study]], sequences: tuple[str, ...], study_rule: str
                 ) -> tuple[list[SourceCase], dict[str, Study], list[Problem]]:
    """One :class:`SourceCase` per patient with a usable study (see :func:`choose_study`)."""
    cases, chosen, problems = [], {}, []
    for patient in sorted(studies):
        study, files, notes = choose_study(patient, studies[patient], sequences, study_rule)
        problems += notes
        if study is not None:
            cases.append(SourceCase(study.case_id, tuple(files), study.folder / f"{SEGMENTATION}.nii.gz"))
            chosen[study.case_id] = study
    return cases, chosen, problems


def _missing_rows(tables: ClinicalTables, groups: dict[str, dict], patients: dict[str, str]) -> list[Problem]:
    """Warnings for converted patients without rows in a table; one line when no patient has any."""
    if not any(p in groups[role] for role in groups for p in patients.values()):
        examples = {role: list(groups[role])[:3] for role in groups}
        return [warning(f"none of the converted patients (e.g. {list(patients.values())[:3]}) is in the clinical "
                        f"tables (their {tables.column('patient')} e.g. {examples}): every clinical value and "
                        "endpoint is unknown")]
    what = {"patient": "its patient-level variables are unknown", "timeseries": "its endpoints are unknown",
            "gk": "its Gamma Knife baseline is unknown"}
    return [warning(f"no row in {ROLES[role][0]}: {what[role]}", case, str(tables.paths[role]))
            for case, patient in patients.items() for role in groups if patient not in groups[role]]


def clinical_frame(written: list[str], chosen: dict[str, Study], tables: ClinicalTables, files: dict[str, str],
                   horizon_days: float | None) -> tuple[pd.DataFrame, list[Problem]]:
    """The clinical table of the written cases (ids, study, features, endpoints) and its warnings."""
    groups = {role: tables.by_patient(role) for role in ROLES}
    problems = _missing_rows(tables, groups, {c: chosen[c].patient for c in written})
    rows = []
    for case in written:
        study = chosen[case]
        records, notes = clinical.patient_records(tables, groups, study.patient, case)
        values, more = clinical.clinical_row(records, tables, horizon_days)
        problems += notes + more
        rows.append({"case_id": case, "patient_id": study.patient, "study_id": study.study,
                     "relative_timepoint": study.timepoint, "expert_adjusted": study.expert_adjusted,
                     "t1c_file": files.get(case, ""), **values})
    frame, notes = clinical.parse_features(pd.DataFrame(rows), tables)
    return frame, problems + notes


def _ordered(frame: pd.DataFrame, features: dict[str, str], endpoints: dict[str, dict]) -> pd.DataFrame:
    ids = ["case_id", "patient_id", "study_id", "relative_timepoint", "expert_adjusted", "t1c_file"]
    outcome = [c for e, d in endpoints.items() for c in ([e] if d["type"] == "binary" else [d["time"], d["event"]])]
    return frame[ids + list(features) + outcome]


def read_sources(source: Path, imaging_csv: Path | None, clinical_folder: Path | None,
                 tables: dict[str, Path | None] | None, columns: dict[str, str]
                 ) -> tuple[dict[str, list[Study]], ClinicalTables, list[Problem]]:
    """The studies per patient (imaging csv + folders) and the clinical tables."""
    download = locate(source)
    metadata_csvs = csv_tables(download.metadata) if imaging_csv is None or clinical_folder is None else {}
    path, imaging, problems = imaging_table(imaging_csv, metadata_csvs, download.metadata)
    folder = clinical_folder if clinical_folder is not None else download.metadata
    seen = csv_tables(clinical_folder) if clinical_folder is not None else metadata_csvs
    clinical_tables, notes = find_tables(seen, dict(tables or {}), columns, folder)
    studies, more = patient_studies(imaging, path, download.imaging)
    return studies, clinical_tables, problems + notes + more


def convert_nyumets(source: Path, raw_folder: Path, *, imaging_csv: Path | None = None,
                    clinical_folder: Path | None = None, tables: dict[str, Path | None] | None = None,
                    sequences: tuple[str, ...] = DEFAULT_SEQUENCES, study_rule: str = "gk",
                    mask_threshold: float = DEFAULT_MASK_THRESHOLD,
                    horizon_days: float | None = DEFAULT_HORIZON_DAYS, columns: dict[str, str] | None = None,
                    dataset_id: int = DATASET_ID, name: str = DATASET_NAME, overwrite: bool = False,
                    progress: bool = True) -> tuple[Path, list[Problem]]:
    """Convert, write and verify; returns the dataset folder and the warnings (errors all at once in
    a :class:`DatasetError`).

    ``imaging_csv``, ``clinical_folder`` (default: the download's metadata folder) and ``tables``
    (role ``patient`` / ``timeseries`` / ``gk`` -> file) override where the tables are looked for;
    ``columns`` renames columns (keys of :data:`DEFAULT_COLUMNS`); ``horizon_days`` is the binary
    endpoints' horizon (None: ever during follow-up).
    """
    sequences = tuple(sequences)
    _check_options(sequences, study_rule, columns, tables, mask_threshold)
    columns = {**DEFAULT_COLUMNS, **(columns or {})}
    studies, clinical_tables, problems = read_sources(source, imaging_csv, clinical_folder, tables, columns)
    cases, chosen, notes = select_cases(studies, sequences, study_rule)
    problems += notes
    if not cases:
        hint = " (if RelativeTimepoint counts visits from 1, try --study-rule earliest)" if study_rule == "gk" else ""
        raise DatasetError([error(f"no patient has a usable segmented study{hint}", file=str(source))])
    writer = RawDatasetWriter(raw_folder, dataset_id, name, [SEQUENCES[s][0] for s in sequences], LABELS, [1],
                              overwrite)
    mask_notes: list[Problem] = []
    problems += convert_cases(writer, cases, mask_transform=thresholded_mask(mask_threshold, mask_notes),
                              progress=progress)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(errors)
    t1c_files = {c.case_id: f.name.removesuffix(".nii.gz") for c in cases for s, f in zip(sequences, c.images)
                 if SEQUENCES[s][0] == "T1c"}
    frame, notes = clinical_frame(writer.cases(), chosen, clinical_tables, t1c_files, horizon_days)
    features, endpoints = clinical.declared(clinical_tables)
    horizon = "ever during follow-up" if horizon_days is None else f"within {horizon_days:g} days of Gamma Knife"
    folder = writer.finish({"Tr": _ordered(frame, features, endpoints)}, features, endpoints,
                           patient_column="patient_id", endpoint_horizon_days=horizon_days,
                           description=f"NYUMets-Brain, one study per patient (study rule {study_rule}); masks "
                                       f"thresholded at >= {mask_threshold:g}; local/distant failure {horizon}; "
                                       "converted by glmil_auto.dataset_conversion.nyumets")
    return folder, problems + mask_notes + notes
