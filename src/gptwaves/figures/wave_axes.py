"""What every wave figure shares: matplotlib settings, the order parameters' labels, figure
creation and saving, and the character axis (docs/method.md, Coherence). Used by
:mod:`gptwaves.figures.waves`, :mod:`gptwaves.figures.wave_channels` and
:mod:`gptwaves.figures.wave_training`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .common import save_figure

__all__ = ["display_char"]

_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "svg.hashsalt": "gptwaves",
    "image.interpolation": "nearest",
}
_ORDER_KEYS = (
    ("mean_abs_corr", "mean |R_ij| (i≠j)"),
    ("lambda_max_share", "λ_max / C"),
    ("participation_ratio", "participation ratio"),
)


def display_char(c: str) -> str:
    """Printable form of one character for axis labels (``␣``, ``⏎``, ``⇥``)."""
    c = str(c)
    if c == " ":
        return "␣"
    if c == "\n":
        return "⏎"
    if c == "\t":
        return "⇥"
    if c == "$":
        return r"\$"
    if not c.isprintable():
        return "·"
    return c


def _new_figure(figsize) -> Figure:
    return Figure(figsize=figsize, layout="constrained")


def _save(fig: Figure, path_stem) -> list[Path]:
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(_RC):
        return save_figure(fig, stem)


def _window(T: int, mask_sample, start, max_steps) -> tuple[int, int]:
    if start is None:
        if mask_sample is not None and np.any(mask_sample):
            # show a little of the prompt before the generated text
            start = max(int(np.argmax(mask_sample)) - 8, 0)
        else:
            start = 0
    stop = T if max_steps is None else min(T, int(start) + int(max_steps))
    return int(start), stop


def _char_axis(ax, chars_sample, start, stop, fontsize=None):
    n = stop - start
    fs = fontsize or (7 if n <= 120 else 6 if n <= 200 else 5)
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels([display_char(c) for c in chars_sample[start:stop]], fontsize=fs, family="DejaVu Sans Mono")
    ax.tick_params(axis="x", length=0, pad=2)

