"""The clinical + volumetric offset: its fit agrees with lifelines and scikit-learn, and the
untrained network predicts exactly what the clinical baseline predicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from glmil_auto.evaluation.clinical_models.clinical_baseline import ClinicalBaseline
from glmil_auto.model import build_network
from glmil_auto.training.starting_point.clinical_offset_fit import fit_cox, fit_logistic, fit_network_offset, volumetric_inputs

FEATURES = [{"name": "age", "type": "numeric", "mean": 0.0, "std": 1.0},
            {"name": "ecd", "type": "binary"},
            {"name": "primary", "type": "categorical", "categories": ["breast", "lung", "melanoma"]}]
ENDPOINTS = [{"name": "lf", "type": "binary"}, {"name": "os", "type": "survival"}]


def plans() -> dict:
    return {
        "num_input_channels": 2,
        "preprocessing": {"global": {"target_spacing": [2.0] * 3, "input_shape": [16, 16, 16]},
                          "local": {"target_spacing": [1.0] * 3, "patch_size": [8, 8, 8], "scales": [1.0],
                                    "max_instances": 3, "instance_policy": "keep_largest"}},
        "model": {"global_encoder": {"features_per_stage": [4, 8]}, "local_encoder": {"features_per_stage": [4, 8]}},
        "training": {"trainer_defaults": {"embedding_dim": 8, "expert_hidden_dim": 8, "num_experts": 2, "dropout": 0.0}},
        "clinical": {"features": FEATURES},
        "endpoints": ENDPOINTS,
    }


def cohort(n: int, seed: int = 0):
    """Clinical inputs, lesion properties (1-3 lesions, all kept) and outcomes that depend on them."""
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    ecd = (rng.random(n) < 0.6).astype(float)
    ecd[rng.random(n) < 0.05] = np.nan
    primary = rng.integers(-1, 3, n)  # -1 = missing
    counts = rng.integers(1, 4, n)
    properties, volume = [], np.zeros(n)
    for i, count in enumerate(counts):
        volumes = rng.lognormal(6, 1, count)
        volume[i] = volumes.sum()
        properties.append({"lesions": [{"volume_mm3": float(v), "kept": True, "instance_index": j}
                                       for j, v in enumerate(volumes)], "n_instances": int(count)})
    lp = 0.04 * (age - 60) + 0.8 * np.nan_to_num(ecd) + 0.5 * np.log1p(counts) + 0.4 * np.log1p(volume / 1000)
    lf = (rng.random(n) < 1 / (1 + np.exp(-(lp - 1)))).astype(float)
    time = rng.exponential(12 * np.exp(-lp))
    event = (rng.random(n) < 0.8).astype(float)
    values = np.stack([age, ecd], axis=1)
    categories = primary[:, None].astype(np.int64)
    targets = {"lf": lf, "lf_known": np.ones(n, bool), "os_time": time, "os_event": event, "os_known": np.ones(n, bool)}
    return values, categories, properties, targets


def test_cox_fit_agrees_with_lifelines():
    from lifelines import CoxPHFitter

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 3))
    time = rng.exponential(np.exp(-(x @ [0.7, -0.4, 0.0])))
    time = np.round(time, 1) + 0.1  # ties, handled by Efron's method in both
    event = (rng.random(300) < 0.75).astype(float)
    ours = fit_cox(x, time, event, alpha=1e-8)
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(T=time, E=event)
    reference = CoxPHFitter().fit(frame, "T", "E").params_.to_numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_logistic_fit_is_scikit_learns_and_handles_one_class():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(200, 2))
    y = (rng.random(200) < 1 / (1 + np.exp(-x[:, 0]))).astype(float)
    y[:10] = np.nan
    w, b = fit_logistic(x, y, c=0.5)
    reference = LogisticRegression(C=0.5, max_iter=5000).fit(x[10:], y[10:].astype(int))
    np.testing.assert_allclose(w, reference.coef_[0], rtol=1e-4)
    assert b == pytest.approx(reference.intercept_[0], rel=1e-4)
    w, b = fit_logistic(x, np.zeros(200))  # one class only: no slope, the (clipped) prevalence
    assert not w.any() and b == pytest.approx(np.log(1e-3 / (1 - 1e-3)))


@pytest.mark.parametrize("mode", ["full", "clinical_only"])
def test_untrained_network_predicts_the_clinical_baseline(mode):
    values, categories, properties, targets = cohort(150)
    network = build_network(plans(), mode=mode).eval()
    network.clinical_encoder.fit(values)
    record = fit_network_offset(network, values, categories, properties, targets, ENDPOINTS)
    assert set(record["weights"]) == {"lf", "os"} and network.offset.fitted
    baseline = ClinicalBaseline.fit(FEATURES, ENDPOINTS, values, categories, properties, targets)
    expected = baseline.predict(values, categories, properties)
    batch = {"global": torch.zeros(150, 2, 16, 16, 16), "clinical_values": torch.tensor(values, dtype=torch.float32),
             "clinical_categories": torch.tensor(categories)}
    n_max = max(len(p["lesions"]) for p in properties)
    mask = np.zeros((150, n_max), bool)
    descriptors = np.zeros((150, n_max, 5), np.float32)
    for i, p in enumerate(properties):
        m, d = volumetric_inputs(p)
        mask[i, : m.shape[1]], descriptors[i, : m.shape[1], 0] = m[0], d[0, :, 0]
    batch.update(instances=torch.randn(150, n_max, 1, 2, 8, 8, 8), instance_mask=torch.tensor(mask),
                 instance_descriptors=torch.tensor(descriptors))
    with torch.no_grad():
        out = network(batch)
    np.testing.assert_allclose(torch.sigmoid(out.logits["lf"]).numpy(), expected["lf"], atol=1e-5)
    np.testing.assert_allclose(out.log_risks["os"].numpy(), expected["os"], atol=1e-4)
    # and the fit found the simulated effects: age, ECD, count and volume all raise the risk
    weights = np.asarray(record["weights"]["os"])
    assert weights[0] > 0 and weights[1] > 0 and weights[-2] + weights[-1] > 0


def test_offset_stays_float32_under_autocast():
    from glmil_auto.model.clinical_offset import ClinicalOffset

    offset = ClinicalOffset(4, 2)
    g = torch.Generator().manual_seed(0)
    offset.set_coefficients(torch.randn(2, 4, generator=g), torch.randn(2, generator=g))
    design = torch.randn(8, 4, generator=g) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = offset(design)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, design @ offset.weight.t() + offset.bias, rtol=1e-6, atol=1e-6)
