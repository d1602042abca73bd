"""Where glmil_auto keeps its data, and how a dataset is found by id or by name.

Three environment variables, as in nnU-Net: ``glmil_raw``, ``glmil_preprocessed`` and
``glmil_results``. When one is unset it defaults to ``./glmil_data/{raw,preprocessed,results}``
relative to the current working directory, so that a new user needs no setup. The variables
are read at call time (not at import), so a test or a notebook can change them on the fly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DATASET_FOLDER_PATTERN = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9][A-Za-z0-9_\-]*)$")

_DEFAULT_SUBFOLDERS = {
    "glmil_raw": "raw",
    "glmil_preprocessed": "preprocessed",
    "glmil_results": "results",
}


class DatasetNotFoundError(LookupError):
    """Raised when a dataset id or name matches no dataset folder, or more than one."""


def _base_folder(variable: str) -> Path:
    value = os.environ.get(variable)
    if value:
        return Path(value).expanduser()
    return Path.cwd() / "glmil_data" / _DEFAULT_SUBFOLDERS[variable]


def raw_folder() -> Path:
    """The raw datasets folder (``$glmil_raw`` or ``./glmil_data/raw``)."""
    return _base_folder("glmil_raw")


def preprocessed_folder() -> Path:
    """The preprocessed datasets folder (``$glmil_preprocessed`` or ``./glmil_data/preprocessed``)."""
    return _base_folder("glmil_preprocessed")


def results_folder() -> Path:
    """The trained models folder (``$glmil_results`` or ``./glmil_data/results``)."""
    return _base_folder("glmil_results")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetNNN_Name`` for an id and a name, checked against the naming rule."""
    folder = f"Dataset{int(dataset_id):03d}_{name}"
    if not DATASET_FOLDER_PATTERN.match(folder):
        raise ValueError(
            f"'{folder}' is not a valid dataset folder name: the id must be 0-999 and the name "
            "may hold letters, digits, '_' and '-' only"
        )
    return folder


def _dataset_folders(base: Path) -> list[str]:
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and DATASET_FOLDER_PATTERN.match(p.name))


def resolve_dataset_name(identifier: str | int, search_folders: list[Path] | None = None) -> str:
    """Turn ``917``, ``"917"``, ``"Dataset917_HoldoutMets"`` or ``"HoldoutMets"`` into the folder name.

    The raw, preprocessed and results folders are searched (a trained model can be used on a
    machine that has no raw data). A clear :class:`DatasetNotFoundError` lists what was found when
    the identifier matches nothing or more than one name.
    """
    folders = search_folders if search_folders is not None else [
        raw_folder(), preprocessed_folder(), results_folder()
    ]
    available = sorted({name for base in folders for name in _dataset_folders(base)})
    text = str(identifier).strip()
    if DATASET_FOLDER_PATTERN.match(text):
        matches = [text] if text in available else []
    elif text.isdigit():
        matches = [n for n in available if int(DATASET_FOLDER_PATTERN.match(n).group(1)) == int(text)]
    else:
        matches = [n for n in available if DATASET_FOLDER_PATTERN.match(n).group(2) == text]

    if len(matches) == 1:
        return matches[0]
    searched = ", ".join(str(f) for f in folders)
    found = ", ".join(available) if available else "none"
    if not matches:
        raise DatasetNotFoundError(
            f"No dataset matches '{identifier}'. Searched: {searched}. Datasets found: {found}. "
            "Set glmil_raw / glmil_preprocessed / glmil_results or create the dataset first."
        )
    raise DatasetNotFoundError(
        f"Dataset identifier '{identifier}' is ambiguous: it matches {', '.join(matches)}. "
        "Use the full folder name, or give the datasets different ids."
    )


def raw_dataset_folder(identifier: str | int) -> Path:
    """The raw folder of a dataset, looked up by id or name among the raw datasets only."""
    name = resolve_dataset_name(identifier, [raw_folder()])
    return raw_folder() / name
