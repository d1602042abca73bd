"""nnU-Net v2's fingerprint definitions, reimplemented so the numbers match nnU-Net's own.

nnU-Net v2 (``DatasetFingerprintExtractor``, ``crop_to_nonzero``) defines, per training case read
with SimpleITK as float32 ``(C, Z, Y, X)``:

- spacing: the SimpleITK spacing reversed to ``(z, y, x)`` (absolute values);
- crop to nonzero: the voxels that are nonzero in any channel, with enclosed holes filled
  (6-connected), and the bounding box of that mask; an all-zero case keeps its whole array.
  Inside the box, background label voxels outside the mask become -1;
- foreground: label ``> 0`` inside the box (every label, not only lesion labels);
- sampling: ``10e7 // n_cases`` foreground intensities per case and channel, drawn with
  replacement by a fresh ``np.random.RandomState(1234)`` per case, channel after channel (a case
  without foreground draws nothing); the dataset statistics are taken over the pooled samples;
- ``median_relative_size_after_cropping``: median over cases of cropped / original voxel count.

Instead of materialising the pooled ~10^8 samples per channel (hundreds of MB) this module keeps,
per case and channel, the distinct sampled voxels and how often each was drawn. The draw itself
is the same call on the same generator, so the multiset of samples is identical; the statistics
are computed from the weighted values. Percentiles use numpy's default (linear) definition on the
virtually expanded sorted sample and agree with nnU-Net to float32 rounding; mean and std are
accumulated in float64 (nnU-Net sums float32), so they differ by float32 summation error only
(measured: documentation/fingerprint.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glmil_auto.imaging.head_mask import bounding_box, fill_holes

TOTAL_FOREGROUND_SAMPLES = 10e7  # nnU-Net's budget over the whole dataset, per channel
SAMPLING_SEED = 1234
PERCENTILES = {"percentile_00_5": 0.5, "median": 50.0, "percentile_99_5": 99.5}


@dataclass
class WeightedSample:
    """A sample with replacement stored as distinct drawn values and their draw counts."""

    values: np.ndarray  # the drawn voxels' intensities (dtype of the image, float32)
    counts: np.ndarray  # int64, how many times each was drawn

    @classmethod
    def empty(cls) -> "WeightedSample":
        return cls(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))

    @property
    def size(self) -> int:
        return int(self.counts.sum())


def samples_per_case(n_cases: int, total: float = TOTAL_FOREGROUND_SAMPLES) -> int:
    """Foreground intensities drawn per case and channel (nnU-Net: ``int(10e7 // n_cases)``)."""
    return int(total // max(1, n_cases))


def nonzero_mask(images: np.ndarray) -> np.ndarray:
    """Voxels nonzero in any channel of ``(C, Z, Y, X)``, with enclosed holes filled."""
    mask = np.any(images != 0, axis=0)
    return fill_holes(mask)


def crop_to_nonzero(
    images: np.ndarray, label: np.ndarray | None = None, outside_label: int = -1
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Crop ``(C, Z, Y, X)`` images and a ``(Z, Y, X)`` label map to the nonzero bounding box.

    Returns the cropped images (a view), the cropped label (a copy; background voxels outside the
    nonzero mask set to ``outside_label``; without a label, 0 inside the mask and ``outside_label``
    outside) and the box as per-axis ``(start, stop)``.
    """
    mask = nonzero_mask(images)
    box = bounding_box(mask)
    slicer = tuple(slice(start, stop) for start, stop in box)
    inside = mask[slicer]
    if label is None:
        cropped_label = np.where(inside, 0, outside_label).astype(np.int8)
    else:
        cropped_label = np.array(label[slicer], dtype=np.result_type(label.dtype, np.int8))
        cropped_label[(cropped_label == 0) & ~inside] = outside_label
    return images[(slice(None),) + slicer], cropped_label, box


def sample_foreground(
    images: np.ndarray, label: np.ndarray, num_samples: int, seed: int = SAMPLING_SEED
) -> list[WeightedSample]:
    """Per channel, ``num_samples`` intensities of the voxels with ``label > 0``, drawn with replacement.

    One generator per case, used channel after channel, as nnU-Net does; drawing indices with
    ``choice(n, ...)`` consumes the generator exactly as ``choice(values, ...)`` would.
    """
    foreground = label > 0
    n_foreground = int(foreground.sum())
    generator = np.random.RandomState(seed)
    samples = []
    for channel in images:
        if n_foreground == 0:
            samples.append(WeightedSample.empty())
            continue
        values = channel[foreground]
        drawn = generator.choice(n_foreground, num_samples, replace=True)
        counts = np.bincount(drawn, minlength=n_foreground)
        kept = counts > 0
        samples.append(WeightedSample(values[kept], counts[kept].astype(np.int64)))
    return samples


def pool_samples(samples: list[WeightedSample]) -> WeightedSample:
    """Concatenate samples (the pooled sample over cases)."""
    if not samples:
        return WeightedSample.empty()
    return WeightedSample(np.concatenate([s.values for s in samples]), np.concatenate([s.counts for s in samples]))


def weighted_percentiles(sample: WeightedSample, percentiles: list[float]) -> list[float]:
    """numpy's default (``linear``) percentiles of the sample expanded by its counts.

    The order statistic at virtual index ``(n - 1) * q`` is interpolated between its two
    neighbours in the sorted expanded sample, which is found from the cumulative counts.
    """
    order = np.argsort(sample.values, kind="stable")
    values, cumulative = sample.values[order], np.cumsum(sample.counts[order])
    n = int(cumulative[-1])
    out = []
    for q in percentiles:
        virtual = (n - 1) * (float(q) / 100.0)
        below = int(np.floor(virtual))
        gamma = virtual - below
        low = values[np.searchsorted(cumulative, below, side="right")]
        high = values[np.searchsorted(cumulative, min(below + 1, n - 1), side="right")]
        difference = float(high - low)  # in the image dtype, as numpy does
        value = float(high) - difference * (1.0 - gamma) if gamma >= 0.5 else float(low) + difference * gamma
        out.append(value)
    return out


def intensity_properties(sample: WeightedSample) -> dict[str, float | None]:
    """nnU-Net's per-channel set (mean, median, std, min, max, percentile_99_5, percentile_00_5).

    ``None`` everywhere when the sample is empty (no foreground in the whole dataset).
    """
    keys = ("mean", "median", "std", "min", "max", "percentile_99_5", "percentile_00_5")
    if sample.size == 0:
        return {key: None for key in keys}
    values = sample.values.astype(np.float64)
    weights = sample.counts.astype(np.float64)
    mean = float(np.sum(values * weights) / weights.sum())
    std = float(np.sqrt(np.sum(weights * (values - mean) ** 2) / weights.sum()))
    p005, median, p995 = weighted_percentiles(sample, [PERCENTILES[k] for k in PERCENTILES])
    stats = {
        "mean": mean,
        "median": median,
        "std": std,
        "min": float(values.min()),
        "max": float(values.max()),
        "percentile_99_5": p995,
        "percentile_00_5": p005,
    }
    return {key: stats[key] for key in keys}


@dataclass
class NnunetCaseProperties:
    """What nnU-Net's fingerprint keeps of one case."""

    spacing: list[float]  # (z, y, x)
    shape_after_crop: list[int]
    relative_size_after_crop: float
    crop_bbox: list[tuple[int, int]]
    foreground_samples: list[WeightedSample]


def nnunet_case_properties(
    images: np.ndarray, label: np.ndarray, spacing_xyz: tuple[float, float, float], num_samples: int
) -> NnunetCaseProperties:
    """nnU-Net's per-case analysis of raw (not reoriented) float32 images and their label map."""
    images = np.asarray(images, dtype=np.float32)
    cropped, cropped_label, box = crop_to_nonzero(images, label)
    shape_after = [int(s) for s in cropped.shape[1:]]
    return NnunetCaseProperties(
        spacing=[abs(float(s)) for s in reversed(spacing_xyz)],
        shape_after_crop=shape_after,
        relative_size_after_crop=float(np.prod(shape_after) / np.prod(images.shape[1:])),
        crop_bbox=box,
        foreground_samples=sample_foreground(cropped, cropped_label, num_samples),
    )
