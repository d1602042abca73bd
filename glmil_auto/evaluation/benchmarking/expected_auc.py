"""The expected AUC of a score under known outcome probabilities (the synthetic cohort's truth).

With a few dozen events the drawn outcomes alone move an AUC by several hundredths, which hides
the differences between models. When the true probabilities ``p`` are known (a simulated cohort),
the AUC can be averaged over the outcome draws instead: every ordered pair of distinct cases
``(i, j)`` is a (positive, negative) pair with probability ``p_i (1 - p_j)``, so

    E-AUC = sum_{i != j} p_i (1 - p_j) [s_i > s_j  (+ 1/2 if s_i = s_j)] / sum_{i != j} p_i (1 - p_j).

This is the ratio of the expected numbers of concordant and of all positive-negative pairs (the
standard "expected AUC" of a score under a probability model, e.g. the c-statistic a model would
reach in an infinitely repeated cohort of these patients). No library has it, so it is written
here and tested against a brute-force double loop. The truth probabilities themselves reach the
ceiling of this scale.
"""

from __future__ import annotations

import numpy as np


def expected_auc(scores: np.ndarray, probabilities: np.ndarray) -> float:
    """E-AUC of ``scores`` under outcome ``probabilities`` (both (n,), NaN-free); O(n log n).

    Ties in ``scores`` count one half. NaN when there is no pair with positive weight."""
    s = np.asarray(scores, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    if s.shape != p.shape or s.ndim != 1:
        raise ValueError(f"scores and probabilities must be 1-D of one length, got {s.shape} and {p.shape}")
    if not (np.isfinite(s).all() and np.isfinite(p).all()) or (p < 0).any() or (p > 1).any():
        raise ValueError("scores must be finite and probabilities finite in [0, 1]")
    q = 1.0 - p
    total = p.sum() * q.sum() - (p * q).sum()  # sum over i != j of p_i q_j
    if total <= 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    s_sorted, p_sorted, q_sorted = s[order], p[order], q[order]
    # per group of tied scores: q mass strictly below, and q mass within the group
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    group_q = np.add.reduceat(q_sorted, starts)
    group_p = np.add.reduceat(p_sorted, starts)
    group_pq = np.add.reduceat(p_sorted * q_sorted, starts)
    below = np.r_[0.0, np.cumsum(group_q)[:-1]]
    concordant = (group_p * below).sum()
    tied = (group_p * group_q - group_pq).sum()  # pairs i != j inside a tie group
    return float((concordant + 0.5 * tied) / total)
