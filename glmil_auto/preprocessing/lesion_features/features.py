"""Per-lesion radiomics: one row per lesion of a case, measured in the canonical orientation and with
the brain z-score of preprocessing (see :func:`lesion_features`)."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import ndimage

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.dataset.lesion_instances import find_lesion_instances
from glmil_auto.preprocessing.lesion_features.channels import flair_channel, t1c_channel
from glmil_auto.preprocessing.lesion_features.enhancement import enhancement_features
from glmil_auto.preprocessing.lesion_features.lesion_frame import (
    CASE_COLUMN, CSF_DISTANCE_CAP_MM, LABEL_COLUMN, VENTRICLE_DISTANCE_CAP_MM, empty_lesion_frame, lesion_frame_columns,
)
from glmil_auto.preprocessing.lesion_features.settings import ibsi_families
from glmil_auto.preprocessing.lesion_features.shape import covariance_shape, mesh_sphericity
from glmil_auto.preprocessing.lesion_features.surroundings import (
    AIR_MARGIN_Z, SHELLS_MM, _dark, _distance_to, _edt, _oedema, _padded_box,
)
from glmil_auto.imaging.case_regions import CaseRegions, case_regions
from glmil_auto.imaging.head_mask import bounding_box
from glmil_auto.imaging.orientation import to_canonical
from glmil_auto.preprocessing.normalisation import normalise_channels

BRAIN_MARGIN_MM = 10.0  # the planner's default ``brain_margin_mm``
NORMAL_BRAIN_MARGIN_MM = 10.0  # normal-appearing brain = brain region this far from every lesion
DEEP_CSF_DEPTH_FRACTION = 0.5  # CSF deeper than this fraction of the deepest head voxel: ventricles
OEDEMA_PERCENTILE = 97.5  # FLAIR above this percentile of normal-appearing brain is hyperintense
# posterior fossa: centroid in the lower part of the head (canonical z) and behind its middle (y)
POSTERIOR_FOSSA_MAX_RELATIVE_Z = 0.36
POSTERIOR_FOSSA_MIN_RELATIVE_Y = 0.5


def lesion_features(
    images: np.ndarray,
    lesion_mask: np.ndarray,
    geometry: Geometry,
    case_id: str,
    channel_names: Mapping[int | str, str] | None = None,
    brain_margin_mm: float = BRAIN_MARGIN_MM,
) -> pd.DataFrame:
    """One row per lesion (26-connected component of ``lesion_mask``) with the columns
    ``case_id, lesion_label, centroid_{x,y,z}_mm`` and :data:`LESION_FEATURES`.

    ``images`` is ``(C, Z, Y, X)`` as read from the raw dataset, ``lesion_mask`` ``(Z, Y, X)``.
    ``lesion_label`` numbers the components as ``scipy.ndimage.label`` does on the mask in its
    stored orientation (as the synthetic truth file does); centroids are LPS world mm.
    ``channel_names`` (dataset.json's) says which channel is T1c and which FLAIR; without it,
    channel 0 is T1c and channel 1, when present, FLAIR (the synthetic cohort's order).

    Features ("enhancement" = T1c in brain z-units minus the normal-appearing-brain median; the
    "ratio" scale = T1c / normal brain with air as 0):
    - size and shape: ``volume_mm3``, ``log_volume``, ``equivalent_diameter_mm`` (sphere of the
      same volume), ``max_extent_mm`` (longest bounding-box side), ``major_axis_mm``,
      ``elongation``, ``flatness``, ``ellipsoid_fill`` (:func:`covariance_shape`), ``sphericity``
      (:func:`mesh_sphericity`);
    - necrosis: ``necrotic_fraction`` (interior voxels enhancing less than half the lesion's 90th
      percentile), ``dark_fraction`` (interior voxels darker than normal brain),
      ``core_rim_difference`` (inner half minus outer half, negative for ring enhancement);
    - enhancement and texture: ``enhancement_mean/std/cv/p10/p90``, ``relative_intensity_mean``
      and ``relative_cv`` (mean and coefficient of variation on the ratio scale, where texture
      is multiplicative), ``interior_std``, ``histogram_entropy`` (fixed 0.25-wide bins),
      ``gradient_mean`` (mean gradient magnitude per mm inside), ``neighbour_contrast`` (mean
      squared difference of neighbouring voxels, GLCM contrast at offset 1);
    - FLAIR (NaN without a FLAIR channel): ``flair_mean`` inside; in shells 0-5 and 5-10 mm
      around the lesion (voxels nearer to this lesion than to any other, in the head, not CSF):
      ``oedema_flair_*`` (mean FLAIR relative to normal brain), ``oedema_volume_*_mm3`` and
      ``oedema_fraction_0_5`` (FLAIR above the 97.5th percentile of normal brain);
    - position: ``csf_distance_mm`` (nearest CSF voxel, CSF = brain voxels dark on T1c and FLAIR,
      capped at 30 mm), ``csf_adjacent`` (a CSF voxel one voxel step away),
      ``ventricle_distance_mm`` (nearest deep CSF, capped at 60 mm), ``depth_mm`` (centroid below
      the head surface), ``relative_z`` (0 = bottom, 1 = top of the head's bounding box),
      ``relative_y`` (0 = front, 1 = back), ``laterality`` (0 = midline, 1 = side),
      ``mm_below_vertex``, ``posterior_fossa`` (1 when low and posterior: relative_z < 0.36 and
      relative_y > 0.5, a heuristic for heads without the neck in the field of view).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != np.shape(lesion_mask):
        raise ValueError(f"case {case_id}: images {images.shape} and lesion mask {np.shape(lesion_mask)} do not match")
    if channel_names is None:
        t1c, flair = 0, (1 if images.shape[0] > 1 else None)
    else:
        t1c, flair = t1c_channel(channel_names), flair_channel(channel_names)

    labelled_original, instances = find_lesion_instances(lesion_mask, geometry)
    if not instances:
        return empty_lesion_frame()

    # canonical arrays, as preprocessing
    images_c, canonical = to_canonical(images, geometry)
    labelled, _ = to_canonical(labelled_original, geometry)
    spacing = np.asarray(canonical.spacing_zyx, dtype=float)
    regions = case_regions(images_c, spacing, brain_margin_mm)  # skull-stripped cases as preprocessing does
    schemes = {str(c): {"scheme": "zscore_brain"} for c in range(images_c.shape[0])}
    normalised, norm_stats = normalise_channels(images_c, regions.brain, regions.head, schemes)
    return canonical_lesion_features(normalised, norm_stats, labelled, canonical, regions, t1c, flair, case_id)


def canonical_lesion_features(
    normalised: np.ndarray,
    norm_stats: Mapping[str, Mapping[str, float]],
    labelled: np.ndarray,
    canonical: Geometry,
    regions: CaseRegions,
    t1c: int,
    flair: int | None,
    case_id: str,
    ibsi: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """The features of :func:`lesion_features` from arrays already in the canonical orientation:
    ``normalised`` channels (C, Z, Y, X) with their ``norm_stats`` (background levels), the
    ``labelled`` lesion components (1..n; row ``lesion_label`` = component label), the case's
    ``regions`` (head, depth, brain) and which channels are T1c and FLAIR. Preprocessing calls this
    with its own arrays, so the stored features and the network's inputs come from one
    normalisation. ``ibsi``: the plans' IBSI settings (``settings.ibsi_settings``); with them each
    lesion also gets the IBSI families of :mod:`~glmil_auto.preprocessing.lesion_features.ibsi` on
    the enhancement (``t1c_*``) and the FLAIR relative to normal brain (``flair_*``)."""
    labelled = np.ascontiguousarray(labelled)
    if not labelled.any():
        return empty_lesion_frame(ibsi)
    spacing = np.asarray(canonical.spacing_zyx, dtype=float)
    voxel_volume = float(np.prod(spacing))
    head, depth, brain = regions.head, regions.depth, regions.brain
    t1 = normalised[t1c]
    fl = normalised[flair] if flair is not None else None
    lesion = labelled > 0
    boxes = ndimage.find_objects(labelled)

    # ------------------------------------------------ each lesion's neighbourhood
    # per lesion, its box padded by twice the 10 mm reach: the distance to the nearest lesion voxel
    # (of any lesion) and which lesion that is, for the oedema shells and to exclude peritumoral
    # brain from the normal-appearing brain. Twice, so that for every voxel within 10 mm of this
    # lesion any nearer lesion voxel is inside the box too.
    reach = max(NORMAL_BRAIN_MARGIN_MM, SHELLS_MM[-1][1])
    pad = [int(math.ceil(2.0 * reach / s)) + 1 for s in spacing]
    neighbourhoods = []
    normal = brain.copy()
    for box in boxes:
        region = _padded_box([(b.start, b.stop) for b in box], pad, labelled.shape)
        distance, nearest = _edt(~lesion[region], spacing, return_indices=True)
        owner = labelled[region][tuple(nearest)]
        normal[region] &= distance > NORMAL_BRAIN_MARGIN_MM  # lesion voxels have distance 0
        neighbourhoods.append((region, distance, owner))
    if normal.sum() < 100:  # a brain full of lesions (or a tiny image): fall back to the whole brain
        normal = brain & ~lesion
    t1_normal = t1[normal]
    t1_reference = float(np.median(t1_normal))
    enhancement = t1 - t1_reference
    # intensity relative to normal brain with the air level as zero: the raw T1c ratio, free of
    # the scanner's offset and scale, in which the texture is a multiplicative modulation
    background = norm_stats[str(t1c)]["background"]
    ratio = (t1 - background) / (t1_reference - background) if t1_reference - background > AIR_MARGIN_Z else None
    if fl is not None:
        fl_normal = fl[normal]
        fl_reference = float(np.median(fl_normal))
        fl_rel = fl - fl_reference
        hyper_threshold = float(np.percentile(fl_normal, OEDEMA_PERCENTILE)) - fl_reference
    else:
        fl_reference, fl_rel, hyper_threshold = float("nan"), None, float("nan")

    # ------------------------------------------------ CSF (dark on T1c and FLAIR) and ventricles
    dark = _dark(t1, t1_reference, background, brain)
    if fl is not None:
        dark &= _dark(fl, fl_reference, norm_stats[str(flair)]["background"], brain)
    csf = brain & dark & ~lesion
    deep_csf = csf & (depth > DEEP_CSF_DEPTH_FRACTION * float(depth.max()))
    csf_distance = _distance_to(csf, labelled, boxes, spacing, CSF_DISTANCE_CAP_MM)
    ventricle_distance = _distance_to(deep_csf, labelled, boxes, spacing, VENTRICLE_DISTANCE_CAP_MM)

    # ------------------------------------------------ head frame for positions
    head_box = bounding_box(head)
    (z0, z1), (y0, y1), (x0, x1) = head_box

    rows = []
    for label in range(1, len(boxes) + 1):
        box = _padded_box([(s.start, s.stop) for s in boxes[label - 1]], (1, 1, 1), labelled.shape)
        mask = labelled[box] == label
        voxels = np.argwhere(mask)
        count = len(voxels)
        volume = count * voxel_volume
        centroid = voxels.mean(axis=0) + [s.start for s in box]
        centroid_world = canonical.index_to_world(centroid)
        major, elongation, flatness, fill = covariance_shape(voxels, spacing)
        extent = (voxels.max(axis=0) - voxels.min(axis=0) + 1) * spacing

        row = {
            CASE_COLUMN: case_id,
            LABEL_COLUMN: label,
            "centroid_x_mm": float(centroid_world[0]),
            "centroid_y_mm": float(centroid_world[1]),
            "centroid_z_mm": float(centroid_world[2]),
            "volume_mm3": volume,
            "log_volume": math.log(volume),
            "equivalent_diameter_mm": (6.0 * volume / math.pi) ** (1.0 / 3.0),
            "max_extent_mm": float(extent.max()),
            "major_axis_mm": major,
            "elongation": elongation,
            "flatness": flatness,
            "ellipsoid_fill": fill,
            "sphericity": mesh_sphericity(mask, spacing),
            "csf_distance_mm": float(csf_distance[label - 1]),
            "csf_adjacent": float(csf_distance[label - 1] <= 1.001 * float(spacing.max())),
            "ventricle_distance_mm": float(ventricle_distance[label - 1]),
            "depth_mm": float(depth[tuple(int(round(c)) for c in centroid)]),
            "relative_z": float((centroid[0] - z0) / max(z1 - 1 - z0, 1)),
            "relative_y": float((centroid[1] - y0) / max(y1 - 1 - y0, 1)),
            "laterality": float(abs(2.0 * (centroid[2] - x0) / max(x1 - 1 - x0, 1) - 1.0)),
            "mm_below_vertex": float((z1 - 1 - centroid[0]) * spacing[0]),
        }
        row.update(enhancement_features(enhancement[box], ratio[box] if ratio is not None else None, mask, spacing))
        row["posterior_fossa"] = float(
            row["relative_z"] < POSTERIOR_FOSSA_MAX_RELATIVE_Z and row["relative_y"] > POSTERIOR_FOSSA_MIN_RELATIVE_Y
        )
        row.update(_oedema(label, fl_rel, hyper_threshold, box, mask, *neighbourhoods[label - 1], head, csf,
                           voxel_volume))
        if ibsi is not None:
            row.update(ibsi_families(enhancement[box], fl_rel[box] if fl_rel is not None else None, mask, spacing, ibsi))
        rows.append(row)
    return pd.DataFrame(rows, columns=lesion_frame_columns(ibsi))
