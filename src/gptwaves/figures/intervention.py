"""Figures of a channel intervention (docs/method.md, Interventions).

Every ``plot_*`` function takes the ``result.json`` dict written by
:func:`gptwaves.intervene.intervene_run` and a path *stem*, writes ``<stem>.png``
(dpi 130) and ``<stem>.svg`` and returns ``[png_path, svg_path]``. Only the Agg
canvas is used. Conditions are drawn in a fixed order and colour: baseline
(grey), edited (red), control (blue); a missing control is left out.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .common import new_figure, save_figure

__all__ = ["plot_error_rates", "plot_word_lengths", "plot_count_histograms", "CONDITION_COLORS"]

CONDITION_COLORS = {"baseline": "#7f7f7f", "edited": "#d62728", "control": "#1f77b4"}


def _f(v) -> float:
    return math.nan if v is None else float(v)


def _conditions(result: dict) -> list[str]:
    return [c for c in ("baseline", "edited", "control") if c in result.get("conditions", {})]


def _title(result: dict) -> str:
    s = result["settings"]
    it = s.get("iteration")
    where = f"iteration {it}" if it is not None else s.get("checkpoint", "")
    n = len(s.get("channels", []))
    return f"{s['mode']} {s['spec']} ({n} channel{'s' if n != 1 else ''}) at {s['tap']}, {where}"


def _p_text(p) -> str:
    p = _f(p)
    if not math.isfinite(p):
        return "p n/a"
    return f"p = {p:.3g}" if p >= 1e-4 else "p < 1e-4"


def plot_error_rates(result: dict, stem, title: str | None = None) -> list[Path]:
    """Bars of the pooled error rate per condition with 95 % bootstrap CIs.

    The comparisons with the baseline (difference, its CI and permutation p)
    are written above the edited and control bars.
    """
    conds = _conditions(result)
    fig = new_figure(5.2, 3.8)
    ax = fig.subplots()
    for i, c in enumerate(conds):
        d = result["conditions"][c]
        r = _f(d["error_rate"])
        lo, hi = (_f(v) for v in (d.get("error_rate_ci") or [None, None]))
        err = None
        if math.isfinite(lo) and math.isfinite(hi) and math.isfinite(r):
            err = [[max(r - lo, 0.0)], [max(hi - r, 0.0)]]
        ax.bar(i, r if math.isfinite(r) else 0.0, color=CONDITION_COLORS[c], alpha=0.8, width=0.6)
        if err is not None:
            ax.errorbar(i, r, yerr=err, color="k", capsize=5, lw=1.2)
        cmp = result.get("comparisons", {}).get(f"{c}_vs_baseline")
        if cmp:
            e = cmp["error_rate"]
            ci = e.get("ci") or [None, None]
            txt = (f"Δ {_f(e['diff']):+.3f}\n[{_f(ci[0]):+.3f}, {_f(ci[1]):+.3f}]\n"
                   f"{_p_text(e.get('p_permutation'))}")
            top = hi if math.isfinite(hi) else (r if math.isfinite(r) else 0.0)
            ax.text(i, top, txt, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(conds)), [f"{c}\n(N words {result['conditions'][c]['n_words']})" for c in conds],
                  fontsize=8)
    ax.set_ylabel("error rate (misspelled / words)")
    ymax = max([_f((result["conditions"][c].get("error_rate_ci") or [0, 0])[1]) for c in conds] + [0.0],
               key=lambda v: v if math.isfinite(v) else 0.0)
    ax.set_ylim(0, max(0.05, (ymax if math.isfinite(ymax) else 0.0) * 1.45))
    ax.set_title(title or _title(result), fontsize=8)
    return save_figure(fig, stem)


def plot_word_lengths(result: dict, stem, title: str | None = None) -> list[Path]:
    """Word-length distributions of the conditions, overlaid (fractions of words)."""
    conds = _conditions(result)
    fig = new_figure(5.6, 3.6)
    ax = fig.subplots()
    for c in conds:
        wl = result["conditions"][c]["word_length"]
        counts = np.asarray(wl["counts"], dtype=float)
        if counts.sum() <= 0:
            continue
        lengths = np.asarray(wl["lengths"], dtype=float)
        ax.step(lengths, counts / counts.sum(), where="mid", color=CONDITION_COLORS[c], lw=1.6,
                label=f"{c}: mean {_f(wl['mean']):.2f}")
    lines = []
    for c in ("edited", "control"):
        cmp = result.get("comparisons", {}).get(f"{c}_vs_baseline")
        if cmp:
            w = cmp["word_length"]
            lines.append(f"{c}: Δmean {_f(w['diff']):+.2f}, χ² {_p_text(w['chi2']['p'])}")
    if lines:
        ax.text(0.98, 0.97, "\n".join(lines), ha="right", va="top", transform=ax.transAxes, fontsize=7)
    ax.set_xlabel("word length (characters)")
    ax.set_ylabel("fraction of words")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center right")
    ax.set_title(title or _title(result), fontsize=8)
    return save_figure(fig, stem)


def plot_count_histograms(result: dict, stem, title: str | None = None) -> list[Path]:
    """Per-sample histograms of misspelled, correct and all words, conditions overlaid."""
    conds = _conditions(result)
    fig = new_figure(9.0, 3.2)
    axes = fig.subplots(1, 3)
    for ax, which in zip(axes, ("misspelled", "correct", "words")):
        data = {}
        for c in conds:
            counts = result["conditions"][c]["spelling"]["counts"]
            mis = np.asarray(counts["misspelled"], dtype=float)
            cor = np.asarray(counts["correct"], dtype=float)
            data[c] = {"misspelled": mis, "correct": cor, "words": mis + cor}[which]
        kmax = int(max([x.max() for x in data.values() if x.size] + [1]))
        k = np.arange(kmax + 1)
        for c, x in data.items():
            if x.size == 0:
                continue
            freq = np.bincount(x.astype(int), minlength=k.size)[: k.size] / x.size
            fano = x.var(ddof=1) / x.mean() if x.size > 1 and x.mean() > 0 else math.nan
            ax.step(k, freq, where="mid", color=CONDITION_COLORS[c], lw=1.5,
                    label=f"{c}: mean {x.mean():.2f}, F {fano:.2f}")
        ax.set_xlabel(f"{'all' if which == 'words' else which} words per sample", fontsize=8)
        ax.set_ylabel("fraction of samples", fontsize=8)
        ax.legend(fontsize=6, loc="best", framealpha=0.7)
    fig.suptitle(title or _title(result), fontsize=9)
    return save_figure(fig, stem)
