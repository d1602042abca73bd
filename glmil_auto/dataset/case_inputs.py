"""What a preprocessed case (and the fingerprint) was made from, so that edited inputs are redone.

Each input file is recorded by size and modification time (nanoseconds): cheap to check for a
whole dataset on every run, and changed by any edit or copy (a false "changed" only costs a
recomputation). The case's clinical row is recorded by the sha256 of its cells as written in the
CSV. A preprocessed case is up to date only when its recorded inputs equal the current ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from glmil_auto.dataset import layout
from glmil_auto.dataset.clinical_table import read_csv_as_text
from glmil_auto.dataset.raw_dataset import RawDataset
from glmil_auto.utilities.content_hash import json_sha256


def file_stamp(path: Path) -> list[int] | None:
    """``[size, mtime_ns]`` of a file, None when it does not exist."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return [int(stat.st_size), int(stat.st_mtime_ns)]


def clinical_rows(raw: RawDataset, split: str) -> dict[str, str]:
    """sha256 of each case's clinical row (cells as text, by column name); {} without a table."""
    path = layout.clinical_file(raw.folder, split)
    if not path.is_file():
        return {}
    table: pd.DataFrame = read_csv_as_text(path)
    column = raw.spec.case_column
    if column not in table.columns:
        return {}  # reading the table for training names this problem
    return {str(row[column]): json_sha256({str(k): str(v) for k, v in row.items()})
            for _, row in table.iterrows()}


def case_input_record(raw: RawDataset, case: str, split: str, rows: dict[str, str] | None = None) -> dict[str, Any]:
    """The case's image and label files (name -> [size, mtime_ns]) and its clinical row hash."""
    rows = clinical_rows(raw, split) if rows is None else rows
    files = [*raw.image_files(case, split), raw.label_file(case, split)]
    return {"files": {path.name: file_stamp(path) for path in files}, "clinical_row_sha256": rows.get(case)}
