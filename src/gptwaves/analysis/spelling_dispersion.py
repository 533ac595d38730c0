"""Dispersion of per-sample counts: Fano factor, Mandel Q, the index-of-dispersion test, the BCa
interval of F and the standard errors of log F and of log excesses (docs/method.md, Spelling).

Pure functions on numpy arrays (numpy / scipy only).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import special, stats

__all__ = ["dispersion", "fano_bca", "log_fano_se", "log_excess_se", "residual_ratio"]


def _fano_axis(x, axis=-1):
    """F = var(ddof=1) / mean along ``axis`` (NaN where the mean is 0)."""
    m = np.mean(x, axis=axis)
    v = np.var(x, axis=axis, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m > 0, v / np.where(m > 0, m, 1.0), np.nan)


def _fano(x) -> float:
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return math.nan
    return float(_fano_axis(x))


def fano_bca(x, n_boot: int = 2000, seed: int = 0, ci: float = 0.95,
             batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """BCa bootstrap confidence interval of the Fano factor (`scipy.stats.bootstrap`).

    Parameters
    ----------
    x : array_like, shape (..., N)
        Counts; the last axis holds the N samples (leading axes: independent data sets,
        each gets its own interval -- used by the coverage tests).
    n_boot : int
        Bootstrap resamples.
    seed : int
        Seed of ``numpy.random.default_rng`` passed to scipy.
    ci : float
        Confidence level.
    batch : int, optional
        Resamples per vectorised call (memory bound for many data sets).

    Returns
    -------
    lo, hi : ndarray, shape (...)
        NaN where the interval is undefined (zero mean in the data, or the jackknife /
        resamples hit a zero mean so that BCa cannot be formed); ``0`` where all counts are
        equal (every resample has F = 0).
    """
    x = np.asarray(x, dtype=float)
    shape = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    lo = np.full(flat.shape[0], np.nan)
    hi = np.full(flat.shape[0], np.nan)
    const = np.ptp(flat, axis=-1) == 0
    pos = flat.mean(axis=-1) > 0
    lo[const & pos] = hi[const & pos] = 0.0
    ok = ~const & pos
    if ok.any() and n_boot > 0:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")  # degenerate / NaN resamples -> NaN bounds, handled
            res = stats.bootstrap((flat[ok],), _fano_axis, n_resamples=int(n_boot), batch=batch,
                                  vectorized=True, axis=-1, confidence_level=ci, method="BCa",
                                  rng=np.random.default_rng(seed))
        lo[ok] = res.confidence_interval.low
        hi[ok] = res.confidence_interval.high
    return lo.reshape(shape), hi.reshape(shape)


def dispersion(counts, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0,
               ci: float = 0.95) -> dict:
    """Dispersion statistics of a sample of counts.

    Parameters
    ----------
    counts : array_like of int, shape (N,)
        One count per sample (e.g. misspelled words per generated text).
    alpha : float, optional
        Significance level of the verdict. Default 0.05.
    n_boot : int, optional
        Bootstrap resamples for the BCa CI of F. 0 disables it (CI = NaN).
    seed : int, optional
        Seed of the bootstrap generator.
    ci : float, optional
        Confidence level of the interval. Default 0.95.

    Returns
    -------
    dict
        ``n``; ``mean``; ``var`` (ddof=1); ``fano`` F = var/mean; ``q`` (Mandel
        Q = F - 1); ``fano_ci`` [lo, hi] (BCa bootstrap over samples,
        `scipy.stats.bootstrap`); ``log_se`` (SE of log F, `log_fano_se`); ``D`` = (N-1)
        var/mean; ``dof`` = N-1; ``p_value`` two-sided, ``min(1, 2 min(cdf(D), sf(D)))`` under chi2(N-1); ``verdict``:
        ``"sub-Poissonian"`` if p < alpha and F < 1, ``"super-Poissonian"`` if
        p < alpha and F > 1, else ``"Poissonian"``; ``reason``: None, or why a value is
        undefined.

    Raises
    ------
    ValueError
        If fewer than 2 counts are given, or counts are negative / not finite.

    Notes
    -----
    When the mean is 0 (all counts zero) F is undefined: ``fano``, ``q``, ``fano_ci``,
    ``D`` and ``p_value`` are NaN and ``verdict`` is ``"undefined"``. When all counts are
    equal and positive, F = 0 and the CI is [0, 0].
    """
    x = np.asarray(counts, dtype=float).ravel()
    n = x.size
    if n < 2:
        raise ValueError(f"dispersion needs at least 2 samples, got {n}")
    if not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError("counts must be finite and non-negative")
    mean = float(x.mean())
    var = float(x.var(ddof=1))
    dof = n - 1
    nan = math.nan
    if mean <= 0:
        return dict(n=n, mean=mean, var=var, fano=nan, q=nan, fano_ci=[nan, nan], log_se=nan,
                    D=nan, dof=dof, p_value=nan, verdict="undefined",
                    reason="zero mean: no such words in any sample")
    fano = var / mean
    D = dof * fano
    # chi-square cdf and sf: the functions scipy.stats.chi2 calls, without its per-call argument handling
    p = float(min(1.0, 2.0 * min(special.chdtr(dof, D), special.chdtrc(dof, D))))
    if p < alpha and fano < 1:
        verdict = "sub-Poissonian"
    elif p < alpha and fano > 1:
        verdict = "super-Poissonian"
    else:
        verdict = "Poissonian"
    lo = hi = nan
    reason = None
    if n_boot and n_boot > 0:
        lo, hi = (float(v) for v in fano_bca(x, int(n_boot), seed, ci))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            reason = "BCa interval undefined: resamples or jackknife samples with zero mean"
    return dict(n=n, mean=mean, var=var, fano=float(fano), q=float(fano - 1.0),
                fano_ci=[lo, hi], log_se=log_fano_se(x), D=float(D), dof=dof, p_value=p, verdict=verdict,
                reason=reason)


def log_fano_se(k) -> float:
    """Standard error of ``log F`` over samples (delta method, infinitesimal jackknife).

    Each sample's influence on ``log F = log var(k) - log mean(k)`` is
    ``((k_i - kbar)^2 - var k) / var k - (k_i - kbar) / kbar``; the SE is
    ``sqrt(sum_i influence_i^2) / N`` (the large-sample limit of the bootstrap SE).

    Parameters
    ----------
    k : array_like, shape (N,) or (R, N)
        Per-sample counts (leading axes: independent data sets).

    Returns
    -------
    float or ndarray
        NaN where undefined (fewer than 2 samples, zero mean or zero variance).

    Examples
    --------
    >>> round(log_fano_se([0, 1, 2, 3, 4, 5, 6, 7]), 3)
    0.386
    """
    k = np.asarray(k, dtype=float)
    if k.shape[-1] < 2:
        return math.nan if k.ndim == 1 else np.full(k.shape[:-1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        dk = k - k.mean(axis=-1, keepdims=True)
        vk = (dk * dk).mean(axis=-1, keepdims=True)
        infl = (dk * dk - vk) / vk - dk / k.mean(axis=-1, keepdims=True)
        se = np.sqrt((infl * infl).sum(axis=-1)) / k.shape[-1]
    se = np.where(np.isfinite(se) & (se > 0), se, np.nan)
    return float(se) if se.ndim == 0 else se


def log_excess_se(k, S, V) -> float:
    """Standard error of ``log(F / F_ref)`` over samples (delta method, infinitesimal jackknife).

    ``F = var(k) / mean(k)`` is the observed Fano factor of the per-sample counts ``k`` and
    ``F_ref = (mean(V) + var(S)) / mean(S)`` its independent-error reference from the per-sample
    expected counts ``S`` and binomial variances ``V`` (`independent_reference`). Each sample's
    influence on the log ratio is

    ``((k_i - kbar)^2 - var k) / var k - (k_i - kbar) / kbar
    - ((V_i - Vbar) + (S_i - Sbar)^2 - var S) / (Vbar + var S) + (S_i - Sbar) / Sbar``

    and the SE is ``sqrt(sum_i influence_i^2) / N``: the large-sample limit of the bootstrap
    SE over samples of F / F_ref (recomputing both). It is the uncertainty of the excess of one
    checkpoint; two checkpoints' samples are independent, so their SEs add in quadrature.

    Parameters
    ----------
    k, S, V : array_like of float, shape (N,) or (R, N)
        Per-sample observed count, expected count and its variance (leading axes: independent
        data sets).

    Returns
    -------
    float or ndarray
        NaN where undefined (fewer than 2 samples, zero mean or zero variance).
    """
    k, S, V = (np.asarray(a, dtype=float) for a in (k, S, V))
    n = k.shape[-1]
    if n < 2:
        return math.nan if k.ndim == 1 else np.full(k.shape[:-1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        dk = k - k.mean(axis=-1, keepdims=True)
        dS = S - S.mean(axis=-1, keepdims=True)
        vk = (dk * dk).mean(axis=-1, keepdims=True)
        vS = (dS * dS).mean(axis=-1, keepdims=True)
        kb = k.mean(axis=-1, keepdims=True)
        Sb = S.mean(axis=-1, keepdims=True)
        Vb = V.mean(axis=-1, keepdims=True)
        infl = ((dk * dk - vk) / vk - dk / kb
                - ((V - Vb) + dS * dS - vS) / (Vb + vS) + dS / Sb)
        se = np.sqrt((infl * infl).sum(axis=-1)) / n
    se = np.where(np.isfinite(se) & (se > 0), se, np.nan)
    return float(se) if se.ndim == 0 else se


def residual_ratio(k, S, V) -> tuple:
    """Variance of the count's deviation from its independent-error expectation, over the
    binomial variance: ``r = var_i(k_i - S_i) / mean_i V_i``, with the SE of ``log r``.

    Independent errors give r = 1 whatever the word total does (the deviation of a count from its
    expectation does not see the word-total variance that F and F_ref both carry), so a clustering
    that stays the same in the log-odds keeps r nearly the same as the error rate changes, while
    F / F_ref moves with the share of the word-total variance in F. The correct count has the same
    r as the misspelled one (its deviation is the negative). SE: delta method (infinitesimal
    jackknife), influence ``((d_i - dbar)^2 - var d) / var d - (V_i - Vbar) / Vbar``.

    Parameters
    ----------
    k, S, V : array_like, shape (N,) or (R, N)
        Per-sample observed count, expected count and its variance (`independent_reference`).

    Returns
    -------
    r, se : float or ndarray
        NaN where undefined.
    """
    k, S, V = (np.asarray(a, dtype=float) for a in (k, S, V))
    n = k.shape[-1]
    if n < 2:
        nan = math.nan if k.ndim == 1 else np.full(k.shape[:-1], np.nan)
        return nan, nan
    with np.errstate(divide="ignore", invalid="ignore"):
        d = k - S
        dd = d - d.mean(axis=-1, keepdims=True)
        vd = (dd * dd).mean(axis=-1, keepdims=True)
        Vb = V.mean(axis=-1, keepdims=True)
        r = (dd * dd).sum(axis=-1) / (n - 1) / Vb[..., 0]
        infl = (dd * dd - vd) / vd - (V - Vb) / Vb
        se = np.sqrt((infl * infl).sum(axis=-1)) / n
    r = np.where(np.isfinite(r) & (r > 0), r, np.nan)
    se = np.where(np.isfinite(se) & (se > 0), se, np.nan)
    return (float(r), float(se)) if r.ndim == 0 else (r, se)
