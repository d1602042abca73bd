"""The raw dataset API reads channels, masks, geometry and typed clinical tables exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from sksurv.nonparametric import kaplan_meier_estimator

from glmil_auto.dataset import (
    DatasetError,
    Geometry,
    RawDataset,
    binary_targets,
    geometry_mismatches,
    read_image,
    survival_structured_array,
    survival_targets,
    write_image,
)
from handmade_dataset import CASES_TR, CASES_TS, DIRECTION, SHAPE, SPACING, label_for, origin_for


def test_cases_and_splits(handmade_dataset):
    ds = RawDataset(handmade_dataset)
    assert ds.cases("Tr") == CASES_TR
    assert ds.cases("Ts") == CASES_TS
    assert ds.split_of(CASES_TS[0]) == "Ts"
    assert ds.spec.lesion_labels == (1, 3)
    assert ds.spec.binary_endpoints == ["lmd"] and ds.spec.survival_endpoints == ["os"]
    with pytest.raises(DatasetError, match="case nobody"):
        ds.split_of("nobody")


def test_lookup_from_environment(handmade_dataset, monkeypatch):
    monkeypatch.setenv("glmil_raw", str(handmade_dataset.parent))
    assert RawDataset.from_identifier(917).folder == handmade_dataset


def test_read_case_keeps_geometry_exact(handmade_dataset):
    ds = RawDataset(handmade_dataset)
    images, mask, geometry = ds.read_case(CASES_TR[1])
    assert images.shape == (3,) + SHAPE and images.dtype == np.float32
    assert geometry.shape == SHAPE
    np.testing.assert_allclose(geometry.spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(geometry.origin, origin_for(1), atol=1e-5)
    np.testing.assert_allclose(geometry.direction, DIRECTION, atol=1e-6)
    reference = sitk.ReadImage(str(ds.image_files(CASES_TR[1])[2]))
    np.testing.assert_array_equal(images[2], sitk.GetArrayFromImage(reference))
    # lesion mask = union of lesion labels 1 and 3; oedema (2) excluded
    np.testing.assert_array_equal(mask, np.isin(label_for(1), [1, 3]))
    assert mask.dtype == bool and 0 < mask.sum() < (label_for(1) > 0).sum()


def test_index_world_transform_matches_simpleitk(handmade_dataset):
    ds = RawDataset(handmade_dataset)
    image = sitk.ReadImage(str(ds.image_files(CASES_TR[0])[0]))
    geometry = Geometry.from_image(image)
    rng = np.random.default_rng(0)
    index_zyx = rng.uniform(0, 10, size=(5, 3))
    expected = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(i[::-1])) for i in index_zyx])
    np.testing.assert_allclose(geometry.index_to_world(index_zyx), expected, atol=1e-9)
    np.testing.assert_allclose(geometry.world_to_index(expected), index_zyx, atol=1e-9)


def test_write_image_round_trip(tmp_path):
    geometry = Geometry((4, 5, 6), (0.8, 0.8, 2.0), (-10.5, 3.25, 100.0), tuple(np.eye(3)[:, [1, 0, 2]].ravel().astype(float)))
    array = np.arange(120, dtype=np.float32).reshape(4, 5, 6)
    write_image(array, geometry, tmp_path / "x.nii.gz")
    back, back_geometry = read_image(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(back, array)
    # NIfTI stores spacing as float32: equal within header precision, and JSON round-trips exactly
    assert geometry_mismatches(geometry, back_geometry, spacing_rtol=1e-6, origin_atol_mm=1e-5) == []
    assert Geometry.from_dict(json.loads(json.dumps(back_geometry.to_dict()))) == back_geometry
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="does not match geometry shape"):
        write_image(array[:2], geometry, tmp_path / "y.nii.gz")


def test_clinical_table_is_typed(handmade_dataset):
    ds = RawDataset(handmade_dataset)
    table = ds.clinical_table("Tr")
    assert list(table.index) == CASES_TR
    assert table["age"].dtype == np.float64 and np.isnan(table.loc[CASES_TR[1], "age"])
    assert table.loc[CASES_TR[0], "sex"] == "F" and pd.isna(table.loc[CASES_TR[2], "sex"])
    assert table.loc[CASES_TR[1], "prior_resection"] == 1.0
    np.testing.assert_array_equal(binary_targets(table, "lmd"), [1.0, np.nan, 0.0, 0.0])
    time, event = survival_targets(table, ds.spec, "os")
    np.testing.assert_array_equal(time, [320.5, 90.0, 700.0, np.nan])
    np.testing.assert_array_equal(event, [1.0, 0.0, 1.0, np.nan])
    known = ~np.isnan(time)
    y = survival_structured_array(time[known], event[known])
    assert y.dtype.names == ("event", "time")
    times, survival = kaplan_meier_estimator(y["event"], y["time"])  # sksurv accepts it as is
    np.testing.assert_allclose(times, [90.0, 320.5, 700.0])
    np.testing.assert_allclose(survival, [1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="unknown survival outcome"):
        survival_structured_array(time, event)


def test_held_out_table_may_lack_outcomes(handmade_dataset):
    (handmade_dataset / "clinicalTs.csv").write_text(
        "subject,site,age,sex,prior_resection\n" + "".join(f"{c},C,50,F,0\n" for c in CASES_TS)
    )
    table = RawDataset(handmade_dataset).clinical_table("Ts")
    assert list(table.index) == CASES_TS and "lmd" not in table


def test_strict_reading_names_case_and_file(handmade_dataset):
    ds = RawDataset(handmade_dataset)
    missing = ds.image_files(CASES_TR[2])[1]
    missing.unlink()
    with pytest.raises(DatasetError) as info:
        ds.read_images(CASES_TR[2])
    assert info.value.problems[0].case == CASES_TR[2] and info.value.problems[0].file == str(missing)
    truncated = ds.label_file(CASES_TR[3])
    truncated.write_bytes(truncated.read_bytes()[:-40])
    with pytest.raises(DatasetError, match="truncated"):
        ds.read_lesion_mask(CASES_TR[3])
    (handmade_dataset / "clinicalTr.csv").write_text("subject,site\nx,A\n")
    with pytest.raises(DatasetError) as info:
        ds.clinical_table("Tr")
    messages = str(info.value)
    assert "declared column 'age'" in messages and "case x" in messages and "clinicalTr.csv" in messages


def test_label_geometry_mismatch_is_refused(handmade_dataset):
    ds = RawDataset(handmade_dataset)
    path = ds.label_file(CASES_TR[0])
    image = sitk.ReadImage(str(path))
    image.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(image, str(path))
    with pytest.raises(DatasetError, match="origin"):
        ds.read_case(CASES_TR[0])
