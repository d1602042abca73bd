"""Preprocess every case of a dataset in parallel, resumably and atomically.

- a process pool (``-np``); a worker that crashes or is killed surfaces as an error naming the
  cases it held, never as a hang (``concurrent.futures`` marks the pool broken);
- a case whose outputs exist with the current plans hash and the same inputs (size and
  modification time of its image and label files, hash of its clinical row; see
  :mod:`~glmil_auto.dataset.case_inputs`) is skipped, so an interrupted run continues where
  it stopped and an edited case is redone; ``clean`` redoes every case;
- every file is written under a temporary name and renamed, the JSON last.
"""

from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from glmil_auto.dataset import layout
from glmil_auto.dataset.case_inputs import case_input_record, clinical_rows
from glmil_auto.dataset.lesion_outcomes import LINE_COLUMN, lesion_rows_for_case, load_lesion_table
from glmil_auto.dataset.raw_dataset import RawDataset
from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME, load_plans, plans_hash
from glmil_auto.paths import preprocessed_folder
from glmil_auto.preprocessing.case_preprocessor import CasePreprocessor
from glmil_auto.preprocessing.storage import case_is_done, save_case
from glmil_auto.utilities.atomic_files import atomic_path
from glmil_auto.utilities.content_hash import json_sha256
from glmil_auto.utilities.worker_init import single_threaded_image_worker, single_threaded_images


def preprocessed_case_folder(dataset_name: str, plans_name: str, split: str) -> Path:
    return preprocessed_folder() / dataset_name / plans_name / split


@dataclass(frozen=True)
class _Task:
    raw_folder: str
    case: str
    split: str
    output_folder: str
    inputs: dict[str, Any] | None = None  # the case's input record, taken before it is read
    lesion_rows: Any = None  # the case's rows of the split's lesion table (None without one)


def preprocess_raw_case(raw: RawDataset, case: str, split: str, preprocessor: CasePreprocessor, hash_: str,
                        inputs: dict[str, Any] | None = None, lesion_rows: Any = None):
    """Read one raw case and run the shared case preprocessing; returns arrays and properties."""
    inputs = case_input_record(raw, case, split) if inputs is None else inputs
    images, mask, geometry = raw.read_case(case, split)
    global_array, local_array, properties = preprocessor.run_case(
        images, mask, geometry, case, lesion_rows=lesion_rows, lesion_file=str(layout.lesion_file(raw.folder, split)))
    properties.update(split=split, plans_hash=hash_, inputs=inputs)
    return global_array, local_array, properties


def _run_task(task: _Task, plans: dict[str, Any]) -> str:
    raw = RawDataset(task.raw_folder)
    arrays = preprocess_raw_case(raw, task.case, task.split, CasePreprocessor(plans), plans_hash(plans), task.inputs,
                                 task.lesion_rows)
    save_case(Path(task.output_folder), task.case, *arrays)
    return task.case


class DatasetPreprocessor:
    """Preprocesses the training (``Tr``) and held-out (``Ts``) cases of a raw dataset.

    ``lesion_outcomes=False`` does not read the raw dataset's lesion tables, so no lesion outcome
    is stored: for a dataset preprocessed with another dataset's plans (extra data for pretraining,
    :mod:`glmil_auto.pretraining.extra_datasets`), whose outcomes are not used.
    """

    def __init__(self, raw_folder: str | Path, plans_name: str = DEFAULT_PLANS_NAME, num_processes: int = 2,
                 lesion_outcomes: bool = True):
        self.raw = RawDataset(raw_folder)
        self.plans_name = plans_name
        self.output_root = preprocessed_folder() / self.raw.name
        self.plans = load_plans(self.output_root / f"{plans_name}.json")
        self.num_processes = max(1, int(num_processes))
        self.lesion_outcomes = lesion_outcomes

    def _copy_tables(self) -> None:
        """dataset.json and the clinical tables travel with the preprocessed data (training and
        prediction on another machine need no raw folder)."""
        for name in ["dataset.json"] + [layout.clinical_file(self.raw.folder, s).name for s in layout.SPLITS]:
            source = self.raw.folder / name
            if source.is_file():
                with atomic_path(self.output_root / name) as temporary:
                    shutil.copyfile(source, temporary)

    def run(self, splits: tuple[str, ...] = layout.SPLITS, progress: bool = True, clean: bool = False) -> dict[str, int]:
        """Preprocess what is not done yet (``clean``: every case); returns counts of processed
        and skipped cases."""
        self._copy_tables()
        hash_ = plans_hash(self.plans)
        tasks, skipped = [], 0
        for split in splits:
            if not self.raw.has_split(split):
                continue
            output = preprocessed_case_folder(self.raw.name, self.plans_name, split)
            rows = clinical_rows(self.raw, split)
            lesion_table = load_lesion_table(self.raw.folder, split, self.raw.spec) if self.lesion_outcomes else None
            for case in self.raw.cases(split):
                inputs = case_input_record(self.raw, case, split, rows)
                lesion_rows = None
                if lesion_table is not None:  # an edited lesion row redoes its case
                    lesion_rows = lesion_rows_for_case(lesion_table, case, self.raw.spec.case_column)
                    inputs["lesion_rows_sha256"] = json_sha256(lesion_rows.drop(columns=LINE_COLUMN, errors="ignore").to_json())
                if not clean and case_is_done(output, case, hash_, inputs):
                    skipped += 1
                else:
                    tasks.append(_Task(str(self.raw.folder), case, split, str(output), inputs, lesion_rows))
        bar = tqdm(total=len(tasks), desc=f"preprocessing {self.raw.name}", unit="case", disable=not progress)
        if self.num_processes == 1 or len(tasks) <= 1:
            single_threaded_images()
            for task in tasks:
                _run_task(task, self.plans)
                bar.update()
        else:
            self._run_pool(tasks, bar)
        bar.close()
        return {"processed": len(tasks), "skipped": skipped}

    def _run_pool(self, tasks: list[_Task], bar: tqdm, worker: Callable[[_Task, dict], str] = _run_task) -> None:
        context = multiprocessing.get_context("spawn")  # no fork after threads (SimpleITK, BLAS)
        with ProcessPoolExecutor(self.num_processes, mp_context=context, initializer=single_threaded_image_worker) as pool:
            futures = {pool.submit(worker, task, self.plans): task for task in tasks}
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.update()
            except BrokenProcessPool as exc:
                pending = sorted(t.case for f, t in futures.items() if not f.done() or f.exception() is not None)
                for f in futures:
                    f.cancel()
                raise RuntimeError(
                    f"a preprocessing worker died (killed or out of memory) while handling {', '.join(pending[:10])}"
                    f"{' ...' if len(pending) > 10 else ''}; finished cases are kept, re-run to continue"
                ) from exc
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
