"""Training memory of a planned network, measured by running it once instead of guessed.

The activations of a training step are what autograd saves for backward; their bytes are counted
exactly with ``torch.autograd.graph.saved_tensors_hooks`` during one forward pass on the **meta
device** (shapes and dtypes, no data and no compute, so a 160^3 GPU plan is measured in
milliseconds on any machine). Storages are counted once however many views of them are saved,
and the parameters, which autograd also saves, are counted separately. To that come the weights,
their gradients and AdamW's two moments (4 x the parameter bytes), the input batch, and a
backward workspace: while backward runs, the gradient of the largest saved map of the batch and
the gradient of its input exist together (2 x the largest map, which is one bag's or one
instance's largest map times the bags or instances of the batch). ``tests/test_memory_estimate.py``
checks the total against the allocator's measured peak of a real CPU training step.

Mixed precision (the CUDA trainer runs bfloat16 autocast) is emulated on the meta device: the
inputs of the ops that autocast runs in low precision (convolutions, linear layers, matrix
products) are cast to the low-precision dtype, so those ops save half-size copies as they do
under autocast; everything else stays float32, as it does under autocast.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from glmil_auto.model.builder import build_network, network_config
from glmil_auto.model.instance_encoder import NUM_DESCRIPTORS
from glmil_auto.preprocessing.foci_channel import global_input_channels
from glmil_auto.utilities.class_lookup import locate_class

# ops that CUDA autocast runs in the low-precision dtype (the ones that carry the activations here)
_LOW_PRECISION_OPS = {F.conv1d, F.conv2d, F.conv3d, F.linear, torch.matmul, torch.mm, torch.bmm, torch.addmm,
                      torch.conv3d, torch.Tensor.matmul, torch.Tensor.__matmul__}


class _AutocastOnMeta(TorchFunctionMode):
    """Casts the floating-point arguments of autocast's low-precision ops to ``dtype`` (meta tensors
    have no autocast of their own)."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LOW_PRECISION_OPS:
            cast = lambda t: t.to(self.dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t  # noqa: E731
            args, kwargs = tree_map(cast, args), tree_map(cast, kwargs)
        return func(*args, **kwargs)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step (forward, backward, optimiser step) on one device."""

    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int  # saved for backward
    input_bytes: int
    workspace_bytes: int  # backward's transient gradients

    @property
    def total_bytes(self) -> int:
        return (self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes
                + self.input_bytes + self.workspace_bytes)

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total_bytes": self.total_bytes}


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def saved_tensor_bytes(run: Callable[[], Any], exclude: list[torch.Tensor] = ()) -> tuple[int, int]:
    """``(total, largest)`` bytes of the distinct storages that autograd saves for backward while
    ``run()`` executes, leaving out those of ``exclude`` (parameters, inputs: counted elsewhere)."""
    excluded = {_storage_key(t) for t in exclude}
    sizes: dict[int, int] = {}
    held: list[torch.Tensor] = []  # keeps storages alive so that their keys stay unique

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in excluded:
            sizes[key] = tensor.untyped_storage().nbytes()
            held.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(sizes.values()), max(sizes.values(), default=0)


def meta_batch(plans: dict[str, Any], batch_size: int, instances_per_bag: int, device: str | torch.device = "meta"
               ) -> dict[str, torch.Tensor]:
    """A batch of ``batch_size`` bags of ``instances_per_bag`` real instances at the planned shapes."""
    channels = int(plans["num_input_channels"])
    local = plans["preprocessing"]["local"]
    features = plans["clinical"]["features"]
    n_values = sum(1 for f in features if f["type"] != "categorical")
    n_categories = sum(1 for f in features if f["type"] == "categorical")
    b, n = int(batch_size), max(1, int(instances_per_bag))
    from glmil_auto.preprocessing.lesion_features.settings import lesion_feature_names

    section = plans["preprocessing"].get("lesion_features")
    radiomics = {}
    if section:  # the stored radiomic features the starting point reads
        radiomics = {"instance_features": torch.zeros(b, n, len(lesion_feature_names(section)), device=device),
                     "case_features": torch.zeros(b, len(section.get("case_features", [])), device=device)}
    foci = plans["preprocessing"].get("small_foci")
    if foci:  # the small-foci candidates the descriptor reads
        radiomics["foci_responses"] = torch.zeros(b, int(foci["max_candidates"]), device=device)
    return {**radiomics,
        "global": torch.zeros(b, global_input_channels(plans), *plans["preprocessing"]["global"]["input_shape"], device=device),
        "instances": torch.zeros(b, n, len(local["scales"]), channels, *local["patch_size"], device=device),
        "instance_mask": torch.ones(b, n, dtype=torch.bool, device=device),
        "instance_descriptors": torch.zeros(b, n, NUM_DESCRIPTORS, device=device),
        "clinical_values": torch.zeros(b, n_values, device=device),
        "clinical_categories": torch.zeros(b, n_categories, dtype=torch.long, device=device),
    }


def meta_network(plans: dict[str, Any], mode: str = "full") -> torch.nn.Module:
    """The planned network on the meta device (built there: no weights are initialised)."""
    with torch.device("meta"), warnings.catch_warnings():
        # a dataset without clinical features has zero-width layers: torch warns that initialising them does nothing
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return build_network(plans, mode=mode)


_REST_KEYS = ("mode", "embedding_dim", "expert_hidden_dim", "num_experts", "top_k", "noisy_gating",
              "clinical_features", "endpoints", "foci_candidates")


class TrainingMemoryMeter:
    """Measures a plans' network once per part and then estimates any batch in constant time.

    Activations are linear in the number of bags and of instances (instance normalisation keeps
    samples independent), so three meta measurements give any batch: the global encoder on one
    volume, the lesion encoder on one instance (all its scales), and the rest of the network (MIL
    pooling, clinical encoder, experts, heads) from the whole network on one bag with one instance.
    The planner measures many candidate configurations, so each part is cached by exactly the plan
    entries it depends on. ``tests/test_memory_estimate.py`` checks the extrapolation against a
    whole-batch measurement and the total against a real CPU training step.
    """

    def __init__(self, plans: dict[str, Any], mixed_precision_dtype: torch.dtype | None = None, mode: str = "full"):
        self.plans = plans
        self.dtype = mixed_precision_dtype
        config = network_config(plans, mode)
        dtype_name = str(mixed_precision_dtype)
        global_key = json.dumps([config["global_encoder"], config.get("global_in_channels", config["in_channels"]),
                                 config["embedding_dim"],
                                 plans["preprocessing"]["global"]["input_shape"], dtype_name], sort_keys=True)
        local_key = json.dumps([config["local_encoder"], config["in_channels"], config["embedding_dim"], config["n_scales"],
                                plans["preprocessing"]["local"]["patch_size"], dtype_name], sort_keys=True)
        use_global, use_local = mode in ("full", "global_only", "concat"), mode in ("full", "local_only", "concat")
        g_params, g_saved, g_largest = _global_part(global_key) if use_global else (0, 0, 0)
        l_params, l_saved, l_largest = _local_part(local_key) if use_local else (0, 0, 0)
        # the rest (MIL pooling, clinical encoder, experts, heads) does not depend on the encoders or shapes
        rest_key = json.dumps([{k: config.get(k) for k in _REST_KEYS}, dtype_name], sort_keys=True)
        r_params, r_saved, r_largest = _rest_part(rest_key, plans, mode,
                                                  (g_params, g_saved), (l_params, l_saved))
        self.parameter_bytes = g_params + l_params + r_params
        self.global_bytes, self.instance_bytes, self.rest_bytes = g_saved, l_saved, r_saved
        self.bag_bytes = g_saved + r_saved
        # the largest single map of a bag and of an instance: a batch's largest map is that times
        # its bags or its instances (the encoders run on the whole batch at once)
        self.largest_global_map, self.largest_instance_map, self.largest_rest_map = g_largest, l_largest, r_largest
        local = plans["preprocessing"]["local"]
        channels = int(plans["num_input_channels"])
        self.global_input_bytes = 4 * global_input_channels(plans) * _prod(plans["preprocessing"]["global"]["input_shape"]) if use_global else 0
        self.instance_input_bytes = 4 * len(local["scales"]) * channels * _prod(local["patch_size"]) if use_local else 0
        # float32 on the CPU: oneDNN may hold a reordered (blocked-layout) copy of the global volume for
        # the first convolution, depending on its channel count (measured for the default encoder at
        # batch 4: 3 -> 4 channels, the foci channel, adds 14 MiB where the input itself grows 3 MiB)
        self.first_convolution_copy_bytes = self.global_input_bytes if mixed_precision_dtype is None else 0

    def estimate(self, batch_size: int, instances: int, largest_bag: int | None = None) -> MemoryEstimate:
        """Memory of a training step on ``batch_size`` bags holding ``instances`` real instances in
        all (each at every planned scale), padded to ``largest_bag`` instances per bag."""
        b = int(batch_size)
        padded = b * max(1, int(largest_bag if largest_bag is not None else instances))
        return MemoryEstimate(
            parameter_bytes=self.parameter_bytes,
            gradient_bytes=self.parameter_bytes,
            optimizer_bytes=2 * self.parameter_bytes,  # AdamW: exp_avg and exp_avg_sq
            activation_bytes=b * self.bag_bytes + int(instances) * self.instance_bytes,
            input_bytes=b * self.global_input_bytes + padded * self.instance_input_bytes,
            workspace_bytes=2 * max(b * self.largest_global_map, int(instances) * self.largest_instance_map,
                                    self.largest_rest_map) + b * self.first_convolution_copy_bytes,
        )


def _run(module: torch.nn.Module, args: tuple, dtype_name: str) -> tuple[int, int, int]:
    """``(parameter bytes, saved bytes, largest saved storage)`` of one meta forward of ``module``."""
    parameters = list(module.parameters())
    inputs = [a for a in args if isinstance(a, torch.Tensor)] + [
        t for a in args if isinstance(a, dict) for t in a.values()]
    module.train()

    def run() -> None:
        if dtype_name == "None":
            module(*args)
        else:
            with _AutocastOnMeta(getattr(torch, dtype_name.replace("torch.", ""))):
                module(*args)

    saved, largest = saved_tensor_bytes(run, exclude=parameters + inputs)
    return sum(p.numel() * p.element_size() for p in parameters), saved, largest


@functools.lru_cache(maxsize=512)
def _global_part(key: str) -> tuple[int, int, int]:
    spec, channels, embedding, shape, dtype_name = json.loads(key)
    with torch.device("meta"):
        cls = locate_class(spec["network_class_name"], torch.nn.Module)
        encoder = cls(in_channels=channels, embedding_dim=embedding, dropout=0.0, **spec["arch_kwargs"])
        volume = torch.zeros(1, channels, *shape)
    return _run(encoder, (volume,), dtype_name)


@functools.lru_cache(maxsize=512)
def _local_part(key: str) -> tuple[int, int, int]:
    spec, channels, embedding, n_scales, patch, dtype_name = json.loads(key)
    with torch.device("meta"):
        cls = locate_class(spec["network_class_name"], torch.nn.Module)
        encoder = cls(in_channels=channels, n_scales=n_scales, embedding_dim=embedding, dropout=0.0, **spec["arch_kwargs"])
        patches = torch.zeros(1, 1, n_scales, channels, *patch)
        descriptors = torch.zeros(1, 1, NUM_DESCRIPTORS)
        mask = torch.ones(1, 1, dtype=torch.bool)
    return _run(encoder, (patches, descriptors, mask), dtype_name)


_REST_CACHE: dict[str, tuple[int, int, int]] = {}


def _rest_part(key: str, plans: dict[str, Any], mode: str, global_part: tuple[int, int], local_part: tuple[int, int]
               ) -> tuple[int, int, int]:
    """The network minus its encoders, from the whole network on one bag with one instance. Cached
    by ``key`` (everything the rest depends on), so the whole network runs once per planner."""
    if key not in _REST_CACHE:
        network = meta_network(plans, mode)
        params, saved, _ = _run(network, (meta_batch(plans, 1, 1),), json.loads(key)[1])
        # the rest's own maps are (bags x endpoints x embedding): never the largest of a batch, and the
        # whole network's largest map belongs to an encoder (measured with its part)
        _REST_CACHE[key] = (params - global_part[0] - local_part[0], saved - global_part[1] - local_part[1], 0)
    return _REST_CACHE[key]


def measure_whole_batch(plans: dict[str, Any], batch_size: int, instances_per_bag: int,
                        mixed_precision_dtype: torch.dtype | None = None, mode: str = "full") -> int:
    """Saved-for-backward bytes of one meta forward of the whole batch (the exact count that
    :class:`TrainingMemoryMeter` extrapolates from single bags)."""
    network = meta_network(plans, mode)
    batch = meta_batch(plans, batch_size, instances_per_bag)
    meter_dtype = mixed_precision_dtype

    def run() -> None:
        if meter_dtype is None:
            network(batch)
        else:
            with _AutocastOnMeta(meter_dtype):
                network(batch)

    return saved_tensor_bytes(run, exclude=list(network.parameters()) + list(batch.values()))[0]


def _prod(values: Any) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
