"""Reading, writing and hashing plans files.

``plans_hash`` covers only what changes the preprocessed arrays, so that re-planning the
training section (batch size, loss weights) does not invalidate preprocessed data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from glmil_auto.paths import preprocessed_folder
from glmil_auto.utilities.atomic_files import write_json_atomic

DEFAULT_PLANS_NAME = "plans"
PLANS_VERSION = 1


def plans_file(dataset_name: str, plans_name: str = DEFAULT_PLANS_NAME) -> Path:
    return preprocessed_folder() / dataset_name / f"{plans_name}.json"


def save_plans(plans: dict[str, Any], path: str | Path) -> None:
    write_json_atomic(path, plans)


def load_plans(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plans file {path} does not exist: run glmil_plan_experiment first")
    return json.loads(path.read_text(encoding="utf-8"))


def plans_hash(plans: dict[str, Any]) -> str:
    """sha256 of the preprocessing-relevant part of the plans (stable key order)."""
    relevant = {
        "plans_version": plans["plans_version"],
        "channel_names": plans["channel_names"],
        "preprocessing": plans["preprocessing"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode("utf-8")).hexdigest()[:16]
