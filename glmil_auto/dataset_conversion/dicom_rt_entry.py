"""``glmil_convert_dicom_rt``: DICOM MR series + RTSTRUCT (+ a clinical CSV) -> a raw dataset.

    glmil_convert_dicom_rt -i DICOM_FOLDER -o RAW_FOLDER -d 500 -n MyCentre \\
        --channel T1c='t1.*(post|gd|\\+c)' --channel FLAIR=flair --structures '^GTV' \\
        --clinical outcomes.csv --patient-column MRN \\
        --feature age=numeric --feature primary=categorical \\
        --binary-endpoint local_failure --survival-endpoint os=os_months,os_event \\
        --lesion-outcomes lesions.csv --lesion-patient-column MRN --lesion-date-column date

Exit codes: 0 converted and verified; 1 the input has problems (every one printed, one line each,
naming patient, file and problem; nothing is written when they are found before conversion);
2 bad usage (bad option, bad regular expression, missing input folder, existing output without
--overwrite).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from glmil_auto.dataset.problems import DatasetError
from glmil_auto.dataset_conversion.script_support import add_declaration_arguments, declarations, name_value, safe_name
from glmil_auto.dataset_conversion.dicom_errors import DicomConversionError

ROI_COLUMN = "roi_name"  # lesion_outcome_table.ROI_COLUMN, repeated to keep --help free of heavy imports
PATIENT_COLUMN = "patient_id"


class UsageError(ValueError):
    """A bad option value (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glmil_convert_dicom_rt",
        description="Convert a folder of DICOM studies (MR series + an RTSTRUCT with the lesion contours) and a "
        "clinical CSV into a glmil_auto raw dataset RAW_FOLDER/DatasetID_NAME. See documentation/dicom_conversion.md.")
    parser.add_argument("-i", "--input", required=True, type=Path, help="folder with the DICOM files (searched recursively)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="raw folder (usually $glmil_raw)")
    parser.add_argument("-d", "--dataset_id", required=True, type=int, help="dataset id, 0-999")
    parser.add_argument("-n", "--name", required=True, help="dataset name (letters, digits, _ and -)")
    parser.add_argument("--channel", action="append", required=True, metavar="NAME=REGEX",
                        help="a channel and the regular expression its SeriesDescription matches (case-insensitive, "
                        "re.search); repeat for every channel, in channel order")
    parser.add_argument("--structures", required=True, metavar="REGEX",
                        help="regular expression on ROI names selecting the lesion structures (case-insensitive), "
                        "for example '^(GTV|PTV)' or 'met|target'")
    parser.add_argument("--clinical", type=Path, help="CSV with one row per patient (or per patient and study)")
    parser.add_argument("--patient-column", help="column of --clinical holding the DICOM PatientID")
    parser.add_argument("--date-column", help="column of --clinical with the study date, for several studies per patient")
    add_declaration_arguments(parser)
    _add_lesion_arguments(parser)
    parser.add_argument("--register", action="store_true",
                        help="rigidly register channels whose FrameOfReferenceUID differs from the reference series")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bars")
    return parser


def _add_lesion_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "lesion-level outcomes", "a CSV with one row per treated lesion (patient, ROI name, one 0/1 column per lesion "
        "endpoint, optional <endpoint>_time); written to lesionsTr.csv with a point inside each lesion, and each "
        "endpoint declared with aggregation any_lesion")
    group.add_argument("--lesion-outcomes", type=Path, metavar="CSV", help="the lesion table")
    group.add_argument("--lesion-patient-column", metavar="COL",
                       help="its column with the DICOM PatientID (default: --patient-column, else patient_id)")
    group.add_argument("--roi-column", default=ROI_COLUMN, metavar="COL",
                       help="its column with the ROI name of the lesion in the RTSTRUCT (default: %(default)s)")
    group.add_argument("--lesion-date-column", metavar="COL",
                       help="its column with the study date, needed when a patient has several converted studies")
    group.add_argument("--lesion-endpoint", action="append", default=None, metavar="COL",
                       help="a lesion endpoint column (repeatable; default: every column other than the patient, "
                       "ROI, date and <endpoint>_time columns)")


def _lesion_options(args: argparse.Namespace) -> dict:
    if args.lesion_outcomes is None:
        given = [o for o, v in (("--lesion-patient-column", args.lesion_patient_column),
                                ("--lesion-date-column", args.lesion_date_column),
                                ("--lesion-endpoint", args.lesion_endpoint)) if v]
        if given or args.roi_column != ROI_COLUMN:
            raise UsageError(f"{given or ['--roi-column']} need --lesion-outcomes")
        return {}
    if not args.lesion_outcomes.is_file():
        raise UsageError(f"lesion table {args.lesion_outcomes} does not exist")
    return {"path": args.lesion_outcomes, "patient_column": args.lesion_patient_column or args.patient_column
            or PATIENT_COLUMN, "roi_column": args.roi_column, "date_column": args.lesion_date_column,
            "endpoints": args.lesion_endpoint}


def _options(args: argparse.Namespace) -> dict:
    channels = []
    for text in args.channel:
        try:
            name, regex = name_value(text, "--channel")
            channels.append((safe_name(name, "channel name"), regex))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    for _, regex in channels + [("structures", args.structures)]:
        try:
            re.compile(regex)
        except re.error as exc:
            raise UsageError(f"bad regular expression {regex!r}: {exc}") from exc
    try:
        features, endpoints = declarations(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not args.input.is_dir():
        raise UsageError(f"input folder {args.input} does not exist")
    if args.clinical is not None and not args.clinical.is_file():
        raise UsageError(f"clinical table {args.clinical} does not exist")
    return {"channels": channels, "features": features, "endpoints": endpoints, "lesions": _lesion_options(args)}


def convert_dicom_rt_entry(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code (0 ok, 1 bad input, 2 bad usage)."""
    from glmil_auto.dataset_conversion.dicom_clinical_join import read_clinical_csv
    from glmil_auto.dataset_conversion.dicom_rt_conversion import convert_dicom_rt
    from glmil_auto.dataset_conversion.lesion_outcome_table import read_lesion_outcomes_csv

    args = build_parser().parse_args(argv)
    try:
        options = _options(args)
    except UsageError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    extra = {"group_column": args.group_column} if args.group_column else {}
    try:
        clinical = read_clinical_csv(args.clinical) if args.clinical is not None else None
        lesions = read_lesion_outcomes_csv(**options["lesions"]) if options["lesions"] else None
        result = convert_dicom_rt(
            args.input, args.output, args.dataset_id, args.name, options["channels"], args.structures,
            clinical=clinical, patient_column=args.patient_column, date_column=args.date_column,
            clinical_features=options["features"], endpoints=options["endpoints"], register=args.register,
            overwrite=args.overwrite, progress=not args.no_progress, clinical_source=args.clinical,
            lesion_outcomes=lesions, **extra)
    except (DicomConversionError, DatasetError) as exc:
        for line in str(exc).splitlines():
            print(line, file=sys.stderr)
        return 1
    except (FileExistsError, ValueError) as exc:  # existing output, bad id or name (RawDatasetWriter)
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(warning, file=sys.stderr)
    print(f"Wrote {len(result.cases)} case(s) to {result.folder} (verified)")
    return 0


if __name__ == "__main__":
    sys.exit(convert_dicom_rt_entry())
