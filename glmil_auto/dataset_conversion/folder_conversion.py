"""Convert the common "one folder per patient" NIfTI layout into a raw dataset.

```
SOURCE/<patient>/...<files matching each channel pattern and the mask pattern>
```
The first channel is the reference grid: the other channels (linear or B-spline) and the mask
(nearest neighbour) are resampled onto it when their grid differs. Case ids are the patient
folder names. An optional clinical CSV is joined on ``patient_column`` (its values are the
folder names). Used by ``glmil_convert_folder`` (:mod:`glmil_auto.dataset_conversion.folder_entry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from glmil_auto.dataset.problems import DatasetError, Problem, error, warning
from glmil_auto.dataset.safe_names import unsafe_reason
from glmil_auto.dataset_conversion.case_conversion import SourceCase, convert_cases
from glmil_auto.dataset_conversion.file_patterns import FilePattern, files_below, match_one
from glmil_auto.dataset_conversion.raw_writer import DEFAULT_CASE_COLUMN, RawDatasetWriter
from glmil_auto.dataset_conversion.source_files import read_table, require_columns


def patient_folders(source: Path) -> list[Path]:
    """Non-hidden sub-folders of ``source``, sorted by name."""
    return sorted(p for p in Path(source).iterdir() if p.is_dir() and not p.name.startswith("."))


def case_files(folder: Path, channels: list[FilePattern], mask: FilePattern) -> tuple[list[Path], Path]:
    """The channel files (in channel order) and the mask file of one patient folder; every problem
    (missing or ambiguous match, unsafe folder name) in one :class:`DatasetError`."""
    problems: list[Problem] = []
    reason = unsafe_reason(folder.name)
    if reason is not None:
        problems.append(error(f"patient folder name {folder.name!r} cannot be a case id: {reason}",
                              case=folder.name, file=str(folder)))
    files = files_below(folder)
    found: list[Path] = []
    for pattern in channels + [mask]:
        try:
            found.append(match_one(folder, pattern, files))
        except DatasetError as exc:
            problems += exc.problems
    if problems:
        raise DatasetError(problems)
    return found[:-1], found[-1]


def convert_folder(
    source: Path,
    raw_folder: Path,
    dataset_id: int,
    name: str,
    channels: list[FilePattern],
    mask: FilePattern,
    labels: dict[str, int],
    lesion_labels: list[int],
    clinical: Path | None = None,
    patient_column: str | None = None,
    clinical_features: dict[str, str] | None = None,
    endpoints: dict[str, dict[str, Any]] | None = None,
    group_column: str | None = None,
    interpolation: str = "linear",
    skip_incomplete: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[Path, list[Problem]]:
    """Convert ``source`` into ``raw_folder/DatasetNNN_name``; returns the folder and the warnings.

    Every patient folder is converted before anything fails, so that one run lists every problem:
    a :class:`DatasetError` then holds all of them (each naming the patient folder and file) and
    no ``dataset.json`` is written. ``skip_incomplete`` turns a folder without a file for some
    pattern into a warning. Without ``clinical`` the table holds the case column only.
    """
    source = Path(source)
    folders = patient_folders(source)
    if not folders:
        raise DatasetError(error("no patient folder found", file=str(source)))
    table = _clinical_rows(clinical, patient_column) if clinical is not None else None
    writer = RawDatasetWriter(raw_folder, dataset_id, name, [c.name for c in channels], labels, lesion_labels,
                              overwrite=overwrite)
    problems: list[Problem] = []
    cases: list[SourceCase] = []
    for folder in folders:
        try:
            images, mask_file = case_files(folder, channels, mask)
        except DatasetError as exc:
            if skip_incomplete and all("matches the" in p.message for p in exc.problems):
                problems.append(warning("skipped: " + "; ".join(p.message for p in exc.problems),
                                        case=folder.name, file=str(folder)))
            else:
                problems += exc.problems
            continue
        if table is not None and folder.name not in table.index:
            problems.append(error(f"no row in the clinical table (column {patient_column!r})",
                                  case=folder.name, file=str(clinical)))
            continue
        cases.append(SourceCase(folder.name, tuple(images), mask_file))
    problems += convert_cases(writer, cases, interpolation=interpolation, progress=progress)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise DatasetError(errors)
    written = writer.cases()
    if table is None:
        frame = pd.DataFrame({DEFAULT_CASE_COLUMN: written})
    else:
        frame = table.loc[written].reset_index(drop=True)
        if DEFAULT_CASE_COLUMN not in frame:
            frame.insert(0, DEFAULT_CASE_COLUMN, written)
    extra = {"group_column": group_column} if group_column else {}
    out = writer.finish({"Tr": frame}, clinical_features or {}, endpoints or {},
                        description=f"converted by glmil_convert_folder from {source.name}", **extra)
    return out, problems


def _clinical_rows(path: Path, patient_column: str | None) -> pd.DataFrame:
    """The clinical CSV indexed by ``patient_column`` (text cells), one row per patient."""
    if not patient_column:
        raise ValueError("a clinical table needs patient_column (the column holding the folder names)")
    table = read_table(path)
    require_columns(table, [patient_column], path)
    if DEFAULT_CASE_COLUMN in table and patient_column != DEFAULT_CASE_COLUMN:
        raise DatasetError(error(f"the table has a '{DEFAULT_CASE_COLUMN}' column besides the patient column "
                                 f"{patient_column!r}; rename one of them", file=str(path)))
    repeated = sorted(table[patient_column][table[patient_column].duplicated()].unique())
    if repeated:
        raise DatasetError([error(f"patient appears more than once in column {patient_column!r}", case=p,
                                  file=str(path)) for p in repeated])
    return table.set_index(patient_column, drop=False)

