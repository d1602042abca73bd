"""The lesion frame's schema: one row per lesion, its columns and the neutral value of each
feature (what a case without lesions gets in its patient aggregates)."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

CASE_COLUMN = "case_id"
LABEL_COLUMN = "lesion_label"

CSF_DISTANCE_CAP_MM = 30.0  # distances to CSF are measured up to this (farther = this)
VENTRICLE_DISTANCE_CAP_MM = 60.0

# lesion feature columns and the value a case without lesions gets in their patient aggregate
LESION_FEATURES: dict[str, float] = {
    "volume_mm3": 0.0,
    "log_volume": 0.0,
    "equivalent_diameter_mm": 0.0,
    "max_extent_mm": 0.0,
    "major_axis_mm": 0.0,
    "elongation": 1.0,
    "flatness": 1.0,
    "ellipsoid_fill": 1.0,
    "sphericity": 1.0,
    "necrotic_fraction": 0.0,
    "dark_fraction": 0.0,
    "core_rim_difference": 0.0,
    "enhancement_mean": 0.0,
    "enhancement_std": 0.0,
    "enhancement_cv": 0.0,
    "enhancement_p10": 0.0,
    "enhancement_p90": 0.0,
    "relative_intensity_mean": 0.0,
    "relative_cv": 0.0,
    "interior_std": 0.0,
    "histogram_entropy": 0.0,
    "gradient_mean": 0.0,
    "neighbour_contrast": 0.0,
    "flair_mean": 0.0,
    "oedema_flair_0_5": 0.0,
    "oedema_flair_5_10": 0.0,
    "oedema_volume_0_5_mm3": 0.0,
    "oedema_volume_5_10_mm3": 0.0,
    "oedema_fraction_0_5": 0.0,
    "csf_distance_mm": CSF_DISTANCE_CAP_MM,
    "csf_adjacent": 0.0,
    "ventricle_distance_mm": VENTRICLE_DISTANCE_CAP_MM,
    "depth_mm": 0.0,
    "relative_z": 1.0,
    "relative_y": 0.0,
    "laterality": 0.0,
    "mm_below_vertex": 0.0,
    "posterior_fossa": 0.0,
}
POSITION_COLUMNS = ("centroid_x_mm", "centroid_y_mm", "centroid_z_mm")
LESION_FRAME_COLUMNS = [CASE_COLUMN, LABEL_COLUMN, *POSITION_COLUMNS, *LESION_FEATURES]


def lesion_frame_columns(ibsi: Mapping[str, Any] | None = None) -> list[str]:
    """The frame's columns: :data:`LESION_FRAME_COLUMNS`, then the IBSI features of ``ibsi`` (the
    plans' settings, ``settings.ibsi_settings``) when given."""
    if ibsi is None:
        return list(LESION_FRAME_COLUMNS)
    from glmil_auto.preprocessing.lesion_features.settings import ibsi_feature_columns

    return [*LESION_FRAME_COLUMNS, *ibsi_feature_columns(ibsi)]


def empty_lesion_frame(ibsi: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """A lesion frame without rows (the columns and dtypes of :func:`lesion_features`)."""
    return pd.DataFrame({c: pd.Series(dtype=object if c == CASE_COLUMN else float) for c in lesion_frame_columns(ibsi)})
