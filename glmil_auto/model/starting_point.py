"""The network's starting point: the best hand-crafted model on its own inputs, which the CNN
evidence corrects.

Principle (DESIGN.md): the network sees the clinical variables, the lesion count and volumes and
every lesion, so it must never score below a linear model on the clinical inputs, nor below the
best hand-crafted lesion model. :class:`StartingPoint` makes both structural. It holds, per
endpoint, the coefficients of a model fitted on the fold's training cases
(``glmil_auto.training.starting_point.radiomics_offset_fit``) and the network adds its output to heads that start
at zero, so the untrained network *is* that model:

- a case-level endpoint: a penalised logistic (binary) or Cox (survival) linear predictor over the
  case design ``[clinical encoder inputs, log1p(lesion count), log1p(total volume mL), patient
  aggregates of the stored radiomic features]``;
- an ``any_lesion`` endpoint (local failure: the case fails if any treated lesion fails): a
  lesion-level noisy-OR. Each lesion gets the logit ``w . x_i + d . z + b`` from its stored
  radiomic features ``x_i`` (missing values imputed with the training medians) and the case's
  clinical design ``z`` (patient factors shift every lesion's risk); the case-level linear
  predictor above is the leak, the failure source that no lesion explains:
  ``P(case) = 1 - prod_i (1 - sigmoid(l_i)) * (1 - sigmoid(leak))``
  (:func:`noisy_or_logit`). This is how the 2017 Data Science Bowl's winner pooled lung nodules,
  and the form of the synthetic cohort's true local-failure model.

Coefficients are buffers: they travel in the checkpoint and are not trained. Standardisation and
imputation are folded into them (weights per raw input, a median per lesion feature), so the
network needs no statistics of its own. Everything runs in float32 with autocast off (a bfloat16
matmul would round the starting point's logits by about 1 %).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# log(1 - P(case)) never reaches 0 in float32 (a leak logit below about -90 would give exactly 0)
MAX_LOG_SURVIVAL = -1e-30
# an unfitted lesion's logit (about 12 %): low enough that a few lesions do not dominate the case,
# high enough that a lesion head learning from zero gets a gradient (sigmoid'(-2) = 0.10)
UNFITTED_LESION_LOGIT = -2.0


def noisy_or_logit(lesion_log_survival: torch.Tensor, leak_logit: torch.Tensor) -> torch.Tensor:
    """The case's logit when it fails if any lesion fails or the leak fires.

    ``lesion_log_survival`` = ``sum_i log(1 - sigmoid(l_i))`` over the case's real lesions (0 for a
    case without lesions), ``leak_logit`` the leak's logit; both ``(B,)``. With
    ``s = lesion_log_survival - softplus(leak_logit)`` = log P(no failure), the logit is
    ``log(1 - e^s) - s``, computed without cancellation."""
    s = (lesion_log_survival.float() - F.softplus(leak_logit.float())).clamp(max=MAX_LOG_SURVIVAL)
    log_failure = torch.where(s > -0.6931471805599453, torch.log(-torch.expm1(s)), torch.log1p(-torch.exp(s)))
    return log_failure - s


def lesion_log_survival(lesion_logits: torch.Tensor, instance_mask: torch.Tensor) -> torch.Tensor:
    """``sum_i log(1 - sigmoid(l_i))`` over real instances: ``lesion_logits`` (B, A, N), mask (B, N)
    -> (B, A). Padding contributes exactly 0, whatever its logits are."""
    terms = -F.softplus(lesion_logits.float())
    return torch.where(instance_mask.bool().unsqueeze(1), terms, torch.zeros_like(terms)).sum(dim=-1)


class StartingPoint(nn.Module):
    """Per-endpoint starting point (zeros until fitted): a case-level linear predictor for every
    endpoint and, for the endpoints at ``lesion_endpoints`` (indices into the plans' endpoint list),
    lesion logits for a noisy-OR.

    ``clinical_dim``: clinical encoder inputs + the two volumetric terms (``z``);
    ``case_feature_dim``: the stored patient aggregates; ``lesion_feature_dim``: the stored lesion
    features. The case design is ``[z, case features]``."""

    def __init__(self, clinical_dim: int, n_endpoints: int, case_feature_dim: int = 0, lesion_feature_dim: int = 0,
                 lesion_endpoints: tuple[int, ...] = ()):
        super().__init__()
        self.clinical_dim, self.case_feature_dim = clinical_dim, case_feature_dim
        self.design_dim = clinical_dim + case_feature_dim
        self.lesion_feature_dim = lesion_feature_dim
        self.lesion_endpoints = tuple(int(k) for k in lesion_endpoints)
        a = len(self.lesion_endpoints)
        self.register_buffer("weight", torch.zeros(n_endpoints, self.design_dim))
        self.register_buffer("bias", torch.zeros(n_endpoints))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("lesion_median", torch.zeros(lesion_feature_dim))
        self.register_buffer("lesion_weight", torch.zeros(a, lesion_feature_dim))
        self.register_buffer("lesion_shift", torch.zeros(a, clinical_dim))
        self.register_buffer("lesion_bias", torch.full((a,), UNFITTED_LESION_LOGIT))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of the clinical offset (before radiomic features and lesion endpoints)
        for name in ("lesion_median", "lesion_weight", "lesion_shift", "lesion_bias"):
            state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_coefficients(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """The case-level linear predictors, ``(K, design_dim)`` and ``(K,)``."""
        if tuple(weight.shape) != tuple(self.weight.shape) or tuple(bias.shape) != tuple(self.bias.shape):
            raise ValueError(f"starting point coefficients must have shapes {tuple(self.weight.shape)} and "
                             f"{tuple(self.bias.shape)}, got {tuple(weight.shape)} and {tuple(bias.shape)}")
        self.weight.copy_(weight)
        self.bias.copy_(bias)
        self.fitted.fill_(True)

    def set_lesion_coefficients(self, median: torch.Tensor, weight: torch.Tensor, shift: torch.Tensor,
                                bias: torch.Tensor) -> None:
        """The lesion models of the ``any_lesion`` endpoints: imputation medians ``(L,)``, weights
        ``(A, L)`` per raw lesion feature, shifts ``(A, clinical_dim)`` per raw clinical input, biases ``(A,)``."""
        for name, value in (("lesion_median", median), ("lesion_weight", weight), ("lesion_shift", shift),
                            ("lesion_bias", bias)):
            target = getattr(self, name)
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{name} must have shape {tuple(target.shape)}, got {tuple(value.shape)}")
            target.copy_(value)

    @staticmethod
    def _float32(device: torch.device):
        # autocast knows no "meta" device (the planner's memory measurement runs there)
        return torch.autocast(device.type if device.type != "meta" else "cpu", enabled=False)

    def forward(self, design: torch.Tensor) -> torch.Tensor:
        """``design`` (B, design_dim) -> (B, K) case-level linear predictor (the leak of a noisy-OR
        endpoint)."""
        with self._float32(design.device):
            return design.float() @ self.weight.float().t() + self.bias.float()

    def lesion_logits(self, instance_features: torch.Tensor, clinical_design: torch.Tensor) -> torch.Tensor:
        """``instance_features`` (B, N, L) with NaN for undefined features, ``clinical_design``
        (B, clinical_dim) -> (B, A, N) lesion logits of the noisy-OR endpoints."""
        with self._float32(instance_features.device):
            x = instance_features.float()
            x = torch.where(torch.isnan(x), self.lesion_median.float().expand_as(x), x)
            per_lesion = torch.einsum("bnl,al->ban", x, self.lesion_weight.float())
            per_case = clinical_design.float() @ self.lesion_shift.float().t() + self.lesion_bias.float()  # (B, A)
            return per_lesion + per_case.unsqueeze(-1)
