"""SHAP of the fusion (``glmil_auto.model.shap_explanations``): exact against a brute-force
Shapley computation, additive, zero for evidence the output does not use, the permutation path for
many features, the per-case block, and the report's summary plot."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from glmil_auto.evaluation.report.report_plots import shap_summary_figure
from glmil_auto.evaluation.report.shap_summary import shap_summary
from glmil_auto.model.shap_explanations import (
    GLOBAL_FEATURE,
    LOCAL_FEATURE,
    ExplanationInputs,
    case_explanation,
    display_values,
    feature_names,
    shap_values,
)
from glmil_auto.model.network import GLMILMoE

ENDPOINTS = [{"name": "local_failure", "type": "binary"}, {"name": "os", "type": "survival"}]
DIM = 8


def features(n_numeric: int = 2) -> list[dict]:
    numeric = [{"name": f"x{i}", "type": "numeric", "mean": 0.0, "std": 1.0} for i in range(n_numeric)]
    return numeric + [{"name": "smoker", "type": "binary"},
                      {"name": "primary", "type": "categorical", "categories": ["lung", "breast", "melanoma"]}]


def network(clinical_features: list[dict], seed: int = 0, trained: bool = True) -> GLMILMoE:
    torch.manual_seed(seed)
    config = {"mode": "full", "in_channels": 2, "global_features": [4, 8], "global_first_stride": 1,
              "local_features": [4, 8], "n_scales": 1, "embedding_dim": DIM, "expert_hidden_dim": 16,
              "num_experts": 3, "dropout": 0.0, "top_k": None, "noisy_gating": False,
              "clinical_features": clinical_features, "endpoints": ENDPOINTS}
    net = GLMILMoE(config).eval()
    if trained:  # the heads start at zero: give them weights so that every input matters
        with torch.no_grad():
            for parameter in net.heads.parameters():
                parameter.normal_(0, 0.5)
    return net


def inputs(n: int, clinical_features: list[dict], seed: int) -> ExplanationInputs:
    rng = np.random.default_rng(seed)
    n_values = sum(f["type"] in ("numeric", "binary") for f in clinical_features)
    values = rng.normal(size=(n, n_values))
    values[:, n_values - 1] = rng.integers(0, 2, n)  # the binary feature
    values[rng.random((n, n_values)) < 0.1] = np.nan  # missing values
    return ExplanationInputs([f"c{seed}_{i}" for i in range(n)], values.astype(np.float32),
                             rng.integers(-1, 3, (n, 1)),
                             np.c_[np.log1p(rng.integers(1, 6, n)), np.log1p(rng.random(n) * 4)].astype(np.float32),
                             rng.normal(size=(n, DIM)).astype(np.float32),
                             rng.normal(size=(n, len(ENDPOINTS), DIM)).astype(np.float32))


def brute_force_shapley(net: GLMILMoE, x: ExplanationInputs, background: ExplanationInputs) -> np.ndarray:
    """Interventional Shapley values by enumerating every coalition of the P feature groups:
    v(S) = mean over background cases of the output with S from x and the rest from the background."""
    f_values, f_categories = x.clinical_values.shape[1], x.clinical_categories.shape[1]
    groups = [("values", j) for j in range(f_values)] + [("categories", j) for j in range(f_categories)]
    groups += [("volumetric", 0), ("volumetric", 1), ("global", None), ("local", None)]
    p, m = len(groups), len(background)

    def value(coalition: set[int]) -> np.ndarray:
        cv = np.repeat(background.clinical_values, 1, axis=0).copy()
        cc = background.clinical_categories.copy()
        vol = background.volumetric.copy()
        gs, ls = background.global_summary.copy(), background.local_summary.copy()
        for g in coalition:
            kind, j = groups[g]
            if kind == "values":
                cv[:, j] = x.clinical_values[0, j]
            elif kind == "categories":
                cc[:, j] = x.clinical_categories[0, j]
            elif kind == "volumetric":
                vol[:, j] = x.volumetric[0, j]
            elif kind == "global":
                gs[:] = x.global_summary[0]
            else:
                ls[:] = x.local_summary[0]
        with torch.no_grad():
            logits, log_risks, *_ = net.fuse(torch.as_tensor(gs), torch.as_tensor(ls), torch.as_tensor(cv),
                                             torch.as_tensor(cc), torch.as_tensor(vol))
        return np.stack([logits["local_failure"].double().numpy(), log_risks["os"].double().numpy()], 1).mean(0)

    cache = {}
    for size in range(p + 1):
        for coalition in itertools.combinations(range(p), size):
            cache[frozenset(coalition)] = value(set(coalition))
    phi = np.zeros((p, 2))
    for j in range(p):
        for coalition, v in cache.items():
            if j in coalition:
                continue
            weight = math.factorial(len(coalition)) * math.factorial(p - len(coalition) - 1) / math.factorial(p)
            phi[j] += weight * (cache[coalition | {j}] - v)
    assert m > 0
    return phi


def test_exact_values_equal_a_brute_force_shapley_computation_and_add_up():
    clinical = features()
    net = network(clinical)
    explained, background = inputs(3, clinical, seed=1), inputs(7, clinical, seed=2)
    result = shap_values(net, explained, background, clinical)
    assert result.feature_names == ["x0", "x1", "smoker", "primary", "lesion count", "total lesion volume (mL)",
                                    GLOBAL_FEATURE, LOCAL_FEATURE]
    assert result.values.shape == (3, 8, 2) and result.base_values.shape == (3, 2)
    for i in range(3):
        expected = brute_force_shapley(net, explained.take([i]), background)
        np.testing.assert_allclose(result.values[i], expected, atol=2e-5)
    np.testing.assert_allclose(result.base_values + result.values.sum(axis=1), result.outputs, atol=2e-5)
    # the output explained is the network's own: the forward pass from the same fusion inputs
    with torch.no_grad():
        logits, log_risks, *_ = net.fuse(*(torch.as_tensor(a) for a in (
            explained.global_summary, explained.local_summary, explained.clinical_values,
            explained.clinical_categories, explained.volumetric)))
    np.testing.assert_allclose(result.outputs[:, 0], logits["local_failure"].numpy(), atol=1e-5)
    np.testing.assert_allclose(result.outputs[:, 1], log_risks["os"].numpy(), atol=1e-5)


def test_untrained_heads_leave_only_the_linear_offset_and_no_image_attribution():
    """Zero heads: the output is the clinical + volumetric linear predictor, so the image branches
    get exactly 0, and a numeric feature gets w * (x - mean of the background) / std."""
    clinical = features()
    net = network(clinical, trained=False)
    design_dim = net.offset.design_dim
    weight = torch.zeros(2, design_dim)
    weight[:, 0] = torch.tensor([0.7, -1.3])  # x0's standardised value
    net.offset.set_coefficients(weight, torch.tensor([0.1, 0.0]))
    explained, background = inputs(4, clinical, seed=3), inputs(9, clinical, seed=4)
    explained.clinical_values[:, 0] = [0.5, -1.0, 2.0, 0.0]
    background.clinical_values[:, 0] = np.linspace(-1, 1, 9)
    result = shap_values(net, explained, background, clinical)
    names = result.feature_names
    for name in (GLOBAL_FEATURE, LOCAL_FEATURE, "x1", "smoker", "primary", "lesion count"):
        np.testing.assert_allclose(result.values[:, names.index(name)], 0.0, atol=1e-6)
    expected = (explained.clinical_values[:, 0] - background.clinical_values[:, 0].mean())[:, None] * [0.7, -1.3]
    np.testing.assert_allclose(result.values[:, names.index("x0")], expected, atol=1e-5)


def test_many_features_use_the_permutation_explainer_and_still_add_up():
    clinical = features(n_numeric=10)  # 12 clinical + 2 volumetric + 2 image = 16 features
    net = network(clinical, seed=3)
    explained, background = inputs(2, clinical, seed=5), inputs(6, clinical, seed=6)
    a = shap_values(net, explained, background, clinical, seed=1)
    b = shap_values(net, explained, background, clinical, seed=1)
    assert a.values.shape == (2, 16, 2)
    np.testing.assert_array_equal(a.values, b.values)  # seeded
    np.testing.assert_allclose(a.base_values + a.values.sum(axis=1), a.outputs, atol=2e-5)


def test_background_subsampling_is_seeded_and_capped():
    clinical = features()
    net = network(clinical)
    explained, background = inputs(1, clinical, seed=7), inputs(30, clinical, seed=8)
    a = shap_values(net, explained, background, clinical, seed=0, max_background=10)
    b = shap_values(net, explained, background, clinical, seed=0, max_background=10)
    np.testing.assert_array_equal(a.values, b.values)
    subset = background.take(np.sort(np.random.default_rng(0).choice(30, 10, replace=False)))
    np.testing.assert_allclose(a.base_values, shap_values(net, explained, subset, clinical).base_values, atol=1e-6)


def test_inputs_round_trip_and_the_case_block(tmp_path):
    clinical = features()
    net = network(clinical)
    data = inputs(5, clinical, seed=9)
    data.save(tmp_path / "background.npz")
    loaded = ExplanationInputs.load(tmp_path / "background.npz")
    assert loaded.case_ids == data.case_ids
    np.testing.assert_array_equal(loaded.local_summary, data.local_summary)
    np.testing.assert_array_equal(loaded.clinical_values, data.clinical_values)
    merged = ExplanationInputs.concatenate([data.take([0, 1]), data.take([2, 3, 4])])
    np.testing.assert_array_equal(merged.global_summary, data.global_summary)

    result = shap_values(net, data.take([0]), data, clinical)
    names = feature_names(clinical, net)
    shown = display_values(data.take([0]), clinical, names)[0]
    assert shown[names.index("lesion count")] == int(round(np.expm1(data.volumetric[0, 0])))
    assert shown[names.index(GLOBAL_FEATURE)] is None
    block = case_explanation(result.values[0], result.base_values[0], names, shown, ENDPOINTS)
    assert set(block) == {"local_failure", "os"} and block["os"]["output"] == "standardised log-risk"
    shap_column = [c["shap"] for c in block["local_failure"]["contributions"]]
    assert [abs(v) for v in shap_column] == sorted((abs(v) for v in shap_column), reverse=True)
    assert block["local_failure"]["output_value"] == pytest.approx(result.outputs[0, 0], abs=2e-5)


def test_summary_across_cases_and_its_plot():
    clinical = features()
    net = network(clinical)
    data = inputs(12, clinical, seed=10)
    result = shap_values(net, data, data, clinical)
    names = result.feature_names
    shown = display_values(data, clinical, names)
    blocks = {case: case_explanation(result.values[i], result.base_values[i], names, shown[i], ENDPOINTS)
              for i, case in enumerate(result.case_ids)}
    summary = shap_summary(blocks, ["local_failure", "os"])
    entry = summary["local_failure"]
    assert entry["n_cases"] == 12 and sorted(entry["feature_names"]) == sorted(names)
    values = np.asarray(entry["values"])
    for j, name in enumerate(entry["feature_names"]):  # the matrix is the per-case values, realigned
        np.testing.assert_allclose(values[:, j], result.values[:, names.index(name), 0], atol=1e-12)
    mean_abs = list(entry["mean_abs"].values())
    assert mean_abs == sorted(mean_abs, reverse=True)
    png = shap_summary_figure(entry, "local_failure: SHAP")
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert shap_summary_figure({}, "empty") is None
