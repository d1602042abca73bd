"""What every script in ``dataset_conversion/`` shares: the common arguments and the exit codes.

Exit codes: 0 converted and verified (warnings printed); 1 bad source data (every problem listed,
one line each, naming the case and the file); 2 a problem of the whole run (source folder
missing, output dataset exists without ``--overwrite``, bad arguments).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from glmil_auto.dataset.problems import DatasetError


def converter_parser(prog: str, description: str, dataset_id: int) -> argparse.ArgumentParser:
    """``-i SOURCE -o RAW [-d ID] [--overwrite] [--no_progress]``; scripts add their own options."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--input", required=True, type=Path, help="the downloaded dataset folder")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="raw datasets folder (default: $glmil_raw, else ./glmil_data/raw)")
    parser.add_argument("-d", "--dataset_id", type=int, default=dataset_id, help="dataset id (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def output_folder(args: argparse.Namespace) -> Path:
    from glmil_auto.paths import raw_folder

    return args.output if args.output is not None else raw_folder()


def run_conversion(args: argparse.Namespace, convert: Callable[[], tuple[Path, list]],
                   source_errors: tuple[type[Exception], ...] = (DatasetError,),
                   run_errors: tuple[type[Exception], ...] = (FileExistsError, ValueError)) -> int:
    """Run ``convert`` and turn its outcome into messages and an exit code (see module docstring),
    ending with the conversion report of the written folder. ``source_errors`` are bad source data
    (exit 1; a converter adds its own, for example the DICOM converters' errors that name the
    patient), ``run_errors`` problems of the whole run (exit 2); the first match wins."""
    from glmil_auto.dataset_conversion.conversion_report import conversion_report

    if not args.input.is_dir():
        print(f"ERROR: source folder {args.input} does not exist", file=sys.stderr)
        return 2
    try:
        folder, notes = convert()
    except source_errors as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except run_errors as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(str(note), file=sys.stderr)
    print("\n".join(conversion_report(folder)))
    print(f"Wrote and verified {folder}")
    return 0


def parse_columns(pairs: list[str]) -> dict[str, str]:
    """``["id=Patient", ...]`` (from ``--column KEY=NAME``) -> ``{"id": "Patient"}``; ValueError when
    malformed (raised inside the conversion, so it becomes exit code 2)."""
    out = {}
    for text in pairs:
        key, sep, name = text.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise ValueError(f"--column: expected KEY=NAME, got {text!r}")
        out[key.strip()] = name.strip()
    return out


def add_declaration_arguments(parser: argparse.ArgumentParser) -> None:
    """``--feature COLUMN=TYPE``, ``--binary-endpoint COLUMN``, ``--survival-endpoint NAME=TIME,EVENT``
    and ``--group-column COLUMN``: what the converted dataset.json declares of the clinical table."""
    from glmil_auto.dataset.dataset_json import CLINICAL_FEATURE_TYPES

    parser.add_argument("--feature", action="append", default=[], metavar="COLUMN=TYPE",
                        help=f"declare a clinical feature, TYPE in {list(CLINICAL_FEATURE_TYPES)}; repeatable")
    parser.add_argument("--binary-endpoint", action="append", default=[], metavar="COLUMN",
                        help="declare a binary endpoint (column of 0/1, empty = unknown); repeatable")
    parser.add_argument("--survival-endpoint", action="append", default=[], metavar="NAME=TIME,EVENT",
                        help="declare a survival endpoint from a time and an event column; repeatable")
    parser.add_argument("--group-column", default=None,
                        help="column with the centre or scanner (dataset.json group_column)")


def declarations(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``(clinical_features, endpoints)`` from :func:`add_declaration_arguments`' options; ValueError
    (exit code 2) for a malformed option, an unknown type or an unsafe name, or declarations
    without ``--clinical`` / ``--clinical`` without ``--patient-column``."""
    from glmil_auto.dataset.dataset_json import CLINICAL_FEATURE_TYPES

    pair, safe = name_value, safe_name
    features = {}
    for text in args.feature:
        column, kind = pair(text, "--feature")
        if kind not in CLINICAL_FEATURE_TYPES:
            raise ValueError(f"--feature {text!r}: type must be one of {list(CLINICAL_FEATURE_TYPES)}")
        features[safe(column, "clinical feature")] = kind
    endpoints: dict[str, dict[str, str]] = {safe(c, "endpoint"): {"type": "binary"} for c in args.binary_endpoint}
    for text in args.survival_endpoint:
        name, columns = pair(text, "--survival-endpoint")
        time, found, event = columns.partition(",")
        if not found or not time.strip() or not event.strip():
            raise ValueError(f"--survival-endpoint must look like NAME=TIME,EVENT, got {text!r}")
        endpoints[safe(name, "endpoint")] = {"type": "survival", "time": time.strip(), "event": event.strip()}
    if (features or endpoints or args.group_column) and args.clinical is None:
        raise ValueError("--feature, --*-endpoint and --group-column need --clinical")
    if args.clinical is not None and not args.patient_column:
        raise ValueError("--clinical needs --patient-column")
    return features, endpoints


def name_value(text: str, what: str) -> tuple[str, str]:
    """``"NAME=VALUE"`` -> ``("NAME", "VALUE")``; ValueError naming the option ``what`` otherwise."""
    name, found, value = text.partition("=")
    if not found or not name.strip() or not value.strip():
        raise ValueError(f"{what} must look like NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def safe_name(name: str, what: str) -> str:
    """``name`` when it can become a file or column name (``safe_names``), else ValueError."""
    from glmil_auto.dataset.safe_names import unsafe_reason

    reason = unsafe_reason(name)
    if reason:
        raise ValueError(f"{what} {name!r} {reason}")
    return name
