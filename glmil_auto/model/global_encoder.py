"""Global branch: a residual 3D CNN over the whole (downsampled) volume with the lesion-mask
channel, and mask-guided multiscale pooling.

At every stage the feature map is pooled twice: averaged over the whole volume (the context:
brain, ventricles, micro-lesions outside the mask) and averaged with the lesion mask resampled to
that stage's grid as weights (what the lesions look like at that scale). The stage vectors are
concatenated and projected to the global embedding, together with the lesion burden (the log of
the volume fraction covered by lesions, read from the mask channel before any normalisation:
instance normalisation removes every feature map's per-case mean, so total burden would
otherwise be hard to recover from the pooled features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmil_auto.model.blocks import ResidualEncoder3d, masked_average


class MaskGuidedGlobalEncoder(nn.Module):
    def __init__(self, in_channels: int, features_per_stage: list[int], embedding_dim: int, dropout: float = 0.0,
                 first_stride: int = 1, blocks_per_stage: list[int] | None = None):
        super().__init__()
        self.encoder = ResidualEncoder3d(in_channels, features_per_stage, first_stride, blocks_per_stage)
        self.projection = nn.Sequential(
            nn.Linear(2 * sum(features_per_stage) + 1, embedding_dim), nn.LeakyReLU(0.01), nn.Dropout(dropout)
        )
        self.last_feature_maps: list[torch.Tensor] = []  # kept for Grad-CAM

    def pooled_features(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, C+1, Z, Y, X) -> (B, 2 * sum(features_per_stage)): every stage's average and
        mask-weighted average, before the lesion burden joins (self-supervised pretraining reads
        this: the burden is the same in every view of a volume, a shortcut for matching them)."""
        mask = volume[:, -1:].float()
        maps = self.encoder(volume)
        self.last_feature_maps = maps
        pooled = []
        for features in maps:
            stage_mask = F.adaptive_avg_pool3d(mask, features.shape[2:])
            pooled.append(features.float().mean(dim=(2, 3, 4)))
            pooled.append(masked_average(features.float(), stage_mask))
        return torch.cat(pooled, dim=1)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """``volume`` (B, C+1, Z, Y, X) with the lesion mask as the last channel -> (B, embedding_dim)."""
        mask = volume[:, -1:].float()
        burden = torch.log10(mask.clamp(min=0).flatten(1).mean(dim=1, keepdim=True) + 1e-6) / 3.0  # about -2..0
        return self.projection(torch.cat([self.pooled_features(volume), burden], dim=1))
