"""The lesion features preprocessing stored, read back as a lesion frame (one row per lesion).

Preprocessing computes every lesion's features once (``CasePreprocessor``: ``properties["lesions"]
[i]["features"]``); the radiomics peer, the benchmarks and the starting point read them from there,
so there is one implementation of each feature and the peer and the network see the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.preprocessing.lesion_features.lesion_frame import CASE_COLUMN, LABEL_COLUMN, POSITION_COLUMNS


def json_float(value: Any) -> float | None:
    """A feature value as the properties JSON stores it: None for NaN or infinity (JSON has none)."""
    value = float(value)
    return value if np.isfinite(value) else None


def lesion_feature_matrix(lesions: Sequence[dict[str, Any]], names: Sequence[str], case: str) -> np.ndarray:
    """``(len(lesions), len(names))`` float64 of the features ``names`` stored with ``lesions``
    (entries of ``properties["lesions"]``), NaN where undefined; a lesion without them names the
    case (it was preprocessed under other plans)."""
    out = np.full((len(lesions), len(names)), np.nan)
    for i, lesion in enumerate(lesions):
        stored = lesion.get("features")
        if stored is None or any(n not in stored for n in names):
            raise DatasetError(error(f"lesion {lesion.get('label')} has no stored radiomic features for these "
                                     "plans: re-run glmil_preprocess", str(case)))
        out[i] = [np.nan if stored[n] is None else float(stored[n]) for n in names]
    return out


def stored_lesion_frame(properties: Sequence[dict[str, Any]], case_ids: Sequence[str], names: Sequence[str],
                        kept_only: bool = False) -> pd.DataFrame:
    """``case_id``, ``lesion_label`` (preprocessing's component label), ``centroid_{x,y,z}_mm``,
    ``kept`` and the features ``names`` of every lesion (``kept_only``: the lesions the network
    receives) of the cases, in case order; NaN where a feature is undefined. The frame's
    ``attrs["case_ids"]`` lists every case, those without lesions included."""
    rows = []
    for props, case in zip(properties, case_ids):
        lesions = [l for l in props.get("lesions", []) if l.get("kept") or not kept_only]
        for lesion, values in zip(lesions, lesion_feature_matrix(lesions, names, case)):
            row = {CASE_COLUMN: str(case), LABEL_COLUMN: int(lesion["label"]), "kept": bool(lesion.get("kept"))}
            row.update(zip(POSITION_COLUMNS, (float(v) for v in lesion["centroid_world_mm"])))
            row.update(zip(names, values))
            rows.append(row)
    frame = pd.DataFrame(rows, columns=[CASE_COLUMN, LABEL_COLUMN, *POSITION_COLUMNS, "kept", *names])
    frame[CASE_COLUMN] = frame[CASE_COLUMN].astype(object)
    frame.attrs["case_ids"] = [str(c) for c in case_ids]
    return frame


def read_stored_lesion_features(folder: str | Path, case_ids: Sequence[str], names: Sequence[str],
                                kept_only: bool = False) -> pd.DataFrame:
    """:func:`stored_lesion_frame` of the preprocessed cases in ``folder`` (``<plans>/<split>``)."""
    from glmil_auto.preprocessing.storage import load_properties

    return stored_lesion_frame([load_properties(Path(folder), c) for c in case_ids], case_ids, names, kept_only)
