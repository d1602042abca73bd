"""The clinical variables of ``dataset.json`` as a numeric design matrix (the network's encoding)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from glmil_auto.dataset.dataset_json import DatasetSpec


def clinical_features(spec: DatasetSpec | Mapping[str, Any], reference: pd.DataFrame) -> list[dict[str, Any]]:
    """The clinical variables of ``dataset.json`` (a :class:`DatasetSpec` or the parsed JSON) in
    the plans' form (``name``, ``type``, ``categories``), with each categorical vocabulary taken
    from ``reference`` (the training table: test cases must be encoded with the training columns)."""
    declared = spec.clinical_features if isinstance(spec, DatasetSpec) else dict(spec.get("clinical_features", {}))
    out = []
    for name, kind in declared.items():
        entry: dict[str, Any] = {"name": name, "type": kind}
        if kind == "categorical":
            values = reference[name] if name in reference else pd.Series(dtype=object)
            entry["categories"] = sorted({str(v) for v in values if isinstance(v, str)})
        out.append(entry)
    return out


def clinical_design_matrix(table: pd.DataFrame, spec_or_features: DatasetSpec | Mapping[str, Any] | list[dict[str, Any]],
                           reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Numeric design matrix of the clinical variables, indexed like ``table``.

    ``spec_or_features``: the plans' feature list (``plans["clinical"]["features"]``), or
    ``dataset.json`` (:class:`DatasetSpec` or dict) whose categorical vocabularies come from
    ``reference`` (default ``table`` itself; pass the training table when encoding test cases).
    Encoding is :func:`glmil_auto.model.clinical_encoder.encode_clinical_table`, as the network's:
    numeric and binary values as they are (NaN when missing, the models impute) plus a
    ``<name>_missing`` indicator; categorical one-hot ``<name>=<category>`` plus
    ``<name>=missing_or_unseen``.
    """
    from glmil_auto.model.clinical_encoder import encode_clinical_table  # imports torch: only when needed

    if isinstance(spec_or_features, list):
        features = spec_or_features
    else:
        features = clinical_features(spec_or_features, table if reference is None else reference)
    values, categories = encode_clinical_table(table, features)
    columns: dict[str, np.ndarray] = {}
    value_features = [f for f in features if f["type"] in ("numeric", "binary")]
    for j, feature in enumerate(value_features):
        columns[feature["name"]] = values[:, j]
        columns[f"{feature['name']}_missing"] = np.isnan(values[:, j]).astype(float)
    for k, feature in enumerate(f for f in features if f["type"] == "categorical"):
        for i, category in enumerate(feature["categories"]):
            columns[f"{feature['name']}={category}"] = (categories[:, k] == i).astype(float)
        columns[f"{feature['name']}=missing_or_unseen"] = (categories[:, k] < 0).astype(float)
    return pd.DataFrame(columns, index=table.index)
