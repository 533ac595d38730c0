"""Hierarchical clustering of channels and its surrogate gate (docs/method.md, Coherence and
Coherence against its floors).

Pure functions on numpy arrays: channels are clustered on the distance ``1 - |R|`` of their
correlation matrix (see :mod:`gptwaves.analysis.correlation`).
"""

from __future__ import annotations

import numpy as np
from scipy.cluster import hierarchy as _hier
from scipy.spatial.distance import squareform as _squareform

__all__ = ["silhouette_score", "cluster_channels", "best_silhouette"]


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
