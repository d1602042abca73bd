"""Seconds per lesion of the IBSI families (mirp: statistics, GLCM and GLSZM together, through
``ibsi_lesion_features``) and of ``mesh_shape``, on tight crops of spheres 8, 16 and 24 voxels
across, plus mirp's import time (measured in a fresh interpreter).

    python benchmarks/lesion_features.py              # a markdown table
    python benchmarks/lesion_features.py --repeats 20

Needs no data and no GPU: the lesions are digitised spheres with noisy intensities (bin width
0.25, about 12 grey levels per lesion).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Callable

import numpy as np

from glmil_auto.preprocessing.lesion_features.ibsi import ibsi_lesion_features, mirp_version
from glmil_auto.preprocessing.lesion_features.mesh_shape import mesh_shape

DIAMETERS = (8, 16, 24)  # voxels
BIN_WIDTH = 0.25
SPACING = (1.0, 1.0, 1.0)


def sphere_lesion(diameter: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A sphere ``diameter`` voxels across in its tight crop (one voxel of margin) and noisy
    values (mean 1, sd 0.5, relative to normal brain)."""
    n = diameter + 2
    centre = (n - 1) / 2.0
    mask = ((np.indices((n, n, n)) - centre) ** 2).sum(axis=0) <= (diameter / 2.0) ** 2
    values = np.random.default_rng(seed).normal(1.0, 0.5, mask.shape)
    return values, mask


def seconds_per_call(function: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def mirp_import_seconds() -> float:
    """Wall time of ``import mirp`` plus the modules ibsi.py uses, in a fresh interpreter."""
    code = ("import time; t = time.perf_counter(); import mirp; "
            "import mirp._features.feature_generator, mirp._images.mr_image, mirp._masks.base_mask; "
            "print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def table(repeats: int) -> str:
    rows = ["| lesion (tight crop) | voxels | IBSI families (s/lesion) | mesh_shape (s/lesion) |",
            "|---|---|---|---|"]
    for diameter in DIAMETERS:
        values, mask = sphere_lesion(diameter)
        ibsi = seconds_per_call(lambda: ibsi_lesion_features(values, mask, SPACING, BIN_WIDTH, "t1c"), repeats)
        shape = seconds_per_call(lambda: mesh_shape(mask, SPACING), repeats)
        rows.append(f"| sphere {diameter}^3 ({mask.shape[0]}^3 crop) | {int(mask.sum())} | {ibsi:.4f} | {shape:.4f} |")
    rows.append("")
    rows.append(f"mirp {mirp_version()} import: {mirp_import_seconds():.2f} s (once per process)")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    print(table(parser.parse_args().repeats))


if __name__ == "__main__":
    main()
