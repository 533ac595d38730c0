"""Statistics of channel interventions (docs/method.md, Interventions).

Pure functions (numpy / scipy only, no file I/O, no torch): word lengths of generated
samples, and comparisons of an edited (or control) condition with the unedited baseline. The
parsing of channel sets and edit modes lives in :mod:`gptwaves.analysis.intervention_specs`;
its names stay importable from here.

Conventions
-----------
A *condition* is a list of N generated samples (prompt included). Baseline,
edited and control conditions are generated with the same per-batch random
generators, so sample ``i`` of each condition starts from the same random
stream: comparisons are *paired by sample index*. The texts diverge after the
first character whose distribution the edit changed, so pairing is used only
for resampling (a paired bootstrap and a paired sign-flip permutation test
over sample indices), never to match words.

Errors in user input (channel specs, modes) raise
:class:`gptwaves.errors.GptwavesError` with a one-line message.

Functions
---------
parse_channel_spec, channel_spec_canonical, parse_mode, mode_canonical,
slug, control_channels, word_lengths, word_lengths_per_sample,
length_histogram, bootstrap_ratio, compare_counts, compare_rates,
compare_distributions, divergence
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from .intervention_specs import (MAX_EDIT_VALUE, channel_spec_canonical, control_channels, mode_canonical,
                                 parse_channel_spec, parse_mode, slug)
from .spelling_words import extract_words

__all__ = [
    "MAX_EDIT_VALUE",
    "parse_channel_spec",
    "channel_spec_canonical",
    "parse_mode",
    "mode_canonical",
    "slug",
    "control_channels",
    "word_lengths",
    "word_lengths_per_sample",
    "length_histogram",
    "bootstrap_ratio",
    "compare_counts",
    "compare_rates",
    "compare_distributions",
    "divergence",
]


# ---------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------
def word_lengths_per_sample(texts: Sequence[str], prompt_len: int, length: int | None = None) -> list[np.ndarray]:
    """Lengths of the scorable words of each sample.

    Words are exactly those of :func:`gptwaves.analysis.spelling_words.extract_words`
    (words overlapping the prompt and a final word cut by the sample end are
    dropped; with ``length``, only words starting in the ``length`` counted
    characters after the prompt, as the spelling statistics count them). The length of a word is its number of characters, internal
    apostrophes included (``"don't"`` -> 5).

    Returns
    -------
    list of ndarray of int64, one per sample
    """
    return [np.asarray([e - s for _, s, e in extract_words(t, prompt_len, length)], dtype=np.int64) for t in texts]


def word_lengths(texts: Sequence[str], prompt_len: int) -> np.ndarray:
    """Lengths of all scorable words of all samples, concatenated in order.

    See :func:`word_lengths_per_sample` for the definition.

    Returns
    -------
    ndarray of int64
    """
    per = word_lengths_per_sample(texts, prompt_len)
    return np.concatenate(per) if per else np.zeros(0, dtype=np.int64)


def length_histogram(lengths, max_len: int | None = None) -> np.ndarray:
    """Counts of word lengths 1..max_len: ``out[i]`` = number of words of length ``i + 1``.

    ``max_len`` defaults to the longest word (0 words -> empty array). Longer
    words are counted in the last bin.
    """
    x = np.asarray(lengths, dtype=np.int64).ravel()
    if max_len is None:
        max_len = int(x.max()) if x.size else 0
    if max_len <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.bincount(np.clip(x, 1, max_len) - 1, minlength=max_len).astype(np.int64)


# ---------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------
def _as_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def _boot_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(n_boot, n))


def _quantiles(x: np.ndarray, ci: float) -> list[float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return [math.nan, math.nan]
    a = (1.0 - ci) / 2.0
    return [float(v) for v in np.quantile(x, [a, 1.0 - a])]


def bootstrap_ratio(num, den, *, n_boot: int = 2000, seed: int = 0, ci: float = 0.95) -> dict:
    """Ratio of sums ``sum(num) / sum(den)`` with a percentile bootstrap CI over samples.

    Parameters
    ----------
    num, den : array_like, shape (N,)
        Per-sample numerator and denominator (e.g. misspelled and total words).
    n_boot : int
        Bootstrap resamples of the N samples (with replacement). 0: no CI.
    seed : int
    ci : float

    Returns
    -------
    dict
        ``value``, ``ci`` [lo, hi] (NaN when undefined).
    """
    a, b = _as_1d(num, "num"), _as_1d(den, "den")
    value = _ratio(a.sum(), b.sum())
    lo_hi = [math.nan, math.nan]
    if n_boot and a.size:
        idx = _boot_indices(a.size, int(n_boot), np.random.default_rng(seed))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = a[idx].sum(1) / b[idx].sum(1)
        lo_hi = _quantiles(r, ci)
    return {"value": value, "ci": lo_hi}


def _diff_tests(num_a, den_a, num_b, den_b, *, paired: bool, n_boot: int, seed: int, ci: float):
    """Difference of ratios of sums b - a: bootstrap CI and permutation p-value.

    Paired: the same resampled indices for both conditions; the permutation
    test swaps the two conditions of each sample with probability 1/2
    (sign flip). Unpaired: independent resampling; the permutation test
    reassigns samples to the two conditions at random.
    """
    a_n, a_d, b_n, b_d = num_a, den_a, num_b, den_b
    obs = _ratio(b_n.sum(), b_d.sum()) - _ratio(a_n.sum(), a_d.sum())
    out = {"diff": obs, "ci": [math.nan, math.nan], "p_permutation": math.nan, "n_permutations": 0}
    if not n_boot or a_n.size == 0 or b_n.size == 0:
        return out
    rng = np.random.default_rng(seed)
    nb = int(n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        if paired:
            idx = _boot_indices(a_n.size, nb, rng)
            ia = ib = idx
        else:
            ia = _boot_indices(a_n.size, nb, rng)
            ib = _boot_indices(b_n.size, nb, rng)
        d = b_n[ib].sum(1) / b_d[ib].sum(1) - a_n[ia].sum(1) / a_d[ia].sum(1)
        out["ci"] = _quantiles(d, ci)
        if not math.isfinite(obs):
            return out
        if paired:
            flip = rng.random((nb, a_n.size)) < 0.5
            dn, dd = b_n - a_n, b_d - a_d
            # a' = a + flip * (b - a), b' = b - flip * (b - a)
            an = a_n.sum() + flip @ dn
            ad = a_d.sum() + flip @ dd
            bn = b_n.sum() - flip @ dn
            bd = b_d.sum() - flip @ dd
        else:
            pn, pd = np.concatenate([a_n, b_n]), np.concatenate([a_d, b_d])
            na = a_n.size
            perm = np.argsort(rng.random((nb, pn.size)), axis=1)
            an, ad = pn[perm[:, :na]].sum(1), pd[perm[:, :na]].sum(1)
            bn, bd = pn[perm[:, na:]].sum(1), pd[perm[:, na:]].sum(1)
        null = bn / bd - an / ad
    null = null[np.isfinite(null)]
    tol = 1e-12 * max(1.0, abs(obs))
    out["p_permutation"] = float((1 + np.sum(np.abs(null) >= abs(obs) - tol)) / (1 + null.size))
    out["n_permutations"] = int(null.size)
    return out


def _mannwhitney(a: np.ndarray, b: np.ndarray) -> dict:
    if a.size == 0 or b.size == 0:
        return {"U": math.nan, "p": math.nan}
    if np.all(a == a[0]) and np.all(b == a[0]):
        return {"U": float(a.size * b.size / 2.0), "p": 1.0}  # identical constant samples
    r = stats.mannwhitneyu(b, a, alternative="two-sided")
    return {"U": float(r.statistic), "p": float(r.pvalue)}


def compare_counts(a, b, *, paired: bool = True, n_boot: int = 2000, alpha: float = 0.05,
                   seed: int = 0, ci: float = 0.95) -> dict:
    """Compare per-sample counts of condition ``b`` with the baseline ``a``.

    Parameters
    ----------
    a, b : array_like, shape (N,) and (M,)
        Per-sample counts (e.g. misspelled words per sample) of the baseline
        and of the edited condition. ``paired`` requires N == M.
    paired : bool
        Resample sample indices jointly (conditions generated on the same seeds).
    n_boot : int
        Bootstrap resamples and permutations (0 disables both).
    alpha : float
        Level of ``significant`` (the Mann-Whitney U test).
    seed : int
    ci : float

    Returns
    -------
    dict
        ``mean_a``, ``mean_b``, ``diff`` (mean_b - mean_a), ``ci`` (percentile
        bootstrap of the difference), ``p_permutation``; ``mannwhitney``:
        ``{"U", "p"}`` from ``scipy.stats.mannwhitneyu(b, a,
        alternative="two-sided")``; ``significant``: ``p < alpha``.
    """
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if paired and x.size != y.size:
        raise ValueError(f"paired comparison needs equal sample counts, got {x.size} and {y.size}")
    t = _diff_tests(x, np.ones_like(x), y, np.ones_like(y), paired=paired, n_boot=n_boot, seed=seed, ci=ci)
    mw = _mannwhitney(x, y)
    return {"mean_a": float(x.mean()) if x.size else math.nan, "mean_b": float(y.mean()) if y.size else math.nan,
            "diff": t["diff"], "ci": t["ci"], "ci_level": ci, "p_permutation": t["p_permutation"],
            "mannwhitney": mw, "significant": bool(mw["p"] < alpha) if math.isfinite(mw["p"]) else False,
            "paired": paired}


def compare_rates(k_a, n_a, k_b, n_b, *, paired: bool = True, n_boot: int = 2000, alpha: float = 0.05,
                  seed: int = 0, ci: float = 0.95) -> dict:
    """Compare the pooled error rate of condition ``b`` with the baseline ``a``.

    Parameters
    ----------
    k_a, n_a : array_like, shape (N,)
        Per-sample misspelled-word and total-word counts of the baseline.
    k_b, n_b : array_like, shape (M,)
        The same for the edited (or control) condition; ``paired`` needs M == N.
    paired : bool
        The conditions share seeds sample by sample (default): a paired
        bootstrap (same resampled indices) and a paired sign-flip permutation
        test. Otherwise independent resampling and a label permutation test.
    n_boot : int
        Bootstrap resamples and permutations (0 disables both).
    alpha : float
        Level of ``significant`` (the permutation test).
    seed : int
    ci : float

    Returns
    -------
    dict
        ``rate_a``, ``rate_b``: pooled rates ``sum k / sum n``;
        ``diff`` = rate_b - rate_a with ``ci`` (percentile bootstrap over
        samples) and ``p_permutation``; ``z_test``: the two-proportion z-test
        on pooled words, ``{"z", "p"}`` with the pooled-variance standard error
        (treats words as independent, which they are not: errors cluster, see
        docs/method.md, Spelling; the sample-level tests do not assume it);
        ``misspelled_per_sample`` and ``words_per_sample``: `compare_counts`
        of the per-sample counts (Mann-Whitney U); ``significant``:
        ``p_permutation < alpha``.
    """
    ka, na, kb, nb = (_as_1d(v, nm) for v, nm in ((k_a, "k_a"), (n_a, "n_a"), (k_b, "k_b"), (n_b, "n_b")))
    if ka.size != na.size or kb.size != nb.size:
        raise ValueError("misspelled and total counts must have the same length per condition")
    if paired and ka.size != kb.size:
        raise ValueError(f"paired comparison needs equal sample counts, got {ka.size} and {kb.size}")
    t = _diff_tests(ka, na, kb, nb, paired=paired, n_boot=n_boot, seed=seed, ci=ci)
    Ka, Na, Kb, Nb = ka.sum(), na.sum(), kb.sum(), nb.sum()
    pa, pb = _ratio(Ka, Na), _ratio(Kb, Nb)
    z = pz = math.nan
    if Na > 0 and Nb > 0:
        p = (Ka + Kb) / (Na + Nb)
        se = math.sqrt(p * (1 - p) * (1 / Na + 1 / Nb))
        if se > 0:
            z = (pb - pa) / se
            pz = float(2 * stats.norm.sf(abs(z)))
        elif pa == pb:
            z, pz = 0.0, 1.0
    return {
        "rate_a": pa, "rate_b": pb, "diff": t["diff"], "ci": t["ci"], "ci_level": ci,
        "p_permutation": t["p_permutation"], "n_permutations": t["n_permutations"],
        "z_test": {"z": float(z), "p": float(pz)},
        "misspelled_per_sample": compare_counts(ka, kb, paired=paired, n_boot=n_boot, alpha=alpha,
                                                seed=seed + 1, ci=ci),
        "words_per_sample": compare_counts(na, nb, paired=paired, n_boot=n_boot, alpha=alpha,
                                           seed=seed + 2, ci=ci),
        "significant": bool(t["p_permutation"] < alpha) if math.isfinite(t["p_permutation"]) else False,
        "paired": paired, "n_words_a": int(Na), "n_words_b": int(Nb),
    }


def _pool_tail(table: np.ndarray, min_tail: int) -> tuple[np.ndarray, int]:
    """Merge trailing columns of a 2 x K table until the last column has >= min_tail words."""
    tot = table.sum(0)
    k = table.shape[1]
    cut = k  # columns cut..k-1 are merged into column cut-1
    tail = 0
    while cut > 1 and tail + tot[cut - 1] < min_tail:
        tail += tot[cut - 1]
        cut -= 1
    if cut == k:
        return table, k
    merged = np.concatenate([table[:, : cut - 1], table[:, cut - 1 :].sum(1, keepdims=True)], axis=1)
    return merged, cut


def compare_distributions(lengths_a: Sequence, lengths_b: Sequence, *, paired: bool = True,
                          n_boot: int = 2000, alpha: float = 0.05, seed: int = 0, ci: float = 0.95,
                          min_tail: int = 10) -> dict:
    """Compare word-length distributions of condition ``b`` with the baseline ``a``.

    Parameters
    ----------
    lengths_a, lengths_b : sequence of array_like of int
        Word lengths per sample (:func:`word_lengths_per_sample`) of the
        baseline and of the edited condition.
    paired : bool
        Resample sample indices jointly for the CI of the mean difference.
    n_boot : int
    alpha : float
        Level of ``significant`` (the chi-square test).
    seed : int
    ci : float
    min_tail : int
        Trailing length bins are pooled until the last bin holds at least this
        many words of both conditions together (long words are rare, and the
        chi-square approximation needs populated cells).

    Returns
    -------
    dict
        ``lengths``: 1..L; ``hist_a``, ``hist_b``: word counts per length;
        ``freq_a``, ``freq_b``: the same normalised; ``chi2``: the test of
        homogeneity ``scipy.stats.chi2_contingency`` of the 2 x K ``table``
        (rows a, b; columns ``bins`` where the last bin is ``">=L"`` when
        pooled; columns with no word are dropped) as ``{"statistic", "dof",
        "p", "table", "bins"}``; ``mean_a``, ``mean_b``: mean word length;
        ``diff`` (mean_b - mean_a) with ``ci`` (bootstrap over samples) and
        ``p_permutation``; ``mannwhitney`` on the pooled word lengths;
        ``significant``: chi-square ``p < alpha``.
    """
    per_a = [np.asarray(v, dtype=np.int64).ravel() for v in lengths_a]
    per_b = [np.asarray(v, dtype=np.int64).ravel() for v in lengths_b]
    if paired and len(per_a) != len(per_b):
        raise ValueError(f"paired comparison needs equal sample counts, got {len(per_a)} and {len(per_b)}")
    la = np.concatenate(per_a) if per_a else np.zeros(0, dtype=np.int64)
    lb = np.concatenate(per_b) if per_b else np.zeros(0, dtype=np.int64)
    L = int(max(la.max(initial=0), lb.max(initial=0)))
    ha, hb = length_histogram(la, L), length_histogram(lb, L)
    if L == 0:
        ha = hb = np.zeros(0, dtype=np.int64)
    fa = ha / ha.sum() if ha.sum() else np.full(L, math.nan)
    fb = hb / hb.sum() if hb.sum() else np.full(L, math.nan)
    chi = {"statistic": math.nan, "dof": 0, "p": math.nan, "table": [], "bins": []}
    table = np.stack([ha, hb]) if L else np.zeros((2, 0), dtype=np.int64)
    bins = [str(i) for i in range(1, L + 1)]
    if L:
        table, cut = _pool_tail(table, min_tail)
        if cut < L:
            bins = bins[: cut - 1] + [f">={cut}"]
        keep = table.sum(0) > 0
        table, bins = table[:, keep], [b for b, k in zip(bins, keep) if k]
        chi["table"], chi["bins"] = table.tolist(), bins
        if table.shape[1] >= 2 and np.all(table.sum(1) > 0):
            r = stats.chi2_contingency(table, correction=False)
            chi.update(statistic=float(r.statistic), dof=int(r.dof), p=float(r.pvalue))
        elif table.shape[1] == 1 and np.all(table.sum(1) > 0):
            chi.update(statistic=0.0, dof=0, p=1.0)  # a single length in both: identical distributions
    sum_a = np.asarray([v.sum() for v in per_a], dtype=float)
    cnt_a = np.asarray([v.size for v in per_a], dtype=float)
    sum_b = np.asarray([v.sum() for v in per_b], dtype=float)
    cnt_b = np.asarray([v.size for v in per_b], dtype=float)
    t = _diff_tests(sum_a, cnt_a, sum_b, cnt_b, paired=paired, n_boot=n_boot, seed=seed, ci=ci)
    p = chi["p"]
    return {
        "lengths": list(range(1, L + 1)), "hist_a": ha.tolist(), "hist_b": hb.tolist(),
        "freq_a": np.asarray(fa, dtype=float).tolist(), "freq_b": np.asarray(fb, dtype=float).tolist(),
        "chi2": chi,
        "mean_a": _ratio(la.sum(), la.size), "mean_b": _ratio(lb.sum(), lb.size),
        "diff": t["diff"], "ci": t["ci"], "ci_level": ci, "p_permutation": t["p_permutation"],
        "mannwhitney": _mannwhitney(la.astype(float), lb.astype(float)),
        "significant": bool(p < alpha) if math.isfinite(p) else False, "paired": paired,
    }


def divergence(texts_a: Sequence[str], texts_b: Sequence[str], prompt_len: int) -> dict:
    """How far paired samples agree before an edit makes them diverge.

    Returns
    -------
    dict
        ``identical``: fraction of sample pairs with equal texts;
        ``mean_first_difference``: mean over differing pairs of the first
        generated position (0 = first character after the prompt) where they
        differ (NaN when all pairs are identical).
    """
    if len(texts_a) != len(texts_b):
        raise ValueError("divergence needs paired samples of equal number")
    first = []
    same = 0
    for a, b in zip(texts_a, texts_b):
        if a == b:
            same += 1
            continue
        n = min(len(a), len(b))
        i = next((j for j in range(n) if a[j] != b[j]), n)
        first.append(i - prompt_len)
    return {"identical": same / len(texts_a) if texts_a else math.nan,
            "mean_first_difference": float(np.mean(first)) if first else math.nan}
