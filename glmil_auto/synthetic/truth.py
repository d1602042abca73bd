"""The truth file: what the generator knows and a model can only estimate.

It lives BESIDE the dataset folder (``<raw>/DatasetNNN_Name_truth.json``), never inside it, so
that nothing in the pipeline can read it by accident. Schema: documentation/synthetic_cohort.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from glmil_auto.synthetic.anatomy import head_to_world
from glmil_auto.synthetic.cases import CaseSpec

TRUTH_FORMAT = "glmil_auto synthetic truth"
TRUTH_VERSION = 2  # 2: lesions carry their drawn local_failure

LESION_FIELDS = (
    "diameter_mm", "volume_mm3", "compartment", "posterior_fossa", "necrosis", "necrosis_fraction",
    "heterogeneity", "oedema_mm", "pial_distance_mm", "ventricle_distance_mm", "csf_distance_mm",
    "csf_contact", "ventricle_contact", "dose_gy", "p_local_failure", "local_failure",
)


def truth_path(dataset_folder: str | Path) -> Path:
    """``<raw>/DatasetNNN_Name`` -> ``<raw>/DatasetNNN_Name_truth.json``."""
    folder = Path(dataset_folder)
    return folder.parent / f"{folder.name}_truth.json"


def load_truth(path: str | Path) -> dict:
    """Read a truth file; a dataset folder may be given instead of the file itself."""
    path = Path(path)
    if path.is_dir():
        path = truth_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"truth file not found: {path}")
    with open(path, encoding="utf-8") as f:
        truth = json.load(f)
    if truth.get("format") != TRUTH_FORMAT:
        raise ValueError(f"{path} is not a glmil_auto synthetic truth file")
    return truth


def _world(spec: CaseSpec, points) -> list[float]:
    return [float(v) for v in head_to_world(spec.anatomy, np.asarray(points, dtype=float))]


def case_truth(spec: CaseSpec, rendered=None) -> dict:
    """JSON-safe truth of one case. With a ``RenderedCase``, lesions carry ``lesion_index`` (their
    component label in ``scipy.ndimage.label(mask, np.ones((3, 3, 3)))``), voxel count and mask
    centroid, and are listed in ``lesion_index`` order; otherwise in sampling order."""
    lesions = []
    for i, les in enumerate(spec.lesions):
        rec = {"centre_world_mm": _world(spec, les.centre), **{k: getattr(les, k) for k in LESION_FIELDS}}
        if rendered is not None:
            rec = {
                "lesion_index": rendered.lesion_labels[i],
                "centroid_world_mm": list(rendered.lesion_centroids_world[i]),
                "n_voxels": rendered.lesion_voxels[i],
                **rec,
            }
        lesions.append(rec)
    if rendered is not None:
        lesions.sort(key=lambda r: r["lesion_index"])
    record = {
        "case_id": spec.plan.case_id,
        "split": spec.plan.split,
        "center": spec.plan.centre,
        "centre_profile": spec.plan.profile.key,
        "index": spec.plan.index,
        "clinical": dict(spec.clinical),
        "probabilities": dict(spec.probabilities),
        "outcomes": dict(spec.outcomes),
        "os": {
            "linear_predictor": spec.os_linear_predictor,
            "time_uncensored_months": spec.os_time_uncensored,
            "censoring_time_months": spec.os_censor_time,
            "os_months": spec.os_months,
            "os_event": spec.os_event,
        },
        "n_lesions": len(spec.lesions),
        "n_micro_lesions": len(spec.micro_lesions),
        "total_lesion_volume_mm3": sum(les.volume_mm3 for les in spec.lesions),
        "any_csf_contact": any(les.csf_contact for les in spec.lesions),
        "any_posterior_fossa": any(les.posterior_fossa for les in spec.lesions),
        "lesions": lesions,
        "micro_lesions": [
            {"centre_world_mm": _world(spec, m.centre), "diameter_mm": m.diameter_mm} for m in spec.micro_lesions
        ],
        "anatomy": asdict(spec.anatomy),
    }
    if rendered is not None:
        g = rendered.grid
        record["geometry"] = {
            "shape_zyx": list(g.shape),
            "spacing": list(g.spacing),
            "origin": list(g.origin),
            "direction": list(g.direction),
        }
    return record
