"""Resampling for the augmentation, computed with torch: rotation/scaling and simulated low resolution.

These two are the expensive transforms. batchgenerators computes them with scipy
(``map_coordinates`` on an explicit coordinate array; a cubic spline upsampling), which on the demo
plans cost 0.46 s of the 0.52 s needed to augment a batch of 16 bags and made the loader the
bottleneck of a 2-core training. ``torch.nn.functional.grid_sample`` and ``interpolate`` give the
same linear interpolation 4x and 8-30x faster on one thread. nnU-Net v2 made the same move when it
replaced batchgenerators' transforms by the torch-based batchgeneratorsv2.

:func:`affine_resample` reproduces batchgenerators' ``augment_spatial`` with ``order_data=1`` and
``border_mode_data="nearest"``: the output voxel at offset ``c`` (voxels, from the centre
``(n - 1) / 2``) reads the input at ``matrix @ c`` (linear interpolation, the border replicated).
``tests/test_augmentation.py`` checks it against ``augment_spatial`` itself.

Threads: an augmentation worker is one of several processes; it should use one torch thread, as
PyTorch's own DataLoader workers do. :class:`OneTorchThreadPerWorker` wraps the transforms given to
a multi-process augmenter for that; in-process augmentation keeps the caller's threads.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def rotation_matrix_3d(angle_0: float, angle_1: float, angle_2: float) -> np.ndarray:
    """The (3, 3) matrix batchgenerators' ``rotate_coords_3d`` applies to centred coordinates
    (array axes 0, 1, 2; ``angle_i`` rotates around axis i): ``input = R @ output``."""
    c0, s0 = np.cos(angle_0), np.sin(angle_0)
    c1, s1 = np.cos(angle_1), np.sin(angle_1)
    c2, s2 = np.cos(angle_2), np.sin(angle_2)
    r0 = np.array([[1, 0, 0], [0, c0, -s0], [0, s0, c0]])
    r1 = np.array([[c1, 0, s1], [0, 1, 0], [-s1, 0, c1]])
    r2 = np.array([[c2, -s2, 0], [s2, c2, 0], [0, 0, 1]])
    # batchgenerators: coords_row @ (r0 @ r1 @ r2), i.e. columns transformed by its transpose
    return (r0 @ r1 @ r2).T


def rotation_matrix_2d(angle: float) -> np.ndarray:
    """The (2, 2) matrix of batchgenerators' ``rotate_coords_2d``: ``input = R @ output``."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]]).T


def affine_resample(samples: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Resample every sample of ``samples`` (M, C, Z, Y, X) with its (3, 3) voxel-space matrix of
    ``matrices`` (M, 3, 3), around the centre, linear interpolation, border replicated; float32 out.

    All channels of a sample share the matrix. A zero-size ``samples`` returns a copy."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 5:
        raise ValueError(f"samples must be (M, C, Z, Y, X), got shape {samples.shape}")
    matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    if len(matrices) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(matrices)} matrices")
    if samples.size == 0:
        return samples.copy()
    half = (np.asarray(samples.shape[2:], dtype=np.float64) - 1.0) / 2.0
    # grid_sample with align_corners=True: normalised u in [-1, 1] <-> voxel (u + 1) * half,
    # so offsets from the centre are u * half; a length-1 axis has half = 0 and stays in place.
    scale = np.where(half > 0, half, 1.0)
    normalised = matrices * scale[None, None, :] / scale[None, :, None]
    theta = np.zeros((len(samples), 3, 4), dtype=np.float32)
    theta[:, :, :3] = normalised[:, ::-1, ::-1]  # torch orders grid coordinates (x, y, z) = axes (2, 1, 0)
    with torch.no_grad():
        data = torch.from_numpy(np.ascontiguousarray(samples))
        grid = F.affine_grid(torch.from_numpy(theta), list(data.shape), align_corners=True)
        out = F.grid_sample(data, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.numpy()


def simulate_low_resolution(channel: np.ndarray, zoom: float, ignore_axes: Sequence[int] = ()) -> np.ndarray:
    """``channel`` (G, *spatial): downsampled to ``round(shape * zoom)`` by nearest neighbour and
    linearly interpolated back (as batchgeneratorsv2's ``SimulateLowResolutionTransform``; the
    ``ignore_axes`` keep their size). The G images (scales of a lesion) share the zoom."""
    channel = np.asarray(channel, dtype=np.float32)
    spatial = channel.shape[1:]
    if len(spatial) != 3:
        raise ValueError(f"channel must be (G, Z, Y, X), got shape {channel.shape}")
    small = [s if axis in ignore_axes else max(1, int(round(s * zoom))) for axis, s in enumerate(spatial)]
    if tuple(small) == tuple(spatial):
        return channel.copy()
    with torch.no_grad():
        data = torch.from_numpy(np.ascontiguousarray(channel))[:, None]
        down = F.interpolate(data, size=small, mode="nearest-exact")
        up = F.interpolate(down, size=list(spatial), mode="trilinear", align_corners=False)
    return up[:, 0].numpy()


class OneTorchThreadPerWorker:
    """Wraps the transforms of a multi-process augmenter: the first call in a worker process sets
    torch to one thread (several workers with the default thread count would oversubscribe the
    cores the training step needs)."""

    def __init__(self, transforms: Any):
        self.transforms = transforms
        self._configured = False

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        if not self._configured:
            torch.set_num_threads(1)
            self._configured = True
        return self.transforms(**data_dict)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms!r})"
