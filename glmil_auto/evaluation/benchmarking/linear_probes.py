"""Linear probes on frozen embeddings: how much of a known image property an encoder's embedding
holds linearly, and whether one encoder (pretrained) holds more of it than another (random init).

A probe is a standardised linear model (ridge for a continuous target, L2 logistic for a binary
one) fitted out of fold, its penalty chosen by an inner cross-validation. Folds are grouped by
case: lesions of one patient share acquisition, intensity scaling and anatomy, and a probe that
sees some of them in training would score the patient, not the lesion property. Two encoders are
compared on the same folds (paired); the interval of their score difference comes from a case-level
(cluster) bootstrap of the out-of-fold predictions, again because lesions of one case are not
independent. "Pretrained beats random initialisation by a margin the probe's interval excludes"
means that interval excludes 0.

The bootstrap resamples the evaluation, not the fitting: it holds the out-of-fold predictions
fixed, so the interval covers which cases were drawn, not which folds the probe was fitted on.

    probe_folds               the outer fold of every sample (grouped, stratified for a binary target)
    probe_predictions         out-of-fold predictions of the probe
    probe_score               R² (regression) or ROC AUC (classification)
    paired_probe_comparison   both scores, their difference and case-bootstrap 95 % intervals
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

ProbeKind = Literal["regression", "classification"]
KINDS = ("regression", "classification")
RIDGE_ALPHAS = np.logspace(-3, 5, 17)  # up to a penalty that predicts the mean: noise scores R² ≈ 0
LOGISTIC_CS = np.logspace(-4, 1, 11)  # C = 10 on standardised features barely penalises
INNER_SPLITS = 4


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"probe kind must be one of {KINDS}, got {kind!r}")


def _targets(y: ArrayLike, kind: str) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or not np.isfinite(y).all():
        raise ValueError("probe targets must be a finite 1-D array")
    if kind == "classification":
        if not np.isin(y, (0.0, 1.0)).all() or len(np.unique(y)) != 2:
            raise ValueError("a classification probe needs a 0/1 target holding both classes")
        return y.astype(int)
    return y


def _grouped_splits(kind: str, y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs of a grouped k-fold, ``k = min(n_splits, number of groups)``.

    Binary targets: :class:`StratifiedGroupKFold` (shuffled). Continuous ones: the groups in a
    seeded random order, dealt to the folds in turn (scikit-learn's ``GroupKFold`` shuffles only
    from 1.6 on; ``setup.py`` allows 1.2)."""
    names, index = np.unique(groups, return_inverse=True)
    k = min(n_splits, len(names))
    if k < 2:
        raise ValueError(f"a grouped cross-validation needs at least 2 groups, got {len(names)}")
    if kind == "classification":
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros((len(y), 1)), y, groups))
    fold_of_group = np.empty(len(names), dtype=int)
    fold_of_group[np.random.default_rng(seed).permutation(len(names))] = np.arange(len(names)) % k
    folds = fold_of_group[index]
    return [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(k)]


def probe_folds(y: ArrayLike, groups: ArrayLike, kind: ProbeKind, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """The outer fold (0..k-1) of every sample, ``k = min(n_splits, number of groups)``: every group
    (case) lies in exactly one fold; a binary target is stratified so each fold holds both classes."""
    _check(kind)
    y = _targets(y, kind)
    groups = np.asarray(groups)
    if groups.shape != y.shape:
        raise ValueError(f"groups {groups.shape} and targets {y.shape} differ in shape")
    folds = np.full(len(y), -1, dtype=int)
    for fold, (_, test) in enumerate(_grouped_splits(kind, y, groups, n_splits, seed)):
        folds[test] = fold
    return folds


class _InnerCVLogistic(BaseEstimator, ClassifierMixin):
    """An L2 logistic regression whose C is chosen by the AUC of a given inner cross-validation,
    walking the C grid from the strongest penalty with warm starts (as ``LogisticRegressionCV``
    does, whose arguments change across scikit-learn versions), then refitted on all samples."""

    def __init__(self, inner: list[tuple[np.ndarray, np.ndarray]], Cs: np.ndarray = LOGISTIC_CS):
        self.inner = inner
        self.Cs = Cs

    def fit(self, X: np.ndarray, y: np.ndarray) -> "_InnerCVLogistic":
        scores = np.zeros(len(self.Cs))
        for train, test in self.inner:
            model = LogisticRegression(max_iter=5000, warm_start=True)
            for j, c in enumerate(self.Cs):
                model.set_params(C=c).fit(X[train], y[train])
                scores[j] += roc_auc_score(y[test], model.decision_function(X[test])) if len(set(y[test])) == 2 else 0.0
        self.C_ = float(self.Cs[int(np.argmax(scores))])  # ties: the strongest penalty
        self.model_ = LogisticRegression(C=self.C_, max_iter=5000).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)


def _probe(kind: str, y: np.ndarray, groups: np.ndarray, seed: int):
    """The probe for one outer training set; its penalty is chosen by a grouped inner CV."""
    inner = _grouped_splits(kind, y, groups, INNER_SPLITS, seed + 1)
    model = RidgeCV(alphas=RIDGE_ALPHAS, cv=inner) if kind == "regression" else _InnerCVLogistic(inner)
    return make_pipeline(StandardScaler(), model)


def probe_predictions(X: ArrayLike, y: ArrayLike, groups: ArrayLike, kind: ProbeKind, n_splits: int = 5,
                      seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions (n,) of a standardised linear probe of ``y`` on the rows of ``X``:
    a ridge prediction (regression) or the probability of class 1 (classification), each sample
    predicted by the probe fitted on the folds that do not hold its case (:func:`probe_folds`).

    The same ``seed`` gives the same folds for any ``X``, so two embeddings' predictions are paired."""
    X = np.asarray(X, dtype=float)
    y_checked = _targets(y, kind)
    groups = np.asarray(groups)
    if X.ndim != 2 or X.shape[0] != len(y_checked) or not np.isfinite(X).all():
        raise ValueError(f"X must be a finite (n, d) array with n = {len(y_checked)} rows, got {X.shape}")
    folds = probe_folds(y_checked, groups, kind, n_splits, seed)
    out = np.full(len(y_checked), np.nan)
    # one BLAS thread: the matrices are small, and on a busy machine each of the optimiser's many
    # small BLAS calls otherwise waits for its threads (10x slower; as training/starting_point/lesion_models/fitting.py)
    with threadpool_limits(limits=1, user_api="blas"):
        for fold in np.unique(folds):
            train, test = folds != fold, folds == fold
            model = _probe(kind, y_checked[train], groups[train], seed)
            model.fit(X[train], y_checked[train])
            out[test] = model.predict(X[test]) if kind == "regression" else model.predict_proba(X[test])[:, 1]
    return out


def probe_score(y: ArrayLike, predictions: ArrayLike, kind: ProbeKind,
                sample_weight: ArrayLike | None = None) -> float:
    """R² (:func:`sklearn.metrics.r2_score`) or ROC AUC (:func:`sklearn.metrics.roc_auc_score`)."""
    _check(kind)
    y = np.asarray(y, dtype=float)
    p = np.asarray(predictions, dtype=float)
    if kind == "regression":
        return float(r2_score(y, p, sample_weight=sample_weight))
    return float(roc_auc_score(y.astype(int), p, sample_weight=sample_weight))


def _interval(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) else [float("nan")] * 2


def paired_probe_comparison(y: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, groups: ArrayLike,
                            kind: ProbeKind, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Scores of predictions ``a`` (e.g. random init) and ``b`` (pretrained) of the same targets,
    their difference ``b - a``, and 95 % percentile intervals of each from a case-level bootstrap:
    cases are drawn with replacement and a drawn case brings all its samples (as integer weights;
    a draw with one class only is drawn again for an AUC). Both scores use the same draws, so
    the difference's interval is paired; ``excludes_zero`` says whether it excludes 0."""
    _check(kind)
    y = np.asarray(y, dtype=float)
    a, b = np.asarray(pred_a, dtype=float), np.asarray(pred_b, dtype=float)
    groups = np.asarray(groups)
    if not (y.shape == a.shape == b.shape == groups.shape) or y.ndim != 1:
        raise ValueError("y, both predictions and groups must be 1-D arrays of one length")
    names, index = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    boot_a, boot_b = [], []
    attempts = 0
    while len(boot_a) < n_boot and attempts < 20 * max(n_boot, 1):
        attempts += 1
        weight = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))[index].astype(float)
        if kind == "classification" and len(np.unique(y[weight > 0])) < 2:
            continue
        boot_a.append(probe_score(y, a, kind, weight))
        boot_b.append(probe_score(y, b, kind, weight))
    boot_a_array, boot_b_array = np.asarray(boot_a), np.asarray(boot_b)
    score_a, score_b = probe_score(y, a, kind), probe_score(y, b, kind)
    ci_difference = _interval(boot_b_array - boot_a_array)
    return {"kind": kind, "n": int(len(y)), "n_groups": int(len(names)), "n_boot": int(len(boot_a)),
            "score_a": score_a, "score_b": score_b, "difference": score_b - score_a,
            "ci_a": _interval(boot_a_array), "ci_b": _interval(boot_b_array), "ci_difference": ci_difference,
            "excludes_zero": bool(ci_difference[0] > 0 or ci_difference[1] < 0)}
