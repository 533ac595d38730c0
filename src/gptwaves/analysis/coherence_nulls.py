"""Null models and floors for the coherence of waves (docs/method.md, Coherence against its floors).

Pure functions on numpy arrays; numpy and scipy only (no torch, no file I/O).
They work on the per-sample centred, zero-filled waves ``xc0`` of
:mod:`gptwaves.analysis.waves` (shape (S, T, C), zeros outside the mask) and
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

import warnings

import numpy as np
from scipy import stats as _stats
from scipy.linalg import blas as _blas

__all__ = [
    "WavesInputError",
    "check_finite",
    "split_evoked",
    "unit_columns",
    "gram",
    "sample_products",
    "stats_from_gram",
    "surrogate_order_parameters",
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

#: Order parameters handled by the surrogate test, with the sign of "more coherent".
ORDER_KEYS = (("mean_abs_corr", +1), ("lambda_max_share", +1), ("participation_ratio", -1))


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
# evoked vs induced
# ----------------------------------------------------------------------------


def split_evoked(xc0: np.ndarray, mask: np.ndarray) -> dict:
    """Split centred waves into the evoked (time-locked) and the induced part.

    Parameters
    ----------
    xc0 : ndarray of float64, shape (S, T, C)
        Per-sample centred waves, zeros outside ``mask``.
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
    n_t = mask.sum(axis=0).astype(np.float64)
    ev = xc0.sum(axis=0) / np.maximum(n_t, 1.0)[:, None]
    ev[n_t < 2] = 0.0
    full = bool(mask.all())
    m = mask[:, :, None]
    ind = xc0 - ev[None]
    if not full:
        ind *= m
    n_s = np.maximum(mask.sum(axis=1), 1).astype(np.float64)[:, None, None]
    mean = ind.sum(axis=1, keepdims=True) / n_s
    if full:
        ind -= mean
    else:
        ind -= mean * m
    ss_tot = np.einsum("stc,stc->c", xc0, xc0)
    ss_ind = np.einsum("stc,stc->c", ind, ind)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(ss_tot > 0, 1.0 - ss_ind / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)
    w = mask & (n_t[None, :] >= 2)
    inv_n = 1.0 / np.maximum(n_t, 1.0)
    chance = float(np.broadcast_to(inv_n[None, :], (S, T))[w].mean()) if w.any() else float("nan")
    return {"induced": ind, "evoked": ev, "share": share, "chance": chance}


# ----------------------------------------------------------------------------
# order parameters from Gram matrices, surrogates, bootstrap
# ----------------------------------------------------------------------------


def unit_columns(xc0: np.ndarray, mask: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Centred waves with every channel scaled to unit total sum of squares, as (C, S, T').

    Restricted to the steps ``[min start, max stop)`` of the mask, so that
    ``Z.reshape(C, -1) @ Z.reshape(C, -1).T`` is the correlation matrix and
    ``Z[:, s] @ Z[:, s].T`` is sample s's share of it. Channels without
    variance stay zero.
    """
    steps = np.flatnonzero(mask.any(axis=0))
    a, b = (int(steps[0]), int(steps[-1]) + 1) if steps.size else (0, 0)
    Z = np.array(np.moveaxis(xc0[:, a:b], 2, 0), dtype=dtype, order="C")  # (C, S, T')
    if Z.size == 0:
        return Z
    flat = Z.reshape(Z.shape[0], -1)
    ss = np.einsum("ij,ij->i", flat, flat, dtype=np.float64)
    inv = np.zeros_like(ss)
    inv[ss > 0] = 1.0 / np.sqrt(ss[ss > 0])
    Z *= inv.astype(dtype)[:, None, None]
    return Z


def gram(A: np.ndarray) -> np.ndarray:
    """``A @ A.T`` of a C-contiguous (C, N) float array by BLAS syrk (half the work of a matmul)."""
    A = np.ascontiguousarray(A)
    f = _blas.dsyrk if A.dtype == np.float64 else _blas.ssyrk
    G = f(1.0, A.T, trans=1)  # A.T is Fortran-contiguous (N, C): no copy
    iu = np.triu_indices(G.shape[0], 1)
    G[(iu[1], iu[0])] = G[iu]
    return G


def _lambda_max(R: np.ndarray, v0: np.ndarray | None, iters: int) -> np.ndarray:
    """Largest eigenvalue of symmetric PSD matrices R (n, C, C): power iteration, Rayleigh quotient."""
    n, C, _ = R.shape
    v = np.ones((n, C, 1), R.dtype) if v0 is None else np.array(np.broadcast_to(
        np.asarray(v0, R.dtype).reshape(-1, C)[..., None] if np.ndim(v0) == 2 else np.asarray(v0, R.dtype)[:, None],
        (n, C, 1)))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(iters):
        w = np.matmul(R, v)
        nrm = np.linalg.norm(w, axis=1, keepdims=True)
        v = w / np.where(nrm > 0, nrm, 1.0)
    return (v * np.matmul(R, v)).sum(axis=(1, 2))


def stats_from_gram(G: np.ndarray, v0=None, exact: bool = False, iters: int = 10) -> dict:
    """Order parameters (mean |R|, lambda_max / C, PR) of a batch of cross-product matrices.

    Parameters
    ----------
    G : ndarray, shape (n, C, C)
        Cross-product matrices; they are normalised to unit diagonal here
        (channels with zero diagonal must be excluded by the caller).
    v0 : ndarray, shape (C,) or (n, C), optional
        Start vector(s) of the power iteration (default ones).
    exact : bool, optional
        Use ``eigvalsh`` instead of power iteration for ``lambda_max``.
    iters : int, optional
        Power iterations.

    Returns
    -------
    dict of ndarray (n,)
        ``mean_abs_corr``, ``lambda_max_share``, ``participation_ratio``
        (``C**2 / sum R_ij**2``, equal to the eigenvalue definition for unit
        diagonal).
    """
    G = np.asarray(G)
    n, C, _ = G.shape
    d = 1.0 / np.sqrt(np.maximum(np.einsum("nii->ni", G), np.finfo(np.float32).tiny))
    R = G * d[:, :, None] * d[:, None, :]
    absum = np.abs(R).sum(axis=(1, 2), dtype=np.float64) - C
    mac = absum / (C * (C - 1)) if C > 1 else np.full(n, np.nan)
    fro = np.square(R).sum(axis=(1, 2), dtype=np.float64)
    # exact: in the dtype given (float32 halves the cost; its error, ~1e-6 of lambda, is far below any CI)
    lam = np.linalg.eigvalsh(R)[:, -1] if exact else _lambda_max(R, v0, iters)
    return {"mean_abs_corr": np.asarray(mac, np.float64), "lambda_max_share": np.asarray(lam, np.float64) / C,
            "participation_ratio": (C * C) / fro}


def surrogate_order_parameters(Z: np.ndarray, n_surrogates: int, rng: np.random.Generator,
                               n_keep_slots: int = 0) -> dict:
    """Sample-shuffle surrogates: correlation matrices and order parameters.

    Parameters
    ----------
    Z : ndarray, shape (C, S, T)
        Output of :func:`unit_columns` (kept channels only; float32 advised).
    n_surrogates : int
        B.
    rng : numpy Generator
    n_keep_slots : int, optional
        For the first ``n_keep_slots`` surrogates also return the per-slot
        cross products (for the paired bootstrap) and their leading
        eigenvectors.

    Returns
    -------
    dict
        ``R`` (B, C, C) float64 correlation matrices, ``stats`` (dict of (B,)
        arrays, see :func:`stats_from_gram`, exact eigenvalues),
        ``slots`` (n_keep_slots, S, C, C) float32, ``v0`` (n_keep_slots, C),
        ``perms`` (B, C, S): channel k of slot s comes from sample
        ``perms[b, k, s]``.
    """
    C, S, T = Z.shape
    B = int(n_surrogates)
    nk = min(int(n_keep_slots), B)
    perms = np.argsort(rng.random((B, C, S)), axis=2)
    Rs = np.empty((B, C, C))
    slots = np.empty((nk, S, C, C), np.float32)
    rows = np.arange(C)[:, None]
    for b in range(B):
        Zb = Z[rows, perms[b]]  # (C, S, T): one gather per surrogate
        if b < nk:
            slots[b] = np.matmul(Zb.transpose(1, 0, 2), Zb.transpose(1, 2, 0))
            Rs[b] = slots[b].sum(axis=0, dtype=np.float64)
        else:
            Rs[b] = gram(Zb.reshape(C, S * T))
    if B:
        w = np.linalg.eigvalsh(Rs)
        st = {"mean_abs_corr": (np.abs(Rs).sum(axis=(1, 2)) - np.einsum("nii->n", np.abs(Rs))) / (C * (C - 1)),
              "lambda_max_share": w[:, -1] / C,
              "participation_ratio": np.einsum("nii->n", Rs) ** 2 / np.square(Rs).sum(axis=(1, 2))}
        v0 = np.linalg.eigh(Rs[:nk])[1][:, :, -1].astype(np.float32)  # signed: see excess_with_ci
    else:
        st = {k: np.zeros(0) for k, _ in ORDER_KEYS}
        v0 = np.zeros((0, C), np.float32)
    return {"R": Rs, "stats": st, "slots": slots, "v0": v0, "perms": perms}


def _weights(idx: np.ndarray, S: int) -> np.ndarray:
    """Index resamples (..., m) -> count weights (prod(...), S)."""
    flat = np.asarray(idx, dtype=np.int64).reshape(-1, np.shape(idx)[-1])
    n = flat.shape[0]
    W = np.zeros((n, S), np.float32)
    np.add.at(W, (np.repeat(np.arange(n), flat.shape[1]), flat.ravel()), 1.0)
    return W


def sample_products(Z: np.ndarray) -> np.ndarray:
    """Per-sample cross products ``Z[:, s] @ Z[:, s].T`` of :func:`unit_columns` output, shape (S, C, C).

    Their sum over samples is the correlation matrix.
    """
    return np.matmul(Z.transpose(1, 0, 2), Z.transpose(1, 2, 0))


def excess_with_ci(Z: np.ndarray, observed: dict, surrogate: dict, rng: np.random.Generator,
                   n_boot: int = 200, confidence: float = 0.95, alpha: float = 0.05,
                   v0: np.ndarray | None = None, P: np.ndarray | None = None, method: str = "jackknife") -> dict:
    """Observed order parameters against their sample-shuffle surrogates.

    Parameters
    ----------
    Z : ndarray, shape (C, S, T)
        :func:`unit_columns` of the (induced) waves, kept channels.
    observed : dict
        Observed order parameters (floats).
    surrogate : dict
        Output of :func:`surrogate_order_parameters` (with ``slots``).
    rng : numpy Generator
    n_boot : int, optional
        Bootstrap resamples of ``method="bca"`` (0: no CI).
    confidence : float, optional
    alpha : float, optional
        Level of the surrogate rank test.
    v0 : ndarray (C,), optional
        Leading eigenvector of the observed R (start of the power iteration).
    P : ndarray (S, C, C), optional
        :func:`sample_products` of ``Z`` when already computed.
    method : {"jackknife", "bca"}, optional
        ``"jackknife"`` (default): delete-one-sample jackknife standard error of the paired excess,
        interval ``excess +- t_{S-1} * se``. ``"bca"``: BCa bootstrap over samples. Decided: resampling
        samples *with replacement* lowers the effective number of samples in every replicate, which
        raises the surrogate's noise floor more than the observed |R| of coupled channels, so the
        bootstrap distribution of the excess sits below the estimate and BCa's bias correction moves
        the whole interval above it (measured on the quick run: 0.21 [0.21, 0.211], 0.40 [0.40, 0.403]).
        Leaving one sample out keeps the effective size, so the jackknife interval is centred on the
        estimate.

    Returns
    -------
    dict
        For each of ``mean_abs_corr``, ``lambda_max_share``,
        ``participation_ratio``: ``observed``, ``surrogate_mean``,
        ``surrogate_sd``, ``surrogate_q95`` (the 95th percentile in the
        coherent direction: 5th for PR), ``excess``, ``z`` (excess / surrogate SD),
        ``ci`` ([lo, hi] or None, clipped to the quantity's range), ``ci_method``
        ("jackknife", "BCa", or "basic" where BCa is degenerate, e.g. when every
        replicate lies on one side of the estimate; None), ``se`` and ``loo`` (S,)
        (jackknife standard error and leave-one-sample-out excesses, None
        otherwise), ``p_value`` (unfloored Gaussian tail, :func:`gaussian_tail`),
        ``p_rank`` (rank test, bounded below by ``min_p_value`` = 1 / (B + 1)),
        ``significant`` (``p_value < alpha`` and the CI excludes 0); plus
        ``n_surrogates``, ``n_boot``, ``n_ci_surrogates``, ``min_p_value``.
    """
    C, S, T = Z.shape
    B = surrogate["R"].shape[0]
    slots = surrogate["slots"]
    out: dict = {"n_surrogates": int(B), "n_boot": int(n_boot), "n_ci_surrogates": int(slots.shape[0]),
                 "confidence": confidence, "alpha": alpha, "min_p_value": 1.0 / (B + 1)}
    ci = {k: None for k, _ in ORDER_KEYS}
    how = {k: None for k, _ in ORDER_KEYS}
    loo = {k: None for k, _ in ORDER_KEYS}
    ses = {k: None for k, _ in ORDER_KEYS}
    if method not in ("jackknife", "bca"):
        raise ValueError(f"method must be 'jackknife' or 'bca', not {method!r}")
    if method == "jackknife" and S >= 3 and slots.shape[0] > 0:
        Pf = (sample_products(Z) if P is None else P).astype(np.float32, copy=False).reshape(S, -1)
        Qf = slots.reshape(slots.shape[0], S, -1)
        vs = surrogate["v0"]
        keep = np.array([np.delete(np.arange(S), s) for s in range(S)])  # (S, S-1): leave sample s out
        Wt = _weights(keep, S)
        ex = _EXACT_JACKKNIFE
        go = stats_from_gram((Wt @ Pf).reshape(-1, C, C), v0=v0, exact=ex, iters=20)
        gs = [stats_from_gram((Wt @ q).reshape(-1, C, C), v0=vs[i], exact=ex, iters=20) for i, q in enumerate(Qf)]
        tq = float(_stats.t.ppf(0.5 + confidence / 2, S - 1))
        for k, _ in ORDER_KEYS:
            jk = np.asarray(go[k], dtype=np.float64) - np.mean([g[k] for g in gs], axis=0)
            se = float(np.sqrt((S - 1) / S * np.sum((jk - jk.mean()) ** 2)))
            est = float(observed[k]) - float(np.mean(surrogate["stats"][k]))
            if np.isfinite(se) and np.isfinite(est):
                ci[k], how[k] = [est - tq * se, est + tq * se], "jackknife"
                loo[k], ses[k] = jk, se
    if method == "bca" and n_boot and S >= 3 and slots.shape[0] > 0:
        Pf = (sample_products(Z) if P is None else P).astype(np.float32, copy=False).reshape(S, -1)
        Qf = slots.reshape(slots.shape[0], S, -1)
        vs = surrogate["v0"]

        def statistic(idx, axis=-1):
            Wt = _weights(idx, S)
            go = stats_from_gram((Wt @ Pf).reshape(-1, C, C), v0=v0)
            gs = [stats_from_gram((Wt @ q).reshape(-1, C, C), v0=vs[i]) for i, q in enumerate(Qf)]
            res = np.stack([go[k] - np.mean([g[k] for g in gs], axis=0) for k, _ in ORDER_KEYS])
            return res.reshape((3,) + np.shape(idx)[:-1])

        theta_b = statistic(np.arange(S)[None, :])[:, 0]  # the bootstrap statistic on the data itself
        try:
            with warnings.catch_warnings():  # degenerate BCa -> NaN limits -> basic interval below
                warnings.simplefilter("ignore")
                bs = _stats.bootstrap((np.arange(S),), statistic, n_resamples=int(n_boot), vectorized=True,
                                      method="BCa", confidence_level=confidence, rng=rng, batch=100)
            lo, hi = np.asarray(bs.confidence_interval.low), np.asarray(bs.confidence_interval.high)
            dist = np.asarray(bs.bootstrap_distribution)
            q = (1 - confidence) / 2
            for i, (k, _) in enumerate(ORDER_KEYS):
                # shift to the reported estimate (all B surrogates, exact eigenvalues)
                shift = (float(observed[k]) - float(np.mean(surrogate["stats"][k]))) - theta_b[i]
                if np.isfinite(lo[i]) and np.isfinite(hi[i]):
                    ci[k], how[k] = [float(lo[i] + shift), float(hi[i] + shift)], "BCa"
                elif np.isfinite(dist[i]).all():
                    qlo, qhi = np.quantile(dist[i], [q, 1 - q])
                    ci[k] = [float(2 * theta_b[i] - qhi + shift), float(2 * theta_b[i] - qlo + shift)]
                    how[k] = "basic"
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            pass
    for k, sign in ORDER_KEYS:
        obs = float(observed[k])
        sv = np.asarray(surrogate["stats"][k], dtype=np.float64)
        mean = float(sv.mean()) if B else float("nan")
        n_ge = int(np.sum(sign * sv >= sign * obs)) if B else 0
        p_rank = (1 + n_ge) / (B + 1)
        sd = float(sv.std(ddof=1)) if B > 1 else float("nan")
        z = (obs - mean) / sd if B > 1 and sd > 0 else (
            float("inf") * np.sign(obs - mean) if B > 1 and obs != mean else float("nan"))
        p = gaussian_tail(sign * z, B)
        c = ci[k]
        if c is not None:  # an interval of the excess never leaves the quantity's range
            lo_r, hi_r = _RANGE[k](C)
            c = [float(np.clip(c[0], lo_r - mean, hi_r - mean)), float(np.clip(c[1], lo_r - mean, hi_r - mean))]
        ci_ok = c is not None and (c[0] > 0 if sign > 0 else c[1] < 0)
        out[k] = {"observed": obs, "surrogate_mean": mean, "surrogate_sd": sd,
                  "surrogate_q95": float(np.quantile(sv, 0.95 if sign > 0 else 0.05,
                                                     method="higher" if sign > 0 else "lower")) if B else float("nan"),
                  "excess": obs - mean, "z": float(z), "ci": c, "ci_method": how[k], "se": ses[k],
                  "loo": loo[k], "p_value": float(p), "p_rank": float(p_rank),
                  "significant": bool(B > 0 and p < alpha and ci_ok)}
    return out


#: Exact eigenvalues inside the jackknife (True) or 20 power iterations from the full-data signed
#: leading eigenvector (False, default: the same values to ~1e-6, 5x cheaper).
_EXACT_JACKKNIFE = False

#: Range each order parameter can take, as a function of the number of channels C.
_RANGE = {"mean_abs_corr": lambda C: (0.0, 1.0), "lambda_max_share": lambda C: (0.0, 1.0),
          "participation_ratio": lambda C: (1.0, float(C))}


def gaussian_tail(z_coherent: float, n_surrogates: int) -> float:
    """Unfloored one-sided p-value of an excess from the Gaussian law of its B surrogates.

    ``z_coherent`` is ``z`` signed so that positive means "more coherent". Under the null the
    observed statistic is one more draw of the surrogates' law; with that law normal,
    ``z / sqrt(1 + 1/B)`` follows Student's t with ``B - 1`` degrees of freedom. NaN when
    ``B < 2`` or ``z`` is NaN.
    """
    B = int(n_surrogates)
    if B < 2 or not np.isfinite(z_coherent) and not np.isinf(z_coherent):
        return float("nan")
    return float(_stats.t.sf(z_coherent / np.sqrt(1.0 + 1.0 / B), B - 1))


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
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=2, keepdims=True))
    return (x / np.where(rms > 0, rms, 1.0)).astype(dt, copy=False)


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
