"""One linear output per endpoint: a logit for a binary endpoint, a log-risk for a survival one."""

from __future__ import annotations

import torch
from torch import nn


class EndpointHeads(nn.Module):
    def __init__(self, in_dim: int, endpoints: list[dict[str, str]]):
        super().__init__()
        self.endpoints = [dict(e) for e in endpoints]
        self.linears = nn.ModuleList(nn.Linear(in_dim, 1) for _ in self.endpoints)

    def forward(self, per_endpoint: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``per_endpoint`` (B, K, in_dim) -> (binary logits, survival log-risks), each name -> (B,)."""
        logits, log_risks = {}, {}
        for k, (endpoint, linear) in enumerate(zip(self.endpoints, self.linears)):
            value = linear(per_endpoint[:, k]).squeeze(-1).float()
            (logits if endpoint["type"] == "binary" else log_risks)[endpoint["name"]] = value
        return logits, log_risks
