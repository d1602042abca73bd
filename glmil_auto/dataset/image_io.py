"""Reading and writing volumes with SimpleITK while keeping their geometry exact.

Arrays are ``(Z, Y, X)`` (SimpleITK's ``GetArrayFromImage`` order); spacing, origin and
direction are kept in ITK's ``(x, y, z)`` physical convention (LPS), exactly as read, so that
later stages can write maps back into the original image space.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from glmil_auto.dataset.nifti_integrity import is_nifti, truncation_reason
from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.utilities.atomic_files import atomic_path


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid sits in the world: shape ``(Z, Y, X)``, spacing/origin ``(x, y, z)`` in mm,
    direction as a row-major 3x3 matrix (9 floats) whose columns are the x, y, z axes."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        return cls(
            shape=tuple(int(s) for s in reversed(image.GetSize())),
            spacing=tuple(float(s) for s in image.GetSpacing()),
            origin=tuple(float(o) for o in image.GetOrigin()),
            direction=tuple(float(d) for d in image.GetDirection()),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Geometry":
        return cls(tuple(d["shape"]), tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]))

    def to_dict(self) -> dict[str, list]:
        """JSON-safe form (Python floats round-trip exactly through ``json``)."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing))

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @property
    def matrix(self) -> np.ndarray:
        """3x3 ``direction @ diag(spacing)``: a continuous (x, y, z) index step -> world offset in mm."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3) * np.asarray(self.spacing, dtype=float)[None, :]

    def index_to_world(self, index_zyx: np.ndarray) -> np.ndarray:
        """World (x, y, z) mm of continuous voxel indices given as ``(..., 3)`` in ``(z, y, x)`` order."""
        index_xyz = np.asarray(index_zyx, dtype=float)[..., ::-1]
        return index_xyz @ self.matrix.T + np.asarray(self.origin)

    def world_to_index(self, world_xyz: np.ndarray) -> np.ndarray:
        """Continuous ``(z, y, x)`` voxel indices of world points ``(..., 3)`` given in ``(x, y, z)`` mm."""
        offset = np.asarray(world_xyz, dtype=float) - np.asarray(self.origin)
        return (offset @ np.linalg.inv(self.matrix).T)[..., ::-1]


def geometry_mismatches(
    reference: Geometry,
    other: Geometry,
    spacing_rtol: float = 1e-4,
    origin_atol_mm: float = 1e-3,
    direction_atol: float = 1e-4,
) -> list[str]:
    """Human-readable differences between two geometries (empty when they agree within tolerance).

    Origins are compared in mm, so the tolerance does not depend on the voxel size; the defaults
    accept float32 rounding in NIfTI headers but not a misplaced volume.
    """
    out = []
    if reference.shape != other.shape:
        out.append(f"shape (z, y, x) {other.shape} != {reference.shape}")
    if not np.allclose(other.spacing, reference.spacing, rtol=spacing_rtol, atol=0):
        out.append(f"spacing {_fmt(other.spacing)} != {_fmt(reference.spacing)}")
    if not np.allclose(other.origin, reference.origin, rtol=0, atol=origin_atol_mm):
        out.append(f"origin {_fmt(other.origin)} != {_fmt(reference.origin)}")
    if not np.allclose(other.direction, reference.direction, rtol=0, atol=direction_atol):
        out.append(f"direction {_fmt(other.direction)} != {_fmt(reference.direction)}")
    return out


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def read_image(path: str | Path, case: str | None = None) -> tuple[np.ndarray, Geometry]:
    """Read one 3D volume as a ``(Z, Y, X)`` array plus its geometry.

    A missing, unreadable or truncated file, or one that is not 3D, raises :class:`DatasetError`
    naming the case and the file. NIfTI files are checked for truncation first, because
    SimpleITK would silently zero-fill them (see :mod:`glmil_auto.dataset.nifti_integrity`).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(error("file is missing", case=case, file=str(path)))
    if is_nifti(path):
        reason = truncation_reason(path)
        if reason is not None:
            raise DatasetError(error(f"unreadable or truncated image file ({reason})", case=case, file=str(path)))
    try:
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DatasetError(
            error(f"unreadable or truncated image file ({reason})", case=case, file=str(path))
        ) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DatasetError(
            error(
                f"expected a 3D single-component volume, got {image.GetDimension()}D with "
                f"{image.GetNumberOfComponentsPerPixel()} component(s)",
                case=case,
                file=str(path),
            )
        )
    return array, Geometry.from_image(image)


def write_image(array: np.ndarray, geometry: Geometry, path: str | Path) -> None:
    """Write a ``(Z, Y, X)`` array with the given geometry (atomically: temporary name, then rename)."""
    array = np.asarray(array)
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = geometry.apply_to(sitk.GetImageFromArray(array))
    with atomic_path(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=True)
