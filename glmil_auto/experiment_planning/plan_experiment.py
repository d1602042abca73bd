"""Python API of ``glmil_plan_experiment``: fingerprint + device -> plans file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glmil_auto.dataset.dataset_json import load_dataset_json
from glmil_auto.experiment_planning.device_profile import DeviceProfile, detect_device_profile
from glmil_auto.experiment_planning.planners import find_planner
from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME, save_plans
from glmil_auto.paths import preprocessed_folder, raw_dataset_folder


def plan_experiment(
    dataset: str | int,
    planner_name: str = "GLMILPlanner",
    plans_name: str = DEFAULT_PLANS_NAME,
    device: DeviceProfile | None = None,
) -> tuple[dict[str, Any], Path]:
    """Plan a dataset whose fingerprint exists; write ``<preprocessed>/<dataset>/<plans_name>.json``."""
    raw = raw_dataset_folder(dataset)
    folder = preprocessed_folder() / raw.name
    fingerprint_path = folder / "dataset_fingerprint.json"
    if not fingerprint_path.is_file():
        raise FileNotFoundError(f"{fingerprint_path} does not exist: run glmil_extract_fingerprint -d {dataset} first")
    fingerprint = json.loads(fingerprint_path.read_text(encoding="utf-8"))
    dataset_json = load_dataset_json(raw).raw  # validated: names safe, no repeated keys
    planner = find_planner(planner_name)(fingerprint, dataset_json, device or detect_device_profile(), plans_name)
    plans = planner.plan()
    path = folder / f"{plans_name}.json"
    save_plans(plans, path)
    return plans, path
