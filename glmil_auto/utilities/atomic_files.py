"""Atomic writes: a file appears complete under its final name, or not at all.

Each file is written to a hidden temporary name in the same folder
(``.tmp_<name>.<pid><ending>``; dataset readers ignore names starting with ``.``) and moved into
place with ``os.replace``, so an interrupted or killed writer never leaves a half-written file
that a later, resumed run would trust.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

_DOUBLE_ENDINGS = (".nii.gz", ".tar.gz")


def _ending(path: Path) -> str:
    for ending in _DOUBLE_ENDINGS:
        if path.name.endswith(ending):
            return ending
    return path.suffix


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path``, on failure it is removed.

    The temporary name keeps the real ending (``.nii.gz``, ``.b2nd``) so that writers which pick
    a format from the extension (SimpleITK) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp_{path.name}.{os.getpid()}{_ending(path)}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.tmp_*``) that a killed writer left in ``folder`` (a writer
    that is interrupted normally removes its own); returns what was deleted. Call it before
    writing into a folder that no other process writes into at the same time."""
    removed = []
    for path in Path(folder).glob(".tmp_*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays as Python numbers and lists, and every NaN or infinite
    float replaced by None: JSON has no NaN,
    and ``json.dumps`` would write the non-standard token ``NaN`` that strict readers refuse."""
    if isinstance(obj, np.generic):  # numpy scalars (np.int64 is not JSON serialisable)
        return json_safe(obj.item())
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Strict JSON (non-finite numbers written as null), atomically."""
    text = json.dumps(json_safe(obj), indent=1, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


def write_csv_atomic(path: str | Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """CSV with exactly ``columns`` in that order; ``None`` becomes an empty cell."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))
