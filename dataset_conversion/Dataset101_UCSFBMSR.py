"""Dataset101_UCSFBMSR: the UCSF Brain Metastases Stereotactic Radiosurgery MRI dataset (UCSF-BMSR).

Expected source layout (as published; the data could not be downloaded where this script was
written, so check it against your copy)::

    SOURCE/<SubjectID>/<SubjectID>_{T1pre,T1post,FLAIR,subtraction,seg}.nii.gz
    SOURCE/<subject table>.csv or .xlsx   (or pass --table)

- SubjectID = patient id + exam letter (``100101A``); exams of one patient share the prefix.
- ``seg``: binary, 0 background, 1 metastasis -> labels {background: 0, metastasis: 1},
  lesion_labels [1]. Any other value stops the conversion naming the file.
- Subject table columns: SubjectID, Sex, Age, CancerType, Scanner Strength (Tesla),
  Prior Craniotomy/Biopsy/Resection, BraTS_ID.

Output ``RAW/Dataset101_UCSFBMSR``: channels 0 T1c (T1post, the reference grid), 1 T1 (T1pre),
2 FLAIR, 3 subtraction; clinicalTr.csv with case_id, patient_id, sex, age, cancer_type,
field_strength_t, prior_surgery (declared) and brats_id (not declared); dataset.json
``"patient_column": "patient_id"``; no endpoints (the dataset has no outcomes). Ends with the
dataset verifier.

    python dataset_conversion/Dataset101_UCSFBMSR.py -i SOURCE [-o RAW] [--table TABLE] [--overwrite]
"""

from __future__ import annotations

import sys
from pathlib import Path

from glmil_auto.dataset_conversion.script_support import converter_parser, output_folder, run_conversion
from glmil_auto.dataset_conversion.ucsf_bmsr import DATASET_ID, DATASET_NAME, convert_ucsf_bmsr


def find_table(source: Path) -> Path | None:
    """The only .csv / .xlsx file directly in SOURCE, if there is exactly one."""
    found = sorted(p for p in source.iterdir() if p.suffix.lower() in (".csv", ".xlsx") and p.is_file())
    return found[0] if len(found) == 1 else None


def main(argv: list[str] | None = None) -> int:
    parser = converter_parser("Dataset101_UCSFBMSR.py", __doc__, DATASET_ID)
    parser.add_argument("--table", type=Path, default=None,
                        help="subject table (default: the only .csv/.xlsx file in SOURCE; none: no clinical variables)")
    args = parser.parse_args(argv)
    return run_conversion(args, lambda: convert_ucsf_bmsr(
        args.input, output_folder(args), args.table or find_table(args.input), args.dataset_id, DATASET_NAME,
        args.overwrite, not args.no_progress))


if __name__ == "__main__":
    sys.exit(main())
