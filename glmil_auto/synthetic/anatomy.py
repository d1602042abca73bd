"""Analytic head phantom: per-case parameters, signed distances and tissue fractions.

Everything is defined by ellipsoids with smooth perturbations in a *head frame* (mm; x towards
the patient's left, y anterior, z superior; origin near the centre of the cerebrum). Each
structure gives an approximate signed distance in mm (negative inside), computed to first order
as ``(rho - 1) / |grad rho|`` for a normalised ellipsoid radius ``rho``. The same functions serve
two purposes:

* rendering: evaluated on every voxel of a grid to get partial-volume tissue fractions;
* case simulation without images: evaluated at candidate lesion centres to know whether a
  lesion sits in the posterior fossa and how far its surface is from the pial surface and the
  ventricles. Outcomes can therefore be simulated on huge cohorts without rasterising anything,
  and the rendered image shows exactly the geometry the outcome model saw.

Per-case variation: global size and per-axis scale, head rotation (yaw/pitch/roll), low-order
shape perturbation of the cerebrum, cortical thickness, sulcal pattern (random frequencies,
directions and phases), and age-driven atrophy (wider ventricles, sulci and subarachnoid space).
Structures are defined in *template* coordinates ``q = p / scale`` (template mm ~ physical mm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Template geometry (mm). Centres are (x, y, z); semi-axes (x, y, z).
CEREBRUM_CENTRE = (0.0, 0.0, 8.0)
CEREBRUM_AXES = (65.0, 81.0, 54.0)
CEREBELLUM_CENTRE = (0.0, -50.0, -38.0)
CEREBELLUM_AXES = (50.0, 30.0, 22.0)
BRAINSTEM_CENTRE = (0.0, -18.0, -40.0)
BRAINSTEM_AXES = (12.0, 13.0, 30.0)
DEEP_GM_CENTRES = ((14.0, -2.0, 2.0), (-14.0, -2.0, 2.0))
DEEP_GM_AXES = (9.0, 17.0, 10.0)
THIRD_VENTRICLE = ((0.0, -4.0, 0.0), (1.5, 12.0, 8.0))
FOURTH_VENTRICLE = ((0.0, -34.0, -38.0), (6.0, 4.0, 7.0))
TENTORIUM_NOTCH_Y = -15.0  # the tentorium exists posterior to this y
TENTORIUM_Z0 = -8.0  # height of the tentorium at the notch
TENTORIUM_SLOPE = 0.42  # dz/dy: the tentorium falls towards the occiput
TENTORIUM_GAP_MM = 1.5  # CSF + dura between cerebrum and cerebellum
PONS_TOP_Z = -15.0  # brainstem below this is infratentorial (pons, medulla)
FISSURE_Z_ABOVE_CALLOSUM = 28.0  # interhemispheric fissure reaches down to here mid-brain


@dataclass(frozen=True)
class AnatomyParams:
    """Per-case parameters of the head phantom (all lengths in mm)."""

    scale: tuple[float, float, float]  # per-axis size factor, template -> physical
    rotation: tuple[tuple[float, float, float], ...]  # 3x3, head frame -> world (before LPS flip)
    world_centre: tuple[float, float, float]  # world position (LPS mm) of the head-frame origin
    shape_coeffs: tuple[float, ...]  # 5 low-order perturbation coefficients of the cerebrum
    cortex_mm: float  # cortical grey-matter thickness
    csf_mm: float  # subarachnoid space thickness (pial surface to inner skull)
    skull_mm: float
    scalp_mm: float
    ventricle_width_mm: float  # half width of each lateral ventricle
    sulcal_halfwidth_mm: float
    sulcal_depth_mm: float
    fissure_halfwidth_mm: float
    gyral_freqs: tuple[float, float, float]
    gyral_dirs: tuple[tuple[float, float, float], ...]  # 3 unit vectors
    gyral_phases: tuple[float, float, float]

    @property
    def mean_scale(self) -> float:
        return float(np.prod(self.scale) ** (1.0 / 3.0))


def _rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cz, sz = np.cos(yaw), np.sin(yaw)
    cx, sx = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def sample_anatomy(rng: np.random.Generator, age: float) -> AnatomyParams:
    """Draw one head. Older patients get wider ventricles, sulci and subarachnoid space."""
    atrophy = float(np.clip((age - 40.0) / 40.0, 0.0, 1.2))
    size = float(np.clip(rng.normal(1.0, 0.045), 0.88, 1.12))
    scale = tuple(float(size * np.clip(rng.normal(1.0, 0.025), 0.94, 1.06)) for _ in range(3))
    angles = np.deg2rad(rng.normal(0.0, [4.0, 5.0, 3.0]))
    rotation = _rotation_matrix(*angles)
    world_centre = (float(rng.normal(0.0, 4.0)), float(rng.normal(-15.0, 6.0)), float(rng.normal(20.0, 6.0)))
    dirs = rng.normal(size=(3, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return AnatomyParams(
        scale=scale,
        rotation=tuple(tuple(float(v) for v in row) for row in rotation),
        world_centre=world_centre,
        shape_coeffs=tuple(float(c) for c in rng.normal(0.0, 0.035, size=5)),
        cortex_mm=float(np.clip(rng.normal(2.8, 0.25), 2.2, 3.4)),
        csf_mm=float(1.8 + 1.6 * atrophy + rng.uniform(0.0, 0.6)),
        skull_mm=float(rng.uniform(5.0, 7.5)),
        scalp_mm=float(rng.uniform(4.5, 7.0)),
        ventricle_width_mm=float(np.clip(3.5 + 3.5 * atrophy + rng.normal(0.0, 0.8), 2.5, 10.0)),
        sulcal_halfwidth_mm=float(0.6 + 0.9 * atrophy + rng.uniform(0.0, 0.3)),
        sulcal_depth_mm=float(rng.uniform(11.0, 15.0)),
        fissure_halfwidth_mm=float(1.0 + 0.8 * atrophy),
        gyral_freqs=tuple(float(f) for f in rng.uniform(3.5, 5.0, size=3)),
        gyral_dirs=tuple(tuple(float(v) for v in d) for d in dirs),
        gyral_phases=tuple(float(p) for p in rng.uniform(0.0, 2 * np.pi, size=3)),
    )


def head_to_world_matrix(anat: AnatomyParams) -> np.ndarray:
    """3x3 matrix mapping head-frame vectors (x left, y anterior, z superior) to LPS world."""
    flip = np.diag([1.0, -1.0, 1.0])  # anterior is -y in LPS
    return flip @ np.asarray(anat.rotation)


def head_to_world(anat: AnatomyParams, points: np.ndarray) -> np.ndarray:
    """World LPS mm of head-frame points ``(..., 3)``."""
    return np.asarray(points) @ head_to_world_matrix(anat).T + np.asarray(anat.world_centre)


def to_template(anat: AnatomyParams, x, y, z):
    """Head-frame physical mm -> template mm (undo the per-case size)."""
    sx, sy, sz = anat.scale
    return x / sx, y / sy, z / sz


def _ellipsoid_terms(x, y, z, centre, axes):
    """Normalised radius ``rho``, ``|grad rho|`` and the unit direction of an ellipsoid."""
    dx = (x - centre[0]) / axes[0]
    dy = (y - centre[1]) / axes[1]
    dz = (z - centre[2]) / axes[2]
    rho = np.sqrt(dx * dx + dy * dy + dz * dz)
    safe_rho = np.maximum(rho, 1e-6)
    grad = np.sqrt((dx / axes[0]) ** 2 + (dy / axes[1]) ** 2 + (dz / axes[2]) ** 2) / safe_rho
    return rho, np.maximum(grad, 1e-6), (dx / safe_rho, dy / safe_rho, dz / safe_rho)


def _ellipsoid(x, y, z, centre, axes):
    """Approximate signed distance (mm, negative inside) to an axis-aligned ellipsoid."""
    rho, grad, _ = _ellipsoid_terms(x, y, z, centre, axes)
    return (rho - 1.0) / grad


def tentorium_sd(y, z):
    """Signed distance to the infratentorial wedge (negative below the tentorium and posterior
    to the notch, positive above it)."""
    z_tent = TENTORIUM_Z0 + TENTORIUM_SLOPE * (y - TENTORIUM_NOTCH_Y)
    above = (z - z_tent) / np.sqrt(1.0 + TENTORIUM_SLOPE**2)
    return np.maximum(above, y - TENTORIUM_NOTCH_Y)


def cerebrum_sd(anat: AnatomyParams, x, y, z):
    """Signed distances to the cerebrum (a perturbed ellipsoid cut by the tentorium) and to the
    uncut ellipsoid, and the cortical depth (distance below the convexity and the tentorial
    surface, ignoring the notch edge, so that the cortex does not wrap around the midbrain)."""
    rho, grad, (nx, ny, nz) = _ellipsoid_terms(x, y, z, CEREBRUM_CENTRE, CEREBRUM_AXES)
    c = anat.shape_coeffs
    eps = c[0] * nx * ny + c[1] * ny * nz + c[2] * nx * nz + c[3] * (nx * nx - ny * ny) + c[4] * nz**3
    sd = (rho - 1.0 - eps) / grad
    tent = tentorium_sd(y, z)
    z_tent = TENTORIUM_Z0 + TENTORIUM_SLOPE * (y - TENTORIUM_NOTCH_Y)
    plane = np.where(y < TENTORIUM_NOTCH_Y, 0.5 * TENTORIUM_GAP_MM - (z - z_tent) / np.sqrt(1.0 + TENTORIUM_SLOPE**2), -1e3)
    return np.maximum(sd, 0.5 * TENTORIUM_GAP_MM - tent), sd, -np.maximum(sd, plane)


def cerebellum_sd(x, y, z):
    """Signed distance to the cerebellum: an ellipsoid kept below the tentorium."""
    sd = _ellipsoid(x, y, z, CEREBELLUM_CENTRE, CEREBELLUM_AXES)
    return np.maximum(sd, tentorium_sd(y, z) + 0.5 * TENTORIUM_GAP_MM)


def brainstem_sd(x, y, z):
    return _ellipsoid(x, y, z, BRAINSTEM_CENTRE, BRAINSTEM_AXES)


def fissure_sd(anat: AnatomyParams, x, y, z):
    """Signed distance to the interhemispheric fissure (a CSF slab at x = 0 above the callosum)."""
    floor = FISSURE_Z_ABOVE_CALLOSUM * (1.0 - 1.0 / (1.0 + np.exp(-(np.abs(y + 5.0) - 42.0) / 4.0)))
    return np.maximum(np.abs(x) - anat.fissure_halfwidth_mm, floor - z)


def ventricles_sd(anat: AnatomyParams, x, y, z):
    """Signed distance to the ventricular system (lateral, third and fourth ventricles)."""
    w = anat.ventricle_width_mm
    z_c = 16.0 - 0.008 * y * y
    axes = (w, 30.0, 6.0 + 0.6 * w)
    out = None
    for side in (1.0, -1.0):
        x_c = side * (w + 1.5 - 0.12 * np.minimum(y, 0.0))
        sd = _ellipsoid(x - x_c, y, z - z_c, (0.0, 0.0, 0.0), axes)
        out = sd if out is None else np.minimum(out, sd)
    (c3, a3), (c4, a4) = THIRD_VENTRICLE, FOURTH_VENTRICLE
    out = np.minimum(out, _ellipsoid(x, y, z, c3, (a3[0] + 0.2 * w, a3[1], a3[2])))
    return np.minimum(out, _ellipsoid(x, y, z, c4, a4))


def deep_gm_sd(x, y, z):
    return np.minimum(*(_ellipsoid(x, y, z, c, DEEP_GM_AXES) for c in DEEP_GM_CENTRES))


def sulcal_distance(anat: AnatomyParams, x, y, z):
    """Unsigned distance (mm) to the nearest sulcal sheet; sheets run radially inwards from the
    cortical surface so that they look like sulci in any slice."""
    dx, dy, dz = (x - CEREBRUM_CENTRE[0], y - CEREBRUM_CENTRE[1], z - CEREBRUM_CENTRE[2])
    radius = np.maximum(np.sqrt(dx * dx + dy * dy + dz * dz), 20.0)
    g = 0.0
    grad_scale = 0.0
    for f, d, ph in zip(anat.gyral_freqs, anat.gyral_dirs, anat.gyral_phases):
        g = g + np.sin(f * np.pi * (dx * d[0] + dy * d[1] + dz * d[2]) / radius + ph)
        grad_scale += f * np.pi
    return np.abs(g) * radius / (0.55 * grad_scale)


@dataclass
class Distances:
    """Signed distances (mm, negative inside) of one set of points; template coordinates."""

    cerebrum: np.ndarray
    cortical_depth: np.ndarray  # depth below the supratentorial pial surface (positive inside)
    cerebellum: np.ndarray
    brainstem: np.ndarray
    parenchyma_outer: np.ndarray  # pial surface incl. fissure and tentorium
    intracranial: np.ndarray  # inner skull table
    ventricles: np.ndarray
    deep_gm: np.ndarray | None
    sulcus: np.ndarray | None  # unsigned distance to sulcal sheets


def structure_distances(anat: AnatomyParams, x, y, z, tissue: bool = True) -> Distances:
    """All signed distances for head-frame physical points (arrays of any one shape).

    ``tissue=False`` skips what only rendering needs (deep grey matter, sulci) and leaves
    those fields as ``None``.
    """
    x, y, z = to_template(anat, x, y, z)
    cer, cer_uncut, cortical_depth = cerebrum_sd(anat, x, y, z)
    cb = cerebellum_sd(x, y, z)
    bs = brainstem_sd(x, y, z)
    brain = np.minimum(np.minimum(cer, cb), bs)
    # The inner table follows the uncut cerebral ellipsoid, the cerebellum and the brainstem at a
    # distance csf_mm (it must not follow the tentorial cut, which would notch the skull).
    intracranial = np.minimum(np.minimum(cer_uncut, _ellipsoid(x, y, z, CEREBELLUM_CENTRE, CEREBELLUM_AXES)), bs)
    intracranial = intracranial - anat.csf_mm
    fis = fissure_sd(anat, x, y, z)
    parenchyma = np.maximum(brain, -fis)
    cortical_depth = np.minimum(cortical_depth, fis)
    return Distances(
        cerebrum=cer,
        cortical_depth=cortical_depth,
        cerebellum=cb,
        brainstem=bs,
        parenchyma_outer=parenchyma,
        intracranial=intracranial,
        ventricles=ventricles_sd(anat, x, y, z),
        deep_gm=deep_gm_sd(x, y, z) if tissue else None,
        sulcus=sulcal_distance(anat, x, y, z) if tissue else None,
    )


def _ramp(sd, width: float):
    """Partial-volume fraction inside a surface with signed distance ``sd`` (linear ramp)."""
    return np.clip(0.5 - sd / width, 0.0, 1.0)


def tissue_fractions(anat: AnatomyParams, x, y, z, edge_mm: float) -> dict[str, np.ndarray]:
    """Fractions of scalp, skull, csf, gm, wm (summing to the head fraction) at each point.

    ``edge_mm`` is the width of the partial-volume ramp (about one voxel).
    """
    d = structure_distances(anat, x, y, z)
    head = _ramp(d.intracranial - anat.skull_mm - anat.scalp_mm, edge_mm)
    outer_skull = _ramp(d.intracranial - anat.skull_mm, edge_mm)
    inner = _ramp(d.intracranial, edge_mm)
    brain = _ramp(d.parenchyma_outer, edge_mm)
    vent = _ramp(d.ventricles, edge_mm)
    depth = d.cortical_depth
    not_infratentorial = (1.0 - _ramp(d.brainstem, edge_mm)) * (1.0 - _ramp(d.cerebellum, edge_mm))
    in_sulcal_zone = _ramp(depth - anat.sulcal_depth_mm, 3.0 * edge_mm) * not_infratentorial
    sulc = _ramp(d.sulcus - anat.sulcal_halfwidth_mm, edge_mm) * in_sulcal_zone
    parenchyma = brain * (1.0 - vent) * (1.0 - sulc)
    # Grey matter: cortical ribbon along the pial surface and the sulci, deep nuclei,
    # and the cerebellar cortex (cerebellar white matter is a core at 55 % of its radius).
    cortex_zone = np.minimum(depth, np.where(in_sulcal_zone > 0, d.sulcus - anat.sulcal_halfwidth_mm, 1e3))
    gm_cortex = _ramp(cortex_zone - anat.cortex_mm, edge_mm) * (1.0 - _ramp(d.brainstem, edge_mm))
    cb_core = _ramp(d.cerebellum + 0.45 * CEREBELLUM_AXES[2], 2.0 * edge_mm)
    gm_cb = _ramp(d.cerebellum, edge_mm) * (1.0 - cb_core) * (1.0 - _ramp(d.brainstem, edge_mm))
    gm_deep = 0.8 * _ramp(d.deep_gm, 2.0 * edge_mm)
    gm_frac = np.clip(np.maximum(np.maximum(gm_cortex, gm_cb), gm_deep), 0.0, 1.0)
    gm = parenchyma * gm_frac
    wm = parenchyma - gm
    csf = inner - parenchyma
    return {
        "scalp": head - outer_skull,
        "skull": outer_skull - inner,
        "csf": csf,
        "gm": gm,
        "wm": wm,
        "brain": brain,
    }


def site_features(anat: AnatomyParams, centres: np.ndarray, radii: np.ndarray) -> dict[str, np.ndarray]:
    """Where candidate lesion centres ``(N, 3)`` (head frame, mm) of radius ``radii`` sit.

    Returns per candidate: ``pial_mm`` and ``ventricle_mm`` (distance from the lesion *surface*
    to the pial surface / ventricles; negative = the sphere reaches into CSF), ``depth_mm``
    (centre below the pial surface), ``posterior_fossa`` (below the tentorium: cerebellum or
    brainstem), ``cerebrum`` (inside the supratentorial brain).
    """
    centres = np.atleast_2d(np.asarray(centres, dtype=float))
    radii = np.asarray(radii, dtype=float)
    d = structure_distances(anat, centres[:, 0], centres[:, 1], centres[:, 2], tissue=False)
    s = anat.mean_scale
    depth = -d.parenchyma_outer * s
    _, _, tz = to_template(anat, centres[:, 0], centres[:, 1], centres[:, 2])
    return {
        "depth_mm": depth,
        "pial_mm": depth - radii,
        "ventricle_mm": d.ventricles * s - radii,
        "posterior_fossa": (d.cerebellum < 0) | ((d.brainstem < 0) & (tz < PONS_TOP_Z)),
        "cerebrum": d.cerebrum < 0,
        "cerebellum": d.cerebellum < 0,
        "brainstem": d.brainstem < 0,
    }
