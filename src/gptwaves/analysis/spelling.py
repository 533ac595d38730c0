"""Counting statistics of spelling errors in generated text (DESIGN section 5).

Pure functions (numpy / scipy only, no file I/O): word extraction, lexicon
scoring, dispersion (Fano factor, Mandel Q, index-of-dispersion test), the
independent-error (binomial thinning) reference, the counting-window curve
Q(w), the cascade statistics of consecutive misspellings, and the crossing
iteration of a Fano factor through 1.

Conventions
-----------
A *sample* is one generated text **including** its prompt: ``texts[i][:prompt_len]``
is the prompt, and the ``length`` generated characters follow it. A *word* is a
maximal match of `WORD_RE`, lowercased; a word is *correct* when it is in the
lexicon, otherwise *misspelled*.

Functions
---------
extract_words, build_lexicon, load_word_list, score_samples, dispersion,
independent_reference, window_counts, q_curve, cascade, analyze,
crossing_iteration
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "WORD_RE",
    "ScoredSamples",
    "extract_words",
    "build_lexicon",
    "load_word_list",
    "score_samples",
    "dispersion",
    "independent_reference",
    "window_counts",
    "q_curve",
    "default_windows",
    "cascade",
    "analyze",
    "crossing_iteration",
]

#: A word: letters, optionally joined by single internal apostrophes.
WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")

VERDICTS = ("sub-Poissonian", "Poissonian", "super-Poissonian", "undefined")


# ---------------------------------------------------------------------------
# Words and lexicon
# ---------------------------------------------------------------------------
def extract_words(text: str, prompt_len: int = 0) -> list[tuple[str, int, int]]:
    """Extract the scorable words of one generated sample.

    Parameters
    ----------
    text : str
        The sample, prompt included (``text[:prompt_len]`` is the prompt).
    prompt_len : int, optional
        Number of leading prompt characters. Default 0.

    Returns
    -------
    words : list of tuple (str, int, int)
        ``(word_lowercased, start, end)`` for every maximal match of
        `WORD_RE` (``text[start:end]`` is the match), in text order, excluding
        the dropped words below.

    Notes
    -----
    Dropped words:

    * a word overlapping the prompt (``start < prompt_len``), including a
      generated continuation of a prompt that ends in letters;
    * the final word when it may be cut by the sample end: its match ends at
      ``len(text)``, or only a single apostrophe follows it (``"don'"`` could
      have continued as ``"don't"``). A word that happens to end exactly at the
      sample end is therefore also treated as cut -- we cannot know.

    Edge cases: letters are ASCII ``A-Z a-z`` only; digits, punctuation,
    whitespace and any other character split words (``"a1b"`` -> ``a``, ``b``).
    An apostrophe belongs to a word only between two letters: ``"don't"`` and
    ``"o'er"`` are single words, ``"'tis"`` gives ``"tis"``, ``"lords'"`` gives
    ``"lords"``, ``"a''b"`` gives ``a`` and ``b``. Upper case is lowered
    (``"ROMEO"`` -> ``"romeo"``).

    Examples
    --------
    >>> extract_words("\\nO'er the King's 'tis don", prompt_len=1)
    [("o'er", 1, 5), ('the', 6, 9), ("king's", 10, 16), ('tis', 18, 21)]
    """
    n = len(text)
    out = []
    for m in WORD_RE.finditer(text):
        s, e = m.span()
        if s < prompt_len:
            continue
        if e == n or (e == n - 1 and text[e] == "'"):
            continue
        out.append((m.group().lower(), s, e))
    return out


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
        Counts of scored words per sample (``n_words = n_correct + n_misspelled``).
    words : list of list of tuple (int, bool)
        Per sample, ``(start, is_misspelled)`` of each scored word in order.
    word_sample, word_start : ndarray of int64, shape (n_total_words,)
        Flattened: sample index and start offset of every scored word.
    word_mis : ndarray of bool, shape (n_total_words,)
        Flattened misspelling flags (same order).
    text_lengths : ndarray of int64, shape (n_samples,)
        ``len(text)`` of each sample (prompt included).
    prompt_len : int
    """

    n_correct: np.ndarray
    n_misspelled: np.ndarray
    n_words: np.ndarray
    words: list
    word_sample: np.ndarray
    word_start: np.ndarray
    word_mis: np.ndarray
    text_lengths: np.ndarray
    prompt_len: int = 0

    def __len__(self) -> int:
        return int(self.n_words.shape[0])


def score_samples(texts: Sequence[str], lexicon: frozenset[str] | set[str],
                  prompt_len: int) -> ScoredSamples:
    """Score the words of generated samples against a lexicon.

    Parameters
    ----------
    texts : sequence of str
        Samples, prompt included.
    lexicon : set of str
        Lowercased correct words (`build_lexicon` or `load_word_list`).
    prompt_len : int
        Prompt length in characters (same for all samples).

    Returns
    -------
    ScoredSamples
    """
    n = len(texts)
    n_cor = np.zeros(n, dtype=np.int64)
    n_mis = np.zeros(n, dtype=np.int64)
    per_sample = []
    samp, start, mis = [], [], []
    for i, t in enumerate(texts):
        ws = [(s, w not in lexicon) for w, s, _ in extract_words(t, prompt_len)]
        per_sample.append(ws)
        k = sum(m for _, m in ws)
        n_mis[i] = k
        n_cor[i] = len(ws) - k
        samp.extend([i] * len(ws))
        for s, m in ws:
            start.append(s)
            mis.append(m)
    return ScoredSamples(
        n_correct=n_cor,
        n_misspelled=n_mis,
        n_words=n_cor + n_mis,
        words=per_sample,
        word_sample=np.asarray(samp, dtype=np.int64),
        word_start=np.asarray(start, dtype=np.int64),
        word_mis=np.asarray(mis, dtype=bool),
        text_lengths=np.asarray([len(t) for t in texts], dtype=np.int64),
        prompt_len=int(prompt_len),
    )


# ---------------------------------------------------------------------------
# Dispersion
# ---------------------------------------------------------------------------
def _fano(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return math.nan
    m = x.mean()
    if m <= 0:
        return math.nan
    return float(x.var(ddof=1) / m)


def _bootstrap_fano(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Fano factors of `n_boot` with-replacement resamples of `x`.

    Resampling n values with replacement is equivalent to drawing multinomial
    multiplicities over the distinct values, which is what is done here
    (exact, and O(n_boot * n_distinct) instead of O(n_boot * n)).
    """
    n = x.size
    vals, freq = np.unique(x, return_counts=True)
    c = vals - x.mean()  # shift: variance is shift-invariant, avoids cancellation
    w = rng.multinomial(n, freq / n, size=n_boot).astype(float)  # (n_boot, K)
    s1 = w @ c
    s2 = w @ (c * c)
    mean_c = s1 / n
    var = (s2 - n * mean_c**2) / (n - 1)
    var = np.maximum(var, 0.0)
    mean = mean_c + x.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(mean > 0, var / mean, np.nan)
    return f


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
        Bootstrap resamples for the CI of F. 0 disables it (CI = NaN).
    seed : int, optional
        Seed of the bootstrap generator (``numpy.random.default_rng``).
    ci : float, optional
        Confidence level of the percentile bootstrap interval. Default 0.95.

    Returns
    -------
    dict
        ``n``; ``mean``; ``var`` (ddof=1); ``fano`` F = var/mean; ``q`` (Mandel
        Q = F - 1); ``fano_ci`` [lo, hi] (percentile bootstrap over samples);
        ``D`` = (N-1) var/mean; ``dof`` = N-1; ``p_value`` two-sided,
        ``min(1, 2 min(cdf(D), sf(D)))`` under chi2(N-1); ``verdict``:
        ``"sub-Poissonian"`` if p < alpha and F < 1, ``"super-Poissonian"`` if
        p < alpha and F > 1, else ``"Poissonian"``. All values are Python
        floats/ints/str.

    Raises
    ------
    ValueError
        If fewer than 2 counts are given, or counts are negative / not finite.

    Notes
    -----
    When the mean is 0 (all counts zero) F is undefined: ``fano``, ``q``,
    ``fano_ci``, ``D`` and ``p_value`` are NaN and ``verdict`` is
    ``"undefined"``. Bootstrap resamples whose mean is 0 are ignored in the
    percentiles.
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
        return dict(n=n, mean=mean, var=var, fano=nan, q=nan, fano_ci=[nan, nan],
                    D=nan, dof=dof, p_value=nan, verdict="undefined")
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
    if n_boot and n_boot > 0:
        f = _bootstrap_fano(x, int(n_boot), np.random.default_rng(seed))
        f = f[np.isfinite(f)]
        if f.size:
            a = (1.0 - ci) / 2.0
            lo, hi = (float(v) for v in np.quantile(f, [a, 1.0 - a]))
    return dict(n=n, mean=mean, var=var, fano=float(fano), q=float(fano - 1.0),
                fano_ci=[lo, hi], D=float(D), dof=dof, p_value=p, verdict=verdict)


def independent_reference(n_correct, n_misspelled) -> dict:
    """Fano factors expected if each word were misspelled independently.

    If each of the N words of a sample is misspelled independently with
    probability p (independent of N), the misspelled count K is a binomial
    thinning of N: ``Var(K) = p(1-p) E[N] + p^2 Var(N)``, hence
    ``F_K = (1 - p) + p F_N``; likewise the correct count (rate 1-p) has
    ``F = p + (1 - p) F_N``.

    Parameters
    ----------
    n_correct, n_misspelled : array_like of int, shape (N,)
        Per-sample counts.

    Returns
    -------
    dict
        ``error_rate`` p (pooled: total misspelled / total words);
        ``fano_words`` (F of n_correct + n_misspelled); ``fano_correct``,
        ``fano_misspelled`` (observed); ``fano_ref_misspelled`` =
        (1-p) + p F_words; ``fano_ref_correct`` = p + (1-p) F_words;
        ``clustering_excess_misspelled`` = F_mis / F_ref_mis and
        ``clustering_excess_correct`` = F_cor / F_ref_cor (> 1: clustering,
        < 1: anti-clustering). Undefined quantities are NaN.
    """
    c = np.asarray(n_correct, dtype=float).ravel()
    m = np.asarray(n_misspelled, dtype=float).ravel()
    if c.shape != m.shape:
        raise ValueError("n_correct and n_misspelled must have the same length")
    tot = c + m
    total = tot.sum()
    p = float(m.sum() / total) if total > 0 else math.nan
    fw = _fano(tot)
    fc = _fano(c)
    fm = _fano(m)
    ref_m = (1.0 - p) + p * fw
    ref_c = p + (1.0 - p) * fw
    with np.errstate(divide="ignore", invalid="ignore"):
        ex_m = fm / ref_m if ref_m > 0 else math.nan
        ex_c = fc / ref_c if ref_c > 0 else math.nan
    return dict(error_rate=p, fano_words=fw, fano_correct=fc, fano_misspelled=fm,
                fano_ref_misspelled=float(ref_m), fano_ref_correct=float(ref_c),
                clustering_excess_misspelled=float(ex_m),
                clustering_excess_correct=float(ex_c))


# ---------------------------------------------------------------------------
# Counting windows
# ---------------------------------------------------------------------------
def window_counts(scored: ScoredSamples, length: int, w: int,
                  prompt_len: int | None = None) -> dict:
    """Correct / misspelled word counts per non-overlapping window of w characters.

    Parameters
    ----------
    scored : ScoredSamples
    length : int
        Number of generated characters per sample (after the prompt).
    w : int
        Window width in characters (>= 1).
    prompt_len : int, optional
        Defaults to ``scored.prompt_len``.

    Returns
    -------
    dict
        ``correct``, ``misspelled``: int64 arrays, one entry per window,
        samples concatenated (sample-major). ``n_windows``: their length.

    Notes
    -----
    Window k of a sample covers characters ``[prompt_len + k w,
    prompt_len + (k+1) w)``; a word belongs to the window containing its first
    character. Only complete windows are kept: ``k < length // w`` and the
    window must lie inside the sample's text (a shorter text has fewer
    windows). The dropped cut final word (see `extract_words`) is not counted,
    so the last window of a sample is slightly depleted.
    """
    if w < 1:
        raise ValueError("window width must be >= 1")
    p0 = scored.prompt_len if prompt_len is None else int(prompt_len)
    n = len(scored)
    K = int(length) // int(w)
    if K == 0 or n == 0:
        z = np.zeros(0, dtype=np.int64)
        return dict(correct=z, misspelled=z.copy(), n_windows=0)
    k_max = np.clip((scored.text_lengths - p0) // w, 0, K)  # per-sample full windows
    k = (scored.word_start - p0) // w
    ok = (scored.word_start >= p0) & (k < K)
    k, s, mis = k[ok], scored.word_sample[ok], scored.word_mis[ok]
    idx = s * K + k
    mis_c = np.bincount(idx[mis], minlength=n * K).reshape(n, K)
    all_c = np.bincount(idx, minlength=n * K).reshape(n, K)
    keep = np.arange(K)[None, :] < k_max[:, None]
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


def q_curve(scored: ScoredSamples, length: int, prompt_len: int | None = None,
            windows: Sequence[int] | None = None) -> dict:
    """Mandel Q of correct / misspelled counts as a function of window width.

    Parameters
    ----------
    scored : ScoredSamples
    length : int
        Generated characters per sample.
    prompt_len : int, optional
        Defaults to ``scored.prompt_len``.
    windows : sequence of int, optional
        Window widths; default `default_windows` (16 doubling up to `length`).

    Returns
    -------
    dict
        ``{w: {"q_correct", "q_misspelled", "fano_correct", "fano_misspelled",
        "n_windows"}}`` with int keys; NaN where undefined (fewer than 2
        windows or zero mean).
    """
    if windows is None:
        windows = default_windows(length)
    out = {}
    for w in windows:
        wc = window_counts(scored, length, int(w), prompt_len)
        fc, fm = _fano(wc["correct"]), _fano(wc["misspelled"])
        out[int(w)] = dict(q_correct=fc - 1.0, q_misspelled=fm - 1.0,
                           fano_correct=fc, fano_misspelled=fm,
                           n_windows=wc["n_windows"])
    return out


# ---------------------------------------------------------------------------
# Cascade
# ---------------------------------------------------------------------------
def cascade(scored: ScoredSamples) -> dict:
    """Cascade statistics of consecutive misspellings.

    Parameters
    ----------
    scored : ScoredSamples

    Returns
    -------
    dict
        ``p_mis``: fraction of all scored words that are misspelled;
        ``p_mis_given_prev_mis`` and ``p_mis_given_prev_correct``: over pairs of
        consecutive scored words of the same sample; ``cascade_ratio`` =
        p_mis_given_prev_mis / p_mis (1 under independence, > 1 when errors
        cascade); ``n_pairs``, ``n_pairs_prev_mis``;
        ``run_lengths``: list, entry r-1 = number of maximal runs of exactly r
        consecutive misspelled words (r = 1..max); ``n_runs``;
        ``geometric_expected``: expected numbers under independence given
        ``n_runs``, ``n_runs (1-p) p^(r-1)``; ``mean_run_length`` and
        ``geometric_mean_run_length`` = 1/(1-p); ``chi2``, ``chi2_dof``,
        ``chi2_p``: Pearson chi-square of observed vs geometric counts, bins
        r = 1..k-1 plus a tail bin r >= k, where k is the largest r whose
        expected tail count ``n_runs p^(r-1)`` is >= 5 (NaN with < 2 bins).

    Notes
    -----
    Runs never span samples; runs touching a sample's first or last scored
    word are truncated, a small bias towards short runs that the geometric law
    ignores. p is estimated from the words, not fitted to the runs, so
    ``chi2_dof`` = bins - 1.
    """
    nan = math.nan
    mis = scored.word_mis
    samp = scored.word_sample
    n_words = mis.size
    p = float(mis.mean()) if n_words else nan
    same = samp[1:] == samp[:-1]
    prev, cur = mis[:-1][same], mis[1:][same]
    n_pairs = int(same.sum())
    n_prev_mis = int(prev.sum())
    n_prev_cor = n_pairs - n_prev_mis
    p_mm = float(cur[prev].mean()) if n_prev_mis else nan
    p_mc = float(cur[~prev].mean()) if n_prev_cor else nan
    ratio = p_mm / p if (p > 0 and not math.isnan(p_mm)) else nan

    # maximal runs of misspellings within samples
    cont = np.zeros(n_words, dtype=bool)
    if n_words > 1:
        cont[1:] = mis[1:] & mis[:-1] & same
    starts = mis & ~cont
    run_id = np.cumsum(starts)
    lengths = np.bincount(run_id[mis])[1:] if mis.any() else np.zeros(0, dtype=np.int64)
    n_runs = int(lengths.size)
    rmax = int(lengths.max()) if n_runs else 0
    hist = np.bincount(lengths, minlength=rmax + 1)[1:] if n_runs else np.zeros(0, np.int64)
    r = np.arange(1, rmax + 1)
    if n_runs and p < 1:
        geo = n_runs * (1.0 - p) * p ** (r - 1.0)
    else:
        geo = np.full(rmax, nan)
    mean_run = float(lengths.mean()) if n_runs else nan
    geo_mean = 1.0 / (1.0 - p) if (p == p and p < 1) else nan

    chi2 = chi2_p = nan
    chi2_dof = 0
    if n_runs and 0 < p < 1:
        # largest k with expected tail n_runs p^(k-1) >= 5
        k = 1
        while n_runs * p ** k >= 5.0:
            k += 1
        if k >= 2:
            obs = [float(hist[i]) if i < rmax else 0.0 for i in range(k - 1)]
            exp = [n_runs * (1 - p) * p**i for i in range(k - 1)]
            obs.append(float(lengths[lengths >= k].size))
            exp.append(n_runs * p ** (k - 1))
            obs, exp = np.asarray(obs), np.asarray(exp)
            chi2 = float(((obs - exp) ** 2 / exp).sum())
            chi2_dof = int(obs.size - 1)
            chi2_p = float(stats.chi2.sf(chi2, chi2_dof))
    return dict(p_mis=p, p_mis_given_prev_mis=p_mm, p_mis_given_prev_correct=p_mc,
                cascade_ratio=float(ratio), n_pairs=n_pairs, n_pairs_prev_mis=n_prev_mis,
                run_lengths=[int(v) for v in hist], n_runs=n_runs,
                geometric_expected=[float(v) for v in geo],
                mean_run_length=mean_run, geometric_mean_run_length=float(geo_mean),
                chi2=chi2, chi2_dof=chi2_dof, chi2_p=chi2_p)


# ---------------------------------------------------------------------------
# Everything for one checkpoint
# ---------------------------------------------------------------------------
def _jsonable(obj):
    """Convert numpy scalars/arrays to Python types; NaN/inf -> None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def analyze(texts: Sequence[str], lexicon, prompt_len: int, length: int,
            alpha: float = 0.05, n_boot: int = 2000, seed: int = 0,
            windows: Sequence[int] | None = None) -> dict:
    """All spelling statistics of one checkpoint's samples (DESIGN section 5).

    Parameters
    ----------
    texts : sequence of str
        N samples, each the prompt followed by `length` generated characters.
    lexicon : set of str
    prompt_len : int
    length : int
        Generated characters per sample (sets the window widths of Q(w)).
    alpha, n_boot, seed : optional
        Passed to `dispersion` (the correct and misspelled CIs use seeds
        ``seed`` and ``seed + 1``).
    windows : sequence of int, optional
        Window widths of Q(w); default `default_windows`.

    Returns
    -------
    dict
        JSON-serialisable (Python types only; NaN/inf are stored as None):

        ``n_samples``, ``prompt_len``, ``length``, ``alpha``, ``n_boot``,
        ``seed``, ``n_words_total``;
        ``correct``, ``misspelled``, ``words``: `dispersion` dicts of the
        per-sample correct, misspelled and total word counts;
        ``error_rate``; ``clustering_excess`` (misspelled) and
        ``clustering_excess_correct``; ``cascade_ratio``;
        ``reference``: `independent_reference` dict;
        ``q_curve``: columns ``{"windows", "q_correct", "q_misspelled",
        "fano_correct", "fano_misspelled", "n_windows"}`` (lists aligned with
        ``windows``); ``cascade``: `cascade` dict;
        ``counts``: ``{"correct": [...], "misspelled": [...]}`` per sample.

    Raises
    ------
    ValueError
        Fewer than 2 samples.
    """
    if len(texts) < 2:
        raise ValueError(f"analyze needs at least 2 samples, got {len(texts)}")
    sc = score_samples(texts, lexicon, prompt_len)
    d_cor = dispersion(sc.n_correct, alpha=alpha, n_boot=n_boot, seed=seed)
    d_mis = dispersion(sc.n_misspelled, alpha=alpha, n_boot=n_boot, seed=seed + 1)
    d_words = dispersion(sc.n_words, alpha=alpha, n_boot=0)
    ref = independent_reference(sc.n_correct, sc.n_misspelled)
    qc = q_curve(sc, length, prompt_len, windows)
    ws = sorted(qc)
    q_cols = {"windows": ws}
    for key in ("q_correct", "q_misspelled", "fano_correct", "fano_misspelled", "n_windows"):
        q_cols[key] = [qc[w][key] for w in ws]
    cas = cascade(sc)
    out = dict(
        n_samples=len(sc), prompt_len=int(prompt_len), length=int(length),
        alpha=float(alpha), n_boot=int(n_boot), seed=int(seed),
        n_words_total=int(sc.n_words.sum()),
        correct=d_cor, misspelled=d_mis, words=d_words,
        error_rate=ref["error_rate"],
        clustering_excess=ref["clustering_excess_misspelled"],
        clustering_excess_correct=ref["clustering_excess_correct"],
        cascade_ratio=cas["cascade_ratio"],
        reference=ref, q_curve=q_cols, cascade=cas,
        counts=dict(correct=sc.n_correct, misspelled=sc.n_misspelled),
    )
    return _jsonable(out)


# ---------------------------------------------------------------------------
# Across checkpoints
# ---------------------------------------------------------------------------
def crossing_iteration(iterations, fano_values, interpolate: bool = True, which: str = "last"):
    """Iteration where a Fano factor drops through 1.

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
        every later checkpoint (the transition; early noisy dips that come back
        above 1 do not count); None if F ends at or above 1. ``"first"``: the
        first downward crossing.

    Returns
    -------
    float or None
        None when F never goes from >= 1 to < 1 between consecutive (finite)
        checkpoints; a series that starts below 1 has no crossing until it has
        been >= 1.
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
