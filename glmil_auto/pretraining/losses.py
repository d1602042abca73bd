"""Self-supervised pretraining losses, as plain functions with explicit arguments and a
``reduction`` ("mean" | "sum" | "none"), in the style of torchsurv's losses.

- ``nt_xent_loss``: SimCLR's contrastive loss (Chen et al., ICML 2020). Two augmented views of each
  volume are pulled together and pushed away from every other volume of the batch; the encoder
  learns features that separate cases, which suits the classification-like downstream tasks
  (binary endpoints, risk scores). It needs negatives, i.e. batches of several cases.
- ``negative_cosine_predictor_loss``: the symmetric negative-cosine loss of SimSiam (Chen & He,
  CVPR 2021) and BYOL (Grill et al., NeurIPS 2020): a predictor head maps one view onto the
  (stop-gradient) projection of the other. No negatives, so it works with the very small batches
  3D volumes allow (2 to 4 cases).
- ``masked_reconstruction_loss``: the mean squared error on hidden voxels only, for masked
  image modelling with CNNs (Models Genesis, Zhou et al. 2019/2021; MAE, He et al. 2022): parts
  of the volume are hidden from the encoder and the network restores them.

Why written here rather than taken from ``lightly``: lightly needs torchvision and
pytorch_lightning, and PyPI's torchvision does not import beside the project's CPU torch 2.13
(``operator torchvision::nms does not exist``). These losses are a few lines of torch each.

All three compute in float32 (float64 stays float64), with autocast turned off, whatever the
network's precision, on any device.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def _no_autocast(tensor: Tensor) -> AbstractContextManager:
    """A context that turns autocast off on ``tensor``'s device."""
    if torch.is_autocast_enabled(tensor.device.type):
        return torch.autocast(tensor.device.type, enabled=False)
    return nullcontext()


def _to_compute(tensor: Tensor) -> Tensor:
    """float32 for half precision (and integer) inputs; float64 stays float64."""
    return tensor.double() if tensor.dtype == torch.float64 else tensor.float()


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(per_item: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_item.mean()
    if reduction == "sum":
        return per_item.sum()
    return per_item


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.1, reduction: str = "mean") -> Tensor:
    """SimCLR's normalised temperature-scaled cross entropy (NT-Xent, Chen et al. 2020).

    ``z1``, ``z2`` (N, D): embeddings of two views of the same N items (row i of both is item i).
    Rows are L2-normalised; with z = [z1; z2] (2N, D) and s_ij = cos(z_i, z_j) / temperature,
    the loss of anchor i, whose positive p(i) is its other view (i + N mod 2N), is

        l_i = -log( exp(s_i,p(i)) / sum_{k != i} exp(s_ik) )
            = logsumexp_{k != i}(s_ik) - s_i,p(i)

    the denominator holding the positive and the 2N - 2 other embeddings (self excluded).
    Returns the mean (or sum) over the 2N anchors, or with ``reduction="none"`` the (2N,)
    per-anchor losses in the order [z1 rows, z2 rows]. The self-similarity is masked with -inf
    before a logsumexp, so any temperature is stable.
    """
    _check_reduction(reduction)
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must be (N, D) tensors of the same shape, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"nt_xent_loss needs N >= 2 items (one positive and at least 2 negatives "
                         f"per anchor), got N = {n}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with _no_autocast(z1):
        z = F.normalize(torch.cat([_to_compute(z1), _to_compute(z2)]), dim=1)
        similarity = z @ z.T / temperature
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        similarity = similarity.masked_fill(self_mask, -torch.inf)
        positive = torch.arange(2 * n, device=z.device).roll(n)  # i -> i + N mod 2N
        per_anchor = torch.logsumexp(similarity, dim=1) - similarity[torch.arange(2 * n, device=z.device), positive]
        return _reduce(per_anchor, reduction)


def negative_cosine_predictor_loss(p1: Tensor, z2: Tensor, p2: Tensor, z1: Tensor,
                                   reduction: str = "mean") -> Tensor:
    """The symmetric SimSiam / BYOL loss (Chen & He 2021; Grill et al. 2020).

    ``p1``, ``p2`` (N, D): predictor outputs of views 1 and 2; ``z1``, ``z2`` (N, D): projections
    (or, for BYOL, target-network projections) of views 1 and 2. Per item i

        l_i = 0.5 * (D(p1_i, z2_i) + D(p2_i, z1_i)),   D(p, z) = -cos(p, stopgrad(z))

    in [-1, 1]. The targets ``z1``, ``z2`` are detached here: no gradient flows into them (the
    stop-gradient that keeps SimSiam from collapsing). Returns the mean (or sum) over the N
    items, or the (N,) per-item losses with ``reduction="none"``.
    """
    _check_reduction(reduction)
    shapes = [tuple(t.shape) for t in (p1, z2, p2, z1)]
    if p1.dim() != 2 or len(set(shapes)) != 1:
        raise ValueError(f"p1, z2, p2 and z1 must be (N, D) tensors of the same shape, got {shapes}")
    with _no_autocast(p1):
        p1, p2 = _to_compute(p1), _to_compute(p2)
        z1, z2 = _to_compute(z1).detach(), _to_compute(z2).detach()
        per_item = -0.5 * (F.cosine_similarity(p1, z2, dim=1) + F.cosine_similarity(p2, z1, dim=1))
        return _reduce(per_item, reduction)


def masked_reconstruction_loss(prediction: Tensor, target: Tensor, mask: Tensor,
                               reduction: str = "mean") -> Tensor:
    """Mean squared error over the masked (hidden, to be reconstructed) voxels of each sample.

    ``prediction``, ``target`` (B, C, *spatial); ``mask`` (B, 1, *spatial) (shared by the
    channels) or (B, C, *spatial), bool or float in {0, 1}, True where a voxel was hidden from the
    encoder. With M_b the masked (channel, voxel) entries of sample b,

        l_b = 1 / |M_b| * sum_{(c, v) in M_b} (prediction_bcv - target_bcv)^2

    Unmasked entries affect neither the value nor the gradient (even if NaN). A sample with
    |M_b| = 0 contributes nothing: ``"none"`` returns the (B,) losses with NaN for such samples,
    ``"mean"`` averages the samples that have masked voxels and ``"sum"`` sums them; if no sample
    has any, both return a 0 still attached to ``prediction``'s graph.
    """
    _check_reduction(reduction)
    if prediction.dim() < 3 or prediction.shape != target.shape:
        raise ValueError(f"prediction and target must be (B, C, *spatial) tensors of the same shape, "
                         f"got {tuple(prediction.shape)} and {tuple(target.shape)}")
    batch, channels, *spatial = prediction.shape
    if tuple(mask.shape) not in ((batch, 1, *spatial), (batch, channels, *spatial)):
        raise ValueError(f"mask must be (B, 1, *spatial) or (B, C, *spatial) = {(batch, 1, *spatial)} or "
                         f"{tuple(prediction.shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("a non-bool mask must hold only 0 and 1")
        mask = mask != 0
    with _no_autocast(prediction):
        mask = mask.expand_as(prediction)
        prediction_c, target_c = _to_compute(prediction), _to_compute(target)
        squared = torch.where(mask, prediction_c - target_c, 0.0).square()
        total = squared.flatten(1).sum(dim=1)
        count = mask.flatten(1).sum(dim=1)
        has_masked = count > 0
        per_sample = total / count.clamp(min=1).to(total.dtype)
        if reduction == "none":
            return torch.where(has_masked, per_sample, torch.nan)
        if not bool(has_masked.any()):
            return prediction_c.flatten()[:0].sum()  # empty sum: 0 with a graph, no NaN from the data
        return _reduce(per_sample[has_masked], reduction)
