"""The noisy-OR's plain numerics: stable log/sigmoid helpers, the case probability and the penalised
likelihood with its gradient."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit as sigmoid  # the logistic function, overflow-free


def log1mexp(s: np.ndarray) -> np.ndarray:
    """log(1 - exp(s)) for s < 0, accurate near 0 and for very negative s (Maechler 2012)."""
    s = np.asarray(s, dtype=float)
    out = np.empty_like(s)
    near = s > -math.log(2.0)
    out[near] = np.log(-np.expm1(s[near]))
    out[~near] = np.log1p(-np.exp(s[~near]))
    return out


def softplus(a: np.ndarray) -> np.ndarray:
    """log(1 + exp(a)), overflow-free."""
    return np.logaddexp(0.0, a)


def noisy_or_log_survival(lesion_logits: np.ndarray, lesion_case: np.ndarray, case_logits: np.ndarray) -> np.ndarray:
    """log P(no failure) per case: -sum_i softplus(a_i) - softplus(g), since log(1 - sigmoid(a)) =
    -softplus(a). ``lesion_case`` holds each lesion's case index into ``case_logits``."""
    s = -np.bincount(lesion_case, weights=softplus(lesion_logits), minlength=len(case_logits))
    return s - softplus(case_logits)


def noisy_or_probability(lesion_logits: np.ndarray, lesion_case: np.ndarray, case_logits: np.ndarray) -> np.ndarray:
    """P(case fails) = 1 - prod_i (1 - sigmoid(a_i)) (1 - sigmoid(g)), computed as -expm1(log P(no failure))."""
    return -np.expm1(noisy_or_log_survival(lesion_logits, lesion_case, case_logits))


def noisy_or_objective(params: np.ndarray, x: np.ndarray, lesion_case: np.ndarray, z: np.ndarray, y: np.ndarray,
                       l2: float) -> tuple[float, np.ndarray]:
    """Penalised negative Bernoulli log-likelihood of the noisy-OR model and its gradient.

    ``params`` = [w (p), b, c (q), b0]; lesion logits a = x w + b, case logits g = z c + b0,
    S = log P(no failure) <= 0. Per case: -[y log(1 - e^S) + (1 - y) S], with log(1 - e^S)
    by :func:`log1mexp`; dNLL/dS = y / expm1(-S) - (1 - y); dS/da_i = -sigmoid(a_i),
    dS/dg = -sigmoid(g). Penalty 0.5 l2 (|w|^2 + |c|^2), intercepts unpenalised.
    """
    p, q = x.shape[1], z.shape[1]
    w, b, c, b0 = params[:p], params[p], params[p + 1:p + 1 + q], params[p + 1 + q]
    a = x @ w + b
    g = z @ c + b0
    s = np.minimum(noisy_or_log_survival(a, lesion_case, g), -1e-300)
    nll = -float(np.sum(y * log1mexp(s) + (1.0 - y) * s))
    d_s = y / np.expm1(-s) - (1.0 - y)
    d_a = -d_s[lesion_case] * sigmoid(a)
    d_g = -d_s * sigmoid(g)
    grad = np.concatenate([x.T @ d_a + l2 * w, [d_a.sum()], z.T @ d_g + l2 * c, [d_g.sum()]])
    return nll + 0.5 * l2 * float(w @ w + c @ c), grad
