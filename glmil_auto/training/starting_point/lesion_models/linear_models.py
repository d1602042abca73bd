"""Patient-level linear models: L2 logistic regression and ridge Cox, penalty chosen by inner
cross-validation."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from glmil_auto.training.starting_point.lesion_models.fitting import (
    _as_matrix, _kfold, _known, _log_likelihood, _single_threaded_blas, _Standardiser, _stratified_folds,
)


class RadiomicsLogistic:
    """Median imputation + standardisation + L2 logistic regression, C chosen from a small grid by
    seeded inner stratified K-fold cross-validation on the held-out log-loss (ties: the smaller C).

    ``fit(X, y)``: ``X`` a DataFrame (columns remembered, ``predict_proba`` selects them by name)
    or an array; ``y`` in {0, 1, NaN}: cases with an unknown outcome are left out. The inner
    loop is written out (rather than ``LogisticRegressionCV``) so that imputation and scaling are
    refitted inside every fold and the result does not depend on the scikit-learn version.
    """

    def __init__(self, Cs: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0), cv: int = 5,
                 seed: int = 0, max_iter: int = 5000):
        self.Cs, self.cv, self.seed, self.max_iter = tuple(Cs), cv, seed, max_iter

    def _fit_one(self, matrix: np.ndarray, target: np.ndarray, c: float) -> tuple[_Standardiser, Any]:
        from sklearn.linear_model import LogisticRegression

        standardiser = _Standardiser().fit(matrix)
        model = LogisticRegression(C=c, solver="newton-cholesky", max_iter=self.max_iter).fit(
            standardiser.transform(matrix), target)
        return standardiser, model

    @_single_threaded_blas
    def fit(self, x: pd.DataFrame | np.ndarray, y: np.ndarray) -> "RadiomicsLogistic":
        matrix, self.feature_names_ = _as_matrix(x, None)
        y = np.asarray(y, dtype=float)
        known = _known(y)
        matrix, target = matrix[known], y[known].astype(int)
        n_splits = min(self.cv, int(np.bincount(target).min()))
        self.cv_log_loss_: dict[float, float] = {}
        if len(self.Cs) > 1 and n_splits >= 2:
            folds = _stratified_folds(target, n_splits, self.seed)
            for c in self.Cs:
                loss = 0.0
                for train, held in folds:
                    standardiser, model = self._fit_one(matrix[train], target[train], c)
                    loss -= _log_likelihood(target[held], model.predict_proba(standardiser.transform(matrix[held]))[:, 1])
                self.cv_log_loss_[c] = loss / len(target)
            self.C_ = min(self.Cs, key=lambda c: (self.cv_log_loss_[c], c))
        else:  # too few events for an inner split: the middle of the grid
            self.C_ = float(self.Cs[len(self.Cs) // 2])
        self.standardiser_, self.model_ = self._fit_one(matrix, target, self.C_)
        return self

    def predict_proba(self, x: pd.DataFrame | np.ndarray) -> np.ndarray:
        """P(outcome = 1) per row, shape ``(n,)``."""
        matrix, _ = _as_matrix(x, self.feature_names_)
        return self.model_.predict_proba(self.standardiser_.transform(matrix))[:, 1]

    @property
    def coefficients(self) -> pd.Series:
        """Coefficients per standardised feature (comparable sizes), largest first."""
        coef = pd.Series(np.ravel(self.model_.coef_), index=self.feature_names_)
        return coef.reindex(coef.abs().sort_values(ascending=False).index)


class RadiomicsCox:
    """Median imputation + standardisation + ridge Cox model (``sksurv.linear_model.CoxPHSurvivalAnalysis``,
    Efron ties), the penalty ``alpha`` chosen by seeded inner K-fold cross-validation on Harrell's C.

    ``fit(X, time, event)``; cases with unknown time or event are left out. ``predict(X)`` is the
    linear predictor: higher = worse.
    """

    def __init__(self, alphas: Sequence[float] = (1.0, 10.0, 100.0, 1000.0), cv: int = 5, seed: int = 0):
        self.alphas, self.cv, self.seed = tuple(alphas), cv, seed

    @staticmethod
    def _fit_one(z: np.ndarray, time: np.ndarray, event: np.ndarray, alpha: float):
        import warnings

        from sksurv.linear_model import CoxPHSurvivalAnalysis

        from glmil_auto.dataset.clinical_table import survival_structured_array

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter of weakly penalised fits in the grid
            return CoxPHSurvivalAnalysis(alpha=alpha, ties="efron", n_iter=200).fit(
                z, survival_structured_array(time, event))

    @_single_threaded_blas
    def fit(self, x: pd.DataFrame | np.ndarray, time: np.ndarray, event: np.ndarray) -> "RadiomicsCox":
        from sksurv.metrics import concordance_index_censored

        matrix, self.feature_names_ = _as_matrix(x, None)
        time, event = np.asarray(time, dtype=float), np.asarray(event, dtype=float)
        known = ~np.isnan(time) & ~np.isnan(event)
        matrix, time, event = matrix[known], time[known], event[known]
        if event.sum() < 2:
            raise ValueError("a Cox model needs at least two events")
        scores = {}
        n_splits = min(self.cv, int(event.sum()))
        if len(self.alphas) > 1 and n_splits >= 2:
            if (1 - event).sum() >= n_splits:  # events spread evenly over the folds
                folds = _stratified_folds(event, n_splits, self.seed)
            else:
                folds = _kfold(len(event), n_splits, self.seed)
            for alpha in self.alphas:
                per_fold = []
                for train, held in folds:
                    if event[train].sum() < 1 or event[held].sum() < 1:
                        continue  # no comparable pair to learn from or to score
                    standardiser = _Standardiser().fit(matrix[train])
                    model = self._fit_one(standardiser.transform(matrix[train]), time[train], event[train], alpha)
                    risk = model.predict(standardiser.transform(matrix[held]))
                    try:
                        per_fold.append(concordance_index_censored(event[held].astype(bool), time[held], risk)[0])
                    except ValueError:  # sksurv's NoComparablePairException: a tiny fold without a usable pair
                        continue
                scores[alpha] = float(np.mean(per_fold)) if per_fold else -np.inf  # mean held-out Harrell's C
            self.alpha_ = max(self.alphas, key=lambda a: (scores[a], a))
        else:
            self.alpha_ = float(self.alphas[len(self.alphas) // 2])
        self.cv_scores_ = scores
        self.standardiser_ = _Standardiser().fit(matrix)
        self.model_ = self._fit_one(self.standardiser_.transform(matrix), time, event, self.alpha_)
        return self

    def predict(self, x: pd.DataFrame | np.ndarray) -> np.ndarray:
        matrix, _ = _as_matrix(x, self.feature_names_)
        return self.model_.predict(self.standardiser_.transform(matrix))
