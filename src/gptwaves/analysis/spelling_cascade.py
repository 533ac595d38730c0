"""The cascade relative risk of misspellings (a misspelling after a misspelling) with its
within-sample, within-position permutation null (docs/method.md, Spelling).

Pure functions on the word table of one checkpoint (see :func:`gptwaves.analysis.spelling.analyze_words`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

from .spelling_words import position_bins

__all__ = ["cascade", "cascade_null"]


def _rr(mm, pm, cm, pc):
    """RR = (mm / pm) / (cm / pc) (NaN where a denominator or cm is 0)."""
    mm, pm, cm, pc = (np.asarray(v, dtype=float) for v in (mm, pm, cm, pc))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (mm / pm) / (cm / pc)
    return np.where(np.isfinite(r), r, np.nan)


def _pair_counts(word_sample, word_mis, n_samples: int):
    s = np.asarray(word_sample, dtype=np.int64)
    m = np.asarray(word_mis, dtype=bool)
    same = s[1:] == s[:-1]
    prev, cur, ps = m[:-1][same], m[1:][same], s[1:][same]

    def per(mask):
        return np.bincount(ps[mask], minlength=n_samples).astype(float)

    return per(prev & cur), per(prev), per(~prev & cur), per(~prev)


def cascade(word_sample, word_mis, n_samples: int, n_boot: int = 2000, seed: int = 0,
            ci: float = 0.95) -> dict:
    """Relative risk of a misspelling after a misspelling, with its BCa CI.

    ``RR = P(misspelled | previous word misspelled) / P(misspelled | previous word correct)``
    over pairs of consecutive counted words of the same sample. The CI resamples samples
    (`scipy.stats.bootstrap`, paired per-sample pair counts, BCa).

    Returns
    -------
    dict
        ``rr``, ``rr_ci``, ``p_mis_given_prev_mis``, ``p_mis_given_prev_correct``,
        ``n_pairs``, ``n_pairs_prev_mis``, ``reason`` (None, or why RR is undefined).
    """
    mm, pm, cm, pc = _pair_counts(word_sample, word_mis, n_samples)
    T = [float(a.sum()) for a in (mm, pm, cm, pc)]
    nan = math.nan
    p_mm = T[0] / T[1] if T[1] else nan
    p_mc = T[2] / T[3] if T[3] else nan
    rr = float(_rr(T[0], T[1], T[2], T[3]))
    reason = None
    if T[1] + T[3] == 0:
        reason = "no pairs of consecutive words"
    elif T[1] == 0:
        reason = "no pair starts with a misspelled word"
    elif T[3] == 0:
        reason = "no pair starts with a correct word"
    elif T[2] == 0:
        reason = "no misspelling follows a correct word (RR infinite)"
    lo = hi = nan
    if reason is None and n_boot and n_boot > 0 and n_samples >= 2:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")

            def stat(a, b, c, d, axis=-1):
                return _rr(a.sum(axis), b.sum(axis), c.sum(axis), d.sum(axis))

            res = stats.bootstrap((mm, pm, cm, pc), stat, n_resamples=int(n_boot), paired=True,
                                  vectorized=True, confidence_level=ci, method="BCa",
                                  rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return dict(rr=rr, rr_ci=[lo, hi], p_mis_given_prev_mis=p_mm, p_mis_given_prev_correct=p_mc,
                n_pairs=int(T[1] + T[3]), n_pairs_prev_mis=int(T[1]), reason=reason)


def cascade_null(word_sample, word_mis, n_samples: int, n_perm: int = 1000, seed: int = 0,
                 max_chunk_elems: int = 4_000_000, word_start=None, block=None) -> np.ndarray:
    """RR under the within-sample, within-position permutation null.

    Each permutation shuffles the flags among the words of the same sample and the same
    position bin (`position_bins`; among all words of the sample when ``word_start`` is None):
    every sample keeps its word count n_i and misspelled count k_i, and every position bin of
    it keeps its own count, so neither per-sample heterogeneity nor an error rate that depends
    on the position looks like a cascade. Vectorised over groups and permutations: within each
    (sample, position bin) group the flags are drawn word by word by sequential sampling without
    replacement (P(flag) = remaining flags / remaining words), a loop over the index within the
    group, never over words or samples.

    Parameters
    ----------
    word_sample, word_mis : array_like, shape (W,)
        Sample index (non-decreasing, words of a sample in text order) and flag of every word.
    n_samples, n_perm : int
    seed : int
        The generator is ``numpy.random.default_rng([seed, 2])``.
    max_chunk_elems : int
        Memory bound: permutations are processed in chunks of about this many flags.
    word_start : array_like of int, shape (W,), optional
        Start character of every word in the counted part: respect the position bins
        (docs/method.md, Spelling). None: shuffle within samples only.
    block : array_like of int, shape (n_samples,), optional
        Independent data sets in one call (non-decreasing data-set index of every sample, e.g.
        simulated replicates): one RR per data set and permutation.

    Returns
    -------
    ndarray, shape (n_perm,) or (n_perm, n_blocks)
        Null RR values (NaN where undefined in a permutation).
    """
    s = np.asarray(word_sample, dtype=np.int64).ravel()
    m = np.asarray(word_mis, dtype=bool).ravel()
    rng = np.random.default_rng([int(seed), 2])
    W = s.size
    same = s[1:] == s[:-1] if W else np.zeros(0, bool)
    n_blocks = 1 if block is None else (int(np.max(block)) + 1 if np.size(block) else 0)
    out = np.full((int(n_perm), n_blocks), np.nan)
    if not same.any():
        return out[:, 0] if block is None else out
    if block is not None:  # rows of the (pair, permutation) arrays that start each data set
        row_block = np.asarray(block, dtype=np.int64).ravel()[s[:-1]]
        bounds = np.searchsorted(row_block, np.arange(n_blocks + 1))
        n_pairs = np.add.reduceat(same.astype(float), np.minimum(bounds[:-1], W - 2))
        n_pairs[np.diff(bounds) == 0] = 0.0
    else:
        n_pairs = np.array([float(np.count_nonzero(same))])
    same_col = same[:, None]
    done = 0
    for flags in _group_shuffles(s, m, n_perm, rng, word_start, max_chunk_elems):
        bc = flags.shape[1]
        prev = flags[:-1] & same_col  # pair rows: (word i, word i + 1) of the same sample
        nxt = flags[1:]
        both = prev & nxt
        after_cor = ~flags[:-1] & same_col & nxt
        if block is None:
            pm, mm, cm = (np.count_nonzero(x, axis=0)[None, :].astype(float) for x in (prev, both, after_cor))
        else:
            def per_block(x):
                r = np.add.reduceat(x.view(np.uint8), np.minimum(bounds[:-1], W - 2), axis=0, dtype=np.int64)
                r[np.diff(bounds) == 0] = 0
                return r.astype(float)

            pm, mm, cm = per_block(prev), per_block(both), per_block(after_cor)
        out[done:done + bc] = _rr(mm, pm, cm, n_pairs[:, None] - pm).T
        done += bc
    return out[:, 0] if block is None else out


def _group_shuffles(s: np.ndarray, m: np.ndarray, n_perm: int, rng, word_start, max_chunk_elems: int):
    """Yield the flags of ``n_perm`` within-(sample, position bin) permutations in chunks of shape
    (W, chunk) (a word's flags are one row), by sequential sampling without replacement inside
    each group (see `cascade_null`). The groups are sorted by size, so the groups still drawing at
    step j (the j-th word of every group) are a prefix and every step works on contiguous rows."""
    W = s.size
    key = s if word_start is None else s * (int(position_bins(word_start).max()) + 1) + position_bins(word_start)
    new_group = np.r_[True, key[1:] != key[:-1]]
    gid = np.cumsum(new_group) - 1
    g_start = np.flatnonzero(new_group)
    n_g = np.diff(np.r_[g_start, W])
    k_g = np.bincount(gid[m], minlength=n_g.size)
    j_w = np.arange(W) - g_start[gid]  # index of each word within its group
    order = np.argsort(-n_g, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    size_sorted = n_g[order]
    a_j = [int(np.count_nonzero(size_sorted > j)) for j in range(int(size_sorted[0]))]
    offsets = np.r_[0, np.cumsum(a_j)]
    pos = offsets[j_w] + rank[gid]  # row of each word in the step-major layout
    left0 = size_sorted.astype(np.float32)
    chunk = max(1, min(int(n_perm), max_chunk_elems // max(1, W)))
    done = 0
    while done < n_perm:
        bc = min(chunk, n_perm - done)
        rem = np.broadcast_to(k_g[order].astype(np.float32)[:, None], (n_g.size, bc)).copy()
        step_major = np.empty((W, bc), dtype=bool)
        for j, a in enumerate(a_j):
            cur = rng.random((a, bc), dtype=np.float32) * (left0[:a] - j)[:, None] < rem[:a]
            rem[:a] -= cur
            step_major[offsets[j]:offsets[j] + a] = cur
        yield step_major[pos]
        done += bc
