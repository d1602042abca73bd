"""Harmonisation of per-lesion radiomic features across centres: ComBat and per-centre standardisation.

Texture and intensity statistics move by about one standard deviation between scanners and
protocols, so a model trained on some centres sees a different feature distribution at another
one. Both methods here work on a float matrix (rows = lesions, columns = features; NaN where a
feature is undefined, e.g. FLAIR features without a FLAIR channel), are fitted on the training
centres ("batches"), and can be extended to a new centre at prediction time from that centre's own
*unlabelled* cases (``fit_new_batch``): no outcome is used, so this leaks nothing from the labels.

When to use which
-----------------
``fit_combat`` (ComBat; Johnson, Li & Rabinovic 2007, Biostatistics 8:118) is the default when a
centre has a handful of lesions or more. It models each feature ``g`` of lesion ``j`` at centre
``i`` as::

    y_ijg = alpha_g + x_ij' beta_g + gamma_ig + delta_ig * eps_ijg,    eps_ijg ~ N(0, sigma_g^2)

standardises every feature by the pooled model (least squares on batch indicators and the
covariates, grand mean = the batch coefficients weighted by batch size, pooled variance = mean
squared residual, denominator N as in the paper and in ``sva::ComBat``), estimates the additive
``gamma_ig`` (per-batch mean of the standardised data) and multiplicative ``delta_ig^2`` (per-batch
variance, denominator n_i - 1) and, with ``empirical_bayes``, shrinks them towards what the other
features of the same batch show: a normal prior ``gamma_ig ~ N(gamma_bar_i, tau_i^2)`` and an
inverse-gamma prior ``delta_ig^2 ~ IG(a_i, b_i)``, hyper-parameters by the method of moments across
features, and the two conditional posterior means iterated to their fixed point (the paper's
appendix). ``parametric=False`` uses the paper's non-parametric prior instead (the posterior means
under the empirical distribution of the other features' estimates, as ``sva``'s ``int.eprior``).
Harmonised values are the standardised data with the batch effects removed, mapped back to the
pooled scale: ``(z - gamma*) / sqrt(delta*) * sigma + alpha + x' beta``.

What ComBat assumes: batch effects are a per-feature shift and scale (not a non-linear warp); the
residuals are roughly normal; the batch effects of the features of one batch are exchangeable draws
from one prior (what makes shrinkage borrow strength, and why it helps most for small centres with
many features); rows are independent (lesions of one patient are not, so patients with many
lesions weigh more); and the biology that differs between centres is in ``covariates`` (linear,
not confounded with the batch). Case-mix differences between centres that are *not* given as
covariates are taken for batch effects and removed - this matters most for ``fit_new_batch``,
where a centre whose patients are genuinely different is made to look like the training pool.

``fit_centre_standardisation`` z-scores each feature within each centre and re-scales the z-scores
to the pooled mean and standard deviation. It has no covariates and no shrinkage; use it as a
baseline, when a centre has too few features for the empirical-Bayes priors, or when a simple,
easily explained adjustment is wanted. It assumes the same case mix at every centre.

Conventions shared by both: batch labels are compared as strings (``1`` and ``"1"`` are the same
centre); estimates use the known (non-NaN) values only and NaN stays NaN; features with zero (or
numerically zero) pooled variance, or with fewer than two known values, are left unchanged; a
batch with one lesion for a feature gets no scale adjustment there (delta = 1); a batch with no
known value of a feature gets no adjustment of it. Applying a model to a batch it has not seen
raises ``UnseenBatchError``. ``to_dict``/``from_dict`` give JSON-safe plain lists (NaN as ``None``)
so a fitted model can live in a checkpoint or a JSON file; ``harmonisation_from_dict`` reads either.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

COMBAT_KIND = "combat"
CENTRE_KIND = "centre_standardisation"
FORMAT_VERSION = 1

# Variances below this (on the unit pooled scale) are treated as zero: no scale adjustment.
_TINY_VARIANCE = 1e-12
# A feature whose pooled SD is below this fraction of its magnitude is "zero variance".
_ZERO_SD_RELATIVE = 1e-10
_EB_TOLERANCE = 1e-12
_EB_MAX_ITERATIONS = 10_000
# Rows of features handled at once by the non-parametric prior (a p x p likelihood matrix).
_NONPARAMETRIC_CHUNK = 512


class UnseenBatchError(ValueError):
    """A harmonisation model was applied to a batch (centre) it was not fitted on."""


# ----------------------------------------------------------------------------- input checks


def _as_features(features: np.ndarray, n_features: int | None = None) -> np.ndarray:
    y = np.array(features, dtype=np.float64)  # a copy: callers' arrays are never written
    if y.ndim != 2:
        raise ValueError(f"features must be a 2-D array (lesions x features), got shape {y.shape}")
    if np.isinf(y).any():
        raise ValueError("features must be finite or NaN (undefined); found +-inf")
    if n_features is not None and y.shape[1] != n_features:
        raise ValueError(f"features have {y.shape[1]} columns, the model was fitted on {n_features}")
    return y


def _as_labels(batches: Sequence[Any], n_rows: int) -> list[str]:
    labels = [str(b) for b in np.asarray(batches, dtype=object).ravel()]
    if len(labels) != n_rows:
        raise ValueError(f"{len(labels)} batch labels for {n_rows} rows of features")
    return labels


def _as_covariates(covariates: np.ndarray | None, n_rows: int, n_expected: int | None) -> np.ndarray:
    """(n, q) float array; q = 0 without covariates. ``n_expected``: q of the fitted model."""
    if covariates is None:
        x = np.zeros((n_rows, 0))
    else:
        x = np.array(covariates, dtype=np.float64)
        x = x.reshape(-1, 1) if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[0] != n_rows:
            raise ValueError(f"covariates must have shape ({n_rows}, q), got {np.shape(covariates)}")
        if not np.isfinite(x).all():
            raise ValueError("covariates must be finite (no NaN): impute or drop those rows first")
    if n_expected is not None and x.shape[1] != n_expected:
        raise ValueError(f"the model was fitted with {n_expected} covariate(s), got {x.shape[1]}")
    return x


def _batch_rows(labels: list[str], known: tuple[str, ...], what: str) -> np.ndarray:
    """Index of each row's batch in ``known``; unseen batches raise one clear error."""
    position = {name: i for i, name in enumerate(known)}
    unseen = sorted({name for name in labels if name not in position})
    if unseen:
        names = ", ".join(repr(u) for u in unseen)
        raise UnseenBatchError(
            f"batch {names} was not seen when this {what} was fitted (fitted batches: "
            f"{', '.join(repr(k) for k in known)}); fit it first from that centre's own cases with "
            f"model.fit_new_batch(features_of_that_centre, name={unseen[0]!r}), or use per-centre "
            f"standardisation (fit_centre_standardisation)"
        )
    return np.array([position[name] for name in labels], dtype=np.int64)


def _new_batch_name(name: Any, known: tuple[str, ...]) -> str:
    label = str(name)
    if label in known:
        raise ValueError(f"batch {label!r} is already in the model; give the new centre another name")
    return label


# ----------------------------------------------------------------------------- small statistics


def _known_mean(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means over the known values and the counts; mean NaN where nothing is known."""
    known = ~np.isnan(values)
    count = known.sum(axis=0)
    total = np.where(known, values, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count


def _known_variance(values: np.ndarray, mean: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Column sample variances (denominator n - 1) over known values; NaN with fewer than 2."""
    squares = np.where(np.isnan(values), 0.0, (values - mean) ** 2).sum(axis=0)
    return np.where(count >= 2, squares / np.maximum(count - 1, 1), np.nan)


def _sample_mean_and_variance(values: np.ndarray) -> tuple[float, float]:
    """Mean and variance (n - 1) of the finite entries; NaN where there are too few."""
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return (float(finite.mean()) if finite.size else math.nan), math.nan
    return float(finite.mean()), float(finite.var(ddof=1))


# ----------------------------------------------------------------------------- pooled standardisation


@dataclass(eq=False)
class _Pooled:
    grand_mean: np.ndarray  # (p,)
    pooled_sd: np.ndarray  # (p,)
    covariate_coef: np.ndarray  # (q, p)
    adjusted: np.ndarray  # (p,) bool


def _check_design(design: np.ndarray) -> None:
    if design.shape[1] and np.linalg.matrix_rank(design) < design.shape[1]:
        raise ValueError(
            "the covariates are collinear with the batch indicators (e.g. a covariate constant within "
            "every batch, or confounded with the batch): ComBat cannot tell the biology from the batch"
        )


def _fit_pattern(y: np.ndarray, rows: np.ndarray, onehot: np.ndarray, x: np.ndarray) -> tuple | None:
    """Least squares of the columns ``y`` (all known on ``rows``) on batch indicators + covariates.

    Returns (grand mean, pooled SD, covariate coefficients) or None where the design is rank
    deficient on these rows (then the features are left unchanged).
    """
    present = onehot[rows].any(axis=0)
    design = np.hstack([onehot[rows][:, present], x[rows]])
    if np.linalg.matrix_rank(design) < design.shape[1]:
        return None
    coef = np.linalg.lstsq(design, y[rows], rcond=None)[0]
    n_batches = int(present.sum())
    batch_coef, covariate_coef = coef[:n_batches], coef[n_batches:]
    weights = onehot[rows][:, present].sum(axis=0)
    grand_mean = weights @ batch_coef / weights.sum()
    residual = y[rows] - design @ coef
    return grand_mean, np.sqrt((residual**2).mean(axis=0)), covariate_coef


def _fit_pooled(y: np.ndarray, batch_index: np.ndarray, n_batches: int, x: np.ndarray) -> _Pooled:
    """The paper's standardisation model, per feature on its known rows.

    Features are grouped by their pattern of known rows so that each group is one least-squares
    solve (usually one group: no NaN, or whole channels missing together).
    """
    n, p = y.shape
    onehot = np.zeros((n, n_batches))
    onehot[np.arange(n), batch_index] = 1.0
    _check_design(np.hstack([onehot[:, onehot.any(axis=0)], x]))
    pooled = _Pooled(np.full(p, np.nan), np.full(p, np.nan), np.zeros((x.shape[1], p)), np.zeros(p, bool))
    known = ~np.isnan(y)
    patterns, group = np.unique(known.T, axis=0, return_inverse=True)
    rank_deficient = 0
    for k, rows in enumerate(patterns):
        columns = np.flatnonzero(group.ravel() == k)
        if rows.sum() < 2:
            continue
        fitted = _fit_pattern(y[:, columns], rows, onehot, x)
        if fitted is None:
            rank_deficient += columns.size
            continue
        pooled.grand_mean[columns], pooled.pooled_sd[columns], pooled.covariate_coef[:, columns] = fitted
        scale = 1.0 + np.abs(y[rows][:, columns]).max(axis=0)
        pooled.adjusted[columns] = pooled.pooled_sd[columns] > _ZERO_SD_RELATIVE * scale
    if rank_deficient:
        warnings.warn(
            f"{rank_deficient} feature(s) left unchanged: on their known rows the covariates are "
            "collinear with the batch indicators",
            RuntimeWarning,
            stacklevel=3,
        )
    return pooled


def _standardise(y: np.ndarray, x: np.ndarray, pooled: _Pooled) -> np.ndarray:
    """z of the adjusted columns (the others are not used and come back as they are)."""
    columns = pooled.adjusted
    fitted = pooled.grand_mean[columns] + x @ pooled.covariate_coef[:, columns]
    return (y[:, columns] - fitted) / pooled.pooled_sd[columns]


# ----------------------------------------------------------------------------- batch effects


@dataclass(eq=False)
class _BatchEffect:
    """One batch's estimates over the adjusted features (p_adj,) and its priors (scalars)."""

    gamma_hat: np.ndarray
    delta_hat: np.ndarray
    gamma_star: np.ndarray
    delta_star: np.ndarray
    gamma_bar: float
    tau2: float
    prior_a: float
    prior_b: float


def _inverse_gamma_moments(delta_hat: np.ndarray) -> tuple[float, float]:
    """Method-of-moments a, b of IG(a, b) from the batch's delta_hat across features."""
    mean, variance = _sample_mean_and_variance(delta_hat)
    if not (np.isfinite(variance) and variance > 0):
        return math.nan, math.nan
    return (2 * variance + mean**2) / variance, (mean * variance + mean**3) / variance


def _parametric_posterior(z: np.ndarray, effect: _BatchEffect, count: np.ndarray) -> None:
    """Iterate the conditional posterior means of gamma and delta^2 to their fixed point (in place).

    ``gamma* = (n tau^2 gamma_hat + delta* gamma_bar) / (n tau^2 + delta*)`` and
    ``delta* = (b + sum_j (z_j - gamma*)^2 / 2) / (n / 2 + a - 1)``. Cells with fewer than two
    known values keep delta = 1; without an estimable prior the estimate keeps its L/S value.
    """
    shrink_gamma = np.isfinite(effect.tau2) & (count >= 1)
    shrink_delta = np.isfinite(effect.prior_a) & (count >= 2)
    if not (shrink_gamma.any() or shrink_delta.any()):
        return
    n, tau2, a, b = count.astype(np.float64), effect.tau2, effect.prior_a, effect.prior_b
    gamma_old, delta_old = effect.gamma_star.copy(), effect.delta_star.copy()
    for _ in range(_EB_MAX_ITERATIONS):
        with np.errstate(invalid="ignore", divide="ignore"):
            shrunk = (tau2 * n * effect.gamma_hat + delta_old * effect.gamma_bar) / (tau2 * n + delta_old)
        gamma_new = np.where(shrink_gamma, shrunk, gamma_old)
        sum2 = np.where(np.isnan(z), 0.0, (z - gamma_new) ** 2).sum(axis=0)
        delta_new = np.where(shrink_delta, (0.5 * sum2 + b) / (n / 2 + a - 1), delta_old)
        change = max(np.abs(gamma_new - gamma_old).max(initial=0.0), np.abs(delta_new / delta_old - 1).max(initial=0.0))
        gamma_old, delta_old = gamma_new, delta_new
        if change < _EB_TOLERANCE:
            break
    else:
        warnings.warn("ComBat empirical-Bayes iteration did not converge", RuntimeWarning, stacklevel=4)
    effect.gamma_star, effect.delta_star = gamma_old, delta_old


def _nonparametric_posterior(z: np.ndarray, effect: _BatchEffect, count: np.ndarray) -> None:
    """The paper's non-parametric prior: posterior means over the other features' (gamma, delta).

    Weights are the normal likelihood of this feature's data under each other feature's
    (gamma_hat, delta_hat), computed in logs so large batches do not underflow (same values as
    ``sva::int.eprior`` where that does not underflow). In place, like the parametric version.
    """
    usable = np.isfinite(effect.gamma_hat) & np.isfinite(effect.delta_hat) & (effect.delta_hat > _TINY_VARIANCE)
    others = np.flatnonzero(usable)
    cells = np.flatnonzero(count >= 1)
    if others.size < 2 or cells.size == 0:
        return
    g, d = effect.gamma_hat[others], effect.delta_hat[others]
    mean = effect.gamma_hat
    squares = np.where(np.isnan(z), 0.0, (z - mean) ** 2).sum(axis=0)
    for start in range(0, cells.size, _NONPARAMETRIC_CHUNK):
        chunk = cells[start : start + _NONPARAMETRIC_CHUNK]
        n = count[chunk].astype(np.float64)[:, None]
        sum2 = squares[chunk][:, None] + n * (mean[chunk][:, None] - g[None, :]) ** 2
        log_lh = -0.5 * n * np.log(2 * np.pi * d[None, :]) - sum2 / (2 * d[None, :])
        log_lh[chunk[:, None] == others[None, :]] = -np.inf  # leave the feature itself out
        weights = np.exp(log_lh - log_lh.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        effect.gamma_star[chunk] = weights @ g
        effect.delta_star[chunk] = np.where(count[chunk] >= 2, weights @ d, 1.0)


def _fit_batch(z: np.ndarray, empirical_bayes: bool, parametric: bool) -> _BatchEffect:
    """L/S estimates of one batch (rows z: its standardised lesions), then optionally EB."""
    gamma_hat, count = _known_mean(z)
    delta_hat = _known_variance(z, gamma_hat, count)
    gamma_bar, tau2 = _sample_mean_and_variance(gamma_hat)
    prior_a, prior_b = _inverse_gamma_moments(delta_hat)
    effect = _BatchEffect(
        gamma_hat=gamma_hat,
        delta_hat=delta_hat,
        gamma_star=np.where(count >= 1, gamma_hat, 0.0),
        delta_star=np.where((count >= 2) & (np.nan_to_num(delta_hat) > _TINY_VARIANCE), delta_hat, 1.0),
        gamma_bar=gamma_bar,
        tau2=tau2,
        prior_a=prior_a,
        prior_b=prior_b,
    )
    if empirical_bayes:
        (_parametric_posterior if parametric else _nonparametric_posterior)(z, effect, count)
    return effect


def _spread(values: np.ndarray, adjusted: np.ndarray, fill: float) -> np.ndarray:
    """Put a batch's (p_adj,) estimates into a (p,) row; ``fill`` for unadjusted features."""
    row = np.full(adjusted.shape, fill)
    row[adjusted] = values
    return row


# ----------------------------------------------------------------------------- JSON helpers


def _plain(values: np.ndarray) -> list:
    """Nested plain lists of Python floats, NaN as None (strict JSON has no NaN)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        value = float(array)
        return None if math.isnan(value) else value  # type: ignore[return-value]
    return [_plain(row) for row in array]


def _array(values: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = np.array(values if values is not None else np.nan, dtype=np.float64)
    return array.reshape(shape)


def _check_kind(data: dict[str, Any], kind: str) -> None:
    if data.get("kind") != kind:
        raise ValueError(f"expected a {kind!r} harmonisation model, got kind {data.get('kind')!r}")
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported harmonisation format version {data.get('version')!r}")


# ----------------------------------------------------------------------------- ComBat


@dataclass(eq=False)
class CombatModel:
    """A fitted ComBat model: pooled standardisation and per-batch batch effects.

    Arrays per batch are (m, p) in the order of ``batches``. ``gamma_hat``/``delta_hat`` are the
    location/scale estimates (NaN where undefined: no known value, or one for delta);
    ``gamma_star``/``delta_star`` are what ``apply`` removes (the EB posterior means, or the L/S
    estimates without EB; 0 and 1 where nothing can be adjusted). ``gamma_bar``, ``tau2``,
    ``prior_a``, ``prior_b`` are each batch's method-of-moments priors (NaN where not estimable;
    used by the parametric EB only). ``adjusted`` is False for features left unchanged.
    """

    batches: tuple[str, ...]
    n_per_batch: np.ndarray
    grand_mean: np.ndarray
    pooled_sd: np.ndarray
    covariate_coef: np.ndarray
    adjusted: np.ndarray
    gamma_hat: np.ndarray
    delta_hat: np.ndarray
    gamma_star: np.ndarray
    delta_star: np.ndarray
    gamma_bar: np.ndarray
    tau2: np.ndarray
    prior_a: np.ndarray
    prior_b: np.ndarray
    empirical_bayes: tuple[bool, ...]
    parametric: bool = True

    @property
    def n_features(self) -> int:
        return int(self.grand_mean.shape[0])

    @property
    def n_covariates(self) -> int:
        return int(self.covariate_coef.shape[0])

    def _pooled(self) -> _Pooled:
        return _Pooled(self.grand_mean, self.pooled_sd, self.covariate_coef, self.adjusted)

    def apply(self, features: np.ndarray, batches: Sequence[Any], covariates: np.ndarray | None = None) -> np.ndarray:
        """Harmonised copy of ``features``: ``(z - gamma*) / sqrt(delta*) * sigma + alpha + x' beta``.

        Raises ``UnseenBatchError`` for a batch the model was not fitted on.
        """
        y = _as_features(features, self.n_features)
        rows = _batch_rows(_as_labels(batches, y.shape[0]), self.batches, "ComBat model")
        x = _as_covariates(covariates, y.shape[0], self.n_covariates)
        columns = self.adjusted
        z = _standardise(y, x, self._pooled())
        gamma, delta = self.gamma_star[rows][:, columns], self.delta_star[rows][:, columns]
        fitted = self.grand_mean[columns] + x @ self.covariate_coef[:, columns]
        y[:, columns] = (z - gamma) / np.sqrt(delta) * self.pooled_sd[columns] + fitted
        return y

    def fit_new_batch(
        self,
        features_new: np.ndarray,
        covariates_new: np.ndarray | None = None,
        name: str = "new",
        empirical_bayes: bool = True,
    ) -> CombatModel:
        """A copy of this model with one unseen centre added, estimated from its own rows.

        The new centre is standardised with the fitted pooled mean, variance and covariate
        effects (which stay as they are, as do the training batches' estimates), and its
        gamma*/delta* come from its own lesions, with its own empirical-Bayes priors. No outcome
        is needed. Its case mix not explained by the covariates is taken for batch effect.
        """
        label = _new_batch_name(name, self.batches)
        y = _as_features(features_new, self.n_features)
        x = _as_covariates(covariates_new, y.shape[0], self.n_covariates)
        effect = _fit_batch(_standardise(y, x, self._pooled()), empirical_bayes, self.parametric)
        return _with_batches(self, [label], [y.shape[0]], [effect], [empirical_bayes])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain lists and floats (NaN as None); ``from_dict`` reads it back exactly."""
        return {
            "kind": COMBAT_KIND,
            "version": FORMAT_VERSION,
            "batches": list(self.batches),
            "n_per_batch": [int(v) for v in self.n_per_batch],
            "n_features": self.n_features,
            "n_covariates": self.n_covariates,
            "grand_mean": _plain(self.grand_mean),
            "pooled_sd": _plain(self.pooled_sd),
            "covariate_coef": _plain(self.covariate_coef),
            "adjusted": [bool(v) for v in self.adjusted],
            **{key: _plain(getattr(self, key)) for key in _COMBAT_BATCH_ARRAYS + _COMBAT_BATCH_PRIORS},
            "empirical_bayes": [bool(v) for v in self.empirical_bayes],
            "parametric": bool(self.parametric),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CombatModel:
        _check_kind(data, COMBAT_KIND)
        m, p, q = len(data["batches"]), int(data["n_features"]), int(data["n_covariates"])
        return cls(
            batches=tuple(str(b) for b in data["batches"]),
            n_per_batch=np.array(data["n_per_batch"], dtype=np.int64),
            grand_mean=_array(data["grand_mean"], (p,)),
            pooled_sd=_array(data["pooled_sd"], (p,)),
            covariate_coef=_array(data["covariate_coef"], (q, p)),
            adjusted=np.array(data["adjusted"], dtype=bool).reshape(p),
            **{key: _array(data[key], (m, p)) for key in _COMBAT_BATCH_ARRAYS},
            **{key: _array(data[key], (m,)) for key in _COMBAT_BATCH_PRIORS},
            empirical_bayes=tuple(bool(v) for v in data["empirical_bayes"]),
            parametric=bool(data["parametric"]),
        )


_COMBAT_BATCH_ARRAYS = ("gamma_hat", "delta_hat", "gamma_star", "delta_star")
_COMBAT_BATCH_PRIORS = ("gamma_bar", "tau2", "prior_a", "prior_b")


def _with_batches(
    model: CombatModel, names: list[str], sizes: list[int], effects: list[_BatchEffect], eb: list[bool]
) -> CombatModel:
    """A new model with these batches appended (the existing rows are copied, never changed)."""
    fills = {"gamma_hat": np.nan, "delta_hat": np.nan, "gamma_star": 0.0, "delta_star": 1.0}
    rows = {
        key: np.vstack([getattr(model, key)] + [_spread(getattr(e, key), model.adjusted, fill)[None] for e in effects])
        for key, fill in fills.items()
    }
    priors = {key: np.concatenate([getattr(model, key), [getattr(e, key) for e in effects]]) for key in _COMBAT_BATCH_PRIORS}
    return replace(
        model,
        batches=model.batches + tuple(names),
        n_per_batch=np.concatenate([model.n_per_batch, np.array(sizes, dtype=np.int64)]),
        empirical_bayes=model.empirical_bayes + tuple(eb),
        **rows,
        **priors,
    )


def fit_combat(
    features: np.ndarray,
    batches: Sequence[Any],
    covariates: np.ndarray | None = None,
    empirical_bayes: bool = True,
    parametric: bool = True,
) -> CombatModel:
    """Fit ComBat (Johnson, Li & Rabinovic 2007) on the training centres.

    ``features`` (n, p), NaN where undefined; ``batches`` (n,) centre labels (compared as
    strings); ``covariates`` (n, q) biological variables whose effect must be kept (finite, not
    collinear with the batch). ``empirical_bayes`` shrinks the batch effects with the paper's
    priors, ``parametric`` chooses the normal / inverse-gamma priors (True) or the non-parametric
    one. A batch with a single lesion (for a feature) gets no scale adjustment there: its
    delta is set to 1, since a variance needs two values; its location is still estimated.
    Features with zero pooled variance or fewer than two known values are left unchanged.
    """
    y = _as_features(features)
    labels = _as_labels(batches, y.shape[0])
    x = _as_covariates(covariates, y.shape[0], None)
    names = tuple(dict.fromkeys(labels))  # first-seen order
    batch_index = _batch_rows(labels, names, "ComBat model")
    pooled = _fit_pooled(y, batch_index, len(names), x)
    z = _standardise(y, x, pooled)
    effects = [_fit_batch(z[batch_index == i], empirical_bayes, parametric) for i in range(len(names))]
    p, q = y.shape[1], x.shape[1]
    empty = CombatModel(
        batches=(),
        n_per_batch=np.zeros(0, dtype=np.int64),
        grand_mean=pooled.grand_mean,
        pooled_sd=pooled.pooled_sd,
        covariate_coef=pooled.covariate_coef.reshape(q, p),
        adjusted=pooled.adjusted,
        **{key: np.zeros((0, p)) for key in _COMBAT_BATCH_ARRAYS},
        **{key: np.zeros(0) for key in _COMBAT_BATCH_PRIORS},
        empirical_bayes=(),
        parametric=parametric,
    )
    sizes = [int((batch_index == i).sum()) for i in range(len(names))]
    return _with_batches(empty, list(names), sizes, effects, [empirical_bayes] * len(names))


# ----------------------------------------------------------------------------- per-centre standardisation


@dataclass(eq=False)
class CentreStandardisation:
    """Per-centre z-scores re-scaled to the pooled mean and SD of the training lesions.

    ``centre_mean``/``centre_sd`` (m, p) are the values ``apply`` uses: the centre's mean and
    sample SD (n - 1) of the known values, with the pooled SD where the centre's SD is undefined
    or zero (one lesion, or a constant feature there: location adjustment only) and the pooled
    mean and SD where the centre has no known value (no adjustment).
    """

    batches: tuple[str, ...]
    n_per_batch: np.ndarray
    pooled_mean: np.ndarray
    pooled_sd: np.ndarray
    adjusted: np.ndarray
    centre_mean: np.ndarray
    centre_sd: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.pooled_mean.shape[0])

    def apply(self, features: np.ndarray, batches: Sequence[Any]) -> np.ndarray:
        """Harmonised copy: ``(y - centre mean) / centre SD * pooled SD + pooled mean``.

        Raises ``UnseenBatchError`` for a centre the model was not fitted on.
        """
        y = _as_features(features, self.n_features)
        rows = _batch_rows(_as_labels(batches, y.shape[0]), self.batches, "per-centre standardisation")
        c = self.adjusted
        mean, sd = self.centre_mean[rows][:, c], self.centre_sd[rows][:, c]
        y[:, c] = (y[:, c] - mean) / sd * self.pooled_sd[c] + self.pooled_mean[c]
        return y

    def fit_new_batch(self, features_new: np.ndarray, name: str = "new") -> CentreStandardisation:
        """A copy with one unseen centre added from its own (unlabelled) rows; the rest unchanged."""
        label = _new_batch_name(name, self.batches)
        y = _as_features(features_new, self.n_features)
        mean, sd = _centre_statistics(y, self.pooled_mean, np.where(self.adjusted, self.pooled_sd, 1.0))
        return replace(
            self,
            batches=self.batches + (label,),
            n_per_batch=np.append(self.n_per_batch, y.shape[0]),
            centre_mean=np.vstack([self.centre_mean, mean]),
            centre_sd=np.vstack([self.centre_sd, sd]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain lists and floats (NaN as None); ``from_dict`` reads it back exactly."""
        return {
            "kind": CENTRE_KIND,
            "version": FORMAT_VERSION,
            "batches": list(self.batches),
            "n_per_batch": [int(v) for v in self.n_per_batch],
            "n_features": self.n_features,
            "pooled_mean": _plain(self.pooled_mean),
            "pooled_sd": _plain(self.pooled_sd),
            "adjusted": [bool(v) for v in self.adjusted],
            "centre_mean": _plain(self.centre_mean),
            "centre_sd": _plain(self.centre_sd),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CentreStandardisation:
        _check_kind(data, CENTRE_KIND)
        m, p = len(data["batches"]), int(data["n_features"])
        return cls(
            batches=tuple(str(b) for b in data["batches"]),
            n_per_batch=np.array(data["n_per_batch"], dtype=np.int64),
            pooled_mean=_array(data["pooled_mean"], (p,)),
            pooled_sd=_array(data["pooled_sd"], (p,)),
            adjusted=np.array(data["adjusted"], dtype=bool).reshape(p),
            centre_mean=_array(data["centre_mean"], (m, p)),
            centre_sd=_array(data["centre_sd"], (m, p)),
        )


def _centre_statistics(y: np.ndarray, pooled_mean: np.ndarray, pooled_sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One centre's mean and SD per feature, with the fall-backs described on the class."""
    mean, count = _known_mean(y)
    variance = _known_variance(y, mean, count)
    sd = np.sqrt(variance)
    scale = 1.0 + np.abs(np.nan_to_num(mean))
    sd = np.where(np.isfinite(sd) & (sd > _ZERO_SD_RELATIVE * scale), sd, pooled_sd)
    return np.where(count >= 1, mean, pooled_mean), np.where(count >= 1, sd, pooled_sd)


def fit_centre_standardisation(features: np.ndarray, batches: Sequence[Any]) -> CentreStandardisation:
    """Per-centre mean and SD of each feature (known values only), and the pooled mean and SD.

    The pooled statistics are over all training lesions (SD with denominator n - 1). Features
    with zero pooled SD or fewer than two known values are left unchanged.
    """
    y = _as_features(features)
    labels = _as_labels(batches, y.shape[0])
    names = tuple(dict.fromkeys(labels))
    index = _batch_rows(labels, names, "per-centre standardisation")
    pooled_mean, count = _known_mean(y)
    pooled_sd = np.sqrt(_known_variance(y, pooled_mean, count))
    scale = 1.0 + np.nanmax(np.abs(y), axis=0, initial=0.0)
    adjusted = np.isfinite(pooled_sd) & (np.nan_to_num(pooled_sd) > _ZERO_SD_RELATIVE * scale)
    safe_sd = np.where(adjusted, pooled_sd, 1.0)
    statistics = [_centre_statistics(y[index == i], pooled_mean, safe_sd) for i in range(len(names))]
    return CentreStandardisation(
        batches=names,
        n_per_batch=np.array([int((index == i).sum()) for i in range(len(names))], dtype=np.int64),
        pooled_mean=pooled_mean,
        pooled_sd=pooled_sd,
        adjusted=adjusted,
        centre_mean=np.array([s[0] for s in statistics]).reshape(len(names), -1),
        centre_sd=np.array([s[1] for s in statistics]).reshape(len(names), -1),
    )


def harmonisation_from_dict(data: dict[str, Any]) -> CombatModel | CentreStandardisation:
    """Read either model back from its ``to_dict`` form (dispatch on ``kind``)."""
    readers = {COMBAT_KIND: CombatModel.from_dict, CENTRE_KIND: CentreStandardisation.from_dict}
    if data.get("kind") not in readers:
        raise ValueError(f"unknown harmonisation model kind {data.get('kind')!r}")
    return readers[data["kind"]](data)
