"""Python API of ``glmil_plan_and_preprocess``: verify (optional), fingerprint, plan, preprocess."""

from __future__ import annotations

from typing import Any

from glmil_auto.dataset.problems import DatasetError
from glmil_auto.experiment_planning.device_profile import DeviceProfile, detect_device_profile
from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from glmil_auto.experiment_planning.plan_experiment import plan_experiment
from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME
from glmil_auto.paths import raw_dataset_folder
from glmil_auto.preprocessing.dataset_preprocessor import DatasetPreprocessor


def plan_and_preprocess(
    dataset: str | int,
    num_processes: int = 2,
    planner: str = "GLMILPlanner",
    plans_name: str = DEFAULT_PLANS_NAME,
    device: DeviceProfile | None = None,
    verify: bool = False,
    preprocess: bool = True,
    progress: bool = True,
    clean: bool = False,
) -> dict[str, Any]:
    """Run the whole self-configuration of a dataset; returns the plans.

    With ``verify``, a dataset with errors stops here with a :class:`DatasetError` listing them.
    ``clean`` recomputes the fingerprint and preprocesses every case again; without it, both are
    redone only where the inputs changed.
    """
    folder = raw_dataset_folder(dataset)
    if verify:
        from glmil_auto.dataset.verify import verify_dataset

        report = verify_dataset(folder, num_processes, progress)
        if not report.ok:
            raise DatasetError(report.errors)
    DatasetFingerprintExtractor(folder, num_processes=num_processes, progress=progress).run(overwrite_existing=clean)
    plans, _ = plan_experiment(folder.name, planner, plans_name, device or detect_device_profile())
    if preprocess:
        DatasetPreprocessor(folder, plans_name, num_processes).run(progress=progress, clean=clean)
    return plans
