"""``progress.png``: training loss and validation metrics per epoch (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_progress(log: list[dict[str, Any]], path: Path) -> None:
    epochs = [entry["epoch"] for entry in log]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    top.plot(epochs, [entry["train"]["loss"] for entry in log], label="train loss", color="tab:blue")
    top.set_ylabel("loss")
    twin = top.twinx()
    twin.plot(epochs, [entry["lr"] for entry in log], label="learning rate", color="tab:gray", linestyle=":")
    twin.set_ylabel("learning rate")
    top.legend(loc="upper right")
    metric_names = [k for k in log[-1]["validation"] if k != "mean"]
    for name in metric_names:
        bottom.plot(epochs, [entry["validation"].get(name) for entry in log], label=name, alpha=0.7)
    bottom.plot(epochs, [entry["validation"].get("mean") for entry in log], label="mean", color="black")
    bottom.plot(epochs, [entry["selection_ema"] for entry in log], label="mean (EMA, selection)", color="black",
                linestyle="--")
    bottom.axhline(0.5, color="gray", linewidth=0.5)
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("validation AUC / C-index")
    bottom.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    temporary = path.with_name(f".tmp_{path.name}")
    figure.savefig(temporary, dpi=80, format="png")
    plt.close(figure)
    temporary.replace(path)
