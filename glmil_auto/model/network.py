"""``GLMILMoE``: the whole network, and the structure it returns.

The batch is a dictionary (the data loader builds it; tests build it by hand):

| key | shape | dtype | meaning |
| --- | --- | --- | --- |
| ``global`` | (B, C+1, Z, Y, X) | float | the global volume, lesion mask last (C+2 with the small-foci channel before it) |
| ``instances`` | (B, N, S, C+1, pz, py, px) | float | lesion patches, padded to N per batch |
| ``instance_mask`` | (B, N) | bool | True for real instances, False for padding |
| ``instance_descriptors`` | (B, N, D) | float | ``instance_encoder.DESCRIPTOR_NAMES``: log1p(volume mm3), depth / 10 mm, position in the head |
| ``clinical_values`` | (B, F) | float | numeric and binary features in plans order, NaN = missing |
| ``clinical_categories`` | (B, K) | long | category index per categorical feature, -1 = missing |
| ``instance_features`` | (B, N, L) | float | stored radiomic features per lesion, NaN = undefined (plans with lesion features) |
| ``case_features`` | (B, P) | float | their stored patient aggregates (plans with lesion features) |
| ``foci_responses`` | (B, M) | float | the case's small-foci candidate responses, NaN-padded (plans with ``small_foci``) |

Variants (``mode``): ``full`` (global + local + clinical, mixture of experts), ``global_only`` and
``local_only`` (one image branch removed), ``concat`` (both branches, one MLP instead of the
experts) and ``clinical_only`` (no image branch: the clinical inputs, lesion count and volume
only) so that each part's contribution can be measured on the same data.

Every mode adds the starting point (``StartingPoint``, fitted per fold by the trainer: the
clinical inputs + lesion count and volume + the stored radiomic features, by logistic / Cox
regression or, for an endpoint declared ``"aggregation": "any_lesion"``, a lesion-level noisy-OR)
to zero-initialised heads: the untrained network equals that model, and what it learns is a
correction of it (see ``starting_point.py``). For an ``any_lesion`` endpoint every lesion gets a
logit (its starting-point logit + a zero-initialised head on its CNN embedding), and the case's
logit is their noisy-OR with the case-level output as the leak (``instance_logits`` holds them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from glmil_auto.model.clinical_encoder import ClinicalEncoder
from glmil_auto.model.clinical_offset import VOLUMETRIC_DESIGN_NAMES, volumetric_design
from glmil_auto.model.foci_descriptor import FOCI_DESCRIPTOR_NAMES, foci_descriptor
from glmil_auto.model.global_encoder import MaskGuidedGlobalEncoder
from glmil_auto.model.heads import EndpointHeads
from glmil_auto.model.instance_encoder import InstanceEncoder
from glmil_auto.model.mil_pooling import GatedAttentionPooling
from glmil_auto.model.mixture_of_experts import MultiGateMixtureOfExperts
from glmil_auto.model.starting_point import StartingPoint, lesion_log_survival, noisy_or_logit

MODES = ("full", "global_only", "local_only", "concat", "clinical_only")


@dataclass
class GLMILOutput:
    logits: dict[str, torch.Tensor]  # binary endpoint -> (B,)
    log_risks: dict[str, torch.Tensor]  # survival endpoint -> (B,)
    attention: dict[str, torch.Tensor] = field(default_factory=dict)  # endpoint -> (B, N), 0 on padding
    gate_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # endpoint -> (B, E)
    aux_loss: torch.Tensor | None = None  # load-balancing loss (0 without experts)
    fused: torch.Tensor | None = None  # (B, K, D) fused input per endpoint, for SHAP
    instance_logits: dict[str, torch.Tensor] = field(default_factory=dict)  # any_lesion endpoint -> (B, N)
    lesion_log_survival: torch.Tensor | None = None  # (B, K) sum of log(1 - p_lesion), 0 for case-level endpoints


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
        # the small-foci path (plans with ``small_foci``): the global volume's foci channel and the
        # per-case descriptor (``foci_descriptor.py``); ``use_small_foci=False`` (the noFociChannel
        # ablation) zeroes both, keeping every shape
        self.n_foci_candidates = int(config.get("foci_candidates", 0))
        self.foci_channel = config.get("foci_channel")
        self.use_small_foci = bool(config.get("use_small_foci", True))
        self.n_volumetric = len(VOLUMETRIC_DESIGN_NAMES) + (len(FOCI_DESCRIPTOR_NAMES) if self.n_foci_candidates else 0)
        if self.n_foci_candidates:
            # fitted per fold on the training cases' decoys (the trainer); +inf until then: no focus counts
            self.register_buffer("foci_threshold", torch.tensor(float("inf")))
        self.global_encoder = (
            MaskGuidedGlobalEncoder(config.get("global_in_channels", config["in_channels"]), config["global_features"], dim, dropout,
                                    config.get("global_first_stride", 1)) if self.use_global else None
        )
        if self.use_local:
            self.instance_encoder = InstanceEncoder(config["in_channels"], config["local_features"], config["n_scales"], dim, dropout)
            self.mil_pooling = GatedAttentionPooling(dim, dim, k, dropout)
        self.clinical_encoder = ClinicalEncoder(config["clinical_features"], dim, dropout)
        self.n_lesion_features = int(config.get("n_lesion_features", 0))
        self.n_case_features = int(config.get("n_case_features", 0))
        self.lesion_endpoints = tuple(i for i, e in enumerate(self.endpoints) if e.get("aggregation") == "any_lesion")
        self.offset = StartingPoint(self.clinical_encoder.input_dim + self.n_volumetric, k,
                                    self.n_case_features, self.n_lesion_features, self.lesion_endpoints)
        # + log1p(lesion count) and log1p(total volume): attention pooling averages, so the bag's size
        # and burden must be given explicitly
        fused_dim = dim * (1 + int(self.use_global) + int(self.use_local)) + self.n_volumetric
        if self.mode in ("concat", "clinical_only"):
            self.fusion = nn.Sequential(nn.Linear(fused_dim, config["expert_hidden_dim"]), nn.LeakyReLU(0.01),
                                        nn.Dropout(dropout), nn.Linear(config["expert_hidden_dim"], dim), nn.LeakyReLU(0.01))
        else:
            self.experts = MultiGateMixtureOfExperts(
                fused_dim, config["num_experts"], config["expert_hidden_dim"], dim, k,
                top_k=config.get("top_k"), noisy_gating=config.get("noisy_gating", False), dropout=dropout,
            )
        self.heads = EndpointHeads(dim, self.endpoints)
        # per-lesion corrections of the any_lesion endpoints' lesion logits, zero at initialisation
        self.instance_heads = (nn.ModuleList(EndpointHeads(dim, [{"name": "lesion", "type": "binary"}])
                                             for _ in self.lesion_endpoints)
                               if self.use_local and self.lesion_endpoints else None)

    def offset_design(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The starting point's clinical design ``z`` (B, clinical inputs + 2, + 2 with small foci)
        of a batch: the clinical encoder's inputs, log1p(lesion count), log1p(total volume mL)
        (``clinical_offset.py``) and, with small foci, log1p(count) and log1p(summed response) of the
        candidates above the fold's threshold (``foci_descriptor.py``)."""
        clinical_inputs = self.clinical_encoder.encode_inputs(batch["clinical_values"], batch["clinical_categories"])
        if "instance_mask" not in batch:  # a batch without a bag (e.g. global-only experiments): no lesion terms
            volumetric = clinical_inputs.new_zeros((clinical_inputs.shape[0], len(VOLUMETRIC_DESIGN_NAMES)))
        else:
            volumetric = volumetric_design(batch["instance_mask"], batch["instance_descriptors"])
        parts = [clinical_inputs, volumetric]
        if self.n_foci_candidates:
            parts.append(self.foci_terms(batch))
        return torch.cat(parts, dim=1)

    def foci_terms(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 2) the small-foci descriptor (zeros with ``use_small_foci=False``)."""
        b = batch["clinical_values"].shape[0]
        if not self.use_small_foci:
            return batch["clinical_values"].new_zeros((b, len(FOCI_DESCRIPTOR_NAMES)), dtype=torch.float32)
        if "foci_responses" not in batch:
            raise KeyError("the batch lacks 'foci_responses': these plans have a small-foci channel, and the "
                           "starting point reads each case's candidates (re-run glmil_preprocess)")
        return foci_descriptor(batch["foci_responses"], self.foci_threshold)

    def global_volume(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's global volume as the global encoder reads it (the foci channel zeroed with
        ``use_small_foci=False``)."""
        volume = batch["global"]
        if self.foci_channel is not None and not self.use_small_foci:
            volume = volume.clone()
            volume[:, int(self.foci_channel)] = 0
        return volume

    def case_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, P) stored patient aggregates of the radiomic features ((B, 0) for plans without them)."""
        b = batch["clinical_values"].shape[0]
        if self.n_case_features == 0:
            return batch["clinical_values"].new_zeros((b, 0), dtype=torch.float32)
        if "case_features" not in batch:
            raise KeyError("the batch lacks 'case_features': these plans store radiomic features per case, and the "
                           "network's starting point reads them (re-run glmil_preprocess)")
        return batch["case_features"].float()

    def lesion_logits(self, batch: dict[str, torch.Tensor], instance_embeddings: torch.Tensor | None,
                      design: torch.Tensor | None = None) -> torch.Tensor | None:
        """(B, A, N) lesion logits of the any_lesion endpoints: the starting point's lesion model plus,
        with the lesion branch, a zero-initialised head on each lesion's CNN embedding; None without
        such endpoints. ``design``: :meth:`offset_design` of the batch when the caller has it."""
        if not self.lesion_endpoints:
            return None
        mask = batch["instance_mask"].bool()
        if self.n_lesion_features:
            if "instance_features" not in batch:
                raise KeyError("the batch lacks 'instance_features': these plans store radiomic features per lesion "
                               "(re-run glmil_preprocess)")
            features = batch["instance_features"]
        else:
            features = batch["clinical_values"].new_zeros((*mask.shape, 0), dtype=torch.float32)
        logits = self.offset.lesion_logits(features, self.offset_design(batch) if design is None else design)
        if self.instance_heads is not None and instance_embeddings is not None:
            corrections = torch.stack([head(instance_embeddings.unsqueeze(2))[0]["lesion"]
                                       for head in self.instance_heads], dim=1)  # (B, A, N)
            logits = logits + corrections.float()
        return logits

    def branch_summaries(self, batch: dict[str, torch.Tensor], design: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, torch.Tensor], torch.Tensor | None]:
        """The image evidence entering the fusion: the global branch's embedding (B, D), the
        lesion branch's per-endpoint pooled embedding (B, K, D) (None where a branch is absent),
        the attention weights per endpoint and the any_lesion endpoints' lesion logits (B, A, N)
        (None without such endpoints)."""
        global_summary = self.global_encoder(self.global_volume(batch)).float() if self.use_global else None
        local_summary, attention, instances = None, {}, None
        if self.use_local:
            mask = batch["instance_mask"].bool()
            instances = self.instance_encoder(batch["instances"], batch["instance_descriptors"], mask)
            pooled, weights = self.mil_pooling(instances, mask)  # (B, K, D), (B, K, N)
            local_summary = pooled.float()
            attention = {e["name"]: weights[:, i] for i, e in enumerate(self.endpoints)}
        return global_summary, local_summary, attention, self.lesion_logits(batch, instances, design)

    def lesion_survival(self, batch: dict[str, torch.Tensor], lesion_logits: torch.Tensor | None) -> torch.Tensor:
        """(B, K): per endpoint sum over the case's lesions of log(1 - p_lesion); 0 for case-level
        endpoints (and for every endpoint without lesion endpoints)."""
        b, k = batch["clinical_values"].shape[0], len(self.endpoints)
        out = batch["clinical_values"].new_zeros((b, k), dtype=torch.float32)
        if lesion_logits is not None:
            per_endpoint = lesion_log_survival(lesion_logits, batch["instance_mask"])
            out = out.index_copy(1, torch.tensor(self.lesion_endpoints, device=out.device), per_endpoint)
        return out

    def volumetric_inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, 2) log1p(lesion count), log1p(total lesion volume mL) of the bag (zeros without one);
        (B, 4) with the small-foci descriptor after them."""
        return self.offset_design(batch)[:, -self.n_volumetric:]

    def fuse(self, global_summary: torch.Tensor | None, local_summary: torch.Tensor | None,
             clinical_values: torch.Tensor, clinical_categories: torch.Tensor, volumetric: torch.Tensor,
             clinical: torch.Tensor | None = None, case_features: torch.Tensor | None = None,
             lesion_survival: torch.Tensor | None = None,
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Everything after the image branches: fusion, experts, heads, the starting point's
        case-level linear predictor and, for any_lesion endpoints, the noisy-OR with the lesions.

        Returns ``(logits, log_risks, gates (B, K, E) or None, load-balancing loss, fused input)``.
        SHAP (``glmil_auto.model.shap_explanations``) calls this with branch summaries and
        clinical inputs swapped between cases, so it must depend on the batch only through them.
        ``clinical``: the clinical encoder's output when the caller computed it already;
        ``case_features`` (B, P): the stored patient aggregates (None: plans without them);
        ``lesion_survival`` (B, K): :meth:`lesion_survival` (None: no lesion endpoints).
        """
        if clinical is None:
            clinical = self.clinical_encoder(clinical_values, clinical_categories)
        if case_features is None:
            case_features = volumetric.new_zeros((volumetric.shape[0], self.n_case_features), dtype=torch.float32)
        design = torch.cat([self.clinical_encoder.encode_inputs(clinical_values, clinical_categories),
                            volumetric.float(), case_features.float()], dim=1)
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
        if self.lesion_endpoints and lesion_survival is not None:
            for k in self.lesion_endpoints:  # the case-level output is the noisy-OR's leak
                name = self.endpoints[k]["name"]
                logits[name] = noisy_or_logit(lesion_survival[:, k], logits[name])
        return logits, log_risks, gates, aux, fused

    def starting_point_outputs(self, batch: dict[str, torch.Tensor]
                               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The starting point alone, without any learnt correction (what the untrained network
        predicts): ``(logits, log_risks, lesion logits of the any_lesion endpoints)``, each name -> (B,)
        or (B, N). The predictor reports it beside the network's prediction."""
        z = self.offset_design(batch)
        linear = self.offset(torch.cat([z, self.case_features(batch)], dim=1))
        lesion = None
        if self.lesion_endpoints:
            features = (batch["instance_features"] if self.n_lesion_features else
                        z.new_zeros((*batch["instance_mask"].shape, 0)))
            lesion = self.offset.lesion_logits(features, z)
            survival = lesion_log_survival(lesion, batch["instance_mask"])
        logits, log_risks, lesion_logits = {}, {}, {}
        for k, endpoint in enumerate(self.endpoints):
            name = endpoint["name"]
            if k in self.lesion_endpoints:
                a = self.lesion_endpoints.index(k)
                logits[name] = noisy_or_logit(survival[:, a], linear[:, k])
                lesion_logits[name] = lesion[:, a]
            elif endpoint["type"] == "binary":
                logits[name] = linear[:, k]
            else:
                log_risks[name] = linear[:, k]
        return logits, log_risks, lesion_logits

    def forward(self, batch: dict[str, torch.Tensor]) -> GLMILOutput:
        # the clinical encoder runs first, as it always has: its dropout draws come first in the
        # random stream, so seeded trainings are the same as before the fusion got its own method
        clinical = self.clinical_encoder(batch["clinical_values"], batch["clinical_categories"])
        design = self.offset_design(batch)  # once: the lesion model and the fusion both read it
        global_summary, local_summary, attention, lesion_logits = self.branch_summaries(batch, design)
        survival = self.lesion_survival(batch, lesion_logits) if lesion_logits is not None else None
        logits, log_risks, gates, aux, fused = self.fuse(
            global_summary, local_summary, batch["clinical_values"], batch["clinical_categories"],
            design[:, -self.n_volumetric:], clinical=clinical, case_features=self.case_features(batch),
            lesion_survival=survival)
        gate_weights = {} if gates is None else {e["name"]: gates[:, i] for i, e in enumerate(self.endpoints)}
        instance_logits = ({} if lesion_logits is None else
                           {self.endpoints[k]["name"]: lesion_logits[:, a] for a, k in enumerate(self.lesion_endpoints)})
        return GLMILOutput(logits, log_risks, attention, gate_weights, aux, fused, instance_logits, survival)
