"""RPA, GPA and DS-GPA on patients worked out by hand from the published points tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from glmil_auto.dataset.clinical_scores_block import validate_clinical_scores_block
from glmil_auto.dataset.problems import ERROR
from glmil_auto.evaluation.clinical_models.prognostic_scores import (
    breast_subtype_class,
    compute_scores,
    ds_gpa,
    gpa,
    parse_yes_no,
    primary_histology,
    rpa_class,
    scores_as_risk,
)


# ------------------------------------------------------------------------------------------- RPA
@pytest.mark.parametrize("kps, age, ecm, controlled, expected", [
    (90, 50, 0, 1, 1),      # every class I condition met
    (70, 64, "no", "yes", 1),  # boundaries: KPS 70 and age 64 still class I
    (90, 65, 0, 1, 2),      # age 65
    (80, 50, 1, 1, 2),      # extracranial metastases
    (80, 50, 0, 0, 2),      # uncontrolled primary
    (60, 40, 0, 1, 3),      # KPS < 70
    (60, None, None, None, 3),  # KPS < 70 decides whatever else is unknown
    (69, 40, 0, 1, 3),      # KPS 69 counts as 60
])
def test_rpa_classes(kps, age, ecm, controlled, expected):
    result = rpa_class(kps, age, ecm, controlled)
    assert result.value == expected and result.reason is None


def test_rpa_unknown_control():
    assert rpa_class(90, 50, 0, None).value == 2  # default: controlled only when the data says so
    assert rpa_class(90, 50, 0, None, unknown_control="controlled").value == 1
    missing = rpa_class(90, 50, 0, None, unknown_control="missing")
    assert math.isnan(missing.value) and "controlled primary" in missing.reason
    # a known failing condition decides class II even when control is unknown
    assert rpa_class(90, 70, 0, None, unknown_control="missing").value == 2
    with pytest.raises(ValueError):
        rpa_class(90, 50, 0, 1, unknown_control="maybe")


def test_rpa_missing_values():
    no_kps = rpa_class(None, 50, 0, 1)
    assert math.isnan(no_kps.value) and "KPS missing" in no_kps.reason
    no_age = rpa_class(90, np.nan, 0, 1)
    assert math.isnan(no_age.value) and "age missing" in no_age.reason
    assert math.isnan(rpa_class(120, 50, 0, 1).value)


# ------------------------------------------------------------------------------------------- GPA
@pytest.mark.parametrize("age, kps, ecm, n, expected", [
    (45, 90, 0, 1, 4.0),     # 1 + 1 + 1 + 1
    (55, 80, 0, 2, 2.5),     # 0.5 + 0.5 + 1 + 0.5
    (60, 70, 1, 3, 1.5),     # age 60 is in 50-60: 0.5 + 0.5 + 0 + 0.5
    (61, 60, 1, 4, 0.0),     # 0 + 0 + 0 + 0
    (49, 100, "yes", 5, 2.0),  # 1 + 1 + 0 + 0
    (50, 85, "absent", 1, 3.0),  # KPS 85 counts as 80: 0.5 + 0.5 + 1 + 1
    (60.9, 90, 0, 1, 3.5),   # age in completed years: 60
])
def test_gpa_hand_worked(age, kps, ecm, n, expected):
    result = gpa(age, kps, ecm, n)
    assert result.value == expected and result.reason is None


def test_gpa_missing_and_invalid():
    result = gpa(None, 90, None, 1)
    assert math.isnan(result.value)
    assert "age missing" in result.reason and "extracranial metastases missing" in result.reason
    assert "not a yes/no" in gpa(45, 90, "maybe", 1).reason
    assert "at least one" in gpa(45, 90, 0, 0).reason
    assert "not a number" in gpa(45, "4_5", 0, 1).reason
    assert "outside 0-100" in gpa(45, 110, 0, 1).reason


# ---------------------------------------------------------------------------------------- DS-GPA
def test_ds_gpa_lung_is_gpa():
    for primary in ("NSCLC", "sclc", "Lung", "non-small cell lung cancer"):
        assert ds_gpa(primary, 45, 90, 0, 1).value == 4.0
    assert ds_gpa("lung", 55, 80, 1, 2).value == gpa(55, 80, 1, 2).value == 1.5


@pytest.mark.parametrize("primary, kps, n, expected", [
    ("melanoma", 90, 1, 4.0),   # 2 + 2
    ("Melanoma", 80, 2, 2.0),   # 1 + 1
    ("melanoma", 60, 4, 0.0),   # 0 + 0
    ("RCC", 100, 3, 3.0),       # 2 + 1
    ("kidney", 70, 5, 1.0),     # 1 + 0
])
def test_ds_gpa_melanoma_renal(primary, kps, n, expected):
    # age and extracranial metastases do not enter: leaving them out changes nothing
    assert ds_gpa(primary, None, kps, None, n).value == expected


@pytest.mark.parametrize("kps, expected", [(60, 0.0), (70, 1.0), (80, 2.0), (90, 3.0), (100, 4.0), (95, 3.0)])
def test_ds_gpa_gastrointestinal(kps, expected):
    assert ds_gpa("colorectal", None, kps, None, None).value == expected
    assert ds_gpa("GI", 80, kps, 1, 7).value == expected


@pytest.mark.parametrize("kps, subtype, age, expected", [
    (90, "LumB", 50, 4.0),              # 1.5 + 2 + 0.5
    (50, "basal", 65, 0.0),             # 0 + 0 + 0
    (60, "LumA", 59, 2.0),              # 0.5 + 1 + 0.5
    (80, "HER2", 60, 2.5),              # 1 + 1.5 + 0
    (70, "triple negative", 40, 1.5),   # 1 + 0 + 0.5
])
def test_ds_gpa_breast(kps, subtype, age, expected):
    result = ds_gpa("Breast", age, kps, None, None, subtype)
    assert result.value == expected and result.reason is None


def test_ds_gpa_not_computable():
    for result, words in [
        (ds_gpa(None, 45, 90, 0, 1), "primary missing"),
        (ds_gpa("sarcoma", 45, 90, 0, 1), "no DS-GPA"),
        (ds_gpa("breast", 45, 90, 0, 1, None), "breast subtype missing"),
        (ds_gpa("breast", 45, 90, 0, 1, "luminal C"), "not recognised"),
        (ds_gpa("melanoma", 45, 90, 0, None), "number of brain metastases missing"),
        (ds_gpa("GI", 45, None, 0, 1), "KPS missing"),
    ]:
        assert math.isnan(result.value) and words in result.reason


def test_spellings():
    expected = {
        "NSCLC": "lung", "SCLC": "lung", "lung": "lung", "Small_Cell Lung": "lung",
        "RCC": "renal", "Kidney": "renal", "renal": "renal", "Renal-cell carcinoma": "renal",
        "GI": "gastrointestinal", "Colorectal": "gastrointestinal", "gastrointestinal": "gastrointestinal",
        "MELANOMA": "melanoma", " breast  cancer ": "breast",
    }
    for spelling, histology in expected.items():
        assert primary_histology(spelling) == histology, spelling
    assert primary_histology("prostate") is None and primary_histology(None) is None
    assert primary_histology("CRC-liver", {"crc liver": "gastrointestinal"}) == "gastrointestinal"
    with pytest.raises(ValueError):
        primary_histology("x", {"x": "prostate"})
    assert [breast_subtype_class(s) for s in ("TNBC", "Luminal-A", "HER2+", "luminal B", "x")] == [
        "basal", "luminal_a", "her2", "luminal_b", None]
    assert [parse_yes_no(v) for v in (1, 0.0, True, "Yes", "absent", "N")] == [1, 0, 1, 1, 0, 0]
    assert all(math.isnan(parse_yes_no(v)) for v in (2, "maybe", None, ""))


# ------------------------------------------------------------------------------------ whole table
def test_compute_scores_table():
    table = pd.DataFrame({
        "kps": [90.0, 80.0, 60.0, 90.0, np.nan, 90.0],
        "age": [45.0, 55.0, 70.0, 50.0, 40.0, 50.0],
        "extracranial_disease": [0.0, 1.0, 1.0, 0.0, 0.0, 0.0],
        "primary": ["NSCLC", "melanoma", "colorectal", "breast", "lung", "sarcoma"],
        "controlled": [1.0, 1.0, np.nan, np.nan, 1.0, 1.0],
        "subtype": [np.nan, np.nan, np.nan, "HER2", np.nan, np.nan],
    }, index=pd.Index([f"case_{i}" for i in range(6)], name="case_id"))
    mapping = {"kps": "kps", "age": "age", "extracranial_metastases": "extracranial_disease",
               "primary": "primary", "controlled_primary": "controlled", "breast_subtype": "subtype"}
    counts = pd.Series([3, 1, 1, 4, 2, 1], index=table.index[::-1])  # matched by case id, not by position
    scores = compute_scores(table, mapping, counts, with_reasons=True)
    assert list(scores.index) == list(table.index)
    np.testing.assert_array_equal(scores["rpa_class"], [1, 2, 3, 2, np.nan, 1])
    np.testing.assert_array_equal(scores["gpa"], [4.0, 1.5, 0.0, 3.5, np.nan, 3.0])
    # breast: KPS 90 -> 1.5, HER2 -> 1.5, age 50 -> 0.5
    np.testing.assert_array_equal(scores["ds_gpa"], [4.0, 2.0, 0.0, 3.5, np.nan, np.nan])
    assert scores.loc["case_4", "gpa_reason"] == "KPS missing"
    assert "no DS-GPA" in scores.loc["case_5", "ds_gpa_reason"]
    assert scores.loc["case_0", "gpa_reason"] is None
    plain = compute_scores(table, mapping, counts)
    assert list(plain.columns) == ["rpa_class", "gpa", "ds_gpa"]
    risk = scores_as_risk(plain)
    np.testing.assert_array_equal(risk["gpa"], -plain["gpa"])
    np.testing.assert_array_equal(risk["rpa_class"], plain["rpa_class"])


def test_compute_scores_partial_mapping_and_errors():
    table = pd.DataFrame({"k": [90.0], "a": [45.0], "e": [0.0]}, index=["c1"])
    scores = compute_scores(table, {"kps": "k", "age": "a", "extracranial_metastases": "e"},
                            pd.Series({"c1": 1}), with_reasons=True)
    assert scores.loc["c1", "gpa"] == 4.0 and scores.loc["c1", "rpa_class"] == 2.0
    assert math.isnan(scores.loc["c1", "ds_gpa"]) and scores.loc["c1", "ds_gpa_reason"] == "primary missing"
    with pytest.raises(ValueError, match="unknown keys"):
        compute_scores(table, {"karnofsky": "k"}, pd.Series({"c1": 1}))
    with pytest.raises(ValueError, match="lacks"):
        compute_scores(table, {"kps": "missing_column"}, pd.Series({"c1": 1}))
    with pytest.raises(ValueError, match="no case id"):
        compute_scores(table, {"kps": "k"}, pd.Series([1]))
    # a case without a lesion count has an unknown count
    two = pd.DataFrame({"k": [90.0, 90.0], "a": [45.0, 45.0], "e": [0.0, 0.0]}, index=["c1", "c2"])
    gpas = compute_scores(two, {"kps": "k", "age": "a", "extracranial_metastases": "e"}, pd.Series({"c1": 1}))["gpa"]
    assert gpas["c1"] == 4.0 and math.isnan(gpas["c2"])


# ------------------------------------------------------------------------------ dataset.json block
FEATURES = {"kps": "numeric", "age": "numeric", "ecm": "binary", "primary": "categorical",
            "subtype": "categorical", "sex": "binary"}


def test_valid_block():
    block = {"kps": "kps", "age": "age", "extracranial_metastases": "ecm", "primary": "primary",
             "breast_subtype": "subtype"}
    assert validate_clinical_scores_block(block, FEATURES, "dataset.json") == []
    assert validate_clinical_scores_block({}, FEATURES, "dataset.json") == []


@pytest.mark.parametrize("block, words", [
    (["kps"], "must be an object"),
    ({"karnofsky": "kps"}, "not a score variable"),
    ({"kps": 90}, "non-empty string"),
    ({"kps": "performance"}, "not declared in 'clinical_features'"),
    ({"kps": "primary"}, "needs a feature of type numeric"),
    ({"primary": "kps"}, "type categorical"),
    ({"kps": "kps", "age": "kps"}, "same clinical feature"),
])
def test_invalid_blocks(block, words):
    problems = validate_clinical_scores_block(block, FEATURES, "data/dataset.json")
    assert problems, block
    assert all(p.severity == ERROR and p.file == "data/dataset.json" for p in problems)
    assert any(words in p.message for p in problems), [p.message for p in problems]
