"""Command-line entry points of the raw-dataset stage."""

from __future__ import annotations

import argparse
import sys

from glmil_auto.configuration import default_num_processes
from glmil_auto.paths import DatasetNotFoundError, raw_dataset_folder


def verify_dataset_entry(argv: list[str] | None = None) -> int:
    """``glmil_verify_dataset -d ID``: report every problem of a raw dataset; exit 1 on errors."""
    from glmil_auto.dataset.verify import verify_dataset

    parser = argparse.ArgumentParser(
        prog="glmil_verify_dataset",
        description="Check a raw dataset (dataset.json, images, lesion masks, clinical tables) and "
        "report every problem at once. Exits 1 when there are errors, 0 with warnings only.",
    )
    parser.add_argument("-d", "--dataset", required=True, help="dataset id (1) or name (Dataset001_SynthBrainMets)")
    parser.add_argument("-np", "--num_processes", type=int, default=default_num_processes(),
                        help="worker processes reading the images (default: %(default)s)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        folder = raw_dataset_folder(args.dataset)
    except DatasetNotFoundError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    report = verify_dataset(folder, num_processes=args.num_processes, progress=not args.no_progress)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(verify_dataset_entry())
