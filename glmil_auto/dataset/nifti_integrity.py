"""Integrity checks for NIfTI files that SimpleITK cannot be trusted with.

SimpleITK (ITK's NIfTI reader) silently fills a truncated ``.nii.gz`` with zeros and replaces
NaN and infinite voxels with 0 when it reads, so a corrupt scan would reach training unnoticed.
nibabel reads the stored bytes exactly and raises on a truncated stream, so it is used here as an
independent reader (a well-kept library instead of a hand-written NIfTI parser).

Two levels:
- :func:`truncation_reason` is cheap (header + file size or the gzip trailer) and runs on every
  read in :func:`glmil_auto.dataset.image_io.read_image`;
- :func:`count_nonfinite_voxels` decodes the whole file and is used by the verifier.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import nibabel as nib
import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _expected_stream_size(header) -> int:
    n_voxels = int(np.prod(header.get_data_shape(), dtype=np.int64))
    return int(header.get_data_offset()) + n_voxels * header.get_data_dtype().itemsize


def truncation_reason(path: str | Path) -> str | None:
    """Why a NIfTI file is incomplete, or ``None`` when its size is what the header promises.

    For ``.nii.gz`` the gzip trailer's ISIZE (uncompressed size mod 2**32) is compared with the
    header; when they disagree (a truncated stream, or a multi-member gzip) the whole stream is
    decoded to decide.
    """
    path = Path(path)
    try:
        header = nib.load(str(path)).header
        expected = _expected_stream_size(header)
    except Exception as exc:  # nibabel raises many types for a broken header
        return f"header cannot be read ({type(exc).__name__}: {exc})"
    if not str(path).lower().endswith(".gz"):
        actual = os.path.getsize(path)
        return None if actual >= expected else f"file holds {actual} bytes, header needs {expected}"
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", f.read(4))[0]
    if isize == expected % 2**32:
        return None
    try:
        np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:
        return f"compressed data is truncated or corrupt ({type(exc).__name__}: {exc})"
    return None


def count_nonfinite_voxels(path: str | Path) -> int:
    """Number of NaN or infinite voxels as stored in the file (decodes it completely).

    Raises the underlying error when the data cannot be decoded (truncated or corrupt).
    """
    data = np.asanyarray(nib.load(str(path)).dataobj)
    if data.dtype.kind not in "fc":
        return 0
    return int(data.size - np.count_nonzero(np.isfinite(data)))
