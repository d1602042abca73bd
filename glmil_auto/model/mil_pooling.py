"""Gated-attention MIL pooling (Ilse et al. 2018) with one attention branch per endpoint
(as CLAM's multi-branch attention), for bags of different sizes.

Padded instances get exactly zero weight (their scores are masked before the softmax, so they
cannot change the result however many there are or whatever they hold), and the softmax is
invariant to the order of the instances. An empty bag (a case without lesions) has no weights at
all; it is represented by a learned "no lesion" embedding per endpoint instead of a NaN.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` where ``mask`` is True; exactly 0 elsewhere and for all-masked rows."""
    scores = scores.float().masked_fill(~mask, float("-inf"))
    any_real = mask.any(dim=dim, keepdim=True)
    weights = torch.softmax(torch.where(any_real, scores, torch.zeros_like(scores)), dim=dim)
    return torch.where(mask, weights, torch.zeros_like(weights))


class GatedAttentionPooling(nn.Module):
    def __init__(self, dim: int, hidden: int, n_branches: int, dropout: float = 0.0):
        super().__init__()
        self.value = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout))
        self.gate = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid(), nn.Dropout(dropout))
        self.scores = nn.Linear(hidden, n_branches)
        self.no_lesion = nn.Parameter(torch.zeros(n_branches, dim))
        nn.init.normal_(self.no_lesion, std=0.02)

    def forward(self, instances: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``instances`` (B, N, D), ``mask`` (B, N) bool -> pooled (B, K, D) and attention (B, K, N)."""
        mask = mask.bool()
        scores = self.scores(self.value(instances) * self.gate(instances))  # (B, N, K)
        attention = masked_softmax(scores.transpose(1, 2), mask.unsqueeze(1), dim=-1)  # (B, K, N)
        pooled = torch.bmm(attention, instances.float())  # (B, K, D)
        empty = ~mask.any(dim=1)
        pooled = torch.where(empty[:, None, None], self.no_lesion.unsqueeze(0).to(pooled.dtype), pooled)
        return pooled, attention
