"""The TCIA download of Brain-TR-GammaKnife: which folders hold its DICOM series, the headers
read from them, and the treatment courses (studies with an RTSTRUCT) of each patient.

The NBIA data retriever writes ``metadata.csv`` beside the collection folder, one row per
series with ``Subject ID``, ``Study UID``, ``Study Date``, ``Modality`` and ``File Location``
(relative to metadata.csv, ``./Brain-TR-GammaKnife/GK_487/<study>/<series>``, with backslashes
when downloaded on Windows). When it is there, only the listed folders are read (MR and RTSTRUCT
for the cases, RTDOSE for the dose; anything else, such as an NRRD copy of the collection beside
it, is never opened); without it, or without a usable ``File Location``, every file under the
download is read, as ``glmil_convert_dicom_rt`` does.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from glmil_auto.dataset_conversion.dicom_errors import DicomProblem
from glmil_auto.dataset_conversion.dicom_rt_dose import RtObject, find_rt_objects
from glmil_auto.dataset_conversion.dicom_series import DicomInventory, scan_folder
from glmil_auto.dataset_conversion.source_files import read_table

METADATA_FILE = "metadata.csv"
SUBJECT, MODALITY, FILE_LOCATION = "Subject ID", "Modality", "File Location"
IMAGE_MODALITIES = ("MR", "RTSTRUCT")
DOSE_MODALITY = "RTDOSE"


@dataclass(frozen=True)
class SeriesFolder:
    """One ``metadata.csv`` row whose folder exists."""

    subject: str
    modality: str  # as metadata.csv gives it ("" when it has no Modality column)
    path: Path


@dataclass
class Download:
    """The headers of the download: MR series and RTSTRUCTs, and the RTDOSE files."""

    inventory: DicomInventory
    doses: list[RtObject]
    metadata: Path | None = None  # the metadata.csv whose File Location was used
    folders: int = 0  # series folders read from it


@dataclass(frozen=True)
class StudyCourse:
    """A study with an RTSTRUCT: one treatment course of the patient, numbered by study date."""

    patient_id: str  # DICOM PatientID
    study_uid: str
    study_date: str
    number: int  # 1, 2, ... by (StudyDate, StudyTime, StudyInstanceUID) within the patient
    rtstructs: tuple[str, ...] = field(default=())  # paths of its RTSTRUCT files


def find_metadata(root: Path) -> Path | None:
    """``ROOT/metadata.csv``, else the only ``ROOT/*/metadata.csv``."""
    direct = Path(root) / METADATA_FILE
    if direct.is_file():
        return direct
    below = sorted(Path(root).glob(f"*/{METADATA_FILE}"))
    return below[0] if len(below) == 1 else None


def metadata_folders(path: Path) -> tuple[list[SeriesFolder], list[DicomProblem]]:
    """The series folders ``metadata.csv`` lists that exist, and a warning per missing one."""
    table = read_table(path)
    if FILE_LOCATION not in table.columns:
        return [], [DicomProblem(f"no column {FILE_LOCATION!r} (columns: {list(table.columns)}): the whole download "
                                 "is searched for DICOM files", file=path, severity="warning")]
    folders, problems, seen = [], [], set()
    for _, row in table.iterrows():
        location = row[FILE_LOCATION].replace("\\", "/")
        subject = row.get(SUBJECT, "") or None
        if not location:
            continue
        folder = (path.parent / location).resolve()
        if folder in seen:
            continue
        seen.add(folder)
        if folder.is_dir():
            folders.append(SeriesFolder(subject or "", row.get(MODALITY, "").upper(), folder))
        else:
            problems.append(DicomProblem(f"{FILE_LOCATION} {row[FILE_LOCATION]!r} ({row.get(MODALITY, '')}) is not a "
                                         "folder of the download: series left out", subject, path, "warning"))
    return folders, problems


def merge_inventory(into: DicomInventory, other: DicomInventory) -> None:
    """Add the series, structure sets and skipped files of ``other`` to ``into``."""
    for uid, series in other.series.items():
        if uid in into.series:
            into.series[uid].files.extend(series.files)
        else:
            into.series[uid] = series
    into.rtstructs.extend(other.rtstructs)
    into.skipped.extend(other.skipped)


def read_download(root: Path, progress: bool = False) -> tuple[Download, list[DicomProblem]]:
    """The headers of the download under ``root`` (module docstring) and the warnings about it."""
    metadata = find_metadata(root)
    folders, problems = metadata_folders(metadata) if metadata is not None else ([], [])
    if not folders:
        if metadata is not None:
            problems.append(DicomProblem("no series folder of metadata.csv was found: the whole download is "
                                         "searched for DICOM files", file=metadata, severity="warning"))
        doses = [o for o in find_rt_objects(root) if o.modality == DOSE_MODALITY]
        return Download(scan_folder(Path(root), progress=progress), doses), problems
    inventory, doses = DicomInventory(), []
    for folder in tqdm(folders, desc="reading DICOM headers", unit="series", disable=not progress):
        if folder.modality in ("", DOSE_MODALITY):
            doses += [o for o in find_rt_objects(folder.path) if o.modality == DOSE_MODALITY]
        if folder.modality in ("", *IMAGE_MODALITIES):
            merge_inventory(inventory, scan_folder(folder.path))
    return Download(inventory, doses, metadata, len(folders)), problems


def number_courses(inventory: DicomInventory) -> list[StudyCourse]:
    """Every study with an RTSTRUCT, numbered per patient by the StudyDate (and StudyTime) of its
    MR series, else of its structure set."""
    structure_sets: dict[tuple[str, str], list] = defaultdict(list)
    for item in inventory.rtstructs:
        structure_sets[(item.patient_id, item.study_uid)].append(item)
    when = {}
    for (patient, study), items in structure_sets.items():
        series = [s for s in inventory.series_of(patient) if s.study_uid == study]
        dates = [(s.study_date, s.study_time) for s in series] or [(i.structure_set_date, i.structure_set_time)
                                                                   for i in items]
        when[(patient, study)] = min(dates)
    courses = []
    for patient in sorted({p for p, _ in structure_sets}):
        own = sorted((key for key in structure_sets if key[0] == patient), key=lambda k: (when[k], k[1]))
        courses += [StudyCourse(patient, study, when[(patient, study)][0], number,
                                tuple(str(i.path) for i in structure_sets[(patient, study)]))
                    for number, (_, study) in enumerate(own, start=1)]
    return courses


def without_studies(inventory: DicomInventory, studies: set[tuple[str, str]]) -> DicomInventory:
    """The inventory less the MR series and structure sets of ``(PatientID, StudyInstanceUID)`` studies."""
    return DicomInventory(
        {uid: s for uid, s in inventory.series.items() if (s.patient_id, s.study_uid) not in studies},
        [r for r in inventory.rtstructs if (r.patient_id, r.study_uid) not in studies], list(inventory.skipped))
