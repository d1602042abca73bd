"""``glmil_plan_experiment -d ID [--device-memory-gb G] [--planner NAME]``."""

from __future__ import annotations

import argparse
import sys

from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME


def add_planning_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--planner", default="GLMILPlanner", help="planner class name (default: %(default)s)")
    parser.add_argument("-p", "--plans_name", default=DEFAULT_PLANS_NAME, help="plans identifier (default: %(default)s)")
    parser.add_argument("-device", "--device", choices=("cpu", "cuda"), default=None,
                        help="plan for this device (default: CUDA when available, else CPU)")
    parser.add_argument("--device-memory-gb", dest="device_memory_gb", type=float, default=None,
                        help="memory budget of the device in GiB (default: detected)")


def plan_experiment_entry(argv: list[str] | None = None) -> int:
    from glmil_auto.experiment_planning.device_profile import detect_device_profile
    from glmil_auto.experiment_planning.plan_experiment import plan_experiment

    parser = argparse.ArgumentParser(prog="glmil_plan_experiment",
                                     description="Turn the dataset fingerprint and a device profile into a plans file.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    add_planning_arguments(parser)
    args = parser.parse_args(argv)
    from glmil_auto.experiment_planning.planners.default_planner import PlanningError

    try:
        device = detect_device_profile(args.device, args.device_memory_gb)
        plans, path = plan_experiment(args.dataset, args.planner, args.plans_name, device)
    except (PlanningError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    memory = plans["estimates"]["training_memory_bytes"]["total_bytes"] / 2**30
    print(f"wrote {path} ({device.kind}, {device.memory_gb:g} GiB: global {plans['preprocessing']['global']['target_spacing'][0]} mm "
          f"{plans['preprocessing']['global']['input_shape']}, patch {plans['preprocessing']['local']['patch_size']}, "
          f"batch {plans['training']['batch_size']}, instance budget {plans['training']['instance_budget']}, "
          f"estimated training memory {memory:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(plan_experiment_entry())
