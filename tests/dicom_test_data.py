"""Write small but real DICOM MR series and RT structure sets with pydicom, for the DICOM-RT tests.

Geometry is explicit (a :class:`Grid` with size, spacing, origin and a direction matrix whose
columns are the row, column and slice directions), so tests can use oblique series, anisotropic
voxels and grids that differ between channels. Pixel values are a linear function of the world
position (so a channel resampled onto another grid can be checked voxel by voxel), and
InstanceNumber runs against the slice position so that sorting by it would flip the volume.

Structures are spheres (or shells, for holes) cut into one closed contour per slice plane of the
series the RTSTRUCT references, exactly as a planning system exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
RTDOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
RTPLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles (degrees) about x, then y, then z."""
    a, b, c = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Grid:
    """A series' voxel grid: size and spacing (x, y, z), origin (LPS mm), direction (columns r, c, n)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def index_to_world(self, index_xyz: np.ndarray) -> np.ndarray:
        matrix = self.direction * np.asarray(self.spacing)[None, :]
        return np.asarray(index_xyz, dtype=float) @ matrix.T + self.origin

    def world_to_index(self, world: np.ndarray) -> np.ndarray:
        matrix = self.direction * np.asarray(self.spacing)[None, :]
        return (np.asarray(world, dtype=float) - self.origin) @ np.linalg.inv(matrix).T

    def centred_on(self, centre: np.ndarray) -> "Grid":
        """The same grid moved so that its central voxel sits at ``centre``."""
        middle = (np.asarray(self.size, dtype=float) - 1) / 2
        shift = centre - self.index_to_world(middle)
        return Grid(self.size, self.spacing, self.origin + shift, self.direction)

    def voxel_centres(self) -> np.ndarray:
        """World coordinates of every voxel centre, shaped (Z, Y, X, 3)."""
        nx, ny, nz = self.size
        z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
        return self.index_to_world(np.stack([x, y, z], axis=-1))


@dataclass
class Sphere:
    """A ball (``inner`` > 0: a shell with a hole of that radius), centre in world mm."""

    centre: np.ndarray
    radius: float
    inner: float = 0.0

    def contains(self, points: np.ndarray) -> np.ndarray:
        distance = np.linalg.norm(points - self.centre, axis=-1)
        return (distance <= self.radius) & (distance >= self.inner if self.inner > 0 else True)


@dataclass
class SeriesInfo:
    uid: str
    frame: str
    grid: Grid
    description: str
    sop_uids: list[str]


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _base(sop_class: str, sop_uid: str, patient: str, study_uid: str, study_date: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = patient
    ds.PatientName = f"Test^{patient}"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = "120000"
    ds.Modality = modality
    return ds


def linear_intensity(a: float, b: tuple[float, float, float]) -> Callable[[np.ndarray], np.ndarray]:
    """``a + b . p`` at world points ``p``: resampling it linearly gives it back exactly."""
    return lambda points: a + points @ np.asarray(b, dtype=float)


def write_mr_series(folder: Path, patient: str, study_uid: str, study_date: str, description: str, grid: Grid,
                    intensity: Callable[[np.ndarray], np.ndarray], frame: str | None = None,
                    series_uid: str | None = None) -> SeriesInfo:
    """One file per slice; stored as int16 with RescaleSlope 0.5 and RescaleIntercept -100."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    frame = frame or generate_uid()
    nx, ny, nz = grid.size
    centres = grid.voxel_centres()
    values = intensity(centres)  # (Z, Y, X)
    stored = np.round((values + 100.0) / 0.5).astype(np.int16)
    sop_uids = []
    for k in range(nz):
        sop = generate_uid()
        sop_uids.append(sop)
        ds = _base(MR_STORAGE, sop, patient, study_uid, study_date, "MR")
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        ds.FrameOfReferenceUID = frame
        ds.InstanceNumber = nz - k  # against the slice order on purpose
        ds.ImagePositionPatient = [f"{v:.6f}" for v in grid.index_to_world(np.array([0.0, 0.0, k]))]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([grid.direction[:, 0], grid.direction[:, 1]])]
        ds.PixelSpacing = [f"{grid.spacing[1]:.6f}", f"{grid.spacing[0]:.6f}"]  # [row spacing, column spacing]
        ds.SliceThickness = f"{grid.spacing[2]:.6f}"
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-100"
        ds.PixelData = stored[k].tobytes()
        ds.save_as(folder / f"{description.replace(' ', '_')}_{k:03d}.dcm", enforce_file_format=True)
    return SeriesInfo(series_uid, frame, grid, description, sop_uids)


def sphere_contours(sphere: Sphere, grid: Grid, points: int = 72) -> list[np.ndarray]:
    """Closed contours of a sphere (and of its hole) on every slice plane of ``grid``."""
    r, c, n = grid.direction[:, 0], grid.direction[:, 1], grid.direction[:, 2]
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    out = []
    for k in range(grid.size[2]):
        plane_point = grid.index_to_world(np.array([0.0, 0.0, k]))
        distance = float((sphere.centre - plane_point) @ n)
        foot = sphere.centre - distance * n
        for radius in (sphere.radius, sphere.inner):
            if radius > 0 and abs(distance) < radius:
                rho = np.sqrt(radius**2 - distance**2)
                out.append(foot + rho * (np.cos(angles)[:, None] * r + np.sin(angles)[:, None] * c))
    return out


def box_contours(grid: Grid, low_xyz: tuple[int, int, int], high_xyz: tuple[int, int, int]) -> list[np.ndarray]:
    """Closed square contours on the slices ``low_z..high_z`` of ``grid`` that enclose exactly the
    voxel centres with indices ``low..high`` (inclusive) in x and y: boxes whose voxels are known,
    for structures that must touch."""
    (x0, y0, z0), (x1, y1, z1) = low_xyz, high_xyz
    corners = [(x0 - 0.4, y0 - 0.4), (x1 + 0.4, y0 - 0.4), (x1 + 0.4, y1 + 0.4), (x0 - 0.4, y1 + 0.4)]
    return [grid.index_to_world(np.array([[x, y, float(k)] for x, y in corners])) for k in range(z0, z1 + 1)]


def write_rtstruct(path: Path, patient: str, study_uid: str, study_date: str, series: SeriesInfo,
                   structures: dict[str, list[np.ndarray]], referenced: bool = True) -> str:
    """An RTSTRUCT with one ROI per entry of ``structures`` (name -> closed contours in world mm)."""
    sop = generate_uid()
    ds = _base(RTSTRUCT_STORAGE, sop, patient, study_uid, study_date, "RTSTRUCT")
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "TPS export"
    ds.StructureSetDate, ds.StructureSetTime = study_date, "130000"
    frame_item = Dataset()
    frame_item.FrameOfReferenceUID = series.frame
    if referenced:
        series_item = Dataset()
        series_item.SeriesInstanceUID = series.uid
        series_item.ContourImageSequence = Sequence()
        for uid in series.sop_uids:
            image = Dataset()
            image.ReferencedSOPClassUID = MR_STORAGE
            image.ReferencedSOPInstanceUID = uid
            series_item.ContourImageSequence.append(image)
        study_item = Dataset()
        study_item.ReferencedSOPInstanceUID = study_uid
        study_item.RTReferencedSeriesSequence = Sequence([series_item])
        frame_item.RTReferencedStudySequence = Sequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_item])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for number, (name, contours) in enumerate(structures.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = series.frame
        roi.ROIName = name
        ds.StructureSetROISequence.append(roi)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ContourSequence = Sequence()
        for contour in contours:
            item = Dataset()
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(contour)
            item.ContourData = [f"{v:.4f}" for v in contour.ravel()]
            roi_contour.ContourSequence.append(item)
        ds.ROIContourSequence.append(roi_contour)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sop


def write_rtplan(path: Path, patient: str, study_uid: str, study_date: str, rtstruct_uid: str,
                 prescriptions_gy: list[float]) -> str:
    """An RTPLAN with one TARGET dose reference per prescription, referencing the structure set."""
    sop = generate_uid()
    ds = _base(RTPLAN_STORAGE, sop, patient, study_uid, study_date, "RTPLAN")
    ds.SeriesInstanceUID = generate_uid()
    ds.RTPlanLabel = "GK plan"
    reference = Dataset()
    reference.ReferencedSOPClassUID = RTSTRUCT_STORAGE
    reference.ReferencedSOPInstanceUID = rtstruct_uid
    ds.ReferencedStructureSetSequence = Sequence([reference])
    ds.DoseReferenceSequence = Sequence()
    for number, dose in enumerate(prescriptions_gy, start=1):
        item = Dataset()
        item.DoseReferenceNumber = number
        item.DoseReferenceStructureType = "SITE"
        item.DoseReferenceType = "TARGET"
        item.TargetPrescriptionDose = f"{dose:.3f}"
        ds.DoseReferenceSequence.append(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sop


def write_rtdose(path: Path, patient: str, study_uid: str, study_date: str, frame: str, grid: Grid,
                 dose_gy: Callable[[np.ndarray], np.ndarray], plan_uid: str | None = None) -> str:
    """A multi-frame RTDOSE on ``grid`` (relative GridFrameOffsetVector, DoseGridScaling 0.001)."""
    sop = generate_uid()
    ds = _base(RTDOSE_STORAGE, sop, patient, study_uid, study_date, "RTDOSE")
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = frame
    nx, ny, nz = grid.size
    values = np.round(dose_gy(grid.voxel_centres()) / 0.001).astype(np.uint32)
    ds.ImagePositionPatient = [f"{v:.6f}" for v in grid.origin]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in np.concatenate([grid.direction[:, 0], grid.direction[:, 1]])]
    ds.PixelSpacing = [f"{grid.spacing[1]:.6f}", f"{grid.spacing[0]:.6f}"]
    ds.GridFrameOffsetVector = [f"{k * grid.spacing[2]:.4f}" for k in range(nz)]
    ds.NumberOfFrames = nz
    ds.FrameIncrementPointer = 0x3004000C
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = "0.001"
    if plan_uid:
        reference = Dataset()
        reference.ReferencedSOPClassUID = RTPLAN_STORAGE
        reference.ReferencedSOPInstanceUID = plan_uid
        ds.ReferencedRTPlanSequence = Sequence([reference])
    ds.PixelData = values.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return sop
