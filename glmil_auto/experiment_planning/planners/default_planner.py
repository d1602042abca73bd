"""``GLMILPlanner``: dataset fingerprint + device profile -> ``plans.json``.

Every data-dependent choice of the pipeline is made here; downstream code reads shapes,
spacings and widths from the plans and hard-codes none. Each rule is a method so a variant
planner changes one rule in a small subclass (see ``variants.py``); the numbers behind the rules
are class attributes. documentation/planning.md gives every rule with its reason.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from glmil_auto.experiment_planning import planning_rules as rules
from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME, PLANS_VERSION


class GLMILPlanner:
    """The default planner. Attributes are (cpu value, gpu value) where the device matters."""

    # global branch
    global_voxel_cap = {"cpu": 56**3, "cuda": 160**3}  # compute cap on the global input
    global_base_features = {"cpu": 8, "cuda": 24}
    global_max_features = {"cpu": 64, "cuda": 320}
    # the CPU plan's first stage halves the grid too: the full-resolution stage is most of the time
    global_first_stride = {"cpu": 2, "cuda": 1}
    max_pools = 5
    min_edge = 4
    # local branch
    patch_voxel_cap = {"cpu": 20**3, "cuda": 48**3}
    local_base_features = {"cpu": 8, "cuda": 24}
    local_max_features = {"cpu": 64, "cuda": 256}
    lesion_margin_mm = 5.0  # context on each side of the 95th-percentile lesion
    context_scales = (1.0, 2.0)  # fields of view at the same voxel count
    max_instances_cap = {"cpu": 8, "cuda": 32}
    # training
    min_batch_size = 4  # fewer bags leave the Cox partial likelihood with almost no risk sets
    max_batch_size = {"cpu": 16, "cuda": 64}
    max_batch_fraction = 0.2  # of the training cases, so that an epoch holds several steps
    memory_safety = 0.6  # of the budget usable for activations (weights, optimiser, workspace)
    brain_margin_mm = 10.0

    def __init__(self, fingerprint: dict[str, Any], dataset_json: dict[str, Any], device: DeviceProfile,
                 plans_name: str = DEFAULT_PLANS_NAME):
        self.fingerprint = fingerprint
        self.dataset_json = dataset_json
        self.device = device
        self.plans_name = plans_name

    # ------------------------------------------------------------------ helpers
    def _by_device(self, attribute: dict[str, Any]) -> Any:
        return attribute["cuda" if self.device.kind == "cuda" else "cpu"]

    @property
    def _summary(self) -> dict[str, Any]:
        return self.fingerprint["summary"]

    # ------------------------------------------------------------------ rules
    def plan_normalisation(self) -> dict[str, dict[str, Any]]:
        """z-score inside the brain region per case for MRI (arbitrary scanner units);
        clip to the dataset's foreground percentiles and z-score with dataset statistics for CT
        (Hounsfield units are absolute, so dataset statistics are meaningful)."""
        out = {}
        foreground = self.fingerprint["foreground_intensity_properties_per_channel"]
        for channel, name in self.fingerprint["channel_names"].items():
            if name.strip().upper() == "CT":
                props = foreground[channel]
                out[channel] = {
                    "scheme": "ct",
                    "clip": [props["percentile_00_5"], props["percentile_99_5"]],
                    "mean": props["mean"],
                    "std": props["std"],
                }
            else:
                out[channel] = {"scheme": "zscore_brain"}
        return out

    def plan_global(self, voxel_budget: float) -> dict[str, Any]:
        """Isotropic spacing so that the 95th-percentile head extent fits ``voxel_budget``;
        pool until an edge of ``min_edge``; the shape a multiple of 2**pools."""
        extent = np.asarray(self._summary["head_extent_mm"]["percentile_95"], dtype=float)
        finest = float(min(self._summary["spacing_canonical"]["median"]))
        spacing = max(finest, float(np.cbrt(np.prod(extent) / voxel_budget)))
        spacing = math.ceil(spacing * 100) / 100
        raw_shape = np.ceil(extent / spacing).astype(int)
        pools = rules.pools_until_edge(raw_shape, self.min_edge, self.max_pools)
        shape = [rules.round_up(s, 2**pools) for s in raw_shape]
        features = rules.encoder_features(
            pools + 1, self._by_device(self.global_base_features), self._by_device(self.global_max_features)
        )
        return {"target_spacing": [spacing] * 3, "input_shape": shape, "n_pools": pools, "features_per_stage": features}

    def plan_local(self) -> dict[str, Any]:
        """High-resolution spacing by nnU-Net's anisotropy rule; a field of view covering the
        95th-percentile lesion plus a margin; coarsened (keeping the field of view) when the
        patch would exceed the device's voxel cap."""
        cases = self.fingerprint["cases"].values()
        spacing = np.asarray(
            rules.anisotropic_target_spacing([c["spacing_canonical"] for c in cases], [c["shape_canonical"] for c in cases])
        )
        lesion = self._summary["lesion_extent_mm"]["percentile_95"]
        diameter = self._summary["lesion_diameter_mm"]["percentile_95"]
        if lesion is None:  # a dataset without lesions still gets a valid (unused) local plan
            lesion, diameter = [10.0, 10.0, 10.0], 10.0
        fov_mm = max(float(max(lesion)), float(diameter)) + 2 * self.lesion_margin_mm
        cap = self._by_device(self.patch_voxel_cap)
        coarsening = 1.0
        while True:
            patch = [max(8, rules.round_up(fov_mm / s, 8)) for s in spacing * coarsening]
            if np.prod(patch) <= cap or all(p == 8 for p in patch):
                break
            coarsening *= 1.1
        spacing = spacing * coarsening
        counts = self._summary["lesions_per_case"]
        max_instances = int(min(max(1, math.ceil(counts["percentile_95"] or 1)), self._by_device(self.max_instances_cap)))
        n_pools = rules.pools_until_edge(patch, self.min_edge, 3)
        return {
            "target_spacing": [round(float(s), 4) for s in spacing],
            "patch_size": patch,
            "field_of_view_mm": round(fov_mm, 2),
            "coarsened_by": round(coarsening, 4),
            "scales": list(self.context_scales),
            "max_instances": max_instances,
            "instance_policy": "keep_largest",
            "n_pools": n_pools,
            "features_per_stage": rules.encoder_features(
                n_pools + 1, self._by_device(self.local_base_features), self._by_device(self.local_max_features)
            ),
        }

    def bag_activation_bytes(self, global_plan: dict[str, Any], local_plan: dict[str, Any]) -> float:
        """Training memory of one bag: the global volume plus every instance at every scale."""
        global_bytes = rules.encoder_activation_bytes(global_plan["input_shape"], global_plan["features_per_stage"])
        patch_bytes = rules.encoder_activation_bytes(local_plan["patch_size"], local_plan["features_per_stage"])
        return global_bytes + local_plan["max_instances"] * len(local_plan["scales"]) * patch_bytes

    def plan_global_and_batch(self, local_plan: dict[str, Any]) -> tuple[dict[str, Any], int, float]:
        """Largest global input within the compute cap whose batch of at least ``min_batch_size``
        bags fits the memory budget; the batch then fills the rest of the budget."""
        budget = self.device.memory_bytes * self.memory_safety
        n_train = self.fingerprint["num_training_cases"]
        batch_cap = max(self.min_batch_size, min(self._by_device(self.max_batch_size),
                                                 int(self.max_batch_fraction * n_train)))
        voxels = float(self._by_device(self.global_voxel_cap))
        while True:
            global_plan = self.plan_global(voxels)
            per_bag = self.bag_activation_bytes(global_plan, local_plan)
            if per_bag * self.min_batch_size <= budget or voxels < 16**3:
                break
            voxels *= 0.8
        batch = int(min(batch_cap, max(self.min_batch_size, budget // per_bag)))
        return global_plan, batch, per_bag

    def plan_augmentation(self, global_plan: dict[str, Any], local_plan: dict[str, Any]) -> dict[str, Any]:
        """Spatial ranges from anisotropy: an anisotropic patch rotates only in-plane (around its
        thick axis) and is augmented slice-wise; mirroring only left-right, because the arrays
        are in canonical LPS order and superior/inferior location (posterior fossa) is a risk factor."""

        def spatial(spacing: list[float]) -> dict[str, Any]:
            if rules.is_anisotropic(spacing):
                thick = int(np.argmax(spacing))
                rotation = [[0.0, 0.0]] * 3
                rotation[thick] = [-math.pi, math.pi]
                return {"rotation_rad": rotation, "dummy_2d": True, "thick_axis": thick}
            return {"rotation_rad": [[-math.pi / 6, math.pi / 6]] * 3, "dummy_2d": False, "thick_axis": None}

        return {
            "global": {**spatial(global_plan["target_spacing"]), "scale": [0.85, 1.15], "mirror_axes": [2]},
            "local": {**spatial(local_plan["target_spacing"]), "scale": [0.85, 1.15], "mirror_axes": [2]},
            "intensity": {
                "brightness_multiplicative": [0.75, 1.25],
                "contrast": [0.75, 1.25],
                "gamma": [0.7, 1.5],
                "gaussian_noise_variance": [0.0, 0.1],
                "gaussian_blur_sigma": [0.5, 1.0],
                "low_resolution_zoom": [0.5, 1.0],
            },
            "instance_dropout_probability": 0.1 if local_plan["max_instances"] > 1 else 0.0,
        }

    def plan_losses(self) -> dict[str, Any]:
        """Positive-class weights from each binary endpoint's prevalence; unit endpoint weights;
        a small load-balancing weight against expert collapse."""
        endpoints = self.fingerprint.get("endpoints", {})
        return {
            "endpoint_weights": {name: 1.0 for name in endpoints},
            "positive_class_weights": {
                name: rules.positive_class_weight(e.get("prevalence")) for name, e in endpoints.items() if e["type"] == "binary"
            },
            "load_balancing_weight": 0.01,
        }

    def plan_clinical(self) -> dict[str, Any]:
        """The clinical encoder's inputs in declaration order: dataset statistics as the default
        standardisation (the trainer refits them on each fold's training cases) and the category
        vocabulary (fixed here because it sizes the network)."""
        summaries = self.fingerprint.get("clinical_features", {})
        features = []
        for name, kind in self.dataset_json.get("clinical_features", {}).items():
            summary = summaries.get(name, {})
            entry: dict[str, Any] = {"name": name, "type": kind}
            if kind == "numeric":
                entry.update(mean=summary.get("mean") or 0.0, std=summary.get("std") or 1.0)
                # the range training saw: prediction warns about values outside it
                entry.update(min=summary.get("min"), max=summary.get("max"))
            elif kind == "categorical":
                entry["categories"] = sorted(summary.get("categories", {}))
            features.append(entry)
        return {"features": features}

    def plan_endpoints(self) -> list[dict[str, str]]:
        return [{"name": name, "type": d["type"]} for name, d in self.dataset_json.get("endpoints", {}).items()]

    def trainer_defaults(self, batch_size: int) -> dict[str, Any]:
        """Schedule and regularisation. The CPU plan trains 30 epochs (the clinical offset gives the
        network its starting point, and model selection keeps the best epoch, so a short schedule
        loses little; 5 folds of a 200-case cohort fit in under an hour on two cores) with stronger
        weight decay and dropout than a GPU plan: a few hundred cases, a few dozen events."""
        n_train = self.fingerprint["num_training_cases"]
        gpu = self.device.kind == "cuda"
        return {
            "num_epochs": 300 if gpu else 30,
            "iterations_per_epoch": max(1, math.ceil(0.8 * n_train / batch_size)),
            "initial_lr": 3e-4 if gpu else 1e-3,
            "weight_decay": 1e-2 if gpu else 5e-2,
            "warmup_epochs": 5 if gpu else 2,
            "gradient_clip_norm": 1.0,
            "embedding_dim": 256 if gpu else 64,
            "num_experts": 4,
            "expert_hidden_dim": 256 if gpu else 64,
            "dropout": 0.2 if gpu else 0.3,
        }

    # ------------------------------------------------------------------ assembly
    def plan(self) -> dict[str, Any]:
        local_plan = self.plan_local()
        global_plan, batch_size, per_bag = self.plan_global_and_batch(local_plan)
        channels = self.fingerprint["channel_names"]
        return {
            "plans_name": self.plans_name,
            "plans_version": PLANS_VERSION,
            "dataset_name": self.fingerprint["dataset_name"],
            "planner": type(self).__name__,
            "device_profile": self.device.to_dict(),
            "channel_names": channels,
            "num_input_channels": len(channels) + 1,  # + the lesion-mask channel
            "preprocessing": {
                "orientation": "nearest LPS axis order (axis swaps and flips only)",
                "brain_margin_mm": self.brain_margin_mm,
                "normalisation": self.plan_normalisation(),
                "global": {k: global_plan[k] for k in ("target_spacing", "input_shape")},
                "local": {k: local_plan[k] for k in ("target_spacing", "patch_size", "scales", "max_instances", "instance_policy")},
            },
            "clinical": self.plan_clinical(),
            "endpoints": self.plan_endpoints(),
            "model": {
                "global_encoder": {**{k: global_plan[k] for k in ("n_pools", "features_per_stage")},
                                   "first_stride": self._by_device(self.global_first_stride)},
                "local_encoder": {k: local_plan[k] for k in ("n_pools", "features_per_stage")},
            },
            "training": {
                "batch_size": batch_size,
                "augmentation": self.plan_augmentation(global_plan, local_plan),
                "losses": self.plan_losses(),
                "trainer_defaults": self.trainer_defaults(batch_size),
            },
            "estimates": {
                "activation_bytes_per_bag": per_bag,
                "memory_budget_bytes": self.device.memory_bytes * self.memory_safety,
                "local_field_of_view_mm": local_plan["field_of_view_mm"],
                "local_spacing_coarsened_by": local_plan["coarsened_by"],
            },
        }
