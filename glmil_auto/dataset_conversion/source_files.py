"""Reading source volumes and tables for the converters, with errors that name the case and file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from glmil_auto.dataset.nifti_integrity import is_nifti, truncation_reason
from glmil_auto.dataset.problems import DatasetError, Problem, error, warning

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


def read_table(path: str | Path, sheet: str | None = None) -> pd.DataFrame:
    """A CSV (comma, else ';' or tab) or .xlsx/.xls table with every cell as text (empty cells as ""),
    so that ids such as ``007`` keep their leading zeros. ``sheet`` names the spreadsheet's sheet
    (default: the first); rows whose cells are all empty (spreadsheets often end in blank rows) are
    dropped. :class:`DatasetError` naming the file when it cannot be read, and listing the sheets
    when ``sheet`` is not one of them."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(error("table file is missing", file=str(path)))
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            sheets = pd.ExcelFile(path).sheet_names
            if sheet is not None and sheet not in sheets:
                raise DatasetError(error(f"the workbook has no sheet {sheet!r}; its sheets are {sheets}",
                                         file=str(path)))
            # keep_default_na=False: "NA", "n/a" or "#N/A" stay text, so that they are warned about
            # as values not understood instead of becoming silently unknown
            table = pd.read_excel(path, sheet_name=sheet if sheet is not None else 0, dtype=str,
                                  keep_default_na=False).fillna("")
        else:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            if len(table.columns) == 1:  # a spreadsheet export with ';' or tab separators
                separator = next((s for s in (";", "\t") if s in str(table.columns[0])), None)
                if separator is not None:
                    table = pd.read_csv(path, dtype=str, keep_default_na=False, sep=separator)
    except (ValueError, OSError, ImportError, pd.errors.ParserError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(error(f"cannot read the table ({exc})", file=str(path))) from exc
    table.columns = [str(c).strip() for c in table.columns]
    table = table.apply(lambda column: column.astype(str).str.strip())
    return table[(table != "").any(axis=1)].reset_index(drop=True)


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


def parse_column(values: "pd.Series | list", parse, column: str, cases: list[str], path: str | Path | None
                 ) -> tuple[list, list[Problem]]:
    """``parse`` applied to each cell of the source ``column`` (``cases`` in the same order); an
    empty cell becomes None, and a non-empty cell that ``parse`` turns into None or NaN becomes None
    with a warning naming the case, the column and the value (never a silent drop)."""
    parsed, problems = [], []
    for case, value in zip(cases, list(values)):
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        if text == "":
            parsed.append(None)
            continue
        result = parse(text)
        if result is None or (isinstance(result, float) and np.isnan(result)):
            problems.append(warning(f"column {column!r}: value {text!r} not understood, left unknown", case,
                                    None if path is None else str(path)))
            parsed.append(None)
        else:
            parsed.append(result)
    return parsed, problems


def absent_column_warnings(table: pd.DataFrame, columns: list[str], path: str | Path, what: str = "") -> list[Problem]:
    """One warning per expected but optional column the table lacks (``what``: what is lost)."""
    lost = f" ({what} left out)" if what else ""
    return [warning(f"table has no column {c!r}{lost}; its columns are {list(table.columns)}", file=str(path))
            for c in columns if c not in table.columns]
