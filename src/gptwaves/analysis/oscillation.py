"""Auto-correlation, spectra and periods of hidden-state waves, with the text's word rhythm
(docs/method.md, Coherence and Coherence against its floors).

Pure functions on numpy arrays; the data conventions are those of
:mod:`gptwaves.analysis.wave_arrays`.

ACFs are the biased estimator (statsmodels ``acf(adjusted=False)``) of the contiguous masked
part of each sample, averaged over samples. A series that is constant within a sample has no
ACF and is left out of that channel's average (NaN if it is constant in every sample).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as _fft
from scipy import signal as _signal

from . import coherence_nulls as _nulls
from .wave_arrays import _CONST_RTOL, _as_mask, _as_waves, _groups, _rowwise_pearson

__all__ = ["autocorrelation", "dominant_period_acf", "welch_psd", "period_from_psd", "dominant_period_psd",
           "space_reference", "acf_similarity", "oscillations", "space_rhythm"]


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


def space_rhythm(acf, chars, mask=None, nlags=64) -> dict:
    """How much each channel's ACF looks like the word rhythm of the text, against its AR(1) twin.

    docs/method.md, Coherence against its floors.

    Parameters
    ----------
    acf : array_like, shape (C, nlags+1)
        The channels' ACFs (:func:`autocorrelation`).
    chars : array_like of str, shape (S, T)
    mask : array_like of bool, shape (S, T), optional
    nlags : int, optional
        Lags of the space ACF (as for ``acf``).

    Returns
    -------
    dict
        ``space_acf`` (nlags+1,): :func:`space_reference`; ``space_similarity`` (C,):
        :func:`acf_similarity` of each channel with it; ``space_similarity_ar1`` (C,): the
        similarity the channel's AR(1) twin ``phi**lag`` (``phi`` its lag-1 ACF) has with the
        space ACF, NaN where ``space_similarity`` is NaN.
    """
    acf = np.asarray(acf)
    C = acf.shape[0]
    phi = acf[:, 1] if acf.shape[1] > 1 else np.zeros(C)
    space_acf = space_reference(chars, mask=mask, nlags=nlags)
    space_sim = acf_similarity(acf, space_acf)
    lags = np.arange(acf.shape[1])
    ar1 = np.clip(np.nan_to_num(phi), -0.999, 0.999)[:, None] ** lags[None, :]
    space_sim_ar1 = np.where(np.isnan(space_sim), np.nan, acf_similarity(ar1, space_acf))
    return {"space_acf": space_acf, "space_similarity": space_sim, "space_similarity_ar1": space_sim_ar1}
