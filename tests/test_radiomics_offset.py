"""The network's starting point: the untrained network is the fitted radiomics model (a lesion
noisy-OR for an any_lesion endpoint, logistic / Cox on patient aggregates for the others), to 1e-5
against the fitted models' own predictions; the noisy-OR numerics against a brute force; the lesion
logits follow their instances and ignore padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glmil_auto.model import build_network
from glmil_auto.model.instance_encoder import NUM_DESCRIPTORS
from glmil_auto.model.starting_point import lesion_log_survival, noisy_or_logit
from glmil_auto.preprocessing.lesion_features.lesion_frame import LESION_FEATURES
from glmil_auto.preprocessing.lesion_features.patients import patient_feature_names, patient_features
from glmil_auto.training.dataloading.bag_collation import case_extras, collate_bags, collate_extras, instance_descriptors
from glmil_auto.training.starting_point.radiomics_offset_fit import fit_starting_point

FEATURES = [{"name": "age", "type": "numeric", "mean": 0.0, "std": 1.0},
            {"name": "primary", "type": "categorical", "categories": ["breast", "lung", "melanoma"]}]
ENDPOINTS = [{"name": "lf", "type": "binary", "aggregation": "any_lesion"},
             {"name": "lmd", "type": "binary"}, {"name": "os", "type": "survival"}]
LESION_NAMES = list(LESION_FEATURES)


def plans() -> dict:
    return {
        "num_input_channels": 2,
        "preprocessing": {"global": {"target_spacing": [2.0] * 3, "input_shape": [16, 16, 16]},
                          "local": {"target_spacing": [1.0] * 3, "patch_size": [8, 8, 8], "scales": [1.0],
                                    "max_instances": 4, "instance_policy": "keep_largest"},
                          "lesion_features": {"version": 1, "t1c_channel": 0, "flair_channel": None,
                                              "hand_crafted": True, "ibsi": None,
                                              "case_features": patient_feature_names(LESION_NAMES)}},
        "model": {"global_encoder": {"features_per_stage": [4, 8]}, "local_encoder": {"features_per_stage": [4, 8]}},
        "training": {"trainer_defaults": {"embedding_dim": 8, "expert_hidden_dim": 8, "num_experts": 2, "dropout": 0.0}},
        "clinical": {"features": FEATURES},
        "endpoints": ENDPOINTS,
    }


def cohort(n: int, seed: int = 0):
    """Cases whose lesions carry stored features (some undefined), with local failure a true
    noisy-OR over lesions driven by necrosis and heterogeneity, and the other endpoints by patient
    aggregates."""
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    primary = rng.integers(-1, 3, n)
    properties, lesion_rows, case_ids = [], [], []
    lf, lmd_lp, os_lp = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        case = f"c{i:03d}"
        case_ids.append(case)
        count = int(rng.integers(0, 5))
        lesions, survive = [], 1.0
        for j in range(count):
            features = {name: float(rng.normal()) for name in LESION_NAMES}
            features["volume_mm3"] = float(rng.lognormal(6, 1))
            features["log_volume"] = float(np.log(features["volume_mm3"]))
            if rng.random() < 0.1:
                features["relative_cv"] = None  # an undefined feature: imputed with the training median
            p = 1 / (1 + np.exp(-(-2.0 + 2.5 * features["necrotic_fraction"] + 0.03 * (age[i] - 60))))
            survive *= 1 - p
            lesions.append({"label": j + 1, "volume_mm3": features["volume_mm3"], "kept": True, "instance_index": j,
                            "depth_below_head_surface_mm": 20.0, "centroid_index_zyx": [4.0, 4.0, 4.0],
                            "features": features})
            lesion_rows.append({"case_id": case, **{k: (np.nan if v is None else v) for k, v in features.items()}})
        lf[i] = float(rng.random() < 1 - survive * 0.9)
        import pandas as pd

        frame = pd.DataFrame(lesion_rows)
        frame = frame[frame["case_id"] == case] if len(frame) else frame
        aggregates = patient_features(frame if len(frame) else pd.DataFrame({"case_id": []}), [case], LESION_NAMES)
        case_features = {k: float(v) for k, v in aggregates.iloc[0].items()}
        lmd_lp[i] = 0.8 * case_features["max_csf_adjacent"] + 0.02 * (age[i] - 60)
        os_lp[i] = 0.5 * case_features["log_n_lesions"] + 0.03 * (age[i] - 60)
        properties.append({"lesions": lesions, "n_instances": count, "case_features": case_features,
                           "head_bbox_canonical": [[0, 8], [0, 8], [0, 8]]})
    lmd = (rng.random(n) < 1 / (1 + np.exp(-(lmd_lp - 0.5)))).astype(float)
    time = rng.exponential(12 * np.exp(-os_lp))
    event = (rng.random(n) < 0.8).astype(float)
    values = age[:, None].astype(float)
    categories = primary[:, None].astype(np.int64)
    targets = {"lf": lf, "lmd": lmd, "os_time": time, "os_event": event}
    return case_ids, values, categories, properties, targets


def network_batch(plan: dict, case_ids, values, categories, properties) -> dict[str, torch.Tensor]:
    section = plan["preprocessing"]["lesion_features"]
    n = len(case_ids)
    descriptors = [instance_descriptors(p, c) for p, c in zip(properties, case_ids)]
    bags = [np.zeros((len(d), 1, 2, 8, 8, 8), dtype=np.float32) for d in descriptors]
    batch = collate_bags([np.zeros((2, 16, 16, 16), dtype=np.float32)] * n, bags, descriptors)
    extras = [case_extras(p, c, LESION_NAMES, section["case_features"]) for p, c in zip(properties, case_ids)]
    batch.update(collate_extras(extras, batch["instance_mask"].shape[1]))
    batch["clinical_values"] = values.astype(np.float32)
    batch["clinical_categories"] = categories
    return {k: torch.as_tensor(v) for k, v in batch.items()}


@pytest.mark.parametrize("mode", ["full", "clinical_only"])
def test_untrained_network_is_the_fitted_radiomics_model(mode):
    plan = plans()
    case_ids, values, categories, properties, targets = cohort(160, seed=1)
    torch.manual_seed(0)
    network = build_network(plan, mode=mode)
    network.clinical_encoder.fit(values, categories)
    models: dict = {}
    record = fit_starting_point(network, values, categories, properties, case_ids, targets, ENDPOINTS,
                                LESION_NAMES, plan["preprocessing"]["lesion_features"]["case_features"], seed=0,
                                fitted_models=models)
    assert record["endpoints"]["lf"]["model"] == "noisy-OR"
    assert record["endpoints"]["lmd"]["model"] == "logistic" and record["endpoints"]["os"]["model"] == "cox"
    network.eval()
    with torch.no_grad():
        out = network(network_batch(plan, case_ids, values, categories, properties))
    fit, columns, inputs = models["lf"]
    expected = fit.predict_proba(inputs.lesions, case_ids, inputs.design)
    np.testing.assert_allclose(torch.sigmoid(out.logits["lf"]).numpy(), expected, atol=1e-5)
    # every lesion's own probability is the fitted lesion model's
    lesion_p = fit.lesion_probabilities(inputs.lesions, case_ids, inputs.design)
    mask = network_batch(plan, case_ids, values, categories, properties)["instance_mask"]
    np.testing.assert_allclose(torch.sigmoid(out.instance_logits["lf"])[mask].numpy(), lesion_p, atol=1e-5)
    fit, columns, inputs = models["lmd"]
    np.testing.assert_allclose(torch.sigmoid(out.logits["lmd"]).numpy(),
                               fit.predict_proba(inputs.case_design(columns)), atol=1e-5)
    fit, columns, inputs = models["os"]
    np.testing.assert_allclose(out.log_risks["os"].numpy(), fit.predict(inputs.case_design(columns)), atol=1e-5)
    # the fit found the signal: necrosis is the lesion model's strongest feature
    lf_fit = models["lf"][0]
    weights = dict(zip(lf_fit.feature_columns, np.abs(lf_fit.coef_)))
    assert max(weights, key=weights.get) == "necrotic_fraction"


def fitted_network(n: int, seed: int):
    """(plans, a network in eval mode with its starting point fitted on a cohort of n cases, the cohort)."""
    plan = plans()
    case_ids, values, categories, properties, targets = cohort(n, seed=seed)
    torch.manual_seed(0)
    network = build_network(plan)
    network.clinical_encoder.fit(values, categories)
    fit_starting_point(network, values, categories, properties, case_ids, targets, ENDPOINTS, LESION_NAMES,
                       plan["preprocessing"]["lesion_features"]["case_features"], seed=0)
    return plan, network.eval(), (case_ids, values, categories, properties, targets)


def test_noisy_or_logit_agrees_with_a_brute_force_product():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(-1, 3, (5, 2, 4)))
    mask = torch.tensor(rng.random((5, 4)) < 0.7)
    leak = torch.tensor(rng.normal(-2, 3, 5))
    survival = lesion_log_survival(logits, mask)
    value = noisy_or_logit(survival[:, 0], leak)
    for b in range(5):
        p_none = 1 / (1 + np.exp(leak[b].item()))  # 1 - sigmoid(leak)
        for i in range(4):
            if mask[b, i]:
                p_none *= 1 - 1 / (1 + np.exp(-logits[b, 0, i].item()))
        expected = np.log((1 - p_none) / p_none)
        assert value[b].item() == pytest.approx(expected, abs=1e-4)
    # a case without lesions is its leak, and extreme logits stay finite
    torch.testing.assert_close(noisy_or_logit(torch.zeros(1), torch.tensor([1.3])), torch.tensor([1.3]))
    extreme = noisy_or_logit(torch.tensor([0.0, -200.0]), torch.tensor([-200.0, 200.0]))
    assert torch.isfinite(extreme).all()


def test_lesion_logits_follow_their_instances_and_ignore_padding():
    plan, network, (case_ids, values, categories, properties, _) = fitted_network(60, seed=2)
    batch = network_batch(plan, case_ids, values, categories, properties)
    rich = int(torch.argmax(batch["instance_mask"].sum(1)))
    single = {k: v[rich:rich + 1].clone() for k, v in batch.items()}
    n = int(single["instance_mask"].sum())
    order = torch.randperm(n)
    permuted = dict(single)
    for key in ("instances", "instance_descriptors", "instance_mask", "instance_features"):
        permuted[key] = single[key][:, order]
    padded = dict(single)
    padded["instance_mask"] = torch.cat([single["instance_mask"], torch.zeros(1, 3, dtype=torch.bool)], 1)
    padded["instances"] = torch.cat([single["instances"], torch.randn(1, 3, *single["instances"].shape[2:])], 1)
    padded["instance_descriptors"] = torch.cat([single["instance_descriptors"], torch.randn(1, 3, NUM_DESCRIPTORS)], 1)
    padded["instance_features"] = torch.cat([single["instance_features"],
                                             torch.randn(1, 3, single["instance_features"].shape[2]) * 100], 1)
    with torch.no_grad():
        a, b, c = network(single), network(permuted), network(padded)
    torch.testing.assert_close(a.logits["lf"], b.logits["lf"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.logits["lf"], c.logits["lf"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.instance_logits["lf"][0], a.instance_logits["lf"][0][order], atol=1e-5, rtol=1e-5)


def test_starting_point_outputs_are_the_untrained_network_and_stay_after_training():
    plan, network, (case_ids, values, categories, properties, _) = fitted_network(60, seed=3)
    batch = network_batch(plan, case_ids, values, categories, properties)
    with torch.no_grad():
        out = network(batch)
        logits, log_risks, lesion_logits = network.starting_point_outputs(batch)
        for name in logits:
            torch.testing.assert_close(logits[name], out.logits[name], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(log_risks["os"], out.log_risks["os"], atol=1e-5, rtol=1e-5)
        # a trained correction moves the network, never the starting point
        for head in network.heads.linears:
            head.bias.fill_(0.5)
        moved = network(batch)
        again, _, _ = network.starting_point_outputs(batch)
    assert not torch.allclose(moved.logits["lmd"], out.logits["lmd"])
    torch.testing.assert_close(again["lmd"], logits["lmd"])
    assert set(lesion_logits) == {"lf"}
