"""Reading a ``predictions.csv`` (clear errors for what cannot be evaluated), the synthetic
cohort's truth, and the fast case bootstrap of AUC / Harrell's C that the accuracy benchmark uses.

``glmil_evaluate`` (:mod:`glmil_auto.evaluation.evaluate_command`) evaluates predictions; this
module holds what it and ``benchmarks/accuracy.py`` share. :func:`bootstrap_replicates` uses the
pairwise form of ``sklearn.metrics.roc_auc_score`` and ``sksurv.metrics.concordance_index_censored``
(through :mod:`glmil_auto.training.validation.validation_metrics`), weighted by how often each case was
drawn, which equals those functions on each resampled data set (tests check this) and is much
faster than calling them 1000 times.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from glmil_auto.dataset.dataset_json import DatasetSpec
from glmil_auto.training.validation.validation_metrics import binary_auc, harrell_c

CASE_COLUMN = "case_id"
RISK_SUFFIX = "_risk"
RISK_GROUP_SUFFIX = "_risk_group"
TIED_RISK_TOLERANCE = 1e-8  # sksurv.metrics.concordance_index_censored's default tied_tol
_MAX_PAIRWISE_CASES = 3000  # above this the bootstrap calls sklearn / sksurv per replicate
_MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a"})


class PredictionEvaluationError(ValueError):
    """Predictions (or outcomes) that cannot be evaluated; the message says what is wrong."""


def prediction_column(spec: DatasetSpec, endpoint: str) -> str:
    """``<endpoint>`` for a binary endpoint, ``<endpoint>_risk`` for a survival endpoint."""
    return endpoint if spec.endpoints[endpoint].type == "binary" else endpoint + RISK_SUFFIX


# ----------------------------------------------------------------------------------------------- input


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a ``predictions.csv`` keeping every cell as text (case ids stay strings, e.g. ``0001``)."""
    path = Path(path)
    if not path.is_file():
        raise PredictionEvaluationError(f"predictions file not found: {path}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PredictionEvaluationError(f"{path}: cannot be parsed as CSV ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    return table.apply(lambda column: column.str.strip())


def _case_column(predictions: pd.DataFrame, spec: DatasetSpec) -> str:
    for column in dict.fromkeys((CASE_COLUMN, spec.case_column)):
        if column in predictions.columns:
            return column
    raise PredictionEvaluationError(
        f"the predictions have no case id column '{CASE_COLUMN}'"
        + (f" (or '{spec.case_column}')" if spec.case_column != CASE_COLUMN else "")
        + f"; columns found: {list(predictions.columns)}"
    )


def _parsed_numbers(values: pd.Series, column: str) -> np.ndarray:
    """float64 with NaN for missing cells (empty, ``NA``, ``nan``...) and infinities kept; raises
    naming the column and the first cells that are not numbers."""
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=float)
    text = values.astype(str).str.strip()
    missing = text.str.lower().isin(_MISSING_TOKENS) | values.isna()
    parsed = pd.to_numeric(text.where(~missing), errors="coerce")
    bad = parsed.isna() & ~missing
    if bad.any():
        examples = ", ".join(f"{i}: {v!r}" for i, v in list(text[bad].items())[:3])
        raise PredictionEvaluationError(f"column '{column}' holds values that are not numbers ({examples})")
    return parsed.to_numpy(dtype=float)


def numeric_column(values: pd.Series, column: str) -> np.ndarray:
    """float64 with NaN for missing (and infinite) cells; raises naming the column and the first
    bad cells. For baseline tables, where a missing score only leaves that case out of that
    baseline; the model's own outputs go through :func:`checked_output_column`."""
    out = _parsed_numbers(values, column)
    out[~np.isfinite(out)] = np.nan
    return out


def invalid_output_cells(values: np.ndarray, probability: bool) -> np.ndarray:
    """Where a model output cannot be evaluated: not finite (a missing cell is NaN), or, for a
    probability, outside [0, 1]."""
    values = np.asarray(values, dtype=float)
    bad = ~np.isfinite(values)
    if probability:
        bad |= np.isfinite(values) & ((values < 0.0) | (values > 1.0))
    return bad


def _cell_problem(value: float, probability: bool) -> str:
    if np.isnan(value):
        return "empty (NaN)"
    if not np.isfinite(value):
        return f"{value} is not finite"
    return f"{value:g} is not a probability in [0, 1]"


def checked_output_column(values: pd.Series, column: str, probability: bool) -> np.ndarray:
    """A column of the model's outputs as float64, every cell checked: a probability (``<endpoint>``,
    ``<endpoint>_uncalibrated``, ``<endpoint>_starting_point``, ``<endpoint>_surv_<t>``) must lie in
    [0, 1], a risk score must be finite, and no cell may be empty. ``glmil_predict`` writes a
    number in every cell of a case it predicted, so an empty cell is an error, not a case to leave
    out silently (a case without a prediction has no row). The error names the column, the first
    bad case (the Series' index) and how many cells are bad, in one line."""
    numbers = _parsed_numbers(values, column)
    bad = invalid_output_cells(numbers, probability)
    if not bad.any():
        return numbers
    cases = list(values.index[bad])
    first = float(numbers[bad][0])
    more = "" if len(cases) == 1 else f" ({len(cases)} cells of this column are bad: cases {cases[:5]})"
    what = "probabilities in [0, 1]" if probability else "finite risk scores"
    raise PredictionEvaluationError(
        f"case '{cases[0]}', column '{column}': {_cell_problem(first, probability)}{more}; the column must hold "
        f"{what} for every case (a case without a prediction has no row)")


def predicted_endpoints(predictions: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """The endpoints of ``spec`` that the predictions hold, checked for half-present columns.

    Raises :class:`PredictionEvaluationError` when a survival endpoint has ``<e>_risk_group`` but
    not ``<e>_risk``, or when no endpoint of the dataset is predicted at all.
    """
    present = []
    for name, endpoint in spec.endpoints.items():
        column = prediction_column(spec, name)
        if column in predictions.columns:
            present.append(name)
        elif endpoint.type == "survival" and name + RISK_GROUP_SUFFIX in predictions.columns:
            raise PredictionEvaluationError(
                f"column '{column}' is missing: survival endpoint '{name}' has '{name}{RISK_GROUP_SUFFIX}' "
                f"but the risk score '{column}' is needed to compute Harrell's C"
            )
    if not present:
        expected = [prediction_column(spec, n) for n in spec.endpoints]
        raise PredictionEvaluationError(
            f"no prediction column for any endpoint of the dataset: expected one of {expected}, "
            f"found columns {list(predictions.columns)}"
        )
    return present


def model_output_columns(columns: Sequence[str], spec: DatasetSpec, endpoints: Sequence[str]) -> dict[str, bool]:
    """``column -> is a probability`` for the model's outputs among ``columns`` that the evaluation
    reads: per binary endpoint ``<e>``, ``<e>_uncalibrated``, ``<e>_before_update`` (an updated
    model folder's) and ``<e>_starting_point`` (probabilities); per survival endpoint ``<e>_risk``
    and ``<e>_starting_point_risk`` (risk scores) and ``<e>_surv_<t>`` (probabilities).
    ``<e>_risk_group`` is a label, not checked here."""
    out: dict[str, bool] = {}
    for name in endpoints:
        if spec.endpoints[name].type == "binary":
            candidates = {name: True, f"{name}_uncalibrated": True, f"{name}_before_update": True,
                          f"{name}_starting_point": True}
        else:
            candidates = {name + RISK_SUFFIX: False, f"{name}_starting_point{RISK_SUFFIX}": False}
            horizon = re.compile(re.escape(f"{name}_surv_") + r"[0-9.eE+-]+")  # horizon_label's <t>
            candidates.update({c: True for c in columns if horizon.fullmatch(str(c)) and c not in spec.endpoints})
        out.update({column: probability for column, probability in candidates.items() if column in columns})
    return out


def indexed_predictions(predictions: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Predictions indexed by case id (string), with a case column checked for blanks/duplicates."""
    column = _case_column(predictions, spec)
    ids = predictions[column].astype(str).str.strip()
    if (ids == "").any() or predictions[column].isna().any():
        raise PredictionEvaluationError(f"column '{column}' has empty case ids")
    duplicated = sorted(set(ids[ids.duplicated()]))
    if duplicated:
        raise PredictionEvaluationError(f"case ids appear in more than one row: {duplicated[:5]}")
    return predictions.set_axis(pd.Index(ids.to_numpy(), name=column), axis=0)


# ----------------------------------------------------------------------------------------------- truth


def truth_scores(truth: dict, spec: DatasetSpec, endpoint: str, cases: list[str]) -> np.ndarray:
    """The truth file's true score per case (NaN where unknown).

    Binary endpoint: ``cases[c]["probabilities"][endpoint]``; survival endpoint:
    ``cases[c][endpoint]["linear_predictor"]`` (the synthetic cohort's ``os`` record).
    """
    records = truth.get("cases", {})
    survival = spec.endpoints[endpoint].type == "survival"
    out = np.full(len(cases), np.nan)
    for i, case in enumerate(cases):
        record = records.get(case)
        if not isinstance(record, dict):
            continue
        source = record.get(endpoint) if survival else record.get("probabilities")
        key = "linear_predictor" if survival else endpoint
        value = source.get(key) if isinstance(source, dict) else None
        if value is not None:
            out[i] = float(value)
    return out


def truth_for_dataset(dataset_folder: str | Path) -> tuple[Path | None, dict | None]:
    """``(path, content)`` of the synthetic truth file beside a raw dataset folder, or ``(None, None)``.

    Uses :func:`glmil_auto.synthetic.truth.load_truth` (the existing reader); a real dataset simply
    has no truth file.
    """
    from glmil_auto.synthetic.truth import load_truth, truth_path

    path = truth_path(dataset_folder)
    if not path.is_file():
        return None, None
    return path, load_truth(path)


# ----------------------------------------------------------------------------------------------- metrics


def _pair_matrices(kind: str, score: np.ndarray, time: np.ndarray | None, event: np.ndarray | None):
    """``(numerator, denominator)`` pair matrices so that a statistic on a resample with case counts
    ``w`` is ``w @ N @ w / w @ D @ w`` (diagonals are 0, so a case never pairs with its own copies)."""
    if kind == "binary":
        positive = event.astype(bool)
        diff = score[:, None] - score[None, :]
        win = (diff > 0) + 0.5 * (diff == 0)
        both = positive[:, None] & ~positive[None, :]
        return np.where(both, win, 0.0), both.astype(float)
    e = event.astype(bool)
    comparable = e[:, None] & ((time[:, None] < time[None, :]) | ((time[:, None] == time[None, :]) & ~e[None, :]))
    diff = score[:, None] - score[None, :]
    tie = np.abs(diff) <= TIED_RISK_TOLERANCE
    win = np.where(tie, 0.5, (diff > 0).astype(float))
    return np.where(comparable, win, 0.0), comparable.astype(float)


def _statistic(kind: str, score: np.ndarray, outcome: np.ndarray, time: np.ndarray | None) -> float:
    if kind == "binary":
        return binary_auc(score, outcome)
    return harrell_c(score, time, outcome)


def bootstrap_replicates(kind: str, score: np.ndarray, outcome: np.ndarray, time: np.ndarray | None,
                         n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """The statistic on ``n_bootstrap`` case resamples (NaN where a resample has no usable pair).

    ``outcome`` is the 0/1 label (binary) or the event indicator (survival, with ``time``); all
    cases must have a known outcome. Resample ``b`` draws ``rng.integers(0, n, n)``.
    """
    n = len(score)
    draws = rng.integers(0, n, size=(n_bootstrap, n)) if n_bootstrap > 0 else np.empty((0, n), int)
    if n > _MAX_PAIRWISE_CASES:
        return np.array([_statistic(kind, score[d], outcome[d], None if time is None else time[d]) for d in draws])
    numerator, denominator = _pair_matrices(kind, score, time, outcome)
    out = np.empty(len(draws))
    for start in range(0, len(draws), 200):
        chunk = draws[start:start + 200]
        counts = np.zeros((len(chunk), n))
        np.add.at(counts, (np.repeat(np.arange(len(chunk)), n), chunk.ravel()), 1.0)
        num = np.einsum("bi,bi->b", counts @ numerator, counts)
        den = np.einsum("bi,bi->b", counts @ denominator, counts)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + len(chunk)] = np.where(den > 0, num / den, np.nan)
    return out
