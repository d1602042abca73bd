"""Check a whole raw dataset and report every problem at once, each naming its case and file.

Errors make the dataset unusable (``glmil_verify_dataset`` exits non-zero); warnings are
reported but do not block (a case without lesions, outcomes left unknown, ...).

The optional lesion table (``lesionsTr.csv`` / ``lesionsTs.csv``) is checked case by case in the
same worker that reads the case's mask, so that no mask is read twice.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from glmil_auto.dataset import layout
from glmil_auto.dataset.clinical_table import parse_clinical_table, read_csv_as_text
from glmil_auto.dataset.dataset_json import (
    DATASET_JSON,
    DatasetSpec,
    read_dataset_json,
    spec_from_dict,
    validate_dataset_json,
)
from glmil_auto.dataset.image_io import Geometry, geometry_mismatches, read_image
from glmil_auto.dataset.lesion_instances import find_lesion_instances
from glmil_auto.dataset.lesion_outcomes import (
    CaseLesionCheck,
    case_lesion_check,
    check_case_lesions,
    check_lesion_table,
)
from glmil_auto.dataset.nifti_integrity import count_nonfinite_voxels, is_nifti
from glmil_auto.dataset.problems import ERROR, WARNING, DatasetError, Problem, error, warning
from glmil_auto.dataset.safe_names import unsafe_reason


@dataclass
class VerificationReport:
    """Everything ``verify_dataset`` found, plus how many cases each split holds."""

    dataset_folder: Path
    problems: list[Problem] = field(default_factory=list)
    num_cases: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        lines = [f"Verified {self.dataset_folder}"]
        lines += [f"  {split}: {n} case(s)" for split, n in self.num_cases.items()]
        lines += [str(p) for p in self.errors + self.warnings]
        verdict = "FAILED" if self.errors else "OK"
        lines.append(f"{verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


@dataclass(frozen=True)
class _CaseFiles:
    case: str
    images: tuple[Path, ...]
    label: Path | None


def check_case_files(
    files: _CaseFiles,
    declared_labels: tuple[int, ...],
    lesion_labels: tuple[int, ...],
    lesions: CaseLesionCheck | None = None,
) -> list[Problem]:
    """Read every file of one case and list what is wrong (runs in a worker process).

    ``lesions``: the case's rows of the lesion table, matched against the mask read here.
    """
    problems: list[Problem] = []
    reference: Geometry | None = None
    reference_file = None
    for path in files.images:
        try:
            array, geometry = read_image(path, files.case)
        except DatasetError as exc:
            problems += exc.problems
            continue
        n_bad = _count_nonfinite(path, array)
        if n_bad:
            problems.append(error(f"{n_bad} voxel(s) are NaN or infinite", files.case, str(path)))
        if reference is None:
            reference, reference_file = geometry, path.name
        else:
            problems += _geometry_problems(reference, reference_file, geometry, files.case, path)

    if files.label is None:
        return problems
    try:
        label, geometry = read_image(files.label, files.case)
    except DatasetError as exc:
        return problems + exc.problems
    if reference is not None:
        problems += _geometry_problems(reference, reference_file, geometry, files.case, files.label)
    if label.dtype.kind == "f" and not np.array_equal(label, np.round(label)):
        problems.append(error("label map holds non-integer values", files.case, str(files.label)))
        return problems
    values = np.unique(label).astype(np.int64)
    undeclared = sorted(set(values.tolist()) - set(declared_labels))
    if undeclared:
        problems.append(
            error(
                f"label values {undeclared} are not declared in dataset.json 'labels' {sorted(declared_labels)}",
                files.case,
                str(files.label),
            )
        )
    if not np.isin(values, lesion_labels).any():
        problems.append(warning("case has no lesion voxels (it will get an empty bag)", files.case, str(files.label)))
    if lesions is not None:
        labelled, instances = find_lesion_instances(np.isin(label, lesion_labels), geometry)
        problems += check_case_lesions(lesions, labelled, instances, geometry, files.case)
    return problems


def _count_nonfinite(path: Path, array: np.ndarray) -> int:
    """NaN/inf voxels as stored: SimpleITK's NIfTI reader already replaced them by 0 in ``array``."""
    if is_nifti(path):
        return count_nonfinite_voxels(path)
    return int(array.size - np.count_nonzero(np.isfinite(array))) if array.dtype.kind == "f" else 0


def _geometry_problems(
    reference: Geometry, reference_file: str, other: Geometry, case: str, path: Path
) -> list[Problem]:
    differences = geometry_mismatches(reference, other)
    if not differences:
        return []
    return [error(f"geometry differs from {reference_file}: " + "; ".join(differences), case, str(path))]


def _load_spec(folder: Path) -> tuple[DatasetSpec | None, list[Problem]]:
    path = folder / DATASET_JSON
    if not path.is_file():
        return None, [error(f"{DATASET_JSON} is missing", file=str(path))]
    try:
        content = read_dataset_json(path)
    except DatasetError as exc:
        return None, exc.problems
    problems = validate_dataset_json(content, str(path))
    if problems:
        return None, problems
    return spec_from_dict(content, str(path)), []


def _list_split(folder: Path, split: str, spec: DatasetSpec) -> tuple[list[_CaseFiles], list[Problem]]:
    """Match image and label files of a split; report missing, extra and misnamed files."""
    problems: list[Problem] = []
    images_dir = layout.images_folder(folder, split)
    labels_dir = layout.labels_folder(folder, split)
    channels, unmatched = layout.scan_image_files(images_dir, spec.file_ending)
    for name in unmatched:
        problems.append(
            error(f"file name does not follow {{case}}_{{cccc}}{spec.file_ending}", file=str(images_dir / name))
        )
    label_cases = set(layout.scan_label_files(labels_dir, spec.file_ending))
    if not labels_dir.is_dir():
        problems.append(error(f"labels{split} folder is missing", file=str(labels_dir)))

    declared = set(spec.channel_names)
    cases: list[_CaseFiles] = []
    for case, found in channels.items():
        reason = unsafe_reason(case)
        if reason is not None:
            first = layout.image_file(folder, split, case, found[0], spec.file_ending)
            problems.append(error(f"case id {case!r} (from the file name) {reason}; rename the files", case, str(first)))
        for channel in sorted(declared - set(found)):
            expected = layout.image_file(folder, split, case, channel, spec.file_ending)
            problems.append(
                error(f"channel {channel} ({spec.channel_names[channel]}) is missing", case, str(expected))
            )
        for channel in sorted(set(found) - declared):
            extra = layout.image_file(folder, split, case, channel, spec.file_ending)
            problems.append(error(f"channel {channel} is not declared in dataset.json 'channel_names'", case, str(extra)))
        label = layout.label_file(folder, split, case, spec.file_ending)
        if case not in label_cases:
            if labels_dir.is_dir():
                problems.append(error("lesion mask (label) is missing", case, str(label)))
            label = None
        present = tuple(
            layout.image_file(folder, split, case, c, spec.file_ending) for c in sorted(declared & set(found))
        )
        cases.append(_CaseFiles(case, present, label))
    for case in sorted(label_cases - set(channels)):
        problems.append(error("label has no images", case, str(layout.label_file(folder, split, case, spec.file_ending))))
    return cases, problems


def _check_clinical(
    folder: Path, split: str, spec: DatasetSpec, cases: list[str]
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Problems of the split's clinical table, and the typed table (None when it cannot be read)."""
    path = layout.clinical_file(folder, split)
    if not path.is_file():
        if not spec.needs_clinical_table:  # images and masks only: nothing to read from a table
            return None, []
        if split == layout.TRAINING:
            return None, [error("clinical table is missing", file=str(path))]
        return None, [warning("held-out clinical table is missing: these cases can be predicted from images "
                              "only and cannot be evaluated", file=str(path))]
    try:
        text_table = read_csv_as_text(path)
    except DatasetError as exc:
        return None, exc.problems
    return parse_clinical_table(
        text_table, spec, str(path), expected_cases=cases, require_endpoints=split == layout.TRAINING
    )


def _case_outcomes(clinical: pd.DataFrame | None, case: str, endpoints: list[str]) -> dict[str, float]:
    """A case's binary labels from the typed clinical table (empty when unknown or ambiguous)."""
    if clinical is None or int((clinical.index == case).sum()) != 1:  # a repeated id is reported by the table
        return {}
    row = clinical.loc[case]
    return {name: float(row[name]) for name in endpoints if name in clinical.columns}


def _lesion_checks(
    folder: Path, split: str, spec: DatasetSpec, cases: list[_CaseFiles], clinical: pd.DataFrame | None
) -> tuple[list[CaseLesionCheck | None], list[Problem]]:
    """Per case, what its mask is checked against (None: no lesion rows), and the table's own problems."""
    path = layout.lesion_file(folder, split)
    if not path.is_file():
        return [None] * len(cases), []
    table, problems = check_lesion_table(path, spec, [c.case for c in cases], split)
    if table is None:
        return [None] * len(cases), problems
    checks = [
        case_lesion_check(table, spec, c.case, _case_outcomes(clinical, c.case, spec.any_lesion_endpoints), str(path))
        for c in cases
    ]
    return checks, problems


def verify_dataset(folder: str | Path, num_processes: int = 1, progress: bool = True) -> VerificationReport:
    """Check ``dataset.json``, every image, label and clinical row of imagesTr (and imagesTs if present)."""
    folder = Path(folder)
    report = VerificationReport(folder)
    spec, problems = _load_spec(folder)
    report.problems += problems
    if spec is None:
        report.problems.append(error("file checks skipped until dataset.json is valid", file=str(folder / DATASET_JSON)))
        return report

    for split in layout.SPLITS:
        present = [
            p.exists()
            for p in (layout.images_folder(folder, split), layout.labels_folder(folder, split),
                      layout.clinical_file(folder, split), layout.lesion_file(folder, split))
        ]
        if split == layout.TEST and not any(present):
            continue
        if not present[0]:
            report.problems.append(error(f"images{split} folder is missing", file=str(layout.images_folder(folder, split))))
            continue
        cases, problems = _list_split(folder, split, spec)
        report.num_cases[split] = len(cases)
        report.problems += problems
        if split == layout.TRAINING:
            if not cases:
                report.problems.append(error("imagesTr holds no cases", file=str(layout.images_folder(folder, split))))
            elif len(cases) != spec.num_training:
                report.problems.append(
                    error(f"'numTraining' is {spec.num_training} but imagesTr holds {len(cases)} case(s)",
                          file=str(folder / DATASET_JSON))
                )
        clinical, clinical_problems = _check_clinical(folder, split, spec, [c.case for c in cases])
        lesion_checks, lesion_problems = _lesion_checks(folder, split, spec, cases, clinical)
        report.problems += _check_files_parallel(cases, spec, num_processes, progress, split, lesion_checks)
        report.problems += clinical_problems + lesion_problems
    return report


def _check_files_parallel(
    cases: list[_CaseFiles],
    spec: DatasetSpec,
    num_processes: int,
    progress: bool,
    split: str,
    lesion_checks: list[CaseLesionCheck | None],
) -> list[Problem]:
    declared = tuple(spec.labels.values())
    bar = tqdm(total=len(cases), desc=f"verifying images{split}", disable=not progress, unit="case")
    results: list[list[Problem]] = []
    if num_processes <= 1 or len(cases) <= 1:
        for files, lesions in zip(cases, lesion_checks):
            results.append(check_case_files(files, declared, spec.lesion_labels, lesions))
            bar.update()
    else:
        # a worker that dies raises BrokenProcessPool here instead of hanging
        with ProcessPoolExecutor(max_workers=num_processes) as pool:
            futures = [pool.submit(check_case_files, f, declared, spec.lesion_labels, lesions)
                       for f, lesions in zip(cases, lesion_checks)]
            for future in futures:
                results.append(future.result())
                bar.update()
    bar.close()
    return [p for case_problems in results for p in case_problems]
