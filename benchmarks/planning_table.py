"""Plans for 8, 16, 24, 40 and 80 GB GPUs and for the CPU, on the fingerprints of a few-lesion and
a many-lesion brain-metastasis cohort at 1 mm isotropic and at 0.5 x 0.5 x 3 mm.

    python benchmarks/planning_table.py            # the markdown table of documentation/planning.md

The fingerprints are synthesized with the fields the planner reads (``cohort_fingerprint``), so
the table needs no data and no GPU: the planner measures memory on the meta device.
tests/test_planner.py imports this script and asserts what the table shows: no plan over its
budget, a larger device never coarser, the global spacing below the smallest-lesion bound
wherever memory allows.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.planners import GLMILPlanner

GPU_MEMORY_GB = (8, 16, 24, 40, 80)
CPU_MEMORY_GB = 8.0  # a laptop's planning budget (a quarter of 32 GB RAM)

# lesions per case and lesion diameters (mm) of two typical stereotactic radiosurgery cohorts
COHORTS = {
    "few lesions": {"lesions_per_case": {"mean": 2.2, "median": 2.0, "percentile_95": 5.0, "max": 8.0, "min": 1.0},
                    "diameter": {"min": 2.5, "percentile_05": 3.0, "median": 9.0, "percentile_95": 35.0, "max": 55.0}},
    "many lesions": {"lesions_per_case": {"mean": 8.0, "median": 6.0, "percentile_95": 20.0, "max": 40.0, "min": 1.0},
                     "diameter": {"min": 1.5, "percentile_05": 2.5, "median": 6.0, "percentile_95": 30.0, "max": 50.0}},
}
RESOLUTIONS = {"1 mm isotropic": ((1.0, 1.0, 1.0), (190, 230, 190)),
               "0.5x0.5x3 mm": ((3.0, 0.5, 0.5), (64, 460, 380))}  # (z, y, x) spacing and shape


def cohort_fingerprint(cohort: str, resolution: str, n_cases: int = 300) -> dict[str, Any]:
    """A dataset fingerprint with every field the planner reads (see documentation/fingerprint.md)."""
    lesions, (spacing, shape) = COHORTS[cohort], RESOLUTIONS[resolution]
    rng = np.random.default_rng(0)
    cases = {}
    for i in range(n_cases):
        jitter = 1 + 0.02 * rng.standard_normal(3)
        cases[f"case_{i:03d}"] = {"spacing_canonical": [float(v) for v in np.asarray(spacing) * jitter],
                                  "shape_canonical": list(shape)}
    head = [180.0, 215.0, 175.0]  # the 95th-percentile head extent in mm (z, y, x)
    diameter = lesions["diameter"]
    extent = diameter["percentile_95"] * 1.1
    return {
        "dataset_name": f"Dataset900_{cohort.replace(' ', '')}",
        "channel_names": {"0": "T1c", "1": "FLAIR"},
        "num_training_cases": n_cases,
        "foreground_intensity_properties_per_channel": {
            c: {"mean": 300.0, "std": 200.0, "percentile_00_5": 0.0, "percentile_99_5": 1500.0} for c in ("0", "1")},
        "cases": cases,
        "summary": {
            "spacing_canonical": {"median": list(spacing)},
            "head_extent_mm": {"percentile_95": head, "median": [v * 0.93 for v in head]},
            "lesions_per_case": {**lesions["lesions_per_case"], "n_cases_without_lesions": 0},
            "lesion_diameter_mm": dict(diameter),
            "lesion_extent_mm": {"median": [diameter["median"]] * 3, "percentile_95": [extent] * 3,
                                 "max": [diameter["max"]] * 3},
        },
        "endpoints": {
            "local_failure": {"type": "binary", "n_known": n_cases, "n_positive": int(0.15 * n_cases), "prevalence": 0.15},
            "distant_failure": {"type": "binary", "n_known": n_cases, "n_positive": int(0.45 * n_cases), "prevalence": 0.45},
            "leptomeningeal_failure": {"type": "binary", "n_known": n_cases, "n_positive": int(0.08 * n_cases),
                                       "prevalence": 0.08},
            "os": {"type": "survival", "n_known": n_cases, "n_events": int(0.7 * n_cases), "event_rate": 0.7},
        },
    }


DATASET_JSON = {"clinical_features": {"age": "numeric", "kps": "numeric", "primary": "categorical"},
                "endpoints": {"local_failure": {"type": "binary"}, "distant_failure": {"type": "binary"},
                              "leptomeningeal_failure": {"type": "binary"},
                              "os": {"type": "survival", "time": "os_months", "event": "os_event"}}}


def devices() -> list[DeviceProfile]:
    return [DeviceProfile("cpu", "cpu", CPU_MEMORY_GB, 2)] + [
        DeviceProfile("cuda", f"{g} GB GPU", float(g), 16) for g in GPU_MEMORY_GB]


def planner_for(cohort: str, resolution: str, device: DeviceProfile,
                planner: type[GLMILPlanner] = GLMILPlanner) -> GLMILPlanner:
    fingerprint = cohort_fingerprint(cohort, resolution)
    fingerprint["clinical_features"] = {"primary": {"categories": {"lung": 1, "breast": 1, "melanoma": 1}}}
    return planner(fingerprint, DATASET_JSON, device)


def all_plans() -> list[tuple[str, str, DeviceProfile, dict[str, Any]]]:
    """Every (cohort, resolution, device, plans) of the table."""
    return [(cohort, resolution, device, planner_for(cohort, resolution, device).plan())
            for cohort in COHORTS for resolution in RESOLUTIONS for device in devices()]


def _row(cohort: str, resolution: str, device: DeviceProfile, plans: dict[str, Any]) -> str:
    g, l, training, estimates = (plans["preprocessing"]["global"], plans["preprocessing"]["local"], plans["training"],
                                 plans["estimates"])
    bound = estimates["global_spacing_bound_mm"]
    spacing = g["target_spacing"][0]
    mark = "" if bound is None or spacing <= bound + 1e-6 else f" (> {bound:.2f}: {estimates['global_spacing_limited_by']})"
    per_batch = training["instance_budget"] // len(l["scales"])
    memory = estimates["training_memory_bytes"]["total_bytes"] / 2**30
    budget = estimates["memory_budget_bytes"] / 2**30
    name = "CPU" if device.kind == "cpu" else f"{device.memory_gb:g} GB"
    patch = "x".join(map(str, l["patch_size"]))
    local_spacing = "x".join(f"{s:.2g}" for s in l["target_spacing"])
    stride = "" if plans["model"]["global_encoder"]["arch_kwargs"]["first_stride"] == 1 else ", stride 2"
    return (f"| {cohort} | {resolution} | {name} | {spacing:.2f} mm{mark} | {'x'.join(map(str, g['input_shape']))}{stride} | "
            f"{patch} at {local_spacing} mm ({estimates['local_field_of_view_mm']:g} mm) | {len(l['scales'])} | "
            f"{training['instance_budget']} ({per_batch} lesions) | {training['batch_size']} | "
            f"{memory:.2f} / {budget:.2f} GiB | {estimates['configuration']['step']} |")


def table() -> str:
    lines = ["| cohort | scans | device | global spacing | global input | lesion patch (field of view) | scales | "
             "instance budget (patches) | batch | estimated memory / budget | last trade-off |",
             "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    lines += [_row(*entry) for entry in all_plans()]
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print(table())


if __name__ == "__main__":
    main()
