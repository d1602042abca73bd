"""Reading source volumes and tables for the converters, with errors that name the case and file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from glmil_auto.dataset.nifti_integrity import is_nifti, truncation_reason
from glmil_auto.dataset.problems import DatasetError, error

TRUE_WORDS = {"1", "1.0", "yes", "y", "true", "t", "present", "positive"}
FALSE_WORDS = {"0", "0.0", "no", "n", "false", "f", "absent", "negative", "none"}


def read_volume(path: str | Path, case: str | None = None) -> sitk.Image:
    """One 3D scalar volume as a SimpleITK image; :class:`DatasetError` naming the case and file
    when it is missing, truncated (SimpleITK would zero-fill a truncated .nii.gz), unreadable or
    not 3D."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(error("file is missing", case=case, file=str(path)))
    if is_nifti(path) and (reason := truncation_reason(path)) is not None:
        raise DatasetError(error(f"unreadable or truncated image file ({reason})", case=case, file=str(path)))
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        raise DatasetError(error(f"unreadable image file ({lines[-1] if lines else type(exc).__name__})",
                                 case=case, file=str(path))) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DatasetError(error(f"expected a 3D single-component volume, got {image.GetDimension()}D with "
                                 f"{image.GetNumberOfComponentsPerPixel()} component(s)", case=case, file=str(path)))
    return image


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (comma, else ';' or tab) or .xlsx/.xls table with every cell as text (empty cells as ""),
    so that ids such as ``007`` keep their leading zeros; :class:`DatasetError` naming the file when it
    cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(error("table file is missing", file=str(path)))
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            table = pd.read_excel(path, dtype=str).fillna("")
        else:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            if len(table.columns) == 1:  # a spreadsheet export with ';' or tab separators
                separator = next((s for s in (";", "\t") if s in str(table.columns[0])), None)
                if separator is not None:
                    table = pd.read_csv(path, dtype=str, keep_default_na=False, sep=separator)
    except (ValueError, OSError, ImportError, pd.errors.ParserError) as exc:
        raise DatasetError(error(f"cannot read the table ({exc})", file=str(path))) from exc
    table.columns = [str(c).strip() for c in table.columns]
    return table.apply(lambda column: column.str.strip())


def require_columns(table: pd.DataFrame, columns: list[str], path: str | Path) -> None:
    """:class:`DatasetError` listing the columns ``table`` (read from ``path``) lacks."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DatasetError(error(f"table lacks column(s) {missing}; it has {list(table.columns)}", file=str(path)))


def to_binary(value: object) -> float:
    """1.0 / 0.0 from yes/no, true/false, 1/0, present/absent (any case); NaN when unknown or other."""
    text = str(value).strip().lower() if value is not None else ""
    if text in TRUE_WORDS:
        return 1.0
    if text in FALSE_WORDS:
        return 0.0
    return float("nan")


def to_number(value: object) -> float:
    """A finite float, or NaN for an empty or non-numeric cell."""
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return float("nan")
    return number if np.isfinite(number) else float("nan")
