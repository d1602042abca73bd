"""Produce ``nnunet_fingerprint_synthetic_seed3.json``: nnU-Net v2's own fingerprint of a synthetic dataset.

The test ``tests/test_fingerprint_nnunet.py`` regenerates the same dataset, runs glmil_auto's
extractor and compares its nnU-Net-compatible keys with the numbers stored here. The synthetic
images have a noisy background, so nnU-Net's crop to nonzero keeps every voxel; a second copy
with a zeroed background (:func:`zero_background`, stored under ``"zero_background"``) checks the
cropping (every axis shrinks) and the hole filling. The tests never
run this script and do not need nnunetv2; run it by hand when the synthetic generator changes
(the test then fails and says so):

    pip install --no-deps --target /tmp/nnunet_pkgs nnunetv2   # keeps the project's torch untouched
    PYTHONPATH=/tmp/nnunet_pkgs python tests/reference/make_nnunet_reference.py

(nnunetv2's fingerprint extraction needs only packages glmil_auto already depends on, plus
scikit-image and tifffile for its reader registry.) The reference was produced with nnunetv2 2.8.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REFERENCE_FILE = Path(__file__).with_name("nnunet_fingerprint_synthetic_seed3.json")
GENERATOR_ARGS = {"n_train": 8, "n_test": 0, "n_centres": 4, "size": 4.0, "seed": 3}
ZERO_BACKGROUND_NAME = "Dataset002_SynthBrainMetsZeroBg"
NNUNET_KEYS = ("spacings", "shapes_after_crop", "foreground_intensity_properties_per_channel",
               "median_relative_size_after_cropping")


def generate(raw_dir: Path) -> Path:
    """The reference dataset (identical whatever ``num_processes``)."""
    from glmil_auto.synthetic import generate_synthetic_dataset

    return generate_synthetic_dataset(raw_dir, num_processes=2, progress=False, **GENERATOR_ARGS)


def zero_background(source: Path, target: Path) -> Path:
    """Copy a dataset, setting to 0 in every channel the voxels whose first channel is below its
    40th percentile (a skull-stripped-like zero background with zero holes inside) and slabs at
    three borders (array z[:2], y[:3], x[-4:]), so that the crop shrinks along every axis. Labels,
    dataset.json and the clinical table are copied unchanged."""
    shutil.copytree(source, target)
    for path in sorted((target / "imagesTr").glob("*_0000.nii.gz")):
        case = path.name[: -len("_0000.nii.gz")]
        files = sorted((target / "imagesTr").glob(f"{case}_*.nii.gz"))
        images = [sitk.ReadImage(str(f)) for f in files]
        arrays = [sitk.GetArrayFromImage(i) for i in images]
        zero = arrays[0] < np.percentile(arrays[0], 40.0)
        zero[:2] = True
        zero[:, :3] = True
        zero[:, :, -4:] = True
        for f, image, array in zip(files, images, arrays):
            array = array.copy()
            array[zero] = 0
            out = sitk.GetImageFromArray(array)
            out.CopyInformation(image)
            sitk.WriteImage(out, str(f), useCompression=True)
    return target


def dataset_digest(folder: Path) -> str:
    """SHA-256 of every training image's and label's decoded voxels and geometry.

    Hashes what a reader sees rather than the compressed bytes, which change with the zlib version.
    """
    digest = hashlib.sha256()
    for sub in ("imagesTr", "labelsTr"):
        for path in sorted((folder / sub).glob("*.nii.gz")):
            image = sitk.ReadImage(str(path))
            array = np.ascontiguousarray(sitk.GetArrayFromImage(image))
            digest.update(f"{sub}/{path.name}|{array.dtype}|{array.shape}".encode())
            geometry = (image.GetSpacing(), image.GetOrigin(), image.GetDirection())
            digest.update(repr(tuple(tuple(round(v, 6) for v in g) for g in geometry)).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        raw, preprocessed = Path(tmp) / "raw", Path(tmp) / "preprocessed"
        folder = generate(raw)
        zero_folder = zero_background(folder, raw / ZERO_BACKGROUND_NAME)
        # nnunetv2 reads its folders from the environment when it is imported
        os.environ["nnUNet_raw"], os.environ["nnUNet_preprocessed"] = str(raw), str(preprocessed)
        os.environ["nnUNet_results"] = str(Path(tmp) / "results")
        import nnunetv2
        from importlib.metadata import version
        from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
            DatasetFingerprintExtractor,
        )

        print(f"nnunetv2 from {nnunetv2.__file__}")
        nnunet = {}
        for name in (folder.name, zero_folder.name):
            extractor = DatasetFingerprintExtractor(name, num_processes=2)
            extractor.run(overwrite_existing=True)
            # read the file nnU-Net wrote (not the returned dict), exactly as its planner would
            nnunet[name] = json.loads((preprocessed / name / "dataset_fingerprint.json").read_text())
        reference = {
            "about": "nnU-Net v2's dataset_fingerprint.json of a glmil_auto synthetic dataset; "
                     "made by tests/reference/make_nnunet_reference.py",
            "nnunetv2_version": version("nnunetv2"),
            "numpy_version": np.__version__,
            "generator_args": GENERATOR_ARGS,
            "dataset_name": folder.name,
            "dataset_digest_sha256": dataset_digest(folder),
            "training_cases": sorted(extractor.dataset.keys()),
            **{key: nnunet[folder.name][key] for key in NNUNET_KEYS},
            "zero_background": {
                "dataset_name": zero_folder.name,
                "about": "the same cases after tests/reference/make_nnunet_reference.py:zero_background",
                **{key: nnunet[zero_folder.name][key] for key in NNUNET_KEYS},
            },
        }
    REFERENCE_FILE.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {REFERENCE_FILE}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
