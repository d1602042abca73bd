"""Radiotherapy dose objects next to the images: RTPLAN prescriptions and RTDOSE grids.

- :func:`plan_prescription_gy`: the prescription of an RTPLAN, the smallest
  ``DoseReferenceSequence > TargetPrescriptionDose`` over its target dose references (Gy). With
  several targets (a Gamma Knife plan treats every lesion in one plan) the smallest is the dose
  of the least-covered lesion, which is what drives local failure.
- :func:`read_dose_grid`: an RTDOSE as a SimpleITK image in Gy on its own grid (patient LPS);
  frames are placed by ``GridFrameOffsetVector`` along the normal of ImageOrientationPatient and
  scaled by ``DoseGridScaling``.
- :func:`find_rt_objects`: the RTPLAN and RTDOSE files under a folder, by patient, with the
  identifiers that tie them to a structure set (``ReferencedStructureSetSequence``,
  ``ReferencedRTPlanSequence``), a study and a frame of reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from glmil_auto.dataset_conversion.dicom_errors import fail


@dataclass
class RtObject:
    """An RTPLAN or RTDOSE file and what ties it to the rest of the patient's data."""

    modality: str
    path: Path
    patient_id: str
    study_uid: str
    sop_uid: str
    frame_of_reference: str
    referenced_structure_sets: tuple[str, ...]
    referenced_plans: tuple[str, ...]


def _uids(dataset: pydicom.Dataset, sequence: str) -> tuple[str, ...]:
    return tuple(str(item.get("ReferencedSOPInstanceUID", "")) for item in dataset.get(sequence, []))


def find_rt_objects(folder: Path) -> list[RtObject]:
    """Every RTPLAN and RTDOSE under ``folder`` (headers only)."""
    found = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        modality = str(header.get("Modality", ""))
        if modality not in ("RTPLAN", "RTDOSE"):
            continue
        found.append(RtObject(modality, path, str(header.get("PatientID", "")).strip(),
                              str(header.get("StudyInstanceUID", "")), str(header.get("SOPInstanceUID", "")),
                              str(header.get("FrameOfReferenceUID", "")),
                              _uids(header, "ReferencedStructureSetSequence"), _uids(header, "ReferencedRTPlanSequence")))
    return found


def plan_prescription_gy(path: Path) -> float | None:
    """The smallest target prescription dose of an RTPLAN in Gy (None when it declares none)."""
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    doses = []
    for reference in dataset.get("DoseReferenceSequence", []):
        kind = str(reference.get("DoseReferenceType", "TARGET")).upper()
        value = reference.get("TargetPrescriptionDose")
        if kind == "TARGET" and value not in (None, ""):
            doses.append(float(value))
    return min(doses) if doses else None


def read_dose_grid(path: Path) -> sitk.Image:
    """An RTDOSE as a float32 image in Gy; errors name the file."""
    dataset = pydicom.dcmread(path)
    patient = str(dataset.get("PatientID", "")) or None
    try:
        frames = dataset.pixel_array.astype(np.float32)
        orientation = np.asarray([float(v) for v in dataset.ImageOrientationPatient])
        position = np.asarray([float(v) for v in dataset.ImagePositionPatient])
        row_spacing, column_spacing = (float(v) for v in dataset.PixelSpacing)
        scaling = float(dataset.get("DoseGridScaling", 1.0))
    except (AttributeError, ValueError, TypeError) as exc:
        raise fail(f"RTDOSE lacks a usable dose grid ({exc})", patient, path) from exc
    if frames.ndim == 2:
        frames = frames[None]
    offsets = np.asarray([float(v) for v in dataset.get("GridFrameOffsetVector", [0.0] * len(frames))])
    if len(offsets) != len(frames):
        raise fail(f"GridFrameOffsetVector has {len(offsets)} entries for {len(frames)} frames", patient, path)
    row, column = orientation[:3], orientation[3:]
    normal = np.cross(row, column)
    if abs(offsets[0]) > 1e-6 and abs(offsets[0] - float(position @ normal)) < 1e-2:
        offsets = offsets - offsets[0]  # the older "absolute" form: offsets are slice positions along the normal
    order = np.argsort(offsets)
    offsets = offsets[order]
    gaps = np.diff(offsets)
    spacing = float(np.median(gaps)) if len(gaps) else 1.0
    if len(gaps) and np.any(np.abs(gaps - spacing) > 0.01 * spacing + 1e-3):
        raise fail("RTDOSE frames are not equally spaced", patient, path)
    image = sitk.GetImageFromArray(frames[order] * scaling)
    image.SetSpacing((column_spacing, row_spacing, spacing))
    # GridFrameOffsetVector is relative to ImagePositionPatient (type "relative" when it starts at 0)
    image.SetOrigin(tuple(float(v) for v in position + offsets[0] * normal))
    image.SetDirection(tuple(float(v) for v in np.stack([row, column, normal], axis=1).ravel()))
    return image
