"""Rasterise the closed planar contours of one structure onto the voxel grid of an image series.

Each contour point (patient LPS mm) becomes a continuous voxel index through the grid's own
geometry, ``index = (direction @ diag(spacing))^-1 (point - origin)``, so oblique series and
anisotropic voxels need no special case. A contour must lie in one slice plane of the grid (its
points' slice index within :data:`PLANE_TOLERANCE` of one integer); it is then filled in that
slice with :func:`skimage.draw.polygon`, which marks the voxels whose centres lie inside.

Several contours on one slice are combined with the even-odd rule (exclusive or): a contour
inside another is a hole (how RTSTRUCT encodes rings, as TPSs export them), two disjoint contours
are two islands. Contours outside the grid's slices are counted and left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from skimage.draw import polygon

PLANE_TOLERANCE = 0.3  # in slices: how far a contour point may sit from its slice's plane


class ContourOffGrid(ValueError):
    """A contour does not lie in a slice plane of the grid (another orientation or slice position)."""


@dataclass
class Rasterised:
    """A structure's voxels on a grid (``(Z, Y, X)`` bool) and how many contours fell outside it."""

    mask: np.ndarray
    contours_outside: int


def world_to_continuous_index(points: np.ndarray, grid: sitk.Image) -> np.ndarray:
    """Continuous ``(x, y, z)`` voxel indices of ``(N, 3)`` patient points on ``grid``."""
    direction = np.asarray(grid.GetDirection(), dtype=float).reshape(3, 3)
    matrix = direction * np.asarray(grid.GetSpacing(), dtype=float)[None, :]
    return (np.asarray(points, dtype=float) - np.asarray(grid.GetOrigin())) @ np.linalg.inv(matrix).T


def rasterise_contours(contours: list[np.ndarray], grid: sitk.Image) -> Rasterised:
    """Fill ``contours`` on ``grid`` (even-odd rule per slice); raises :class:`ContourOffGrid`
    naming the first contour that is not in a slice plane of the grid."""
    size_x, size_y, size_z = grid.GetSize()
    mask = np.zeros((size_z, size_y, size_x), dtype=bool)
    outside = 0
    for number, contour in enumerate(contours):
        index = world_to_continuous_index(contour, grid)
        slice_position = float(np.mean(index[:, 2]))
        k = int(round(slice_position))
        deviation = float(np.max(np.abs(index[:, 2] - k)))
        if deviation > PLANE_TOLERANCE:
            raise ContourOffGrid(
                f"contour {number} is not in a slice plane of the grid (its points lie {deviation:.2f} slices "
                f"from slice {k}): the contours were drawn on another series or orientation")
        if not 0 <= k < size_z:
            outside += 1
            continue
        rows, columns = polygon(index[:, 1], index[:, 0], shape=(size_y, size_x))
        layer = np.zeros((size_y, size_x), dtype=bool)
        layer[rows, columns] = True
        mask[k] ^= layer
    return Rasterised(mask, outside)


def resample_structure_mask(mask: np.ndarray, source_grid: sitk.Image, reference: sitk.Image,
                            transform: sitk.Transform | None = None) -> np.ndarray:
    """A structure's mask moved from ``source_grid`` to ``reference``'s grid.

    Linear interpolation of the 0/1 mask, then a 0.5 threshold: the boundary follows the partial
    volume of the source voxels, which nearest neighbour would turn into stair steps between grids
    of different spacing (a 1 mm grid read from 3 mm slices).
    """
    image = sitk.GetImageFromArray(mask.astype(np.float32))
    image.CopyInformation(source_grid)
    moved = sitk.Resample(image, reference, transform or sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(moved) >= 0.5
