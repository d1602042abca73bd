"""The dataset fingerprint (``glmil_extract_fingerprint``): what the planner knows about a dataset.

Public API:
    DatasetFingerprintExtractor(dataset, num_processes=None, progress=True, output_folder=None)
        .run(overwrite_existing=False) -> dict, .compute() -> dict, .output_file
    extract_fingerprint(dataset, num_processes=None, overwrite_existing=False, progress=True) -> dict
    FINGERPRINT_VERSION, FINGERPRINT_FILE

The keys and how the nnU-Net-compatible ones were checked against nnU-Net v2 are documented in
documentation/fingerprint.md.
"""

from glmil_auto.experiment_planning.fingerprint.extractor import (
    FINGERPRINT_FILE,
    FINGERPRINT_VERSION,
    DatasetFingerprintExtractor,
    extract_fingerprint,
)

__all__ = ["FINGERPRINT_FILE", "FINGERPRINT_VERSION", "DatasetFingerprintExtractor", "extract_fingerprint"]
