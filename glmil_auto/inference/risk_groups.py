"""Putting the folds' survival outputs on one scale, and risk groups learnt from out-of-fold predictions.

A Cox head's log-risk has no fixed origin or scale (the partial likelihood is invariant to adding
a constant, and each fold's network ends up with its own spread), so averaging raw log-risks over
folds would let one fold dominate. Each fold's log-risk is therefore standardised with the mean
and standard deviation of that fold's own out-of-fold log-risks (its ``validation/predictions.csv``:
cases the fold never trained on, like new patients), and the ensemble risk is the mean of the
standardised values.

Risk groups: the tertiles of the pooled out-of-fold standardised risks (every training case
scored once, by the fold that did not train on it) cut the ensemble risk into low / intermediate /
high. The cut-offs are stored in the model folder (``risk_groups.json``) with the folds they
came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

RISK_GROUP_NAMES = ("low", "intermediate", "high")
DEFAULT_QUANTILES = (1 / 3, 2 / 3)


def standardisation(log_risks: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation (ddof 0; 1.0 when degenerate) of finite log-risks."""
    values = np.asarray(log_risks, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite out-of-fold log-risks to standardise with")
    std = float(values.std())
    return float(values.mean()), std if std > 1e-12 else 1.0


def cutoffs_from_risks(risks: np.ndarray, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> list[float]:
    """Cut-offs at ``quantiles`` of the finite ``risks`` (increasing)."""
    values = np.asarray(risks, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite risks to learn risk-group cut-offs from")
    return [float(q) for q in np.quantile(values, list(quantiles))]


def assign_risk_groups(risks: np.ndarray, cutoffs: Sequence[float],
                       names: Sequence[str] = RISK_GROUP_NAMES) -> list[str]:
    """Group name per risk: ``names[i]`` for the i-th interval of ``cutoffs`` (a risk equal to a
    cut-off goes to the higher group)."""
    if len(names) != len(cutoffs) + 1:
        raise ValueError(f"{len(cutoffs)} cut-offs need {len(cutoffs) + 1} group names, got {len(names)}")
    index = np.searchsorted(np.asarray(cutoffs, dtype=float), np.asarray(risks, dtype=float), side="right")
    return [names[i] for i in index]


def fit_risk_scales(oof_tables: dict[str, pd.DataFrame], survival_endpoints: Sequence[str],
                    quantiles: Sequence[float] = DEFAULT_QUANTILES) -> dict[str, dict]:
    """From every fold's out-of-fold predictions (``fold -> table`` with ``<endpoint>_log_risk``
    columns): per endpoint, each fold's (mean, std) and the risk-group cut-offs of the pooled
    standardised values. Returns ``{endpoint: {"folds": {fold: {"mean", "std"}}, "cutoffs": [...],
    "quantiles": [...], "groups": [...], "n_cases": n}}``."""
    out: dict[str, dict] = {}
    for endpoint in survival_endpoints:
        column = f"{endpoint}_log_risk"
        scales, pooled = {}, []
        for fold, table in oof_tables.items():
            if column not in table:
                raise ValueError(f"fold {fold}'s validation predictions lack the column '{column}'")
            values = table[column].to_numpy(dtype=float)
            mean, std = standardisation(values)
            scales[fold] = {"mean": mean, "std": std}
            pooled.append((values - mean) / std)
        risks = np.concatenate(pooled) if pooled else np.zeros(0)
        out[endpoint] = {"folds": scales, "cutoffs": cutoffs_from_risks(risks, quantiles),
                         "quantiles": [float(q) for q in quantiles], "groups": list(RISK_GROUP_NAMES),
                         "n_cases": int(np.isfinite(risks).sum())}
    return out


def read_oof_tables(validation_files: dict[str, Path]) -> dict[str, pd.DataFrame]:
    """``fold -> validation/predictions.csv`` read; a missing file names the fold and what to run."""
    tables = {}
    for fold, path in validation_files.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} is missing: risk scales need every fold's out-of-fold predictions; run "
                                    f"'glmil_train DATASET {fold} --val' to write them")
        tables[fold] = pd.read_csv(path)
    return tables
