"""Preprocessed cases on disk: blosc2 arrays and JSON properties (never pickle).

```
<glmil_preprocessed>/<DatasetNNN_Name>/<plans_name>/<split>/{case}_global.b2nd   (C+1, Z, Y, X)
                                                           /{case}_local.b2nd    (N, S, C+1, pz, py, px)
                                                           /{case}.json          properties, written last
```
The JSON is written after both arrays, so a case is complete exactly when its JSON exists and
names the current plans hash; that is what resuming checks. Chunks follow what the loader reads:
the global volume in one chunk, the local bag one instance per chunk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import blosc2
import numpy as np

from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.utilities.atomic_files import atomic_path, write_json_atomic

CPARAMS = {"codec": blosc2.Codec.ZSTD, "clevel": 3, "filters": [blosc2.Filter.SHUFFLE]}


def case_paths(folder: Path, case: str) -> dict[str, Path]:
    folder = Path(folder)
    return {
        "global": folder / f"{case}_global.b2nd",
        "local": folder / f"{case}_local.b2nd",
        "properties": folder / f"{case}.json",
    }


def _save_array(array: np.ndarray, path: Path, chunks: tuple[int, ...]) -> None:
    with atomic_path(path) as temporary:
        blosc2.asarray(np.ascontiguousarray(array), urlpath=str(temporary), mode="w", chunks=chunks, cparams=CPARAMS)


def check_finite(array: np.ndarray, case: str, what: str, file: str | Path | None = None) -> None:
    """Raise :class:`DatasetError` naming the case (and file) when ``array`` holds NaN or infinity:
    a preprocessed array must never be written, or trained on, with non-finite values."""
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise DatasetError(error(f"the preprocessed {what} holds {bad} NaN or infinite value(s) (input intensities "
                                 "out of range?); nothing was written for this case", case,
                                 None if file is None else str(file)))


def save_case(folder: Path, case: str, global_array: np.ndarray, local_array: np.ndarray, properties: dict[str, Any]) -> None:
    """Write a case's arrays, then its properties; refuses (before writing anything) non-finite arrays."""
    paths = case_paths(folder, case)
    check_finite(global_array, case, "global volume", paths["global"])
    check_finite(local_array, case, "lesion patches", paths["local"])
    os.makedirs(folder, exist_ok=True)
    _save_array(global_array, paths["global"], tuple(global_array.shape))
    local_chunks = (1,) + tuple(local_array.shape[1:]) if local_array.shape[0] else tuple(max(1, s) for s in local_array.shape)
    _save_array(local_array, paths["local"], local_chunks)
    write_json_atomic(paths["properties"], properties)


def case_is_done(folder: Path, case: str, plans_hash: str, inputs: dict[str, Any] | None = None) -> bool:
    """The case's files exist and its properties name ``plans_hash`` and (when given) the same
    ``inputs`` record (:func:`~glmil_auto.dataset.case_inputs.case_input_record`)."""
    paths = case_paths(folder, case)
    if not all(p.is_file() for p in paths.values()):
        return False
    try:
        properties = json.loads(paths["properties"].read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return properties.get("plans_hash") == plans_hash and (inputs is None or properties.get("inputs") == inputs)


def load_properties(folder: Path, case: str) -> dict[str, Any]:
    path = case_paths(folder, case)["properties"]
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(error("preprocessed properties are missing: run glmil_preprocess", case, str(path))) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(error(f"preprocessed properties are corrupt ({exc}): re-run glmil_preprocess", case, str(path))) from exc


def load_array(folder: Path, case: str, which: str) -> np.ndarray:
    """``which`` is ``"global"`` or ``"local"``; a missing or corrupt file names the case and file."""
    path = case_paths(folder, case)[which]
    if not path.is_file():
        raise DatasetError(error(f"preprocessed {which} array is missing: run glmil_preprocess", case, str(path)))
    try:
        return blosc2.open(str(path), mode="r")[:]
    except Exception as exc:  # blosc2 raises several types for damaged files
        raise DatasetError(
            error(f"preprocessed {which} array is corrupt ({type(exc).__name__}): re-run glmil_preprocess", case, str(path))
        ) from exc


def load_case(folder: Path, case: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    return load_array(folder, case, "global"), load_array(folder, case, "local"), load_properties(folder, case)
