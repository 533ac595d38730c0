"""What channels respond to: Cohen's d of character classes, channel labels and event-triggered
averages (docs/method.md, Coherence and Coherence against its floors).

Pure functions on numpy arrays; the data conventions are those of
:mod:`gptwaves.analysis.wave_arrays`.
"""

from __future__ import annotations

import string
from collections import OrderedDict
from typing import Callable

import numpy as np

from .wave_arrays import _as_mask, _as_waves, _bounds, _center0

__all__ = ["CHAR_CLASSES", "class_indicators", "class_event_counts", "cohens_d", "channel_function",
           "event_triggered_average"]

_VOWELS = frozenset("aeiouAEIOU")
_ASCII_LETTERS = frozenset(string.ascii_letters)
_PUNCT = frozenset(string.punctuation)

#: Character classes, in a fixed order: name -> predicate on one character.
#: ``vowel`` = ASCII a, e, i, o, u (either case); ``consonant`` = any other ASCII
#: letter; ``punctuation`` = :data:`string.punctuation`; ``uppercase`` =
#: ``str.isupper``.
CHAR_CLASSES: "OrderedDict[str, Callable[[str], bool]]" = OrderedDict(
    [
        ("space", lambda c: c == " "),
        ("newline", lambda c: c == "\n"),
        ("punctuation", lambda c: c in _PUNCT),
        ("uppercase", lambda c: c.isupper()),
        ("vowel", lambda c: c in _VOWELS),
        ("consonant", lambda c: c in _ASCII_LETTERS and c not in _VOWELS),
    ]
)


def class_indicators(chars, classes=None) -> np.ndarray:
    """Boolean indicators of character classes.

    Parameters
    ----------
    chars : array_like of str, shape (S, T)
    classes : sequence of str, optional
        Names from :data:`CHAR_CLASSES` (default all, in order).

    Returns
    -------
    ind : ndarray of bool, shape (n_classes, S, T)
    """
    chars = np.asarray(chars)
    names = list(CHAR_CLASSES) if classes is None else list(classes)
    uniq, inv = np.unique(chars, return_inverse=True)
    inv = inv.reshape(chars.shape)
    table = np.array([[bool(CHAR_CLASSES[n](str(u))) for u in uniq] for n in names], dtype=bool)
    if uniq.size == 0:
        return np.zeros((len(names),) + chars.shape, dtype=bool)
    return table[:, inv]


def _cohens_d_centered(xc0: np.ndarray, ind: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Cohen's d (E, C) for indicator sets ind (E, S, T) on centred, zero-filled waves."""
    C = xc0.shape[-1]
    X = xc0.reshape(-1, C)
    mflat = mask.reshape(-1)
    N = float(mflat.sum())
    I = (ind.reshape(ind.shape[0], -1) & mflat[None, :]).astype(np.float64)
    n1 = I.sum(axis=1)[:, None]
    n0 = N - n1
    X2 = X * X
    S1, Q1 = I @ X, I @ X2
    Sall, Qall = X.sum(axis=0)[None, :], X2.sum(axis=0)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = S1 / n1
        m0 = (Sall - S1) / n0
        ss = (Q1 - n1 * m1**2) + ((Qall - Q1) - n0 * m0**2)
        sp = np.sqrt(np.maximum(ss, 0.0) / (N - 2))
        d = (m1 - m0) / sp
    bad = (n1 < 2) | (n0 < 2) | ~(sp > 0)
    return np.where(bad, np.nan, d)


def cohens_d(x, ind, mask=None) -> np.ndarray:
    """Cohen's d of every channel between steps in and out of each set.

    Values are centred per sample (see :func:`center`) and pooled over masked
    steps. ``d = (mean_in - mean_out) / s_p``, ``s_p`` the pooled standard
    deviation with ddof 1 in each group.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
    ind : array_like of bool, shape (S, T) or (E, S, T)
    mask : array_like of bool, shape (S, T), optional

    Returns
    -------
    d : ndarray, shape (C,) or (E, C)
        NaN when a group has fewer than 2 steps or the pooled SD is 0.
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    ind = np.asarray(ind, dtype=bool)
    single = ind.ndim == 2
    d = _cohens_d_centered(_center0(x, mask), ind[None] if single else ind, mask)
    return d[0] if single else d


def _label_channels(d_cur, d_next, classes, threshold):
    both = np.concatenate([d_cur, d_next], axis=0)  # (2E, C)
    keys = list(classes) + ["next:" + c for c in classes]
    score = np.where(np.isnan(both), -np.inf, np.abs(both))
    best = score.argmax(axis=0)
    C = both.shape[1]
    best_d = both[best, np.arange(C)]
    best_key = np.array([keys[b] if np.isfinite(score[b, c]) else "" for c, b in enumerate(best)], dtype=object)
    strong = np.abs(np.nan_to_num(best_d)) >= threshold
    label = np.where(strong, best_key, "").astype(object)
    return label, best_d, best_key


def class_event_counts(chars, next_chars, mask) -> tuple[np.ndarray, np.ndarray]:
    """Number of masked steps in and out of each class, current then next character.

    Returns
    -------
    n_in, n_out : ndarray of int, shape (2 * n_classes,)
        In the order of :data:`CHAR_CLASSES` for c_t, then for c_{t+1}.
    """
    mask = np.asarray(mask, bool)
    ind = np.concatenate([class_indicators(chars), class_indicators(next_chars)], axis=0)
    n_in = (ind & mask[None]).sum(axis=(1, 2))
    return n_in.astype(int), (int(mask.sum()) - n_in).astype(int)


def channel_function(x, chars, next_chars, mask=None, threshold=1.0, min_events=30) -> dict:
    """Functional labels of channels from Cohen's d of character classes.

    For every class of :data:`CHAR_CLASSES`, Cohen's d between masked steps
    whose current character c_t is in the class and the other masked steps
    (``d_current``), and likewise for the next character c_{t+1} (``d_next``).
    Values are centred per sample first.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
    chars, next_chars : array_like of str, shape (S, T)
    mask : array_like of bool, shape (S, T), optional
    threshold : float, optional
        A channel is labelled when its strongest ``|d|`` is at least this.
    min_events : int, optional
        A class (current or next) takes part in the labels only with at least
        this many masked steps inside and outside it (docs/method.md, Coherence against its floors; default 30).

    Returns
    -------
    dict
        ``classes``: list of class names; ``d_current``, ``d_next``: arrays
        (n_classes, C), NaN when a group has < 2 steps or no spread;
        ``label``: object array (C,) with the class name (current character,
        e.g. ``"space"``) or ``"next:<class>"`` (next character) of the largest
        ``|d|`` over both, or ``""`` when it is below ``threshold``;
        ``best_key``: same without the threshold; ``best_d``: signed d of that
        key (NaN when all are NaN), both among the eligible classes only;
        ``n_in``, ``n_out`` (2 * n_classes,): steps in and out of each class
        (current, then next); ``eligible`` (2 * n_classes,) bool.
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    return _channel_function_c(_center0(x, mask), chars, next_chars, mask, threshold, min_events)


def _channel_function_c(xc0, chars, next_chars, mask, threshold, min_events=30):
    classes = list(CHAR_CLASSES)
    d_cur = _cohens_d_centered(xc0, class_indicators(chars, classes), mask)
    d_next = _cohens_d_centered(xc0, class_indicators(next_chars, classes), mask)
    n_in, n_out = class_event_counts(chars, next_chars, mask)
    eligible = (n_in >= int(min_events)) & (n_out >= int(min_events))
    E = len(classes)
    lc = np.where(eligible[:E, None], d_cur, np.nan)
    ln = np.where(eligible[E:, None], d_next, np.nan)
    label, best_d, best_key = _label_channels(lc, ln, classes, threshold)
    return {
        "classes": classes,
        "d_current": d_cur,
        "d_next": d_next,
        "label": label,
        "best_key": best_key,
        "best_d": best_d,
        "n_in": n_in,
        "n_out": n_out,
        "eligible": eligible,
        "min_events": int(min_events),
    }


def _eta(xv: np.ndarray, events: np.ndarray, mask: np.ndarray, window: int):
    """xv (S,T,C) float64; events (E,S,T) -> (E, 2W+1, C), counts (E,)."""
    S, T, C = xv.shape
    W = int(window)
    E = events.shape[0]
    out = np.full((E, 2 * W + 1, C), np.nan)
    if T < 2 * W + 1:
        return out, np.zeros(E, dtype=int)
    start, stop = _bounds(mask)
    t = np.arange(T)
    inside = (t[None, :] - W >= start[:, None]) & (t[None, :] + W < stop[:, None])
    valid = events & inside[None] & mask[None]
    V = valid[:, :, W : T - W].reshape(E, -1).astype(np.float64)
    counts = V.sum(axis=1)
    if not counts.any():
        return out, counts.astype(int)
    for j, o in enumerate(range(-W, W + 1)):
        Xo = xv[:, W + o : T - W + o, :].reshape(-1, C)
        out[:, j, :] = V @ Xo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(counts[:, None, None] > 0, out / counts[:, None, None], np.nan)
    return out, counts.astype(int)


def event_triggered_average(x, events, window=8, mask=None, centered=True):
    """Mean waveform of every channel in a window of +-W steps around events.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
    events : array_like of bool, shape (S, T) or (E, S, T)
        Event steps (one or several event types).
    window : int, optional
        Half-width W (default 8).
    mask : array_like of bool, shape (S, T), optional
        Only events whose whole window lies inside the masked block of their
        sample are used; others (too close to the edges) are skipped.
    centered : bool, optional
        Average the per-sample centred waves (default) or the raw waves.

    Returns
    -------
    eta : ndarray, shape (2W+1, C) or (E, 2W+1, C)
        Row ``W + o`` is the mean of ``x[s, t + o]`` over used events at
        ``(s, t)``; NaN when no event is used.
    counts : int or ndarray of int, shape (E,)
        Number of events used.
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    events = np.asarray(events, dtype=bool)
    single = events.ndim == 2
    ev = events[None] if single else events
    xv = _center0(x, mask) if centered else x.astype(np.float64)
    eta, counts = _eta(xv, ev, mask, window)
    return (eta[0], int(counts[0])) if single else (eta, counts)
