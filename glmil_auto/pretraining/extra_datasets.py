"""Extra datasets for self-supervised pretraining, preprocessed with the TARGET dataset's plans.

Pretraining may use any scans the user has, including datasets without outcomes (a converted
UCSF-BMSR or BraTS-METS, ``glmil_generate_synthetic --unlabelled``). Such a dataset only has to
pass the verifier; it declares no endpoints and may have no clinical table. What the pretrained
encoders learn is only useful to the target model if they saw the inputs it will see: the same
channels in the same order, normalised the same way, resampled to the same spacings, with global
volumes and lesion patches of the same shapes. So the extra dataset is not planned on its own:
the target's plans are copied into the extra dataset's preprocessed folder under the name
``<TargetDataset>__<plans_name>`` (nnU-Net moves plans between datasets the same way,
``nnUNetv2_move_plans_between_datasets``) and the ordinary preprocessor runs with them, so the
preprocessed cases carry the target's plans hash and resume like any other preprocessing.

The extra dataset's outcomes, if it has any, are not used: its lesion tables are not read and
no lesion outcome is stored (its clinical rows are only hashed, to notice edited inputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glmil_auto.dataset import layout
from glmil_auto.dataset.dataset_json import DATASET_JSON, DatasetSpec, load_dataset_json
from glmil_auto.dataset.problems import DatasetError, error
from glmil_auto.dataset.verify import verify_dataset
from glmil_auto.experiment_planning.plans_io import DEFAULT_PLANS_NAME, load_plans, plans_file, save_plans
from glmil_auto.paths import preprocessed_folder, raw_folder, resolve_dataset_name
from glmil_auto.preprocessing.dataset_preprocessor import DatasetPreprocessor, preprocessed_case_folder

PLANS_SEPARATOR = "__"


def target_plans_name(target_dataset_name: str, plans_name: str) -> str:
    """The name the target's plans get in an extra dataset's preprocessed folder,
    ``Dataset010_SynthAccuracy__plans``: it names where the plans come from, so that two targets'
    plans (and their preprocessed cases) can live side by side in one extra dataset."""
    return f"{target_dataset_name}{PLANS_SEPARATOR}{plans_name}"


def channel_list(channel_names: dict[Any, str]) -> list[str]:
    """Channel names in channel-index order (keys may be ints or the strings of dataset.json/plans)."""
    return [name for _, name in sorted(channel_names.items(), key=lambda item: int(item[0]))]


def check_channels(extra: str, extra_channels: list[str], target: str, target_channels: list[str]) -> None:
    """The extra dataset must have the target plans' channels, same names in the same order: the
    plans normalise channel ``i`` by its own scheme and the encoders' first layer expects it."""
    if extra_channels != target_channels:
        raise ValueError(
            f"cannot preprocess {extra} with the plans of {target}: its channels {extra_channels} differ from the "
            f"plans' channels {target_channels} (same names in the same order are needed; rename or reorder "
            f"the channels of {extra} in its dataset.json and image files)"
        )


def _target_spec(target: str) -> DatasetSpec | None:
    """The target's dataset.json: the copy preprocessing keeps beside the plans, else the raw one
    (None when neither exists, for example when only the plans were copied to this machine)."""
    for folder in (preprocessed_folder() / target, raw_folder() / target):
        if (folder / DATASET_JSON).is_file():
            return load_dataset_json(folder)
    return None


def check_lesion_convention(extra: str, extra_spec: DatasetSpec, target: str, target_spec: DatasetSpec | None) -> None:
    """The extra dataset's lesion mask must mean what the target's does: the lesion.

    Preprocessing turns each dataset's mask into the union of its own ``lesion_labels``, so two
    datasets with different label maps (``{"metastasis": 1}`` and BraTS-METS' necrosis / oedema /
    enhancing) are compatible as long as each says which labels are lesion. What is refused is an
    extra dataset with several non-zero labels and no ``lesion_labels`` (the default, every
    non-zero label, would make oedema part of the lesion), unless its labels and lesion labels are
    exactly the target's.
    """
    if target_spec is not None and (extra_spec.labels, extra_spec.lesion_labels) == (
            target_spec.labels, target_spec.lesion_labels):
        return
    non_zero = {name: value for name, value in extra_spec.labels.items() if value != 0}
    if "lesion_labels" in extra_spec.raw or len(non_zero) <= 1:
        return
    target_text = ("" if target_spec is None else
                   f"; {target} counts labels {list(target_spec.lesion_labels)} of {target_spec.labels} as lesion")
    raise ValueError(
        f"cannot preprocess {extra} with the plans of {target}: its lesion mask is ambiguous: 'labels' "
        f"{extra_spec.labels} has {len(non_zero)} non-zero labels and dataset.json declares no 'lesion_labels', so "
        f"every non-zero label (oedema too) would count as lesion{target_text}; declare 'lesion_labels' in "
        f"{extra}'s dataset.json (for example [1, 3] for BraTS-METS necrosis + enhancing)"
    )


def preprocess_with_target_plans(
    extra: str | int,
    target: str | int,
    plans_name: str = DEFAULT_PLANS_NAME,
    num_processes: int = 2,
    progress: bool = True,
) -> list[Path]:
    """Preprocess the raw dataset ``extra`` with the plans ``plans_name`` of the dataset ``target``.

    Steps: verify ``extra`` (a :class:`DatasetError` naming it and listing every error; warnings
    do not block); check its channels against the plans' (``ValueError`` naming both lists) and its
    lesion mask convention (:func:`check_lesion_convention`); copy the target plans to
    ``<glmil_preprocessed>/<Extra>/<target_plans_name>.json``; run the ordinary
    :class:`DatasetPreprocessor` on imagesTr and imagesTs. Resumable as that is: a case already
    done with these plans and unchanged inputs is skipped. Returns the preprocessed case folders
    that exist, ``<glmil_preprocessed>/<Extra>/<target_plans_name>/Tr`` (and ``/Ts``).
    """
    extra_name = resolve_dataset_name(extra, [raw_folder()])
    target_name = resolve_dataset_name(target, [preprocessed_folder()])
    if extra_name == target_name:
        raise ValueError(f"{extra_name} is the target itself: preprocess it with glmil_plan_and_preprocess")
    source = plans_file(target_name, plans_name)
    if not source.is_file():
        raise FileNotFoundError(f"plans file {source} of {target_name} does not exist: run glmil_plan_and_preprocess "
                                f"-d {target_name} first")
    plans = load_plans(source)

    extra_folder = raw_folder() / extra_name
    try:  # the cheap checks first, before every image is read
        extra_spec: DatasetSpec | None = load_dataset_json(extra_folder)
    except DatasetError:
        extra_spec = None  # the verifier reports it, with every other problem
    if extra_spec is not None:
        check_channels(extra_name, channel_list(extra_spec.channel_names), target_name,
                       channel_list(plans["channel_names"]))
        check_lesion_convention(extra_name, extra_spec, target_name, _target_spec(target_name))
    report = verify_dataset(extra_folder, num_processes=num_processes, progress=progress)
    if not report.ok:
        raise DatasetError([error(f"{extra_name} does not pass glmil_verify_dataset; fix it before preprocessing it "
                                  f"with the plans of {target_name}", file=str(extra_folder)), *report.errors])

    name = target_plans_name(target_name, plans_name)
    save_plans(plans, plans_file(extra_name, name))  # the target's plans unchanged: same plans hash
    preprocessor = DatasetPreprocessor(extra_folder, plans_name=name, num_processes=num_processes,
                                       lesion_outcomes=False)
    preprocessor.run(progress=progress)
    folders = [preprocessed_case_folder(extra_name, name, split) for split in layout.SPLITS]
    return [folder for folder in folders if folder.is_dir()]
