"""Null models and floors for the coherence of waves (docs/method.md, Coherence against its floors).

Pure functions on numpy arrays; numpy and scipy only (no torch, no file I/O).
They work on the per-sample centred, zero-filled waves ``xc0`` of
:mod:`gptwaves.analysis.wave_arrays` (shape (S, T, C), zeros outside the mask) and
are called by :func:`gptwaves.analysis.waves.analyze_tap`.

Decisions taken here (the caller should know)
---------------------------------------------
* Evoked component: the across-sample mean of the centred waves at each step
  index t, over the samples whose mask includes t (steps seen by fewer than two
  samples have no evoked part). The induced waves are the centred waves minus
  it, centred per sample again. The evoked share of a channel is
  ``1 - SS(induced) / SS(centred)``; for independent samples its chance level is
  the mean of ``1 / n_t`` over the analysed steps (``n_t`` samples at step t).
* Sample-shuffle surrogate: channel k of slot s comes from sample
  ``pi_k(s)``, ``pi_k`` an independent random permutation per channel and
  surrogate. All surrogates' correlation matrices come from one batched float32
  matmul per chunk of surrogates.
* Excess = observed - surrogate mean. Its 95% CI (default) is a delete-one-sample
  jackknife interval of the *paired* excess (observed minus ``n_ci_surrogates``
  surrogates recomputed without that sample), ``excess +- t * se``: see
  :func:`excess_with_ci` for why not the bootstrap. Optional (``method="bca"``):
  a BCa bootstrap over samples (:func:`scipy.stats.bootstrap`), paired: every bootstrap replicate
  recomputes the observed statistic and the statistic of ``n_ci_surrogates``
  surrogates on the same resampled samples (from per-sample cross products),
  so the small-sample floor cancels in each replicate. ``lambda_max`` inside
  the bootstrap is found by power iteration from the full-data leading vector.
  The interval is translated by the difference between the reported excess
  (all B surrogates, exact eigenvalues) and the bootstrap statistic on the data
  itself. Where BCa is degenerate (every replicate on one side of the estimate,
  which happens for strongly coherent taps, where resampling inflates the
  surrogate floor more than the observed |R|), the basic (reverse percentile)
  interval of the same replicates is reported instead (``ci_method``).
  Strength of an excess: ``z = excess / surrogate SD`` (docs/method.md, "Coherence against its floors").
  The rank p-value ``(1 + #{surrogate at least as coherent}) / (B + 1)`` cannot go below
  ``1 / (B + 1)`` (0.048 with B = 20); it is kept as ``p_rank`` with that bound
  (``min_p_value``) and never reported as a strength. The reported ``p_value`` is the
  Gaussian tail of the surrogate distribution, not floored: under the null the observed
  statistic is exchangeable with the B surrogates, so with a normal surrogate law
  ``(obs - mean) / (sd * sqrt(1 + 1/B))`` follows Student's t with B - 1 degrees of freedom
  (a prediction-interval test); ``p_value = t.sf(sign * z / sqrt(1 + 1/B), B - 1)``, one-sided
  in the coherent direction. Significance needs ``p_value < alpha`` and a CI that excludes 0;
  these p-values can be Holm-corrected across checkpoints and taps.
* The jackknife keeps its leave-one-sample-out values (``loo``), so that two quantities of
  the same samples (a block tap against ``hook_embed``, raw against gain-normalised) get a
  *paired* CI of their difference (:func:`paired_difference`). ``lambda_max`` inside the
  jackknife: power iteration from the *signed* leading eigenvector of the full-data matrix (an
  earlier start from its absolute value converged badly where that vector has mixed signs, and
  inflated the interval, e.g. an induced lambda_max / C bar from -0.25 to 0.83). Intervals are clipped to the range the quantity can take
  (mean |R| and lambda_max / C in [0, 1], PR in [1, C]), shifted by the surrogate mean.
* Gain normalisation (:func:`gain_normalise`): each (sample, step) vector divided by its RMS
  over channels, which removes a gain common to all channels at a step.
* Red-noise test: AR(1) coefficient of each channel = its lag-1 ACF (clipped to
  [0, 0.999]); the AR(1) spectrum shape is scaled to the channel's total Welch
  power over the non-DC bins. A channel oscillates significantly when its
  Welch PSD exceeds the AR(1) spectrum times ``chi2.ppf(q, dof) / dof`` at some
  frequency with period <= nperseg / 2 (periods longer than half a segment
  are not resolved). ``q`` is the 99% level corrected for the number of tested
  bins (Sidak: ``q = 0.99 ** (1 / n_bins)``), since the test looks at the
  maximum over bins; ``dof = 2 * n_series * K / (1 + 2 * 0.167**2)``
  (Welch 1967, Hann window, 50% overlap, K segments per series).
"""

from __future__ import annotations

import numpy as np
from scipy import stats as _stats

# the surrogate test lives in its own module; its names stay importable from here
from .surrogates import (ORDER_KEYS, excess_with_ci, gaussian_tail, gram, sample_products, stats_from_gram,
                         surrogate_order_parameters, surrogate_slots, unit_columns)

__all__ = [
    "WavesInputError",
    "check_finite",
    "split_evoked",
    "unit_columns",
    "gram",
    "sample_products",
    "stats_from_gram",
    "surrogate_order_parameters",
    "surrogate_slots",
    "excess_with_ci",
    "red_noise_test",
    "matched_vs_mismatched",
    "permuted_matrix_similarity",
    "gain_normalise",
    "paired_difference",
    "independent_difference",
    "gaussian_tail",
    "holm",
    "ORDER_KEYS",
]


class WavesInputError(ValueError):
    """The waves of a tap cannot be analysed (e.g. NaN or inf values); the message is one line."""


def check_finite(x) -> None:
    """Raise :class:`WavesInputError` (one-line message) when ``x`` holds NaN or inf.

    Parameters
    ----------
    x : ndarray, shape (S, T, C)
    """
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = ~np.isfinite(x)
        n_nan = int(np.isnan(x).sum())
        chans = np.flatnonzero(bad.any(axis=(0, 1)))
        shown = ", ".join(str(int(c)) for c in chans[:5]) + (", ..." if chans.size > 5 else "")
        raise WavesInputError(
            f"waves contain {int(bad.sum())} non-finite values ({n_nan} NaN, {int(bad.sum()) - n_nan} inf) "
            f"in {chans.size} channel(s) [{shown}], first at sample {int(np.argwhere(bad)[0][0])}, "
            f"step {int(np.argwhere(bad)[0][1])}")


# ----------------------------------------------------------------------------
# evoked vs induced, gain normalisation
# ----------------------------------------------------------------------------


def split_evoked(xc0: np.ndarray, mask: np.ndarray) -> dict:
    """Split centred waves into the evoked (time-locked) and the induced part.

    Parameters
    ----------
    xc0 : ndarray of float64 (the stages) or float32, shape (S, T, C)
        Per-sample centred waves, zeros outside ``mask``; the parts are computed in its dtype.
    mask : ndarray of bool, shape (S, T)

    Returns
    -------
    dict
        ``induced`` (S, T, C): centred waves minus the evoked component,
        centred per sample again, zeros outside the mask; ``evoked`` (T, C):
        across-sample mean at each step; ``share`` (C,): evoked share of each
        channel's variance (NaN for a channel without variance);
        ``chance``: expected share for independent samples (mean of 1/n_t).
    """
    S, T, C = xc0.shape
    dt = np.dtype(xc0.dtype if xc0.dtype in (np.float32, np.float64) else np.float64)  # float64 in the stages
    n_t = mask.sum(axis=0).astype(dt)
    ev = xc0.sum(axis=0) / np.maximum(n_t, dt.type(1))[:, None]
    ev[n_t < 2] = 0.0
    full = bool(mask.all())
    m = mask[:, :, None]
    ind = xc0 - ev[None]
    if not full:
        ind *= m
    n_s = np.maximum(mask.sum(axis=1), 1).astype(dt)[:, None, None]
    ind -= ind.sum(axis=1, keepdims=True) / n_s
    if not full:
        ind *= m  # zeros outside the mask again (in place: no second (S, T, C) array)
    ss_tot = np.einsum("stc,stc->c", xc0, xc0)
    ss_ind = np.einsum("stc,stc->c", ind, ind)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(ss_tot > 0, 1.0 - ss_ind / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)
    w = mask & (n_t[None, :] >= 2)
    inv_n = 1.0 / np.maximum(n_t.astype(np.float64), 1.0)
    chance = float(np.broadcast_to(inv_n[None, :], (S, T))[w].mean()) if w.any() else float("nan")
    return {"induced": ind, "evoked": ev, "share": share, "chance": chance}


def gain_normalise(x: np.ndarray) -> np.ndarray:
    """Each (sample, step) vector divided by its RMS over channels (a vector of zeros stays zero).

    Parameters
    ----------
    x : ndarray, shape (S, T, C)

    Returns
    -------
    ndarray (S, T, C), float64 or the input's floating dtype
    """
    x = np.asarray(x)
    dt = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    xf = x.astype(dt, copy=False)
    if x.shape[2] == 0:
        return xf.copy()
    # the sum of squares accumulates in float64 without a float64 copy of the waves
    rms = np.sqrt(np.einsum("stc,stc->st", xf, xf, dtype=np.float64) / x.shape[2])
    rms[~(rms > 0)] = 1.0
    return xf / rms.astype(dt)[:, :, None]


# ----------------------------------------------------------------------------
# differences of excesses, multiple testing
# ----------------------------------------------------------------------------


def paired_difference(est_a: float, loo_a, est_b: float, loo_b, confidence: float = 0.95) -> dict:
    """Paired delete-one-sample jackknife CI of ``a - b`` for two quantities of the same samples.

    Parameters
    ----------
    est_a, est_b : float
        The two full-data estimates.
    loo_a, loo_b : array_like, shape (S,)
        Their leave-sample-s-out values, for the same samples in the same order.
    confidence : float, optional

    Returns
    -------
    dict
        ``difference`` (est_a - est_b), ``se``, ``ci`` ([lo, hi], ``difference +- t_{S-1} * se``),
        ``n_samples``; ``ci``/``se`` None when the values are missing or of different lengths.
    """
    out = {"difference": None, "se": None, "ci": None, "n_samples": None}
    if est_a is None or est_b is None or not np.isfinite(est_a) or not np.isfinite(est_b):
        return out
    out["difference"] = float(est_a) - float(est_b)
    if loo_a is None or loo_b is None:
        return out
    a, b = np.asarray(loo_a, np.float64), np.asarray(loo_b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 3 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return out
    d = a - b
    S = d.size
    se = float(np.sqrt((S - 1) / S * np.sum((d - d.mean()) ** 2)))
    tq = float(_stats.t.ppf(0.5 + confidence / 2, S - 1))
    out.update(se=se, ci=[out["difference"] - tq * se, out["difference"] + tq * se], n_samples=int(S))
    return out


def independent_difference(est_a, se_a, est_b, se_b, confidence: float = 0.95) -> dict:
    """CI of ``a - b`` for estimates from independent samples (e.g. two checkpoints' recordings):
    ``se = sqrt(se_a**2 + se_b**2)``, normal quantile. Keys as :func:`paired_difference`."""
    out = {"difference": None, "se": None, "ci": None}
    vals = (est_a, se_a, est_b, se_b)
    if any(v is None or not np.isfinite(v) for v in vals):
        if est_a is not None and est_b is not None and np.isfinite(est_a) and np.isfinite(est_b):
            out["difference"] = float(est_a) - float(est_b)
        return out
    d = float(est_a) - float(est_b)
    se = float(np.hypot(se_a, se_b))
    q = float(_stats.norm.ppf(0.5 + confidence / 2))
    out.update(difference=d, se=se, ci=[d - q * se, d + q * se])
    return out


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries stay NaN and are not counted as tests)."""
    p = np.asarray(p_values, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


# ----------------------------------------------------------------------------
# red-noise significance of spectral peaks
# ----------------------------------------------------------------------------


def _welch_dof(n_steps: int, nperseg: int, n_series: int) -> float:
    nper = max(1, min(int(nperseg), int(n_steps)))
    step = max(1, nper - nper // 2)
    K = 1 + max(0, (int(n_steps) - nper) // step)
    return 2.0 * n_series * K / (1.0 + 2.0 * 0.167**2 if K > 1 else 1.0)


def red_noise_test(freqs, psd, phi, n_steps: int, nperseg: int, n_series: int, level: float = 0.99) -> dict:
    """AR(1) (red-noise) significance of Welch PSD peaks (Torrence & Compo 1998).

    Parameters
    ----------
    freqs : array_like, shape (F,)
        Welch frequencies (cycles per step), ``freqs[0] == 0``.
    psd : array_like, shape (C, F)
        Welch PSD averaged over ``n_series`` series of ``n_steps`` steps.
    phi : array_like, shape (C,)
        Lag-1 autocorrelation of each channel (NaN for a channel without one).
    n_steps, nperseg, n_series : int
        Series length, the Welch segment length requested and the number of
        averaged series (for the degrees of freedom).
    level : float, optional
        Confidence level of the test of the maximum over frequencies
        (default 0.99; Sidak-corrected per bin).

    Returns
    -------
    dict
        ``significant`` (C,) bool; ``ratio`` (C,): largest PSD / AR(1)
        spectrum over the tested bins; ``threshold``: the ratio a peak must
        exceed; ``period`` (C,): 1 / frequency of the bin with the largest
        ratio, NaN where not significant; ``phi`` (C,) used; ``dof``;
        ``n_bins`` tested; ``min_frequency``.
    """
    f = np.asarray(freqs, np.float64)
    p = np.atleast_2d(np.asarray(psd, np.float64))
    C, F = p.shape
    ph = np.clip(np.nan_to_num(np.asarray(phi, np.float64), nan=0.0), 0.0, 0.999)
    nper = max(1, min(int(nperseg), int(n_steps)))
    fmin = 2.0 / nper
    band = (f >= fmin - 1e-12) & (f > 0)
    out = {"significant": np.zeros(C, bool), "ratio": np.full(C, np.nan), "period": np.full(C, np.nan),
           "phi": ph, "dof": float("nan"), "threshold": float("nan"), "n_bins": int(band.sum()),
           "min_frequency": fmin, "level": level}
    if F < 3 or band.sum() == 0 or C == 0:
        return out
    dof = _welch_dof(n_steps, nperseg, n_series)
    q = level ** (1.0 / band.sum())
    thr = float(_stats.chi2.ppf(q, dof) / dof)
    cosw = np.cos(2 * np.pi * f)[None, :]
    shape = (1 - ph[:, None] ** 2) / (1 - 2 * ph[:, None] * cosw + ph[:, None] ** 2)
    nz = f > 0
    total = p[:, nz].sum(axis=1)
    scale = total / shape[:, nz].sum(axis=1)
    red = shape * scale[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(red > 0, p / np.where(red > 0, red, 1.0), np.nan)
    rb = np.where(band[None, :], np.nan_to_num(ratio, nan=-np.inf), -np.inf)
    best = rb.argmax(axis=1)
    rmax = rb[np.arange(C), best]
    sig = np.isfinite(rmax) & (rmax > thr) & (total > 0)
    per = np.full(C, np.nan)
    per[sig] = 1.0 / f[best[sig]]
    out.update(significant=sig, ratio=np.where(np.isfinite(rmax), rmax, np.nan), period=per, dof=dof, threshold=thr)
    return out


# ----------------------------------------------------------------------------
# baselines of repeatability and plasticity
# ----------------------------------------------------------------------------


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    am = a - a.mean(axis=-1, keepdims=True)
    bm = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((am**2).sum(-1) * (bm**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (am * bm).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def permuted_matrix_similarity(R_a, R_b, rng: np.random.Generator, n_perm: int = 20) -> float:
    """Baseline of the R similarity: Pearson of upper triangles of R_a and R_b with channels permuted.

    Returns the mean over ``n_perm`` random channel permutations of R_b (NaN
    entries dropped; NaN when undefined).
    """
    A = np.asarray(R_a, np.float64)
    Bm = np.asarray(R_b, np.float64)
    C = A.shape[0]
    iu = np.triu_indices(C, 1)
    vals = []
    for _ in range(int(n_perm)):
        pi = rng.permutation(C)
        a, b = A[iu], Bm[np.ix_(pi, pi)][iu]
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.sum() >= 2:
            vals.append(float(_pearson_rows(a[ok], b[ok])))
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def matched_vs_mismatched(acf_a, acf_b, rng: np.random.Generator, n_perm: int = 20,
                          max_lag=None) -> tuple[float, float]:
    """ACF similarity of matched channels and its mismatched-pair baseline.

    Parameters
    ----------
    acf_a, acf_b : array_like, shape (C, K+1)
    rng : numpy Generator
    n_perm : int, optional
        Random derangements of the channels of ``acf_b``.
    max_lag : int, optional
        Compare lags ``1..max_lag`` (default all >= 1).

    Returns
    -------
    matched, mismatched : float
        Mean Pearson over channels of ``acf_a[i]`` with ``acf_b[i]``, and with
        ``acf_b[pi(i)]``, ``pi(i) != i`` (mean over derangements); NaN when
        undefined.
    """
    a = np.atleast_2d(np.asarray(acf_a, np.float64))
    b = np.atleast_2d(np.asarray(acf_b, np.float64))
    K = min(a.shape[1], b.shape[1]) - 1 if max_lag is None else int(max_lag)
    a, b = a[:, 1 : K + 1], b[:, 1 : K + 1]
    C = a.shape[0]
    r = _pearson_rows(a, b)
    matched = float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")
    if C < 2:
        return matched, float("nan")
    vals = []
    for _ in range(int(n_perm)):
        sigma = rng.permutation(C)  # a random derangement: shift along a random cyclic order
        pi = np.empty(C, dtype=int)
        pi[sigma] = sigma[(np.arange(C) + rng.integers(1, C)) % C]
        rr = _pearson_rows(a, b[pi])
        if np.isfinite(rr).any():
            vals.append(float(np.nanmean(rr)))
    return matched, (float(np.mean(vals)) if vals else float("nan"))
