"""Data augmentation of GL-MIL batches with batchgenerators, and the (multi-process) augmenter.

batchgenerators' transforms assume ``data``/``seg`` keys; the batch here holds a global volume and
a bag of multi-scale lesion patches (see :mod:`glmil_auto.training.dataloading.data_loader`). The small
transforms below therefore only route arrays, and call batchgenerators' augmentation functions
(``augment_mirroring``, ``augment_gaussian_noise``, ``augment_gamma``, ...) for the maths. The two
expensive resamplings, rotation/scaling and simulated low resolution, run in torch instead
(:mod:`glmil_auto.training.data_augmentation.torch_resampling`: same interpolation, 4-30x faster), with their
parameters still drawn as batchgenerators draws them.

Every transform acts on *samples* of shape ``(M, G, C+1, *spatial)``:

- ``target="global"``: the B global volumes, ``G = 1``;
- ``target="instances"``: only the real instances of the batch (``instance_mask``), ``G = S``
  (the context scales of one lesion). Padded (and dropped) instances are never read or written.

Choices (the why is in documentation/training_data.md):

- one spatial transform per lesion for all of its scales (the scales are concentric views of the
  same anatomy), independent between lesions and from the global volume;
- intensity parameters drawn per image channel, shared by the scales of a lesion; the lesion-mask
  channel (the last) is never intensity-augmented and stays in [0, 1] after spatial transforms, and
  neither is the global volume's small-foci channel (before the mask; spatial transforms move it);
- left-right mirroring drawn independently for the global volume and for every lesion (the network
  never relates a patch to its position in the global volume, and the descriptors are mirror-invariant).

Reproducibility: batchgenerators draws from numpy's global random state, which
:func:`make_augmenter` seeds per worker from the loader's seed. Parameters that batchgenerators
would draw from Python's ``random`` module (noise variance, blur sigma) are drawn here with numpy
and handed over as degenerate ranges, so that they are seeded too.
"""

from __future__ import annotations

import os
import time
from queue import Empty
from typing import Any, Sequence

import numpy as np
from batchgenerators.augmentations.color_augmentations import (
    augment_brightness_multiplicative,
    augment_contrast,
    augment_gamma,
)
from batchgenerators.augmentations.noise_augmentations import augment_gaussian_blur, augment_gaussian_noise
from batchgenerators.augmentations.spatial_transformations import augment_mirroring
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose

from glmil_auto.preprocessing.foci_channel import image_channel_count
from glmil_auto.training.dataloading.data_loader import use_fork_safe_blosc2
from glmil_auto.training.data_augmentation.torch_resampling import (
    OneTorchThreadPerWorker,
    affine_resample,
    rotation_matrix_2d,
    rotation_matrix_3d,
    simulate_low_resolution,
)

TARGETS = ("global", "instances")
NUM_PROCESSES_ENV = "glmil_n_proc_DA"

# Per-sample probabilities (per channel where noted), as nnU-Net's default 3D augmentation. The
# per-instance dropout probability is planned (``instance_dropout_probability``); an override may
# set it under the key "instance_dropout".
DEFAULT_PROBABILITIES: dict[str, float] = {
    "rotation": 0.2,
    "scale": 0.2,
    "gaussian_noise": 0.1,
    "gaussian_blur": 0.2,
    "gaussian_blur_per_channel": 0.5,
    "brightness": 0.15,
    "contrast": 0.15,
    "low_resolution": 0.25,
    "low_resolution_per_channel": 0.5,
    "gamma_inverted": 0.1,
    "gamma": 0.3,
    "mirror": 0.5,  # per axis, fixed by batchgenerators' augment_mirroring: 0 turns mirroring off
}
_OVERRIDABLE = set(DEFAULT_PROBABILITIES) | {"instance_dropout"}


# ---------------------------------------------------------------------- routing
class BagTransform(AbstractTransform):
    """Routes the global volumes or the real instances of a batch to :meth:`augment`."""

    def __init__(self, target: str):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.target = target

    def augment(self, samples: np.ndarray) -> np.ndarray:
        """``samples`` (M, G, C+1, *spatial) float32 -> the same shape (may work in place)."""
        raise NotImplementedError

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        if self.target == "global":
            volumes = data_dict["global"]
            data_dict["global"] = self.augment(volumes[:, None])[:, 0]
        else:
            mask = np.asarray(data_dict["instance_mask"], dtype=bool)
            if mask.any():
                instances = data_dict["instances"]
                instances[mask] = self.augment(instances[mask])  # a copy of the real instances only
        return data_dict

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _clip_masks(samples: np.ndarray) -> np.ndarray:
    """Soft lesion masks (last channel) back into [0, 1]: linear interpolation is a convex
    combination and cannot leave it, this only removes float rounding."""
    np.clip(samples[:, :, -1], 0.0, 1.0, out=samples[:, :, -1])
    return samples


# ---------------------------------------------------------------------- spatial
class SpatialTransform(BagTransform):
    """Rotation and scaling around the centre (no elastic deformation, no crop: output shape = input
    shape), linear interpolation for every channel, the border replicated (``nearest``: the global
    volume is padded with air, a patch continues its tissue). ``rotation_rad`` is ``[[lo, hi]] * 3``
    for the (z, y, x) array axes; angle i rotates around axis i. ``dummy_2d``: every plane across
    ``thick_axis`` gets the same in-plane rotation (angle range ``rotation_rad[thick_axis]``) and
    scaling; nothing mixes slices.

    The parameters are drawn exactly as batchgenerators' ``augment_spatial`` draws them (same
    numpy calls in the same order, so a seed gives the same rotations); the resampling runs in torch
    (:func:`~glmil_auto.training.data_augmentation.torch_resampling.affine_resample`, 4x faster), and only for the
    samples that were drawn a rotation or a scaling."""

    def __init__(self, target: str, rotation_rad: Sequence[Sequence[float]], scale: Sequence[float],
                 dummy_2d: bool = False, thick_axis: int | None = None,
                 p_rotation: float = DEFAULT_PROBABILITIES["rotation"], p_scale: float = DEFAULT_PROBABILITIES["scale"]):
        super().__init__(target)
        self.rotation_rad = [tuple(float(v) for v in r) for r in rotation_rad]
        if len(self.rotation_rad) != 3:
            raise ValueError("rotation_rad needs one [lo, hi] range per axis (z, y, x)")
        self.scale = (float(scale[0]), float(scale[1]))
        self.dummy_2d = bool(dummy_2d)
        self.thick_axis = None if thick_axis is None else int(thick_axis)
        if self.dummy_2d and self.thick_axis not in (0, 1, 2):
            raise ValueError("dummy_2d needs the thick axis (0, 1 or 2)")
        self.p_rotation, self.p_scale = float(p_rotation), float(p_scale)

    def draw_matrix(self) -> np.ndarray | None:
        """One sample's (3, 3) voxel-space matrix (input = matrix @ output offset), or None when
        neither a rotation nor a scaling was drawn. batchgenerators' draw order and distributions:
        per-axis angles uniform in their ranges; the scale from [lo, 1) or [1, hi] with equal odds."""
        matrix, modified = np.eye(2 if self.dummy_2d else 3), False
        if self.p_rotation > 0 and np.random.uniform() < self.p_rotation:
            if self.dummy_2d:
                np.random.uniform()  # batchgenerators' per-axis probability draw (p = 1)
                matrix = rotation_matrix_2d(np.random.uniform(*self.rotation_rad[self.thick_axis]))
            else:
                angles = []
                for axis in range(3):
                    np.random.uniform()  # batchgenerators' per-axis probability draw (p = 1)
                    angles.append(np.random.uniform(*self.rotation_rad[axis]))
                matrix = rotation_matrix_3d(*angles)
            modified = True
        if self.p_scale > 0 and np.random.uniform() < self.p_scale:
            lo, hi = self.scale
            if np.random.random() < 0.5 and lo < 1:
                factor = np.random.uniform(lo, 1)
            else:
                factor = np.random.uniform(max(lo, 1), hi)
            matrix = matrix * factor
            modified = True
        if not modified:
            return None
        if self.dummy_2d:  # in-plane matrix, identity on the thick axis
            inplane = [a for a in range(3) if a != self.thick_axis]
            full = np.eye(3)
            full[np.ix_(inplane, inplane)] = matrix
            matrix = full
        return matrix

    def augment(self, samples: np.ndarray) -> np.ndarray:
        if self.p_rotation <= 0 and self.p_scale <= 0:
            return samples
        matrices = [self.draw_matrix() for _ in range(samples.shape[0])]
        chosen = [i for i, matrix in enumerate(matrices) if matrix is not None]
        if not chosen:
            return samples
        m, g, c1, *spatial = samples.shape
        data = samples[chosen].reshape(len(chosen), g * c1, *spatial)
        resampled = affine_resample(data, np.stack([matrices[i] for i in chosen]))
        samples[chosen] = _clip_masks(resampled.reshape(len(chosen), g, c1, *spatial))
        return samples


class MirrorTransform(BagTransform):
    """batchgenerators' ``augment_mirroring``: each of ``axes`` (spatial, z=0) flipped with p = 0.5,
    the same flips for every channel and scale of a sample."""

    def __init__(self, target: str, axes: Sequence[int]):
        super().__init__(target)
        self.axes = tuple(int(a) for a in axes)

    def augment(self, samples: np.ndarray) -> np.ndarray:
        if not self.axes:
            return samples
        m, g, c1, *spatial = samples.shape
        flat = samples.reshape(m, g * c1, *spatial)
        for i in range(m):
            augment_mirroring(flat[i], None, axes=self.axes)  # in place
        return flat.reshape(samples.shape)


# ---------------------------------------------------------------------- intensity
class IntensityTransform(BagTransform):
    """Applied with probability ``p_per_sample`` to a sample, then to each image channel (never the
    lesion mask, nor the global volume's small-foci channel) with ``p_per_channel``; :meth:`apply` receives that channel's ``(G, *spatial)``
    stack, so one draw of the parameters serves every scale of a lesion."""

    # the image channels (the first ones); None: every channel but the last (the lesion mask). The
    # global volume's small-foci channel sits between them and the mask and is never intensity-augmented:
    # get_training_transforms sets this from the plans
    image_channels: int | None = None

    def __init__(self, target: str, p_per_sample: float, p_per_channel: float = 1.0):
        super().__init__(target)
        self.p_per_sample, self.p_per_channel = float(p_per_sample), float(p_per_channel)

    def apply(self, channel: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def augment(self, samples: np.ndarray) -> np.ndarray:
        n_images = samples.shape[2] - 1 if self.image_channels is None else int(self.image_channels)
        for i in range(samples.shape[0]):
            if np.random.uniform() < self.p_per_sample:
                for c in range(n_images):
                    if np.random.uniform() < self.p_per_channel:
                        samples[i, :, c] = self.apply(np.array(samples[i, :, c], dtype=np.float32))
        return samples


class GaussianNoiseTransform(IntensityTransform):
    """Additive Gaussian noise; the standard deviation is drawn from ``variance`` (batchgenerators'
    naming: the value is used as the standard deviation, as in nnU-Net)."""

    def __init__(self, target: str, variance: Sequence[float], p_per_sample: float = DEFAULT_PROBABILITIES["gaussian_noise"]):
        super().__init__(target, p_per_sample)
        self.variance = (float(variance[0]), float(variance[1]))

    def apply(self, channel: np.ndarray) -> np.ndarray:
        v = np.random.uniform(*self.variance)
        return augment_gaussian_noise(channel, (v, v), p_per_channel=1.0, per_channel=False)


class GaussianBlurTransform(IntensityTransform):
    """Gaussian blur with sigma (voxels) from ``sigma``; slice-wise when ``dummy_2d``."""

    def __init__(self, target: str, sigma: Sequence[float], dummy_2d: bool = False, thick_axis: int | None = None,
                 p_per_sample: float = DEFAULT_PROBABILITIES["gaussian_blur"],
                 p_per_channel: float = DEFAULT_PROBABILITIES["gaussian_blur_per_channel"]):
        super().__init__(target, p_per_sample, p_per_channel)
        self.sigma = (float(sigma[0]), float(sigma[1]))
        self.dummy_2d, self.thick_axis = bool(dummy_2d), thick_axis

    def apply(self, channel: np.ndarray) -> np.ndarray:
        s = np.random.uniform(*self.sigma)
        if not self.dummy_2d:
            return augment_gaussian_blur(channel, (s, s), per_channel=False)
        moved = np.moveaxis(channel, 1 + self.thick_axis, 1)  # (G, T, a, b)
        slices = np.ascontiguousarray(moved).reshape(-1, *moved.shape[2:])
        blurred = augment_gaussian_blur(slices, (s, s), per_channel=False).reshape(moved.shape)
        return np.moveaxis(blurred, 1, 1 + self.thick_axis)


class BrightnessMultiplicativeTransform(IntensityTransform):
    def __init__(self, target: str, multiplier: Sequence[float],
                 p_per_sample: float = DEFAULT_PROBABILITIES["brightness"]):
        super().__init__(target, p_per_sample)
        self.multiplier = (float(multiplier[0]), float(multiplier[1]))

    def apply(self, channel: np.ndarray) -> np.ndarray:
        return augment_brightness_multiplicative(channel, self.multiplier, per_channel=False)


class ContrastTransform(IntensityTransform):
    """Contrast scaling around the mean, the original value range preserved."""

    def __init__(self, target: str, contrast: Sequence[float], p_per_sample: float = DEFAULT_PROBABILITIES["contrast"]):
        super().__init__(target, p_per_sample)
        self.contrast = (float(contrast[0]), float(contrast[1]))

    def apply(self, channel: np.ndarray) -> np.ndarray:
        return augment_contrast(channel, self.contrast, preserve_range=True, per_channel=False)


class LowResolutionTransform(IntensityTransform):
    """Simulated low resolution: nearest-neighbour downsampling by a zoom drawn from ``zoom``, linear
    upsampling back (:func:`~glmil_auto.training.data_augmentation.torch_resampling.simulate_low_resolution`, as
    nnU-Net v2's batchgeneratorsv2; batchgenerators' cubic spline upsampling cost 8-30x more);
    the thick axis is left alone when ``dummy_2d``."""

    def __init__(self, target: str, zoom: Sequence[float], dummy_2d: bool = False, thick_axis: int | None = None,
                 p_per_sample: float = DEFAULT_PROBABILITIES["low_resolution"],
                 p_per_channel: float = DEFAULT_PROBABILITIES["low_resolution_per_channel"]):
        super().__init__(target, p_per_sample, p_per_channel)
        self.zoom = (float(zoom[0]), float(zoom[1]))
        self.ignore_axes = (int(thick_axis),) if dummy_2d and thick_axis is not None else None

    def apply(self, channel: np.ndarray) -> np.ndarray:
        return simulate_low_resolution(channel, np.random.uniform(*self.zoom), self.ignore_axes or ())


class GammaTransform(IntensityTransform):
    """Gamma on the channel rescaled to [0, 1], mean and standard deviation restored
    (``invert``: on the negated image, which brightens dark structures instead)."""

    def __init__(self, target: str, gamma: Sequence[float], invert: bool = False,
                 p_per_sample: float = DEFAULT_PROBABILITIES["gamma"]):
        super().__init__(target, p_per_sample)
        self.gamma = (float(gamma[0]), float(gamma[1]))
        self.invert = bool(invert)

    def apply(self, channel: np.ndarray) -> np.ndarray:
        return augment_gamma(channel, self.gamma, invert_image=self.invert, per_channel=False, retain_stats=True)


# ---------------------------------------------------------------------- bag-level
class InstanceDropoutTransform(AbstractTransform):
    """Drops each real instance of a bag with probability ``p`` (mask False, patch and descriptors
    zeroed, its lesion-level outcomes unknown), never the last one of a bag: a bag that had lesions
    keeps at least one. Its stored radiomic features stay: the mask hides them from the network."""

    def __init__(self, p: float):
        self.p = float(p)

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        if self.p <= 0:
            return data_dict
        mask = data_dict["instance_mask"]
        for b in range(mask.shape[0]):
            real = np.flatnonzero(mask[b])
            if len(real) < 2:
                continue
            drop = np.random.uniform(size=len(real)) < self.p
            if drop.all():
                drop[np.random.randint(len(real))] = False
            dropped = real[drop]
            mask[b, dropped] = False
            data_dict["instances"][b, dropped] = 0.0
            data_dict["instance_descriptors"][b, dropped] = 0.0
            if "instance_outcomes" in data_dict:  # a dropped lesion is not there to be supervised
                data_dict["instance_outcomes"][b, dropped] = np.nan
        return data_dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class ContiguousArraysTransform(AbstractTransform):
    """The last step: contiguous arrays of the dtypes the network takes (float32 images and
    descriptors, bool mask, float32 clinical values, int64 categories), ready for ``torch.from_numpy``."""

    DTYPES = {"global": np.float32, "instances": np.float32, "instance_mask": np.bool_,
              "instance_descriptors": np.float32, "clinical_values": np.float32, "clinical_categories": np.int64,
              "instance_features": np.float32, "case_features": np.float32, "instance_outcomes": np.float32,
              "foci_responses": np.float32}

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        for key, dtype in self.DTYPES.items():
            if key in data_dict:
                data_dict[key] = np.ascontiguousarray(data_dict[key], dtype=dtype)
        return data_dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ---------------------------------------------------------------------- pipelines
def augmentation_probabilities(plans: dict[str, Any], overrides: dict[str, float] | None = None) -> dict[str, float]:
    """The defaults, then ``plans["training"]["augmentation"]["probabilities"]`` (optional), then ``overrides``."""
    augmentation = plans["training"]["augmentation"]
    probabilities = dict(DEFAULT_PROBABILITIES)
    probabilities["instance_dropout"] = float(augmentation.get("instance_dropout_probability", 0.0))
    for source in (augmentation.get("probabilities", {}), overrides or {}):
        unknown = set(source) - _OVERRIDABLE
        if unknown:
            raise ValueError(f"unknown augmentation probabilities {sorted(unknown)}; known: {sorted(_OVERRIDABLE)}")
        probabilities.update({k: float(v) for k, v in source.items()})
    bad = {k: v for k, v in probabilities.items() if not 0.0 <= v <= 1.0}
    if bad:
        raise ValueError(f"augmentation probabilities must lie in [0, 1], got {bad}")
    if probabilities["mirror"] not in (0.0, 0.5):
        raise ValueError("the mirroring probability is batchgenerators' fixed 0.5 per axis; set 0 to turn it off")
    return probabilities


def get_training_transforms(plans: dict[str, Any], probabilities: dict[str, float] | None = None) -> Compose:
    """The training augmentation, every range from ``plans["training"]["augmentation"]``.

    Order (nnU-Net's): instance dropout (first, so that dropped lesions cost nothing) -> rotation
    and scaling -> noise -> blur -> brightness -> contrast -> low resolution -> inverted gamma ->
    gamma -> mirroring -> contiguous float32. ``probabilities`` overrides :data:`DEFAULT_PROBABILITIES`
    (tests, trainer variants)."""
    augmentation = plans["training"]["augmentation"]
    p = augmentation_probabilities(plans, probabilities)
    intensity = augmentation["intensity"]
    spatial = {"global": augmentation["global"], "instances": augmentation["local"]}

    def both(make) -> list[AbstractTransform]:
        return [make(target, spatial[target]) for target in TARGETS]

    transforms: list[AbstractTransform] = [InstanceDropoutTransform(p["instance_dropout"])]
    transforms += both(lambda t, s: SpatialTransform(t, s["rotation_rad"], s["scale"], s.get("dummy_2d", False),
                                                     s.get("thick_axis"), p["rotation"], p["scale"]))
    transforms += both(lambda t, s: GaussianNoiseTransform(t, intensity["gaussian_noise_variance"], p["gaussian_noise"]))
    transforms += both(lambda t, s: GaussianBlurTransform(t, intensity["gaussian_blur_sigma"], s.get("dummy_2d", False),
                                                          s.get("thick_axis"), p["gaussian_blur"],
                                                          p["gaussian_blur_per_channel"]))
    transforms += both(lambda t, s: BrightnessMultiplicativeTransform(t, intensity["brightness_multiplicative"],
                                                                      p["brightness"]))
    transforms += both(lambda t, s: ContrastTransform(t, intensity["contrast"], p["contrast"]))
    transforms += both(lambda t, s: LowResolutionTransform(t, intensity["low_resolution_zoom"], s.get("dummy_2d", False),
                                                           s.get("thick_axis"), p["low_resolution"],
                                                           p["low_resolution_per_channel"]))
    transforms += both(lambda t, s: GammaTransform(t, intensity["gamma"], True, p["gamma_inverted"]))
    transforms += both(lambda t, s: GammaTransform(t, intensity["gamma"], False, p["gamma"]))
    if p["mirror"] > 0:
        transforms += both(lambda t, s: MirrorTransform(t, s.get("mirror_axes", [])))
    for transform in transforms:  # the image channels only (not the small-foci channel, not the mask)
        if isinstance(transform, IntensityTransform) and "num_input_channels" in plans:
            transform.image_channels = image_channel_count(plans)
    transforms.append(ContiguousArraysTransform())
    return Compose(transforms)


def get_validation_transforms(plans: dict[str, Any]) -> Compose:
    """No augmentation: only contiguous arrays of the network's dtypes."""
    return Compose([ContiguousArraysTransform()])


# ---------------------------------------------------------------------- augmenter
def default_num_processes() -> int:
    """``glmil_n_proc_DA`` when set, else from the CPUs this process may use: with a GPU all but two
    (at most 12, nnU-Net's choice: the GPU is fast and the loader must keep up); on a CPU-only
    machine a quarter of them (at most 4), and none (in-process) up to 3 cores. On the CPU the
    training step itself runs on every core, and augmenting a batch costs about 2 % of a step
    (benchmarks/train.py); on 2 cores a worker process slows training down by competing for the
    cores (87 % of the model-alone rate with one worker, 100 % in-process)."""
    value = os.environ.get(NUM_PROCESSES_ENV)
    if value not in (None, ""):
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"{NUM_PROCESSES_ENV} must be an integer, got {value!r}") from None
        if n < 0:
            raise ValueError(f"{NUM_PROCESSES_ENV} must be >= 0, got {n}")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    return min(12, max(1, cores - 2)) if gpu else min(4, cores // 4)


def worker_seeds(seed: int, num_processes: int) -> list[int]:
    """One numpy seed per worker, derived from the loader's seed (distinct and reproducible)."""
    return [int(s) for s in np.random.SeedSequence([int(seed), 0xDA]).generate_state(num_processes)]


class SeededSingleThreadedAugmenter(SingleThreadedAugmenter):
    """In-process augmentation with its own numpy random state (swapped in around each batch), so it
    is reproducible from the loader's seed without disturbing the caller's global state. It uses
    worker 0's seed, so 0 and 1 worker give the same batches."""

    def __init__(self, data_loader: Any, transform: Any, seed: int):
        super().__init__(data_loader, transform)
        self._state = np.random.RandomState(seed).get_state()

    def __next__(self) -> dict[str, Any]:
        outer = np.random.get_state()
        np.random.set_state(self._state)
        try:
            return super().__next__()
        finally:
            self._state = np.random.get_state()
            np.random.set_state(outer)


class WatchedMultiThreadedAugmenter(MultiThreadedAugmenter):
    """batchgenerators' augmenter, plus a stall guard: when no batch arrives for ``stall_timeout``
    seconds although every worker is alive (a deadlocked worker), ``next()`` shuts the workers down
    and raises ``RuntimeError`` instead of waiting forever. (A worker that raises or dies is
    already detected by batchgenerators; its ``timeout`` argument is not used by this version.)"""

    def __init__(self, *args: Any, stall_timeout: float = 600.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stall_timeout = float(stall_timeout)

    # overrides the base class's private ``__get_next_item`` (name-mangled), which __next__ calls
    def _MultiThreadedAugmenter__get_next_item(self) -> Any:
        deadline = time.monotonic() + self.stall_timeout
        while True:
            if self.abort_event.is_set():
                self._finish()
                raise RuntimeError("One or more background workers are no longer alive. Exiting. Please check the "
                                   "print statements above for the actual error message")
            try:
                return self.pin_memory_queue.get(timeout=self.wait_time)
            except Empty:
                if time.monotonic() > deadline:
                    self.abort_event.set()
                    self._finish(timeout=2)
                    raise RuntimeError(f"no batch from the {self.num_processes} augmentation worker(s) for "
                                       f"{self.stall_timeout:g} s although they are alive: a worker is stuck") from None


def make_augmenter(loader: Any, transforms: Any, num_processes: int | None = None, num_cached_per_queue: int = 2,
                   wait_time: float = 0.02, stall_timeout: float = 600.0
                   ) -> MultiThreadedAugmenter | SingleThreadedAugmenter:
    """``num_processes`` > 0: batchgenerators' ``MultiThreadedAugmenter`` with that many worker
    processes, each seeded from ``loader.seed`` (a worker that raises or dies makes the next
    ``next()`` raise ``RuntimeError``; the worker's traceback is printed on stderr; so does a stall of
    ``stall_timeout`` seconds without a batch, see :class:`WatchedMultiThreadedAugmenter`). 0: in-process.
    None: :func:`default_num_processes`. Workers are forked; blosc2 is switched to one thread first
    (:func:`~glmil_auto.training.dataloading.data_loader.use_fork_safe_blosc2`). A finite loader is told the worker count so that the
    workers share the epoch instead of each repeating it."""
    n = max(0, default_num_processes() if num_processes is None else int(num_processes))
    seed = int(getattr(loader, "seed", 0))
    if hasattr(loader, "number_of_threads_in_multithreaded"):
        loader.number_of_threads_in_multithreaded = max(1, n)
    if n == 0:
        return SeededSingleThreadedAugmenter(loader, transforms, worker_seeds(seed, 1)[0])
    use_fork_safe_blosc2()  # the workers are forked: see its docstring
    return WatchedMultiThreadedAugmenter(loader, OneTorchThreadPerWorker(transforms), n, num_cached_per_queue=num_cached_per_queue,
                                         seeds=worker_seeds(seed, n), pin_memory=False, wait_time=wait_time,
                                         stall_timeout=stall_timeout)


def shutdown_augmenter(augmenter: Any) -> None:
    """Stop a multi-process augmenter's workers (nothing to do for the in-process one)."""
    stop = getattr(augmenter, "_finish", None)
    if callable(stop):
        stop()
