"""Tie each ``lesion_level`` row of Brain-TR-GammaKnife to one RTSTRUCT ROI of its course, from
``Lesion Name in NRRD files`` and ``Lesion #``, and say when the match is in doubt.

The spreadsheet names a lesion as its NRRD file does, not as the RTSTRUCT does. The authors'
sample preprocessing names lesion files ``<patient><course>_L_<ROI name without its non-word
characters>``, so the two names may differ in spaces and punctuation (not confirmed for the
spreadsheet). Rules, in order (:func:`match_roi`):

1. ``exact``: one ROI named exactly like the cell (stripped): matched, nothing reported;
2. ``loose``: one ROI whose name equals the cell (or the cell without a ``.nrrd`` / ``.nii(.gz)``
   ending, or the part after its first ``_L_``) ignoring case, spaces and punctuation: matched,
   reported; several such ROIs: ambiguous;
3. ``number``: one ROI holding ``Lesion #`` as a number of its own (``7`` in ``Met 7`` but not in
   ``Met 17``): matched, reported; several: ambiguous;
4. otherwise none.

Ambiguous and unmatched rows are left out of the lesion table (reported). Two rows of one course
matching one ROI are both left out, and so is a ROI whose name another selected ROI repeats up to
case and spaces (the lesion table could not tell them apart).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from glmil_auto.dataset_conversion.brain_tr_tables import LesionRow
from glmil_auto.dataset_conversion.lesion_outcome_table import roi_key

EXACT, LOOSE, NUMBER, AMBIGUOUS, NONE, DUPLICATE = "exact", "loose", "number", "ambiguous", "none", "duplicate"
_ENDINGS = re.compile(r"\.(nrrd|nii(\.gz)?)$", re.IGNORECASE)


@dataclass(frozen=True)
class RoiMatch:
    """How one row found its ROI: ``roi`` is None when the row is left out."""

    roi: str | None
    how: str
    candidates: tuple[str, ...] = ()

    @property
    def reported(self) -> bool:
        return self.how != EXACT


def loose_key(name: str) -> str:
    """The name without case, spaces, underscores or punctuation."""
    return re.sub(r"[\W_]+", "", str(name)).casefold()


def name_variants(name: str) -> list[str]:
    """The cell, without a file ending, and the part after its first ``_L_`` (NRRD file names)."""
    stem = _ENDINGS.sub("", name.strip())
    variants = [name.strip(), stem]
    if "_L_" in stem:
        variants.append(stem.split("_L_", 1)[1])
    return [v for v in dict.fromkeys(variants) if v]


def _with_number(rois: list[str], number: str) -> list[str]:
    digits = number.strip()
    if digits.endswith(".0"):
        digits = digits[:-2]
    if not digits.isdigit():
        return []
    pattern = re.compile(rf"(?<!\d)0*{int(digits)}(?!\d)")
    return [r for r in rois if pattern.search(r)]


def match_roi(name: str, number: str, rois: list[str]) -> RoiMatch:
    """The ROI of one lesion row among the selected ROI names of its course (module docstring)."""
    exact = [r for r in rois if r == name.strip()]
    if len(exact) == 1:
        return RoiMatch(exact[0], EXACT)
    keys = {loose_key(v) for v in name_variants(name)} - {""}
    loose = exact or [r for r in rois if loose_key(r) in keys]
    if len(loose) == 1:
        return RoiMatch(loose[0], LOOSE, tuple(loose))
    if len(loose) > 1:  # equal up to case and punctuation, they hold the same numbers: Lesion # cannot help
        return RoiMatch(None, AMBIGUOUS, tuple(loose))
    numbered = _with_number(rois, number)
    if len(numbered) == 1:
        return RoiMatch(numbered[0], NUMBER, tuple(numbered))
    if numbered:
        return RoiMatch(None, AMBIGUOUS, tuple(numbered))
    return RoiMatch(None, NONE)


def match_course(rows: list[LesionRow], rois: list[str]) -> list[RoiMatch]:
    """:func:`match_roi` for every row of one course, with the course-wide checks (a ROI matched
    twice, a ROI name repeated up to case and spaces) turning matches into left-out rows."""
    matches = [match_roi(row.name, row.number, rois) for row in rows]
    taken = [m.roi for m in matches if m.roi is not None]
    out = []
    for match in matches:
        if match.roi is None:
            out.append(match)
            continue
        twins = tuple(r for r in rois if roi_key(r) == roi_key(match.roi))
        if len(twins) > 1:
            out.append(RoiMatch(None, AMBIGUOUS, twins))
        elif taken.count(match.roi) > 1:
            out.append(RoiMatch(None, DUPLICATE, (match.roi,)))
        else:
            out.append(match)
    return out


def describe(row: LesionRow, match: RoiMatch) -> str:
    """One reported row, for the per-patient warning."""
    where = f"course {row.course}, lesion_level row {row.sheet_row} (Lesion # {row.number!r}, name {row.name!r})"
    if match.how == LOOSE:
        return f"{where}: matched ROI {match.roi!r}, the names differ in case, spaces or punctuation"
    if match.how == NUMBER:
        return f"{where}: no ROI of that name, matched ROI {match.roi!r} by Lesion # alone"
    if match.how == AMBIGUOUS:
        return f"{where}: ambiguous, candidate ROIs {list(match.candidates)}; left out"
    if match.how == DUPLICATE:
        return f"{where}: ROI {match.candidates[0]!r} is matched by another row of the course too; left out"
    return f"{where}: no ROI matches; left out"
