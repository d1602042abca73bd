"""Lesion instances: each 26-connected component of the lesion mask is one metastasis.

The raw contract defines an instance this way (documentation/raw_dataset_format.md); the
fingerprint, the preprocessing and the predictor all call :func:`find_lesion_instances` so the
definition cannot drift.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from glmil_auto.dataset.image_io import Geometry

CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionInstance:
    """One connected component. Indices and extents follow the array axes (Z, Y, X)."""

    label: int  # component label in the labelled array (1..n)
    n_voxels: int
    volume_mm3: float
    equivalent_diameter_mm: float  # diameter of the sphere of the same volume
    centroid_index_zyx: tuple[float, float, float]
    centroid_world_mm: tuple[float, float, float]  # (x, y, z), ITK/LPS world
    bbox: tuple[tuple[int, int], ...]  # per axis (start, stop)
    extent_mm: tuple[float, float, float]  # bounding-box size along Z, Y, X in mm

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bbox"] = [list(b) for b in self.bbox]
        for key in ("centroid_index_zyx", "centroid_world_mm", "extent_mm"):
            d[key] = list(d[key])
        return d


def find_lesion_instances(mask: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, list[LesionInstance]]:
    """Label the 26-connected components of a boolean mask and describe each one.

    Returns the int32 labelled array and the instances in label order.
    """
    labelled, n = ndimage.label(np.asarray(mask, dtype=bool), structure=CONNECTIVITY_26)
    labelled = labelled.astype(np.int32, copy=False)
    if n == 0:
        return labelled, []
    voxel_volume = float(np.prod(geometry.spacing))
    spacing_zyx = np.asarray(geometry.spacing_zyx, dtype=float)
    boxes = ndimage.find_objects(labelled)
    counts, centroids = np.zeros(n, dtype=np.int64), np.zeros((n, 3))
    for i, box in enumerate(boxes):  # each lesion is read inside its own box only
        voxels = np.argwhere(labelled[box] == i + 1)
        counts[i] = len(voxels)
        centroids[i] = voxels.mean(axis=0) + [s.start for s in box]
    world = geometry.index_to_world(centroids)
    instances = []
    for i, box in enumerate(boxes):
        bbox = tuple((int(s.start), int(s.stop)) for s in box)
        volume = float(counts[i]) * voxel_volume
        instances.append(
            LesionInstance(
                label=i + 1,
                n_voxels=int(counts[i]),
                volume_mm3=volume,
                equivalent_diameter_mm=float((6.0 * volume / math.pi) ** (1.0 / 3.0)),
                centroid_index_zyx=tuple(float(c) for c in centroids[i]),
                centroid_world_mm=tuple(float(w) for w in world[i]),
                bbox=bbox,
                extent_mm=tuple(float((b[1] - b[0]) * s) for b, s in zip(bbox, spacing_zyx)),
            )
        )
    return labelled, instances
