"""The views of self-supervised pretraining, made by the project's own training augmentation.

A contrastive method learns what stays the same between two views of a lesion (or of a volume)
and forgets what the views change. So a view may only change what outcomes do not depend on:

kept (the planned ranges of ``plans["training"]["augmentation"]``):
  - rotation, always drawn: lesion texture, necrosis and enhancement have no orientation;
  - left-right mirroring: laterality carries no outcome information in the clinical notes;
  - additive Gaussian noise, at a quarter of the planned variance and with probability 0.3: the
    scanner's noise floor differs between centres, the lesion's texture does not.
left out:
  - scaling: a lesion's size is an outcome factor (local failure grows with volume);
  - Gaussian blur and simulated low resolution: they erase fine texture (heterogeneity) and the
    small foci that mark distant failure;
  - multiplicative brightness, contrast and gamma: they rescale texture amplitude and the level of
    enhancement relative to the brain, which is what necrosis and heterogeneity are;
  - instance dropout: a view is one lesion, not a bag.

The masked method uses one such view and hides blocks of it (``masking.py``).
"""

from __future__ import annotations

import copy
from typing import Any

from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose

from glmil_auto.training.data_augmentation.augmentation import get_training_transforms

VIEW_PROBABILITIES: dict[str, float] = {
    "rotation": 1.0, "scale": 0.0, "gaussian_noise": 0.3, "gaussian_blur": 0.0, "brightness": 0.0, "contrast": 0.0,
    "low_resolution": 0.0, "gamma": 0.0, "gamma_inverted": 0.0, "instance_dropout": 0.0, "mirror": 0.5,
}
NOISE_VARIANCE_FRACTION = 0.25
VIEW_KEYS = ("global", "instances")  # what a view transform changes; everything else is shared


def view_description(plans: dict[str, Any]) -> dict[str, Any]:
    """The kept views and their ranges (recorded in the pretraining plan and the checkpoint)."""
    augmentation = plans["training"]["augmentation"]
    low, high = augmentation["intensity"]["gaussian_noise_variance"]
    return {"probabilities": dict(VIEW_PROBABILITIES),
            "rotation_rad": {"global": augmentation["global"]["rotation_rad"],
                             "instances": augmentation["local"]["rotation_rad"]},
            "mirror_axes": {"global": augmentation["global"].get("mirror_axes", []),
                            "instances": augmentation["local"].get("mirror_axes", [])},
            "gaussian_noise_variance": [float(low) * NOISE_VARIANCE_FRACTION, float(high) * NOISE_VARIANCE_FRACTION],
            "left_out": ["scale", "gaussian_blur", "low_resolution", "brightness", "contrast", "gamma",
                         "instance_dropout"]}


def view_transforms(plans: dict[str, Any]) -> Compose:
    """One view: the training augmentation with the kept transforms only (module docstring)."""
    views = copy.deepcopy(plans)
    intensity = views["training"]["augmentation"]["intensity"]
    intensity["gaussian_noise_variance"] = view_description(plans)["gaussian_noise_variance"]
    return get_training_transforms(views, VIEW_PROBABILITIES)


class TwoViews(AbstractTransform):
    """Applies ``transform`` twice, to two copies of the batch's volumes and lesion patches, and
    returns them as ``global_a`` / ``global_b`` and ``instances_a`` / ``instances_b`` (the other keys
    are shared). The two views draw their random parameters one after the other from the same
    seeded state, so a batch's views are reproducible."""

    def __init__(self, transform: AbstractTransform):
        self.transform = transform

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        out = {k: v for k, v in data_dict.items() if k not in VIEW_KEYS}
        for suffix in ("a", "b"):
            view = self.transform(**{**data_dict, **{k: data_dict[k].copy() for k in VIEW_KEYS}})
            for key in VIEW_KEYS:
                out[f"{key}_{suffix}"] = view[key]
        return out

    def __repr__(self) -> str:
        return f"TwoViews({self.transform!r})"


class OneView(AbstractTransform):
    """The masked method's view: ``transform`` once, on a copy (the loader's arrays stay intact)."""

    def __init__(self, transform: AbstractTransform):
        self.transform = transform

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        return self.transform(**{**data_dict, **{k: data_dict[k].copy() for k in VIEW_KEYS}})
