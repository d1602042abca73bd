"""Dataset104_BrainTRGammaKnife: Brain-TR-GammaKnife (TCIA, 47 patients; Gamma Knife radiosurgery of
brain metastases; DICOM MR + RTSTRUCT + RTDOSE per treatment course, lesion-level recurrence).

    python dataset_conversion/Dataset104_BrainTRGammaKnife.py -i DOWNLOAD [-o RAW] [--overwrite]
        [--horizon-months 12] [--table XLSX] [--channel T1c=REGEX] [--structures REGEX]
        [--mri-type VALUE=KIND ...] [--diagnosis VALUE=KIND ...]

Source layout: the TCIA download as the NBIA data retriever writes it. Rows marked [not confirmed]
were not checked against the real files (documentation/dicom_conversion.md has the full table)::

    DOWNLOAD/
      metadata.csv        Subject ID (GK_487), Study UID, Study Date, Modality, File Location
                          (./Brain-TR-GammaKnife/GK_487/<study>/<series>)    [verified]
      Brain-TR-GammaKnife/<Subject ID>/<study>/<series>/*.dcm  one MR, one RTSTRUCT and one RTDOSE
                          per study, no RTPLAN [verified]; folder names [not confirmed]: series are
                          found from File Location, else by a recursive search of the DICOM headers
      <workbook>.xlsx     the one .xlsx with the two sheets (file name [not confirmed]; --table)
          lesion_level    unique_pt_id, Treatment Course, Lesion #, Lesion Location,
                          Lesion Name in NRRD files, mri_type, duration_tx_to_imag (months),
                          Fractions    [verified; value vocabularies not confirmed]
          course_level    unique_pt_id, Course #, Diagnosis (Only want Mets), Primary Diagnosis,
                          Age at Diagnosis, Gender    [verified]

The NRRD version of the collection is not read; this converter reads the DICOM one.

- Case = one treatment course = one study with an RTSTRUCT; a patient's courses are numbered by
  study date and matched to ``Treatment Course`` / ``Course #``; case id ``<PatientID>``, or
  ``<PatientID>_<StudyDate>`` for patients with several converted courses; ``patient_column``
  keeps a patient's courses in one fold. Courses whose diagnosis is not a metastasis are skipped.
- ``local_failure`` (binary, ``any_lesion``) per lesion in lesionsTr.csv, at ``--horizon-months``
  (default 12; 0 = ever): a recurrence seen within the horizon = 1, a recurrence seen later = 0,
  no recurrence followed at least the horizon = 0, shorter follow-up = unknown; the case is 1 when
  any of its lesions failed, unknown when none failed and some lesion is unknown.
- Features: age, sex, primary, fractions, multi_fraction, n_lesions_treated and
  prescription_dose_gy (the smallest lesion D98 of the RTDOSE; there is no dose column).
- Lesion rows are tied to RTSTRUCT ROIs from ``Lesion Name in NRRD files`` and ``Lesion #``;
  doubtful and unmatched rows are warnings per patient, unmatched ones are left out.

Ends with the dataset verifier and the conversion report.
"""

from __future__ import annotations

import sys
from pathlib import Path

from glmil_auto.dataset_conversion.brain_tr_gammaknife import (
    DATASET_ID,
    DATASET_NAME,
    DEFAULT_CHANNEL,
    DEFAULT_STRUCTURES,
    convert_brain_tr_gammaknife,
    run,
)
from glmil_auto.dataset_conversion.brain_tr_tables import (
    DEFAULT_HORIZON_MONTHS,
    METASTASIS,
    NOT_RECURRED,
    OTHER_DIAGNOSIS,
    RECURRED,
    vocabulary_options,
)
from glmil_auto.dataset_conversion.script_support import converter_parser, name_value, output_folder


def main(argv: list[str] | None = None) -> int:
    parser = converter_parser("Dataset104_BrainTRGammaKnife.py", __doc__, DATASET_ID)
    parser.add_argument("--table", type=Path, default=None,
                        help="the clinical workbook (default: the one .xlsx in INPUT with both sheets)")
    parser.add_argument("--horizon-months", type=float, default=DEFAULT_HORIZON_MONTHS,
                        help="horizon of local_failure in months (default: %(default)s; 0: ever)")
    parser.add_argument("--channel", default="=".join(DEFAULT_CHANNEL), metavar="NAME=REGEX",
                        help="the MR channel and its SeriesDescription regex (default: %(default)s)")
    parser.add_argument("--structures", default=DEFAULT_STRUCTURES, help="ROI-name regex of the treated lesions")
    parser.add_argument("--mri-type", action="append", default=[], metavar="VALUE=KIND",
                        help=f"read this mri_type value as KIND ({RECURRED} or {NOT_RECURRED}); repeatable")
    parser.add_argument("--diagnosis", action="append", default=[], metavar="VALUE=KIND",
                        help=f"read this diagnosis as KIND ({METASTASIS}: converted, {OTHER_DIAGNOSIS}: skipped); "
                             "repeatable")
    args = parser.parse_args(argv)

    def convert():
        if args.horizon_months < 0:
            raise ValueError(f"--horizon-months must be >= 0 (0: ever), got {args.horizon_months:g}")
        return convert_brain_tr_gammaknife(
            args.input, output_folder(args), args.table, args.horizon_months if args.horizon_months > 0 else None,
            name_value(args.channel, "--channel"), args.structures,
            vocabulary_options(args.mri_type, (RECURRED, NOT_RECURRED), "--mri-type"),
            vocabulary_options(args.diagnosis, (METASTASIS, OTHER_DIAGNOSIS), "--diagnosis"),
            args.dataset_id, DATASET_NAME, args.overwrite, not args.no_progress)

    return run(args, convert)


if __name__ == "__main__":
    sys.exit(main())
