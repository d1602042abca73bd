"""Find DICOM MR series and RT structure sets in a folder, and read an MR series as a SimpleITK image.

Geometry is taken from the DICOM attributes themselves, never from file order or InstanceNumber:

- ImageOrientationPatient gives the row direction ``r`` (the direction in which the column index
  grows) and the column direction ``c``; the slice normal is ``n = r x c``. These become the
  columns of the ITK direction matrix, so oblique series keep their orientation.
- Slices are ordered by the projection of ImagePositionPatient on ``n``; the slice spacing is the
  distance between consecutive projections (SliceThickness is not used: it can differ from the
  spacing when slices overlap or leave gaps). Unequal gaps are an error rather than a silent
  distortion.
- PixelSpacing is ``[row spacing, column spacing]``, that is ``[spacing along c, spacing along r]``;
  ITK wants ``(x, y, z) = (along r, along c, along n)``.

All coordinates are DICOM patient coordinates (LPS, mm), which is also ITK's world convention.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from glmil_auto.dataset_conversion.dicom_errors import fail

MR_STORAGE_MODALITIES = ("MR",)
RTSTRUCT_MODALITY = "RTSTRUCT"
SLICE_GAP_RTOL = 0.01  # slice gaps may differ by 1 % (rounding in exported positions)


@dataclass
class DicomSeries:
    """One image series: its identifiers and the files of its slices (unordered until read)."""

    patient_id: str
    study_uid: str
    study_date: str
    study_time: str
    series_uid: str
    description: str
    modality: str
    frame_of_reference: str
    files: list[Path] = field(default_factory=list)


@dataclass
class RtStructFile:
    """An RT structure set file with the identifiers needed to attach it to its image series."""

    patient_id: str
    study_uid: str
    path: Path
    structure_set_date: str
    structure_set_time: str


@dataclass
class DicomInventory:
    """Everything found under a folder, by patient."""

    series: dict[str, DicomSeries] = field(default_factory=dict)  # SeriesInstanceUID -> series
    rtstructs: list[RtStructFile] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # files that are not DICOM

    def patients(self) -> list[str]:
        return sorted({s.patient_id for s in self.series.values()} | {r.patient_id for r in self.rtstructs})

    def series_of(self, patient_id: str) -> list[DicomSeries]:
        return [s for s in self.series.values() if s.patient_id == patient_id]


def _text(dataset: pydicom.Dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    return "" if value is None else str(value).strip()


def scan_folder(folder: Path, progress: bool = False) -> DicomInventory:
    """Read the header of every file under ``folder`` (recursively) and group MR slices by series.

    Files that are not DICOM (or not MR / RTSTRUCT, such as RTDOSE or RTPLAN) are skipped; a DICOM
    file without PatientID raises an error naming it.
    """
    from tqdm import tqdm

    inventory = DicomInventory()
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    for path in tqdm(files, desc="reading DICOM headers", unit="file", disable=not progress):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            inventory.skipped.append(path)
            continue
        modality = _text(header, "Modality")
        if modality not in MR_STORAGE_MODALITIES + (RTSTRUCT_MODALITY,):
            continue
        patient = _text(header, "PatientID")
        if not patient:
            raise fail("DICOM file has no PatientID", file=path)
        if modality == RTSTRUCT_MODALITY:
            inventory.rtstructs.append(RtStructFile(patient, _text(header, "StudyInstanceUID"), path,
                                                    _text(header, "StructureSetDate"),
                                                    _text(header, "StructureSetTime")))
            continue
        uid = _text(header, "SeriesInstanceUID")
        if not uid:
            raise fail("MR file has no SeriesInstanceUID", patient, path)
        if uid not in inventory.series:
            inventory.series[uid] = DicomSeries(
                patient, _text(header, "StudyInstanceUID"), _text(header, "StudyDate"), _text(header, "StudyTime"),
                uid, _text(header, "SeriesDescription"), modality, _text(header, "FrameOfReferenceUID"))
        inventory.series[uid].files.append(path)
    return inventory


def _vector(dataset: pydicom.Dataset, keyword: str, length: int, patient: str, path: Path) -> np.ndarray:
    value = dataset.get(keyword)
    if value is None or len(value) != length:
        raise fail(f"{keyword} is missing or does not hold {length} numbers", patient, path)
    return np.asarray([float(v) for v in value], dtype=float)


def series_geometry(series: DicomSeries, headers: list[pydicom.Dataset]) -> tuple[np.ndarray, list[int], float]:
    """Direction matrix (columns r, c, n), slice order (indices into ``headers``) and slice spacing."""
    first, path = headers[0], series.files[0]
    orientation = _vector(first, "ImageOrientationPatient", 6, series.patient_id, path)
    row, column = orientation[:3], orientation[3:]
    row, column = row / np.linalg.norm(row), column / np.linalg.norm(column)
    if abs(float(row @ column)) > 1e-3:
        raise fail("ImageOrientationPatient row and column directions are not orthogonal", series.patient_id, path)
    normal = np.cross(row, column)
    for header, file in zip(headers, series.files):
        other = _vector(header, "ImageOrientationPatient", 6, series.patient_id, file)
        if not np.allclose(other, orientation, atol=1e-4):
            raise fail(f"slices of series '{series.description}' have different orientations "
                       "(a localiser or a multi-stack series?)", series.patient_id, file)
    positions = np.stack([_vector(h, "ImagePositionPatient", 3, series.patient_id, f)
                          for h, f in zip(headers, series.files)])
    projections = positions @ normal
    order = [int(i) for i in np.argsort(projections, kind="stable")]
    gaps = np.diff(projections[order])
    if len(headers) == 1:
        spacing = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
    else:
        if np.any(gaps < 1e-3):
            duplicate = series.files[order[int(np.argmin(gaps)) + 1]]
            raise fail(f"series '{series.description}' has two slices at the same position "
                       "(duplicate files or several echoes/phases in one series)", series.patient_id, duplicate)
        spacing = float(np.median(gaps))
        if np.any(np.abs(gaps - spacing) > SLICE_GAP_RTOL * spacing + 1e-3):
            raise fail(f"series '{series.description}' has unequal slice gaps "
                       f"({gaps.min():.3f} to {gaps.max():.3f} mm; missing slices?)", series.patient_id,
                       series.files[0].parent)
    direction = np.stack([row, column, normal], axis=1)
    return direction, order, spacing


def read_series(series: DicomSeries) -> sitk.Image:
    """The series as a float32 SimpleITK image in patient (LPS) coordinates with exact geometry.

    Pixel values are rescaled with RescaleSlope / RescaleIntercept when present.
    """
    headers = []
    for path in series.files:
        try:
            headers.append(pydicom.dcmread(path))
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            raise fail(f"cannot read DICOM file ({exc})", series.patient_id, path) from exc
    direction, order, slice_spacing = series_geometry(series, headers)
    slices = []
    shape = None
    for index in order:
        header, path = headers[index], series.files[index]
        try:
            pixels = header.pixel_array.astype(np.float32)
        except Exception as exc:  # pydicom raises several types for missing handlers or bad data
            raise fail(f"cannot decode the pixel data ({type(exc).__name__}: {exc}); compressed transfer "
                       "syntaxes need pydicom's optional decoders (pylibjpeg, gdcm)", series.patient_id, path) from exc
        if pixels.ndim != 2:
            raise fail(f"expected one 2D frame per file, got pixel data of shape {pixels.shape}", series.patient_id, path)
        if shape is None:
            shape = pixels.shape
        elif pixels.shape != shape:
            raise fail(f"slice of shape {pixels.shape} in a series of {shape} slices", series.patient_id, path)
        slope = float(header.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(header.get("RescaleIntercept", 0.0) or 0.0)
        slices.append(pixels * slope + intercept)
    first = headers[order[0]]
    pixel_spacing = _vector(first, "PixelSpacing", 2, series.patient_id, series.files[order[0]])
    image = sitk.GetImageFromArray(np.stack(slices))  # (slice, row, column) = (z, y, x)
    image.SetSpacing((float(pixel_spacing[1]), float(pixel_spacing[0]), slice_spacing))
    image.SetOrigin(tuple(float(v) for v in _vector(first, "ImagePositionPatient", 3, series.patient_id,
                                                     series.files[order[0]])))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def group_by_study(series: list[DicomSeries]) -> dict[str, list[DicomSeries]]:
    """Series grouped by StudyInstanceUID."""
    grouped: dict[str, list[DicomSeries]] = defaultdict(list)
    for item in series:
        grouped[item.study_uid].append(item)
    return dict(grouped)
