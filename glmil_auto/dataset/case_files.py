"""Reading one case's files strictly: channels that must share one geometry, and a label map.

Shared by :class:`~glmil_auto.dataset.raw_dataset.RawDataset` (a raw dataset's layout) and the
prediction input reader (any pair of folders), so both reject the same things with the same
messages: a problem raises :class:`DatasetError` naming the case and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from glmil_auto.dataset.image_io import Geometry, geometry_mismatches, read_image
from glmil_auto.dataset.problems import DatasetError, error


def check_same_geometry(reference: Geometry, other: Geometry, case: str, path: Path,
                        reference_name: str = "the case's first channel") -> None:
    differences = geometry_mismatches(reference, other)
    if differences:
        raise DatasetError(error(f"geometry differs from {reference_name}: " + "; ".join(differences),
                                 case=case, file=str(path)))


def read_channel_files(paths: Sequence[Path], case: str) -> tuple[np.ndarray, Geometry]:
    """All channels as one float32 ``(C, Z, Y, X)`` array and the first channel's geometry."""
    arrays, reference = [], None
    for path in paths:
        array, geometry = read_image(path, case)
        if reference is None:
            reference = geometry
        else:
            check_same_geometry(reference, geometry, case, path)
        arrays.append(array.astype(np.float32, copy=False))
    return np.stack(arrays), reference


def read_label_map(path: Path, case: str) -> tuple[np.ndarray, Geometry]:
    """The integer label map ``(Z, Y, X)`` (int32) and its geometry."""
    array, geometry = read_image(path, case)
    if not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.round(array)):
        raise DatasetError(error("label map holds non-integer values", case=case, file=str(path)))
    return array.astype(np.int32, copy=False), geometry
