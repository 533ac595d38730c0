"""Coherence of one tap with its floors: correlation, order parameters, evoked share, the
sample-shuffle surrogate excess, the gain-normalised repeat and the gated clustering
(docs/method.md, Coherence and Coherence against its floors).

Pure functions on numpy arrays; the data conventions are those of
:mod:`gptwaves.analysis.wave_arrays`, the null models those of
:mod:`gptwaves.analysis.coherence_nulls`.
"""

from __future__ import annotations

import numpy as np

from . import coherence_nulls as _nulls
from .clustering import _gated_clustering, best_silhouette
from .correlation import _corr_from_centered, order_parameters
from .wave_arrays import _CONST_RTOL, _absmax, _as_mask, _as_waves, _bounds, _center0

__all__ = ["coherence_with_nulls", "induced_columns", "gain_columns"]


def induced_columns(xc0, mask, var, n):
    """Induced part of centred waves as float32 unit columns (C', S, T') of the channels that keep
    induced variance: (Z, ok mask (C,), evoked dict of `split_evoked` without ``induced``).

    Parameters
    ----------
    xc0 : ndarray (S, T, C)
        Per-sample centred waves, zeros outside ``mask``.
    mask : ndarray of bool (S, T)
    var : ndarray (C,)
        Each channel's variance over the masked steps.
    n : int
        Masked steps.
    """
    ev = _nulls.split_evoked(xc0, mask)
    ind = ev.pop("induced")
    # a channel that is purely evoked has no induced variance: 0 correlations, like constant channels
    ivar = np.square(ind).sum(axis=(0, 1))
    ind_ok = ivar > (_CONST_RTOL**2) * var * n
    Zk = _nulls.unit_columns(ind[:, :, ind_ok] if not ind_ok.all() else ind, mask, dtype=np.float32)
    return Zk, ind_ok, ev


def _induced_units(xc0, mask, var, n):
    """Induced part of centred waves as unit columns: (Z, P, R_induced of the kept ones, ok mask, evoked dict)."""
    Zk, ind_ok, ev = induced_columns(xc0, mask, var, n)
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
    """:func:`coherence_with_nulls` on centred, zero-filled waves ``xc0`` with the raw channels' largest
    absolute values ``absmax`` (``analyze_tap`` centres once for every part); ``x_raw``: the raw
    waves for the gain-normalised repeat (None: no repeat)."""
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

    # the same after gain normalisation (docs/method.md, "Coherence against its floors": shared gain)
    gain = None
    if x_raw is not None and kept.size >= 1:
        gain = _gain_normalised(x_raw, kept, mask, n, surrogate, seed, n_surrogates, n_ci_surrogates, n_boot, alpha,
                                ci_method, k, k_range)
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



def gain_columns(x_raw, kept, mask, n, dtype=np.float64):
    """The gain-normalised waves of the kept channels, centred per sample (docs/method.md, "Coherence
    against its floors": shared gain): (xg0 (S, T, C_kept), variance of each over the masked steps,
    mask of those with variance).

    Parameters
    ----------
    x_raw : ndarray (S, T, C)
    kept : ndarray of int
        Channels that are not constant.
    mask : ndarray of bool (S, T)
    n : int
        Masked steps.
    dtype : numpy dtype, optional
        Of the centred waves (float64 in the stages).
    """
    xg = _nulls.gain_normalise(np.asarray(x_raw)[:, :, kept])
    xg0 = _center0(xg, mask, dtype)
    del xg
    ng = np.square(xg0).sum(axis=(0, 1)) / n
    return xg0, ng, ng > 0


def _gain_normalised(x_raw, kept, mask, n, surrogate, seed, n_surrogates, n_ci_surrogates, n_boot, alpha, ci_method,
                     k, k_range) -> dict:
    """The order parameters and their surrogate test after gain normalisation, with the paired jackknife
    CI of raw minus normalised excess (docs/method.md, "Coherence against its floors": shared gain).

    Kept channels only, since a constant channel divided by a varying gain would no longer be constant.
    """
    xg0, ng, okg = gain_columns(x_raw, kept, mask, n)
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
    return {"order_parameters": op_g, "order_parameters_induced": op_gi, "surrogate": sur_g,
            "raw_minus_normalised": diff}

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
