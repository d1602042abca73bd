"""Dataset101_UCSFBMSR: the UCSF Brain Metastases Stereotactic Radiosurgery MRI dataset (UCSF-BMSR) v1.3.

Download layout ([verified] = verified from public sources that read the real files,
[not confirmed] = not; details in documentation/dataset_conversion.md)::

    UCSF_BrainMetastases_v1.3/                                           [verified]
        TableS1_UCSF_BrainMetastases_SubjectInfo.xlsx  sheet RENAMED     [verified]
        UCSF_BrainMetastases_TRAIN/<SubjectID>/
            <SubjectID>_{T1pre,T1post,FLAIR,subtraction,seg}.nii.gz      [verified]
            <SubjectID>_BRaTS-seg.nii.gz   exams also in BraTS-METS      [verified]

- ``-i``: the download root, the TRAIN folder, or any folder with the ``<SubjectID>`` folders up
  to three levels below it.
- SubjectID = patient id + exam letter (``100101A``); exams of one patient share the prefix
  (``patient_id``, dataset.json ``"patient_column"``).
- ``--mask seg`` (default): the binary ``seg`` -> labels {background: 0, metastasis: 1},
  lesion_labels [1]; any other value stops the conversion naming the file.
  ``--mask brats``: ``<SubjectID>_BRaTS-seg.nii.gz`` -> labels {background: 0,
  non_enhancing_tumour_core: 1, surrounding_flair_hyperintensity: 2, enhancing_tumour: 3},
  lesion_labels [1, 3]; exams without that file are left out (a warning each); a BraTS mask
  whose tumour core misses the lesions of ``seg`` stops the conversion (its grid is not confirmed).
- Subject table: found below ``-i`` or in its parent (the TableS1 name first, then
  ``*SubjectInfo*``, then the only .xlsx/.csv in SOURCE), or ``--table``; sheet ``RENAMED`` (else
  the first sheet with SubjectID, warned), or ``--sheet``. Columns SubjectID, BraTS_ID, CancerType,
  Scanner Strength (Tesla) [verified]; Sex, Age, Prior Craniotomy/Biopsy/Resection [not
  confirmed]. The conversion prints which columns were found; each absent one is a warning
  naming it, each value that does not parse a warning naming the case, column and value.
  ``--column KEY=NAME`` renames one (keys: id, cancer_type, field_strength, sex, age,
  prior_surgery, brats_id).

Output ``RAW/Dataset101_UCSFBMSR``: channels 0 T1c (T1post, the reference grid), 1 T1 (T1pre),
2 FLAIR, 3 subtraction; clinicalTr.csv with case_id, patient_id and, when found, cancer_type,
field_strength_t, sex, age, prior_surgery (declared) and brats_id (not declared); no endpoints
(the dataset has no outcomes). Ends with the dataset verifier and the conversion report.

    python dataset_conversion/Dataset101_UCSFBMSR.py -i UCSF_BrainMetastases_v1.3 [-o RAW]
        [--table TABLE] [--sheet SHEET] [--mask seg|brats] [--column KEY=NAME ...] [--overwrite]
"""

from __future__ import annotations

import sys
from pathlib import Path

from glmil_auto.dataset_conversion.script_support import converter_parser, output_folder, parse_columns, run_conversion
from glmil_auto.dataset_conversion.ucsf_bmsr import COLUMN_KEYS, DATASET_ID, DATASET_NAME, MASKS, convert_ucsf_bmsr


def main(argv: list[str] | None = None) -> int:
    parser = converter_parser("Dataset101_UCSFBMSR.py", __doc__, DATASET_ID)
    parser.add_argument("--table", type=Path, default=None,
                        help="subject table (default: TableS1_UCSF_BrainMetastases_SubjectInfo.xlsx, searched below "
                             "SOURCE and in its parent)")
    parser.add_argument("--sheet", default=None, help="sheet of the subject table (default: RENAMED)")
    parser.add_argument("--mask", choices=sorted(MASKS), default="seg",
                        help="seg: the binary masks (default); brats: the <SubjectID>_BRaTS-seg.nii.gz masks "
                             "(BraTS labels), exams without one left out")
    parser.add_argument("--column", action="append", default=[], metavar="KEY=NAME",
                        help=f"name a table column; keys: {', '.join(COLUMN_KEYS)}")
    args = parser.parse_args(argv)
    return run_conversion(args, lambda: convert_ucsf_bmsr(
        args.input, output_folder(args), args.table, args.dataset_id, DATASET_NAME, args.overwrite,
        not args.no_progress, sheet=args.sheet, mask=args.mask, columns=parse_columns(args.column)))


if __name__ == "__main__":
    sys.exit(main())
