"""The SHAP part of ``glmil_evaluate``: per endpoint, every evaluated case's attributions.

Sources (written by :mod:`glmil_auto.model.shap_explanations`):

- a held-out cohort: the ``explanation`` block of ``glmil_predict --explain``'s ``<case>.json``
  (read by ``evaluation_inputs.case_documents``);
- cross-validation: ``fold_<k>/validation/explanations.json`` of the model folder's folds (each
  fold's validation cases explained by that fold against its own validation cases).

``metrics.json`` gets ``shap[<endpoint>]`` with the matrices (cases x features) that the report's
summary (beeswarm) plot is drawn from, and the mean absolute SHAP value per feature, the usual
global importance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def cross_validation_explanations(model_folder: Path) -> dict[str, dict[str, Any]]:
    """``case -> explanation`` from the folds' ``validation/explanations.json`` (final weights)."""
    from glmil_auto.inference.model_folder import available_folds

    out: dict[str, dict[str, Any]] = {}
    for fold in available_folds(Path(model_folder)):
        path = Path(model_folder) / f"fold_{fold}" / "validation" / "explanations.json"
        if fold.isdigit() and path.is_file():
            out.update(json.loads(path.read_text(encoding="utf-8")))
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) \
        else None


def shap_summary(explanations: Mapping[str, Mapping[str, Any]], endpoints: Sequence[str]) -> dict[str, Any]:
    """Per endpoint: ``cases``, ``feature_names``, ``values`` (cases x features), ``feature_values``
    (numbers; null for categories, missing values and the image branches, drawn grey),
    ``base_value`` (mean), ``output`` and ``mean_abs`` (feature -> mean |SHAP|, largest first)."""
    out: dict[str, Any] = {}
    for endpoint in endpoints:
        cases = [c for c, e in explanations.items() if isinstance(e, Mapping) and endpoint in e]
        if not cases:
            continue
        names: list[str] = []
        for case in cases:
            for item in explanations[case][endpoint]["contributions"]:
                if item["feature"] not in names:
                    names.append(item["feature"])
        values = np.full((len(cases), len(names)), np.nan)
        shown: list[list[float | None]] = [[None] * len(names) for _ in cases]
        for i, case in enumerate(cases):
            for item in explanations[case][endpoint]["contributions"]:
                j = names.index(item["feature"])
                values[i, j] = float(item["shap"])
                shown[i][j] = _number(item.get("value"))
        mean_abs = np.nanmean(np.abs(values), axis=0)
        order = np.argsort(-mean_abs, kind="stable")
        first = explanations[cases[0]][endpoint]
        out[endpoint] = {
            "n_cases": len(cases), "cases": cases, "output": first.get("output"),
            "base_value": float(np.mean([explanations[c][endpoint]["base_value"] for c in cases])),
            "feature_names": names, "values": values.tolist(), "feature_values": shown,
            "mean_abs": {names[j]: float(mean_abs[j]) for j in order},
        }
    return out
