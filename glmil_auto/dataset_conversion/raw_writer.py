"""Write a raw dataset folder (the contract of documentation/raw_dataset_format.md) case by case.

Every converter (public datasets, ``glmil_convert_folder``, DICOM + RTSTRUCT) uses
:class:`RawDatasetWriter` so that file naming, geometry checks, ``dataset.json`` and the final
verification are done once::

    writer = RawDatasetWriter(raw, 102, "BraTSMETS", ["T1c", "T1", "FLAIR", "T2"],
                              {"background": 0, "necrosis": 1, "oedema": 2, "enhancing": 3},
                              lesion_labels=[1, 3])
    writer.add_case("BraTS-MET-00001-000", [t1c, t1, flair, t2], seg)   # SimpleITK images
    folder = writer.finish({"Tr": table}, {"age": "numeric"}, {}, patient_column="patient_id")

Images keep their pixel type; the mask is stored as an unsigned integer image. Files are written
atomically (temporary name, then rename), so an interrupted conversion never leaves a half
written volume under its final name.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from glmil_auto.dataset import layout
from glmil_auto.dataset.dataset_json import DATASET_JSON
from glmil_auto.dataset.image_io import Geometry, geometry_mismatches
from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.dataset.safe_names import check_case_id
from glmil_auto.paths import dataset_folder_name
from glmil_auto.utilities.atomic_files import atomic_path, write_bytes_atomic, write_json_atomic

FILE_ENDING = ".nii.gz"
DEFAULT_CASE_COLUMN = "case_id"
# dataset.json keys naming clinical-table columns that must then exist in every table written
COLUMN_KEYS = ("group_column", "patient_column")
# the optional lesion table lesions{Tr,Ts}.csv: one row per lesion, a point inside it in world mm
LESION_POINT_COLUMNS = ("x_mm", "y_mm", "z_mm")


class RawDatasetWriter:
    """Build ``<raw_folder>/DatasetNNN_Name/`` one case at a time, then write the tables and verify.

    Args:
        raw_folder: the folder holding raw datasets (usually ``$glmil_raw``).
        dataset_id: 0-999; with ``name`` gives the folder ``DatasetNNN_Name``.
        name: letters, digits, ``_`` and ``-``.
        channel_names: channel names in file order (``_0000``, ``_0001``, ...).
        labels: label name -> value; must contain ``0`` (background).
        lesion_labels: the label values whose union is the lesion mask (for example ``[1, 3]`` for
            BraTS-METS, where 2 is oedema); each must be declared in ``labels``.
        overwrite: replace an existing, non-empty dataset folder. Without it such a folder raises
            :class:`FileExistsError` and nothing is touched.

    Raises ``ValueError`` for an invalid id, name, channel list or label declaration.
    """

    def __init__(
        self,
        raw_folder: Path,
        dataset_id: int,
        name: str,
        channel_names: list[str],
        labels: dict[str, int],
        lesion_labels: list[int],
        overwrite: bool = False,
    ) -> None:
        if not channel_names:
            raise ValueError("channel_names must name at least one channel")
        if len(set(channel_names)) != len(channel_names):
            raise ValueError(f"channel names must differ, got {channel_names}")
        if 0 not in labels.values():
            raise ValueError(f"labels must declare the background as 0, got {labels}")
        undeclared = sorted(set(lesion_labels) - set(labels.values()))
        if not lesion_labels or undeclared or 0 in lesion_labels:
            raise ValueError(f"lesion_labels {lesion_labels} must be non-empty, non-zero values declared in "
                             f"labels {labels}")
        self.folder = Path(raw_folder) / dataset_folder_name(dataset_id, name)
        self.dataset_id = int(dataset_id)
        self.name = name
        self.channel_names = list(channel_names)
        self.labels = {str(k): int(v) for k, v in labels.items()}
        self.lesion_labels = sorted(int(v) for v in lesion_labels)
        self._cases: dict[str, list[str]] = {split: [] for split in layout.SPLITS}
        self._prepare(overwrite)

    def _prepare(self, overwrite: bool) -> None:
        if self.folder.exists() and (not self.folder.is_dir() or any(self.folder.iterdir())):
            if not overwrite:
                raise FileExistsError(f"{self.folder} already exists and is not empty; use overwrite "
                                      "(--overwrite) to replace it")
            if self.folder.is_dir():
                shutil.rmtree(self.folder)
            else:
                self.folder.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)

    def cases(self, split: str = layout.TRAINING) -> list[str]:
        """Case ids written so far to ``split``, in the order they were added."""
        return list(self._cases[split])

    def add_case(self, case_id: str, images: list[sitk.Image], mask: sitk.Image, split: str = "Tr") -> None:
        """Write ``images{split}/{case_id}_{cccc}.nii.gz`` (one per channel, in ``channel_names``
        order) and ``labels{split}/{case_id}.nii.gz``.

        Checks, each failing with :class:`DatasetError` naming the case before anything of the case
        is written: the case id is a safe file-name part and new in this dataset, ``split`` is
        ``"Tr"`` or ``"Ts"``, one 3D scalar image per channel, every image on the mask's grid
        (shape, spacing, origin, direction within the verifier's tolerances; resample first with
        :mod:`glmil_auto.dataset_conversion.resample_to_reference`), mask values integral and
        declared in ``labels``.
        """
        if split not in layout.SPLITS:
            raise ValueError(f"split must be one of {layout.SPLITS}, got {split!r}")
        check_case_id(case_id)
        if any(case_id in written for written in self._cases.values()):
            raise DatasetError(error("case id was already written to this dataset", case=case_id))
        if len(images) != len(self.channel_names):
            raise DatasetError(error(f"got {len(images)} image(s) for {len(self.channel_names)} channel(s) "
                                     f"{self.channel_names}", case=case_id))
        for what, image in [("mask", mask)] + list(zip(self.channel_names, images)):
            if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
                raise DatasetError(error(f"{what} must be a 3D single-component image, got "
                                         f"{image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} "
                                         "component(s)", case=case_id))
        reference = Geometry.from_image(mask)
        for channel, image in zip(self.channel_names, images):
            differences = geometry_mismatches(reference, Geometry.from_image(image))
            if differences:
                raise DatasetError(error(f"channel {channel} is not on the mask's grid: " + "; ".join(differences)
                                         + " (resample it onto the reference first)", case=case_id))
        stored_mask = self._checked_mask(case_id, mask)

        for index, image in enumerate(images):
            _write(image, layout.image_file(self.folder, split, case_id, index, FILE_ENDING))
        _write(stored_mask, layout.label_file(self.folder, split, case_id, FILE_ENDING))
        self._cases[split].append(case_id)

    def _checked_mask(self, case_id: str, mask: sitk.Image) -> sitk.Image:
        values = sitk.GetArrayViewFromImage(mask)
        if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
            raise DatasetError(error("mask holds non-integer values", case=case_id))
        found = set(np.unique(values).astype(np.int64).tolist())
        undeclared = sorted(found - set(self.labels.values()))
        if undeclared:
            raise DatasetError(error(f"mask values {undeclared} are not declared in labels {self.labels}",
                                     case=case_id))
        pixel = sitk.sitkUInt8 if max(self.labels.values()) <= 255 else sitk.sitkUInt16
        return sitk.Cast(mask, pixel)

    def finish(
        self,
        clinical: dict[str, pd.DataFrame],
        clinical_features: dict[str, str],
        endpoints: dict[str, dict[str, Any]],
        lesions: dict[str, pd.DataFrame] | None = None,
        **extra_dataset_json_keys: Any,
    ) -> Path:
        """Write ``clinical{split}.csv`` (and ``lesions{split}.csv``) and ``dataset.json``, then run
        the dataset verifier.

        Args:
            clinical: split (``"Tr"``, ``"Ts"``) -> table with one row per case written to that
                split, in a column named ``case_column`` (default ``case_id``); every split that
                received cases needs a table. Rows are written in case order; NaN/None become
                empty cells (unknown). Columns beyond the declared ones are kept in the CSV.
            clinical_features: column -> ``numeric`` | ``binary`` | ``categorical``; declare only
                columns the source really has.
            endpoints: endpoint name -> ``{"type": "binary"}`` or ``{"type": "survival",
                "time": COLUMN, "event": COLUMN}`` (may be empty when the source has no outcomes);
                a binary endpoint refined by the lesion table is ``{"type": "binary",
                "aggregation": "any_lesion"}``.
            lesions: optional split -> lesion table (one row per lesion: the case column,
                ``x_mm``, ``y_mm``, ``z_mm`` = a point inside the lesion in world mm, one column per
                lesion-level endpoint, extra columns kept); rows only for cases written to that split.
            **extra_dataset_json_keys: further dataset.json keys (``group_column``,
                ``patient_column``, ``case_column``, ``description``, ``reference``, ``licence``,
                ...); they override the defaults written here.

        Returns the dataset folder. Raises :class:`DatasetError` when a table is missing, lacks the
        case column or a declared column (including ``group_column`` / ``patient_column``), has an
        id twice, a row for a case not written or no row for a written case, and, after writing,
        when ``glmil_verify_dataset`` finds errors (every one is listed, naming case and file).
        """
        case_column = extra_dataset_json_keys.get("case_column", DEFAULT_CASE_COLUMN)
        declared = list(clinical_features) + [c for n, d in endpoints.items() for c in _endpoint_columns(n, d)]
        declared += [extra_dataset_json_keys[k] for k in COLUMN_KEYS if extra_dataset_json_keys.get(k)]
        splits = [s for s in layout.SPLITS if self._cases[s]]
        if layout.TRAINING not in splits:
            raise DatasetError(error("no training case was written", file=str(self.folder)))
        for split in splits:
            table = self._checked_table(split, clinical.get(split), case_column, declared)
            buffer = table.to_csv(index=False, lineterminator="\n")
            write_bytes_atomic(layout.clinical_file(self.folder, split), buffer.encode("utf-8"))
        for split, table in (lesions or {}).items():
            checked = self._checked_lesion_table(split, table, case_column)
            buffer = checked.to_csv(index=False, lineterminator="\n")
            write_bytes_atomic(layout.lesion_file(self.folder, split), buffer.encode("utf-8"))

        content: dict[str, Any] = {
            "name": self.name,
            "channel_names": {str(i): n for i, n in enumerate(self.channel_names)},
            "labels": self.labels,
            "numTraining": len(self._cases[layout.TRAINING]),
            "file_ending": FILE_ENDING,
            "case_column": case_column,
            "lesion_labels": self.lesion_labels,
            "clinical_features": dict(clinical_features),
            "endpoints": {k: dict(v) for k, v in endpoints.items()},
        }
        if self._cases[layout.TEST]:
            content["numTest"] = len(self._cases[layout.TEST])
        content.update(extra_dataset_json_keys)
        write_json_atomic(self.folder / DATASET_JSON, content)

        from glmil_auto.dataset.verify import verify_dataset  # heavy: only when finishing

        report = verify_dataset(self.folder, num_processes=1, progress=False)
        if not report.ok:
            header = error(f"the converted dataset fails verification ({len(report.errors)} error(s)); "
                           "fix the source or the converter", file=str(self.folder))
            raise DatasetError([header] + report.errors)
        return self.folder

    def _checked_table(self, split: str, table: pd.DataFrame | None, case_column: str,
                       declared: list[str]) -> pd.DataFrame:
        path = str(layout.clinical_file(self.folder, split))
        if table is None:
            raise DatasetError(error(f"no clinical table given for split {split!r}", file=path))
        missing = [c for c in dict.fromkeys([case_column] + declared) if c not in table.columns]
        if missing:
            raise DatasetError(error(f"clinical table lacks column(s) {missing}", file=path))
        ids = table[case_column].astype(str)
        repeated = sorted(ids[ids.duplicated()].unique())
        written = self._cases[split]
        problems = [error("case id appears more than once in the clinical table", case=c, file=path) for c in repeated]
        problems += [error("clinical row for a case that was not written", case=c, file=path)
                     for c in sorted(set(ids) - set(written))]
        problems += [error("case has no clinical row", case=c, file=path) for c in written if c not in set(ids)]
        if problems:
            raise DatasetError(problems)
        table = table.assign(**{case_column: ids}).set_index(case_column, drop=False).loc[written]
        columns = [case_column] + [c for c in table.columns if c != case_column]
        return table[columns].reset_index(drop=True)


    def _checked_lesion_table(self, split: str, table: pd.DataFrame, case_column: str) -> pd.DataFrame:
        """The lesion table with its case column first; DatasetError for a missing column or a row
        of a case not written to ``split``."""
        path = str(layout.lesion_file(self.folder, split))  # ValueError for an unknown split
        missing = [c for c in (case_column, *LESION_POINT_COLUMNS) if c not in table.columns]
        if missing:
            raise DatasetError(error(f"lesion table lacks column(s) {missing}", file=path))
        ids = table[case_column].astype(str)
        unknown = sorted(set(ids) - set(self._cases[split]))
        if unknown:
            raise DatasetError([error("lesion row for a case that was not written", case=c, file=path)
                                for c in unknown])
        columns = [case_column] + [c for c in table.columns if c != case_column]
        return table.assign(**{case_column: ids})[columns].reset_index(drop=True)


def _endpoint_columns(name: str, declaration: dict[str, Any]) -> list[str]:
    """Clinical-table columns of one endpoint: its name (binary) or its time and event columns."""
    if declaration.get("type") == "survival":
        return [c for c in (declaration.get("time"), declaration.get("event")) if c]
    return [name]


def _write(image: sitk.Image, path: Path) -> None:
    with atomic_path(path) as temporary:
        sitk.WriteImage(image, str(temporary), useCompression=True)
