"""Dataset102_BraTSMETS: BraTS-METS 2023 and Pretreat-MetsToBrain-Masks (same file layout).

Expected source layout (as published; the data could not be downloaded where this script was
written, so check it against your copy)::

    SOURCE/BraTS-MET-XXXXX-YYY/BraTS-MET-XXXXX-YYY-{t1c,t1n,t2f,t2w,seg}.nii.gz

- XXXXX = patient, YYY = time point: ``patient_id`` = ``BraTS-MET-XXXXX``, dataset.json
  ``"patient_column": "patient_id"``.
- ``seg`` labels: 1 necrotic core, 2 oedema (peritumoural, SNFH), 3 enhancing tumour ->
  labels {background: 0, necrotic_core: 1, oedema: 2, enhancing_tumour: 3}, lesion_labels [1, 3]
  (oedema is kept in the mask as context, never part of a lesion instance).
- Folders without ``seg`` (challenge validation/test sets) are skipped with a warning.
- ``--clinical TABLE`` (Pretreat-MetsToBrain-Masks): a CSV/XLSX with, by default, the ASSUMED
  columns BraTS_MET_ID, Age, Sex, Primary, OS_days, Deceased [check the real file; rename with
  ``--column id=... --column os_time=...``]. Only columns present are declared.

Output ``RAW/Dataset102_BraTSMETS``: channels 0 T1c (t1c, reference grid), 1 T1 (t1n), 2 FLAIR
(t2f), 3 T2 (t2w). Ends with the dataset verifier.

    python dataset_conversion/Dataset102_BraTSMETS.py -i SOURCE [-o RAW] [--clinical TABLE]
        [--column KEY=NAME ...] [--overwrite]
"""

from __future__ import annotations

import sys
from pathlib import Path

from glmil_auto.dataset_conversion.brats_mets import DATASET_ID, DATASET_NAME, DEFAULT_COLUMNS, convert_brats_mets
from glmil_auto.dataset_conversion.script_support import converter_parser, output_folder, parse_columns, run_conversion


def main(argv: list[str] | None = None) -> int:
    parser = converter_parser("Dataset102_BraTSMETS.py", __doc__, DATASET_ID)
    parser.add_argument("--clinical", type=Path, default=None, help="clinical table (CSV or XLSX), optional")
    parser.add_argument("--column", action="append", default=[], metavar="KEY=NAME",
                        help=f"rename an assumed table column; keys: {', '.join(DEFAULT_COLUMNS)}")
    args = parser.parse_args(argv)
    return run_conversion(args, lambda: convert_brats_mets(
        args.input, output_folder(args), args.clinical, parse_columns(args.column), args.dataset_id, DATASET_NAME,
        args.overwrite, not args.no_progress))


if __name__ == "__main__":
    sys.exit(main())
