"""The file layout of a raw dataset: which cases exist and where their files are.

```
DatasetNNN_Name/dataset.json
               /images{Tr,Ts}/{case}_{cccc}{file_ending}
               /labels{Tr,Ts}/{case}{file_ending}
               /clinical{Tr,Ts}.csv
               /lesions{Tr,Ts}.csv        optional: lesion-level outcomes, one row per lesion
```
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from glmil_auto.dataset.safe_names import check_case_id

TRAINING = "Tr"
TEST = "Ts"
SPLITS = (TRAINING, TEST)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def images_folder(dataset_folder: Path, split: str) -> Path:
    _check_split(split)
    return Path(dataset_folder) / f"images{split}"


def labels_folder(dataset_folder: Path, split: str) -> Path:
    _check_split(split)
    return Path(dataset_folder) / f"labels{split}"


def clinical_file(dataset_folder: Path, split: str) -> Path:
    _check_split(split)
    return Path(dataset_folder) / f"clinical{split}.csv"


def lesion_file(dataset_folder: Path, split: str) -> Path:
    """The optional lesion-level outcome table of a split (``lesionsTr.csv`` / ``lesionsTs.csv``)."""
    _check_split(split)
    return Path(dataset_folder) / f"lesions{split}.csv"


def image_file(dataset_folder: Path, split: str, case: str, channel: int, file_ending: str) -> Path:
    return images_folder(dataset_folder, split) / f"{case}_{channel:04d}{file_ending}"


def label_file(dataset_folder: Path, split: str, case: str, file_ending: str) -> Path:
    return labels_folder(dataset_folder, split) / f"{case}{file_ending}"


def scan_image_files(folder: Path, file_ending: str) -> tuple[dict[str, list[int]], list[str]]:
    """Channels found per case in an images folder, and the file names that fit no ``{case}_{cccc}``.

    Hidden files (such as ``.tmp_*`` left by an interrupted atomic write) are ignored.
    """
    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(file_ending)}$")
    channels: dict[str, list[int]] = defaultdict(list)
    unmatched: list[str] = []
    if not Path(folder).is_dir():
        return {}, []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        match = pattern.match(path.name)
        if match:
            channels[match.group(1)].append(int(match.group(2)))
        else:
            unmatched.append(path.name)
    return {case: sorted(found) for case, found in sorted(channels.items())}, unmatched


def scan_label_files(folder: Path, file_ending: str) -> list[str]:
    """Case ids that have a label file in a labels folder."""
    if not Path(folder).is_dir():
        return []
    return sorted(
        p.name[: -len(file_ending)]
        for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith(file_ending)
    )


def list_cases(dataset_folder: Path, split: str, file_ending: str) -> list[str]:
    """Sorted case ids that have at least one image file in ``images{split}``; a case id that
    cannot be part of an output file name raises :class:`DatasetError` naming its file."""
    channels, _ = scan_image_files(images_folder(dataset_folder, split), file_ending)
    for case, found in channels.items():
        check_case_id(case, image_file(dataset_folder, split, case, found[0], file_ending))
    return list(channels)
