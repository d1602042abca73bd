"""IBSI features of one lesion (mirp) and its mesh shape, checked on phantoms against analytic
values and against plain brute-force implementations of the IBSI definitions written here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage, stats

from glmil_auto.preprocessing.lesion_features.ibsi import (
    FEATURES, GLCM, GLSZM, ibsi_feature_names, ibsi_lesion_features, ibsi_settings,
)
from glmil_auto.preprocessing.lesion_features.mesh_shape import MESH_SHAPE_NAMES, mesh_shape

# the 13 unique 3D offsets at Chebyshev distance 1 (the other 13 are their opposites)
OFFSETS = [d for d in itertools.product((-1, 0, 1), repeat=3) if d > (0, 0, 0)]


def _ball(radius: float, spacing: float, pad: int = 3) -> np.ndarray:
    n = int(math.ceil(2 * radius / spacing)) + 2 * pad
    coordinates = (np.mgrid[:n, :n, :n] - (n - 1) / 2.0) * spacing
    return (coordinates**2).sum(axis=0) <= radius**2


def _grey_levels(values: np.ndarray, bin_width: float) -> np.ndarray:
    """IBSI fixed bin size on the absolute grid [k w, (k+1) w) (the module's bin origin 0)."""
    return np.floor(values / bin_width).astype(np.int64)


def _cooccurrence(levels: np.ndarray, mask: np.ndarray, offset: tuple[int, int, int]) -> dict[tuple[int, int], int]:
    """Symmetric co-occurrence counts of one offset, enumerating every voxel of the mask."""
    counts: dict[tuple[int, int], int] = {}
    for p in zip(*np.nonzero(mask)):
        q = tuple(int(a + d) for a, d in zip(p, offset))
        if all(0 <= q[k] < mask.shape[k] for k in range(3)) and mask[q]:
            for pair in ((levels[p], levels[q]), (levels[q], levels[p])):
                counts[pair] = counts.get(pair, 0) + 1
    return counts


def _glcm_features(counts: dict[tuple[int, int], int]) -> dict[str, float]:
    """IBSI GLCM features of one (symmetric) matrix given as {(i, j): count}."""
    total = sum(counts.values())
    p = {ij: n / total for ij, n in counts.items()}
    marginal: dict[int, float] = {}
    for (i, _), pij in p.items():
        marginal[i] = marginal.get(i, 0.0) + pij
    mu = sum(i * pi for i, pi in marginal.items())
    var = sum((i - mu) ** 2 * pi for i, pi in marginal.items())
    return {
        "glcm_contrast": sum((i - j) ** 2 * pij for (i, j), pij in p.items()),
        "glcm_joint_entropy": -sum(pij * math.log2(pij) for pij in p.values()),
        "glcm_inverse_difference_moment": sum(pij / (1.0 + (i - j) ** 2) for (i, j), pij in p.items()),
        "glcm_energy": sum(pij**2 for pij in p.values()),
        "glcm_correlation": (sum(i * j * pij for (i, j), pij in p.items()) - mu**2) / var if var > 0 else math.nan,
    }


def _brute_force_glcm(values: np.ndarray, mask: np.ndarray, bin_width: float, merge: bool) -> dict[str, float]:
    """``merge``: one matrix summing the 13 directional counts (IBSI 3D:mrg, mirp's
    ``3d_volume_merge``); otherwise the features of each direction averaged (IBSI 3D:avg)."""
    levels = _grey_levels(values, bin_width)
    per_direction = [_cooccurrence(levels, mask, offset) for offset in OFFSETS]
    if merge:
        merged: dict[tuple[int, int], int] = {}
        for counts in per_direction:
            for ij, n in counts.items():
                merged[ij] = merged.get(ij, 0) + n
        return _glcm_features(merged)
    features = [_glcm_features(c) for c in per_direction if c]
    return {name: float(np.mean([f[name] for f in features])) for name in features[0]}


def _brute_force_glszm(values: np.ndarray, mask: np.ndarray, bin_width: float) -> dict[str, float]:
    """IBSI GLSZM features: 26-connected zones of equal grey level inside the mask."""
    levels = _grey_levels(values, bin_width)
    zones = []  # (grey level, size)
    for level in np.unique(levels[mask]):
        labelled, n = ndimage.label(mask & (levels == level), structure=np.ones((3, 3, 3)))
        zones += [(int(level), int(size)) for size in np.bincount(labelled.ravel())[1:n + 1]]
    n_zones = len(zones)
    sizes = np.array([s for _, s in zones], dtype=float)
    per_size = np.unique(sizes, return_counts=True)[1]
    per_level = np.unique([g for g, _ in zones], return_counts=True)[1]
    return {
        "glszm_small_zone_emphasis": float(np.sum(1.0 / sizes**2) / n_zones),
        "glszm_large_zone_emphasis": float(np.sum(sizes**2) / n_zones),
        "glszm_zone_size_nonuniformity_norm": float(np.sum(per_size**2) / n_zones**2),
        "glszm_zone_percentage": n_zones / float(mask.sum()),
        "glszm_grey_level_nonuniformity_norm": float(np.sum(per_level**2) / n_zones**2),
    }


def _unprefixed(features: dict[str, float], prefix: str) -> dict[str, float]:
    return {name[len(prefix) + 1:]: value for name, value in features.items()}


@pytest.fixture(scope="module")
def random_lesion() -> tuple[np.ndarray, np.ndarray]:
    """A lumpy lesion of ~100 voxels in a 9^3 volume with random intensities."""
    rng = np.random.default_rng(20240611)
    ball = ((np.indices((9, 9, 9)) - 4.0) ** 2).sum(axis=0) <= 2.5**2  # a ball in the middle
    mask = ndimage.binary_opening(rng.random((9, 9, 9)) < 0.55) | ball
    mask = ndimage.binary_fill_holes(mask)
    values = rng.normal(0.8, 0.6, mask.shape)
    return values, mask


def test_names_and_settings_are_stable_and_json_safe() -> None:
    import json

    names = ibsi_feature_names("t1c")
    assert names == [f"t1c_{n}" for n in FEATURES] and len(set(names)) == 16
    assert "t1c_glcm_contrast" in names and "t1c_glszm_zone_percentage" in names
    settings = ibsi_settings()
    assert json.loads(json.dumps(settings)) == settings
    assert settings["library"] == "mirp" and settings["version"].startswith("2.5.")
    assert settings["glcm_merge"] == "3d_volume_merge" and settings["glcm_distance"] == 1


@pytest.mark.parametrize("radius, spacing", [(3.0, 0.5), (5.0, 0.5), (5.0, 0.25), (8.0, 0.5)])
def test_mesh_shape_of_a_digitised_sphere_matches_the_analytic_values(radius: float, spacing: float) -> None:
    shape = mesh_shape(_ball(radius, spacing), (spacing, spacing, spacing))
    assert tuple(shape) == MESH_SHAPE_NAMES
    volume = 4.0 / 3.0 * math.pi * radius**3
    assert shape["mesh_volume_mm3"] == pytest.approx(volume, rel=0.02)
    assert shape["voxel_volume_mm3"] == pytest.approx(volume, rel=0.02)
    # marching cubes overestimates a smooth surface by a few % (the staircase): sphericity ~0.92
    assert shape["surface_area_mm2"] == pytest.approx(4.0 * math.pi * radius**2, rel=0.12)
    assert 0.88 < shape["sphericity"] <= 1.0
    # mesh vertices lie half an edge from a voxel centre inside the sphere: within one voxel of 2r
    assert abs(shape["max_diameter_mm"] - 2.0 * radius) <= spacing + 1e-9
    assert shape["max_diameter_mm"] == pytest.approx(2.0 * radius, rel=0.07)


def test_mesh_shape_of_an_elongated_box() -> None:
    box = np.zeros((7, 7, 44), dtype=bool)
    box[2:5, 2:5, 2:42] = True  # 3 x 3 x 40 voxels at 1 x 1 x 0.5 mm: 3 x 3 x 20 mm
    shape = mesh_shape(box, (1.0, 1.0, 0.5))
    assert shape["voxel_volume_mm3"] == pytest.approx(3 * 3 * 20)
    box_sphericity = math.pi ** (1 / 3) * (6 * 180) ** (2 / 3) / (2 * 9 + 4 * 60)  # the exact box: 0.60
    # the mesh cuts the box's edges (less area for its volume) but stays far from a sphere's 1
    assert box_sphericity < shape["sphericity"] < 0.7
    cube = np.pad(np.ones((6, 6, 6), dtype=bool), 1)
    assert shape["sphericity"] < mesh_shape(cube, (1.0, 1.0, 1.0))["sphericity"] < 0.92
    # the mesh cuts the corners: its diagonal is shorter than the box's but longer than its length
    assert 20.0 - 0.5 < shape["max_diameter_mm"] < math.sqrt(3**2 + 3**2 + 20**2)
    assert mesh_shape(np.transpose(box, (2, 1, 0)), (0.5, 1.0, 1.0)) == pytest.approx(shape)


def test_glcm_of_a_checkerboard_equals_brute_force() -> None:
    bin_width = 0.5
    parity = np.indices((7, 7, 7)).sum(axis=0) % 2
    values = np.where(parity == 0, 0.25, 1.75)  # bin centres of grey levels 0 and 3
    mask = np.zeros(values.shape, dtype=bool)
    mask[1:6, 1:6, 1:6] = True
    features = _unprefixed(ibsi_lesion_features(values, mask, (1.0, 1.0, 1.0), bin_width, "c"), "c")
    expected = _brute_force_glcm(values, mask, bin_width, merge=True)
    for name in GLCM:
        assert features[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name
    # face and corner neighbours differ by 3 grey levels, edge neighbours are equal
    assert 0.0 < features["glcm_contrast"] < 9.0
    assert features["glcm_correlation"] < 0.0


def test_glcm_of_a_random_lesion_equals_the_merged_brute_force(random_lesion) -> None:
    values, mask = random_lesion
    for bin_width in (0.2, 0.5):
        features = _unprefixed(ibsi_lesion_features(values, mask, (1.0, 1.0, 2.0), bin_width, "r"), "r")
        merged = _brute_force_glcm(values, mask, bin_width, merge=True)
        averaged = _brute_force_glcm(values, mask, bin_width, merge=False)
        for name in GLCM:
            assert features[name] == pytest.approx(merged[name], rel=1e-9, abs=1e-12), (bin_width, name)
        # the aggregation matters: mirp merges, it does not average over directions
        assert features["glcm_joint_entropy"] != pytest.approx(averaged["glcm_joint_entropy"], rel=1e-3)


def test_glszm_of_a_random_lesion_equals_brute_force(random_lesion) -> None:
    values, mask = random_lesion
    features = _unprefixed(ibsi_lesion_features(values, mask, (1.0, 1.0, 1.0), 0.5, "r"), "r")
    expected = _brute_force_glszm(values, mask, 0.5)
    for name in GLSZM:
        assert features[name] == pytest.approx(expected[name], rel=1e-9), name


def test_intensity_statistics_equal_numpy_and_scipy(random_lesion) -> None:
    values, mask = random_lesion
    features = _unprefixed(ibsi_lesion_features(values, mask, (1.0, 1.0, 1.0), 0.25, "t"), "t")
    inside = values[mask]
    assert features["stat_mean"] == pytest.approx(inside.mean(), rel=1e-12)
    assert features["stat_cov"] == pytest.approx(inside.std() / inside.mean(), rel=1e-12)
    assert features["stat_skewness"] == pytest.approx(stats.skew(inside), rel=1e-9)
    for q in (10, 50, 90):
        assert features[f"stat_p{q}"] == pytest.approx(np.percentile(inside, q), rel=1e-12)


def test_statistics_do_not_depend_on_the_bin_width_or_the_surroundings(random_lesion) -> None:
    values, mask = random_lesion
    a = ibsi_lesion_features(values, mask, (1.0, 1.0, 1.0), 0.25, "t")
    noisy = np.where(mask, values, 1e3)  # the crop margin is outside the mask: it must not count
    b = ibsi_lesion_features(noisy, mask, (1.0, 1.0, 1.0), 0.4, "t")
    for name in ("stat_mean", "stat_cov", "stat_skewness", "stat_p10", "stat_p50", "stat_p90"):
        assert a[f"t_{name}"] == b[f"t_{name}"]
    big = np.pad(values, 5, constant_values=-7.0)
    c = ibsi_lesion_features(big, np.pad(mask, 5), (1.0, 1.0, 1.0), 0.25, "t")
    assert c == pytest.approx(a, rel=1e-12, nan_ok=True)


def test_matches_mirp_public_extract_features(random_lesion) -> None:
    """The direct use of mirp's classes gives what its public entry point gives."""
    import warnings

    from mirp import extract_features

    from glmil_auto.preprocessing.lesion_features.ibsi import _bin_floor, _tight_crop

    values, mask = random_lesion
    bin_width = 0.3
    crop = _tight_crop(mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = extract_features(
            image=values[crop], mask=mask[crop], image_modality="mr", by_slice=False,
            base_feature_families=["statistics", "glcm", "glszm"], base_discretisation_method="fixed_bin_size",
            base_discretisation_bin_width=bin_width, stat_percentile=[10.0, 50.0, 90.0], glcm_distance=1.0,
            glcm_spatial_method="3d_volume_merge", glszm_spatial_method="3d",
            resegmentation_intensity_range=[_bin_floor(values[mask], bin_width), math.nan],
        )[0]
    ours = _unprefixed(ibsi_lesion_features(values, mask, (1.0, 1.0, 1.0), bin_width, "m"), "m")
    suffix = {"stat": "", "cm": f"_d1_3d_v_mrg_fbs_w{bin_width}", "szm": f"_3d_fbs_w{bin_width}"}
    for name, abbreviation in FEATURES.items():
        column = abbreviation + suffix[abbreviation.split("_")[0]]
        assert ours[name] == pytest.approx(float(table[column].iloc[0]), rel=1e-12, abs=1e-15), name


def test_one_voxel_lesion_gives_nan_texture_and_finite_shape() -> None:
    values = np.random.default_rng(1).normal(size=(5, 5, 5))
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[0, 2, 4] = True  # on the border: the crop margin is clipped
    features = _unprefixed(ibsi_lesion_features(values, mask, (1.0, 1.0, 1.0), 0.25, "o"), "o")
    assert all(math.isnan(features[name]) for name in (*GLCM, *GLSZM))
    assert features["stat_mean"] == values[0, 2, 4] and features["stat_p90"] == values[0, 2, 4]
    assert math.isnan(features["stat_skewness"])
    shape = mesh_shape(mask, (1.0, 1.0, 1.0))
    assert all(math.isfinite(v) for v in shape.values())
    assert shape["voxel_volume_mm3"] == 1.0 and shape["max_diameter_mm"] == pytest.approx(1.0)


def test_single_grey_level_and_empty_mask_do_not_raise() -> None:
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[1:4, 1:4, 1:5] = True
    features = _unprefixed(ibsi_lesion_features(np.full(mask.shape, 0.3), mask, (1.0, 1.0, 1.0), 0.25, "s"), "s")
    assert features["glcm_contrast"] == 0.0 and features["glcm_energy"] == 1.0
    assert math.isnan(features["glcm_correlation"]) and math.isnan(features["stat_skewness"])
    assert features["glszm_zone_percentage"] == pytest.approx(1.0 / 36.0)
    empty = ibsi_lesion_features(np.zeros(mask.shape), np.zeros(mask.shape, dtype=bool), (1.0, 1.0, 1.0), 0.25, "e")
    assert list(empty) == ibsi_feature_names("e") and all(math.isnan(v) for v in empty.values())
    assert mesh_shape(np.zeros(mask.shape, dtype=bool), (1.0, 1.0, 1.0))["mesh_volume_mm3"] == 0.0


def test_invalid_input_raises() -> None:
    mask = np.ones((3, 3, 3), dtype=bool)
    with pytest.raises(ValueError):
        ibsi_lesion_features(np.full((3, 3, 3), np.nan), mask, (1.0, 1.0, 1.0), 0.25, "x")
    with pytest.raises(ValueError):
        ibsi_lesion_features(np.zeros((3, 3, 3)), mask, (1.0, 1.0, 1.0), 0.0, "x")
    with pytest.raises(ValueError):
        ibsi_lesion_features(np.zeros((3, 3, 4)), mask, (1.0, 1.0, 1.0), 0.25, "x")


def test_results_are_deterministic_json_safe_floats(random_lesion) -> None:
    values, mask = random_lesion
    first = ibsi_lesion_features(values, mask, (1.0, 1.0, 1.0), 0.25, "d")
    second = ibsi_lesion_features(values.copy(), mask.copy(), (1.0, 1.0, 1.0), 0.25, "d")
    assert list(first) == ibsi_feature_names("d")
    assert all(type(v) is float for v in first.values())
    assert first == second
    assert mesh_shape(mask, (1.0, 2.0, 1.0)) == mesh_shape(mask.copy(), (1.0, 2.0, 1.0))
