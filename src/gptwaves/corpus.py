"""Corpus lookup, validation, character tokenizer, train/val split and word lexicon (docs/method.md, Corpus).

Lookup order for the corpus: explicit path -> ``GPTWAVES_CORPUS`` -> user cache -> download
(sha256 verified; a mismatch is an error and the file is never used).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import GptwavesError
from .io import atomic_write_bytes, check_regular_file, read_text_file, sha256_bytes

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_NAME = "tinyshakespeare.txt"
TRAIN_FRACTION = 0.9
#: The largest corpus read (whole, into memory; token ids take 8 bytes per character).
MAX_CORPUS_BYTES = 512 << 20


def _user_corpus(path: str | os.PathLike, what: str) -> Path:
    """A corpus path given by the user (or stored in run.json): an existing regular file of
    bounded size (a FIFO would hang, a device would fill memory), returned absolute."""
    if not isinstance(path, (str, os.PathLike)):
        raise GptwavesError(f"{what} must be a file path, not {path!r}")
    s = os.fspath(path)
    if "\x00" in s:
        raise GptwavesError(f"{what} contains a NUL byte")
    p = Path(s).expanduser()
    if not p.exists():
        raise GptwavesError(f"{what} not found: {p}")
    check_regular_file(p, "corpus", MAX_CORPUS_BYTES)
    return p.resolve()



def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gptwaves"


def resolve_corpus(path: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Return the absolute path of the corpus to use (explicit path, env var, cache, or a download).

    The path is resolved (absolute, symbolic links followed), so a run.json that stores it works
    from any folder; it must be a regular file of at most :data:`MAX_CORPUS_BYTES`.
    """
    if path is not None and (not isinstance(path, (str, os.PathLike)) or os.fspath(path) != ""):
        return _user_corpus(path, "corpus file")
    env = os.environ.get("GPTWAVES_CORPUS")
    if env:
        return _user_corpus(env, "corpus file named by GPTWAVES_CORPUS")
    cached = cache_dir() / TINY_SHAKESPEARE_NAME
    if cached.exists():
        cached = _user_corpus(cached, "cached corpus")
        if sha256_bytes(cached.read_bytes()) == TINY_SHAKESPEARE_SHA256:
            return cached
        raise GptwavesError(
            f"cached corpus {cached} fails its sha256 check; delete it to download again"
        )
    if not download:
        raise GptwavesError("no corpus given: pass --corpus PATH or set GPTWAVES_CORPUS")
    return download_tiny_shakespeare(cached)


def download_tiny_shakespeare(dest: Path, url: str = TINY_SHAKESPEARE_URL) -> Path:
    """Download Tiny Shakespeare to ``dest`` after verifying its sha256."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (fixed https URL)
            data = r.read()
    except (urllib.error.URLError, OSError) as e:
        raise GptwavesError(
            f"could not download Tiny Shakespeare ({e}); pass --corpus PATH or set GPTWAVES_CORPUS"
        ) from None
    got = sha256_bytes(data)
    if got != TINY_SHAKESPEARE_SHA256:
        raise GptwavesError(
            f"downloaded corpus has sha256 {got}, expected {TINY_SHAKESPEARE_SHA256}; not used"
        )
    atomic_write_bytes(dest, data)
    return dest


def read_corpus_text(path: str | os.PathLike) -> tuple[str, str]:
    """Read and validate a corpus file; return (text, sha256 of its bytes)."""
    p = Path(path)
    text, data = read_text_file(p, "corpus", MAX_CORPUS_BYTES)
    if len(set(text)) < 2:
        raise GptwavesError(f"corpus has fewer than 2 distinct characters: {p}")
    return text, sha256_bytes(data)


class CharTokenizer:
    """Character-level tokenizer; the vocabulary is the sorted set of distinct characters."""

    def __init__(self, chars: list[str] | str):
        chars = list(chars)
        if len(set(chars)) != len(chars):
            raise GptwavesError("vocabulary has repeated characters")
        if any(len(c) != 1 for c in chars):
            raise GptwavesError("vocabulary entries must be single characters")
        self.chars: list[str] = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self._itos = np.array(chars, dtype="<U1")

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self.stoi})

    def encode(self, text: str, what: str = "text") -> list[int]:
        bad = self.unknown(text)
        if bad:
            shown = ", ".join(repr(c) for c in bad[:10])
            raise GptwavesError(f"{what} has characters outside the model's vocabulary: {shown}")
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self._itos[np.asarray(ids, dtype=np.int64)].tolist())

    def to_chars(self, ids) -> np.ndarray:
        """Map an integer array of any shape to an array of single characters ('<U1')."""
        return self._itos[np.asarray(ids, dtype=np.int64)]


def words_of(text: str) -> list[str]:
    """Lower-cased words of ``text`` under the word rule of docs/method.md, Spelling."""
    from .analysis.spelling import WORD_RE  # the one word rule (docs/method.md, Spelling)

    return [m.group(0).lower() for m in WORD_RE.finditer(text)]


@dataclass
class Corpus:
    """A validated corpus with its tokenizer and the 90/10 train/validation split."""

    text: str
    path: Path | None = None
    sha256: str = ""
    tokenizer: CharTokenizer = field(init=False)

    def __post_init__(self) -> None:
        if not self.sha256:
            self.sha256 = sha256_bytes(self.text.encode("utf-8"))
        self.tokenizer = CharTokenizer.from_text(self.text)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, download: bool = True) -> "Corpus":
        p = resolve_corpus(path, download=download)
        text, digest = read_corpus_text(p)
        return cls(text=text, path=p, sha256=digest)

    @property
    def n_train(self) -> int:
        return int(len(self.text) * TRAIN_FRACTION)

    @property
    def train_text(self) -> str:
        return self.text[: self.n_train]

    @property
    def val_text(self) -> str:
        return self.text[self.n_train :]

    @cached_property
    def ids(self) -> np.ndarray:
        return np.array(self.tokenizer.encode(self.text), dtype=np.int64)

    @property
    def train_ids(self) -> np.ndarray:
        return self.ids[: self.n_train]

    @property
    def val_ids(self) -> np.ndarray:
        return self.ids[self.n_train :]

    @cached_property
    def lexicon(self) -> frozenset[str]:
        """The set of (lower-cased) words of the training split."""
        return frozenset(words_of(self.train_text))

    def describe(self) -> dict:
        words = words_of(self.text)
        return {
            "path": str(self.path) if self.path else None,
            "characters": len(self.text),
            "vocab_size": self.tokenizer.vocab_size,
            "vocabulary": "".join(self.tokenizer.chars),
            "words": len(words),
            "distinct_words": len(set(words)),
            "train_characters": self.n_train,
            "val_characters": len(self.text) - self.n_train,
            "lexicon_size": len(self.lexicon),
            "sha256": self.sha256,
            "is_tiny_shakespeare": self.sha256 == TINY_SHAKESPEARE_SHA256,
        }
