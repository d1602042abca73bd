"""``glmil_preprocess`` and ``glmil_plan_and_preprocess``.

``glmil_plan_and_preprocess`` lives here, in the last stage it drives, so that earlier stages
never import later ones.
"""

from __future__ import annotations

import argparse
import logging
import sys

from glmil_auto.configuration import default_num_processes
from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME


def _preprocess(dataset: str, plans_name: str, num_processes: int, progress: bool, clean: bool) -> dict[str, int]:
    from glmil_auto.paths import raw_dataset_folder
    from glmil_auto.preprocessing.dataset_preprocessor import DatasetPreprocessor

    return DatasetPreprocessor(raw_dataset_folder(dataset), plans_name, num_processes).run(progress=progress,
                                                                                           clean=clean)


def preprocess_entry(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glmil_preprocess",
                                     description="Preprocess imagesTr and imagesTs with an existing plans file.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    parser.add_argument("-p", "--plans_name", default=DEFAULT_PLANS_NAME, help="plans identifier (default: %(default)s)")
    parser.add_argument("-np", "--num_processes", type=int, default=default_num_processes())
    parser.add_argument("--clean", action="store_true",
                        help="preprocess every case again (by default a case is redone only when the plans or its "
                             "input files or clinical row changed)")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from glmil_auto.dataset.problems import DatasetError
    from glmil_auto.paths import DatasetNotFoundError

    try:
        counts = _preprocess(args.dataset, args.plans_name, args.num_processes, not args.no_progress, args.clean)
    except (DatasetNotFoundError, FileNotFoundError) as exc:  # no such dataset, or not planned yet
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DatasetError as exc:
        print(f"ERROR: the dataset has problems:\n{exc}", file=sys.stderr)
        return 1
    print(f"preprocessed {counts['processed']} case(s), {counts['skipped']} already up to date")
    return 0


def plan_and_preprocess_entry(argv: list[str] | None = None) -> int:
    from glmil_auto.dataset.problems import DatasetError
    from glmil_auto.experiment_planning.device_profile import detect_device_profile
    from glmil_auto.experiment_planning.planners.default_planner import PlanningError
    from glmil_auto.paths import DatasetNotFoundError
    from glmil_auto.experiment_planning.plan_entry_points import add_planning_arguments
    from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess

    parser = argparse.ArgumentParser(prog="glmil_plan_and_preprocess",
                                     description="Fingerprint, plan and preprocess a dataset in one go.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name")
    parser.add_argument("-np", "--num_processes", type=int, default=default_num_processes())
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="run glmil_verify_dataset first and stop on errors")
    parser.add_argument("--no_preprocessing", action="store_true", help="only fingerprint and plan")
    parser.add_argument("--clean", action="store_true",
                        help="recompute the fingerprint and preprocess every case again (by default both are redone "
                             "only where the inputs changed)")
    parser.add_argument("--no_progress", action="store_true")
    add_planning_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        plans = plan_and_preprocess(
            args.dataset, args.num_processes, args.planner, args.plans_name,
            detect_device_profile(args.device, args.device_memory_gb),
            verify=args.verify_dataset_integrity, preprocess=not args.no_preprocessing, progress=not args.no_progress,
            clean=args.clean,
        )
    except DatasetError as exc:
        print(f"ERROR: the dataset has problems:\n{exc}", file=sys.stderr)
        return 1
    except DatasetNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PlanningError as exc:  # nothing fits the device: the message says what to change
        print(f"error: {exc}", file=sys.stderr)
        return 1
    local = plans["preprocessing"]["local"]
    print(f"planned {plans['dataset_name']}: global input {plans['preprocessing']['global']['input_shape']} at "
          f"{plans['preprocessing']['global']['target_spacing'][0]} mm, lesion patch {local['patch_size']} at "
          f"{local['target_spacing']} mm x scales {local['scales']}, batch {plans['training']['batch_size']}")
    return 0


if __name__ == "__main__":
    sys.exit(plan_and_preprocess_entry())
