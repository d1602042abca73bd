"""Parse and validate ``dataset.json``: nnU-Net v2's keys plus glmil_auto's outcome keys.

nnU-Net keys (so nnU-Net can read the same folder): ``channel_names``, ``labels``,
``numTraining``, ``file_ending``. glmil_auto adds ``case_column``, ``group_column``,
``patient_column``, ``lesion_labels``, ``clinical_features`` and ``endpoints``; see documentation/raw_dataset_format.md.
A binary endpoint may declare ``"aggregation": "any_lesion"`` (the case fails when any of its
lesions fails, like local failure); the default ``"case"`` is an outcome of the patient as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glmil_auto.dataset.problems import DatasetError, Problem, error, raise_if_errors
from glmil_auto.dataset.safe_names import SAFE_FILE_ENDING, name_problems
from glmil_auto.utilities.strict_json import loads_strict

DATASET_JSON = "dataset.json"
CLINICAL_FEATURE_TYPES = ("numeric", "binary", "categorical")
ENDPOINT_TYPES = ("binary", "survival")
CASE_AGGREGATION, ANY_LESION_AGGREGATION = "case", "any_lesion"
AGGREGATIONS = (CASE_AGGREGATION, ANY_LESION_AGGREGATION)


@dataclass(frozen=True)
class Endpoint:
    """A declared outcome. Binary: column ``name``. Survival: columns ``time`` and ``event``.

    ``aggregation`` (binary only): ``"case"`` (default) or ``"any_lesion"``, the case fails when
    any lesion fails, so lesion-level outcomes (``lesionsTr.csv``) refine it. It stays the last
    field, with a default, so that positional constructions of the first four keep working.
    """

    name: str
    type: str
    time: str | None = None
    event: str | None = None
    aggregation: str = CASE_AGGREGATION

    @property
    def any_lesion(self) -> bool:
        return self.aggregation == ANY_LESION_AGGREGATION

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.name,) if self.type == "binary" else (self.time, self.event)


@dataclass(frozen=True)
class DatasetSpec:
    """The typed content of ``dataset.json``."""

    channel_names: dict[int, str]
    labels: dict[str, int]
    num_training: int
    file_ending: str
    case_column: str = "case_id"
    group_column: str | None = None
    patient_column: str | None = None  # exams / courses of one patient stay in one fold
    lesion_labels: tuple[int, ...] = ()
    clinical_features: dict[str, str] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def binary_endpoints(self) -> list[str]:
        return [n for n, e in self.endpoints.items() if e.type == "binary"]

    @property
    def any_lesion_endpoints(self) -> list[str]:
        """Binary endpoints declared ``"aggregation": "any_lesion"``."""
        return [n for n, e in self.endpoints.items() if e.type == "binary" and e.any_lesion]

    @property
    def survival_endpoints(self) -> list[str]:
        return [n for n, e in self.endpoints.items() if e.type == "survival"]

    @property
    def needs_clinical_table(self) -> bool:
        """Whether dataset.json names any clinical-table column (features, endpoints, group or
        patient column). One that names none (images and masks only, such as a public collection
        used for pretraining) may come without a clinical table."""
        return bool(self.clinical_features or self.endpoints or self.group_column or self.patient_column)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_dataset_json(content: Any, file: str = DATASET_JSON) -> list[Problem]:
    """Every problem with a parsed ``dataset.json`` (an empty list when it is valid)."""
    if not isinstance(content, dict):
        return [error("dataset.json must hold a JSON object", file=file)]
    problems: list[Problem] = []

    def bad(message: str) -> None:
        problems.append(error(message, file=file))

    for key in ("channel_names", "labels", "numTraining", "file_ending"):
        if key not in content:
            bad(f"required key '{key}' is missing")

    channels = content.get("channel_names")
    if channels is not None:
        if not isinstance(channels, dict) or not channels:
            bad("'channel_names' must be a non-empty object like {\"0\": \"T1c\"}")
        else:
            keys = list(channels)
            if not all(isinstance(k, str) and k.isdigit() for k in keys):
                bad(f"'channel_names' keys must be channel indices as strings, got {keys}")
            elif sorted(int(k) for k in keys) != list(range(len(keys))):
                bad(f"'channel_names' keys must be 0..{len(keys) - 1} without gaps, got {keys}")
            if not all(isinstance(v, str) and v for v in channels.values()):
                bad("'channel_names' values must be non-empty strings")
            else:
                problems.extend(name_problems(channels.values(), "channel name", file))
                repeated = sorted({v for v in channels.values() if list(channels.values()).count(v) > 1})
                if repeated:
                    bad(f"channel names must differ, {repeated} name more than one channel")

    labels = content.get("labels")
    labels_ok = False
    if labels is not None:
        if not isinstance(labels, dict) or not labels:
            bad("'labels' must be a non-empty object like {\"background\": 0, \"metastasis\": 1}")
        elif not all(_is_int(v) and v >= 0 for v in labels.values()):
            bad(f"'labels' values must be non-negative integers, got {list(labels.values())}")
        else:
            if 0 not in labels.values():
                bad("'labels' must declare the background as 0")
            if len(set(labels.values())) != len(labels):
                bad("'labels' values must be unique (region-based labels are not supported)")
            labels_ok = True

    num_training = content.get("numTraining")
    if num_training is not None and not (_is_int(num_training) and num_training >= 0):
        bad(f"'numTraining' must be a non-negative integer, got {num_training!r}")

    file_ending = content.get("file_ending")
    if file_ending is not None and not (isinstance(file_ending, str) and SAFE_FILE_ENDING.fullmatch(file_ending)):
        bad("'file_ending' must be a string starting with '.', holding only dots, letters and digits "
            f"(like '.nii.gz'), got {file_ending!r}")

    for key in ("case_column", "group_column", "patient_column"):
        if key in content and content[key] is not None and not (
            isinstance(content[key], str) and content[key]
        ):
            bad(f"'{key}' must be a non-empty string (a column of the clinical table)")

    lesion_labels = content.get("lesion_labels")
    if lesion_labels is not None:
        if not isinstance(lesion_labels, list) or not all(_is_int(v) and v > 0 for v in lesion_labels):
            bad(f"'lesion_labels' must be a list of positive integers, got {lesion_labels!r}")
        elif labels_ok:
            undeclared = sorted(set(lesion_labels) - set(labels.values()))
            if undeclared:
                bad(f"'lesion_labels' {undeclared} are not declared in 'labels'")

    features = content.get("clinical_features", {})
    if not isinstance(features, dict):
        bad("'clinical_features' must be an object mapping column -> numeric|binary|categorical")
    else:
        problems.extend(name_problems(features, "clinical feature name", file))
        for name, kind in features.items():
            if kind not in CLINICAL_FEATURE_TYPES:
                bad(f"clinical feature '{name}' has type {kind!r}; use one of {list(CLINICAL_FEATURE_TYPES)}")

    endpoints = content.get("endpoints", {})
    if not isinstance(endpoints, dict):
        bad("'endpoints' must be an object mapping endpoint name -> {\"type\": ...}")
    else:
        problems.extend(name_problems(endpoints, "endpoint name", file))
        for name, declaration in endpoints.items():
            if not isinstance(declaration, dict) or declaration.get("type") not in ENDPOINT_TYPES:
                bad(f"endpoint '{name}' must be an object with \"type\" in {list(ENDPOINT_TYPES)}")
                continue
            if declaration["type"] == "survival":
                for key in ("time", "event"):
                    if not (isinstance(declaration.get(key), str) and declaration[key]):
                        bad(f"survival endpoint '{name}' needs a column name in \"{key}\"")
            aggregation_problem = _aggregation_problem(name, declaration)
            if aggregation_problem is not None:
                bad(aggregation_problem)
            if isinstance(features, dict) and name in features:
                bad(f"'{name}' is declared both as a clinical feature and as an endpoint")

    if content.get("clinical_scores") is not None:  # optional: columns of the RPA / GPA / DS-GPA scores
        from glmil_auto.dataset.clinical_scores_block import validate_clinical_scores_block

        problems.extend(validate_clinical_scores_block(content["clinical_scores"],
                                                       features if isinstance(features, dict) else {}, file))
    return problems


def _aggregation_problem(name: str, declaration: dict[str, Any]) -> str | None:
    """What is wrong with an endpoint's ``"aggregation"`` (None when absent or valid).

    Only a binary endpoint can be aggregated over lesions; ``"case"`` on a survival endpoint is
    the meaning it has anyway and is accepted.
    """
    if "aggregation" not in declaration:
        return None
    value = declaration["aggregation"]
    if not (isinstance(value, str) and value in AGGREGATIONS):
        return f"endpoint '{name}' has \"aggregation\" {value!r}; use one of {list(AGGREGATIONS)}"
    if value != CASE_AGGREGATION and declaration["type"] != "binary":
        return (f"endpoint '{name}' is {declaration['type']}: \"aggregation\": \"{value}\" applies to binary "
                "endpoints only")
    return None


def spec_from_dict(content: dict[str, Any], file: str = DATASET_JSON) -> DatasetSpec:
    """Build a :class:`DatasetSpec`, raising :class:`DatasetError` with every problem found."""
    raise_if_errors(validate_dataset_json(content, file))
    labels = dict(content["labels"])
    lesion_labels = content.get("lesion_labels")
    if lesion_labels is None:
        lesion_labels = [v for v in labels.values() if v != 0]
    endpoints = {
        name: Endpoint(name, d["type"], d.get("time"), d.get("event"), d.get("aggregation", CASE_AGGREGATION))
        for name, d in content.get("endpoints", {}).items()
    }
    return DatasetSpec(
        channel_names={int(k): v for k, v in sorted(content["channel_names"].items(), key=lambda kv: int(kv[0]))},
        labels=labels,
        num_training=int(content["numTraining"]),
        file_ending=content["file_ending"],
        case_column=content.get("case_column") or "case_id",
        group_column=content.get("group_column"),
        patient_column=content.get("patient_column"),
        lesion_labels=tuple(sorted(lesion_labels)),
        clinical_features=dict(content.get("clinical_features", {})),
        endpoints=endpoints,
        raw=dict(content),
    )


def load_dataset_json(dataset_folder: str | Path) -> DatasetSpec:
    """Read and validate ``<dataset_folder>/dataset.json``."""
    path = Path(dataset_folder) / DATASET_JSON
    if not path.is_file():
        raise DatasetError(error(f"{DATASET_JSON} not found in {Path(dataset_folder)}", file=str(path)))
    return spec_from_dict(read_dataset_json(path), file=str(path))


def read_dataset_json(path: str | Path) -> Any:
    """The parsed content of a dataset.json; :class:`DatasetError` naming the file when it is not
    valid JSON or repeats a key in one object (``json`` would keep the last value silently)."""
    try:
        return loads_strict(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and DuplicateKeyError are ValueErrors
        raise DatasetError(error(f"not valid JSON: {exc}", file=str(path))) from exc
