"""Build the network from ``plans.json`` (shapes, widths, clinical vocabulary, endpoints).

The two image encoders are named in the plans, as nnU-Net v2 stores ``network_class_name`` and
``arch_kwargs``::

    "model": {"global_encoder": {"network_class_name": "glmil_auto.model.global_encoder.MaskGuidedGlobalEncoder",
                                 "arch_kwargs": {"features_per_stage": [...], "blocks_per_stage": [...],
                                                 "first_stride": 1}, "n_pools": 4},
              "local_encoder":  {"network_class_name": "glmil_auto.model.instance_encoder.InstanceEncoder",
                                 "arch_kwargs": {"features_per_stage": [...], "blocks_per_stage": [...]}, ...}}

so a variant planner swaps an encoder without touching the trainer. A global encoder class is
called as ``cls(in_channels=, embedding_dim=, dropout=, **arch_kwargs)`` and must return
``(B, embedding_dim)`` from the ``(B, C+1, Z, Y, X)`` volume; a local one as
``cls(in_channels=, n_scales=, embedding_dim=, dropout=, **arch_kwargs)`` with
:class:`~glmil_auto.model.instance_encoder.InstanceEncoder`'s ``forward``. Plans written before
these keys existed (``features_per_stage`` and ``first_stride`` directly under the encoder) still load.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from glmil_auto.model.global_encoder import MaskGuidedGlobalEncoder
from glmil_auto.model.instance_encoder import InstanceEncoder
from glmil_auto.model.network import MODES, GLMILMoE
from glmil_auto.utilities.class_lookup import locate_class

ABLATIONS = MODES
DEFAULT_GLOBAL_ENCODER = f"{MaskGuidedGlobalEncoder.__module__}.{MaskGuidedGlobalEncoder.__name__}"
DEFAULT_LOCAL_ENCODER = f"{InstanceEncoder.__module__}.{InstanceEncoder.__name__}"


def encoder_spec(plans: dict[str, Any], branch: str) -> tuple[str, dict[str, Any]]:
    """``(class name, arch_kwargs)`` of ``branch`` (``global_encoder`` or ``local_encoder``),
    also for plans that predate ``network_class_name``."""
    entry = plans["model"][branch]
    if "network_class_name" in entry:
        return entry["network_class_name"], dict(entry.get("arch_kwargs", {}))
    kwargs: dict[str, Any] = {"features_per_stage": list(entry["features_per_stage"])}
    if branch == "global_encoder":
        kwargs["first_stride"] = entry.get("first_stride", 1)
        return DEFAULT_GLOBAL_ENCODER, kwargs
    return DEFAULT_LOCAL_ENCODER, kwargs


def network_config(plans: dict[str, Any], mode: str = "full", **overrides: Any) -> dict[str, Any]:
    """Everything the network needs, read from the plans; ``overrides`` for variants (top_k, ...)."""
    from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names

    defaults = plans["training"]["trainer_defaults"]
    lesion_section = plans["preprocessing"].get("lesion_features")
    global_class, global_kwargs = encoder_spec(plans, "global_encoder")
    local_class, local_kwargs = encoder_spec(plans, "local_encoder")
    config = {
        "mode": mode,
        "in_channels": plans["num_input_channels"],
        "global_features": global_kwargs["features_per_stage"],
        "global_first_stride": global_kwargs.get("first_stride", 1),
        "local_features": local_kwargs["features_per_stage"],
        "global_encoder": {"network_class_name": global_class, "arch_kwargs": global_kwargs},
        "local_encoder": {"network_class_name": local_class, "arch_kwargs": local_kwargs},
        "n_scales": len(plans["preprocessing"]["local"]["scales"]),
        "embedding_dim": defaults["embedding_dim"],
        "expert_hidden_dim": defaults["expert_hidden_dim"],
        "num_experts": defaults["num_experts"],
        "dropout": defaults["dropout"],
        "top_k": None,
        "noisy_gating": False,
        "clinical_features": plans["clinical"]["features"],
        "endpoints": plans["endpoints"],
        # the stored radiomic features the starting point reads (plans without them: none)
        "n_lesion_features": len(lesion_feature_names(lesion_section)),
        "n_case_features": len(lesion_section.get("case_features", [])) if lesion_section else 0,
    }
    foci = plans["preprocessing"].get("small_foci")
    if foci:  # the global volume's foci channel and the per-case descriptor (foci_descriptor.py)
        from glmil_auto.preprocessing.foci_channel import foci_channel_index, global_input_channels

        config.update(global_in_channels=global_input_channels(plans), foci_channel=foci_channel_index(plans),
                      foci_candidates=int(foci["max_candidates"]), use_small_foci=True)
    config.update(overrides)
    return config


def _is_default(spec: dict[str, Any], default_class: str, default_kwargs: dict[str, Any]) -> bool:
    kwargs = {k: v for k, v in spec["arch_kwargs"].items() if not (k == "blocks_per_stage" and all(b == 1 for b in v))}
    return spec["network_class_name"] == default_class and kwargs == default_kwargs


def build_encoders(network: GLMILMoE, config: dict[str, Any]) -> None:
    """Replace the network's encoders by the planned classes where the plans ask for anything but
    the default encoder with one block per stage (then nothing is rebuilt, and the random
    initialisation is exactly that of ``GLMILMoE``)."""
    rng = torch.random.get_rng_state()  # the encoders are initialised from the state they would have had
    common = {"in_channels": config["in_channels"], "embedding_dim": config["embedding_dim"], "dropout": config["dropout"]}
    spec = config["global_encoder"]
    if network.global_encoder is not None and not _is_default(
            spec, DEFAULT_GLOBAL_ENCODER, {"features_per_stage": config["global_features"],
                                           "first_stride": config["global_first_stride"]}):
        torch.random.set_rng_state(rng)
        cls = locate_class(spec["network_class_name"], nn.Module)
        network.global_encoder = cls(**{**common, "in_channels": config.get("global_in_channels", config["in_channels"])},
                                     **spec["arch_kwargs"])
    spec = config["local_encoder"]
    if network.use_local and not _is_default(spec, DEFAULT_LOCAL_ENCODER, {"features_per_stage": config["local_features"]}):
        cls = locate_class(spec["network_class_name"], nn.Module)
        network.instance_encoder = cls(**common, n_scales=config["n_scales"], **spec["arch_kwargs"])


def build_network(plans: dict[str, Any], dataset_json: dict[str, Any] | None = None, mode: str = "full",
                  **overrides: Any) -> GLMILMoE:
    """The GL-MIL MoE network for a plans file.

    ``dataset_json`` is checked against the plans (the endpoints and clinical features must be the
    ones the plans were made for), so a model is never built for another dataset's columns.
    """
    if dataset_json is not None:
        planned = [e["name"] for e in plans["endpoints"]]
        declared = list(dataset_json.get("endpoints", {}))
        if planned != declared:
            raise ValueError(f"plans were made for endpoints {planned}, dataset.json declares {declared}")
        planned_features = [f["name"] for f in plans["clinical"]["features"]]
        if planned_features != list(dataset_json.get("clinical_features", {})):
            raise ValueError(f"plans were made for clinical features {planned_features}, dataset.json "
                             f"declares {list(dataset_json.get('clinical_features', {}))}")
    config = network_config(plans, mode, **overrides)
    network = GLMILMoE(config)
    build_encoders(network, config)
    return network
