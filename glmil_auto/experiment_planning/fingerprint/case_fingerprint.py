"""The fingerprint of one training case: nnU-Net's numbers plus glmil_auto's per-case record.

nnU-Net's numbers are taken on the arrays as stored (that is what nnU-Net sees). Everything
else is taken after :func:`to_canonical` (the orientation every later stage works in), so the
head box, the extents and the lesion instances are along canonical Z, Y, X.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from glmil_auto.dataset import DatasetError, Geometry, RawDataset, geometry_mismatches
from glmil_auto.dataset.lesion_instances import find_lesion_instances
from glmil_auto.dataset.problems import error
from glmil_auto.experiment_planning.fingerprint.nnunet_compatible import (
    SAMPLING_SEED,
    NnunetCaseProperties,
    nnunet_case_properties,
)
from glmil_auto.imaging.case_regions import case_regions
from glmil_auto.imaging.head_mask import bounding_box
from glmil_auto.imaging.orientation import to_canonical

BRAIN_SAMPLES_PER_CASE = 10_000  # per channel, pooled over cases for the dataset summary
BRAIN_MARGIN_MM = 10.0


@dataclass
class CaseFingerprint:
    """Everything the dataset fingerprint needs from one case (picklable, returned by workers)."""

    case: str
    nnunet: NnunetCaseProperties
    record: dict[str, Any]  # the JSON entry under "cases" (group filled in by the extractor)
    brain_samples: list[np.ndarray]  # per channel, BRAIN_SAMPLES_PER_CASE intensities (or none)


def brain_intensity_statistics(values: np.ndarray) -> dict[str, float | None]:
    """mean, std, median, percentile_00_5, percentile_99_5 of intensities (``None`` when empty)."""
    keys = ("mean", "std", "median", "percentile_00_5", "percentile_99_5")
    if values.size == 0:
        return {key: None for key in keys}
    values = values.astype(np.float64)
    p005, median, p995 = np.percentile(values, [0.5, 50.0, 99.5])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "median": float(median),
        "percentile_00_5": float(p005),
        "percentile_99_5": float(p995),
    }


def lesion_intensity_in_brain_sd(image: np.ndarray, lesion_mask: np.ndarray, brain: dict[str, Any]
                                 ) -> dict[str, float] | None:
    """Percentiles 0.5 / 50 / 99.5 of a channel's lesion voxels after the brain z-score
    ``(value - brain mean) / brain std``; None without lesion voxels or a brain spread."""
    std, mean = brain.get("std"), brain.get("mean")
    values = image[lesion_mask]
    if values.size == 0 or not std or not np.isfinite(std) or mean is None:
        return None
    z = (values.astype(np.float64) - float(mean)) / float(std)
    p005, p50, p995 = np.percentile(z, [0.5, 50.0, 99.5])
    return {"percentile_00_5": float(p005), "median": float(p50), "percentile_99_5": float(p995)}


def fingerprint_case(
    case: str,
    images: np.ndarray,
    label: np.ndarray,
    geometry: Geometry,
    lesion_labels: tuple[int, ...],
    num_foreground_samples: int,
) -> CaseFingerprint:
    """Fingerprint one case from its raw ``(C, Z, Y, X)`` images, integer label map and geometry."""
    nnunet = nnunet_case_properties(images, label, geometry.spacing, num_foreground_samples)

    canonical_images, canonical = to_canonical(images, geometry)
    canonical_lesions, _ = to_canonical(np.isin(label, lesion_labels), geometry)
    spacing_zyx = np.asarray(canonical.spacing_zyx, dtype=float)
    voxel_volume = float(np.prod(spacing_zyx))

    # a skull-stripped case's head and brain region are its nonzero region (imaging/case_regions.py)
    regions = case_regions(canonical_images, canonical.spacing_zyx, BRAIN_MARGIN_MM, detect_stripping=True)
    head, brain = regions.head, regions.brain
    box = bounding_box(head)
    box_shape = [int(stop - start) for start, stop in box]

    brain_statistics, brain_samples = {}, []
    for channel, image in enumerate(canonical_images):
        values = image[brain]
        brain_statistics[str(channel)] = brain_intensity_statistics(values)
        generator = np.random.RandomState(SAMPLING_SEED + channel)
        brain_samples.append(
            generator.choice(values, BRAIN_SAMPLES_PER_CASE, replace=True) if values.size else values[:0]
        )

    _, lesions = find_lesion_instances(canonical_lesions, canonical)
    lesion_intensity = {str(c): lesion_intensity_in_brain_sd(image, canonical_lesions, brain_statistics[str(c)])
                        for c, image in enumerate(canonical_images)}
    record = {
        "spacing_canonical": [float(s) for s in spacing_zyx],
        "shape_canonical": [int(s) for s in canonical.shape],
        "head_bbox": [[int(start), int(stop)] for start, stop in box],
        "head_bbox_shape": box_shape,
        "head_extent_mm": [float(n * s) for n, s in zip(box_shape, spacing_zyx)],
        "head_volume_mm3": float(head.sum()) * voxel_volume,
        "brain_region_volume_mm3": float(brain.sum()) * voxel_volume,
        "brain_region_intensity": brain_statistics,
        # the lesion voxels in units of the case's brain standard deviation (what preprocessing's
        # brain z-score makes of them): the basis of the planned IBSI bin width
        "lesion_intensity_brain_sd": lesion_intensity,
        "skull_stripped": bool(regions.skull_stripped),
        "skull_stripping": regions.check.to_dict(),
        "lesions": [lesion.to_dict() for lesion in lesions],
        "n_lesions": len(lesions),
        "lesion_volume_mm3_total": float(sum(lesion.volume_mm3 for lesion in lesions)),
        "group": None,
    }
    return CaseFingerprint(case=case, nnunet=nnunet, record=record, brain_samples=brain_samples)


def read_and_fingerprint_case(dataset_folder: str, case: str, num_foreground_samples: int) -> CaseFingerprint:
    """Read a training case with the strict reader and fingerprint it.

    Unreadable files and disagreeing geometries raise :class:`DatasetError` naming the case and
    the file. The full label map is read (nnU-Net's foreground is every label > 0); the lesion
    mask is the union of ``lesion_labels``.
    """
    dataset = RawDataset(dataset_folder)
    images, geometry = dataset.read_images(case, "Tr")
    label, label_geometry = dataset.read_label(case, "Tr")
    differences = geometry_mismatches(geometry, label_geometry)
    if differences:
        raise DatasetError(
            error("label geometry differs from the images: " + "; ".join(differences),
                  case=case, file=str(dataset.label_file(case, "Tr")))
        )
    return fingerprint_case(case, images, label, geometry, dataset.spec.lesion_labels, num_foreground_samples)
