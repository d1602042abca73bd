"""A raw dataset for ``test_foci_learning.py``: distant failure follows uncontoured small foci only.

Pure numpy + SimpleITK, seeded, written to the raw dataset contract (``imagesTr/{case}_0000.nii.gz``,
``labelsTr/{case}.nii.gz``, ``clinicalTr.csv``, ``dataset.json``; see documentation/raw_dataset_format.md).

Every case is one T1c volume of ``SHAPE`` voxels at ``SPACING_MM`` isotropic: a brain-like
ellipsoid head (bright scalp, dark skull, then brain with a smooth grey/white-matter texture), a
smooth multiplicative bias field, Rician noise, and a per-case scanner gain and offset (int16
storage). Each case holds exactly ONE contoured enhancing lesion: a sphere of
``LESION_RADIUS_MM`` centred on a voxel centre, so its mask is the same ``LESION_VOXELS`` voxels in
every case (same count, same volume), at a random place in the brain.

The label (``distant_failure``) is the only thing the foci carry: a positive case holds 3-6
uncontoured enhancing foci (radius 1.1-1.5 mm, partial volume rendered by supersampling, about as
bright as the lesion), a negative case 0 or 1. The foci are never in the mask, lie deep in the brain
(at least ``FOCUS_MIN_DEPTH_MM`` below the head surface, 10 mm inside the brain) and at least
``FOCUS_LESION_GAP_MM`` from the lesion's surface. The two clinical columns (``age``, ``kps``) are
pure noise, independent of the label. No survival endpoint: the contract needs none.

:func:`write_foci_dataset` returns the truth per case (label, focus centres in world mm, lesion
centre, head centre and semi-axes), so that a test can check the detector and the grids against it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

NAME = "Dataset931_FociOnly"
SHAPE = (60, 60, 60)  # (Z, Y, X)
SPACING_MM = 1.5
HEAD_SEMI_AXES_MM = (39.0, 41.0, 35.0)  # (x, y, z), scaled per case by 0.97-1.03
SCALP_MM, SKULL_MM = 4.0, 4.0  # layers below the head surface; the brain starts at 8 mm
T1C = {"scalp": 1.10, "skull": 0.12, "brain": 0.90}
TEXTURE_SD, TEXTURE_SIGMA_MM = 0.04, 3.0  # grey/white matter pattern of the brain
BIAS_SD = 0.05
NOISE_SD = (0.025, 0.035)  # Rician sigma, fraction of the brain signal
LESION_T1C = 1.60  # enhancing lesion (the foci draw their brightness around it)
LESION_RADIUS_MM = 4.0
LESION_DEPTH_MM = (14.0, 20.0)  # of the lesion's centre below the head surface (the brain starts at 8 mm)
FOCUS_RADIUS_MM = (1.1, 1.5)
FOCUS_BRIGHTNESS = (0.9, 1.1)  # times the lesion's enhancement
FOCUS_MIN_DEPTH_MM = 18.0
FOCUS_LESION_GAP_MM = 10.0  # from the lesion's surface
FOCUS_MIN_SEPARATION_MM = 8.0
POSITIVE_FOCI = (3, 6)
NEGATIVE_FOCI = (0, 1)
SUPERSAMPLING = 5  # sub-samples per axis for partial volume

DATASET_JSON = {
    "name": "FociOnly",
    "channel_names": {"0": "T1c"},
    "labels": {"background": 0, "metastasis": 1},
    "numTraining": 0,  # set by write_foci_dataset
    "file_ending": ".nii.gz",
    "case_column": "case_id",
    "lesion_labels": [1],
    "clinical_features": {"age": "numeric", "kps": "numeric"},
    "endpoints": {"distant_failure": {"type": "binary"}},
}


@dataclass
class CaseTruth:
    case_id: str
    label: int
    foci_world_mm: list[tuple[float, float, float]]  # (x, y, z)
    lesion_world_mm: tuple[float, float, float]
    lesion_voxels: int
    head_centre_world_mm: tuple[float, float, float]
    head_semi_axes_mm: tuple[float, float, float]  # (x, y, z)


def _ball_voxels(radius_mm: float) -> int:
    half = int(np.ceil(radius_mm / SPACING_MM))
    grid = np.indices((2 * half + 1,) * 3) - half
    return int((np.sqrt((grid**2).sum(axis=0)) * SPACING_MM <= radius_mm).sum())


LESION_VOXELS = _ball_voxels(LESION_RADIUS_MM)


def head_depth_mm(points_zyx_mm: np.ndarray, semi_axes_zyx: np.ndarray) -> np.ndarray:
    """Approximate depth below the surface of the ellipsoid centred at 0 (points and semi-axes in the
    same axis order): (1 - normalised radius) x the distance from the centre to the surface along the ray."""
    rho = np.sqrt(np.sum((points_zyx_mm / semi_axes_zyx) ** 2, axis=-1))
    direction = points_zyx_mm / np.maximum(rho[..., None], 1e-6)
    local = np.sqrt(np.sum(direction**2, axis=-1))  # distance to the surface along the ray at rho = 1
    return (1.0 - rho) * local


def _smooth_field(rng: np.random.Generator, sigma_voxels: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(SHAPE), sigma_voxels, mode="reflect")
    return field / max(float(field.std()), 1e-8)


def _fraction_inside(centre_zyx_vox: np.ndarray, radius_mm: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per voxel of the box [lo, hi) the fraction of its volume inside the sphere (supersampled)."""
    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING - 0.5
    axes = [(np.arange(a, b)[:, None] + offsets[None, :] - c) * SPACING_MM for a, b, c in zip(lo, hi, centre_zyx_vox)]
    dz = axes[0][:, None, None, :, None, None] ** 2
    dy = axes[1][None, :, None, None, :, None] ** 2
    dx = axes[2][None, None, :, None, None, :] ** 2
    return ((dz + dy + dx) <= radius_mm**2).mean(axis=(3, 4, 5))


def _draw_positions(rng: np.random.Generator, n: int, allowed: np.ndarray, lesion_vox: np.ndarray) -> list[np.ndarray]:
    """``n`` focus centres (continuous voxel indices): deep enough, far from the lesion, apart."""
    candidates = np.argwhere(allowed)
    chosen: list[np.ndarray] = []
    for _ in range(10000):
        if len(chosen) == n:
            break
        point = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, 3)
        if np.linalg.norm((point - lesion_vox) * SPACING_MM) < LESION_RADIUS_MM + FOCUS_LESION_GAP_MM:
            continue
        if any(np.linalg.norm((point - c) * SPACING_MM) < FOCUS_MIN_SEPARATION_MM for c in chosen):
            continue
        chosen.append(point)
    if len(chosen) < n:
        raise RuntimeError(f"could not place {n} foci")
    return chosen


def render_case(rng: np.random.Generator, n_foci: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(T1c int16 (Z, Y, X), mask uint8, truth in voxel indices) of one case."""
    centre_vox = (np.asarray(SHAPE) - 1) / 2.0 + rng.uniform(-1.0, 1.0, 3)
    semi_axes = np.asarray(HEAD_SEMI_AXES_MM[::-1]) * rng.uniform(0.97, 1.03)  # (z, y, x)
    grid = np.indices(SHAPE).astype(np.float32).transpose(1, 2, 3, 0)
    depth = head_depth_mm((grid - centre_vox) * SPACING_MM, semi_axes)

    def layer(start_mm: float) -> np.ndarray:  # partial volume over one voxel edge
        return np.clip((depth - start_mm) / SPACING_MM + 0.5, 0.0, 1.0)

    head, skull, brain = layer(0.0), layer(SCALP_MM), layer(SCALP_MM + SKULL_MM)
    brain_signal = T1C["brain"] * (1.0 + TEXTURE_SD * _smooth_field(rng, TEXTURE_SIGMA_MM / SPACING_MM))
    image = T1C["scalp"] * (head - skull) + T1C["skull"] * (skull - brain) + brain_signal * brain

    # the lesion: centred on a voxel centre, so that its mask is always the same LESION_VOXELS voxels
    lesion_allowed = (depth >= LESION_DEPTH_MM[0]) & (depth <= LESION_DEPTH_MM[1])
    lesion_vox = np.argwhere(lesion_allowed)[rng.integers(int(lesion_allowed.sum()))].astype(float)
    distance = np.sqrt((((grid - lesion_vox) * SPACING_MM) ** 2).sum(axis=-1))
    mask = (distance <= LESION_RADIUS_MM).astype(np.uint8)
    lo = np.maximum(lesion_vox.astype(int) - 4, 0)
    hi = np.minimum(lesion_vox.astype(int) + 5, SHAPE)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    enhancement = LESION_T1C * rng.uniform(0.95, 1.05)
    fraction = _fraction_inside(lesion_vox, LESION_RADIUS_MM, lo, hi)
    image[box] = (1.0 - fraction) * image[box] + fraction * enhancement

    # the uncontoured foci
    foci = _draw_positions(rng, n_foci, depth >= FOCUS_MIN_DEPTH_MM, lesion_vox)
    for point in foci:
        radius = rng.uniform(*FOCUS_RADIUS_MM)
        lo = np.maximum(np.floor(point - radius / SPACING_MM).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(point + radius / SPACING_MM).astype(int) + 2, SHAPE)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        fraction = _fraction_inside(point, radius, lo, hi)
        brightness = enhancement * rng.uniform(*FOCUS_BRIGHTNESS)
        image[box] = (1.0 - fraction) * image[box] + fraction * brightness

    bias = np.exp(BIAS_SD * _smooth_field(rng, 12.0))
    sigma = rng.uniform(*NOISE_SD)
    noisy = np.abs(image * bias + sigma * rng.standard_normal(SHAPE) + 1j * sigma * rng.standard_normal(SHAPE))
    gain, offset = rng.uniform(700.0, 1300.0), rng.uniform(0.0, 50.0)
    t1c = np.round(gain * noisy + offset).astype(np.int16)
    return t1c, mask, {"foci_vox": foci, "lesion_vox": lesion_vox, "head_vox": centre_vox,
                       "semi_axes_xyz": tuple(float(a) for a in semi_axes[::-1])}


def _write(array: np.ndarray, path: Path, origin: tuple[float, float, float]) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((SPACING_MM,) * 3)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def _world(index_zyx: np.ndarray, origin_xyz: tuple[float, float, float]) -> tuple[float, float, float]:
    return tuple(float(o + i * SPACING_MM) for o, i in zip(origin_xyz, np.asarray(index_zyx)[::-1]))


def write_foci_dataset(root: Path, n_cases: int, seed: int, name: str = NAME) -> tuple[Path, list[CaseTruth]]:
    """Write ``n_cases`` training cases (half of them positive, alternating) under ``root/name``."""
    folder = Path(root) / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for k in range(n_cases):
        case = f"FOC_{k:04d}"
        label = k % 2
        n_foci = int(rng.integers(POSITIVE_FOCI[0], POSITIVE_FOCI[1] + 1) if label else
                     rng.integers(NEGATIVE_FOCI[0], NEGATIVE_FOCI[1] + 1))
        t1c, mask, voxels = render_case(rng, n_foci)
        origin = tuple(float(v) for v in rng.uniform(-60.0, -40.0, 3))
        _write(t1c, folder / "imagesTr" / f"{case}_0000.nii.gz", origin)
        _write(mask, folder / "labelsTr" / f"{case}.nii.gz", origin)
        rows.append([case, f"{rng.normal(62.0, 10.0):.1f}", f"{rng.normal(80.0, 10.0):.0f}", str(label)])
        truth.append(CaseTruth(case, label, [_world(p, origin) for p in voxels["foci_vox"]],
                               _world(voxels["lesion_vox"], origin), int(mask.sum()),
                               _world(voxels["head_vox"], origin), voxels["semi_axes_xyz"]))
    with open(folder / "clinicalTr.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "age", "kps", "distant_failure"])
        writer.writerows(rows)
    (folder / "dataset.json").write_text(json.dumps({**DATASET_JSON, "numTraining": n_cases}, indent=2))
    return folder, truth
