"""Reading new cases for prediction from any pair of folders (nnU-Net's ``-i`` layout).

``IMAGES`` holds ``{case}_{cccc}{file_ending}`` (one file per channel, as imagesTr), ``MASKS``
holds ``{case}{file_ending}`` lesion masks (label maps; the union of the dataset's
``lesion_labels`` is the lesion mask, as in training). A raw dataset's imagesTs/labelsTs are such
a pair. Problems name the case and the file (:class:`~glmil_auto.dataset.problems.DatasetError`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glmil_auto.dataset.case_files import check_same_geometry, read_channel_files, read_label_map
from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.dataset.image_io import Geometry
from glmil_auto.dataset.layout import scan_image_files
from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.dataset.safe_names import check_case_id


def list_prediction_cases(images_folder: str | Path, spec: DatasetSpec) -> list[str]:
    """Case ids with at least one channel file in ``images_folder``, sorted. Cases with missing
    channels are listed too (reading them raises the error naming the missing file)."""
    folder = Path(images_folder)
    if not folder.is_dir():
        raise DatasetError(error("the input image folder does not exist", file=str(folder)))
    channels_by_case, _ = scan_image_files(folder, spec.file_ending)
    if not channels_by_case:
        found = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "") if found else "nothing"
        raise DatasetError(error(f"no image files named {{case}}_{{cccc}}{spec.file_ending} (one per channel, "
                                 f"{_channel_list(spec)}); found {shown}", file=str(folder)))
    declared = set(spec.channel_names)
    for case, found in channels_by_case.items():
        first = folder / f"{case}_{found[0]:04d}{spec.file_ending}"
        undeclared = sorted(set(found) - declared)
        if undeclared:
            name = f"{case}_{undeclared[0]:04d}"
            raise DatasetError(error(
                f"channel {undeclared[0]:04d} is not one of the dataset's channels ({_channel_list(spec)}): if "
                f"'{name}' is the whole case id, the channel suffix is missing; name the files {name}_0000"
                f"{spec.file_ending}, {name}_0001{spec.file_ending}, ...", case=case,
                file=str(folder / f"{name}{spec.file_ending}")))
        check_case_id(case, first)
    return sorted(channels_by_case)


def _channel_list(spec: DatasetSpec) -> str:
    return ", ".join(f"{c:04d} = {name}" for c, name in sorted(spec.channel_names.items()))


def channel_files(images_folder: Path, case: str, spec: DatasetSpec) -> list[Path]:
    return [Path(images_folder) / f"{case}_{channel:04d}{spec.file_ending}" for channel in sorted(spec.channel_names)]


def mask_file(masks_folder: Path, case: str, spec: DatasetSpec) -> Path:
    return Path(masks_folder) / f"{case}{spec.file_ending}"


def read_prediction_case(images_folder: str | Path, masks_folder: str | Path, case: str, spec: DatasetSpec
                         ) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Images ``(C, Z, Y, X)`` float32, the lesion mask ``(Z, Y, X)`` bool and the geometry.

    Raises :class:`DatasetError` naming the case and file for a missing channel or mask, a
    corrupt file, or a channel or mask whose geometry differs from the first channel's."""
    paths = channel_files(Path(images_folder), case, spec)
    missing = [error(f"channel {channel:04d} ({spec.channel_names[channel]}) is missing", case=case, file=str(path))
               for channel, path in zip(sorted(spec.channel_names), paths) if not path.is_file()]
    if missing:
        raise DatasetError(missing)
    images, geometry = read_channel_files(paths, case)
    path = mask_file(Path(masks_folder), case, spec)
    if not path.is_file():
        raise DatasetError(error("the lesion mask is missing", case=case, file=str(path)))
    label, label_geometry = read_label_map(path, case)
    check_same_geometry(geometry, label_geometry, case, path)
    return images, np.isin(label, spec.lesion_labels), geometry
