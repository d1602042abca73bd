"""What the peer's models share when fitting: feature matrices, the training-row standardiser, target
checks, inner cross-validation folds and held-out log-likelihood, and single-threaded BLAS."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _as_matrix(x: pd.DataFrame | np.ndarray, columns: list[str] | None) -> tuple[np.ndarray, list[str]]:
    if isinstance(x, pd.DataFrame):
        if columns is not None:
            missing = [c for c in columns if c not in x.columns]
            if missing:
                raise KeyError(f"the features lack columns the model was fitted on: {missing[:10]}")
            x = x[columns]
        return x.to_numpy(dtype=float), [str(c) for c in x.columns]
    array = np.asarray(x, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D feature matrix, got shape {array.shape}")
    if columns is not None and array.shape[1] != len(columns):
        raise ValueError(f"expected {len(columns)} feature columns, got {array.shape[1]}")
    return array, columns if columns is not None else [f"x{j}" for j in range(array.shape[1])]


class _Standardiser:
    """Median imputation then z-scoring, with statistics of the training rows (NaN ignored). A
    column that is constant (or all missing) in training becomes 0."""

    def fit(self, x: np.ndarray) -> "_Standardiser":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: median 0
            self.median = np.nan_to_num(np.nanmedian(x, axis=0), nan=0.0) if len(x) else np.zeros(x.shape[1])
        filled = np.where(np.isnan(x), self.median, x)
        self.mean = filled.mean(axis=0)
        std = filled.std(axis=0)
        self.scale = np.where(std > 1e-12, std, np.inf)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        filled = np.where(np.isnan(x), self.median, x)
        return (filled - self.mean) / self.scale


def _single_threaded_blas(fit):
    """Run a fit with one BLAS thread: the matrices are small, and on a busy machine every BLAS
    call of the optimisers' many small steps otherwise waits for its threads (10x slower)."""
    import functools

    @functools.wraps(fit)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fit(*args, **kwargs)

    return wrapper


def _stratified_folds(y: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y.astype(int)))


def _known(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    known = ~np.isnan(y)
    if not np.isin(y[known], (0.0, 1.0)).all():
        raise ValueError("binary targets must be 0, 1 or NaN (unknown)")
    if len(np.unique(y[known])) < 2:
        raise ValueError("binary targets need both classes among the known outcomes")
    return known


def _kfold(n: int, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold

    return list(KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(n)))


def _log_likelihood(y: np.ndarray, p: np.ndarray) -> float:
    """Bernoulli log-likelihood of outcomes ``y`` under probabilities ``p`` (clipped to [1e-12, 1 - 1e-12])."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))
