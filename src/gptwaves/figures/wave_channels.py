"""Figures of what channels respond to: the channel function table and the event-triggered
averages (docs/method.md, Coherence). Conventions as :mod:`gptwaves.figures.waves`, which
re-exports every name here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import Normalize

from .wave_axes import _RC, _new_figure, _save

__all__ = ["channel_function_rows", "channel_table_figure", "event_triggered_figure"]


def channel_function_rows(function: Mapping, cluster_labels=None, top_n=20, periods=None) -> list[dict]:
    """Rows of the channel-function table, strongest effect first.

    Parameters
    ----------
    function : dict
        Output of :func:`gptwaves.analysis.channel_labels.channel_function`.
    cluster_labels : array_like of int, shape (C,), optional
    top_n : int, optional
        Number of channels (largest ``|best_d|``); ``None`` for all.
    periods : array_like, shape (C,), optional
        Dominant period per channel, added as a column.

    Returns
    -------
    list of dict
        Keys ``channel``, ``cluster`` (int or None), ``label`` (thresholded,
        may be ""), ``best_class`` (strongest class, current or ``next:``),
        ``d`` (signed Cohen's d), and ``period`` when given. Ready for
        :class:`csv.DictWriter`.
    """
    best_d = np.asarray(function["best_d"], dtype=np.float64)
    C = best_d.size
    score = np.where(np.isnan(best_d), -np.inf, np.abs(best_d))
    idx = np.argsort(-score, kind="stable")
    if top_n is not None:
        idx = idx[: int(top_n)]
    rows = []
    for c in idx:
        row = {
            "channel": int(c),
            "cluster": None if cluster_labels is None else int(np.asarray(cluster_labels)[c]),
            "label": str(function["label"][c]),
            "best_class": str(function["best_key"][c]) if "best_key" in function else "",
            "d": float(best_d[c]),
        }
        if periods is not None:
            p = float(np.asarray(periods, np.float64)[c])
            row["period"] = p
        rows.append(row)
    assert len(rows) <= C
    return rows


def channel_table_figure(rows: Sequence[Mapping], path_stem, *, title=None) -> list[Path]:
    """The channel-function table (from :func:`channel_function_rows`) as a figure.

    The effect-size column is coloured by the sign and size of d.
    """
    cols = ["channel", "cluster", "label", "best_class", "d"]
    if rows and "period" in rows[0]:
        cols.append("period")
    heads = {"channel": "channel", "cluster": "cluster", "label": "label (|d| ≥ thr.)",
             "best_class": "strongest class", "d": "Cohen's d", "period": "period"}

    def fmt(key, v):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "–"
        if key == "d":
            return f"{v:+.2f}"
        if key == "period":
            return f"{v:.0f}"
        if key in ("label", "best_class"):
            return str(v) or "–"
        return str(v)

    text = [[fmt(k, r.get(k)) for k in cols] for r in rows] or [["–"] * len(cols)]
    norm = Normalize(-3, 3)
    cmap = matplotlib.colormaps["RdBu_r"]
    with matplotlib.rc_context(_RC):
        fig = _new_figure((7.0, 0.6 + 0.24 * (len(text) + 1)))
        ax = fig.add_subplot()
        ax.axis("off")
        table = ax.table(cellText=text, colLabels=[heads[c] for c in cols], loc="center", cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.scale(1.0, 1.15)
        j = cols.index("d")
        for i, r in enumerate(rows, start=1):
            d = r.get("d")
            if d is not None and np.isfinite(d):
                table[i, j].set_facecolor(cmap(norm(d)))
        for jj in range(len(cols)):
            table[0, jj].set_text_props(weight="bold")
            table[0, jj].set_facecolor("0.9")
        ax.set_title(title or "Channel function (Cohen's d of character classes)")
    return _save(fig, path_stem)


def event_triggered_figure(eta, counts, classes, lags, d_current, path_stem, *, top=3, title=None) -> list[Path]:
    """Event-triggered average waveforms: one panel per character class, the ``top`` channels
    with the largest |d| for that class (docs/method.md, Coherence).

    Parameters
    ----------
    eta : array_like, shape (E, 2W+1, C)
        Mean centred wave around the events of each class (NaN: no usable event).
    counts : array_like of int, shape (E,)
        Events used per class.
    classes : sequence of str, length E
    lags : array_like of int, shape (2W+1,)
        Steps relative to the event (0: the step that processes the class's character).
    d_current : array_like, shape (E, C)
        Cohen's d of each channel for each class (current character); picks the channels shown.
    path_stem : str or Path
    top : int, optional
    title : str, optional
    """
    eta = np.asarray(eta, dtype=np.float64)
    d = np.asarray(d_current, dtype=np.float64)
    lags = np.asarray(lags)
    counts = np.asarray(counts)
    E = eta.shape[0]
    ncol = min(3, max(E, 1))
    nrow = max(1, -(-E // ncol))
    with matplotlib.rc_context(_RC):
        fig = _new_figure((3.2 * ncol, 2.4 * nrow))
        axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True)
        for e in range(nrow * ncol):
            ax = axes[e // ncol][e % ncol]
            if e >= E:
                ax.set_axis_off()
                continue
            score = np.where(np.isfinite(d[e]), np.abs(d[e]), -np.inf)
            chans = [int(c) for c in np.argsort(-score)[:top] if np.isfinite(score[c])]
            if int(counts[e]) == 0 or not chans:
                ax.text(0.5, 0.5, "no usable events", ha="center", va="center", transform=ax.transAxes)
            for c in chans:
                ax.plot(lags, eta[e, :, c], lw=1.2, label=f"ch {c} (d={d[e, c]:+.2f})")
            ax.axvline(0, color="0.6", lw=0.8, ls=":")
            ax.axhline(0, color="0.6", lw=0.6)
            ax.set_title(f"{classes[e]} ({int(counts[e])} events)")
            if chans:
                ax.legend(frameon=False, fontsize=7)
            if e // ncol == nrow - 1:
                ax.set_xlabel("steps from event")
            if e % ncol == 0:
                ax.set_ylabel("mean centred wave")
        fig.suptitle(title or "Event-triggered average waveforms")
    return _save(fig, path_stem)

