"""Grad-CAM (Selvaraju et al. 2017) of the global encoder, mapped back to the input image.

The global encoder keeps the feature map of every stage of its last forward
(``MaskGuidedGlobalEncoder.last_feature_maps``). For one endpoint's output y (the logit of a
binary endpoint, the log-risk of a survival endpoint) and the feature map A of one stage:

    alpha_c = mean over voxels of dy/dA_c,    CAM = ReLU(sum_c alpha_c A_c)

The map lives on that stage's grid; it is upsampled (trilinear) to the global input grid and
scaled to [0, 1] per case. :func:`gradcam_in_image_geometry` then resamples one case's map
through world coordinates onto the original image's voxel grid, so it can be written with the
input's exact size, spacing, origin and direction (and overlaid on it in any viewer).

The ReLU keeps what speaks *for* a higher output (event more likely, higher risk); for a case
the model scores low, the map is mostly weak or empty, as in the original method.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.model.network import GLMILMoE
from glmil_auto.preprocessing.resampling import resample_to_grid


def _endpoint_output(network: GLMILMoE, endpoint: str) -> str:
    """``"logits"`` or ``"log_risks"``: where the endpoint's output is; ValueError if it cannot be explained."""
    names = {e["name"]: e["type"] for e in network.endpoints}
    if endpoint not in names:
        raise ValueError(f"unknown endpoint {endpoint!r}; the network predicts {sorted(names)}")
    if not network.use_global or network.global_encoder is None:
        raise ValueError(
            f"cannot compute a Grad-CAM for endpoint {endpoint!r}: the network (mode {network.mode!r}) "
            "has no global branch"
        )
    return "logits" if names[endpoint] == "binary" else "log_risks"


def global_gradcam(network: GLMILMoE, batch: dict[str, torch.Tensor], endpoint: str, stage: int = -1) -> np.ndarray:
    """Grad-CAM of ``endpoint``'s output with respect to the global encoder's feature map of ``stage``.

    The output is the logit of a binary endpoint or the log-risk of a survival endpoint (one
    scalar per case, so the map explains the score itself, not a loss). Returns ``(B, Z, Y, X)``
    float32 on the global input grid (the stage map upsampled trilinearly), ReLU'd and scaled to
    [0, 1] per case; a case whose map is all zero stays all zero (no evidence, not noise blown up).

    ``stage`` defaults to the deepest stage (-1): its features are the most abstract and the last
    ones before pooling, which is what Grad-CAM was designed for; shallower stages give sharper
    but less class-specific maps.

    Safe to call from evaluation code: gradients are enabled locally (works under a caller's
    ``torch.no_grad``), autocast is disabled (everything in float32), the network runs in eval
    mode for the call (dropout and noisy gating would make the map random) and its training flag
    is restored; gradients are taken with ``torch.autograd.grad`` with respect to the feature map
    only, so no parameter and no ``.grad`` is touched. Device-agnostic: the batch is moved to the
    network's device. Cases of a batch are independent (instance normalisation, per-case heads),
    so differentiating the sum over the batch gives every case its own gradient.

    Raises ValueError naming the endpoint if it is unknown or the network has no global branch
    (mode ``local_only``).
    """
    where = _endpoint_output(network, endpoint)
    encoder = network.global_encoder
    n_stages = len(encoder.encoder.stages)
    if not -n_stages <= stage < n_stages:
        raise ValueError(f"stage {stage} out of range for a global encoder with {n_stages} stages")
    device = next(network.parameters()).device
    inputs: dict[str, Any] = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    # float32 input that requires grad: the graph exists even if the caller froze the parameters
    inputs["global"] = inputs["global"].detach().float().requires_grad_(True)
    grid = tuple(inputs["global"].shape[2:])

    was_training = network.training
    network.eval()
    try:
        with torch.enable_grad(), torch.autocast(device_type=device.type, enabled=False):
            output = network(inputs)
            score = getattr(output, where)[endpoint].float()  # (B,)
            features = encoder.last_feature_maps[stage]  # (B, C, z, y, x)
            (gradient,) = torch.autograd.grad(score.sum(), features)
        with torch.no_grad():
            alpha = gradient.float().mean(dim=(2, 3, 4), keepdim=True)  # (B, C, 1, 1, 1)
            cam = F.relu((alpha * features.detach().float()).sum(dim=1, keepdim=True))  # (B, 1, z, y, x)
            cam = F.interpolate(cam, size=grid, mode="trilinear", align_corners=False).clamp_(min=0)[:, 0]
            peak = cam.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
            cam = torch.where(peak > 0, cam / peak.clamp(min=torch.finfo(torch.float32).tiny), torch.zeros_like(cam))
    finally:
        network.train(was_training)
        # keep the maps (as every forward does) but not this call's graph
        encoder.last_feature_maps = [m.detach() for m in encoder.last_feature_maps]
    return np.nan_to_num(cam.cpu().numpy().astype(np.float32, copy=False), nan=0.0).clip(0.0, 1.0)


def gradcam_in_image_geometry(
    cam: np.ndarray, global_geometry: Geometry | dict[str, Any], original_geometry: Geometry | dict[str, Any]
) -> np.ndarray:
    """One case's ``(Z, Y, X)`` map on the global grid -> an array of the original image's shape.

    The global grid is the canonical (axis-swapped, flipped), cropped and resampled image, so an
    index of the map is not an index of the input; resampling goes through world coordinates
    (linear, 0 outside the global grid), which undoes reorientation, crop and spacing at once and
    handles oblique directions. Writing the result with ``write_image(array, original_geometry,
    path)`` gives a NIfTI with exactly the input's size, spacing, origin and direction.

    The geometries are :class:`Geometry` objects or their ``to_dict()`` form, as stored in a
    preprocessed case's properties (``"global_geometry"``, ``"original_geometry"``).
    """
    source = global_geometry if isinstance(global_geometry, Geometry) else Geometry.from_dict(global_geometry)
    target = original_geometry if isinstance(original_geometry, Geometry) else Geometry.from_dict(original_geometry)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != tuple(source.shape):
        raise ValueError(f"map shape {cam.shape} does not match the global grid {tuple(source.shape)}")
    mapped = resample_to_grid(cam, source, target, order=1, cval=0.0)
    return np.clip(mapped, 0.0, 1.0).astype(np.float32, copy=False)
