"""IBSI-style morphology of one lesion from its marching-cubes surface mesh, computed here rather
than with mirp's morphology family, which costs about 0.1 s per lesion on a 16^3 crop and 1.1 s on
40^3 (it computes dozens of features we do not use); this takes a few milliseconds.

    shape = mesh_shape(mask, spacing_zyx)

- ``mesh_volume_mm3``: volume enclosed by the mesh (IBSI "volume", divergence theorem over the
  triangles); ``voxel_volume_mm3``: voxel count times voxel volume (IBSI "approximate volume");
- ``surface_area_mm2``: area of the mesh;
- ``sphericity``: pi^(1/3) (6 V)^(2/3) / A with V and A of the same mesh (1 for a sphere, ~0.8 for
  a cube, lower when elongated or lobulated);
- ``max_diameter_mm``: largest distance between two mesh vertices (IBSI "maximum 3D diameter"),
  searched among the vertices of their convex hull only.

The mask is padded by one voxel, so a lesion touching its crop and a 1-voxel lesion have a closed
surface (a 1-voxel lesion gives an octahedron: volume 1/6 voxel, finite sphericity and diameter).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MESH_SHAPE_NAMES = ("mesh_volume_mm3", "voxel_volume_mm3", "surface_area_mm2", "sphericity", "max_diameter_mm")


def mesh_shape(mask: np.ndarray, spacing_zyx: Sequence[float]) -> dict[str, float]:
    """The :data:`MESH_SHAPE_NAMES` of ``mask`` (boolean ``(Z, Y, X)``, one lesion) with voxel size
    ``spacing_zyx`` (mm); an empty mask gives zero volumes and area and NaN sphericity and diameter."""
    mask = np.asarray(mask, dtype=bool)
    spacing = tuple(float(s) for s in spacing_zyx)
    if mask.ndim != 3 or len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(f"mask must be 3D and spacing_zyx three positive numbers, got {mask.shape}, {spacing_zyx!r}")
    voxel_volume = float(mask.sum()) * math.prod(spacing)
    if not mask.any():
        return {"mesh_volume_mm3": 0.0, "voxel_volume_mm3": 0.0, "surface_area_mm2": 0.0,
                "sphericity": math.nan, "max_diameter_mm": math.nan}
    vertices, faces = _surface(mask, spacing)
    area = _area(vertices, faces)
    volume = _enclosed_volume(vertices, faces)
    return {
        "mesh_volume_mm3": volume,
        "voxel_volume_mm3": voxel_volume,
        "surface_area_mm2": area,
        "sphericity": sphericity(volume, area),
        "max_diameter_mm": max_diameter(vertices),
    }


def sphericity(volume: float, area: float) -> float:
    """pi^(1/3) (6 V)^(2/3) / A; NaN without area."""
    return float(math.pi ** (1.0 / 3.0) * (6.0 * volume) ** (2.0 / 3.0) / area) if area > 0 else math.nan


def max_diameter(vertices: np.ndarray) -> float:
    """Largest distance between two of ``vertices`` (N x 3, mm), via their convex hull."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    if len(vertices) < 2:
        return math.nan
    try:
        candidates = vertices[ConvexHull(vertices).vertices]
    except (QhullError, ValueError):  # flat or degenerate point set: compare all vertices
        candidates = vertices
    return float(pdist(candidates).max())


def _surface(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes vertices (mm, relative to the padded crop) and faces of the mask at 0.5, on
    the mask's bounding box padded by one voxel."""
    from skimage.measure import marching_cubes

    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
    padded = np.pad(mask[box].astype(np.float32), 1)
    vertices, faces, _, _ = marching_cubes(padded, level=0.5, spacing=spacing)
    return vertices.astype(np.float64), faces


def _area(vertices: np.ndarray, faces: np.ndarray) -> float:
    triangles = vertices[faces]
    return float(0.5 * np.linalg.norm(np.cross(triangles[:, 1] - triangles[:, 0],
                                               triangles[:, 2] - triangles[:, 0]), axis=1).sum())


def _enclosed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """|sum of signed tetrahedra (origin, triangle)| / 6: the volume of the closed mesh."""
    triangles = vertices[faces]
    signed = np.einsum("ij,ij->i", triangles[:, 0], np.cross(triangles[:, 1], triangles[:, 2])).sum()
    return abs(float(signed)) / 6.0
