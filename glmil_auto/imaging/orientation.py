"""Reorient arrays to the canonical (nearest-LPS) axis order without interpolation.

Scanners store the same head with different axis orders and flips (axial RAS, sagittal, ...).
Before anything is learnt, every case is permuted and flipped so that array axis X runs towards
the patient's left, Y towards posterior and Z towards superior (ITK's LPS world), as nearly as
the acquisition allows. Oblique acquisitions stay oblique (only axis swaps and flips are applied),
so the operation is exact and invertible; the returned :class:`Geometry` keeps every voxel's
world position.
"""

from __future__ import annotations

import numpy as np

from glmil_auto.dataset.image_io import Geometry


def nearest_world_axes(direction: tuple[float, ...]) -> tuple[list[int], list[int]]:
    """For each image axis (x, y, z): the world axis it is closest to, and the sign (+1/-1).

    Assignment is greedy on the largest absolute cosines, so it is always a permutation even for
    a 45-degree oblique acquisition.
    """
    cosines = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))  # [world, image]
    world_of_image = [-1, -1, -1]
    used_world: set[int] = set()
    for flat in np.argsort(-cosines, axis=None, kind="stable"):
        world, image = divmod(int(flat), 3)
        if world_of_image[image] == -1 and world not in used_world:
            world_of_image[image] = world
            used_world.add(world)
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    signs = [1 if matrix[world_of_image[k], k] >= 0 else -1 for k in range(3)]
    return world_of_image, signs


def to_canonical(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """Permute and flip the last three axes (Z, Y, X) of ``array`` to the canonical order.

    Works for any leading dimensions (channels, instances). Returns a view when possible.
    """
    world_of_image, signs = nearest_world_axes(geometry.direction)
    image_of_world = [world_of_image.index(w) for w in range(3)]  # new image axis j <- old axis k
    lead = array.ndim - 3
    # array axis of image axis k is lead + (2 - k); new array order is (z_new, y_new, x_new)
    order = list(range(lead)) + [lead + 2 - image_of_world[j] for j in (2, 1, 0)]
    out = np.transpose(array, order)
    flips = tuple(lead + (2 - j) for j in range(3) if signs[image_of_world[j]] < 0)
    if flips:
        out = np.flip(out, axis=flips)

    matrix = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    size_xyz = list(reversed(geometry.shape))
    corner_xyz = [0 if signs[k] > 0 else size_xyz[k] - 1 for k in range(3)]
    origin = geometry.index_to_world(np.asarray(corner_xyz[::-1], dtype=float))
    direction = np.stack([matrix[:, k] * signs[k] for k in image_of_world], axis=1)
    canonical = Geometry(
        shape=tuple(int(s) for s in out.shape[-3:]),
        spacing=tuple(float(geometry.spacing[k]) for k in image_of_world),
        origin=tuple(float(o) for o in origin),
        direction=tuple(float(d) for d in direction.ravel()),
    )
    return out, canonical
