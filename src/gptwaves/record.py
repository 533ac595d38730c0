"""Recording hidden-state waves to HDF5 (docs/method.md, Recording waves); reading them back is
:mod:`gptwaves.recording` (its names are importable from here too).

A recording is one HDF5 file per checkpoint, ``DIR/recordings/<name>.h5``, with

- ``waves/<tap>``: float32 or float16, shape (S, n, C), chunked one sample at a time;
- ``tokens``: (S, P + T) character ids (prompt + generated);
- ``entropy``: (S, n) next-character entropy of the model's distribution, in nats;
- ``is_prompt``: (n,) True for prompt positions (see :mod:`gptwaves.sample`);
- attributes: model config, checkpoint iteration and weight checksum, sampling settings,
  seed, batch size, context policy, vocabulary and package versions,

plus a sidecar ``<name>.json`` holding the same metadata and the sha256 of the HDF5 file.

Batches are generated and saved one at a time as atomic part files under
``recordings/.<name>.parts-<settings hash>/``; peak memory does not grow with S. When all parts
exist they are assembled into the HDF5 file (streamed, written to a temporary name and renamed).
An interrupted recording is resumed from its finished parts with identical results, or, when its
settings changed, discarded. A reader never sees a half-written recording.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import resource
import shutil
import sys
import time
import traceback
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from . import distributed as dd
from .config import check_choice, check_int
from .corpus import CharTokenizer
from .errors import CorruptArtefactError, GptwavesError, SettingsError, WriteError
from .io import atomic_path, atomic_write_json, sha256_file, sweep_stale, write_error
from .model import GPT
from .runtime import Interrupted, progress_bar
from .sample import SamplingConfig, batch_generator, generate
from .versions import analysis_version, package_versions, reusable
from .recording import FORMAT, Recording, list_recordings, open_recording, recording_is_current, validate_recording

#: Bounds of a recording's settings (a typo must not try to allocate terabytes).
MAX_SAMPLES = 10**7
MAX_STEPS = 10**6


@dataclass
class RecordSpec:
    """Everything that determines a recording's content."""

    samples: int
    steps: int
    prompt: str
    taps: tuple[str, ...]
    sampling: SamplingConfig
    batch_size: int = 64
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "RecordSpec":
        """Check every field; raise a one-line :class:`~gptwaves.errors.SettingsError`."""
        for name, v in (("samples", self.samples), ("steps", self.steps), ("batch_size", self.batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise SettingsError(f"{name.replace('_', ' ')} must be a positive integer, not {v!r}")
        check_int("samples", self.samples, 1, MAX_SAMPLES)
        check_int("steps", self.steps, 1, MAX_STEPS)
        check_int("batch_size", self.batch_size, 1, MAX_SAMPLES)
        check_choice("dtype", self.dtype, ("float32", "float16"))
        if not isinstance(self.prompt, str) or not self.prompt:
            raise SettingsError("the prompt is empty; give at least one character")
        if isinstance(self.taps, str) or not all(isinstance(t, str) and t for t in self.taps):
            raise SettingsError(f"taps must be a list of tap names, not {self.taps!r}")
        if not isinstance(self.sampling, SamplingConfig):
            raise SettingsError("sampling settings must be a SamplingConfig")
        self.sampling.validate()
        return self

    def to_dict(self) -> dict:
        return {"samples": self.samples, "steps": self.steps, "prompt": self.prompt,
                "taps": list(self.taps), "sampling": self.sampling.to_dict(),
                "batch_size": self.batch_size, "dtype": self.dtype}


def settings_hash(spec: RecordSpec, weights_sha256: str) -> str:
    """Short hash of the reuse key of a recording: its settings, the weights' checksum and the
    recordings' analysis version (names the parts folder of an unfinished recording, so parts of
    other settings or of an older version are never resumed)."""
    blob = json.dumps({"spec": spec.to_dict(), "weights": weights_sha256,
                       "analysis_version": analysis_version("recordings")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _step_progress(bar, size: int):
    """An ``on_step(k, steps)`` callback that moves ``bar`` (counted in samples) through a batch of
    ``size`` samples as its steps are generated (fractions of a sample, shown to 0.1)."""
    start = bar.n

    def on_step(k: int, steps: int) -> None:
        target = round(start + size * k / steps, 1)
        if target - bar.n >= 0.1 * size - 1e-9:
            bar.n = target  # tqdm and LineProgress both show n on their next update
            bar.update(0)

    return on_step


# long: one pass (resume finished parts, record the missing batches, assemble), its cleanup on every exit path
def record(
    model: GPT,
    meta: dict,
    vocab: list[str],
    spec: RecordSpec,
    out_path: Path,
    *,
    progress: bool = True,
    stop=None,
) -> Path:
    """Record ``spec.samples`` samples to ``out_path`` (HDF5); resume from finished parts.

    ``meta`` carries the checkpoint's iteration, weights_sha256 and config. Returns the path.
    """
    out_path = Path(out_path)
    gen_fn = getattr(model, "generate_batch", None)  # Hugging Face adapter (gptwaves.hf)
    if gen_fn is not None:
        prompt_ids = model.encode(spec.prompt, what="prompt")
    else:
        prompt_ids = CharTokenizer(vocab).encode(spec.prompt, what="prompt")
    taps = list(spec.taps)
    unknown = [t for t in taps if t not in model.tap_names]
    if unknown:
        raise GptwavesError(f"unknown tap names: {', '.join(unknown)} (known: {', '.join(model.tap_names)})")
    spec.validate()
    h = settings_hash(spec, meta.get("weights_sha256", ""))
    parts = out_path.parent / f".{out_path.stem}.parts-{h}"
    sweep_stale(out_path.parent, recursive=False)  # temp files of killed runs, finished parts
    for stale in out_path.parent.glob(f".{out_path.stem}.parts-*"):
        if stale != parts:  # settings changed: the old partial recording is discarded
            shutil.rmtree(stale, ignore_errors=True)
    try:
        parts.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(parts, e, "folder") from None
    n_batches = -(-spec.samples // spec.batch_size)
    tap_dtype = np.float16 if spec.dtype == "float16" else np.float32
    bar = progress_bar(total=spec.samples, desc=f"record {out_path.stem}", unit="sample", disable=not progress)
    d = dd.info()
    # a recording of one batch is atomic anyway: it goes straight into the HDF5 file
    in_memory: dict[int, dict] = {}
    single = n_batches == 1 and not d.enabled
    try:
        for b in dd.shard(n_batches, d):
            part = parts / f"batch_{b:05d}.npz"
            size = min(spec.batch_size, spec.samples - b * spec.batch_size)
            if part.exists():
                bar.update(size)
                continue
            if stop:
                raise Interrupted(f"recording interrupted after {b} batches; re-run to resume")
            # progress within a batch where the model reports it (Hugging Face adapter)
            start = bar.n
            within = {"on_step": _step_progress(bar, size)} if gen_fn is not None and progress else {}
            res = (gen_fn or partial(generate, model))(
                prompt_ids, spec.steps, size, spec.sampling, taps=taps,
                generator=batch_generator(spec.sampling.seed, b), tap_dtype=tap_dtype, **within)
            arrays = {"tokens": res.tokens.astype(np.int32), "entropy": res.entropy,
                      **{f"tap{i}": res.taps[t] for i, t in enumerate(taps)}}
            if single:
                in_memory[b] = arrays
            else:  # streamed to disk (no in-memory copy of the batch's archive)
                with atomic_path(part) as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
            res = arrays = None  # type: ignore[assignment]  # one batch in memory at a time
            bar.n = start  # the fractions within the batch give way to the whole batch
            bar.update(size)
    finally:
        bar.close()
    if d.enabled:  # rank 0 merges the parts written by every rank
        dd.barrier()
        if not d.main:
            dd.barrier()
            return out_path
    attrs = {
        "format": FORMAT, "version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "iteration": meta.get("iteration"), "weights_sha256": meta.get("weights_sha256"),
        "checkpoint_source": meta.get("source") or meta.get("weights_file"),
        "model_config": meta.get("config"), "vocab": vocab, "prompt": spec.prompt,
        "prompt_len": len(prompt_ids), "samples": spec.samples, "steps": spec.steps,
        "taps": taps, "sampling": spec.sampling.to_dict(), "batch_size": spec.batch_size,
        "dtype": spec.dtype, "context_policy": spec.sampling.context, "seed": spec.sampling.seed,
        "entropy_units": "nats", "packages": package_versions(), "settings_hash": h,
        "analysis_version": analysis_version("recordings"),
    }
    try:
        _assemble(parts, n_batches, spec, taps, attrs, out_path, in_memory)
    except BaseException:
        with contextlib.suppress(OSError):
            parts.rmdir()  # only if empty (a one-batch recording keeps nothing there)
        raise
    shutil.rmtree(parts, ignore_errors=True)
    if d.enabled:
        dd.barrier()
    return out_path


def recording_bytes(spec: RecordSpec, prompt_len: int, n_embd: int | None) -> int:
    """Size estimate of a recording's HDF5 file (data plus a generous allowance for metadata)."""
    n = prompt_len - 1 + spec.steps
    item = 2 if spec.dtype == "float16" else 4
    data = spec.samples * ((prompt_len + spec.steps) * 4 + n * 4) + n
    if n_embd:
        data += len(spec.taps) * spec.samples * n * n_embd * item
    return int(data * 1.02) + (1 << 20) + spec.samples * len(spec.taps) * 512


def check_space(path: Path, need: int) -> None:
    """Refuse to start writing ``need`` bytes into ``path``'s folder when the disk (or the
    process's file-size limit) cannot take them: one line, nothing written."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and need > free:
        raise WriteError(f"cannot write {path}: No space left on device (needs about "
                            f"{need / 2**20:,.1f} MiB, {free / 2**20:,.1f} MiB free)")
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and need > soft:
        raise WriteError(f"cannot write {path}: {os.strerror(errno.EFBIG)} (needs about {need / 2**20:,.1f} MiB, "
                            f"the file-size limit is {soft / 2**20:,.1f} MiB)")


def _load_part(parts: Path, b: int, taps: list[str], in_memory: dict[int, dict] | None) -> dict:
    """A finished batch as arrays; a damaged part file is removed (so a re-run redoes it)."""
    if in_memory and b in in_memory:
        return in_memory[b]
    path = parts / f"batch_{b:05d}.npz"
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in ("tokens", "entropy", *[f"tap{i}" for i in range(len(taps))])}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        path.unlink(missing_ok=True)
        raise GptwavesError(f"partial recording {path} is damaged ({e}); re-run to redo it") from None
    return arrays


def _assemble(parts: Path, n_batches: int, spec: RecordSpec, taps: list[str], attrs: dict,
              out_path: Path, in_memory: dict[int, dict] | None = None) -> None:
    """Stream the parts into ``out_path`` (HDF5, via a temporary file), then write the sidecar.

    The disk space and file-size limit are checked first. On any failure the datasets are
    released before the file is closed (closing an HDF5 file under a failed write with live
    dataset handles crashed the library), the temporary file is removed and a one-line error
    names the file. The old sidecar is removed before the new file is renamed in, so a kill in
    between leaves a recording without sidecar, which is simply recorded again.
    """
    P = attrs["prompt_len"]
    n = P - 1 + spec.steps
    S = spec.samples
    C0 = attrs["model_config"].get("n_embd") if isinstance(attrs.get("model_config"), dict) else None
    check_space(out_path, recording_bytes(spec, P, C0))
    side = out_path.with_suffix(".json")
    with atomic_path(out_path) as tmp:
        _write_h5(tmp, out_path, parts, n_batches, spec, taps, attrs, in_memory, P, n, S)
        digest = sha256_file(tmp)
        side.unlink(missing_ok=True)
    try:
        atomic_write_json(side, {**attrs, "settings": spec.to_dict(), "file": out_path.name, "sha256": digest})
    except GptwavesError:
        out_path.unlink(missing_ok=True)  # no recording without its sidecar
        raise


def _write_h5(tmp: Path, out_path: Path, parts: Path, n_batches: int, spec: RecordSpec, taps: list[str],
              attrs: dict, in_memory, P: int, n: int, S: int) -> None:
    """Write the HDF5 file; on failure release every HDF5 handle cleanly before re-raising.

    HDF5 keeps dirty chunks and metadata in caches. After a failed write (disk full, file-size
    limit) dataset handles that outlive the file (through the exception's traceback) are flushed
    again at garbage collection, which crashed the process (exit 139). So: no chunk cache
    (chunks go straight to the file and a failure surfaces at the write), the traceback's frames
    are cleared, the handles are dropped and collected while the file is still open, and only
    then is the file closed; the library's own complaints during this clean-up are silenced.
    """
    try:
        f = h5py.File(tmp, "w", rdcc_nbytes=0)
    except OSError as e:
        raise write_error(out_path, e) from None
    handles: list = []
    failure: BaseException | None = None
    try:
        _fill_h5(f, handles, out_path, parts, n_batches, spec, taps, attrs, in_memory, P, n, S)
    except BaseException as e:  # noqa: BLE001 - re-raised below, after the clean-up
        failure = write_error(out_path, e) if isinstance(e, OSError) else e
        traceback.clear_frames(e.__traceback__)
    if failure is None:
        handles.clear()
        try:
            f.close()
        except OSError as e:
            failure = write_error(out_path, e)
        else:
            return
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda *_: None
    try:
        handles.clear()
        gc.collect()
        try:
            f.close()
        except Exception:  # noqa: BLE001 - the file is being discarded anyway
            pass
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    if isinstance(failure, GptwavesError) and failure.__traceback__ is not None:
        failure = failure.with_traceback(None)
    raise failure from None


def _fill_h5(f, handles: list, out_path: Path, parts: Path, n_batches: int, spec: RecordSpec, taps: list[str],
             attrs: dict, in_memory, P: int, n: int, S: int) -> None:
    for k, v in attrs.items():
        if k == "vocab":  # may be large (token vocabularies): a dataset, not an attribute
            f.create_dataset("vocab", data=np.array(v, dtype=object), dtype=h5py.string_dtype())
            continue
        f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) or v is None else v
    f.create_dataset("is_prompt", data=np.arange(n) < P - 1)
    dtok = f.create_dataset("tokens", (S, P + spec.steps), dtype=np.int32,
                            chunks=(1, P + spec.steps))
    dent = f.create_dataset("entropy", (S, n), dtype=np.float32, chunks=(1, n))
    g = f.create_group("waves")
    handles += [dtok, dent, g]
    dwaves: list = []
    for t in taps:
        C = attrs["model_config"]["n_embd"] if attrs.get("model_config") else None
        dwaves.append(None if C is None else g.create_dataset(
            t, (S, n, C), dtype=spec.dtype, chunks=(1, n, C)))
    handles.append(dwaves)
    s0 = 0
    for b in range(n_batches):
        z = _load_part(parts, b, taps, in_memory)
        size = z["tokens"].shape[0]
        expect = min(spec.batch_size, S - b * spec.batch_size)
        if size != expect or z["tokens"].shape[1:] != (P + spec.steps,) or z["entropy"].shape != (size, n):
            (parts / f"batch_{b:05d}.npz").unlink(missing_ok=True)
            raise GptwavesError(f"partial recording {parts / f'batch_{b:05d}.npz'} has wrong shapes; "
                                "re-run to redo it")
        dtok[s0 : s0 + size] = z["tokens"]
        dent[s0 : s0 + size] = z["entropy"]
        for i, t in enumerate(taps):
            arr = z[f"tap{i}"]
            if dwaves[i] is None:
                dwaves[i] = g.create_dataset(t, (S, n, arr.shape[-1]), dtype=spec.dtype,
                                             chunks=(1, n, arr.shape[-1]))
            dwaves[i][s0 : s0 + size] = arr
        s0 += size
        z = arr = None  # type: ignore[assignment]  # one batch in memory at a time
    f.flush()


def recording_matches(path: Path, spec: RecordSpec, weights_sha256: str, verify: bool = True) -> bool:
    """True if a finished, intact recording at ``path`` may be reused for these settings and weights.

    The rule of every stage (:func:`gptwaves.versions.reusable`) applied to the recording's
    sidecar: the recordings' analysis version, the settings and the weights' checksum must match.
    With ``verify`` the file must also pass its checksum and :func:`validate_recording` and hold no
    NaN waves; a damaged or tampered recording is thus recorded again instead of being used.
    """
    if not Path(path).is_file():
        return False

    def intact(meta: dict) -> None:
        if meta.get("settings_hash") != settings_hash(spec, weights_sha256):
            raise CorruptArtefactError("settings hash differs")
        if not verify:
            return
        with Recording.open(path, verify=True) as rec:
            if rec.n_samples != spec.samples:
                raise CorruptArtefactError("sample count differs")
            if not all(np.isfinite(x).all() for t in rec.taps for x in rec.iter_batches(t)):
                raise CorruptArtefactError("NaN waves")

    side = Path(path).with_suffix(".json")
    return reusable(side, "recordings", spec.to_dict(), weights_sha256=weights_sha256, validate=intact) is not None


#: The reader's names stay importable from here (``from gptwaves.record import Recording``).
__all__ = ["FORMAT", "MAX_SAMPLES", "MAX_STEPS", "RecordSpec", "Recording", "check_space", "list_recordings",
           "open_recording", "record", "recording_bytes", "recording_is_current", "recording_matches",
           "settings_hash", "validate_recording"]
