"""Small enhancing foci outside the lesion mask: a blob response at the native resolution, its
candidate foci, and its max-pooled reduction to a coarser grid.

Distant failure follows new metastases elsewhere in the brain, and its strongest image sign is
small enhancing foci that nobody contoured. A 1-3 mm focus is averaged into noise when the T1c is
interpolated to a 3-4 mm global grid; this module finds it where it is still visible and carries
it through the downsampling by **max** pooling, not interpolation.

- :func:`blob_response`: per radius r of the plans, the negative Laplacian of Gaussian at
  ``sigma = r / sqrt(3)`` (where a sphere of radius r responds most), computed per axis in
  physical units, with each axis' sigma at least ``MIN_SIGMA_VOXELS`` voxels so that a thick
  slice is smoothed by its own width. Each radius' response is expressed **in noise units of the
  case itself**: minus its median, divided by 1.4826 x its MAD over the search region. A
  threshold in these units transfers between scanners, noise levels and resolutions, which a
  threshold in intensity units does not. The maximum over radii is the response.
- :func:`search_region`: brain, outside the lesion mask dilated by the plans' margin (a lesion's
  enhancing rim is the strongest blob-like edge in the image), and deeper than the plans' surface
  margin below the brain's surface (dura, cortical vessels and the skull's marrow enhance too).
- :func:`find_foci`: local maxima (26-neighbourhood) of the response in the search region, above
  a floor; each with its world position, radius and **blobness**, the ratio of the smallest to
  the largest magnitude of the Hessian eigenvalues at its radius (1 for a sphere, near 0 for a
  vessel, a tube). The same maxima of the negated response are *decoys*: for noise, bright and
  dark blobs are equally likely, so their counts estimate how many bright candidates above a
  threshold are noise (:func:`decoy_threshold`).
- :func:`max_pool_to_grid`: the response reduced to a target grid by taking, for every target
  voxel, the maximum over the source voxels whose centres fall in it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.preprocessing.resampling import index_map

MIN_SIGMA_VOXELS = 0.7  # below this a sampled Gaussian derivative is dominated by the grid itself
MAD_TO_SD = 1.4826
STATISTICS_STRIDE = 2  # every second voxel per axis is plenty for the median and MAD
MAX_BALL_VOXELS = 6  # margins up to this many voxels per axis by morphology, wider ones by a distance transform


@dataclass(frozen=True)
class Focus:
    index_zyx: tuple[int, int, int]
    world_xyz: tuple[float, float, float]
    response: float  # noise units of the case
    radius_mm: float  # the radius whose response was highest
    blobness: float  # smallest / largest |Hessian eigenvalue|, 1 = sphere, 0 = tube


def axis_sigmas(radius_mm: float, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Per-axis Gaussian sigma in voxels for a blob of ``radius_mm`` (at least ``MIN_SIGMA_VOXELS``)."""
    spacing = np.asarray(spacing_zyx, dtype=float)
    return np.maximum(radius_mm / np.sqrt(3.0) / spacing, MIN_SIGMA_VOXELS)


def _along(axis: int, ndim: int, part: slice) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    index[axis] = part
    return tuple(index)


def second_difference(values: np.ndarray, axis: int) -> np.ndarray:
    """``v[k+1] - 2 v[k] + v[k-1]`` along ``axis``; the first and last take their neighbour's value
    (a one-sided difference there would respond to any gradient reaching the border)."""
    n, d = values.shape[axis], values.ndim
    if n < 3:
        return np.zeros_like(values)
    inner = (values[_along(axis, d, slice(2, None))] - 2.0 * values[_along(axis, d, slice(1, -1))]
             + values[_along(axis, d, slice(0, -2))])
    return np.concatenate([inner[_along(axis, d, slice(0, 1))], inner, inner[_along(axis, d, slice(-1, None))]], axis=axis)


def smoothed_and_negative_log(image: np.ndarray, spacing_zyx: Sequence[float], radius_mm: float
                              ) -> tuple[np.ndarray, np.ndarray]:
    """``(G * image, -(r^2 / 3) sum_i d2/dx_i^2 (G * image))``: the scale-normalised negative
    Laplacian in mm at the nominal sigma ``r / sqrt(3)``. An axis whose voxels are too coarse for
    that sigma is smoothed wider (:func:`axis_sigmas`) and so, in mm, contributes little curvature:
    a 6 mm slice axis barely counts, and the response is then that of a blob in the plane, where the
    focus is resolved. The image is smoothed once and differentiated by second differences (a third
    of the filtering of three Gaussian second-derivative filters; for sigma >= 0.7 voxels the two
    agree closely)."""
    spacing = np.asarray(spacing_zyx, dtype=float)
    nominal = radius_mm**2 / 3.0
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), axis_sigmas(radius_mm, spacing), mode="nearest")
    out = np.zeros(smooth.shape, dtype=np.float32)
    for axis in range(3):
        out -= np.float32(nominal / spacing[axis] ** 2) * second_difference(smooth, axis)  # / spacing^2: voxels -> mm
    return smooth, out


def robust_scale(values: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 MAD) of ``values`` over ``region`` (a regular subsample of it)."""
    step = (slice(None, None, STATISTICS_STRIDE),) * values.ndim
    sample = values[step][region[step]]
    if sample.size < 16:
        sample = values[region]
    if sample.size == 0:
        return 0.0, 1.0
    centre = float(np.median(sample))
    scale = MAD_TO_SD * float(np.median(np.abs(sample - centre)))
    return centre, scale if scale > 0 else 1.0


def normalised_responses(image: np.ndarray, spacing_zyx: Sequence[float], radii_mm: Sequence[float],
                         region: np.ndarray) -> tuple[list[np.ndarray], list[float], list[np.ndarray]]:
    """Per radius the negative LoG in the case's own noise units (minus the median, over 1.4826
    MAD, both over ``region``), the scales in the image's intensity units, and the smoothed image
    (for the Hessian of :func:`hessian_blobness_at`)."""
    if not len(radii_mm):
        raise ValueError("the blob response needs at least one radius")
    responses, scales, smoothed = [], [], []
    for radius in radii_mm:
        smooth, response = smoothed_and_negative_log(image, spacing_zyx, radius)
        centre, scale = robust_scale(response, region)
        responses.append((response - np.float32(centre)) / np.float32(scale))
        scales.append(scale)
        smoothed.append(smooth)
    return responses, scales, smoothed


def strongest(responses: Sequence[np.ndarray], sign: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(max over radii of sign x response, index of that radius)``."""
    stacked = np.stack([sign * r for r in responses])
    which = np.argmax(stacked, axis=0).astype(np.int8)
    return np.take_along_axis(stacked, which[None].astype(np.intp), axis=0)[0], which


def blob_response(image: np.ndarray, spacing_zyx: Sequence[float], radii_mm: Sequence[float], region: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """``(response, best radius index, noise scale per radius)``: the maximum over ``radii_mm`` of
    the negative LoG in the case's own noise units; see the module docstring. The LoG is linear, so
    the negated image's response (dark blobs) is ``strongest(responses, -1)`` of the same responses."""
    responses, scales, _ = normalised_responses(image, spacing_zyx, radii_mm, region)
    best, which = strongest(responses)
    return best, which, scales


def ball(radius_mm: float, spacing_zyx: Sequence[float]) -> np.ndarray:
    """The voxel offsets within ``radius_mm`` (centre to centre) as a boolean structuring element."""
    spacing = np.asarray(spacing_zyx, dtype=float)
    half = np.floor(radius_mm / spacing).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2


def _within(mask: np.ndarray, radius_mm: float, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Voxels within ``radius_mm`` (centre to centre) of a voxel of ``mask``: a dilation by a ball for
    margins of a few voxels, a Euclidean distance transform for wider ones."""
    spacing = np.asarray(spacing_zyx, dtype=float)
    if np.all(radius_mm / spacing <= MAX_BALL_VOXELS):
        return ndimage.binary_dilation(mask, ball(radius_mm, spacing))
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius_mm


def search_region(brain: np.ndarray, lesion_mask: np.ndarray, spacing_zyx: Sequence[float], lesion_margin_mm: float,
                  surface_margin_mm: float) -> np.ndarray:
    """Brain voxels farther than ``lesion_margin_mm`` from every lesion voxel and deeper than
    ``surface_margin_mm`` below the brain's surface (farther than that from every voxel outside it
    in the array)."""
    region = np.asarray(brain, dtype=bool).copy()
    if surface_margin_mm > 0 and region.any() and not region.all():
        region &= ~_within(~region, surface_margin_mm, spacing_zyx)
    lesions = np.asarray(lesion_mask, dtype=bool)
    if lesions.any():
        region &= ~_within(lesions, lesion_margin_mm, spacing_zyx)
    return region


def local_maxima(values: np.ndarray, region: np.ndarray, floor: float) -> np.ndarray:
    """``(n, 3)`` indices of the 26-neighbourhood maxima of ``values`` inside ``region`` at or above
    ``floor``, highest first (plateaus keep one voxel: the first in C order)."""
    peak = (values == ndimage.maximum_filter(values, size=3, mode="nearest")) & region & (values >= floor)
    labels, n = ndimage.label(peak, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 3), dtype=int)
    first = np.array([np.argwhere(labels[s] == k + 1)[0] + [t.start for t in s]
                      for k, s in enumerate(ndimage.find_objects(labels))])
    order = np.argsort(-values[tuple(first.T)], kind="stable")
    return first[order]


def hessian_blobness_at(smooth: np.ndarray, sigma_voxels: Sequence[float], indices_zyx: np.ndarray) -> np.ndarray:
    """Per voxel of ``indices_zyx`` (``(n, 3)``), the smallest over the largest |eigenvalue| of the
    Hessian of an already smoothed volume, by central differences (neighbours clipped at the
    border), each axis scaled by its sigma in voxels so that a blob imaged through thick slices
    still counts as round: 1 = a sphere, about 0 = a tube or a sheet. The sign of the volume does not
    matter, so a dark blob (decoy) is measured on the same smoothed volume."""
    indices = np.asarray(indices_zyx, dtype=int).reshape(-1, 3)
    upper = np.asarray(np.shape(smooth)) - 1
    sigma = np.asarray(sigma_voxels, dtype=float)

    def at(offset: np.ndarray) -> np.ndarray:
        return smooth[tuple(np.clip(indices + offset, 0, upper).T)].astype(np.float64)

    unit = np.eye(3, dtype=int)
    centre = at(np.zeros(3, dtype=int))
    hessian = np.zeros((len(indices), 3, 3))
    for i in range(3):
        hessian[:, i, i] = at(unit[i]) - 2.0 * centre + at(-unit[i])
        for j in range(i + 1, 3):
            mixed = (at(unit[i] + unit[j]) - at(unit[i] - unit[j]) - at(unit[j] - unit[i]) + at(-unit[i] - unit[j])) / 4.0
            hessian[:, i, j] = hessian[:, j, i] = mixed
    hessian *= np.outer(sigma, sigma)
    magnitudes = np.abs(np.linalg.eigvalsh(hessian))
    largest = magnitudes.max(axis=1)
    return np.where(largest > 0, magnitudes.min(axis=1) / np.where(largest > 0, largest, 1.0), 0.0)


def blobness(image: np.ndarray, spacing_zyx: Sequence[float], radius_mm: float, index_zyx: Sequence[int]) -> float:
    """:func:`hessian_blobness_at` at one voxel of an unsmoothed image (smoothed on a crop around it)."""
    sigma = axis_sigmas(radius_mm, spacing_zyx)
    half = np.ceil(4 * sigma).astype(int) + 2
    lo = np.maximum(np.asarray(index_zyx) - half, 0)
    hi = np.minimum(np.asarray(index_zyx) + half + 1, np.shape(image))
    crop = np.asarray(image[tuple(slice(a, b) for a, b in zip(lo, hi))], dtype=np.float64)
    smooth = ndimage.gaussian_filter(crop, sigma, mode="nearest")
    return float(hessian_blobness_at(smooth, sigma, np.asarray([index_zyx]) - lo)[0])


def find_foci(image: np.ndarray, geometry: Geometry, response: np.ndarray, which_radius: np.ndarray,
              radii_mm: Sequence[float], region: np.ndarray, floor: float, limit: int = 200,
              smoothed: Sequence[np.ndarray] | None = None) -> list[Focus]:
    """The candidates: local maxima of ``response`` in ``region`` at or above ``floor`` (at most
    ``limit``, highest first), with position, radius and blobness (from ``smoothed``, the image
    smoothed per radius, when given; else smoothed here around each candidate)."""
    peaks = local_maxima(response, region, floor)[:limit]
    which = which_radius[tuple(peaks.T)].astype(int) if len(peaks) else np.zeros(0, dtype=int)
    shape = np.zeros(len(peaks))
    for k in np.unique(which):
        chosen = which == k
        sigma = axis_sigmas(float(radii_mm[k]), geometry.spacing_zyx)
        shape[chosen] = (hessian_blobness_at(smoothed[k], sigma, peaks[chosen]) if smoothed is not None else
                         [blobness(image, geometry.spacing_zyx, float(radii_mm[k]), p) for p in peaks[chosen]])
    world = geometry.index_to_world(peaks.astype(float)) if len(peaks) else np.zeros((0, 3))
    return [Focus(tuple(int(i) for i in index), tuple(float(w) for w in point), float(response[tuple(index)]),
                  float(radii_mm[k]), float(b)) for index, point, k, b in zip(peaks, world, which, shape)]


def decoy_threshold(decoys_per_case: Sequence[Sequence[float]], false_positives_per_case: float, floor: float) -> float:
    """The lowest threshold at which the training cases' decoys (dark-blob maxima) exceed it no more
    than ``false_positives_per_case`` times per case on average: the expected number of noise
    candidates per case that a bright threshold lets through, if noise is symmetric."""
    n_cases = max(1, len(decoys_per_case))
    heights = np.sort(np.concatenate([np.asarray(d, dtype=float) for d in decoys_per_case] or [np.zeros(0)]))[::-1]
    allowed = int(np.floor(false_positives_per_case * n_cases))  # decoys that may stay above the threshold
    if heights.size <= allowed:
        return float(floor)
    return float(max(floor, np.nextafter(heights[allowed], np.inf)))


def max_pool_to_grid(values: np.ndarray, source: Geometry, target: Geometry, fill: float = 0.0) -> np.ndarray:
    """``values`` (on ``source``) reduced to ``target`` by maximum: each target voxel takes the
    largest value of the source voxels whose centres round to it (``fill`` where none does).
    Only values above ``fill`` are splatted, so a sparse response costs little."""
    values = np.asarray(values, dtype=np.float32)
    out = np.full(tuple(target.shape), np.float32(fill), dtype=np.float32)
    points = np.argwhere(values > fill)
    if not len(points):
        return out
    a, b = index_map(source, target)  # source = a @ target + b
    target_index = np.rint((points - b) @ np.linalg.inv(a).T).astype(int)
    inside = np.all((target_index >= 0) & (target_index < np.asarray(target.shape)), axis=1)
    target_index, points = target_index[inside], points[inside]
    np.maximum.at(out, tuple(target_index.T), values[tuple(points.T)])
    return out


@dataclass(frozen=True)
class FociSettings:
    """What the plans fix for the detector (``plans["preprocessing"]["small_foci"]``)."""

    radii_mm: tuple[float, ...]
    lesion_margin_mm: float  # the search region stays this far from every lesion voxel
    surface_margin_mm: float  # ... and this deep below the brain's surface
    min_blobness: float  # candidates (and decoys) flatter or more elongated than this are dropped
    floor: float  # candidates and decoys are recorded from this response (noise units) up

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FociSettings":
        return cls(tuple(float(r) for r in d["radii_mm"]), float(d["lesion_margin_mm"]), float(d["surface_margin_mm"]),
                   float(d["min_blobness"]), float(d["floor"]))


@dataclass
class CaseFoci:
    response: np.ndarray  # float32 (Z, Y, X), noise units, 0 outside the candidates' balls (and the search region)
    foci: list[Focus]  # bright candidates at or above the floor with enough blobness, highest first
    decoys: list[float]  # the same for dark blobs: the null sample of the threshold
    noise_scale: list[float]  # per radius, the 1.4826 MAD the response was divided by (intensity units)


def crop_geometry(geometry: Geometry, start_zyx: Sequence[int], shape_zyx: Sequence[int]) -> Geometry:
    """The geometry of ``array[start:start + shape]``."""
    origin = geometry.index_to_world(np.asarray(start_zyx, dtype=float))
    return Geometry(tuple(int(n) for n in shape_zyx), geometry.spacing, tuple(float(o) for o in origin), geometry.direction)


def case_foci(image: np.ndarray, geometry: Geometry, brain: np.ndarray, lesion_mask: np.ndarray,
              settings: FociSettings) -> CaseFoci:
    """The detector on one canonical reference channel (T1c): response, candidates and decoys.

    Everything is computed on the brain's bounding box, widened by the filters' reach and the
    lesion margin; the response is returned on the whole grid, within each accepted candidate's
    radius of it (0 elsewhere: :func:`around_candidates`)."""
    from glmil_auto.imaging.head_mask import bounding_box

    spacing = np.asarray(geometry.spacing_zyx, dtype=float)
    reach = np.ceil(np.maximum(4 * axis_sigmas(max(settings.radii_mm), spacing),
                               settings.lesion_margin_mm / spacing)).astype(int) + 2
    start = [max(0, a - m) for (a, _), m in zip(bounding_box(brain), reach)]
    stop = [min(n, b + m) for (_, b), m, n in zip(bounding_box(brain), reach, np.shape(image))]
    crop = tuple(slice(a, b) for a, b in zip(start, stop))
    local = crop_geometry(geometry, start, [b - a for a, b in zip(start, stop)])
    sub = np.asarray(image[crop], dtype=np.float32)
    region = search_region(brain[crop], lesion_mask[crop], spacing, settings.lesion_margin_mm, settings.surface_margin_mm)
    responses, scales, smoothed = normalised_responses(sub, spacing, settings.radii_mm, region)

    def candidates(sign: float) -> list[Focus]:
        response, which = strongest(responses, sign)
        found = find_foci(sign * sub, local, response, which, settings.radii_mm, region, settings.floor,
                          smoothed=smoothed)
        return [replace(f, index_zyx=tuple(int(i + a) for i, a in zip(f.index_zyx, start)))
                for f in found if f.blobness >= settings.min_blobness]

    foci = candidates(1.0)
    decoys = [f.response for f in candidates(-1.0)]
    bright, _ = strongest(responses)
    full = np.zeros(np.shape(image), dtype=np.float32)
    full[crop] = np.where(region & around_candidates(foci, start, sub.shape, spacing), np.maximum(bright, 0.0), 0.0)
    return CaseFoci(full, foci, decoys, scales)


def around_candidates(foci: Sequence[Focus], start_zyx: Sequence[int], shape_zyx: Sequence[int],
                      spacing_zyx: Sequence[float]) -> np.ndarray:
    """Voxels (of the crop at ``start_zyx``) within each accepted candidate's radius of it: the only
    places where the response enters the channel, so that edges, ridges and sheets (vessels, dura,
    the brain's own boundary), which are no blob-like local maxima, leave it empty."""
    out = np.zeros(tuple(shape_zyx), dtype=bool)
    for radius in sorted({f.radius_mm for f in foci}):
        centres = np.zeros(tuple(shape_zyx), dtype=bool)
        for focus in foci:
            if focus.radius_mm == radius:
                centres[tuple(int(i - a) for i, a in zip(focus.index_zyx, start_zyx))] = True
        out |= _within(centres, radius, spacing_zyx)
    return out
