"""Frozen embeddings (glmil_auto.pretraining.embeddings) on a tiny preprocessed synthetic cohort,
and benchmarks/pretraining_probes.py end to end with a hand-made pretrained checkpoint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from glmil_auto.preprocessing.plan_and_preprocess import plan_and_preprocess
from glmil_auto.preprocessing.storage import load_array, load_properties
from glmil_auto.pretraining.embeddings import global_embeddings, lesion_embeddings, probe_network
from glmil_auto.model.pretrained_weights import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    architecture_block,
    architecture_sha256,
    encoder_state,
)
from glmil_auto.synthetic import generate_synthetic_dataset
from glmil_auto.training.dataloading.bag_collation import collate_bags, instance_descriptors
from torch_threads import one_thread

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pretraining_probes.py"
NAME = "Dataset001_SynthBrainMets"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("probes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
        for name in ("raw", "preprocessed", "results"):
            mp.setenv(f"glmil_{name}", str(root / name))
        generate_synthetic_dataset(root / "raw", n_train=10, n_test=6, n_centres=3, size=4.0, seed=5,
                                   num_processes=1, progress=False)
        plans = plan_and_preprocess(1, num_processes=1, device=DeviceProfile("cpu", "cpu", 2.0, 2), progress=False)
    folder = root / "preprocessed" / NAME / "plans" / "Tr"
    cases = sorted(p.stem for p in folder.glob("*.json"))
    return {"root": root, "plans": plans, "folder": folder, "cases": cases}


def test_embeddings_have_one_row_per_kept_lesion_and_ignore_their_batch(data):
    plans, folder, cases = data["plans"], data["folder"], data["cases"]
    network, record = probe_network(plans, seed=0)
    assert record is None
    width = plans["training"]["trainer_defaults"]["embedding_dim"]
    with one_thread():
        frame, x = lesion_embeddings(network, folder, cases, batch_lesions=5)  # batches straddle cases
        single_frame, single = lesion_embeddings(network, folder, cases, batch_lesions=1)
        ids, g = global_embeddings(network, folder, cases, batch=3)
    kept = [(c, lesion["label"], lesion["instance_index"]) for c in cases
            for lesion in sorted((l for l in load_properties(folder, c)["lesions"] if l.get("kept")),
                                 key=lambda l: l["instance_index"])]
    assert len(kept) > len(cases)  # some case holds several lesions
    assert list(frame.columns) == ["case_id", "label", "instance_index"]
    assert list(frame.itertuples(index=False, name=None)) == kept
    assert x.shape == (len(kept), width) and x.dtype == np.float32 and np.isfinite(x).all()
    assert ids == cases and g.shape == (len(cases), width) and np.isfinite(g).all()
    # a lesion embedded alone, within batches of other cases' lesions, or in its padded case bag:
    # the same embedding
    assert single_frame.equals(frame)
    np.testing.assert_allclose(single, x, rtol=1e-4, atol=1e-5)
    rich = max(cases, key=lambda c: (frame["case_id"] == c).sum())
    bags = [load_array(folder, c, "local") for c in (rich, cases[0])]
    batch = collate_bags([load_array(folder, c, "global") for c in (rich, cases[0])], bags,
                         [instance_descriptors(load_properties(folder, c), c) for c in (rich, cases[0])])
    with torch.no_grad():
        bagged = network.eval().instance_encoder(torch.from_numpy(batch["instances"]),
                                                 torch.from_numpy(batch["instance_descriptors"]),
                                                 torch.from_numpy(batch["instance_mask"]))
        whole = network.global_encoder(torch.from_numpy(batch["global"][:1]))
    for row, (c, n) in enumerate(((rich, len(bags[0])), (cases[0], len(bags[1])))):
        np.testing.assert_allclose(bagged[row, :n].numpy(), x[(frame["case_id"] == c).to_numpy()], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(whole.numpy()[0], g[cases.index(rich)], rtol=1e-4, atol=1e-5)
    # random initialisation is seeded; another seed is another network
    other, _ = probe_network(plans, seed=0)
    with one_thread():
        np.testing.assert_allclose(lesion_embeddings(other, folder, cases[:2])[1], x[frame["case_id"].isin(cases[:2])],
                                   rtol=1e-4, atol=1e-5)
        assert not np.allclose(lesion_embeddings(probe_network(plans, seed=1)[0], folder, cases[:2])[1],
                               x[frame["case_id"].isin(cases[:2])])


def hand_made_checkpoint(plans: dict[str, Any], path: Path, seed: int) -> Path:
    """A checkpoint in glmil_pretrain's format whose encoders are a random network of ``seed``."""
    torch.manual_seed(seed)
    network, _ = probe_network(plans, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "encoders": encoder_state(network),
                "architecture": architecture_block(plans), "architecture_sha256": architecture_sha256(plans),
                "plans_name": "plans", "dataset": NAME, "run": "test", "settings": {"method": "contrastive"},
                "seen": {"datasets": [NAME], "n_cases": 16}}, path)
    return path


def test_benchmark_runs_with_a_hand_made_checkpoint(data, monkeypatch, capsys):
    root = data["root"]
    for name in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"glmil_{name}", str(root / name))
    checkpoint = hand_made_checkpoint(data["plans"], root / "pretrained" / "test__plans" / "checkpoint_final.pt", 7)
    spec = importlib.util.spec_from_file_location("pretraining_probes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with one_thread():
        results = module.main(["--dataset", "1", "--checkpoint", f"seed7={checkpoint}", "--n-splits", "3",
                               "--bootstrap", "40", "--json", str(root / "probes.json"), "--doc", str(root / "probes.md")])
    assert results["networks"]["seed7"]["checkpoint"]["run"] == "test"
    assert results["networks"]["random init"]["n_cases"] == 16
    counts = results["lesion_counts"]
    assert counts["unmatched"] == 0 and counts["kept"] == results["networks"]["random init"]["n_lesions_probed"]
    comparison = results["comparisons"]["seed7"]
    assert set(comparison) == {"heterogeneity", "necrosis", "n_micro_lesions"}
    assert comparison["n_micro_lesions"]["n"] == 16 and comparison["heterogeneity"]["n"] == counts["kept"]
    printed = capsys.readouterr().out
    assert "| necrosis (AUC) |" in printed and "### seed7 against random initialisation" in printed
    assert "wall time" in printed
    assert json.loads((root / "probes.json").read_text())["comparisons"].keys() == {"random init", "seed7"}
    assert "| heterogeneity (R²) |" in (root / "probes.md").read_text()
