"""Checkpoints: safetensors weights + JSON metadata, and loading nanoGPT/minGPT files safely.

A gptwaves checkpoint is two files, ``iter_XXXXXXX.safetensors`` (weights) and
``iter_XXXXXXX.json`` (iteration, losses, model config, vocabulary, sha256 of the weights file).
Loading verifies the checksum, so truncated or bit-flipped files are detected.

nanoGPT ``ckpt.pt`` and minGPT ``model.pt`` files are read with ``torch.load(weights_only=True)``,
which refuses pickles that would construct arbitrary objects or run code.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .errors import CorruptArtefactError, GptwavesError
from .io import (atomic_write_bytes, atomic_write_json, check_regular_file, confined_file, physical_memory,
                 read_json, sha256_bytes, sha256_file)
from .model import GPT, GPTConfig
from .names import CHECKPOINT_FILE, ckpt_stem

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CKPT_FORMAT = "gptwaves-checkpoint"

# minGPT's named configurations: (n_layer, n_embd) -> n_head
MINGPT_HEADS = {(12, 768): 12, (24, 1024): 16, (36, 1280): 20, (48, 1600): 25, (8, 512): 16,
                (6, 192): 6, (4, 128): 4, (3, 48): 3}


def state_dict_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with every tensor its own contiguous copy (safetensors refuses shared memory)."""
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}


@dataclass
class CheckpointInfo:
    iteration: int
    path: Path  # the .safetensors file
    meta: dict

    @property
    def train_loss(self) -> float | None:
        return self.meta.get("train_loss")

    @property
    def val_loss(self) -> float | None:
        return self.meta.get("val_loss")


def save_checkpoint(
    ckpt_dir: Path, model: GPT, iteration: int, vocab: list[str], extra: dict[str, Any],
    before_meta: Callable[[], None] | None = None,
) -> CheckpointInfo:
    """Write weights then metadata (the JSON appears last, so its presence means complete).

    ``before_meta`` is called after the weights are written and before the JSON: training
    writes its metrics row and resumable state there, so a checkpoint is only marked done when
    everything that belongs to it is on disk.
    """
    # One metadata key only: safetensors writes the metadata map in hash order, which varies
    # between processes, so several keys would make identical weights give different bytes.
    data = st_save(state_dict_tensors(model), metadata={"format": "gptwaves"})
    stem = ckpt_stem(iteration)
    wpath = atomic_write_bytes(Path(ckpt_dir) / f"{stem}.safetensors", data)
    meta = {
        "format": "gptwaves-checkpoint",
        "version": __version__,
        "iteration": iteration,
        "config": model.config.to_dict(),
        "vocab": vocab,
        "weights_file": wpath.name,
        "weights_sha256": sha256_bytes(data),
        **extra,
    }
    try:
        if before_meta is not None:
            before_meta()
        atomic_write_json(Path(ckpt_dir) / f"{stem}.json", meta)
    except Exception:
        # not done: drop the weights too (a kill leaves them, harmlessly: no JSON names them)
        try:
            wpath.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return CheckpointInfo(iteration, wpath, meta)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_vocab(vocab: Any, source: str) -> list[str]:
    """A vocabulary read from a file: a list of distinct one-character strings."""
    if not isinstance(vocab, list) or not vocab:
        raise CorruptArtefactError(f"{source}: vocabulary is not a non-empty list")
    if not all(isinstance(c, str) and len(c) == 1 for c in vocab):
        raise CorruptArtefactError(f"{source}: vocabulary entries must be single characters")
    if len(set(vocab)) != len(vocab):
        raise CorruptArtefactError(f"{source}: vocabulary has repeated characters")
    return vocab


def validate_checkpoint_meta(meta: Any, jpath: Path) -> dict:
    """Check a gptwaves checkpoint's JSON as read back; raise one line naming the file.

    Type and keys, format, iteration (a non-negative integer equal to the one in the file name
    ``iter_XXXXXXX.json`` when it has that form), model config, vocabulary (distinct single
    characters, as many as the model's vocab_size), weights file name (inside the checkpoint's
    folder) and checksum, and losses (finite numbers or null).
    """
    src = f"checkpoint metadata {jpath}"
    if not isinstance(meta, dict):
        raise CorruptArtefactError(f"{src} holds a JSON {type(meta).__name__}, not an object")
    if meta.get("format", CKPT_FORMAT) != CKPT_FORMAT:
        raise CorruptArtefactError(f"{src} is not a gptwaves checkpoint (format {meta.get('format')!r})")
    missing = [k for k in ("iteration", "config", "vocab", "weights_sha256") if k not in meta]
    if missing:
        raise CorruptArtefactError(f"{src} is incomplete (no {', '.join(missing)})")
    it = meta["iteration"]
    if not _is_int(it) or it < 0:
        raise CorruptArtefactError(f"{src}: iteration {it!r} is not a non-negative integer")
    m = CHECKPOINT_FILE.match(Path(jpath).name)
    if m and int(m.group(1)) != it:
        raise CorruptArtefactError(f"{src}: iteration {it} disagrees with the file name")
    if not isinstance(meta["config"], dict):
        raise CorruptArtefactError(f"{src}: config is not an object")
    try:
        cfg = GPTConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as e:
        raise CorruptArtefactError(f"{src}: invalid model config ({e})") from None
    vocab = check_vocab(meta["vocab"], src)
    if len(vocab) != cfg.vocab_size:
        raise CorruptArtefactError(f"{src}: vocabulary size {len(vocab)} != model's {cfg.vocab_size}")
    wf = meta.get("weights_file", Path(jpath).stem + ".safetensors")
    confined_file(Path(jpath).parent, wf, f"{src}: weights_file", must_exist=False)
    if not isinstance(meta["weights_sha256"], str) or not SHA256_RE.match(meta["weights_sha256"]):
        raise CorruptArtefactError(f"{src}: weights_sha256 is not a sha256 hex digest")
    for k in ("train_loss", "val_loss"):
        v = meta.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise CorruptArtefactError(f"{src}: {k} {v!r} is not a finite number")
    return meta


def list_checkpoints(ckpt_dir: Path, vocab: list[str] | None = None) -> list[CheckpointInfo]:
    """Complete checkpoints in a folder, sorted by iteration, each JSON validated.

    With ``vocab`` (the run's vocabulary, from run.json or the corpus) every checkpoint's
    vocabulary must equal it (a permuted vocabulary would silently decode wrong characters).
    """
    out = []
    d = Path(ckpt_dir)
    if not d.is_dir():
        return out
    for p in sorted(d.iterdir()):
        m = CHECKPOINT_FILE.match(p.name)
        if not m:
            continue
        meta = validate_checkpoint_meta(read_json(p, "checkpoint metadata"), p)
        if vocab is not None and meta["vocab"] != list(vocab):
            raise CorruptArtefactError(f"checkpoint metadata {p}: vocabulary differs from the run's")
        wpath = confined_file(d, meta.get("weights_file", p.stem + ".safetensors"),
                              f"checkpoint metadata {p}: weights_file", must_exist=False)
        out.append(CheckpointInfo(int(m.group(1)), wpath, meta))
    return sorted(out, key=lambda c: c.iteration)


def read_safetensors(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file (a regular file no larger than physical memory), checksum first."""
    if not Path(path).exists():
        raise GptwavesError(f"checkpoint weights not found: {path}")
    check_regular_file(path, "checkpoint weights", physical_memory())
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise GptwavesError(f"checkpoint weights not found: {path}") from None
    except OSError as e:
        raise GptwavesError(f"cannot read checkpoint weights {path}: {e.strerror or e}") from None
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise GptwavesError(f"checkpoint {path} fails its sha256 check (truncated or corrupted)")
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise GptwavesError(f"checkpoint {path} is not a valid safetensors file: {e}") from None


def build_model(cfg: GPTConfig, state: dict[str, torch.Tensor], source: str) -> GPT:
    model = GPT(cfg)
    state = normalise_state_dict(state)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = "; ".join(s.strip() for s in first[1:4]) or first[0]
        raise GptwavesError(f"checkpoint {source} does not match the model: {detail}") from None
    if cfg.tie_weights:
        missing = [k for k in missing if k != "transformer.wte.weight" and k != "lm_head.weight"]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        raise GptwavesError(f"checkpoint {source} does not match the model: {'; '.join(parts)}")
    model.eval()
    return model


def normalise_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``_orig_mod.`` (torch.compile) and ``module.`` (DDP) prefixes; drop mask buffers."""
    out = {}
    for k, v in state.items():
        for prefix in ("_orig_mod.", "module."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.endswith(".attn.bias") and v.dim() == 4:  # minGPT/nanoGPT causal-mask buffers
            continue
        if k.endswith(".attn.masked_bias"):
            continue
        out[k] = v
    return out


def load_checkpoint(info_or_json: CheckpointInfo | Path) -> tuple[GPT, dict]:
    """Load a gptwaves checkpoint (verifying its checksum); returns (model in eval mode, meta)."""
    if isinstance(info_or_json, CheckpointInfo):
        meta, wpath = info_or_json.meta, info_or_json.path
    else:
        jpath = Path(info_or_json)
        meta = validate_checkpoint_meta(read_json(jpath, "checkpoint metadata"), jpath)
        wpath = confined_file(jpath.parent, meta.get("weights_file", jpath.stem + ".safetensors"),
                              f"checkpoint metadata {jpath}: weights_file", must_exist=False)
    try:
        cfg = GPTConfig.from_dict(meta["config"])
        vocab = meta["vocab"]
    except (KeyError, TypeError, ValueError) as e:
        raise GptwavesError(f"checkpoint metadata for {wpath} is incomplete: {e}") from None
    if len(vocab) != cfg.vocab_size:
        raise GptwavesError(f"checkpoint {wpath}: vocabulary size {len(vocab)} != model's {cfg.vocab_size}")
    state = read_safetensors(wpath, meta.get("weights_sha256"))
    return build_model(cfg, state, str(wpath)), meta


def _torch_load_safely(path: Path) -> Any:
    if not Path(path).exists():
        raise GptwavesError(f"checkpoint not found: {path}")
    check_regular_file(path, "checkpoint", physical_memory())
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4" notes: not for the user
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GptwavesError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else "disallowed content"
        raise GptwavesError(
            f"refusing to load {path}: it holds objects other than tensors (code could run): {msg[:160]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or ["unreadable"])[0]
        raise GptwavesError(f"checkpoint {path} is truncated or corrupt: {first[:160]}") from None
    except Exception as e:  # garbage bytes make the unpickler fail in arbitrary ways (IndexError ...)
        raise GptwavesError(
            f"checkpoint {path} is truncated or corrupt (not a PyTorch checkpoint: {type(e).__name__})"
        ) from None


def load_external_checkpoint(path: Path, vocab: list[str], n_head: int | None = None) -> tuple[GPT, dict]:
    """Load a nanoGPT ``ckpt.pt`` or a minGPT ``model.pt`` (state dict), never executing code.

    The vocabulary is rebuilt by the caller from the corpus, as nanoGPT's and minGPT's
    character-level prepare scripts do (sorted distinct characters).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        jpath = path.with_suffix(".json")
        if jpath.exists():
            return load_checkpoint(jpath)
        raw = read_safetensors(path)
        obj: Any = raw
    else:
        obj = _torch_load_safely(path)
    if not isinstance(obj, dict):
        raise GptwavesError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    meta: dict = {"source": str(path), "iteration": None}
    if "model" in obj and isinstance(obj["model"], dict):  # nanoGPT
        state = normalise_state_dict(obj["model"])
        args = obj.get("model_args", {}) or {}
        meta["format"] = "nanoGPT"
        it = obj.get("iter_num")  # from outside: only a plain non-negative integer is kept
        meta["iteration"] = int(it) if _is_int(it) and 0 <= it < 10**12 else None
        if not isinstance(args, dict):
            raise GptwavesError(f"checkpoint {path}: model_args is not a dictionary")
        for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            if args.get(k) is not None and (not _is_int(args[k]) or args[k] < 1):
                raise GptwavesError(f"checkpoint {path}: model_args {k}={args[k]!r} is not a positive integer")
        tied = torch.equal(state["lm_head.weight"], state["transformer.wte.weight"]) if (
            "lm_head.weight" in state and "transformer.wte.weight" in state) else "lm_head.weight" not in state
        cfg_kwargs = dict(
            n_layer=args.get("n_layer"), n_head=args.get("n_head"), n_embd=args.get("n_embd"),
            block_size=args.get("block_size"), vocab_size=args.get("vocab_size"),
            bias=bool(args.get("bias", "transformer.ln_f.bias" in state)), dropout=0.0,
            tie_weights=bool(tied), gelu="exact",
        )
    else:  # minGPT (plain state dict) or a bare nanoGPT state dict
        state = normalise_state_dict(obj)
        meta["format"] = "minGPT"
        cfg_kwargs = dict(bias="transformer.ln_f.bias" in state, dropout=0.0, gelu="tanh", tie_weights=False)
    try:
        wte = state["transformer.wte.weight"]
        wpe = state["transformer.wpe.weight"]
    except KeyError as e:
        raise GptwavesError(f"checkpoint {path} is not a GPT state dict (no {e.args[0]})") from None
    n_layer = len({k.split(".")[2] for k in state if k.startswith("transformer.h.")})
    cfg_kwargs.setdefault("n_layer", n_layer)
    for key, val in (("n_layer", n_layer), ("n_embd", wte.shape[1]), ("vocab_size", wte.shape[0]),
                     ("block_size", wpe.shape[0])):
        if cfg_kwargs.get(key) is None:
            cfg_kwargs[key] = int(val)
    if cfg_kwargs.get("n_head") is None:
        cfg_kwargs["n_head"] = n_head or MINGPT_HEADS.get((cfg_kwargs["n_layer"], cfg_kwargs["n_embd"]))
        if cfg_kwargs["n_head"] is None:
            raise GptwavesError(f"cannot infer n_head for {path}; pass --n-head")
    if n_head is not None:
        cfg_kwargs["n_head"] = n_head
    if "lm_head.weight" not in state:
        cfg_kwargs["tie_weights"] = True
    try:
        cfg = GPTConfig(**cfg_kwargs)
    except (TypeError, ValueError) as e:
        raise GptwavesError(f"checkpoint {path} has an invalid model configuration: {e}") from None
    if len(vocab) != cfg.vocab_size:
        raise GptwavesError(
            f"checkpoint {path} has vocabulary size {cfg.vocab_size}, but the corpus has "
            f"{len(vocab)} characters; pass the corpus it was trained on with --corpus"
        )
    model = build_model(cfg, state, str(path))
    meta.update(config=cfg.to_dict(), vocab=list(vocab),
                weights_sha256=sha256_file(path))
    return model, meta


__all__ = [
    "CheckpointInfo", "save_checkpoint", "list_checkpoints", "load_checkpoint",
    "load_external_checkpoint", "state_dict_tensors", "read_safetensors",
    "normalise_state_dict", "validate_checkpoint_meta", "check_vocab",
]
