"""``DatasetFingerprintExtractor``: reads every training case once and writes ``dataset_fingerprint.json``.

Subclass it to change what is measured: :meth:`analyze_case` (one case, runs in a worker
process; keep it a static or class method so the class can be sent to workers) and
:meth:`assemble` (the dataset-level JSON).
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from glmil_auto.configuration import default_num_processes
from glmil_auto.dataset.case_inputs import case_input_record, clinical_rows
from glmil_auto.dataset import DatasetError, RawDataset
from glmil_auto.experiment_planning.fingerprint import summaries
from glmil_auto.experiment_planning.fingerprint.case_fingerprint import CaseFingerprint, read_and_fingerprint_case
from glmil_auto.experiment_planning.fingerprint.nnunet_compatible import (
    TOTAL_FOREGROUND_SAMPLES,
    intensity_properties,
    pool_samples,
    samples_per_case,
)
from glmil_auto.paths import preprocessed_folder, raw_dataset_folder
from glmil_auto.utilities.atomic_files import write_json_atomic
from glmil_auto.utilities.content_hash import json_sha256
from glmil_auto.utilities.worker_init import single_threaded_image_worker

FINGERPRINT_VERSION = 3  # 2: skull-stripping detection (a stripped case's head box is its nonzero region);
# 3: lesion intensities in brain standard deviations per case (the IBSI bin width's basis)
FINGERPRINT_FILE = "dataset_fingerprint.json"


class DatasetFingerprintExtractor:
    """Fingerprint of a raw dataset's training cases.

    ``dataset``: an id or name looked up in ``glmil_raw``, or a dataset folder given as a
    :class:`~pathlib.Path`. The result goes to ``<glmil_preprocessed>/<DatasetNNN_Name>/`` unless
    ``output_folder`` is given.
    """

    fingerprint_version = FINGERPRINT_VERSION
    total_foreground_samples = TOTAL_FOREGROUND_SAMPLES  # nnU-Net's 10e7; only lower it in tests

    def __init__(
        self,
        dataset: str | int | Path,
        num_processes: int | None = None,
        progress: bool = True,
        output_folder: str | Path | None = None,
    ):
        folder = dataset if isinstance(dataset, Path) else raw_dataset_folder(dataset)
        self.dataset = RawDataset(folder)
        self.num_processes = max(1, num_processes if num_processes is not None else default_num_processes())
        self.progress = progress
        self.output_folder = Path(output_folder) if output_folder is not None else preprocessed_folder() / self.dataset.name
        self.cases = self.dataset.cases("Tr")

    @property
    def output_file(self) -> Path:
        return self.output_folder / FINGERPRINT_FILE

    @staticmethod
    def analyze_case(dataset_folder: str, case: str, num_foreground_samples: int) -> CaseFingerprint:
        """One training case (runs in a worker)."""
        return read_and_fingerprint_case(dataset_folder, case, num_foreground_samples)

    def run(self, overwrite_existing: bool = False) -> dict[str, Any]:
        """Compute and write the fingerprint, or return the existing file's content.

        An existing file is reused (as in nnU-Net) only when it has this fingerprint version, the
        same training cases and the same inputs (:meth:`inputs_sha256`: an edited image, mask or
        clinical value is noticed); otherwise it is recomputed. ``overwrite_existing`` always
        recomputes.
        """
        inputs = self.inputs_sha256()
        if not overwrite_existing and self.output_file.is_file():
            existing = json.loads(self.output_file.read_text(encoding="utf-8"))
            if (existing.get("fingerprint_version") == self.fingerprint_version
                    and sorted(existing.get("cases", {})) == self.cases and existing.get("inputs_sha256") == inputs):
                return existing
        fingerprint = self.compute()
        fingerprint["inputs_sha256"] = inputs
        write_json_atomic(self.output_file, fingerprint)
        return fingerprint

    def inputs_sha256(self) -> str:
        """One hash of what the fingerprint is made from: every training case's image and label
        files (size, modification time) and clinical row (:mod:`glmil_auto.dataset.case_inputs`)."""
        rows = clinical_rows(self.dataset, "Tr")
        return json_sha256({case: case_input_record(self.dataset, case, "Tr", rows) for case in self.cases})

    def compute(self) -> dict[str, Any]:
        """The fingerprint as a JSON-compatible dict (nothing written)."""
        if not self.cases:
            raise ValueError(f"{self.dataset.folder} has no training cases in imagesTr")
        table = self.dataset.clinical_table("Tr")  # read first: a bad table fails before the images
        results = self.analyze_cases()
        return summaries.to_json_compatible(self.assemble(results, table))

    def analyze_cases(self) -> list[CaseFingerprint]:
        """Every training case, in sorted case order, with a process pool when ``num_processes > 1``.

        The first failing case stops the run and its error is raised here (a :class:`DatasetError`
        keeps its message naming the case and the file); a worker killed by the system (usually
        out of memory) raises ``RuntimeError`` instead of hanging.
        """
        num_samples = samples_per_case(len(self.cases), self.total_foreground_samples)
        folder = str(self.dataset.folder)
        analyze = type(self).analyze_case
        bar = tqdm(total=len(self.cases), desc="fingerprint", unit="case", disable=not self.progress)
        results: dict[str, CaseFingerprint] = {}
        workers = min(self.num_processes, len(self.cases))
        try:
            if workers <= 1:
                for case in self.cases:
                    results[case] = _analyze(analyze, folder, case, num_samples)
                    bar.update()
            else:
                # spawn: no fork after SimpleITK/OpenMP threads exist in this process
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(workers, mp_context=context, initializer=single_threaded_image_worker) as pool:
                    futures = {pool.submit(_analyze, analyze, folder, case, num_samples): case for case in self.cases}
                    pending = set(futures)
                    while pending:  # one bar step per finished case; the first error stops the rest
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            try:
                                results[futures[future]] = future.result()
                            except BaseException:
                                pool.shutdown(wait=False, cancel_futures=True)
                                raise
                            bar.update()
        except BrokenProcessPool as exc:
            raise RuntimeError(
                "a fingerprint worker process died without an error message (killed by the system, "
                "most often for lack of memory); retry with fewer processes (-np)"
            ) from exc
        finally:
            bar.close()
        return [results[case] for case in self.cases]

    def assemble(self, results: list[CaseFingerprint], table: pd.DataFrame) -> dict[str, Any]:
        """The dataset fingerprint from the per-case results (sorted by case) and the clinical table."""
        spec = self.dataset.spec
        channels = sorted(spec.channel_names)
        records = {}
        for result in results:
            record = dict(result.record)
            record["group"] = _group_of(table, spec.group_column, result.case)
            records[result.case] = record
        foreground = {
            str(channel): intensity_properties(pool_samples([r.nnunet.foreground_samples[i] for r in results]))
            for i, channel in enumerate(channels)
        }
        brain_pooled = [np.concatenate([r.brain_samples[i] for r in results]) for i in range(len(channels))]
        summary = {
            **summaries.geometry_summary(list(records.values())),
            **summaries.lesion_summary(list(records.values())),
            "brain_region_intensity_per_channel": summaries.pooled_intensity_summary(brain_pooled),
            "skull_stripping": summaries.skull_stripping_summary(list(records.values())),
        }
        return {
            "fingerprint_version": self.fingerprint_version,
            "dataset_name": self.dataset.name,
            "channel_names": {str(c): spec.channel_names[c] for c in channels},
            "num_training_cases": len(results),
            "spacings": [r.nnunet.spacing for r in results],
            "shapes_after_crop": [r.nnunet.shape_after_crop for r in results],
            "foreground_intensity_properties_per_channel": foreground,
            "median_relative_size_after_cropping": float(np.median([r.nnunet.relative_size_after_crop for r in results])),
            "foreground_samples_per_case": samples_per_case(len(results), self.total_foreground_samples),
            "lesion_labels": list(spec.lesion_labels),
            "cases": records,
            "summary": summary,
            "endpoints": summaries.endpoint_summaries(table, spec),
            "clinical_features": summaries.clinical_feature_summaries(table, spec),
            "groups": summaries.group_counts(table, spec),
        }


def extract_fingerprint(
    dataset: str | int | Path, num_processes: int | None = None, overwrite_existing: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Python API of ``glmil_extract_fingerprint``: compute (or reuse) and write the fingerprint."""
    return DatasetFingerprintExtractor(dataset, num_processes, progress).run(overwrite_existing)


def _group_of(table: pd.DataFrame, column: str | None, case: str) -> str | None:
    if not column:
        return None
    value = table.at[case, column]
    return None if pd.isna(value) else str(value)


def _analyze(analyze, folder: str, case: str, num_samples: int) -> CaseFingerprint:
    """Run ``analyze`` on one case; errors other than DatasetError (which names the case) get the case name."""
    try:
        return analyze(folder, case, num_samples)
    except DatasetError:
        raise
    except Exception as exc:
        raise RuntimeError(f"fingerprint of case {case} failed: {exc!r}") from exc
