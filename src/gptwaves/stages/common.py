"""What every stage shares: which checkpoints, which model, which taps, which lexicon.

- `ModelSource`: where the models come from (the run's checkpoints, an external nanoGPT/minGPT
  file with its corpus, or a Hugging Face model) and on which device; built once by the CLI.
- `select_checkpoints` / `load_selected`: ``ITER|all|first|last|PATH`` (or a Hugging Face model)
  into (name, reference) pairs and loaded models.
- `focus_tap`: the one rule for the tap that per-checkpoint figures and claims look at;
  `input_floor`: the one rule for the input floor (the model's embedding tap).
- Reuse of earlier outputs: :func:`gptwaves.versions.reusable` (one rule for every stage).
- Checkpoint names: :mod:`gptwaves.names`.
- `corpus_for_run`, `resolve_lexicon`: the run's corpus and the lexicon spelling is scored with.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..analysis.spelling import load_word_list
from ..checkpoint import CheckpointInfo, list_checkpoints, load_checkpoint, load_external_checkpoint
from ..corpus import Corpus
from ..errors import GptwavesError
from ..hf import HFModel, check_revisions, suite_revisions
from ..io import read_text_file, sweep_stale
from ..names import ckpt_stem
from ..runtime import pick_device
from ..train import read_run_info

__all__ = ["ModelSource", "HFRef", "run_checkpoints", "select_checkpoints", "load_selected", "resolve_taps",
           "focus_tap", "floor_tap", "input_floor", "FLOOR_TAPS", "corpus_for_run", "load_lexicon_file",
           "resolve_lexicon", "guarded", "begin_stage"]


@dataclass(frozen=True)
class ModelSource:
    """Where a stage's models come from, and where they run.

    Attributes
    ----------
    corpus : path, optional
        The corpus (needed for external checkpoints and when run.json's path moved).
    n_head : int, optional
        Head count of an external minGPT checkpoint whose shape does not name it.
    device : str
        ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
    hf_model, hf_revision : str, optional
        A Hugging Face causal LM (name or local folder) in place of the run's checkpoints.
    hf_dtype : str
        The dtype a Hugging Face model is loaded in: float32, bfloat16 or float16.
    """

    corpus: str | os.PathLike | None = None
    n_head: int | None = None
    device: str = "auto"
    hf_model: str | None = None
    hf_revision: str | None = None
    hf_dtype: str = "float32"


@dataclass(frozen=True)
class HFRef:
    """A Hugging Face model (name or local path, optional revision) in place of a checkpoint."""

    name: str
    revision: str | None = None
    step: int | None = None

    @property
    def iteration(self) -> int | None:
        return self.step


def run_checkpoints(run_dir: Path) -> list[CheckpointInfo]:
    """The run's complete checkpoints by iteration; a checkpoint whose vocabulary differs from the
    run's (run.json) is refused."""
    vocab = None
    if (Path(run_dir) / "run.json").exists():
        vocab = read_run_info(run_dir).get("vocab")
    cks = list_checkpoints(Path(run_dir) / "checkpoints", vocab=vocab)
    if not cks:
        raise GptwavesError(f"no checkpoints in {run_dir}; train first (gptwaves train --out {run_dir})")
    return cks


def select_checkpoints(run_dir: Path, which: str | int | None, source: ModelSource = ModelSource()
                       ) -> list[tuple[str, object]]:
    """Resolve ``ITER|all|first|last|PATH`` (or ``source.hf_model``) into a list of (name, reference)."""
    if source.hf_model:  # revisions of a suite are checkpoints (gptwaves.hf.suite_revisions)
        revs = suite_revisions(source.hf_model, source.hf_revision)
        w = "all" if which is None else str(which)
        if w in ("last", "first"):
            revs = revs[-1:] if w == "last" else revs[:1]
        elif w.isdigit() and len(revs) > 1:
            revs = [r for r in revs if r.step == int(w)]
            if not revs:
                raise GptwavesError(f"no revision at step {w} of {source.hf_model}")
        check_revisions(revs)  # all of them, before the first is loaded
        return [(r.name, HFRef(r.model, r.revision, r.step)) for r in revs]
    which = "all" if which is None else str(which)
    if which in ("all", "last", "first"):
        cks = run_checkpoints(run_dir)
        if which == "last":
            cks = cks[-1:]
        elif which == "first":
            cks = cks[:1]
        return [(ckpt_stem(c.iteration), c) for c in cks]
    if which.lstrip("-").isdigit():
        it = int(which)
        cks = {c.iteration: c for c in run_checkpoints(run_dir)}
        if it not in cks:
            raise GptwavesError(f"no checkpoint at iteration {it} in {run_dir} (have: {', '.join(map(str, sorted(cks)))})")
        return [(ckpt_stem(it), cks[it])]
    p = Path(which)
    if not p.exists():
        raise GptwavesError(f"checkpoint not found: {which} (give an iteration, 'all', or a file)")
    return [(p.stem, p)]


def load_selected(ref: object, source: ModelSource = ModelSource(), device=None):
    """Load a reference from `select_checkpoints` onto ``device`` (default: ``source.device``).

    Returns ``(model, meta)``; ``meta`` has at least ``vocab``, ``iteration`` and ``weights_sha256``.
    """
    dev = device if device is not None else pick_device(source.device)
    if isinstance(ref, HFRef):
        hf = HFModel(ref.name, dev, ref.revision, step=ref.step, dtype=source.hf_dtype)
        return hf, hf.meta()
    if isinstance(ref, CheckpointInfo):
        model, meta = load_checkpoint(ref)
    else:
        p = Path(ref)  # type: ignore[arg-type]
        if p.suffix == ".json" or (p.suffix == ".safetensors" and p.with_suffix(".json").exists()):
            model, meta = load_checkpoint(p.with_suffix(".json"))
        else:
            c = Corpus.load(source.corpus)
            model, meta = load_external_checkpoint(p, c.tokenizer.chars, n_head=source.n_head)
    model.to(dev).eval()
    return model, meta


def resolve_taps(model, taps: Sequence[str] | None) -> list[str]:
    """``None`` or ``["all"]``: every tap of the model; otherwise the named taps, checked."""
    if not taps or list(taps) == ["all"]:
        return list(model.tap_names)
    bad = [t for t in taps if t not in model.tap_names]
    if bad:
        raise GptwavesError(f"unknown tap names: {', '.join(bad)} (known: {', '.join(model.tap_names)})")
    return list(taps)


def _depth(tap: str) -> tuple[int, int]:
    """Where a tap sits in the model: (layer, preference); larger is deeper."""
    if m := re.fullmatch(r"hidden\.(\d+)", tap):  # Hugging Face: hidden.0 = embeddings output
        return int(m.group(1)), 1
    if m := re.fullmatch(r"blocks\.(\d+)\.(\w+)", tap):  # the residual stream after the block first
        return int(m.group(1)) + 1, 1 if m.group(2) == "hook_resid_post" else 0
    if tap == "hook_embed":
        return 0, 1
    return -1, 0  # ln_final and anything else: only when nothing else was recorded


def focus_tap(taps: Sequence[str]) -> str:
    """The tap that per-checkpoint figures and the claims look at (docs/method.md, "Coherence"):
    the residual stream after the deepest block recorded (``blocks.{i}.hook_resid_post``; for
    Hugging Face models the deepest ``hidden.{i}``), whatever the order of ``taps``."""
    taps = list(taps)
    if not taps:
        raise ValueError("no taps")
    return max(taps, key=lambda t: (_depth(t), -taps.index(t)))


#: The input floor of each kind of model: its embedding tap (docs/method.md, "Coherence against
#: its floors"): ``hook_embed`` for gptwaves' own GPT, ``hidden.0`` for a Hugging Face model.
FLOOR_TAPS = {"gptwaves": "hook_embed", "hf": "hidden.0"}


def floor_tap(taps: Sequence[str]) -> str:
    """The embedding tap the input floor of a model with these ``taps`` is (whether or not it was
    recorded): ``hidden.0`` when the taps are Hugging Face hidden states, ``hook_embed`` otherwise."""
    hf = any(re.fullmatch(r"hidden\.\d+", t) for t in taps)
    return FLOOR_TAPS["hf" if hf else "gptwaves"]


def input_floor(taps: Sequence[str]) -> str | None:
    """The input floor among the recorded ``taps`` (see `floor_tap`), or None when it was not
    recorded (the findings then say so in words)."""
    t = floor_tap(taps)
    return t if t in list(taps) else None


def corpus_for_run(run_dir: Path, corpus: str | os.PathLike | None) -> Corpus:
    """The corpus a run was trained on: ``corpus`` if given, else the path in run.json (checked)."""
    info = read_run_info(run_dir) if (Path(run_dir) / "run.json").exists() else {}
    c = Corpus.load(corpus if corpus is not None else (info.get("corpus_path") or None))
    if info.get("corpus_sha256") and c.sha256 != info["corpus_sha256"]:
        raise GptwavesError(f"corpus {c.path} is not the one {run_dir} was trained on (sha256 differs)")
    return c


def load_lexicon_file(path: str | os.PathLike) -> frozenset[str]:
    """Read a user word list (one word per line) with clear errors for bad files."""
    text, _ = read_text_file(path, "lexicon")
    try:
        return load_word_list(text.splitlines())
    except ValueError:
        raise GptwavesError(f"lexicon file has no words: {path}") from None


def resolve_lexicon(run_dir: Path, lexicon: str | os.PathLike | None,
                    corpus: str | os.PathLike | None) -> tuple[frozenset[str], str, str]:
    """The lexicon to score words with: a user word list, else the run's training split.

    Returns (words, a name for the record, a short hash of the word set).
    """
    if lexicon is not None:
        lex, name = load_lexicon_file(lexicon), str(lexicon)
    else:
        lex, name = corpus_for_run(run_dir, corpus).lexicon, "training split"
    return lex, name, hashlib.sha256("\n".join(sorted(lex)).encode()).hexdigest()[:16]


def begin_stage(run_dir: Path, *folders: str) -> None:
    """Call under the run lock when a stage starts: sweep the temporary files and orphaned parts
    folders that killed runs left in the stage's folders (``folders`` relative to the run dir)."""
    for f in folders:
        if (Path(run_dir) / f).is_dir():
            sweep_stale(Path(run_dir) / f)


def guarded(out: list, fn: Callable[..., list], *args: Any, **kw: Any) -> None:
    """Draw one figure into ``out`` (the one error policy for figures, in every stage).

    A figure that cannot be drawn or written is skipped with a warning naming the figure and its
    file; it never stops the stage, whose numbers are already computed (an interrupt still does).
    """
    try:
        out += fn(*args, **kw)
    except Exception as e:  # noqa: BLE001 - any failure of a drawing is a warning, never a crash
        name = getattr(fn, "__name__", str(fn))
        stem = next((a for a in args if isinstance(a, Path)), None)
        where = f" ({stem.name})" if stem is not None else ""
        msg = str(e).splitlines()[0] if str(e) else ""
        warnings.warn(f"figure {name}{where} skipped: {type(e).__name__}: {msg}", stacklevel=2)
