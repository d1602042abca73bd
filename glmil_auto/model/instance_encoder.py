"""Local branch: one shared 3D CNN encodes every lesion patch at every context scale.

Each patch's last channel is that lesion's own mask. A patch is summarised by its average
feature and its mask-weighted average feature; the scales of an instance are fused by
concatenation and a projection, together with simple instance descriptors (log volume, depth
below the head surface) that a CNN on a fixed-size patch cannot measure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmil_auto.model.blocks import ResidualEncoder3d, masked_average

# What a CNN on a fixed-size, lesion-centred patch cannot measure: the lesion's size and where it
# sits in the head (posterior-fossa and periventricular/cortical sites carry leptomeningeal risk).
DESCRIPTOR_NAMES = (
    "log1p_volume_mm3",
    "depth_below_head_surface_cm",
    "relative_height",  # 0 = the head's inferior edge, 1 = its superior edge
    "relative_posteriority",  # 0 = anterior edge, 1 = posterior edge
    "relative_distance_from_midline",  # 0 = midline, 1 = the lateral edge (mirror-invariant)
)
NUM_DESCRIPTORS = len(DESCRIPTOR_NAMES)


class InstanceEncoder(nn.Module):
    def __init__(self, in_channels: int, features_per_stage: list[int], n_scales: int, embedding_dim: int,
                 dropout: float = 0.0, blocks_per_stage: list[int] | None = None):
        super().__init__()
        self.encoder = ResidualEncoder3d(in_channels, features_per_stage, blocks_per_stage=blocks_per_stage)
        width = features_per_stage[-1]
        self.n_scales = n_scales
        self.embedding_dim = embedding_dim
        self.fusion = nn.Sequential(
            nn.Linear(2 * width * n_scales + NUM_DESCRIPTORS, embedding_dim), nn.LeakyReLU(0.01), nn.Dropout(dropout),
            nn.Linear(embedding_dim, embedding_dim), nn.LeakyReLU(0.01),
        )

    def forward(self, patches: torch.Tensor, descriptors: torch.Tensor, instance_mask: torch.Tensor) -> torch.Tensor:
        """``patches`` (B, N, S, C+1, pz, py, px), ``descriptors`` (B, N, D), ``instance_mask`` (B, N) bool
        -> (B, N, embedding_dim). Padded instances are not encoded (their rows are zeros)."""
        b, n, s = patches.shape[:3]
        if patches.is_meta:
            return self._forward_meta(patches, descriptors)
        out = patches.new_zeros((b, n, self.embedding_dim), dtype=torch.float32)
        real = instance_mask.bool()
        if not real.any():
            return out
        selected = patches[real]  # (R, S, C+1, pz, py, px): only real instances go through the CNN
        fused = self._encode(selected, descriptors[real])
        out[real] = fused.to(out.dtype)
        return out

    def _forward_meta(self, patches: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
        """The planner's memory measurement (``memory_measurement.py``) runs on the meta device,
        where a boolean mask cannot select rows: every instance counts as real there. The clone
        stands for the copy that ``patches[real]`` makes on a real device."""
        b, n = patches.shape[:2]
        fused = self._encode(patches.flatten(0, 1).clone(), descriptors.flatten(0, 1))
        return fused.float().view(b, n, self.embedding_dim)

    def patch_summary(self, selected: torch.Tensor) -> torch.Tensor:
        """(R, S, C+1, pz, py, px) instances -> (R, 2 * width * S): what the CNN alone says of each
        lesion (per scale its last stage's average and mask-weighted average), before the
        descriptors join. Self-supervised pretraining reads this: the descriptors are the same in
        every view of a lesion, so a loss on the fused embedding could match views by them alone."""
        s = selected.shape[1]
        flat = selected.flatten(0, 1)
        features = self.encoder(flat)[-1].float()
        mask = F.adaptive_avg_pool3d(flat[:, -1:].float(), features.shape[2:])
        summary = torch.cat([features.mean(dim=(2, 3, 4)), masked_average(features, mask)], dim=1)
        return summary.view(selected.shape[0], s * summary.shape[1])

    def _encode(self, selected: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
        """(R, S, C+1, pz, py, px) real instances and their (R, D) descriptors -> (R, embedding_dim)."""
        return self.fusion(torch.cat([self.patch_summary(selected), descriptors.float()], dim=1))
