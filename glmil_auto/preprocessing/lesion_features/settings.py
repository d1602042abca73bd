"""The lesion feature set and its settings, as the plans record them (``plans["preprocessing"]
["lesion_features"]``, inside the plans hash: changing a setting recomputes the stored features).

    section = plan_lesion_features(fingerprint)      # the planner
    names = lesion_feature_names(section)            # the stored per-lesion features, in order

The set: the hand-crafted features of :mod:`~glmil_auto.preprocessing.lesion_features.features`
(size and shape, necrosis, enhancement and texture, FLAIR oedema shells, distances to CSF and
ventricles, depth and position) and, per lesion and channel, the IBSI families of
:mod:`~glmil_auto.preprocessing.lesion_features.ibsi` (intensity statistics, GLCM, GLSZM) computed
with mirp at a fixed bin width on the T1c enhancement (``t1c_*``) and, when the dataset has one, on
the FLAIR relative to normal-appearing brain (``flair_*``).

The bin width is planned from the fingerprint: per case, the range of its lesion voxels between
their 0.5th and 99.5th percentile in units of that case's brain standard deviation (what the brain
z-score of preprocessing makes of them; pooled raw intensities would mix scanners' scales), and
the median of these ranges over the cases split into :data:`TARGET_BINS` bins. A fixed bin width (rather than a fixed bin count per
lesion) keeps grey levels comparable between lesions and scanners, as IBSI recommends for MRI
after intensity normalisation.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from glmil_auto.preprocessing.lesion_features.channels import flair_channel, t1c_channel

LESION_FEATURES_VERSION = 1
TARGET_BINS = 32  # bins across the cohort's lesion intensity range (IBSI: 16-128 is usual)
DEFAULT_BIN_WIDTH = 0.25  # z-units, when the fingerprint has no lesion intensities
BIN_WIDTH_RANGE = (0.05, 1.0)


TEXTURE_MIN_DIAMETER_MM = 8.0  # below this, texture is hardly measurable (documentation/accuracy.md)


def _lesion_intensity_range(fingerprint: Mapping[str, Any], channel: int) -> float | None:
    """The median over cases of the lesion voxels' intensity range (percentile 0.5 to 99.5) in
    units of the case's brain standard deviation (fingerprint ``lesion_intensity_brain_sd``)."""
    spreads = []
    for record in fingerprint.get("cases", {}).values():
        entry = (record.get("lesion_intensity_brain_sd") or {}).get(str(channel))
        if entry:
            spreads.append(float(entry["percentile_99_5"]) - float(entry["percentile_00_5"]))
    spreads = [v for v in spreads if np.isfinite(v) and v > 0]
    return float(np.median(spreads)) if spreads else None


def plan_bin_width(fingerprint: Mapping[str, Any], channel: int) -> float:
    """The IBSI fixed bin width (brain z-units) of ``channel``; see the module docstring."""
    spread = _lesion_intensity_range(fingerprint, channel)
    if spread is None:
        return DEFAULT_BIN_WIDTH
    width = spread / TARGET_BINS
    width = float(f"{width:.2g}")  # two significant digits: a readable, stable plan
    return float(min(max(width, BIN_WIDTH_RANGE[0]), BIN_WIDTH_RANGE[1]))


def plan_lesion_features(fingerprint: Mapping[str, Any], ibsi: bool = True) -> dict[str, Any]:
    """The plans section: which channels are T1c and FLAIR, and (``ibsi``) the IBSI settings."""
    channel_names = {int(k): v for k, v in fingerprint["channel_names"].items()}
    t1c, flair = t1c_channel(channel_names), flair_channel(channel_names)
    section: dict[str, Any] = {"version": LESION_FEATURES_VERSION, "t1c_channel": t1c, "flair_channel": flair,
                               "hand_crafted": True, "ibsi": None}
    if ibsi:
        from glmil_auto.preprocessing.lesion_features.ibsi import ibsi_settings  # imports mirp: only when planning

        channels = {"t1c": t1c} if flair is None else {"t1c": t1c, "flair": flair}
        section["ibsi"] = {**ibsi_settings(), "channels": sorted(channels),
                           "bin_width": {name: plan_bin_width(fingerprint, index) for name, index in channels.items()}}
    section["fingerprint_summary"] = fingerprint_summary(fingerprint, {"t1c": t1c, "flair": flair})
    return section


def fingerprint_summary(fingerprint: Mapping[str, Any], channels: Mapping[str, int | None]) -> dict[str, Any]:
    """What the plan of the features rests on, from the fingerprint: per channel the lesions'
    intensity range in brain standard deviations (the bin width's basis), and how many lesions are
    too small for texture to be measurable (those keep NaN-free shape and intensity features, but
    their texture statistics are noise; the starting point's inner cross-validation decides whether
    the IBSI families earn a place)."""
    out: dict[str, Any] = {"lesion_intensity_range_brain_sd": {}}
    for name, index in channels.items():
        if index is None:
            continue
        spread = _lesion_intensity_range(fingerprint, index)
        out["lesion_intensity_range_brain_sd"][name] = None if spread is None else round(spread, 3)
    diameters = [float(l["equivalent_diameter_mm"]) for r in fingerprint.get("cases", {}).values()
                 for l in r.get("lesions", []) if "equivalent_diameter_mm" in l]
    out["n_lesions"] = len(diameters)
    out["fraction_under_texture_diameter"] = (round(float(np.mean(np.asarray(diameters) < TEXTURE_MIN_DIAMETER_MM)), 3)
                                              if diameters else None)
    out["texture_diameter_mm"] = TEXTURE_MIN_DIAMETER_MM
    return out


def ibsi_feature_columns(ibsi: Mapping[str, Any]) -> list[str]:
    """The IBSI feature names of a plans' ``ibsi`` block, channel by channel."""
    from glmil_auto.preprocessing.lesion_features.ibsi import ibsi_feature_names

    return [name for channel in ibsi["channels"] for name in ibsi_feature_names(channel)]


def ibsi_families(enhancement: np.ndarray, flair: np.ndarray | None, mask: np.ndarray,
                  spacing_zyx: Sequence[float], ibsi: Mapping[str, Any]) -> dict[str, float]:
    """The IBSI features of one lesion (tight crops of the T1c enhancement, the FLAIR relative to
    normal brain or None, and the lesion's mask); a channel the case lacks gives NaN."""
    from glmil_auto.preprocessing.lesion_features.ibsi import ibsi_feature_names, ibsi_lesion_features

    values = {"t1c": enhancement, "flair": flair}
    out: dict[str, float] = {}
    for channel in ibsi["channels"]:
        if values.get(channel) is None:
            out.update({name: math.nan for name in ibsi_feature_names(channel)})
        else:
            out.update(ibsi_lesion_features(values[channel], mask, spacing_zyx, float(ibsi["bin_width"][channel]),
                                            channel))
    return out


def lesion_feature_names(section: Mapping[str, Any] | None) -> list[str]:
    """The stored per-lesion features of a plans section, in order (hand-crafted, then IBSI)."""
    from glmil_auto.preprocessing.lesion_features.lesion_frame import LESION_FEATURES

    if not section:
        return []
    names = list(LESION_FEATURES) if section.get("hand_crafted", True) else []
    if section.get("ibsi"):
        names += ibsi_feature_columns(section["ibsi"])
    return names
