"""``GLMILMoE``: the whole network, and the structure it returns.

The batch is a dictionary (the data loader builds it; tests build it by hand):

| key | shape | dtype | meaning |
| --- | --- | --- | --- |
| ``global`` | (B, C+1, Z, Y, X) | float | the global volume, lesion mask last |
| ``instances`` | (B, N, S, C+1, pz, py, px) | float | lesion patches, padded to N per batch |
| ``instance_mask`` | (B, N) | bool | True for real instances, False for padding |
| ``instance_descriptors`` | (B, N, D) | float | ``instance_encoder.DESCRIPTOR_NAMES``: log1p(volume mm3), depth / 10 mm, position in the head |
| ``clinical_values`` | (B, F) | float | numeric and binary features in plans order, NaN = missing |
| ``clinical_categories`` | (B, K) | long | category index per categorical feature, -1 = missing |

Variants (``mode``): ``full`` (global + local + clinical, mixture of experts), ``global_only`` and
``local_only`` (one image branch removed), ``concat`` (both branches, one MLP instead of the
experts) and ``clinical_only`` (no image branch: the clinical inputs, lesion count and volume
only) so that each part's contribution can be measured on the same data.

Every mode adds the clinical + volumetric linear predictor (``ClinicalOffset``, fitted per fold
by the trainer) to zero-initialised heads: the untrained network equals the linear baseline, and
what it learns is a correction of it (see ``clinical_offset.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from glmil_auto.model.clinical_encoder import ClinicalEncoder
from glmil_auto.model.clinical_offset import VOLUMETRIC_DESIGN_NAMES, ClinicalOffset, volumetric_design
from glmil_auto.model.global_encoder import MaskGuidedGlobalEncoder
from glmil_auto.model.heads import EndpointHeads
from glmil_auto.model.instance_encoder import InstanceEncoder
from glmil_auto.model.mil_pooling import GatedAttentionPooling
from glmil_auto.model.mixture_of_experts import MultiGateMixtureOfExperts

MODES = ("full", "global_only", "local_only", "concat", "clinical_only")


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
        self.use_global = self.mode in ("full", "global_only", "concat")
        self.use_local = self.mode in ("full", "local_only", "concat")
        self.global_encoder = (
            MaskGuidedGlobalEncoder(config["in_channels"], config["global_features"], dim, dropout,
                                    config.get("global_first_stride", 1)) if self.use_global else None
        )
        if self.use_local:
            self.instance_encoder = InstanceEncoder(config["in_channels"], config["local_features"], config["n_scales"], dim, dropout)
            self.mil_pooling = GatedAttentionPooling(dim, dim, k, dropout)
        self.clinical_encoder = ClinicalEncoder(config["clinical_features"], dim, dropout)
        self.offset = ClinicalOffset(self.clinical_encoder.input_dim + len(VOLUMETRIC_DESIGN_NAMES), k)
        # + log1p(lesion count) and log1p(total volume): attention pooling averages, so the bag's size
        # and burden must be given explicitly
        fused_dim = dim * (1 + int(self.use_global) + int(self.use_local)) + len(VOLUMETRIC_DESIGN_NAMES)
        if self.mode in ("concat", "clinical_only"):
            self.fusion = nn.Sequential(nn.Linear(fused_dim, config["expert_hidden_dim"]), nn.LeakyReLU(0.01),
                                        nn.Dropout(dropout), nn.Linear(config["expert_hidden_dim"], dim), nn.LeakyReLU(0.01))
        else:
            self.experts = MultiGateMixtureOfExperts(
                fused_dim, config["num_experts"], config["expert_hidden_dim"], dim, k,
                top_k=config.get("top_k"), noisy_gating=config.get("noisy_gating", False), dropout=dropout,
            )
        self.heads = EndpointHeads(dim, self.endpoints)

    def offset_design(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The linear predictor's design matrix (B, D) of a batch (see ``clinical_offset.py``)."""
        clinical_inputs = self.clinical_encoder.encode_inputs(batch["clinical_values"], batch["clinical_categories"])
        if "instance_mask" not in batch:  # a batch without a bag (e.g. global-only experiments): no lesion terms
            no_lesion_terms = clinical_inputs.new_zeros((clinical_inputs.shape[0], len(VOLUMETRIC_DESIGN_NAMES)))
            return torch.cat([clinical_inputs, no_lesion_terms], dim=1)
        volumetric = volumetric_design(batch["instance_mask"], batch["instance_descriptors"])
        return torch.cat([clinical_inputs, volumetric], dim=1)

    def branch_summaries(self, batch: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, torch.Tensor]]:
        """The image evidence entering the fusion: the global branch's embedding (B, D), the
        lesion branch's per-endpoint pooled embedding (B, K, D) (None where a branch is absent)
        and the attention weights per endpoint."""
        global_summary = self.global_encoder(batch["global"]).float() if self.use_global else None
        local_summary, attention = None, {}
        if self.use_local:
            mask = batch["instance_mask"].bool()
            instances = self.instance_encoder(batch["instances"], batch["instance_descriptors"], mask)
            pooled, weights = self.mil_pooling(instances, mask)  # (B, K, D), (B, K, N)
            local_summary = pooled.float()
            attention = {e["name"]: weights[:, i] for i, e in enumerate(self.endpoints)}
        return global_summary, local_summary, attention

    def volumetric_inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 2) log1p(lesion count), log1p(total lesion volume mL) of the bag (zeros without one)."""
        return self.offset_design(batch)[:, -len(VOLUMETRIC_DESIGN_NAMES):]

    def fuse(self, global_summary: torch.Tensor | None, local_summary: torch.Tensor | None,
             clinical_values: torch.Tensor, clinical_categories: torch.Tensor, volumetric: torch.Tensor,
             clinical: torch.Tensor | None = None
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Everything after the image branches: fusion, experts, heads and the linear offset.

        Returns ``(logits, log_risks, gates (B, K, E) or None, load-balancing loss, fused input)``.
        SHAP (``glmil_auto.inference.shap_explanations``) calls this with branch summaries and
        clinical inputs swapped between cases, so it must depend on the batch only through them.
        ``clinical``: the clinical encoder's output when the caller computed it already.
        """
        if clinical is None:
            clinical = self.clinical_encoder(clinical_values, clinical_categories)
        design = torch.cat([self.clinical_encoder.encode_inputs(clinical_values, clinical_categories),
                            volumetric.float()], dim=1)
        b, k = clinical.shape[0], len(self.endpoints)
        parts = []
        if self.use_global:
            parts.append(global_summary.float().unsqueeze(1).expand(b, k, -1))
        if self.use_local:
            parts.append(local_summary.float())
        parts.append(clinical.float().unsqueeze(1).expand(b, k, -1))
        parts.append(volumetric.float().unsqueeze(1).expand(b, k, -1))
        fused = torch.cat(parts, dim=-1)  # (B, K, fused_dim)
        if self.mode in ("concat", "clinical_only"):
            per_endpoint, gates, aux = self.fusion(fused), None, fused.new_zeros(())
        else:
            per_endpoint, gates, aux = self.experts(fused)
        logits, log_risks = self.heads(per_endpoint, self.offset(design))
        return logits, log_risks, gates, aux, fused

    def forward(self, batch: dict[str, torch.Tensor]) -> GLMILOutput:
        # the clinical encoder runs first, as it always has: its dropout draws come first in the
        # random stream, so seeded trainings are the same as before the fusion got its own method
        clinical = self.clinical_encoder(batch["clinical_values"], batch["clinical_categories"])
        global_summary, local_summary, attention = self.branch_summaries(batch)
        logits, log_risks, gates, aux, fused = self.fuse(
            global_summary, local_summary, batch["clinical_values"], batch["clinical_categories"],
            self.volumetric_inputs(batch), clinical=clinical)
        gate_weights = {} if gates is None else {e["name"]: gates[:, i] for i, e in enumerate(self.endpoints)}
        return GLMILOutput(logits, log_risks, attention, gate_weights, aux, fused)
