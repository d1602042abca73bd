"""Harmonisation of lesion features across centres: ComBat (Johnson, Li & Rabinovic 2007) checked
against brute-force loops and an independent implementation of the paper's empirical-Bayes
fixed point, and per-centre standardisation; NaN, zero-variance features, one-lesion batches,
new centres at prediction time and the JSON round trip."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import statsmodels.api as sm

from glmil_auto.preprocessing.lesion_features.harmonisation import (
    CentreStandardisation,
    CombatModel,
    UnseenBatchError,
    fit_centre_standardisation,
    fit_combat,
    harmonisation_from_dict,
)

SIZES = (80, 120, 60, 100, 50)


def simulate(
    seed: int, sizes: tuple[int, ...] = SIZES, p: int = 40, shift_sd: float = 1.0, covariate: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features with known batch effects: y = alpha + sigma (gamma_ig + sqrt(delta_ig) eps) [+ x beta].

    Additive effects are about ``shift_sd`` pooled SDs (a batch level plus per-feature scatter),
    multiplicative ones a batch level times a per-feature factor; returns features, labels, index.
    """
    rng = np.random.default_rng(seed)
    m = len(sizes)
    index = np.repeat(np.arange(m), sizes)
    labels = np.array([f"centre{i}" for i in index])
    alpha, sigma = rng.normal(5.0, 2.0, p), rng.uniform(0.5, 2.0, p)
    gamma = rng.normal(0.0, shift_sd, m)[:, None] + rng.normal(0.0, 0.3, (m, p))
    delta = np.exp(rng.normal(0.0, 0.5, m))[:, None] * np.exp(rng.normal(0.0, 0.2, (m, p)))
    y = alpha + sigma * (gamma[index] + np.sqrt(delta[index]) * rng.normal(size=(index.size, p)))
    if covariate is not None:
        y += np.outer(covariate, sigma)  # one pooled SD per unit of the covariate
    return y, labels, index


def ordered_names(labels: np.ndarray) -> list[str]:
    return list(dict.fromkeys(str(v) for v in labels))


# ----------------------------------------------------------------------------- brute-force references


def loop_standardise(y: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, list[float], list[float]]:
    """The paper's standardisation without covariates, with plain loops over known values only.

    Least squares on batch indicators alone gives the per-batch means; grand mean = their
    size-weighted average; pooled variance = mean squared deviation from the batch means (1/N).
    """
    n, p = y.shape
    names = ordered_names(labels)
    z = np.full((n, p), np.nan)
    grand_means, pooled_sds = [], []
    for g in range(p):
        batch_mean, count = {}, {}
        for b in names:
            values = [y[j, g] for j in range(n) if labels[j] == b and not math.isnan(y[j, g])]
            count[b] = len(values)
            batch_mean[b] = sum(values) / len(values) if values else math.nan
        total = sum(count.values())
        mean = sum(count[b] * batch_mean[b] for b in names if count[b]) / total
        squares = sum((y[j, g] - batch_mean[labels[j]]) ** 2 for j in range(n) if not math.isnan(y[j, g]))
        sd = math.sqrt(squares / total)
        for j in range(n):
            z[j, g] = (y[j, g] - mean) / sd
        grand_means.append(mean)
        pooled_sds.append(sd)
    return z, grand_means, pooled_sds


def loop_location_scale(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch mean and sample variance (n - 1) of the standardised data, known values only."""
    names = ordered_names(labels)
    gamma = np.full((len(names), z.shape[1]), np.nan)
    delta = np.full((len(names), z.shape[1]), np.nan)
    for i, b in enumerate(names):
        for g in range(z.shape[1]):
            values = [z[j, g] for j in range(z.shape[0]) if labels[j] == b and not math.isnan(z[j, g])]
            if values:
                gamma[i, g] = sum(values) / len(values)
            if len(values) >= 2:
                delta[i, g] = sum((v - gamma[i, g]) ** 2 for v in values) / (len(values) - 1)
    return gamma, delta


def paper_parametric_eb(z: np.ndarray, labels: np.ndarray, gamma_hat: np.ndarray, delta_hat: np.ndarray) -> dict:
    """Johnson et al. (2007), section 3.1 and appendix, written out with loops.

    Per batch i: gamma_bar_i, tau_i^2 = mean and sample variance of gamma_hat_ig over features;
    lambda_i, theta_i of the inverse gamma by the method of moments on delta_hat_ig (mean m,
    sample variance s2: lambda = (2 s2 + m^2) / s2, theta = (m s2 + m^3) / s2). Per feature, from
    the L/S estimates, iterate gamma* = (n tau^2 gamma_hat + delta* gamma_bar) / (n tau^2 + delta*)
    and delta* = (theta + sum (z - gamma*)^2 / 2) / (n / 2 + lambda - 1) until nothing moves.
    """
    names = ordered_names(labels)
    p = z.shape[1]
    out = {key: np.full((len(names), p), np.nan) for key in ("gamma", "delta")}
    out.update({key: np.full(len(names), np.nan) for key in ("gamma_bar", "tau2", "a", "b")})
    for i, batch in enumerate(names):
        gh, dh = [float(v) for v in gamma_hat[i]], [float(v) for v in delta_hat[i]]
        gamma_bar = sum(gh) / p
        tau2 = sum((v - gamma_bar) ** 2 for v in gh) / (p - 1)
        m = sum(dh) / p
        s2 = sum((v - m) ** 2 for v in dh) / (p - 1)
        lam, theta = (2 * s2 + m * m) / s2, (m * s2 + m**3) / s2
        out["gamma_bar"][i], out["tau2"][i], out["a"][i], out["b"][i] = gamma_bar, tau2, lam, theta
        for g in range(p):
            x = [z[j, g] for j in range(z.shape[0]) if labels[j] == batch and not math.isnan(z[j, g])]
            n = len(x)
            g_old, d_old = gh[g], dh[g]
            for _ in range(10_000):
                g_new = (tau2 * n * gh[g] + d_old * gamma_bar) / (tau2 * n + d_old)
                d_new = (theta + 0.5 * sum((v - g_new) ** 2 for v in x)) / (n / 2 + lam - 1)
                settled = abs(g_new - g_old) <= 1e-15 and abs(d_new - d_old) <= 1e-15
                g_old, d_old = g_new, d_new
                if settled:
                    break
            out["gamma"][i, g], out["delta"][i, g] = g_old, d_old
    return out


def paper_nonparametric_eb(z: np.ndarray, labels: np.ndarray, gamma_hat: np.ndarray, delta_hat: np.ndarray):
    """The non-parametric prior (as sva's int.eprior): likelihood-weighted means over other features."""
    names = ordered_names(labels)
    gamma, delta = np.full(gamma_hat.shape, np.nan), np.full(delta_hat.shape, np.nan)
    for i, batch in enumerate(names):
        for g in range(z.shape[1]):
            x = [z[j, g] for j in range(z.shape[0]) if labels[j] == batch and not math.isnan(z[j, g])]
            weights, gs, ds = [], [], []
            for k in range(z.shape[1]):
                if k == g:
                    continue
                gk, dk = gamma_hat[i, k], delta_hat[i, k]
                lh = 1.0
                for v in x:
                    lh *= math.exp(-((v - gk) ** 2) / (2 * dk)) / math.sqrt(2 * math.pi * dk)
                weights.append(lh)
                gs.append(gk)
                ds.append(dk)
            assert sum(weights) > 0  # no underflow in this reference at these batch sizes
            gamma[i, g] = sum(w * v for w, v in zip(weights, gs)) / sum(weights)
            delta[i, g] = sum(w * v for w, v in zip(weights, ds)) / sum(weights)
    return gamma, delta


def with_missing(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    y = y.copy()
    if fraction:
        y[np.random.default_rng(seed).random(y.shape) < fraction] = np.nan
    return y


def per_batch_disagreement(h: np.ndarray, index: np.ndarray) -> tuple[float, float]:
    """Median over features of (range of per-batch means) / pooled SD and of max/min per-batch variance."""
    m = index.max() + 1
    means = np.array([np.nanmean(h[index == i], axis=0) for i in range(m)])
    variances = np.array([np.nanvar(h[index == i], axis=0, ddof=1) for i in range(m)])
    spread = (means.max(0) - means.min(0)) / np.nanstd(h, axis=0)
    return float(np.median(spread)), float(np.median(variances.max(0) / variances.min(0)))


# ----------------------------------------------------------------------------- location / scale estimates


@pytest.mark.parametrize("missing", [0.0, 0.1])
def test_location_scale_estimates_without_eb_equal_brute_force_loops(missing):
    y, labels, _ = simulate(seed=1, p=12)
    y = with_missing(y, missing, seed=2)
    model = fit_combat(y, labels, empirical_bayes=False)
    z, grand_mean, pooled_sd = loop_standardise(y, labels)
    gamma, delta = loop_location_scale(z, labels)
    assert model.batches == tuple(ordered_names(labels))
    np.testing.assert_allclose(model.grand_mean, grand_mean, rtol=1e-12)
    np.testing.assert_allclose(model.pooled_sd, pooled_sd, rtol=1e-12)
    np.testing.assert_allclose(model.gamma_hat, gamma, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.delta_hat, delta, rtol=1e-10)
    np.testing.assert_array_equal(model.gamma_star, model.gamma_hat)  # no shrinkage without EB
    np.testing.assert_array_equal(model.delta_star, model.delta_hat)
    # the known batch effects are there to be estimated: about a pooled SD of shift, 2x in variance
    assert np.abs(gamma).max() > 0.8 and delta.max() / delta.min() > 2
    # harmonised = (z - gamma) / sqrt(delta) * sigma + mean, written out per value
    index = {b: i for i, b in enumerate(ordered_names(labels))}
    expected = np.array(
        [
            [(z[j, g] - gamma[index[labels[j]], g]) / math.sqrt(delta[index[labels[j]], g]) * pooled_sd[g] + grand_mean[g]
             for g in range(y.shape[1])]
            for j in range(y.shape[0])
        ]
    )
    np.testing.assert_allclose(model.apply(y, labels), expected, rtol=1e-10, atol=1e-10)


def test_standardisation_with_covariates_equals_ordinary_least_squares():
    rng = np.random.default_rng(3)
    index = np.repeat(np.arange(4), (50, 70, 40, 60))
    age = rng.normal(60 + 5 * index, 10)  # unbalanced across centres
    y, labels, _ = simulate(seed=3, sizes=(50, 70, 40, 60), p=8, covariate=0.05 * (age - 60))
    model = fit_combat(y, labels, covariates=age, empirical_bayes=False)
    dummies = (index[:, None] == np.arange(4)).astype(float)
    z = np.empty_like(y)
    for g in range(y.shape[1]):
        fit = sm.OLS(y[:, g], np.column_stack([dummies, age])).fit()
        grand = np.bincount(index) @ fit.params[:4] / index.size
        assert model.grand_mean[g] == pytest.approx(grand, rel=1e-10)
        assert model.covariate_coef[0, g] == pytest.approx(fit.params[4], rel=1e-8)
        assert model.pooled_sd[g] == pytest.approx(math.sqrt(fit.ssr / index.size), rel=1e-10)
        z[:, g] = (y[:, g] - grand - fit.params[4] * age) / math.sqrt(fit.ssr / index.size)
    gamma, delta = loop_location_scale(z, labels)
    np.testing.assert_allclose(model.gamma_hat, gamma, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.delta_hat, delta, rtol=1e-8)


@pytest.mark.parametrize("missing", [0.0, 0.1])
def test_parametric_eb_equals_the_papers_fixed_point_written_with_loops(missing):
    y, labels, _ = simulate(seed=4, p=15)
    y = with_missing(y, missing, seed=5)
    model = fit_combat(y, labels)
    z, _, _ = loop_standardise(y, labels)
    gamma_hat, delta_hat = loop_location_scale(z, labels)
    reference = paper_parametric_eb(z, labels, gamma_hat, delta_hat)
    np.testing.assert_allclose(model.gamma_bar, reference["gamma_bar"], rtol=1e-10)
    np.testing.assert_allclose(model.tau2, reference["tau2"], rtol=1e-10)
    np.testing.assert_allclose(model.prior_a, reference["a"], rtol=1e-10)
    np.testing.assert_allclose(model.prior_b, reference["b"], rtol=1e-10)
    np.testing.assert_allclose(model.gamma_star, reference["gamma"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(model.delta_star, reference["delta"], rtol=0, atol=1e-8)
    # the shrinkage is not negligible here, so returning the L/S estimates would fail above
    assert np.abs(model.gamma_star - gamma_hat).max() > 1e-2
    assert np.abs(model.delta_star - delta_hat).max() > 1e-2


def test_nonparametric_eb_equals_the_likelihood_weighted_prior_written_with_loops():
    y, labels, _ = simulate(seed=6, sizes=(25, 30, 20), p=12)
    model = fit_combat(y, labels, parametric=False)
    z, _, _ = loop_standardise(y, labels)
    gamma_hat, delta_hat = loop_location_scale(z, labels)
    gamma, delta = paper_nonparametric_eb(z, labels, gamma_hat, delta_hat)
    np.testing.assert_allclose(model.gamma_star, gamma, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.delta_star, delta, rtol=1e-8)
    assert np.abs(model.gamma_star - gamma_hat).max() > 1e-2
    # a centre of 2000 lesions: the likelihoods themselves underflow (1e-1000), the log weights do not
    y, labels, _ = simulate(seed=6, sizes=(2000, 300), p=12)
    large = fit_combat(y, labels, parametric=False)
    assert np.isfinite(large.gamma_star).all() and (large.delta_star > 0).all()


# ----------------------------------------------------------------------------- what harmonisation achieves


def test_batches_agree_far_better_after_harmonisation():
    y, labels, index = simulate(seed=7)
    spread_before, ratio_before = per_batch_disagreement(y, index)
    assert spread_before > 1.0 and ratio_before > 2.0  # about a pooled SD apart, variances 2x apart
    exact = fit_combat(y, labels, empirical_bayes=False).apply(y, labels)
    spread, ratio = per_batch_disagreement(exact, index)
    assert spread < 1e-10 and ratio == pytest.approx(1.0, abs=1e-10)  # L/S: removed exactly
    # EB keeps ~ delta / (n tau^2 + delta) (about 10% here) of each feature's departure
    # (~0.3 SD) from its batch's level, so the means agree to ~0.1 SD (we find 0.12 from 1.03)
    spread, ratio = per_batch_disagreement(fit_combat(y, labels).apply(y, labels), index)
    assert spread < spread_before / 5 and spread < 0.2
    assert ratio - 1 < (ratio_before - 1) / 4
    spread, ratio = per_batch_disagreement(fit_centre_standardisation(y, labels).apply(y, labels), index)
    assert spread < 1e-10 and ratio == pytest.approx(1.0, abs=1e-10)


def test_a_covariate_unbalanced_across_batches_is_preserved():
    """A binary biological variable (say melanoma primary), common at some centres and rare at
    others, shifts every feature by one pooled SD; ComBat with it as a covariate keeps that
    effect, ComBat without it removes the part that looks like batch."""
    rng = np.random.default_rng(8)
    index = np.repeat(np.arange(len(SIZES)), SIZES)
    prevalence = np.array([0.8, 0.2, 0.6, 0.1, 0.5])
    melanoma = (rng.random(index.size) < prevalence[index]).astype(float)
    y, labels, _ = simulate(seed=8, covariate=melanoma)

    def effect(h: np.ndarray) -> np.ndarray:
        """Per feature: melanoma difference within batches (pooled) over the model's pooled SD."""
        design = np.column_stack([(index[:, None] == np.arange(len(SIZES))).astype(float), melanoma])
        return np.linalg.lstsq(design, h, rcond=None)[0][-1]

    with_covariate = fit_combat(y, labels, covariates=melanoma)
    harmonised = with_covariate.apply(y, labels, covariates=melanoma)
    true_effect = effect(y)  # within-batch difference in the raw data: the biology (~1 sigma_g)
    np.testing.assert_allclose(effect(harmonised) / true_effect, 1.0, atol=0.15)
    # the marginal (between-batch included) difference also survives: compare means directly
    marginal = harmonised[melanoma == 1].mean(0) - harmonised[melanoma == 0].mean(0)
    np.testing.assert_allclose(marginal / true_effect, 1.0, atol=0.25)
    # without the covariate, the between-centre part of the effect is taken for batch effect
    without = fit_combat(y, labels).apply(y, labels)
    marginal_without = without[melanoma == 1].mean(0) - without[melanoma == 0].mean(0)
    assert np.median(marginal_without / true_effect) < np.median(marginal / true_effect) - 0.2


# ----------------------------------------------------------------------------- NaN, zero variance, one lesion


def test_nan_stays_nan_and_estimates_use_the_known_values_only():
    y, labels, index = simulate(seed=9, p=20)
    y = with_missing(y, 0.05, seed=10)
    y[index == 2, 15:] = np.nan  # a centre without FLAIR: its FLAIR features are undefined
    y[:, 5] = np.nan  # a feature never defined
    model = fit_combat(y, labels)
    harmonised = model.apply(y, labels)
    np.testing.assert_array_equal(np.isnan(harmonised), np.isnan(y))
    assert not model.adjusted[5]
    assert np.isnan(model.gamma_hat[2, 15:]).all() and np.isnan(model.delta_hat[2, 15:]).all()
    np.testing.assert_array_equal(model.gamma_star[2, 15:], 0.0)  # nothing known, nothing adjusted
    np.testing.assert_array_equal(model.delta_star[2, 15:], 1.0)
    assert np.isfinite(model.gamma_star[:, model.adjusted]).all()
    # the other centres' FLAIR features are harmonised (L/S: per-batch means agree exactly)
    exact = fit_combat(y, labels, empirical_bayes=False).apply(y, labels)
    others = index != 2
    spread, _ = per_batch_disagreement(exact[others][:, 15:], index[others] - (index[others] > 2))
    assert spread < 1e-10
    # without EB features are independent: NaN in one feature does not move another
    more_missing = y.copy()
    more_missing[::3, 1] = np.nan
    moved = fit_combat(more_missing, labels, empirical_bayes=False).apply(more_missing, labels)
    np.testing.assert_allclose(np.delete(moved, 1, axis=1), np.delete(exact, 1, axis=1), rtol=1e-12, equal_nan=True)
    assert not np.allclose(moved[:, 1], exact[:, 1], equal_nan=True)


@pytest.mark.parametrize("empirical_bayes", [False, True])
def test_a_zero_variance_feature_is_left_unchanged_and_does_not_affect_the_others(empirical_bayes):
    y, labels, _ = simulate(seed=11, p=10)
    constant = np.insert(y, 3, 7.25, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = fit_combat(constant, labels, empirical_bayes=empirical_bayes)
        harmonised = model.apply(constant, labels)
    assert model.adjusted.tolist() == [True] * 3 + [False] + [True] * 7
    np.testing.assert_array_equal(harmonised[:, 3], 7.25)
    without = fit_combat(y, labels, empirical_bayes=empirical_bayes).apply(y, labels)
    np.testing.assert_allclose(np.delete(harmonised, 3, axis=1), without, rtol=1e-12)
    centre = fit_centre_standardisation(constant, labels)
    assert not centre.adjusted[3]
    np.testing.assert_array_equal(centre.apply(constant, labels)[:, 3], 7.25)


@pytest.mark.parametrize("empirical_bayes", [False, True])
def test_a_feature_constant_within_one_batch_only_gets_a_location_adjustment_there(empirical_bayes):
    y, labels, index = simulate(seed=21, p=10)
    y[index == 1, 4] = 2.5  # e.g. a saturated texture statistic at one scanner
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = fit_combat(y, labels, empirical_bayes=empirical_bayes)
        harmonised = model.apply(y, labels)
    assert model.adjusted[4] and model.delta_hat[1, 4] < 1e-20  # zero up to rounding
    assert np.isfinite(harmonised).all()
    if not empirical_bayes:  # no scale to remove: delta = 1, and the batch's value goes to the pooled mean
        assert model.delta_star[1, 4] == 1.0
        np.testing.assert_allclose(harmonised[index == 1, 4], model.grand_mean[4], rtol=1e-12)
    else:  # the inverse-gamma prior gives it a positive posterior variance
        assert model.delta_star[1, 4] > 0


def test_a_batch_with_one_lesion_gets_no_scale_adjustment_and_does_not_crash():
    y, labels, _ = simulate(seed=12, sizes=(60, 80, 1), p=10)
    z, _, _ = loop_standardise(y, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (0/0, degrees of freedom) either
        plain = fit_combat(y, labels, empirical_bayes=False)
        shrunk = fit_combat(y, labels)
        h_plain, h_shrunk = plain.apply(y, labels), shrunk.apply(y, labels)
        centre = fit_centre_standardisation(y, labels)
        h_centre = centre.apply(y, labels)
    solo = plain.batches.index("centre2")
    assert np.isnan(plain.delta_hat[solo]).all()
    np.testing.assert_array_equal(plain.delta_star[solo], 1.0)
    np.testing.assert_array_equal(shrunk.delta_star[solo], 1.0)
    np.testing.assert_allclose(plain.gamma_hat[solo], z[-1], rtol=1e-10)  # its location is its value
    # EB: the location shrinks towards the batch level with delta fixed at 1 (n = 1)
    tau2, gamma_bar = shrunk.tau2[solo], shrunk.gamma_bar[solo]
    np.testing.assert_allclose(shrunk.gamma_star[solo], (tau2 * z[-1] + gamma_bar) / (tau2 + 1), rtol=1e-10)
    assert np.isfinite(h_plain).all() and np.isfinite(h_shrunk).all()
    np.testing.assert_allclose(h_plain[-1], plain.grand_mean, rtol=1e-10)  # moved onto the pooled mean
    np.testing.assert_allclose(h_centre[-1], centre.pooled_mean, rtol=1e-10)
    np.testing.assert_array_equal(centre.centre_sd[solo], centre.pooled_sd)


# ----------------------------------------------------------------------------- new centres


def held_out_fits(empirical_bayes: bool) -> tuple[CombatModel, CombatModel, CombatModel, np.ndarray, np.ndarray]:
    """Six training centres of 150 lesions and a small new centre of 40 (4% of the joint pool)."""
    y, labels, index = simulate(seed=13, sizes=(150,) * 6 + (40,))
    new = index == 6
    joint = fit_combat(y, labels, empirical_bayes=empirical_bayes)
    training = fit_combat(y[~new], labels[~new], empirical_bayes=empirical_bayes)
    extended = training.fit_new_batch(y[new], name="centre6", empirical_bayes=empirical_bayes)
    return joint, training, extended, y[new], labels[new]


@pytest.mark.parametrize("empirical_bayes", [False, True])
def test_fit_new_batch_is_close_to_fitting_with_the_batch_included(empirical_bayes):
    """Tolerance. The two fits map the new centre onto different pooled references: the joint
    fit's pooled mean and SD include the new centre, which moves them by about
    n_new / N x (its offset) = 4% x ~1 SD here, so the harmonised values differ by about that
    (we find 0.06 pooled SD at most and allow 0.1). Expressed in one common reference, L/S gives
    the same values exactly (a centre's within-centre standardised values do not depend on the
    reference); EB differs only through the shrinkage target gamma_bar (an average over features
    of offsets measured against the reference), which moves by a fraction of the reference
    change times the shrinkage weight delta / (n tau^2 + delta) ~ 0.15: we find 0.006 SD at most
    and allow 0.02 (median 0.005)."""
    joint, training, extended, y_new, labels_new = held_out_fits(empirical_bayes)
    sd = joint.pooled_sd
    direct = extended.apply(y_new, labels_new)
    together = joint.apply(y_new, labels_new)
    assert np.max(np.abs(direct - together) / sd) < 0.1
    common = (direct - training.grand_mean) / training.pooled_sd * joint.pooled_sd + joint.grand_mean
    error = np.abs(common - together) / sd
    # the new centre lands where the training centres are (per-feature means); with EB up to what
    # the shrinkage leaves of a 40-lesion centre's feature-specific offsets (~0.15 x 0.3 x 2 SD)
    h_train = training.apply(*_training_rows())
    landing = np.abs(direct.mean(0) - h_train.mean(0)) / training.pooled_sd
    if empirical_bayes:
        assert error.max() < 0.02 and np.median(error) < 0.005
        assert landing.max() < 0.25 and np.median(landing) < 0.05
    else:
        assert error.max() < 1e-10 and landing.max() < 1e-10


def _training_rows() -> tuple[np.ndarray, np.ndarray]:
    y, labels, index = simulate(seed=13, sizes=(150,) * 6 + (40,))
    return y[index < 6], labels[index < 6]


def test_fit_new_batch_leaves_the_training_batches_unchanged():
    y, labels, index = simulate(seed=14)
    new = index == 4
    training = fit_combat(y[~new], labels[~new])
    before = {key: np.copy(getattr(training, key)) for key in ("gamma_star", "delta_star", "gamma_hat", "tau2", "grand_mean")}
    h_before = training.apply(y[~new], labels[~new])
    extended = training.fit_new_batch(y[new], name="centre4")
    assert extended.batches == training.batches + ("centre4",)
    for key, value in before.items():
        np.testing.assert_array_equal(getattr(training, key), value)  # the fitted model is not mutated
        if value.ndim == 2 or key == "tau2":
            np.testing.assert_array_equal(getattr(extended, key)[: len(training.batches)], value)
        else:
            np.testing.assert_array_equal(getattr(extended, key), value)
    np.testing.assert_array_equal(extended.apply(y[~new], labels[~new]), h_before)
    # the new centre's estimates are its own, against the training reference (loops, without EB)
    plain = fit_combat(y[~new], labels[~new], empirical_bayes=False).fit_new_batch(y[new], name="x", empirical_bayes=False)
    z = (y[new] - plain.grand_mean) / plain.pooled_sd
    gamma, delta = loop_location_scale(z, labels[new])
    np.testing.assert_allclose(plain.gamma_star[-1], gamma[0], rtol=1e-10)
    np.testing.assert_allclose(plain.delta_star[-1], delta[0], rtol=1e-10)
    with pytest.raises(ValueError, match="already"):
        training.fit_new_batch(y[new], name="centre0")


def test_centre_standardisation_equals_loops_and_extends_to_a_new_centre():
    y, labels, index = simulate(seed=15, p=6)
    y = with_missing(y, 0.05, seed=16)
    new = index == 4
    model = fit_centre_standardisation(y[~new], labels[~new])
    known = ~np.isnan(y[~new])
    for g in range(y.shape[1]):
        values = y[~new][known[:, g], g]
        assert model.pooled_mean[g] == pytest.approx(values.mean(), rel=1e-12)
        assert model.pooled_sd[g] == pytest.approx(values.std(ddof=1), rel=1e-12)
    harmonised = model.apply(y[~new], labels[~new])
    for i in range(4):
        rows = harmonised[index[~new] == i]
        np.testing.assert_allclose(np.nanmean(rows, axis=0), model.pooled_mean, rtol=1e-10)
        np.testing.assert_allclose(np.nanstd(rows, axis=0, ddof=1), model.pooled_sd, rtol=1e-10)
    extended = model.fit_new_batch(y[new], name="centre4")
    np.testing.assert_array_equal(extended.centre_mean[:4], model.centre_mean)
    np.testing.assert_allclose(extended.centre_mean[4], np.nanmean(y[new], axis=0), rtol=1e-12)
    np.testing.assert_allclose(extended.centre_sd[4], np.nanstd(y[new], axis=0, ddof=1), rtol=1e-12)
    h_new = extended.apply(y[new], labels[new])
    np.testing.assert_allclose(np.nanmean(h_new, axis=0), model.pooled_mean, rtol=1e-10)
    np.testing.assert_array_equal(np.isnan(h_new), np.isnan(y[new]))


# ----------------------------------------------------------------------------- storage and errors


def json_round_trip(data: dict) -> dict:
    return json.loads(json.dumps(data, allow_nan=False))  # strict JSON: no NaN tokens


@pytest.mark.parametrize("parametric", [True, False])
def test_to_dict_from_dict_round_trip_gives_identical_outputs(parametric):
    rng = np.random.default_rng(17)
    y, labels, index = simulate(seed=17, sizes=(40, 60, 30, 1), p=10)
    y = with_missing(y, 0.05, seed=18)
    y[:, 2] = 3.0  # zero variance
    covariate = rng.normal(size=(y.shape[0], 2))
    model = fit_combat(y[index < 3], labels[index < 3], covariates=covariate[index < 3], parametric=parametric)
    model = model.fit_new_batch(y[index == 3], covariates_new=covariate[index == 3], name="centre3")
    restored = CombatModel.from_dict(json_round_trip(model.to_dict()))
    assert isinstance(harmonisation_from_dict(json_round_trip(model.to_dict())), CombatModel)
    assert restored.batches == model.batches and restored.parametric == parametric
    np.testing.assert_array_equal(restored.apply(y, labels, covariate), model.apply(y, labels, covariate))
    extra = simulate(seed=19, sizes=(30,), p=10)[0]
    np.testing.assert_array_equal(
        restored.fit_new_batch(extra, covariate[:30], name="z").apply(extra, ["z"] * 30, covariate[:30]),
        model.fit_new_batch(extra, covariate[:30], name="z").apply(extra, ["z"] * 30, covariate[:30]),
    )
    centre = fit_centre_standardisation(y, labels)
    back = harmonisation_from_dict(json_round_trip(centre.to_dict()))
    assert isinstance(back, CentreStandardisation)
    np.testing.assert_array_equal(back.apply(y, labels), centre.apply(y, labels))
    with pytest.raises(ValueError, match="combat"):
        CombatModel.from_dict(centre.to_dict())


def test_an_unseen_batch_raises_one_clear_error_naming_it():
    y, labels, _ = simulate(seed=20, sizes=(30, 40), p=5)
    unseen = np.where(np.arange(y.shape[0]) % 2 == 0, "Hospital Z", labels)
    for model in (fit_combat(y, labels), fit_centre_standardisation(y, labels)):
        with pytest.raises(UnseenBatchError, match="'Hospital Z'") as raised:
            model.apply(y, unseen)
        assert "fit_new_batch" in str(raised.value) and "per-centre standardisation" in str(raised.value)
    with pytest.raises(ValueError, match="collinear"):  # a constant covariate is the batch indicators' sum
        fit_combat(y, labels, covariates=np.full(y.shape[0], 2.0))
