"""The documented ground-truth outcome model (see documentation/synthetic_cohort.md).

Effect sizes follow the published risk factors in CLINICAL_NOTES.md, but are deliberately put
where images are needed to see them: local failure is driven mostly by per-lesion necrosis and
enhancement heterogeneity combined by a noisy-OR over lesions; leptomeningeal failure mostly by
CSF/ventricle contact and posterior-fossa location; distant failure by micro-lesions that are
visible in T1c but absent from the mask. Lesion count and total volume (what a clinical table
can hold) then explain only part of each endpoint.
"""

from __future__ import annotations

import math

import numpy as np

LOCAL_FAILURE = {
    "intercept": -3.75,
    "log_diameter_over_8mm": 0.4,
    "dose_gy": {"24": 0.0, "18": 0.55, "15": 0.85},
    "necrosis": 1.3,
    "heterogeneity_minus_0.4": 8.0,
    "radioresistant_primary": 0.7,
}
RADIORESISTANT = ("melanoma", "renal")
DISTANT_FAILURE = {
    "intercept": -1.6,
    "log_lesion_count": 0.45,
    "log1p_micro_lesions": 1.15,
    "melanoma": 0.7,
    "breast": 0.45,
    "prior_wbrt": -1.0,
    "total_volume_below_1.3cc": 0.25,
}
LEPTOMENINGEAL_FAILURE = {
    "intercept": -4.7,
    "any_csf_contact": 2.2,
    "any_ventricle_contact": 0.8,
    "any_posterior_fossa": 2.0,
    "breast": 1.0,
    "log_lesion_count": 0.2,
}
OVERALL_SURVIVAL = {
    "age_per_10y_minus_62": 0.25,
    "kps_per_10_minus_80": -0.30,
    "extracranial_disease": 0.55,
    "primary": {"lung": 0.0, "breast": -0.35, "melanoma": 0.25, "renal": -0.15, "gastrointestinal": 0.35, "other": 0.1},
    "log_lesion_count": 0.2,
    "log1p_total_volume_cc": 0.15,
    "log1p_micro_lesions": 0.3,
}
OS_WEIBULL_SHAPE = 1.15
OS_MEDIAN_AT_ZERO_MONTHS = 16.0  # median OS of a patient with linear predictor 0
ADMIN_CENSOR_MONTHS = (3.0, 36.0)  # uniform: staggered entry, fixed analysis date
DROPOUT_MEAN_MONTHS = 150.0  # exponential loss to follow-up
MISSING_RATE = 0.03  # per binary endpoint, completely at random
BINARY_ENDPOINTS = ("local_failure", "distant_failure", "leptomeningeal_failure")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def srs_dose_gy(diameter_mm: float) -> float:
    """RTOG 90-05 prescription by maximum diameter: <=20 mm 24 Gy, 21-30 mm 18 Gy, else 15 Gy."""
    if diameter_mm <= 20.0:
        return 24.0
    if diameter_mm <= 30.0:
        return 18.0
    return 15.0


def lesion_local_failure_probability(
    diameter_mm: float, necrosis: bool, heterogeneity: float, primary: str
) -> float:
    c = LOCAL_FAILURE
    eta = (
        c["intercept"]
        + c["log_diameter_over_8mm"] * math.log(diameter_mm / 8.0)
        + c["dose_gy"][str(int(srs_dose_gy(diameter_mm)))]
        + c["necrosis"] * float(necrosis)
        + c["heterogeneity_minus_0.4"] * (heterogeneity - 0.4)
        + c["radioresistant_primary"] * float(primary in RADIORESISTANT)
    )
    return _sigmoid(eta)


def noisy_or(probabilities: list[float]) -> float:
    """Probability that at least one lesion fails, lesions failing independently."""
    return 1.0 - float(np.prod([1.0 - p for p in probabilities]))


def distant_failure_probability(
    n_lesions: int, n_micro: int, primary: str, prior_wbrt: int, total_volume_cc: float
) -> float:
    c = DISTANT_FAILURE
    eta = (
        c["intercept"]
        + c["log_lesion_count"] * math.log(n_lesions)
        + c["log1p_micro_lesions"] * math.log1p(n_micro)
        + c["melanoma"] * float(primary == "melanoma")
        + c["breast"] * float(primary == "breast")
        + c["prior_wbrt"] * float(prior_wbrt)
        + c["total_volume_below_1.3cc"] * float(total_volume_cc < 1.3)
    )
    return _sigmoid(eta)


def leptomeningeal_failure_probability(
    any_csf_contact: bool, any_ventricle_contact: bool, any_posterior_fossa: bool, primary: str, n_lesions: int
) -> float:
    c = LEPTOMENINGEAL_FAILURE
    eta = (
        c["intercept"]
        + c["any_csf_contact"] * float(any_csf_contact)
        + c["any_ventricle_contact"] * float(any_ventricle_contact)
        + c["any_posterior_fossa"] * float(any_posterior_fossa)
        + c["breast"] * float(primary == "breast")
        + c["log_lesion_count"] * math.log(n_lesions)
    )
    return _sigmoid(eta)


def os_linear_predictor(
    age: float, kps: float, extracranial_disease: int, primary: str, n_lesions: int, total_volume_cc: float, n_micro: int
) -> float:
    """Log hazard ratio against the reference patient (62 y, KPS 80, no ECD, lung, 1 lesion)."""
    c = OVERALL_SURVIVAL
    return (
        c["age_per_10y_minus_62"] * (age - 62.0) / 10.0
        + c["kps_per_10_minus_80"] * (kps - 80.0) / 10.0
        + c["extracranial_disease"] * float(extracranial_disease)
        + c["primary"][primary]
        + c["log_lesion_count"] * math.log(n_lesions)
        + c["log1p_total_volume_cc"] * math.log1p(total_volume_cc)
        + c["log1p_micro_lesions"] * math.log1p(n_micro)
    )


def weibull_scale() -> float:
    return OS_MEDIAN_AT_ZERO_MONTHS / math.log(2.0) ** (1.0 / OS_WEIBULL_SHAPE)


def sample_os(rng: np.random.Generator, linear_predictor: float) -> tuple[float, float, float, int]:
    """(uncensored time, censoring time, observed time, event) in months; proportional hazards."""
    u = rng.random()
    t = weibull_scale() * (-math.log(1.0 - u) / math.exp(linear_predictor)) ** (1.0 / OS_WEIBULL_SHAPE)
    admin = rng.uniform(*ADMIN_CENSOR_MONTHS)
    dropout = rng.exponential(DROPOUT_MEAN_MONTHS)
    censor = min(admin, dropout)
    observed = max(0.01, round(min(t, censor), 2))
    return float(t), float(censor), float(observed), int(t <= censor)


def sample_lesion_failures(rng: np.random.Generator, probabilities: list[float]) -> list[int]:
    """Draw each lesion's local failure independently (1 = the lesion fails)."""
    return [int(rng.random() < p) for p in probabilities]


def sample_binary(
    rng: np.random.Generator, probabilities: dict[str, float], decided: dict[str, int] | None = None
) -> dict[str, int | None]:
    """Draw each binary endpoint; about ``MISSING_RATE`` of each is left unknown (None).

    ``decided``: endpoints whose value is drawn elsewhere (local failure: 1 when any lesion
    failed, a draw from the noisy-OR of ``probabilities``). Their uniform is still consumed here,
    so that the other endpoints' draws and every missingness draw stay what they were.
    """
    decided = decided or {}
    out: dict[str, int | None] = {}
    for name in BINARY_ENDPOINTS:
        value = int(rng.random() < probabilities[name])
        value = decided.get(name, value)
        missing = rng.random() < MISSING_RATE
        out[name] = None if missing else value
    return out


def model_description() -> dict:
    """The model's coefficients, JSON-safe (written into the truth file)."""
    return {
        "local_failure": {**LOCAL_FAILURE, "radioresistant": list(RADIORESISTANT), "combination": "noisy-OR over lesions",
                          "drawn": "per lesion (Bernoulli p_local_failure); the case fails when any lesion fails"},
        "distant_failure": DISTANT_FAILURE,
        "leptomeningeal_failure": LEPTOMENINGEAL_FAILURE,
        "os": {
            **OVERALL_SURVIVAL,
            "baseline": "Weibull",
            "weibull_shape": OS_WEIBULL_SHAPE,
            "median_months_at_lp0": OS_MEDIAN_AT_ZERO_MONTHS,
            "admin_censoring_months_uniform": list(ADMIN_CENSOR_MONTHS),
            "dropout_mean_months": DROPOUT_MEAN_MONTHS,
        },
        "missing_rate_binary": MISSING_RATE,
    }
