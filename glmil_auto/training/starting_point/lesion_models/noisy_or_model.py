"""The lesion-level noisy-OR model with a patient-level term (:class:`NoisyOrLesionModel`)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize

from glmil_auto.training.starting_point.lesion_models.fitting import (
    _as_matrix, _known, _log_likelihood, _single_threaded_blas, _Standardiser, _stratified_folds,
)
from glmil_auto.preprocessing.lesion_features.lesion_frame import CASE_COLUMN
from glmil_auto.training.starting_point.lesion_models.noisy_or import noisy_or_objective, noisy_or_probability, sigmoid

# lesion features of the noisy-OR by default: size, necrosis, enhancement and texture, oedema and
# the CSF/posterior-fossa position (the classical per-lesion predictors of local control)
LESION_MODEL_FEATURES = (
    "log_volume", "equivalent_diameter_mm", "necrotic_fraction", "dark_fraction", "core_rim_difference",
    "relative_cv", "enhancement_cv", "enhancement_std", "enhancement_p10", "neighbour_contrast",
    "relative_intensity_mean", "oedema_volume_0_5_mm3", "csf_distance_mm", "csf_adjacent",
    "ventricle_distance_mm", "posterior_fossa",
)


class NoisyOrLesionModel:
    """Lesion-level noisy-OR with a patient-level term, fitted by penalised maximum likelihood.

        P(case) = 1 - prod_i (1 - sigmoid(w.x_i + d.z + b)) * (1 - sigmoid(c.z + b0))

    ``x_i``: the case's lesion features (standardised with training-lesion statistics, missing
    values imputed with training medians), ``z``: optional case covariates (the clinical design
    matrix, standardised likewise). The patient term ``c.z + b0`` is a failure source of its own
    (a case without lesions has only it); ``d.z`` lets patient factors shift every lesion's risk
    (histology changes each lesion's radiosensitivity), which the patient term alone cannot
    express: without it, the fit tends to switch the patient term off (b0 -> -inf, where its
    gradient vanishes). ``lesion_shift=False`` drops ``d``.

    The fit is L-BFGS on :func:`noisy_or_objective` from a fixed start, so it is deterministic;
    with a sequence of ``l2`` values the penalty is chosen by seeded, outcome-stratified inner
    K-fold cross-validation over cases (held-out log-loss, ties: the stronger penalty).
    Lesion rows of cases not in ``case_ids`` are ignored, so the lesion frame of a whole dataset
    can be passed with the ids of any subset.
    """

    def __init__(self, l2: float | Sequence[float] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0), cv: int = 5, seed: int = 0,
                 feature_columns: Sequence[str] | None = None, lesion_shift: bool = True, max_iter: int = 2000):
        self.l2, self.cv, self.seed, self.max_iter, self.lesion_shift = l2, cv, seed, max_iter, lesion_shift
        self.feature_columns = list(feature_columns) if feature_columns is not None else list(LESION_MODEL_FEATURES)

    # -------------------------------------------------------------- data plumbing
    def _lesion_arrays(self, lesions: pd.DataFrame, case_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        position = {c: i for i, c in enumerate(case_ids)}
        if len(position) != len(case_ids):
            raise ValueError("case_ids must be unique")
        missing = [c for c in self.feature_columns if c not in lesions.columns]
        if missing:
            raise KeyError(f"the lesion frame lacks feature columns: {missing}")
        cases = lesions[CASE_COLUMN].astype(str).map(position)
        keep = cases.notna().to_numpy()
        x = lesions.loc[keep, self.feature_columns].to_numpy(dtype=float)
        return x, cases[keep].to_numpy(dtype=np.int64)

    @staticmethod
    def _case_matrix(clinical: pd.DataFrame | np.ndarray | None, case_ids: Sequence[str],
                     columns: list[str] | None) -> tuple[np.ndarray, list[str]]:
        if clinical is None:
            return np.zeros((len(case_ids), 0)), []
        if isinstance(clinical, pd.DataFrame):
            index = clinical.index.astype(str)
            absent = [c for c in case_ids if c not in set(index)]
            if absent:
                raise KeyError(f"the clinical matrix has no row for cases {absent[:10]}")
            clinical = clinical.set_axis(index).loc[list(case_ids)]
        matrix, names = _as_matrix(clinical, columns)
        if len(matrix) != len(case_ids):
            raise ValueError(f"the clinical matrix has {len(matrix)} rows for {len(case_ids)} cases")
        return matrix, names

    def _design(self, x: np.ndarray, lesion_case: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The lesion design matrix: standardised lesion features, then (with ``lesion_shift``)
        the covariates of each lesion's case."""
        return np.hstack([x, z[lesion_case]]) if self.lesion_shift else x

    def _standardised(self, lesions: pd.DataFrame, case_ids: Sequence[str], clinical) -> tuple:
        x_raw, lesion_case = self._lesion_arrays(lesions, case_ids)
        z_raw, _ = self._case_matrix(clinical, case_ids, self.clinical_names_ or None)
        if z_raw.shape[1] != len(self.clinical_names_):
            raise ValueError(f"the model was fitted with {len(self.clinical_names_)} clinical columns, got {z_raw.shape[1]}")
        z = self.case_standardiser_.transform(z_raw)
        return self._design(self.lesion_standardiser_.transform(x_raw), lesion_case, z), lesion_case, z

    # -------------------------------------------------------------- fitting
    def _fit_standardised(self, x: np.ndarray, lesion_case: np.ndarray, z: np.ndarray, y: np.ndarray,
                          l2: float) -> np.ndarray:
        # start: no feature effect, every source (each lesion and the patient term) with the same
        # risk, so that the mean case risk equals the prevalence
        per_case = np.bincount(lesion_case, minlength=len(y))
        prevalence = float(np.clip(y.mean(), 0.01, 0.99))
        per_source = 1.0 - (1.0 - prevalence) ** (1.0 / (1.0 + per_case.mean()))
        start = np.zeros(x.shape[1] + z.shape[1] + 2)
        start[x.shape[1]] = start[-1] = math.log(per_source / (1.0 - per_source))
        result = optimize.minimize(noisy_or_objective, start, args=(x, lesion_case, z, y, l2), jac=True,
                                   method="L-BFGS-B", options={"maxiter": self.max_iter, "gtol": 1e-7})
        return result.x

    @_single_threaded_blas
    def fit(self, lesions: pd.DataFrame, case_ids: Sequence[str], y: np.ndarray,
            clinical: pd.DataFrame | np.ndarray | None = None) -> "NoisyOrLesionModel":
        """``lesions``: lesion rows with ``case_id`` and the feature columns; ``y`` per case of
        ``case_ids`` in {0, 1, NaN} (NaN: left out); ``clinical``: per-case covariates (a frame
        indexed by case id, or an array in ``case_ids`` order) or None."""
        case_ids = [str(c) for c in case_ids]
        y = np.asarray(y, dtype=float)
        if len(y) != len(case_ids):
            raise ValueError(f"{len(y)} outcomes for {len(case_ids)} cases")
        known = _known(y)
        if not isinstance(clinical, pd.DataFrame) and clinical is not None:
            clinical = np.asarray(clinical, dtype=float)[known]
        case_ids = [c for c, k in zip(case_ids, known) if k]
        y = y[known]
        x_raw, lesion_case = self._lesion_arrays(lesions, case_ids)
        z_raw, self.clinical_names_ = self._case_matrix(clinical, case_ids, None)
        self.lesion_standardiser_ = _Standardiser().fit(x_raw)
        self.case_standardiser_ = _Standardiser().fit(z_raw)
        z = self.case_standardiser_.transform(z_raw)
        x = self._design(self.lesion_standardiser_.transform(x_raw), lesion_case, z)

        grid = [float(self.l2)] if np.isscalar(self.l2) else [float(v) for v in self.l2]
        self.cv_log_loss_: dict[float, float] = {}
        n_splits = min(self.cv, int(min(y.sum(), (1 - y).sum())))
        if len(grid) > 1 and n_splits >= 2:
            folds = _stratified_folds(y, n_splits, self.seed)
            for l2 in grid:
                loss = 0.0
                for train, held in folds:
                    params = self._fit_standardised(*_subset(x, lesion_case, z, y, train), l2)
                    x_h, case_h, z_h, y_h = _subset(x, lesion_case, z, y, held)
                    loss -= _log_likelihood(y_h, self._probability(params, x_h, case_h, z_h))
                self.cv_log_loss_[l2] = loss / len(y)
            self.l2_ = min(grid, key=lambda v: (self.cv_log_loss_[v], -v))
        else:
            self.l2_ = grid[len(grid) // 2]
        self.params_ = self._fit_standardised(x, lesion_case, z, y, self.l2_)
        return self

    @staticmethod
    def _split(params: np.ndarray, p: int, q: int) -> tuple[np.ndarray, float, np.ndarray, float]:
        return params[:p], float(params[p]), params[p + 1:p + 1 + q], float(params[p + 1 + q])

    @staticmethod
    def _probability(params: np.ndarray, x: np.ndarray, lesion_case: np.ndarray, z: np.ndarray) -> np.ndarray:
        w, b, c, b0 = NoisyOrLesionModel._split(params, x.shape[1], z.shape[1])
        return noisy_or_probability(x @ w + b, lesion_case, z @ c + b0)

    # -------------------------------------------------------------- prediction
    def predict_proba(self, lesions: pd.DataFrame, case_ids: Sequence[str],
                      clinical: pd.DataFrame | np.ndarray | None = None) -> np.ndarray:
        """P(failure) per case of ``case_ids`` (in that order)."""
        return self._probability(self.params_, *self._standardised(lesions, [str(c) for c in case_ids], clinical))

    def lesion_probabilities(self, lesions: pd.DataFrame, case_ids: Sequence[str],
                             clinical: pd.DataFrame | np.ndarray | None = None) -> np.ndarray:
        """Each lesion's own failure probability sigmoid(w.x_i + d.z + b), for the lesion rows of
        ``case_ids`` in their frame order."""
        x, _, z = self._standardised(lesions, [str(c) for c in case_ids], clinical)
        w, b, _, _ = self._split(self.params_, x.shape[1], z.shape[1])
        return sigmoid(x @ w + b)

    # -------------------------------------------------------------- coefficients in original units
    def _parts(self) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, float]:
        p, q = len(self.feature_columns), len(self.clinical_names_)
        w_all, b, c, b0 = self._split(self.params_, p + (q if self.lesion_shift else 0), q)
        return w_all[:p], w_all[p:], b, c, b0

    @property
    def coef_(self) -> np.ndarray:
        """Lesion-feature weights w in the features' original units (0 for a column constant in training)."""
        return self._parts()[0] / self.lesion_standardiser_.scale

    @property
    def intercept_(self) -> float:
        """Lesion intercept b in original units (of x and z; exact for rows without missing values)."""
        w, d, b, _, _ = self._parts()
        b -= float(np.sum(w * self.lesion_standardiser_.mean / self.lesion_standardiser_.scale))
        if self.lesion_shift:
            b -= float(np.sum(d * self.case_standardiser_.mean / self.case_standardiser_.scale))
        return b

    @property
    def lesion_clinical_coef_(self) -> np.ndarray:
        """d: the covariates' shift of every lesion's logit, original units (empty without ``lesion_shift``)."""
        d = self._parts()[1]
        return d / self.case_standardiser_.scale if self.lesion_shift else d

    @property
    def clinical_coef_(self) -> np.ndarray:
        """c: the patient term's weights, original units."""
        return self._parts()[3] / self.case_standardiser_.scale

    @property
    def clinical_intercept_(self) -> float:
        _, _, _, c, b0 = self._parts()
        return b0 - float(np.sum(c * self.case_standardiser_.mean / self.case_standardiser_.scale))


def _subset(x: np.ndarray, lesion_case: np.ndarray, z: np.ndarray, y: np.ndarray, cases: np.ndarray) -> tuple:
    """The lesions, covariates and outcomes of a subset of cases, re-indexed 0..len(cases)-1."""
    new_index = np.full(len(y), -1, dtype=np.int64)
    new_index[cases] = np.arange(len(cases))
    keep = new_index[lesion_case] >= 0
    return x[keep], new_index[lesion_case[keep]], z[cases], y[cases]
