"""The generative and outcome model on a large non-rendered cohort (no images: a few seconds)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from glmil_auto.synthetic import cohort_frame, sample_cohort
from glmil_auto.synthetic.cases import plan_cohort
from glmil_auto.synthetic.gap import clinical_gap
from glmil_auto.synthetic.lesions import necrosis_probability

N_CASES = 6000
ENDPOINT_RANGES = {  # documented prevalence ranges (documentation/synthetic_cohort.md)
    "local_failure": (0.20, 0.35),
    "distant_failure": (0.35, 0.50),
    "leptomeningeal_failure": (0.10, 0.20),
}


@pytest.fixture(scope="module")
def specs():
    return sample_cohort(N_CASES, seed=2024, n_centres=4, num_processes=2)


@pytest.fixture(scope="module")
def frame(specs):
    return cohort_frame(specs)


def test_lesion_counts(frame):
    counts = frame["n_lesions"]
    assert counts.min() >= 1 and counts.max() <= 15
    assert 2 <= counts.median() <= 3
    assert 0.30 <= (counts == 1).mean() <= 0.45  # solitary metastasis is the commonest
    assert (counts >= 10).mean() > 0.01  # but the tail reaches ~15


def test_lesion_diameters_and_sites(specs):
    lesions = [les for s in specs for les in s.lesions]
    d = np.array([les.diameter_mm for les in lesions])
    assert d.min() >= 3.0 and d.max() <= 35.0
    assert abs(np.median(d) - 8.0) < 0.5
    assert (d <= 3.0 + 1e-9).mean() < 0.10 and (d >= 35.0 - 1e-9).mean() < 0.01
    pf = np.mean([les.posterior_fossa for les in lesions])
    assert 0.12 <= pf <= 0.20  # ~15 % (25 % for gastrointestinal primaries)
    assert all(les.compartment != "posterior_fossa" or les.posterior_fossa for les in lesions)
    # necrosis grows with size; heterogeneity is a free per-lesion parameter in [0, 1]
    nec = np.array([les.necrosis for les in lesions])
    assert nec[d < 8].mean() < 0.15 < 0.75 < nec[d > 18].mean()
    assert necrosis_probability(5.0) < necrosis_probability(13.0) < necrosis_probability(25.0)
    h = np.array([les.heterogeneity for les in lesions])
    assert 0.0 <= h.min() and h.max() <= 1.0 and 0.3 < h.mean() < 0.5
    contact = np.mean([les.csf_contact for les in lesions])
    assert 0.15 < contact < 0.5


def test_micro_lesions(frame):
    m = frame["n_micro"]
    assert 0.25 < (m == 0).mean() < 0.55
    assert 1.0 < m.mean() < 2.5 and m.max() <= 25


def test_clinical_variables(frame):
    assert set(frame["kps"].unique()) <= set(range(40, 101, 10))
    assert frame["age"].between(25, 90).all() and 55 < frame["age"].mean() < 66
    mix = frame["primary"].value_counts(normalize=True)
    for name, expected in {"lung": 0.45, "breast": 0.20, "melanoma": 0.12, "renal": 0.06,
                           "gastrointestinal": 0.07, "other": 0.10}.items():
        assert abs(mix[name] - expected) < 0.03, name
    assert 0.5 < frame["extracranial_disease"].mean() < 0.75
    assert 0.05 < frame["prior_wbrt"].mean() < 0.15


def test_external_centre_case_mix_shifts():
    specs = sample_cohort(1000, seed=5, n_centres=4, n_test=1000)
    f = cohort_frame(specs)
    tr, ts = f[f["split"] == "Tr"], f[f["split"] == "Ts"]
    assert set(ts["center"]) == {"C4"} and set(tr["center"]) == {"C1", "C2", "C3"}
    assert ts["age"].mean() > tr["age"].mean() + 2
    assert (ts["primary"] == "melanoma").mean() > (tr["primary"] == "melanoma").mean() + 0.05


def test_prevalences_missingness_and_censoring(frame):
    for name, (lo, hi) in ENDPOINT_RANGES.items():
        y = frame[name]
        assert lo <= y.mean() <= hi, (name, y.mean())
        assert 0.015 <= y.isna().mean() <= 0.045, (name, y.isna().mean())
    assert 0.60 <= frame["os_event"].mean() <= 0.80
    assert (frame["os_months"] > 0).all()
    assert 5.0 < frame["os_time_uncensored"].median() < 12.0
    censored = frame["os_event"] == 0
    assert (frame.loc[censored, "os_months"] <= frame.loc[censored, "os_time_uncensored"] + 0.01).all()


def test_truth_probabilities_predict_the_outcomes(frame):
    for name in ENDPOINT_RANGES:
        known = frame[name].notna()
        auc = roc_auc_score(frame.loc[known, name], frame.loc[known, f"p_{name}"])
        assert auc > 0.7, (name, auc)
        # calibrated by construction: mean probability ~ observed rate
        assert abs(frame.loc[known, f"p_{name}"].mean() - frame.loc[known, name].mean()) < 0.03


def test_images_matter_the_clinical_gap(frame):
    gap = clinical_gap(frame, seed=0).set_index("endpoint")
    for name in ("local_failure", "leptomeningeal_failure"):
        assert gap.loc[name, "gap"] >= 0.08, gap
    for name in ENDPOINT_RANGES:
        assert 0.72 <= gap.loc[name, "truth_ceiling"] <= 0.92, gap
    assert gap.loc["distant_failure", "gap"] > 0.05
    assert gap.loc["os", "truth_ceiling"] > gap.loc["os", "clinical"] - 0.01


def test_plan_spreads_training_cases_over_centres():
    plans = plan_cohort(120, 40, 4, seed=0)
    train = [p.centre for p in plans if p.split == "Tr"]
    assert {c: train.count(c) for c in set(train)} == {"C1": 47, "C2": 40, "C3": 33}
    assert [p.centre for p in plans if p.split == "Ts"] == ["C4"] * 40
    assert [p.case_id for p in plans][:2] == ["SBM_0001", "SBM_0002"] and plans[-1].case_id == "SBM_0160"
    assert [p.centre for p in plan_cohort(120, 40, 4, seed=1)] != [p.centre for p in plans]
