"""The heads pretraining puts on the encoders and discards afterwards.

- :class:`ProjectionHead`: SimCLR's two-layer MLP between the embedding and the contrastive loss
  (the loss acts on the projection, so the embedding keeps what the projection throws away);
- :class:`ReconstructionDecoder`: the masked method's light decoder. Each stage's feature map of
  the encoder (``ResidualEncoder3d``, every stage) goes through a 1x1x1 convolution to the image
  channels and is upsampled to the input grid; their sum is the reconstruction. It is light on
  purpose: what it cannot do, the encoder must.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding.float())


class ReconstructionDecoder(nn.Module):
    def __init__(self, features_per_stage: list[int], out_channels: int):
        super().__init__()
        self.outputs = nn.ModuleList(nn.Conv3d(f, out_channels, 1) for f in features_per_stage)

    def forward(self, maps: list[torch.Tensor], size: tuple[int, ...]) -> torch.Tensor:
        """``maps``: the encoder's stage outputs -> (M, out_channels, *size)."""
        out = None
        for conv, features in zip(self.outputs, maps):
            part = F.interpolate(conv(features), size=size, mode="trilinear", align_corners=False)
            out = part if out is None else out + part
        return out
