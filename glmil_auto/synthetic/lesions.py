"""Metastases and micro-lesions of one patient, placed analytically in the head phantom.

Per patient: 1-15 metastases (1 + negative binomial, median 2, more for melanoma and breast),
i.i.d. lognormal diameters (median 8 mm, sigma 0.55, clipped to 3-35 mm). Location: 15 %
posterior fossa (25 % for gastrointestinal primaries: colorectal metastases favour it),
12 % deep (periventricular / basal ganglia), the rest cortical-subcortical, centred near the
grey/white junction (depth = cortex + 0.45 r + N(1.5, 3) mm below the pial surface). Lesions
never overlap (surfaces >= 4 mm apart) and never cross the skull. Necrotic (ring-enhancing)
core with probability sigmoid((d - 13) / 2.5); texture heterogeneity ~ Beta(2, 3); FLAIR oedema
extent grows with size. Micro-lesions (1-3 mm, enhancing, never in the mask): Poisson with a
Gamma(0.9, 1.7)-distributed rate (x1.5 for melanoma), placed at the junction away from lesions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from glmil_auto.synthetic.anatomy import (
    BRAINSTEM_AXES,
    BRAINSTEM_CENTRE,
    CEREBELLUM_AXES,
    CEREBELLUM_CENTRE,
    CEREBRUM_AXES,
    CEREBRUM_CENTRE,
    PONS_TOP_Z,
    AnatomyParams,
    site_features,
)

MAX_LESIONS = 15
COUNT_NB_SHAPE = 0.9
COUNT_EXTRA_MEAN = 1.6  # mean of (count - 1) for lung
COUNT_MULTIPLIER = {"melanoma": 1.6, "breast": 1.3, "lung": 1.0, "renal": 0.8, "gastrointestinal": 0.7, "other": 0.9}
DIAMETER_MEDIAN_MM = 8.0
DIAMETER_SIGMA = 0.55
DIAMETER_RANGE_MM = (3.0, 35.0)
P_POSTERIOR_FOSSA = 0.15
P_POSTERIOR_FOSSA_GI = 0.25
P_DEEP = 0.12
LESION_GAP_MM = 4.0
CSF_CONTACT_MM = 1.0  # lesion surface within this distance of CSF = contact
MICRO_RATE_SHAPE = 0.9
MICRO_RATE_SCALE = 1.7
MICRO_MULTIPLIER = {"melanoma": 1.5}
MAX_MICRO = 25
MICRO_DIAMETER_RANGE_MM = (1.0, 3.0)
MICRO_CLEARANCE_MM = 5.0  # micro-lesion surface to lesion surface (plus half the oedema)
MICRO_SPACING_MM = 6.0  # between micro-lesions


@dataclass
class Lesion:
    """One metastasis. Positions are head-frame mm (see anatomy); ``diameter_mm`` is the
    longest axis of the lesion's ellipsoid (the RTOG 90-05 dose is chosen from it)."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    axes: tuple[tuple[float, float, float], ...]  # rows: unit vectors of the lesion's own axes
    diameter_mm: float
    volume_mm3: float
    compartment: str  # cortical | deep | posterior_fossa
    posterior_fossa: bool
    necrosis: bool
    necrosis_fraction: float  # radius of the necrotic core relative to the lesion (0 if none)
    heterogeneity: float  # 0 = homogeneous enhancement, 1 = very patchy
    lobulation: float  # inward surface modulation amplitude (rendering only)
    lobe_phase: tuple[float, float, float]
    oedema_mm: float  # FLAIR oedema extent beyond the lesion surface
    pial_distance_mm: float  # lesion surface to pial surface (negative: reaches into CSF)
    ventricle_distance_mm: float  # lesion surface to the ventricles
    csf_distance_mm: float
    csf_contact: bool
    ventricle_contact: bool
    dose_gy: float = 0.0
    p_local_failure: float = 0.0
    local_failure: int = 0  # drawn: 1 when this lesion fails (probability p_local_failure)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MicroLesion:
    centre: tuple[float, float, float]
    diameter_mm: float

    def to_dict(self) -> dict:
        return asdict(self)


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _ellipsoid_points(rng, n, centre, axes, rho):
    u = _unit_vectors(rng, n)
    return np.asarray(centre) + np.asarray(axes) * u * np.asarray(rho)[:, None]


def _cortical_candidates(rng, n, depth_mm):
    """Points ``depth_mm`` below the cerebral convexity along random rays (template mm)."""
    u = _unit_vectors(rng, n)
    axes = np.asarray(CEREBRUM_AXES)
    grad = np.sqrt(((u / axes) ** 2).sum(axis=1))
    rho = np.clip(1.0 - depth_mm * grad, 0.05, 1.0)
    return np.asarray(CEREBRUM_CENTRE) + axes * u * rho[:, None]


@dataclass(frozen=True)
class PlacementRequest:
    """What to place: a sphere of ``radius`` mm in a compartment (cortical, deep or
    posterior_fossa); cortical centres lie ``depth`` = (mean, sd) mm below the convexity."""

    kind: str
    radius: float
    depth: tuple[float, float]
    micro: bool = False


def _candidates(rng, anat: AnatomyParams, req: PlacementRequest, n: int) -> np.ndarray:
    if req.kind == "cortical":
        t = _cortical_candidates(rng, n, rng.normal(req.depth[0], req.depth[1], n))
    elif req.kind == "deep":
        t = _ellipsoid_points(rng, n, CEREBRUM_CENTRE, CEREBRUM_AXES, rng.uniform(0.15, 0.55, n))
    elif rng.random() < 0.9:  # posterior fossa: cerebellum
        t = _ellipsoid_points(rng, n, CEREBELLUM_CENTRE, CEREBELLUM_AXES, rng.uniform(0.25, 0.95, n))
    else:  # pons / medulla
        t = _ellipsoid_points(rng, n, BRAINSTEM_CENTRE, BRAINSTEM_AXES, rng.uniform(0.0, 0.6, n))
        t[:, 2] = np.minimum(t[:, 2], PONS_TOP_Z - 2.0)
    return t * np.asarray(anat.scale)


def _site_ok(anat: AnatomyParams, feats: dict, req: PlacementRequest) -> np.ndarray:
    """Inside the right compartment, not through the skull, not centred in a ventricle."""
    r = req.radius
    if req.micro:
        ok = (feats["depth_mm"] >= r + 1.0) & (feats["ventricle_mm"] >= 0.0)
    else:
        depth_needed = max(0.75 * r, r - anat.csf_mm + 0.5)
        ok = (feats["depth_mm"] >= depth_needed) & (feats["ventricle_mm"] >= -0.25 * r)
    if req.kind == "posterior_fossa":
        return ok & feats["posterior_fossa"]
    return ok & feats["cerebrum"] & ~feats["posterior_fossa"]


def _clear(centres: np.ndarray, radius: float, placed: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Candidates whose sphere keeps clear of every placed (centre, exclusion radius)."""
    if not placed:
        return np.ones(len(centres), dtype=bool)
    pos = np.array([p[0] for p in placed])
    need = radius + np.array([p[1] for p in placed])
    dist2 = ((centres[:, None, :] - pos[None, :, :]) ** 2).sum(axis=2)
    return (dist2 >= need[None, :] ** 2).all(axis=1)


Placement = tuple[np.ndarray, dict]


def place(
    rng: np.random.Generator,
    anat: AnatomyParams,
    req: PlacementRequest,
    placed: list[tuple[np.ndarray, float]],
    batch: int = 48,
    tries: int = 12,
) -> Placement | None:
    """Rejection-sample one centre (head frame, mm), ``batch`` candidates at a time."""
    for _ in range(tries):
        centres = _candidates(rng, anat, req, batch)
        feats = site_features(anat, centres, np.full(batch, req.radius))
        ok = np.flatnonzero(_site_ok(anat, feats, req) & _clear(centres, req.radius, placed))
        if ok.size:
            i = int(ok[0])
            return centres[i], {k: v[i] for k, v in feats.items()}
    return None


def place_many(
    rng: np.random.Generator,
    anat: AnatomyParams,
    requests: list[PlacementRequest],
    placed: list[tuple[np.ndarray, float]],
    gap_mm: float,
    batch: int = 48,
) -> list[Placement | None]:
    """Place several spheres in turn, each clear of ``placed`` and of the earlier ones (surface
    gap ``gap_mm``). All first-round candidates are evaluated in one vectorised call, which is
    what makes non-rendered cohorts of tens of thousands of cases cheap; a request with no valid
    candidate falls back to ``place``."""
    if not requests:
        return []
    cands = [_candidates(rng, anat, req, batch) for req in requests]
    radii = np.repeat([req.radius for req in requests], batch)
    feats = site_features(anat, np.concatenate(cands), radii)
    placed = list(placed)
    out: list[Placement | None] = []
    for i, req in enumerate(requests):
        f = {k: v[i * batch : (i + 1) * batch] for k, v in feats.items()}
        ok = np.flatnonzero(_site_ok(anat, f, req) & _clear(cands[i], req.radius, placed))
        if ok.size:
            j = int(ok[0])
            result: Placement | None = (cands[i][j], {k: v[j] for k, v in f.items()})
        else:
            result = place(rng, anat, req, placed, batch)
        out.append(result)
        if result is not None:
            placed.append((result[0], req.radius + gap_mm))
    return out


def sample_count(rng: np.random.Generator, primary: str) -> int:
    mean = COUNT_EXTRA_MEAN * COUNT_MULTIPLIER[primary]
    p = COUNT_NB_SHAPE / (COUNT_NB_SHAPE + mean)
    return int(min(MAX_LESIONS, 1 + rng.negative_binomial(COUNT_NB_SHAPE, p)))


def sample_diameter(rng: np.random.Generator) -> float:
    d = np.exp(rng.normal(np.log(DIAMETER_MEDIAN_MM), DIAMETER_SIGMA))
    return float(np.clip(d, *DIAMETER_RANGE_MM))


def necrosis_probability(diameter_mm: float) -> float:
    return float(1.0 / (1.0 + np.exp(-(diameter_mm - 13.0) / 2.5)))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random rotation from a random unit quaternion."""
    a, b, c, d = rng.normal(size=4)
    n = math.sqrt(a * a + b * b + c * c + d * d)
    a, b, c, d = a / n, b / n, c / n, d / n
    return np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
        ]
    )


def _cortical_depth(anat: AnatomyParams, radius: float) -> tuple[float, float]:
    """Centre depth (mean, sd) below the convexity: near the grey/white junction."""
    return (anat.cortex_mm + 0.45 * radius + 1.5, 3.0)


def sample_lesions(rng: np.random.Generator, anat: AnatomyParams, primary: str) -> list[Lesion]:
    """All metastases of one patient (at least one). Placed largest first; a lesion that finds
    no room (crowded brain) is shrunk by 15 % steps down to 3 mm, then dropped."""
    n = sample_count(rng, primary)
    p_pf = P_POSTERIOR_FOSSA_GI if primary == "gastrointestinal" else P_POSTERIOR_FOSSA
    diameters = sorted((sample_diameter(rng) for _ in range(n)), reverse=True)
    kinds = []
    for _ in range(n):
        u = rng.random()
        kinds.append("posterior_fossa" if u < p_pf else ("deep" if u < p_pf + P_DEEP else "cortical"))
    requests = [PlacementRequest(k, d / 2.0, _cortical_depth(anat, d / 2.0)) for k, d in zip(kinds, diameters)]
    results = place_many(rng, anat, requests, [], LESION_GAP_MM)
    placed_so_far = [(res[0], req.radius + LESION_GAP_MM) for res, req in zip(results, requests) if res is not None]
    lesions: list[Lesion] = []
    for d, req, res in zip(diameters, requests, results):
        while res is None and d > DIAMETER_RANGE_MM[0] + 1e-9:
            d = max(DIAMETER_RANGE_MM[0], d * 0.85)
            req = PlacementRequest(req.kind, d / 2.0, _cortical_depth(anat, d / 2.0))
            res = place(rng, anat, req, placed_so_far)
            if res is not None:
                placed_so_far.append((res[0], req.radius + LESION_GAP_MM))
        if res is not None:
            lesions.append(_make_lesion(rng, res, d, req.kind))
    if not lesions:  # practically impossible; keep the contract (>= 1 lesion)
        raise RuntimeError("could not place any lesion")
    return lesions


def _make_lesion(rng: np.random.Generator, placement: Placement, d: float, kind: str) -> Lesion:
    centre, f = placement
    r = d / 2.0
    shape = rng.uniform(0.75, 1.0, size=2)
    semi = np.array([r, r * shape[0], r * shape[1]])
    nec = bool(rng.random() < necrosis_probability(d))
    pial = float(f["pial_mm"])
    vent = float(f["ventricle_mm"])
    return Lesion(
        centre=tuple(float(c) for c in centre),
        semi_axes=tuple(float(s) for s in semi),
        axes=tuple(tuple(float(v) for v in row) for row in _random_rotation(rng)),
        diameter_mm=float(d),
        volume_mm3=float(4.0 / 3.0 * np.pi * np.prod(semi)),
        compartment=kind,
        posterior_fossa=bool(f["posterior_fossa"]),
        necrosis=nec,
        necrosis_fraction=float(rng.uniform(0.35, 0.7)) if nec else 0.0,
        heterogeneity=float(rng.beta(2.0, 3.0)),
        lobulation=float(rng.uniform(0.0, 0.12)),
        lobe_phase=tuple(float(v) for v in rng.uniform(0.0, 2 * np.pi, 3)),
        oedema_mm=float(d * rng.uniform(0.25, 0.9) * min(1.0, 0.35 + d / 30.0)),
        pial_distance_mm=pial,
        ventricle_distance_mm=vent,
        csf_distance_mm=min(pial, vent),
        csf_contact=bool(min(pial, vent) <= CSF_CONTACT_MM),
        ventricle_contact=bool(vent <= CSF_CONTACT_MM),
    )


def sample_micro_lesions(
    rng: np.random.Generator, anat: AnatomyParams, primary: str, lesions: list[Lesion]
) -> list[MicroLesion]:
    """Micro-lesions at the grey/white junction, clear of every lesion and its inner oedema."""
    rate = rng.gamma(MICRO_RATE_SHAPE, MICRO_RATE_SCALE * MICRO_MULTIPLIER.get(primary, 1.0))
    n = int(min(MAX_MICRO, rng.poisson(rate)))
    diameters = rng.uniform(*MICRO_DIAMETER_RANGE_MM, size=n)
    kinds = ["posterior_fossa" if u < P_POSTERIOR_FOSSA else "cortical" for u in rng.random(n)]
    requests = [PlacementRequest(k, d / 2.0, (anat.cortex_mm + 1.0, 1.0), micro=True) for k, d in zip(kinds, diameters)]
    keep_out = [
        (np.asarray(les.centre), les.diameter_mm / 2.0 + 0.5 * les.oedema_mm + MICRO_CLEARANCE_MM) for les in lesions
    ]
    results = place_many(rng, anat, requests, keep_out, MICRO_SPACING_MM)
    return [
        MicroLesion(centre=tuple(float(c) for c in res[0]), diameter_mm=float(d))
        for d, res in zip(diameters, results)
        if res is not None
    ]
