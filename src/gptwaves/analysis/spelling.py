"""Counting statistics of spelling errors in generated text (docs/method.md, Spelling).

Pure functions (numpy / scipy only, no file I/O): word extraction with the margin rule,
lexicon scoring, dispersion (Fano factor, Mandel Q, index-of-dispersion test, BCa CI, SE of
log F), the decomposition of a (sub-)Poissonian count (word total with its renewal reference,
independent-error reference conditioned on word length and position, stratified permutation
null, each excess with its CI and z), the counting-window curve Q(w) with its null band, the
cascade relative risk with its within-sample, within-position permutation null, and the
crossing of F_correct through 1 across checkpoints with its bootstrap CI.

Conventions
-----------
A *sample* is one generated text **including** its prompt: ``texts[i][:prompt_len]`` is the
prompt, the next ``length`` (L) characters are the *counted* characters and the ``margin``
(M) characters after them are generated only so that the words started in the counted part
can finish. A *word* is a maximal match of `WORD_RE`, lowercased; a word is *correct* when it
is in the lexicon, otherwise *misspelled*. A sample's words are those that *start* in its
counted characters; a word overlapping the prompt is dropped; a word still unfinished at the
end of the text (its match reaches the end, or only one apostrophe follows it) is dropped and
counted as *cut*.

Word lengths are the number of characters of the matched word (apostrophes included); the
length bins are 1, 2, ..., 11 and ">= 12" (`LENGTH_BINS` = 12 bins, the last pooled). Position
bins come from a word's start character in the counted part (`position_bins`: [0, 8), [8, 16),
[16, 32), then every `POSITION_WIDTH` characters). The strata of the independent-error reference
and of the permutation null are length bin x position bin (`strata`); the cascade null shuffles
within (sample, position bin) groups.

Randomness: ``seed`` gives the BCa bootstrap of F_correct (``seed``), F_misspelled
(``seed + 1``), the cascade RR (``seed + 2``) and the permutation nulls
(``numpy.random.default_rng([seed, 1])`` for the stratified null, ``[seed, 2]`` for the
cascade null); a run is reproducible from ``seed``.

Undefined values are ``None`` in JSON (never NaN), with a ``reason`` string next to them.

Functions
---------
scan_words, extract_words, build_lexicon, load_word_list, score_samples, dispersion,
fano_bca, log_fano_se, log_excess_se, residual_ratio, length_bins, position_bins, position_edges, strata,
independent_reference, renewal_reference, stratified_null,
window_counts, q_curve, default_windows, cascade, cascade_null, analyze_words, analyze,
crossing_iteration, crossing
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..jsonable import jsonable

__all__ = [
    "WORD_RE",
    "LENGTH_BINS",
    "POSITION_WIDTH",
    "position_edges",
    "ScoredSamples",
    "scan_words",
    "extract_words",
    "build_lexicon",
    "load_word_list",
    "score_samples",
    "dispersion",
    "fano_bca",
    "length_bins",
    "position_bins",
    "strata",
    "log_fano_se",
    "log_excess_se",
    "residual_ratio",
    "independent_reference",
    "renewal_reference",
    "stratified_null",
    "window_counts",
    "q_curve",
    "default_windows",
    "cascade",
    "cascade_null",
    "perm_p_value",
    "analyze_words",
    "analyze",
    "crossing_iteration",
    "crossing",
]

#: A word: letters, optionally joined by single internal apostrophes.
WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")

#: Number of word-length bins: lengths 1..11 and a pooled ">= 12" bin.
LENGTH_BINS = 12

#: Position bins by the start character of a word in the counted part: [0, 8), [8, 16),
#: [16, 32) and then every `POSITION_WIDTH` characters (docs/method.md, Spelling). A sample starts
#: without context, so the error rate may depend on the position; the nulls compare words of one
#: position bin.
POSITION_WIDTH = 16


def position_edges(length: int) -> list[int]:
    """First character of each position bin for ``length`` counted characters."""
    e = [0, 8, 16] + list(range(32, max(int(length), 33), POSITION_WIDTH))
    return [x for x in e if x < max(int(length), 1)] or [0]



# ---------------------------------------------------------------------------
# Words and lexicon
# ---------------------------------------------------------------------------
def scan_words(text: str, prompt_len: int = 0,
               length: int | None = None) -> tuple[list[tuple[str, int, int]], int]:
    """Counted words of one sample and the number of cut words.

    Parameters
    ----------
    text : str
        The sample: prompt, ``length`` counted characters, then the margin.
    prompt_len : int, optional
        Number of leading prompt characters. Default 0.
    length : int, optional
        Counted characters L: a word is counted when it starts in
        ``[prompt_len, prompt_len + length)``. ``None`` (default): every word after the
        prompt starts in the counted part (no margin).

    Returns
    -------
    words : list of tuple (str, int, int)
        ``(word_lowercased, start, end)`` of every counted, complete word, in text order.
    n_cut : int
        Words that start in the counted part but are unfinished at the end of the text
        (dropped).

    Notes
    -----
    A word is *cut* when its match ends at ``len(text)``, or when only a single
    apostrophe follows it (``"don'"`` could have continued as ``"don't"``); with a margin of
    M characters this only happens to a word longer than about M characters. A word
    overlapping the prompt (``start < prompt_len``, e.g. the continuation of a prompt ending
    in letters) is dropped and not counted as cut. Letters are ASCII only; an apostrophe
    belongs to a word only between two letters (``"don't"``, ``"o'er"``; ``"'tis"`` gives
    ``"tis"``).
    """
    n = len(text)
    stop = n if length is None else prompt_len + int(length)
    out = []
    n_cut = 0
    for m in WORD_RE.finditer(text):
        s, e = m.span()
        if s < prompt_len:
            continue
        if s >= stop:
            break
        if e == n or (e == n - 1 and text[e] == "'"):
            n_cut += 1
            continue
        out.append((m.group().lower(), s, e))
    return out, n_cut


def extract_words(text: str, prompt_len: int = 0,
                  length: int | None = None) -> list[tuple[str, int, int]]:
    """The counted, complete words of one sample (see `scan_words`, without the cut count).

    Examples
    --------
    >>> extract_words("\\nO'er the King's 'tis don", prompt_len=1)
    [("o'er", 1, 5), ('the', 6, 9), ("king's", 10, 16), ('tis', 18, 21)]
    """
    return scan_words(text, prompt_len, length)[0]


def build_lexicon(text: str) -> frozenset[str]:
    """Lexicon of a text: the set of its lowercased `WORD_RE` words.

    Parameters
    ----------
    text : str
        Typically the training split of the corpus. Every match counts,
        including one at the very start or end of the text.

    Returns
    -------
    frozenset of str
    """
    return frozenset(WORD_RE.findall(text.lower()))


def load_word_list(lines: Iterable[str]) -> frozenset[str]:
    """Lexicon from the lines of a user word list (one word per line).

    Parameters
    ----------
    lines : iterable of str
        Lines of the word list (the caller reads the file). Surrounding
        whitespace and a UTF-8 byte-order mark are stripped, entries are
        lowercased, blank lines and lines starting with ``#`` are skipped.

    Returns
    -------
    frozenset of str

    Raises
    ------
    ValueError
        If no entry remains.

    Notes
    -----
    Entries are kept verbatim (lowercased). An entry that is not a full
    `WORD_RE` match (e.g. ``"half-blood"``) can never equal an extracted word,
    so it is harmless but useless.
    """
    words = set()
    for line in lines:
        w = line.strip().lstrip("\ufeff").strip().lower()
        if w and not w.startswith("#"):
            words.add(w)
    if not words:
        raise ValueError("word list is empty: no words after skipping blank and '#' lines")
    return frozenset(words)


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------
@dataclass
class ScoredSamples:
    """Per-sample spelling scores (output of `score_samples`).

    Attributes
    ----------
    n_correct, n_misspelled, n_words : ndarray of int64, shape (n_samples,)
        Counts of counted words per sample (``n_words = n_correct + n_misspelled``).
    n_cut : ndarray of int64, shape (n_samples,)
        Cut words per sample (started in the counted part, unfinished at the text end).
    words : list of list of tuple (int, bool)
        Per sample, ``(start, is_misspelled)`` of each counted word in order.
    word_sample, word_start, word_len : ndarray of int64, shape (n_total_words,)
        Flattened: sample index, start offset in the text (prompt included) and length in
        characters of every counted word.
    word_mis : ndarray of bool, shape (n_total_words,)
        Flattened misspelling flags (same order).
    text_lengths : ndarray of int64, shape (n_samples,)
        ``len(text)`` of each sample (prompt included).
    prompt_len : int
    """

    n_correct: np.ndarray
    n_misspelled: np.ndarray
    n_words: np.ndarray
    n_cut: np.ndarray
    words: list
    word_sample: np.ndarray
    word_start: np.ndarray
    word_len: np.ndarray
    word_mis: np.ndarray
    text_lengths: np.ndarray
    prompt_len: int = 0

    def __len__(self) -> int:
        return int(self.n_words.shape[0])


def score_samples(texts: Sequence[str], lexicon: frozenset[str] | set[str],
                  prompt_len: int, length: int | None = None) -> ScoredSamples:
    """Score the counted words of generated samples against a lexicon.

    Parameters
    ----------
    texts : sequence of str
        Samples, prompt included.
    lexicon : set of str
        Lowercased correct words (`build_lexicon` or `load_word_list`).
    prompt_len : int
        Prompt length in characters (same for all samples).
    length : int, optional
        Counted characters L (words starting after them are margin words, not counted).
        ``None``: all words after the prompt are counted.

    Returns
    -------
    ScoredSamples
    """
    n = len(texts)
    n_cut = np.zeros(n, dtype=np.int64)
    per_sample = []
    samp, start, wlen, mis = [], [], [], []
    for i, t in enumerate(texts):
        found, n_cut[i] = scan_words(t, prompt_len, length)
        ws = [(s, w not in lexicon) for w, s, _ in found]
        per_sample.append(ws)
        samp.append(np.full(len(found), i, dtype=np.int64))
        start.extend(s for _, s, _ in found)
        wlen.extend(e - s for _, s, e in found)
        mis.extend(m for _, m in ws)
    word_sample = np.concatenate(samp) if samp else np.zeros(0, dtype=np.int64)
    word_mis = np.asarray(mis, dtype=bool)
    n_words = np.bincount(word_sample, minlength=n).astype(np.int64)
    n_mis = np.bincount(word_sample[word_mis], minlength=n).astype(np.int64)
    return ScoredSamples(
        n_correct=n_words - n_mis, n_misspelled=n_mis, n_words=n_words, n_cut=n_cut,
        words=per_sample, word_sample=word_sample,
        word_start=np.asarray(start, dtype=np.int64), word_len=np.asarray(wlen, dtype=np.int64),
        word_mis=word_mis, text_lengths=np.asarray([len(t) for t in texts], dtype=np.int64),
        prompt_len=int(prompt_len),
    )


# ---------------------------------------------------------------------------
# Dispersion
# ---------------------------------------------------------------------------
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
    p = float(min(1.0, 2.0 * min(stats.chi2.cdf(D, dof), stats.chi2.sf(D, dof))))
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


# ---------------------------------------------------------------------------
# Decomposition: word total, independent-error reference, permutation null
# ---------------------------------------------------------------------------
def length_bins(word_len) -> np.ndarray:
    """Length bin of each word: ``min(length, 12) - 1`` (0..11; bin 11 pools lengths >= 12)."""
    return np.clip(np.asarray(word_len, dtype=np.int64), 1, LENGTH_BINS) - 1


def position_bins(word_start) -> np.ndarray:
    """Position bin of each word from its start character in the counted part.

    Bins: [0, 8) -> 0, [8, 16) -> 1, [16, 32) -> 2, then ``3 + (start - 32) // POSITION_WIDTH``
    (`position_edges` lists the first character of each bin).

    Examples
    --------
    >>> position_bins([0, 7, 8, 20, 31, 32, 63, 64, 100]).tolist()
    [0, 0, 1, 2, 2, 3, 4, 5, 7]
    """
    x = np.asarray(word_start, dtype=np.int64).ravel()
    return np.where(x < 8, 0, np.where(x < 16, 1, np.where(x < 32, 2, 3 + (x - 32) // POSITION_WIDTH)))


def strata(word_start, word_len) -> np.ndarray:
    """Stratum of each word for the independent-error reference and the permutation null:
    ``position_bin * LENGTH_BINS + length_bin`` (`position_bins`, `length_bins`)."""
    return position_bins(word_start) * LENGTH_BINS + length_bins(word_len)


def _rate_by_bin(bins: np.ndarray, mis: np.ndarray, n_bins: int = LENGTH_BINS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_b = np.bincount(bins, minlength=n_bins)
    m_b = np.bincount(bins[mis], minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_b = np.where(n_b > 0, m_b / np.maximum(n_b, 1), np.nan)
    return n_b, m_b, p_b


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
    keeps = {w: None if sample_length is None else _cells(samp, start, n_samples, L, w, sample_length)[2]
             for w in windows}
    chunk = max(1, min(int(n_perm), max_chunk_elems // max(1, len(samp))))
    res_c, res_m = [], []
    win_c = {w: [] for w in windows}
    win_m = {w: [] for w in windows}
    done = 0
    while done < n_perm:
        bc = min(chunk, n_perm - done)
        m = np.broadcast_to(base.astype(float), (bc, nc)).copy()
        rows = np.arange(bc, dtype=np.int64)[:, None] * nc
        for sign in (1, -1):
            parts = [fc[rng.permuted(np.broadcast_to(np.arange(fc.size, dtype=np.int32),
                                                     (bc, fc.size)), axis=1)[:, :k]]
                     for fc, k, s in varying if s == sign]
            if parts:
                cnt = np.bincount((rows + np.concatenate(parts, axis=1)).ravel(), minlength=bc * nc)
                m += sign * cnt.reshape(bc, nc)
        m3 = m.reshape(bc, n_samples, n_f)
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
    zc = stats.norm.isf(alpha / 2)
    ci = ([math.exp(log_ex - zc * log_se), math.exp(log_ex + zc * log_se)]
          if math.isfinite(log_ex) and log_se > 0 else [math.nan, math.nan])
    return dict(fano=obs, fano_ref=ref, excess=obs / ref if ref and ref > 0 else math.nan,
                null_median=med, null_band=[lo, hi],
                excess_null=ex, excess_null_ci=ci, log_excess_se=log_se,
                log_null_sd=sd, z=z, p_value=p, n_null=n_ok,
                verdict=verdict, reason=reason)


# ---------------------------------------------------------------------------
# Counting windows
# ---------------------------------------------------------------------------
def window_counts(word_sample, word_start, word_mis, n_samples: int, length: int, w: int,
                  sample_length=None) -> dict:
    """Correct / misspelled word counts per non-overlapping window of w counted characters.

    Parameters
    ----------
    word_sample, word_start, word_mis : array_like, shape (W,)
        Per word: sample index, start offset in the counted part (0 = first counted
        character), misspelling flag.
    n_samples, length : int
        N and the counted characters L.
    w : int
        Window width in characters (>= 1).
    sample_length : array_like of int, optional
        Counted characters available per sample (default L): a window must lie inside it.

    Returns
    -------
    dict
        ``correct``, ``misspelled``: int64 arrays, one entry per window, samples
        concatenated (sample-major); ``n_windows``.

    Notes
    -----
    Window k covers counted characters ``[k w, (k+1) w)``, ``k < L // w``; a word belongs
    to the window where it starts (the margin rule makes this exact: no window loses its
    last word to the sample end).
    """
    if w < 1:
        raise ValueError("window width must be >= 1")
    mis = np.asarray(word_mis, dtype=bool)
    if int(length) // int(w) == 0 or n_samples == 0:
        z = np.zeros(0, dtype=np.int64)
        return dict(correct=z, misspelled=z.copy(), n_windows=0)
    cell, nc, keep = _cells(word_sample, word_start, n_samples, length, w, sample_length)
    ok = cell >= 0
    all_c = np.bincount(cell[ok], minlength=nc)
    mis_c = np.bincount(cell[ok & mis], minlength=nc)
    return dict(correct=(all_c - mis_c)[keep].astype(np.int64),
                misspelled=mis_c[keep].astype(np.int64), n_windows=int(keep.sum()))


def default_windows(length: int) -> list[int]:
    """Window widths 16, 32, 64, ... up to `length` (``[length]`` if length < 16)."""
    length = int(length)
    ws = []
    w = 16
    while w <= length:
        ws.append(w)
        w *= 2
    if not ws and length >= 1:
        ws = [length]
    return ws


def q_curve(word_sample, word_start, word_mis, n_samples: int, length: int,
            windows: Sequence[int] | None = None, sample_length=None) -> dict:
    """Mandel Q of correct / misspelled counts as a function of window width.

    Returns
    -------
    dict
        ``{w: {"q_correct", "q_misspelled", "fano_correct", "fano_misspelled",
        "n_windows"}}`` with int keys; NaN where undefined (fewer than 2 windows or zero
        mean).
    """
    if windows is None:
        windows = default_windows(length)
    out = {}
    for w in windows:
        wc = window_counts(word_sample, word_start, word_mis, n_samples, length, int(w), sample_length)
        fc, fm = _fano(wc["correct"]), _fano(wc["misspelled"])
        out[int(w)] = dict(q_correct=fc - 1.0, q_misspelled=fm - 1.0, fano_correct=fc,
                           fano_misspelled=fm, n_windows=wc["n_windows"])
    return out


# ---------------------------------------------------------------------------
# Cascade
# ---------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------
# Everything for one checkpoint
# ---------------------------------------------------------------------------
def analyze_words(word_sample, word_start, word_len, word_mis, n_samples: int, length: int, *,
                  margin: int | None = None, n_cut=0, prompt_len: int = 0, alpha: float = 0.05,
                  n_boot: int = 2000, n_perm: int = 1000, seed: int = 0,
                  windows: Sequence[int] | None = None, sample_length=None) -> dict:
    """All spelling statistics of one checkpoint from its word table (docs/method.md, Spelling).

    The array-level entry point behind `analyze` (which extracts and scores the words of
    the texts first); the null-model tests call it directly.

    Parameters
    ----------
    word_sample : array_like of int, shape (W,)
        Sample index (0..N-1) of every counted word, non-decreasing, words of a sample in
        text order.
    word_start : array_like of int, shape (W,)
        Start offset in the counted part (0 = first character after the prompt, < L).
    word_len : array_like of int, shape (W,)
        Length in characters.
    word_mis : array_like of bool, shape (W,)
        Misspelling flag.
    n_samples : int
        N (samples without words count as zeros).
    length : int
        Counted characters L per sample.
    margin : int, optional
        M (recorded only).
    n_cut : int or array_like of int, optional
        Cut words (total, or per sample); recorded.
    prompt_len : int, optional
        Recorded only.
    alpha : float
        Level of every test.
    n_boot : int
        BCa resamples for the CIs of F_correct, F_misspelled and RR (0: no CIs).
    n_perm : int
        Permutations of both nulls (0: no nulls).
    seed : int
        See the module docstring.
    windows : sequence of int, optional
        Window widths of Q(w); default `default_windows` (``[]``: no Q(w)).
    sample_length : array_like of int, optional
        Counted characters available per sample, for Q(w) windows (default L).

    Returns
    -------
    dict
        JSON-ready (see `analyze`).

    Raises
    ------
    ValueError
        Fewer than 2 samples, or arrays of different lengths.
    """
    samp = np.asarray(word_sample, dtype=np.int64).ravel()
    start = np.asarray(word_start, dtype=np.int64).ravel()
    wlen = np.asarray(word_len, dtype=np.int64).ravel()
    mis = np.asarray(word_mis, dtype=bool).ravel()
    N, L = int(n_samples), int(length)
    if N < 2:
        raise ValueError(f"analyze needs at least 2 samples, got {N}")
    if not (samp.size == start.size == wlen.size == mis.size):
        raise ValueError("word arrays must have the same length")
    if samp.size and np.any(np.diff(samp) < 0):
        raise ValueError("word_sample must be non-decreasing")
    n_words = np.bincount(samp, minlength=N).astype(np.int64)
    n_mis = np.bincount(samp[mis], minlength=N).astype(np.int64)
    n_cor = n_words - n_mis
    cut = np.asarray(n_cut, dtype=np.int64)
    n_cut_total = int(cut.sum())
    W = int(samp.size)
    if windows is None:
        windows = default_windows(L)
    windows = [int(w) for w in windows if 1 <= int(w) <= L]

    d_cor = dispersion(n_cor, alpha=alpha, n_boot=n_boot, seed=seed)
    d_mis = dispersion(n_mis, alpha=alpha, n_boot=n_boot, seed=seed + 1)
    d_words = dispersion(n_words, alpha=alpha, n_boot=0)
    ref = independent_reference(samp, wlen, mis, N, word_start=start)
    ren = renewal_reference(samp, start)

    # permutation null (stratified by length and position)
    if n_perm and n_perm > 0 and W:
        null = stratified_null(samp, start, wlen, mis, N, L, windows, n_perm, seed, sample_length)
    else:
        null = None
    empty = np.zeros(0)
    decomp = {"words": dict(fano=d_words["fano"], renewal_reference=ren["cv2"],
                            mean_spacing=ren["mean_spacing"], n_spacings=ren["n_spacings"],
                            verdict=d_words["verdict"], p_value=d_words["p_value"])}
    for name, fobs, fref in (("correct", d_cor["fano"], ref["fano_ref_correct"]),
                             ("misspelled", d_mis["fano"], ref["fano_ref_misspelled"])):
        arr = null[f"fano_{name}"] if null is not None else empty
        decomp[name] = _null_summary(fobs, arr, fref, alpha, "clustered", "anti-clustered",
                                     ref[f"log_se_{name}"])
        decomp[name].update(residual_ratio=ref["residual_ratio"][0], log_residual_se=ref["residual_ratio"][1])
        if null is None:
            decomp[name].update(verdict="undefined",
                                reason="no words" if not W else "permutation null disabled (n_perm = 0)")
        elif decomp[name]["reason"] is None and fobs == fobs and not fref > 0:
            decomp[name]["reason"] = "closed-form reference undefined"
    decomp.update(n_perm=int(n_perm), perm_seed=[int(seed), 1], length_bins=LENGTH_BINS,
                  position_edges=position_edges(L))

    # Q(w) with the null band
    qc = q_curve(samp, start, mis, N, L, windows, sample_length)
    q_cols = {"windows": windows}
    for key in ("q_correct", "q_misspelled", "fano_correct", "fano_misspelled", "n_windows"):
        q_cols[key] = [qc[w][key] for w in windows]
    for name in ("correct", "misspelled"):
        band = {"lo": [], "median": [], "hi": []}
        for w in windows:
            f = null["windows"][w][f"fano_{name}"] if null is not None else empty
            f = f[np.isfinite(f)]
            lo, med, hi = (np.quantile(f, [alpha / 2, 0.5, 1 - alpha / 2]) - 1.0 if f.size
                           else (math.nan,) * 3)
            band["lo"].append(lo)
            band["median"].append(med)
            band["hi"].append(hi)
        q_cols[f"null_q_{name}"] = band

    # cascade RR with the within-sample null
    cas = cascade(samp, mis, N, n_boot=n_boot, seed=seed + 2)
    if cas["reason"] is None and n_perm and n_perm > 0:
        rr_null = cascade_null(samp, mis, N, n_perm, seed, word_start=start)
        s = _null_summary(cas["rr"], rr_null, math.nan, alpha, "cascade", "anti-cascade")
        cas.update(null_median=s["null_median"], null_band=s["null_band"], p_value=s["p_value"],
                   n_null=s["n_null"], verdict=s["verdict"], log_null_sd=s["log_null_sd"], z=s["z"])
        if s["reason"]:
            cas["reason"] = s["reason"]
    else:
        cas.update(null_median=math.nan, null_band=[math.nan, math.nan], p_value=math.nan,
                   n_null=0, verdict="undefined", log_null_sd=math.nan, z=math.nan)
        if cas["reason"] is None:
            cas["reason"] = "permutation null disabled (n_perm = 0)"
    cas["perm_seed"] = [int(seed), 2]

    out = dict(
        n_samples=N, prompt_len=int(prompt_len), length=L,
        margin=None if margin is None else int(margin), alpha=float(alpha), n_boot=int(n_boot),
        n_perm=int(n_perm), seed=int(seed), n_words_total=W, n_cut=n_cut_total,
        cut_fraction=n_cut_total / (W + n_cut_total) if W + n_cut_total else math.nan,
        correct=d_cor, misspelled=d_mis, words=d_words,
        error_rate=ref["error_rate"],
        error_rate_reason=None if W else "no words",
        rate_by_length=ref["rate_by_length"], rate_by_position=ref["rate_by_position"],
        excess_correct=decomp["correct"]["excess"],
        excess_misspelled=decomp["misspelled"]["excess"],
        cascade_rr=cas["rr"],
        decomposition=decomp, q_curve=q_cols, cascade=cas,
        counts=dict(correct=n_cor, misspelled=n_mis),
    )
    return jsonable(out)


def analyze(texts: Sequence[str], lexicon, prompt_len: int, length: int, margin: int = 16,
            alpha: float = 0.05, n_boot: int = 2000, n_perm: int = 1000, seed: int = 0,
            windows: Sequence[int] | None = None) -> dict:
    """All spelling statistics of one checkpoint's samples (docs/method.md, Spelling).

    Parameters
    ----------
    texts : sequence of str
        N samples, each the prompt, ``length`` counted characters and ``margin`` further
        generated characters (a shorter text is accepted: its cut words are counted).
    lexicon : set of str
    prompt_len : int
    length : int
        Counted characters L.
    margin : int, optional
        M (default 16), recorded; the rule itself only needs the texts.
    alpha, n_boot, n_perm, seed, windows : optional
        See `analyze_words`.

    Returns
    -------
    dict
        JSON-serialisable (Python types only; undefined values are None with a ``reason``):

        ``n_samples``, ``prompt_len``, ``length``, ``margin``, ``alpha``, ``n_boot``,
        ``n_perm``, ``seed``, ``n_words_total``, ``n_cut``, ``cut_fraction``,
        ``n_short_texts`` (texts shorter than prompt + L + M);
        ``correct``, ``misspelled``, ``words``: `dispersion` dicts of the per-sample counts;
        ``error_rate`` (+ ``error_rate_reason``); ``rate_by_length``, ``rate_by_position`` (see
        `independent_reference`); ``excess_correct``, ``excess_misspelled`` (F / F_ref,
        closed form); ``cascade_rr``;
        ``decomposition``: ``words`` {``fano``, ``renewal_reference`` (CV^2 of the word-start
        spacing), ``mean_spacing``, ``n_spacings``, ``verdict``, ``p_value``}, and for
        ``correct`` / ``misspelled`` {``fano``, ``fano_ref`` (closed form), ``excess`` =
        F / F_ref, ``null_median``, ``null_band`` [alpha/2, 1 - alpha/2 quantiles],
        ``excess_null`` = F / null median with ``excess_null_ci`` (exp(log excess +- z SE)) and
        ``log_excess_se`` (`log_excess_se`), ``log_null_sd`` (SD of log F over the
        permutations), ``z`` = log excess / log_null_sd, ``p_value`` (two-sided permutation),
        ``n_null``, ``verdict`` ("clustered" / "anti-clustered" / "independent" / "undefined"),
        ``reason``, ``residual_ratio`` and ``log_residual_se`` (`residual_ratio`)}, ``n_perm``,
        ``perm_seed``, ``length_bins``, ``position_edges``;
        ``q_curve``: columns ``windows``, ``q_correct``, ``q_misspelled``,
        ``fano_correct``, ``fano_misspelled``, ``n_windows`` and ``null_q_correct`` /
        ``null_q_misspelled`` = {``lo``, ``median``, ``hi``} (the permutation null's band of
        Q, aligned with ``windows``);
        ``cascade``: `cascade` dict plus ``null_median``, ``null_band``, ``p_value``
        (two-sided, within-sample, within-position permutation), ``log_null_sd`` (SD of log RR
        over the permutations), ``z`` = log(RR / null median) / log_null_sd, ``n_null``,
        ``verdict`` ("cascade" /
        "anti-cascade" / "independent" / "undefined"), ``perm_seed``;
        ``counts``: ``{"correct": [...], "misspelled": [...]}`` per sample.

    Raises
    ------
    ValueError
        Fewer than 2 samples.
    """
    if len(texts) < 2:
        raise ValueError(f"analyze needs at least 2 samples, got {len(texts)}")
    sc = score_samples(texts, lexicon, prompt_len, length)
    avail = np.clip(sc.text_lengths - int(prompt_len), 0, int(length))
    out = analyze_words(sc.word_sample, sc.word_start - int(prompt_len), sc.word_len, sc.word_mis,
                        len(sc), length, margin=margin, n_cut=sc.n_cut, prompt_len=prompt_len,
                        alpha=alpha, n_boot=n_boot, n_perm=n_perm, seed=seed, windows=windows,
                        sample_length=None if np.all(avail == int(length)) else avail)
    out["n_short_texts"] = int(np.count_nonzero(
        sc.text_lengths < int(prompt_len) + int(length) + int(margin or 0)))
    return out


# ---------------------------------------------------------------------------
# Across checkpoints
# ---------------------------------------------------------------------------
def crossing_iteration(iterations, fano_values, interpolate: bool = True, which: str = "last"):
    """Iteration where a Fano factor drops through 1 (point estimate, no conditions).

    Parameters
    ----------
    iterations : array_like of int
        Checkpoint iterations (sorted internally).
    fano_values : array_like of float
        F at each checkpoint; None/NaN entries are skipped.
    interpolate : bool, optional
        If True (default), linearly interpolate F in ``log(iteration + 1)``
        between the checkpoint with F >= 1 and the next one with F < 1 and
        return the iteration where F = 1 (a float). If False, return the first
        checkpoint iteration with F < 1 that follows one with F >= 1.
    which : {"last", "first"}, optional
        ``"last"`` (default): the downward crossing after which F stays below 1 at
        every later checkpoint; None if F ends at or above 1. ``"first"``: the
        first downward crossing.

    Returns
    -------
    float or None
        None when F never goes from >= 1 to < 1 between consecutive (finite)
        checkpoints. Use `crossing` for the reported crossing (conditions and CI).
    """
    if which not in ("last", "first"):
        raise ValueError("which must be 'last' or 'first'")
    it = np.asarray(iterations, dtype=float)
    f = np.asarray([math.nan if v is None else v for v in fano_values], dtype=float)
    if it.shape != f.shape:
        raise ValueError("iterations and fano_values must have the same length")
    order = np.argsort(it, kind="stable")
    it, f = it[order], f[order]
    ok = np.isfinite(f) & np.isfinite(it)
    it, f = it[ok], f[ok]
    found = None
    for i in range(1, it.size):
        if f[i - 1] >= 1.0 and f[i] < 1.0:
            if not interpolate:
                found = float(it[i])
            else:
                x0, x1 = math.log1p(it[i - 1]), math.log1p(it[i])
                t = (f[i - 1] - 1.0) / (f[i - 1] - f[i])
                found = float(math.expm1(x0 + t * (x1 - x0)))
            if which == "first":
                return found
    if found is not None and f[-1] >= 1.0:
        return None  # F came back above 1 and stayed there: no lasting transition
    return found


def crossing(iterations, correct_counts, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0,
             ci: float = 0.95) -> dict:
    """The crossing of F_correct through 1 across checkpoints, with its bootstrap CI.

    Reported only when the first checkpoint is not sub-Poissonian and the last is
    significantly sub-Poissonian (index-of-dispersion test of `dispersion` at ``alpha``), and
    F has a lasting downward crossing of 1 (`crossing_iteration`, interpolated in
    ``log(1 + iteration)``); otherwise ``iteration`` is None and ``reason`` says why.

    The CI resamples the samples within every checkpoint (``n_boot`` times, with
    replacement), recomputes every F and the crossing; a replicate without a lasting crossing
    is placed after the last checkpoint when its last F >= 1 (not yet crossed) and before the
    first one otherwise (F < 1 throughout); the bounds are the ``(1 - ci)/2`` and
    ``(1 + ci)/2`` quantiles (inverted-CDF) of that ordering; an open bound is None.
    (Written by hand: the statistic is undefined in some replicates, which
    `scipy.stats.bootstrap` cannot take.)

    Parameters
    ----------
    iterations : sequence of int
    correct_counts : sequence of array_like of int
        Per checkpoint, the per-sample correct-word counts.
    alpha, n_boot, seed, ci : optional
        The generator is ``numpy.random.default_rng([seed, 3])``.

    Returns
    -------
    dict
        ``iteration`` (float or None), ``ci`` [lo, hi], ``reported`` (bool), ``reason``,
        ``first`` / ``last`` {``iteration``, ``fano``, ``p_value``, ``verdict``},
        ``iterations``, ``fano``, ``boot_not_crossed_fraction`` (replicates not crossed by
        the last checkpoint), ``boot_below_fraction`` (replicates below 1 throughout),
        ``n_boot``, ``seed``, ``alpha``.
    """
    pairs = sorted(((int(i), np.asarray(c, dtype=float).ravel())
                    for i, c in zip(iterations, correct_counts) if i is not None),
                   key=lambda p: p[0])
    pairs = [p for p in pairs if p[1].size >= 2]
    its = [p[0] for p in pairs]
    disp = [dispersion(c, alpha=alpha, n_boot=0) for _, c in pairs]
    fano = [d["fano"] for d in disp]
    out = dict(iteration=None, ci=[None, None], reported=False, reason=None, first=None, last=None,
               iterations=its, fano=fano, boot_not_crossed_fraction=None, boot_below_fraction=None,
               n_boot=int(n_boot), seed=int(seed), alpha=float(alpha))

    def brief(k):
        return dict(iteration=its[k], fano=fano[k], p_value=disp[k]["p_value"], verdict=disp[k]["verdict"])

    if len(pairs) < 2:
        out["reason"] = "fewer than two checkpoints with at least two samples"
        return jsonable(out)
    out["first"], out["last"] = brief(0), brief(-1)
    a, b = disp[0], disp[-1]
    if a["verdict"] == "undefined" or b["verdict"] == "undefined":
        out["reason"] = "F_correct undefined at the first or last checkpoint (no correct words)"
    elif a["verdict"] == "sub-Poissonian":
        out["reason"] = (f"the first checkpoint (iteration {its[0]}) is already significantly "
                         f"sub-Poissonian (F = {a['fano']:.3g}, p = {a['p_value']:.2g})")
    elif b["verdict"] != "sub-Poissonian":
        out["reason"] = (f"the last checkpoint (iteration {its[-1]}) is not significantly "
                         f"sub-Poissonian (F = {b['fano']:.3g}, p = {b['p_value']:.2g})")
    else:
        x = crossing_iteration(its, fano)
        if x is None:
            out["reason"] = ("F_correct is below 1 at every checkpoint (the first not significantly): "
                             "no crossing inside the checkpoints")
    if out["reason"] is not None:
        return jsonable(out)
    out.update(iteration=x, reported=True)
    if n_boot and n_boot > 0:
        rng = np.random.default_rng([int(seed), 3])
        fb = np.empty((int(n_boot), len(pairs)))
        for k, (_, c) in enumerate(pairs):
            xs = c[rng.integers(0, c.size, (int(n_boot), c.size))]
            fb[:, k] = _fano_axis(xs, axis=1)
        vals = np.empty(int(n_boot))
        for r in range(int(n_boot)):
            v = crossing_iteration(its, fb[r])
            if v is None:
                f = fb[r][np.isfinite(fb[r])]
                v = math.inf if f.size and f[-1] >= 1.0 else -math.inf
            vals[r] = v
        lo, hi = np.quantile(vals, [(1 - ci) / 2, (1 + ci) / 2], method="inverted_cdf")
        out["ci"] = [float(lo) if np.isfinite(lo) else None, float(hi) if np.isfinite(hi) else None]
        out["boot_not_crossed_fraction"] = float(np.mean(vals == math.inf))
        out["boot_below_fraction"] = float(np.mean(vals == -math.inf))
    return jsonable(out)
