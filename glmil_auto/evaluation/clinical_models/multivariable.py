"""Is the model's score prognostic independently of the clinical variables?

    result = multivariable_logistic(y, score, covariates)            # binary endpoint
    result = multivariable_cox(time, event, score, covariates)       # survival endpoint
    forest_plot(result.table, "Local failure", "forest.png")

The score enters a logistic (``statsmodels`` Logit, maximum likelihood with an intercept) or Cox
(``lifelines`` CoxPHFitter, Efron ties, no penalty) regression next to the covariates; its odds /
hazard ratio with Wald 95 % CI and p-value, adjusted for the covariates, is the first row of the
table.

Where maximum likelihood has no finite estimate (``firth="auto"``, the default): logistic
separation or Cox monotone likelihood, found by a linear program before the fit or by the fit's
own signs (a PerfectSeparation error or warning, no convergence, a ratio beyond ``UNSTABLE_RATIO``
or a missing standard error), the table holds Firth's penalised-likelihood estimates instead
(:mod:`glmil_auto.evaluation.clinical_models.firth`: profile penalised-likelihood CIs, penalised
likelihood-ratio p-values), and the result says so (``method``, ``estimation``, ``separation``).
``firth="never"`` keeps the maximum-likelihood fit whatever it gives, ``"always"`` fits Firth's.

Conventions:

* ``y``, ``score``, ``time`` and ``event`` are matched to ``covariates`` by position; a pandas
  Series must carry the covariates' index (otherwise ValueError), so nothing is silently misaligned.
* Rows with a missing value in the outcome, the score or any covariate are dropped before the fit
  (complete-case analysis); the result reports how many (``dropped``).
* Numeric and boolean covariates enter as they are. Text and categorical covariates are one-hot
  encoded with the first level as the reference: the first category of a pandas Categorical, else
  the first of the sorted distinct values (of the kept rows). A level's term is ``column[level]``.
* The table's columns are ``term``, ``odds_ratio`` (logistic) or ``hazard_ratio`` (Cox),
  ``ci_low``, ``ci_high``, ``p_value``, ``coefficient`` and ``se``; the logistic intercept is fitted
  but not listed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

LOGISTIC_COLUMNS = ["term", "odds_ratio", "ci_low", "ci_high", "p_value", "coefficient", "se"]
COX_COLUMNS = ["term", "hazard_ratio", "ci_low", "ci_high", "p_value", "coefficient", "se"]
UNSTABLE_RATIO = 1e4  # an odds or hazard ratio beyond 1e4 (or below 1e-4) signals (quasi-)separation
MAXIMUM_LIKELIHOOD = "maximum likelihood"
FIRTH = "firth"
_FIRTH_CHOICES = ("auto", "always", "never")
_DURATION, _EVENT = "__time__", "__event__"  # the lifelines frame's outcome columns


@dataclass
class MultivariableResult:
    """A fitted multivariable model: the table (one row per term, the score first), the number of
    patients used (``n``), events among them and the rows dropped for missing values."""

    table: pd.DataFrame
    n: int
    events: int
    dropped: int
    model: Any = None  # the fitted statsmodels results / lifelines CoxPHFitter (None for Firth's fit)
    method: str = MAXIMUM_LIKELIHOOD  # or FIRTH
    estimation: str = "maximum likelihood: Wald CIs and p-values"
    separation: dict[str, Any] | None = None  # why Firth's fit replaced maximum likelihood
    warnings: list[str] = field(default_factory=list)  # of the fit in the table
    converged: bool = True


def _aligned(values: Any, index: pd.Index, name: str) -> pd.Series:
    if isinstance(values, pd.Series):
        if not values.index.equals(index):
            raise ValueError(f"{name} is a Series whose index differs from the covariates' index")
        return pd.Series(pd.to_numeric(values, errors="raise").to_numpy(dtype=float), index=index, name=name)
    array = np.asarray(values, dtype=float).reshape(-1)
    if len(array) != len(index):
        raise ValueError(f"{name} has {len(array)} values for {len(index)} covariate rows")
    return pd.Series(array, index=index, name=name)


def _is_categorical(column: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column))


def encode_covariates(covariates: pd.DataFrame) -> pd.DataFrame:
    """Float design columns: numeric / boolean columns as they are, the others one-hot with the
    first level (first category, else first sorted value) as the reference. No missing values."""
    columns: dict[str, pd.Series] = {}
    for name in covariates.columns:
        column = covariates[name]
        if not _is_categorical(column):
            columns[str(name)] = column.astype(float)
            continue
        if isinstance(column.dtype, pd.CategoricalDtype):
            levels = [level for level in column.cat.categories if (column == level).any()]
        else:
            levels = sorted(column.astype(str).unique())
            column = column.astype(str)
        for level in levels[1:]:
            columns[f"{name}[{level}]"] = (column == level).astype(float)
    return pd.DataFrame(columns, index=covariates.index)


def _prepare(outcomes: dict[str, Any], score: Any, covariates: pd.DataFrame,
             score_name: str) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(outcome columns, design with the score first, rows dropped) on the complete cases."""
    if not isinstance(covariates, pd.DataFrame):
        raise TypeError("covariates must be a pandas DataFrame")
    if score_name in covariates.columns:
        raise ValueError(f"score_name {score_name!r} is also a covariate column")
    index = covariates.index
    frame = pd.DataFrame({name: _aligned(values, index, name) for name, values in outcomes.items()}, index=index)
    score_series = _aligned(score, index, score_name)
    complete = frame.notna().all(axis=1) & score_series.notna() & covariates.notna().all(axis=1)
    kept = covariates.loc[complete]
    design = pd.concat([score_series.loc[complete].rename(score_name), encode_covariates(kept)], axis=1)
    constant = [c for c in design.columns if design[c].nunique() < 2]
    if constant:
        raise ValueError(f"terms {constant} do not vary over the {int(complete.sum())} complete rows")
    return frame.loc[complete], design, int((~complete).sum())


def _messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return sorted({str(w.message).split("\n")[0] for w in caught})


def divergence(table: pd.DataFrame, ratio_column: str, messages: list[str]) -> str | None:
    """Why a maximum-likelihood table is not a finite estimate (None when it is): a ratio beyond
    ``UNSTABLE_RATIO``, a missing standard error, or a fitting warning about convergence,
    separation or a singular information matrix."""
    ratio = table[ratio_column].to_numpy(dtype=float)
    extreme = [str(t) for t, r, se in zip(table["term"], ratio, table["se"].to_numpy(dtype=float))
               if not (math.isfinite(se) and 1 / UNSTABLE_RATIO < r < UNSTABLE_RATIO)]
    signs = [m for m in messages if any(word in m.lower() for word in ("converge", "separation", "singular",
                                                                        "hessian", "invert"))]
    if not extreme and not signs:
        return None
    return "; ".join(([f"ratios beyond {UNSTABLE_RATIO:g} or without a standard error for {extreme}"] if extreme else [])
                     + signs[:1])


def _maximum_likelihood(fit: Callable[[], tuple[pd.DataFrame, Any]], ratio_column: str, firth: str
                        ) -> tuple[pd.DataFrame | None, Any, list[str], str | None]:
    """(table, fitted model, warnings, why it is not a finite estimate) of a maximum-likelihood fit;
    with ``firth="auto"`` a failing fit gives (None, None, warnings, why) instead of raising."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table, model = fit()
        except Exception as exc:  # noqa: BLE001 - separation, a singular design: Firth's fit may still work
            if firth != "auto":
                raise
            return None, None, _messages(caught), f"the maximum-likelihood fit failed ({type(exc).__name__}: {exc})"
    messages = _messages(caught)
    return table, model, messages, divergence(table, ratio_column, messages)


def _firth_table(terms: list[str], ratio_column: str, fit: Any) -> pd.DataFrame:
    return pd.DataFrame({"term": terms, ratio_column: np.exp(fit.coefficient), "ci_low": np.exp(fit.ci_low),
                         "ci_high": np.exp(fit.ci_high), "p_value": fit.p_value, "coefficient": fit.coefficient,
                         "se": fit.se})


def _check_firth(firth: str) -> None:
    if firth not in _FIRTH_CHOICES:
        raise ValueError(f"firth must be one of {_FIRTH_CHOICES}, got {firth!r}")


def _separation(terms: list[str], reason: str | None, ml_warnings: list[str]) -> dict[str, Any]:
    return {"detected_by": "linear program" if terms else "maximum-likelihood fit", "terms": terms,
            "reason": reason, "maximum_likelihood_warnings": ml_warnings}


def _logistic_table(target: np.ndarray, design: pd.DataFrame, alpha: float) -> tuple[pd.DataFrame, Any]:
    import statsmodels.api as sm

    fit = sm.Logit(target, sm.add_constant(design, has_constant="add")).fit(disp=0)
    intervals = fit.conf_int(alpha=alpha)
    terms = list(design.columns)
    table = pd.DataFrame({
        "term": terms,
        "odds_ratio": np.exp(fit.params[terms].to_numpy()),
        "ci_low": np.exp(intervals.loc[terms, 0].to_numpy()),
        "ci_high": np.exp(intervals.loc[terms, 1].to_numpy()),
        "p_value": fit.pvalues[terms].to_numpy(),
        "coefficient": fit.params[terms].to_numpy(),
        "se": fit.bse[terms].to_numpy(),
    })
    return table[LOGISTIC_COLUMNS], fit


def multivariable_logistic(y: Any, score: Any, covariates: pd.DataFrame, score_name: str = "model score",
                           alpha: float = 0.05, firth: str = "auto") -> MultivariableResult:
    """Logistic regression of the binary ``y`` (0/1) on the score and the covariates (statsmodels
    Logit with an intercept). Table: odds ratio exp(coef) with its Wald (1 - alpha) CI, p-value,
    coefficient and standard error per term, the score first; Firth's estimates where the data
    separate (see the module docstring for ``firth``)."""
    from glmil_auto.evaluation.clinical_models.firth import LOGISTIC_METHOD, firth_logistic, logistic_separation_terms

    _check_firth(firth)
    outcome, design, dropped = _prepare({"y": y}, score, covariates, score_name)
    target = outcome["y"].to_numpy()
    if not np.isin(target, (0.0, 1.0)).all():
        raise ValueError("y must hold 0/1 values (or missing)")
    n, events = len(target), int(target.sum())
    terms = logistic_separation_terms(design, target) if firth == "auto" else []
    reason = (f"separation: no finite maximum-likelihood estimate (terms of the separating direction: {terms})"
              if terms else None)
    ml_warnings: list[str] = []
    if reason is None and firth != "always":
        table, model, ml_warnings, reason = _maximum_likelihood(lambda: _logistic_table(target, design, alpha),
                                                                "odds_ratio", firth)
        if reason is None or firth == "never":
            return MultivariableResult(table, n, events, dropped, model, warnings=ml_warnings)
    fit = firth_logistic(design, target, alpha)
    return MultivariableResult(_firth_table(list(design.columns), "odds_ratio", fit)[LOGISTIC_COLUMNS], n, events,
                               dropped, None, FIRTH, LOGISTIC_METHOD,
                               _separation(terms, reason or "requested (firth='always')", ml_warnings),
                               fit.warnings, fit.converged)


def _cox_table(data: pd.DataFrame, terms: list[str], alpha: float) -> tuple[pd.DataFrame, Any]:
    from lifelines import CoxPHFitter

    fitter = CoxPHFitter(alpha=alpha)
    fitter.fit(data, duration_col=_DURATION, event_col=_EVENT)
    summary = fitter.summary.loc[terms]
    intervals = fitter.confidence_intervals_.loc[terms]  # columns: lower, upper bound of coef
    table = pd.DataFrame({
        "term": terms,
        "hazard_ratio": summary["exp(coef)"].to_numpy(),
        "ci_low": np.exp(intervals.iloc[:, 0].to_numpy()),
        "ci_high": np.exp(intervals.iloc[:, 1].to_numpy()),
        "p_value": summary["p"].to_numpy(),
        "coefficient": summary["coef"].to_numpy(),
        "se": summary["se(coef)"].to_numpy(),
    })
    return table[COX_COLUMNS], fitter


def multivariable_cox(time: Any, event: Any, score: Any, covariates: pd.DataFrame, score_name: str = "model score",
                      alpha: float = 0.05, firth: str = "auto") -> MultivariableResult:
    """Cox regression (lifelines CoxPHFitter, no penalty) of (``time`` > 0, ``event`` 0/1) on the
    score and the covariates. Table: hazard ratio exp(coef) with its Wald (1 - alpha) CI, p-value,
    coefficient and standard error per term, the score first; Firth's estimates where the
    likelihood is monotone (see the module docstring for ``firth``)."""
    from glmil_auto.evaluation.clinical_models.firth import COX_METHOD, firth_cox, monotone_likelihood_terms

    _check_firth(firth)
    outcome, design, dropped = _prepare({"time": time, "event": event}, score, covariates, score_name)
    if not np.isin(outcome["event"].to_numpy(), (0.0, 1.0)).all():
        raise ValueError("event must hold 0/1 values (or missing)")
    if (outcome["time"] <= 0).any():
        raise ValueError("time must be positive")
    data = design.copy()
    data[_DURATION] = outcome["time"].to_numpy()
    data[_EVENT] = outcome["event"].to_numpy()
    n, events = len(data), int(data[_EVENT].sum())
    terms = (monotone_likelihood_terms(data[_DURATION].to_numpy(), data[_EVENT].to_numpy(), design)
             if firth == "auto" else [])
    reason = (f"monotone likelihood: no finite maximum-likelihood estimate (terms of the diverging direction: "
              f"{terms})" if terms else None)
    ml_warnings: list[str] = []
    if reason is None and firth != "always":
        table, model, ml_warnings, reason = _maximum_likelihood(lambda: _cox_table(data, list(design.columns), alpha),
                                                                "hazard_ratio", firth)
        if reason is None or firth == "never":
            return MultivariableResult(table, n, events, dropped, model, warnings=ml_warnings)
    fit = firth_cox(data[_DURATION].to_numpy(), data[_EVENT].to_numpy(), design, alpha)
    return MultivariableResult(_firth_table(list(design.columns), "hazard_ratio", fit)[COX_COLUMNS], n, events,
                               dropped, None, FIRTH, COX_METHOD,
                               _separation(terms, reason or "requested (firth='always')", ml_warnings),
                               fit.warnings, fit.converged)


def forest_plot(table: pd.DataFrame, title: str, path: str | Path) -> Path:
    """Draw the table's ratios (``odds_ratio`` or ``hazard_ratio``) with their CI bars on a log x
    axis, the first term at the top and a vertical line at 1; save as PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ratio_column = "odds_ratio" if "odds_ratio" in table else "hazard_ratio" if "hazard_ratio" in table else None
    if ratio_column is None:
        raise ValueError("table needs an 'odds_ratio' or 'hazard_ratio' column")
    ratio = table[ratio_column].to_numpy(dtype=float)
    low = table["ci_low"].to_numpy(dtype=float)
    high = table["ci_high"].to_numpy(dtype=float)
    positions = np.arange(len(table))[::-1]
    figure = Figure(figsize=(6.5, 1.2 + 0.45 * max(len(table), 1)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    shown = np.isfinite(ratio) & (ratio > 0)
    bars = shown & np.isfinite(low) & np.isfinite(high) & (low > 0)
    axes.errorbar(ratio[bars], positions[bars], xerr=[ratio[bars] - low[bars], high[bars] - ratio[bars]],
                  fmt="none", ecolor="black", capsize=3, linewidth=1)
    axes.plot(ratio[shown], positions[shown], "s", color="tab:blue", markersize=6)
    axes.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.set_xscale("log")
    axes.set_yticks(positions)
    axes.set_yticklabels([str(term) for term in table["term"]])
    axes.set_ylim(-0.7, len(table) - 0.3)
    axes.set_xlabel(("Odds" if ratio_column == "odds_ratio" else "Hazard") + " ratio (confidence interval)")
    axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=120)
    return path
