"""The per-case small-foci descriptor: how many candidate foci a case has above a threshold, and
their summed response.

Preprocessing keeps each case's strongest candidates (``properties["small_foci"]``, see
:mod:`glmil_auto.preprocessing.foci_channel`). The threshold is fitted on a fold's training cases
(:func:`fit_foci_threshold`): the lowest height that their dark-blob decoys exceed no more than the
plans' ``false_positives_per_case`` times per case (for noise, bright and dark blobs are equally
likely). It is in the cases' own noise units, so it transfers to a new centre's noise and
resolution without tuning. It lives in the network (``GLMILMoE.foci_threshold``, a buffer) and so
travels in the checkpoint.

The descriptor ``[log1p(count), log1p(summed response)]`` joins the lesion count and volume in the
starting point's case design and in the fusion (``network.py``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from glmil_auto.preprocessing.small_foci import decoy_threshold

FOCI_DESCRIPTOR_NAMES = ("log1p_foci_count", "log1p_foci_summed_response")


class FociRecordError(ValueError):
    pass


def _record(properties: Mapping[str, Any], case: str) -> Mapping[str, Any]:
    record = properties.get("small_foci")
    if record is None:
        raise FociRecordError(f"case {case}: its properties have no small-foci candidates, but these plans have a "
                              "small-foci channel: re-run glmil_preprocess")
    return record


def candidate_responses(properties: Mapping[str, Any], max_candidates: int, case: str) -> np.ndarray:
    """``(max_candidates,)`` float32: the case's candidate responses, highest first, NaN-padded."""
    responses = [float(c["response"]) for c in _record(properties, case)["candidates"]][:max_candidates]
    out = np.full(int(max_candidates), np.nan, dtype=np.float32)
    out[: len(responses)] = sorted(responses, reverse=True)
    return out


def fit_foci_threshold(case_properties: Sequence[Mapping[str, Any]], case_ids: Sequence[str],
                       section: Mapping[str, Any]) -> float:
    """The decoy threshold of these (training) cases, at the plans' false positives per case."""
    decoys = [list(_record(p, c)["decoys"]) for p, c in zip(case_properties, case_ids)]
    return decoy_threshold(decoys, float(section["false_positives_per_case"]), float(section["floor"]))


def foci_descriptor(responses: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """``(B, K)`` candidate responses (NaN = none) -> ``(B, 2)``: log1p(count at or above the
    threshold), log1p(their summed response)."""
    responses = responses.float()
    above = torch.nan_to_num(responses, nan=-torch.inf) >= threshold
    count = above.sum(dim=1).float()
    summed = torch.where(above, responses, torch.zeros_like(responses)).sum(dim=1)
    return torch.stack([torch.log1p(count), torch.log1p(summed)], dim=1)


def foci_above(properties: Mapping[str, Any], threshold: float, case: str) -> list[dict[str, Any]]:
    """The case's candidates at or above ``threshold`` (what a user looks at in the prediction JSON)."""
    return [dict(c) for c in _record(properties, case)["candidates"] if float(c["response"]) >= threshold]
