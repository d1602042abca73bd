"""Same seed -> identical files whatever the worker count; a different seed -> different data."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from glmil_auto.synthetic import generate_synthetic_dataset, sample_case, truth_path
from glmil_auto.synthetic.cases import plan_cohort

ARGS = dict(n_train=4, n_test=2, n_centres=3, size="tiny", progress=False)


def _files(folder):
    out = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    out["TRUTH"] = truth_path(folder).read_bytes()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    one = generate_synthetic_dataset(tmp_path_factory.mktemp("a"), seed=7, num_processes=1, **ARGS)
    two = generate_synthetic_dataset(tmp_path_factory.mktemp("b"), seed=7, num_processes=2, **ARGS)
    other = generate_synthetic_dataset(tmp_path_factory.mktemp("c"), seed=8, num_processes=1, **ARGS)
    return one, two, other


def test_one_and_two_workers_give_byte_identical_files(runs):
    one, two, _ = runs
    a, b = _files(one), _files(two)
    # images+labels, 2 clinical and 2 lesion csvs, dataset.json, truth
    assert sorted(a) == sorted(b) and len(a) == 6 * 3 + 2 + 2 + 1 + 1
    for name in a:
        assert a[name] == b[name], name


def test_same_seed_same_arrays(runs):
    one, two, _ = runs
    for path in sorted((one / "imagesTr").glob("*.nii.gz")):
        x = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        y = sitk.GetArrayFromImage(sitk.ReadImage(str(two / "imagesTr" / path.name)))
        assert x.dtype == np.float32 and np.array_equal(x, y)


def test_different_seed_differs(runs):
    one, _, other = runs
    a, c = _files(one), _files(other)
    assert a["clinicalTr.csv"] != c["clinicalTr.csv"]
    x = sitk.GetArrayFromImage(sitk.ReadImage(str(one / "labelsTr" / "SBM_0001.nii.gz")))
    y = sitk.GetArrayFromImage(sitk.ReadImage(str(other / "labelsTr" / "SBM_0001.nii.gz")))
    assert x.shape != y.shape or not np.array_equal(x, y)
    for name in a:
        if name.startswith("images"):
            assert a[name] != c.get(name), name


def test_case_streams_do_not_depend_on_the_cohort_size():
    small = plan_cohort(10, 0, 4, seed=3)
    large = plan_cohort(10, 5, 4, seed=3)
    assert small == large[:10]
    s, l = sample_case(3, small[4]), sample_case(3, large[4])
    assert s.clinical == l.clinical and s.probabilities == l.probabilities
    assert [les.centre for les in s.lesions] == [les.centre for les in l.lesions]
