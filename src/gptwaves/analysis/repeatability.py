"""Repeatability and plasticity: how alike two recordings of the same tap are, against the
baselines of permuted and mismatched channels (docs/method.md, Coherence against its floors).

Pure functions on numpy arrays.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from . import coherence_nulls as _nulls
from .wave_arrays import _rowwise_pearson

__all__ = ["matrix_similarity", "acf_profile_similarity", "compare_recordings"]


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
