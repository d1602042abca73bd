"""Read an RT structure set (RTSTRUCT): its structures, their closed planar contours, and the image
series and frame of reference it refers to.

Only what rasterisation needs is kept: per structure its ROI number, name and the list of closed
planar contours, each an ``(N, 3)`` array of patient coordinates (LPS, mm). POINT and OPEN_PLANAR
contours (markers, lines) enclose no volume and are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from glmil_auto.dataset_conversion.dicom_errors import fail

CLOSED_TYPES = ("CLOSED_PLANAR", "")  # an absent ContourGeometricType is read as closed


@dataclass
class Structure:
    """One ROI of a structure set: its number, its name and its closed contours (patient mm)."""

    number: int
    name: str
    frame_of_reference: str
    contours: list[np.ndarray] = field(default_factory=list)


@dataclass
class StructureSet:
    """The parsed RTSTRUCT."""

    path: Path
    patient_id: str
    frame_of_reference: str
    referenced_series_uids: list[str]
    structures: list[Structure]

    def select(self, pattern: re.Pattern) -> list[Structure]:
        """Structures whose name matches ``pattern`` (``re.search``) and that have contours, in ROI order."""
        return [s for s in self.structures if pattern.search(s.name) and s.contours]


def _referenced_series(dataset: pydicom.Dataset) -> tuple[list[str], str]:
    series: list[str] = []
    frame = ""
    for reference in dataset.get("ReferencedFrameOfReferenceSequence", []):
        frame = frame or str(reference.get("FrameOfReferenceUID", ""))
        for study in reference.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                uid = str(item.get("SeriesInstanceUID", ""))
                if uid and uid not in series:
                    series.append(uid)
    return series, frame


def read_structure_set(path: Path) -> StructureSet:
    """Parse ``path``; a file that is not an RTSTRUCT or has a malformed contour raises an error
    naming the patient, the file and the structure."""
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise fail(f"cannot read RTSTRUCT ({exc})", file=path) from exc
    patient = str(dataset.get("PatientID", "")).strip() or None
    if str(dataset.get("Modality", "")) != "RTSTRUCT":
        raise fail(f"expected an RTSTRUCT, found modality {dataset.get('Modality', '?')!r}", patient, path)
    series_uids, frame = _referenced_series(dataset)
    structures: dict[int, Structure] = {}
    for item in dataset.get("StructureSetROISequence", []):
        number = int(item.ROINumber)
        structures[number] = Structure(number, str(item.get("ROIName", f"ROI {number}")).strip(),
                                       str(item.get("ReferencedFrameOfReferenceUID", frame)))
    for roi in dataset.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        if number not in structures:
            raise fail(f"ROIContourSequence refers to ROI number {number}, which StructureSetROISequence "
                       "does not declare", patient, path)
        structure = structures[number]
        for contour in roi.get("ContourSequence", []):
            kind = str(contour.get("ContourGeometricType", "")).strip().upper()
            if kind not in CLOSED_TYPES:
                continue
            values = [float(v) for v in contour.get("ContourData", [])]
            if len(values) % 3 or len(values) < 9:
                raise fail(f"structure '{structure.name}' has a closed contour with {len(values)} coordinates "
                           "(needs at least 3 points of x, y, z)", patient, path)
            structure.contours.append(np.asarray(values, dtype=float).reshape(-1, 3))
    return StructureSet(Path(path), patient or "", frame, series_uids,
                        [structures[k] for k in sorted(structures)])
