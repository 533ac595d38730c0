"""Figures of hidden-state waves and their coherence (docs/method.md, Coherence).

Every plotting function takes plain arrays or dicts (outputs of
:mod:`gptwaves.analysis.waves`), draws one figure with the object API of
matplotlib (no pyplot state, safe without a display), saves
``path_stem.png`` (130 dpi) and ``path_stem.svg`` and returns both paths.

Characters drawn on time axes show a space as ``␣`` and a newline as ``⏎``.

This module draws the waves, the correlation matrices and the auto-correlation; the channel
table and event-triggered averages are in :mod:`gptwaves.figures.wave_channels`, the figures
across training, seeds and prompts in :mod:`gptwaves.figures.wave_training`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib
import numpy as np
from matplotlib.patches import Rectangle

from .wave_axes import _RC, _char_axis, _new_figure, _save, _window, display_char
# figures of channels and of training live in their own modules; every name stays importable here
from .wave_channels import channel_function_rows, channel_table_figure, event_triggered_figure
from .wave_training import (coherence_null_figure, order_parameters_figure, repeatability_plasticity_figure,
                            similarity_figure)

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
        Output of :func:`gptwaves.analysis.clustering.cluster_channels` (uses
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
    from gptwaves.analysis.clustering import cluster_channels
    from gptwaves.analysis.correlation import order_parameters

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


