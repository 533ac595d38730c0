"""Counting statistics of spelling errors in generated text (docs/method.md, Spelling).

Pure functions (numpy / scipy only, no file I/O): word extraction with the margin rule,
lexicon scoring, dispersion (Fano factor, Mandel Q, index-of-dispersion test, BCa CI, SE of
log F), the decomposition of a (sub-)Poissonian count (word total with its renewal reference,
independent-error reference conditioned on word length and position, stratified permutation
null, each excess with its CI and z), the counting-window curve Q(w) with its null band, the
cascade relative risk with its within-sample, within-position permutation null, and the
crossing of F_correct through 1 across checkpoints with its bootstrap CI.

Conventions
-----------
A *sample* is one generated text **including** its prompt: ``texts[i][:prompt_len]`` is the
prompt, the next ``length`` (L) characters are the *counted* characters and the ``margin``
(M) characters after them are generated only so that the words started in the counted part
can finish. A *word* is a maximal match of `WORD_RE`, lowercased; a word is *correct* when it
is in the lexicon, otherwise *misspelled*. A sample's words are those that *start* in its
counted characters; a word overlapping the prompt is dropped; a word still unfinished at the
end of the text (its match reaches the end, or only one apostrophe follows it) is dropped and
counted as *cut*.

Word lengths are the number of characters of the matched word (apostrophes included); the
length bins are 1, 2, ..., 11 and ">= 12" (`LENGTH_BINS` = 12 bins, the last pooled). Position
bins come from a word's start character in the counted part (`position_bins`: [0, 8), [8, 16),
[16, 32), then every `POSITION_WIDTH` characters). The strata of the independent-error reference
and of the permutation null are length bin x position bin (`strata`); the cascade null shuffles
within (sample, position bin) groups.

Randomness: ``seed`` gives the BCa bootstrap of F_correct (``seed``), F_misspelled
(``seed + 1``), the cascade RR (``seed + 2``) and the permutation nulls
(``numpy.random.default_rng([seed, 1])`` for the stratified null, ``[seed, 2]`` for the
cascade null); a run is reproducible from ``seed``.

Undefined values are ``None`` in JSON (never NaN), with a ``reason`` string next to them.

Where each concern lives (modules of :mod:`gptwaves.analysis`)
--------------------------------------------------------------
spelling_words
    Word extraction with the margin rule, the lexicon, scoring, length and position bins.
spelling_dispersion
    Fano factor, Mandel Q, the index-of-dispersion test, the BCa CI, SEs of log F and excesses.
spelling_nulls
    Independent-error and renewal references, the stratified permutation null.
spelling_windows
    The counting-window curve Q(w).
spelling_cascade
    The cascade relative risk and its permutation null.
spelling_crossing
    The crossing of F_correct through 1 across checkpoints.

:func:`analyze_words` (and :func:`analyze`, which scores texts first) composes them for one
checkpoint; every public name of those modules stays importable from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..jsonable import jsonable

# analyze_words calls stratified_null and cascade_null through this module's names: the fast engine
# of the calibration swaps them here while it analyses a replicate (stages/calibration_truth.py,
# _SharedNulls.injected). The private names are re-exported for the tests that reach into the nulls.
from .spelling_cascade import _group_shuffles, _pair_counts, _rr, cascade, cascade_null
from .spelling_crossing import crossing, crossing_iteration
from .spelling_dispersion import dispersion, fano_bca, log_excess_se, log_fano_se, residual_ratio
from .spelling_nulls import _null_summary, independent_reference, perm_p_value, renewal_reference, stratified_null
from .spelling_windows import default_windows, q_curve, window_counts
from .spelling_words import (LENGTH_BINS, POSITION_WIDTH, WORD_RE, ScoredSamples, build_lexicon, extract_words,
                             length_bins, load_word_list, position_bins, position_edges, scan_words, score_samples,
                             strata)

__all__ = [
    "WORD_RE",
    "LENGTH_BINS",
    "POSITION_WIDTH",
    "position_edges",
    "ScoredSamples",
    "scan_words",
    "extract_words",
    "build_lexicon",
    "load_word_list",
    "score_samples",
    "dispersion",
    "fano_bca",
    "length_bins",
    "position_bins",
    "strata",
    "log_fano_se",
    "log_excess_se",
    "residual_ratio",
    "independent_reference",
    "renewal_reference",
    "stratified_null",
    "window_counts",
    "q_curve",
    "default_windows",
    "cascade",
    "cascade_null",
    "perm_p_value",
    "analyze_words",
    "analyze",
    "crossing_iteration",
    "crossing",
]


# long: the docstring documents every parameter; the parts are the helpers below it
def analyze_words(word_sample, word_start, word_len, word_mis, n_samples: int, length: int, *,
                  margin: int | None = None, n_cut=0, prompt_len: int = 0, alpha: float = 0.05,
                  n_boot: int = 2000, n_perm: int = 1000, seed: int = 0,
                  windows: Sequence[int] | None = None, sample_length=None) -> dict:
    """All spelling statistics of one checkpoint from its word table (docs/method.md, Spelling).

    The array-level entry point behind `analyze` (which extracts and scores the words of
    the texts first); the null-model tests call it directly.

    Parameters
    ----------
    word_sample : array_like of int, shape (W,)
        Sample index (0..N-1) of every counted word, non-decreasing, words of a sample in
        text order.
    word_start : array_like of int, shape (W,)
        Start offset in the counted part (0 = first character after the prompt, < L).
    word_len : array_like of int, shape (W,)
        Length in characters.
    word_mis : array_like of bool, shape (W,)
        Misspelling flag.
    n_samples : int
        N (samples without words count as zeros).
    length : int
        Counted characters L per sample.
    margin : int, optional
        M (recorded only).
    n_cut : int or array_like of int, optional
        Cut words (total, or per sample); recorded.
    prompt_len : int, optional
        Recorded only.
    alpha : float
        Level of every test.
    n_boot : int
        BCa resamples for the CIs of F_correct, F_misspelled and RR (0: no CIs).
    n_perm : int
        Permutations of both nulls (0: no nulls).
    seed : int
        See the module docstring.
    windows : sequence of int, optional
        Window widths of Q(w); default `default_windows` (``[]``: no Q(w)).
    sample_length : array_like of int, optional
        Counted characters available per sample, for Q(w) windows (default L).

    Returns
    -------
    dict
        JSON-ready (see `analyze`).

    Raises
    ------
    ValueError
        Fewer than 2 samples, or arrays of different lengths.
    """
    samp, start, wlen, mis, N, L = _word_table(word_sample, word_start, word_len, word_mis, n_samples, length)
    n_words = np.bincount(samp, minlength=N).astype(np.int64)
    n_mis = np.bincount(samp[mis], minlength=N).astype(np.int64)
    n_cor = n_words - n_mis
    n_cut_total = int(np.asarray(n_cut, dtype=np.int64).sum())
    W = int(samp.size)
    if windows is None:
        windows = default_windows(L)
    windows = [int(w) for w in windows if 1 <= int(w) <= L]

    d_cor = dispersion(n_cor, alpha=alpha, n_boot=n_boot, seed=seed)
    d_mis = dispersion(n_mis, alpha=alpha, n_boot=n_boot, seed=seed + 1)
    d_words = dispersion(n_words, alpha=alpha, n_boot=0)
    ref = independent_reference(samp, wlen, mis, N, word_start=start)
    # permutation null (stratified by length and position)
    null = (stratified_null(samp, start, wlen, mis, N, L, windows, n_perm, seed, sample_length)
            if n_perm and n_perm > 0 and W else None)
    decomp = _decomposition(d_cor, d_mis, d_words, ref, renewal_reference(samp, start), null, W, L, alpha,
                            n_perm, seed)
    qc = q_curve(samp, start, mis, N, L, windows, sample_length)
    cas = _cascade_with_null(samp, mis, N, start, alpha, n_boot, n_perm, seed)
    out = dict(
        n_samples=N, prompt_len=int(prompt_len), length=L,
        margin=None if margin is None else int(margin), alpha=float(alpha), n_boot=int(n_boot),
        n_perm=int(n_perm), seed=int(seed), n_words_total=W, n_cut=n_cut_total,
        cut_fraction=n_cut_total / (W + n_cut_total) if W + n_cut_total else math.nan,
        correct=d_cor, misspelled=d_mis, words=d_words,
        error_rate=ref["error_rate"],
        error_rate_reason=None if W else "no words",
        rate_by_length=ref["rate_by_length"], rate_by_position=ref["rate_by_position"],
        excess_correct=decomp["correct"]["excess"],
        excess_misspelled=decomp["misspelled"]["excess"],
        cascade_rr=cas["rr"],
        decomposition=decomp, q_curve=_q_columns(qc, windows, null, alpha), cascade=cas,
        counts=dict(correct=n_cor, misspelled=n_mis),
    )
    return jsonable(out)


def _word_table(word_sample, word_start, word_len, word_mis, n_samples, length):
    """The word arrays of :func:`analyze_words` as flat int64 / bool arrays, checked; N and L as ints."""
    samp = np.asarray(word_sample, dtype=np.int64).ravel()
    start = np.asarray(word_start, dtype=np.int64).ravel()
    wlen = np.asarray(word_len, dtype=np.int64).ravel()
    mis = np.asarray(word_mis, dtype=bool).ravel()
    N, L = int(n_samples), int(length)
    if N < 2:
        raise ValueError(f"analyze needs at least 2 samples, got {N}")
    if not (samp.size == start.size == wlen.size == mis.size):
        raise ValueError("word arrays must have the same length")
    if samp.size and np.any(np.diff(samp) < 0):
        raise ValueError("word_sample must be non-decreasing")
    return samp, start, wlen, mis, N, L


def _decomposition(d_cor, d_mis, d_words, ref, ren, null, W, L, alpha, n_perm, seed) -> dict:
    """The ``decomposition`` entry of :func:`analyze`: the word total against its renewal reference,
    and F_correct / F_misspelled against the independent-error reference and the permutation null."""
    empty = np.zeros(0)
    decomp = {"words": dict(fano=d_words["fano"], renewal_reference=ren["cv2"],
                            mean_spacing=ren["mean_spacing"], n_spacings=ren["n_spacings"],
                            verdict=d_words["verdict"], p_value=d_words["p_value"])}
    for name, fobs, fref in (("correct", d_cor["fano"], ref["fano_ref_correct"]),
                             ("misspelled", d_mis["fano"], ref["fano_ref_misspelled"])):
        arr = null[f"fano_{name}"] if null is not None else empty
        decomp[name] = _null_summary(fobs, arr, fref, alpha, "clustered", "anti-clustered",
                                     ref[f"log_se_{name}"])
        decomp[name].update(residual_ratio=ref["residual_ratio"][0], log_residual_se=ref["residual_ratio"][1])
        if null is None:
            decomp[name].update(verdict="undefined",
                                reason="no words" if not W else "permutation null disabled (n_perm = 0)")
        elif decomp[name]["reason"] is None and fobs == fobs and not fref > 0:
            decomp[name]["reason"] = "closed-form reference undefined"
    decomp.update(n_perm=int(n_perm), perm_seed=[int(seed), 1], length_bins=LENGTH_BINS,
                  position_edges=position_edges(L))
    return decomp


def _q_columns(qc: dict, windows: list, null, alpha: float) -> dict:
    """The ``q_curve`` entry of :func:`analyze`: Q(w) as columns, with the permutation null's band."""
    empty = np.zeros(0)
    q_cols = {"windows": windows}
    for key in ("q_correct", "q_misspelled", "fano_correct", "fano_misspelled", "n_windows"):
        q_cols[key] = [qc[w][key] for w in windows]
    for name in ("correct", "misspelled"):
        band = {"lo": [], "median": [], "hi": []}
        for w in windows:
            f = null["windows"][w][f"fano_{name}"] if null is not None else empty
            f = f[np.isfinite(f)]
            lo, med, hi = (np.quantile(f, [alpha / 2, 0.5, 1 - alpha / 2]) - 1.0 if f.size
                           else (math.nan,) * 3)
            band["lo"].append(lo)
            band["median"].append(med)
            band["hi"].append(hi)
        q_cols[f"null_q_{name}"] = band
    return q_cols


def _cascade_with_null(samp, mis, N, start, alpha, n_boot, n_perm, seed) -> dict:
    """The ``cascade`` entry of :func:`analyze`: the cascade RR with its within-sample null."""
    cas = cascade(samp, mis, N, n_boot=n_boot, seed=seed + 2)
    if cas["reason"] is None and n_perm and n_perm > 0:
        rr_null = cascade_null(samp, mis, N, n_perm, seed, word_start=start)
        s = _null_summary(cas["rr"], rr_null, math.nan, alpha, "cascade", "anti-cascade")
        cas.update(null_median=s["null_median"], null_band=s["null_band"], p_value=s["p_value"],
                   n_null=s["n_null"], verdict=s["verdict"], log_null_sd=s["log_null_sd"], z=s["z"])
        if s["reason"]:
            cas["reason"] = s["reason"]
    else:
        cas.update(null_median=math.nan, null_band=[math.nan, math.nan], p_value=math.nan,
                   n_null=0, verdict="undefined", log_null_sd=math.nan, z=math.nan)
        if cas["reason"] is None:
            cas["reason"] = "permutation null disabled (n_perm = 0)"
    cas["perm_seed"] = [int(seed), 2]
    return cas


def analyze(texts: Sequence[str], lexicon, prompt_len: int, length: int, margin: int = 16,
            alpha: float = 0.05, n_boot: int = 2000, n_perm: int = 1000, seed: int = 0,
            windows: Sequence[int] | None = None) -> dict:
    """All spelling statistics of one checkpoint's samples (docs/method.md, Spelling).

    Parameters
    ----------
    texts : sequence of str
        N samples, each the prompt, ``length`` counted characters and ``margin`` further
        generated characters (a shorter text is accepted: its cut words are counted).
    lexicon : set of str
    prompt_len : int
    length : int
        Counted characters L.
    margin : int, optional
        M (default 16), recorded; the rule itself only needs the texts.
    alpha, n_boot, n_perm, seed, windows : optional
        See `analyze_words`.

    Returns
    -------
    dict
        JSON-serialisable (Python types only; undefined values are None with a ``reason``):

        ``n_samples``, ``prompt_len``, ``length``, ``margin``, ``alpha``, ``n_boot``,
        ``n_perm``, ``seed``, ``n_words_total``, ``n_cut``, ``cut_fraction``,
        ``n_short_texts`` (texts shorter than prompt + L + M);
        ``correct``, ``misspelled``, ``words``: `dispersion` dicts of the per-sample counts;
        ``error_rate`` (+ ``error_rate_reason``); ``rate_by_length``, ``rate_by_position`` (see
        `independent_reference`); ``excess_correct``, ``excess_misspelled`` (F / F_ref,
        closed form); ``cascade_rr``;
        ``decomposition``: ``words`` {``fano``, ``renewal_reference`` (CV^2 of the word-start
        spacing), ``mean_spacing``, ``n_spacings``, ``verdict``, ``p_value``}, and for
        ``correct`` / ``misspelled`` {``fano``, ``fano_ref`` (closed form), ``excess`` =
        F / F_ref, ``null_median``, ``null_band`` [alpha/2, 1 - alpha/2 quantiles],
        ``excess_null`` = F / null median with ``excess_null_ci`` (exp(log excess +- z SE)) and
        ``log_excess_se`` (`log_excess_se`), ``log_null_sd`` (SD of log F over the
        permutations), ``z`` = log excess / log_null_sd, ``p_value`` (two-sided permutation),
        ``n_null``, ``verdict`` ("clustered" / "anti-clustered" / "independent" / "undefined"),
        ``reason``, ``residual_ratio`` and ``log_residual_se`` (`residual_ratio`)}, ``n_perm``,
        ``perm_seed``, ``length_bins``, ``position_edges``;
        ``q_curve``: columns ``windows``, ``q_correct``, ``q_misspelled``,
        ``fano_correct``, ``fano_misspelled``, ``n_windows`` and ``null_q_correct`` /
        ``null_q_misspelled`` = {``lo``, ``median``, ``hi``} (the permutation null's band of
        Q, aligned with ``windows``);
        ``cascade``: `cascade` dict plus ``null_median``, ``null_band``, ``p_value``
        (two-sided, within-sample, within-position permutation), ``log_null_sd`` (SD of log RR
        over the permutations), ``z`` = log(RR / null median) / log_null_sd, ``n_null``,
        ``verdict`` ("cascade" /
        "anti-cascade" / "independent" / "undefined"), ``perm_seed``;
        ``counts``: ``{"correct": [...], "misspelled": [...]}`` per sample.

    Raises
    ------
    ValueError
        Fewer than 2 samples.
    """
    if len(texts) < 2:
        raise ValueError(f"analyze needs at least 2 samples, got {len(texts)}")
    sc = score_samples(texts, lexicon, prompt_len, length)
    avail = np.clip(sc.text_lengths - int(prompt_len), 0, int(length))
    out = analyze_words(sc.word_sample, sc.word_start - int(prompt_len), sc.word_len, sc.word_mis,
                        len(sc), length, margin=margin, n_cut=sc.n_cut, prompt_len=prompt_len,
                        alpha=alpha, n_boot=n_boot, n_perm=n_perm, seed=seed, windows=windows,
                        sample_length=None if np.all(avail == int(length)) else avail)
    out["n_short_texts"] = int(np.count_nonzero(
        sc.text_lengths < int(prompt_len) + int(length) + int(margin or 0)))
    return out
