"""Lesion-level outcomes: the optional ``lesionsTr.csv`` / ``lesionsTs.csv``, one row per lesion.

Columns (documentation/raw_dataset_format.md):

- the case column (dataset.json ``case_column``, default ``case_id``);
- ``x_mm``, ``y_mm``, ``z_mm``: a point inside the lesion in the image's physical coordinates
  as SimpleITK reports them (ITK/LPS mm), for example the ROI's centroid;
- one column per lesion-level endpoint, named like the binary endpoint it refines
  (``local_failure``: 0 / 1 / empty = unknown), with an optional time column ``<endpoint>_time``;
- any other column (``roi_name``, ``lesion_label``, ...) is allowed and ignored.

A row is matched to a lesion instance (a 26-connected component, see
:func:`glmil_auto.dataset.lesion_instances.find_lesion_instances`): the component that holds the
point's voxel; otherwise the lesion whose centroid is nearest, if within
``MATCH_DISTANCE_MM``; otherwise the row matches nothing (an error). Points are compared in
world coordinates, so the rule holds in any orientation. A lesion without a row is unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from glmil_auto.dataset import layout
from glmil_auto.dataset.clinical_table import _delimiter_hint, _is_missing, _parse_binary, _parse_number
from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.dataset.image_io import Geometry
from glmil_auto.dataset.lesion_instances import LesionInstance
from glmil_auto.dataset.problems import DatasetError, Problem, error, raise_if_errors, warning

COORDINATE_COLUMNS = ("x_mm", "y_mm", "z_mm")
TIME_SUFFIX = "_time"
LINE_COLUMN = "csv_line"  # line of the row in the file (the header is line 1), for messages
MATCH_DISTANCE_MM = 3.0
_ANY_LESION_HINT = 'with "aggregation": "any_lesion" the case fails when any of its lesions fails'


# ----------------------------------------------------------------------------- reading


def read_lesion_text(path: str | Path) -> pd.DataFrame:
    """Every cell of a lesion table as a stripped string ("" when empty); DatasetError naming the file."""
    from glmil_auto.dataset.clinical_table import read_csv_as_text

    return read_csv_as_text(path, "lesion table")


def _endpoint_columns(columns: Sequence[str], spec: DatasetSpec, file: str) -> tuple[list[str], list[str], list[Problem]]:
    """The binary endpoint columns, their time columns, and warnings about time columns left alone."""
    present = set(columns)
    endpoints = [name for name in spec.binary_endpoints if name in present]
    times = [name + TIME_SUFFIX for name in endpoints if name + TIME_SUFFIX in present]
    problems = [
        warning(f"column '{name}{TIME_SUFFIX}' has no '{name}' column beside it and is ignored", file=file)
        for name in spec.binary_endpoints
        if name + TIME_SUFFIX in present and name not in present
    ]
    for name in endpoints:
        if not spec.endpoints[name].any_lesion:
            problems.append(warning(
                f"column '{name}' refines endpoint '{name}', which dataset.json aggregates per case: its lesion "
                "values are matched to lesions but not checked against the case label; declare "
                "\"aggregation\": \"any_lesion\" if the case fails when any lesion fails", file=file))
    return endpoints, times, problems


def _non_binary_endpoint_problems(text_table: pd.DataFrame, spec: DatasetSpec, case_column: str, file: str) -> list[Problem]:
    """A column named like a declared survival endpoint holds outcomes the contract has no place for."""
    problems = []
    for name in spec.survival_endpoints:
        if name not in text_table.columns:
            continue
        filled = text_table[~text_table[name].map(_is_missing)]
        for case in dict.fromkeys(filled[case_column]):
            problems.append(error(
                f"column '{name}' gives lesion outcomes for endpoint '{name}', which is declared "
                f"{spec.endpoints[name].type}: lesion-level outcomes exist only for binary endpoints",
                case=case or None, file=file))
    return problems


def parse_lesion_table(text_table: pd.DataFrame, spec: DatasetSpec, file: str) -> tuple[pd.DataFrame, list[Problem]]:
    """Type a lesion table read as text, and list every problem in it.

    The typed table has the case column (str), ``csv_line`` (int), ``x_mm``, ``y_mm``, ``z_mm``
    (float64), one float64 column per binary endpoint present (0, 1, NaN = unknown) and its
    ``<endpoint>_time`` (float64, NaN when empty) when given. Other columns are dropped.
    """
    case_column = spec.case_column
    missing = [c for c in (case_column, *COORDINATE_COLUMNS) if c not in text_table.columns]
    endpoints, times, problems = _endpoint_columns(list(text_table.columns), spec, file)
    if missing:
        problems = [error(f"lesion table lacks the column(s) {missing} (needed: the case column "
                          f"'{case_column}' and {list(COORDINATE_COLUMNS)}){_delimiter_hint(text_table)}", file=file)]
        return _empty_table(case_column, endpoints, times), problems
    problems += _non_binary_endpoint_problems(text_table, spec, case_column, file)

    cases = text_table[case_column].to_numpy(dtype=object)
    lines = np.arange(len(text_table), dtype=np.int64) + 2
    typed = pd.DataFrame({case_column: cases, LINE_COLUMN: lines})
    for line in lines[cases == ""]:
        problems.append(error(f"line {line} has an empty case id", file=file))
    kinds = [(c, "coordinate") for c in COORDINATE_COLUMNS] + [(c, "binary") for c in endpoints]
    kinds += [(c, "time") for c in times]
    for column, kind in kinds:
        values, column_problems = _parse_cells(text_table[column].to_numpy(), cases, lines, column, kind, file)
        typed[column] = values
        problems += column_problems
    return typed, problems


def _empty_table(case_column: str, endpoints: list[str], times: list[str]) -> pd.DataFrame:
    columns = {case_column: pd.Series(dtype=object), LINE_COLUMN: pd.Series(dtype=np.int64)}
    columns.update({c: pd.Series(dtype=float) for c in (*COORDINATE_COLUMNS, *endpoints, *times)})
    return pd.DataFrame(columns)


def _parse_cells(
    cells: np.ndarray, cases: np.ndarray, lines: np.ndarray, column: str, kind: str, file: str
) -> tuple[np.ndarray, list[Problem]]:
    values = np.full(len(cells), np.nan)
    problems: list[Problem] = []
    rule = {"coordinate": "a finite number (mm)", "binary": "0 or 1 (or empty when unknown)",
            "time": "a number > 0 (or empty)"}[kind]
    for i, cell in enumerate(cells):
        if _is_missing(cell) and kind != "coordinate":
            continue
        parsed = _parse_binary(cell) if kind == "binary" else _parse_number(cell)
        if parsed is None or (kind == "time" and parsed <= 0):
            problems.append(error(f"line {lines[i]}: '{column}' must be {rule}, got {cell!r}",
                                  case=cases[i] or None, file=file))
        else:
            values[i] = parsed
    return values, problems


def read_lesion_table(path: str | Path, spec: DatasetSpec) -> pd.DataFrame:
    """Read and type a lesion table (see :func:`parse_lesion_table`); :class:`DatasetError` listing
    every error, each naming the file (and the case and line where there is one)."""
    typed, problems = parse_lesion_table(read_lesion_text(path), spec, str(path))
    raise_if_errors(problems)
    return typed


def load_lesion_table(dataset_folder: str | Path, split: str, spec: DatasetSpec) -> pd.DataFrame | None:
    """The typed lesion table of a split, or None when the dataset has none."""
    path = layout.lesion_file(Path(dataset_folder), split)
    return read_lesion_table(path, spec) if path.is_file() else None


def lesion_rows_for_case(table: pd.DataFrame | None, case: str, case_column: str) -> pd.DataFrame:
    """The rows of one case (an empty frame when there is no table or no row)."""
    if table is None:
        return pd.DataFrame(columns=[case_column, LINE_COLUMN, *COORDINATE_COLUMNS])
    return table[table[case_column] == case]


def lesion_endpoint_columns(rows: pd.DataFrame) -> list[str]:
    """The endpoint columns of a typed lesion table (not the coordinates, lines or time columns)."""
    fixed = {LINE_COLUMN, *COORDINATE_COLUMNS}
    numeric = [c for c in rows.columns if c not in fixed and rows[c].dtype.kind == "f"]
    return [c for c in numeric if not (c.endswith(TIME_SUFFIX) and c[: -len(TIME_SUFFIX)] in numeric)]


# ----------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class _Match:
    line: int
    point: np.ndarray  # (x, y, z) mm
    label: int | None  # matched lesion label, None when unmatched
    distance_mm: float  # to the nearest centroid (inf without lesions)
    inside_grid: bool


def _match_point(
    point: np.ndarray, labelled: np.ndarray, centroids: np.ndarray, labels: list[int], geometry: Geometry
) -> tuple[int | None, float, bool]:
    index = np.floor(geometry.world_to_index(point) + 0.5).astype(np.int64)
    inside = bool(np.all(index >= 0) and np.all(index < np.asarray(labelled.shape)))
    if inside and labelled[tuple(index)] > 0:
        return int(labelled[tuple(index)]), 0.0, True
    if not labels:
        return None, math.inf, inside
    distances = np.linalg.norm(centroids - point[None, :], axis=1)
    nearest = int(np.argmin(distances))
    label = labels[nearest] if distances[nearest] <= MATCH_DISTANCE_MM else None
    return label, float(distances[nearest]), inside


def _unmatched_message(match: _Match, labelled, centroids, labels, geometry) -> str:
    x, y, z = match.point
    where = "inside no lesion of the mask" if match.inside_grid else "outside the image grid"
    nearest = ("the mask has no lesion" if not labels else
               f"the nearest lesion centroid is {match.distance_mm:.1f} mm away (more than {MATCH_DISTANCE_MM:g} mm)")
    message = f"line {match.line}: the point ({x:.2f}, {y:.2f}, {z:.2f}) mm matches no lesion: it lies {where} and {nearest}"
    flipped = np.array([-x, -y, z])  # RAS coordinates (as 3D Slicer shows them) have x and y negated
    if _match_point(flipped, labelled, centroids, labels, geometry)[0] is not None:
        message += ("; with x and y negated it would match a lesion: give physical LPS coordinates as SimpleITK "
                    "reports them, not RAS")
    return message


def match_lesion_rows(
    rows: pd.DataFrame,
    labelled: np.ndarray,
    instances: Sequence[LesionInstance],
    geometry: Geometry,
    case: str,
    file: str | None = None,
    endpoint_names: Sequence[str] | None = None,
) -> tuple[dict[int, dict[str, float]], list[Problem]]:
    """Match one case's lesion rows to its lesion instances.

    ``labelled`` and ``instances`` are what ``find_lesion_instances(mask, geometry)`` returns.
    Returns ``{lesion label: {endpoint: 0.0 / 1.0 / NaN, <endpoint>_time: value}}`` for each lesion
    matched by exactly one row (time keys only where the table has the time column), and a
    problem for each row that matches no lesion and each lesion that two or more rows match
    (such a lesion is left out of the assignment). ``endpoint_names`` defaults to every endpoint
    column of ``rows``.
    """
    if endpoint_names is None:
        endpoint_names = lesion_endpoint_columns(rows)
    keys = [k for name in endpoint_names for k in (name, name + TIME_SUFFIX) if k in rows.columns]
    labels = [inst.label for inst in instances]
    centroids = np.asarray([inst.centroid_world_mm for inst in instances], dtype=float).reshape(-1, 3)
    points = rows[list(COORDINATE_COLUMNS)].to_numpy(dtype=float) if len(rows) else np.zeros((0, 3))
    lines = rows[LINE_COLUMN].to_numpy() if LINE_COLUMN in rows.columns else np.arange(len(rows)) + 2

    problems: list[Problem] = []
    by_label: dict[int, list[int]] = {}
    for position, (point, line) in enumerate(zip(points, lines)):
        if not np.isfinite(point).all():
            problems.append(error(f"line {int(line)}: the point has no valid {'/'.join(COORDINATE_COLUMNS)}", case, file))
            continue
        label, distance, inside = _match_point(point, labelled, centroids, labels, geometry)
        match = _Match(int(line), point, label, distance, inside)
        if label is None:
            problems.append(error(_unmatched_message(match, labelled, centroids, labels, geometry), case, file))
        else:
            by_label.setdefault(label, []).append(position)

    assignment: dict[int, dict[str, float]] = {}
    for label, positions in sorted(by_label.items()):
        if len(positions) > 1:
            where = ", ".join(str(int(lines[p])) for p in positions)
            centroid = ", ".join(f"{v:.2f}" for v in instances[labels.index(label)].centroid_world_mm)
            problems.append(error(f"lines {where} all match lesion {label} (centroid ({centroid}) mm): "
                                  "give one row per lesion", case, file))
            continue
        row = rows.iloc[positions[0]]
        assignment[label] = {key: float(row[key]) for key in keys}
    return assignment, problems


def lesion_outcomes_for_case(
    table_rows_of_case: pd.DataFrame,
    labelled: np.ndarray,
    instances: Sequence[LesionInstance],
    geometry: Geometry,
    endpoint_names: Sequence[str],
    case: str | None = None,
    file: str | None = None,
) -> dict[int, dict[str, float]]:
    """``{lesion label: {endpoint: 0.0 / 1.0 / NaN}}`` for EVERY lesion of one case (NaN = unknown,
    also for a lesion without a row or an endpoint the table lacks).

    ``endpoint_names`` may also name time columns (``local_failure_time``). A row matching no
    lesion, or two rows on one lesion, raise :class:`DatasetError` with every such problem.
    """
    assignment, problems = match_lesion_rows(
        table_rows_of_case, labelled, instances, geometry, case, file, endpoint_names=_base_names(endpoint_names)
    )
    raise_if_errors(problems)
    return {
        inst.label: {name: assignment.get(inst.label, {}).get(name, math.nan) for name in endpoint_names}
        for inst in instances
    }


def _base_names(names: Sequence[str]) -> list[str]:
    """Endpoint names with time columns folded onto their endpoint (the matcher adds the times)."""
    return list(dict.fromkeys(n[: -len(TIME_SUFFIX)] if n.endswith(TIME_SUFFIX) else n for n in names))


# ----------------------------------------------------------------------------- consistency


def case_consistency_problems(
    case: str,
    case_outcomes: Mapping[str, float],
    lesion_outcomes: Mapping[int, Mapping[str, float]],
    endpoint_names: Sequence[str],
    file: str | None = None,
) -> list[Problem]:
    """Errors where a case label contradicts its lesions, for ``"any_lesion"`` endpoints.

    ``case_outcomes``: the case's labels from the clinical table (NaN = unknown).
    ``lesion_outcomes``: every lesion of the case (as :func:`lesion_outcomes_for_case` returns).
    A case labelled 0 must not have a failed lesion; a case labelled 1 must have at least one
    lesion that is not known to be 0.
    """
    problems = []
    for name in endpoint_names:
        value = case_outcomes.get(name, math.nan)
        lesion_values = {label: outcome.get(name, math.nan) for label, outcome in lesion_outcomes.items()}
        failed = [label for label, v in lesion_values.items() if v == 1.0]
        if value == 0.0 and failed:
            problems.append(error(
                f"'{name}' is 0 for the case in the clinical table but lesion(s) {failed} are 1 in the lesion "
                f"table: {_ANY_LESION_HINT}", case, file))
        if value == 1.0 and lesion_values and all(v == 0.0 for v in lesion_values.values()):
            problems.append(error(
                f"'{name}' is 1 for the case in the clinical table but every one of its {len(lesion_values)} "
                f"lesion(s) is 0 in the lesion table: {_ANY_LESION_HINT}", case, file))
    return problems


# ----------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class CaseLesionCheck:
    """What the verifier needs to check one case's lesion rows next to its mask (picklable)."""

    rows: pd.DataFrame
    case_outcomes: dict[str, float]
    any_lesion_endpoints: tuple[str, ...]
    file: str


def check_lesion_table(
    path: str | Path, spec: DatasetSpec, cases: Sequence[str], split: str
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read a split's lesion table and list its table-level problems (bad cells, missing columns,
    rows whose case is not in the split). Returns the typed table (None when unreadable)."""
    try:
        text_table = read_lesion_text(path)
    except DatasetError as exc:
        return None, exc.problems
    typed, problems = parse_lesion_table(text_table, spec, str(path))
    if spec.case_column not in text_table.columns:
        return None, problems
    for case in sorted(set(typed[spec.case_column]) - set(cases) - {""}):
        problems.append(error(f"case has rows in the lesion table but no images in images{split}", case, str(path)))
    return typed, problems


def case_lesion_check(
    table: pd.DataFrame, spec: DatasetSpec, case: str, case_outcomes: Mapping[str, float], file: str
) -> CaseLesionCheck | None:
    """The per-case check input, or None when the case has no row (a lesion without a row is unknown)."""
    rows = lesion_rows_for_case(table, case, spec.case_column)
    rows = rows[np.isfinite(rows[list(COORDINATE_COLUMNS)].to_numpy(dtype=float)).all(axis=1)]  # bad ones are reported
    if rows.empty:
        return None
    present = set(lesion_endpoint_columns(rows))
    endpoints = tuple(name for name in spec.any_lesion_endpoints if name in present)
    return CaseLesionCheck(rows.reset_index(drop=True), dict(case_outcomes), endpoints, file)


def check_case_lesions(
    check: CaseLesionCheck, labelled: np.ndarray, instances: Sequence[LesionInstance], geometry: Geometry, case: str
) -> list[Problem]:
    """Every problem of one case's lesion rows: unmatched rows, two rows on one lesion, and case
    labels that contradict the lesions (``"any_lesion"`` endpoints only)."""
    assignment, problems = match_lesion_rows(check.rows, labelled, instances, geometry, case, check.file)
    if not check.any_lesion_endpoints:
        return problems
    # unmatched rows add nothing and a lesion with two rows stays unknown, so the rest is still judged
    lesion_outcomes = {
        inst.label: {name: assignment.get(inst.label, {}).get(name, math.nan) for name in check.any_lesion_endpoints}
        for inst in instances
    }
    return problems + case_consistency_problems(case, check.case_outcomes, lesion_outcomes,
                                                check.any_lesion_endpoints, check.file)
