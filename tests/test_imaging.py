"""Canonical reorientation, head mask and lesion instances."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.dataset.lesion_instances import find_lesion_instances
from glmil_auto.imaging.head_mask import bounding_box, brain_region, head_mask
from glmil_auto.imaging.orientation import to_canonical

_t = sitk.Euler3DTransform()
_t.SetRotation(0.3, 0.1, 0.2)
OBLIQUE = tuple(float(v) for v in _t.GetMatrix())
DIRECTIONS = [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),
    (0, 0, 1, -1, 0, 0, 0, -1, 0),  # sagittal
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # RAS-stored axial
    (0, 1, 0, 0, 0, -1, -1, 0, 0),
    OBLIQUE,
]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_to_canonical_matches_simpleitk_dicomorient(direction):
    array = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetDirection(tuple(float(d) for d in direction))
    image.SetSpacing((0.9, 1.1, 3.0))
    image.SetOrigin((12.0, -40.0, 7.5))
    out, geometry = to_canonical(array, Geometry.from_image(image))
    reference = sitk.DICOMOrient(image, "LPS")
    np.testing.assert_array_equal(out, sitk.GetArrayFromImage(reference))
    np.testing.assert_allclose(geometry.spacing, reference.GetSpacing())
    np.testing.assert_allclose(geometry.origin, reference.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(geometry.direction, reference.GetDirection(), atol=1e-12)
    # channels in front are carried along, and every voxel keeps its world position
    stacked, _ = to_canonical(np.stack([array, 2 * array]), Geometry.from_image(image))
    np.testing.assert_array_equal(stacked[1], 2 * out)
    original = Geometry.from_image(image)
    for index in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        world = original.index_to_world(np.array(index, float))
        new_index = np.round(geometry.world_to_index(world)).astype(int)
        assert out[tuple(new_index)] == array[index]


def test_head_mask_fills_skull_and_ignores_noise():
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[:40, :48, :44]
    r = np.sqrt(((z - 20) / 16.0) ** 2 + ((y - 24) / 20.0) ** 2 + ((x - 22) / 18.0) ** 2)
    image = np.where(r < 1.0, 800.0, 0.0)  # scalp
    image[(r < 0.9) & (r >= 0.8)] = 60.0  # dark skull
    image[r < 0.8] = 500.0  # brain
    image = image + 5000 + rng.normal(0, 20, image.shape)  # scanner offset and noise
    mask = head_mask(image[None])
    assert mask[r < 0.97].all() and not mask[r > 1.1].any()
    brain = brain_region(mask, (2.0, 2.0, 2.0), margin_mm=6.0)
    assert brain.sum() < mask.sum() and brain[r < 0.5].all() and not brain[r > 0.9].any()
    assert bounding_box(mask) == [(int(np.flatnonzero(mask.any((1, 2)))[0]), int(np.flatnonzero(mask.any((1, 2)))[-1]) + 1),
                                  bounding_box(mask)[1], bounding_box(mask)[2]]
    assert bounding_box(np.zeros((3, 4, 5), bool)) == [(0, 3), (0, 4), (0, 5)]


def test_lesion_instances_are_26_connected_components():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:3, 1:3, 1:3] = True  # 8 voxels
    mask[3, 3, 3] = True  # touches the first only diagonally: same instance under 26-connectivity
    mask[7:9, 6:9, 5] = True  # 6 voxels, separate
    geometry = Geometry((10, 10, 10), (0.5, 1.0, 2.0), (10.0, 20.0, 30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    labelled, lesions = find_lesion_instances(mask, geometry)
    assert [l.n_voxels for l in lesions] == [9, 6] and labelled.max() == 2
    first = lesions[0]
    assert first.volume_mm3 == pytest.approx(9 * 1.0)
    assert first.equivalent_diameter_mm == pytest.approx((6 * 9 / np.pi) ** (1 / 3))
    assert first.bbox == ((1, 4), (1, 4), (1, 4))
    assert first.extent_mm == pytest.approx((3 * 2.0, 3 * 1.0, 3 * 0.5))
    np.testing.assert_allclose(lesions[1].centroid_index_zyx, (7.5, 7.0, 5.0))
    np.testing.assert_allclose(lesions[1].centroid_world_mm, (10 + 5 * 0.5, 20 + 7.0, 30 + 7.5 * 2.0))
    assert find_lesion_instances(np.zeros((3, 3, 3), bool), geometry)[1] == []
