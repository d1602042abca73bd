"""Published clinical prognostic scores for overall survival, used as baselines for the model.

    scores = compute_scores(table, spec.raw["clinical_scores"], n_metastases)

* **RPA class** (Gaspar et al., IJROBP 1997): 1, 2 or 3 (class I / II / III). Class III: KPS < 70.
  Class I: KPS >= 70, age < 65, controlled primary and no extracranial metastases. Class II: all
  others. Higher class = worse prognosis.
* **GPA** (Sperduto et al., IJROBP 2008): 0-4 in steps of 0.5, the sum of four items (age, KPS,
  extracranial metastases, number of brain metastases). Higher = better prognosis.
* **DS-GPA** (Sperduto et al., JCO 2012): the diagnosis-specific GPA; lung = GPA, its own items for
  melanoma / renal, gastrointestinal and breast (which needs the molecular subtype). 0-4, higher =
  better prognosis. Other primaries have no DS-GPA (NaN).

Because higher GPA / DS-GPA mean *longer* survival, a risk score (higher = worse, as for Harrell's C
of the model's ``<endpoint>_risk``) is their negative; the RPA class is already a risk
(:func:`scores_as_risk`).

Conventions (the published tables use whole years and KPS in steps of 10):

* age is taken in completed years (rounded down): 60.7 years counts as 60;
* a KPS that is not a multiple of 10 counts as the multiple of 10 below it (85 -> 80);
* KPS must lie in 0-100 and age must not be negative, otherwise the score is NaN with a reason;
* a yes/no value is 1/0, true/false, yes/no, y/n, present/absent, positive/negative (any case);
* the number of brain metastases comes from the lesion masks and must be a whole number >= 1.

Every per-patient function returns a :class:`ScoreResult` ``(value, reason)``: the value, or NaN
with the reason (what was missing or invalid). ``compute_scores(..., with_reasons=True)`` adds the
reasons as columns.

Controlled primary (RPA): many datasets do not record it. ``unknown_control`` says what an unknown
control status (no ``controlled_primary`` column, or an empty cell) means:
``"uncontrolled"`` (the default: the primary counts as controlled only when the data says so, so
class I needs a recorded controlled primary and such patients fall into class II),
``"controlled"`` (class I from KPS, age and extracranial metastases alone) or ``"missing"``
(NaN whenever class I vs II hinges on it).

Primary spellings (case-insensitive; '-', '_' and repeated spaces count as one space), see
:data:`PRIMARY_SPELLINGS`:

* lung: lung, lung cancer, nsclc, sclc, non small cell lung (cancer), small cell lung (cancer),
  lung adenocarcinoma;
* melanoma: melanoma, malignant melanoma, cutaneous melanoma;
* renal: renal, rcc, kidney, renal cell, renal cell carcinoma, renal cancer, kidney cancer;
* gastrointestinal: gi, gastrointestinal, gastrointestinal cancer, colorectal, colorectal cancer,
  crc, colon, rectal, rectum, gastric, stomach, esophageal, oesophageal;
* breast: breast, breast cancer, breast carcinoma.

Anything else (e.g. "sarcoma", "other") has no DS-GPA. Breast subtypes (see
:data:`BREAST_SUBTYPE_SPELLINGS`): basal (basal, basal like, triple negative, tnbc), luminal A
(luma, lum a, luminal a), HER2 (her2, her2+, her2 positive, her2 enriched), luminal B (lumb,
lum b, luminal b, triple positive; in the 2012 paper LumB is ER/PR and HER2 positive).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, NamedTuple

import numpy as np
import pandas as pd


from glmil_auto.dataset.clinical_scores_block import CLINICAL_SCORES_VARIABLES

SCORE_COLUMNS = ("rpa_class", "gpa", "ds_gpa")
UNKNOWN_CONTROL_CHOICES = ("uncontrolled", "controlled", "missing")
HISTOLOGIES = ("lung", "melanoma", "renal", "gastrointestinal", "breast")
BREAST_SUBTYPES = ("basal", "luminal_a", "her2", "luminal_b")

PRIMARY_SPELLINGS: dict[str, str] = {
    **{s: "lung" for s in (
        "lung", "lung cancer", "nsclc", "sclc", "non small cell lung", "non small cell lung cancer",
        "small cell lung", "small cell lung cancer", "lung adenocarcinoma")},
    **{s: "melanoma" for s in ("melanoma", "malignant melanoma", "cutaneous melanoma")},
    **{s: "renal" for s in (
        "renal", "rcc", "kidney", "renal cell", "renal cell carcinoma", "renal cancer", "kidney cancer")},
    **{s: "gastrointestinal" for s in (
        "gi", "gastrointestinal", "gastrointestinal cancer", "colorectal", "colorectal cancer", "crc",
        "colon", "rectal", "rectum", "gastric", "stomach", "esophageal", "oesophageal")},
    **{s: "breast" for s in ("breast", "breast cancer", "breast carcinoma")},
}
BREAST_SUBTYPE_SPELLINGS: dict[str, str] = {
    **{s: "basal" for s in ("basal", "basal like", "triple negative", "tnbc")},
    **{s: "luminal_a" for s in ("luma", "lum a", "luminal a")},
    **{s: "her2" for s in ("her2", "her2+", "her2 positive", "her2 enriched")},
    **{s: "luminal_b" for s in ("lumb", "lum b", "luminal b", "triple positive")},
}
_YES = frozenset({"1", "1.0", "true", "yes", "y", "present", "positive"})
_NO = frozenset({"0", "0.0", "false", "no", "n", "absent", "negative"})
_MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a"})


class ScoreResult(NamedTuple):
    """A score for one patient: ``value`` (NaN when not computable) and ``reason`` (None when computed)."""

    value: float
    reason: str | None = None


# ----------------------------------------------------------------------------------------- parsing
def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in _MISSING_TOKENS


def _normalise_text(value: Any) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[-_]", " ", str(value).strip().lower())).strip()


def _number(value: Any, label: str) -> tuple[float, str | None]:
    """(value, None), or (NaN, why) when missing or not a finite number."""
    if _is_missing(value):
        return math.nan, f"{label} missing"
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, str) and "_" in value):
        return math.nan, f"{label} {value!r} is not a number"  # float() would read "4_5" as 45
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan, f"{label} {value!r} is not a number"
    if not math.isfinite(number):
        return math.nan, f"{label} {value!r} is not a finite number"
    return number, None


def _kps(value: Any) -> tuple[float, str | None]:
    """KPS rounded down to its multiple of 10, or NaN with a reason."""
    kps, reason = _number(value, "KPS")
    if reason is not None:
        return math.nan, reason
    if not 0 <= kps <= 100:
        return math.nan, f"KPS {kps:g} outside 0-100"
    return math.floor(kps / 10.0) * 10.0, None


def _age(value: Any) -> tuple[float, str | None]:
    """Age in completed years, or NaN with a reason."""
    age, reason = _number(value, "age")
    if reason is not None:
        return math.nan, reason
    if age < 0:
        return math.nan, f"age {age:g} is negative"
    return float(math.floor(age)), None


def parse_yes_no(value: Any) -> float:
    """1.0 (yes), 0.0 (no) or NaN (missing or not a yes/no value); see the module docstring."""
    if _is_missing(value):
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value) if value in (0, 1) else math.nan
    token = str(value).strip().lower()
    return 1.0 if token in _YES else 0.0 if token in _NO else math.nan


def _yes_no(value: Any, label: str) -> tuple[float, str | None]:
    if _is_missing(value):
        return math.nan, f"{label} missing"
    parsed = parse_yes_no(value)
    return (parsed, None) if not math.isnan(parsed) else (math.nan, f"{label} {value!r} is not a yes/no value")


def _n_metastases(value: Any) -> tuple[float, str | None]:
    n, reason = _number(value, "number of brain metastases")
    if reason is not None:
        return math.nan, reason
    if n != math.floor(n):
        return math.nan, f"number of brain metastases {n:g} is not a whole number"
    if n < 1:
        return math.nan, f"number of brain metastases is {n:g} (the scores need at least one)"
    return n, None


def primary_histology(value: Any, extra_spellings: Mapping[str, str] | None = None) -> str | None:
    """The DS-GPA histology (one of :data:`HISTOLOGIES`) a primary's name stands for, or None
    (missing, or a primary without a DS-GPA). ``extra_spellings`` adds (or overrides) spellings,
    name -> histology, matched the same case-insensitive way."""
    if _is_missing(value):
        return None
    spellings = dict(PRIMARY_SPELLINGS)
    for name, histology in (extra_spellings or {}).items():
        if histology not in HISTOLOGIES:
            raise ValueError(f"extra primary spelling {name!r} maps to {histology!r}; use one of {list(HISTOLOGIES)}")
        spellings[_normalise_text(name)] = histology
    return spellings.get(_normalise_text(value))


def breast_subtype_class(value: Any) -> str | None:
    """The breast subtype (one of :data:`BREAST_SUBTYPES`) a value stands for, or None."""
    return None if _is_missing(value) else BREAST_SUBTYPE_SPELLINGS.get(_normalise_text(value))


def _result(value: float, reasons: list[str]) -> ScoreResult:
    return ScoreResult(math.nan, "; ".join(reasons)) if reasons else ScoreResult(float(value), None)


# ------------------------------------------------------------------------------------------ scores
def rpa_class(kps: Any, age: Any, extracranial_metastases: Any, controlled_primary: Any = None,
              unknown_control: str = "uncontrolled") -> ScoreResult:
    """RPA class (Gaspar 1997) as 1, 2 or 3.

    III: KPS < 70. I: KPS >= 70, age < 65, controlled primary, no extracranial metastases.
    II: every other patient. A missing value that cannot change the class is ignored (a patient
    with KPS 60 is class III whatever the rest); otherwise the class is NaN with the reason.
    ``unknown_control`` ("uncontrolled" | "controlled" | "missing") says what a missing
    ``controlled_primary`` means; see the module docstring.
    """
    if unknown_control not in UNKNOWN_CONTROL_CHOICES:
        raise ValueError(f"unknown_control must be one of {list(UNKNOWN_CONTROL_CHOICES)}, got {unknown_control!r}")
    kps_value, kps_reason = _kps(kps)
    if kps_reason is not None:
        return ScoreResult(math.nan, kps_reason)
    if kps_value < 70:
        return ScoreResult(3.0)
    age_value, age_reason = _age(age)
    ecm, ecm_reason = _yes_no(extracranial_metastases, "extracranial metastases")
    if _is_missing(controlled_primary) and unknown_control != "missing":
        control, control_reason = (1.0 if unknown_control == "controlled" else 0.0), None
    else:
        control, control_reason = _yes_no(controlled_primary, "controlled primary")
    fails_class_one = (
        (age_reason is None and age_value >= 65)
        or (ecm_reason is None and ecm == 1.0)
        or (control_reason is None and control == 0.0)
    )
    if fails_class_one:
        return ScoreResult(2.0)
    reasons = [r for r in (age_reason, ecm_reason, control_reason) if r is not None]
    if reasons:
        return ScoreResult(math.nan, "class I or II undecided: " + "; ".join(reasons))
    return ScoreResult(1.0)


def gpa(age: Any, kps: Any, extracranial_metastases: Any, n_metastases: Any) -> ScoreResult:
    """GPA (Sperduto 2008), 0-4 in steps of 0.5; higher = better prognosis.

    Age > 60: 0, 50-60: 0.5, < 50: 1. KPS < 70: 0, 70-80: 0.5, 90-100: 1. Extracranial metastases
    present: 0, absent: 1. Brain metastases > 3: 0, 2-3: 0.5, 1: 1.
    """
    age_value, age_reason = _age(age)
    kps_value, kps_reason = _kps(kps)
    ecm, ecm_reason = _yes_no(extracranial_metastases, "extracranial metastases")
    n, n_reason = _n_metastases(n_metastases)
    reasons = [r for r in (age_reason, kps_reason, ecm_reason, n_reason) if r is not None]
    if reasons:
        return _result(math.nan, reasons)
    points = 0.0 if age_value > 60 else 0.5 if age_value >= 50 else 1.0
    points += 0.0 if kps_value < 70 else 0.5 if kps_value < 90 else 1.0
    points += 0.0 if ecm == 1.0 else 1.0
    points += 0.0 if n > 3 else 0.5 if n >= 2 else 1.0
    return ScoreResult(points)


def ds_gpa(primary: Any, age: Any = None, kps: Any = None, extracranial_metastases: Any = None,
           n_metastases: Any = None, breast_subtype: Any = None,
           extra_spellings: Mapping[str, str] | None = None) -> ScoreResult:
    """Diagnosis-specific GPA (Sperduto 2012), 0-4; higher = better prognosis.

    lung: the GPA. melanoma and renal: KPS < 70: 0, 70-80: 1, 90-100: 2; brain metastases > 3: 0,
    2-3: 1, 1: 2. gastrointestinal: KPS < 70: 0, 70: 1, 80: 2, 90: 3, 100: 4. breast: KPS <= 50: 0,
    60: 0.5, 70-80: 1, 90-100: 1.5; subtype basal: 0, luminal A: 1, HER2: 1.5, luminal B: 2;
    age >= 60: 0, < 60: 0.5. Only the values a histology's table uses are needed; NaN with a reason
    when one of them is missing, or when the primary is missing or has no DS-GPA.
    """
    if _is_missing(primary):
        return ScoreResult(math.nan, "primary missing")
    histology = primary_histology(primary, extra_spellings)
    if histology is None:
        return ScoreResult(math.nan, f"no DS-GPA for primary {primary!r}")
    if histology == "lung":
        return gpa(age, kps, extracranial_metastases, n_metastases)
    kps_value, kps_reason = _kps(kps)
    if histology in ("melanoma", "renal"):
        n, n_reason = _n_metastases(n_metastases)
        reasons = [r for r in (kps_reason, n_reason) if r is not None]
        if reasons:
            return _result(math.nan, reasons)
        points = 0.0 if kps_value < 70 else 1.0 if kps_value < 90 else 2.0
        points += 0.0 if n > 3 else 1.0 if n >= 2 else 2.0
        return ScoreResult(points)
    if histology == "gastrointestinal":
        if kps_reason is not None:
            return ScoreResult(math.nan, kps_reason)
        return ScoreResult(0.0 if kps_value < 70 else (kps_value - 60.0) / 10.0)
    # breast
    age_value, age_reason = _age(age)
    subtype = breast_subtype_class(breast_subtype)
    subtype_reason = None
    if _is_missing(breast_subtype):
        subtype_reason = "breast subtype missing"
    elif subtype is None:
        subtype_reason = f"breast subtype {breast_subtype!r} not recognised"
    reasons = [r for r in (kps_reason, subtype_reason, age_reason) if r is not None]
    if reasons:
        return _result(math.nan, reasons)
    points = 0.0 if kps_value <= 50 else 0.5 if kps_value < 70 else 1.0 if kps_value < 90 else 1.5
    points += {"basal": 0.0, "luminal_a": 1.0, "her2": 1.5, "luminal_b": 2.0}[subtype]
    points += 0.0 if age_value >= 60 else 0.5
    return ScoreResult(points)


# ------------------------------------------------------------------------------------ whole tables
def _check_mapping(mapping: Mapping[str, str], table: pd.DataFrame) -> None:
    unknown = sorted(set(mapping) - set(CLINICAL_SCORES_VARIABLES))
    if unknown:
        raise ValueError(f"clinical_scores has unknown keys {unknown}; known: {list(CLINICAL_SCORES_VARIABLES)}")
    absent = sorted({column for column in mapping.values() if column not in table.columns})
    if absent:
        raise ValueError(f"clinical_scores names columns {absent} that the clinical table lacks")


def _aligned_counts(n_metastases: pd.Series, table: pd.DataFrame) -> pd.Series:
    if not isinstance(n_metastases, pd.Series):
        raise TypeError("n_metastases must be a pandas Series indexed like the clinical table (by case)")
    if n_metastases.index.has_duplicates:
        raise ValueError("n_metastases has repeated case ids")
    if len(table) and len(n_metastases) and not table.index.isin(n_metastases.index).any():
        raise ValueError("n_metastases shares no case id with the clinical table's index")
    return n_metastases.reindex(table.index)


def compute_scores(table: pd.DataFrame, mapping: Mapping[str, str] | None, n_metastases: pd.Series,
                   unknown_control: str = "uncontrolled", with_reasons: bool = False,
                   extra_spellings: Mapping[str, str] | None = None) -> pd.DataFrame:
    """RPA class, GPA and DS-GPA of every patient (row) of a clinical table.

    ``mapping`` is dataset.json's ``clinical_scores`` block: score variable (one of
    :data:`CLINICAL_SCORES_VARIABLES`) -> clinical column. A variable it leaves out counts as
    missing for every patient (e.g. without ``primary`` the DS-GPA is NaN throughout).
    ``n_metastases`` (the lesion count of the masks) is matched to the table by index (case id);
    a case it lacks has an unknown count.

    Returns a DataFrame indexed like ``table`` with float columns ``rpa_class`` (1, 2, 3),
    ``gpa`` and ``ds_gpa``, NaN where not computable; with ``with_reasons`` also ``rpa_reason``,
    ``gpa_reason`` and ``ds_gpa_reason`` (None where computed). Raises ValueError for an unknown
    mapping key or a mapped column the table lacks.
    """
    mapping = dict(mapping or {})
    _check_mapping(mapping, table)
    counts = _aligned_counts(n_metastases, table)

    def column(variable: str) -> list[Any]:
        return list(table[mapping[variable]]) if variable in mapping else [None] * len(table)

    kps, age, ecm = column("kps"), column("age"), column("extracranial_metastases")
    primary, control, subtype = column("primary"), column("controlled_primary"), column("breast_subtype")
    n = list(counts)
    rpa = [rpa_class(kps[i], age[i], ecm[i], control[i], unknown_control) for i in range(len(table))]
    gpas = [gpa(age[i], kps[i], ecm[i], n[i]) for i in range(len(table))]
    ds = [ds_gpa(primary[i], age[i], kps[i], ecm[i], n[i], subtype[i], extra_spellings) for i in range(len(table))]
    result = pd.DataFrame(
        {name: np.array([r.value for r in rows], dtype=float) for name, rows in zip(SCORE_COLUMNS, (rpa, gpas, ds))},
        index=table.index,
    )
    if with_reasons:
        for name, rows in (("rpa_reason", rpa), ("gpa_reason", gpas), ("ds_gpa_reason", ds)):
            result[name] = pd.Series([r.reason for r in rows], index=table.index, dtype=object)
    return result


def scores_as_risk(scores: pd.DataFrame) -> pd.DataFrame:
    """The scores as risks (higher = worse, like the model's ``_risk``): the RPA class as it is,
    the negative of the GPA and DS-GPA. Other columns are left out."""
    risk = pd.DataFrame(index=scores.index)
    if "rpa_class" in scores:
        risk["rpa_class"] = scores["rpa_class"].astype(float)
    for name in ("gpa", "ds_gpa"):
        if name in scores:
            risk[name] = -scores[name].astype(float)
    return risk
