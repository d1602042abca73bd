"""SHAP attributions of each endpoint's output to the clinical variables and the image evidence.

What is explained is the network *after* its image branches (``GLMILMoE.fuse``): the fusion, the
experts, the heads and the clinical linear offset. Its "features" are

- each clinical variable of the plans (numeric, binary or categorical: one feature each, with its
  missing indicator or one-hot block moving together),
- the lesion count and the total lesion volume (the bag's size and burden),
- ``small foci`` (plans with a small-foci channel): the count and summed response of the case's
  candidate foci above the fold's threshold, as one grouped feature,
- ``image: global branch``, the whole-brain encoder's embedding, and ``image: lesion branch``,
  the attention-pooled embedding of the lesion patches (one endpoint-specific vector each);
- ``lesions: radiomics and lesion scores`` (plans with stored radiomic features or any_lesion
  endpoints): the case's patient aggregates of its radiomic features, which enter the starting
  point, together with the sum over its lesions of log(1 - p_lesion) of each any_lesion endpoint
  (the lesion-level noisy-OR: the lesions' radiomic features, their CNN corrections and the
  clinical shift of every lesion's risk), as one grouped feature.

An image branch's embedding is one feature: SHAP's interventional masking swaps the whole vector
for that of a background case. The masker therefore works on a table whose two image columns
hold *row numbers* into a bank of embeddings (the explained cases followed by the background
cases); the function given to ``shap`` looks the vectors up before calling ``fuse``. This is
exactly SHAP with grouped features (Lundberg and Lee 2017), computed by the ``shap`` library's
``Exact`` explainer (every coalition, so the values are exact and add up to output minus base
value) up to 12 features, and by its ``Permutation`` explainer above that.

The output explained per endpoint is the logit (binary) or the log-risk (survival) of one fold's
network; the predictor averages the folds (survival: after the same per-fold standardisation as
the ensembled risk), which is exact because Shapley values are linear in the model. The
background is the fold's own validation cases (``fold_<k>/validation/shap_background*.npz``,
written by the trainer's final validation), i.e. cases the fold did not train on.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

GLOBAL_FEATURE = "image: global branch"
LOCAL_FEATURE = "image: lesion branch"
LESION_FEATURE = "lesions: radiomics and lesion scores"
VOLUMETRIC_FEATURES = ("lesion count", "total lesion volume (mL)")
# plans with small_foci (foci_descriptor.py): the count and summed response, one grouped feature
FOCI_FEATURE = "small foci (count above the threshold, summed response)"
EXACT_MAX_FEATURES = 12
MAX_BACKGROUND = 50


@dataclass
class ExplanationInputs:
    """What enters ``GLMILMoE.fuse`` for n cases (numpy arrays; None for an absent branch)."""

    case_ids: list[str]
    clinical_values: np.ndarray  # (n, F) float, NaN = missing
    clinical_categories: np.ndarray  # (n, C) int64, -1 = missing
    volumetric: np.ndarray  # (n, 2) log1p(count), log1p(volume mL); (n, 4) + the small-foci descriptor
    global_summary: np.ndarray | None  # (n, D)
    local_summary: np.ndarray | None  # (n, K, D)
    case_features: np.ndarray | None = None  # (n, P) stored patient aggregates of the radiomic features
    lesion_survival: np.ndarray | None = None  # (n, K) sum of log(1 - p_lesion), any_lesion endpoints

    @property
    def has_lesion_group(self) -> bool:
        return self.case_features is not None or self.lesion_survival is not None

    def __len__(self) -> int:
        return len(self.case_ids)

    def take(self, rows: Sequence[int] | np.ndarray) -> "ExplanationInputs":
        rows = np.asarray(rows, dtype=np.int64)
        return ExplanationInputs(
            [self.case_ids[i] for i in rows], self.clinical_values[rows], self.clinical_categories[rows],
            self.volumetric[rows], *(None if getattr(self, name) is None else getattr(self, name)[rows]
                                     for name in ("global_summary", "local_summary", "case_features", "lesion_survival")))

    @staticmethod
    def concatenate(parts: Sequence["ExplanationInputs"]) -> "ExplanationInputs":
        def stack(name: str) -> np.ndarray | None:
            arrays = [getattr(p, name) for p in parts]
            return None if arrays[0] is None else np.concatenate(arrays, axis=0)

        return ExplanationInputs([c for p in parts for c in p.case_ids], stack("clinical_values"),
                                 stack("clinical_categories"), stack("volumetric"), stack("global_summary"),
                                 stack("local_summary"), stack("case_features"), stack("lesion_survival"))

    def save(self, path: str | Path) -> None:
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        arrays["case_ids"] = np.asarray(self.case_ids, dtype=str)
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "ExplanationInputs":
        with np.load(path, allow_pickle=False) as data:
            get = lambda name: data[name] if name in data.files else None  # noqa: E731
            return cls([str(c) for c in data["case_ids"]], data["clinical_values"], data["clinical_categories"],
                       data["volumetric"], get("global_summary"), get("local_summary"), get("case_features"),
                       get("lesion_survival"))


@torch.no_grad()
def explanation_inputs(network: Any, batch: dict[str, torch.Tensor], case_ids: Sequence[str]) -> ExplanationInputs:
    """The fusion inputs of a batch (the network in eval mode; no augmentation)."""
    global_summary, local_summary, _, lesion_logits = network.branch_summaries(batch)
    cpu = lambda t: None if t is None else t.float().cpu().numpy()  # noqa: E731
    case_features = network.case_features(batch) if network.n_case_features else None
    survival = network.lesion_survival(batch, lesion_logits) if lesion_logits is not None else None
    return ExplanationInputs(list(case_ids), batch["clinical_values"].float().cpu().numpy(),
                             batch["clinical_categories"].long().cpu().numpy(),
                             network.volumetric_inputs(batch).float().cpu().numpy(),
                             cpu(global_summary), cpu(local_summary), cpu(case_features), cpu(survival))


def feature_names(clinical_features: Sequence[dict[str, Any]], network: Any) -> list[str]:
    """Clinical variables in plans order, then lesion count and volume, then the image branches."""
    names = [f["name"] for f in clinical_features if f["type"] in ("numeric", "binary")]
    names += [f["name"] for f in clinical_features if f["type"] == "categorical"]
    names += list(VOLUMETRIC_FEATURES)
    if getattr(network, "n_volumetric", 2) > len(VOLUMETRIC_FEATURES):
        names.append(FOCI_FEATURE)
    if network.use_global:
        names.append(GLOBAL_FEATURE)
    if network.use_local:
        names.append(LOCAL_FEATURE)
    if network.n_case_features or network.lesion_endpoints:
        names.append(LESION_FEATURE)
    return names


def _table(inputs: ExplanationInputs, first_row: int) -> np.ndarray:
    """The masker's table: clinical values, category indices, volumetric, then row numbers into the
    embedding bank for the image branches (``first_row`` = where these cases start in the bank)."""
    rows = np.arange(first_row, first_row + len(inputs), dtype=float)[:, None]
    n = len(VOLUMETRIC_FEATURES)
    parts = [inputs.clinical_values.astype(float), inputs.clinical_categories.astype(float), inputs.volumetric[:, :n]]
    if inputs.volumetric.shape[1] > n:  # the small-foci pair: one column of rows into the bank
        parts.append(rows)
    if inputs.global_summary is not None:
        parts.append(rows)
    if inputs.local_summary is not None:
        parts.append(rows)
    if inputs.has_lesion_group:
        parts.append(rows)
    return np.concatenate(parts, axis=1)


class _FusionFunction:
    """``f(table) -> (m, K)`` outputs of ``network.fuse`` (logits, then log-risks, in plans order)."""

    def __init__(self, network: Any, bank: ExplanationInputs, endpoint_names: Sequence[str], chunk: int = 8192):
        self.network, self.chunk = network, chunk
        self.n_values = bank.clinical_values.shape[1]
        self.n_categories = bank.clinical_categories.shape[1]
        device = next(network.parameters()).device
        self.device = device
        self.global_bank = None if bank.global_summary is None else torch.as_tensor(bank.global_summary, device=device)
        self.local_bank = None if bank.local_summary is None else torch.as_tensor(bank.local_summary, device=device)
        as_bank = lambda a: None if a is None else torch.as_tensor(a, device=device)  # noqa: E731
        self.case_feature_bank, self.survival_bank = as_bank(bank.case_features), as_bank(bank.lesion_survival)
        self.lesion_group = bank.has_lesion_group
        self.endpoint_names = list(endpoint_names)
        # the small-foci descriptor (volumetric columns after count and volume), looked up by row as a group
        self.foci_bank = (torch.as_tensor(bank.volumetric[:, len(VOLUMETRIC_FEATURES):], device=device)
                          if bank.volumetric.shape[1] > len(VOLUMETRIC_FEATURES) else None)

    @torch.no_grad()
    def __call__(self, table: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(table), self.chunk):
            part = torch.as_tensor(np.asarray(table[start:start + self.chunk], dtype=np.float32), device=self.device)
            f, c = self.n_values, self.n_categories
            v = len(VOLUMETRIC_FEATURES)
            values, categories, volumetric = part[:, :f], part[:, f:f + c].round().long(), part[:, f + c:f + c + v]
            column = f + c + v
            if self.foci_bank is not None:
                volumetric = torch.cat([volumetric, self.foci_bank[part[:, column].round().long()].float()], dim=1)
                column += 1
            global_summary = local_summary = None
            if self.global_bank is not None:
                global_summary = self.global_bank[part[:, column].round().long()]
                column += 1
            if self.local_bank is not None:
                local_summary = self.local_bank[part[:, column].round().long()]
                column += 1
            case_features = survival = None
            if self.lesion_group:
                rows = part[:, column].round().long()
                case_features = None if self.case_feature_bank is None else self.case_feature_bank[rows]
                survival = None if self.survival_bank is None else self.survival_bank[rows]
            logits, log_risks, *_ = self.network.fuse(global_summary, local_summary, values, categories, volumetric,
                                                      case_features=case_features, lesion_survival=survival)
            merged = {**logits, **log_risks}
            out.append(torch.stack([merged[name].float() for name in self.endpoint_names], dim=1).cpu().numpy())
        return np.concatenate(out, axis=0).astype(np.float64)


@dataclass
class ShapValues:
    """Attributions of n cases: ``values`` (n, P, K), ``base_values`` (n, K), ``outputs`` (n, K)
    (= base + sum of values), over ``feature_names`` (P) and ``endpoints`` (K)."""

    case_ids: list[str]
    feature_names: list[str]
    endpoints: list[str]
    values: np.ndarray
    base_values: np.ndarray
    outputs: np.ndarray


def shap_values(network: Any, explained: ExplanationInputs, background: ExplanationInputs,
                clinical_features: Sequence[dict[str, Any]], seed: int = 0,
                max_background: int = MAX_BACKGROUND) -> ShapValues:
    """SHAP values of ``explained`` against ``background`` (interventional, see the module docstring)."""
    import shap

    if len(background) == 0:
        raise ValueError("SHAP needs at least one background case")
    if len(background) > max_background:
        rows = np.sort(np.random.default_rng(seed).choice(len(background), max_background, replace=False))
        background = background.take(rows)
    network.eval()
    endpoints = [e["name"] for e in network.endpoints]
    bank = ExplanationInputs.concatenate([explained, background])
    function = _FusionFunction(network, bank, endpoints)
    names = feature_names(clinical_features, network)
    background_table, explained_table = _table(background, len(explained)), _table(explained, 0)
    masker = shap.maskers.Independent(background_table, max_samples=len(background))
    if len(names) <= EXACT_MAX_FEATURES:
        explainer = shap.explainers.Exact(function, masker, feature_names=names)
        result = explainer(explained_table, silent=True)
    else:
        explainer = shap.explainers.Permutation(function, masker, feature_names=names, seed=seed)
        result = explainer(explained_table, max_evals=max(500, 20 * len(names) + 1), silent=True)
    values = np.asarray(result.values, dtype=float).reshape(len(explained), len(names), len(endpoints))
    base = np.asarray(result.base_values, dtype=float).reshape(len(explained), len(endpoints))
    return ShapValues(list(explained.case_ids), names, endpoints, values, base, function(explained_table))


def display_values(inputs: ExplanationInputs, clinical_features: Sequence[dict[str, Any]],
                   names: Sequence[str]) -> list[list[Any]]:
    """Per case and feature, the value a reader recognises: the raw clinical value (None when
    missing), the category's name, the lesion count, the volume in mL (and the small-foci count);
    None for image branches."""
    categorical = [f for f in clinical_features if f["type"] == "categorical"]
    rows = []
    for i in range(len(inputs)):
        row: list[Any] = [None if np.isnan(v) else float(v) for v in inputs.clinical_values[i]]
        for j, feature in enumerate(categorical):
            index = int(inputs.clinical_categories[i, j])
            row.append(feature["categories"][index] if 0 <= index < len(feature["categories"]) else None)
        row += [int(round(float(np.expm1(inputs.volumetric[i, 0])))), float(np.expm1(inputs.volumetric[i, 1]))]
        if inputs.volumetric.shape[1] > len(VOLUMETRIC_FEATURES):  # the small-foci count (and summed response)
            row.append(int(round(float(np.expm1(inputs.volumetric[i, 2])))))
        row += [None] * (len(names) - len(row))
        rows.append(row)
    return rows


def case_explanation(values: np.ndarray, base_values: np.ndarray, names: Sequence[str], shown: Sequence[Any],
                     endpoints: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One case's ``explanation`` block of ``<case>.json``: per endpoint the output explained, the
    base value and every feature's contribution, largest absolute contribution first."""
    block = {}
    for k, endpoint in enumerate(endpoints):
        order = np.argsort(-np.abs(values[:, k]), kind="stable")
        block[endpoint["name"]] = {
            "output": "logit" if endpoint["type"] == "binary" else "standardised log-risk",
            "base_value": float(base_values[k]),
            "output_value": float(base_values[k] + values[:, k].sum()),
            "contributions": [{"feature": names[j], "value": shown[j], "shap": float(values[j, k])} for j in order],
        }
    return block
