"""Dataset103_NYUMets: NYUMets-Brain, one case per patient (the pre-treatment Gamma Knife study), with
baseline variables from the first Gamma Knife procedure and local failure, distant failure and
overall survival derived from the clinical tables.

Point -i at the download as it comes: the folder holding data/ and metadata/, or data/ itself::

    ROOT/data/imaging/patientId/<PatientID>/studyId/<StudyID>/{T1,CT1,T2,FLAIR,RTSTRUCT_MRI,
        RTSTRUCT_segmentation}.nii.gz        verified from public sources (official loader)
    ROOT/metadata/<date>_imaging.csv         PatientID, StudyID, ExpertAdjusted, RelativeTimepoint
                                             verified from public sources
    ROOT/metadata/<clinical tables>.csv      keyed by patient_identifier (verified); file names not
                                             confirmed: found by their columns (age_diagnosis ->
                                             patient-level; time_from_gk_days + num_tumor_progress /
                                             new_metastases -> time series; target_volume /
                                             margin_dose -> Gamma Knife details, one row per
                                             procedure); or name them (--patient-table ...)

- Studies are ordered by RelativeTimepoint (the study ids are random). Case = ``<pid>_<sid>`` of
  the segmented study at RelativeTimepoint <= 0 closest to 0 (``--study-rule gk``; what
  RelativeTimepoint counts is not confirmed: ``--study-rule earliest`` takes the earliest
  segmented study) that holds every selected sequence; a study lacking one is skipped (warning).
- Channels (``--sequences``, default ``T1c``): ``T1c`` = RTSTRUCT_MRI (the planning T1c) when the
  study has it, else CT1; or exactly ``RTSTRUCT_MRI`` / ``CT1``; plus ``T1``, ``T2``, ``FLAIR``.
  The first is the reference grid; the clinical column ``t1c_file`` says which file was used.
- Mask: RTSTRUCT_segmentation (PTVs warped with linear interpolation) thresholded at
  ``--mask-threshold`` (>= 0.5) -> label 1, warning per non-binary mask.
- Baseline (first Gamma Knife procedure, ordered by ``time_from_gk_days`` in the details table:
  not confirmed, ``--column procedure_order=NAME``): kps_at_gks, gk_target_volume,
  gk_margin_dose; patient level: age_diagnosis, primary_histology (codes 1-13, categorical),
  extracranial_disease_active (1 controlled -> 0, 2 active -> 1), num_tumors_init, rpa, prior_wbrt.
- Endpoints: local_failure (num_tumor_progress > 0 at a follow-up visit), distant_failure
  (new_metastases > 0), both within ``--horizon-days`` (default 365; 0 = ever), and os
  (os_months, os_event) from days_to_death_from_gk / death / total_fu_time. No leptomeningeal
  endpoint (no such column). Derivations: documentation/dataset_conversion.md.

Unknown values are warnings naming the case, column and value; absent optional columns are
warnings naming the column. Ends with the dataset verifier and the conversion report.

    python dataset_conversion/Dataset103_NYUMets.py -i ROOT [-o RAW] [--sequences T1c FLAIR]
        [--study-rule gk|earliest] [--mask-threshold 0.5] [--horizon-days 365]
        [--imaging-csv CSV] [--clinical-folder DIR] [--patient-table CSV] [--timeseries-table CSV]
        [--gk-table CSV] [--column KEY=NAME ...] [--overwrite]
"""

from __future__ import annotations

import sys
from pathlib import Path

from glmil_auto.dataset_conversion.nyumets import (
    DATASET_ID,
    DATASET_NAME,
    DEFAULT_HORIZON_DAYS,
    DEFAULT_MASK_THRESHOLD,
    convert_nyumets,
)
from glmil_auto.dataset_conversion.nyumets_layout import DEFAULT_SEQUENCES, SEQUENCES, STUDY_RULES
from glmil_auto.dataset_conversion.nyumets_tables import DEFAULT_COLUMNS
from glmil_auto.dataset_conversion.script_support import converter_parser, output_folder, parse_columns, run_conversion


def _add_table_arguments(parser) -> None:
    parser.add_argument("--imaging-csv", type=Path, default=None,
                        help="the imaging csv (default: the metadata csv with PatientID, StudyID, RelativeTimepoint)")
    parser.add_argument("--clinical-folder", type=Path, default=None,
                        help="folder searched for the clinical tables (default: the download's metadata/)")
    for role, what in (("patient", "the patient-level table"), ("timeseries", "the time series"),
                       ("gk", "the Gamma Knife details table")):
        parser.add_argument(f"--{role}-table", type=Path, default=None, help=f"{what} (default: found by its columns)")


def main(argv: list[str] | None = None) -> int:
    parser = converter_parser("Dataset103_NYUMets.py", __doc__, DATASET_ID)
    _add_table_arguments(parser)
    parser.add_argument("--sequences", nargs="+", choices=list(SEQUENCES), default=list(DEFAULT_SEQUENCES),
                        help="channels, the first is the reference grid (default: %(default)s)")
    parser.add_argument("--study-rule", choices=list(STUDY_RULES), default="gk",
                        help="gk: the segmented study at RelativeTimepoint <= 0 closest to 0; earliest: the "
                             "earliest segmented study (default: %(default)s)")
    parser.add_argument("--mask-threshold", type=float, default=DEFAULT_MASK_THRESHOLD,
                        help="mask voxels >= this are metastasis (default: %(default)s)")
    parser.add_argument("--horizon-days", type=float, default=DEFAULT_HORIZON_DAYS,
                        help="horizon of local and distant failure in days (0: ever during follow-up)")
    parser.add_argument("--column", action="append", default=[], metavar="KEY=NAME",
                        help=f"rename a column; keys: {', '.join(DEFAULT_COLUMNS)}")
    args = parser.parse_args(argv)
    horizon = args.horizon_days if args.horizon_days > 0 else None
    tables = {"patient": args.patient_table, "timeseries": args.timeseries_table, "gk": args.gk_table}
    return run_conversion(args, lambda: convert_nyumets(
        args.input, output_folder(args), imaging_csv=args.imaging_csv, clinical_folder=args.clinical_folder,
        tables=tables, sequences=tuple(args.sequences), study_rule=args.study_rule,
        mask_threshold=args.mask_threshold, horizon_days=horizon, columns=parse_columns(args.column),
        dataset_id=args.dataset_id, name=DATASET_NAME, overwrite=args.overwrite, progress=not args.no_progress))


if __name__ == "__main__":
    sys.exit(main())
