"""The clinical variables of new cases: read, typed, encoded, and checked against training.

A row the network cannot trust is not silently guessed: a case missing from the given table, or
with a cell that does not parse, fails with an error naming the case and the file (the other
cases are still predicted). Values the network can take but has not seen in training (a numeric
value outside the training range, a category not in the planned vocabulary, a missing value) are
predicted with a logged warning naming the case, and the warnings go into the case's JSON.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from glmil_auto.dataset.clinical_table import parse_clinical_table, read_csv_as_text
from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.dataset.problems import ERROR, DatasetError, Problem, error
from glmil_auto.model.clinical_encoder import encode_clinical_table


class ClinicalInputs:
    """The typed table of ``path`` (or none: every variable missing) and per-case problems."""

    def __init__(self, path: str | Path | None, spec: DatasetSpec, features: list[dict[str, Any]]):
        self.path = None if path is None else str(path)
        self.features = features
        self.problems_by_case: dict[str, list[Problem]] = {}
        if path is None:
            self.table = pd.DataFrame(index=pd.Index([], name=spec.case_column))
            return
        typed, problems = parse_clinical_table(read_csv_as_text(path), spec, str(path), require_endpoints=False)
        table_wide = [p for p in problems if p.severity == ERROR and p.case is None]
        if table_wide:
            raise DatasetError(table_wide)
        for problem in problems:
            if problem.severity == ERROR:
                self.problems_by_case.setdefault(problem.case, []).append(problem)
        self.table = typed

    def encode(self, case: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``values`` (F,) float (NaN = missing), ``categories`` (K,) int64 (-1 = missing/unseen) and
        the warnings for ``case``. Raises :class:`DatasetError` for a missing row or a bad cell."""
        if case in self.problems_by_case:
            raise DatasetError(self.problems_by_case[case])
        if self.path is None:
            row = pd.DataFrame(index=[case])
            warnings = ["no clinical table given (-c): every clinical variable is treated as missing"]
        elif case not in self.table.index:
            raise DatasetError(error("case has no row in the clinical table", case=case, file=self.path))
        else:
            row = self.table.loc[[case]]
            warnings = out_of_training_warnings(row.iloc[0], self.features)
        values, categories = encode_clinical_table(row, self.features)
        return values[0], categories[0], warnings


def out_of_training_warnings(row: pd.Series, features: list[dict[str, Any]]) -> list[str]:
    """What training never saw in this row: missing values, numeric values outside the planned
    [min, max] of the training cohort, categories outside the vocabulary."""
    warnings = []
    for feature in features:
        name, kind = feature["name"], feature["type"]
        value = row.get(name, math.nan)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            warnings.append(f"clinical variable '{name}' is missing (the network's missing indicator is used)")
        elif kind == "numeric":
            low, high = feature.get("min"), feature.get("max")
            if (low is not None and value < low) or (high is not None and value > high):
                warnings.append(f"clinical variable '{name}' = {value:g} is outside the training range "
                                f"[{low:g}, {high:g}]")
        elif kind == "categorical" and value not in feature.get("categories", []):
            warnings.append(f"clinical variable '{name}' = {value!r} was never seen in training "
                            f"(known: {feature.get('categories', [])}); encoded as unseen")
    return warnings
