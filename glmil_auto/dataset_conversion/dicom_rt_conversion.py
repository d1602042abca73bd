"""Convert a folder of DICOM MR studies with RT structure sets into a raw dataset (Python API of
``glmil_convert_dicom_rt``; documentation/dicom_conversion.md).

Steps: read every header (:mod:`dicom_series`), decide each case from headers alone
(:mod:`dicom_study_matching`, every problem listed before any pixel is read), join the clinical
table (:mod:`dicom_clinical_join`), then per case read the series, put every channel on the
reference grid, rasterise the selected structures (:mod:`contour_rasterisation`), keep them
apart as separate lesions (:mod:`contour_lesion_mask`) and write the case with
:class:`RawDatasetWriter`, which writes dataset.json and the tables and runs the verifier.
With lesion-level outcomes (:mod:`lesion_outcome_table`), their rows are tied to cases and
structures before anything is written, and ``lesionsTr.csv`` gets a point inside each lesion
(:mod:`lesion_points`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import SimpleITK as sitk
from tqdm import tqdm

from glmil_auto.dataset_conversion.contour_lesion_mask import lesion_mask, structure_mask_names
from glmil_auto.dataset_conversion.contour_rasterisation import (
    ContourOffGrid,
    rasterise_contours,
    resample_structure_mask,
)
from glmil_auto.dataset_conversion.dicom_clinical_join import CASE_COLUMN, PATIENT_COLUMN, join_clinical
from glmil_auto.dataset_conversion.dicom_errors import DicomProblem, fail
from glmil_auto.dataset_conversion.dicom_registration import rigid_registration
from glmil_auto.dataset_conversion.dicom_series import DicomInventory, DicomSeries, read_series, scan_folder
from glmil_auto.dataset_conversion.dicom_study_matching import CasePlan, ChannelRule, plan_cases
from glmil_auto.dataset_conversion.lesion_outcome_table import (
    AssignedRow,
    LesionOutcomeTable,
    any_lesion_endpoint,
    apply_case_labels,
    assign_rows,
    lesion_table,
)
from glmil_auto.dataset_conversion.lesion_points import StructureLesion, structure_lesions
from glmil_auto.dataset_conversion.raw_writer import RawDatasetWriter
from glmil_auto.dataset_conversion.resample_to_reference import resample_channel, same_grid

LABELS = {"background": 0, "metastasis": 1}
CONVERSION_LOG = "dicom_conversion.json"


@dataclass
class ConvertedCase:
    """What went into one case (written to ``dicom_conversion.json`` beside dataset.json)."""

    case_id: str
    patient_id: str
    study_uid: str
    study_date: str
    channel_series: dict[str, str]
    reference_series: str
    contour_series: str
    rtstruct: str
    structure_voxels: dict[str, int]
    registered: list[str] = field(default_factory=list)
    # one entry per lesion component each structure keeps voxels in, with a voxel inside it
    lesions: list[StructureLesion] = field(default_factory=list)


@dataclass
class ConversionResult:
    folder: Path
    cases: list[ConvertedCase]
    warnings: list[DicomProblem]


def parse_channel_rules(specs: list[tuple[str, str]]) -> list[ChannelRule]:
    """``[(name, regex), ...]`` as rules (case-insensitive ``re.search``); a bad regex raises ``re.error``."""
    return [ChannelRule(name, re.compile(regex, re.IGNORECASE)) for name, regex in specs]


class _SeriesCache:
    """Series read once per case even when one series serves as channel and contour grid."""

    def __init__(self) -> None:
        self._images: dict[str, sitk.Image] = {}

    def get(self, series: DicomSeries) -> sitk.Image:
        if series.series_uid not in self._images:
            self._images[series.series_uid] = read_series(series)
        return self._images[series.series_uid]


def convert_case(plan: CasePlan, rules: list[ChannelRule]) -> tuple[list[sitk.Image], sitk.Image, ConvertedCase, list[str]]:
    """The channels and the label-1 lesion mask of one case on the reference grid, plus its record
    and notes (warnings) about the structures."""
    cache = _SeriesCache()
    reference = sitk.Cast(cache.get(plan.reference), sitk.sitkFloat32)
    transforms: dict[str, sitk.Transform] = {}
    images = []
    for rule, series in zip(rules, plan.channels):
        image = cache.get(series)
        if series.frame_of_reference != plan.reference.frame_of_reference:
            transforms[series.series_uid] = rigid_registration(reference, image)
            images.append(sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, transforms[series.series_uid],
                                        sitk.sitkLinear, 0.0, sitk.sitkFloat32))
        else:
            images.append(resample_channel(image, reference))
    contour_grid = cache.get(plan.contour_series)
    transform = transforms.get(plan.contour_series.series_uid)
    if transform is None and plan.contour_series.frame_of_reference != plan.reference.frame_of_reference:
        transform = rigid_registration(reference, contour_grid)
    masks: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for structure, name in zip(plan.structures, structure_mask_names(plan.structures)):
        try:
            rasterised = rasterise_contours(structure.contours, contour_grid)
        except ContourOffGrid as exc:
            raise fail(f"structure '{structure.name}': {exc} (series '{plan.contour_series.description}')",
                       plan.patient_id, plan.structure_set.path) from exc
        if rasterised.contours_outside:
            notes.append(f"structure '{structure.name}': {rasterised.contours_outside} contour(s) lie outside the "
                         f"slices of series '{plan.contour_series.description}' and were left out")
        mask = rasterised.mask
        if transform is not None or not same_grid(contour_grid, reference):
            mask = resample_structure_mask(mask, contour_grid, reference, transform)
        masks[name] = mask
    combined = lesion_mask(masks)
    notes += combined.notes
    mask_image = sitk.GetImageFromArray(combined.mask)
    mask_image.CopyInformation(reference)
    record = ConvertedCase(plan.case_id, plan.patient_id, plan.study_uid, plan.study_date,
                           {r.name: s.series_uid for r, s in zip(rules, plan.channels)}, plan.reference.series_uid,
                           plan.contour_series.series_uid, str(plan.structure_set.path), combined.voxels,
                           list(plan.needs_registration),
                           [lesion for found in structure_lesions(combined, reference).values() for lesion in found])
    return images, mask_image, record, notes


def convert_dicom_rt(
    source: Path,
    raw_folder: Path,
    dataset_id: int,
    name: str,
    channels: list[tuple[str, str]],
    structures: str,
    clinical: pd.DataFrame | None = None,
    patient_column: str | None = None,
    date_column: str | None = None,
    clinical_features: dict[str, str] | None = None,
    endpoints: dict[str, dict[str, Any]] | None = None,
    register: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    clinical_source: str | Path | None = None,
    add_columns: Callable[[list[ConvertedCase], Path, pd.DataFrame], tuple[pd.DataFrame, dict[str, str]]]
    | None = None,
    lesion_outcomes: LesionOutcomeTable | None = None,
    inventory: DicomInventory | None = None,
    **extra_dataset_json_keys: Any,
) -> ConversionResult:
    """Convert ``source`` into ``raw_folder/DatasetNNN_name``; raises ``DicomConversionError`` (bad
    input, every problem found before anything is written) or ``DatasetError`` (verification).

    ``add_columns`` lets a dataset-specific converter add derived columns (doses, outcomes) once
    the cases are written: it receives the case records, the dataset folder (labelsTr holds the
    masks) and the joined table, and returns the table plus the clinical features it adds
    (column -> type, declared in dataset.json with the others).

    ``lesion_outcomes`` (:mod:`lesion_outcome_table`): lesion-level endpoints keyed by patient and
    ROI name. Every row must name a selected structure of a converted case (checked before
    anything is written); ``lesionsTr.csv`` gets one row per lesion with a point inside it, each
    of its endpoints is declared ``{"type": "binary", "aggregation": "any_lesion"}``, and the case
    column of that endpoint is made consistent with the lesions (after ``add_columns``).

    ``inventory``: the headers to convert, read beforehand (for example only some folders of
    ``source``, or without the studies a converter skips); by default every file under
    ``source`` is read (:func:`scan_folder`).
    """
    rules = parse_channel_rules(channels)
    pattern = re.compile(structures, re.IGNORECASE)
    if inventory is None:
        inventory = scan_folder(Path(source), progress=progress)
    matching = plan_cases(inventory, rules, pattern, allow_registration=register)
    table, join_warnings = join_clinical(matching.plans, clinical, patient_column, date_column, clinical_source)
    warnings = matching.warnings + join_warnings
    endpoints = dict(endpoints or {})
    assigned: list[AssignedRow] = []
    if lesion_outcomes is not None:
        endpoints = _lesion_endpoints(endpoints, lesion_outcomes)
        assigned, lesion_warnings = assign_rows(lesion_outcomes, matching.plans)
        warnings += lesion_warnings
    writer = RawDatasetWriter(Path(raw_folder), dataset_id, name, [r.name for r in rules], LABELS, [1],
                              overwrite=overwrite)
    records = []
    for plan in tqdm(matching.plans, desc="converting DICOM studies", unit="case", disable=not progress):
        images, mask, record, notes = convert_case(plan, rules)
        warnings += [DicomProblem(note, plan.patient_id, plan.structure_set.path, "warning") for note in notes]
        if not record.structure_voxels or not any(record.structure_voxels.values()):
            warnings.append(DicomProblem("no lesion voxel on the reference grid", plan.patient_id,
                                         plan.structure_set.path, "warning"))
        writer.add_case(plan.case_id, images, mask)
        records.append(record)
    features = dict(clinical_features or {})
    if add_columns is not None:
        table, added = add_columns(records, writer.folder, table)
        features.update(added)
    keys = {"patient_column": PATIENT_COLUMN, "description": f"converted from DICOM MR + RTSTRUCT in {source} "
            f"(structures /{structures}/)"}
    keys.update(extra_dataset_json_keys)
    lesions = None
    if lesion_outcomes is not None:
        case_column = keys.get("case_column", CASE_COLUMN)
        rows, merge_warnings = lesion_table(lesion_outcomes, assigned, records, case_column)
        table, label_warnings = apply_case_labels(table, lesion_outcomes, assigned, records, case_column)
        warnings += merge_warnings + label_warnings
        lesions = {"Tr": rows}
    folder = writer.finish({"Tr": table}, features, endpoints, lesions=lesions, **keys)
    _write_log(folder, records, warnings)
    return ConversionResult(folder, records, warnings)


def _lesion_endpoints(endpoints: dict[str, dict[str, Any]], outcomes: LesionOutcomeTable) -> dict[str, dict[str, Any]]:
    """The endpoints with every lesion endpoint declared binary with ``aggregation: any_lesion``
    (other keys of an existing binary declaration are kept)."""
    out = {name: dict(declaration) for name, declaration in endpoints.items()}
    for name in outcomes.endpoints:
        if out.get(name, {}).get("type", "binary") != "binary":
            raise fail(f"endpoint {name!r} is declared {out[name]['type']!r}, but the lesion table gives it as a "
                       "binary lesion outcome", file=outcomes.source)
        out[name] = {**out.get(name, {}), **any_lesion_endpoint()}
    return out


def _write_log(folder: Path, records: list[ConvertedCase], warnings: list[DicomProblem]) -> None:
    from dataclasses import asdict

    from glmil_auto.utilities.atomic_files import write_json_atomic

    write_json_atomic(folder / CONVERSION_LOG, {"cases": [asdict(r) for r in records],
                                                "warnings": [str(w) for w in warnings]})
