"""Training losses: masked BCE (binary endpoints), Cox partial likelihood with Efron ties and a
memory of recent risks (survival endpoints), and ``GLMILLoss`` that weighs them together.

Plain functions with explicit arguments and documented reductions (in the spirit of torchsurv);
the Efron likelihood is the one of lifelines / scikit-survival (tested against lifelines).
Every loss is computed in float32 or wider, outside autocast, whatever the network's precision.

Why a memory (``CoxRiskMemory``): the Cox partial likelihood compares each event with the cases
still at risk at its time. A batch of 4 bags has few events and risk sets of 1 to 4 cases, so the
batch loss is a poor, biased estimate of the cohort's (the last event of a batch is compared with
nobody). The memory keeps the detached log-risks of the most recent cases of earlier batches, and
the loss is computed on the batch and the memory together, with gradients flowing only into the
batch. This is the queue / cross-batch-memory idea from contrastive and metric learning (MoCo, He
et al. 2020; XBM, Wang et al. 2020: embeddings drift slowly, so recent stale ones are usable
negatives) applied to Cox risk sets, which, as Kvamme et al. (JMLR 2019) argue for their sampled
Cox-CC loss, need only be a sample of the true risk set. The trade-off: memory scores come from
earlier weights (stale), which is why the memory is a short FIFO (default 256 cases).
See documentation/training_losses.md for the measurements behind the design.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REDUCTIONS = ("mean", "sum")
ENDPOINT_TYPES = ("binary", "survival")


def _no_autocast(tensor: Tensor):
    """A context that turns autocast off on ``tensor``'s device (losses run in float32 or wider)."""
    if torch.is_autocast_enabled(tensor.device.type):
        return torch.autocast(tensor.device.type, enabled=False)
    return nullcontext()


def _compute_dtype(tensor: Tensor) -> torch.dtype:
    """float32 for half precision inputs, float64 stays float64."""
    return torch.promote_types(tensor.dtype, torch.float32)


def _as_event(event: Tensor) -> Tensor:
    return event if event.dtype == torch.bool else event > 0.5


def masked_bce_with_logits(logits: Tensor, targets: Tensor, known: Tensor, pos_weight: float = 1.0) -> Tensor:
    """Binary cross-entropy with logits, averaged over the cases whose outcome is known.

    ``logits`` (B,), ``targets`` (B,) in {0, 1} (entries where ``known`` is False may hold anything,
    NaN included, and affect neither the value nor the gradient), ``known`` (B,) bool. ``pos_weight``
    multiplies the positive term, as in ``torch.nn.functional.binary_cross_entropy_with_logits``
    (reduction ``mean``: divided by the number of known cases, not by the sum of weights).
    Returns a 0 that is still attached to ``logits``' graph when no case is known.
    """
    with _no_autocast(logits):
        known = known.bool()
        selected = logits[known]
        selected = selected.to(_compute_dtype(selected))
        if selected.numel() == 0:
            return selected.sum() * 0.0  # empty sum: 0 with a graph (and no NaN from masked entries)
        weight = torch.as_tensor(pos_weight, dtype=selected.dtype, device=selected.device)
        return F.binary_cross_entropy_with_logits(selected, targets[known].to(selected.dtype), pos_weight=weight)


def _efron_log_likelihood_terms(log_risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """Each case's share of the Efron partial log-likelihood: 0 for a censored case; for an event
    at a time with d tied events D and risk set R (time >= t):

        log_risk_i - 1/d * sum_{k=0}^{d-1} log( sum_R exp(log_risk) - k/d * sum_D exp(log_risk) )

    so the shares of a tie group sum to Efron's term and no order inside the group is chosen.
    Vectorised: one sort; risk-set sums by a reversed logcumsumexp read at the first case of each
    tie group; tie-group sums by scatter with a per-group maximum subtracted (stable for any scale).
    ``event`` bool; ``time`` any real dtype (only sorted and compared).
    """
    order = torch.argsort(time, stable=True)
    eta, is_event = log_risk[order], event[order]
    weight = is_event.to(eta.dtype)
    _, group, counts = torch.unique_consecutive(time[order], return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts  # sorted index of the first case of each time
    n_groups = counts.numel()
    zeros = eta.new_zeros(n_groups)

    log_at_risk = torch.logcumsumexp(eta.flip(0), 0).flip(0)[first]  # log sum over time >= t
    n_tied = zeros.index_add(0, group, weight)
    has_event = n_tied > 0
    shift = torch.full_like(zeros, -torch.inf).scatter_reduce(
        0, group, torch.where(is_event, eta.detach(), -torch.inf), "amax")
    shift = torch.where(has_event, shift, zeros)
    # censored cases are masked before exp: one far above its group's events would overflow to inf * 0
    tied_sum = zeros.index_add(0, group, torch.exp(torch.where(is_event, eta - shift[group], -torch.inf)))
    log_tied = torch.log(torch.where(has_event, tied_sum, torch.ones_like(tied_sum))) + shift

    before = torch.cumsum(weight, 0) - weight  # events sorted before each case
    rank_in_group = before - before[first][group]  # k = 0 .. d-1 for the events of a group
    fraction = rank_in_group / n_tied.clamp(min=1)[group]
    # log(S_R - k/d S_D) = log S_R + log1p(-k/d * S_D/S_R), with S_D <= S_R and k/d < 1
    log_denominator = log_at_risk[group] + torch.log1p(-fraction * torch.exp(log_tied - log_at_risk)[group])
    mean_log_denominator = zeros.index_add(0, group, log_denominator * weight) / n_tied.clamp(min=1)
    terms = weight * (eta - mean_log_denominator[group])
    return torch.empty_like(terms).scatter(0, order, terms)


def _known_cases(log_risk: Tensor, time: Tensor, event: Tensor, known: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """The known cases' log-risks (float32 or wider), times (float64) and events (bool)."""
    if not (log_risk.dim() == time.dim() == event.dim() == 1 and log_risk.shape == time.shape == event.shape):
        raise ValueError(f"log_risk, time and event must be (B,) tensors, got {tuple(log_risk.shape)}, "
                         f"{tuple(time.shape)}, {tuple(event.shape)}")
    if known is not None:
        known = known.bool()
        log_risk, time, event = log_risk[known], time[known], event[known]
    return log_risk.to(_compute_dtype(log_risk)), time.to(torch.float64), _as_event(event)


def _reduce(total: Tensor, n_events: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return total
    return total / n_events.clamp(min=1).to(total.dtype)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def cox_partial_likelihood_efron(log_risk: Tensor, time: Tensor, event: Tensor, reduction: str = "mean",
                                 known: Tensor | None = None) -> Tensor:
    """Negative Cox partial log-likelihood with Efron's handling of tied event times.

    ``log_risk`` (B,) the model's log relative hazard; ``time`` (B,) event or censoring time;
    ``event`` (B,) bool or {0, 1} float; ``known`` (B,) bool, optional: cases with an unknown
    outcome are left out entirely (their time and event may be NaN). ``reduction``: ``"mean"``
    divides by the number of events (lifelines' ``log_likelihood_`` is minus the ``"sum"``),
    ``"sum"`` does not. Without any event the result is a 0 attached to ``log_risk``'s graph.
    Computed in float32 (float64 inputs stay float64), with autocast off.
    """
    _check_reduction(reduction)
    with _no_autocast(log_risk):
        log_risk, time, event = _known_cases(log_risk, time, event, known)
        total = -_efron_log_likelihood_terms(log_risk, time, event).sum()
        return _reduce(total, event.sum(), reduction)


class CoxRiskMemory(nn.Module):
    """A FIFO of the ``capacity`` most recent (log-risk, time, event) triples seen in training,
    used to complete the risk sets (and the baseline hazard) of small batches.

    ``memory(log_risk, time, event, known)`` computes the Efron loss on the union of the batch's
    known cases and the memory. Gradients reach only the batch's log-risks (memory entries are
    detached constants); the memory's events contribute terms too, because their denominators
    contain the batch's cases at risk: that is how a censored case, or a late one, learns that it
    survived the events before it. Without them (the batch's events only) a batch case would be
    pushed down only by the batch's own 1 or 2 events, against a denominator of ~260 cases, so the
    gradient loses nearly all of its risk-set part, which biases training (it diverges in our
    simulation, see the documentation). The gradient is multiplied by (batch + memory cases) /
    batch cases, so that its average over batches estimates the gradient of the whole cohort's
    mean loss (the union's events and risk sets are a sample of the cohort's, in proportion).

    Value (what is logged): the union's loss minus its null value (every log-risk equal), per event
    for ``"mean"``. The null value depends only on times and events, so subtracting it changes no
    gradient, but it keeps the value comparable while the memory fills and between memory sizes:
    0 for a constant model, negative when the model ranks the cases better than chance.

    In training mode (``memory.train()``, the default) each call then stores the batch's known
    cases (detached); in eval mode the memory is used but not changed. Buffers hold the state, so
    ``state_dict``/``load_state_dict`` restore it exactly (plain tensors, ``weights_only`` loads)
    and ``.to(device)`` moves it. With DDP each rank has its own memory. ``capacity=0`` gives the
    batch-only loss (centred the same way).
    """

    def __init__(self, capacity: int = 256):
        super().__init__()
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self.register_buffer("log_risks", torch.zeros(self.capacity, dtype=torch.float32))
        self.register_buffer("times", torch.zeros(self.capacity, dtype=torch.float64))
        self.register_buffer("events", torch.zeros(self.capacity, dtype=torch.bool))
        self.register_buffer("size", torch.zeros((), dtype=torch.long))  # filled slots
        self.register_buffer("position", torch.zeros((), dtype=torch.long))  # next slot to write (the oldest)

    @property
    def num_stored(self) -> int:
        return int(self.size)

    def reset(self) -> None:
        """Forget everything (e.g. at the start of a new fold)."""
        for buffer in (self.log_risks, self.times, self.events, self.size, self.position):
            buffer.zero_()

    def contents(self) -> tuple[Tensor, Tensor, Tensor]:
        """Views of the stored (log-risks, times, events), in slot order."""
        n = self.num_stored
        return self.log_risks[:n], self.times[:n], self.events[:n]

    @torch.no_grad()
    def push(self, log_risk: Tensor, time: Tensor, event: Tensor) -> None:
        """Store cases (already restricted to known outcomes), overwriting the oldest when full."""
        if self.capacity == 0 or log_risk.numel() == 0:
            return
        log_risk, time, event = log_risk[-self.capacity:], time[-self.capacity:], event[-self.capacity:]
        count = log_risk.numel()
        slots = (int(self.position) + torch.arange(count, device=self.log_risks.device)) % self.capacity
        self.log_risks[slots] = log_risk.detach().to(self.log_risks)
        self.times[slots] = time.to(self.times)
        self.events[slots] = _as_event(event).to(self.events.device)
        self.position.fill_((int(self.position) + count) % self.capacity)
        self.size.fill_(min(self.capacity, self.num_stored + count))

    def forward(self, log_risk: Tensor, time: Tensor, event: Tensor, known: Tensor | None = None,
                reduction: str = "mean") -> Tensor:
        """The memory-completed Efron loss of a batch (see the class docstring); a 0 attached to
        ``log_risk``'s graph when no batch case is known."""
        _check_reduction(reduction)
        with _no_autocast(log_risk):
            batch_risk, batch_time, batch_event = _known_cases(log_risk, time, event, known)
            n_batch = batch_risk.numel()
            if n_batch == 0:
                return batch_risk.sum() * 0.0
            memory_risk, memory_time, memory_event = self.contents()
            union_risk = torch.cat([batch_risk, memory_risk.to(batch_risk)])
            union_time = torch.cat([batch_time, memory_time.to(batch_time.device)])
            union_event = torch.cat([batch_event, memory_event.to(batch_event.device)])
            n_events = union_event.sum()
            loss = _reduce(-_efron_log_likelihood_terms(union_risk, union_time, union_event).sum(), n_events, reduction)
            with torch.no_grad():
                null_terms = _efron_log_likelihood_terms(torch.zeros_like(union_risk), union_time, union_event)
                null = _reduce(-null_terms.sum(), n_events, reduction)
            gradient_scale = union_risk.numel() / n_batch
            # value: loss - null; gradient: gradient_scale * d(loss)
            result = (loss - null) + (gradient_scale - 1.0) * (loss - loss.detach())
            if self.training:
                self.push(batch_risk, batch_time, batch_event)
            return result


class GLMILLoss(nn.Module):
    """The network's training loss: sum_k w_k * loss_k + load_balancing_weight * aux_loss.

    Binary endpoint ``name``: ``masked_bce_with_logits`` on ``output.logits[name]`` with
    ``targets[name]`` and ``targets[name + "_known"]`` and the endpoint's positive-class weight.
    Survival endpoint ``name``: its ``CoxRiskMemory`` on ``output.log_risks[name]`` with
    ``targets[name + "_time"]``, ``targets[name + "_event"]`` and ``targets[name + "_known"]``.
    Missing endpoint or positive-class weights default to 1; weights for names that are not
    endpoints are an error. An ``any_lesion`` endpoint (``"aggregation": "any_lesion"``) whose
    lesions have known outcomes (``targets["instance_outcomes"]`` (B, N, A), NaN = unknown, padding
    and dropped lesions included) also gets a lesion-level BCE on ``output.instance_logits[name]``
    over those lesions, weighted ``lesion_loss_weight`` x the endpoint's weight (component
    ``lesion_<endpoint>``): the case-level noisy-OR loss supervises every case, the lesion loss the
    lesions whose fate is known. ``forward`` returns (total, parts): ``parts`` has each unweighted
    component as a float, ``loss_<endpoint>``, ``loss_lesion_<endpoint>`` and
    ``loss_load_balancing``. The memories are submodules, so ``state_dict`` holds them and a
    checkpoint restores them.
    """

    def __init__(self, endpoints: list[dict[str, Any]], endpoint_weights: Mapping[str, float],
                 positive_class_weights: Mapping[str, float], load_balancing_weight: float,
                 memory_capacity: int = 256, lesion_loss_weight: float = 1.0):
        super().__init__()
        self.endpoints = [{"name": str(e["name"]), "type": str(e["type"])} for e in endpoints]
        self.lesion_endpoints = [str(e["name"]) for e in endpoints if e.get("aggregation") == "any_lesion"]
        self.lesion_loss_weight = float(lesion_loss_weight)
        names = [e["name"] for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"endpoint names must be unique, got {names}")
        for endpoint in self.endpoints:
            if endpoint["type"] not in ENDPOINT_TYPES:
                raise ValueError(f"endpoint {endpoint['name']!r}: type must be one of {ENDPOINT_TYPES}")
        binary = {e["name"] for e in self.endpoints if e["type"] == "binary"}
        for label, weights, allowed in (("endpoint_weights", endpoint_weights, set(names)),
                                        ("positive_class_weights", positive_class_weights, binary)):
            extra = sorted(set(weights) - allowed)
            if extra:
                raise ValueError(f"{label} has {extra}, expected names among {sorted(allowed)}")
        self.endpoint_weights = {name: float(endpoint_weights.get(name, 1.0)) for name in names}
        self.positive_class_weights = {name: float(positive_class_weights.get(name, 1.0)) for name in binary}
        self.load_balancing_weight = float(load_balancing_weight)
        self.memories = nn.ModuleDict({e["name"]: CoxRiskMemory(memory_capacity)
                                       for e in self.endpoints if e["type"] == "survival"})

    def _lesion_components(self, output: Any, targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Lesion-level BCE of each any_lesion endpoint over the lesions with a known outcome."""
        outcomes = targets.get("instance_outcomes")
        if outcomes is None or not self.lesion_endpoints or not getattr(output, "instance_logits", None):
            return {}
        out = {}
        for a, name in enumerate(self.lesion_endpoints):
            logits = output.instance_logits[name]  # (B, N)
            labels = outcomes[..., a]
            out[name] = masked_bce_with_logits(logits.reshape(-1), labels.reshape(-1), ~torch.isnan(labels.reshape(-1)))
        return out

    def reset_memories(self) -> None:
        for memory in self.memories.values():
            memory.reset()

    def forward(self, output: Any, targets: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """``output`` a ``GLMILOutput``; ``targets`` as in the class docstring."""
        components: dict[str, Tensor] = {}
        for endpoint in self.endpoints:
            name = endpoint["name"]
            known = targets[f"{name}_known"]
            if endpoint["type"] == "binary":
                components[name] = masked_bce_with_logits(output.logits[name], targets[name], known,
                                                          self.positive_class_weights[name])
            else:
                components[name] = self.memories[name](output.log_risks[name], targets[f"{name}_time"],
                                                       targets[f"{name}_event"], known)
        lesion_components = self._lesion_components(output, targets)
        reference = next(iter(components.values()), None)
        aux = output.aux_loss
        if aux is None:
            aux = reference.new_zeros(()) if reference is not None else torch.zeros(())
        aux = aux.float()
        total = self.load_balancing_weight * aux
        for name, value in components.items():
            total = total + self.endpoint_weights[name] * value
        for name, value in lesion_components.items():
            total = total + self.lesion_loss_weight * self.endpoint_weights[name] * value
        parts = {f"loss_{name}": float(value.detach()) for name, value in components.items()}
        parts.update({f"loss_lesion_{name}": float(value.detach()) for name, value in lesion_components.items()})
        parts["loss_load_balancing"] = float(aux.detach())
        return total, parts
