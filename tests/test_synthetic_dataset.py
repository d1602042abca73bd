"""A tiny rendered synthetic dataset: the raw contract, geometry per centre, masks, micro-lesions
and agreement of the truth file with the files."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from glmil_auto.synthetic import generate_synthetic_dataset, load_truth, truth_path
from glmil_auto.synthetic import outcomes as om
from glmil_auto.synthetic.centres import EXTERNAL_PROFILE, TRAINING_PROFILES

FACTOR = 3.0  # coarse grid: ~0.1 s per case
FULL = np.ones((3, 3, 3), dtype=bool)
COLUMNS = [
    "case_id", "center", "age", "kps", "primary", "extracranial_disease", "prior_wbrt",
    "local_failure", "distant_failure", "leptomeningeal_failure", "os_months", "os_event",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    folder = generate_synthetic_dataset(raw, n_train=6, n_test=3, n_centres=4, size=FACTOR, seed=11,
                                        num_processes=1, progress=False)
    return folder


@pytest.fixture(scope="module")
def truth(dataset):
    return load_truth(truth_path(dataset))


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _cases(truth, split=None):
    return [c for c in truth["cases"].values() if split is None or c["split"] == split]


def test_layout_and_truth_beside_the_folder(dataset, truth):
    assert dataset.name == "Dataset001_SynthBrainMets"
    assert truth_path(dataset) == dataset.parent / "Dataset001_SynthBrainMets_truth.json"
    assert truth_path(dataset).is_file()
    assert not any("truth" in p.name for p in dataset.rglob("*"))
    assert sorted(p.name for p in dataset.iterdir()) == sorted(
        ["dataset.json", "imagesTr", "labelsTr", "clinicalTr.csv", "lesionsTr.csv", "imagesTs", "labelsTs",
         "clinicalTs.csv", "lesionsTs.csv"]
    )
    for split in ("Tr", "Ts"):
        ids = [c["case_id"] for c in _cases(truth, split)]
        names = sorted(p.name for p in (dataset / f"images{split}").iterdir())
        assert names == sorted(f"{i}_{c:04d}.nii.gz" for i in ids for c in (0, 1))
        assert sorted(p.name for p in (dataset / f"labels{split}").iterdir()) == sorted(f"{i}.nii.gz" for i in ids)
    assert load_truth(dataset)["dataset"] == dataset.name  # a folder is accepted too


def test_dataset_json_is_the_contract(dataset):
    d = json.loads((dataset / "dataset.json").read_text())
    assert d["channel_names"] == {"0": "T1c", "1": "FLAIR"}
    assert d["labels"] == {"background": 0, "metastasis": 1}
    assert d["numTraining"] == 6 and d["numTest"] == 3
    assert d["file_ending"] == ".nii.gz"
    assert d["case_column"] == "case_id" and d["group_column"] == "center"
    assert d["lesion_labels"] == [1]
    assert d["clinical_features"] == {"age": "numeric", "kps": "numeric", "primary": "categorical",
                                      "extracranial_disease": "binary", "prior_wbrt": "binary"}
    assert d["endpoints"] == {
        "local_failure": {"type": "binary", "aggregation": "any_lesion"},
        "distant_failure": {"type": "binary"},
        "leptomeningeal_failure": {"type": "binary"},
        "os": {"type": "survival", "time": "os_months", "event": "os_event"},
    }
    assert d["reference"] == "synthetic, glmil_auto"
    assert d["synthetic"]["seed"] == 11 and d["synthetic"]["spacing_factor"] == FACTOR


def test_clinical_csvs_follow_the_contract(dataset, truth):
    for split, centres in (("Tr", {"C1", "C2", "C3"}), ("Ts", {"C4"})):
        rows = _read_csv(dataset / f"clinical{split}.csv")
        assert rows[0] == COLUMNS
        body = [dict(zip(COLUMNS, r)) for r in rows[1:]]
        assert [r["case_id"] for r in body] == [c["case_id"] for c in _cases(truth, split)]
        assert {r["center"] for r in body} == centres
        for r in body:
            assert r["case_id"].startswith("SBM_") and len(r["case_id"]) == 8
            assert r["age"].isdigit() and 18 <= int(r["age"]) <= 95
            assert int(r["kps"]) in range(40, 101, 10)
            assert r["primary"] in {"lung", "breast", "melanoma", "renal", "gastrointestinal", "other"}
            for col in ("extracranial_disease", "prior_wbrt", "os_event"):
                assert r[col] in {"0", "1"}
            for col in ("local_failure", "distant_failure", "leptomeningeal_failure"):
                assert r[col] in {"0", "1", ""}
            assert float(r["os_months"]) > 0 and len(r["os_months"].split(".")[1]) == 2
    train_ids = [r[0] for r in _read_csv(dataset / "clinicalTr.csv")[1:]]
    test_ids = [r[0] for r in _read_csv(dataset / "clinicalTs.csv")[1:]]
    assert train_ids == [f"SBM_{i:04d}" for i in range(1, 7)]
    assert test_ids == [f"SBM_{i:04d}" for i in range(7, 10)]  # external ids continue the numbering


def _images(dataset, case):
    split = "Tr" if (dataset / "imagesTr" / f"{case['case_id']}_0000.nii.gz").exists() else "Ts"
    t1c = sitk.ReadImage(str(dataset / f"images{split}" / f"{case['case_id']}_0000.nii.gz"))
    flair = sitk.ReadImage(str(dataset / f"images{split}" / f"{case['case_id']}_0001.nii.gz"))
    label = sitk.ReadImage(str(dataset / f"labels{split}" / f"{case['case_id']}.nii.gz"))
    return t1c, flair, label


def test_geometry_per_centre(dataset, truth):
    profiles = {f"C{i + 1}": p for i, p in enumerate(TRAINING_PROFILES[:3])}
    profiles["C4"] = EXTERNAL_PROFILE
    origins: dict[str, list] = {}
    for case in _cases(truth):
        t1c, flair, label = _images(dataset, case)
        profile = profiles[case["center"]]
        expected = tuple(s * FACTOR for s in profile.spacing)
        for img in (t1c, flair, label):
            assert np.allclose(img.GetSpacing(), expected)
            assert np.allclose(img.GetDirection(), profile.direction)
            assert img.GetSize() == t1c.GetSize()
            assert np.allclose(img.GetOrigin(), t1c.GetOrigin())
        assert t1c.GetPixelID() == sitk.sitkFloat32 and flair.GetPixelID() == sitk.sitkFloat32
        assert label.GetPixelID() == sitk.sitkUInt8
        assert case["geometry"]["shape_zyx"] == list(reversed(t1c.GetSize()))
        origins.setdefault(case["center"], []).append(t1c.GetOrigin())
    # documented anisotropy: C2 1.5/0.9, C3 2.0/0.8, C4 3.0/1.0 (slice axis / in-plane)
    assert math.isclose(TRAINING_PROFILES[1].spacing[2] / TRAINING_PROFILES[1].spacing[0], 1.5 / 0.9)
    assert math.isclose(TRAINING_PROFILES[2].spacing[2] / TRAINING_PROFILES[2].spacing[0], 2.5)
    assert math.isclose(EXTERNAL_PROFILE.spacing[2] / EXTERNAL_PROFILE.spacing[0], 3.0)
    # C3 oblique, C4 a permutation (sagittal), both proper rotations
    d3 = np.reshape(TRAINING_PROFILES[2].direction, (3, 3))
    d4 = np.reshape(EXTERNAL_PROFILE.direction, (3, 3))
    assert not np.allclose(np.abs(d3), np.round(np.abs(d3)))
    assert np.allclose(np.abs(d4).sum(axis=0), 1) and not np.allclose(np.abs(d4), np.eye(3))
    assert np.isclose(np.linalg.det(d3), 1) and np.isclose(np.linalg.det(d4), 1)
    for centre, values in origins.items():  # origins vary per case
        assert len({tuple(np.round(o, 3)) for o in values}) == len(values)


def test_intensity_scales_differ_by_orders_of_magnitude(dataset, truth):
    top = {}
    for case in _cases(truth):
        t1c = sitk.GetArrayFromImage(_images(dataset, case)[0])
        top.setdefault(case["center"], []).append(np.percentile(t1c, 99))
    ratio = np.median(top["C4"]) / np.median(top["C3"])
    assert ratio > 1000


def test_mask_components_are_the_lesions(dataset, truth):
    for case in _cases(truth):
        _, _, label = _images(dataset, case)
        mask = sitk.GetArrayFromImage(label)
        assert set(np.unique(mask)) <= {0, 1}
        comp, k = ndimage.label(mask, structure=FULL)
        assert k == case["n_lesions"] == len(case["lesions"]) >= 1
        sizes = np.bincount(comp.ravel())[1:]
        assert (sizes > 0).all()
        for n, les in enumerate(case["lesions"], start=1):
            assert les["lesion_index"] == n
            assert les["n_voxels"] == sizes[n - 1]
            pts = np.argwhere(comp == n).mean(axis=0)[::-1]  # (x, y, z) index
            centroid = label.TransformContinuousIndexToPhysicalPoint([float(v) for v in pts])
            assert np.allclose(centroid, les["centroid_world_mm"], atol=1e-3)
            # the analytic centre (world mm) lies in or right next to its own component
            idx = label.TransformPhysicalPointToIndex(les["centre_world_mm"])
            z, y, x = idx[2], idx[1], idx[0]
            near = comp[max(z - 1, 0): z + 2, max(y - 1, 0): y + 2, max(x - 1, 0): x + 2]
            assert (near == n).any()
        # lesions never touch: growing one component by a voxel never reaches another
        for n in range(1, k + 1):
            grown = ndimage.binary_dilation(comp == n, structure=FULL)
            assert set(np.unique(comp[grown])) <= {0, n}


def test_lesions_enhance_and_micro_lesions_are_bright_but_not_in_the_mask(dataset, truth):
    n_micro = 0
    for case in _cases(truth):
        t1c_img, _, label = _images(dataset, case)
        profile = truth["centres"][case["center"]]
        t1c = (sitk.GetArrayFromImage(t1c_img) - profile["t1c_offset"]) / profile["t1c_scale"]
        mask = sitk.GetArrayFromImage(label).astype(bool)
        solid = [les for les in case["lesions"] if not les["necrosis"]]
        if solid:
            assert np.median(t1c[mask]) > np.percentile(t1c[~mask], 90)
        for micro in case["micro_lesions"]:
            x, y, z = t1c_img.TransformPhysicalPointToIndex(micro["centre_world_mm"])
            assert not mask[z, y, x]
            hood = t1c[max(z - 2, 0): z + 3, max(y - 2, 0): y + 3, max(x - 2, 0): x + 3]
            assert t1c[z, y, x] > np.median(hood) + 0.2
            n_micro += 1
    assert n_micro > 0


def test_truth_agrees_with_the_clinical_tables(dataset, truth):
    for split in ("Tr", "Ts"):
        rows = [dict(zip(COLUMNS, r)) for r in _read_csv(dataset / f"clinical{split}.csv")[1:]]
        for row in rows:
            case = truth["cases"][row["case_id"]]
            assert case["split"] == split and case["center"] == row["center"]
            c = case["clinical"]
            assert (c["age"], c["kps"], c["primary"]) == (int(row["age"]), int(row["kps"]), row["primary"])
            for name in om.BINARY_ENDPOINTS:
                cell = row[name]
                assert case["outcomes"][name] == (None if cell == "" else int(cell))
            assert math.isclose(case["os"]["os_months"], float(row["os_months"]))
            assert case["os"]["os_event"] == int(row["os_event"])
            t = case["os"]
            assert t["os_event"] == int(t["time_uncensored_months"] <= t["censoring_time_months"])
            # the probabilities follow from the table plus the image-derived truth
            p = case["probabilities"]
            assert math.isclose(p["local_failure"], om.noisy_or([les["p_local_failure"] for les in case["lesions"]]))
            vol_cc = case["total_lesion_volume_mm3"] / 1000.0
            assert math.isclose(p["distant_failure"], om.distant_failure_probability(
                case["n_lesions"], case["n_micro_lesions"], row["primary"], int(row["prior_wbrt"]), vol_cc))
            lesions = case["lesions"]
            assert math.isclose(p["leptomeningeal_failure"], om.leptomeningeal_failure_probability(
                any(les["csf_contact"] for les in lesions), any(les["ventricle_contact"] for les in lesions),
                any(les["posterior_fossa"] for les in lesions), row["primary"], case["n_lesions"]))
            assert math.isclose(t["linear_predictor"], om.os_linear_predictor(
                int(row["age"]), int(row["kps"]), int(row["extracranial_disease"]), row["primary"],
                case["n_lesions"], vol_cc, case["n_micro_lesions"]))
            for les in lesions:
                assert les["dose_gy"] == om.srs_dose_gy(les["diameter_mm"])
                assert 3.0 <= les["diameter_mm"] <= 35.0


def test_the_dataset_api_and_verifier_accept_it(dataset, truth):
    """The generator writes exactly the contract that the reader and the verifier enforce."""
    from glmil_auto.dataset import RawDataset, verify_dataset

    report = verify_dataset(dataset, num_processes=2, progress=False)
    assert report.problems == [], report.format()
    assert report.num_cases == {"Tr": 6, "Ts": 3}
    ds = RawDataset(dataset)
    for split in ("Tr", "Ts"):
        table = ds.clinical_table(split)
        for case in ds.cases(split):
            record = truth["cases"][case]
            images, mask, geometry = ds.read_case(case)
            assert images.shape == (2,) + tuple(record["geometry"]["shape_zyx"])
            np.testing.assert_allclose(geometry.spacing, record["geometry"]["spacing"], rtol=1e-6)
            np.testing.assert_allclose(geometry.origin, record["geometry"]["origin"], atol=1e-4)
            np.testing.assert_allclose(geometry.direction, record["geometry"]["direction"], atol=1e-6)
            assert ndimage.label(mask, FULL)[1] == record["n_lesions"]
            for endpoint in ds.spec.binary_endpoints:
                expected = record["outcomes"][endpoint]
                value = table.loc[case, endpoint]
                assert (np.isnan(value) and expected is None) or value == expected
            assert table.loc[case, "os_event"] == record["os"]["os_event"]
