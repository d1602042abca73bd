"""Lesion features of a whole raw dataset split, case by case or in a spawn process pool."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.preprocessing.lesion_features.features import lesion_features
from glmil_auto.preprocessing.lesion_features.lesion_frame import empty_lesion_frame
from glmil_auto.utilities.worker_init import single_threaded_image_worker


def _case_features(task: tuple[str, str, str]) -> pd.DataFrame:
    """Worker: read one case of a raw dataset and measure its lesions."""
    from glmil_auto.dataset.raw_dataset import RawDataset

    folder, split, case = task
    dataset = RawDataset(folder)
    images, mask, geometry = dataset.read_case(case, split)  # DatasetError names the case and file
    try:
        return lesion_features(images, mask, geometry, case, dataset.spec.channel_names)
    except Exception as exc:  # a worker's traceback alone does not say which case
        raise DatasetError(error(f"radiomics feature extraction failed ({exc!r})", case=case,
                                 file=str(dataset.label_file(case, split)))) from exc


def extract_dataset_features(dataset_folder: str | Path, split: str = "Tr", num_processes: int = 1,
                             progress: bool = True) -> pd.DataFrame:
    """Lesion features of every case of a raw dataset split (``"Tr"`` or ``"Ts"``), one row per lesion.

    Cases are read with :class:`~glmil_auto.dataset.raw_dataset.RawDataset` (lesion mask = union of
    ``lesion_labels``); a case without lesions contributes no row, so the frame's
    ``attrs["case_ids"]`` lists every case (pass it to :func:`patient_features`).
    """
    from glmil_auto.dataset.raw_dataset import RawDataset

    dataset = RawDataset(dataset_folder)
    cases = dataset.cases(split)
    tasks = [(str(dataset.folder), split, case) for case in cases]
    frames: list[pd.DataFrame] = []
    bar = tqdm(total=len(tasks), desc=f"radiomics features ({split})", unit="case", disable=not progress)
    if num_processes <= 1 or len(tasks) <= 1:
        for task in tasks:
            frames.append(_case_features(task))
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")  # no fork after threads (SimpleITK, BLAS)
        with context.Pool(min(num_processes, len(tasks)), initializer=single_threaded_image_worker) as pool:
            for frame in pool.imap(_case_features, tasks, chunksize=1):
                frames.append(frame)
                bar.update()
    bar.close()
    frames = [f for f in frames if len(f)]
    out = pd.concat(frames, ignore_index=True) if frames else empty_lesion_frame()
    out.attrs["case_ids"] = list(cases)
    return out
