"""Intensity normalisation per channel, as the plans say (``preprocessing.normalisation``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def zscore_in_region(channel: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """z-score with the mean and standard deviation inside ``region`` (MRI: the brain region).

    MRI intensities have no physical unit and differ by orders of magnitude between scanners, so
    each case is standardised with its own brain statistics. The statistics and the division are
    computed in float64: float32 sums overflow for intensities above about 1e31 (finite values
    that some exporters write) and would turn the whole channel into NaN.
    """
    values = (channel[region] if region.any() else channel.ravel()).astype(np.float64)
    mean = float(values.mean())
    std = float(values.std())
    std = std if std > 1e-8 else 1.0
    return ((channel.astype(np.float64) - mean) / std).astype(np.float32), {"mean": mean, "std": std}


def ct_normalise(channel: np.ndarray, clip: list[float], mean: float, std: float) -> tuple[np.ndarray, dict[str, float]]:
    """Clip to the dataset's foreground percentiles, then z-score with dataset statistics."""
    std = std if std > 1e-8 else 1.0
    out = (np.clip(channel.astype(np.float64), clip[0], clip[1]) - mean) / std
    return out.astype(np.float32), {"mean": float(mean), "std": float(std)}


def normalise_channels(
    images: np.ndarray, brain: np.ndarray, head: np.ndarray, schemes: dict[str, dict[str, Any]]
) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """Normalise every channel; also record the normalised background (air) level, used to pad."""
    out = np.empty(images.shape, dtype=np.float32)
    stats: dict[str, dict[str, float]] = {}
    outside = ~head
    for c in range(images.shape[0]):
        scheme = schemes[str(c)]
        if scheme["scheme"] == "ct":
            out[c], stats[str(c)] = ct_normalise(images[c], scheme["clip"], scheme["mean"], scheme["std"])
        elif scheme["scheme"] == "zscore_brain":
            out[c], stats[str(c)] = zscore_in_region(images[c], brain)
        else:
            raise ValueError(f"unknown normalisation scheme {scheme['scheme']!r} for channel {c}")
        background = out[c][outside] if outside.any() else out[c].ravel()
        stats[str(c)]["background"] = float(np.median(background))
    return out, stats
