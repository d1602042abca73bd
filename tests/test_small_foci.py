"""The small-foci detector (preprocessing/small_foci.py): blob response in noise units, candidates,
blobness, decoy thresholds and max pooling to a coarser grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.preprocessing import small_foci as sf
from glmil_auto.preprocessing.resampling import grid_centred_on

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def grid(shape_zyx, spacing_zyx, origin_xyz=(0.0, 0.0, 0.0)) -> Geometry:
    return Geometry(tuple(shape_zyx), tuple(float(s) for s in reversed(spacing_zyx)), tuple(origin_xyz), IDENTITY)


def sphere_image(shape, spacing_zyx, centres_zyx_mm, radius_mm, contrast, noise_sd, seed=0):
    """Noise plus partial-volume spheres (8 sub-samples per axis), like an imaged focus."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, noise_sd, shape).astype(np.float32)
    spacing = np.asarray(spacing_zyx, float)
    offsets = (np.arange(8) + 0.5) / 8 - 0.5
    for centre in centres_zyx_mm:
        centre = np.asarray(centre, float)
        lo = np.maximum(np.floor((centre - radius_mm) / spacing).astype(int) - 1, 0)
        hi = np.minimum(np.ceil((centre + radius_mm) / spacing).astype(int) + 2, shape)
        for index in itertools.product(*(range(a, b) for a, b in zip(lo, hi))):
            sub = np.stack(np.meshgrid(*[(i + offsets) * s for i, s in zip(index, spacing)], indexing="ij"), -1)
            fraction = np.mean(np.linalg.norm(sub - centre, axis=-1) <= radius_mm)
            image[index] += contrast * fraction
    return image


def test_response_is_in_the_cases_own_noise_units_and_ignores_intensity_scale():
    rng = np.random.default_rng(1)
    image = rng.normal(0, 1, (40, 40, 40)).astype(np.float32)
    region = np.ones(image.shape, bool)
    single, _, _ = sf.blob_response(image, (1.0, 1.0, 1.0), [1.5], region)
    centre, scale = sf.robust_scale(single, region)
    assert abs(centre) < 0.01 and scale == pytest.approx(1.0, abs=0.02)
    response, _, scales = sf.blob_response(image, (1.0, 1.0, 1.0), [1.0, 2.0], region)
    scaled, _, scaled_scales = sf.blob_response(37.0 * image + 500.0, (1.0, 1.0, 1.0), [1.0, 2.0], region)
    np.testing.assert_allclose(scaled, response, atol=2e-3)
    np.testing.assert_allclose(np.divide(scaled_scales, scales), 37.0, rtol=1e-4)


def test_a_sphere_is_found_at_its_position_and_radius_with_blobness_near_one():
    spacing = (1.0, 1.0, 1.0)
    image = sphere_image((40, 40, 40), spacing, [(20.0, 14.0, 25.0)], 2.0, contrast=3.0, noise_sd=0.3)
    geometry = grid(image.shape, spacing, (10.0, -5.0, 3.0))
    region = np.ones(image.shape, bool)
    radii = [0.5, 2.0, 5.0]
    response, which, _ = sf.blob_response(image, spacing, radii, region)
    foci = sf.find_foci(image, geometry, response, which, radii, region, floor=6.0)
    assert len(foci) == 1
    focus = foci[0]
    np.testing.assert_allclose(focus.index_zyx, (20, 14, 25), atol=1)
    # world (x, y, z) = origin + index (x, y, z) * spacing
    np.testing.assert_allclose(focus.world_xyz, (10.0 + focus.index_zyx[2], -5.0 + focus.index_zyx[1],
                                                 3.0 + focus.index_zyx[0]))
    assert focus.radius_mm == 2.0 and focus.blobness > 0.7 and focus.response > 10


def test_a_tube_has_low_blobness():
    image = np.zeros((30, 30, 30), np.float32)
    image[:, 14:17, 14:17] = 1.0  # a vessel along z
    assert sf.blobness(image, (1.0, 1.0, 1.0), 1.0, (15, 15, 15)) < 0.1
    ball = np.zeros((30, 30, 30), np.float32)
    ball[14:17, 14:17, 14:17] = 1.0
    assert sf.blobness(ball, (1.0, 1.0, 1.0), 1.0, (15, 15, 15)) > 0.8


def test_a_focus_in_thick_slices_stays_detectable():
    """A 3 mm focus in 2 x 2 x 6 mm voxels, over anatomy that varies slowly across the slices: the
    slice axis, too coarse for the radius, is smoothed wider and weighted at the nominal scale, so
    its curvature counts little. (Weighted at its own smoothing scale instead, the anatomy's
    through-slice curvature inflates the case's MAD and the focus falls to 2.7 noise units.)"""
    spacing = (6.0, 2.0, 2.0)
    image = sphere_image((12, 40, 40), spacing, [(30.0, 40.0, 40.0)], 1.5, contrast=2.0, noise_sd=0.15, seed=3)
    z_mm = np.arange(12)[:, None, None] * 6.0
    y_mm = np.arange(40)[None, :, None] * 2.0
    image += (0.6 * np.sin(2 * np.pi * z_mm / 30.0 + y_mm / 25.0)).astype(np.float32)
    region = np.ones(image.shape, bool)
    response, which, _ = sf.blob_response(image, spacing, [1.0, 1.5, 2.0], region)
    foci = sf.find_foci(image, grid(image.shape, spacing), response, which, [1.0, 1.5, 2.0], region, floor=4.5)
    assert len(foci) == 1 and foci[0].index_zyx == (5, 20, 20)
    assert foci[0].response > 4.8 and foci[0].blobness > 0.2


def test_search_region_keeps_away_from_lesions_and_the_brain_surface():
    spacing = (2.0, 1.0, 1.0)
    brain = np.zeros((20, 40, 40), bool)
    brain[2:18, 5:35, 5:35] = True
    lesion = np.zeros_like(brain)
    lesion[10, 20, 20] = True
    region = sf.search_region(brain, lesion, spacing, lesion_margin_mm=5.0, surface_margin_mm=3.0)
    points = np.argwhere(region) * np.asarray(spacing)
    assert np.linalg.norm(points - np.array([20.0, 20.0, 20.0]), axis=1).min() > 5.0
    # brute force: depth below the brain's surface = distance to the nearest voxel outside it
    outside = np.argwhere(~brain) * np.asarray(spacing)
    sample = points[:: max(1, len(points) // 200)]
    depth = np.array([np.linalg.norm(outside - p, axis=1).min() for p in sample])
    assert depth.min() > 3.0
    assert not sf.search_region(brain, lesion, spacing, 5.0, 100.0).any()


def test_decoy_threshold_is_the_lowest_that_keeps_the_false_positive_budget():
    rng = np.random.default_rng(5)
    decoys = [list(rng.gamma(2.0, 1.5, rng.integers(0, 6)) + 3.0) for _ in range(20)]
    for budget in (0.0, 0.25, 1.0, 2.5):
        threshold = sf.decoy_threshold(decoys, budget, floor=3.0)
        above = sum(sum(d >= threshold for d in case) for case in decoys) / len(decoys)
        assert above <= budget
        # brute force: no lower candidate threshold (the floor or any decoy height) keeps the budget
        candidates = sorted({3.0, *[h for case in decoys for h in case]})
        lower_ok = [t for t in candidates if t < threshold
                    and sum(sum(d >= t for d in case) for case in decoys) / len(decoys) <= budget]
        assert not lower_ok
    assert sf.decoy_threshold([[], []], 0.5, floor=4.0) == 4.0


def test_max_pooling_matches_a_brute_force_and_keeps_a_single_bright_voxel():
    rng = np.random.default_rng(7)
    source = grid((21, 23, 19), (1.0, 1.2, 0.9), (-3.0, 2.0, 1.0))
    values = np.where(rng.random(source.shape) < 0.05, rng.gamma(2.0, 2.0, source.shape), 0.0).astype(np.float32)
    centre = source.index_to_world(np.array([10.0, 11.0, 9.0]))
    target = grid_centred_on(centre, [3.4, 3.4, 3.4], [8, 8, 8], IDENTITY)
    pooled = sf.max_pool_to_grid(values, source, target)
    expected = np.zeros(target.shape, np.float32)
    for index in np.argwhere(values > 0):
        t = np.rint(target.world_to_index(source.index_to_world(index.astype(float)))).astype(int)
        if np.all((t >= 0) & (t < np.asarray(target.shape))):
            expected[tuple(t)] = max(expected[tuple(t)], values[tuple(index)])
    np.testing.assert_array_equal(pooled, expected)
    single = np.zeros(source.shape, np.float32)
    single[10, 11, 9] = 5.0
    assert sf.max_pool_to_grid(single, source, target).max() == 5.0


def test_margins_by_morphology_equal_the_distance_transform():
    from scipy import ndimage

    rng = np.random.default_rng(11)
    mask = rng.random((18, 20, 22)) < 0.01
    for spacing in ((1.0, 1.0, 1.0), (3.0, 0.9, 0.9)):
        for radius in (1.0, 2.5, 4.0):
            expected = ndimage.distance_transform_edt(~mask, sampling=spacing) <= radius
            np.testing.assert_array_equal(sf._within(mask, radius, spacing), expected)
