"""Names that become parts of file names, and output paths that provably stay in their folder.

Endpoint, channel and clinical-feature names from dataset.json (and from a model folder's plans
copied from elsewhere) and case ids taken from file names end up in output file names such as
``<case>_<endpoint>_gradcam.nii.gz``. A name like ``../../evil`` would write outside the output
folder, so every such name must match :data:`SAFE_NAME` and every output path is built with
:func:`path_inside`, which refuses anything that is not a direct child of its folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from glmil_auto.dataset.problems import DatasetError, Problem, error

# letters, digits, '_', '-', '.', '+', '%', '(', ')' and spaces; starting with a letter, digit or '_'
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+()%\- ]{0,127}")
ALLOWED = "letters, digits, '_', '-', '.', '+', '%', '(', ')' and spaces, starting with a letter, digit or '_' (at most 128)"
SAFE_FILE_ENDING = re.compile(r"(\.[A-Za-z0-9]+)+")


def unsafe_reason(name: Any) -> str | None:
    """Why ``name`` cannot be part of a file name, or None when it can."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not SAFE_NAME.fullmatch(name):
        return f"may only hold {ALLOWED}"
    if ".." in name:
        return "must not contain '..'"
    if name.endswith((" ", ".")):
        return "must not end with a space or a dot"
    return None


def name_problems(names: Any, what: str, file: str | None = None, case: str | None = None) -> list[Problem]:
    """One error per unsafe name (``what`` says which kind, e.g. "endpoint name")."""
    return [error(f"{what} {name!r} {reason}", case=case, file=file)
            for name in names if (reason := unsafe_reason(name)) is not None]


def check_case_id(case: str, file: str | Path | None = None) -> None:
    """Raise :class:`DatasetError` naming the file when a case id cannot be part of a file name."""
    reason = unsafe_reason(case)
    if reason is not None:
        raise DatasetError(error(f"case id {case!r} (from the file name) {reason}; rename the file", case=case,
                                 file=None if file is None else str(file)))


def path_inside(folder: str | Path, file_name: str) -> Path:
    """``folder / file_name``, refusing (ValueError) anything but a direct child of ``folder``.

    The check is lexical (no symlinks are followed), so it holds for files that do not exist yet.
    """
    base = os.path.normpath(os.path.abspath(folder))
    target = os.path.normpath(os.path.join(base, file_name))
    if os.path.dirname(target) != base or os.path.basename(target) in ("", ".", ".."):
        raise ValueError(f"refusing to write {file_name!r}: it is not a file directly inside {folder}")
    return Path(target)
