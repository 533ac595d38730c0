"""The sample-shuffle surrogate of the coherence order parameters and the interval of the excess
over it (docs/method.md, Coherence against its floors).

Pure functions on numpy arrays (numpy / scipy only). The decisions (surrogate construction,
jackknife or BCa interval of the paired excess, z, the Gaussian-tail and rank p-values) are
stated in :mod:`gptwaves.analysis.coherence_nulls`, which re-exports every public name here.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as _stats
from scipy.linalg import blas as _blas

from ..schema import ORDER_PARAMETERS
from .wave_arrays import _channels_first

__all__ = ["ORDER_KEYS", "unit_columns", "gram", "sample_products", "stats_from_gram", "surrogate_order_parameters",
           "surrogate_slots", "excess_with_ci", "gaussian_tail"]

#: Order parameters handled by the surrogate test, with the sign of "more coherent".
ORDER_KEYS = tuple((key, sign) for key, _label, _rule, sign in ORDER_PARAMETERS)  # declared in gptwaves.schema


def unit_columns(xc0: np.ndarray, mask: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Centred waves with every channel scaled to unit total sum of squares, as (C, S, T').

    Restricted to the steps ``[min start, max stop)`` of the mask, so that
    ``Z.reshape(C, -1) @ Z.reshape(C, -1).T`` is the correlation matrix and
    ``Z[:, s] @ Z[:, s].T`` is sample s's share of it. Channels without
    variance stay zero.
    """
    steps = np.flatnonzero(mask.any(axis=0))
    a, b = (int(steps[0]), int(steps[-1]) + 1) if steps.size else (0, 0)
    Z = _channels_first(xc0, a, b, dtype)  # (C, S, T')
    if Z.size == 0:
        return Z
    flat = Z.reshape(Z.shape[0], -1)
    ss = np.einsum("ij,ij->i", flat, flat, dtype=np.float64)
    inv = np.zeros_like(ss)
    inv[ss > 0] = 1.0 / np.sqrt(ss[ss > 0])
    Z *= inv.astype(dtype)[:, None, None]
    return Z


def gram(A: np.ndarray) -> np.ndarray:
    """``A @ A.T`` of a (C, N) float array by BLAS syrk (half the work of a matmul); no copy when ``A``
    is C-contiguous or the transpose of a C-contiguous array."""
    f = _blas.dsyrk if A.dtype == np.float64 else _blas.ssyrk
    if A.flags.f_contiguous and not A.flags.c_contiguous:  # the transpose of a C-contiguous (N, C) array
        G = f(1.0, A, trans=0)
    else:
        A = np.ascontiguousarray(A)
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


def stats_from_gram(G: np.ndarray, v0=None, exact: bool = False, iters: int = 10, eigenvalues: bool = True) -> dict:
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
    eigenvalues : bool, optional
        False: ``lambda_max_share`` is NaN (no power iteration or eigendecomposition; the other
        two are the same).

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
    if not eigenvalues:
        lam = np.full(n, np.nan)
    else:
        lam = np.linalg.eigvalsh(R)[:, -1] if exact else _lambda_max(R, v0, iters)
    return {"mean_abs_corr": np.asarray(mac, np.float64), "lambda_max_share": np.asarray(lam, np.float64) / C,
            "participation_ratio": (C * C) / fro}


def surrogate_order_parameters(Z: np.ndarray, n_surrogates: int, rng: np.random.Generator,
                               n_keep_slots: int = 0, eigenvalues: bool = True) -> dict:
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
    eigenvalues : bool, optional
        False: ``lambda_max_share`` is NaN and ``R`` is not returned (None), for callers that
        read only mean |R| and the participation ratio (the same values, without an
        eigendecomposition and a (B, C, C) array; requires ``n_keep_slots == 0``).

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
    perms = _draw_perms(rng, B, C, S)
    if not eigenvalues:
        if nk:
            raise ValueError("surrogate slots need the eigenvalues")
        return {"R": None, "stats": _lean_stats(Z, perms), "slots": np.empty((0, S, C, C), np.float32),
                "v0": np.zeros((0, C), np.float32), "perms": perms}
    Rs = np.empty((B, C, C))
    slots = np.empty((nk, S, C, C), np.float32)
    rows = np.arange(C)[:, None]
    for b in range(B):
        Zb = Z[rows, perms[b]]  # (C, S, T): one gather per surrogate
        if b < nk:
            slots[b] = sample_products(Zb)
            Rs[b] = slots[b].sum(axis=0, dtype=np.float64)
        else:
            Rs[b] = gram(Zb.reshape(C, S * T))
    if B:
        w = np.linalg.eigvalsh(Rs)
        st = {**_abs_mean_and_pr(Rs), "lambda_max_share": w[:, -1] / C}
        v0 = np.linalg.eigh(Rs[:nk])[1][:, :, -1].astype(np.float32)  # signed: see excess_with_ci
    else:
        st = {k: np.zeros(0) for k, _ in ORDER_KEYS}
        v0 = np.zeros((0, C), np.float32)
    return {"R": Rs, "stats": st, "slots": slots, "v0": v0, "perms": perms}


def surrogate_slots(Z: np.ndarray, n_slots: int, rng: np.random.Generator) -> np.ndarray:
    """The per-sample cross products of the first ``n_slots`` sample-shuffle surrogates, shape
    (n_slots, S, C, C) float32: the ``slots`` of ``surrogate_order_parameters(Z, n_slots, rng,
    n_keep_slots=n_slots)`` from the same draws, without their order parameters and eigenvectors
    (for callers that read only mean |R| and the participation ratio of the jackknife)."""
    C, S, _ = Z.shape
    perms = _draw_perms(rng, int(n_slots), C, S)
    rows = np.arange(C)[:, None]
    slots = np.empty((int(n_slots), S, C, C), np.float32)
    for b in range(int(n_slots)):
        slots[b] = sample_products(Z[rows, perms[b]])
    return slots


def _draw_perms(rng: np.random.Generator, B: int, C: int, S: int) -> np.ndarray:
    """The sample permutations of ``B`` surrogates, (B, C, S): channel k of slot s of surrogate b comes
    from sample ``perms[b, k, s]``."""
    return np.argsort(rng.random((B, C, S)), axis=2)


def _abs_mean_and_pr(Rs: np.ndarray) -> dict:
    """Mean |R_ij| over i != j and the participation ratio ``(tr R)^2 / sum R_ij^2`` of correlation
    matrices ``Rs`` (B, C, C), as (B,) arrays."""
    C = Rs.shape[-1]
    return {"mean_abs_corr": (np.abs(Rs).sum(axis=(1, 2)) - np.einsum("nii->n", np.abs(Rs))) / (C * (C - 1)),
            "participation_ratio": np.einsum("nii->n", Rs) ** 2 / np.square(Rs).sum(axis=(1, 2))}


def _lean_stats(Z: np.ndarray, perms: np.ndarray) -> dict:
    """Mean |R| and participation ratio of the surrogates ``perms`` of ``Z`` as
    :func:`surrogate_order_parameters` computes them, one correlation matrix at a time."""
    C, B = Z.shape[0], perms.shape[0]
    rows = np.arange(C)[:, None]
    parts = [_abs_mean_and_pr(gram(Z[rows, perms[b]].reshape(C, -1)).astype(np.float64)[None]) for b in range(B)]
    return {"mean_abs_corr": np.array([p["mean_abs_corr"][0] for p in parts]),
            "participation_ratio": np.array([p["participation_ratio"][0] for p in parts]),
            "lambda_max_share": np.full(B, np.nan)}


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
                   v0: np.ndarray | None = None, P: np.ndarray | None = None, method: str = "jackknife",
                   eigenvalues: bool = True) -> dict:
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
    eigenvalues : bool, optional
        False: the jackknife leaves ``lambda_max_share`` out (no CI for it; for callers whose
        observed value of it is NaN, where its interval is never finite anyway).

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
    B = int(np.size(surrogate["stats"]["mean_abs_corr"]))
    slots = surrogate["slots"]
    out: dict = {"n_surrogates": int(B), "n_boot": int(n_boot), "n_ci_surrogates": int(slots.shape[0]),
                 "confidence": confidence, "alpha": alpha, "min_p_value": 1.0 / (B + 1)}
    if method not in ("jackknife", "bca"):
        raise ValueError(f"method must be 'jackknife' or 'bca', not {method!r}")
    ci = {k: None for k, _ in ORDER_KEYS}
    how = {k: None for k, _ in ORDER_KEYS}
    loo = {k: None for k, _ in ORDER_KEYS}
    ses = {k: None for k, _ in ORDER_KEYS}
    if method == "jackknife" and S >= 3 and slots.shape[0] > 0:
        for k, (c, se, jk) in _jackknife_ci(Z, observed, surrogate, confidence, v0, P, eigenvalues).items():
            ci[k], how[k], loo[k], ses[k] = c, "jackknife", jk, se
    if method == "bca" and n_boot and S >= 3 and slots.shape[0] > 0:
        for k, (c, kind) in _bca_ci(Z, observed, surrogate, rng, n_boot, confidence, v0, P).items():
            ci[k], how[k] = c, kind
    for k, sign in ORDER_KEYS:
        out[k] = _excess_entry(float(observed[k]), np.asarray(surrogate["stats"][k], dtype=np.float64), sign,
                               _RANGE[k](C), ci[k], alpha)
        out[k].update(ci_method=how[k], se=ses[k], loo=loo[k])
    return out


def _jackknife_ci(Z, observed, surrogate, confidence, v0, P, eigenvalues: bool = True) -> dict:
    """Delete-one-sample jackknife CI of the paired excess (``method="jackknife"`` of
    :func:`excess_with_ci`): per order parameter ``(ci, se, loo)``, where both are finite."""
    C, S, T = Z.shape
    slots = surrogate["slots"]
    Pf = (sample_products(Z) if P is None else P).astype(np.float32, copy=False).reshape(S, -1)
    Qf = slots.reshape(slots.shape[0], S, -1)
    vs = surrogate["v0"]
    keep = np.array([np.delete(np.arange(S), s) for s in range(S)])  # (S, S-1): leave sample s out
    Wt = _weights(keep, S)
    ex = _EXACT_JACKKNIFE
    go = stats_from_gram((Wt @ Pf).reshape(-1, C, C), v0=v0, exact=ex, iters=20, eigenvalues=eigenvalues)
    gs = [stats_from_gram((Wt @ q).reshape(-1, C, C), v0=vs[i] if eigenvalues else None, exact=ex, iters=20,
                          eigenvalues=eigenvalues) for i, q in enumerate(Qf)]
    tq = float(_stats.t.ppf(0.5 + confidence / 2, S - 1))
    res = {}
    for k, _ in ORDER_KEYS:
        jk = np.asarray(go[k], dtype=np.float64) - np.mean([g[k] for g in gs], axis=0)
        se = float(np.sqrt((S - 1) / S * np.sum((jk - jk.mean()) ** 2)))
        est = float(observed[k]) - float(np.mean(surrogate["stats"][k]))
        if np.isfinite(se) and np.isfinite(est):
            res[k] = ([est - tq * se, est + tq * se], se, jk)
    return res


def _bca_ci(Z, observed, surrogate, rng, n_boot, confidence, v0, P) -> dict:
    """Paired BCa bootstrap CI of the excess (``method="bca"`` of :func:`excess_with_ci`): per order
    parameter ``(ci, "BCa")``, or ``(ci, "basic")`` where BCa is degenerate; {} when it fails."""
    C, S, T = Z.shape
    slots = surrogate["slots"]
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
    res = {}
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
                res[k] = ([float(lo[i] + shift), float(hi[i] + shift)], "BCa")
            elif np.isfinite(dist[i]).all():
                qlo, qhi = np.quantile(dist[i], [q, 1 - q])
                res[k] = ([float(2 * theta_b[i] - qhi + shift), float(2 * theta_b[i] - qlo + shift)], "basic")
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        pass
    return res


def _excess_entry(obs: float, sv: np.ndarray, sign: int, value_range: tuple, c, alpha: float) -> dict:
    """One order parameter's entry of :func:`excess_with_ci`: the observed value against its B
    surrogate values ``sv`` (``sign`` +1 when larger is more coherent), with the CI ``c`` of the
    excess clipped to the quantity's range."""
    B = sv.size
    mean = float(sv.mean()) if B else float("nan")
    n_ge = int(np.sum(sign * sv >= sign * obs)) if B else 0
    p_rank = (1 + n_ge) / (B + 1)
    sd = float(sv.std(ddof=1)) if B > 1 else float("nan")
    z = (obs - mean) / sd if B > 1 and sd > 0 else (
        float("inf") * np.sign(obs - mean) if B > 1 and obs != mean else float("nan"))
    p = gaussian_tail(sign * z, B)
    if c is not None:  # an interval of the excess never leaves the quantity's range
        lo_r, hi_r = value_range
        c = [float(np.clip(c[0], lo_r - mean, hi_r - mean)), float(np.clip(c[1], lo_r - mean, hi_r - mean))]
    ci_ok = c is not None and (c[0] > 0 if sign > 0 else c[1] < 0)
    return {"observed": obs, "surrogate_mean": mean, "surrogate_sd": sd,
            "surrogate_q95": float(np.quantile(sv, 0.95 if sign > 0 else 0.05,
                                               method="higher" if sign > 0 else "lower")) if B else float("nan"),
            "excess": obs - mean, "z": float(z), "ci": c, "ci_method": None, "se": None,
            "loo": None, "p_value": float(p), "p_rank": float(p_rank),
            "significant": bool(B > 0 and p < alpha and ci_ok)}


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
