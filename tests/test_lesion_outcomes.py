"""Lesion-level outcomes (lesionsTr.csv): the reader, the matching rules, the verifier's checks
and the "aggregation" declaration. Built on the hand-made (oblique) dataset and on tiny grids."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from glmil_auto.dataset import layout
from glmil_auto.dataset.dataset_json import Endpoint, spec_from_dict, validate_dataset_json
from glmil_auto.dataset.image_io import Geometry, read_image
from glmil_auto.dataset.lesion_instances import find_lesion_instances
from glmil_auto.dataset.lesion_outcomes import (
    case_consistency_problems,
    lesion_outcomes_for_case,
    match_lesion_rows,
    parse_lesion_table,
    read_lesion_table,
)
from glmil_auto.dataset.problems import DatasetError
from glmil_auto.dataset.verify import verify_dataset
from handmade_dataset import CASES_TR, DATASET_JSON

LESION_HEADER = ["subject", "roi_name", "x_mm", "y_mm", "z_mm", "lmd", "lmd_time"]
CASE_LMD_1, CASE_LMD_UNKNOWN, CASE_LMD_0 = CASES_TR[0], CASES_TR[1], CASES_TR[2]  # lmd 1, "", 0 in CLINICAL_TR


# ----------------------------------------------------------------------------- helpers


def declare_any_lesion(folder: Path) -> None:
    content = json.loads((folder / "dataset.json").read_text())
    content["endpoints"]["lmd"]["aggregation"] = "any_lesion"
    (folder / "dataset.json").write_text(json.dumps(content, indent=2))


def centroids(folder: Path, case: str, split: str = "Tr") -> list[tuple[float, float, float]]:
    """World centroids (x, y, z mm) of the case's lesions, in label order, from the label file."""
    label, geometry = read_image(folder / f"labels{split}" / f"{case}.nii.gz")
    _, instances = find_lesion_instances(np.isin(label, DATASET_JSON["lesion_labels"]), geometry)
    return [inst.centroid_world_mm for inst in instances]


def row(case: str, point, lmd: str, time: str = "", roi: str = "PTV") -> list[str]:
    return [case, roi, *(f"{v:.4f}" for v in point), lmd, time]


def write_lesions(folder: Path, rows: list[list[str]], header: list[str] = LESION_HEADER, split: str = "Tr") -> Path:
    path = layout.lesion_file(folder, split)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def valid_rows(folder: Path) -> list[list[str]]:
    """Case lmd=1: lesion 1 failed, lesion 2 unknown; lmd unknown: one row; lmd=0: both lesions 0."""
    a, b, c = (centroids(folder, case) for case in (CASE_LMD_1, CASE_LMD_UNKNOWN, CASE_LMD_0))
    return [
        row(CASE_LMD_1, a[0], "1", "7.5"),
        row(CASE_LMD_1, a[1], ""),
        row(CASE_LMD_UNKNOWN, b[1], "0", "12"),
        row(CASE_LMD_0, c[0], "0"),
        row(CASE_LMD_0, c[1], "0"),
    ]


def lesion_errors(folder: Path, num_processes: int = 1):
    report = verify_dataset(folder, num_processes=num_processes, progress=False)
    return report, report.errors


def single_lesion_error(folder: Path, fragment: str, case: str | None):
    report, errors = lesion_errors(folder)
    assert len(errors) == 1, report.format()
    problem = errors[0]
    assert fragment in problem.message, report.format()
    assert problem.case == case, report.format()
    assert problem.file == str(layout.lesion_file(folder, "Tr")), report.format()
    return problem


@pytest.fixture
def lesion_dataset(handmade_dataset) -> Path:
    declare_any_lesion(handmade_dataset)
    write_lesions(handmade_dataset, valid_rows(handmade_dataset))
    return handmade_dataset


def spec(**endpoint_overrides):
    content = copy.deepcopy(DATASET_JSON)
    for name, declaration in endpoint_overrides.items():
        content["endpoints"][name] = declaration
    return spec_from_dict(content)


# ----------------------------------------------------------------------------- dataset.json


def test_aggregation_defaults_to_case_and_parses_any_lesion():
    assert spec().endpoints["lmd"].aggregation == "case" and spec().any_lesion_endpoints == []
    parsed = spec(lmd={"type": "binary", "aggregation": "any_lesion"})
    assert parsed.endpoints["lmd"].aggregation == "any_lesion" and parsed.endpoints["lmd"].any_lesion
    assert parsed.any_lesion_endpoints == ["lmd"]
    assert spec(lmd={"type": "binary", "aggregation": "case"}).endpoints["lmd"].aggregation == "case"
    # positional constructions written before the field existed keep working
    assert Endpoint("os", "survival", "t", "e").aggregation == "case"


@pytest.mark.parametrize(
    "declaration, fragment",
    [
        ({"type": "binary", "aggregation": "max"}, "has \"aggregation\" 'max'; use one of ['case', 'any_lesion']"),
        ({"type": "binary", "aggregation": 1}, "has \"aggregation\" 1"),
        ({"type": "survival", "time": "survival_days", "event": "death", "aggregation": "any_lesion"},
         "is survival: \"aggregation\": \"any_lesion\" applies to binary endpoints only"),
    ],
)
def test_aggregation_validation(declaration, fragment):
    content = copy.deepcopy(DATASET_JSON)
    name = "os" if declaration["type"] == "survival" else "lmd"
    content["endpoints"][name] = declaration
    problems = validate_dataset_json(content, "dataset.json")
    assert len(problems) == 1 and fragment in problems[0].message and f"'{name}'" in problems[0].message
    with pytest.raises(DatasetError):
        spec_from_dict(content)


def test_verifier_reports_a_bad_aggregation(handmade_dataset):
    content = json.loads((handmade_dataset / "dataset.json").read_text())
    content["endpoints"]["lmd"]["aggregation"] = "all_lesions"
    (handmade_dataset / "dataset.json").write_text(json.dumps(content))
    report, errors = lesion_errors(handmade_dataset)
    assert any("'all_lesions'" in e.message and e.file == str(handmade_dataset / "dataset.json") for e in errors)


# ----------------------------------------------------------------------------- the reader


def test_reader_types_the_table_and_ignores_other_columns(lesion_dataset):
    table = read_lesion_table(layout.lesion_file(lesion_dataset, "Tr"), spec(lmd={"type": "binary", "aggregation": "any_lesion"}))
    assert list(table.columns) == ["subject", "csv_line", "x_mm", "y_mm", "z_mm", "lmd", "lmd_time"]
    assert table["csv_line"].tolist() == [2, 3, 4, 5, 6]
    assert table["lmd"].tolist()[:1] == [1.0] and math.isnan(table["lmd"][1])
    assert table["lmd_time"][0] == 7.5 and math.isnan(table["lmd_time"][3])
    assert all(table[c].dtype == np.float64 for c in ("x_mm", "y_mm", "z_mm", "lmd", "lmd_time"))


def set_cell(table: pd.DataFrame, index: int, column: str, value: str) -> pd.DataFrame:
    table.loc[index, column] = value
    return table


@pytest.mark.parametrize(
    "edit, fragment, case",
    [
        (lambda t: t.drop(columns=["y_mm"]), "lacks the column(s) ['y_mm']", None),
        (lambda t: t.drop(columns=["subject"]), "lacks the column(s) ['subject']", None),
        (lambda t: set_cell(t, 1, "x_mm", "left"), "line 3: 'x_mm' must be a finite number (mm), got 'left'", CASE_LMD_1),
        (lambda t: set_cell(t, 2, "z_mm", ""), "line 4: 'z_mm' must be a finite number (mm), got ''", CASE_LMD_UNKNOWN),
        (lambda t: t.assign(lmd=["1", "2", "0", "", "0"]), "line 3: 'lmd' must be 0 or 1 (or empty when unknown), got '2'", CASE_LMD_1),
        (lambda t: t.assign(lmd_time=["0", "", "", "", ""]), "line 2: 'lmd_time' must be a number > 0 (or empty), got '0'", CASE_LMD_1),
        (lambda t: t.assign(subject=["", *t["subject"][1:]]), "line 2 has an empty case id", None),
    ],
)
def test_reader_errors_name_the_file_and_the_problem(lesion_dataset, edit, fragment, case):
    path = layout.lesion_file(lesion_dataset, "Tr")
    edit(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)
    with pytest.raises(DatasetError) as err:
        read_lesion_table(path, spec())
    problems = err.value.problems
    assert len(problems) == 1 and fragment in problems[0].message, err.value
    assert problems[0].file == str(path) and problems[0].case == case
    # the verifier reports the same problem
    report = verify_dataset(lesion_dataset, progress=False)
    assert [str(p) for p in report.errors] == [str(problems[0])], report.format()


def test_reader_ignores_columns_naming_no_binary_endpoint(tmp_path):
    path = tmp_path / "lesionsTr.csv"
    path.write_text("subject,x_mm,y_mm,z_mm,volume_cc,lesion_label,foo_time,lmd_time\nA,1,2,3,0.5,1,9,4\n")
    table = read_lesion_table(path, spec())
    assert list(table.columns) == ["subject", "csv_line", "x_mm", "y_mm", "z_mm"]  # lmd_time without lmd: ignored


def test_reader_missing_file_and_other_separator(tmp_path):
    with pytest.raises(DatasetError, match="lesion table is missing"):
        read_lesion_table(tmp_path / "lesionsTr.csv", spec())
    path = tmp_path / "lesionsTr.csv"
    path.write_text("subject;x_mm;y_mm;z_mm\nA;1;2;3\n")
    with pytest.raises(DatasetError, match="separated by semicolons"):
        read_lesion_table(path, spec())


# ----------------------------------------------------------------------------- the verifier


def test_valid_lesion_table_passes_serial_and_parallel(lesion_dataset):
    for num_processes in (1, 2):
        report, errors = lesion_errors(lesion_dataset, num_processes)
        assert errors == [], report.format()


def test_row_matching_no_lesion(lesion_dataset):
    rows = valid_rows(lesion_dataset)
    x, y, z = centroids(lesion_dataset, CASE_LMD_0)[1]
    rows[4] = row(CASE_LMD_0, (x + 30.0, y, z), "0")
    write_lesions(lesion_dataset, rows)
    problem = single_lesion_error(lesion_dataset, "line 6: the point", CASE_LMD_0)
    assert "matches no lesion" in problem.message and "nearest lesion centroid is" in problem.message


def test_ras_coordinates_get_a_hint(lesion_dataset):
    rows = valid_rows(lesion_dataset)
    x, y, z = centroids(lesion_dataset, CASE_LMD_0)[1]
    rows[4] = row(CASE_LMD_0, (-x, -y, z), "0")
    write_lesions(lesion_dataset, rows)
    problem = single_lesion_error(lesion_dataset, "matches no lesion", CASE_LMD_0)
    assert "with x and y negated it would match a lesion" in problem.message


def test_two_rows_on_one_lesion(lesion_dataset):
    rows = valid_rows(lesion_dataset)
    x, y, z = centroids(lesion_dataset, CASE_LMD_0)[0]
    rows[4] = row(CASE_LMD_0, (x + 0.5, y, z), "0")  # lesion 1 again, lesion 2 left without a row
    write_lesions(lesion_dataset, rows)
    single_lesion_error(lesion_dataset, "lines 5, 6 all match lesion 1", CASE_LMD_0)


def test_case_label_0_with_a_failed_lesion(lesion_dataset):
    rows = valid_rows(lesion_dataset)
    rows[4][LESION_HEADER.index("lmd")] = "1"
    write_lesions(lesion_dataset, rows)
    problem = single_lesion_error(lesion_dataset, "'lmd' is 0 for the case in the clinical table but lesion(s) [2] are 1",
                                  CASE_LMD_0)
    assert "any_lesion" in problem.message


def test_case_label_1_with_every_lesion_known_0(lesion_dataset):
    rows = valid_rows(lesion_dataset)
    rows[0][LESION_HEADER.index("lmd")] = "0"
    rows[1][LESION_HEADER.index("lmd")] = "0"
    write_lesions(lesion_dataset, rows)
    single_lesion_error(lesion_dataset, "'lmd' is 1 for the case in the clinical table but every one of its 2 lesion(s) is 0",
                        CASE_LMD_1)


def test_case_label_1_with_one_lesion_0_and_one_without_row_is_fine(lesion_dataset):
    rows = valid_rows(lesion_dataset)
    rows[0][LESION_HEADER.index("lmd")] = "0"
    del rows[1]  # lesion 2 of that case has no row: unknown, it may be the one that failed
    write_lesions(lesion_dataset, rows)
    report, errors = lesion_errors(lesion_dataset)
    assert errors == [], report.format()


def test_row_whose_case_is_not_in_the_split(lesion_dataset):
    rows = valid_rows(lesion_dataset) + [row("BraTS-MET-09999-000", (0.0, 0.0, 0.0), "1")]
    write_lesions(lesion_dataset, rows)
    single_lesion_error(lesion_dataset, "case has rows in the lesion table but no images in imagesTr",
                        "BraTS-MET-09999-000")


def test_rows_for_an_endpoint_not_declared_binary(lesion_dataset):
    rows = [r + ["1" if i == 0 else ""] for i, r in enumerate(valid_rows(lesion_dataset))]
    write_lesions(lesion_dataset, rows, LESION_HEADER + ["os"])
    single_lesion_error(lesion_dataset, "column 'os' gives lesion outcomes for endpoint 'os', which is declared survival",
                        CASE_LMD_1)


def test_lesion_column_of_a_case_endpoint_is_a_warning_and_not_checked_against_the_case(handmade_dataset):
    rows = valid_rows(handmade_dataset)
    rows[4][LESION_HEADER.index("lmd")] = "1"  # would contradict the case label under any_lesion
    write_lesions(handmade_dataset, rows)
    report, errors = lesion_errors(handmade_dataset)
    assert errors == [], report.format()
    assert any("aggregates per case" in w.message for w in report.warnings)


def test_held_out_lesion_table_is_checked_too(lesion_dataset):
    from handmade_dataset import CASES_TS

    x, y, z = centroids(lesion_dataset, CASES_TS[1], "Ts")[0]
    path = write_lesions(lesion_dataset, [row(CASES_TS[1], (x, y, z + 40.0), "1")], split="Ts")
    report, errors = lesion_errors(lesion_dataset)
    assert len(errors) == 1 and errors[0].case == CASES_TS[1] and errors[0].file == str(path), report.format()


# ----------------------------------------------------------------------------- matching rules


def oblique_flipped_geometry(shape=(9, 11, 13)) -> Geometry:
    """x and y flipped (RAS-stored), then rotated 20 degrees about a tilted axis; anisotropic spacing."""
    axis = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    angle = np.deg2rad(20.0)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    direction = rotation @ np.diag([-1.0, -1.0, 1.0])
    return Geometry(shape, (0.9, 1.1, 2.0), (31.0, -12.5, 7.25), tuple(direction.ravel()))


def one_lesion(geometry: Geometry, centre_zyx=(4, 5, 6)):
    mask = np.zeros(geometry.shape, bool)
    z, y, x = centre_zyx
    mask[z, y, x - 1: x + 2] = True  # three voxels along x: the centroid is the middle one
    return find_lesion_instances(mask, geometry)


def rows_at(*points, lmd=1.0) -> pd.DataFrame:
    return pd.DataFrame({
        "case_id": ["c"] * len(points), "csv_line": np.arange(len(points)) + 2,
        "x_mm": [p[0] for p in points], "y_mm": [p[1] for p in points], "z_mm": [p[2] for p in points],
        "local_failure": [lmd] * len(points),
    })


def outside_direction(geometry: Geometry, labelled: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """A unit world direction along which points 2.5-3.5 mm from the centroid are outside the lesion."""
    for candidate in np.eye(3).tolist() + (-np.eye(3)).tolist():
        d = np.asarray(candidate)
        idx = [np.floor(geometry.world_to_index(centroid + r * d) + 0.5).astype(int) for r in (2.5, 2.9, 3.1, 3.5)]
        if all(labelled[tuple(i)] == 0 for i in idx):
            return d
    raise AssertionError("no free direction")


@pytest.mark.parametrize("geometry", [
    Geometry((9, 11, 13), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)),
    oblique_flipped_geometry(),
], ids=["identity", "oblique_flipped"])
def test_containment_and_the_3_mm_rule(geometry):
    labelled, instances = one_lesion(geometry)
    centroid = np.asarray(instances[0].centroid_world_mm)
    # containment: the world point of an end voxel (as SimpleITK reports it), not the centroid
    image = geometry.apply_to(sitk.GetImageFromArray(labelled.astype(np.uint8)))
    end_voxel = np.asarray(image.TransformIndexToPhysicalPoint((7, 5, 4)))  # (x, y, z) index
    np.testing.assert_allclose(end_voxel, geometry.index_to_world(np.array([4.0, 5.0, 7.0])))
    assignment, problems = match_lesion_rows(rows_at(end_voxel), labelled, instances, geometry, "c")
    assert problems == [] and assignment == {1: {"local_failure": 1.0}}
    # nearest centroid within 3 mm from outside the lesion
    d = outside_direction(geometry, labelled, centroid)
    assignment, problems = match_lesion_rows(rows_at(centroid + 2.9 * d), labelled, instances, geometry, "c")
    assert problems == [] and list(assignment) == [1]
    assignment, problems = match_lesion_rows(rows_at(centroid + 3.1 * d), labelled, instances, geometry, "c",
                                             file="lesionsTr.csv")
    assert assignment == {} and len(problems) == 1
    assert "3.1 mm away" in problems[0].message and problems[0].case == "c" and problems[0].file == "lesionsTr.csv"


def test_point_outside_the_grid_and_empty_mask():
    geometry = oblique_flipped_geometry()
    labelled, instances = one_lesion(geometry)
    far = geometry.index_to_world(np.array([40.0, 5.0, 6.0]))
    _, problems = match_lesion_rows(rows_at(far), labelled, instances, geometry, "c")
    assert len(problems) == 1 and "outside the image grid" in problems[0].message
    empty, none = find_lesion_instances(np.zeros(geometry.shape, bool), geometry)
    _, problems = match_lesion_rows(rows_at(far), empty, none, geometry, "c")
    assert len(problems) == 1 and "the mask has no lesion" in problems[0].message
    _, problems = match_lesion_rows(rows_at((math.nan, 0.0, 0.0)), labelled, instances, geometry, "c")
    assert len(problems) == 1 and "no valid x_mm/y_mm/z_mm" in problems[0].message


def test_lesion_outcomes_for_case_gives_every_lesion_and_raises_on_bad_rows():
    geometry = oblique_flipped_geometry()
    mask = np.zeros(geometry.shape, bool)
    mask[2, 2, 2] = mask[6, 8, 10] = True
    labelled, instances = find_lesion_instances(mask, geometry)
    rows = rows_at(instances[1].centroid_world_mm, lmd=0.0).assign(local_failure_time=[5.5])
    out = lesion_outcomes_for_case(rows, labelled, instances, geometry, ["local_failure", "local_failure_time", "other"])
    assert set(out) == {1, 2}
    assert all(math.isnan(v) for v in out[1].values())
    assert out[2]["local_failure"] == 0.0 and out[2]["local_failure_time"] == 5.5 and math.isnan(out[2]["other"])
    assert lesion_outcomes_for_case(rows.iloc[:0], labelled, instances, geometry, ["local_failure"])[1] == pytest.approx(
        {"local_failure": math.nan}, nan_ok=True)
    twice = pd.concat([rows, rows], ignore_index=True).assign(csv_line=[2, 3])
    with pytest.raises(DatasetError, match="lines 2, 3 all match lesion 2") as err:
        lesion_outcomes_for_case(twice, labelled, instances, geometry, ["local_failure"], case="c", file="f.csv")
    assert err.value.problems[0].case == "c" and err.value.problems[0].file == "f.csv"


def test_case_consistency_problems_directly():
    lesions = {1: {"lf": 0.0}, 2: {"lf": math.nan}}
    assert case_consistency_problems("c", {"lf": 1.0}, lesions, ["lf"]) == []
    assert case_consistency_problems("c", {"lf": 0.0}, lesions, ["lf"]) == []
    assert case_consistency_problems("c", {"lf": math.nan}, {1: {"lf": 1.0}}, ["lf"]) == []
    [problem] = case_consistency_problems("c", {"lf": 1.0}, {1: {"lf": 0.0}, 2: {"lf": 0.0}}, ["lf"], "f.csv")
    assert problem.case == "c" and problem.file == "f.csv" and "every one of its 2 lesion(s) is 0" in problem.message
    [problem] = case_consistency_problems("c", {"lf": 0.0}, {1: {"lf": 0.0}, 2: {"lf": 1.0}}, ["lf"])
    assert "lesion(s) [2] are 1" in problem.message


def test_parse_keeps_every_problem_at_once():
    text = pd.DataFrame({"subject": ["A", "B"], "x_mm": ["x", "1"], "y_mm": ["1", "1"], "z_mm": ["1", "1"],
                         "lmd": ["3", "1"]})
    _, problems = parse_lesion_table(text, spec(), "lesionsTr.csv")
    errors = [p for p in problems if p.severity == "error"]
    assert len(errors) == 2 and {p.case for p in errors} == {"A"}


# ----------------------------------------------------------------------------- the synthetic generator


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from glmil_auto.synthetic import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("raw"), n_train=8, n_test=3, n_centres=4, size="tiny",
                                      seed=3, num_processes=1, progress=False)


def test_generated_lesion_tables_pass_the_verifier_and_agree_with_the_truth(synthetic):
    from glmil_auto.dataset import RawDataset
    from glmil_auto.dataset.lesion_outcomes import load_lesion_table, lesion_rows_for_case
    from glmil_auto.synthetic import load_truth

    report = verify_dataset(synthetic, num_processes=2, progress=False)
    assert report.problems == [], report.format()
    ds, truth = RawDataset(synthetic), load_truth(synthetic)
    assert ds.spec.endpoints["local_failure"].aggregation == "any_lesion"
    for split in ("Tr", "Ts"):
        table = load_lesion_table(synthetic, split, ds.spec)
        text = pd.read_csv(layout.lesion_file(synthetic, split), dtype=str, keep_default_na=False)
        assert list(text.columns) == ["case_id", "lesion_label", "x_mm", "y_mm", "z_mm", "local_failure"]
        for case in ds.cases(split):
            record, rows = truth["cases"][case], lesion_rows_for_case(table, case, "case_id")
            mask, geometry = ds.read_lesion_mask(case)
            labelled, instances = find_lesion_instances(mask, geometry)
            assert text[text.case_id == case]["lesion_label"].astype(int).tolist() == [i.label for i in instances]
            np.testing.assert_allclose(rows[["x_mm", "y_mm", "z_mm"]].to_numpy(),
                                       [i.centroid_world_mm for i in instances], atol=1e-4)
            np.testing.assert_allclose(rows[["x_mm", "y_mm", "z_mm"]].to_numpy(),
                                       [les["centroid_world_mm"] for les in record["lesions"]], atol=1e-3)
            outcomes = lesion_outcomes_for_case(rows, labelled, instances, geometry, ["local_failure"], case=case)
            case_value = record["outcomes"]["local_failure"]
            for les in record["lesions"]:
                value = outcomes[les["lesion_index"]]["local_failure"]
                assert (math.isnan(value) and case_value is None) or value == les["local_failure"]
            assert record["probabilities"]["local_failure"] == pytest.approx(
                1 - np.prod([1 - les["p_local_failure"] for les in record["lesions"]]))
            if case_value is not None:
                assert case_value == int(any(les["local_failure"] for les in record["lesions"]))


def test_local_failure_is_any_lesion_failing_and_other_draws_keep_their_stream():
    from glmil_auto.synthetic import sample_cohort
    from glmil_auto.synthetic import outcomes as om
    from glmil_auto.synthetic.cases import STREAM_OUTCOMES, case_rng

    specs = sample_cohort(400, seed=9)
    for s in specs:
        drawn = s.outcomes["local_failure"]
        assert drawn is None or drawn == int(any(les.local_failure for les in s.lesions))
        # what the case stream alone draws: every other endpoint and every blank is unchanged
        alone = om.sample_binary(case_rng(9, s.plan.index, STREAM_OUTCOMES), s.probabilities)
        for name in ("distant_failure", "leptomeningeal_failure"):
            assert alone[name] == s.outcomes[name]
        assert (alone["local_failure"] is None) == (drawn is None)
    assert 0 < np.mean([les.local_failure for s in specs for les in s.lesions]) < 0.3


def test_generator_without_lesion_table(tmp_path):
    from glmil_auto.synthetic import generate_synthetic_dataset
    from glmil_auto.synthetic.entry_points import generate_synthetic_entry

    folder = generate_synthetic_dataset(tmp_path / "a", n_train=2, n_test=1, n_centres=2, size=6.0, seed=5,
                                        num_processes=1, progress=False, lesion_table=False)
    assert not layout.lesion_file(folder, "Tr").exists() and not layout.lesion_file(folder, "Ts").exists()
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["synthetic"]["lesion_table"] is False
    assert meta["endpoints"]["local_failure"]["aggregation"] == "any_lesion"
    generate_synthetic_entry(["-o", str(tmp_path / "b"), "-ntr", "2", "-nts", "1", "-nc", "2", "-s", "6", "-np", "1",
                              "--seed", "5", "--no_progress", "--no-lesion-table"])
    other = tmp_path / "b" / folder.name
    assert not layout.lesion_file(other, "Tr").exists()
    with_table = generate_synthetic_dataset(tmp_path / "c", n_train=2, n_test=1, n_centres=2, size=6.0, seed=5,
                                            num_processes=1, progress=False)
    assert layout.lesion_file(with_table, "Tr").is_file() and layout.lesion_file(with_table, "Ts").is_file()
    for name in ("clinicalTr.csv", "clinicalTs.csv", "labelsTr/SBM_0001.nii.gz"):  # the same draws either way
        assert (other / name).read_bytes() == (folder / name).read_bytes() == (with_table / name).read_bytes()
