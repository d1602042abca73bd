"""IBSI-compliant radiomic features of one lesion, computed with the maintained ``mirp`` library.

Why mirp: its intensity-statistics, GLCM and GLSZM code follows the Image Biomarker
Standardisation Initiative (IBSI 1) definitions and is tested by its authors against the IBSI
reference values, so the numbers mean what the radiomics literature means by them. Three families are computed, on
one channel's values (already relative to normal-appearing brain, see the caller) inside the
lesion mask, in 3D (never slice by slice):

- intensity statistics (IBSI "statistics"): mean, coefficient of variation, skewness and the 10th,
  50th and 90th percentiles;
- GLCM at Chebyshev distance 1, the 13 symmetric 3D directional matrices merged into one before the
  features are computed (mirp's ``3d_volume_merge``, IBSI "3D:mrg": one well-populated matrix even
  for a small lesion, rather than 13 sparse ones averaged as "3D:avg" does): contrast, joint
  entropy, inverse difference moment (homogeneity), correlation and energy (angular second moment);
- GLSZM in 3D (26-connected zones): small and large zone emphasis, normalised zone size and grey
  level non-uniformity, zone percentage.

Discretisation is IBSI's fixed bin size at ``bin_width`` with bins on the absolute grid
``[k w, (k + 1) w)`` (origin 0; mirp is given the grid-aligned lower bound ``w floor(min / w)`` of
each lesion). The selected texture features depend only on grey-level differences and zone counts,
so they equal those of a single cohort-wide lower bound; per lesion the grey-level indices stay small.

mirp's public ``extract_features`` builds a whole workflow per call (file-like import objects,
deep copies, every feature of each family) and configures the root logger to print INFO lines to
stdout on every call. Here mirp's own image, mask and feature classes are called directly on the
lesion's tight crop (the bounding box plus one voxel): the same code and the same values (checked
against ``extract_features`` in ``tests/test_ibsi_features.py``), 15-25 % less time (36-44 ms
instead of 43-59 ms per lesion, nearly all of it mirp's pandas GLCM) and no logging side effect.
Those classes are mirp internals, hence the exact ``mirp==2.5.*`` pin.
mirp's mesh-based morphology family is not used (about 0.1 s per lesion on a 16^3 crop): shape
comes from :mod:`glmil_auto.preprocessing.lesion_features.mesh_shape`.

Undefined values are NaN, never an exception: every texture feature of a lesion with fewer than
:data:`MIN_TEXTURE_VOXELS` voxels, the GLCM correlation of a single grey level (mirp returns 1),
the skewness of constant values (mirp returns 0, or rounding noise) and any non-finite value (a
coefficient of variation with mean 0). Values are plain Python floats.
"""

from __future__ import annotations

import functools
import math
import warnings
from importlib import metadata
from typing import Any, Sequence

import numpy as np

LIBRARY = "mirp"
MIN_TEXTURE_VOXELS = 2  # fewer voxels have no voxel pair: no texture
CROP_MARGIN = 1  # voxels of background kept around the lesion's bounding box
GLCM_DISTANCE = 1
GLCM_SPATIAL_METHOD = "3d_volume_merge"
GLSZM_SPATIAL_METHOD = "3d"
PERCENTILES = (10.0, 50.0, 90.0)

# our stable name -> mirp's feature abbreviation (the IBSI feature it computes)
STATISTICS = {
    "stat_mean": "stat_mean",
    "stat_cov": "stat_cov",
    "stat_skewness": "stat_skew",
    **{f"stat_p{int(p)}": f"stat_p{int(p)}" for p in PERCENTILES},
}
GLCM = {
    "glcm_contrast": "cm_contrast",
    "glcm_joint_entropy": "cm_joint_entr",
    "glcm_inverse_difference_moment": "cm_inv_diff_mom",
    "glcm_correlation": "cm_corr",
    "glcm_energy": "cm_energy",
}
GLSZM = {
    "glszm_small_zone_emphasis": "szm_sze",
    "glszm_large_zone_emphasis": "szm_lze",
    "glszm_zone_size_nonuniformity_norm": "szm_zsnu_norm",
    "glszm_zone_percentage": "szm_z_perc",
    "glszm_grey_level_nonuniformity_norm": "szm_glnu_norm",
}
FEATURES = {**STATISTICS, **GLCM, **GLSZM}
TEXTURE = (*GLCM, *GLSZM)
# the mirp feature generator selects percentiles with "stat_p" and the settings' percentile list
_MIRP_REQUEST = [n for n in FEATURES.values() if not n.startswith("stat_p")] + ["stat_p"]


def ibsi_feature_names(prefix: str) -> list[str]:
    """The feature names :func:`ibsi_lesion_features` returns for ``prefix``, in a fixed order."""
    return [f"{prefix}_{name}" for name in FEATURES]


def mirp_version() -> str:
    """The installed mirp version (the plans record it: other versions may give other values)."""
    return metadata.version(LIBRARY)


def ibsi_settings() -> dict[str, Any]:
    """The JSON-safe settings the plans record (the caller adds its bin widths and channels)."""
    return {
        "library": LIBRARY,
        "version": mirp_version(),
        "families": ["statistics", "glcm", "glszm"],
        "features": list(FEATURES),
        "discretisation": "fixed_bin_size",
        "bin_origin": 0.0,
        "percentiles": list(PERCENTILES),
        "glcm_distance": GLCM_DISTANCE,
        "glcm_merge": GLCM_SPATIAL_METHOD,
        "glszm_spatial_method": GLSZM_SPATIAL_METHOD,
        "crop_margin_voxels": CROP_MARGIN,
        "min_texture_voxels": MIN_TEXTURE_VOXELS,
    }



def ibsi_lesion_features(values: np.ndarray, mask: np.ndarray, spacing_zyx: Sequence[float], bin_width: float,
                         prefix: str) -> dict[str, float]:
    """The IBSI statistics, GLCM and GLSZM features of one lesion, named ``f"{prefix}_{name}"``
    (:func:`ibsi_feature_names`).

    ``values``: one channel, ``(Z, Y, X)``, relative to normal-appearing brain; ``mask``: the
    lesion (boolean, same shape; a crop around the lesion or the whole image); ``spacing_zyx``:
    voxel size in mm (recorded on mirp's image; the three families do not depend on it);
    ``bin_width``: the fixed bin size in the units of ``values``. Raises ValueError on mismatched
    shapes, a non-positive bin width or non-finite values inside the mask.
    """
    values, mask = _checked(values, mask, spacing_zyx, bin_width)
    names = ibsi_feature_names(prefix)
    n_voxels = int(mask.sum())
    if n_voxels == 0:
        return {name: math.nan for name in names}
    crop = _tight_crop(mask)
    computed = _mirp_features(values[crop], mask[crop], tuple(float(s) for s in spacing_zyx), float(bin_width))
    computed = _undefined_to_nan(computed, values[mask], n_voxels, float(bin_width))
    return {f"{prefix}_{name}": computed[name] for name in FEATURES}


def _checked(values: np.ndarray, mask: np.ndarray, spacing_zyx: Sequence[float],
             bin_width: float) -> tuple[np.ndarray, np.ndarray]:
    values, mask = np.asarray(values, dtype=np.float64), np.asarray(mask, dtype=bool)
    if values.ndim != 3 or values.shape != mask.shape:
        raise ValueError(f"values {values.shape} and mask {mask.shape} must be the same 3D shape")
    if len(spacing_zyx) != 3 or not all(float(s) > 0 for s in spacing_zyx):
        raise ValueError(f"spacing_zyx must be three positive numbers, got {spacing_zyx!r}")
    if not (math.isfinite(bin_width) and bin_width > 0):
        raise ValueError(f"bin_width must be positive, got {bin_width!r}")
    if not np.isfinite(values[mask]).all():
        raise ValueError("values inside the lesion mask must be finite")
    return values, mask


def _tight_crop(mask: np.ndarray) -> tuple[slice, ...]:
    """The lesion's bounding box plus :data:`CROP_MARGIN` voxels, clipped to the array."""
    crop = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        start, stop = int(present[0]) - CROP_MARGIN, int(present[-1]) + 1 + CROP_MARGIN
        crop.append(slice(max(start, 0), min(stop, mask.shape[axis])))
    return tuple(crop)


def _bin_floor(lesion_values: np.ndarray, bin_width: float) -> float:
    """The largest multiple of ``bin_width`` not above the lesion's lowest value."""
    low = float(lesion_values.min())
    floor = bin_width * math.floor(low / bin_width)
    return floor - bin_width if floor > low else floor  # guard against rounding up


@functools.lru_cache(maxsize=16)
def _settings(bin_width: float) -> Any:
    """mirp's feature-extraction settings for one bin width, built once per process."""
    from mirp.settings.generic import SettingsClass

    return SettingsClass(
        by_slice=False,
        base_feature_families=["statistics", "glcm", "glszm"],
        base_discretisation_method="fixed_bin_size",
        base_discretisation_bin_width=bin_width,
        stat_percentile=list(PERCENTILES),
        glcm_distance=float(GLCM_DISTANCE),
        glcm_spatial_method=GLCM_SPATIAL_METHOD,
        glszm_spatial_method=GLSZM_SPATIAL_METHOD,
    ).feature_extr


def _mirp_features(values: np.ndarray, mask: np.ndarray, spacing_zyx: tuple[float, float, float],
                   bin_width: float) -> dict[str, float]:
    """Our feature names -> mirp's values on one tight crop (mirp's own classes, as its workflow
    uses them after import and resegmentation to ``[bin floor, inf)``)."""
    from mirp._features.feature_generator import generate_features
    from mirp._images.mr_image import MRImage
    from mirp._masks.base_mask import BaseMask

    geometry = {"image_origin": (0.0, 0.0, 0.0), "image_orientation": np.identity(3),
                "image_spacing": spacing_zyx, "image_dimensions": values.shape}
    with warnings.catch_warnings():
        # mirp warns that MR intensities are "not calibrated" and when a lesion falls into one bin
        warnings.filterwarnings("ignore", module=r"mirp(\.|$)")
        image = MRImage(image_data=values, image_modality="mr", **geometry)
        roi = BaseMask(roi_name="lesion", image_data=mask, **geometry)
        image.update_separate_slices(False)
        roi.update_separate_slices(False)
        roi.resegmentise_mask(image=image, resegmentation_method=["range"],
                              intensity_range=(_bin_floor(values[mask], bin_width), math.nan))
        features = list(generate_features(settings=_settings(bin_width), features=_MIRP_REQUEST))
        by_abbreviation = {}
        previous = None
        for feature in features:
            feature.compute(image=image, mask=roi)
            if previous is not None:
                previous.clear_local_cache(other=feature)
            previous = feature
            by_abbreviation[feature.abbr_name] = feature.value
        for feature in features:
            feature.clear_cache()
    return {name: _as_float(by_abbreviation.get(abbreviation)) for name, abbreviation in FEATURES.items()}


def _as_float(value: Any) -> float:
    """A plain float; None, inf and NaN become NaN."""
    if value is None:
        return math.nan
    value = float(value)
    return value if math.isfinite(value) else math.nan


def _undefined_to_nan(computed: dict[str, float], lesion_values: np.ndarray, n_voxels: int,
                      bin_width: float) -> dict[str, float]:
    """NaN where a feature is undefined (see the module docstring) instead of mirp's conventions."""
    out = dict(computed)
    if n_voxels < MIN_TEXTURE_VOXELS:
        out.update({name: math.nan for name in TEXTURE})
    if float(lesion_values.max()) == float(lesion_values.min()):  # exactly constant (mirp's std may be 1e-17)
        out["stat_cov"] = 0.0 if out["stat_mean"] != 0.0 else math.nan
        out["stat_skewness"] = math.nan
    if np.unique(np.floor((lesion_values - _bin_floor(lesion_values, bin_width)) / bin_width)).size < 2:
        out["glcm_correlation"] = math.nan
    return out
