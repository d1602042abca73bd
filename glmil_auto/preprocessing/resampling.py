"""Resample a volume onto any target grid through world coordinates.

One function serves the global volume (coarse grid around the head) and every lesion patch
(fine grid centred on the lesion, at several fields of view): the target voxel -> world ->
source voxel map is affine, so ``scipy.ndimage.affine_transform`` samples it directly, for any
direction cosines (oblique scans included) and with no whole-volume high-resolution copy. Only
the part of the source under the target grid is touched, and it is low-pass filtered first when
the target is coarser (anti-aliasing, sigma = (step - 1) / 2 source voxels as in scikit-image).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from glmil_auto.dataset.image_io import Geometry

_REVERSE = np.eye(3)[::-1]  # (x, y, z) <-> (z, y, x)


def index_map(source: Geometry, target: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` with source_index_zyx = A @ target_index_zyx + b."""
    inverse = np.linalg.inv(source.matrix)
    a_xyz = inverse @ target.matrix
    b_xyz = inverse @ (np.asarray(target.origin) - np.asarray(source.origin))
    return _REVERSE @ a_xyz @ _REVERSE, _REVERSE @ b_xyz


def resample_to_grid(
    volume: np.ndarray,
    source: Geometry,
    target: Geometry,
    order: int = 1,
    cval: float = 0.0,
    antialias: bool = True,
) -> np.ndarray:
    """Sample a ``(Z, Y, X)`` volume living on ``source`` at the voxels of ``target`` (float32).

    Voxels of ``target`` outside the source get ``cval`` (patches at the border are padded).
    """
    a, b = index_map(source, target)
    steps = np.abs(a).max(axis=1)  # source voxels per target voxel, per source axis
    sigma = np.maximum(0.0, (steps - 1.0) / 2.0) if antialias else np.zeros(3)
    shape = np.asarray(target.shape)
    corners = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)], float)
    footprint = corners @ a.T + b
    margin = np.ceil(3 * sigma).astype(int) + order + 1
    start = np.maximum(np.floor(footprint.min(axis=0)).astype(int) - margin, 0)
    stop = np.minimum(np.ceil(footprint.max(axis=0)).astype(int) + margin + 1, volume.shape)
    if np.any(stop <= start):
        return np.full(target.shape, cval, dtype=np.float32)
    region = np.asarray(volume[tuple(slice(s, e) for s, e in zip(start, stop))], dtype=np.float32)
    if sigma.any():
        region = ndimage.gaussian_filter(region, sigma, mode="nearest")
    return ndimage.affine_transform(
        region, a, offset=b - start, output_shape=tuple(target.shape), order=order, mode="constant", cval=cval,
        prefilter=order > 1,
    ).astype(np.float32, copy=False)


def grid_centred_on(
    centre_world: np.ndarray, spacing_zyx: list[float], shape_zyx: list[int], direction: tuple[float, ...]
) -> Geometry:
    """A grid of the given spacing, shape and direction whose central point is ``centre_world``."""
    spacing_xyz = tuple(float(s) for s in reversed(spacing_zyx))
    matrix = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing_xyz)[None, :]
    half_xyz = (np.asarray(list(reversed(shape_zyx)), dtype=float) - 1.0) / 2.0
    origin = np.asarray(centre_world, dtype=float) - matrix @ half_xyz
    return Geometry(tuple(int(s) for s in shape_zyx), spacing_xyz, tuple(float(o) for o in origin), tuple(direction))
