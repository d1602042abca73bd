"""``GLMILPlanner``: dataset fingerprint + device profile -> ``plans.json``.

Every data-dependent choice of the pipeline is made here; downstream code reads shapes,
spacings and widths from the plans and hard-codes none. Each rule is a method so a variant
planner changes one rule in a small subclass (see ``variants.py``); the numbers behind the rules
are class attributes. documentation/planning.md gives every rule with its reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np

from glmil_auto.experiment_planning import planning_rules as rules
from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.planners.configuration_search import (
    Configuration, LadderLimits, degradation_ladder, first_that_fits)
from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME, PLANS_VERSION
from glmil_auto.imaging import skull_stripping


class PlanningError(RuntimeError):
    """Nothing fits the device: the message says what the smallest configuration needs and what to change."""


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
    global_voxels_per_small_lesion = 2.0  # across the p05 lesion diameter (the smallest-lesion bound)
    global_min_voxels = 16**3  # the coarsest global input the planner tries before giving up
    # encoders: class names and blocks per stage (a variant planner swaps them)
    global_encoder_class = "glmil_auto.model.global_encoder.MaskGuidedGlobalEncoder"
    local_encoder_class = "glmil_auto.model.instance_encoder.InstanceEncoder"
    # blocks per stage: the first (highest-resolution) stage one block, the later ones this many
    blocks_per_later_stage = {"cpu": 1, "cuda": 2}
    # local branch
    patch_voxel_cap = {"cpu": 20**3, "cuda": 48**3}
    local_base_features = {"cpu": 8, "cuda": 24}
    local_max_features = {"cpu": 64, "cuda": 256}
    lesion_margin_mm = 5.0  # context on each side of the 95th-percentile lesion
    context_scales = (1.0, 2.0)  # fields of view at the same voxel count
    max_instances_cap = {"cpu": 8, "cuda": 32}  # lesions stored per case
    lesion_features = True  # per-lesion radiomic features computed in preprocessing (the starting point)
    ibsi_features = True  # and among them the IBSI families (mirp)
    small_foci = True  # the small-foci channel of the global volume and its per-case descriptor
    # training
    min_batch_size = 4  # preferred: fewer bags give the Cox loss few risk sets (its memory helps below)
    max_batch_size = {"cpu": 16, "cuda": 64}
    max_batch_fraction = 0.2  # of the training cases, so that an epoch holds several steps
    # share of the device the measured training memory may use, and what CUDA holds outside
    # torch's allocator (context, cuDNN/cuBLAS workspaces)
    memory_fraction = {"cpu": 0.85, "cuda": 0.85}
    memory_reserved_gb = {"cpu": 0.0, "cuda": 0.75}
    # schedule: optimisation steps per event of the rarest endpoint, within these ranges
    steps_per_event = {"cpu": 10.0, "cuda": 50.0}
    step_range = {"cpu": (60, 600), "cuda": (1000, 50000)}
    epoch_range = {"cpu": (10, 60), "cuda": (20, 1000)}
    cox_events_per_risk_set = 32
    brain_margin_mm = 10.0
    scalp_and_skull_mm = skull_stripping.SCALP_AND_SKULL_MM  # added to a stripped case's brain depth

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

    def plan_skull_stripping(self) -> dict[str, Any]:
        """The rule (hashed with the preprocessing): every case, at preprocessing and at prediction
        time, is checked on its own, so that a mixed cohort and a new centre of either kind are each
        handled as what they are; the criterion's constants are recorded so that changing them
        invalidates preprocessed data."""
        return {
            "detection": "per_case",
            "criterion": {
                "min_background_fraction": skull_stripping.MIN_BACKGROUND_FRACTION,
                "max_stray_fraction": skull_stripping.MAX_STRAY_FRACTION,
                "max_inside_zero_fraction": skull_stripping.MAX_INSIDE_ZERO_FRACTION,
                "outer_shell_mm": skull_stripping.OUTER_SHELL_MM,
                "skull_shell_mm": list(skull_stripping.SKULL_SHELL_MM),
                "min_scalp_contrast": skull_stripping.MIN_SCALP_CONTRAST,
            },
            "stripped_case": "head mask and normalisation region = nonzero region (no erosion); "
                             "depth = depth below the brain surface + scalp_and_skull_mm",
            "scalp_and_skull_mm": self.scalp_and_skull_mm,
        }

    def skull_stripping_detection(self) -> dict[str, Any]:
        """What the fingerprint found in the training cases (outside the plans hash: adding a case
        changes the fraction, not how any other case is preprocessed). ``None`` values for a
        fingerprint written before detection existed."""
        found = self._summary.get("skull_stripping") or {}
        return {
            "training_cases": self.fingerprint["num_training_cases"],
            "skull_stripped_training_cases": found.get("n_skull_stripped"),
            "fraction_skull_stripped": found.get("fraction_skull_stripped"),
            "cohort": found.get("cohort"),
        }

    # ------------------------------------------------------------------ fixed by the data
    def local_base_spacing(self) -> np.ndarray:
        """High-resolution lesion spacing by nnU-Net's anisotropy rule."""
        cases = self.fingerprint["cases"].values()
        return np.asarray(
            rules.anisotropic_target_spacing([c["spacing_canonical"] for c in cases], [c["shape_canonical"] for c in cases])
        )

    def full_field_of_view_mm(self) -> float:
        """The 95th-percentile lesion extent (or diameter, whichever is larger) plus a margin on each side."""
        lesion = self._summary["lesion_extent_mm"]["percentile_95"]
        diameter = self._summary["lesion_diameter_mm"]["percentile_95"]
        if lesion is None:  # a dataset without lesions still gets a valid (unused) local plan
            lesion, diameter = [10.0, 10.0, 10.0], 10.0
        return round(max(float(max(lesion)), float(diameter)) + 2 * self.lesion_margin_mm, 2)

    def lesion_counts(self) -> tuple[float, float, float]:
        """(mean, median, p95) lesions per case (older fingerprints without mean/median: the p95)."""
        counts = self._summary["lesions_per_case"]
        p95 = float(counts.get("percentile_95") or 1.0)
        mean = counts.get("mean")
        median = counts.get("median")
        return (p95 if mean is None else float(mean)), (p95 if median is None else float(median)), p95

    def global_spacing_bound(self) -> float | None:
        diameters = self._summary["lesion_diameter_mm"]
        return rules.global_spacing_bound(diameters.get("percentile_05"), self.global_voxels_per_small_lesion)

    def _head_extent(self) -> np.ndarray:
        return np.asarray(self._summary["head_extent_mm"]["percentile_95"], dtype=float)

    def finest_global_spacing(self) -> float:
        """The finest isotropic spacing the compute cap allows (never finer than the median scan)."""
        finest = float(min(self._summary["spacing_canonical"]["median"]))
        spacing = max(finest, float(np.cbrt(np.prod(self._head_extent()) / self._by_device(self.global_voxel_cap))))
        return math.ceil(spacing * 100) / 100

    # ------------------------------------------------------------------ rules per configuration
    def plan_global(self, spacing: float, first_stride: int) -> dict[str, Any]:
        """The 95th-percentile head extent at ``spacing``; pool until an edge of ``min_edge`` (the first
        stage's stride counts as a pool); the shape a multiple of 2**pools."""
        spacing = math.ceil(spacing * 100) / 100
        raw_shape = np.ceil(self._head_extent() / spacing).astype(int)
        pools = rules.pools_until_edge(raw_shape, self.min_edge, self.max_pools)
        shape = [rules.round_up(s, 2**pools) for s in raw_shape]
        features = rules.encoder_features(
            pools + 1, self._by_device(self.global_base_features), self._by_device(self.global_max_features))
        return {"target_spacing": [spacing] * 3, "input_shape": shape, "n_pools": pools, "first_stride": first_stride,
                "features_per_stage": features, "blocks_per_stage": self.blocks_per_stage(len(features))}

    def blocks_per_stage(self, n_stages: int) -> list[int]:
        """One block at the highest resolution (the most memory per block), more below."""
        return [1] + [self._by_device(self.blocks_per_later_stage)] * (n_stages - 1)

    def plan_local(self, field_of_view_mm: float, coarsening: float, scales: tuple[float, ...],
                   max_instances: int = 1) -> dict[str, Any]:
        """The field of view at the high-resolution spacing times ``coarsening``, rounded up to a
        multiple of 8 voxels; pools until an edge of ``min_edge`` (at most 3)."""
        spacing = self.local_base_spacing() * coarsening
        patch = [max(8, rules.round_up(field_of_view_mm / s, 8)) for s in spacing]
        n_pools = rules.pools_until_edge(patch, self.min_edge, 3)
        features = rules.encoder_features(
            n_pools + 1, self._by_device(self.local_base_features), self._by_device(self.local_max_features))
        return {
            "target_spacing": [round(float(s), 4) for s in spacing],
            "patch_size": patch,
            "field_of_view_mm": round(float(field_of_view_mm), 2),
            "coarsened_by": round(float(coarsening), 4),
            "scales": list(scales),
            "max_instances": int(max_instances),
            "instance_policy": "keep_largest",
            "n_pools": n_pools,
            "features_per_stage": features,
            "blocks_per_stage": self.blocks_per_stage(len(features)),
        }

    def patch_cap_coarsening(self, field_of_view_mm: float) -> float:
        """The smallest coarsening (10 % steps) at which the patch fits the device's patch voxel cap."""
        coarsening = 1.0
        while True:
            patch = self.plan_local(field_of_view_mm, coarsening, (1.0,))["patch_size"]
            if np.prod(patch) <= self._by_device(self.patch_voxel_cap) or all(p == 8 for p in patch):
                return round(coarsening, 4)
            coarsening *= 1.1

    def batch_cap(self) -> int:
        n_train = self.fingerprint["num_training_cases"]
        return max(1, min(self._by_device(self.max_batch_size), int(self.max_batch_fraction * n_train)))

    def instances_for(self, configuration: Configuration, batch_size: int) -> tuple[int, int]:
        """(lesions per batch, lesions stored per case) for ``batch_size`` bags."""
        mean, _, p95 = self.lesion_counts()
        per_case = int(min(max(1, math.ceil(p95)), self._by_device(self.max_instances_cap)))
        per_batch = rules.instances_per_batch(batch_size, mean, p95, configuration.instance_mode)
        per_batch = int(min(per_batch, batch_size * per_case))
        return per_batch, int(min(per_case, per_batch))

    # ------------------------------------------------------------------ memory
    @property
    def memory_budget_bytes(self) -> float:
        kind = "cuda" if self.device.kind == "cuda" else "cpu"
        return self.device.memory_bytes * self.memory_fraction[kind] - self.memory_reserved_gb[kind] * 2**30

    def draft_plans(self, configuration: Configuration, batch_size: int) -> dict[str, Any]:
        """The complete plans of ``configuration`` with ``batch_size`` bags (:meth:`plan` adds the estimates)."""
        per_batch, per_case = self.instances_for(configuration, batch_size)
        global_plan = self.plan_global(configuration.global_spacing, configuration.first_stride)
        local_plan = self.plan_local(configuration.field_of_view_mm, configuration.local_coarsening,
                                     configuration.scales, per_case)
        return self.assemble(global_plan, local_plan, batch_size, per_batch, configuration)

    def memory_estimate(self, configuration: Configuration, batch_size: int) -> dict[str, int]:
        """Training memory of ``batch_size`` bags, measured by running the planned network once on the
        meta device (``glmil_auto.model.memory_measurement``). Imported here: planning measures the
        model it plans, so this is the one place where planning reads the model package."""
        import torch

        from glmil_auto.model.memory_measurement import TrainingMemoryMeter

        plans = self.draft_plans(configuration, batch_size)
        dtype = torch.bfloat16 if self.device.kind == "cuda" else None  # the CUDA trainer's autocast
        meter = TrainingMemoryMeter(plans, dtype)
        per_batch, per_case = self.instances_for(configuration, batch_size)
        return meter.estimate(batch_size, per_batch, per_case).to_dict()

    def fits(self, configuration: Configuration, batch_size: int) -> bool:
        return self.memory_estimate(configuration, batch_size)["total_bytes"] <= self.memory_budget_bytes

    def choose_configuration(self) -> tuple[Configuration, int]:
        """The first configuration of the degradation ladder whose smallest batch fits, and the
        largest batch (up to the caps) that then fits; :class:`PlanningError` when none does."""
        fov = self.full_field_of_view_mm()
        first_stride = self._by_device(self.global_first_stride)
        preferred = min(self.min_batch_size, self.batch_cap())
        start = Configuration(self.finest_global_spacing(), first_stride, self.patch_cap_coarsening(fov), fov,
                              tuple(self.context_scales), "p95", preferred, "none")
        extent = self._head_extent()
        median_lesions_mm = self._summary["lesion_diameter_mm"].get("median") or 10.0
        limits = LadderLimits(
            global_spacing_floor=start.global_spacing,
            global_spacing_bound=self.global_spacing_bound(),
            global_spacing_ceiling=max(start.global_spacing, float(np.cbrt(np.prod(extent) / self.global_min_voxels))),
            local_coarsening_ceiling=self._coarsening_to_floor(fov),
            field_of_view_floor_mm=min(fov, float(median_lesions_mm)),
            preferred_min_batch=self.min_batch_size,
        )
        chosen, last = first_that_fits(degradation_ladder(start, limits, first_stride == 1), self.fits)
        if chosen is None:
            need = self.memory_estimate(last, 1)["total_bytes"]
            raise PlanningError(
                f"no configuration fits {self.device.kind} with {self.device.memory_gb:g} GiB: the smallest one "
                f"(global spacing {last.global_spacing} mm, field of view {last.field_of_view_mm} mm, "
                f"{len(last.scales)} scale(s), one bag of one lesion) needs {need / 2**30:.2f} GiB of "
                f"{self.memory_budget_bytes / 2**30:.2f} GiB usable. Plan for a device with more memory "
                "(--device-memory-gb), or use a planner with narrower encoders (global_base_features, "
                "local_base_features) or fewer context scales (GLMILPlannerSingleScale).")
        batch = chosen.min_batch_size
        while batch < self.batch_cap() and self.fits(chosen, batch + 1):
            batch += 1
        return chosen, batch

    def _coarsening_to_floor(self, field_of_view_mm: float) -> float:
        """The coarsening at which every patch edge is 8 voxels (coarser changes nothing)."""
        spacing = self.local_base_spacing()
        return round(max(1.0, float(max(field_of_view_mm / 8.0 / s for s in spacing))), 4)

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
        """The declared endpoints; a binary endpoint that means "any lesion fails" keeps its
        ``aggregation`` (the network then scores each lesion and combines them by a noisy-OR)."""
        endpoints = []
        for name, declared in self.dataset_json.get("endpoints", {}).items():
            entry = {"name": name, "type": declared["type"]}
            if declared["type"] == "binary" and declared.get("aggregation", "case") != "case":
                entry["aggregation"] = declared["aggregation"]
            endpoints.append(entry)
        return endpoints

    def plan_lesion_features(self) -> dict[str, Any] | None:
        """The per-lesion radiomic features preprocessing computes and stores
        (``preprocessing/lesion_features/settings.py``); ``None`` when ``lesion_features = False``."""
        if not self.lesion_features:
            return None
        from glmil_auto.preprocessing.lesion_features.patients import patient_feature_names
        from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names, plan_lesion_features

        section = plan_lesion_features(self.fingerprint, ibsi=self.ibsi_features)
        section["case_features"] = patient_feature_names(lesion_feature_names(section))
        return section

    def plan_small_foci(self, global_spacing_mm: float) -> dict[str, Any] | None:
        """The small-foci detector's settings (``small_foci_rules.py``); ``None`` when ``small_foci = False``."""
        if not self.small_foci:
            return None
        from glmil_auto.experiment_planning.small_foci_rules import plan_small_foci
        from glmil_auto.preprocessing.lesion_features.channels import t1c_channel

        channel_names = {int(k): v for k, v in self.fingerprint["channel_names"].items()}
        return plan_small_foci(self._summary, t1c_channel(channel_names), global_spacing_mm)

    def trainer_defaults(self, batch_size: int) -> dict[str, Any]:
        """Schedule and regularisation. An epoch is one pass over a fold's training cases; the number
        of optimisation steps follows the rarest endpoint's events (``rules.training_schedule``): on
        the CPU about 10 steps per event (the demo cohort: 19 leptomeningeal failures, 32 epochs of 6
        steps; the clinical offset gives the network its starting point and model selection keeps
        the best epoch, so a short schedule loses little), on a GPU 50. The CPU plan has stronger
        weight decay and dropout than a GPU plan: a few hundred cases, a few dozen events."""
        n_train = self.fingerprint["num_training_cases"]
        gpu = self.device.kind == "cuda"
        events = rules.rarest_endpoint_events(self.fingerprint.get("endpoints", {}), n_train)
        epochs, iterations = rules.training_schedule(n_train, batch_size, events, self._by_device(self.steps_per_event),
                                                     self._by_device(self.step_range), self._by_device(self.epoch_range))
        return {
            "num_epochs": epochs,
            "iterations_per_epoch": iterations,
            "initial_lr": 3e-4 if gpu else 1e-3,
            "weight_decay": 1e-2 if gpu else 5e-2,
            "warmup_epochs": 5 if gpu else 2,
            "gradient_clip_norm": 1.0,
            "embedding_dim": 256 if gpu else 64,
            "num_experts": 4,
            "expert_hidden_dim": 256 if gpu else 64,
            "dropout": 0.2 if gpu else 0.3,
        }

    def cox_memory_size(self) -> int:
        """Recent risks the Cox loss keeps: enough for ``cox_events_per_risk_set`` events at the
        cohort's lowest survival event rate (``rules.cox_memory_size``)."""
        rates = [e.get("event_rate") for e in self.fingerprint.get("endpoints", {}).values()
                 if e.get("type") == "survival" and e.get("event_rate")]
        return rules.cox_memory_size(self.fingerprint["num_training_cases"], min(rates) if rates else None,
                                     self.cox_events_per_risk_set)

    # ------------------------------------------------------------------ assembly
    def assemble(self, global_plan: dict[str, Any], local_plan: dict[str, Any], batch_size: int,
                 instances_per_batch: int, configuration: Configuration) -> dict[str, Any]:
        channels = self.fingerprint["channel_names"]
        return {
            "plans_name": self.plans_name,
            "plans_version": PLANS_VERSION,
            "dataset_name": self.fingerprint["dataset_name"],
            "planner": type(self).__name__,
            "device_profile": self.device.to_dict(),
            "channel_names": channels,
            "num_input_channels": len(channels) + 1,  # + the lesion-mask channel
            "skull_stripping": self.skull_stripping_detection(),
            "preprocessing": {
                "orientation": "nearest LPS axis order (axis swaps and flips only)",
                "brain_margin_mm": self.brain_margin_mm,
                "skull_stripping": self.plan_skull_stripping(),
                "normalisation": self.plan_normalisation(),
                "global": {k: global_plan[k] for k in ("target_spacing", "input_shape")},
                "local": {k: local_plan[k] for k in ("target_spacing", "patch_size", "scales", "max_instances", "instance_policy")},
                **({"lesion_features": features} if (features := self.plan_lesion_features()) is not None else {}),
                **({"small_foci": foci} if (foci := self.plan_small_foci(global_plan["target_spacing"][0])) is not None
                   else {}),
            },
            "clinical": self.plan_clinical(),
            "endpoints": self.plan_endpoints(),
            "model": {
                "global_encoder": {
                    "network_class_name": self.global_encoder_class,
                    "arch_kwargs": {k: global_plan[k] for k in ("features_per_stage", "blocks_per_stage", "first_stride")},
                    "n_pools": global_plan["n_pools"],
                },
                "local_encoder": {
                    "network_class_name": self.local_encoder_class,
                    "arch_kwargs": {k: local_plan[k] for k in ("features_per_stage", "blocks_per_stage")},
                    "n_pools": local_plan["n_pools"],
                },
            },
            "training": {
                "batch_size": batch_size,
                # lesion patches (instances x scales) one training batch may hold; see data_loader.py
                "instance_budget": int(instances_per_batch * len(local_plan["scales"])),
                "cox_memory_size": self.cox_memory_size(),
                "augmentation": self.plan_augmentation(global_plan, local_plan),
                "losses": self.plan_losses(),
                "trainer_defaults": self.trainer_defaults(batch_size),
            },
            "estimates": {
                "local_field_of_view_mm": local_plan["field_of_view_mm"],
                "local_spacing_coarsened_by": local_plan["coarsened_by"],
            },
        }

    def plan(self) -> dict[str, Any]:
        configuration, batch_size = self.choose_configuration()
        plans = self.draft_plans(configuration, batch_size)
        memory = self.memory_estimate(configuration, batch_size)
        bound = self.global_spacing_bound()
        spacing = plans["preprocessing"]["global"]["target_spacing"][0]
        limited_by = None
        if bound is not None and spacing > bound + 1e-6:
            limited_by = "compute" if configuration.step != "global spacing beyond the smallest-lesion bound" else "memory"
        plans["estimates"].update({
            "memory_budget_bytes": self.memory_budget_bytes,
            "training_memory_bytes": memory,
            "memory_measured_with": "saved tensors of a meta-device forward (glmil_auto.model.memory_measurement)"
                                    + (", bfloat16 autocast" if self.device.kind == "cuda" else ", float32"),
            "instances_per_batch": plans["training"]["instance_budget"] // len(plans["preprocessing"]["local"]["scales"]),
            "global_spacing_bound_mm": bound,
            "global_spacing_limited_by": limited_by,
            "configuration": {**asdict(configuration), "scales": list(configuration.scales)},
        })
        return plans
