"""Dataset103_NYUMets: NYUMets-Brain, one case per patient (the pre-treatment Gamma Knife study) with
local failure, distant failure and overall survival derived from the clinical CSVs.

Expected source layout (from the published description; the data could not be downloaded where
this script was written, so check file and column names against your copy)::

    SOURCE/imaging/patientId/<pid>/studyId/<sid>/{CT1,T1,T2,FLAIR,RTSTRUCT_segmentation}.nii.gz
    SOURCE/individual.csv   patient_id, age_diagnosis, primary_histology, extracranial_disease_status,
                            num_tumors_init, rpa, prior_wbrt, days_to_death_from_gk, total_fu_time
    SOURCE/timeseries.csv   patient_id, study_id, visit_class, time_from_gk_days, kps_at_gks,
                            num_tumor_progress, new_metastases, death
    SOURCE/gkdetails.csv    patient_id, target_volume, margin_dose

The column names are ASSUMED from the published data dictionary [check]; rename any with
``--column KEY=NAME`` (keys in glmil_auto/dataset_conversion/nyumets.py, DEFAULT_COLUMNS).

- Case = ``<pid>_<sid>`` of the pre-treatment study (segmented, visit time <= 0 closest to 0);
  ``patient_id`` column, dataset.json ``"patient_column": "patient_id"``.
- Mask: non-zero voxels of RTSTRUCT_segmentation -> label 1 (metastasis), lesion_labels [1].
- Channels (``--sequences``, default CT1 T1 T2 FLAIR): CT1 -> T1c (reference grid), T1, T2, FLAIR.
- Endpoints: local_failure (num_tumor_progress > 0 at a follow-up visit), distant_failure
  (new_metastases > 0), both within ``--horizon-days`` (default 365; 0 = ever), and os
  (os_months, os_event) from days_to_death_from_gk / death / total_fu_time. Derivations:
  documentation/dataset_conversion.md and glmil_auto/dataset_conversion/nyumets_outcomes.py.

Ends with the dataset verifier.

    python dataset_conversion/Dataset103_NYUMets.py -i SOURCE [-o RAW] [--clinical-folder DIR]
        [--sequences CT1 FLAIR] [--horizon-days 365] [--column KEY=NAME ...] [--overwrite]
"""

from __future__ import annotations

import sys
from pathlib import Path

from glmil_auto.dataset_conversion.nyumets import (
    DATASET_ID,
    DATASET_NAME,
    DEFAULT_COLUMNS,
    DEFAULT_HORIZON_DAYS,
    DEFAULT_SEQUENCES,
    SEQUENCES,
    convert_nyumets,
)
from glmil_auto.dataset_conversion.script_support import converter_parser, output_folder, parse_columns, run_conversion


def main(argv: list[str] | None = None) -> int:
    parser = converter_parser("Dataset103_NYUMets.py", __doc__, DATASET_ID)
    parser.add_argument("--clinical-folder", type=Path, default=None,
                        help="folder holding individual.csv, timeseries.csv, gkdetails.csv (default: SOURCE)")
    parser.add_argument("--sequences", nargs="+", choices=list(SEQUENCES), default=list(DEFAULT_SEQUENCES),
                        help="channels, the first is the reference grid (default: %(default)s)")
    parser.add_argument("--horizon-days", type=float, default=DEFAULT_HORIZON_DAYS,
                        help="horizon of local and distant failure in days (0: ever during follow-up)")
    parser.add_argument("--column", action="append", default=[], metavar="KEY=NAME",
                        help=f"rename an assumed column; keys: {', '.join(DEFAULT_COLUMNS)}")
    args = parser.parse_args(argv)
    horizon = args.horizon_days if args.horizon_days > 0 else None
    return run_conversion(args, lambda: convert_nyumets(
        args.input, output_folder(args), args.clinical_folder, tuple(args.sequences), horizon,
        parse_columns(args.column), args.dataset_id, DATASET_NAME, args.overwrite, not args.no_progress))


if __name__ == "__main__":
    sys.exit(main())
