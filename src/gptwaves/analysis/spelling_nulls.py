"""References and nulls of spelling-error counts: the independent-error reference conditioned on
word length and position, the renewal reference of the word total, and the stratified
permutation null with its summary (docs/method.md, Spelling).

Pure functions on the word table of one checkpoint (see :func:`gptwaves.analysis.spelling.analyze_words`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

from .spelling_dispersion import _fano, log_excess_se, residual_ratio
from .spelling_words import LENGTH_BINS, POSITION_WIDTH, length_bins, position_bins, strata

__all__ = ["independent_reference", "renewal_reference", "stratified_null", "perm_p_value"]


def _rate_by_bin(bins: np.ndarray, mis: np.ndarray, n_bins: int = LENGTH_BINS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_b = np.bincount(bins, minlength=n_bins)
    m_b = np.bincount(bins[mis], minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_b = np.where(n_b > 0, m_b / np.maximum(n_b, 1), np.nan)
    return n_b, m_b, p_b


def independent_reference(word_sample, word_len, word_mis, n_samples: int, word_start=None) -> dict:
    """Fano factors expected if errors were independent given word length and position.

    With p(s) the pooled error rate of the words of stratum s (`strata`: length bin x position
    bin; the length bin only when ``word_start`` is not given) and ``p_ij = p(s_ij)`` for word j of sample
    i, ``S_i = sum_j p_ij``, ``V_i = sum_j p_ij (1 - p_ij)``:
    ``F_ref_mis = (mean_i V_i + var_i S_i) / mean_i S_i`` and
    ``F_ref_cor = (mean_i V_i + var_i (n_i - S_i)) / mean_i (n_i - S_i)`` (variances with
    ddof 1, like the observed F).

    Parameters
    ----------
    word_sample : array_like of int, shape (W,)
        Sample index of every counted word (non-decreasing, words of a sample in text order).
    word_len : array_like of int, shape (W,)
        Word lengths in characters.
    word_mis : array_like of bool, shape (W,)
        Misspelling flags.
    n_samples : int
    word_start : array_like of int, shape (W,), optional
        Start character of every word in the counted part: condition on the position bin too
        (docs/method.md, Spelling). None: on the length bin only.

    Returns
    -------
    dict
        ``error_rate``; ``fano_words``, ``fano_correct``, ``fano_misspelled`` (observed);
        ``fano_ref_correct``, ``fano_ref_misspelled``; ``excess_correct`` = F_cor /
        F_ref_cor, ``excess_misspelled`` = F_mis / F_ref_mis; ``log_se_correct``,
        ``log_se_misspelled`` (`log_excess_se`); ``residual_ratio`` (r, SE of log r) of
        `residual_ratio`; ``rate_by_length``:
        ``{"lengths": [1..12], "n_words", "n_misspelled", "rate"}`` (12 = ">= 12");
        ``rate_by_position``: ``{"first_character": [...], "n_words", "n_misspelled", "rate"}``
        per position bin (absent without ``word_start``). Undefined values are NaN.
    """
    samp = np.asarray(word_sample, dtype=np.int64)
    mis = np.asarray(word_mis, dtype=bool)
    bins = length_bins(word_len)
    n_b, m_b, p_b = _rate_by_bin(bins, mis)
    if word_start is not None:
        pbins = position_bins(word_start)
        n_p, m_p, p_p = _rate_by_bin(pbins, mis, int(pbins.max(initial=0)) + 1)
        st = pbins * LENGTH_BINS + bins
        p_s = _rate_by_bin(st, mis, int(st.max(initial=0)) + 1)[2]
        pij = np.nan_to_num(p_s)[st]
    else:
        pij = np.nan_to_num(p_b)[bins]
    n_i = np.bincount(samp, minlength=n_samples).astype(float)
    k_i = np.bincount(samp[mis], minlength=n_samples).astype(float)
    S = np.bincount(samp, weights=pij, minlength=n_samples)
    V = np.bincount(samp, weights=pij * (1.0 - pij), minlength=n_samples)
    nan = math.nan

    def ref(mean_count, var_count):
        return (V.mean() + var_count) / mean_count if mean_count > 0 else nan

    f_ref_m = ref(S.mean(), S.var(ddof=1)) if n_samples > 1 else nan
    f_ref_c = ref((n_i - S).mean(), (n_i - S).var(ddof=1)) if n_samples > 1 else nan
    fm, fc = _fano(k_i), _fano(n_i - k_i)
    total = n_i.sum()
    return dict(
        error_rate=float(k_i.sum() / total) if total > 0 else nan,
        fano_words=_fano(n_i), fano_correct=fc, fano_misspelled=fm,
        fano_ref_correct=float(f_ref_c), fano_ref_misspelled=float(f_ref_m),
        excess_correct=fc / f_ref_c if f_ref_c > 0 else nan,
        excess_misspelled=fm / f_ref_m if f_ref_m > 0 else nan,
        log_se_correct=log_excess_se(n_i - k_i, n_i - S, V),
        log_se_misspelled=log_excess_se(k_i, S, V),
        residual_ratio=residual_ratio(k_i, S, V),
        rate_by_length=dict(lengths=list(range(1, LENGTH_BINS + 1)), n_words=n_b.tolist(),
                            n_misspelled=m_b.tolist(), rate=p_b.tolist()),
    ) | ({} if word_start is None else dict(rate_by_position=dict(
        first_character=[0, 8, 16, *range(32, 32 + POSITION_WIDTH * max(0, len(n_p) - 3), POSITION_WIDTH)],
        n_words=n_p.tolist(), n_misspelled=m_p.tolist(), rate=p_p.tolist())))


def renewal_reference(word_sample, word_start) -> dict:
    """Renewal-process reference of the word total: CV^2 of the spacing between word starts.

    For a stationary renewal process of word starts, the count in a long window has Fano
    factor CV^2 = var(d) / mean(d)^2 of the spacings d (regular spacing alone makes a
    fixed-length count sub-Poissonian).

    Parameters
    ----------
    word_sample, word_start : array_like of int, shape (W,)
        Sample index and start offset of every counted word, in (sample, start) order.

    Returns
    -------
    dict
        ``cv2``, ``mean_spacing``, ``n_spacings`` (consecutive words of the same sample);
        NaN with fewer than 2 spacings.
    """
    s = np.asarray(word_sample)
    x = np.asarray(word_start, dtype=float)
    same = s[1:] == s[:-1]
    d = (x[1:] - x[:-1])[same]
    if d.size < 2 or d.mean() <= 0:
        return dict(cv2=math.nan, mean_spacing=float(d.mean()) if d.size else math.nan,
                    n_spacings=int(d.size))
    return dict(cv2=float(d.var(ddof=1) / d.mean() ** 2), mean_spacing=float(d.mean()),
                n_spacings=int(d.size))


def _cells(word_sample, word_start, n_samples: int, length: int, w: int | None,
           sample_length=None) -> tuple[np.ndarray, int, np.ndarray]:
    """Counting cell of every word: the sample (``w=None``) or (sample, window of width w).

    Returns ``cell`` (W,) with -1 for words outside a complete window, ``n_cells`` and the
    ``keep`` mask (n_cells,) of the windows that lie inside their sample's counted part.
    """
    if w is None:
        return np.asarray(word_sample, dtype=np.int64), n_samples, np.ones(n_samples, bool)
    K = int(length) // int(w)
    k = np.asarray(word_start, dtype=np.int64) // int(w)
    cell = np.where(k < K, np.asarray(word_sample, dtype=np.int64) * K + k, -1)
    avail = np.full(n_samples, K) if sample_length is None else np.clip(
        np.asarray(sample_length, dtype=np.int64) // int(w), 0, K)
    keep = (np.arange(K)[None, :] < avail[:, None]).ravel()
    return cell, n_samples * K, keep


def stratified_null(word_sample, word_start, word_len, word_mis, n_samples: int, length: int,
                    windows: Sequence[int] = (), n_perm: int = 1000, seed: int = 0,
                    sample_length=None, max_chunk_elems: int = 8_000_000) -> dict:
    """Stratified permutation null of the Fano factors (errors independent given length and
    position).

    The misspelled flags are shuffled among all words of the same stratum (`strata`: length
    bin x position bin) across all samples, ``n_perm`` times, and F of the per-sample correct and
    misspelled counts (and of the per-window counts of every width in ``windows``) is
    recomputed. Vectorised: per bin one shuffle of all permutations at once
    (``Generator.permuted`` along the permutation rows); only the minority side of a bin is
    drawn; counts are formed with one weighted ``bincount`` per counting target.

    Parameters
    ----------
    word_sample, word_start, word_len, word_mis : array_like, shape (W,)
        Per word: sample index (non-decreasing, words of a sample in text order), start offset
        in the counted part, length, flag.
    n_samples, length : int
        N and the counted characters L.
    windows : sequence of int
        Window widths for the Q(w) null band.
    n_perm : int
    seed : int
        The generator is ``numpy.random.default_rng([seed, 1])``.
    sample_length : array_like of int, optional
        Counted characters available per sample (default L for all).
    max_chunk_elems : int
        Memory bound: permutations are processed in chunks of about this many drawn flags.

    Returns
    -------
    dict
        ``fano_correct``, ``fano_misspelled``: ndarray (n_perm,) of null F of the per-sample
        counts; ``windows``: ``{w: {"fano_correct", "fano_misspelled"}}`` arrays (n_perm,).
    """
    samp = np.asarray(word_sample, dtype=np.int64)
    start = np.asarray(word_start, dtype=np.int64)
    mis = np.asarray(word_mis, dtype=bool)
    bins = strata(start, word_len)
    rng = np.random.default_rng([int(seed), 1])
    L = int(length)
    windows = [int(w) for w in windows]
    # one fine grid of g = gcd(windows) characters; every target count is a sum of fine cells
    g = int(np.gcd.reduce(windows)) if windows else max(L, 1)
    n_f = max(1, -(-L // g))
    fine = samp * n_f + np.minimum(start // g, n_f - 1)
    nc = n_samples * n_f
    tot = np.bincount(fine, minlength=nc).astype(np.int64)
    base, varying = _stratum_draws(bins, mis, fine, nc)
    keeps = {w: None if sample_length is None else _cells(samp, start, n_samples, L, w, sample_length)[2]
             for w in windows}
    chunk = max(1, min(int(n_perm), max_chunk_elems // max(1, len(samp))))
    res_c, res_m = [], []
    win_c = {w: [] for w in windows}
    win_m = {w: [] for w in windows}
    done = 0
    while done < n_perm:
        bc = min(chunk, n_perm - done)
        m3 = _permuted_counts(base, varying, rng, bc, nc).reshape(bc, n_samples, n_f)
        t3 = tot.reshape(n_samples, n_f)
        fm, fc = _fano_pair(m3.sum(axis=2), t3.sum(axis=1))
        res_m.append(fm)
        res_c.append(fc)
        for w in windows:
            q, K = w // g, L // w
            mw = m3[:, :, :K * q].reshape(bc, n_samples, K, q).sum(axis=3).reshape(bc, -1)
            tw = t3[:, :K * q].reshape(n_samples, K, q).sum(axis=2).reshape(-1)
            if keeps[w] is not None:
                mw, tw = mw[:, keeps[w]], tw[keeps[w]]
            fm, fc = _fano_pair(mw, tw)
            win_m[w].append(fm)
            win_c[w].append(fc)
        done += bc
    return dict(fano_correct=np.concatenate(res_c), fano_misspelled=np.concatenate(res_m),
                windows={w: dict(fano_correct=np.concatenate(win_c[w]),
                                 fano_misspelled=np.concatenate(win_m[w])) for w in windows})


def _stratum_draws(bins: np.ndarray, mis: np.ndarray, fine: np.ndarray, nc: int) -> tuple[np.ndarray, list]:
    """What :func:`stratified_null` draws per stratum: the misspelled count of every fine cell that
    no shuffle changes (``base``), and per stratum that varies its words' fine cells, the number
    drawn (the minority side) and the sign (+1 misspelled drawn, -1 correct drawn)."""
    base = np.zeros(nc, dtype=np.int64)
    varying = []  # (fine cells of the bin's words, k drawn, sign)
    order = np.argsort(bins, kind="stable")
    cuts = np.flatnonzero(np.diff(bins[order])) + 1
    for idx in np.split(order, cuts) if bins.size else []:
        n_b, m_b = idx.size, int(mis[idx].sum())
        if n_b == 0 or m_b == 0:
            continue
        if m_b == n_b or m_b > n_b - m_b:  # fixed bin, or draw the correct side
            base += np.bincount(fine[idx], minlength=nc)
            if m_b < n_b:
                varying.append((fine[idx], n_b - m_b, -1))
        else:
            varying.append((fine[idx], m_b, 1))
    return base, varying


def _permuted_counts(base: np.ndarray, varying: list, rng: np.random.Generator, bc: int, nc: int) -> np.ndarray:
    """Misspelled counts (bc, nc) of every fine cell in ``bc`` permutations (see :func:`_stratum_draws`)."""
    m = np.broadcast_to(base.astype(float), (bc, nc)).copy()
    rows = np.arange(bc, dtype=np.int64)[:, None] * nc
    for sign in (1, -1):
        parts = [fc[rng.permuted(np.broadcast_to(np.arange(fc.size, dtype=np.int32),
                                                 (bc, fc.size)), axis=1)[:, :k]]
                 for fc, k, s in varying if s == sign]
        if parts:
            cnt = np.bincount((rows + np.concatenate(parts, axis=1)).ravel(), minlength=bc * nc)
            m += sign * cnt.reshape(bc, nc)
    return m


def _fano_pair(m: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise F of the misspelled counts ``m`` (R, n) and of the correct counts ``t - m``
    (``t`` (n,) the fixed word totals), from sums and one matrix product (no per-row var)."""
    m = np.asarray(m, dtype=float)
    t = np.asarray(t, dtype=float)
    n = m.shape[1]
    if n < 2:
        nanv = np.full(m.shape[0], np.nan)
        return nanv, nanv.copy()
    s1 = m.sum(axis=1)
    s2 = np.einsum("ij,ij->i", m, m)
    st, stt, smt = t.sum(), float(t @ t), m @ t
    c1 = st - s1
    c2 = stt - 2.0 * smt + s2
    with np.errstate(divide="ignore", invalid="ignore"):
        fm = np.where(s1 > 0, (s2 - s1 * s1 / n) / (n - 1) / (s1 / n), np.nan)
        fc = np.where(c1 > 0, (c2 - c1 * c1 / n) / (n - 1) / (c1 / n), np.nan)
    return np.maximum(fm, 0.0), np.maximum(fc, 0.0)


def perm_p_value(obs: float, null: np.ndarray) -> tuple[float, int]:
    """Two-sided permutation p-value ``min(1, 2 min(P(null >= obs), P(null <= obs)))`` with the
    +1 correction, over the finite null values; returns (p, number of finite values)."""
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if not math.isfinite(obs) or null.size == 0:
        return math.nan, int(null.size)
    tol = 1e-12 * max(1.0, abs(obs))
    ge = (1 + np.count_nonzero(null >= obs - tol)) / (null.size + 1)
    le = (1 + np.count_nonzero(null <= obs + tol)) / (null.size + 1)
    return float(min(1.0, 2.0 * min(ge, le))), int(null.size)


def _null_summary(obs: float, null: np.ndarray, ref: float, alpha: float, up: str, down: str,
                  log_se: float = math.nan) -> dict:
    """A statistic against its permutation null: median, band, two-sided p, the excess over the
    median with its CI (``log_se``: SE of the log excess) and z of the log statistic against
    the null (``(log obs - log median) / SD of the log null values``)."""
    fin = np.asarray(null, dtype=float)
    fin = fin[np.isfinite(fin)]
    p, n_ok = perm_p_value(obs, fin)
    med = float(np.median(fin)) if fin.size else math.nan
    lo, hi = (float(v) for v in np.quantile(fin, [alpha / 2, 1 - alpha / 2])) if fin.size else (math.nan,) * 2
    if not math.isfinite(obs):
        verdict, reason = "undefined", "observed value undefined (zero mean)"
    elif math.isnan(p):
        verdict, reason = "undefined", "permutation null undefined"
    else:
        verdict = (up if obs > med else down) if p < alpha else "independent"
        reason = None
    pos = fin[fin > 0]
    sd = float(np.std(np.log(pos), ddof=1)) if pos.size > 2 else math.nan
    ex = obs / med if med > 0 else math.nan
    log_ex = math.log(ex) if ex > 0 and math.isfinite(ex) else math.nan
    z = log_ex / sd if sd > 0 else math.nan
    zc = -special.ndtri(alpha / 2)  # scipy.stats.norm.isf, without its per-call argument handling
    ci = ([math.exp(log_ex - zc * log_se), math.exp(log_ex + zc * log_se)]
          if math.isfinite(log_ex) and log_se > 0 else [math.nan, math.nan])
    return dict(fano=obs, fano_ref=ref, excess=obs / ref if ref and ref > 0 else math.nan,
                null_median=med, null_band=[lo, hi],
                excess_null=ex, excess_null_ci=ci, log_excess_se=log_se,
                log_null_sd=sd, z=z, p_value=p, n_null=n_ok,
                verdict=verdict, reason=reason)
