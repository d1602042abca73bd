"""Residual 3D convolution blocks and encoder shared by the global and the instance branch.

Instance normalisation (as nnU-Net) instead of batch normalisation: batches are a handful of
bags, and the instance branch mixes patches of different lesions and scales in one batch.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock3d(nn.Module):
    """conv-norm-act, conv-norm, plus a (projected) skip, then act. ``stride`` 2 downsamples."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm3d(out_channels, affine=True)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(out_channels, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.InstanceNorm3d(out_channels, affine=True),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act(out + self.skip(x))


class ResidualEncoder3d(nn.Module):
    """A stem plus ``blocks_per_stage[s]`` residual blocks per stage (default one); the first block
    of every stage after the first halves the grid.

    ``first_stride`` 2 makes the first stage halve the grid too: its 3x3x3 kernels still read every
    input voxel, and it removes the most expensive stage (the full-resolution one, about 60 % of
    the global encoder's time on a CPU plan; documentation/accuracy.md).
    ``forward`` returns the feature map of every stage (for multiscale pooling and Grad-CAM).
    """

    def __init__(self, in_channels: int, features_per_stage: list[int], first_stride: int = 1,
                 blocks_per_stage: list[int] | None = None):
        super().__init__()
        self.features_per_stage = list(features_per_stage)
        blocks = [1] * len(self.features_per_stage) if blocks_per_stage is None else [int(b) for b in blocks_per_stage]
        if len(blocks) != len(self.features_per_stage) or min(blocks, default=1) < 1:
            raise ValueError(f"blocks_per_stage {blocks_per_stage} must give at least one block for each of the "
                             f"{len(self.features_per_stage)} stages")
        self.blocks_per_stage = blocks
        stages, previous = [], in_channels
        for s, (features, n_blocks) in enumerate(zip(self.features_per_stage, blocks)):
            first = ResidualBlock3d(previous, features, stride=first_stride if s == 0 else 2)
            # one block per stage stays a bare block, so that existing state dicts keep their keys
            stages.append(first if n_blocks == 1 else
                          nn.Sequential(first, *[ResidualBlock3d(features, features) for _ in range(n_blocks - 1)]))
            previous = features
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


def masked_average(features: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Average of ``(B, C, *spatial)`` features weighted by ``(B, 1, *spatial)`` non-negative weights.

    Zero (not NaN) where the weights are all zero, e.g. a volume without lesions.
    """
    total = weights.flatten(1).sum(dim=1)
    pooled = (features * weights).flatten(2).sum(dim=2)
    return pooled / (total.unsqueeze(1) + eps)
