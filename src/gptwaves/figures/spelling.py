"""Figures and an HTML text page for the spelling statistics (docs/method.md, Spelling).

Every ``plot_*`` function takes a path *stem* (``Path("out/fano")``), writes
``<stem>.png`` (dpi 130) and ``<stem>.svg`` and returns ``[png_path, svg_path]``.
Inputs are the JSON dicts returned by `gptwaves.analysis.spelling.analyze`
(None stands for an undefined value). Only the Agg canvas is used, so no
display is needed.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter
from scipy import stats

from gptwaves.analysis.spelling import (
    WORD_RE,
    extract_words,
)

from .common import new_figure, save_figure  # noqa: E402

__all__ = [
    "plot_count_histograms",
    "plot_fano",
    "plot_q_curves",
    "plot_rates",
    "plot_decomposition",
    "plot_cascade",
    "text_page_html",
    "SYMLOG_LINTHRESH",
]

#: Iterations below this are drawn on a linear scale (so iteration 0 shows).
SYMLOG_LINTHRESH = 10
COLORS = {"correct": "#1f77b4", "misspelled": "#d62728", "words": "#7f7f7f"}




def _f(v) -> float:
    return math.nan if v is None else float(v)


def _arr(values) -> np.ndarray:
    return np.asarray([_f(v) for v in values], dtype=float)


def _by_iteration(iterations, results):
    """Iterations (float array) and results sorted by iteration, and the sorting order."""
    it = np.asarray(iterations, dtype=float)
    order = np.argsort(it, kind="stable")
    return it[order], [results[i] for i in order], order


def _iter_axis(ax, axis: str = "iteration") -> None:
    ax.set_xscale("symlog", linthresh=SYMLOG_LINTHRESH, linscale=0.5)
    ax.set_xlim(left=0)
    ax.set_xlabel(f"training {axis} (symlog: linear below {SYMLOG_LINTHRESH})")


# ---------------------------------------------------------------------------
def plot_count_histograms(checkpoints: Sequence, stem, title: str | None = None, axis: str = "iteration") -> list[Path]:
    """Histograms of per-sample word counts with the Poisson pmf of equal mean.

    Parameters
    ----------
    checkpoints : sequence of (iteration, counts_correct, counts_misspelled)
        One row of the grid per checkpoint; columns are correct / misspelled.
    stem : str or Path
        Output path without suffix.
    title : str, optional
    axis : str, optional
        The training axis in words: ``"iteration"`` (default) or ``"step"`` (a Hugging Face
        suite's revisions).

    Returns
    -------
    list of Path
        The PNG and SVG paths.
    """
    rows = max(1, len(checkpoints))
    fig = new_figure(8.0, 1.9 * rows + 0.8)
    axes = fig.subplots(rows, 2, squeeze=False)
    for r, (it, cc, cm) in enumerate(checkpoints):
        for c, (name, counts) in enumerate((("correct", cc), ("misspelled", cm))):
            ax = axes[r, c]
            x = np.asarray(counts, dtype=float)
            x = x[np.isfinite(x)]
            if x.size == 0:
                ax.text(0.5, 0.5, "no samples", ha="center", va="center",
                        transform=ax.transAxes)
                continue
            kmax = int(x.max())
            k = np.arange(0, max(kmax, 1) + 1)
            freq = np.bincount(x.astype(int), minlength=k.size)[: k.size] / x.size
            ax.bar(k, freq, width=0.85, color=COLORS[name], alpha=0.55,
                   label=f"{name} (N={x.size})")
            mean = x.mean()
            var = x.var(ddof=1) if x.size > 1 else math.nan
            pmf = stats.poisson.pmf(k, mean)
            ax.plot(k, pmf, "k.-", lw=1, ms=4, label=f"Poisson, mean {mean:.2f}")
            fano = var / mean if mean > 0 else math.nan
            ax.text(0.98, 0.95, f"F = {fano:.2f}", ha="right", va="top",
                    transform=ax.transAxes, fontsize=9)
            ax.set_title(f"{axis} {it}: {name} words", fontsize=9)
            ax.set_ylabel("fraction of samples", fontsize=8)
            ax.legend(fontsize=7, loc="best", framealpha=0.7)
            if r == rows - 1:
                ax.set_xlabel("words per sample")
    fig.suptitle(title or "Word-count distributions vs Poisson", fontsize=11)
    return save_figure(fig, stem)


# ---------------------------------------------------------------------------
def _fano_series(results, which):
    f = _arr([res[which]["fano"] for res in results])
    lo = _arr([res[which]["fano_ci"][0] for res in results])
    hi = _arr([res[which]["fano_ci"][1] for res in results])
    return f, lo, hi


def plot_fano(iterations: Sequence, results: Sequence[dict], stem,
              val_losses: Sequence | None = None,
              title: str | None = None, crossing: dict | None = None, axis: str = "iteration") -> list[Path]:
    """Fano factor of correct and misspelled counts across training.

    Left panel: F (95 % bootstrap CI band) against iteration on a symlog axis
    (linear below `SYMLOG_LINTHRESH`, so iteration 0 is shown), the Poisson
    line F = 1 and, when ``crossing`` (a `gptwaves.analysis.spelling.crossing`
    result) is reported, the crossing of F_correct through 1 with its CI. Right panel (if `val_losses` is given): the same
    against validation loss (x axis inverted: training proceeds to the right).

    Parameters
    ----------
    iterations : sequence of int
    results : sequence of dict
        `analyze` outputs, aligned with `iterations`.
    stem : str or Path
    val_losses : sequence of float, optional
    title : str, optional
    crossing : dict, optional
        Drawn only when ``crossing["reported"]``.
    axis : str, optional
        The training axis in words: ``"iteration"`` (default) or ``"step"`` (a Hugging Face
        suite's revisions).

    Returns
    -------
    list of Path
    """
    it, results, order = _by_iteration(iterations, results)
    vl = None if val_losses is None else _arr(val_losses)[order]
    ncol = 1 if vl is None else 2
    fig = new_figure(5.2 * ncol, 4.0)
    axes = fig.subplots(1, ncol, squeeze=False)[0]
    series = {w: _fano_series(results, w) for w in ("correct", "misspelled")}
    cross = crossing.get("iteration") if crossing and crossing.get("reported") else None

    ax = axes[0]
    for name, (f, lo, hi) in series.items():
        ax.plot(it, f, "o-", color=COLORS[name], ms=4, label=f"F {name}")
        ax.fill_between(it, lo, hi, color=COLORS[name], alpha=0.2, lw=0)
    ax.axhline(1.0, color="k", ls="--", lw=1, label="Poisson (F = 1)")
    if cross is not None:
        ax.axvline(cross, color=COLORS["correct"], ls=":", lw=1.5,
                   label=f"F_correct crosses 1 (~{cross:.0f})")
        lo, hi = (crossing.get("ci") or [None, None])[:2]
        if lo is not None or hi is not None:
            ax.axvspan(lo if lo is not None else max(it.min(), 0), hi if hi is not None else it.max(),
                       color=COLORS["correct"], alpha=0.1, lw=0, label="crossing 95% CI")
    _iter_axis(ax, axis)
    ax.set_ylabel("Fano factor F = var / mean")
    ax.set_title(f"Fano factor vs {axis}", fontsize=10)
    ax.legend(fontsize=8)

    if vl is not None:
        ax = axes[1]
        ok = np.isfinite(vl)
        for name, (f, lo, hi) in series.items():
            o = np.argsort(vl[ok])
            x = vl[ok][o]
            ax.plot(x, f[ok][o], "o-", color=COLORS[name], ms=4, label=f"F {name}")
            ax.fill_between(x, lo[ok][o], hi[ok][o], color=COLORS[name], alpha=0.2, lw=0)
        ax.axhline(1.0, color="k", ls="--", lw=1, label="Poisson (F = 1)")
        ax.invert_xaxis()
        ax.set_xlabel("validation loss (nats/char, decreasing →)")
        ax.set_ylabel("Fano factor F")
        ax.set_title("Fano factor vs validation loss", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Spelling statistics: Poisson → sub-Poissonian", fontsize=11)
    return save_figure(fig, stem)


# ---------------------------------------------------------------------------
def _q_columns(qc) -> dict:
    """Accept analyze's column form or q_curve's {w: {...}} form."""
    if "windows" in qc:
        return {k: list(v) for k, v in qc.items()}
    ws = sorted(int(w) for w in qc)
    get = {int(w): v for w, v in qc.items()}
    return {"windows": ws, **{k: [get[w][k] for w in ws]
                              for k in ("q_correct", "q_misspelled")}}


def plot_q_curves(iterations: Sequence, results: Sequence[dict], stem,
                  which: Sequence[int] | None = None,
                  title: str | None = None, axis: str = "iteration") -> list[Path]:
    """Mandel Q(w) against counting-window width, for selected checkpoints.

    Parameters
    ----------
    iterations : sequence of int
    results : sequence of dict
        `analyze` outputs (their ``q_curve`` entry is used).
    stem : str or Path
    which : sequence of int, optional
        Indices into `results` to draw; default early (first), middle and
        final checkpoint.
    title : str, optional
    axis : str, optional
        The training axis in words: ``"iteration"`` (default) or ``"step"`` (a Hugging Face
        suite's revisions).

    Returns
    -------
    list of Path
    """
    n = len(results)
    if which is None:
        which = sorted({0, n // 2, n - 1}) if n else []
    fig = new_figure(10.0, 4.0)
    axes = fig.subplots(1, 2, sharey=False)
    cmap = ["#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#bcbd22"]
    plotted = False
    for j, i in enumerate(which):
        q = _q_columns(results[i]["q_curve"])
        w = np.asarray(q["windows"], dtype=float)
        for ax, key in zip(axes, ("q_correct", "q_misspelled")):
            y = _arr(q[key])
            plotted |= bool(np.any(np.isfinite(y) & (w > 0))) if len(w) else False
            ax.plot(w, y, "o-", color=cmap[j % len(cmap)], ms=4,
                    label=f"{axis} {iterations[i]}")
    for ax, name in zip(axes, ("correct", "misspelled")):
        ax.axhline(0.0, color="k", ls="--", lw=1, label="Poisson (Q = 0)")
        if not plotted:  # nothing finite to draw (too few words): keep a linear, empty axis
            ax.text(0.5, 0.5, "not enough words", transform=ax.transAxes, ha="center", va="center")
        else:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("counting window w (characters, log2)")
        ax.set_ylabel("Mandel Q = F - 1")
        ax.set_title(f"{name} words", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Counting-window curve Q(w)", fontsize=11)
    return save_figure(fig, stem)


# ---------------------------------------------------------------------------
def _dec(res, name, key):
    return _f(((res.get("decomposition") or {}).get(name) or {}).get(key))


def plot_rates(iterations: Sequence, results: Sequence[dict], stem,
               title: str | None = None, axis: str = "iteration") -> list[Path]:
    """Error rate, excess over the length-conditioned reference and cascade RR against iteration.

    Parameters
    ----------
    iterations : sequence of int
    results : sequence of dict
        `analyze` outputs.
    stem : str or Path
    title : str, optional
    axis : str, optional
        The training axis in words: ``"iteration"`` (default) or ``"step"`` (a Hugging Face
        suite's revisions).

    Returns
    -------
    list of Path
    """
    it, results, _ = _by_iteration(iterations, results)
    fig = new_figure(13.0, 3.8)
    a0, a1, a2 = fig.subplots(1, 3)
    a0.plot(it, _arr([r.get("error_rate") for r in results]), "o-", color=COLORS["misspelled"], ms=4)
    a0.set_ylabel("misspelled / all words")
    a0.set_title("error rate p", fontsize=10)
    a0.set_ylim(bottom=0)
    for name, mk in (("misspelled", "o-"), ("correct", "s-")):
        a1.plot(it, _arr([_dec(r, name, "excess") for r in results]), mk, color=COLORS[name], ms=4,
                label=name)
    a1.axhline(1.0, color="k", ls="--", lw=1, label="independent given length")
    a1.set_ylabel("F / F_ref (length-conditioned)")
    a1.set_title("excess over the independent-error reference", fontsize=10)
    a1.legend(fontsize=8)
    a2.plot(it, _arr([(r.get("cascade") or {}).get("rr") for r in results]), "o-", color="#9467bd", ms=4)
    a2.axhline(1.0, color="k", ls="--", lw=1, label="RR = 1")
    a2.set_ylabel("P(mis | prev mis) / P(mis | prev correct)")
    a2.set_title("cascade relative risk", fontsize=10)
    a2.legend(fontsize=8)
    for ax in (a0, a1, a2):
        _iter_axis(ax, axis)
    fig.suptitle(title or "Error rate, excess and cascades across training", fontsize=11)
    return save_figure(fig, stem)


def plot_decomposition(iterations: Sequence, results: Sequence[dict], stem,
                       title: str | None = None, axis: str = "iteration") -> list[Path]:
    """F with its independent-error reference and permutation null band, against iteration.

    One panel per count (correct, misspelled): observed F (with its BCa CI), the closed-form
    length-conditioned reference F_ref, the stratified permutation null's median and
    [alpha/2, 1 - alpha/2] band, and F = 1. The correct panel also shows F_words and its
    renewal reference CV^2 of the word-start spacing.

    Parameters
    ----------
    iterations : sequence of int
    results : sequence of dict
        `analyze` outputs (their ``decomposition``).
    stem : str or Path
    title : str, optional
    axis : str, optional
        The training axis in words: ``"iteration"`` (default) or ``"step"`` (a Hugging Face
        suite's revisions).

    Returns
    -------
    list of Path
    """
    it, results, _ = _by_iteration(iterations, results)
    fig = new_figure(11.0, 4.0)
    axes = fig.subplots(1, 2)
    for ax, name in zip(axes, ("correct", "misspelled")):
        f, lo, hi = _fano_series(results, name)
        ax.plot(it, f, "o-", color=COLORS[name], ms=4, label=f"F {name}")
        ax.fill_between(it, lo, hi, color=COLORS[name], alpha=0.15, lw=0, label="95% BCa CI")
        ax.plot(it, _arr([_dec(r, name, "fano_ref") for r in results]), "k^--", ms=4, lw=1,
                label="F_ref (independent given length)")
        band = [((r.get("decomposition") or {}).get(name) or {}).get("null_band") or [None, None]
                for r in results]
        ax.fill_between(it, _arr([b[0] for b in band]), _arr([b[1] for b in band]), color="0.5", alpha=0.25,
                        lw=0, label="permutation null band")
        ax.plot(it, _arr([_dec(r, name, "null_median") for r in results]), ":", color="0.3", lw=1,
                label="null median")
        if name == "correct":
            ax.plot(it, _arr([_dec(r, "words", "fano") for r in results]), "s-", color=COLORS["words"], ms=3,
                    lw=1, label="F words")
            ax.plot(it, _arr([_dec(r, "words", "renewal_reference") for r in results]), "s--",
                    color=COLORS["words"], ms=3, lw=1, label="renewal CV² (word starts)")
        ax.axhline(1.0, color="k", lw=0.8, alpha=0.6)
        _iter_axis(ax, axis)
        ax.set_ylabel("Fano factor")
        ax.set_title(f"{name} words", fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(title or "Fano factor against its independent-error reference and null", fontsize=11)
    return save_figure(fig, stem)


def plot_cascade(iterations: Sequence, results: Sequence[dict], stem,
                 title: str | None = None, axis: str = "iteration") -> list[Path]:
    """Cascade relative risk (with BCa CI) and its within-sample permutation null band.

    Parameters
    ----------
    iterations : sequence of int
    results : sequence of dict
        `analyze` outputs (their ``cascade``).
    stem : str or Path
    title : str, optional
    axis : str, optional
        The training axis in words: ``"iteration"`` (default) or ``"step"`` (a Hugging Face
        suite's revisions).

    Returns
    -------
    list of Path
    """
    it, results, _ = _by_iteration(iterations, results)
    cas = [r.get("cascade") or {} for r in results]
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    rr = _arr([c.get("rr") for c in cas])
    ci = [c.get("rr_ci") or [None, None] for c in cas]
    nb = [c.get("null_band") or [None, None] for c in cas]
    ax.plot(it, rr, "o-", color="#9467bd", ms=4, label="RR")
    ax.fill_between(it, _arr([c[0] for c in ci]), _arr([c[1] for c in ci]), color="#9467bd", alpha=0.2, lw=0,
                    label="95% BCa CI")
    ax.fill_between(it, _arr([b[0] for b in nb]), _arr([b[1] for b in nb]), color="0.5", alpha=0.25, lw=0,
                    label="within-sample permutation null")
    ax.plot(it, _arr([c.get("null_median") for c in cas]), ":", color="0.3", lw=1, label="null median")
    ax.axhline(1.0, color="k", ls="--", lw=1)
    for x, c, y in zip(it, cas, rr):
        p = c.get("p_value")
        if p is not None and p < 0.05 and np.isfinite(y):
            ax.annotate("*", (x, y), textcoords="offset points", xytext=(0, 4), ha="center")
    _iter_axis(ax, axis)
    ax.set_ylabel("P(mis | prev mis) / P(mis | prev correct)")
    ax.legend(fontsize=8)
    fig.suptitle(title or "Cascade relative risk across training (* p < 0.05)", fontsize=11)
    return save_figure(fig, stem)


# ---------------------------------------------------------------------------
def _mark_text(text: str, lexicon, prompt_len: int, length: int | None = None) -> tuple[str, int, int]:
    """HTML of one sample with misspelled words marked; returns (html, n_cor, n_mis)."""
    scored = {s: (e, w not in lexicon) for w, s, e in extract_words(text, prompt_len, length)}
    parts = []
    pos = 0
    n_cor = n_mis = 0
    esc = html.escape
    if prompt_len > 0:
        parts.append(f'<span class="prompt">{esc(text[:prompt_len])}</span>')
        pos = prompt_len
    for m in WORD_RE.finditer(text, pos):
        s, e = m.span()
        if s < pos:
            continue
        parts.append(esc(text[pos:s]))
        word = esc(text[s:e])
        if s in scored:
            if scored[s][1]:
                parts.append(f'<mark class="miss">{word}</mark>')
                n_mis += 1
            else:
                parts.append(word)
                n_cor += 1
        else:
            parts.append(f'<span class="unscored">{word}</span>')
        pos = e
    parts.append(esc(text[pos:]))
    return "".join(parts), n_cor, n_mis


def text_page_html(texts: Sequence[str], lexicon, prompt_len: int, iteration,
                   max_samples: int = 20, length: int | None = None) -> str:
    """HTML fragment showing generated samples with misspelled words highlighted.

    Parameters
    ----------
    texts : sequence of str
        Samples, prompt included.
    lexicon : set of str
    prompt_len : int
    iteration : int
        Checkpoint iteration (shown in the heading).
    max_samples : int, optional
        Number of samples shown (the first ones). Default 20.
    length : int, optional
        Counted characters L: words starting after them (in the margin) are shown as
        unscored. Default: every word after the prompt is counted.

    Returns
    -------
    str
        A ``<section class="spelling-samples">`` fragment. Every character of
        generated text is HTML-escaped. Misspelled words are wrapped in
        ``<mark class="miss">``, the prompt in ``<span class="prompt">`` and
        words that are not scored (cut by the sample end, in the margin, or
        overlapping the prompt) in ``<span class="unscored">``; each sample is a
        ``<pre class="sample">`` (whitespace preserved).
    """
    shown = list(texts[: max(0, int(max_samples))])
    blocks = []
    tot_c = tot_m = 0
    for i, t in enumerate(shown):
        body, c, m = _mark_text(t, lexicon, prompt_len, length)
        tot_c += c
        tot_m += m
        blocks.append(
            f'<div class="sample-wrap"><div class="sample-head">sample {i}: '
            f"{c} correct, {m} misspelled</div>"
            f'<pre class="sample">{body}</pre></div>'
        )
    it = html.escape(str(iteration))
    head = (
        f'<section class="spelling-samples" data-iteration="{it}">\n'
        f"<h3>Generated samples, iteration {it}</h3>\n"
        f"<p>{len(shown)} of {len(texts)} samples shown; "
        f'<mark class="miss">highlighted</mark> words are not in the lexicon '
        f"({tot_m} misspelled, {tot_c} correct in the shown samples).</p>\n"
    )
    return head + "\n".join(blocks) + "\n</section>\n"
