"""Clinical variables as declared in dataset.json: numeric, binary and categorical.

Numeric features are standardised with statistics kept as buffers (so they travel in the
checkpoint; the trainer refits them on each fold's training cases with :meth:`fit`). Every
numeric and binary feature gets a missing-value indicator: a missing value becomes 0 *and*
its indicator 1, never a silent 0. Categorical features are one-hot over the planned
vocabulary plus a "missing or unseen" slot. The vocabulary is planned from every training case,
so a category may occur only in one fold's validation cases; :meth:`fit` records which
categories the fold's training cases hold (a buffer, so it travels in the checkpoint) and the
others are encoded as unseen: their one-hot weights were never trained.

Inputs: ``values`` (B, F) float with NaN for missing, one column per numeric or binary feature in
plans order; ``categories`` (B, K) long with the index in each feature's vocabulary, or -1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class ClinicalEncoder(nn.Module):
    def __init__(self, features: list[dict[str, Any]], embedding_dim: int, dropout: float = 0.0):
        super().__init__()
        self.value_features = [f for f in features if f["type"] in ("numeric", "binary")]
        self.categorical_features = [f for f in features if f["type"] == "categorical"]
        numeric = [f["type"] == "numeric" for f in self.value_features]
        self.register_buffer("is_numeric", torch.tensor(numeric, dtype=torch.bool))
        self.register_buffer("mean", torch.tensor([float(f.get("mean", 0.0)) for f in self.value_features]))
        self.register_buffer("std", torch.tensor([max(float(f.get("std", 1.0)), 1e-6) for f in self.value_features]))
        self.vocabulary_sizes = [len(f["categories"]) + 1 for f in self.categorical_features]  # + missing/unseen
        # per planned category (unseen slots excluded): did this fold's training cases hold it?
        self.register_buffer("category_seen", torch.ones(sum(s - 1 for s in self.vocabulary_sizes), dtype=torch.bool))
        in_dim = 2 * len(self.value_features) + sum(self.vocabulary_sizes)
        self.input_dim = in_dim
        self.embedding_dim = embedding_dim
        self.mlp = (
            nn.Sequential(nn.Linear(in_dim, embedding_dim), nn.LeakyReLU(0.01), nn.Dropout(dropout))
            if in_dim > 0 else None
        )

    @property
    def num_values(self) -> int:
        return len(self.value_features)

    @property
    def num_categories(self) -> int:
        return len(self.categorical_features)

    def fit(self, values: np.ndarray, categories: np.ndarray | None = None) -> None:
        """Set the standardisation of numeric features from training values (NaN ignored) and,
        with ``categories``, which planned categories the training cases hold."""
        values = np.asarray(values, dtype=float)
        for j, feature in enumerate(self.value_features):
            column = values[:, j][~np.isnan(values[:, j])]
            if feature["type"] == "numeric" and column.size:
                self.mean[j] = float(column.mean())
                self.std[j] = float(max(column.std(), 1e-6))
        if categories is not None:
            categories = np.asarray(categories, dtype=np.int64).reshape(len(values), -1)
            seen = []
            for k, size in enumerate(self.vocabulary_sizes):
                present = set(categories[:, k].tolist())
                seen += [i in present for i in range(size - 1)]
            self.category_seen.copy_(torch.tensor(seen, dtype=torch.bool))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before ``category_seen`` existed: every planned category counts as seen
        state_dict.setdefault(prefix + "category_seen", torch.ones_like(self.category_seen))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def encode_inputs(self, values: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        """The network's clinical input vector (before the MLP); exposed for SHAP and tests."""
        values = values.float()
        missing = torch.isnan(values)
        standardised = torch.where(self.is_numeric, (values - self.mean) / self.std, values)
        parts = [torch.where(missing, torch.zeros_like(standardised), standardised), missing.float()]
        start = 0
        for k, size in enumerate(self.vocabulary_sizes):
            index = categories[:, k].long()
            known = (index >= 0) & (index < size - 1)
            if size > 1:
                known &= self.category_seen[start:start + size - 1][index.clamp(0, size - 2)]
            index = torch.where(known, index, torch.full_like(index, size - 1))
            parts.append(nn.functional.one_hot(index, size).float())
            start += size - 1
        return torch.cat(parts, dim=1)

    def forward(self, values: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            return values.new_zeros((values.shape[0], self.embedding_dim), dtype=torch.float32)
        return self.mlp(self.encode_inputs(values, categories))


def encode_clinical_table(table: Any, features: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's inputs from a typed clinical table (``RawDataset.clinical_table``):
    ``values`` (n, F) float with NaN for missing and ``categories`` (n, K) int64 with -1 for
    missing; a category never seen when planning also maps to -1 (the encoder's unseen slot)."""
    value_features = [f for f in features if f["type"] in ("numeric", "binary")]
    categorical = [f for f in features if f["type"] == "categorical"]
    n = len(table)
    values = np.full((n, len(value_features)), np.nan)
    for j, feature in enumerate(value_features):
        if feature["name"] in table:
            values[:, j] = table[feature["name"]].to_numpy(dtype=float)
    categories = np.full((n, len(categorical)), -1, dtype=np.int64)
    for j, feature in enumerate(categorical):
        if feature["name"] in table:
            lookup = {value: i for i, value in enumerate(feature["categories"])}
            categories[:, j] = [lookup.get(v, -1) if isinstance(v, str) else -1 for v in table[feature["name"]]]
    return values, categories
