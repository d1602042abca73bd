"""Clinical variables of a brain-metastasis SRS cohort, drawn from realistic distributions.

Primary histology mix follows large SRS series (lung ~45 %, breast ~20 %, melanoma ~12 %,
gastrointestinal ~7 %, renal ~6 %, other ~10 %); the external centre reweights it.
Age depends on histology (breast patients younger); KPS (multiples of 10, 40-100) comes from a
latent score that falls with age; extracranial disease depends on histology; prior
whole-brain RT is given to ~10 %.
"""

from __future__ import annotations

import numpy as np

from glmil_auto.synthetic.centres import CentreProfile

PRIMARIES: tuple[str, ...] = ("lung", "breast", "melanoma", "renal", "gastrointestinal", "other")
PRIMARY_PROBS: tuple[float, ...] = (0.45, 0.20, 0.12, 0.06, 0.07, 0.10)
AGE_MEAN = {"lung": 64.0, "breast": 55.0, "melanoma": 61.0, "renal": 63.0, "gastrointestinal": 63.0, "other": 61.0}
AGE_SD = 10.5
ECD_PROB = {"lung": 0.62, "breast": 0.60, "melanoma": 0.68, "renal": 0.58, "gastrointestinal": 0.70, "other": 0.55}
PRIOR_WBRT_PROB = 0.10
KPS_LEVELS: tuple[int, ...] = (40, 50, 60, 70, 80, 90, 100)
# Cut points on a standard-normal latent score giving about 2/4/9/18/27/30/10 % at age 62.
KPS_CUTS: tuple[float, ...] = (-2.05, -1.55, -1.0, -0.39, 0.31, 1.28)


def primary_probabilities(profile: CentreProfile) -> np.ndarray:
    weights = dict(profile.primary_weights)
    p = np.array([pr * weights.get(name, 1.0) for name, pr in zip(PRIMARIES, PRIMARY_PROBS)])
    return p / p.sum()


def sample_clinical(rng: np.random.Generator, profile: CentreProfile) -> dict:
    """One patient's clinical variables (the five declared features of the dataset)."""
    primary = PRIMARIES[int(rng.choice(len(PRIMARIES), p=primary_probabilities(profile)))]
    age = int(np.clip(np.round(rng.normal(AGE_MEAN[primary] + profile.age_shift, AGE_SD)), 25, 90))
    latent = rng.normal() - 0.025 * (age - 62) + profile.kps_shift
    kps = KPS_LEVELS[int(np.searchsorted(KPS_CUTS, latent))]
    return {
        "age": age,
        "kps": kps,
        "primary": primary,
        "extracranial_disease": int(rng.random() < ECD_PROB[primary]),
        "prior_wbrt": int(rng.random() < PRIOR_WBRT_PROB),
    }
