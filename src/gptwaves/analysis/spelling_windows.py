"""The counting-window curve Q(w): spelling counts in windows of w counted characters
(docs/method.md, Spelling).

Pure functions on the word table of one checkpoint (see :func:`gptwaves.analysis.spelling.analyze_words`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .spelling_dispersion import _fano
from .spelling_nulls import _cells

__all__ = ["window_counts", "default_windows", "q_curve"]


def window_counts(word_sample, word_start, word_mis, n_samples: int, length: int, w: int,
                  sample_length=None) -> dict:
    """Correct / misspelled word counts per non-overlapping window of w counted characters.

    Parameters
    ----------
    word_sample, word_start, word_mis : array_like, shape (W,)
        Per word: sample index, start offset in the counted part (0 = first counted
        character), misspelling flag.
    n_samples, length : int
        N and the counted characters L.
    w : int
        Window width in characters (>= 1).
    sample_length : array_like of int, optional
        Counted characters available per sample (default L): a window must lie inside it.

    Returns
    -------
    dict
        ``correct``, ``misspelled``: int64 arrays, one entry per window, samples
        concatenated (sample-major); ``n_windows``.

    Notes
    -----
    Window k covers counted characters ``[k w, (k+1) w)``, ``k < L // w``; a word belongs
    to the window where it starts (the margin rule makes this exact: no window loses its
    last word to the sample end).
    """
    if w < 1:
        raise ValueError("window width must be >= 1")
    mis = np.asarray(word_mis, dtype=bool)
    if int(length) // int(w) == 0 or n_samples == 0:
        z = np.zeros(0, dtype=np.int64)
        return dict(correct=z, misspelled=z.copy(), n_windows=0)
    cell, nc, keep = _cells(word_sample, word_start, n_samples, length, w, sample_length)
    ok = cell >= 0
    all_c = np.bincount(cell[ok], minlength=nc)
    mis_c = np.bincount(cell[ok & mis], minlength=nc)
    return dict(correct=(all_c - mis_c)[keep].astype(np.int64),
                misspelled=mis_c[keep].astype(np.int64), n_windows=int(keep.sum()))


def default_windows(length: int) -> list[int]:
    """Window widths 16, 32, 64, ... up to `length` (``[length]`` if length < 16)."""
    length = int(length)
    ws = []
    w = 16
    while w <= length:
        ws.append(w)
        w *= 2
    if not ws and length >= 1:
        ws = [length]
    return ws


def q_curve(word_sample, word_start, word_mis, n_samples: int, length: int,
            windows: Sequence[int] | None = None, sample_length=None) -> dict:
    """Mandel Q of correct / misspelled counts as a function of window width.

    Returns
    -------
    dict
        ``{w: {"q_correct", "q_misspelled", "fano_correct", "fano_misspelled",
        "n_windows"}}`` with int keys; NaN where undefined (fewer than 2 windows or zero
        mean).
    """
    if windows is None:
        windows = default_windows(length)
    out = {}
    for w in windows:
        wc = window_counts(word_sample, word_start, word_mis, n_samples, length, int(w), sample_length)
        fc, fm = _fano(wc["correct"]), _fano(wc["misspelled"])
        out[int(w)] = dict(q_correct=fc - 1.0, q_misspelled=fm - 1.0, fano_correct=fc,
                           fano_misspelled=fm, n_windows=wc["n_windows"])
    return out
