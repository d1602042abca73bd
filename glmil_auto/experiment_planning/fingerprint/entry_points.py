"""``glmil_extract_fingerprint -d ID [ID ...] [-np N] [--clean]``."""

from __future__ import annotations

import argparse
import sys

from glmil_auto.configuration import default_num_processes
from glmil_auto.dataset import DatasetError
from glmil_auto.paths import DatasetNotFoundError


def extract_fingerprint_entry(argv: list[str] | None = None) -> int:
    """Write ``<glmil_preprocessed>/<dataset>/dataset_fingerprint.json``; exit 1 on bad data, 2 when not found."""
    from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor

    parser = argparse.ArgumentParser(
        prog="glmil_extract_fingerprint",
        description="Measure a raw dataset's training cases (spacings, shapes, head size, intensities, "
        "lesion instances, endpoints, clinical variables, groups) for the planner.",
    )
    parser.add_argument("-d", "--dataset", nargs="+", required=True,
                        help="dataset id(s) (1) or name(s) (Dataset001_SynthBrainMets)")
    parser.add_argument("-np", "--num_processes", type=int, default=default_num_processes(),
                        help="worker processes reading the cases (default: %(default)s)")
    parser.add_argument("--clean", action="store_true",
                        help="recompute even if a fingerprint of the same cases exists (use after editing images)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    for dataset in args.dataset:
        try:
            extractor = DatasetFingerprintExtractor(dataset, args.num_processes, progress=not args.no_progress)
        except DatasetNotFoundError as exc:
            print(f"ERROR: {exc}", file=sys.stderr)
            return 2
        try:
            fingerprint = extractor.run(overwrite_existing=args.clean)
        except DatasetError as exc:
            print(f"ERROR: the fingerprint of {extractor.dataset.name} stopped:\n{exc}", file=sys.stderr)
            return 1
        print(f"{fingerprint['dataset_name']}: {fingerprint['num_training_cases']} cases -> {extractor.output_file}")
    return 0


if __name__ == "__main__":
    sys.exit(extract_fingerprint_entry())
