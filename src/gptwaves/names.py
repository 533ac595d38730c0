"""Checkpoint names: the one definition of ``iter_XXXXXXX`` and what can be read from it.

A checkpoint at iteration ``i`` is named ``iter_{i:07d}`` (:func:`ckpt_stem`). Everything a stage
writes per checkpoint is named after it: the main outputs exactly (``iter_0000500``), variants with
a suffix (``iter_0000500.seed1``, ``iter_0000500.prompt-verse``), figures with a prefix
(``iter_0000500_acf.png``). Every module that reads an iteration from a name uses this module.
"""

from __future__ import annotations

import re

__all__ = ["ckpt_stem", "is_main_name", "iteration_of_name", "iteration_of_stem", "iteration_in", "figure_stem",
           "CHECKPOINT_FILE", "NAME_PATTERN"]

_DIGITS = r"(\d{7})"
_MAIN = re.compile(rf"iter_{_DIGITS}")
_STEM = re.compile(rf"iter_{_DIGITS}(?:\.|$)")
#: A checkpoint name anywhere in a text (the iteration is group 1).
NAME_PATTERN = re.compile(rf"iter_{_DIGITS}")
_FIGURE = re.compile(rf"iter_{_DIGITS}_(.+)")
#: A checkpoint's metadata file, ``iter_XXXXXXX.json`` (the iteration is group 1).
CHECKPOINT_FILE = re.compile(rf"^iter_{_DIGITS}\.json$")


def ckpt_stem(iteration: int) -> str:
    """The name of the checkpoint at ``iteration`` (``iter_0000500``)."""
    return f"iter_{iteration:07d}"


def is_main_name(name: str) -> bool:
    """True for a checkpoint's main output name (``iter_0000500``), False for variants
    (``iter_0000500.seed1``, ``iter_0000500.prompt-verse``) and other names."""
    return bool(_MAIN.fullmatch(name))


def iteration_of_name(name: str) -> int | None:
    """The iteration of a main output name (``iter_0000500`` -> 500), else None."""
    m = _MAIN.fullmatch(name)
    return int(m.group(1)) if m else None


def iteration_of_stem(stem: str) -> int | None:
    """The iteration of a main or variant name (``iter_0000500.seed1`` -> 500), else None."""
    m = _STEM.match(stem)
    return int(m.group(1)) if m else None


def iteration_in(text: str) -> int | None:
    """The iteration of the first checkpoint name anywhere in ``text`` (a path, a figure's file
    name such as ``figures/iter_0000500_acf.png``), else None."""
    m = NAME_PATTERN.search(text)
    return int(m.group(1)) if m else None


def figure_stem(stem: str) -> tuple[int | None, str]:
    """A figure's file stem split into (iteration, rest): ``iter_0000500_acf`` -> (500, "acf");
    a figure of no single checkpoint (``order_parameters``) -> (None, "order_parameters")."""
    m = _FIGURE.fullmatch(stem)
    return (int(m.group(1)), m.group(2)) if m else (None, stem)
