"""A point inside each lesion, for the lesion table (``lesionsTr.csv``).

The lesion table locates a lesion by one point in world coordinates (documentation/
raw_dataset_format.md); the reader finds the lesion component holding that point. The point must
therefore lie *inside* the lesion: the centroid of a ring, a crescent or a cavity lies in its hole.
:func:`point_inside` takes the lesion voxel nearest (in mm) to the centroid, which is the
centroid's own voxel whenever that one belongs to the lesion, and the point written is that
voxel's centre (a centroid near a voxel boundary could round into a neighbour outside the lesion).

:func:`structure_lesions` gives one such point per lesion component a structure contributes to:
a structure with two islands is two lesions (two rows with the same outcome), and two structures
kept touching share one component (see :mod:`contour_lesion_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from glmil_auto.dataset_conversion.contour_lesion_mask import LesionMask

CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class StructureLesion:
    """One lesion component (or the part of it) a structure keeps, located by a voxel inside it."""

    structure: str
    component: int  # label of the 26-connected component of the lesion mask (1..n)
    voxels: int  # voxels of the structure in that component
    index_zyx: tuple[int, int, int]
    point_mm: tuple[float, float, float]  # the voxel's centre, (x, y, z) LPS world mm


def point_inside(mask: np.ndarray, spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[int, int, int]:
    """The ``(z, y, x)`` index of the voxel of ``mask`` nearest to the mask's centroid.

    Distances are in mm (``spacing_zyx``), so anisotropic voxels pick the physically nearest
    voxel. When the centroid's own voxel (rounded index) is in the mask it is returned. Raises
    ``ValueError`` for an empty mask.
    """
    voxels = np.argwhere(np.asarray(mask, dtype=bool))
    if len(voxels) == 0:
        raise ValueError("an empty mask has no point inside")
    centroid = voxels.mean(axis=0)
    own = tuple(int(v) for v in np.floor(centroid + 0.5))
    if all(0 <= i < n for i, n in zip(own, mask.shape)) and mask[own]:
        return own
    distances = np.sum(((voxels - centroid) * np.asarray(spacing_zyx, dtype=float)) ** 2, axis=1)
    return tuple(int(v) for v in voxels[int(np.argmin(distances))])


def structure_lesions(combined: LesionMask, reference: sitk.Image) -> dict[str, list[StructureLesion]]:
    """Per structure (``combined.names``), the lesion components it keeps voxels in, each with a
    point inside the structure's own voxels of that component (world coordinates of ``reference``,
    the grid of ``combined.mask``). A structure without kept voxels gets an empty list."""
    components, _ = ndimage.label(combined.mask > 0, structure=CONNECTIVITY_26)
    spacing_zyx = tuple(float(s) for s in reversed(reference.GetSpacing()))
    boxes = ndimage.find_objects(combined.owner, max_label=len(combined.names))  # one box per structure
    out: dict[str, list[StructureLesion]] = {}
    for number, (name, box) in enumerate(zip(combined.names, boxes), start=1):
        lesions: list[StructureLesion] = []
        out[name] = lesions
        if box is None:  # the structure keeps no voxel
            continue
        kept, labels, start = combined.owner[box] == number, components[box], np.array([s.start for s in box])
        for component in np.unique(labels[kept]).tolist():
            part = kept & (labels == component)
            index = tuple(int(i) for i in np.add(point_inside(part, spacing_zyx), start))
            world = reference.TransformIndexToPhysicalPoint(tuple(reversed(index)))
            lesions.append(StructureLesion(name, int(component), int(part.sum()), index,
                                           tuple(float(w) for w in world)))
    return out
