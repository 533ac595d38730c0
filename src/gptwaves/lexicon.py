"""The default English lexicon for models without a training split here (Hugging Face models).

A gptwaves run scores spelling against the words of its own training split (docs/method.md, Spelling). A
Hugging Face model was trained elsewhere, on a corpus that is not at hand, so its samples are
scored against a maintained English word list instead: the English dictionary of
`pyspellchecker <https://pypi.org/project/pyspellchecker/>`_ (optional extra ``gptwaves[hf]``).

Why this list: it is maintained (regular releases), MIT-licensed, has no dependencies, ships its
data as plain gzipped JSON (no pickle is ever loaded, in line with gptwaves' rule of never
executing code from data files) and is large (about 160,000 entries, built from word
frequencies of subtitles and filtered against English dictionaries): contractions (``don't``),
inflections and archaic forms (``thou``, ``hath``) are in, common misspellings (``teh``,
``recieve``) are out. ``english-words`` (pickled data) and ``wordfreq`` (no longer updated by its
author, several dependencies) were the alternatives.

Only entries that are words by the rule of docs/method.md, Spelling
(``[a-z]+('[a-z]+)*``, lowercased) are kept.
``--lexicon FILE`` overrides the default everywhere.
"""

from __future__ import annotations

import hashlib
import re

from .errors import GptwavesError

__all__ = ["default_lexicon", "DEFAULT_LEXICON_PACKAGE"]

#: The PyPI package the default lexicon comes from (import name ``spellchecker``).
DEFAULT_LEXICON_PACKAGE = "pyspellchecker"

_WORD = re.compile(r"[a-z]+('[a-z]+)*")
_CACHE: dict[str, tuple[frozenset[str], str, str]] = {}


def default_lexicon(min_count: int = 0) -> tuple[frozenset[str], str, str]:
    """The default English lexicon.

    Parameters
    ----------
    min_count : int, optional
        Keep only entries whose frequency count in the dictionary is at least this (0: all).

    Returns
    -------
    words : frozenset of str
        Lowercase words matching the word rule of docs/method.md, Spelling.
    name : str
        A name for the record, with the package version (e.g. ``pyspellchecker-0.9.1:en``).
    digest : str
        First 16 hex digits of the sha256 of the sorted words.

    Raises
    ------
    GptwavesError
        When the package is not installed (one line, with the command that installs it).
    """
    key = f"en>={int(min_count)}"
    if key in _CACHE:
        return _CACHE[key]
    try:
        import spellchecker
        from spellchecker import SpellChecker
    except ImportError:
        raise GptwavesError("the default English lexicon needs the optional extra: pip install 'gptwaves[hf]' "
                            f"(package {DEFAULT_LEXICON_PACKAGE}), or pass --lexicon FILE") from None
    counts = SpellChecker(language="en").word_frequency.dictionary
    words = frozenset(w for w, c in counts.items() if c >= min_count and _WORD.fullmatch(w))
    if not words:
        raise GptwavesError(f"the default lexicon is empty (min count {min_count})")
    version = getattr(spellchecker, "__version__", "unknown")
    name = f"{DEFAULT_LEXICON_PACKAGE}-{version}:en" + (f" (count >= {min_count})" if min_count else "")
    digest = hashlib.sha256("\n".join(sorted(words)).encode()).hexdigest()[:16]
    _CACHE[key] = (words, name, digest)
    return _CACHE[key]
