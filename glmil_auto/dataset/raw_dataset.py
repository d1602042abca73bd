"""``RawDataset``: one object to read a raw dataset in the glmil_auto contract.

    ds = RawDataset.from_identifier(1)          # or RawDataset("/path/DatasetNNN_Name")
    ds.cases("Tr")                              # training case ids
    images, geometry = ds.read_images("SBM_0001")   # (C, Z, Y, X) float32 + Geometry
    mask, _ = ds.read_lesion_mask("SBM_0001")       # (Z, Y, X) bool, union of lesion_labels
    table = ds.clinical_table("Tr")             # typed, indexed by case id

Reading is strict: a missing channel, an unreadable file, or channels/labels whose geometry
disagree raise :class:`DatasetError` naming the case and the file. ``glmil_verify_dataset``
reports every problem of a whole dataset at once instead.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from glmil_auto.dataset import layout
from glmil_auto.dataset.clinical_table import read_clinical_table
from glmil_auto.dataset.dataset_json import DatasetSpec, load_dataset_json
from glmil_auto.dataset.case_files import check_same_geometry, read_channel_files, read_label_map
from glmil_auto.dataset.image_io import Geometry
from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.paths import raw_dataset_folder


class RawDataset:
    """A raw dataset folder with its validated ``dataset.json``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.spec: DatasetSpec = load_dataset_json(self.folder)

    @classmethod
    def from_identifier(cls, identifier: str | int) -> "RawDataset":
        """Look a dataset up by id (``1``) or name (``Dataset001_SynthBrainMets``) in ``glmil_raw``."""
        return cls(raw_dataset_folder(identifier))

    @property
    def name(self) -> str:
        return self.folder.name

    def has_split(self, split: str) -> bool:
        return layout.images_folder(self.folder, split).is_dir()

    def cases(self, split: str = layout.TRAINING) -> list[str]:
        return layout.list_cases(self.folder, split, self.spec.file_ending)

    @cached_property
    def _split_of_case(self) -> dict[str, str]:
        return {case: split for split in reversed(layout.SPLITS) for case in self.cases(split)}

    def split_of(self, case: str) -> str:
        """``"Tr"`` or ``"Ts"``: where a case lives (training wins if an id is in both)."""
        try:
            return self._split_of_case[case]
        except KeyError:
            raise DatasetError(error(f"case not found in imagesTr or imagesTs of {self.folder}", case=case)) from None

    def image_files(self, case: str, split: str | None = None) -> list[Path]:
        split = split or self.split_of(case)
        return [
            layout.image_file(self.folder, split, case, channel, self.spec.file_ending)
            for channel in self.spec.channel_names
        ]

    def label_file(self, case: str, split: str | None = None) -> Path:
        split = split or self.split_of(case)
        return layout.label_file(self.folder, split, case, self.spec.file_ending)

    def read_images(self, case: str, split: str | None = None) -> tuple[np.ndarray, Geometry]:
        """All channels of a case as one float32 ``(C, Z, Y, X)`` array and the first channel's geometry."""
        return read_channel_files(self.image_files(case, split), case)

    def read_label(self, case: str, split: str | None = None) -> tuple[np.ndarray, Geometry]:
        """The integer label map ``(Z, Y, X)`` and its geometry."""
        return read_label_map(self.label_file(case, split), case)

    def read_lesion_mask(self, case: str, split: str | None = None) -> tuple[np.ndarray, Geometry]:
        """Boolean ``(Z, Y, X)`` lesion mask: the union of ``lesion_labels``."""
        label, geometry = self.read_label(case, split)
        return np.isin(label, self.spec.lesion_labels), geometry

    def read_case(self, case: str, split: str | None = None) -> tuple[np.ndarray, np.ndarray, Geometry]:
        """Images ``(C, Z, Y, X)``, lesion mask ``(Z, Y, X)`` and the shared geometry, checked to agree."""
        images, geometry = self.read_images(case, split)
        mask, mask_geometry = self.read_lesion_mask(case, split)
        check_same_geometry(geometry, mask_geometry, case, self.label_file(case, split))
        return images, mask, geometry

    def clinical_table(self, split: str = layout.TRAINING) -> pd.DataFrame:
        """The typed clinical table of a split, checked against the cases that have images.

        Held-out tables (``"Ts"``) may lack endpoint columns (prediction without evaluation).
        A dataset whose dataset.json names no clinical column (``spec.needs_clinical_table`` is
        False) may have no table: that gives one row per case and no columns.
        """
        path = layout.clinical_file(self.folder, split)
        if not path.is_file() and not self.spec.needs_clinical_table:
            return pd.DataFrame(index=pd.Index(self.cases(split), name=self.spec.case_column))
        return read_clinical_table(
            path,
            self.spec,
            expected_cases=self.cases(split),
            require_endpoints=split == layout.TRAINING,
        )
