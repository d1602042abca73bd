"""The built-in synthetic multi-centre brain-metastasis SRS cohort and its truth file.

Public API:
    generate_synthetic_dataset(raw_dir, n_train=120, n_test=40, n_centres=4, size="demo", seed=0,
                               num_processes=2, dataset_id=1, dataset_name="SynthBrainMets",
                               overwrite=False, progress=True, lesion_table=True) -> Path
    sample_cohort(n_cases, seed=0, n_centres=4, n_test=0, num_processes=1) -> list[CaseSpec]
        (patients, lesions and outcomes without rendering images)
    cohort_frame(specs) -> pandas.DataFrame
    load_truth(path_or_dataset_folder) -> dict,  truth_path(dataset_folder) -> Path

The generative model, centres, truth schema and measured clinical gap are documented in
documentation/synthetic_cohort.md.
"""

from glmil_auto.synthetic.cases import CaseSpec, cohort_frame, plan_cohort, sample_case, sample_cohort
from glmil_auto.synthetic.centres import SIZE_PRESETS, centre_profiles, resolve_spacing_factor
from glmil_auto.synthetic.cohort import generate_synthetic_dataset
from glmil_auto.synthetic.truth import load_truth, truth_path

__all__ = [
    "SIZE_PRESETS",
    "CaseSpec",
    "centre_profiles",
    "cohort_frame",
    "generate_synthetic_dataset",
    "load_truth",
    "plan_cohort",
    "resolve_spacing_factor",
    "sample_case",
    "sample_cohort",
    "truth_path",
]
