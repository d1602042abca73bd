"""Where things are in a NYUMets-Brain download, the studies of each patient in time order, and
which study of a patient becomes its case.

Verified from public sources (the official loader, nyumets/nyumets ``nyumets/data/utils.py`` and
``nyumets/data/config.yaml``)::

    ROOT/data/imaging/patientId/<PatientID>/studyId/<StudyID>/<file>.nii.gz
        T1 (pre-contrast), CT1 (post-contrast spin echo), T2, FLAIR,
        RTSTRUCT_MRI (the Gamma Knife planning T1 post-contrast, MPRAGE),
        RTSTRUCT_segmentation (the planning structures warped onto the study)
    ROOT/metadata/<date>_imaging.csv     PatientID, StudyID, ExpertAdjusted, RelativeTimepoint, ...

Many studies lack one or more of the sequences. The study ids are random numbers: studies are put
in time order by ``RelativeTimepoint`` only (the loader sorts by it). What RelativeTimepoint
counts (days from Gamma Knife, or a visit index) is *not confirmed*; see :func:`candidate_studies`
for the rule that picks the pre-treatment study.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from glmil_auto.dataset.problems import DatasetError, Problem, error, warning
from glmil_auto.dataset_conversion.source_files import read_table, to_binary, to_number

SEGMENTATION = "RTSTRUCT_segmentation"
PLANNING_T1C = "RTSTRUCT_MRI"
IMAGING_COLUMNS = ("PatientID", "StudyID", "RelativeTimepoint")
EXPERT_COLUMN = "ExpertAdjusted"
# --sequences choice -> (channel name, files tried in this order); "T1c" is the planning T1c when
# the study has one, else the spin-echo CT1 (as the official loader's "T1_post_all")
SEQUENCES: dict[str, tuple[str, tuple[str, ...]]] = {
    "T1c": ("T1c", (PLANNING_T1C, "CT1")),
    PLANNING_T1C: ("T1c", (PLANNING_T1C,)),
    "CT1": ("T1c", ("CT1",)),
    "T1": ("T1", ("T1",)),
    "T2": ("T2", ("T2",)),
    "FLAIR": ("FLAIR", ("FLAIR",)),
}
DEFAULT_SEQUENCES = ("T1c",)
STUDY_RULES = ("gk", "earliest")
_INTEGER_ID = re.compile(r"^(\d+)(\.0*)?$")


@dataclass(frozen=True)
class Download:
    """The ``imaging/patientId`` folder and the ``metadata`` folder (None when not found)."""

    imaging: Path
    metadata: Path | None


@dataclass(frozen=True)
class Study:
    """One row of the imaging csv whose folder exists."""

    patient: str
    study: str
    timepoint: float
    expert_adjusted: str
    row: int  # its row in the imaging csv (the last tie-break, never the random id)
    folder: Path

    @property
    def case_id(self) -> str:
        return f"{self.patient}_{self.study}"


def normal_id(value: object) -> str:
    """An id as text: spaces stripped, an integer id as the loader writes folder names
    (``str(int(...))``: ``0123`` and ``123.0`` -> ``123``); other ids unchanged."""
    text = str(value).strip()
    match = _INTEGER_ID.match(text)
    return str(int(match.group(1))) if match else text


def locate(source: Path) -> Download:
    """``-i`` may be the download root (holding ``data/`` and ``metadata/``) or ``data/`` itself
    (``metadata/`` then beside it, or inside it)."""
    source = Path(source)
    imaging = next((c for c in (source / "data" / "imaging" / "patientId", source / "imaging" / "patientId")
                    if c.is_dir()), None)
    if imaging is None:
        raise DatasetError(error("no data/imaging/patientId (or imaging/patientId) folder found: point -i at the "
                                 "NYUMets download (the folder holding data/ and metadata/) or at its data/ "
                                 "folder", file=str(source)))
    data = imaging.parents[1]
    candidates = (data.parent / "metadata", data / "metadata", source / "metadata")
    return Download(imaging, next((c for c in candidates if c.is_dir()), None))


def csv_tables(folder: Path | None) -> dict[Path, pd.DataFrame]:
    """Every ``*.csv`` of ``folder`` (not recursive), read as text; {} when there is no folder."""
    if folder is None or not Path(folder).is_dir():
        return {}
    return {path: read_table(path) for path in sorted(Path(folder).glob("*.csv")) if path.is_file()}


def listing(tables: dict[Path, pd.DataFrame]) -> str:
    """``a.csv [c1, c2]; b.csv [...]``: what the tables are, for one-line errors."""
    return "; ".join(f"{p.name} {list(t.columns)}" for p, t in tables.items()) or "none"


def imaging_table(explicit: Path | None, tables: dict[Path, pd.DataFrame], metadata: Path | None
                  ) -> tuple[Path, pd.DataFrame, list[Problem]]:
    """The imaging csv: ``explicit`` (``--imaging-csv``), else the metadata csv holding
    PatientID, StudyID and RelativeTimepoint (the newest by name when several: names start with
    their date)."""
    if explicit is not None:
        table = read_table(explicit)
        _require(table, explicit)
        return Path(explicit), table, []
    found = [p for p, t in tables.items() if set(IMAGING_COLUMNS) <= set(t.columns)]
    if metadata is None:
        raise DatasetError(error("no metadata folder found (looked beside data/, in it and in -i); name the imaging "
                                 "csv with --imaging-csv"))
    if not found:
        raise DatasetError(error(f"no imaging csv (columns {list(IMAGING_COLUMNS)}) found; name it with "
                                 f"--imaging-csv; csv files seen: {listing(tables)}", file=str(metadata)))
    chosen = max(found)
    notes = [warning(f"several imaging csv files {[p.name for p in found]}: took the newest by name, {chosen.name}",
                     file=str(chosen))] if len(found) > 1 else []
    return chosen, tables[chosen], notes


def _require(table: pd.DataFrame, path: Path) -> None:
    missing = [c for c in IMAGING_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(error(f"imaging csv lacks column(s) {missing}; it has {list(table.columns)}",
                                 file=str(path)))


def patient_studies(table: pd.DataFrame, path: Path, imaging: Path) -> tuple[dict[str, list[Study]], list[Problem]]:
    """Patient id -> its studies in time order (RelativeTimepoint), only those whose folder exists.

    A row whose RelativeTimepoint is not a number is left out (warning naming the case, column and
    value); rows without a folder and study folders not in the csv are each summed up in one
    warning (a partial download, or a csv of another release)."""
    problems: list[Problem] = []
    studies: dict[str, list[Study]] = {}
    absent, listed = [], set()
    expert = table[EXPERT_COLUMN] if EXPERT_COLUMN in table else pd.Series([""] * len(table))
    for row, (pid, sid, time, adjusted) in enumerate(zip(table["PatientID"], table["StudyID"],
                                                          table["RelativeTimepoint"], expert)):
        pid, sid = normal_id(pid), normal_id(sid)
        if (pid, sid) in listed:
            continue  # a repeated row
        listed.add((pid, sid))
        folder = imaging / pid / "studyId" / sid
        if not folder.is_dir():
            absent.append(f"{pid}/{sid}")
            continue
        timepoint = to_number(time)
        if math.isnan(timepoint):
            problems.append(warning(f"column 'RelativeTimepoint': value {time!r} not understood; study left out "
                                    "(it cannot be put in time order)", f"{pid}_{sid}", str(path)))
            continue
        studies.setdefault(pid, []).append(Study(pid, sid, timepoint, str(adjusted).strip(), row, folder))
    if absent:
        problems.append(warning(f"{len(absent)} study(ies) of the imaging csv have no folder under {imaging} "
                                f"(e.g. {', '.join(absent[:3])})", file=str(path)))
    unlisted = [f"{p.name}/{s.name}" for p in sorted(imaging.iterdir()) if (p / "studyId").is_dir()
                for s in sorted((p / "studyId").iterdir()) if s.is_dir() and (p.name, s.name) not in listed]
    if unlisted:
        problems.append(warning(f"{len(unlisted)} study folder(s) are not in the imaging csv and were left out: no "
                                f"RelativeTimepoint (e.g. {', '.join(unlisted[:3])})", file=str(path)))
    return {p: sorted(s, key=lambda x: (x.timepoint, x.row)) for p, s in studies.items()}, problems


def sequence_files(folder: Path, sequences: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    """The file of each selected sequence (in order) and what is missing, e.g. ``T2.nii.gz`` or
    ``RTSTRUCT_MRI.nii.gz or CT1.nii.gz``."""
    found, missing = [], []
    for sequence in sequences:
        names = SEQUENCES[sequence][1]
        path = next((folder / f"{n}.nii.gz" for n in names if (folder / f"{n}.nii.gz").is_file()), None)
        if path is None:
            missing.append(" or ".join(f"{n}.nii.gz" for n in names))
        else:
            found.append(path)
    return found, missing


def candidate_studies(studies: list[Study], rule: str) -> list[Study]:
    """The segmented studies that may become the patient's case, best first.

    ``gk`` (default): RelativeTimepoint <= 0, the latest first, i.e. the study at the Gamma Knife
    time point (0) or the last one before it. ``earliest``: every segmented study, earliest first
    (for a RelativeTimepoint that turns out to count visits from 1). Studies sharing a time point
    are ordered: holding RTSTRUCT_MRI (the planning scan) first, then ExpertAdjusted = 1, then
    their row in the imaging csv.
    """
    segmented = [s for s in studies if (s.folder / f"{SEGMENTATION}.nii.gz").is_file()]
    if rule == "gk":
        segmented = [s for s in segmented if s.timepoint <= 0]

    def tie_break(s: Study) -> tuple:
        return (not (s.folder / f"{PLANNING_T1C}.nii.gz").is_file(), to_binary(s.expert_adjusted) != 1.0, s.row)

    direction = -1 if rule == "gk" else 1
    return sorted(segmented, key=lambda s: (direction * s.timepoint, tie_break(s)))


def choose_study(patient: str, studies: list[Study], sequences: tuple[str, ...], rule: str
                 ) -> tuple[Study | None, list[Path], list[Problem]]:
    """The patient's case study and its sequence files, or None (warning) when no candidate study
    holds every selected sequence. A better candidate lacking a sequence is skipped with a warning
    naming the case and the missing file."""
    candidates = candidate_studies(studies, rule)
    if not candidates:
        times = [f"{s.study}: {s.timepoint:g}" for s in studies if (s.folder / f"{SEGMENTATION}.nii.gz").is_file()]
        why = (f"no segmented study at RelativeTimepoint <= 0 (segmented: {', '.join(times)}; see --study-rule)"
               if times else f"no study with {SEGMENTATION}.nii.gz")
        return None, [], [warning(f"patient skipped: {why}", patient)]
    problems: list[Problem] = []
    for study in candidates:
        files, missing = sequence_files(study.folder, sequences)
        if not missing:
            problems += _tie_warning(study, candidates)
            return study, files, problems
        problems.append(warning(f"study skipped: lacks {', '.join(missing)}", study.case_id,
                                str(study.folder / missing[0].split(" or ")[0])))
    return None, [], problems + [warning("patient skipped: no candidate study holds every selected sequence", patient)]


def _tie_warning(chosen: Study, candidates: list[Study]) -> list[Problem]:
    tied = [s.study for s in candidates if s.timepoint == chosen.timepoint and s is not chosen]
    if not tied:
        return []
    return [warning(f"studies {[chosen.study, *tied]} share RelativeTimepoint {chosen.timepoint:g}: took "
                    f"{chosen.study} (planning scan first, then expert adjusted, then csv order)", chosen.case_id,
                    str(chosen.folder))]
