"""What the UCSF-BMSR and BraTS-METS / Pretreat-MetsToBrain-Masks converters share: finding case
folders and tables somewhere below the download root, picking a workbook's sheet, and matching,
reporting and parsing the table columns they know.

Downloads are unpacked in different ways (the package folder, an inner folder, a parent holding
several parts), so case folders are searched a few levels below ``-i`` instead of directly in it,
and the clinical table is searched below ``-i`` and in its parent. Every column the converters use
is reported: a ``NOTE`` lists the columns found (and those not used), a warning names each expected
column that is absent, and :func:`~glmil_auto.dataset_conversion.source_files.parse_column` warns
for every cell that does not parse.
"""

from __future__ import annotations

import fnmatch
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from glmil_auto.dataset.problems import DatasetError, Problem, error, note, warning
from glmil_auto.dataset_conversion.source_files import parse_column, read_table, require_columns

MAX_DEPTH = 3  # case folders and tables are searched this many folder levels below -i
SKIPPED_FOLDERS = ("__MACOSX",)  # archive debris (its "._" files would look like cases)
SPREADSHEETS = (".xlsx", ".xls")


def subfolders(folder: Path) -> list[Path]:
    """The visible sub-folders of ``folder``, sorted (hidden and archive-debris folders left out)."""
    try:
        children = list(folder.iterdir())
    except OSError:
        return []
    return sorted(p for p in children if p.is_dir() and not p.name.startswith(".") and p.name not in SKIPPED_FOLDERS)


def find_folders(root: Path, is_case: Callable[[Path], bool], max_depth: int = MAX_DEPTH) -> list[Path]:
    """Folders ``is_case`` accepts, ``root`` itself or up to ``max_depth`` levels below it; the
    search does not go into an accepted folder."""
    found, level = [], [Path(root)]
    for depth in range(max_depth + 1):
        deeper = []
        for folder in level:
            if is_case(folder):
                found.append(folder)
            elif depth < max_depth:
                deeper += subfolders(folder)
        level = deeper
    return found


def unique_by_name(folders: list[Path]) -> tuple[list[Path], list[Problem]]:
    """The folders sorted by name (the case id); a name found in several places (the same case in
    two parts of a download) is an error naming every folder, and none of them is kept."""
    by_name: dict[str, list[Path]] = {}
    for folder in folders:
        by_name.setdefault(folder.name, []).append(folder)
    problems = [error(f"the case folder is in {len(places)} places: {', '.join(str(p) for p in places)} "
                      "(keep one of them)", name, str(places[0]))
                for name, places in sorted(by_name.items()) if len(places) > 1]
    return [places[0] for _, places in sorted(by_name.items()) if len(places) == 1], problems


def files_below(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """The visible files of ``root`` and of its folders up to ``max_depth`` levels below, sorted by
    depth then path (Excel's ``~$`` lock files left out)."""
    out, level = [], [Path(root)]
    for depth in range(max_depth + 1):
        for folder in level:
            try:
                out += sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "~$")))
            except OSError:
                continue
        level = [child for folder in level for child in subfolders(folder)] if depth < max_depth else []
    return out


@dataclass(frozen=True)
class TableSearch:
    """Files whose name matches one of ``patterns`` (case-insensitive globs), in the download root
    and its folders up to ``depth`` levels below, and directly in its parent when ``parent``."""

    patterns: tuple[str, ...]
    depth: int = MAX_DEPTH
    parent: bool = True

    def matches(self, root: Path) -> list[Path]:
        files = files_below(root, self.depth)
        if self.parent:
            files += files_below(Path(root).resolve().parent, 0)
        return [f for f in files if any(fnmatch.fnmatch(f.name.lower(), p.lower()) for p in self.patterns)]


def find_table(root: Path, searches: list[TableSearch], option: str) -> Path | None:
    """The table of a download: the single match of the first of ``searches`` (best first) that
    matches anything; None when none does; :class:`DatasetError` listing the candidates and
    ``option`` when that search matches several files."""
    for search in searches:
        found = search.matches(root)
        if len(found) == 1:
            return found[0]
        if found:
            raise DatasetError(error(f"several candidate tables: {', '.join(str(f) for f in found)}; choose one "
                                     f"with {option} PATH", file=str(root)))
    return None


def choose_sheet(path: Path, preferred: str, id_column: str, sheet: str | None = None
                 ) -> tuple[str | None, list[Problem]]:
    """The sheet of the workbook ``path`` to read: ``sheet`` when given (``read_table`` lists the
    sheets when it is missing), else ``preferred``, else the first sheet holding ``id_column``
    (warning). None for a CSV. :class:`DatasetError` naming the file and its sheets otherwise."""
    if Path(path).suffix.lower() not in SPREADSHEETS:
        return None, []
    if sheet is not None:
        return sheet, []
    try:
        with pd.ExcelFile(path) as workbook:
            names = [str(s) for s in workbook.sheet_names]
            if preferred in names:
                return preferred, []
            for name in names:
                header = [str(c).strip() for c in pd.read_excel(workbook, sheet_name=name, nrows=0).columns]
                if id_column in header:
                    return name, [warning(f"the workbook has no sheet {preferred!r}; read sheet {name!r} (the first "
                                          f"with column {id_column!r}); its sheets are {names}", file=str(path))]
    except (ValueError, OSError, ImportError, zipfile.BadZipFile) as exc:
        raise DatasetError(error(f"cannot read the workbook ({exc})", file=str(path))) from exc
    raise DatasetError(error(f"the workbook has no sheet {preferred!r} and no sheet with column {id_column!r}; its "
                             f"sheets are {names}; choose one with --sheet NAME", file=str(path)))


def normalised(name: str) -> str:
    """A column name compared ignoring case, spaces and punctuation (``Primary cancer`` = ``primary_cancer``)."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def match_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    """The first column of ``columns`` equal to one of ``names`` (tried in order, ignoring case,
    spaces and punctuation), or None."""
    for name in names:
        for column in columns:
            if normalised(column) == normalised(name):
                return column
    return None


@dataclass(frozen=True)
class ColumnSpec:
    """A table column a converter reads.

    ``names``: the expected source names, best first (matched by :func:`match_column`);
    ``column``: its column in clinicalTr.csv; ``kind``: the clinical-feature type it is declared
    as (None: copied, not declared); ``verified``: whether ``names[0]`` was verified in the real
    file (else the name is not confirmed); ``key``: for ``--column KEY=NAME``.
    """

    key: str
    names: tuple[str, ...]
    column: str
    kind: str | None
    parse: Callable[[str], object]
    verified: bool


def resolve_columns(table: pd.DataFrame, specs: list[ColumnSpec], overrides: dict[str, str], path: Path
                    ) -> tuple[dict[str, str], list[Problem]]:
    """key -> source column for each spec found (``overrides`` first: a name given there must
    exist, else :class:`DatasetError`), plus a warning naming each column not found."""
    resolved, problems = {}, []
    for spec in specs:
        if spec.key in overrides:
            require_columns(table, [overrides[spec.key]], path)
            resolved[spec.key] = overrides[spec.key]
        elif (name := match_column(list(table.columns), spec.names)) is not None:
            resolved[spec.key] = name
        else:
            status = "verified in the real file" if spec.verified else "name not confirmed"
            problems.append(warning(f"table has no column {spec.names[0]!r} ({status}): {spec.column} left out; name "
                                    f"it with --column {spec.key}=NAME; the table's columns are {list(table.columns)}",
                                    file=str(path)))
    return resolved, problems


def read_keyed_table(path: Path, preferred_sheet: str, id_column: str, sheet: str | None,
                     specs: list[ColumnSpec], overrides: dict[str, str]
                     ) -> tuple[pd.DataFrame, str | None, dict[str, str], list[Problem], list[Problem]]:
    """The table of ``path`` (sheet by :func:`choose_sheet`), checked for ``id_column``, with
    ``key -> source column`` of the ``specs`` found (:func:`resolve_columns`), the sheet choice's
    problems and the absent columns' warnings."""
    chosen, problems = choose_sheet(path, preferred_sheet, id_column, sheet)
    table = read_table(path, chosen)
    require_columns(table, [id_column], path)
    resolved, found = resolve_columns(table, specs, overrides, path)
    return table, chosen, resolved, problems, found


def columns_note(table: pd.DataFrame, resolved: dict[str, str], path: Path) -> Problem:
    """One ``NOTE`` naming the columns used (``key <- column``) and those not used."""
    used = ", ".join(f"{key} <- {name!r}" for key, name in resolved.items()) or "none"
    unused = [c for c in table.columns if c not in resolved.values()]
    return note(f"table columns used: {used}; not used: {unused or 'none'}", file=str(path))


def rows_by_id(table: pd.DataFrame, id_column: str, cases: list[str], path: Path, what: str
               ) -> tuple[pd.DataFrame, list[Problem]]:
    """The table's rows reindexed on ``cases`` (a case without a row gets empty cells and a warning;
    a repeated id a warning, the first row used) and a note counting rows without a case folder."""
    ids = table[id_column]
    problems = [warning(f"{int((ids == case).sum())} rows in the {what}: the first is used", case, str(path))
                for case in sorted(set(ids[ids.duplicated()]) & set(cases))]
    problems += [warning(f"no row in the {what}: its variables are unknown", case, str(path))
                 for case in cases if case not in set(ids)]
    extra = sorted(set(ids) - set(cases) - {""})
    if extra:
        problems.append(note(f"rows of the {what} without a converted case folder: {len(extra)} (first: "
                             f"{', '.join(extra[:5])})", file=str(path)))
    return table.drop_duplicates(id_column).set_index(id_column).reindex(cases), problems


def parsed_columns(rows: pd.DataFrame, resolved: dict[str, str], specs: list[ColumnSpec], cases: list[str],
                   path: Path) -> tuple[dict[str, list], dict[str, str], list[Problem]]:
    """clinicalTr.csv column -> values for each resolved spec, the declared features, and a
    warning per cell that does not parse (naming the case, column and value)."""
    values, features, problems = {}, {}, []
    for spec in specs:
        if spec.key not in resolved:
            continue
        values[spec.column], found = parse_column(rows[resolved[spec.key]], spec.parse, resolved[spec.key], cases, path)
        problems += found
        if spec.kind is not None:
            features[spec.column] = spec.kind
    return values, features, problems
