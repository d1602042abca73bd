"""Python API of ``glmil_pretrain``: gather the cases, plan, pretrain (or resume).

The first dataset is the *target*: its plans (``-p``) fix the encoders, the patches and the
spacing, and the run is written under its results folder. Every further dataset, labelled
(``-d``) or not (``--unlabelled``), is preprocessed with the target's plans first
(``extra_datasets.preprocess_with_target_plans``); only its images and lesion masks are read.

Leakage: pretraining reads no outcome, so using a fold's validation cases or the external
centre's images is allowed (transductive, as in every SSL paper). ``fold`` restricts the target's
cases to that fold's training cases and leaves out its imagesTs (the strict setting);
``include_test=False`` leaves out imagesTs only.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME, load_plans, plans_hash
from glmil_auto.paths import preprocessed_folder, resolve_dataset_name, results_folder
from glmil_auto.pretraining.plan_pretraining import plan_pretraining
from glmil_auto.pretraining.pretrainer import GLMILPretrainer, pretrained_folder
from glmil_auto.pretraining.pretraining_data import PretrainingCase, folder_cases

logger = logging.getLogger(__name__)
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def target_cases(target: str, plans_name: str, plans: dict, include_test: bool = True, fold: int | None = None,
                 progress: bool = True) -> list[PretrainingCase]:
    """The target dataset's own preprocessed cases (``Tr``, and ``Ts`` unless left out)."""
    root = preprocessed_folder() / target
    only = None
    if fold is not None:
        splits = json.loads((root / "splits_final.json").read_text())
        if not 0 <= fold < len(splits):
            raise ValueError(f"fold {fold} does not exist: {root / 'splits_final.json'} has {len(splits)} folds")
        only = set(splits[fold]["train"])
        include_test = False
    hash_ = plans_hash(plans)
    cases = folder_cases(root / plans_name / "Tr", target, "Tr", hash_, only, progress)
    if include_test and (root / plans_name / "Ts").is_dir():
        cases += folder_cases(root / plans_name / "Ts", target, "Ts", hash_, None, progress)
    return cases


def extra_cases(extra: list[str | int], target: str, plans_name: str, plans: dict, num_processes: int = 2,
                progress: bool = True) -> list[PretrainingCase]:
    """Cases of further datasets, preprocessed with the target's plans (done cases are reused)."""
    from glmil_auto.pretraining.extra_datasets import preprocess_with_target_plans

    out = []
    for dataset in extra:
        name = resolve_dataset_name(dataset)
        for folder in preprocess_with_target_plans(name, target, plans_name, num_processes, progress):
            out += folder_cases(folder, name, folder.name, plans_hash(plans), None, progress)
    return out


def default_run_name(method: str, extra: list[str | int], include_test: bool, fold: int | None) -> str:
    name = method
    if extra:
        name += "_extra-" + "-".join(resolve_dataset_name(d).split("_")[0].replace("Dataset", "") for d in extra)
    if fold is not None:
        name += f"_fold{fold}"
    elif not include_test:
        name += "_noTs"
    return name


def run_pretraining(datasets: list[str | int], unlabelled: list[str | int] | None = None,
                    plans_name: str = DEFAULT_PLANS_NAME, method: str | None = None, continue_training: bool = False,
                    device: str = "cpu", run_name: str | None = None, epochs: int | None = None,
                    fold: int | None = None, include_test: bool = True, num_processes: int = 2,
                    progress: bool = True) -> Path:
    """Pretrain both encoders for ``datasets[0]``'s plans; returns ``checkpoint_final.pt``."""
    if not datasets:
        raise ValueError("give at least one dataset (-d)")
    target = resolve_dataset_name(datasets[0])
    plans = load_plans(preprocessed_folder() / target / f"{plans_name}.json")
    extra = list(datasets[1:]) + list(unlabelled or [])
    cases = target_cases(target, plans_name, plans, include_test, fold, progress)
    cases += extra_cases(extra, target, plans_name, plans, num_processes, progress)
    settings = plan_pretraining(plans, len(cases), sum(c.n_instances for c in cases), method,
                                "cuda" if torch.device(device).type == "cuda" else "cpu", epochs)
    name = run_name or default_run_name(settings["method"], extra, include_test, fold)
    if not RUN_NAME.fullmatch(name) or "__" in name:
        raise ValueError(f"run name {name!r} may only hold letters, digits, '_', '-', '.' and '+', without '__'")
    folder = pretrained_folder(results_folder(), target, name, plans_name)
    logger.info("pretraining %s (%s) on %d cases with %d lesions: %d epochs x %d steps, %d volumes + %d lesions "
                "per step -> %s", target, settings["method"], len(cases), settings["n_lesions"],
                settings["num_epochs"], settings["iterations_per_epoch"], settings["global_batch"],
                settings["instance_batch"], folder)
    pretrainer = GLMILPretrainer(plans, plans_name, target, cases, settings, folder, device, name, fold)
    if continue_training:
        if pretrainer.resume():
            return folder / "checkpoint_final.pt"
    elif (folder / "checkpoint_final.pt").is_file() or (folder / "checkpoint_latest.pt").is_file():
        raise FileExistsError(f"{folder} holds a pretraining run already: continue it with --c, or remove it")
    return pretrainer.run(progress=progress)
