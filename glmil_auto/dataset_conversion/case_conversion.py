"""Read, resample and write the cases of a source dataset, collecting every problem.

Shared by ``glmil_convert_folder`` and the public-dataset converters: each builds a list of
:class:`SourceCase` (file paths per case) and hands it to :func:`convert_cases`, which converts
every case it can and returns the problems of the others, so that one run lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import SimpleITK as sitk
from tqdm import tqdm

from glmil_auto.dataset.problems import DatasetError, Problem, warning
from glmil_auto.dataset_conversion.raw_writer import RawDatasetWriter
from glmil_auto.dataset_conversion.resample_to_reference import same_grid, to_reference_grid
from glmil_auto.dataset_conversion.source_files import read_volume

MaskTransform = Callable[[sitk.Image, str, Path], sitk.Image]


@dataclass(frozen=True)
class SourceCase:
    """One case of a source dataset: its id, its channel files (reference first) and its mask."""

    case_id: str
    images: tuple[Path, ...]
    mask: Path
    split: str = "Tr"


def convert_cases(
    writer: RawDatasetWriter,
    cases: Iterable[SourceCase],
    mask_transform: MaskTransform | None = None,
    interpolation: str = "linear",
    progress: bool = True,
) -> list[Problem]:
    """Write every case with ``writer``; returns the problems (errors of cases not written, and
    warnings) each naming the case and the file.

    The first image of a case is the reference grid: other channels and the mask are resampled
    onto it when their grid differs (a warning says when the mask was). ``mask_transform(mask,
    case_id, mask_path)`` maps source label values to the dataset's (it may raise
    :class:`DatasetError`).
    """
    cases = list(cases)
    problems: list[Problem] = []
    for case in tqdm(cases, desc="converting cases", unit="case", disable=not progress):
        try:
            volumes = [read_volume(path, case.case_id) for path in case.images]
            mask = read_volume(case.mask, case.case_id)
            if mask_transform is not None:
                mask = mask_transform(mask, case.case_id, case.mask)
            if not same_grid(mask, volumes[0]):
                problems.append(warning(f"mask resampled (nearest neighbour) onto the grid of {case.images[0].name}",
                                        case.case_id, str(case.mask)))
            volumes, mask = to_reference_grid(volumes, mask, 0, interpolation)
            writer.add_case(case.case_id, volumes, mask, case.split)
        except DatasetError as exc:
            problems += [_with_file(p, case) for p in exc.problems]
    return problems


def _with_file(problem: Problem, case: SourceCase) -> Problem:
    """Writer problems name the case only: add the mask file (mask problems) or the first image."""
    if problem.file is not None:
        return problem
    file = case.mask if problem.message.startswith("mask") else case.images[0]
    return Problem(problem.severity, problem.message, problem.case, str(file))
