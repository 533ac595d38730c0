"""Reading recordings back: lazy, validated, read-only (docs/method.md, Recording waves).

:class:`Recording` opens one ``DIR/recordings/<name>.h5`` file written by
:func:`gptwaves.record.record` (its layout is described there), checks its checksum against the
sidecar and its structure and ranges (:func:`validate_recording`), and hands out waves, tokens,
entropies and texts without loading more than it is asked for. :func:`recording_is_current` tells
whether a recording was made by the recordings' current analysis version.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from .errors import CorruptArtefactError, GptwavesError
from .io import check_regular_file, describe_oserror, read_json, sha256_file
from .names import iteration_of_stem
from .versions import is_current

FORMAT = "gptwaves-recording"



class Recording:
    """Lazy, read-only access to a recording (use as a context manager or call close()).

    >>> with Recording.open("run/recordings/iter_0005000.h5") as rec:     # doctest: +SKIP
    ...     x = rec.waves("blocks.5.hook_resid_post")                    # (S, n, C) numpy
    ...     print(rec.text(0))
    """

    def __init__(self, path: Path, f: h5py.File, meta: dict):
        self.path = Path(path)
        self._f = f
        self.meta = meta

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> "Recording":
        """Open and validate a recording (checksum from the sidecar, then structure and ranges).

        Refused with one line (:class:`~gptwaves.errors.CorruptArtefactError`) when the file is
        not a regular file, fails its checksum, or is inconsistent: shapes that disagree between
        datasets or with the ``samples``/``steps``/``prompt_len`` attributes, token ids outside
        the vocabulary, non-finite attributes or entropies, a non-integer iteration.
        """
        path = Path(path)
        if not path.exists():
            raise GptwavesError(f"recording not found: {path}")
        check_regular_file(path, "recording")
        side = path.with_suffix(".json")
        smeta = None
        if verify and side.exists():
            smeta = read_json(side, "recording metadata", dict)
            expected = smeta.get("sha256")
            if expected is not None and not isinstance(expected, str):
                raise CorruptArtefactError(f"recording metadata {side}: sha256 is not a string")
            if smeta.get("file") not in (None, path.name):
                raise CorruptArtefactError(f"recording metadata {side} describes {smeta.get('file')!r}, not {path.name}")
            if expected is None and "sha256" in smeta:
                raise CorruptArtefactError(f"recording metadata {side}: sha256 is null")
            if expected and sha256_file(path) != expected:
                raise GptwavesError(f"recording {path} fails its sha256 check (truncated or corrupted)")
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise GptwavesError(f"recording {path} is not a readable HDF5 file: {describe_oserror(e)}") from None
        meta = {}
        for k, v in f.attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and v[:1] in "[{" or v == "null":
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    pass
            meta[k] = v.item() if hasattr(v, "item") else v
        if meta.get("format") != FORMAT:
            f.close()
            raise GptwavesError(f"{path} is not a gptwaves recording")
        try:
            if "vocab" in f:
                meta["vocab"] = [v.decode() if isinstance(v, bytes) else str(v) for v in f["vocab"][()]]
            validate_recording(f, meta, path)
            _agrees_with_name_and_sidecar(meta, path, smeta)
        except BaseException as e:
            f.close()
            if isinstance(e, GptwavesError):
                raise
            if isinstance(e, (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError)):
                raise CorruptArtefactError(f"recording {path} is unreadable or inconsistent "
                                           f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
            raise
        return cls(path, f, meta)

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    # --- shape and metadata
    @property
    def taps(self) -> list[str]:
        return list(self.meta["taps"])

    @property
    def vocab(self) -> list[str]:
        return list(self.meta["vocab"])

    @property
    def n_samples(self) -> int:
        return int(self._f["tokens"].shape[0])

    @property
    def prompt_len(self) -> int:
        return int(self.meta["prompt_len"])

    @property
    def is_prompt(self) -> np.ndarray:
        return self._f["is_prompt"][()]

    @property
    def iteration(self):
        return self.meta.get("iteration")

    # --- data (h5py slicing reads only what is asked for)
    def waves(self, tap: str, samples=slice(None), steps=slice(None), channels=slice(None)) -> np.ndarray:
        if tap not in self._f["waves"]:
            raise GptwavesError(f"tap {tap!r} not in recording (has: {', '.join(self.taps)})")
        return self._f["waves"][tap][samples, steps, channels]

    def wave_dataset(self, tap: str) -> h5py.Dataset:
        return self._f["waves"][tap]

    def tokens(self, samples=slice(None)) -> np.ndarray:
        return self._f["tokens"][samples]

    def entropy(self, samples=slice(None)) -> np.ndarray:
        return self._f["entropy"][samples]

    def _itos(self) -> np.ndarray:
        if getattr(self, "_itos_cache", None) is None:
            self._itos_cache = np.array(self.vocab, dtype=str)  # '<U1' for character vocabularies
        return self._itos_cache

    def input_chars(self, samples=slice(None)) -> np.ndarray:
        """Character processed at each position: (S, n) array of '<U1'."""
        return self._itos()[self.tokens(samples)[..., :-1]]

    def next_chars(self, samples=slice(None)) -> np.ndarray:
        """Character predicted (sampled, or dictated by the prompt) at each position."""
        return self._itos()[self.tokens(samples)[..., 1:]]

    def text(self, i: int) -> str:
        """Prompt + generated text of sample ``i``."""
        return "".join(self._itos()[self._f["tokens"][i]].tolist())

    def texts(self) -> list[str]:
        itos = self._itos()
        return ["".join(row) for row in itos[self._f["tokens"][()]].tolist()]

    def iter_batches(self, tap: str, batch: int = 64) -> Iterator[np.ndarray]:
        ds = self._f["waves"][tap]
        for s in range(0, ds.shape[0], batch):
            yield ds[s : s + batch]


def _finite_everywhere(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_everywhere(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_finite_everywhere(v) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        return bool(np.isfinite(obj).all())
    return True


def _pos_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 1


def validate_recording(f: h5py.File, meta: dict, path: Path) -> None:
    """Check a recording's structure and ranges (see :meth:`Recording.open`); raise one line."""
    bad = lambda why: CorruptArtefactError(f"recording {path} is inconsistent: {why}")  # noqa: E731
    for name in ("tokens", "entropy", "is_prompt", "waves"):
        if name not in f:
            raise bad(f"no '{name}' dataset")
    if not _finite_everywhere(meta):
        raise bad("an attribute is NaN or infinite")
    for k in ("samples", "steps", "prompt_len"):
        if not _pos_int(meta.get(k)):
            raise bad(f"attribute {k}={meta.get(k)!r} is not a positive integer")
    it = meta.get("iteration")
    if it is not None and (isinstance(it, (bool, np.bool_)) or not isinstance(it, (int, np.integer)) or it < 0):
        raise bad(f"iteration {it!r} is not a non-negative integer")
    taps = meta.get("taps")
    if not isinstance(taps, list) or not all(isinstance(t, str) for t in taps):
        raise bad("attribute 'taps' is not a list of names")
    vocab = meta.get("vocab")
    if not isinstance(vocab, list) or not vocab or not all(isinstance(c, str) for c in vocab):
        raise bad("no vocabulary")
    if all(len(c) == 1 for c in vocab) and len(set(vocab)) != len(vocab):
        raise bad("the vocabulary has repeated characters")
    S, steps, P = int(meta["samples"]), int(meta["steps"]), int(meta["prompt_len"])
    n = P - 1 + steps
    tok, ent, isp = f["tokens"], f["entropy"], f["is_prompt"]
    if tok.shape != (S, P + steps):
        raise bad(f"tokens have shape {tok.shape}, expected {(S, P + steps)} from the attributes")
    if ent.shape != (S, n):
        raise bad(f"entropy has shape {ent.shape}, expected {(S, n)}")
    if isp.shape != (n,):
        raise bad(f"is_prompt has shape {isp.shape}, expected {(n,)}")
    if tok.dtype.kind not in "iu":
        raise bad("tokens are not integers")
    C = None
    for t in taps:
        if t not in f["waves"]:
            raise bad(f"tap {t!r} is listed but has no data")
        shp = f["waves"][t].shape
        if len(shp) != 3 or shp[:2] != (S, n) or (C is not None and shp[2] != C):
            raise bad(f"waves/{t} has shape {shp}, expected {(S, n, C or 'C')}")
        C = shp[2]
    cfg = meta.get("model_config")
    if isinstance(cfg, dict) and C is not None and cfg.get("n_embd") not in (None, C):
        raise bad(f"waves have {C} channels, the model config says {cfg.get('n_embd')}")
    lo, hi = np.inf, -np.inf
    for s0 in range(0, S, 4096):  # bounded memory
        block = tok[s0 : s0 + 4096]
        lo, hi = min(lo, int(block.min())), max(hi, int(block.max()))
        e = ent[s0 : s0 + 4096]
        if not np.isfinite(e).all() or (e < -1e-3).any():
            raise bad("entropies are NaN, infinite or negative")
    if lo < 0 or hi >= len(vocab):
        raise bad(f"token ids range over [{lo}, {hi}], outside the vocabulary of {len(vocab)}")


_SIDECAR_KEYS = ("iteration", "weights_sha256", "vocab", "prompt", "prompt_len", "samples", "steps", "taps",
                 "sampling", "batch_size", "dtype", "settings_hash", "model_config")


def _agrees_with_name_and_sidecar(meta: dict, path: Path, smeta: dict | None) -> None:
    """A recording named ``iter_XXXXXXX[.variant].h5`` is of that iteration, and its attributes
    agree with its sidecar (which recording reuse trusts)."""
    it = iteration_of_stem(path.stem)
    if it is not None and meta.get("iteration") != it:
        raise CorruptArtefactError(f"recording {path}: iteration {meta.get('iteration')!r} disagrees with its name")
    if smeta is None:
        return
    for k in _SIDECAR_KEYS:
        if k in smeta and smeta[k] != meta.get(k):
            raise CorruptArtefactError(f"recording {path}: attribute {k} disagrees with its sidecar {path.with_suffix('.json').name}")


def open_recording(path: str | Path, verify: bool = True) -> Recording:
    """Open a recording lazily (the notebook entry point)."""
    return Recording.open(path, verify=verify)


def list_recordings(run_dir: Path) -> list[Path]:
    d = Path(run_dir) / "recordings"
    return sorted(p for p in d.glob("*.h5")) if d.is_dir() else []


def recording_is_current(path: str | Path) -> bool:
    """True when a recording exists at ``path`` and was made by the recordings' current analysis
    version (a recording of an older version is recorded again before it is analysed).

    The version is read from the sidecar, or, when the sidecar is missing or unreadable, from the
    HDF5 file's attributes (which :meth:`Recording.open` then checks as usual).
    """
    path = Path(path)
    if not path.is_file():
        return False
    try:
        return is_current(read_json(path.with_suffix(".json"), "recording metadata", dict), "recordings")
    except GptwavesError:
        pass
    try:
        with h5py.File(path, "r") as f:
            v = f.attrs.get("analysis_version")
    except (OSError, ValueError, KeyError):
        return False
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) \
        and is_current({"analysis_version": int(v)}, "recordings")
