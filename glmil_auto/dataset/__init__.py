"""The raw dataset contract: reading, typing and verification.

See documentation/raw_dataset_format.md for the folder layout and ``dataset.json`` keys.
"""

from glmil_auto.dataset.clinical_table import (
    binary_targets,
    read_clinical_table,
    survival_structured_array,
    survival_targets,
)
from glmil_auto.dataset.dataset_json import DatasetSpec, Endpoint, load_dataset_json, spec_from_dict
from glmil_auto.dataset.image_io import Geometry, geometry_mismatches, read_image, write_image
from glmil_auto.dataset.problems import DatasetError, Problem
from glmil_auto.dataset.raw_dataset import RawDataset
from glmil_auto.dataset.verify import VerificationReport, verify_dataset

__all__ = [
    "DatasetError",
    "DatasetSpec",
    "Endpoint",
    "Geometry",
    "Problem",
    "RawDataset",
    "VerificationReport",
    "binary_targets",
    "geometry_mismatches",
    "load_dataset_json",
    "read_clinical_table",
    "read_image",
    "spec_from_dict",
    "survival_structured_array",
    "survival_targets",
    "verify_dataset",
    "write_image",
]
