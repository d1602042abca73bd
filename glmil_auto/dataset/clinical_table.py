"""The clinical table (``clinicalTr.csv`` / ``clinicalTs.csv``) typed by ``dataset.json``.

Cells are read as text and parsed here, so that every bad cell is reported with its case and
column instead of pandas silently turning a column into strings. An empty cell (or ``NA``,
``NaN``, ``null``, ``none``, any case) means unknown.

Typed columns: ``numeric`` -> float64 (NaN when unknown); ``binary`` -> float64 in {0, 1, NaN};
``categorical`` -> object (str, or NaN when unknown). Binary endpoints are float64 in
{0, 1, NaN}; a survival endpoint's time is float64 (> 0) and its event float64 in {0, 1}.
The table is indexed by the case id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.dataset.problems import DatasetError, Problem, error, raise_if_errors, warning

MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a"})
_TRUE_TOKENS = {"1", "1.0", "true", "yes"}
_FALSE_TOKENS = {"0", "0.0", "false", "no"}


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_TOKENS


def _parse_number(cell: str) -> float | None:
    if "_" in cell:  # Python's float() reads "4_5" as 45; a table cell with "_" is not a number
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _parse_binary(cell: str) -> float | None:
    token = cell.strip().lower()
    if token in _TRUE_TOKENS:
        return 1.0
    if token in _FALSE_TOKENS:
        return 0.0
    return None


def read_csv_as_text(path: str | Path, what: str = "clinical table") -> pd.DataFrame:
    """Every cell as a stripped string ("" when empty); raises DatasetError naming the file and
    ``what`` it is (the clinical table, the lesion table)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(error(f"{what} is missing", file=str(path)))
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(error(f"{what} cannot be parsed as CSV ({exc})", file=str(path))) from exc
    table.columns = [str(c).strip() for c in table.columns]
    return table.apply(lambda column: column.str.strip())


def _delimiter_hint(text_table: pd.DataFrame) -> str:
    """A hint when the header was read as one column because the file uses another separator."""
    if len(text_table.columns) != 1:
        return ""
    header = str(text_table.columns[0])
    for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")):
        if delimiter in header:
            return (f"; the header was read as the single column {header[:60]!r}: the file seems to be separated by "
                    f"{name}, save it comma-separated (the CSV standard)")
    return ""


def parse_clinical_table(
    text_table: pd.DataFrame,
    spec: DatasetSpec,
    file: str,
    expected_cases: list[str] | None = None,
    require_endpoints: bool = True,
) -> tuple[pd.DataFrame, list[Problem]]:
    """Type a text table and list every problem in it.

    ``expected_cases``: the cases that have images; each must have exactly one row and no
    other ids may appear. ``require_endpoints=False`` (held-out cases) turns missing endpoint
    columns into a warning: such cases can be predicted but not evaluated.
    """
    problems: list[Problem] = []
    case_col = spec.case_column
    if case_col not in text_table.columns:
        problems.append(error(f"case column '{case_col}' (dataset.json 'case_column') is missing"
                              f"{_delimiter_hint(text_table)}", file=file))
        return pd.DataFrame(), problems

    ids = text_table[case_col]
    for row_number in np.flatnonzero((ids == "").to_numpy()):
        problems.append(error(f"row {row_number + 2} has an empty case id", file=file))
    duplicated = sorted(set(ids[ids.duplicated() & (ids != "")]))
    for case in duplicated:
        problems.append(error("case appears in more than one row", case=case, file=file))
    if expected_cases is not None:
        known = set(expected_cases)
        for case in sorted(set(ids) - known - {""}):
            problems.append(error("case id in the clinical table has no images", case=case, file=file))
        for case in sorted(known - set(ids)):
            problems.append(error("case has images but no row in the clinical table", case=case, file=file))

    typed = pd.DataFrame(index=pd.Index(ids.to_numpy(), name=case_col))
    declared: list[tuple[str, str, bool]] = []  # (column, kind, required)
    if spec.group_column:
        declared.append((spec.group_column, "group", True))
    if spec.patient_column and spec.patient_column not in (spec.group_column, case_col):
        declared.append((spec.patient_column, "group", True))
    declared += [(name, kind, True) for name, kind in spec.clinical_features.items()]
    for endpoint in spec.endpoints.values():
        if endpoint.type == "binary":
            declared.append((endpoint.name, "binary_endpoint", require_endpoints))
        else:
            declared.append((endpoint.time, "survival_time", require_endpoints))
            declared.append((endpoint.event, "survival_event", require_endpoints))

    for column, kind, required in declared:
        if column not in text_table.columns:
            report = error if required else warning
            suffix = "" if required else "; these cases can be predicted but not evaluated on it"
            problems.append(report(f"declared column '{column}' ({kind}) is missing{suffix}", file=file))
            continue
        values, column_problems = _parse_column(text_table[column].to_numpy(), ids.to_numpy(), column, kind, file)
        typed[column] = values
        problems += column_problems

    problems += _check_survival_pairs(text_table, spec, file)
    return typed, problems


def _parse_column(
    cells: np.ndarray, ids: np.ndarray, column: str, kind: str, file: str
) -> tuple[np.ndarray, list[Problem]]:
    problems: list[Problem] = []
    if kind in ("categorical", "group"):
        values = np.array([np.nan if _is_missing(c) else c for c in cells], dtype=object)
        if kind == "group":
            for case in ids[[_is_missing(c) for c in cells]]:
                problems.append(error(f"group column '{column}' is empty", case=case, file=file))
        return values, problems

    values = np.full(len(cells), np.nan)
    for i, (case, cell) in enumerate(zip(ids, cells)):
        if _is_missing(cell):
            continue
        if kind in ("binary", "binary_endpoint", "survival_event"):
            parsed = _parse_binary(cell)
            rule = "0 or 1 (or empty when unknown)"
        else:
            parsed = _parse_number(cell)
            rule = "a finite number"
            if parsed is not None and kind == "survival_time" and parsed <= 0:
                problems.append(error(f"'{column}' must be > 0, got {cell!r}", case=case, file=file))
                continue
        if parsed is None:
            problems.append(error(f"'{column}' must be {rule}, got {cell!r}", case=case, file=file))
        else:
            values[i] = parsed
    return values, problems


def _check_survival_pairs(text_table: pd.DataFrame, spec: DatasetSpec, file: str) -> list[Problem]:
    """A survival endpoint needs both time and event, or neither (then the case is left out of it).

    Judged on the text cells, so an invalid cell is reported once (by its column) and not again here.
    """
    problems = []
    ids = text_table[spec.case_column].to_numpy()
    for endpoint in spec.endpoints.values():
        if endpoint.type != "survival" or not {endpoint.time, endpoint.event} <= set(text_table.columns):
            continue
        time_missing = np.array([_is_missing(c) for c in text_table[endpoint.time]], dtype=bool)
        event_missing = np.array([_is_missing(c) for c in text_table[endpoint.event]], dtype=bool)
        for case in ids[time_missing != event_missing]:
            problems.append(
                error(
                    f"survival endpoint '{endpoint.name}' has only one of '{endpoint.time}' and "
                    f"'{endpoint.event}'; give both or leave both empty",
                    case=case,
                    file=file,
                )
            )
        n_unknown = int((time_missing & event_missing).sum())
        if n_unknown:
            problems.append(
                warning(f"{n_unknown} case(s) have no '{endpoint.name}' outcome and are left out of it", file=file)
            )
    return problems


def read_clinical_table(
    path: str | Path,
    spec: DatasetSpec,
    expected_cases: list[str] | None = None,
    require_endpoints: bool = True,
) -> pd.DataFrame:
    """Read and type a clinical table; raises :class:`DatasetError` listing every error in it."""
    text_table = read_csv_as_text(path)
    typed, problems = parse_clinical_table(text_table, spec, str(path), expected_cases, require_endpoints)
    raise_if_errors(problems)
    return typed


def binary_targets(table: pd.DataFrame, endpoint: str) -> np.ndarray:
    """float64 array in {0, 1, NaN}, NaN where the outcome is unknown."""
    return table[endpoint].to_numpy(dtype=float)


def survival_targets(table: pd.DataFrame, spec: DatasetSpec, endpoint: str) -> tuple[np.ndarray, np.ndarray]:
    """``(time, event)`` float64 arrays for a survival endpoint (NaN where unknown)."""
    declared = spec.endpoints[endpoint]
    return table[declared.time].to_numpy(dtype=float), table[declared.event].to_numpy(dtype=float)


def survival_structured_array(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """scikit-survival's structured ``y`` (fields ``event`` bool, ``time`` float) for known outcomes.

    Rows with an unknown outcome must be removed first; this raises if any remain.
    """
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    if np.isnan(time).any() or np.isnan(event).any():
        raise ValueError("remove cases with unknown survival outcome before building the sksurv array")
    y = np.empty(len(time), dtype=[("event", bool), ("time", float)])
    y["event"] = event.astype(bool)
    y["time"] = time
    return y
