"""Metrics computed after each validation pass: AUC per binary endpoint, Harrell's C per survival
endpoint (scikit-learn's and scikit-survival's implementations), and their mean."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored


def binary_auc(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """AUC over the cases with a known outcome; NaN when only one class is present."""
    known = ~np.isnan(targets)
    y = targets[known]
    if y.size == 0 or np.unique(y).size < 2:
        return math.nan
    return float(roc_auc_score(y, probabilities[known]))


def harrell_c(log_risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C over known outcomes; NaN without any comparable pair."""
    known = ~(np.isnan(time) | np.isnan(event))
    if known.sum() < 2 or event[known].sum() == 0:
        return math.nan
    try:
        return float(concordance_index_censored(event[known].astype(bool), time[known], log_risk[known])[0])
    except ValueError:  # no comparable pairs
        return math.nan


def endpoint_metrics(predictions: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                     endpoints: list[dict[str, str]]) -> dict[str, float]:
    """``{endpoint: AUC or C, ..., "mean": mean of the finite ones}``.

    ``predictions[name]`` is a probability (binary) or a log-risk (survival); ``targets`` uses the
    loader's keys (``name`` / ``name_time`` + ``name_event``).
    """
    out: dict[str, float] = {}
    for endpoint in endpoints:
        name = endpoint["name"]
        if endpoint["type"] == "binary":
            out[name] = binary_auc(predictions[name], targets[name])
        else:
            out[name] = harrell_c(predictions[name], targets[f"{name}_time"], targets[f"{name}_event"])
    finite = [v for v in out.values() if not math.isnan(v)]
    out["mean"] = float(np.mean(finite)) if finite else math.nan
    return out


def paired_bootstrap_standard_error(predictions: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                                    targets: dict[str, np.ndarray], endpoints: list[dict[str, str]],
                                    n_resamples: int = 100, seed: int = 0) -> float:
    """Standard error of the difference of :func:`endpoint_metrics`' ``mean`` between two sets of
    predictions of the same cases (``predictions`` minus ``reference``), over seeded case
    bootstrap resamples shared by both: the noise in "this epoch beats the starting point".

    Paired, because an epoch's predictions are a small correction of the starting point's: the
    standard error of their difference is far smaller than that of either metric, and a margin of
    the unpaired size would keep the starting point whatever the network learnt."""
    n = len(next(iter(predictions.values()))) if predictions else 0
    if n < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(int(n_resamples)):
        rows = rng.integers(0, n, n)
        resampled = {k: np.asarray(v)[rows] for k, v in targets.items()}
        a = endpoint_metrics({k: np.asarray(v)[rows] for k, v in predictions.items()}, resampled, endpoints)["mean"]
        b = endpoint_metrics({k: np.asarray(v)[rows] for k, v in reference.items()}, resampled, endpoints)["mean"]
        if not (math.isnan(a) or math.isnan(b)):
            differences.append(a - b)
    return float(np.std(differences, ddof=1)) if len(differences) >= 10 else math.nan
