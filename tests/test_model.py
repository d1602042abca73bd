"""The GL-MIL MoE network built from the synthetic cohort's plans: shapes and invariances."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glmil_auto.dataset import RawDataset
from glmil_auto.experiment_planning.device_profile import DeviceProfile
from glmil_auto.experiment_planning.fingerprint.extractor import DatasetFingerprintExtractor
from glmil_auto.experiment_planning.plan_experiment import plan_experiment
from glmil_auto.model import ABLATIONS, build_network
from radiomic_inputs import add_radiomic_inputs, global_channels
from glmil_auto.model.clinical_encoder import ClinicalEncoder, encode_clinical_table
from glmil_auto.model.instance_encoder import NUM_DESCRIPTORS
from glmil_auto.model.mil_pooling import GatedAttentionPooling, masked_softmax
from glmil_auto.model.mixture_of_experts import MultiGateMixtureOfExperts, load_balancing_loss
from glmil_auto.synthetic import generate_synthetic_dataset

CPU = DeviceProfile("cpu", "cpu", 2.0, 2)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """The plans, dataset.json and clinical table of a tiny synthetic cohort."""
    root = tmp_path_factory.mktemp("model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("glmil_raw", str(root / "raw"))
        mp.setenv("glmil_preprocessed", str(root / "preprocessed"))
        mp.setattr(DatasetFingerprintExtractor, "total_foreground_samples", 2e5)
        folder = generate_synthetic_dataset(root / "raw", n_train=6, n_test=0, size=4.0, seed=2, num_processes=1,
                                            progress=False)
        DatasetFingerprintExtractor(folder, num_processes=1, progress=False).run()
        plans, _ = plan_experiment(1, device=CPU)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    return plans, dataset_json, RawDataset(folder).clinical_table("Tr")


def make_batch(plans, clinical_table, bag_sizes=(3, 1, 0), n_max=None, seed=0):
    """A batch with bags of the given sizes padded to ``n_max`` (padding filled with noise on purpose)."""
    g = torch.Generator().manual_seed(seed)
    local = plans["preprocessing"]["local"]
    b, n = len(bag_sizes), n_max or max(max(bag_sizes), 1)
    channels = plans["num_input_channels"]
    values, categories = encode_clinical_table(clinical_table.iloc[:b], plans["clinical"]["features"])
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i, size in enumerate(bag_sizes):
        mask[i, :size] = True
    return add_radiomic_inputs({
        "global": torch.randn(b, global_channels(plans), *plans["preprocessing"]["global"]["input_shape"], generator=g),
        "instances": torch.randn(b, n, len(local["scales"]), channels, *local["patch_size"], generator=g),
        "instance_mask": mask,
        "instance_descriptors": torch.randn(b, n, NUM_DESCRIPTORS, generator=g),
        "clinical_values": torch.tensor(values, dtype=torch.float32),
        "clinical_categories": torch.tensor(categories),
    }, plans, g)


def outputs_equal(a, b, atol=1e-5):
    for name in a.logits:
        torch.testing.assert_close(a.logits[name], b.logits[name], atol=atol, rtol=1e-4)
    for name in a.log_risks:
        torch.testing.assert_close(a.log_risks[name], b.log_risks[name], atol=atol, rtol=1e-4)
    for name in a.gate_weights:
        torch.testing.assert_close(a.gate_weights[name], b.gate_weights[name], atol=atol, rtol=1e-4)


def network(plans, dataset_json, mode="full", seed=0, **kw):
    torch.manual_seed(seed)
    return build_network(plans, dataset_json, mode=mode, **kw).eval()


def test_output_shapes_for_the_synthetic_plans(planned):
    plans, dataset_json, table = planned
    net = network(plans, dataset_json)
    batch = make_batch(plans, table, bag_sizes=(3, 1, 0))
    out = net(batch)
    assert set(out.logits) == {"local_failure", "distant_failure", "leptomeningeal_failure"}
    assert set(out.log_risks) == {"os"}
    assert all(v.shape == (3,) and torch.isfinite(v).all() for v in [*out.logits.values(), *out.log_risks.values()])
    for name, weights in out.attention.items():
        assert weights.shape == (3, 3)
        torch.testing.assert_close(weights[:2].sum(dim=1), torch.ones(2))  # real bags: weights sum to 1
        assert torch.all(weights[1, 1:] == 0) and torch.all(weights[2] == 0)  # padding and the empty bag: 0
    gates = out.gate_weights["os"]
    assert gates.shape == (3, plans["training"]["trainer_defaults"]["num_experts"])
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(3))
    assert out.aux_loss.ndim == 0 and out.aux_loss >= 0


def test_bag_permutation_invariance(planned):
    plans, dataset_json, table = planned
    net = network(plans, dataset_json)
    batch = make_batch(plans, table, bag_sizes=(4, 2), n_max=4)
    permuted = dict(batch)
    order = torch.tensor([2, 0, 3, 1])
    permuted["instances"] = batch["instances"][0:1, order]
    permuted["instance_descriptors"] = batch["instance_descriptors"][0:1, order]
    permuted["instance_mask"] = batch["instance_mask"][0:1, order]
    if "instance_features" in batch:
        permuted["instance_features"] = batch["instance_features"][0:1, order]
    for key in ("global", "clinical_values", "clinical_categories", "case_features", "foci_responses"):
        if key in batch:
            permuted[key] = batch[key][0:1]
    single = {k: v[0:1] for k, v in batch.items()}
    with torch.no_grad():
        a, b = net(single), net(permuted)
    outputs_equal(a, b)
    for name in a.attention:  # the weights move with their instances
        torch.testing.assert_close(b.attention[name][0], a.attention[name][0][order], atol=1e-6, rtol=1e-5)
    for name in a.instance_logits:  # and so do the lesion scores of any_lesion endpoints
        torch.testing.assert_close(b.instance_logits[name][0], a.instance_logits[name][0][order], atol=1e-5, rtol=1e-5)


def test_padding_invariance(planned):
    plans, dataset_json, table = planned
    net = network(plans, dataset_json)
    batch = make_batch(plans, table, bag_sizes=(2, 1, 0), n_max=2, seed=3)
    padded = dict(batch)
    extra = 5
    noise = torch.randn(3, extra, *batch["instances"].shape[2:]) * 50  # whatever padding holds is ignored
    padded["instances"] = torch.cat([batch["instances"], noise], dim=1)
    padded["instance_descriptors"] = torch.cat([batch["instance_descriptors"], torch.randn(3, extra, NUM_DESCRIPTORS) * 50], dim=1)
    padded["instance_mask"] = torch.cat([batch["instance_mask"], torch.zeros(3, extra, dtype=torch.bool)], dim=1)
    if "instance_features" in batch:
        noise_features = torch.randn(3, extra, batch["instance_features"].shape[-1]) * 50
        padded["instance_features"] = torch.cat([batch["instance_features"], noise_features], dim=1)
    with torch.no_grad():
        a, b = net(batch), net(padded)
    outputs_equal(a, b)
    for name in a.attention:
        torch.testing.assert_close(b.attention[name][:, :2], a.attention[name])
        assert torch.all(b.attention[name][:, 2:] == 0)


def test_empty_bags_use_the_learned_no_lesion_embedding():
    pooling = GatedAttentionPooling(dim=8, hidden=4, n_branches=2)
    instances = torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    pooled, attention = pooling(instances, mask)
    assert torch.isfinite(pooled).all() and torch.all(attention[1] == 0)
    torch.testing.assert_close(pooled[1], pooling.no_lesion.detach())
    assert torch.equal(masked_softmax(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.bool)), torch.zeros(2, 3))


def test_missing_clinical_values_are_indicated_not_zeroed():
    features = [{"name": "age", "type": "numeric", "mean": 60.0, "std": 10.0},
                {"name": "ecd", "type": "binary"},
                {"name": "primary", "type": "categorical", "categories": ["breast", "lung"]}]
    encoder = ClinicalEncoder(features, embedding_dim=4)
    values = torch.tensor([[70.0, 1.0], [float("nan"), float("nan")], [60.0, 0.0]])
    categories = torch.tensor([[1], [-1], [7]])  # lung, missing, unseen
    x = encoder.encode_inputs(values, categories)
    assert torch.isfinite(x).all()
    torch.testing.assert_close(x[0], torch.tensor([1.0, 1.0, 0, 0, 0, 1, 0]))
    torch.testing.assert_close(x[1], torch.tensor([0.0, 0.0, 1, 1, 0, 0, 1]))  # missing: value 0 with indicator 1
    torch.testing.assert_close(x[2], torch.tensor([0.0, 0.0, 0, 0, 0, 0, 1]))  # a true 0 has indicator 0
    assert not torch.equal(encoder(values, categories)[1], encoder(torch.zeros(1, 2), torch.tensor([[2]]))[0])
    encoder.fit(np.array([[50.0, 1], [70.0, 0], [np.nan, 1]]))
    assert encoder.mean[0] == 60.0 and encoder.std[0] == 10.0
    assert "mean" in encoder.state_dict() and "std" in encoder.state_dict()  # travels in the checkpoint


def test_a_category_absent_from_the_folds_training_cases_is_encoded_as_unseen():
    features = [{"name": "primary", "type": "categorical", "categories": ["breast", "lung", "renal"]},
                {"name": "site", "type": "categorical", "categories": ["A"]}]
    encoder = ClinicalEncoder(features, embedding_dim=4)
    values = np.zeros((3, 0))
    encoder.fit(values, np.array([[0, 0], [1, 0], [-1, 0]]))  # no renal among this fold's training cases
    assert encoder.category_seen.tolist() == [True, True, False, True]
    assert "category_seen" in encoder.state_dict()  # travels in the checkpoint
    x = encoder.encode_inputs(torch.zeros(4, 0), torch.tensor([[0, 0], [2, 0], [-1, 0], [5, -1]]))
    torch.testing.assert_close(x[0], torch.tensor([1.0, 0, 0, 0, 1, 0]))
    torch.testing.assert_close(x[1], x[2])  # renal = missing/unseen in this fold
    torch.testing.assert_close(x[1], torch.tensor([0.0, 0, 0, 1, 1, 0]))
    torch.testing.assert_close(x[3], torch.tensor([0.0, 0, 0, 1, 0, 1]))


def test_missing_clinical_values_through_the_network(planned):
    plans, dataset_json, table = planned
    net = network(plans, dataset_json)
    batch = make_batch(plans, table)
    batch["clinical_values"][:] = float("nan")
    batch["clinical_categories"][:] = -1
    out = net(batch)
    assert all(torch.isfinite(v).all() for v in [*out.logits.values(), *out.log_risks.values()])


def test_encode_clinical_table_matches_the_table(planned):
    plans, _, table = planned
    values, categories = encode_clinical_table(table, plans["clinical"]["features"])
    names = [f["name"] for f in plans["clinical"]["features"] if f["type"] != "categorical"]
    np.testing.assert_array_equal(values, table[names].to_numpy(dtype=float))
    vocabulary = next(f["categories"] for f in plans["clinical"]["features"] if f["name"] == "primary")
    assert [vocabulary[i] for i in categories[:, 0]] == list(table["primary"])


@pytest.mark.parametrize("mode", ABLATIONS)
def test_every_parameter_gets_a_gradient_and_each_ablation_runs(planned, mode):
    plans, dataset_json, table = planned
    net = network(plans, dataset_json, mode=mode, noisy_gating=mode == "full").train()
    for linear in net.heads.linears:  # the heads start at zero (below), which blocks every other gradient
        torch.nn.init.normal_(linear.weight, std=0.05)
    batch = make_batch(plans, table, bag_sizes=(3, 2, 0))
    batch["clinical_values"][1, 0] = float("nan")
    out = net(batch)
    loss = out.aux_loss + sum(torch.nn.functional.binary_cross_entropy_with_logits(v, torch.ones_like(v))
                              for v in out.logits.values()) + sum(v.square().mean() for v in out.log_risks.values())
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    if mode in ("global_only", "clinical_only"):
        assert out.attention == {}
    if mode in ("concat", "clinical_only"):
        assert out.gate_weights == {} and out.aux_loss == 0


def test_load_balancing_loss():
    balanced = torch.full((8, 2, 4), 0.25)
    assert load_balancing_loss(balanced) == pytest.approx(0.0, abs=1e-7)
    previous = 0.0
    for share in (0.4, 0.6, 0.8, 0.97):
        rest = (1 - share) / 3
        gates = torch.tensor([share, rest, rest, rest]).expand(8, 2, 4)
        value = float(load_balancing_loss(gates))
        assert value > previous
        previous = value
    # CV^2 of [0.97, 0.01, 0.01, 0.01] is 2.7648; one expert taking everything gives E - 1 = 3
    assert previous == pytest.approx(2.7648, rel=1e-4)
    assert float(load_balancing_loss(torch.tensor([1.0, 0, 0, 0]).expand(8, 2, 4))) == pytest.approx(3.0)


def test_noisy_top_k_gate_keeps_k_experts():
    moe = MultiGateMixtureOfExperts(in_dim=6, n_experts=4, hidden_dim=8, out_dim=5, n_tasks=2, top_k=2, noisy_gating=True)
    out, gates, aux = moe(torch.randn(3, 2, 6))
    assert out.shape == (3, 2, 5) and (gates > 0).sum(dim=-1).eq(2).all()
    torch.testing.assert_close(gates.sum(dim=-1), torch.ones(3, 2))
    moe.eval()
    _, a, _ = moe(torch.ones(1, 2, 6))
    _, b, _ = moe(torch.ones(1, 2, 6))
    assert torch.equal(a, b)  # no noise at evaluation


def test_plans_and_dataset_must_agree(planned):
    plans, dataset_json, _ = planned
    other = dict(dataset_json, endpoints={"os": dataset_json["endpoints"]["os"]})
    with pytest.raises(ValueError, match="plans were made for endpoints"):
        build_network(plans, other)


def test_runs_under_autocast(planned):
    plans, dataset_json, table = planned
    net = network(plans, dataset_json)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(make_batch(plans, table))
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.logits.values())


@pytest.mark.parametrize("mode", ABLATIONS)
def test_untrained_network_is_the_clinical_offset(planned, mode):
    """Zero-initialised heads: before training every output is exactly the linear predictor
    design @ weight + bias, with count and volume taken from the bag's real instances only."""
    plans, dataset_json, table = planned
    net = network(plans, dataset_json, mode=mode).eval()
    k = len(plans["endpoints"])
    g = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(k, net.offset.design_dim, generator=g), torch.randn(k, generator=g)
    net.offset.set_coefficients(weight, bias)
    net.offset.lesion_bias.fill_(-60.0)  # lesions that never fail: an any_lesion endpoint is then its leak alone
    batch = make_batch(plans, table, bag_sizes=(3, 1, 0), n_max=4)
    batch["instance_descriptors"][..., 0] = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0], [9.0] * 4])
    out = net(batch)
    inputs = net.clinical_encoder.encode_inputs(batch["clinical_values"], batch["clinical_categories"])
    volume_ml = torch.tensor([np.expm1([1.0, 2.0, 3.0]).sum(), np.expm1(4.0), 0.0], dtype=torch.float32) / 1000
    foci = torch.zeros(3, 0)
    if "foci_responses" in batch:  # the small-foci descriptor: count and summed response at or above the threshold
        net.foci_threshold.fill_(5.0)
        out = net(batch)
        responses = batch["foci_responses"].numpy()
        above = [[r for r in row if np.isfinite(r) and r >= 5.0] for row in responses]
        foci = torch.tensor([[np.log1p(len(a)), np.log1p(sum(a))] for a in above], dtype=torch.float32)
    design = torch.cat([inputs, torch.log1p(torch.tensor([[3.0], [1.0], [0.0]])), torch.log1p(volume_ml)[:, None],
                        foci, batch.get("case_features", torch.zeros(3, 0))], 1)
    expected = design @ weight.t() + bias
    for i, endpoint in enumerate(plans["endpoints"]):
        value = (out.logits if endpoint["type"] == "binary" else out.log_risks)[endpoint["name"]]
        torch.testing.assert_close(value, expected[:, i], atol=1e-4, rtol=1e-4)
    assert not any(p is net.offset.weight for p in net.parameters())  # fitted, never trained
