"""Dataset102_BraTSMETS: BraTS-METS 2023 and Pretreat-MetsToBrain-Masks (same file layout).

Download layouts ([verified] = verified from public sources that read the real files,
[not confirmed] = not; details in documentation/dataset_conversion.md)::

    .../BraTS-MET-XXXXX-YYY/BraTS-MET-XXXXX-YYY-{t1c,t1n,t2f,t2w,seg}.nii.gz       [verified]
    PKG - Pretreat-MetsToBrain-Masks/Pretreat-MetsToBrain-Masks/BraTS-MET-XXXXX-000/ [verified]
    Pretreat-MetsToBrain-Masks_clin_20230918.xlsx: sheet Data, BraTS_MET_ID, Death  [verified];
        its place, the survival-time and demographic column names                  [not confirmed]
    ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData{,_Additional}/BraTS-MET-...    [verified]

- ``-i``: any folder with the case folders up to three levels below it (the package folder, its
  inner folder, a parent of the main and ``_Additional`` training folders). A case id in two
  folders is an error naming both.
- XXXXX = patient, YYY = time point: ``patient_id`` = ``BraTS-MET-XXXXX``, dataset.json
  ``"patient_column": "patient_id"``.
- ``seg`` labels: 1 non-enhancing tumour core, 2 surrounding FLAIR hyperintensity (SNFH,
  oedema), 3 enhancing tumour -> labels {background: 0, non_enhancing_tumour_core: 1,
  surrounding_flair_hyperintensity: 2, enhancing_tumour: 3}, lesion_labels [1, 3] (label 2 is
  kept in the mask as context, never part of a lesion instance).
- Folders without ``seg`` (challenge validation/test sets) are skipped with a warning.
- Clinical table: ``--clinical``, else found below ``-i`` or in its parent (the exact name, then
  ``*_clin_*.xlsx``); none (BraTS 2023): no clinical columns, no endpoint. Sheet ``Data`` (or
  ``--sheet``). OS from ``Death`` (blank = unknown, warned per case) and the survival time, whose
  column name is not confirmed: when none of the expected names is in the table the conversion
  stops with one line listing the table's columns; name it with ``--column os_time=NAME``; its
  unit comes from the name (days, months, years) or ``--os-time-unit``; ``--no-survival``
  converts without OS. Age, sex, primary are read when found (``--column age=NAME`` etc.).

Output ``RAW/Dataset102_BraTSMETS``: channels 0 T1c (t1c, reference grid), 1 T1 (t1n), 2 FLAIR
(t2f), 3 T2 (t2w); clinicalTr.csv with case_id, patient_id and, when found, age, sex, primary,
os_months, os_event. Ends with the dataset verifier and the conversion report.

    python dataset_conversion/Dataset102_BraTSMETS.py -i "PKG - Pretreat-MetsToBrain-Masks" [-o RAW]
        [--clinical TABLE] [--sheet SHEET] [--column KEY=NAME ...] [--os-time-unit days|months|years]
        [--no-survival] [--overwrite]
"""

from __future__ import annotations

import sys
from pathlib import Path

from glmil_auto.dataset_conversion.brats_clinical import COLUMN_KEYS, DAYS_PER
from glmil_auto.dataset_conversion.brats_mets import DATASET_ID, DATASET_NAME, convert_brats_mets
from glmil_auto.dataset_conversion.script_support import converter_parser, output_folder, parse_columns, run_conversion


def main(argv: list[str] | None = None) -> int:
    parser = converter_parser("Dataset102_BraTSMETS.py", __doc__, DATASET_ID)
    parser.add_argument("--clinical", type=Path, default=None,
                        help="clinical table (default: Pretreat-MetsToBrain-Masks_clin_*.xlsx, searched below SOURCE "
                             "and in its parent; none: no clinical columns)")
    parser.add_argument("--sheet", default=None, help="sheet of the clinical table (default: Data)")
    parser.add_argument("--column", action="append", default=[], metavar="KEY=NAME",
                        help=f"name a table column; keys: {', '.join(COLUMN_KEYS)}")
    parser.add_argument("--os-time-unit", choices=list(DAYS_PER), default=None,
                        help="unit of the survival-time column (default: from its name)")
    parser.add_argument("--no-survival", action="store_true", help="convert without the OS endpoint")
    args = parser.parse_args(argv)
    return run_conversion(args, lambda: convert_brats_mets(
        args.input, output_folder(args), args.clinical, parse_columns(args.column), args.dataset_id, DATASET_NAME,
        args.overwrite, not args.no_progress, sheet=args.sheet, survival=not args.no_survival,
        os_time_unit=args.os_time_unit))


if __name__ == "__main__":
    sys.exit(main())
