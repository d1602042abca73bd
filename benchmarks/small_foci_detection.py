"""How well does the small-foci detector find the synthetic cohort's uncontoured micro-lesions, per centre?

    python benchmarks/small_foci_detection.py --dataset 10 [--plans plans] [--cases-per-centre N] [--fp-budget F]
                                              [--settings JSON] [--mimics [--mimic-vessels 3] [--mimic-peak W]
                                              [--dura-depth-mm D]] [-np 2]

Every case (Tr and Ts) goes through the detector (``glmil_auto.preprocessing.small_foci.case_foci``) on
its canonical T1c, with the brain region preprocessing uses. A candidate is a true focus when it lies
within the match distance of a truth micro-lesion (``max(3 mm, half the coarsest voxel edge + 1 mm)``;
each truth focus matches at most once). The threshold is the decoy threshold of the training cases
(``decoy_threshold``: dark-blob maxima above it at most ``--fp-budget`` times per case). Per centre the
table gives sensitivity and false positives per case at that threshold, the sensitivity at 2 false
positives per case (the best threshold of that centre that keeps them at or below 2: what the centre
allows at all, not a transferable setting), Spearman's rho between the detected and the true count,
and the seconds per case. The detector's settings, the false positives per case and the brain margin
are the dataset's plans' (``--plans``, its ``small_foci`` section, as preprocessing uses them);
``--settings`` overrides fields, and plans without the section fall back to ``DEFAULT_SETTINGS``.

``--mimics`` measures the two false positives that real scans have and the synthetic cohort lacks:
enhancing **vessels** (tubes, 1-2 mm wide, centimetres long) and the **dura** (a thin enhancing
sheet along the brain's surface). The detector has one defence against each: a candidate must lie
deeper than ``surface_margin_mm`` below the surface of the brain region (the head eroded by the
plans' ``brain_margin_mm``, not the true pial surface: where the inner skull table lies relative to
it varies with the scalp's and skull's thickness), and its Hessian blobness (smallest over largest
|eigenvalue|, about 0 along a tube or sheet) must reach ``min_blobness``; both also apply to the
decoys, so switching one off raises the decoy threshold too. Before the detector runs, every
case's canonical T1c gets (:func:`paint_mimics`, seeded from the case id, so every run paints the same):

- ``--mimic-vessels`` (3) straight tubes, radius 0.6-1.0 mm, length 15-30 mm, random direction,
  their whole axis deeper than ``VESSEL_DEPTH_MM`` (8) below the brain region's surface and at least
  ``CLEARANCE_MM`` (8) plus the radius from every lesion voxel, truth micro-lesion and earlier tube
  (so the surface margin cannot remove them: they test the **elongation** filter alone);
- one dural sheet, 1-1.5 mm thick, just inside the brain region's surface over a cap of 25-35 mm
  radius around a random surface point (the one of 64 draws farthest from lesions and truth foci;
  the sheet leaves out whatever lies within ``CLEARANCE_MM`` of them): it tests the **surface margin**.

Both are rendered with partial volume (the fraction of every voxel inside the shape, from sub-samples
at most ``SUBSAMPLE_MM`` apart per axis) and a Gaussian point-spread function of ``PSF_SIGMA_VOXELS``
(0.6) voxels, blended toward the brightness of the case's contoured lesions (the median T1c in the
lesion mask; the brain's 99.5th percentile without lesions): ``t1c + w max(brightness - t1c, 0)``.
On the cohort's coarse grids a 1.6 mm tube's largest weight ``w`` is only about 0.1-0.3 (the cohort
renders its own micro-lesions with an idealised 0.75-1); ``--mimic-peak W`` scales every mimic's
weights so that its largest is ``W`` (a stress test), and ``--dura-depth-mm D`` lays the sheet
``D`` mm below the brain region's surface instead of on it (where the inner table of a thicker
scalp and skull would put the dura).
A false candidate (matched to no truth focus) within the match distance of a voxel that a mimic
overlaps counts as that mimic's (the nearest one's). Every setting of ``MIMIC_SETTINGS``
(the planned one; ``min_blobness = 0``: no elongation filter; ``surface_margin_mm = 0``: no surface
margin) runs on the same painted T1c with its own decoy threshold (fitted on the training cases as
above), and a second table gives per centre and setting the sensitivity, all false positives per
case, those on vessel and on dural mimics per case, the fraction of vessel and dural mimics that got
at least one, and the strongest false candidate on each mimic (median and maximum over the mimics,
0 where none reached the floor; in noise units, to compare with the threshold). The first table is
then that of the painted cohort at the planned settings, and the JSON gets a ``mimics`` block.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
from scipy import ndimage, stats

DEFAULT_SETTINGS = {"radii_mm": [1.0, 1.414, 2.0], "lesion_margin_mm": 4.0, "surface_margin_mm": 4.0,
                    "min_blobness": 0.3, "floor": 2.5, "false_positives_per_case": 0.5}
SETTING_FIELDS = ("radii_mm", "lesion_margin_mm", "surface_margin_mm", "min_blobness", "floor")


def planned_settings(dataset_name: str, plans_name: str) -> tuple[dict[str, Any], float | None]:
    """The plans' small_foci section (DEFAULT_SETTINGS without one) and their brain margin (None: no plans)."""
    from glmil_auto.paths import preprocessed_folder

    path = preprocessed_folder() / dataset_name / f"{plans_name}.json"
    if not path.is_file():
        return dict(DEFAULT_SETTINGS), None
    plans = json.loads(path.read_text())
    section = plans["preprocessing"].get("small_foci") or DEFAULT_SETTINGS
    return {k: section[k] for k in (*SETTING_FIELDS, "false_positives_per_case")}, plans["preprocessing"]["brain_margin_mm"]


def match_distance_mm(spacing_zyx: Any) -> float:
    return max(3.0, 0.5 * float(max(spacing_zyx)) + 1.0)


# ---- vessel and dural mimics (--mimics) ------------------------------------------------------------

MIMIC_SETTINGS = {"planned": {}, "min_blobness=0": {"min_blobness": 0.0},
                  "surface_margin_mm=0": {"surface_margin_mm": 0.0}}
VESSEL_RADIUS_MM, VESSEL_LENGTH_MM = (0.6, 1.0), (15.0, 30.0)
VESSEL_DEPTH_MM = 8.0  # every point of a vessel's axis lies this deep below the brain region's surface
CLEARANCE_MM = 8.0  # mimics keep this far from lesion voxels, truth micro-lesions and each other
DURA_THICKNESS_MM, DURA_CAP_RADIUS_MM = (1.0, 1.5), (25.0, 35.0)
PSF_SIGMA_VOXELS = 0.6
SUBSAMPLE_MM = 0.25  # partial volume from sub-samples at most this far apart (at least 2 per voxel and axis)
DRAWS = 100  # attempts per vessel; 64 surface points for the dural cap
FAR_MM = 1e6  # the clearance of a case without lesions or truth foci


class Mimic(NamedTuple):  # a NamedTuple: the script is also loaded outside sys.modules (tests)
    kind: str  # "vessel" or "dura"
    voxels: np.ndarray  # (n, 3) canonical indices of the voxels the shape overlaps
    size_mm: tuple[float, float]  # vessel (radius, length); dura (thickness, cap radius)
    peak_weight: float  # the largest partial-volume weight it painted


def case_rng(case: str) -> np.random.Generator:
    """The mimics' random generator of one case: the same case id, the same mimics."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(f"mimics:{case}".encode()).digest()[:8], "little"))


def mimic_brightness(t1c: np.ndarray, brain: np.ndarray, lesion_mask: np.ndarray) -> float:
    """The median T1c of the contoured lesions (the brain's 99.5th percentile for a case without any)."""
    lesions = np.asarray(lesion_mask, dtype=bool)
    return float(np.median(t1c[lesions]) if lesions.any() else np.percentile(t1c[brain], 99.5))


def signed_depth_mm(brain: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Per voxel centre, the distance in mm to the brain region's voxelised surface (the faces between
    brain and other voxels; beyond the array counts as outside): positive inside, negative outside.
    The distance to the nearest voxel centre of the other side minus half that voxel's extent along
    the way (``0.5 s`` for a face-neighbour at spacing ``s``), so that linear interpolation crosses
    zero on the faces. Computed on the brain's bounding box widened by two voxels (exact there);
    farther out, the box's lowest value."""
    from glmil_auto.imaging.head_mask import bounding_box

    s = np.asarray(spacing_zyx, dtype=float)
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        return np.full(brain.shape, -FAR_MM)
    box = tuple(slice(max(a - 2, 0), b + 2) for a, b in bounding_box(brain))
    padded = np.pad(brain[box], 1, constant_values=False)
    depth = np.zeros(padded.shape)
    grid = np.indices(padded.shape, dtype=np.int32)
    for side, sign in ((padded, 1.0), (~padded, -1.0)):
        distance, nearest = ndimage.distance_transform_edt(side, sampling=s, return_indices=True)
        step = np.abs(nearest - grid) * s[:, None, None, None]  # mm to that voxel, per axis
        half = 0.5 * (step * s[:, None, None, None]).sum(axis=0) / np.maximum(distance, 1e-9)
        depth[side] = sign * (distance - half)[side]
    out = np.full(brain.shape, depth.min())
    out[box] = depth[1:-1, 1:-1, 1:-1]
    return out


def clearance_mm(lesion_mask: np.ndarray, spacing_zyx: Sequence[float], foci_index_zyx: np.ndarray) -> np.ndarray:
    """Per voxel centre, mm to the nearest lesion voxel or truth micro-lesion centre (``FAR_MM``: neither;
    finite, so that it interpolates)."""
    s = np.asarray(spacing_zyx, dtype=float)
    lesions = np.asarray(lesion_mask, dtype=bool)
    out = (ndimage.distance_transform_edt(~lesions, sampling=s) if lesions.any()
           else np.full(lesions.shape, FAR_MM))
    axes = np.ogrid[tuple(slice(0, n) for n in lesions.shape)]
    for focus in np.asarray(foci_index_zyx, dtype=float).reshape(-1, 3):
        out = np.minimum(out, np.sqrt(sum(((a - f) * d) ** 2 for a, f, d in zip(axes, focus, s))))
    return out


def sample_at(volume: np.ndarray, points_mm: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """``volume`` linearly interpolated at ``(n, 3)`` points in mm (``index x spacing``)."""
    index = np.asarray(points_mm, dtype=float).reshape(-1, 3) / np.asarray(spacing_zyx, dtype=float)
    return ndimage.map_coordinates(np.asarray(volume, dtype=float), index.T, order=1, mode="nearest")


def distance_to_segment_mm(points_mm: np.ndarray, start_mm: np.ndarray, stop_mm: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``(distance to the segment's axis line, position along it in mm from the middle)`` of ``(n, 3)`` points."""
    axis = np.asarray(stop_mm, dtype=float) - start_mm
    length = float(np.linalg.norm(axis))
    unit = axis / length
    offset = np.asarray(points_mm, dtype=float) - (np.asarray(start_mm, dtype=float) + 0.5 * axis)
    along = offset @ unit
    return np.linalg.norm(offset - along[:, None] * unit, axis=1), along


def partial_volume(inside: Callable[[np.ndarray], np.ndarray], near: np.ndarray, start_zyx: Sequence[int],
                   spacing_zyx: Sequence[float]) -> np.ndarray:
    """Per voxel of a box (``near``: its voxels the shape may touch, the others get 0; ``start_zyx``:
    the box's first index), the fraction of its sub-samples (at most ``SUBSAMPLE_MM`` apart, at least 2
    per axis) for which ``inside`` (``(n, 3)`` mm points -> bool) holds."""
    s = np.asarray(spacing_zyx, dtype=float)
    counts = np.maximum(2, np.ceil(s / SUBSAMPLE_MM)).astype(int)
    offsets = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in counts], indexing="ij"), -1).reshape(-1, 3)
    voxels = np.argwhere(near)
    fraction = np.zeros(near.shape)
    for chunk in np.array_split(np.arange(len(voxels)), max(1, len(voxels) * len(offsets) // 500_000)):
        points = ((voxels[chunk, None, :] + np.asarray(start_zyx) + offsets[None]) * s).reshape(-1, 3)
        fraction[tuple(voxels[chunk].T)] = inside(points).reshape(len(chunk), -1).mean(axis=1)
    return fraction


def render(image: np.ndarray, fraction: np.ndarray, start_zyx: Sequence[int], brightness: float,
           peak: float | None = None) -> np.ndarray:
    """Blend ``image`` in place toward ``brightness`` by the point-spread-blurred ``fraction`` (a box at
    ``start_zyx``; only brightening); ``peak``: the weights scaled so that their largest is ``peak``
    (capped at 1) instead of the partial volume's. Returns the weights on the box."""
    weight = ndimage.gaussian_filter(fraction, PSF_SIGMA_VOXELS, mode="constant")
    if peak is not None and weight.max(initial=0.0) > 0:
        weight *= peak / weight.max()
    weight = np.clip(weight, 0.0, 1.0)
    box = tuple(slice(a, a + n) for a, n in zip(start_zyx, weight.shape))
    image[box] += (weight * np.maximum(np.float32(brightness) - image[box], 0.0)).astype(image.dtype)
    return weight


def shape_box(lo_mm: np.ndarray, hi_mm: np.ndarray, spacing_zyx: Sequence[float], shape: Sequence[int]
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(start, stop)`` voxel indices of the box holding the mm range plus the point-spread's reach."""
    s, pad = np.asarray(spacing_zyx, dtype=float), int(np.ceil(4 * PSF_SIGMA_VOXELS)) + 1
    start = np.maximum(np.floor(np.asarray(lo_mm) / s).astype(int) - pad, 0)
    stop = np.minimum(np.ceil(np.asarray(hi_mm) / s).astype(int) + pad + 1, np.asarray(shape))
    return start, stop


def box_points_mm(start: np.ndarray, stop: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """The voxel centres of a box in mm, ``(Z, Y, X, 3)``."""
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(start, stop)], indexing="ij"), -1)
    return grid * np.asarray(spacing_zyx, dtype=float)


def painted(fraction: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The voxels (whole-grid indices) that the shape overlaps, before the point-spread function."""
    return np.argwhere(fraction > 0) + start


def paint_tube(image: np.ndarray, spacing_zyx: Sequence[float], start_mm: np.ndarray, stop_mm: np.ndarray,
               radius_mm: float, brightness: float, peak: float | None = None) -> Mimic:
    """A straight tube (flat ends) from ``start_mm`` to ``stop_mm`` (mm = index x spacing) painted into
    ``image`` (:func:`render`)."""
    s = np.asarray(spacing_zyx, dtype=float)
    lo, hi = shape_box(np.minimum(start_mm, stop_mm) - radius_mm, np.maximum(start_mm, stop_mm) + radius_mm, s,
                       image.shape)
    length = float(np.linalg.norm(np.asarray(stop_mm) - start_mm))

    def inside(points: np.ndarray) -> np.ndarray:
        radial, along = distance_to_segment_mm(points, start_mm, stop_mm)
        return (radial <= radius_mm) & (np.abs(along) <= 0.5 * length)

    radial, along = distance_to_segment_mm(box_points_mm(lo, hi, s).reshape(-1, 3), start_mm, stop_mm)
    reach = 0.5 * float(np.linalg.norm(s))  # a voxel centre this far from the shape may still overlap it
    near = ((radial <= radius_mm + reach) & (np.abs(along) <= 0.5 * length + reach)).reshape(tuple(hi - lo))
    fraction = partial_volume(inside, near, lo, s)
    weight = render(image, fraction, lo, brightness, peak)
    return Mimic("vessel", painted(fraction, lo), (float(radius_mm), length), float(weight.max(initial=0.0)))


def paint_sheet(image: np.ndarray, spacing_zyx: Sequence[float], depth: np.ndarray, clearance: np.ndarray,
                centre_mm: np.ndarray, cap_radius_mm: float, thickness_mm: float, brightness: float,
                peak: float | None = None, below_mm: float = 0.0) -> Mimic:
    """A sheet ``thickness_mm`` thick just inside the brain region's surface (``below <= depth <= below +
    thickness``, ``depth`` from :func:`signed_depth_mm`, and in a brain voxel), within ``cap_radius_mm``
    of ``centre_mm`` and at least ``CLEARANCE_MM`` from lesions and truth foci (``clearance`` from
    :func:`clearance_mm`), painted into ``image`` (:func:`render`)."""
    s = np.asarray(spacing_zyx, dtype=float)
    lo, hi = shape_box(np.asarray(centre_mm) - cap_radius_mm, np.asarray(centre_mm) + cap_radius_mm, s, image.shape)

    def inside(points: np.ndarray) -> np.ndarray:
        d = sample_at(depth, points, s)
        voxel = np.clip(np.rint(points / s).astype(int), 0, np.asarray(depth.shape) - 1)
        return ((depth[tuple(voxel.T)] > 0) & (d >= below_mm) & (d <= below_mm + thickness_mm)
                & (np.linalg.norm(points - centre_mm, axis=1) <= cap_radius_mm)
                & (sample_at(clearance, points, s) >= CLEARANCE_MM))

    reach = 0.5 * float(np.linalg.norm(s))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    centres = box_points_mm(lo, hi, s)
    near = ((depth[box] >= below_mm - reach) & (depth[box] <= below_mm + thickness_mm + reach)
            & (np.linalg.norm(centres - centre_mm, axis=-1) <= cap_radius_mm + reach))
    fraction = partial_volume(inside, near, lo, s)
    weight = render(image, fraction, lo, brightness, peak)
    size = (float(thickness_mm), float(cap_radius_mm))
    return Mimic("dura", painted(fraction, lo), size, float(weight.max(initial=0.0)))


def random_direction(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def draw_vessel(rng: np.random.Generator, depth: np.ndarray, clearance: np.ndarray, spacing_zyx: Sequence[float],
                axes_mm: list[np.ndarray], min_depth_mm: float = VESSEL_DEPTH_MM
                ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``(start, stop, radius)`` in mm of a tube whose axis (sampled every 0.5 mm) lies deeper than
    ``min_depth_mm``, at least ``CLEARANCE_MM`` + radius from lesions and truth foci and at least
    ``CLEARANCE_MM`` from the axes already drawn (``axes_mm``, ``(n, 3)`` points each); None after
    ``DRAWS`` tries."""
    s = np.asarray(spacing_zyx, dtype=float)
    seeds = np.argwhere((depth >= min_depth_mm) & (clearance >= CLEARANCE_MM + VESSEL_RADIUS_MM[1]))
    if not len(seeds):
        return None
    for _ in range(DRAWS):
        centre = (seeds[rng.integers(len(seeds))] + rng.uniform(-0.5, 0.5, 3)) * s
        half = 0.5 * rng.uniform(*VESSEL_LENGTH_MM) * random_direction(rng)
        radius = float(rng.uniform(*VESSEL_RADIUS_MM))
        axis = centre + np.linspace(-1.0, 1.0, int(np.ceil(4 * np.linalg.norm(half))) + 1)[:, None] * half
        if (sample_at(depth, axis, s).min() < min_depth_mm
                or sample_at(clearance, axis, s).min() < CLEARANCE_MM + radius
                or any(np.linalg.norm(axis[:, None] - other[None], axis=-1).min() < CLEARANCE_MM for other in axes_mm)):
            continue
        return centre - half, centre + half, radius
    return None


def draw_dural_cap(rng: np.random.Generator, brain: np.ndarray, clearance: np.ndarray, spacing_zyx: Sequence[float]
                   ) -> tuple[np.ndarray, float, float] | None:
    """``(centre in mm, cap radius, thickness)``: the centre is the one of 64 random voxels of the brain
    region's outer layer that lies farthest from lesions and truth foci."""
    surface = np.argwhere(brain & ~ndimage.binary_erosion(brain, border_value=0))
    if not len(surface):
        return None
    picks = surface[rng.integers(len(surface), size=64)]
    best = picks[int(np.argmax(clearance[tuple(picks.T)]))]
    cap_radius, thickness = float(rng.uniform(*DURA_CAP_RADIUS_MM)), float(rng.uniform(*DURA_THICKNESS_MM))
    return best * np.asarray(spacing_zyx, dtype=float), cap_radius, thickness


def paint_mimics(t1c: np.ndarray, spacing_zyx: Sequence[float], brain: np.ndarray, lesion_mask: np.ndarray,
                 foci_index_zyx: np.ndarray, rng: np.random.Generator, vessels: int = 3, peak: float | None = None,
                 dura_depth_mm: float = 0.0) -> tuple[np.ndarray, list[Mimic]]:
    """A copy of ``t1c`` with ``vessels`` vessel mimics and one dural mimic (module docstring), and the
    mimics. ``peak``: every mimic's largest weight (:func:`render`; None: its partial volume's);
    ``dura_depth_mm``: the sheet starts this far below the brain region's surface (the vessels keep
    ``VESSEL_DEPTH_MM`` below the sheet)."""
    image = np.array(t1c, dtype=np.float32, copy=True)
    brain = np.asarray(brain, dtype=bool)
    brightness = mimic_brightness(image, brain, lesion_mask)
    depth = signed_depth_mm(brain, spacing_zyx)
    clearance = clearance_mm(lesion_mask, spacing_zyx, foci_index_zyx)
    mimics, axes = [], []
    for _ in range(vessels):
        drawn = draw_vessel(rng, depth, clearance, spacing_zyx, axes, VESSEL_DEPTH_MM + dura_depth_mm)
        if drawn is None:
            continue
        start, stop, radius = drawn
        axes.append(np.linspace(start, stop, int(np.ceil(2 * np.linalg.norm(stop - start))) + 1))
        mimics.append(paint_tube(image, spacing_zyx, start, stop, radius, brightness, peak))
    cap = draw_dural_cap(rng, brain, clearance, spacing_zyx)
    if cap is not None:
        mimics.append(paint_sheet(image, spacing_zyx, depth, clearance, cap[0], cap[1], cap[2], brightness, peak,
                                  dura_depth_mm))
    return image, mimics


def nearest_mimic(index_zyx: Sequence[int], mimics: Sequence[Mimic], spacing_zyx: Sequence[float], limit_mm: float
                  ) -> int | None:
    """The place in ``mimics`` of the nearest one with a painted voxel within ``limit_mm`` of the voxel (None: none)."""
    best, nearest = np.inf, None
    for k, mimic in enumerate(mimics):
        if len(mimic.voxels):
            d = float(np.min(np.linalg.norm((mimic.voxels - np.asarray(index_zyx)) * np.asarray(spacing_zyx), axis=1)))
            if d <= limit_mm and d < best:
                best, nearest = d, k
    return nearest


def mimic_row(outcomes: Sequence[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """One centre at one setting: ``outcomes`` per case, each ``{"n_true", "candidates": [{"response",
    "true", "mimic", "mimic_index"}], "mimics": [{"kind", ...}]}``; a false candidate at or above the
    threshold whose ``mimic`` is set counts for that kind, and for its mimic (``mimic_index``) as hit.
    ``{kind}_response_median`` / ``_max``: over the painted mimics of a kind, the strongest false
    candidate on each (0 where none reached the floor), whatever the threshold."""
    n_cases, n_true = len(outcomes), sum(o["n_true"] for o in outcomes)
    above = [[c for c in o["candidates"] if c["response"] >= threshold] for o in outcomes]
    row = {"cases": n_cases, "true_foci": n_true, "threshold": threshold,
           "sensitivity": sum(c["true"] for a in above for c in a) / n_true if n_true else float("nan"),
           "fp_per_case": sum(not c["true"] for a in above for c in a) / max(1, n_cases)}
    for kind in ("vessel", "dura"):
        false = [[c for c in a if not c["true"] and c["mimic"] == kind] for a in above]
        painted_ = [[k for k, m in enumerate(o["mimics"]) if m["kind"] == kind] for o in outcomes]
        hit = sum(len({c["mimic_index"] for c in f} & set(p)) for f, p in zip(false, painted_))
        n_painted = sum(len(p) for p in painted_)
        row[f"{kind}_fp_per_case"] = sum(len(f) for f in false) / max(1, n_cases)
        row[f"{kind}_mimics"] = n_painted
        row[f"{kind}_mimics_hit"] = hit / n_painted if n_painted else float("nan")
        strongest = [max([c["response"] for c in o["candidates"] if not c["true"] and c["mimic_index"] == k],
                         default=0.0) for o, p in zip(outcomes, painted_) for k in p]
        row[f"{kind}_response_median"] = float(np.median(strongest)) if strongest else float("nan")
        row[f"{kind}_response_max"] = float(np.max(strongest)) if strongest else float("nan")
    return row


def mimic_table(rows: dict[str, dict[str, dict[str, Any]]]) -> str:
    """``rows[centre][setting]`` of :func:`mimic_row` as a markdown table."""
    lines = ["false positives on painted vessel and dural mimics (each setting with its own decoy threshold)", "",
             "| centre | setting | threshold | sensitivity | false positives / case | on vessel mimics / case | "
             "vessel mimics hit (painted) | strongest on a vessel (median / max) | on dural mimic / case | "
             "dural mimics hit (painted) | strongest on the dura (median / max) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for centre, by_setting in rows.items():
        for name, r in by_setting.items():
            lines.append(f"| {centre} | {name} | {r['threshold']:.2f} | {r['sensitivity']:.2f} | "
                         f"{r['fp_per_case']:.2f} | {r['vessel_fp_per_case']:.2f} | {r['vessel_mimics_hit']:.2f} ({r['vessel_mimics']}) | "
                         f"{r['vessel_response_median']:.1f} / {r['vessel_response_max']:.1f} | "
                         f"{r['dura_fp_per_case']:.2f} | {r['dura_mimics_hit']:.2f} ({r['dura_mimics']}) | "
                         f"{r['dura_response_median']:.1f} / {r['dura_response_max']:.1f} |")
    return "\n".join(lines)


def matched_candidates(foci: Sequence[Any], truth: np.ndarray, limit_mm: float, mimics: Sequence[Mimic] | None = None,
                       spacing_zyx: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Per candidate (highest first: a truth focus goes to its strongest candidate) its response and
    whether it matched a truth focus (within ``limit_mm``, each at most once); with ``mimics``, a
    false one's nearest mimic within ``limit_mm`` too (``mimic``: its kind, ``mimic_index``: its place)."""
    matched: set[int] = set()
    candidates = []
    for focus in foci:
        distances = np.linalg.norm(truth - np.asarray(focus.world_xyz), axis=1) if len(truth) else np.zeros(0)
        free = [j for j in np.argsort(distances) if distances[j] <= limit_mm and j not in matched]
        if free:
            matched.add(int(free[0]))
        candidate = {"response": focus.response, "true": bool(free)}
        if mimics is not None:
            k = None if free else nearest_mimic(focus.index_zyx, mimics, spacing_zyx, limit_mm)
            candidate.update(mimic=None if k is None else mimics[k].kind, mimic_index=k)
        candidates.append(candidate)
    return candidates


def case_record(job: tuple[Any, ...]) -> dict[str, Any]:
    """Detector output of one case, matched to its truth foci. ``job``: ``(folder, case, split, settings,
    truth foci in world mm, brain margin[, mimics])``; with ``mimics`` (the keyword arguments of
    :func:`paint_mimics`) the mimics are painted first and every setting of ``MIMIC_SETTINGS`` runs (the
    planned one gives the record's own candidates)."""
    from glmil_auto.dataset.raw_dataset import RawDataset
    from glmil_auto.imaging.case_regions import case_regions
    from glmil_auto.imaging.orientation import to_canonical
    from glmil_auto.preprocessing.lesion_features.channels import t1c_channel
    from glmil_auto.preprocessing.small_foci import FociSettings, case_foci

    folder, case, split, settings, truth_world, brain_margin, *rest = job
    mimic_options = rest[0] if rest else None
    raw = RawDataset(folder)
    started = time.perf_counter()
    images, mask, geometry = raw.read_case(case, split)
    images_c, canonical = to_canonical(images, geometry)
    mask_c, _ = to_canonical(mask, geometry)
    regions = case_regions(images_c, canonical.spacing_zyx, brain_margin)
    t1c = images_c[t1c_channel(raw.spec.channel_names)]
    truth = np.asarray(truth_world, dtype=float).reshape(-1, 3)
    limit = match_distance_mm(canonical.spacing_zyx)
    record = {"case": case, "split": split, "n_true": len(truth), "spacing_zyx": list(canonical.spacing_zyx)}
    if mimic_options is None:
        found = case_foci(t1c, canonical, regions.brain, mask_c, FociSettings.from_dict(settings))
        return {**record, "candidates": matched_candidates(found.foci, truth, limit), "decoys": found.decoys,
                "seconds": time.perf_counter() - started}
    prepared = time.perf_counter() - started
    image, mimics = paint_mimics(t1c, canonical.spacing_zyx, regions.brain, mask_c, canonical.world_to_index(truth),
                                 case_rng(case), **mimic_options)
    outcomes, seconds = {}, prepared
    for name, change in MIMIC_SETTINGS.items():
        detecting = time.perf_counter()
        found = case_foci(image, canonical, regions.brain, mask_c, FociSettings.from_dict({**settings, **change}))
        seconds += (time.perf_counter() - detecting) if name == "planned" else 0.0  # the planned detector only
        outcomes[name] = {"candidates": matched_candidates(found.foci, truth, limit, mimics, canonical.spacing_zyx),
                          "decoys": found.decoys}
    painted_ = [{"kind": m.kind, "size_mm": list(m.size_mm), "peak_weight": m.peak_weight, "voxels": len(m.voxels)}
                for m in mimics]
    return {**record, "candidates": outcomes["planned"]["candidates"], "decoys": outcomes["planned"]["decoys"],
            "seconds": seconds, "mimics": {"painted": painted_, "settings": outcomes,
                                           "brightness": mimic_brightness(t1c, regions.brain, mask_c)}}


def centre_row(records: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    n_cases = len(records)
    n_true = sum(r["n_true"] for r in records)

    def at(t: float) -> tuple[float, float]:
        hits = sum(c["true"] and c["response"] >= t for r in records for c in r["candidates"])
        false = sum((not c["true"]) and c["response"] >= t for r in records for c in r["candidates"])
        return (hits / n_true if n_true else float("nan")), false / max(1, n_cases)

    sensitivity, fp = at(threshold)
    heights = sorted({c["response"] for r in records for c in r["candidates"]} | {threshold})
    at_two = max((at(t)[0] for t in heights if at(t)[1] <= 2.0), default=float("nan"))
    detected = [sum(c["response"] >= threshold for c in r["candidates"]) for r in records]
    truth = [r["n_true"] for r in records]
    rho = stats.spearmanr(detected, truth).statistic if len(set(detected)) > 1 and len(set(truth)) > 1 else float("nan")
    return {"cases": n_cases, "true_foci": n_true, "sensitivity": sensitivity, "fp_per_case": fp,
            "sensitivity_at_2fp": at_two, "spearman_count": float(rho),
            "seconds_per_case": float(np.mean([r["seconds"] for r in records])),
            "spacing_zyx": records[0]["spacing_zyx"] if records else None}


def table(rows: dict[str, dict[str, Any]], threshold: float) -> str:
    lines = [f"decoy threshold {threshold:.2f} noise units", "",
             "| centre | cases | true foci | sensitivity | false positives / case | sensitivity at ≤ 2 FP / case | "
             "Spearman (detected vs true count) | voxel (mm, z y x) | s / case |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for centre, r in rows.items():
        spacing = " × ".join(f"{s:g}" for s in r["spacing_zyx"] or [])
        lines.append(f"| {centre} | {r['cases']} | {r['true_foci']} | {r['sensitivity']:.2f} | {r['fp_per_case']:.2f} | "
                     f"{r['sensitivity_at_2fp']:.2f} | {r['spearman_count']:.2f} | {spacing} | {r['seconds_per_case']:.1f} |")
    return "\n".join(lines)


def painted_summary(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mimics per case and their mean peak partial-volume weight, per kind, over ``records``."""
    out: dict[str, float] = {}
    for kind in ("vessel", "dura"):
        found = [m for r in records for m in r["mimics"]["painted"] if m["kind"] == kind]
        out[f"{kind}s_per_case" if kind == "vessel" else "dura_per_case"] = len(found) / max(1, len(records))
        out[f"{kind}_peak_weight"] = float(np.mean([m["peak_weight"] for m in found])) if found else float("nan")
        out[f"{kind}_voxels"] = float(np.mean([m["voxels"] for m in found])) if found else float("nan")
    return out


def mimic_results(records: Sequence[dict[str, Any]], centres: dict[str, str], settings: dict[str, Any],
                  fp_budget: float) -> dict[str, Any]:
    """The ``mimics`` block: per setting of ``MIMIC_SETTINGS`` its decoy threshold (training cases) and
    per centre :func:`mimic_row`; what was painted per centre."""
    from glmil_auto.preprocessing.small_foci import decoy_threshold

    block: dict[str, Any] = {"settings": {}, "thresholds": {}, "centres": {}, "painted": {}}
    names = sorted(set(centres.values()))
    for name, change in MIMIC_SETTINGS.items():
        chosen = {**settings, **change}
        threshold = decoy_threshold([r["mimics"]["settings"][name]["decoys"] for r in records if r["split"] == "Tr"],
                                    fp_budget, chosen["floor"])
        block["settings"][name], block["thresholds"][name] = chosen, threshold
        for centre in names:
            outcomes = [{"n_true": r["n_true"], "candidates": r["mimics"]["settings"][name]["candidates"],
                         "mimics": r["mimics"]["painted"]} for r in records if centres[r["case"]] == centre]
            block["centres"].setdefault(centre, {})[name] = mimic_row(outcomes, threshold)
    for centre in names:
        block["painted"][centre] = painted_summary([r for r in records if centres[r["case"]] == centre])
    return block


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="10")
    parser.add_argument("--cases-per-centre", type=int, default=None, help="the first N cases of every centre")
    parser.add_argument("--plans", default="plans", help="plans name whose small_foci section is used")
    parser.add_argument("--fp-budget", type=float, default=None,
                        help="decoys above the threshold per training case (default: the plans')")
    parser.add_argument("--settings", default=None, help="JSON of FociSettings fields overriding the plans'")
    parser.add_argument("--brain-margin-mm", type=float, default=None, help="default: the plans' (else 10)")
    parser.add_argument("--mimics", action="store_true",
                        help="paint vessel and dural mimics into every T1c and add their false positives per setting")
    parser.add_argument("--mimic-vessels", type=int, default=3, help="vessel mimics per case (with --mimics)")
    parser.add_argument("--mimic-peak", type=float, default=None,
                        help="every mimic's largest weight (default: its partial volume's; the cohort renders its "
                             "micro-lesions with 0.75-1)")
    parser.add_argument("--dura-depth-mm", type=float, default=0.0,
                        help="the dural sheet starts this far below the brain region's surface (default 0: on it)")
    parser.add_argument("-np", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from glmil_auto.dataset.raw_dataset import RawDataset
    from glmil_auto.evaluation.prediction_metrics import truth_for_dataset

    raw = RawDataset.from_identifier(args.dataset)
    _, truth = truth_for_dataset(raw.folder)
    if truth is None:
        raise SystemExit(f"{raw.folder} has no truth file: detection quality needs the synthetic cohort's truth")
    planned, brain_margin = planned_settings(raw.name, args.plans)
    planned.update(json.loads(args.settings or "{}"))
    fp_budget = float(planned.pop("false_positives_per_case") if args.fp_budget is None else args.fp_budget)
    planned.pop("false_positives_per_case", None)
    settings = planned
    args.fp_budget = fp_budget
    args.brain_margin_mm = args.brain_margin_mm if args.brain_margin_mm is not None else (brain_margin or 10.0)
    column = raw.spec.group_column
    jobs, centres, per_centre = [], {}, Counter()
    for split in ("Tr", "Ts"):
        if not raw.has_split(split):
            continue
        table_ = raw.clinical_table(split)
        for case in raw.cases(split):
            centre = str(table_.loc[case, column]) if column and column in table_ else split
            if args.cases_per_centre is not None and per_centre[centre] >= args.cases_per_centre:
                continue
            centres[case] = centre
            per_centre[centre] += 1
            foci = [m["centre_world_mm"] for m in truth["cases"][case]["micro_lesions"]]
            jobs.append((str(raw.folder), case, split, settings, foci, args.brain_margin_mm)
                        + (({"vessels": args.mimic_vessels, "peak": args.mimic_peak,
                              "dura_depth_mm": args.dura_depth_mm},) if args.mimics else ()))
    started = time.perf_counter()
    with ProcessPoolExecutor(max(1, args.np)) as pool:
        records = list(pool.map(case_record, jobs))
    training = [r for r in records if r["split"] == "Tr"]
    from glmil_auto.preprocessing.small_foci import decoy_threshold

    threshold = decoy_threshold([r["decoys"] for r in training], args.fp_budget, settings["floor"])
    rows = {}
    for centre in sorted(set(centres.values())):
        rows[centre] = centre_row([r for r in records if centres[r["case"]] == centre], threshold)
    print(table(rows, threshold))
    result = {"threshold": threshold, "settings": settings, "fp_budget": args.fp_budget, "centres": rows}
    if args.mimics:
        result["mimics"] = mimic_results(records, centres, settings, args.fp_budget)
        result["mimics"]["options"] = {"vessels": args.mimic_vessels, "peak": args.mimic_peak,
                                       "dura_depth_mm": args.dura_depth_mm}
        print("\n" + mimic_table(result["mimics"]["centres"]))
        print("\npainted per centre: " + "; ".join(
            f"{c} {p['vessels_per_case']:.2f} vessels/case (peak weight {p['vessel_peak_weight']:.2f}), "
            f"{p['dura_per_case']:.2f} dura/case (peak weight {p['dura_peak_weight']:.2f})"
            for c, p in result["mimics"]["painted"].items()))
    print(f"\n{len(records)} cases in {time.perf_counter() - started:.0f} s with {args.np} processes; settings {settings}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
