"""Synthetic cohorts for ``test_branch_learning.py``: labels that only one image branch can see.

Two generators, pure numpy, seeded by the caller's ``numpy.random.Generator``; the arrays are laid
out as the network's batch (``glmil_auto/model/network.py``) with one context scale.

* :func:`lesion_bags` (local branch): bags of 1-3 lesion patches. Every lesion has the same mask
  (a sphere of radius 4 voxels, shifted by whole voxels inside the 12^3 patch: always the same 257
  voxels) and the same instance descriptors; the bag size and the clinical value (pure noise) do
  not depend on the label. A bag is positive when at least one of its lesions is necrotic: a
  partly necrotic core (20-50 % of the enhancement, radius 1.5-2.2 voxels, slightly off-centre)
  inside a brighter rim, the rim carrying what the core lacks so that the lesion's mean
  enhancement is that of a solid lesion (first-order statistics nearly match: see the test).
  Nuisance in every lesion: uneven (blotchy) enhancement, parenchymal texture, partial-volume
  blur, white noise, a random enhancement level, and a random gain and offset per case.
  ``informative=False`` draws the very same random numbers and renders every lesion solid: the
  same bags with the same labels, without the pixels that carry the label (the control).

* :func:`micro_lesion_volumes` (global branch): 20^3 volumes (one image channel + the lesion
  mask) with a brain-like ellipsoid and one or two masked enhancing lesions (radius 1.5-2.5, the
  same distribution in both classes). A case is positive when it holds 4-8 micro-lesions: spots
  of one or two voxels, exactly as bright as the masked lesions, NOT in the mask, at random
  positions inside the brain but outside the lesion patches. The brightest voxel therefore says
  nothing, bright voxels outside the mask say everything; the 6^3 lesion patches cut from the
  same volumes (the local branch's input) never contain a micro-lesion.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from glmil_auto.model.instance_encoder import NUM_DESCRIPTORS  # log1p(volume), depth / 10 mm, position


def _descriptors(log_volume: float) -> np.ndarray:
    """One lesion's descriptors: its log volume, a fixed depth (2 cm), the middle of the head."""
    return np.array([log_volume, 2.0] + [0.5] * (NUM_DESCRIPTORS - 2), np.float32)


# ---------------------------------------------------------------------------------- lesion bags
PATCH = 12  # lesion patch edge (voxels)
LESION_RADIUS = 4.0
CORE_RADIUS = (1.5, 2.2)  # necrotic core radius (voxels)
CORE_ENHANCEMENT = (0.2, 0.5)  # the core's enhancement, as a fraction of the lesion's
WHITE_NOISE = 0.3
MAX_LESIONS = 3
_PATCH_GRID = np.indices((PATCH,) * 3).astype(np.float64)


def _distance(grid: np.ndarray, centre) -> np.ndarray:
    return np.sqrt(sum((grid[a] - centre[a]) ** 2 for a in range(3)))


def _smooth_noise(rng: np.random.Generator, shape, sigma: float, std: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return field * (std / max(field.std(), 1e-8))


LESION_VOXELS = int((_distance(_PATCH_GRID, (6, 6, 6)) <= LESION_RADIUS).sum())  # 257


def lesion_patch(rng: np.random.Generator, necrotic: bool) -> tuple[np.ndarray, np.ndarray]:
    """One lesion's (image, mask) patch; the same random numbers are drawn whatever ``necrotic``."""
    centre = rng.integers(4, PATCH - 4, size=3)  # whole voxels: the sphere stays inside, same 257 voxels
    mask = _distance(_PATCH_GRID, centre) <= LESION_RADIUS
    image = _smooth_noise(rng, (PATCH,) * 3, sigma=1.5, std=0.3)  # parenchyma
    enhancement = rng.uniform(1.5, 2.5)
    # every lesion enhances unevenly (solid ones too): smooth blotches of +-25 % of the enhancement
    blotches = 1.0 + _smooth_noise(rng, (PATCH,) * 3, sigma=1.0, std=0.25)
    core_radius = rng.uniform(*CORE_RADIUS)
    core_centre = centre + rng.uniform(-0.5, 0.5, size=3)
    core_fraction = rng.uniform(*CORE_ENHANCEMENT)  # partly necrotic core: a fraction of the enhancement
    white = rng.normal(0.0, WHITE_NOISE, size=(PATCH,) * 3)
    if necrotic:
        core = mask & (_distance(_PATCH_GRID, core_centre) <= core_radius)
        rim = mask & ~core
        core_value = core_fraction * enhancement
        image[core] += core_value * blotches[core]
        # the rim carries what the core lacks: the lesion's mean enhancement is that of a solid one
        image[rim] += (enhancement * mask.sum() - core_value * core.sum()) / rim.sum() * blotches[rim]
    else:
        image[mask] += enhancement * blotches[mask]
    image = ndimage.gaussian_filter(image, 0.6) + white  # partial volume, then acquisition noise
    assert mask.sum() == LESION_VOXELS
    return image.astype(np.float32), mask.astype(np.float32)


def lesion_bags(n_bags: int, rng: np.random.Generator, informative: bool = True) -> dict[str, np.ndarray]:
    """Balanced bags (labels alternate, then shuffled); see the module docstring."""
    labels = (np.arange(n_bags) % 2).astype(np.float32)
    rng.shuffle(labels)
    sizes = rng.integers(1, MAX_LESIONS + 1, size=n_bags)  # independent of the label
    patches = np.zeros((n_bags, MAX_LESIONS, 1, 2, PATCH, PATCH, PATCH), np.float32)
    instance_mask = np.zeros((n_bags, MAX_LESIONS), bool)
    necrotic_count = np.zeros(n_bags, int)
    necrotic_lesions = np.zeros((n_bags, MAX_LESIONS), bool)
    for i in range(n_bags):
        n = sizes[i]
        k = int(rng.integers(1, n + 1)) if labels[i] else 0  # MIL: positive if any lesion is necrotic
        necrotic = np.zeros(n, bool)
        necrotic[rng.choice(n, size=k, replace=False)] = True
        gain, offset = rng.uniform(0.5, 2.0), rng.uniform(-1.0, 1.0)  # scanner / normalisation nuisance
        for j in range(n):
            image, mask = lesion_patch(rng, bool(necrotic[j]) and informative)
            patches[i, j, 0, 0] = gain * image + offset
            patches[i, j, 0, 1] = mask
        instance_mask[i, :n] = True
        necrotic_count[i] = k
        necrotic_lesions[i, :n] = necrotic
    descriptors = np.zeros((n_bags, MAX_LESIONS, NUM_DESCRIPTORS), np.float32)
    descriptors[instance_mask] = _descriptors(np.log1p(LESION_VOXELS))  # the same for every lesion
    return {
        "instances": patches,
        "instance_mask": instance_mask,
        "instance_descriptors": descriptors,
        "clinical_values": rng.normal(60.0, 10.0, size=(n_bags, 1)).astype(np.float32),  # pure noise
        "labels": labels,
        "sizes": sizes,
        "necrotic_count": necrotic_count,
        "necrotic": necrotic_lesions,  # per lesion (the lesion-level outcome), False on padding
    }


# ---------------------------------------------------------------------------- micro-lesions
GRID = 20  # global volume edge (voxels)
LOCAL_PATCH = 6  # lesion patch edge for the local control (voxels)
MAX_MASKED = 2
SPOTS = (4, 8)  # micro-lesions in a positive case (inclusive range); none in a negative one
SPOT_AMPLITUDE = (4.0, 5.0)  # as bright as the masked lesions
MASKED_RADIUS = (1.5, 2.5)
MASKED_ENHANCEMENT = (4.0, 5.0)  # over a brain at 1.0 with texture (0.25) and noise (0.15)


def _micro_lesion_case(rng: np.random.Generator, n_spots: int):
    """(image, mask, [(centre, radius, own mask)], micro-lesion voxels), or None when the layout
    left no room (then the caller draws again; every case places the largest number of spots, so a
    redraw never depends on the label)."""
    half = LOCAL_PATCH // 2
    grid = np.indices((GRID,) * 3).astype(np.float64)
    centre = (GRID - 1) / 2 + rng.normal(0.0, 0.7, size=3)
    axes = rng.uniform([0.37, 0.42, 0.42], [0.42, 0.46, 0.46]) * GRID  # semi-axes
    ellipse = sum(((grid[a] - centre[a]) / axes[a]) ** 2 for a in range(3))
    brain = ellipse <= 1.0
    inner = ellipse <= 0.7**2  # lesions well inside the brain
    image = np.where(brain, 1.0, 0.0) + _smooth_noise(rng, (GRID,) * 3, sigma=1.5, std=0.25) * brain
    mask = np.zeros((GRID,) * 3, bool)
    lesions = []  # (centre, radius, own mask)
    for _ in range(int(rng.integers(1, MAX_MASKED + 1))):  # 1 or 2 masked lesions, whatever the label
        radius = rng.uniform(*MASKED_RADIUS)
        for _attempt in range(100):
            c = rng.integers(half, GRID - half, size=3)  # the local patch fits in the volume
            if inner[tuple(c)] and all(np.linalg.norm(c - o) > radius + r + 2 for o, r, _ in lesions):
                break
        else:
            return None
        own = _distance(grid, c) <= radius
        lesions.append((c, radius, own))
        mask |= own
        image[own] += rng.uniform(*MASKED_ENHANCEMENT)
    # micro-lesions: inside the brain, not in the mask, outside every lesion patch (and its border)
    allowed = (ellipse <= 0.85**2) & ~ndimage.binary_dilation(mask, iterations=2)
    for c, _, _ in lesions:
        window = tuple(slice(max(x - half - 1, 0), x + half + 2) for x in c)
        allowed[window] = False
    # always place the largest number of micro-lesions and keep the first ``n_spots``: a case is
    # redrawn (no room) whatever its label, so the masked lesions' layout cannot tell the label
    free = allowed.copy()
    placed = []
    for _ in range(SPOTS[1]):
        candidates = np.argwhere(free)
        if len(candidates) == 0:
            return None  # no room: the caller draws another case
        p = candidates[rng.integers(len(candidates))]
        voxels = [p]
        if rng.random() < 0.5:  # two voxels, if the neighbour is allowed too
            q = p.copy()
            q[rng.integers(3)] += rng.choice([-1, 1])
            if np.all((q >= 0) & (q < GRID)) and allowed[tuple(q)]:
                voxels.append(q)
        for v in voxels:  # micro-lesions at least 3 voxels apart
            free[tuple(slice(max(x - 3, 0), x + 4) for x in v)] = False
        placed.append((voxels, rng.uniform(*SPOT_AMPLITUDE)))
    spots = np.zeros((GRID,) * 3, bool)
    for voxels, amplitude in placed[:n_spots]:
        for v in voxels:
            spots[tuple(v)] = True
            image[tuple(v)] += amplitude
    image = image + rng.normal(0.0, 0.15, size=image.shape)
    gain, offset = rng.uniform(0.7, 1.4), rng.uniform(-0.5, 0.5)
    return (gain * image + offset).astype(np.float32), mask, lesions, spots


def micro_lesion_volumes(n_cases: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Balanced cases; see the module docstring. Returns the global volumes, the local patches of
    the masked lesions (cut from the same volumes), the label and the micro-lesion voxels."""
    labels = (np.arange(n_cases) % 2).astype(np.float32)
    rng.shuffle(labels)
    half = LOCAL_PATCH // 2
    volumes = np.zeros((n_cases, 2, GRID, GRID, GRID), np.float32)
    patches = np.zeros((n_cases, MAX_MASKED, 1, 2, LOCAL_PATCH, LOCAL_PATCH, LOCAL_PATCH), np.float32)
    instance_mask = np.zeros((n_cases, MAX_MASKED), bool)
    descriptors = np.zeros((n_cases, MAX_MASKED, NUM_DESCRIPTORS), np.float32)
    spot_voxels = np.zeros(n_cases, int)
    redrawn = np.zeros(n_cases, int)
    for i in range(n_cases):
        n_spots = int(rng.integers(SPOTS[0], SPOTS[1] + 1)) if labels[i] else 0
        case = None
        while case is None:
            case = _micro_lesion_case(rng, n_spots)
            redrawn[i] += case is None
        image, mask, lesions, spots = case
        assert not (spots & mask).any()
        volumes[i, 0], volumes[i, 1] = image, mask
        spot_voxels[i] = spots.sum()
        for j, (c, _, own) in enumerate(lesions):
            window = tuple(slice(x - half, x + half) for x in c)
            assert not spots[window].any()  # the local branch never sees a micro-lesion
            patches[i, j, 0, 0], patches[i, j, 0, 1] = image[window], own[window]
            descriptors[i, j] = _descriptors(np.log1p(own.sum()))
            instance_mask[i, j] = True
    return {
        "global": volumes,
        "instances": patches,
        "instance_mask": instance_mask,
        "instance_descriptors": descriptors,
        "clinical_values": rng.normal(60.0, 10.0, size=(n_cases, 1)).astype(np.float32),
        "labels": labels,
        "spot_voxels": spot_voxels,
        "redrawn": redrawn,
    }
