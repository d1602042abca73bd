"""Command line: ``glmil_generate_synthetic`` (and dataset_conversion/Dataset001_SynthBrainMets.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glmil_auto.paths import raw_folder
from glmil_auto.synthetic.centres import MAX_CENTRES, SIZE_PRESETS


def _size(value: str) -> str | float:
    if value in SIZE_PRESETS:
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be one of {sorted(SIZE_PRESETS)} or a spacing factor") from None


def build_parser() -> argparse.ArgumentParser:
    presets = ", ".join(f"{k}={v:g}" for k, v in SIZE_PRESETS.items())
    p = argparse.ArgumentParser(
        prog="glmil_generate_synthetic",
        description="Generate the synthetic multi-centre brain-metastasis SRS cohort (raw dataset + truth file).",
    )
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="raw folder to write into (default: $glmil_raw, else ./glmil_data/raw)")
    p.add_argument("-ntr", "--n_train", type=int, default=120, help="training cases (imagesTr), default 120")
    p.add_argument("-nts", "--n_test", type=int, default=40, help="external-centre cases (imagesTs), default 40")
    p.add_argument("-nc", "--n_centres", type=int, default=4,
                   help=f"centres including the external one (2..{MAX_CENTRES}), default 4")
    p.add_argument("-s", "--size", type=_size, default="demo",
                   help=f"preset ({presets}) or a spacing factor: spacings are multiplied by it, "
                        "anatomy and lesions keep their size in mm; default demo")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-np", "--num_processes", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("-d", "--dataset_id", type=int, default=1, help="dataset id (default 1)")
    p.add_argument("--name", default="SynthBrainMets", help="dataset name (default SynthBrainMets)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--no-lesion-table", "--no_lesion_table", dest="no_lesion_table", action="store_true",
                   help="do not write lesionsTr.csv / lesionsTs.csv (the lesion-level local failure), "
                        "for example to compare training with and without it")
    p.add_argument("--unlabelled", action="store_true",
                   help="write the cohort without outcomes (no endpoints in dataset.json, no outcome columns, "
                        "no lesion tables; same images and truth file), as extra data for self-supervised pretraining")
    return p


def generate_synthetic_entry(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from glmil_auto.synthetic.cohort import generate_synthetic_dataset
    from glmil_auto.synthetic.truth import truth_path

    raw = args.output if args.output is not None else raw_folder()
    try:
        folder = generate_synthetic_dataset(
            raw,
            n_train=args.n_train,
            n_test=args.n_test,
            n_centres=args.n_centres,
            size=args.size,
            seed=args.seed,
            num_processes=args.num_processes,
            dataset_id=args.dataset_id,
            dataset_name=args.name,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            lesion_table=not args.no_lesion_table,
            unlabelled=args.unlabelled,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"glmil_generate_synthetic: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {folder}")
    print(f"truth {truth_path(folder)}")


if __name__ == "__main__":
    generate_synthetic_entry()
