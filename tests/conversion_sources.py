"""Fake source trees in the published layouts of public datasets, rendered by the synthetic generator.

Real data cannot be downloaded here, so each converter test writes a tiny copy of its source
layout (file names, label values, table columns, several exams per patient) from synthetic cases.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from glmil_auto.dataset.image_io import Geometry
from glmil_auto.synthetic.cases import STREAM_RENDER, CaseSpec, case_rng, plan_cohort, sample_case
from glmil_auto.synthetic.render import RenderedCase, render_case

FACTOR = 4.0  # the "tiny" size preset: volumes of a few ten thousand voxels


@lru_cache(maxsize=8)
def rendered_cases(n: int, seed: int = 0) -> tuple[tuple[CaseSpec, RenderedCase], ...]:
    """``n`` synthetic cases (specification and rendered T1c, FLAIR, mask) on 3 training centres."""
    out = []
    for plan in plan_cohort(n, 0, 4, seed):
        spec = sample_case(seed, plan)
        out.append((spec, render_case(spec, FACTOR, case_rng(seed, plan.index, STREAM_RENDER))))
    return tuple(out)


def image(array: np.ndarray, geometry: Geometry, pixel=None) -> sitk.Image:
    result = geometry.apply_to(sitk.GetImageFromArray(np.asarray(array)))
    return result if pixel is None else sitk.Cast(result, pixel)


def save(array: np.ndarray, geometry: Geometry, path: Path, pixel=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image(array, geometry, pixel), str(path), useCompression=True)
    return path


def t1_pre(rc: RenderedCase) -> np.ndarray:
    """A stand-in T1 without contrast: the T1c with the lesion enhancement flattened."""
    return np.where(rc.mask > 0, np.median(rc.t1c[rc.t1c > 0]), rc.t1c).astype(np.float32)


def brats_labels(mask: np.ndarray) -> np.ndarray:
    """BraTS-METS labels from a binary lesion mask: 3 enhancing rim, 1 necrotic core (the eroded
    interior), 2 oedema (a one-voxel shell outside the lesion)."""
    lesion = mask > 0
    core = ndimage.binary_erosion(lesion)
    oedema = ndimage.binary_dilation(lesion) & ~lesion
    out = np.zeros(mask.shape, np.uint8)
    out[oedema], out[lesion], out[core] = 2, 3, 1
    return out


def script(name: str):
    """The ``main(argv) -> int`` of a dataset_conversion/ script."""
    import runpy

    return runpy.run_path(str(Path(__file__).resolve().parents[1] / "dataset_conversion" / f"{name}.py"),
                          run_name="converter")["main"]
