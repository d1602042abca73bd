"""Build the network from ``plans.json`` (shapes, widths, clinical vocabulary, endpoints)."""

from __future__ import annotations

from typing import Any

from glmil_auto.model.network import MODES, GLMILMoE

ABLATIONS = MODES


def network_config(plans: dict[str, Any], mode: str = "full", **overrides: Any) -> dict[str, Any]:
    """Everything the network needs, read from the plans; ``overrides`` for variants (top_k, ...)."""
    defaults = plans["training"]["trainer_defaults"]
    config = {
        "mode": mode,
        "in_channels": plans["num_input_channels"],
        "global_features": plans["model"]["global_encoder"]["features_per_stage"],
        "global_first_stride": plans["model"]["global_encoder"].get("first_stride", 1),
        "local_features": plans["model"]["local_encoder"]["features_per_stage"],
        "n_scales": len(plans["preprocessing"]["local"]["scales"]),
        "embedding_dim": defaults["embedding_dim"],
        "expert_hidden_dim": defaults["expert_hidden_dim"],
        "num_experts": defaults["num_experts"],
        "dropout": defaults["dropout"],
        "top_k": None,
        "noisy_gating": False,
        "clinical_features": plans["clinical"]["features"],
        "endpoints": plans["endpoints"],
    }
    config.update(overrides)
    return config


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
    return GLMILMoE(network_config(plans, mode, **overrides))
