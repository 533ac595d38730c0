"""Figures of coherence across training, seeds and prompts: order parameters against training,
the coherence excess over its nulls and floors, and the similarity of recordings
(docs/method.md, Coherence and Coherence against its floors). Conventions as
:mod:`gptwaves.figures.waves`, which re-exports every name here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np

from .wave_axes import _ORDER_KEYS, _RC, _new_figure, _save

__all__ = ["order_parameters_figure", "coherence_null_figure", "similarity_figure", "repeatability_plasticity_figure"]


def _as_series(v) -> dict:
    """dict param -> array, from either a dict of sequences or a sequence of dicts."""
    if isinstance(v, Mapping):
        return {k: np.asarray(val, dtype=np.float64) for k, val in v.items()}
    v = list(v)
    return {k: np.array([np.nan if d.get(k) is None else float(d[k]) for d in v]) for k, _ in _ORDER_KEYS}


def order_parameters_figure(iterations, per_tap: Mapping, path_stem, *, title=None, axis: str = "iteration") -> list[Path]:
    """Coherence order parameters against training iteration, one line per tap.

    Parameters
    ----------
    iterations : array_like, shape (n,)
        Training iteration of each checkpoint (0 = untrained allowed).
    per_tap : dict
        tap name -> either dict ``{"mean_abs_corr": (n,), "lambda_max_share":
        (n,), "participation_ratio": (n,)}`` or a length-n list of
        :func:`~gptwaves.analysis.correlation.order_parameters` dicts.
    path_stem : str or Path
    title : str, optional
    axis : str, optional
        The training axis in words: ``"iteration"`` (default) or ``"step"`` (a Hugging Face
        suite's revisions).

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
            ax.set_xlabel(f"training {axis} + 1 (log scale)")
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
                          title=None, axis: str = "iteration") -> list[Path]:
    """Order parameters against iteration with their floors: raw (top) and induced (bottom).

    Parameters
    ----------
    checkpoints : sequence of dict
        ``{"iteration": int, "taps": {tap: summary}}`` with the summaries of
        :func:`gptwaves.analysis.waves_summary.tap_summary`, sorted by iteration.
    tap : str
        The tap drawn (normally the focus tap).
    path_stem : str or Path
    input_tap : str, optional
        The input floor, drawn dashed (default ``hook_embed``; None: not recorded).
    title : str, optional
    axis : str, optional
        The training axis in words: ``"iteration"`` (default) or ``"step"`` (a Hugging Face
        suite's revisions).

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
            axes[1][i].set_xlabel(f"training {axis} + 1 (log scale)")
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
        Output of :func:`gptwaves.analysis.repeatability.compare_recordings`
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
        Outputs of :func:`gptwaves.analysis.repeatability.compare_recordings` for
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

