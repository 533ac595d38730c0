"""The sweep figure: every member's across-training curves on one axis, one panel per curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import new_figure, save_figure


def sweep_figure(path_stem, entry: dict) -> list[Path]:
    """One panel per curve of ``entry["curves"]``; each member a line against log(1 + iteration),
    its main change's location marked, coloured by the varied setting."""
    from matplotlib import colormaps

    keys = list(entry["curves"])
    members = entry["members"]
    cols = 3 if len(keys) > 4 else 2
    rows = -(-len(keys) // cols)
    fig = new_figure(4.2 * cols, 3.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    cmap = colormaps["viridis"]
    for ax, key in zip(axes, keys):
        for i, m in enumerate(members):
            c = m["curves"][key]
            y = np.array([np.nan if v is None else v for v in c["curve"]], float)
            col = cmap(i / max(1, len(members) - 1))
            ax.plot(c["u"], y, "o-", ms=2.5, lw=1.2, color=col, label=str(m["value"]))
            loc = (c.get("location") or {}).get("estimate")
            if loc is not None:
                ax.axvline(loc, color=col, lw=0.8, ls=":")
        ax.set_title(entry["curves"][key], fontsize=8)
        ax.set_xlabel("log(1 + iteration)")
    for ax in axes[len(keys):]:
        ax.set_axis_off()
    axes[0].legend(title=entry["settings"]["vary"], fontsize=7, title_fontsize=7)
    return save_figure(fig, path_stem)
