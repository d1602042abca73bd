"""Rendering one case into T1c, FLAIR and the lesion mask on its centre's grid.

Pipeline: grid (centre spacing x size factor, centre orientation, per-case origin) ->
partial-volume tissue fractions of the phantom -> tissue intensities -> FLAIR oedema ->
lesions (enhancing rim or solid, necrotic core, texture whose amplitude is the lesion's
heterogeneity) -> micro-lesions (enhancing spots, never in the mask) -> smooth multiplicative
bias field -> Rician noise -> the centre's intensity scale and offset, quantised like the
scanner's stored values (integers, or 2**-12 for the floating-point centre; this also keeps the
gzip-compressed files small).

Relative intensities (white matter = 1): T1c scalp fat 1.15, skull 0.12, CSF 0.22, GM 0.72,
WM 1.0, enhancing lesion 1.65 x centre contrast x (1 - 0.35 h) with texture amplitude 0.9 h,
necrotic core 0.30; FLAIR scalp 0.85, skull 0.08, CSF 0.07 (suppressed), GM 0.92, WM 0.70,
lesion 0.95, necrosis 1.05, oedema up to +0.55 in white matter.

Mask rules (so that lesion = one 26-connected component): every lesion keeps only the largest
26-connected part of its voxels, may not touch (26-neighbourhood) an earlier lesion, and a
lesion smaller than a voxel gets the voxel nearest its centre. Every mask voxel is rendered with
at least 60 % lesion signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.synthetic.anatomy import head_to_world_matrix, tissue_fractions
from glmil_auto.synthetic.cases import CaseSpec
from glmil_auto.synthetic.centres import grid_shape_xyz, grid_spacing
from glmil_auto.synthetic.lesions import Lesion

T1C = {"scalp": 1.15, "skull": 0.12, "csf": 0.22, "gm": 0.72, "wm": 1.0}
FLAIR = {"scalp": 0.85, "skull": 0.08, "csf": 0.07, "gm": 0.92, "wm": 0.70}
LESION_T1C, NECROSIS_T1C, LESION_FLAIR, NECROSIS_FLAIR = 1.65, 0.30, 0.95, 1.05
OEDEMA_FLAIR, OEDEMA_T1C = 0.55, -0.12
MICRO_T1C, MICRO_FLAIR = 1.9, 0.95
TEXTURE_AMPLITUDE, HETEROGENEITY_DIMMING = 0.9, 0.35
HEAD_BOX = ((-100.0, 100.0), (-120.0, 115.0), (-105.0, 95.0))  # head frame mm, generous
FULL = np.ones((3, 3, 3), dtype=bool)
CHUNK_VOXELS = 1 << 18


@dataclass
class RenderedCase:
    t1c: np.ndarray  # float32 (Z, Y, X), raw scanner units
    flair: np.ndarray
    mask: np.ndarray  # uint8 (Z, Y, X), 1 = metastasis
    grid: Geometry
    lesion_labels: list[int]  # per spec lesion: its component label in ndimage.label(mask, 3x3x3)
    lesion_voxels: list[int]
    lesion_centroids_world: list[tuple[float, float, float]]


def make_grid(spec: CaseSpec, factor: float, rng: np.random.Generator) -> Geometry:
    """The centre's grid, centred on the head with a per-case jitter (origins vary per case)."""
    profile = spec.plan.profile
    spacing = grid_spacing(profile, factor)
    shape_xyz = grid_shape_xyz(profile, factor)
    h = head_to_world_matrix(spec.anatomy)
    centre = np.asarray(spec.anatomy.world_centre) + h @ np.array([0.0, -5.0, -5.0]) + rng.normal(0.0, 3.0, 3)
    m = np.asarray(profile.direction).reshape(3, 3) * np.asarray(spacing)[None, :]
    origin = centre - m @ ((np.asarray(shape_xyz) - 1) / 2.0)
    return Geometry(tuple(reversed(shape_xyz)), spacing, tuple(float(o) for o in origin), profile.direction)


def _head_affine(spec: CaseSpec, grid: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """``p_head = A @ index_xyz + b``."""
    ht = head_to_world_matrix(spec.anatomy).T
    a = ht @ grid.matrix
    b = ht @ (np.asarray(grid.origin) - np.asarray(spec.anatomy.world_centre))
    return a, b


def _coords(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
    """Head-frame coordinates (float32 arrays shaped (Z, Y, X)) of the index box [lo, hi) (x, y, z)."""
    i = np.arange(lo[0], hi[0], dtype=np.float32)[None, None, :]
    j = np.arange(lo[1], hi[1], dtype=np.float32)[None, :, None]
    k = np.arange(lo[2], hi[2], dtype=np.float32)[:, None, None]
    a32 = a.astype(np.float32)
    return tuple(a32[r, 0] * i + a32[r, 1] * j + a32[r, 2] * k + np.float32(b[r]) for r in range(3))


def _index_box(grid: Geometry, a: np.ndarray, b: np.ndarray, centre_head: np.ndarray, radius: float, pad: int = 1):
    """Index bounds (x, y, z), clipped to the grid, of a sphere given in head-frame mm."""
    idx = np.linalg.solve(a, np.asarray(centre_head) - b)
    ext = radius / np.asarray(grid.spacing)
    shape_xyz = np.asarray(grid.shape[::-1])
    lo = np.clip(np.floor(idx - ext).astype(int) - pad, 0, shape_xyz)
    hi = np.clip(np.ceil(idx + ext).astype(int) + 1 + pad, 0, shape_xyz)
    return lo, hi, idx


def _head_box(grid: Geometry, a: np.ndarray, b: np.ndarray, scale: float):
    corners = np.array([[x, y, z] for x in HEAD_BOX[0] for y in HEAD_BOX[1] for z in HEAD_BOX[2]]) * scale
    idx = np.linalg.solve(a, (corners - b).T).T
    shape_xyz = np.asarray(grid.shape[::-1])
    lo = np.clip(np.floor(idx.min(axis=0)).astype(int), 0, shape_xyz)
    hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 1, 0, shape_xyz)
    return lo, hi


def _sl(lo, hi):
    return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))


def _lesion_radius_field(les: Lesion, x, y, z) -> np.ndarray:
    """Normalised lesion radius (< 1 inside) with inward lobulation."""
    c = np.asarray(les.centre, dtype=np.float32)
    d = (x - c[0], y - c[1], z - c[2])
    axes = np.asarray(les.axes, dtype=np.float32)
    local = [axes[r, 0] * d[0] + axes[r, 1] * d[1] + axes[r, 2] * d[2] for r in range(3)]
    rl = np.sqrt(sum((local[r] / np.float32(les.semi_axes[r])) ** 2 for r in range(3)))
    norm = np.maximum(np.sqrt(sum(v * v for v in local)), np.float32(1e-3))
    g = sum(np.sin(np.float32(2.5 * np.pi) * local[r] / norm + np.float32(les.lobe_phase[r])) for r in range(3)) / 3.0
    return rl * (1.0 + np.float32(les.lobulation) * 0.5 * (1.0 + g))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: np.ndarray) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="reflect")
    sd = float(n.std())
    return n / sd if sd > 0 else n


def _smooth_1d(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random smooth profile over [0, 1] (two cosine modes), unit-ish amplitude."""
    t = np.linspace(0.0, 1.0, n)
    a = rng.normal(0.0, 1.0, 2)
    ph = rng.uniform(0.0, 2 * np.pi, 2)
    return a[0] * np.cos(np.pi * t + ph[0]) + 0.5 * a[1] * np.cos(2 * np.pi * t + ph[1])


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """Smooth multiplicative field exp(f_z + f_y + f_x + f_z * f_x / 2), log-sd about ``strength``.

    Built from 1-D profiles by broadcasting, so it costs a few passes over the volume.
    """
    fz, fy, fx = (_smooth_1d(rng, n) for n in shape)
    log_b = fz[:, None, None] + fy[None, :, None] + fx[None, None, :] + 0.5 * fz[:, None, None] * fx[None, None, :]
    sd = float(np.sqrt(fz.var() + fy.var() + fx.var())) or 1.0
    return np.exp((strength / sd) * log_b).astype(np.float32)


def render_case(spec: CaseSpec, factor: float, rng: np.random.Generator) -> RenderedCase:
    """Render T1c, FLAIR and the lesion mask of one case. ``factor`` multiplies the spacings."""
    profile = spec.plan.profile
    grid = make_grid(spec, factor, rng)
    a, b = _head_affine(spec, grid)
    edge = float(np.prod(grid.spacing) ** (1.0 / 3.0))
    t1c = np.zeros(grid.shape, np.float32)
    flair = np.zeros(grid.shape, np.float32)
    wm = np.zeros(grid.shape, np.float32)
    gm = np.zeros(grid.shape, np.float32)
    lo, hi = _head_box(grid, a, b, max(spec.anatomy.scale))
    # slabs of ~CHUNK_VOXELS keep the temporaries small (memory and cache)
    step = max(1, CHUNK_VOXELS // max(1, int((hi[0] - lo[0]) * (hi[1] - lo[1]))))
    for k0 in range(lo[2], hi[2], step):
        slo, shi = np.array([lo[0], lo[1], k0]), np.array([hi[0], hi[1], min(k0 + step, hi[2])])
        sl = _sl(slo, shi)
        frac = tissue_fractions(spec.anatomy, *_coords(a, b, slo, shi), edge)
        t1c[sl] = sum(frac[k] * np.float32(v) for k, v in T1C.items())
        flair[sl] = sum(frac[k] * np.float32(v) for k, v in FLAIR.items())
        wm[sl], gm[sl] = frac["wm"], frac["gm"]

    contrast = np.float32(profile.lesion_contrast)
    label = np.zeros(grid.shape, np.int16)
    forbidden = np.zeros(grid.shape, bool)  # lesion voxels and their 26-neighbours
    for n, les in enumerate(spec.lesions, start=1):
        r = max(les.semi_axes)
        reach = r * (1.0 + les.lobulation) + les.oedema_mm + 2.0 * edge
        blo, bhi, idx = _index_box(grid, a, b, np.asarray(les.centre), reach)
        bs = _sl(blo, bhi)
        x, y, z = _coords(a, b, blo, bhi)
        rl = _lesion_radius_field(les, x, y, z)
        mean_r = np.float32(np.mean(les.semi_axes))
        dist = (rl - 1.0) * mean_r  # approx mm outside the lesion surface
        oedema = np.clip(1.0 - dist / np.float32(max(les.oedema_mm, 1e-3)), 0.0, 1.0)
        oedema *= wm[bs] + 0.5 * gm[bs]
        flair[bs] += np.float32(OEDEMA_FLAIR) * oedema
        t1c[bs] += np.float32(OEDEMA_T1C) * oedema
        in_mask = _add_lesion_to_mask(label, forbidden, bs, rl <= 1.0, idx[::-1] - blo[::-1], n, spec.plan.case_id)
        # partial volume, but every mask voxel (also a sub-voxel lesion's) shows >= 60 % lesion
        inside = np.maximum(np.clip(0.5 - dist / np.float32(edge), 0.0, 1.0), np.float32(0.6) * in_mask)
        core = np.zeros_like(inside)
        if les.necrosis:
            core = np.clip(0.5 - (rl - np.float32(les.necrosis_fraction)) * mean_r / np.float32(edge), 0.0, 1.0)
        tex = 1.0 + np.float32(TEXTURE_AMPLITUDE * les.heterogeneity) * _smooth_noise(
            rng, inside.shape, np.maximum(1.5 / np.asarray(grid.spacing)[::-1], 0.5)
        )
        enh = contrast * np.float32(LESION_T1C * (1.0 - HETEROGENEITY_DIMMING * les.heterogeneity)) * np.maximum(tex, 0.15)
        solid = inside * (1.0 - core)
        t1c[bs] = (1.0 - inside) * t1c[bs] + solid * enh + inside * core * np.float32(NECROSIS_T1C)
        flair[bs] = (1.0 - inside) * flair[bs] + solid * np.float32(LESION_FLAIR) + inside * core * np.float32(NECROSIS_FLAIR)

    _add_micro_lesions(spec, grid, a, b, t1c, flair, contrast, edge)
    t1c *= _bias_field(rng, grid.shape, profile.bias_strength)
    flair *= _bias_field(rng, grid.shape, 0.7 * profile.bias_strength)
    sigma = np.float32(profile.noise)
    for img in (t1c, flair):
        n1 = rng.standard_normal(grid.shape, dtype=np.float32)
        n2 = rng.standard_normal(grid.shape, dtype=np.float32)
        img[...] = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    q = np.float32(profile.quantum)
    t1c = np.round((t1c * np.float32(profile.t1c_scale) + np.float32(profile.t1c_offset)) / q) * q
    flair = np.round((flair * np.float32(profile.flair_scale) + np.float32(profile.flair_offset)) / q) * q
    return _finish(spec, grid, t1c, flair, label)


def _add_lesion_to_mask(label, forbidden, bs, inside, centre_idx_zyx, n, case_id) -> np.ndarray:
    """Write lesion ``n`` into the label volume following the mask rules (module docstring);
    returns its voxels within the box ``bs``."""
    allowed = ~forbidden[bs]
    m = inside & allowed
    if m.any():
        comp, k = ndimage.label(m, structure=FULL)
        if k > 1:
            sizes = np.bincount(comp.ravel())[1:]
            m = comp == (1 + int(np.argmax(sizes)))
    else:
        grid_idx = np.indices(m.shape).reshape(3, -1).T
        d2 = ((grid_idx - centre_idx_zyx) ** 2).sum(axis=1)
        order = np.argsort(d2, kind="stable")
        ok = allowed.ravel()[order]
        if not ok.any():
            raise RuntimeError(f"{case_id}: lesion {n} has no free voxel at this resolution")
        m = np.zeros(m.shape, bool)
        m.ravel()[order[int(np.argmax(ok))]] = True
    label[bs][m] = n
    forbidden[bs] |= ndimage.binary_dilation(m, structure=FULL)
    # the dilation is clipped at the box border; lesions never reach it (the box has margins)
    return m


def _add_micro_lesions(spec, grid, a, b, t1c, flair, contrast, edge):
    """Enhancing Gaussian spots, never in the mask.

    An idealised point-spread function: per image axis sigma = max(0.6 r, 0.6 spacing), scaled
    so that the voxel nearest the centre gets weight w = clip(d / voxel size, 0.75, 1) and the
    intensity (1 - w) * tissue + w * 1.9 * contrast: a 1-3 mm lesion stays visible on coarse grids.
    """
    spacing = np.asarray(grid.spacing)
    shape_xyz = np.asarray(grid.shape[::-1])
    for micro in spec.micro_lesions:
        r = micro.diameter_mm / 2.0
        sigma = np.maximum(0.6 * r, 0.6 * spacing)  # mm, per image axis (x, y, z)
        centre = np.linalg.solve(a, np.asarray(micro.centre) - b)  # continuous index (x, y, z)
        nearest = np.clip(np.round(centre), 0, shape_xyz - 1)
        half = np.ceil(3.0 * sigma / spacing).astype(int)
        lo = np.clip(nearest.astype(int) - half, 0, shape_xyz)
        hi = np.clip(nearest.astype(int) + half + 1, 0, shape_xyz)
        axes = [((np.arange(lo[k], hi[k]) - centre[k]) * spacing[k] / sigma[k]) ** 2 for k in range(3)]
        g = np.exp(-0.5 * (axes[2][:, None, None] + axes[1][None, :, None] + axes[0][None, None, :]))
        g0 = np.exp(-0.5 * float(((nearest - centre) * spacing / sigma) ** 2 @ np.ones(3)))
        peak = float(np.clip(micro.diameter_mm / edge, 0.75, 1.0))
        w = np.minimum(np.float32(peak) * (g / g0).astype(np.float32), np.float32(1.0))
        bs = _sl(lo, hi)
        t1c[bs] = (1.0 - w) * t1c[bs] + w * (contrast * np.float32(MICRO_T1C))
        flair[bs] = (1.0 - w) * flair[bs] + w * np.float32(MICRO_FLAIR)


def _finish(spec, grid, t1c, flair, label) -> RenderedCase:
    comp, k = ndimage.label(label > 0, structure=FULL)
    n = len(spec.lesions)
    if k != n:
        raise RuntimeError(f"{spec.plan.case_id}: mask has {k} components for {n} lesions")
    labels, voxels, centroids = [], [], []
    idx = ndimage.find_objects(label)
    for les_n in range(1, n + 1):
        sl = idx[les_n - 1]
        sub = label[sl] == les_n
        comp_label = int(comp[sl][sub][0])
        pts = np.argwhere(sub) + np.array([s.start for s in sl])
        labels.append(comp_label)
        voxels.append(int(sub.sum()))
        centroids.append(tuple(float(v) for v in grid.index_to_world(pts.mean(axis=0))))
    return RenderedCase(
        t1c=t1c.astype(np.float32),
        flair=flair.astype(np.float32),
        mask=(label > 0).astype(np.uint8),
        grid=grid,
        lesion_labels=labels,
        lesion_voxels=voxels,
        lesion_centroids_world=centroids,
    )
