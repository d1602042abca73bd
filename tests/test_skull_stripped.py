"""Skull-stripped inputs: per-case detection, normalisation and lesion depth, planning of a mixed cohort.

The stripped cohort is the synthetic cohort with everything outside each phantom's inner skull
table set to 0 (tests/skull_stripped_data.py rebuilds the phantom from the generator's seed, so the
stripping is exact, as a good skull-stripping tool's intracranial mask would be). The same plans
preprocess both cohorts; the tolerances below are what a stripped case must reproduce of its
unstripped original (measured values in documentation/preprocessing.md).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from skull_stripped_data import copy_with_zeroed_outside, intracranial_distance
from glmil_auto.dataset import RawDataset
from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.fingerprint import DatasetFingerprintExtractor
from glmil_auto.experiment_planning.planners import GLMILPlanner
from glmil_auto.experiment_planning.plans_io import plans_hash
from glmil_auto.imaging.orientation import to_canonical
from glmil_auto.imaging.skull_stripping import SCALP_AND_SKULL_MM, detect_skull_stripping
from glmil_auto.preprocessing.case_preprocessor import CasePreprocessor
from glmil_auto.synthetic import generate_synthetic_dataset

CPU = DeviceProfile("cpu", "cpu", 2.0, 2)
# |depth(stripped) - depth(unstripped)|: median over lesions, and every lesion within the coarsest voxel
# edge of this tiny cohort (8 mm slices), since the two surfaces are each found to about half a voxel.
# Measured: 19 lesions, stripped - unstripped -1.0 to -6.9 mm, median |difference| 2.7 mm.
DEPTH_MEDIAN_TOLERANCE_MM = 4.0
DEPTH_MAX_TOLERANCE_MM = 8.0
# The unstripped case is z-scored over the head eroded by 10 mm, which still holds the inner few mm
# of the (dark) skull (scalp + skull is about 12 mm); the stripped one over the intracranial region.
# Measured on this cohort: brain mean 0.27-0.37 SD, SD ratio 0.81-0.90, lesions 0.04-0.31 SD.
BRAIN_MEAN_TOLERANCE_SD = 0.5  # mean normalised intensity of the intracranial region, in SDs
BRAIN_STD_RATIO = (0.75, 1.05)  # normalising SD of the stripped case / of the unstripped one
LESION_MEAN_TOLERANCE_SD = 0.4  # mean normalised intensity inside each lesion's own patch mask
N_CASES = 6


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("skull_stripped")
    original = generate_synthetic_dataset(root / "raw", n_train=N_CASES, n_test=0, n_centres=4, size=4.0, seed=5,
                                          num_processes=1, progress=False)
    cases = RawDataset(original).cases("Tr")
    return {
        "original": original,
        "stripped": copy_with_zeroed_outside(original, root / "stripped" / original.name, cases, "stripped"),
        "zero_air": copy_with_zeroed_outside(original, root / "zero_air" / original.name, cases, "zero_air"),
        # mixed: the first half stripped, one zero-air case, the rest as generated
        "mixed": copy_with_zeroed_outside(original, root / "mixed" / original.name, cases[: N_CASES // 2], "stripped"),
        "cases": cases,
        "root": root,
    }


def fingerprint(folder: Path, output: Path) -> dict:
    extractor = DatasetFingerprintExtractor(folder, num_processes=1, progress=False, output_folder=output)
    extractor.total_foreground_samples = 2e5  # nnU-Net's 1e8 samples are not what this is about
    return extractor.run(overwrite_existing=True)


@pytest.fixture(scope="module")
def plans(cohorts) -> dict:
    fp = fingerprint(cohorts["original"], cohorts["root"] / "fp_original")
    return GLMILPlanner(fp, json.loads((cohorts["original"] / "dataset.json").read_text()), CPU).plan()


def raw_case(folder: Path, case: str) -> tuple:
    """``(images, lesion mask, geometry)`` of a training case, as stored (run_case reorients)."""
    raw = RawDataset(folder)
    images, mask, geometry = raw.read_case(case, "Tr")
    return images, mask, geometry


@pytest.fixture(scope="module")
def preprocessed(cohorts, plans) -> dict[str, dict[str, tuple]]:
    preprocessor = CasePreprocessor(plans)
    out: dict[str, dict[str, tuple]] = {}
    for kind in ("original", "stripped"):
        out[kind] = {case: preprocessor.run_case(*raw_case(cohorts[kind], case), case) for case in cohorts["cases"]}
    return out


def phantom(kind: str) -> np.ndarray:
    """A (1, Z, Y, X) head at 2 mm: scalp (5-6 mm), dark skull (6-8 mm), brain; air as ``kind`` says."""
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[:40, :48, :44]
    r = np.sqrt(((z - 20) / 16.0) ** 2 + ((y - 24) / 20.0) ** 2 + ((x - 22) / 18.0) ** 2)
    image = np.where(r < 1.0, 800.0, 0.0) + rng.normal(0, 20, r.shape)
    image[(r < 0.85) & (r >= 0.65)] = 60.0 + rng.normal(0, 20, int(((r < 0.85) & (r >= 0.65)).sum()))
    image[r < 0.65] = 500.0 + rng.normal(0, 20, int((r < 0.65).sum()))
    image = np.abs(np.round(image))
    if kind == "stripped":
        image[r >= 0.65] = 0.0
    elif kind == "zero_air":
        image[r >= 1.0] = 0.0
    elif kind == "integer_noise_air":  # faint integer noise: about half of the air voxels are exactly 0
        image[r >= 1.0] = rng.poisson(0.7, int((r >= 1.0).sum()))
    return image[None].astype(np.float32)


@pytest.mark.parametrize("kind, stripped", [("stripped", True), ("zero_air", False), ("integer_noise_air", False)])
def test_criterion_on_a_phantom(kind, stripped):
    check, _ = detect_skull_stripping(phantom(kind), (2.0, 2.0, 2.0))
    assert check.skull_stripped is stripped, check
    if kind == "integer_noise_air":
        assert min(check.zero_fraction) > 0.25 and check.reason.startswith(("nonzero voxels", "the nonzero region"))
    if kind == "zero_air":
        assert check.surface_contrast[0] > 0.5


def test_detection_flags_every_stripped_case_and_no_unstripped_one(cohorts):
    for kind, expected in (("original", False), ("stripped", True), ("zero_air", False)):
        raw = RawDataset(cohorts[kind])
        for case in cohorts["cases"]:
            images, geometry = raw.read_images(case, "Tr")
            canonical, grid = to_canonical(images, geometry)
            check, region = detect_skull_stripping(canonical, grid.spacing_zyx)
            assert check.skull_stripped is expected, (kind, case, check)
            if kind == "zero_air":  # exactly-zero air, yet the scalp-over-skull pattern keeps it unstripped
                assert check.background_fraction > 0.25 and max(check.stray_fraction) == 0.0, (case, check)
                assert all(c > 0 for c in check.surface_contrast), (case, check)
            if kind == "stripped":
                assert all(c is None or c < 0 for c in check.surface_contrast), (case, check)
                # the region is the phantom's intracranial volume
                inside = intracranial_distance(cohorts["original"], case)[0] <= 0
                assert abs(int(region.sum()) - int(inside.sum())) <= 0.02 * inside.sum(), case


def test_lesion_depth_matches_the_unstripped_case(preprocessed):
    differences = []
    for case, (_, _, original) in preprocessed["original"].items():
        stripped = preprocessed["stripped"][case][2]
        assert original["skull_stripped"] is False and stripped["skull_stripped"] is True
        assert [l["label"] for l in original["lesions"]] == [l["label"] for l in stripped["lesions"]]
        for a, b in zip(original["lesions"], stripped["lesions"]):
            assert b["depth_below_head_surface_mm"] >= SCALP_AND_SKULL_MM  # every lesion lies inside the brain
            differences.append(b["depth_below_head_surface_mm"] - a["depth_below_head_surface_mm"])
    differences = np.abs(differences)
    assert len(differences) >= N_CASES
    assert np.median(differences) <= DEPTH_MEDIAN_TOLERANCE_MM, differences
    assert differences.max() <= DEPTH_MAX_TOLERANCE_MM, differences


def test_normalised_intensities_match_the_unstripped_case(cohorts, preprocessed):
    """The stripped case is z-scored over its whole nonzero (intracranial) region; the unstripped one
    over the head eroded by 10 mm. Both regions hold the same tissue, so the intracranial region's
    mean normalised intensity and each lesion's stay within a fraction of an SD."""
    for case in cohorts["cases"]:
        g_o, local_o, original = preprocessed["original"][case]
        g_s, local_s, stripped = preprocessed["stripped"][case]
        images, _, _ = raw_case(cohorts["stripped"], case)
        for channel in ("0", "1"):
            values = images[int(channel)][images[int(channel)] != 0].astype(np.float64)
            o, s = original["normalisation"][channel], stripped["normalisation"][channel]
            assert s["mean"] == pytest.approx(values.mean(), rel=0.02)  # z-scored over the nonzero region
            assert abs((values.mean() - o["mean"]) / o["std"]) <= BRAIN_MEAN_TOLERANCE_SD, (case, channel)
            assert BRAIN_STD_RATIO[0] <= s["std"] / o["std"] <= BRAIN_STD_RATIO[1], (case, channel)
        # lesion patches sit on the same grids (centred on the same centroids): compare inside each lesion
        assert local_o.shape == local_s.shape
        for k in range(local_o.shape[0]):
            inside = local_o[k, 0, -1] > 0.5
            if inside.any():
                for c in range(local_o.shape[2] - 1):
                    difference = local_s[k, 0, c][inside].mean() - local_o[k, 0, c][inside].mean()
                    assert abs(difference) <= LESION_MEAN_TOLERANCE_SD, (case, k, c, difference)
        # the global crop of a stripped case is the brain's box, inside the head's box
        box_o, box_s = np.asarray(original["head_bbox_canonical"]), np.asarray(stripped["head_bbox_canonical"])
        assert (box_s[:, 0] >= box_o[:, 0]).all() and (box_s[:, 1] <= box_o[:, 1]).all()


def test_unstripped_cases_are_preprocessed_as_before(cohorts, plans, preprocessed):
    """Plans without the skull_stripping section (written before detection existed) run the old code
    path; with detection on, an unstripped case gives the same arrays and properties but the flag."""
    legacy = copy.deepcopy(plans)
    del legacy["preprocessing"]["skull_stripping"]
    assert plans_hash(legacy) != plans_hash(plans)
    for case in cohorts["cases"][:2]:
        g, local, properties = CasePreprocessor(legacy).run_case(*raw_case(cohorts["original"], case), case)
        g_new, local_new, properties_new = preprocessed["original"][case]
        np.testing.assert_array_equal(g, g_new)
        np.testing.assert_array_equal(local, local_new)
        assert properties.pop("skull_stripped") is None and properties_new["skull_stripped"] is False
        assert properties == {k: v for k, v in properties_new.items() if k != "skull_stripped"}


def test_mixed_cohort_gets_per_case_flags_and_plans_record_the_fraction(cohorts):
    fp = fingerprint(cohorts["mixed"], cohorts["root"] / "fp_mixed")
    stripped = set(cohorts["cases"][: N_CASES // 2])
    assert {case for case, record in fp["cases"].items() if record["skull_stripped"]} == stripped
    for case, record in fp["cases"].items():
        assert record["skull_stripping"]["skull_stripped"] is (case in stripped)
        if case in stripped:  # the head box of a stripped case is its brain, smaller than a head
            unstripped_volume = fp["cases"][sorted(set(fp["cases"]) - stripped)[0]]["head_volume_mm3"]
            assert record["head_volume_mm3"] == record["brain_region_volume_mm3"] < unstripped_volume
    summary = fp["summary"]["skull_stripping"]
    assert summary == {"n_cases": N_CASES, "n_skull_stripped": len(stripped),
                       "fraction_skull_stripped": len(stripped) / N_CASES, "cohort": "mixed"}
    plans = GLMILPlanner(fp, json.loads((cohorts["mixed"] / "dataset.json").read_text()), CPU).plan()
    assert plans["skull_stripping"] == {"training_cases": N_CASES, "skull_stripped_training_cases": len(stripped),
                                        "fraction_skull_stripped": 0.5, "cohort": "mixed"}
    rule = plans["preprocessing"]["skull_stripping"]
    assert rule["detection"] == "per_case" and rule["scalp_and_skull_mm"] == SCALP_AND_SKULL_MM
    # the fraction is outside the plans hash: per-case detection does not depend on the other cases
    other = copy.deepcopy(plans)
    other["skull_stripping"]["fraction_skull_stripped"] = 0.0
    assert plans_hash(other) == plans_hash(plans)
    # each case of the mixed cohort is preprocessed as its own kind
    preprocessor = CasePreprocessor(plans)
    for case in cohorts["cases"]:
        properties = preprocessor.run_case(*raw_case(cohorts["mixed"], case), case)[2]
        assert properties["skull_stripped"] is (case in stripped)


def test_a_zero_air_unstripped_case_keeps_its_scalp_depth(cohorts, plans, preprocessed):
    """Exactly-zero air on an unstripped head: not flagged, so its lesions' depths stay head depths."""
    preprocessor = CasePreprocessor(plans)
    for case in cohorts["cases"][:2]:
        properties = preprocessor.run_case(*raw_case(cohorts["zero_air"], case), case)[2]
        assert properties["skull_stripped"] is False
        original = preprocessed["original"][case][2]
        for a, b in zip(original["lesions"], properties["lesions"]):
            assert abs(a["depth_below_head_surface_mm"] - b["depth_below_head_surface_mm"]) <= DEPTH_MAX_TOLERANCE_MM
