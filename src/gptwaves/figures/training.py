"""Training curves from the metrics log."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .common import new_figure, save_figure


def training_curves(rows: Sequence[dict], path_stem, *, title: str | None = None) -> list[Path]:
    """Loss against iteration (log x in 1 + iteration) and throughput, from ``metrics.jsonl`` rows.

    Parameters
    ----------
    rows : sequence of dict
        ``{"iter", "kind": "train", "loss", "lr", "tokens_per_s"}`` and
        ``{"iter", "kind": "eval", "train_loss", "val_loss"}`` rows.
    path_stem : str or Path
    """
    tr = [r for r in rows if r.get("kind") == "train"]
    ev = [r for r in rows if r.get("kind") == "eval"]
    fig = new_figure(10.0, 4.0)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    if tr:
        it = np.array([r["iter"] for r in tr], dtype=float)
        ax.plot(it + 1, [r["loss"] for r in tr], color="#9ecae1", lw=1, label="train loss (batch)")
        ax2.plot(it + 1, [r.get("tokens_per_s", np.nan) for r in tr], color="#555", lw=1)
    if ev:
        it = np.array([r["iter"] for r in ev], dtype=float)
        ax.plot(it + 1, [r["train_loss"] for r in ev], "o-", color="#1f4e99", ms=4, label="train loss (eval batches)")
        ax.plot(it + 1, [r["val_loss"] for r in ev], "o-", color="#d62728", ms=4, label="validation loss")
    for a in (ax, ax2):
        a.set_xscale("log")
        a.set_xlabel("1 + iteration (log scale)")
        a.grid(alpha=0.3)
    ax.set_ylabel("cross-entropy (nats / character)")
    ax.set_title("Loss")
    ax.legend(fontsize=8)
    ax2.set_ylabel("tokens / s")
    ax2.set_title("Training throughput")
    fig.suptitle(title or "Training", fontsize=11)
    return save_figure(fig, path_stem)
