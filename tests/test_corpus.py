"""Corpus lookup, validation, tokenizer, split and lexicon (docs/method.md, Corpus)."""

from __future__ import annotations

import hashlib
import io
import re
import urllib.error
import urllib.request

import numpy as np
import pytest

import gptwaves.corpus as corpus_mod
from gptwaves.corpus import CharTokenizer, Corpus, read_corpus_text, resolve_corpus
from gptwaves.errors import GptwavesError

# ------------------------------------------------------------------ tokenizer


def test_tokenizer_round_trip(synthetic_text):
    tok = CharTokenizer.from_text(synthetic_text)
    assert tok.chars == sorted(set(synthetic_text))
    assert tok.vocab_size == len(set(synthetic_text))
    ids = tok.encode(synthetic_text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    # independent reference: index in the sorted vocabulary
    vocab = sorted(set(synthetic_text))
    assert ids[:200] == [vocab.index(c) for c in synthetic_text[:200]]
    assert tok.decode(ids) == synthetic_text
    assert tok.decode(np.array(ids)) == synthetic_text


def test_to_chars_keeps_shape():
    tok = CharTokenizer.from_text("hello world\n")
    ids = np.array([[tok.stoi["h"], tok.stoi["i"] if "i" in tok.stoi else 0], [tok.stoi[" "], tok.stoi["\n"]]])
    ch = tok.to_chars(ids)
    assert ch.shape == (2, 2)
    assert ch.dtype == np.dtype("<U1")
    assert ch[0, 0] == "h" and ch[1, 0] == " " and ch[1, 1] == "\n"
    assert "".join(tok.to_chars(tok.encode("low")).tolist()) == "low"


def test_unknown_characters_are_named():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(GptwavesError) as e:
        tok.encode("abz cQ", what="prompt")
    msg = str(e.value)
    assert "'z'" in msg and "'Q'" in msg and "prompt" in msg
    assert tok.unknown("abz cQ") == ["Q", "z"]


def test_tokenizer_rejects_bad_vocab():
    with pytest.raises(GptwavesError):
        CharTokenizer(["a", "a"])
    with pytest.raises(GptwavesError):
        CharTokenizer(["ab", "c"])


# ------------------------------------------------------------------ split and lexicon


def test_split_sizes(corpus, synthetic_text):
    n = len(synthetic_text)
    n_train = int(n * 0.9)
    assert corpus.n_train == n_train
    assert corpus.train_text == synthetic_text[:n_train]
    assert corpus.val_text == synthetic_text[n_train:]
    assert len(corpus.train_ids) == n_train and len(corpus.val_ids) == n - n_train
    assert corpus.tokenizer.decode(corpus.train_ids) + corpus.tokenizer.decode(corpus.val_ids) == synthetic_text
    assert corpus.sha256 == hashlib.sha256(synthetic_text.encode()).hexdigest()


def test_lexicon_is_training_split_words_only(tmp_path):
    head = "The cat sat on the mat. Don't panic, King's men!\n" * 20
    tail = "Zebra quux walked.\n" * 3  # less than 10% of the text: validation only
    text = head + tail
    assert len(tail) < 0.1 * len(text)
    c = Corpus(text=text)
    train = text[: c.n_train]
    assert "zebra" not in train.lower()
    expected = {w.lower() for w in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", train)}
    assert c.lexicon == expected
    assert {"the", "cat", "don't", "king's", "men"} <= c.lexicon
    assert "zebra" not in c.lexicon and "quux" not in c.lexicon
    assert all(w == w.lower() for w in c.lexicon)


def test_describe_counts(corpus, synthetic_text):
    d = corpus.describe()
    words = re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", synthetic_text)
    assert d["characters"] == len(synthetic_text)
    assert d["vocab_size"] == len(set(synthetic_text))
    assert d["words"] == len(words)
    assert d["distinct_words"] == len({w.lower() for w in words})
    assert d["train_characters"] == int(len(synthetic_text) * 0.9)
    assert d["is_tiny_shakespeare"] is False


def test_real_tiny_shakespeare(tiny_shakespeare_path):
    c = Corpus.load(tiny_shakespeare_path)
    assert len(c.text) == 1115394
    assert c.tokenizer.vocab_size == 65
    assert c.sha256 == corpus_mod.TINY_SHAKESPEARE_SHA256
    assert c.n_train == 1003854  # nanoGPT's shakespeare_char prepare.py: train has 1,003,854 tokens
    assert len(c.val_ids) == 111540
    assert c.describe()["is_tiny_shakespeare"] is True


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "not found"),
        (b"", "empty"),
        (b"hello\x00world\x00" * 10, "NUL"),
        (b"caf\xe9 au lait\n", "UTF-8"),
        ("a".encode() * 1000, "distinct"),
        ("DIR", "directory"),
    ],
    ids=["missing", "empty", "binary", "non-utf8", "one-char", "directory"],
)
def test_bad_corpus_rejected(tmp_path, content, needle):
    p = tmp_path / "bad.txt"
    if content == "DIR":
        p.mkdir()
    elif content is not None:
        p.write_bytes(content)
    with pytest.raises(GptwavesError, match=re.escape(needle)):
        read_corpus_text(p)
    with pytest.raises(GptwavesError, match=re.escape(needle)):
        Corpus.load(p)


# ------------------------------------------------------------------ lookup order and download


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No GPTWAVES_CORPUS, an empty private cache, and no network (urlopen fails the test)."""
    monkeypatch.delenv("GPTWAVES_CORPUS", raising=False)
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    calls = []

    def no_network(*a, **k):
        calls.append(a)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return cache / "gptwaves" / corpus_mod.TINY_SHAKESPEARE_NAME


def _write(p, text="some text\n"):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_lookup_order(tmp_path, monkeypatch, clean_env):
    cached = clean_env
    fake = b"To be, or not to be.\n" * 50
    monkeypatch.setattr(corpus_mod, "TINY_SHAKESPEARE_SHA256", hashlib.sha256(fake).hexdigest())
    cached.parent.mkdir(parents=True)
    cached.write_bytes(fake)
    env_file = _write(tmp_path / "env.txt")
    explicit = _write(tmp_path / "explicit.txt")
    monkeypatch.setenv("GPTWAVES_CORPUS", str(env_file))
    assert resolve_corpus(explicit) == explicit  # explicit beats env
    assert resolve_corpus(None) == env_file  # env beats cache
    monkeypatch.delenv("GPTWAVES_CORPUS")
    assert resolve_corpus(None) == cached  # cache beats download
    assert resolve_corpus("") == cached


def test_missing_explicit_and_env_are_errors(tmp_path, monkeypatch, clean_env):
    with pytest.raises(GptwavesError, match="not found"):
        resolve_corpus(tmp_path / "nope.txt")
    monkeypatch.setenv("GPTWAVES_CORPUS", str(tmp_path / "nope2.txt"))
    with pytest.raises(GptwavesError, match="GPTWAVES_CORPUS"):
        resolve_corpus(None)


def test_no_download_flag(clean_env):
    with pytest.raises(GptwavesError, match="--corpus"):
        resolve_corpus(None, download=False)


def test_corrupted_cache_is_error(clean_env):
    cached = clean_env
    _write(cached, "not tiny shakespeare\n")
    with pytest.raises(GptwavesError, match="sha256"):
        resolve_corpus(None)


def test_download_good_checksum_is_cached(monkeypatch, clean_env):
    cached = clean_env
    fake = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
    monkeypatch.setattr(corpus_mod, "TINY_SHAKESPEARE_SHA256", hashlib.sha256(fake).hexdigest())
    urls = []

    def urlopen(url, *a, **k):
        urls.append(url)
        return _FakeResponse(fake)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    p = resolve_corpus(None)
    assert p == cached and cached.read_bytes() == fake
    assert urls == [corpus_mod.TINY_SHAKESPEARE_URL]
    assert "karpathy/char-rnn" in urls[0] and urls[0].endswith("data/tinyshakespeare/input.txt")
    # second lookup uses the cache without the network
    assert resolve_corpus(None) == cached
    assert len(urls) == 1
    c = Corpus.load(None)
    assert c.text == fake.decode()


def test_download_bad_checksum_is_error_and_not_cached(monkeypatch, clean_env):
    cached = clean_env
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _FakeResponse(b"evil corpus\n" * 10))
    with pytest.raises(GptwavesError, match="sha256"):
        resolve_corpus(None)
    assert not cached.exists()
    assert not cached.parent.exists() or not any(cached.parent.iterdir())


def test_download_network_failure_is_error(monkeypatch, clean_env):
    def fail(*a, **k):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    with pytest.raises(GptwavesError, match="could not download"):
        resolve_corpus(None)
    assert not clean_env.exists()
