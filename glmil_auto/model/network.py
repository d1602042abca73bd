"""``GLMILMoE``: the whole network, and the structure it returns.

The batch is a dictionary (the data loader builds it; tests build it by hand):

| key | shape | dtype | meaning |
| --- | --- | --- | --- |
| ``global`` | (B, C+1, Z, Y, X) | float | the global volume, lesion mask last |
| ``instances`` | (B, N, S, C+1, pz, py, px) | float | lesion patches, padded to N per batch |
| ``instance_mask`` | (B, N) | bool | True for real instances, False for padding |
| ``instance_descriptors`` | (B, N, 2) | float | log1p(volume mm3), depth below head surface / 10 mm |
| ``clinical_values`` | (B, F) | float | numeric and binary features in plans order, NaN = missing |
| ``clinical_categories`` | (B, K) | long | category index per categorical feature, -1 = missing |

Variants (``mode``): ``full`` (global + local + clinical, mixture of experts), ``global_only`` and
``local_only`` (one image branch removed), ``concat`` (both branches, one MLP instead of the
experts) so that each part's contribution can be measured on the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from glmil_auto.model.clinical_encoder import ClinicalEncoder
from glmil_auto.model.global_encoder import MaskGuidedGlobalEncoder
from glmil_auto.model.heads import EndpointHeads
from glmil_auto.model.instance_encoder import InstanceEncoder
from glmil_auto.model.mil_pooling import GatedAttentionPooling
from glmil_auto.model.mixture_of_experts import MultiGateMixtureOfExperts

MODES = ("full", "global_only", "local_only", "concat")


@dataclass
class GLMILOutput:
    logits: dict[str, torch.Tensor]  # binary endpoint -> (B,)
    log_risks: dict[str, torch.Tensor]  # survival endpoint -> (B,)
    attention: dict[str, torch.Tensor] = field(default_factory=dict)  # endpoint -> (B, N), 0 on padding
    gate_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # endpoint -> (B, E)
    aux_loss: torch.Tensor | None = None  # load-balancing loss (0 without experts)
    fused: torch.Tensor | None = None  # (B, K, D) fused input per endpoint, for SHAP


class GLMILMoE(nn.Module):
    def __init__(self, config: dict[str, Any]):
        """``config`` as produced by :func:`glmil_auto.model.builder.network_config`."""
        super().__init__()
        if config["mode"] not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {config['mode']!r}")
        self.config = config
        self.mode = config["mode"]
        self.endpoints = config["endpoints"]
        dim, dropout, k = config["embedding_dim"], config["dropout"], len(self.endpoints)
        self.use_global = self.mode != "local_only"
        self.use_local = self.mode != "global_only"
        self.global_encoder = (
            MaskGuidedGlobalEncoder(config["in_channels"], config["global_features"], dim, dropout) if self.use_global else None
        )
        if self.use_local:
            self.instance_encoder = InstanceEncoder(config["in_channels"], config["local_features"], config["n_scales"], dim, dropout)
            self.mil_pooling = GatedAttentionPooling(dim, dim, k, dropout)
        self.clinical_encoder = ClinicalEncoder(config["clinical_features"], dim, dropout)
        # + log1p(lesion count): attention pooling averages, so the bag size must be given explicitly
        fused_dim = dim * (1 + int(self.use_global) + int(self.use_local)) + int(self.use_local)
        if self.mode == "concat":
            self.fusion = nn.Sequential(nn.Linear(fused_dim, config["expert_hidden_dim"]), nn.LeakyReLU(0.01),
                                        nn.Dropout(dropout), nn.Linear(config["expert_hidden_dim"], dim), nn.LeakyReLU(0.01))
        else:
            self.experts = MultiGateMixtureOfExperts(
                fused_dim, config["num_experts"], config["expert_hidden_dim"], dim, k,
                top_k=config.get("top_k"), noisy_gating=config.get("noisy_gating", False), dropout=dropout,
            )
        self.heads = EndpointHeads(dim, self.endpoints)

    def forward(self, batch: dict[str, torch.Tensor]) -> GLMILOutput:
        clinical = self.clinical_encoder(batch["clinical_values"], batch["clinical_categories"])
        b, k = clinical.shape[0], len(self.endpoints)
        parts = []
        if self.use_global:
            parts.append(self.global_encoder(batch["global"]).float().unsqueeze(1).expand(b, k, -1))
        attention = {}
        if self.use_local:
            mask = batch["instance_mask"].bool()
            instances = self.instance_encoder(batch["instances"], batch["instance_descriptors"], mask)
            pooled, weights = self.mil_pooling(instances, mask)  # (B, K, D), (B, K, N)
            parts.append(pooled.float())
            count = torch.log1p(mask.sum(dim=1, keepdim=True).float())  # (B, 1)
            parts.append(count.unsqueeze(1).expand(b, k, 1))
            attention = {e["name"]: weights[:, i] for i, e in enumerate(self.endpoints)}
        parts.append(clinical.float().unsqueeze(1).expand(b, k, -1))
        fused = torch.cat(parts, dim=-1)  # (B, K, fused_dim)
        if self.mode == "concat":
            per_endpoint, gates, aux = self.fusion(fused), None, fused.new_zeros(())
        else:
            per_endpoint, gates, aux = self.experts(fused)
        logits, log_risks = self.heads(per_endpoint)
        gate_weights = {} if gates is None else {e["name"]: gates[:, i] for i, e in enumerate(self.endpoints)}
        return GLMILOutput(logits, log_risks, attention, gate_weights, aux, fused)
