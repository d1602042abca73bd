"""The pretrained-encoder checkpoint: what it holds, the architecture it fits, and loading it.

``<glmil_results>/<Dataset>/pretrained/<run>__<plans>/checkpoint_final.pt`` holds (all
``torch.load(weights_only=True)``-safe: tensors, dicts, lists, strings, numbers)::

    format, version
    encoders             state dict of the network's ``global_encoder.*`` and ``instance_encoder.*`` keys
    architecture         the plans' architecture block (:func:`architecture_block`) and its sha256
    plans_name, dataset  the target dataset and plans it was pretrained for
    seen                 the datasets and cases it saw
    settings             the method's settings (the pretraining plan)
    fold                 None, or K when only fold K's training cases were seen (the strict setting)

Fine-tuning (``glmil_train ID FOLD -pretrained_weights FILE``) loads the encoder keys into a network
built from the same architecture; a checkpoint of another architecture is refused with one line
naming the first thing that differs, as nnU-Net refuses pretrained weights whose shapes differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from glmil_auto.utilities.content_hash import file_sha256, json_sha256

CHECKPOINT_FORMAT = "glmil_auto pretrained encoders"
CHECKPOINT_VERSION = 1
ENCODER_MODULES = ("global_encoder", "instance_encoder")


class PretrainedArchitectureMismatch(ValueError):
    """A pretrained checkpoint was made for another architecture than the plans'."""


def architecture_block(plans: dict[str, Any]) -> dict[str, Any]:
    """Everything that fixes the encoders' parameter shapes and what their inputs mean: the input
    channels (names and count), both encoders' classes and arch_kwargs, the embedding width, the
    global volume's shape and spacing, the lesion patch size, spacing and context scales."""
    pre = plans["preprocessing"]
    block = {
        "channel_names": {str(k): v for k, v in plans.get("channel_names", {}).items()},
        "num_input_channels": plans["num_input_channels"],
        "model": plans["model"],
        "embedding_dim": plans["training"]["trainer_defaults"]["embedding_dim"],
        "global": {"input_shape": pre["global"]["input_shape"], "target_spacing": pre["global"]["target_spacing"]},
        "local": {"patch_size": pre["local"]["patch_size"], "target_spacing": pre["local"]["target_spacing"],
                  "scales": pre["local"]["scales"]},
    }
    if pre.get("small_foci"):  # the global volume's foci channel (plans without it keep their old hash)
        block["small_foci"] = {k: pre["small_foci"][k] for k in ("reference_channel", "radii_mm", "channel_clip",
                                                                  "channel_scale", "floor")}
    return block


def architecture_sha256(plans: dict[str, Any]) -> str:
    return json_sha256(architecture_block(plans))


def architecture_difference(expected: Any, found: Any, path: str = "") -> str | None:
    """The first place where two architecture blocks differ, as ``path: found vs expected``
    (None when equal)."""
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in sorted(set(expected) | set(found)):
            where = f"{path}.{key}" if path else str(key)
            if key not in found:
                return f"{where} is missing from the checkpoint"
            if key not in expected:
                return f"{where} is in the checkpoint but not in these plans"
            difference = architecture_difference(expected[key], found[key], where)
            if difference is not None:
                return difference
        return None
    if isinstance(expected, (list, tuple)) and isinstance(found, (list, tuple)):
        if len(expected) != len(found) or any(architecture_difference(a, b) for a, b in zip(expected, found)):
            return f"{path}: checkpoint {list(found)} vs plans {list(expected)}"
        return None
    return None if expected == found else f"{path}: checkpoint {found!r} vs plans {expected!r}"


def encoder_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """The encoders' entries of the network's state dict (keys as in the whole network), on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()
            if k.split(".", 1)[0] in ENCODER_MODULES}


def read_pretrained(path: str | Path) -> dict[str, Any]:
    """Load a pretrained checkpoint (weights only), checking that it is one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path} do not exist")
    content = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a glmil_pretrain checkpoint (no '{CHECKPOINT_FORMAT}' format field)")
    return content


def check_architecture(content: dict[str, Any], plans: dict[str, Any], path: str | Path) -> None:
    """Raise :class:`PretrainedArchitectureMismatch` (one line) unless ``content`` fits ``plans``."""
    if content["architecture_sha256"] == architecture_sha256(plans):
        return
    difference = architecture_difference(architecture_block(plans), content["architecture"]) or "the architecture hash"
    raise PretrainedArchitectureMismatch(
        f"pretrained weights {path} were made for another architecture ({difference}); pretrain again with these "
        "plans (glmil_pretrain -p PLANS)")


def load_pretrained_encoders(network: nn.Module, path: str | Path, plans: dict[str, Any]) -> dict[str, Any]:
    """Copy the checkpoint's encoder weights into ``network`` (built from ``plans``) and return a
    JSON-safe record of the source (path, file sha256, run, method, datasets, keys loaded).

    Only the encoders the network has are loaded (``local_only`` has no global encoder); every
    encoder key of the network must be in the checkpoint with the same shape, otherwise the
    architecture check (or, for a hand-edited checkpoint, a shape check) refuses it."""
    content = read_pretrained(path)
    check_architecture(content, plans, path)
    own = network.state_dict()
    wanted = {k: v for k, v in own.items() if k.split(".", 1)[0] in ENCODER_MODULES}
    weights = content["encoders"]
    missing = sorted(k for k in wanted if k not in weights)
    if missing:
        raise PretrainedArchitectureMismatch(f"pretrained weights {path} lack {len(missing)} encoder key(s) of this "
                                             f"network, e.g. {missing[0]}")
    bad = [k for k in wanted if tuple(weights[k].shape) != tuple(wanted[k].shape)]
    if bad:
        raise PretrainedArchitectureMismatch(f"pretrained weights {path}: {bad[0]} has shape "
                                             f"{tuple(weights[bad[0]].shape)}, the network {tuple(wanted[bad[0]].shape)}")
    network.load_state_dict({**own, **{k: weights[k].to(own[k].device, own[k].dtype) for k in wanted}})
    return {"path": str(Path(path).resolve()), "sha256": file_sha256(path), "run": content.get("run"),
            "fold": content.get("fold"),
            "method": content.get("settings", {}).get("method"), "datasets": content.get("seen", {}).get("datasets"),
            "n_cases": content.get("seen", {}).get("n_cases"), "architecture_sha256": content["architecture_sha256"],
            "loaded_modules": sorted({k.split(".", 1)[0] for k in wanted}), "loaded_keys": len(wanted)}
