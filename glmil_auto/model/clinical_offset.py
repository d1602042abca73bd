"""The clinical + volumetric linear predictor that the image evidence corrects.

Principle (DESIGN.md): a network that receives the clinical variables, the lesion count and the
lesion volumes must never score below a linear model on those same inputs. ``ClinicalOffset``
makes that structural: it holds, per endpoint, the coefficients of a logistic (binary) or Cox
(survival) regression fitted on the fold's training cases (``glmil_auto.training.starting_point.clinical_offset_fit``)
and adds that linear predictor to the network's output, whose heads start at zero. At
initialisation the network *is* the linear model; training can only move away from it where the
images (or non-linear clinical effects) improve the loss, and model selection on the validation
cases keeps the linear model when they do not.

The design vector is computed inside the network from the batch, so training, validation,
prediction, mirroring and leave-one-lesion-out all see the same definition:
``[clinical encoder inputs (standardised values, missing indicators, one-hot categories),
log1p(lesion count), log1p(total lesion volume in mL)]``; count and volume come from the bag's
real instances (``instance_mask``, ``instance_descriptors[..., 0]`` = log1p(volume mm3)).
The coefficients are buffers: they travel in the checkpoint and are not trained. The offset has
grown into the starting point (``starting_point.py``), which adds the stored radiomic features and
a lesion-level noisy-OR for "any lesion" endpoints; ``ClinicalOffset`` is its name for the
clinical design alone.
"""

from __future__ import annotations

import torch

from glmil_auto.model.starting_point import StartingPoint

VOLUMETRIC_DESIGN_NAMES = ("log1p_lesion_count", "log1p_total_lesion_volume_ml")


def volumetric_design(instance_mask: torch.Tensor, instance_descriptors: torch.Tensor) -> torch.Tensor:
    """``(B, 2)``: log1p(number of real instances), log1p(their total volume in mL)."""
    mask = instance_mask.bool()
    count = mask.sum(dim=1).float()
    volume_mm3 = torch.where(mask, torch.expm1(instance_descriptors[..., 0].float()), torch.zeros_like(count[:, None]))
    return torch.stack([torch.log1p(count), torch.log1p(volume_mm3.clamp(min=0).sum(dim=1) / 1000.0)], dim=1)


# the clinical offset is the starting point without radiomic features or lesion endpoints
ClinicalOffset = StartingPoint
