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


def stored_lesion_frame(properties: Sequence[dict[str, Any]], case_ids: Sequence[str], names: Sequence[str],
                        kept_only: bool = False) -> pd.DataFrame:
    """``case_id``, ``lesion_label`` (preprocessing's component label), ``centroid_{x,y,z}_mm``,
    ``kept`` and the features ``names`` of every lesion (``kept_only``: the lesions the network
    receives) of the cases, in case order; NaN where a feature is undefined. The frame's
    ``attrs["case_ids"]`` lists every case, those without lesions included."""
    rows = []
    for props, case in zip(properties, case_ids):
        for lesion in props.get("lesions", []):
            if kept_only and not lesion.get("kept"):
                continue
            stored = lesion.get("features")
            if stored is None or any(n not in stored for n in names):
                raise DatasetError(error(f"lesion {lesion.get('label')} has no stored radiomic features for these "
                                         "plans: re-run glmil_preprocess", str(case)))
            row = {CASE_COLUMN: str(case), LABEL_COLUMN: int(lesion["label"]), "kept": bool(lesion.get("kept"))}
            row.update(zip(POSITION_COLUMNS, (float(v) for v in lesion["centroid_world_mm"])))
            row.update({n: (np.nan if stored[n] is None else float(stored[n])) for n in names})
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
