"""``progress.png`` of a pretraining run: the loss of each branch and the learning rate per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"loss": "total", "loss_global": "global encoder", "loss_instances": "instance encoder"}


def plot_pretraining_progress(log: list[dict[str, Any]], path: Path, method: str) -> None:
    epochs = [entry["epoch"] + 1 for entry in log]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for key, label in LABELS.items():
        values = [entry["train"].get(key) for entry in log]
        if any(v is not None for v in values):
            axis.plot(epochs, values, marker="o", markersize=3, label=label, color="black" if key == "loss" else None)
    axis.set_xlabel("epoch")
    axis.set_ylabel("NT-Xent loss" if method == "contrastive" else "masked reconstruction MSE")
    axis.set_title(f"glmil_pretrain ({method})")
    twin = axis.twinx()
    twin.plot(epochs, [entry["lr"] for entry in log], color="tab:gray", linestyle=":", label="learning rate")
    twin.set_ylabel("learning rate (end of epoch)")
    axis.legend(loc="upper right")
    figure.tight_layout()
    temporary = path.with_name(f".tmp_{path.name}")
    figure.savefig(temporary, dpi=80, format="png")
    plt.close(figure)
    temporary.replace(path)
