"""benchmarks/small_foci_detection.py: per-centre sensitivity, false positives and the 2-FP operating point."""

from __future__ import annotations

import pytest

from script_modules import load_script

SCRIPT = "benchmarks/small_foci_detection.py"


def record(n_true, candidates, seconds=1.0):
    return {"case": "x", "split": "Tr", "n_true": n_true, "decoys": [], "spacing_zyx": [2.0, 2.0, 6.0],
            "seconds": seconds, "candidates": [{"response": r, "true": t} for r, t in candidates]}


def test_centre_row_counts_hits_and_false_positives_at_the_threshold():
    module = load_script(SCRIPT)
    records = [record(2, [(9.0, True), (6.0, False), (4.0, True)]),
               record(0, [(5.5, False), (3.0, False)]),
               record(1, [(7.0, True)])]
    row = module.centre_row(records, threshold=5.0)
    assert row["true_foci"] == 3 and row["cases"] == 3
    assert row["sensitivity"] == pytest.approx(2 / 3)  # 9.0 and 7.0; the 4.0 hit is below
    assert row["fp_per_case"] == pytest.approx(2 / 3)  # 6.0 and 5.5
    # the best threshold with at most 2 false positives per case lets everything through: 3/3
    assert row["sensitivity_at_2fp"] == pytest.approx(1.0)
    tight = module.centre_row([record(1, [(4.0, True), (8.0, False), (7.0, False), (6.0, False)])], threshold=5.0)
    assert tight["sensitivity"] == 0.0 and tight["fp_per_case"] == 3.0
    assert tight["sensitivity_at_2fp"] == 0.0  # reaching the hit at 4.0 costs 3 false positives
    assert module.match_distance_mm([2.0, 2.0, 6.0]) == 4.0 and module.match_distance_mm([1.0, 1.0, 1.0]) == 3.0


# ---- --mimics: vessel and dural mimics ---------------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402


def ball_brain(shape, spacing, radius_mm):
    """A spherical brain in the middle of the array, and the voxel centres in mm."""
    grid = np.indices(shape).transpose(1, 2, 3, 0) * np.asarray(spacing, dtype=float)
    centre = (np.asarray(shape) - 1) * np.asarray(spacing) / 2.0
    return np.linalg.norm(grid - centre, axis=-1) <= radius_mm, grid, centre


def test_signed_depth_is_the_distance_to_the_voxel_faces():
    module = load_script(SCRIPT)
    brain = np.zeros((20, 30, 30), dtype=bool)
    brain[10:] = True  # the brain's surface is the face between z = 9 and z = 10; beyond the array is outside
    depth = module.signed_depth_mm(brain, (2.0, 1.0, 1.0))
    assert depth[10, 15, 15] == pytest.approx(1.0) and depth[9, 15, 15] == pytest.approx(-1.0)
    assert depth[13, 15, 15] == pytest.approx(7.0) and depth[8, 15, 15] == pytest.approx(-3.0)
    assert depth[5, 15, 15] == depth.min() < -3.0  # beyond two voxels outside: the lowest value near the brain
    assert depth[15, 0, 15] == pytest.approx(0.5)  # the array's side is a surface too
    # linear interpolation crosses zero on the face; a diagonal neighbour is half a voxel's extent along the way closer
    assert module.sample_at(depth, np.array([[19.0, 15.0, 15.0]]), (2.0, 1.0, 1.0))[0] == pytest.approx(0.0)
    corner = module.signed_depth_mm(np.pad(np.ones((4, 4, 4), dtype=bool), 3), (1.0, 1.0, 1.0))
    assert corner[2, 2, 3] == pytest.approx(-(np.sqrt(2) - 1 / np.sqrt(2)))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 1.5, 1.5)])
def test_a_painted_tube_has_the_requested_length_radius_and_brightness(spacing):
    module = load_script(SCRIPT)
    s = np.asarray(spacing)
    shape = tuple(int(n) for n in np.ceil(60.0 / s))
    image = np.full(shape, 100.0, dtype=np.float32)
    direction = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    centre, radius, length = np.full(3, 30.0), 0.9, 24.0
    start, stop = centre - 0.5 * length * direction, centre + 0.5 * length * direction
    mimic = module.paint_tube(image, s, start, stop, radius, brightness=300.0)
    weight = (image - 100.0) / 200.0
    assert mimic.kind == "vessel" and mimic.size_mm == (radius, pytest.approx(length))
    # partial volume and the point-spread function keep the tube's volume
    assert weight.sum() * s.prod() == pytest.approx(np.pi * radius**2 * length, rel=0.05)
    assert 0.0 < mimic.peak_weight <= 1.0 and image.max() <= 300.0 and image.min() == 100.0
    radial, along = module.distance_to_segment_mm(mimic.voxels * s, start, stop)
    reach = 0.5 * np.linalg.norm(s)
    assert radial.max() <= radius + reach and np.abs(along).max() <= 0.5 * length + reach
    assert np.ptp(along) >= length - 2 * reach  # the whole length is painted
    # only near the tube did anything change (the point-spread function reaches a few voxels)
    changed = np.argwhere(image > 100.0)
    assert module.distance_to_segment_mm(changed * s, start, stop)[0].max() <= radius + reach + 2 * np.linalg.norm(s)
    # a brighter rendering: the peak weight as asked, the same footprint
    again = np.full(shape, 100.0, dtype=np.float32)
    strong = module.paint_tube(again, s, start, stop, radius, brightness=300.0, peak=0.9)
    assert strong.peak_weight == pytest.approx(0.9) and again.max() == pytest.approx(100.0 + 0.9 * 200.0, rel=1e-4)
    assert np.array_equal(strong.voxels, mimic.voxels)


def test_mimics_stay_inside_the_brain_away_from_lesions_and_truth_foci():
    module = load_script(SCRIPT)
    spacing = np.array([1.5, 1.5, 1.5])
    brain, grid, centre = ball_brain((64, 64, 64), spacing, 40.0)
    t1c = np.where(brain, 100.0, 20.0).astype(np.float32)
    lesion = np.linalg.norm(grid - (centre + [0.0, 0.0, 22.0]), axis=-1) <= 4.0
    t1c[lesion] = 300.0
    focus_mm = centre + [0.0, -20.0, 0.0]
    foci = (focus_mm / spacing)[None]
    image, mimics = module.paint_mimics(t1c, spacing, brain, lesion, foci, module.case_rng("x"), 3)
    again, _ = module.paint_mimics(t1c, spacing, brain, lesion, foci, module.case_rng("x"), 3)
    assert np.array_equal(image, again)  # seeded by the case id: reproducible
    other, _ = module.paint_mimics(t1c, spacing, brain, lesion, foci, module.case_rng("y"), 3)
    assert not np.array_equal(image, other)
    assert [m.kind for m in mimics] == ["vessel", "vessel", "vessel", "dura"]
    assert np.array_equal(t1c[lesion], image[lesion]) and image.max() <= 300.0  # the lesion's median brightness
    depth = module.signed_depth_mm(brain, spacing)
    lesion_distance = np.linalg.norm(grid[..., None, :] - grid[lesion][None, None, None, ::25], axis=-1).min(-1)
    focus_distance = np.linalg.norm(grid - focus_mm, axis=-1)
    reach = 0.5 * np.linalg.norm(spacing)
    for mimic in mimics:
        voxels = tuple(mimic.voxels.T)
        assert len(mimic.voxels) and brain[voxels].all()
        assert lesion_distance[voxels].min() >= module.CLEARANCE_MM - reach - 2.0  # (lesion voxels subsampled)
        assert focus_distance[voxels].min() >= module.CLEARANCE_MM - reach
        if mimic.kind == "vessel":
            radius, length = mimic.size_mm
            assert 0.6 <= radius <= 1.0 and 15.0 <= length <= 30.0
            assert depth[voxels].min() >= module.VESSEL_DEPTH_MM - radius - reach
        else:
            thickness, cap = mimic.size_mm
            assert 1.0 <= thickness <= 1.5 and 25.0 <= cap <= 35.0
            assert depth[voxels].max() <= thickness + reach and depth[voxels].min() >= -reach
    leaked = np.argwhere(image != t1c)  # only the point-spread function's reach leaves the brain
    assert depth[tuple(leaked.T)].min() >= -2 * np.linalg.norm(spacing)
    # no lesion: a high brain percentile
    assert module.mimic_brightness(t1c, brain, np.zeros_like(brain)) == pytest.approx(100.0)


def test_a_dural_sheet_lies_on_the_surface_over_its_cap():
    module = load_script(SCRIPT)
    spacing = np.array([1.0, 1.0, 1.0])
    brain = np.zeros((30, 60, 60), dtype=bool)
    brain[10:] = True
    image = np.full(brain.shape, 100.0, dtype=np.float32)
    depth = module.signed_depth_mm(brain, spacing)
    clearance = np.full(brain.shape, module.FAR_MM)
    mimic = module.paint_sheet(image, spacing, depth, clearance, np.array([10.0, 30.0, 30.0]), 12.0, 1.2, 300.0)
    weight = (image - 100.0) / 200.0
    assert weight.sum() == pytest.approx(np.pi * 12.0**2 * 1.2, rel=0.05)
    assert set(mimic.voxels[:, 0]) == {10, 11}  # inside the brain, 0-1.2 mm below its surface (z = 9.5)
    assert np.linalg.norm(mimic.voxels[:, 1:] - 30.0, axis=1).max() <= 12.0 + 0.5 * np.sqrt(3)
    deeper = module.paint_sheet(np.full(brain.shape, 100.0, dtype=np.float32), spacing, depth, clearance,
                                np.array([10.0, 30.0, 30.0]), 12.0, 1.2, 300.0, below_mm=3.0)
    assert set(deeper.voxels[:, 0]) == {13, 14}


def test_false_positives_are_counted_on_the_mimic_they_lie_on():
    module = load_script(SCRIPT)
    spacing = (2.0, 2.0, 2.0)
    vessel = module.Mimic("vessel", np.array([[10, 10, k] for k in range(5, 15)]), (0.8, 20.0), 0.2)
    dura = module.Mimic("dura", np.array([[1, j, k] for j in range(20) for k in range(20)]), (1.2, 30.0), 0.5)
    mimics = [vessel, dura]
    assert module.nearest_mimic((11, 10, 8), mimics, spacing, 3.0) == 0  # 2 mm from the tube
    assert module.nearest_mimic((12, 10, 8), mimics, spacing, 3.0) is None  # 4 mm: beyond the match distance
    assert module.nearest_mimic((2, 5, 5), mimics, spacing, 3.0) == 1

    def focus(index, world, response):
        return SimpleNamespace(index_zyx=index, world_xyz=world, response=response)

    truth = np.array([[0.0, 0.0, 0.0]])
    found = [focus((11, 10, 8), (50.0, 50.0, 50.0), 9.0),  # on the vessel
             focus((1, 3, 3), (0.5, 0.0, 0.0), 8.0),  # on the dura, but a truth focus: a hit, not a mimic's
             focus((2, 6, 6), (90.0, 0.0, 0.0), 7.0),  # on the dura
             focus((2, 7, 7), (95.0, 0.0, 0.0), 4.0),  # on the dura, below the threshold
             focus((25, 25, 25), (70.0, 70.0, 70.0), 6.0)]  # on neither
    candidates = module.matched_candidates(found, truth, 3.0, mimics, spacing)
    assert [(c["true"], c["mimic"], c["mimic_index"]) for c in candidates] == [
        (False, "vessel", 0), (True, None, None), (False, "dura", 1), (False, "dura", 1), (False, None, None)]
    # without mimics: the candidates as before
    assert module.matched_candidates(found, truth, 3.0)[1] == {"response": 8.0, "true": True}
    painted = [{"kind": "vessel"}, {"kind": "dura"}]
    other_case = {"n_true": 1, "candidates": [{"response": 5.5, "true": False, "mimic": "vessel", "mimic_index": 1}],
                  "mimics": [{"kind": "vessel"}, {"kind": "vessel"}, {"kind": "dura"}]}
    row = module.mimic_row([{"n_true": 1, "candidates": candidates, "mimics": painted}, other_case], threshold=5.0)
    assert row["sensitivity"] == pytest.approx(0.5) and row["fp_per_case"] == pytest.approx(4 / 2)
    assert row["vessel_fp_per_case"] == pytest.approx(1.0) and row["dura_fp_per_case"] == pytest.approx(0.5)
    assert row["vessel_mimics"] == 3 and row["vessel_mimics_hit"] == pytest.approx(2 / 3)
    assert row["dura_mimics"] == 2 and row["dura_mimics_hit"] == pytest.approx(1 / 2)
    assert row["vessel_response_median"] == pytest.approx(5.5) and row["vessel_response_max"] == pytest.approx(9.0)
    assert row["dura_response_max"] == pytest.approx(7.0) and row["dura_response_median"] == pytest.approx(3.5)
    assert "| C1 | planned | 5.00 |" in module.mimic_table({"C1": {"planned": row}})
