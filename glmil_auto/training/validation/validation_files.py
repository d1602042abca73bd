"""Which files in ``fold_<k>/validation/`` hold the out-of-fold predictions of which checkpoint.

The final checkpoint's are ``predictions.csv`` and ``summary.json`` (nnU-Net's names); any other
checkpoint ``<name>.pt`` (``--val_best``: ``checkpoint_best.pt``) gets ``predictions_<name>.csv``
and ``summary_<name>.json``, so validating another checkpoint never overwrites the final one's and
prediction with ``-chk`` reads the risk scales of the weights it predicts with.
"""

from __future__ import annotations

FINAL_CHECKPOINT = "checkpoint_final.pt"


def checkpoint_suffix(checkpoint: str | None) -> str:
    """``""`` for the final weights (None or ``checkpoint_final.pt``), else ``_<name without .pt>``."""
    if checkpoint is None or checkpoint == FINAL_CHECKPOINT:
        return ""
    return "_" + (checkpoint[: -len(".pt")] if checkpoint.endswith(".pt") else checkpoint)


def validation_file_names(checkpoint: str | None) -> tuple[str, str]:
    """``(predictions, summary)`` file names for ``checkpoint`` (None = the final weights)."""
    suffix = checkpoint_suffix(checkpoint)
    return f"predictions{suffix}.csv", f"summary{suffix}.json"


def explanation_file_names(checkpoint: str | None) -> tuple[str, str]:
    """``(SHAP background .npz, per-case SHAP explanations .json)`` for ``checkpoint``."""
    suffix = checkpoint_suffix(checkpoint)
    return f"shap_background{suffix}.npz", f"explanations{suffix}.json"
