"""Words of generated text: extraction with the margin rule, the lexicon, scoring, and the
length and position bins of words (docs/method.md, Spelling).

Pure functions (no file I/O). The conventions (sample, counted characters, margin, word,
cut word, bins) are stated in :mod:`gptwaves.analysis.spelling`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["WORD_RE", "LENGTH_BINS", "POSITION_WIDTH", "position_edges", "scan_words", "extract_words",
           "build_lexicon", "load_word_list", "ScoredSamples", "score_samples", "length_bins", "position_bins",
           "strata"]

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
