"""Patient-level features: the lesion rows aggregated per case, and the named feature sets the peer
chooses from."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from glmil_auto.preprocessing.lesion_features.lesion_frame import CASE_COLUMN, LESION_FEATURES

MIN_AGGREGATED = ("csf_distance_mm", "ventricle_distance_mm", "depth_mm", "relative_z")
SUM_AGGREGATED = ("posterior_fossa", "csf_adjacent", "oedema_volume_0_5_mm3", "oedema_volume_5_10_mm3")
VOLUME_WEIGHTED = (
    "necrotic_fraction", "dark_fraction", "core_rim_difference", "enhancement_mean", "enhancement_std",
    "enhancement_cv", "relative_intensity_mean", "relative_cv", "neighbour_contrast", "oedema_flair_0_5",
)


def patient_feature_names(lesion_features: Sequence[str] = ()) -> list[str]:
    """The columns :func:`patient_features` gives for the stored lesion features ``lesion_features``
    (the plans' list; hand-crafted ones are always aggregated, the others by max and mean)."""
    extra = [f for f in lesion_features if f not in LESION_FEATURES]
    return list(patient_features(pd.DataFrame({CASE_COLUMN: pd.Series(dtype=object)}), ["none"], extra).columns)


def patient_features(lesion_frame: pd.DataFrame, case_ids: Sequence[str], extra_features: Sequence[str] = ()
                     ) -> pd.DataFrame:
    """One row per case of ``case_ids`` (the index, in that order) from the lesion rows.

    Columns: ``n_lesions``, ``log_n_lesions`` (log(1 + n)), ``has_lesions``, ``total_volume_mm3``,
    ``log_total_volume`` (log(1 + mm3)); ``max_<f>`` and ``mean_<f>`` of every lesion feature;
    ``min_<f>`` of the distances, the depth and the relative height (nearest to CSF and ventricles,
    most superficial, lowest);
    ``sum_<f>`` of the posterior-fossa and CSF-adjacency flags and oedema volumes (counts);
    ``vw_<f>`` volume-weighted means of necrosis, enhancement and texture features (what the
    large lesions look like). A case without lesions (or whose lesions all lack a feature, such
    as FLAIR oedema without a FLAIR channel) gets the neutral value of :data:`LESION_FEATURES`
    (0, or the distance cap), so the frame has no NaN. ``extra_features``: further lesion columns
    (the IBSI families) aggregated by ``max_`` and ``mean_`` with 0 as their neutral value.
    """
    case_ids = [str(c) for c in case_ids]
    extra = [f for f in extra_features if f not in LESION_FEATURES]
    features = list(LESION_FEATURES) + extra
    lesion_frame = lesion_frame.reindex(columns=list(dict.fromkeys([*lesion_frame.columns, CASE_COLUMN, *features])))
    frame = lesion_frame[lesion_frame[CASE_COLUMN].astype(str).isin(set(case_ids))]
    by_case = frame.groupby(frame[CASE_COLUMN].astype(str))
    grouped = by_case[features]
    volume = frame["volume_mm3"].to_numpy(float)
    parts = {
        "n_lesions": by_case.size().astype(float),
        "total_volume_mm3": by_case["volume_mm3"].sum(),
    }
    maxima, means = grouped.max(), grouped.mean()  # NaN-skipping
    for f in features:
        parts[f"max_{f}"] = maxima[f]
        parts[f"mean_{f}"] = means[f]
    minima = by_case[list(MIN_AGGREGATED)].min()
    for f in MIN_AGGREGATED:
        parts[f"min_{f}"] = minima[f]
    sums = by_case[list(SUM_AGGREGATED)].sum()
    for f in SUM_AGGREGATED:
        parts[f"sum_{f}"] = sums[f]
    for f in VOLUME_WEIGHTED:
        values = frame[f].to_numpy(float)
        known = ~np.isnan(values)
        weighted = pd.DataFrame({"wv": np.where(known, values * volume, 0.0), "w": np.where(known, volume, 0.0),
                                 CASE_COLUMN: frame[CASE_COLUMN].astype(str).to_numpy()}).groupby(CASE_COLUMN).sum()
        parts[f"vw_{f}"] = weighted["wv"] / weighted["w"].where(weighted["w"] > 0)
    out = pd.DataFrame(parts).reindex(case_ids)
    out.index.name = CASE_COLUMN
    fill = {"n_lesions": 0.0, "total_volume_mm3": 0.0}
    for f, neutral in {**LESION_FEATURES, **{name: 0.0 for name in extra}}.items():
        fill[f"max_{f}"] = fill[f"mean_{f}"] = fill[f"min_{f}"] = fill[f"vw_{f}"] = neutral
        fill[f"sum_{f}"] = 0.0
    out = out.fillna({c: fill[c] for c in out.columns})
    burden = pd.DataFrame({"n_lesions": out["n_lesions"], "log_n_lesions": np.log1p(out["n_lesions"]),
                           "has_lesions": (out["n_lesions"] > 0).astype(float), "total_volume_mm3": out["total_volume_mm3"],
                           "log_total_volume": np.log1p(out["total_volume_mm3"])}, index=out.index)
    return pd.concat([burden, out.drop(columns=["n_lesions", "total_volume_mm3"])], axis=1)


# the lesion burden that the clinical linear model also sees (DESIGN.md: the network must beat it)
BURDEN_FEATURES = ("n_lesions", "log_n_lesions", "total_volume_mm3", "log_total_volume")
# a compact patient-level set: burden, the largest lesion, the worst necrosis and heterogeneity,
# oedema, and the nearest approach to CSF / ventricles / posterior fossa
COMPACT_PATIENT_FEATURES = BURDEN_FEATURES + (
    "max_log_volume", "max_equivalent_diameter_mm", "max_necrotic_fraction", "max_dark_fraction",
    "vw_necrotic_fraction", "vw_core_rim_difference", "max_relative_cv", "vw_relative_cv", "max_enhancement_cv",
    "max_neighbour_contrast", "max_enhancement_std", "sum_oedema_volume_0_5_mm3", "max_oedema_fraction_0_5",
    "min_csf_distance_mm", "sum_csf_adjacent", "min_ventricle_distance_mm", "sum_posterior_fossa",
    "max_posterior_fossa", "min_relative_z",
)
FEATURE_SETS = ("burden", "compact", "full")


def feature_set_columns(patients: pd.DataFrame, name: str) -> list[str]:
    """Patient-feature columns of a named set: ``burden`` (count and volume, as the clinical
    model), ``compact`` (:data:`COMPACT_PATIENT_FEATURES`) or ``full`` (every column)."""
    if name == "burden":
        return list(BURDEN_FEATURES)
    if name == "compact":
        return list(COMPACT_PATIENT_FEATURES)
    if name == "full":
        return list(patients.columns)
    raise ValueError(f"unknown feature set {name!r}; use one of {FEATURE_SETS}")
