"""``glmil_convert_folder``: one folder per patient (NIfTI) -> a raw dataset. See
documentation/dataset_conversion.md.

Exit codes: 0 converted and verified; 1 bad data (every problem listed, one line each, naming the
patient folder and file); 2 a problem of the whole run (bad arguments, source folder missing,
output dataset exists without ``--overwrite``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from glmil_auto.dataset_conversion.file_patterns import parse_pattern
from glmil_auto.dataset_conversion.resample_to_reference import INTERPOLATORS
from glmil_auto.dataset_conversion.script_support import add_declaration_arguments, declarations, run_conversion


def _key_value(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"{what}: expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glmil_convert_folder",
        description="Convert SOURCE/<patient>/<files> (NIfTI or any format SimpleITK reads) into "
        "RAW/DatasetNNN_NAME. The first --channel is the reference grid; other channels and the mask "
        "are resampled onto it when their grid differs. Patterns are globs, or regular expressions "
        "with the prefix 're:'; each must match exactly one file per patient folder.")
    p.add_argument("-i", "--input", required=True, type=Path, help="folder holding one sub-folder per patient")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="raw datasets folder (default: $glmil_raw, else ./glmil_data/raw)")
    p.add_argument("-d", "--dataset_id", required=True, type=int, help="dataset id, 0-999")
    p.add_argument("-n", "--name", required=True, help="dataset name (letters, digits, '_' and '-')")
    p.add_argument("--channel", action="append", required=True, metavar="NAME=PATTERN",
                   help="a channel and its file pattern, e.g. T1c='*t1c*.nii.gz'; repeat in channel order")
    p.add_argument("--mask", required=True, metavar="PATTERN", help="lesion mask file pattern, e.g. '*seg*.nii.gz'")
    p.add_argument("--labels", nargs="+", default=["background=0", "metastasis=1"], metavar="NAME=VALUE",
                   help="mask labels (default: background=0 metastasis=1)")
    p.add_argument("--lesion-labels", nargs="+", type=int, default=None, metavar="VALUE",
                   help="label values forming the lesion mask (default: every non-zero label)")
    p.add_argument("--clinical", type=Path, default=None, help="clinical CSV, one row per patient")
    p.add_argument("--patient-column", default=None, help="column of --clinical holding the patient folder names")
    add_declaration_arguments(p)
    p.add_argument("--interpolation", choices=[k for k in INTERPOLATORS if k != "nearest"], default="linear",
                   help="interpolation for resampled channels (default: linear)")
    p.add_argument("--skip-incomplete", action="store_true",
                   help="skip (with a warning) patient folders where a pattern matches no file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def convert_folder_entry(argv: list[str] | None = None) -> int:
    """Command-line entry point of ``glmil_convert_folder``; returns the exit code."""
    args = _parser().parse_args(argv)
    from glmil_auto.dataset_conversion.folder_conversion import convert_folder  # heavy imports after parsing
    from glmil_auto.paths import raw_folder

    try:
        channels = [parse_pattern(c) for c in args.channel]
        mask = parse_pattern(f"mask={args.mask}")
        labels = {k: int(v) for k, v in (_key_value(t, "--labels") for t in args.labels)}
        features, endpoints = declarations(args)
        if not args.input.is_dir():
            raise ValueError(f"source folder {args.input} does not exist")
    except ValueError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    lesion_labels = args.lesion_labels or sorted(v for v in labels.values() if v != 0)
    return run_conversion(args, lambda: convert_folder(
        args.input, args.output or raw_folder(), args.dataset_id, args.name, channels, mask, labels,
        lesion_labels, clinical=args.clinical, patient_column=args.patient_column, clinical_features=features,
        endpoints=endpoints, group_column=args.group_column, interpolation=args.interpolation,
        skip_incomplete=args.skip_incomplete, overwrite=args.overwrite, progress=not args.no_progress))


if __name__ == "__main__":
    sys.exit(convert_folder_entry())
