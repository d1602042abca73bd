"""A trained model folder: ``<glmil_results>/<Dataset>/<Trainer>__<plans>/`` with ``plans.json``,
``dataset.json`` and ``fold_<k>/checkpoint_*.pt`` (+ ``fold_<k>/validation/predictions.csv``, the final
checkpoint's out-of-fold predictions, and ``predictions_<checkpoint>.csv`` for any other one).

The trainer writes plans.json and dataset.json beside the folds, so the folder can be copied to
another machine and predict there without raw or preprocessed data. For folders trained before
that, the plans are read from a checkpoint (every checkpoint embeds them) and dataset.json from
the preprocessed folder when it exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from glmil_auto.dataset.dataset_json import DatasetSpec, load_dataset_json
from glmil_auto.dataset.safe_names import unsafe_reason
from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME
from glmil_auto.paths import preprocessed_folder, resolve_dataset_name, results_folder
from glmil_auto.training.trainers.checkpointing import load_checkpoint
from glmil_auto.training.validation.validation_files import checkpoint_suffix, explanation_file_names, validation_file_names

DEFAULT_CHECKPOINT = "checkpoint_final.pt"


class ModelFolderError(FileNotFoundError):
    """A model folder, fold or checkpoint that is not there; the message says what to run."""


@dataclass
class ModelFolder:
    path: Path
    plans: dict[str, Any]
    spec: DatasetSpec
    folds: list[str]
    checkpoint_name: str

    def checkpoint(self, fold: str) -> Path:
        return self.path / f"fold_{fold}" / self.checkpoint_name

    def validation_predictions(self, fold: str) -> Path:
        """The out-of-fold predictions of *this* checkpoint (``validation_files``)."""
        return self.path / f"fold_{fold}" / "validation" / validation_file_names(self.checkpoint_name)[0]

    def shap_background(self, fold: str) -> Path:
        """The fusion inputs of *this* checkpoint's validation cases, SHAP's background."""
        return self.path / f"fold_{fold}" / "validation" / explanation_file_names(self.checkpoint_name)[0]

    def validation_explanations(self, fold: str) -> Path:
        """The SHAP explanations of *this* checkpoint's validation cases."""
        return self.path / f"fold_{fold}" / "validation" / explanation_file_names(self.checkpoint_name)[1]

    def risk_groups_file(self) -> Path:
        """Where the risk scales learnt from this checkpoint's out-of-fold predictions are recorded."""
        return self.path / f"risk_groups{checkpoint_suffix(self.checkpoint_name)}.json"

    def survival_model_file(self) -> Path:
        """Where the Breslow survival models of this checkpoint's risks are recorded."""
        return self.path / f"survival_model{checkpoint_suffix(self.checkpoint_name)}.json"

    def recalibration_file(self) -> Path:
        """Where the probability recalibration maps of this checkpoint are recorded."""
        return self.path / f"recalibration{checkpoint_suffix(self.checkpoint_name)}.json"


def model_folder_for(dataset: str | int, trainer: str = "GLMILTrainer", plans_name: str = DEFAULT_PLANS_NAME) -> Path:
    """``<glmil_results>/<Dataset>/<trainer>__<plans_name>``."""
    name = resolve_dataset_name(dataset, [results_folder(), preprocessed_folder()])
    return results_folder() / name / f"{trainer}__{plans_name}"


def available_folds(path: Path, checkpoint_name: str = DEFAULT_CHECKPOINT) -> list[str]:
    """Folds (``"0"``..., ``"all"``) that have ``checkpoint_name``, numeric folds first."""
    found = [p.parent.name[len("fold_"):] for p in Path(path).glob(f"fold_*/{checkpoint_name}")]
    return sorted(found, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))


def open_model_folder(path: str | Path, folds: Sequence[int | str] | None = None,
                      checkpoint_name: str = DEFAULT_CHECKPOINT) -> ModelFolder:
    """Plans, dataset description and the folds to use; ``folds=None`` takes every fold with the
    checkpoint. Raises :class:`ModelFolderError` naming what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"model folder {path} does not exist: train it with glmil_train (or check -tr/-p)")
    chosen = [str(f) for f in folds] if folds else available_folds(path, checkpoint_name)
    if not chosen:
        raise ModelFolderError(f"no fold_*/{checkpoint_name} in {path}: train the folds with glmil_train, or pick "
                               "another checkpoint with -chk")
    missing = [f for f in chosen if not (path / f"fold_{f}" / checkpoint_name).is_file()]
    if missing:
        raise ModelFolderError(f"{checkpoint_name} missing for fold(s) {missing} in {path}")
    plans = _plans(path, chosen[0], checkpoint_name)
    _check_plans_names(plans, path)
    return ModelFolder(path, plans, _spec(path), chosen, checkpoint_name)


def _check_plans_names(plans: dict[str, Any], path: Path) -> None:
    """A model folder copied from elsewhere is input too: its endpoint, channel and clinical
    feature names become parts of output file names (dataset.json is checked when it is read)."""
    names = [("endpoint name", e.get("name")) for e in plans.get("endpoints", [])]
    names += [("channel name", n) for n in dict(plans.get("channel_names", {})).values()]
    names += [("clinical feature name", f.get("name") if isinstance(f, dict) else f)
              for f in plans.get("clinical", {}).get("features", [])]
    bad = [f"{what} {name!r} {reason}" for what, name in names if (reason := unsafe_reason(name)) is not None]
    if bad:
        raise ModelFolderError(f"{path / 'plans.json'}: " + "; ".join(bad))


def _plans(path: Path, fold: str, checkpoint_name: str) -> dict[str, Any]:
    plans_file = path / "plans.json"
    if plans_file.is_file():
        return json.loads(plans_file.read_text())
    return json.loads(load_checkpoint(path / f"fold_{fold}" / checkpoint_name)["plans"])


def _spec(path: Path) -> DatasetSpec:
    if (path / "dataset.json").is_file():
        return load_dataset_json(path)
    try:  # an older model folder: the preprocessed dataset on this machine
        dataset = path.parent.name
        return load_dataset_json(preprocessed_folder() / dataset)
    except Exception:  # noqa: BLE001 - the message below says what is needed
        raise ModelFolderError(f"{path / 'dataset.json'} is missing: copy the dataset's dataset.json there") from None
