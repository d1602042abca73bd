"""Case specifications: everything about a patient except the image, sampled without rendering.

Every case has its own random streams derived from ``(seed, case index)`` with
``numpy.random.SeedSequence(seed, spawn_key=(index, k))``: k = 0 patient (clinical variables,
anatomy, lesions, micro-lesions), k = 1 outcomes, k = 2 image rendering (noise, texture,
bias field), k = 3 the per-lesion local-failure draws (a stream of their own, so that the other
outcomes' draws are those of a cohort drawn without lesion outcomes). The cohort plan (which case goes to which centre) uses the root
``SeedSequence(seed)``. Output therefore does not depend on worker count or order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from glmil_auto.synthetic.anatomy import AnatomyParams, sample_anatomy
from glmil_auto.synthetic.centres import CentreProfile, centre_profiles
from glmil_auto.synthetic.clinical import sample_clinical
from glmil_auto.synthetic.lesions import Lesion, MicroLesion, sample_lesions, sample_micro_lesions
from glmil_auto.synthetic import outcomes as om

STREAM_PATIENT, STREAM_OUTCOMES, STREAM_RENDER, STREAM_LESION_OUTCOMES = 0, 1, 2, 3
# Relative sizes of the training centres (C1 largest); the external centre gets n_test cases.
TRAINING_CENTRE_WEIGHTS = (1.0, 0.85, 0.7, 0.6, 0.5)


def case_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, stream)))


@dataclass(frozen=True)
class CasePlan:
    index: int  # 0-based position in the cohort (drives the random streams)
    case_id: str
    split: str  # "Tr" or "Ts"
    centre: str
    profile: CentreProfile


@dataclass
class CaseSpec:
    plan: CasePlan
    clinical: dict
    anatomy: AnatomyParams
    lesions: list[Lesion]
    micro_lesions: list[MicroLesion]
    probabilities: dict[str, float] = field(default_factory=dict)
    outcomes: dict[str, int | None] = field(default_factory=dict)
    os_linear_predictor: float = 0.0
    os_time_uncensored: float = 0.0
    os_censor_time: float = 0.0
    os_months: float = 0.0
    os_event: int = 0

    @property
    def total_volume_cc(self) -> float:
        return sum(les.volume_mm3 for les in self.lesions) / 1000.0


def plan_cohort(n_train: int, n_test: int, n_centres: int, seed: int, prefix: str = "SBM") -> list[CasePlan]:
    """Case ids and centres: training cases spread over ``n_centres - 1`` centres in
    proportion to ``TRAINING_CENTRE_WEIGHTS`` (shuffled), then the external centre's cases."""
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got {n_train}, {n_test}")
    centres = centre_profiles(n_centres, with_external=True)
    train_centres = centres[:-1]
    w = np.asarray(TRAINING_CENTRE_WEIGHTS[: len(train_centres)])
    raw = n_train * w / w.sum()
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n_train - counts.sum()]] += 1
    labels = np.repeat(np.arange(len(train_centres)), counts)
    labels = np.random.default_rng(np.random.SeedSequence(seed)).permutation(labels)
    width = max(4, len(str(n_train + n_test)))
    plans = [
        CasePlan(i, f"{prefix}_{i + 1:0{width}d}", "Tr", train_centres[c][0], train_centres[c][1])
        for i, c in enumerate(labels)
    ]
    name, profile = centres[-1]
    plans += [CasePlan(n_train + j, f"{prefix}_{n_train + j + 1:0{width}d}", "Ts", name, profile) for j in range(n_test)]
    return plans


def sample_case(seed: int, plan: CasePlan) -> CaseSpec:
    """Patient, lesions and outcomes of one case (no image)."""
    rng = case_rng(seed, plan.index, STREAM_PATIENT)
    clinical = sample_clinical(rng, plan.profile)
    anatomy = sample_anatomy(rng, clinical["age"])
    lesions = sample_lesions(rng, anatomy, clinical["primary"])
    micro = sample_micro_lesions(rng, anatomy, clinical["primary"], lesions)
    spec = CaseSpec(plan, clinical, anatomy, lesions, micro)
    attach_outcomes(spec, case_rng(seed, plan.index, STREAM_OUTCOMES), case_rng(seed, plan.index, STREAM_LESION_OUTCOMES))
    return spec


def attach_outcomes(spec: CaseSpec, rng: np.random.Generator, lesion_rng: np.random.Generator) -> None:
    """Fill the true probabilities and draw the observed outcomes.

    Each lesion fails with its own probability (``lesion_rng``); the case's local failure is 1
    when any lesion failed, which is a draw from the noisy-OR probability.
    """
    c, lesions = spec.clinical, spec.lesions
    for les in lesions:
        les.dose_gy = om.srs_dose_gy(les.diameter_mm)
        les.p_local_failure = om.lesion_local_failure_probability(
            les.diameter_mm, les.necrosis, les.heterogeneity, c["primary"]
        )
    n, vol, n_micro = len(lesions), spec.total_volume_cc, len(spec.micro_lesions)
    spec.probabilities = {
        "local_failure": om.noisy_or([les.p_local_failure for les in lesions]),
        "distant_failure": om.distant_failure_probability(n, n_micro, c["primary"], c["prior_wbrt"], vol),
        "leptomeningeal_failure": om.leptomeningeal_failure_probability(
            any(les.csf_contact for les in lesions),
            any(les.ventricle_contact for les in lesions),
            any(les.posterior_fossa for les in lesions),
            c["primary"],
            n,
        ),
    }
    for les, failed in zip(lesions, om.sample_lesion_failures(lesion_rng, [les.p_local_failure for les in lesions])):
        les.local_failure = failed
    any_failed = int(any(les.local_failure for les in lesions))
    spec.outcomes = om.sample_binary(rng, spec.probabilities, decided={"local_failure": any_failed})
    spec.os_linear_predictor = om.os_linear_predictor(
        c["age"], c["kps"], c["extracranial_disease"], c["primary"], n, vol, n_micro
    )
    t, censor, observed, event = om.sample_os(rng, spec.os_linear_predictor)
    spec.os_time_uncensored, spec.os_censor_time, spec.os_months, spec.os_event = t, censor, observed, event


def _sample_chunk(args: tuple[int, list[CasePlan]]) -> list[CaseSpec]:
    seed, plans = args
    return [sample_case(seed, plan) for plan in plans]


def sample_cohort(
    n_cases: int, seed: int = 0, n_centres: int = 4, n_test: int = 0, num_processes: int = 1
) -> list[CaseSpec]:
    """Case specifications of a whole cohort without rendering (for benchmarks and tests):
    ``n_cases`` training-centre cases then ``n_test`` external ones, exactly the specs that
    ``generate_synthetic_dataset`` would render for the same arguments."""
    plans = plan_cohort(n_cases, n_test, n_centres, seed)
    if num_processes <= 1 or len(plans) < 200:
        return _sample_chunk((seed, plans))
    import multiprocessing

    step = -(-len(plans) // (4 * num_processes))
    chunks = [(seed, plans[i : i + step]) for i in range(0, len(plans), step)]
    with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
        return [spec for part in pool.map(_sample_chunk, chunks) for spec in part]


def clinical_row(spec: CaseSpec) -> dict:
    """One row of clinicalTr/Ts.csv, in the contract's column order (None = empty cell)."""
    c = spec.clinical
    return {
        "case_id": spec.plan.case_id,
        "center": spec.plan.centre,
        "age": c["age"],
        "kps": c["kps"],
        "primary": c["primary"],
        "extracranial_disease": c["extracranial_disease"],
        "prior_wbrt": c["prior_wbrt"],
        **spec.outcomes,
        "os_months": f"{spec.os_months:.2f}",
        "os_event": spec.os_event,
    }


CSV_COLUMNS = (
    "case_id", "center", "age", "kps", "primary", "extracranial_disease", "prior_wbrt",
    "local_failure", "distant_failure", "leptomeningeal_failure", "os_months", "os_event",
)


def cohort_frame(specs: list[CaseSpec]) -> pd.DataFrame:
    """One row per case: clinical table columns, image-derived summaries and the truth."""
    rows = []
    for s in specs:
        row = clinical_row(s)
        row["os_months"] = s.os_months
        lesions = s.lesions
        row.update(
            split=s.plan.split,
            n_lesions=len(lesions),
            total_volume_cc=s.total_volume_cc,
            max_diameter_mm=max(les.diameter_mm for les in lesions),
            n_micro=len(s.micro_lesions),
            any_necrosis=any(les.necrosis for les in lesions),
            any_csf_contact=any(les.csf_contact for les in lesions),
            any_ventricle_contact=any(les.ventricle_contact for les in lesions),
            any_posterior_fossa=any(les.posterior_fossa for les in lesions),
            os_linear_predictor=s.os_linear_predictor,
            os_time_uncensored=s.os_time_uncensored,
            **{f"p_{k}": v for k, v in s.probabilities.items()},
        )
        rows.append(row)
    frame = pd.DataFrame(rows)
    for name in om.BINARY_ENDPOINTS:
        frame[name] = frame[name].astype("float64")
    return frame


def lesion_diameters(specs: list[CaseSpec]) -> np.ndarray:
    return np.array([les.diameter_mm for s in specs for les in s.lesions])
