"""Multi-gate mixture of experts (MMoE, Ma et al. 2018) with an optional noisy top-k gate
(Shazeer et al. 2017) and a load-balancing loss.

Every endpoint k has its own fused input x_k = [global, local_k, clinical] (the local embedding
comes from that endpoint's attention branch) and its own softmax gate over the shared experts.
The load-balancing loss is the squared coefficient of variation of the experts' importance (the
sum of their gate weights over the batch), averaged over endpoints: 0 when every expert gets the
same share, growing as one expert takes over, which keeps experts from collapsing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def load_balancing_loss(gates: torch.Tensor) -> torch.Tensor:
    """``gates`` (B, K, E) softmax weights -> mean over endpoints of CV(importance)^2."""
    importance = gates.float().sum(dim=0)  # (K, E)
    mean = importance.mean(dim=-1)
    variance = importance.var(dim=-1, unbiased=False)
    return (variance / (mean**2 + 1e-10)).mean()


class MultiGateMixtureOfExperts(nn.Module):
    def __init__(self, in_dim: int, n_experts: int, hidden_dim: int, out_dim: int, n_tasks: int,
                 top_k: int | None = None, noisy_gating: bool = False, dropout: float = 0.0):
        super().__init__()
        if top_k is not None and not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k must be in 1..{n_experts}, got {top_k}")
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LeakyReLU(0.01), nn.Dropout(dropout),
                          nn.Linear(hidden_dim, out_dim), nn.LeakyReLU(0.01))
            for _ in range(n_experts)
        )
        self.gates = nn.Parameter(torch.zeros(n_tasks, in_dim, n_experts))
        self.gate_bias = nn.Parameter(torch.zeros(n_tasks, n_experts))
        nn.init.normal_(self.gates, std=0.02)
        self.noise = nn.Parameter(torch.zeros(n_tasks, in_dim, n_experts)) if noisy_gating else None
        self.top_k = top_k
        self.n_experts = n_experts

    def gate_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, K, in_dim) -> (B, K, E) gate weights (noise only while training)."""
        logits = torch.einsum("bki,kie->bke", x, self.gates) + self.gate_bias
        if self.noise is not None and self.training:
            scale = F.softplus(torch.einsum("bki,kie->bke", x, self.noise))
            logits = logits + torch.randn_like(logits) * scale
        if self.top_k is not None and self.top_k < self.n_experts:
            threshold = logits.topk(self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < threshold, float("-inf"))
        return torch.softmax(logits.float(), dim=-1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` (B, K, in_dim) -> task outputs (B, K, out_dim), gates (B, K, E), load-balancing loss."""
        gates = self.gate_weights(x)
        expert_out = torch.stack([expert(x) for expert in self.experts], dim=2)  # (B, K, E, out)
        out = (gates.unsqueeze(-1).to(expert_out.dtype) * expert_out).sum(dim=2)
        return out, gates, load_balancing_loss(gates)
