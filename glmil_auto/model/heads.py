"""One linear output per endpoint: a logit for a binary endpoint, a log-risk for a survival one.

The linears start at zero, so the output starts at the offset (the clinical + volumetric linear
predictor, ``clinical_offset.py``) and the network learns a correction of it."""

from __future__ import annotations

import torch
from torch import nn


class EndpointHeads(nn.Module):
    def __init__(self, in_dim: int, endpoints: list[dict[str, str]]):
        super().__init__()
        self.endpoints = [dict(e) for e in endpoints]
        self.linears = nn.ModuleList(nn.Linear(in_dim, 1) for _ in self.endpoints)
        for linear in self.linears:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, per_endpoint: torch.Tensor, offset: torch.Tensor | None = None
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``per_endpoint`` (B, K, in_dim), ``offset`` (B, K) or None -> (binary logits, survival
        log-risks), each name -> (B,)."""
        logits, log_risks = {}, {}
        for k, (endpoint, linear) in enumerate(zip(self.endpoints, self.linears)):
            value = linear(per_endpoint[:, k]).squeeze(-1).float()
            if offset is not None:
                value = value + offset[:, k].float()
            (logits if endpoint["type"] == "binary" else log_risks)[endpoint["name"]] = value
        return logits, log_risks
