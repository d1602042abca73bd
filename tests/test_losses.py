"""Training losses: masked BCE, Efron Cox partial likelihood (against loops and lifelines), the risk
memory (small-batch gradients, FIFO, exact state) and GLMILLoss."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from glmil_auto.model.network import GLMILOutput
from glmil_auto.training.loss.losses import (
    CoxRiskMemory,
    GLMILLoss,
    cox_partial_likelihood_efron,
    masked_bce_with_logits,
)


# ---------------------------------------------------------------- references (loops, on purpose)
def reference_negative_log_likelihood(log_risk, time, event, ties="efron"):
    """The textbook formula, one distinct event time at a time."""
    total = log_risk.new_zeros(())
    for t in sorted(set(time[event].tolist())):
        tied, at_risk = (time == t) & event, time >= t
        d = int(tied.sum())
        sum_at_risk, sum_tied = torch.exp(log_risk[at_risk]).sum(), torch.exp(log_risk[tied]).sum()
        total = total + log_risk[tied].sum()
        for k in range(d):
            total = total - torch.log(sum_at_risk - (k / d if ties == "efron" else 0.0) * sum_tied)
    return -total


def tied_survival_data(n=60, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    log_risk = torch.randn(n, generator=g, dtype=dtype)
    time = torch.randint(1, 12, (n,), generator=g).to(dtype)  # many ties
    event = torch.rand(n, generator=g) < 0.6
    return log_risk, time, event


def simulated_cohort(n=512, seed=0):
    """Exponential event times with a linear log-hazard, uniform censoring, times rounded (ties)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    beta = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    event_time = -torch.log(torch.rand(n, generator=g, dtype=torch.float64)) / torch.exp(x @ beta)
    censoring = torch.rand(n, generator=g, dtype=torch.float64) * 3.0
    time = torch.round(torch.minimum(event_time, censoring) * 20) / 20
    return x, beta, time, event_time <= censoring


def grad_of(loss_fn, tensor):
    tensor = tensor.detach().clone().requires_grad_(True)
    value = loss_fn(tensor)
    (gradient,) = torch.autograd.grad(value, tensor)
    return value.detach(), gradient


# ---------------------------------------------------------------- masked BCE
def test_masked_bce_equals_torch_on_the_known_subset():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, generator=g)
    targets = (torch.rand(10, generator=g) < 0.4).float()
    known = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    value, gradient = grad_of(lambda x: masked_bce_with_logits(x, targets, known, pos_weight=3.0), logits)
    expected, expected_gradient = grad_of(
        lambda x: F.binary_cross_entropy_with_logits(x[known], targets[known], pos_weight=torch.tensor(3.0)), logits)
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(gradient, expected_gradient)
    assert torch.all(gradient[~known] == 0)

    poisoned = targets.clone()
    poisoned[~known] = torch.nan
    value_nan, gradient_nan = grad_of(lambda x: masked_bce_with_logits(x, poisoned, known, pos_weight=3.0), logits)
    assert torch.equal(value_nan, value) and torch.equal(gradient_nan, gradient)


def test_masked_bce_without_known_cases_is_a_zero_with_a_graph():
    logits = torch.randn(4, requires_grad=True)
    value = masked_bce_with_logits(logits, torch.full((4,), torch.nan), torch.zeros(4, dtype=torch.bool))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(logits.grad, torch.zeros(4))


# ---------------------------------------------------------------- Efron
def test_efron_equals_the_loop_reference_with_ties():
    log_risk, time, event = tied_survival_data()
    assert len(set(time[event].tolist())) < int(event.sum())  # there are tied events
    value, gradient = grad_of(lambda x: cox_partial_likelihood_efron(x, time, event, reduction="sum"), log_risk)
    expected, expected_gradient = grad_of(lambda x: reference_negative_log_likelihood(x, time, event), log_risk)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-10, atol=1e-12)
    breslow = reference_negative_log_likelihood(log_risk, time, event, ties="breslow")
    assert abs(value.item() - breslow.item()) > 1e-3  # the ties matter here, so the test can fail
    mean = cox_partial_likelihood_efron(log_risk, time, event.float())  # float events, "mean"
    torch.testing.assert_close(mean, value / event.sum())


def test_efron_equals_breslow_without_ties():
    g = torch.Generator().manual_seed(1)
    log_risk = torch.randn(40, generator=g, dtype=torch.float64)
    time = torch.randperm(40, generator=g).to(torch.float64)
    event = torch.rand(40, generator=g) < 0.5
    value = cox_partial_likelihood_efron(log_risk, time, event, reduction="sum")
    breslow = reference_negative_log_likelihood(log_risk, time, event, ties="breslow")
    torch.testing.assert_close(value, breslow, rtol=1e-12, atol=1e-10)


def test_efron_is_stable_for_large_log_risks_in_float32():
    log_risk, time, event = tied_survival_data()
    scaled = (log_risk * 60).float()  # exp() overflows float32 far below these values
    value, gradient = grad_of(lambda x: cox_partial_likelihood_efron(x, time, event, reduction="sum"), scaled)
    assert value.dtype == torch.float32 and torch.isfinite(value) and torch.isfinite(gradient).all()
    expected = reference_negative_log_likelihood(scaled.double(), time, event)
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-2)
    shifted = cox_partial_likelihood_efron(scaled + 500.0, time, event, reduction="sum")
    torch.testing.assert_close(shifted, value, rtol=1e-5, atol=1e-2)  # invariant to a shift
    # a censored case far above the event it is tied with (its exp() would be inf, times a 0 weight)
    tied = cox_partial_likelihood_efron(torch.tensor([0.0, 200.0, 0.0]), torch.tensor([1.0, 1.0, 2.0]),
                                        torch.tensor([1.0, 0.0, 1.0]), reduction="sum")
    assert tied.item() == pytest.approx(200.0)  # event 1: log(e^0 + e^200 + e^0) - 0; event 2: alone


def test_efron_leaves_unknown_cases_out_and_handles_no_event():
    log_risk, time, event = tied_survival_data()
    known = torch.rand(len(time), generator=torch.Generator().manual_seed(3)) < 0.7
    time_nan, event_nan = time.clone(), event.double()
    time_nan[~known], event_nan[~known] = torch.nan, torch.nan
    value, gradient = grad_of(lambda x: cox_partial_likelihood_efron(x, time_nan, event_nan, known=known), log_risk)
    expected = cox_partial_likelihood_efron(log_risk[known], time[known], event[known])
    torch.testing.assert_close(value, expected)
    assert torch.isfinite(gradient).all() and torch.all(gradient[~known] == 0)

    for event_none, known_none in ((torch.zeros(len(time)), None), (event, torch.zeros(len(time), dtype=torch.bool))):
        zero, zero_gradient = grad_of(lambda x: cox_partial_likelihood_efron(x, time, event_none, known=known_none),
                                      log_risk)
        assert zero.item() == 0.0 and torch.equal(zero_gradient, torch.zeros_like(log_risk))
    with pytest.raises(ValueError):
        cox_partial_likelihood_efron(log_risk, time, event, reduction="none")


def test_efron_fit_agrees_with_lifelines():
    lifelines = pytest.importorskip("lifelines")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(200, 3, generator=g, dtype=torch.float64)
    event_time = -torch.log(torch.rand(200, generator=g, dtype=torch.float64)) / torch.exp(
        x @ torch.tensor([0.8, -0.6, 0.3], dtype=torch.float64))
    censoring = torch.rand(200, generator=g, dtype=torch.float64) * 2.5
    time = torch.round(torch.minimum(event_time, censoring) * 10) / 10  # rounded: many ties
    event = event_time <= censoring
    assert len(set(time[event].tolist())) < int(event.sum()) / 2

    beta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([beta], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = cox_partial_likelihood_efron(x @ beta, time, event, reduction="sum")
        loss.backward()
        return loss

    optimiser.step(closure)
    frame = pd.DataFrame(x.numpy(), columns=["a", "b", "c"]).assign(time=time.numpy(), event=event.numpy().astype(int))
    fitter = lifelines.CoxPHFitter().fit(frame, duration_col="time", event_col="event")
    np.testing.assert_allclose(beta.detach().numpy(), fitter.params_[["a", "b", "c"]].to_numpy(), atol=1e-4)
    log_likelihood = -cox_partial_likelihood_efron(x @ beta.detach(), time, event, reduction="sum").item()
    assert log_likelihood == pytest.approx(fitter.log_likelihood_, abs=1e-6)


# ---------------------------------------------------------------- memory
def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def small_batch_gradient(x, beta, time, event, memory: CoxRiskMemory | None, batch_size=4, epochs=4, seed=0):
    """Average gradient w.r.t. beta over shuffled batches (after one warm-up epoch with a memory)."""
    g = torch.Generator().manual_seed(seed)
    total, count = torch.zeros_like(beta), 0
    for epoch in range(epochs + (memory is not None)):
        for batch in torch.randperm(len(time), generator=g).split(batch_size):
            b = beta.clone().requires_grad_(True)
            known = torch.ones(len(batch), dtype=torch.bool)
            if memory is None:
                loss = cox_partial_likelihood_efron(x[batch] @ b, time[batch], event[batch])
            else:
                loss = memory(x[batch] @ b, time[batch], event[batch], known)
            if memory is not None and epoch == 0:
                continue  # warm-up: fill the memory
            total, count = total + torch.autograd.grad(loss, b)[0], count + 1
    return total / count


def test_memory_makes_small_batch_gradients_follow_the_cohort_gradient():
    x, beta, time, event = simulated_cohort()
    # at the generating coefficients (close to the cohort's optimum), where a biased gradient decides
    # where training ends; at beta = 0 every estimate points the right way (> 0.99, documented)
    _, full = grad_of(lambda b: cox_partial_likelihood_efron(x @ b, time, event), beta)
    without = small_batch_gradient(x, beta, time, event, memory=None)
    with_memory = small_batch_gradient(x, beta, time, event, memory=CoxRiskMemory(256))
    cos_without, cos_with = _cosine(without, full), _cosine(with_memory, full)
    print(f"cosine to the cohort gradient: without memory {cos_without:.3f}, with memory {cos_with:.3f}; "
          f"norm ratio {float(without.norm() / full.norm()):.2f}, {float(with_memory.norm() / full.norm()):.2f}")
    assert cos_with > 0.95
    assert cos_with > cos_without + 0.15
    assert 0.5 < float(with_memory.norm() / full.norm()) < 2.0  # the gradient is rescaled to the cohort's


def test_memory_loss_is_the_centred_union_loss_with_a_rescaled_gradient():
    g = torch.Generator().manual_seed(5)
    memory = CoxRiskMemory(capacity=32)
    for _ in range(6):
        times = torch.randint(1, 9, (8,), generator=g).float()
        memory(torch.randn(8, generator=g), times, torch.rand(8, generator=g) < 0.5)
    stored_risk, stored_time, stored_event = (t.clone() for t in memory.contents())
    assert memory.num_stored == 32 and not stored_risk.requires_grad

    log_risk = torch.randn(6, generator=g)
    time, event = torch.randint(1, 9, (6,), generator=g).float(), torch.tensor([1, 0, 1, 1, 0, 0]).float()
    known = torch.tensor([1, 1, 1, 0, 1, 1], dtype=torch.bool)
    memory.eval()  # used, not changed
    value, gradient = grad_of(lambda r: memory(r, time, event, known), log_risk)
    assert torch.equal(memory.contents()[0], stored_risk)

    union_time, union_event = torch.cat([time[known], stored_time]), torch.cat([event[known], stored_event.float()])
    expected, expected_gradient = grad_of(
        lambda r: cox_partial_likelihood_efron(torch.cat([r[known], stored_risk]), union_time, union_event), log_risk)
    null = cox_partial_likelihood_efron(torch.zeros(5 + 32), union_time, union_event)  # every log-risk equal
    torch.testing.assert_close(value, expected - null)
    torch.testing.assert_close(gradient, expected_gradient * (32 + 5) / 5)
    assert gradient[3] == 0


def test_memory_is_a_fifo_of_known_cases():
    memory = CoxRiskMemory(capacity=5)
    for start in (0, 3, 6):
        values = torch.arange(start, start + 3, dtype=torch.float32)
        known = torch.tensor([True, start != 3, True])  # case 4 unknown: never stored
        memory(values.requires_grad_(True), values.double(), torch.ones(3), known)
    risks, times, events = memory.contents()
    assert sorted(risks.tolist()) == [3.0, 5.0, 6.0, 7.0, 8.0]  # the 5 most recent known cases
    assert torch.equal(times.float(), risks) and events.all()
    memory(torch.arange(10.0, 17.0), torch.arange(7.0), torch.ones(7), torch.ones(7, dtype=torch.bool))
    assert sorted(memory.contents()[0].tolist()) == [12.0, 13.0, 14.0, 15.0, 16.0]
    memory.reset()
    assert memory.num_stored == 0


def test_memory_state_round_trips_exactly():
    g = torch.Generator().manual_seed(6)
    memory = CoxRiskMemory(capacity=16)
    for _ in range(5):
        memory(torch.randn(4, generator=g), torch.rand(4, generator=g), torch.rand(4, generator=g) < 0.5)
    buffer = io.BytesIO()
    torch.save(memory.state_dict(), buffer)
    buffer.seek(0)
    restored = CoxRiskMemory(capacity=16)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    batch = (torch.randn(4, generator=g), torch.rand(4, generator=g), torch.ones(4))
    assert torch.equal(memory(*batch), restored(*batch))
    for a, b in zip(memory.state_dict().values(), restored.state_dict().values()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- GLMILLoss
ENDPOINTS = [{"name": "local_failure", "type": "binary"}, {"name": "distant_failure", "type": "binary"},
             {"name": "os", "type": "survival"}]


def fake_output(seed=0, batch=6, aux=0.3):
    g = torch.Generator().manual_seed(seed)
    logits = {e["name"]: torch.randn(batch, generator=g).requires_grad_(True) for e in ENDPOINTS[:2]}
    return GLMILOutput(logits=logits, log_risks={"os": torch.randn(batch, generator=g).requires_grad_(True)},
                       aux_loss=torch.tensor(aux, requires_grad=True))


def fake_targets(batch=6):
    return {
        "local_failure": torch.tensor([1.0, 0.0, 1.0, torch.nan, 0.0, 1.0]),
        "local_failure_known": torch.tensor([1, 1, 1, 0, 1, 1], dtype=torch.bool),
        "distant_failure": torch.tensor([0.0, 0.0, 1.0, 1.0, -7.0, 0.0]),
        "distant_failure_known": torch.tensor([1, 1, 1, 1, 0, 1], dtype=torch.bool),
        "os_time": torch.tensor([3.0, 5.0, 5.0, torch.nan, 2.0, 8.0], dtype=torch.float64),
        "os_event": torch.tensor([1.0, 1.0, 0.0, torch.nan, 1.0, 0.0], dtype=torch.float64),
        "os_known": torch.tensor([1, 1, 1, 0, 1, 1], dtype=torch.bool),
    }


def make_loss(capacity=64):
    return GLMILLoss(ENDPOINTS, {"local_failure": 2.0, "distant_failure": 0.5, "os": 1.5},
                     {"local_failure": 3.0}, load_balancing_weight=0.01, memory_capacity=capacity)


def test_glmil_loss_combines_the_weighted_parts():
    output, targets = fake_output(), fake_targets()
    total, parts = make_loss()(output, targets)
    local = masked_bce_with_logits(output.logits["local_failure"], targets["local_failure"],
                                   targets["local_failure_known"], pos_weight=3.0)
    distant = masked_bce_with_logits(output.logits["distant_failure"], targets["distant_failure"],
                                     targets["distant_failure_known"])
    os_loss = CoxRiskMemory(64)(output.log_risks["os"], targets["os_time"], targets["os_event"], targets["os_known"])
    expected = 2.0 * local + 0.5 * distant + 1.5 * os_loss + 0.01 * output.aux_loss
    torch.testing.assert_close(total, expected)
    assert parts == pytest.approx({"loss_local_failure": local.item(), "loss_distant_failure": distant.item(),
                                   "loss_os": os_loss.item(), "loss_load_balancing": 0.3})
    total.backward()
    assert output.aux_loss.grad.item() == pytest.approx(0.01)
    assert output.logits["local_failure"].grad[3] == 0 and output.log_risks["os"].grad[3] == 0
    assert all(math.isfinite(v) for v in parts.values()) and torch.isfinite(total)


def test_glmil_loss_ignores_unknown_labels():
    def run(targets):
        output = fake_output()
        total, _ = make_loss()(output, targets)
        total.backward()
        return total.detach(), [t.grad.clone() for t in (*output.logits.values(), output.log_risks["os"])]

    targets = fake_targets()
    changed = dict(targets)
    changed["local_failure"] = torch.where(targets["local_failure_known"], targets["local_failure"], 1.0)
    changed["distant_failure"] = torch.where(targets["distant_failure_known"], targets["distant_failure"], 0.0)
    changed["os_time"] = torch.where(targets["os_known"], targets["os_time"], 0.5)  # would enter every risk set
    changed["os_event"] = torch.where(targets["os_known"], targets["os_event"], 1.0)
    (total, gradients), (total_changed, gradients_changed) = run(targets), run(changed)
    assert torch.equal(total, total_changed)
    assert all(torch.equal(a, b) for a, b in zip(gradients, gradients_changed))


def test_glmil_loss_aux_weight_and_validation():
    targets = fake_targets()
    low, _ = make_loss()(fake_output(aux=0.0), targets)
    high, _ = make_loss()(fake_output(aux=2.0), targets)
    assert (high - low).item() == pytest.approx(0.02, abs=1e-6)
    no_aux = fake_output()
    no_aux.aux_loss = None
    assert make_loss()(no_aux, targets)[1]["loss_load_balancing"] == 0.0
    with pytest.raises(ValueError):
        GLMILLoss(ENDPOINTS, {"nonexistent": 1.0}, {}, 0.01)
    with pytest.raises(ValueError):
        GLMILLoss(ENDPOINTS, {}, {"os": 2.0}, 0.01)  # a positive-class weight for a survival endpoint


def test_glmil_loss_state_dict_restores_the_memories():
    loss = make_loss(capacity=8)
    for seed in range(3):
        loss(fake_output(seed), fake_targets())
    assert loss.memories["os"].num_stored == 8 and "memories.os.log_risks" in loss.state_dict()
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    buffer.seek(0)
    restored = make_loss(capacity=8)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in loss.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key
    next_original, next_restored = loss(fake_output(9), fake_targets()), restored(fake_output(9), fake_targets())
    assert torch.equal(next_original[0], next_restored[0]) and next_original[1] == next_restored[1]
    restored.reset_memories()
    assert restored.memories["os"].num_stored == 0


def test_losses_under_autocast_are_float32():
    output, targets = fake_output(), fake_targets()
    output.logits = {k: v.bfloat16() for k, v in output.logits.items()}
    output.log_risks = {"os": output.log_risks["os"].bfloat16()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, parts = make_loss()(output, targets)
        bce = masked_bce_with_logits(output.logits["local_failure"], targets["local_failure"],
                                     targets["local_failure_known"])
        cox = cox_partial_likelihood_efron(output.log_risks["os"], targets["os_time"], targets["os_event"],
                                           known=targets["os_known"])
    assert total.dtype == bce.dtype == cox.dtype == torch.float32
    assert torch.isfinite(total)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_losses_on_cuda_match_the_cpu():
    output, targets = fake_output(), fake_targets()
    cpu_total, cpu_parts = make_loss()(output, targets)
    device = torch.device("cuda")
    on_device = GLMILOutput(logits={k: v.detach().to(device) for k, v in output.logits.items()},
                            log_risks={"os": output.log_risks["os"].detach().to(device)},
                            aux_loss=output.aux_loss.detach().to(device))
    loss = make_loss().to(device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        total, parts = loss(on_device, {k: v.to(device) for k, v in targets.items()})
    assert total.device.type == "cuda" and total.dtype == torch.float32
    torch.testing.assert_close(total.cpu(), cpu_total.detach(), rtol=1e-5, atol=1e-5)
    assert parts == pytest.approx(cpu_parts, rel=1e-5, abs=1e-5)
