"""Figures of hidden-state waves and their coherence (docs/method.md, Coherence).

Every plotting function takes plain arrays or dicts (outputs of
:mod:`gptwaves.analysis.waves`), draws one figure with the object API of
matplotlib (no pyplot state, safe without a display), saves
``path_stem.png`` (130 dpi) and ``path_stem.svg`` and returns both paths.

Characters drawn on time axes show a space as ``␣`` and a newline as ``⏎``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .common import save_figure

__all__ = [
    "display_char",
    "wave_heatmap",
    "selective_waves",
    "correlation_figure",
    "correlation_comparison",
    "acf_figure",
    "period_histogram",
    "channel_function_rows",
    "channel_table_figure",
    "order_parameters_figure",
    "coherence_null_figure",
    "similarity_figure",
    "repeatability_plasticity_figure",
    "event_triggered_figure",
]

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


# ----------------------------------------------------------------------------
# waves
# ----------------------------------------------------------------------------


def wave_heatmap(
    x_sample,
    chars_sample,
    path_stem,
    *,
    mask_sample=None,
    channel_order=None,
    start=None,
    max_steps=160,
    center=True,
    clip_percentile=99.0,
    title=None,
) -> list[Path]:
    """Heatmap of all channels of one sample against steps, text on the time axis.

    Parameters
    ----------
    x_sample : array_like, shape (T, C)
        Waves of one sample at one tap.
    chars_sample : array_like of str, shape (T,)
        Current character c_t of each step (drawn as x tick labels).
    path_stem : str or Path
    mask_sample : array_like of bool, shape (T,), optional
        Generated steps; prompt steps are shaded and separated by a line.
    channel_order : array_like of int, optional
        Row order (e.g. the clustering's leaf order); default channel index.
    start, max_steps : int, optional
        Window of steps to show (default: from 8 steps before the first
        generated step, at most 160 steps).
    center : bool, optional
        Subtract each channel's mean over the generated steps (default True).
    clip_percentile : float, optional
        Colour limits are +-this percentile of ``|value|``.
    title : str, optional
    """
    x = np.asarray(x_sample, dtype=np.float64)
    chars = np.asarray(chars_sample)
    T, C = x.shape
    if center:
        sel = np.asarray(mask_sample, bool) if mask_sample is not None and np.any(mask_sample) else slice(None)
        x = x - x[sel].mean(axis=0)
    start, stop = _window(T, mask_sample, start, max_steps)
    order = np.arange(C) if channel_order is None else np.asarray(channel_order)
    img = x[start:stop][:, order].T
    lim = float(np.nanpercentile(np.abs(img), clip_percentile)) if img.size else 1.0
    lim = lim if lim > 0 else 1.0
    n = stop - start
    with matplotlib.rc_context(_RC):
        fig = _new_figure((float(np.clip(0.075 * n + 2.5, 7, 20)), 5.2))
        ax = fig.add_subplot()
        im = ax.imshow(img, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                       extent=(-0.5, n - 0.5, len(order) - 0.5, -0.5))
        _char_axis(ax, chars, start, stop)
        if mask_sample is not None:
            m = np.asarray(mask_sample, bool)[start:stop]
            if not m.all() and m.any():
                first = int(np.argmax(m))
                ax.axvspan(-0.5, first - 0.5, color="0.5", alpha=0.35, lw=0)
                ax.axvline(first - 0.5, color="k", lw=1.0)
                ax.text(first - 0.5, -0.5, " prompt | generated ", ha="center", va="bottom", fontsize=7)
        ax.set_ylabel("channel" + (" (cluster order)" if channel_order is not None else ""))
        if channel_order is not None and len(order) <= 40:
            ax.set_yticks(np.arange(len(order)), [str(i) for i in order], fontsize=6)
        ax.set_xlabel(f"generation step {start}–{stop - 1} (input character c_t)")
        cb = fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
        cb.set_label("activation" + (" − channel mean" if center else ""))
        ax.set_title(title or "Hidden-state waves of one generated sample")
    return _save(fig, path_stem)


def selective_waves(
    x_sample,
    chars_sample,
    d_space,
    path_stem,
    *,
    n=8,
    mask_sample=None,
    start=None,
    max_steps=160,
    title=None,
) -> list[Path]:
    """Stacked waves of the channels most selective for spaces.

    Parameters
    ----------
    x_sample : array_like, shape (T, C)
    chars_sample : array_like of str, shape (T,)
    d_space : array_like, shape (C,)
        Cohen's d of each channel for the class "space" (current character),
        e.g. ``function["d_current"][classes.index("space")]``; the ``n``
        channels with the largest ``|d|`` are drawn.
    path_stem : str or Path
    n : int, optional
    mask_sample, start, max_steps : optional
        As in :func:`wave_heatmap`.
    title : str, optional

    Notes
    -----
    Each trace is z-scored over the shown window and offset vertically. Steps
    whose input is a space are shaded blue, newlines are red dashed lines.
    """
    x = np.asarray(x_sample, dtype=np.float64)
    chars = np.asarray(chars_sample)
    d = np.asarray(d_space, dtype=np.float64)
    T, C = x.shape
    score = np.where(np.isnan(d), -np.inf, np.abs(d))
    top = np.argsort(-score, kind="stable")[: min(int(n), C)]
    start, stop = _window(T, mask_sample, start, max_steps)
    seg = x[start:stop][:, top]
    sd = seg.std(axis=0)
    z = (seg - seg.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    steps = np.arange(stop - start)
    cw = chars[start:stop]
    k = len(top)
    with matplotlib.rc_context(_RC):
        fig = _new_figure((float(np.clip(0.075 * len(steps) + 2.5, 7, 20)), 1.0 + 0.6 * k))
        ax = fig.add_subplot()
        for t in np.flatnonzero(cw == " "):
            ax.axvspan(t - 0.5, t + 0.5, color="tab:blue", alpha=0.15, lw=0)
        for t in np.flatnonzero(cw == "\n"):
            ax.axvline(t, color="tab:red", ls="--", lw=0.9)
        colors = matplotlib.colormaps["tab10"]
        offs = 3.0 * np.arange(k)[::-1]
        for i in range(k):
            ax.plot(steps, z[:, i] + offs[i], lw=1.0, color=colors(i % 10))
        ax.set_yticks(offs, [f"ch {c}\nd={d[c]:+.2f}" for c in top], fontsize=7)
        if mask_sample is not None:
            m = np.asarray(mask_sample, bool)[start:stop]
            if not m.all() and m.any():
                ax.axvspan(-0.5, int(np.argmax(m)) - 0.5, color="0.6", alpha=0.3, lw=0)
        _char_axis(ax, chars, start, stop)
        ax.set_xlim(-0.5, len(steps) - 0.5)
        ax.set_ylim(-3.0, offs[0] + 3.0 if k else 3.0)
        ax.set_xlabel("generation step (input character c_t); blue: space, red dashed: newline")
        ax.set_ylabel("z-scored activation (offset)")
        ax.set_title(title or f"The {k} most space-selective channels (largest |Cohen's d|)")
    return _save(fig, path_stem)


# ----------------------------------------------------------------------------
# correlation matrices
# ----------------------------------------------------------------------------


def _cluster_boxes(ax, labels_ordered, color="k"):
    labels_ordered = np.asarray(labels_ordered)
    if labels_ordered.size == 0:
        return
    edges = np.flatnonzero(np.diff(labels_ordered) != 0) + 1
    bounds = np.r_[0, edges, labels_ordered.size]
    for a, b in zip(bounds[:-1], bounds[1:]):
        ax.add_patch(Rectangle((a - 0.5, a - 0.5), b - a, b - a, fill=False, ec=color, lw=0.8))


def _heat(ax, M, title, cmap="RdBu_r", vmin=-1, vmax=1):
    im = ax.imshow(M, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_title(title)
    return im


def _dendrogram(ax, Z, k):
    from scipy.cluster import hierarchy

    Z = np.asarray(Z)
    if Z.shape[0] == 0:
        ax.axis("off")
        return
    if k is not None and 1 < k <= Z.shape[0]:
        thr = 0.5 * (Z[-k, 2] + Z[-(k - 1), 2])
    else:
        thr = Z[-1, 2] + 1.0
    hierarchy.dendrogram(Z, ax=ax, no_labels=True, color_threshold=thr, above_threshold_color="0.5")
    n = Z.shape[0] + 1
    ax.set_xlim(0, 10 * n)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_ylabel("1 − |R|", fontsize=8)
    if k is not None and 1 < k <= Z.shape[0]:
        ax.axhline(thr, color="k", ls=":", lw=0.8)


def correlation_figure(R, clustering: Mapping, path_stem, *, title=None) -> list[Path]:
    """Correlation matrix in channel order and in cluster order with dendrogram.

    Parameters
    ----------
    R : array_like, shape (C, C)
    clustering : dict
        Output of :func:`gptwaves.analysis.waves.cluster_channels` (uses
        ``order``, ``labels``, ``linkage``, ``k``, ``silhouette``).
    path_stem : str or Path
    title : str, optional
    """
    R = np.asarray(R, dtype=np.float64)
    order = np.asarray(clustering["order"])
    labels = np.asarray(clustering["labels"])
    k = int(clustering.get("k", labels.max() if labels.size else 1))
    sil = clustering.get("silhouette", float("nan"))
    with matplotlib.rc_context(_RC):
        fig = _new_figure((11, 6.2))
        gs = fig.add_gridspec(2, 3, height_ratios=[1, 4.5], width_ratios=[1, 1, 0.05])
        ax0 = fig.add_subplot(gs[1, 0])
        ax1 = fig.add_subplot(gs[1, 1])
        axd = fig.add_subplot(gs[0, 1])
        cax = fig.add_subplot(gs[1, 2])
        im = _heat(ax0, R, "channel order")
        ax0.set_xlabel("channel")
        ax0.set_ylabel("channel")
        if clustering.get("structure") is False and not clustering.get("fixed_k", False):
            head = (f"cluster order: no cluster structure (best silhouette {clustering.get('best_silhouette', sil):.3f}"
                    f" ≤ surrogate 95th pct {clustering.get('null_silhouette_q95', float('nan')):.3f}"
                    + ("" if clustering.get("coherent_beyond_surrogate", True) else ", no excess coherence") + ")")
        else:
            head = f"cluster order: k = {k}, silhouette = {sil:.2f}"
        _heat(ax1, R[np.ix_(order, order)], head)
        _cluster_boxes(ax1, labels[order])
        ax1.set_xlabel("channel (dendrogram leaf order)")
        _dendrogram(axd, clustering["linkage"], k)
        axd.set_title("average linkage on 1 − |R|", fontsize=8)
        fig.colorbar(im, cax=cax, label="Pearson R")
        fig.suptitle(title or "Cross-channel correlation")
    return _save(fig, path_stem)


def correlation_comparison(
    R_a,
    R_b,
    path_stem,
    *,
    names=("untrained", "trained"),
    order=None,
    title=None,
) -> list[Path]:
    """Two correlation matrices side by side (e.g. untrained vs trained).

    Parameters
    ----------
    R_a, R_b : array_like, shape (C, C)
    path_stem : str or Path
    names : (str, str), optional
    order : array_like of int, optional
        Channel order for both (e.g. the trained model's dendrogram order);
        default: leaf order of an average-linkage clustering of ``R_b``.
    title : str, optional
    """
    from gptwaves.analysis.waves import cluster_channels, order_parameters

    R_a = np.asarray(R_a, dtype=np.float64)
    R_b = np.asarray(R_b, dtype=np.float64)
    if order is None:
        order = cluster_channels(R_b, k=1)["order"]
    order = np.asarray(order)
    with matplotlib.rc_context(_RC):
        fig = _new_figure((10.5, 5.0))
        gs = fig.add_gridspec(1, 3, width_ratios=[1, 1, 0.05])
        im = None
        for i, (R, name) in enumerate(((R_a, names[0]), (R_b, names[1]))):
            ax = fig.add_subplot(gs[0, i])
            op = order_parameters(R)
            im = _heat(ax, R[np.ix_(order, order)],
                       f"{name}\nmean|R| = {op['mean_abs_corr']:.3f}, PR = {op['participation_ratio']:.1f}")
            ax.set_xlabel("channel (common order)")
            if i == 0:
                ax.set_ylabel("channel (common order)")
        fig.colorbar(im, cax=fig.add_subplot(gs[0, 2]), label="Pearson R")
        fig.suptitle(title or f"Cross-channel correlation: {names[0]} vs {names[1]}")
    return _save(fig, path_stem)


# ----------------------------------------------------------------------------
# auto-correlation and periods
# ----------------------------------------------------------------------------


def acf_figure(
    acf,
    space_acf,
    path_stem,
    *,
    channels=None,
    n=6,
    strength=None,
    periods=None,
    title=None,
) -> list[Path]:
    """ACF curves of selected channels with the space-indicator reference.

    Parameters
    ----------
    acf : array_like, shape (C, K+1)
    space_acf : array_like, shape (K+1,)
        ACF of the "c_t is a space" indicator (word rhythm).
    path_stem : str or Path
    channels : sequence of int, optional
        Channels to highlight; default the ``n`` with largest ``strength``
        (or, without it, largest ACF peak after lag 1).
    n : int, optional
    strength, periods : array_like, shape (C,), optional
        Oscillation strength and period per channel (shown in the legend).
    title : str, optional

    Notes
    -----
    All channels are drawn faintly in grey behind the highlighted ones.
    """
    acf = np.atleast_2d(np.asarray(acf, dtype=np.float64))
    ref = np.asarray(space_acf, dtype=np.float64)
    C, L = acf.shape
    lags = np.arange(L)
    if channels is None:
        s = np.asarray(strength, np.float64) if strength is not None else np.nanmax(
            np.where(np.isnan(acf[:, 2:]), -np.inf, acf[:, 2:]), axis=1) if L > 2 else np.zeros(C)
        s = np.where(np.isnan(s), -np.inf, s)
        channels = np.argsort(-s, kind="stable")[: min(int(n), C)]
    channels = [int(c) for c in channels]
    with matplotlib.rc_context(_RC):
        fig = _new_figure((7.5, 4.4))
        ax = fig.add_subplot()
        ax.plot(lags, acf.T, color="0.75", lw=0.4, alpha=0.35)
        colors = matplotlib.colormaps["tab10"]
        for i, c in enumerate(channels):
            lab = f"ch {c}"
            if periods is not None and np.isfinite(periods[c]):
                lab += f" (period {periods[c]:.0f})"
            ax.plot(lags, acf[c], lw=1.4, color=colors(i % 10), label=lab)
        ax.plot(lags[: ref.size], ref[:L], color="k", lw=2.2, ls="--", label="space indicator (text)")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xlim(0, L - 1)
        ax.set_xlabel("lag (steps)")
        ax.set_ylabel("auto-correlation (biased, mean over samples)")
        ax.legend(loc="upper right", ncol=2, frameon=False)
        ax.set_title(title or "Auto-correlation of channel waves and of the word rhythm")
    return _save(fig, path_stem)


def period_histogram(periods_acf, path_stem, *, periods_psd=None, max_period=None, title=None) -> list[Path]:
    """Histogram of dominant periods from the ACF (and from the Welch PSD).

    Parameters
    ----------
    periods_acf : array_like, shape (C,)
        NaN = no oscillation found; the number of such channels is reported.
    path_stem : str or Path
    periods_psd : array_like, shape (C,), optional
    max_period : float, optional
        Upper end of the x axis (default: largest finite period).
    title : str, optional
    """
    pa = np.asarray(periods_acf, dtype=np.float64)
    pp = None if periods_psd is None else np.asarray(periods_psd, dtype=np.float64)
    fin = [p[np.isfinite(p)] for p in (pa, pp) if p is not None]
    top = max_period or max([2.0] + [float(f.max()) for f in fin if f.size])
    bins = np.arange(0.5, np.ceil(top) + 1.5, 1.0)
    with matplotlib.rc_context(_RC):
        fig = _new_figure((7.0, 4.0))
        ax = fig.add_subplot()
        na = int(np.isnan(pa).sum())
        ax.hist(pa[np.isfinite(pa)], bins=bins, color="tab:blue", alpha=0.7,
                label=f"ACF peak ({na} of {pa.size} channels without one)")
        if pp is not None:
            ax.hist(pp[np.isfinite(pp)], bins=bins, histtype="step", color="tab:orange", lw=1.8,
                    label="Welch PSD peak")
        ax.set_xlabel("dominant period (steps)")
        ax.set_ylabel("number of channels")
        ax.set_xlim(bins[0], bins[-1])
        ax.legend(frameon=False)
        ax.set_title(title or "Dominant oscillation periods of channels")
    return _save(fig, path_stem)


# ----------------------------------------------------------------------------
# channel function table
# ----------------------------------------------------------------------------


def channel_function_rows(function: Mapping, cluster_labels=None, top_n=20, periods=None) -> list[dict]:
    """Rows of the channel-function table, strongest effect first.

    Parameters
    ----------
    function : dict
        Output of :func:`gptwaves.analysis.waves.channel_function`.
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


# ----------------------------------------------------------------------------
# across training, seeds and prompts
# ----------------------------------------------------------------------------


def _as_series(v) -> dict:
    """dict param -> array, from either a dict of sequences or a sequence of dicts."""
    if isinstance(v, Mapping):
        return {k: np.asarray(val, dtype=np.float64) for k, val in v.items()}
    v = list(v)
    return {k: np.array([np.nan if d.get(k) is None else float(d[k]) for d in v]) for k, _ in _ORDER_KEYS}


def order_parameters_figure(iterations, per_tap: Mapping, path_stem, *, title=None) -> list[Path]:
    """Coherence order parameters against training iteration, one line per tap.

    Parameters
    ----------
    iterations : array_like, shape (n,)
        Training iteration of each checkpoint (0 = untrained allowed).
    per_tap : dict
        tap name -> either dict ``{"mean_abs_corr": (n,), "lambda_max_share":
        (n,), "participation_ratio": (n,)}`` or a length-n list of
        :func:`~gptwaves.analysis.waves.order_parameters` dicts.
    path_stem : str or Path
    title : str, optional

    Notes
    -----
    The x axis is logarithmic in ``iteration + 1`` (so iteration 0 is drawn at
    1), as its label says.
    """
    it = np.asarray(iterations, dtype=np.float64) + 1.0
    taps = list(per_tap)
    cmap = matplotlib.colormaps["viridis"]
    with matplotlib.rc_context(_RC):
        fig = _new_figure((12, 3.8))
        axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
        for ti, tap in enumerate(taps):
            series = _as_series(per_tap[tap])
            color = cmap(ti / max(len(taps) - 1, 1))
            for ax, (key, _) in zip(axes, _ORDER_KEYS):
                if key in series:
                    ax.plot(it, series[key], marker="o", ms=3, lw=1.2, color=color, label=tap)
        for ax, (key, lab) in zip(axes, _ORDER_KEYS):
            ax.set_xscale("log")
            ax.set_xlabel("training iteration + 1 (log scale)")
            ax.set_ylabel(lab)
            ax.grid(alpha=0.3, which="both", lw=0.4)
        axes[0].set_title("mean |R|  (higher = more coherent)")
        axes[1].set_title("dominant-mode share")
        axes[2].set_title("participation ratio  (lower = more coherent)")
        if taps:
            axes[2].legend(loc="best", frameon=False, fontsize=7)
        fig.suptitle(title or "Coherence order parameters across training")
    return _save(fig, path_stem)


def _get(d, *path):
    for p in path:
        if not isinstance(d, Mapping) or d.get(p) is None:
            return None
        d = d[p]
    return d


def _arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def coherence_null_figure(checkpoints: Sequence[Mapping], tap: str, path_stem, *, input_tap: str | None = "hook_embed",
                          title=None) -> list[Path]:
    """Order parameters against iteration with their floors: raw (top) and induced (bottom).

    Parameters
    ----------
    checkpoints : sequence of dict
        ``{"iteration": int, "taps": {tap: summary}}`` with the summaries of
        :func:`gptwaves.analysis.waves.tap_summary`, sorted by iteration.
    tap : str
        The tap drawn (normally the focus tap).
    path_stem : str or Path
    input_tap : str, optional
        The input floor, drawn dashed (default ``hook_embed``; None: not recorded).
    title : str, optional

    Notes
    -----
    Bottom row: the induced values (evoked component removed) with the 95%
    CI of the excess (delete-one-sample jackknife by default) drawn around them (clipped to the quantity's range: [0, 1]
    for mean |R| and lambda_max / C, [1, C] for PR), the gain-normalised induced
    values (dotted), the band from the
    sample-shuffle surrogate mean to its 95th percentile (5th for PR), and the
    input floor. The top row shows the raw values (docs/method.md, Coherence), which have no
    surrogate band. The x axis is logarithmic in ``iteration + 1``.
    """
    it = _arr([c.get("iteration") for c in checkpoints]) + 1.0
    floor_label = f"input floor {input_tap}" if input_tap else "no input floor recorded"
    with matplotlib.rc_context(_RC):
        fig = _new_figure((12, 6.6))
        axes = [[fig.add_subplot(2, 3, 3 * r + i + 1) for i in range(3)] for r in range(2)]
        for i, (key, lab) in enumerate(_ORDER_KEYS):
            ax = axes[0][i]
            ax.plot(it, _arr([_get(c, "taps", tap, key) for c in checkpoints]), "o-", ms=3, lw=1.3, color="C0",
                    label=f"{tap} (raw)")
            ax.plot(it, _arr([_get(c, "taps", input_tap, key) for c in checkpoints]), "s--", ms=3, lw=1.0,
                    color="0.4", label=floor_label)
            ax.set_title(f"raw {lab}")
            ax = axes[1][i]
            obs = _arr([_get(c, "taps", tap, "induced", key) for c in checkpoints])
            smean = _arr([_get(c, "taps", tap, "surrogate", key, "surrogate_mean") for c in checkpoints])
            sq = _arr([_get(c, "taps", tap, "surrogate", key, "surrogate_q95") for c in checkpoints])
            cis = [_get(c, "taps", tap, "surrogate", key, "ci") for c in checkpoints]
            lo = np.array([np.nan if c is None or c[0] is None else c[0] for c in cis], dtype=float) + smean
            hi = np.array([np.nan if c is None or c[1] is None else c[1] for c in cis], dtype=float) + smean
            # no interval leaves the quantity's range: [0, 1] for mean |R| and lambda_max / C, [1, C] for PR
            ch = _arr([_get(c, "taps", tap, "n_channels") for c in checkpoints])
            top = ch if key == "participation_ratio" else np.ones_like(ch)
            bottom = 1.0 if key == "participation_ratio" else 0.0
            lo = np.clip(lo, bottom, np.where(np.isfinite(top), top, np.inf))
            hi = np.clip(hi, bottom, np.where(np.isfinite(top), top, np.inf))
            if np.isfinite(smean).any():
                ax.fill_between(it, np.fmin(smean, sq), np.fmax(smean, sq), color="C1", alpha=0.3, lw=0,
                                label="surrogate mean .. 95th pct")
                ax.plot(it, smean, color="C1", lw=0.8)
            ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(obs)
            ax.errorbar(it[ok], obs[ok], yerr=[np.maximum(obs[ok] - lo[ok], 0), np.maximum(hi[ok] - obs[ok], 0)],
                        fmt="none", ecolor="C0", elinewidth=0.8, capsize=2)
            ax.plot(it, obs, "o-", ms=3, lw=1.3, color="C0", label=f"{tap} (induced, 95% CI)")
            gobs = _arr([_get(c, "taps", tap, "gain_normalised", "induced", key) for c in checkpoints])
            if np.isfinite(gobs).any():
                ax.plot(it, gobs, "^:", ms=3, lw=1.0, color="C2", label=f"{tap} (induced, gain-normalised)")
            ax.plot(it, _arr([_get(c, "taps", input_tap, "induced", key) for c in checkpoints]), "s--", ms=3,
                    lw=1.0, color="0.4", label=floor_label)
            ax.set_title(f"induced {lab}")
            for a in (axes[0][i], axes[1][i]):
                a.set_xscale("log")
                a.grid(alpha=0.3, which="both", lw=0.4)
            axes[1][i].set_xlabel("training iteration + 1 (log scale)")
        axes[0][0].legend(loc="best", frameon=False, fontsize=7)
        axes[1][0].legend(loc="best", frameon=False, fontsize=7)
        fig.suptitle(title or f"Coherence at {tap} against its floors (lower PR = more coherent)")
    return _save(fig, path_stem)


def _sim_panel(ax, M, names, title):
    M = np.asarray(M, dtype=np.float64)
    im = ax.imshow(M, cmap="viridis", vmin=min(0.0, float(np.nanmin(M))) if M.size else 0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    if len(names) <= 12:
        for i in range(len(names)):
            for j in range(len(names)):
                v = M[i, j]
                ax.text(j, i, "–" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center",
                        fontsize=7, color="w" if np.isfinite(v) and v < 0.6 else "k")
    ax.set_title(title)
    return im


def _baseline_note(comp: Mapping, kind: str) -> str:
    """' (mean 0.91, baseline 0.90)' from a compare_recordings summary, or ''."""
    sm = comp.get("summary") if isinstance(comp, Mapping) else None
    m, b = _get(sm, f"mean_{kind}_similarity"), _get(sm, f"mean_{kind}_similarity_baseline")
    if m is None or b is None:
        return ""
    return f"\nmean {m:.2f} vs baseline {b:.2f}"


def similarity_figure(comparison: Mapping, path_stem, *, title=None) -> list[Path]:
    """Pairwise similarity heatmaps of recordings (repeatability or plasticity).

    Parameters
    ----------
    comparison : dict
        Output of :func:`gptwaves.analysis.waves.compare_recordings`
        (``names``, ``corr_similarity``, ``acf_similarity``; the means and
        baselines of its ``summary`` are written in the panel titles).
    path_stem : str or Path
    title : str, optional
        E.g. "Repeatability across seeds" or "Plasticity across prompts".
    """
    names = list(comparison["names"])
    with matplotlib.rc_context(_RC):
        fig = _new_figure((9.0, 4.2))
        a1 = fig.add_subplot(1, 2, 1)
        a2 = fig.add_subplot(1, 2, 2)
        _sim_panel(a1, comparison["corr_similarity"], names, "correlation matrices\n(Pearson of upper triangles)"
                   + _baseline_note(comparison, "corr"))
        im = _sim_panel(a2, comparison["acf_similarity"], names, "per-channel ACFs\n(mean Pearson over channels)"
                        + _baseline_note(comparison, "acf"))
        fig.colorbar(im, ax=[a1, a2], fraction=0.04, label="similarity")
        fig.suptitle(title or "Similarity between recordings")
    return _save(fig, path_stem)


def repeatability_plasticity_figure(seeds: Mapping, prompts: Mapping, path_stem, *, title=None) -> list[Path]:
    """Repeatability across seeds (top row) and plasticity across prompts (bottom).

    Parameters
    ----------
    seeds, prompts : dict
        Outputs of :func:`gptwaves.analysis.waves.compare_recordings` for
        recordings with different seeds (same prompt) and different prompts.
    path_stem : str or Path
    title : str, optional
    """
    with matplotlib.rc_context(_RC):
        fig = _new_figure((9.0, 8.2))
        axes = [[fig.add_subplot(2, 2, 2 * r + c + 1) for c in range(2)] for r in range(2)]
        im = None
        for r, (comp, what) in enumerate(((seeds, "seeds (same prompt)"), (prompts, "prompts"))):
            names = list(comp["names"])
            _sim_panel(axes[r][0], comp["corr_similarity"], names,
                       f"R similarity across {what}" + _baseline_note(comp, "corr"))
            im = _sim_panel(axes[r][1], comp["acf_similarity"], names,
                            f"ACF similarity across {what}" + _baseline_note(comp, "acf"))
        fig.colorbar(im, ax=[a for row in axes for a in row], fraction=0.03, label="similarity")
        fig.suptitle(title or "Intrinsic modes: repeatability and context plasticity")
    return _save(fig, path_stem)


# ----------------------------------------------------------------------------
# event-triggered averages
# ----------------------------------------------------------------------------


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
