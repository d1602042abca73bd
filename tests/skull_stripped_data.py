"""Skull-stripped (and zero-air) copies of a synthetic raw dataset, for tests/test_skull_stripped.py.

The stripped copy is exact, not approximated: every case's phantom is rebuilt from the
generator's own seed (``plan_cohort`` + ``sample_case``), and every voxel whose centre lies
outside the phantom's inner skull table (``structure_distances(...).intracranial > 0``: brain and
CSF kept, as the intracranial masks of skull-stripping tools keep them) is set to 0 in every
channel. The zero-air copy zeroes every voxel outside the scalp's outer surface instead (an
unstripped head whose air is exactly 0). Masks, tables and dataset.json are copied unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np

from glmil_auto.dataset.image_io import read_image, write_image
from glmil_auto.synthetic.anatomy import head_to_world_matrix, structure_distances
from glmil_auto.synthetic.cases import plan_cohort, sample_case


def intracranial_distance(folder: Path, case: str, split: str = "Tr") -> tuple[np.ndarray, float]:
    """Signed distance (template mm, negative inside) of every voxel centre of ``case`` to its inner
    skull table, and the case's scalp + skull thickness (mm)."""
    generator = json.loads((folder / "dataset.json").read_text())["synthetic"]
    plans = plan_cohort(generator["n_train"], generator["n_test"], generator["n_centres"], generator["seed"])
    plan = next(p for p in plans if p.case_id == case)
    anatomy = sample_case(generator["seed"], plan).anatomy
    _, geometry = read_image(folder / f"images{split}" / f"{case}_0000.nii.gz")
    index = np.indices(geometry.shape).reshape(3, -1).T
    world = geometry.index_to_world(index)
    head = (world - np.asarray(anatomy.world_centre)) @ head_to_world_matrix(anatomy)  # inverse rotation
    distances = structure_distances(anatomy, head[:, 0], head[:, 1], head[:, 2], tissue=False)
    return distances.intracranial.reshape(geometry.shape), anatomy.scalp_mm + anatomy.skull_mm


def copy_with_zeroed_outside(source: Path, target: Path, cases: Iterable[str], kind: str) -> Path:
    """Copy the raw dataset ``source`` to ``target``; in ``cases`` zero everything outside the
    intracranial region (``kind="stripped"``) or outside the head (``kind="zero_air"``)."""
    shutil.copytree(source, target)
    for case in cases:
        distance, scalp_and_skull = intracranial_distance(source, case)
        keep = distance <= 0.0 if kind == "stripped" else distance <= scalp_and_skull
        for path in sorted((target / "imagesTr").glob(f"{case}_*.nii.gz")):
            image, geometry = read_image(path)
            write_image(np.where(keep, image, 0).astype(np.float32), geometry, path)
    return target
