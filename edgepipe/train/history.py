"""Per-epoch history as CSV plus a training-curves PNG (loss, top-1 train and val, learning rate)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from edgepipe.artifacts import atomic_path, atomic_write_text


def write_history(out_dir: Path, history: list[dict], title: str) -> None:
    if not history:
        atomic_write_text(out_dir / "history.csv", "epoch\n")
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out_dir / "history.csv", buf.getvalue())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    with_lr = "lr" in history[0]
    fig, axes = plt.subplots(1, 3 if with_lr else 2, figsize=(13 if with_lr else 9, 3.5))
    ax1, ax2 = axes[0], axes[1]
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    ax1.set(xlabel="epoch", ylabel="loss")
    ax2.plot(epochs, [h["train_top1"] for h in history], "o-", label="train")
    ax2.plot(epochs, [h["val_top1"] for h in history], "o-", label="val")
    ax2.set(xlabel="epoch", ylabel="top-1 %")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    if with_lr:  # schedules differ (step, plateau, restarts, warm-up): show what the run actually used
        axes[2].plot(epochs, [h["lr"] for h in history], "o-")
        axes[2].set(xlabel="epoch", ylabel="lr at epoch end")
        axes[2].grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out_dir / "curves.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
