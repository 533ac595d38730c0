"""Coherence analysis of hidden-state waves (docs/method.md, Coherence).

Pure functions on numpy arrays; numpy and scipy only (no torch, no file I/O).

Data conventions
----------------
x : float array, shape (S, T, C)
    Waves of one tap: S samples, T generation steps, C channels.
chars, next_chars : array of dtype '<U1', shape (S, T)
    The current input character c_t and the sampled next character c_{t+1}.
mask : bool array, shape (S, T), optional
    True for the steps to analyse (generated steps). In every sample the True
    steps must form one contiguous block (normally: False for the prompt, then
    True to the end). A sample without True steps is ignored. ``None`` means
    all steps.

Conventions decided here (the caller should know)
-------------------------------------------------
* All statistics use values centred per sample and channel (the mean over that
  sample's masked steps is subtracted), pooled over the masked steps of all
  samples (docs/method.md, Coherence).
* A channel is *constant* when its centred pooled standard deviation is at most
  ``1e-10`` times its largest absolute raw value (or exactly zero). Its
  correlation with other channels is defined as 0 and with itself as 1.
* ACFs are the biased estimator (statsmodels ``acf(adjusted=False)``) of the
  contiguous masked part of each sample, averaged over samples. A series that is
  constant within a sample has no ACF and is left out of that channel's average
  (NaN if it is constant in every sample).
"""

from __future__ import annotations

import string
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np
from scipy import fft as _fft
from scipy import signal as _signal
from scipy.cluster import hierarchy as _hier
from scipy.spatial.distance import squareform as _squareform

from ..jsonable import finite_or_none

from . import coherence_nulls as _nulls
from .coherence_nulls import WavesInputError

__all__ = [
    "CHAR_CLASSES",
    "center",
    "correlation_matrix",
    "order_parameters",
    "autocorrelation",
    "dominant_period_acf",
    "welch_psd",
    "period_from_psd",
    "dominant_period_psd",
    "space_reference",
    "acf_similarity",
    "silhouette_score",
    "cluster_channels",
    "class_indicators",
    "class_event_counts",
    "cohens_d",
    "channel_function",
    "event_triggered_average",
    "matrix_similarity",
    "acf_profile_similarity",
    "compare_recordings",
    "analyze_tap",
    "best_silhouette",
    "coherence_with_nulls",
    "oscillations",
    "tap_summary",
    "coherence_summary",
    "probe_summary",
    "WavesInputError",
]

_CONST_RTOL = 1e-10

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


# ----------------------------------------------------------------------------
# mask helpers
# ----------------------------------------------------------------------------


def _as_waves(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"waves must have shape (S, T, C), got {x.shape}")
    return x


def _as_mask(mask, shape2) -> np.ndarray:
    if mask is None:
        return np.ones(shape2, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(shape2):
        raise ValueError(f"mask shape {mask.shape} does not match (S, T) = {tuple(shape2)}")
    return mask


def _bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample [start, stop) of the contiguous True block; empty -> start == stop."""
    S, T = mask.shape
    has = mask.any(axis=1)
    start = np.where(has, mask.argmax(axis=1), 0)
    stop = np.where(has, T - mask[:, ::-1].argmax(axis=1), 0)
    if np.any(mask.sum(axis=1) != stop - start):
        raise ValueError("mask must hold one contiguous block of True steps per sample")
    return start, stop


def _groups(mask: np.ndarray):
    """Yield (sample_indices, start, stop) for samples sharing the same masked block."""
    start, stop = _bounds(mask)
    keys = np.stack([start, stop], axis=1)
    for a, b in np.unique(keys, axis=0):
        if b > a:
            yield np.flatnonzero((start == a) & (stop == b)), int(a), int(b)


def _center0(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-sample centred float64 waves with zeros outside the mask."""
    m = mask[:, :, None]
    xf = np.where(m, x, 0.0).astype(np.float64, copy=False)
    n = np.maximum(mask.sum(axis=1), 1).astype(np.float64)[:, None, None]
    xf -= xf.sum(axis=1, keepdims=True) / n
    xf *= m
    return xf


def _absmax(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Largest absolute raw value of each channel over masked steps."""
    if not mask.any():
        return np.zeros(x.shape[-1])
    return np.abs(x[mask]).max(axis=0).astype(np.float64)


# ----------------------------------------------------------------------------
# 1-3: centring, correlation, order parameters
# ----------------------------------------------------------------------------


def center(x, mask=None, fill=None) -> np.ndarray:
    """Subtract each sample's per-channel mean over its masked steps.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
        Waves.
    mask : array_like of bool, shape (S, T), optional
        Steps that define the mean. Default: all steps.
    fill : float or None, optional
        Value written at steps outside the mask. ``None`` (default) subtracts
        the mean there too.

    Returns
    -------
    xc : ndarray of float64, shape (S, T, C)
        Centred waves. A sample without masked steps becomes NaN (or ``fill``).
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    xf = x.astype(np.float64)
    n = mask.sum(axis=1).astype(np.float64)[:, None, None]
    s = np.where(mask[:, :, None], xf, 0.0).sum(axis=1, keepdims=True)
    mean = np.divide(s, n, out=np.full(s.shape, np.nan), where=n > 0)
    xc = xf - mean
    if fill is not None:
        xc[~mask] = fill
    return xc


def _corr_from_centered(xc0: np.ndarray, absmax: np.ndarray, n: int) -> np.ndarray:
    C = xc0.shape[-1]
    X = xc0.reshape(-1, C)
    cov = X.T @ X
    var = np.diag(cov).copy()
    n = max(int(n), 1)
    sd = np.sqrt(np.maximum(var, 0.0) / n)
    const = (var <= 0) | (sd <= _CONST_RTOL * absmax)
    inv = np.zeros(C)
    inv[~const] = 1.0 / np.sqrt(var[~const])
    R = cov * inv[:, None] * inv[None, :]
    np.clip(R, -1.0, 1.0, out=R)
    np.fill_diagonal(R, 1.0)
    return R


def correlation_matrix(x, mask=None) -> np.ndarray:
    """Cross-channel Pearson correlation of per-sample centred, pooled waves.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
        Waves.
    mask : array_like of bool, shape (S, T), optional
        Steps to pool (default all).

    Returns
    -------
    R : ndarray, shape (C, C)
        Pearson correlation over all masked steps of all samples, after
        subtracting each sample's per-channel mean. Constant channels (see the
        module notes) get 0 off the diagonal and 1 on it; no NaN is produced.
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    return _corr_from_centered(_center0(x, mask), _absmax(x, mask), mask.sum())


def order_parameters(R) -> dict:
    """Coherence order parameters of a correlation matrix.

    Parameters
    ----------
    R : array_like, shape (C, C)
        Correlation matrix (NaN entries are treated as 0 off the diagonal).

    Returns
    -------
    dict
        ``mean_abs_corr``: mean of ``|R_ij|`` over i != j (NaN if C < 2);
        ``lambda_max_share``: largest eigenvalue / C (1 for fully coherent,
        1/C for independent channels);
        ``participation_ratio``: ``(sum l)^2 / sum l^2`` over eigenvalues
        (effective number of independent modes, between 1 and C).
    """
    R = np.array(R, dtype=np.float64)
    C = R.shape[0]
    R = np.nan_to_num(R, nan=0.0)
    R = 0.5 * (R + R.T)
    off = ~np.eye(C, dtype=bool)
    mac = float(np.abs(R[off]).mean()) if C > 1 else float("nan")
    lam = np.linalg.eigvalsh(R)
    s2 = float(np.sum(lam**2))
    return {
        "mean_abs_corr": mac,
        "lambda_max_share": float(lam[-1] / C),
        "participation_ratio": float(np.sum(lam) ** 2 / s2) if s2 > 0 else float("nan"),
    }


# ----------------------------------------------------------------------------
# 4-6: autocorrelation, periods, text reference
# ----------------------------------------------------------------------------


def _acf_block(xs: np.ndarray, nlags: int) -> np.ndarray:
    """Biased ACF of xs (S', n, C) along axis 1 -> (S', C, nlags+1); NaN if constant."""
    Sg, n, C = xs.shape
    xs = np.ascontiguousarray(np.moveaxis(xs, 1, 2), dtype=np.float64)  # (S', C, n)
    absmax = np.abs(xs).max(axis=2)
    xs = xs - xs.mean(axis=2, keepdims=True)
    nfft = _fft.next_fast_len(n + nlags, real=True)
    F = _fft.rfft(xs, nfft, axis=2, workers=-1)
    ac = _fft.irfft(F.real**2 + F.imag**2, nfft, axis=2, workers=-1)[:, :, : nlags + 1]
    if nlags >= n:
        ac[:, :, n:] = 0.0
    c0 = ac[:, :, 0].copy()
    const = (c0 <= 0) | (np.sqrt(np.maximum(c0, 0) / n) <= _CONST_RTOL * absmax)
    c0[const] = 1.0
    ac /= c0[:, :, None]
    ac[const] = np.nan
    return ac


def autocorrelation(x, nlags=64, mask=None, per_sample=False) -> np.ndarray:
    """Biased auto-correlation function of every channel, averaged over samples.

    Same estimator as ``statsmodels.tsa.stattools.acf(adjusted=False)``: each
    sample's contiguous masked series is demeaned, its autocovariance is
    divided by the series length and normalised by lag 0. Computed for all
    samples and channels at once by a zero-padded FFT (no circular wrap).

    Parameters
    ----------
    x : array_like, shape (S, T, C)
        Waves.
    nlags : int, optional
        Largest lag K (default 64). Lags at or beyond a series' length are 0.
    mask : array_like of bool, shape (S, T), optional
        Contiguous block of steps to use per sample (default all).
    per_sample : bool, optional
        If True return the per-sample ACFs instead of their mean.

    Returns
    -------
    acf : ndarray
        Shape (C, nlags+1) (mean over samples) or (S, C, nlags+1) if
        ``per_sample``. A series constant within a sample gives NaN and is left
        out of the mean; a channel constant in every sample is NaN.
    """
    x = _as_waves(x)
    nlags = int(nlags)
    if nlags < 0:
        raise ValueError("nlags must be >= 0")
    mask = _as_mask(mask, x.shape[:2])
    S, T, C = x.shape
    if per_sample:
        out = np.full((S, C, nlags + 1), np.nan)
        for idx, a, b in _groups(mask):
            out[idx] = _acf_block(x[idx, a:b], nlags)
        return out
    total = np.zeros((C, nlags + 1))
    count = np.zeros(C)
    for idx, a, b in _groups(mask):
        ac = _acf_block(x[idx, a:b], nlags)
        ok = ~np.isnan(ac[:, :, 0])
        total += np.where(ok[:, :, None], ac, 0.0).sum(axis=0)
        count += ok.sum(axis=0)
    out = np.full((C, nlags + 1), np.nan)
    good = count > 0
    out[good] = total[good] / count[good, None]
    return out


def dominant_period_acf(acf, rel_height=0.9) -> tuple[np.ndarray, np.ndarray]:
    """Dominant period and oscillation strength from ACF curves.

    For each curve the first zero crossing is the first lag >= 1 with
    ``acf <= 0``. Candidates are the interior local maxima after it
    (``acf[k-1] < acf[k] >= acf[k+1]``) with positive height. The period is
    the lag of the earliest candidate whose height is at least ``rel_height``
    times the highest candidate's, and the strength is its height. With
    ``rel_height=1`` this is simply the highest peak; the default 0.9 avoids
    octave errors, where a multiple of the period wins by sampling noise
    (for a clean oscillation the biased ACF decays, so the first peak is the
    highest anyway).

    Parameters
    ----------
    acf : array_like, shape (C, K+1) or (K+1,)
        ACF curves starting at lag 0.
    rel_height : float, optional
        Fraction of the highest peak an earlier peak needs (default 0.9).

    Returns
    -------
    periods : ndarray of float, shape (C,)
        Lag of the peak; NaN when the curve never crosses zero, has no positive
        peak after the crossing, or is NaN.
    strengths : ndarray of float, shape (C,)
        Height of that peak; 0 where the period is NaN.
    """
    a = np.atleast_2d(np.asarray(acf, dtype=np.float64))
    C, L = a.shape
    periods = np.full(C, np.nan)
    strengths = np.zeros(C)
    if L < 4:
        return periods, strengths
    a = np.where(np.isnan(a), 0.0, a)  # NaN curves: no crossing-and-peak found below
    lags = np.arange(L)
    nonpos = (a <= 0) & (lags >= 1)
    has_cross = nonpos.any(axis=1)
    first = np.where(has_cross, nonpos.argmax(axis=1), L)
    peak = np.zeros_like(a, dtype=bool)
    peak[:, 1:-1] = (a[:, 1:-1] > a[:, :-2]) & (a[:, 1:-1] >= a[:, 2:])
    valid = peak & (lags[None, :] > first[:, None]) & (a > 0)
    score = np.where(valid, a, -np.inf)
    top = score.max(axis=1)
    good = valid & (a >= float(rel_height) * top[:, None])
    best = good.argmax(axis=1)
    found = good[np.arange(C), best] & has_cross
    periods[found] = best[found]
    strengths[found] = a[np.arange(C), best][found]
    return periods, strengths


def welch_psd(x, mask=None, nperseg=256) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density of every channel, averaged over samples.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
        Waves (sampling rate 1 per step).
    mask : array_like of bool, shape (S, T), optional
        Contiguous block of steps per sample (default all).
    nperseg : int, optional
        Segment length (Hann window, 50% overlap, constant detrend); capped at
        the shortest masked series.

    Returns
    -------
    freqs : ndarray, shape (F,)
        Frequencies in cycles per step.
    psd : ndarray, shape (C, F)
        Mean PSD over samples.
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    groups = list(_groups(mask))
    if not groups:
        raise ValueError("mask selects no steps")
    nseg = int(min(int(nperseg), min(b - a for _, a, b in groups)))
    total = None
    count = 0
    freqs = None
    for idx, a, b in groups:
        xs = np.moveaxis(x[idx, a:b], 1, 2).astype(np.float64)  # (S', C, n)
        freqs, p = _signal.welch(xs, fs=1.0, nperseg=nseg, axis=-1, detrend="constant")
        total = p.sum(axis=0) if total is None else total + p.sum(axis=0)
        count += len(idx)
    return freqs, total / count


def period_from_psd(freqs, psd, interpolate=True) -> np.ndarray:
    """Period (steps) of the highest non-DC peak of each PSD row.

    Parameters
    ----------
    freqs : array_like, shape (F,)
        Frequencies (cycles per step), ``freqs[0] == 0``.
    psd : array_like, shape (C, F)
        Power spectral densities.
    interpolate : bool, optional
        Refine the peak frequency by a parabola through the log power of the
        peak bin and its two neighbours (default True).

    Returns
    -------
    periods : ndarray, shape (C,)
        ``1 / f_peak``; NaN for a channel with no power.
    """
    f = np.asarray(freqs, dtype=np.float64)
    p = np.atleast_2d(np.asarray(psd, dtype=np.float64))
    C, F = p.shape
    out = np.full(C, np.nan)
    if F < 2:
        return out
    k = 1 + p[:, 1:].argmax(axis=1)
    rows = np.arange(C)
    fpk = f[k].copy()
    df = f[1] - f[0]
    if interpolate:
        inner = (k > 1) & (k < F - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            lp = np.log(np.maximum(p, np.finfo(float).tiny))
            al = lp[rows, np.clip(k - 1, 0, F - 1)]
            be = lp[rows, k]
            ga = lp[rows, np.clip(k + 1, 0, F - 1)]
            den = al - 2 * be + ga
            delta = np.where(inner & (den < 0), 0.5 * (al - ga) / den, 0.0)
        fpk = fpk + np.clip(np.nan_to_num(delta), -0.5, 0.5) * df
    has = p[rows, k] > 0
    out[has] = 1.0 / fpk[has]
    return out


def dominant_period_psd(x, mask=None, nperseg=256, interpolate=True) -> np.ndarray:
    """Per-channel period of the Welch PSD peak (DC bin excluded).

    See :func:`welch_psd` and :func:`period_from_psd`.

    Returns
    -------
    periods : ndarray, shape (C,)
    """
    freqs, psd = welch_psd(x, mask=mask, nperseg=nperseg)
    return period_from_psd(freqs, psd, interpolate=interpolate)


def space_reference(chars, mask=None, nlags=64) -> np.ndarray:
    """ACF of the indicator series "c_t is a space" (the word rhythm of the text).

    Same estimator as :func:`autocorrelation`; samples without any space (or
    only spaces) in the masked block are left out.

    Parameters
    ----------
    chars : array_like of str, shape (S, T)
    mask : array_like of bool, shape (S, T), optional
    nlags : int, optional

    Returns
    -------
    ref : ndarray, shape (nlags+1,)
    """
    chars = np.asarray(chars)
    ind = (chars == " ").astype(np.float64)[:, :, None]
    return autocorrelation(ind, nlags=nlags, mask=mask)[0]


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between matching rows of a and b (broadcasting)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    am = a - a.mean(axis=-1, keepdims=True)
    bm = b - b.mean(axis=-1, keepdims=True)
    num = (am * bm).sum(axis=-1)
    den = np.sqrt((am**2).sum(axis=-1) * (bm**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def acf_similarity(acf, ref, max_lag=None) -> np.ndarray:
    """Per-channel Pearson correlation of ACF curves with a reference ACF.

    Parameters
    ----------
    acf : array_like, shape (C, K+1)
    ref : array_like, shape (K+1,)
    max_lag : int, optional
        Compare lags ``1..max_lag`` (default: all lags >= 1; lag 0 is 1 by
        construction and is excluded).

    Returns
    -------
    sim : ndarray, shape (C,)
        NaN where a curve is flat or contains NaN.
    """
    a = np.atleast_2d(np.asarray(acf, np.float64))
    r = np.asarray(ref, np.float64)
    K = min(a.shape[1], r.shape[0]) - 1 if max_lag is None else int(max_lag)
    return _rowwise_pearson(a[:, 1 : K + 1], r[None, 1 : K + 1])


# ----------------------------------------------------------------------------
# 7: clustering
# ----------------------------------------------------------------------------


def silhouette_score(D, labels) -> float:
    """Mean silhouette coefficient from a precomputed distance matrix.

    Same definition as ``sklearn.metrics.silhouette_score(metric="precomputed")``:
    ``s_i = (b_i - a_i) / max(a_i, b_i)``, ``a_i`` the mean distance to the other
    members of i's cluster, ``b_i`` the smallest mean distance to another
    cluster; ``s_i = 0`` for singletons (and when ``max(a_i, b_i) = 0``).

    Parameters
    ----------
    D : array_like, shape (n, n)
        Symmetric distances with zero diagonal.
    labels : array_like, shape (n,)

    Returns
    -------
    float
        NaN unless 2 <= number of clusters <= n - 1.
    """
    D = np.asarray(D, np.float64)
    labels = np.asarray(labels)
    n = D.shape[0]
    uniq, lab = np.unique(labels, return_inverse=True)
    k = uniq.size
    if k < 2 or k > n - 1:
        return float("nan")
    M = np.zeros((n, k))
    M[np.arange(n), lab] = 1.0
    sums = D @ M  # (n, k)
    counts = M.sum(axis=0)
    own = counts[lab]
    a = np.divide(sums[np.arange(n), lab], own - 1, out=np.zeros(n), where=own > 1)
    mean_other = sums / counts[None, :]
    mean_other[np.arange(n), lab] = np.inf
    b = mean_other.min(axis=1)
    m = np.maximum(a, b)
    s = np.divide(b - a, m, out=np.zeros(n), where=m > 0)
    s[own <= 1] = 0.0
    return float(s.mean())


def _relabel_by_order(labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Renumber clusters 1..k in the order they appear along the dendrogram."""
    seen: dict[int, int] = {}
    for leaf in order:
        lab = int(labels[leaf])
        if lab not in seen:
            seen[lab] = len(seen) + 1
    return np.array([seen[int(v)] for v in labels], dtype=int)


def cluster_channels(R, k=None, k_range=(2, 20)) -> dict:
    """Hierarchical clustering of channels on the distance ``1 - |R|``.

    Average linkage (with optimal leaf ordering); the number of clusters is the
    one with the best silhouette over ``k_range`` (inclusive; ties go to the
    smaller k) unless ``k`` is given.

    Parameters
    ----------
    R : array_like, shape (C, C)
        Correlation matrix (NaN treated as 0).
    k : int, optional
        Fixed number of clusters (clipped to 1..C).
    k_range : (int, int), optional
        Candidate k, inclusive; capped at C - 1.

    Returns
    -------
    dict
        ``labels``: int array (C,), cluster ids 1..k numbered in dendrogram
        order (cluster 1 is leftmost); ``k``: number of clusters found;
        ``silhouette``: silhouette of the chosen labels (NaN if undefined, e.g.
        k = 1); ``linkage``: scipy linkage matrix (C-1, 4);
        ``order``: dendrogram leaf order (C,); ``distance``: the (C, C)
        distance matrix; ``silhouettes``: dict k -> score of the candidates.

    Notes
    -----
    C < 3 is handled: C = 1 gives one cluster and an empty linkage; C = 2 gives
    one cluster unless ``k=2`` is requested.
    """
    R = np.nan_to_num(np.asarray(R, np.float64), nan=0.0)
    C = R.shape[0]
    D = 1.0 - np.abs(0.5 * (R + R.T))
    np.fill_diagonal(D, 0.0)
    D = np.clip(D, 0.0, 2.0)
    if C < 2:
        return {
            "labels": np.ones(C, dtype=int),
            "k": C,
            "silhouette": float("nan"),
            "linkage": np.zeros((0, 4)),
            "order": np.arange(C),
            "distance": D,
            "silhouettes": {},
        }
    Z = _hier.linkage(_squareform(D, checks=False), method="average", optimal_ordering=C > 2)
    order = _hier.leaves_list(Z)
    scores: dict[int, float] = {}
    if k is None:
        lo, hi = int(k_range[0]), min(int(k_range[1]), C - 1)
        best_lab, best_s = np.ones(C, dtype=int), -np.inf
        for kk in range(max(lo, 2), hi + 1):
            lab = _hier.fcluster(Z, kk, criterion="maxclust")
            s = silhouette_score(D, lab)
            scores[kk] = s
            if np.isfinite(s) and s > best_s + 1e-12:
                best_lab, best_s = lab, s
        labels = best_lab
    else:
        kk = int(np.clip(int(k), 1, C))
        labels = _hier.fcluster(Z, kk, criterion="maxclust") if kk > 1 else np.ones(C, dtype=int)
    labels = _relabel_by_order(np.asarray(labels), order)
    return {
        "labels": labels,
        "k": int(labels.max()),
        "silhouette": silhouette_score(D, labels),
        "linkage": Z,
        "order": order,
        "distance": D,
        "silhouettes": scores,
    }


# ----------------------------------------------------------------------------
# 8: channel function
# ----------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------
# 9: repeatability and plasticity
# ----------------------------------------------------------------------------


def matrix_similarity(R_a, R_b) -> float:
    """Pearson correlation of the strict upper triangles (k=1) of two matrices.

    Pairs where either entry is NaN are dropped; NaN if fewer than 2 remain or
    one triangle is constant.
    """
    A = np.asarray(R_a, np.float64)
    B = np.asarray(R_b, np.float64)
    if A.shape != B.shape:
        raise ValueError(f"shape mismatch {A.shape} vs {B.shape}")
    iu = np.triu_indices(A.shape[0], k=1)
    a, b = A[iu], B[iu]
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 2:
        return float("nan")
    return float(_rowwise_pearson(a[ok], b[ok]))


def acf_profile_similarity(acf_a, acf_b, max_lag=None) -> tuple[float, np.ndarray]:
    """Similarity of two sets of per-channel ACF curves.

    Parameters
    ----------
    acf_a, acf_b : array_like, shape (C, K+1)
    max_lag : int, optional
        Lags ``1..max_lag`` are compared (default all >= 1).

    Returns
    -------
    mean : float
        Mean over channels of the per-channel Pearson correlations (NaN channels
        ignored; NaN if all are NaN).
    per_channel : ndarray, shape (C,)
    """
    a = np.atleast_2d(np.asarray(acf_a, np.float64))
    b = np.atleast_2d(np.asarray(acf_b, np.float64))
    K = min(a.shape[1], b.shape[1]) - 1 if max_lag is None else int(max_lag)
    r = _rowwise_pearson(a[:, 1 : K + 1], b[:, 1 : K + 1])
    ok = ~np.isnan(r)
    return (float(r[ok].mean()) if ok.any() else float("nan")), r


def compare_recordings(recordings: Sequence, names: Sequence[str] | None = None, n_perm: int = 20,
                       seed: int = 0) -> dict:
    """Pairwise similarity of several recordings of the same tap, with baselines.

    docs/method.md, Coherence against its floors.

    Parameters
    ----------
    recordings : sequence of (R, acf)
        Correlation matrix (C, C) and ACF (C, K+1) of each recording.
    names : sequence of str, optional
    n_perm : int, optional
        Random channel permutations (R baseline) and derangements (ACF
        baseline) per pair.
    seed : int, optional
        Seed of those permutations.

    Returns
    -------
    dict
        ``names``; ``corr_similarity``: (n, n) :func:`matrix_similarity`;
        ``acf_similarity``: (n, n) mean of :func:`acf_profile_similarity`
        (matched channels); ``corr_similarity_baseline``: (n, n) the same with
        the channels of the second recording randomly permuted;
        ``acf_similarity_baseline``: (n, n) mean similarity of mismatched
        channel pairs (i with pi(i) != i). Diagonals: 1 (similarities) and the
        self-baselines. ``summary``: JSON-ready means over the pairs i < j
        (``n_pairs``, ``mean_corr_similarity``, ``mean_corr_similarity_baseline``,
        ``corr_similarity_excess``, ``mean_acf_similarity``,
        ``mean_acf_similarity_baseline``, ``acf_similarity_excess``,
        ``min_corr_similarity_excess``, ``min_acf_similarity_excess``; None where
        undefined).
    """
    n = len(recordings)
    names = [f"rec{i}" for i in range(n)] if names is None else list(names)
    if len(names) != n:
        raise ValueError("names and recordings differ in length")
    rng = np.random.default_rng(seed)
    cs, asim = np.eye(n), np.eye(n)
    cb, ab = np.full((n, n), np.nan), np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i, n):
            Ri, Ai = recordings[i]
            Rj, Aj = recordings[j]
            if j > i:
                cs[i, j] = cs[j, i] = matrix_similarity(Ri, Rj)
                asim[i, j] = asim[j, i] = acf_profile_similarity(Ai, Aj)[0]
            cb[i, j] = cb[j, i] = _nulls.permuted_matrix_similarity(Ri, Rj, rng, n_perm)
            ab[i, j] = ab[j, i] = _nulls.matched_vs_mismatched(Ai, Aj, rng, n_perm)[1]
    iu = np.triu_indices(n, 1)

    def m(a):
        v = np.asarray(a)[iu]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else None

    def mn(a):
        v = np.asarray(a)[iu]
        v = v[np.isfinite(v)]
        return float(v.min()) if v.size else None

    summary = {"n_pairs": int(len(iu[0])), "mean_corr_similarity": m(cs), "mean_corr_similarity_baseline": m(cb),
               "corr_similarity_excess": m(cs - cb), "min_corr_similarity_excess": mn(cs - cb),
               "mean_acf_similarity": m(asim), "mean_acf_similarity_baseline": m(ab),
               "acf_similarity_excess": m(asim - ab), "min_acf_similarity_excess": mn(asim - ab),
               "baselines": "R: channels of the second recording randomly permuted; "
                            "ACF: mismatched channel pairs (derangements)", "n_perm": int(n_perm)}
    return {"names": names, "corr_similarity": cs, "acf_similarity": asim, "corr_similarity_baseline": cb,
            "acf_similarity_baseline": ab, "summary": summary}


# ----------------------------------------------------------------------------
# 10: everything for one tap
# ----------------------------------------------------------------------------


def best_silhouette(R, k_range=(2, 20)) -> tuple[float, int]:
    """Best silhouette over ``k_range`` of the average-linkage clustering on ``1 - |R|``.

    The same candidates as :func:`cluster_channels` (without optimal leaf
    ordering, which does not change the clusters).

    Returns
    -------
    best, k : float, int
        NaN and 1 when no candidate is defined.
    """
    R = np.nan_to_num(np.asarray(R, np.float64), nan=0.0)
    C = R.shape[0]
    if C < 3:
        return float("nan"), 1
    D = np.clip(1.0 - np.abs(0.5 * (R + R.T)), 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    Z = _hier.linkage(_squareform(D, checks=False), method="average")
    ks = list(range(max(int(k_range[0]), 2), min(int(k_range[1]), C - 1) + 1))
    if not ks:
        return float("nan"), 1
    # all candidate partitions at once: one (C, sum k) indicator matrix and one matmul
    labs = [np.unique(_hier.fcluster(Z, kk, criterion="maxclust"), return_inverse=True)[1] for kk in ks]
    offs = np.cumsum([0] + [int(lab.max()) + 1 for lab in labs])
    M = np.zeros((C, offs[-1]))
    for lab, o in zip(labs, offs[:-1]):
        M[np.arange(C), o + lab] = 1.0
    sums = D @ M
    counts = M.sum(axis=0)
    best, kbest = -np.inf, 1
    rows = np.arange(C)
    for kk, lab, a0, a1 in zip(ks, labs, offs[:-1], offs[1:]):
        if a1 - a0 < 2:
            continue
        sm, cn = sums[:, a0:a1], counts[a0:a1]
        own = cn[lab]
        a = np.divide(sm[rows, lab], own - 1, out=np.zeros(C), where=own > 1)
        other = sm / cn[None, :]
        other[rows, lab] = np.inf
        b = other.min(axis=1)
        m = np.maximum(a, b)
        sil = np.divide(b - a, m, out=np.zeros(C), where=m > 0)
        sil[own <= 1] = 0.0
        sc = float(sil.mean())
        if sc > best + 1e-12:
            best, kbest = sc, kk
    return (float(best), kbest) if np.isfinite(best) else (float("nan"), 1)


def _gated_clustering(R_kept, kept, C, k, k_range, null_best, coherent=True) -> dict:
    """Clustering of the kept channels, gated by the surrogates' best silhouettes.

    docs/method.md, Coherence against its floors.

    Cluster structure is reported when the best silhouette exceeds the 95th percentile of the
    surrogates' best silhouettes *and* the tap is coherent beyond the surrogate (``coherent``:
    the excess of mean |R| or lambda_max / C is significant); otherwise k = 1.
    """
    cl = cluster_channels(R_kept, k=k, k_range=k_range)
    nb = np.asarray(null_best, np.float64)
    nb = nb[np.isfinite(nb)]
    # the 95th percentile as an order statistic (method "higher"): with B = 20 it is the largest
    # surrogate value, so the gate's false-positive rate is 1 / (B + 1)
    q95 = float(np.quantile(nb, 0.95, method="higher")) if nb.size else float("nan")
    best_k = int(cl["k"])
    best_s = float(cl["silhouette"])
    if k is None:
        structure = bool(best_k > 1 and np.isfinite(best_s) and nb.size > 0 and best_s > q95 and coherent)
    else:
        structure = bool(best_k > 1)
    labels_kept = cl["labels"] if structure else np.ones(len(kept), dtype=int)
    labels = np.zeros(C, dtype=int)
    labels[kept] = labels_kept
    return {
        "labels": labels,
        "k": int(labels_kept.max()) if len(kept) else 0,
        "silhouette": best_s if structure else float("nan"),
        "linkage": cl["linkage"],
        "order": np.asarray(kept)[cl["order"]],
        "distance": cl["distance"],
        "silhouettes": cl["silhouettes"],
        "channels": np.asarray(kept),
        "structure": structure,
        "best_k": best_k,
        "best_silhouette": best_s,
        "null_silhouette_q95": q95,
        "null_silhouettes": nb,
        "silhouette_above_null": bool(nb.size > 0 and np.isfinite(best_s) and best_s > q95),
        "coherent_beyond_surrogate": bool(coherent),
        "fixed_k": k is not None,
    }


def _induced_units(xc0, mask, var, n):
    """Induced part of centred waves as unit columns: (Z, P, R_induced of the kept ones, ok mask, evoked dict)."""
    ev = _nulls.split_evoked(xc0, mask)
    ind = ev.pop("induced")
    # a channel that is purely evoked has no induced variance: 0 correlations, like constant channels
    ivar = np.square(ind).sum(axis=(0, 1))
    ind_ok = ivar > (_CONST_RTOL**2) * var * n
    Zk = _nulls.unit_columns(ind[:, :, ind_ok] if not ind_ok.all() else ind, mask, dtype=np.float32)
    del ind
    P = _nulls.sample_products(Zk) if Zk.size else None  # (S, C, C); their sum is R
    Ri_k = P.sum(axis=0, dtype=np.float64) if Zk.size else np.zeros((0, 0))
    np.clip(Ri_k, -1, 1, out=Ri_k)
    np.fill_diagonal(Ri_k, 1.0)
    return Zk, P, Ri_k, ind_ok, ev


def _empty_surrogate(op_ind, alpha):
    return {"n_surrogates": 0, "n_boot": 0, "n_ci_surrogates": 0, "alpha": alpha, "min_p_value": 1.0,
            **{kk: {"observed": float(op_ind[kk]), "surrogate_mean": float("nan"), "surrogate_sd": float("nan"),
                    "surrogate_q95": float("nan"), "excess": float("nan"), "z": float("nan"), "ci": None,
                    "se": None, "loo": None, "p_value": float("nan"), "p_rank": float("nan"), "significant": False}
                for kk, _ in _nulls.ORDER_KEYS}}


def _surrogate_test(Zk, P, Ri_k, op_ind, rng, mask, n_surrogates, n_ci_surrogates, n_boot, alpha, ci_method,
                    k, k_range, silhouettes=True):
    B = int(n_surrogates)
    if B > 0 and Zk.shape[0] >= 3 and mask.any(axis=1).sum() >= 2:
        sur = _nulls.surrogate_order_parameters(Zk, B, rng, n_keep_slots=min(int(n_ci_surrogates), B))
        v0 = np.linalg.eigh(Ri_k)[1][:, -1].astype(np.float32)  # signed: |v| converges badly (mixed signs)
        surrogate = _nulls.excess_with_ci(Zk, op_ind, sur, rng, n_boot=n_boot, alpha=alpha, v0=v0, P=P,
                                          method=ci_method)
        null_sil = [best_silhouette(Rb, k_range)[0] for Rb in sur["R"]] if (k is None and silhouettes) else []
        del sur
    else:
        surrogate, null_sil = _empty_surrogate(op_ind, alpha), []
    surrogate["on"] = "induced"
    return surrogate, null_sil


def _coherence_c(xc0, absmax, mask, k=None, k_range=(2, 20), n_surrogates=20, n_boot=200, n_ci_surrogates=2,
                 ci_method="jackknife", seed=0, alpha=0.05, x_raw=None) -> dict:
    S, T, C = xc0.shape
    rng = np.random.default_rng(seed)
    n = max(int(mask.sum()), 1)
    R = _corr_from_centered(xc0, absmax, n)
    var = np.square(xc0).sum(axis=(0, 1)) / n
    const = (var <= 0) | (np.sqrt(np.maximum(var, 0)) <= _CONST_RTOL * absmax)
    kept = np.flatnonzero(~const)
    Rk = R[np.ix_(kept, kept)]
    lam = np.linalg.eigvalsh(Rk)[::-1] if kept.size else np.zeros(0)

    # evoked vs induced
    Zk, P, Ri_k, ind_ok, ev = _induced_units(xc0[:, :, kept] if kept.size < C else xc0, mask, var[kept], n)
    share = np.full(C, np.nan)
    share[kept] = ev["share"]
    ki = kept[ind_ok]
    R_ind = np.zeros((C, C))
    R_ind[np.ix_(ki, ki)] = Ri_k
    np.fill_diagonal(R_ind, 1.0)
    op_raw = order_parameters(Rk) if kept.size else order_parameters(np.eye(1))
    op_ind = order_parameters(Ri_k) if ki.size else order_parameters(np.eye(1))

    # sample-shuffle surrogates of the induced waves (float32), excess with paired jackknife CI
    surrogate, null_sil = _surrogate_test(Zk, P, Ri_k, op_ind, rng, mask, n_surrogates, n_ci_surrogates, n_boot,
                                          alpha, ci_method, k, k_range)
    del Zk, P

    # the same after gain normalisation (docs/method.md, "Coherence against its floors": shared gain); kept channels only,
    # since a constant channel divided by a varying gain would no longer be constant
    gain = None
    if x_raw is not None and kept.size >= 1:
        xg = _nulls.gain_normalise(np.asarray(x_raw)[:, :, kept])
        xg0 = _center0(xg, mask)
        del xg
        ng = np.square(xg0).sum(axis=(0, 1)) / n
        okg = ng > 0
        Rg = _corr_from_centered(xg0, _absmax(xg0, mask), n)[np.ix_(okg, okg)]
        Zg, Pg, Rig, _, _ = _induced_units(xg0[:, :, okg], mask, ng[okg], n)
        del xg0
        op_g = order_parameters(Rg) if okg.any() else order_parameters(np.eye(1))
        op_gi = order_parameters(Rig) if Rig.size else order_parameters(np.eye(1))
        sur_g, _ = _surrogate_test(Zg, Pg, Rig, op_gi, np.random.default_rng([seed, 1]), mask, n_surrogates,
                                   n_ci_surrogates, n_boot, alpha, ci_method, k, k_range, silhouettes=False)
        del Zg, Pg
        diff = {}
        for kk, _ in _nulls.ORDER_KEYS:
            a, b = surrogate[kk], sur_g[kk]
            diff[kk] = _nulls.paired_difference(a["excess"], a.get("loo"), b["excess"], b.get("loo"))
        gain = {"order_parameters": op_g, "order_parameters_induced": op_gi, "surrogate": sur_g,
                "raw_minus_normalised": diff}
    coherent = bool(surrogate["mean_abs_corr"]["significant"] or surrogate["lambda_max_share"]["significant"])
    if gain is not None:  # a shared gain alone must not open the cluster gate
        coherent = coherent and bool(gain["surrogate"]["mean_abs_corr"]["significant"]
                                     or gain["surrogate"]["lambda_max_share"]["significant"])
    return {
        "constant": const,
        "n_constant": int(const.sum()),
        "constant_channels": np.flatnonzero(const),
        "kept_channels": kept,
        "R": R,
        "R_induced": R_ind,
        "eigenvalues": lam,
        "order_parameters": op_raw,
        "order_parameters_induced": op_ind,
        "evoked_share": float(np.nanmean(share)) if np.isfinite(share).any() else float("nan"),
        "evoked_share_channels": share,
        "evoked_share_chance": ev["chance"],
        "surrogate": surrogate,
        "gain_normalised": gain,
        "clustering": _gated_clustering(R_ind[np.ix_(kept, kept)], kept, C, k, k_range, null_sil,
                                        coherent=coherent),
    }


def coherence_with_nulls(x, mask=None, k=None, k_range=(2, 20), n_surrogates=20, n_boot=200, n_ci_surrogates=2,
                         ci_method="jackknife",
                         seed=0, alpha=0.05, gain=True) -> dict:
    """Correlation, order parameters, evoked share, surrogate excess and gated clustering.

    docs/method.md, Coherence and Coherence against its floors.

    The coherence part of :func:`analyze_tap` (same parameters); see there
    for the meaning of the returned keys ``constant`` (C,) bool,
    ``n_constant``, ``constant_channels``, ``kept_channels``, ``R``,
    ``R_induced``, ``eigenvalues``, ``order_parameters``,
    ``order_parameters_induced``, ``evoked_share``, ``evoked_share_channels``,
    ``evoked_share_chance``, ``surrogate``, ``gain_normalised`` (None with
    ``gain=False``), ``clustering``.

    Raises
    ------
    WavesInputError
        When ``x`` holds NaN or inf.
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    _bounds(mask)
    _nulls.check_finite(x)
    return _coherence_c(_center0(x, mask), _absmax(x, mask), mask, k=k, k_range=k_range,
                        n_surrogates=n_surrogates, n_boot=n_boot, n_ci_surrogates=n_ci_surrogates, ci_method=ci_method, seed=seed,
                        alpha=alpha, x_raw=x if gain else None)


def oscillations(x, mask=None, nlags=64, nperseg=256, level=0.99, exclude=None) -> dict:
    """ACF periods, Welch PSD and their red-noise (AR(1)) significance.

    docs/method.md, Coherence and Coherence against its floors.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
    mask : array_like of bool, shape (S, T), optional
    nlags, nperseg : int, optional
    level : float, optional
        Level of the red-noise test (maximum over frequencies).
    exclude : array_like of bool, shape (C,), optional
        Channels never called oscillating (constant channels).

    Returns
    -------
    dict
        ``acf`` (C, nlags+1); ``period_acf_all``, ``strength`` (C,) of
        :func:`dominant_period_acf`; ``psd_freqs``, ``psd``;
        ``period_psd_all`` (:func:`period_from_psd`); ``red_noise`` (dict of
        :func:`~gptwaves.analysis.coherence_nulls.red_noise_test`);
        ``oscillating`` (C,) bool; ``period_acf``, ``period_psd`` (C,): the
        periods of significant channels, NaN for the others.
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    C = x.shape[2]
    acf = autocorrelation(x, nlags=nlags, mask=mask)
    period_all, strength = dominant_period_acf(acf)
    freqs, psd = welch_psd(x, mask=mask, nperseg=nperseg)
    lengths = mask.sum(axis=1)
    n_series = int((lengths > 0).sum())
    n_len = int(lengths[lengths > 0].min()) if n_series else 0
    phi = acf[:, 1] if acf.shape[1] > 1 else np.zeros(C)
    red = _nulls.red_noise_test(freqs, psd, phi, n_len, nperseg, n_series, level=level)
    osc = red["significant"].copy()
    if exclude is not None:
        osc &= ~np.asarray(exclude, bool)
    return {"acf": acf, "period_acf_all": period_all, "strength": strength, "psd_freqs": freqs, "psd": psd,
            "period_psd_all": period_from_psd(freqs, psd), "red_noise": red, "oscillating": osc,
            "period_acf": np.where(osc, period_all, np.nan), "period_psd": np.where(osc, red["period"], np.nan)}


def analyze_tap(
    x,
    chars,
    next_chars,
    mask=None,
    nlags=64,
    k=None,
    window=8,
    k_range=(2, 20),
    nperseg=256,
    threshold=1.0,
    n_surrogates=20,
    n_boot=200,
    ci_method="jackknife",
    n_ci_surrogates=2,
    seed=0,
    alpha=0.05,
    red_noise_level=0.99,
    min_events=30,
    probe_folds=5,
    probe_max_steps=64,
    probe_null=20,
) -> dict:
    """Full coherence analysis of one tap with its null models.

    docs/method.md, Coherence and Coherence against its floors.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
    chars, next_chars : array_like of str, shape (S, T)
    mask : array_like of bool, shape (S, T), optional
    nlags : int, optional
        ACF lags 0..nlags.
    k : int, optional
        Fixed number of clusters (default: best silhouette over ``k_range``,
        gated by the surrogates).
    window : int, optional
        Half-width of the event-triggered averages.
    k_range : (int, int), optional
    nperseg : int, optional
        Welch segment length.
    threshold : float, optional
        ``|d|`` needed for a channel label.
    n_surrogates : int, optional
        Sample-shuffle surrogates B (default 20; 0 disables the surrogate
        test, the cluster gate then reports no structure).
    n_boot : int, optional
        Bootstrap resamples of the excess CI with ``ci_method="bca"`` (0: none).
    ci_method : {"jackknife", "bca"}, optional
        Interval of the excess: delete-one-sample jackknife (default) or BCa bootstrap
        (see :func:`gptwaves.analysis.coherence_nulls.excess_with_ci` for the choice).
    n_ci_surrogates : int, optional
        Surrogates recomputed inside each jackknife/bootstrap replicate (paired CI).
    seed : int, optional
        Seed of surrogates and bootstrap.
    alpha : float, optional
        Level of the surrogate rank test.
    red_noise_level : float, optional
        Confidence level of the red-noise test (maximum over frequencies).
    min_events : int, optional
        Steps needed inside and outside a class for labels.
    probe_folds, probe_max_steps, probe_null : int, optional
        The space probe (:func:`gptwaves.analysis.probe.space_probe`): ``GroupKFold`` splits,
        training steps per sample, AR(1) red-noise replicates (0: none).

    Returns
    -------
    dict
        ``n_samples``, ``n_steps`` (masked steps pooled), ``n_channels``;
        ``n_constant``, ``constant_channels``, ``kept_channels`` (index arrays);
        ``R`` (C, C) raw correlation (constant channels 0 off the diagonal);
        ``R_induced`` (C, C) after removing the evoked component;
        ``eigenvalues`` (C_kept,) of the raw R of kept channels, descending;
        ``order_parameters`` (raw, kept channels) and
        ``order_parameters_induced``; ``evoked_share`` (mean over kept
        channels), ``evoked_share_channels`` (C,), ``evoked_share_chance``;
        ``surrogate``: :func:`gptwaves.analysis.coherence_nulls.excess_with_ci`
        of the *induced* order parameters (plus ``on: "induced"``);
        ``acf`` (C, nlags+1); ``period_acf`` (C,, NaN unless the channel
        oscillates significantly), ``period_acf_all`` (C,, before the test),
        ``strength`` (C,); ``psd_freqs``, ``psd``; ``period_psd`` (C,, period
        of the most significant red-noise peak, NaN unless significant),
        ``period_psd_all`` (C,, highest non-DC peak); ``red_noise`` (dict of
        :func:`~gptwaves.analysis.coherence_nulls.red_noise_test`);
        ``oscillating`` (C,) bool; ``space_acf``, ``space_similarity`` (C,),
        ``space_similarity_ar1`` (C,: the similarity the channel's AR(1) twin
        ``phi**lag`` has with the space ACF); ``clustering`` (gated, on
        ``R_induced`` of the kept channels: ``labels`` (C,, 0 for constant
        channels), ``k``, ``silhouette``, ``linkage``, ``order`` (kept channel
        indices in leaf order), ``structure``, ``best_k``,
        ``best_silhouette``, ``null_silhouette_q95``, ...); ``function`` (dict
        of :func:`channel_function` with ``min_events``); ``eta``,
        ``eta_counts``, ``eta_classes``, ``eta_lags``; ``gain_normalised`` (the order
        parameters, induced ones, their surrogate test and the paired jackknife CI of raw minus
        gain-normalised excess, after dividing each (sample, step) vector by its RMS over
        channels); ``probe`` (:func:`gptwaves.analysis.probe.space_probe`); ``settings``.

    Raises
    ------
    WavesInputError
        When ``x`` holds NaN or inf (one-line message).
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    chars = np.asarray(chars)
    next_chars = np.asarray(next_chars)
    if chars.shape != x.shape[:2] or next_chars.shape != x.shape[:2]:
        raise ValueError("chars and next_chars must have shape (S, T) like the waves")
    _bounds(mask)
    _nulls.check_finite(x)
    C = x.shape[2]
    xc0 = _center0(x, mask)
    coh = _coherence_c(xc0, _absmax(x, mask), mask, k=k, k_range=k_range, n_surrogates=n_surrogates,
                       n_boot=n_boot, n_ci_surrogates=n_ci_surrogates, ci_method=ci_method, seed=seed, alpha=alpha,
                       x_raw=x)
    const = coh["constant"]
    osc = oscillations(x, mask=mask, nlags=nlags, nperseg=nperseg, level=red_noise_level, exclude=const)
    acf, phi = osc["acf"], osc["acf"][:, 1] if osc["acf"].shape[1] > 1 else np.zeros(C)
    space_acf = space_reference(chars, mask=mask, nlags=nlags)
    space_sim = acf_similarity(acf, space_acf)
    lags = np.arange(acf.shape[1])
    ar1 = np.clip(np.nan_to_num(phi), -0.999, 0.999)[:, None] ** lags[None, :]
    space_sim_ar1 = np.where(np.isnan(space_sim), np.nan, acf_similarity(ar1, space_acf))

    from .probe import space_probe

    probe = space_probe(x, next_chars, mask=mask, n_folds=probe_folds, max_steps=probe_max_steps,
                        n_null=probe_null, nlags=min(int(nlags), 32), seed=seed)
    func = _channel_function_c(xc0, chars, next_chars, mask, threshold, min_events)
    classes = func["classes"]
    eta, counts = _eta(xc0, class_indicators(chars, classes), mask, window)
    return {
        "n_samples": int(mask.any(axis=1).sum()),
        "n_steps": int(mask.sum()),
        "n_channels": int(C),
        **{kk: coh[kk] for kk in ("n_constant", "constant_channels", "kept_channels", "R", "R_induced",
                                   "eigenvalues", "order_parameters", "order_parameters_induced", "evoked_share",
                                   "evoked_share_channels", "evoked_share_chance", "surrogate",
                                   "gain_normalised")},
        "acf": acf,
        "period_acf": osc["period_acf"],
        "period_acf_all": osc["period_acf_all"],
        "strength": osc["strength"],
        "psd_freqs": osc["psd_freqs"],
        "psd": osc["psd"],
        "period_psd": osc["period_psd"],
        "period_psd_all": osc["period_psd_all"],
        "red_noise": osc["red_noise"],
        "oscillating": osc["oscillating"],
        "space_acf": space_acf,
        "space_similarity": space_sim,
        "space_similarity_ar1": space_sim_ar1,
        "clustering": coh["clustering"],
        "function": func,
        "eta": eta,
        "eta_counts": counts,
        "eta_classes": classes,
        "eta_lags": np.arange(-int(window), int(window) + 1),
        "probe": probe,
        "settings": {"nlags": int(nlags), "k": None if k is None else int(k), "window": int(window),
                     "k_range": [int(k_range[0]), int(k_range[1])], "nperseg": int(nperseg),
                     "threshold": float(threshold), "n_surrogates": int(n_surrogates), "n_boot": int(n_boot), "ci_method": ci_method,
                     "n_ci_surrogates": int(n_ci_surrogates), "seed": int(seed), "alpha": float(alpha),
                     "red_noise_level": float(red_noise_level), "min_events": int(min_events),
                     "probe_folds": int(probe_folds), "probe_max_steps": int(probe_max_steps),
                     "probe_null": int(probe_null)},
    }


# ----------------------------------------------------------------------------
# 11: JSON-ready summary of one tap
# ----------------------------------------------------------------------------


_num = finite_or_none


def _list(v, nd=6):
    return None if v is None else [_num(round(float(a), nd)) for a in np.asarray(v, dtype=float).ravel()]


def _surrogate_json(sur: dict) -> dict:
    out = {k: sur.get(k) for k in ("on", "n_surrogates", "n_boot", "n_ci_surrogates", "alpha")}
    # the bound of the rank p-value, named for what it is (docs/method.md, "Coherence against its floors")
    out["p_rank_bound"] = sur.get("min_p_value")
    for k, _ in _nulls.ORDER_KEYS:
        d = sur.get(k, {})
        ci = d.get("ci")
        out[k] = {"observed": _num(d.get("observed")), "surrogate_mean": _num(d.get("surrogate_mean")),
                  "surrogate_sd": _num(d.get("surrogate_sd")), "surrogate_q95": _num(d.get("surrogate_q95")),
                  "excess": _num(d.get("excess")), "z": _num(d.get("z")),
                  "ci": None if ci is None else [_num(ci[0]), _num(ci[1])], "ci_method": d.get("ci_method"),
                  "se": _num(d.get("se")), "p_value": _num(d.get("p_value")), "p_rank": _num(d.get("p_rank")),
                  "significant": bool(d.get("significant", False)),
                  "loo": _list(d.get("loo"), 8) if k == "mean_abs_corr" else None}
    return out


def _gain_json(g: dict | None) -> dict | None:
    if not g:
        return None
    diff = {}
    for k, _ in _nulls.ORDER_KEYS:
        d = g["raw_minus_normalised"].get(k, {})
        ci = d.get("ci")
        diff[k] = {"difference": _num(d.get("difference")), "se": _num(d.get("se")),
                   "ci": None if ci is None else [_num(ci[0]), _num(ci[1])]}
    return {**{k: _num(v) for k, v in g["order_parameters"].items()},
            "induced": {k: _num(v) for k, v in g["order_parameters_induced"].items()},
            "surrogate": _surrogate_json(g["surrogate"]), "raw_minus_normalised": diff}


def probe_summary(p: dict | None) -> dict | None:
    """JSON-ready summary of :func:`gptwaves.analysis.probe.space_probe` output (the ``probe`` entry
    of :func:`tap_summary`)."""
    if not p:
        return None
    ci = p.get("ci")
    return {"r2": _num(p.get("r2")), "ci": None if ci is None else [_num(ci[0]), _num(ci[1])],
            "se": _num(p.get("se")), "loo": _list(p.get("loo"), 8),
            "rhythm_similarity": _num(p.get("rhythm_similarity")),
            "null_r2_q95": _num(p.get("null_r2_q95")), "null_rhythm_q95": _num(p.get("null_rhythm_q95")),
            "null_r2": _list(p.get("null_r2")), "n_null": int(np.size(p.get("null_r2", []))),
            "space_rate": _num(p.get("space_rate")), "ridge_penalty": _num(p.get("ridge_penalty")),
            "n_folds": int(p.get("n_folds", 0)), "n_fit_rows": int(p.get("n_fit_rows", 0)),
            "n_eval_steps": int(p.get("n_eval_steps", 0)), "metric": "out-of-fold R^2"}


def coherence_summary(coh: dict) -> dict:
    """JSON-ready coherence part of a tap summary from :func:`coherence_with_nulls` (or
    :func:`analyze_tap`) output: raw order parameters, ``induced``, ``surrogate`` and
    ``gain_normalised`` (see :func:`tap_summary`)."""
    return {**{k: _num(v) for k, v in coh["order_parameters"].items()},
            "induced": {k: _num(v) for k, v in coh.get("order_parameters_induced", {}).items()},
            "surrogate": _surrogate_json(coh["surrogate"]) if "surrogate" in coh else None,
            "gain_normalised": _gain_json(coh.get("gain_normalised"))}


def tap_summary(r: dict) -> dict:
    """JSON-ready summary of one :func:`analyze_tap` result (plain types, no NaN).

    Returns
    -------
    dict
        Raw order parameters ``mean_abs_corr``, ``lambda_max_share``,
        ``participation_ratio`` (kept channels, as in docs/method.md, Coherence);
        ``induced`` (the same after removing the evoked component; claims use
        these); ``evoked_share``, ``evoked_share_chance``; ``surrogate``
        (induced: per order parameter ``observed``, ``surrogate_mean``,
        ``surrogate_sd``, ``surrogate_q95``, ``excess``, ``z``, ``ci``, ``se``, ``p_value``
        (unfloored Gaussian tail), ``p_rank`` (rank test, bounded by ``p_rank_bound``),
        ``significant``, ``loo`` for mean |R|); ``gain_normalised`` (the same after gain
        normalisation, plus ``raw_minus_normalised`` paired CIs); ``probe`` (space probe:
        ``r2``, ``ci``, ``loo``, ``rhythm_similarity``, ``null_r2_q95``, ``null_rhythm_q95``, ...);
        ``n_constant``, ``constant_channels``;
        ``n_clusters`` (gated: 1 = no cluster structure), ``silhouette``
        (None when k = 1), ``cluster_structure``, ``best_k``,
        ``best_silhouette``, ``null_silhouette_q95``; ``label_counts``,
        ``n_labelled``, ``n_space_labelled`` (space + next:space),
        ``label_classes_eligible`` (list of keys with >= min_events steps in
        and out), ``class_events`` (key -> [n_in, n_out]);
        ``max_abs_d_space``, ``max_abs_d_by_class``, ``space_channels``,
        ``top_channels``; ``median_period_acf``, ``median_period_psd`` (over
        significant channels), ``n_oscillating`` (significant against red
        noise), ``n_period_acf_unfiltered`` (channels with any ACF period),
        ``red_noise_threshold``, ``red_noise_dof``; ``max_space_similarity``,
        ``space_similarity_baseline`` (max over channels of the AR(1)-twin
        similarity), ``max_space_similarity_excess`` (max over channels of
        similarity - AR(1)-twin similarity), ``n_samples``, ``n_steps``,
        ``n_channels``.
    """
    f = r["function"]
    labels = [str(x) for x in np.asarray(f["label"]).tolist()]
    counts: dict[str, int] = {}
    for lab in labels:
        if lab:
            counts[lab] = counts.get(lab, 0) + 1
    classes = list(f["classes"])
    si = classes.index("space")
    d_space = np.nan_to_num(np.abs(np.asarray(f["d_current"], dtype=float)[si]))
    d_space_next = np.nan_to_num(np.abs(np.asarray(f["d_next"], dtype=float)[si]))
    best_d = np.asarray(f["best_d"], dtype=float)
    best = np.nan_to_num(np.abs(best_d))
    top = np.argsort(-best)[:10]
    per = np.asarray(r["period_acf"], dtype=float)
    per_psd = np.asarray(r.get("period_psd", np.full(len(per), np.nan)), dtype=float)
    keys = classes + ["next:" + c for c in classes]
    n_in = np.asarray(f.get("n_in", np.zeros(len(keys))), dtype=int)
    n_out = np.asarray(f.get("n_out", np.zeros(len(keys))), dtype=int)
    elig = np.asarray(f.get("eligible", np.ones(len(keys), bool)), dtype=bool)
    sim = np.asarray(r["space_similarity"], dtype=float)
    sim_ar1 = np.asarray(r.get("space_similarity_ar1", np.full(sim.shape, np.nan)), dtype=float)
    exc = sim - sim_ar1
    cl = r["clustering"]
    op, opi = r["order_parameters"], r.get("order_parameters_induced", {})
    red = r.get("red_noise", {})
    return {
        **coherence_summary(r),
        "evoked_share": _num(r.get("evoked_share")),
        "evoked_share_chance": _num(r.get("evoked_share_chance")),
        "probe": probe_summary(r.get("probe")),
        "n_constant": int(r.get("n_constant", 0)),
        "constant_channels": [int(c) for c in np.asarray(r.get("constant_channels", []))[:50]],
        "n_clusters": int(cl["k"]),
        "silhouette": _num(cl.get("silhouette")),
        "cluster_structure": bool(cl.get("structure", int(cl["k"]) > 1)),
        "best_k": int(cl.get("best_k", cl["k"])),
        "best_silhouette": _num(cl.get("best_silhouette", cl.get("silhouette"))),
        "null_silhouette_q95": _num(cl.get("null_silhouette_q95")),
        "label_counts": counts,
        "n_labelled": int(sum(counts.values())),
        "n_space_labelled": int(counts.get("space", 0) + counts.get("next:space", 0)),
        "label_classes_eligible": [kk for kk, e in zip(keys, elig) if e],
        "class_events": {kk: [int(a), int(b)] for kk, a, b in zip(keys, n_in, n_out)},
        "max_abs_d_space": float(max(d_space.max(initial=0), d_space_next.max(initial=0))),
        "max_abs_d_by_class": {c: float(np.nan_to_num(np.abs(np.concatenate(
            [np.asarray(f["d_current"], dtype=float)[i], np.asarray(f["d_next"], dtype=float)[i]]))).max(initial=0))
            for i, c in enumerate(classes)},
        "space_channels": [int(i) for i in np.argsort(-np.maximum(d_space, d_space_next))[:8]],
        "top_channels": [{"channel": int(i), "label": labels[i], "d": _num(best_d[i])} for i in top],
        "median_period_acf": _num(np.nanmedian(per)) if np.isfinite(per).any() else None,
        "median_period_psd": _num(np.nanmedian(per_psd)) if np.isfinite(per_psd).any() else None,
        "n_oscillating": int(np.asarray(r.get("oscillating", np.isfinite(per))).sum()),
        "n_period_acf_unfiltered": int(np.isfinite(np.asarray(r.get("period_acf_all", per), dtype=float)).sum()),
        "red_noise_threshold": _num(red.get("threshold")),
        "red_noise_dof": _num(red.get("dof")),
        "max_space_similarity": _num(np.nanmax(sim)) if np.isfinite(sim).any() else None,
        "space_similarity_baseline": _num(np.nanmax(sim_ar1)) if np.isfinite(sim_ar1).any() else None,
        "max_space_similarity_excess": _num(np.nanmax(exc)) if np.isfinite(exc).any() else None,
        "n_samples": int(r["n_samples"]), "n_steps": int(r["n_steps"]), "n_channels": int(r["n_channels"]),
    }
