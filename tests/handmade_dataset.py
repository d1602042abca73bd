"""A small raw dataset built by hand with SimpleITK, NOT by glmil_auto's synthetic generator.

It mimics a converted BraTS-METS-style folder and differs from the synthetic cohort on purpose:
three int16 channels, four labels of which two are lesion labels, an oblique direction, its own
column names, a categorical feature and only two endpoints. Tests break copies of it to check
that every class of bad input is reported.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

CASES_TR = ["BraTS-MET-00001-000", "BraTS-MET-00002-000", "BraTS-MET-00003-000", "BraTS-MET-00004-000"]
CASES_TS = ["BraTS-MET-00101-000", "BraTS-MET-00102-000"]
SHAPE = (12, 14, 16)  # (Z, Y, X)
SPACING = (1.2, 1.0, 2.5)  # (x, y, z)
ANGLE = np.deg2rad(10.0)
DIRECTION = (
    float(np.cos(ANGLE)), float(-np.sin(ANGLE)), 0.0,
    float(np.sin(ANGLE)), float(np.cos(ANGLE)), 0.0,
    0.0, 0.0, 1.0,
)

DATASET_JSON = {
    "name": "HandmadeMets",
    "channel_names": {"0": "T1c", "1": "T1n", "2": "FLAIR"},
    "labels": {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 3},
    "numTraining": len(CASES_TR),
    "file_ending": ".nii.gz",
    "case_column": "subject",
    "group_column": "site",
    "lesion_labels": [1, 3],
    "clinical_features": {"age": "numeric", "sex": "categorical", "prior_resection": "binary"},
    "endpoints": {
        "lmd": {"type": "binary"},
        "os": {"type": "survival", "time": "survival_days", "event": "death"},
    },
}

CLINICAL_TR = [
    # subject, site, age, sex, prior_resection, lmd, survival_days, death
    [CASES_TR[0], "A", "61", "F", "0", "1", "320.5", "1"],
    [CASES_TR[1], "A", "", "M", "1", "", "90", "0"],
    [CASES_TR[2], "B", "48", "", "0", "0", "700", "1"],
    [CASES_TR[3], "B", "70", "F", "", "0", "", ""],
]
CLINICAL_TS = [
    [CASES_TS[0], "C", "55", "M", "0", "0", "400", "1"],
    [CASES_TS[1], "C", "66", "F", "1", "1", "150", "0"],
]
HEADER = ["subject", "site", "age", "sex", "prior_resection", "lmd", "survival_days", "death"]


def origin_for(index: int) -> tuple[float, float, float]:
    return (-20.0 + index, 13.5 - 0.5 * index, 40.25)


def label_for(index: int) -> np.ndarray:
    """Two separate lesions (enhancing rim + necrotic core, and a small enhancing one) plus oedema."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    r1 = (z - 4) ** 2 + (y - 5) ** 2 + (x - 5 - index % 3) ** 2
    label[r1 <= 9] = 2
    label[r1 <= 4] = 3
    label[r1 <= 1] = 1
    r2 = (z - 8) ** 2 + (y - 10) ** 2 + (x - 12) ** 2
    label[r2 <= 2] = 3
    return label


def write_volume(array: np.ndarray, path: Path, origin, spacing=SPACING, direction=DIRECTION) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def build_handmade_dataset(root: Path, name: str = "Dataset917_HoldoutMets", with_test: bool = True) -> Path:
    """Write the dataset under ``root/name`` and return its folder."""
    folder = Path(root) / name
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON, indent=2))
    splits = [("Tr", CASES_TR, CLINICAL_TR)] + ([("Ts", CASES_TS, CLINICAL_TS)] if with_test else [])
    rng = np.random.default_rng(917)
    index = 0
    for split, cases, rows in splits:
        for case in cases:
            label = label_for(index)
            for channel in range(3):
                image = (rng.normal(300 + 100 * channel, 20, SHAPE) + 400 * (label > 0)).astype(np.int16)
                write_volume(image, folder / f"images{split}" / f"{case}_{channel:04d}.nii.gz", origin_for(index))
            write_volume(label, folder / f"labels{split}" / f"{case}.nii.gz", origin_for(index))
            index += 1
        write_csv(folder / f"clinical{split}.csv", rows)
    return folder
