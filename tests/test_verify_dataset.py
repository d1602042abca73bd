"""glmil_verify_dataset: each class of bad input is reported, naming the case and the file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from glmil_auto.dataset.entry_points import verify_dataset_entry
from glmil_auto.dataset.verify import verify_dataset
from handmade_dataset import CASES_TR, CASES_TS, CLINICAL_TR, HEADER, write_csv

CASE = CASES_TR[1]


def image_path(folder: Path, case: str = CASE, channel: int = 0, split: str = "Tr") -> Path:
    return folder / f"images{split}" / f"{case}_{channel:04d}.nii.gz"


def label_path(folder: Path, case: str = CASE, split: str = "Tr") -> Path:
    return folder / f"labels{split}" / f"{case}.nii.gz"


def rewrite(path: Path, change) -> None:
    """Read a volume, let ``change(array, image)`` return a new sitk image, write it back."""
    image = sitk.ReadImage(str(path))
    new = change(sitk.GetArrayFromImage(image), image)
    sitk.WriteImage(new, str(path), useCompression=True)


def with_array(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.SetSpacing(like.GetSpacing())
    out.SetOrigin(like.GetOrigin())
    out.SetDirection(like.GetDirection())
    return out


def errors_of(folder: Path, num_processes: int = 1):
    report = verify_dataset(folder, num_processes=num_processes, progress=False)
    return report, report.errors


def single_error(folder: Path, fragment: str, case: str | None = CASE, file: Path | None = None):
    report, errors = errors_of(folder)
    assert len(errors) == 1, report.format()
    problem = errors[0]
    assert fragment in problem.message, report.format()
    assert problem.case == case
    if file is not None:
        assert problem.file == str(file)
    return problem


def set_clinical_cell(folder: Path, case: str, column: str, value: str) -> None:
    rows = [list(r) for r in CLINICAL_TR]
    for row in rows:
        if row[0] == case:
            row[HEADER.index(column)] = value
    write_csv(folder / "clinicalTr.csv", rows)


def test_valid_handmade_dataset_passes(handmade_dataset):
    report, errors = errors_of(handmade_dataset)
    assert errors == [], report.format()
    assert report.num_cases == {"Tr": 4, "Ts": 2}
    # one case has no OS outcome: a warning, not an error
    assert any("left out" in w.message for w in report.warnings)


def test_missing_channel(handmade_dataset):
    missing = image_path(handmade_dataset, channel=2)
    missing.unlink()
    problem = single_error(handmade_dataset, "channel 2 (FLAIR) is missing", file=missing)
    assert "FLAIR" in str(problem)


def test_undeclared_channel_and_misnamed_file(handmade_dataset):
    extra = image_path(handmade_dataset, channel=3)
    extra.write_bytes(image_path(handmade_dataset, channel=0).read_bytes())
    (handmade_dataset / "imagesTr" / "notes.txt").write_text("hello")
    report, errors = errors_of(handmade_dataset)
    messages = {(p.case, p.file): p.message for p in errors}
    assert "not declared" in messages[(CASE, str(extra))]
    assert "does not follow" in messages[(None, str(handmade_dataset / "imagesTr" / "notes.txt"))]


def test_missing_label_and_orphan_label(handmade_dataset):
    label_path(handmade_dataset).unlink()
    orphan = label_path(handmade_dataset, case="ghost")
    orphan.write_bytes(label_path(handmade_dataset, case=CASES_TR[0]).read_bytes())
    report, errors = errors_of(handmade_dataset)
    found = {(p.case, p.file, p.message) for p in errors}
    assert (CASE, str(label_path(handmade_dataset)), "lesion mask (label) is missing") in found
    assert ("ghost", str(orphan), "label has no images") in found


@pytest.mark.parametrize(
    "attribute, value, fragment",
    [
        ("spacing", (1.2, 1.0, 3.0), "spacing"),
        ("origin", (0.0, 0.0, 0.0), "origin"),
        ("direction", (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), "direction"),
    ],
)
def test_label_geometry_mismatch(handmade_dataset, attribute, value, fragment):
    def change(array, image):
        getattr(image, "Set" + attribute.capitalize())(value)
        return image

    rewrite(label_path(handmade_dataset), change)
    problem = single_error(handmade_dataset, fragment, file=label_path(handmade_dataset))
    assert "geometry differs" in problem.message


def test_channel_size_mismatch(handmade_dataset):
    rewrite(image_path(handmade_dataset, channel=1), lambda a, img: with_array(np.ascontiguousarray(a[:-1]), img))
    # the label is compared with channel 0, so only channel 1 is wrong
    single_error(handmade_dataset, "shape (z, y, x)", file=image_path(handmade_dataset, channel=1))


def test_geometry_tolerance_accepts_header_rounding(handmade_dataset):
    def nudge(array, image):
        image.SetOrigin(tuple(o + 1e-5 for o in image.GetOrigin()))
        image.SetSpacing(tuple(s * (1 + 1e-6) for s in image.GetSpacing()))
        return image

    rewrite(label_path(handmade_dataset), nudge)
    _, errors = errors_of(handmade_dataset)
    assert errors == []


def test_undeclared_label_value(handmade_dataset):
    def add_value(array, image):
        array = array.copy()
        array[0, 0, 0] = 7
        return with_array(array, image)

    rewrite(label_path(handmade_dataset), add_value)
    single_error(handmade_dataset, "label values [7] are not declared", file=label_path(handmade_dataset))


def test_truncated_file(handmade_dataset):
    path = image_path(handmade_dataset, channel=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    single_error(handmade_dataset, "unreadable or truncated", file=path)


def test_garbage_file(handmade_dataset):
    path = label_path(handmade_dataset)
    path.write_bytes(gzip.compress(b"this is not a nifti file" * 10))
    single_error(handmade_dataset, "unreadable or truncated", file=path)


def test_nan_and_inf_voxels(handmade_dataset):
    def poison(array, image):
        array = array.astype(np.float32)
        array[1, 2, 3] = np.nan
        array[2, 2, 3] = np.inf
        return with_array(array, image)

    rewrite(image_path(handmade_dataset, channel=0), poison)
    single_error(handmade_dataset, "2 voxel(s) are NaN or infinite", file=image_path(handmade_dataset, channel=0))


def test_case_without_lesions_is_only_a_warning(handmade_dataset, monkeypatch, capsys):
    rewrite(label_path(handmade_dataset), lambda a, img: with_array(np.where(a == 2, 2, 0).astype(a.dtype), img))
    report, errors = errors_of(handmade_dataset)
    assert errors == []
    assert any(w.case == CASE and "no lesion voxels" in w.message for w in report.warnings)
    monkeypatch.setenv("glmil_raw", str(handmade_dataset.parent))
    assert verify_dataset_entry(["-d", "917", "-np", "1", "--no_progress"]) == 0
    assert "no lesion voxels" in capsys.readouterr().out


@pytest.mark.parametrize(
    "column, value, fragment",
    [
        ("lmd", "2", "'lmd' must be 0 or 1"),
        ("survival_days", "0", "'survival_days' must be > 0"),
        ("survival_days", "-3", "'survival_days' must be > 0"),
        ("death", "3", "'death' must be 0 or 1"),
        ("age", "sixty", "'age' must be a finite number"),
        ("prior_resection", "maybe", "'prior_resection' must be 0 or 1"),
        ("survival_days", "", "has only one of 'survival_days' and 'death'"),
        ("site", "", "group column 'site' is empty"),
    ],
)
def test_bad_clinical_cells(handmade_dataset, column, value, fragment):
    set_clinical_cell(handmade_dataset, CASE, column, value)
    single_error(handmade_dataset, fragment, file=handmade_dataset / "clinicalTr.csv")


def test_clinical_rows_must_match_cases(handmade_dataset):
    rows = [list(r) for r in CLINICAL_TR]
    rows.append(list(rows[0]))  # duplicate
    rows.append(["stranger"] + rows[0][1:])  # unknown id
    del rows[2]  # a case without a row
    write_csv(handmade_dataset / "clinicalTr.csv", rows)
    report, errors = errors_of(handmade_dataset)
    found = {(p.case, p.message) for p in errors}
    assert (CASES_TR[0], "case appears in more than one row") in found
    assert ("stranger", "case id in the clinical table has no images") in found
    assert (CASES_TR[2], "case has images but no row in the clinical table") in found
    assert all(p.file == str(handmade_dataset / "clinicalTr.csv") for p in errors)


def test_missing_declared_column_and_missing_table(handmade_dataset):
    header = [h for h in HEADER if h != "sex"]
    rows = [[c for h, c in zip(HEADER, r) if h != "sex"] for r in CLINICAL_TR]
    write_csv(handmade_dataset / "clinicalTr.csv", rows, header)
    single_error(handmade_dataset, "declared column 'sex' (categorical) is missing", case=None)
    (handmade_dataset / "clinicalTr.csv").unlink()
    single_error(handmade_dataset, "clinical table is missing", case=None, file=handmade_dataset / "clinicalTr.csv")


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda d: d.pop("channel_names"), "required key 'channel_names' is missing"),
        (lambda d: d.update(numTraining="four"), "'numTraining' must be a non-negative integer"),
        (lambda d: d.update(labels={"background": 0, "a": 1, "b": 1}), "values must be unique"),
        (lambda d: d.update(lesion_labels=[5]), "'lesion_labels' [5] are not declared"),
        (lambda d: d.update(channel_names={"0": "T1c", "2": "FLAIR"}), "without gaps"),
        (lambda d: d["endpoints"].update(pfs={"type": "survival", "time": "pfs_days"}), "needs a column name"),
        (lambda d: d["clinical_features"].update(grade="ordinal"), "has type 'ordinal'"),
        (lambda d: d.update(file_ending="nii.gz"), "'file_ending' must be a string starting with '.'"),
    ],
)
def test_bad_dataset_json(handmade_dataset, edit, fragment):
    path = handmade_dataset / "dataset.json"
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))
    report, errors = errors_of(handmade_dataset)
    assert any(fragment in p.message and p.file == str(path) for p in errors), report.format()


def test_invalid_json_and_num_training(handmade_dataset):
    path = handmade_dataset / "dataset.json"
    content = json.loads(path.read_text())
    content["numTraining"] = 5
    path.write_text(json.dumps(content))
    single_error(handmade_dataset, "'numTraining' is 5 but imagesTr holds 4 case(s)", case=None, file=path)
    path.write_text("{ not json")
    report, errors = errors_of(handmade_dataset)
    assert "not valid JSON" in errors[0].message and not report.ok


def test_held_out_split_checked_the_same_way(handmade_dataset):
    test_case = CASES_TS[1]
    label_path(handmade_dataset, test_case, "Ts").unlink()
    rows = [[CASES_TS[0], "C", "55", "M", "0", "7", "400", "1"]]  # bad lmd and a case without a row
    write_csv(handmade_dataset / "clinicalTs.csv", rows)
    report, errors = errors_of(handmade_dataset)
    found = {(p.case, p.file, p.message) for p in errors}
    assert (test_case, str(label_path(handmade_dataset, test_case, "Ts")), "lesion mask (label) is missing") in found
    assert (CASES_TS[0], str(handmade_dataset / "clinicalTs.csv"), "'lmd' must be 0 or 1 (or empty when unknown), got '7'") in found
    assert (test_case, str(handmade_dataset / "clinicalTs.csv"), "case has images but no row in the clinical table") in found
    assert len(errors) == 3, report.format()


def test_held_out_table_without_outcomes_is_a_warning(handmade_dataset):
    write_csv(
        handmade_dataset / "clinicalTs.csv",
        [[c, "C", "50", "F", "0"] for c in CASES_TS],
        ["subject", "site", "age", "sex", "prior_resection"],
    )
    report, errors = errors_of(handmade_dataset)
    assert errors == [], report.format()
    assert sum("cannot be evaluated" in w.message or "predicted but not evaluated" in w.message for w in report.warnings) == 3


def test_every_problem_reported_at_once_and_parallel_agrees(handmade_dataset, monkeypatch, capsys):
    image_path(handmade_dataset, case=CASES_TR[0], channel=1).unlink()
    path = image_path(handmade_dataset, case=CASES_TR[2], channel=0)
    path.write_bytes(path.read_bytes()[:100])
    set_clinical_cell(handmade_dataset, CASES_TR[3], "lmd", "yes please")
    serial, serial_errors = errors_of(handmade_dataset, num_processes=1)
    parallel, parallel_errors = errors_of(handmade_dataset, num_processes=2)
    assert sorted(map(str, serial_errors)) == sorted(map(str, parallel_errors))
    assert {p.case for p in serial_errors} == {CASES_TR[0], CASES_TR[2], CASES_TR[3]}
    monkeypatch.setenv("glmil_raw", str(handmade_dataset.parent))
    assert verify_dataset_entry(["-d", "Dataset917_HoldoutMets", "-np", "2", "--no_progress"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 3 error(s)" in out and CASES_TR[2] in out


def test_cli_unknown_dataset(tmp_path, monkeypatch, capsys, handmade_dataset):
    monkeypatch.setenv("glmil_raw", str(handmade_dataset.parent))
    assert verify_dataset_entry(["-d", "42", "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "No dataset matches '42'" in err and "Dataset917_HoldoutMets" in err
