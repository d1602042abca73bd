"""glmil_pretrain end to end on a tiny cohort, the falling loss, exact resuming, the checkpoint
format, the refusal of another architecture, and fine-tuning from the pretrained encoders."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from glmil_auto.experiment_planning.plans_io import load_plans
from glmil_auto.model import build_network
from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
from glmil_auto.pretraining.entry_points import pretrain_entry
from glmil_auto.pretraining.masking import block_mask, hide
from glmil_auto.pretraining.plan_pretraining import STEP_BUDGET, plan_pretraining
from glmil_auto.model.pretrained_weights import (
    ENCODER_MODULES, PretrainedArchitectureMismatch, architecture_sha256, load_pretrained_encoders, read_pretrained,
)
from glmil_auto.pretraining.pretrainer import GLMILPretrainer
from glmil_auto.pretraining.pretraining_data import PretrainingLoader
from glmil_auto.pretraining.run_pretraining import target_cases
from glmil_auto.pretraining.views import view_transforms
from glmil_auto.synthetic import generate_synthetic_dataset
from glmil_auto.training.data_augmentation.augmentation import GaussianNoiseTransform, MirrorTransform, SpatialTransform
from glmil_auto.training.run_training import run_training
from glmil_auto.training.trainers.trainer import GLMILTrainer
from radiomic_inputs import global_channels

NAME = "Dataset001_SynthBrainMets"
EXTRA = "Dataset002_SynthExtra"


class TinyFineTuning(GLMILTrainer):
    num_epochs = 2
    iterations_per_epoch = 2
    warmup_epochs = 0
    num_augmentation_workers = 0
    explain_validation = False
    measure_memory = False
    encoder_freeze_epochs = 1


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretraining")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
        for name in ("raw", "preprocessed", "results"):
            mp.setenv(f"glmil_{name}", str(root / name))
        mp.setenv("glmil_n_proc_DA", "0")
        generate_synthetic_dataset(root / "raw", n_train=8, n_test=2, n_centres=3, size="tiny", seed=3,
                                   num_processes=2, progress=False)
        generate_synthetic_dataset(root / "raw", n_train=4, n_test=0, n_centres=3, size="tiny", seed=4,
                                   num_processes=2, dataset_id=2, dataset_name="SynthExtra", unlabelled=True,
                                   progress=False)
        plan_and_preprocess(1, num_processes=2, device=DeviceProfile("cpu", "cpu", 0.5, 2), progress=False)
        plans = load_plans(root / "preprocessed" / NAME / "plans.json")
        yield {"root": root, "plans": plans}


def pretrainer(env, folder: Path, method: str = "contrastive", epochs: int = 3, seed: int = 12345) -> GLMILPretrainer:
    cases = target_cases(NAME, "plans", env["plans"], progress=False)
    settings = plan_pretraining(env["plans"], len(cases), sum(c.n_instances for c in cases), method, epochs=epochs)
    trainer = GLMILPretrainer(env["plans"], "plans", NAME, cases, settings, folder, run_name="test")
    trainer.seed = seed
    return trainer


def test_pretraining_runs_end_to_end_with_an_unlabelled_dataset(env, capsys):
    code = pretrain_entry(["-d", "1", "--unlabelled", "2", "--epochs", "2", "--no_progress"])
    assert code == 0, capsys.readouterr().err
    folder = env["root"] / "results" / NAME / "pretrained" / "contrastive_extra-002__plans"
    final = folder / "checkpoint_final.pt"
    content = torch.load(final, weights_only=True)  # no pickled objects
    assert content["architecture_sha256"] == architecture_sha256(env["plans"])
    assert content["settings"]["method"] == "contrastive" and content["settings"]["num_epochs"] == 2
    seen = content["seen"]
    assert seen["datasets"] == [NAME, EXTRA]
    assert len(seen["cases"][NAME]["Tr"]) == 8 and len(seen["cases"][NAME]["Ts"]) == 2
    assert len(seen["cases"][EXTRA]["Tr"]) == 4 and seen["n_cases"] == 14
    assert set(k.split(".")[0] for k in content["encoders"]) == {"global_encoder", "instance_encoder"}
    assert "training_state" not in content  # the final checkpoint holds only what fine-tuning needs
    log = json.loads((folder / "pretraining_log.json").read_text())
    assert [e["epoch"] for e in log] == [0, 1] and all(np.isfinite(e["train"]["loss"]) for e in log)
    assert (folder / "progress.png").stat().st_size > 1000
    # the extra dataset was preprocessed with the target's plans, in its own preprocessed folder
    assert (env["root"] / "preprocessed" / EXTRA / f"{NAME}__plans" / "Tr").is_dir()
    # a second run without --c refuses to overwrite; with --c it has nothing to do
    assert pretrain_entry(["-d", "1", "--unlabelled", "2", "--epochs", "2", "--no_progress"]) == 1
    assert "--c" in capsys.readouterr().err
    assert pretrain_entry(["-d", "1", "--unlabelled", "2", "--epochs", "2", "--no_progress", "--c"]) == 0


@pytest.mark.parametrize("method", ["contrastive", "masked"])
def test_the_loss_falls(env, tmp_path, method):
    trainer = pretrainer(env, tmp_path / method, method, epochs=8)
    trainer.run(progress=False)
    losses = [e["train"]["loss"] for e in trainer.log]
    assert np.mean(losses[-2:]) < 0.85 * np.mean(losses[:2]), losses


def test_resume_continues_exactly(env, tmp_path):
    whole = pretrainer(env, tmp_path / "whole", epochs=2)
    whole.run(progress=False)
    first = pretrainer(env, tmp_path / "split", epochs=2)
    assert first.run(until_epoch=1, progress=False).name == "checkpoint_latest.pt"
    assert not (tmp_path / "split" / "checkpoint_final.pt").exists()
    second = pretrainer(env, tmp_path / "split", epochs=2)  # a new process, as after a kill
    assert second.resume() is False and second.current_epoch == 1
    second.run(progress=False)
    a = read_pretrained(tmp_path / "whole" / "checkpoint_final.pt")["encoders"]
    b = read_pretrained(tmp_path / "split" / "checkpoint_final.pt")["encoders"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [e["train"] for e in whole.log] == [e["train"] for e in second.log]
    # other settings than the interrupted run's are refused
    other = pretrainer(env, tmp_path / "split", epochs=3)
    (tmp_path / "split" / "checkpoint_final.pt").unlink()
    with pytest.raises(ValueError, match="other settings"):
        other.resume()


@pytest.fixture(scope="module")
def checkpoint(env, tmp_path_factory) -> Path:
    trainer = pretrainer(env, tmp_path_factory.mktemp("ckpt") / "contrastive__plans", epochs=1)
    return trainer.run(progress=False)


def test_another_architecture_is_refused_in_one_line(env, checkpoint):
    plans = copy.deepcopy(env["plans"])
    plans["model"]["local_encoder"]["arch_kwargs"]["features_per_stage"] = [4, 8, 16]
    network = build_network(plans)
    with pytest.raises(PretrainedArchitectureMismatch) as caught:
        load_pretrained_encoders(network, checkpoint, plans)
    message = str(caught.value)
    assert "\n" not in message and "model.local_encoder.arch_kwargs.features_per_stage" in message
    assert "[4, 8, 16]" in message
    plans = copy.deepcopy(env["plans"])
    plans["preprocessing"]["local"]["patch_size"] = [12, 12, 12]  # same shapes of weights, other inputs
    with pytest.raises(PretrainedArchitectureMismatch, match="local.patch_size"):
        load_pretrained_encoders(build_network(plans), checkpoint, plans)


def test_fine_tuning_starts_from_the_pretrained_encoders(env, checkpoint):
    record = read_pretrained(checkpoint)
    reference = build_network(env["plans"])
    reference.load_state_dict({**reference.state_dict(), **record["encoders"]})
    reference.eval()
    trainer_class = type("TinyFineTuning", (TinyFineTuning,), {"pretrained_weights": str(checkpoint)})
    trainer = trainer_class(1, 0)
    trainer.initialize()
    network = trainer.network.eval()
    torch.manual_seed(0)
    volume = torch.randn(2, *reference_shape(env["plans"], "global"))
    patches = torch.randn(1, 3, *reference_shape(env["plans"], "local"))
    patches[..., -1, :, :, :] = (patches[..., -1, :, :, :] > 0).float()
    descriptors, mask = torch.randn(1, 3, 5), torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(network.global_encoder(volume), reference.global_encoder(volume))
        assert torch.equal(network.instance_encoder(patches, descriptors, mask),
                           reference.instance_encoder(patches, descriptors, mask))
    assert trainer.pretrained_record["sha256"] and trainer.pretrained_record["run"] == "test"


def test_the_encoders_train_at_a_tenth_of_the_rate_after_the_freeze(env, checkpoint):
    """Two parameter groups: the encoders' learning rate is 0 inside the freeze, then
    ``encoder_lr_factor`` (default 0.1, chosen in documentation/pretraining.md) times the rest's."""
    trainer = type("TinyFineTuning", (TinyFineTuning,), {"pretrained_weights": str(checkpoint), "num_epochs": 4})(1, 0)
    trainer.initialize()
    assert GLMILTrainer.encoder_lr_factor == 0.1 and trainer.encoder_lr_factor == 0.1
    rest, encoders = trainer.optimizer.param_groups
    encoder_ids = {id(p) for n, p in trainer.network.named_parameters() if n.split(".")[0] in ENCODER_MODULES}
    assert {id(p) for p in encoders["params"]} == encoder_ids and encoder_ids.isdisjoint(id(p) for p in rest["params"])
    for epoch in range(trainer.num_epochs):
        rest_lr, encoder_lr = (trainer.initial_lr * f(epoch) for f in trainer.scheduler.lr_lambdas)
        assert encoder_lr == (0.0 if epoch < trainer.encoder_freeze_epochs else pytest.approx(0.1 * rest_lr))
    assert rest["lr"] > 0 and encoders["lr"] == 0.0  # epoch 0: frozen


def reference_shape(plans: dict, which: str) -> tuple[int, ...]:
    pre = plans["preprocessing"]
    channels = plans["num_input_channels"]
    if which == "global":
        return (global_channels(plans), *pre["global"]["input_shape"])
    return (len(pre["local"]["scales"]), channels, *pre["local"]["patch_size"])


def test_glmil_train_pretrained_weights_freezes_then_records_the_source(env, checkpoint):
    # the last epoch's weights (not the selected starting point), to see what one frozen epoch changed
    trainer_class = type("TinyFineTuning", (TinyFineTuning,), {"num_epochs": 1, "select_best_checkpoint": False})
    import glmil_auto.training.trainers.trainer_registry as registry

    original = registry.find_trainer
    registry_calls = []

    def find(name):
        registry_calls.append(name)
        return trainer_class if name == "TinyFineTuning" else original(name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("glmil_auto.training.run_training.find_trainer", find)
        trainer = run_training(1, 0, "TinyFineTuning", overrides={"pretrained_weights": str(checkpoint)})
    assert registry_calls == ["TinyFineTuning"]
    folder = trainer.output_folder
    assert folder.parent.name == "TinyFineTuning_pretrained-test__plans"
    debug = json.loads((folder / "debug.json").read_text())
    assert debug["pretrained_weights"]["path"] == str(Path(checkpoint).resolve())
    assert debug["encoder_freeze_epochs"] == 1
    assert json.loads((folder.parent / "pretrained_weights.json").read_text())["sha256"] == debug["pretrained_weights"]["sha256"]
    # one epoch inside the freeze: the encoders are still the checkpoint's, the rest has trained
    weights = read_pretrained(checkpoint)["encoders"]
    state = trainer.network.state_dict()
    assert all(torch.equal(state[k].cpu(), weights[k]) for k in weights)
    torch.manual_seed(trainer.seed)
    untrained = build_network(env["plans"]).state_dict()
    experts = [k for k in state if k.startswith("experts.")]
    assert experts and any(not torch.equal(state[k].cpu(), untrained[k]) for k in experts)


def test_views_keep_only_outcome_preserving_transforms(env):
    kept = [t for t in view_transforms(env["plans"]).transforms
            if getattr(t, "p_per_sample", 1.0) > 0 and not (isinstance(t, SpatialTransform) and t.p_rotation == 0)]
    names = {type(t).__name__ for t in kept}
    assert names <= {"InstanceDropoutTransform", "SpatialTransform", "GaussianNoiseTransform", "MirrorTransform",
                     "ContiguousArraysTransform"}, names
    assert all(t.p_scale == 0 for t in kept if isinstance(t, SpatialTransform))
    assert any(isinstance(t, GaussianNoiseTransform) for t in kept) and any(isinstance(t, MirrorTransform) for t in kept)
    dropout = [t for t in kept if type(t).__name__ == "InstanceDropoutTransform"]
    assert all(t.p == 0 for t in dropout)


def test_loader_draws_reproducible_batches_without_repeats(env):
    cases = target_cases(NAME, "plans", env["plans"], progress=False)
    pre = env["plans"]["preprocessing"]
    shapes = (global_channels(env["plans"]), *pre["global"]["input_shape"]), \
        (len(pre["local"]["scales"]), env["plans"]["num_input_channels"], *pre["local"]["patch_size"])
    a = PretrainingLoader(cases, 4, 6, *shapes, seed=5)
    b = PretrainingLoader(cases, 4, 6, *shapes, seed=5)
    first, second = next(a), next(b)
    assert first["case_ids"] == second["case_ids"] and len(set(first["case_ids"])) == 4
    assert np.array_equal(first["instances"], second["instances"])
    assert first["global"].shape == (4, *shapes[0]) and first["instances"].shape == (1, 6, *shapes[1])
    assert first["instance_mask"].all() and first["instance_descriptors"].shape == (1, 6, 5)
    later = [next(a)["case_ids"] for _ in range(3)]
    assert any(ids != first["case_ids"] for ids in later)


def test_plan_scales_with_the_device_and_the_data(env):
    cpu = plan_pretraining(env["plans"], 650, 1800, device_kind="cpu")
    gpu = plan_pretraining(env["plans"], 650, 1800, device_kind="cuda")
    assert cpu["method"] == "contrastive"
    steps = cpu["num_epochs"] * cpu["iterations_per_epoch"]
    assert abs(steps - STEP_BUDGET["cpu"]) <= cpu["iterations_per_epoch"]
    assert gpu["num_epochs"] > cpu["num_epochs"]
    assert cpu["global_batch"] >= 4 and cpu["instance_batch"] >= 8
    small = plan_pretraining(env["plans"], 3, 1, device_kind="cpu")
    assert small["global_batch"] == 3 and small["instance_batch"] == 0  # one lesion: no negative
    masked = plan_pretraining(env["plans"], 10, 20, method="masked")
    assert masked["mask_ratio"] == 0.5 and len(masked["global_block"]) == 3
    with pytest.raises(ValueError, match="method"):
        plan_pretraining(env["plans"], 10, 20, method="jigsaw")


def test_block_mask_hides_the_planned_share_and_keeps_the_lesion_mask():
    generator = torch.Generator().manual_seed(0)
    hidden = block_mask(3, (16, 16, 16), (4, 4, 4), 0.5, generator)
    assert hidden.shape == (3, 1, 16, 16, 16)
    assert torch.allclose(hidden.float().mean(dim=(1, 2, 3, 4)), torch.full((3,), 0.5))
    volumes = torch.randn(3, 3, 16, 16, 16)
    shown = hide(volumes, hidden)
    assert torch.equal(shown[:, -1], volumes[:, -1])
    assert (shown[:, :-1][hidden.expand(-1, 2, -1, -1, -1)] == 0).all()
    assert torch.equal(shown[:, :-1][~hidden.expand(-1, 2, -1, -1, -1)], volumes[:, :-1][~hidden.expand(-1, 2, -1, -1, -1)])


def test_strict_setting_sees_only_the_folds_training_cases_and_fits_only_that_fold(env):
    from glmil_auto.training.dataloading.splits import load_or_create_splits

    preprocessed = env["root"] / "preprocessed" / NAME
    if not (preprocessed / "splits_final.json").is_file():
        from glmil_auto.dataset.clinical_table import read_clinical_table
        from glmil_auto.dataset.dataset_json import load_dataset_json

        spec = load_dataset_json(preprocessed)
        load_or_create_splits(preprocessed, read_clinical_table(preprocessed / "clinicalTr.csv", spec), spec)
    splits = json.loads((preprocessed / "splits_final.json").read_text())
    assert pretrain_entry(["-d", "1", "--fold", "0", "--epochs", "1", "--no_progress"]) == 0
    path = env["root"] / "results" / NAME / "pretrained" / "contrastive_fold0__plans" / "checkpoint_final.pt"
    content = read_pretrained(path)
    assert content["fold"] == 0
    assert content["seen"]["cases"] == {NAME: {"Tr": sorted(splits[0]["train"])}}  # no validation case, no imagesTs
    from glmil_auto.training.run_training import pretrained_suffix

    assert pretrained_suffix(path) == "pretrained-contrastive_foldwise"
    other_fold = type("Strict", (TinyFineTuning,), {"pretrained_weights": str(path)})(1, 1)
    with pytest.raises(ValueError, match="fold 0's training cases only"):
        other_fold.initialize()
