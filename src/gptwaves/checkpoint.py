"""Checkpoints: safetensors weights + JSON metadata, and loading nanoGPT/minGPT files safely.

A gptwaves checkpoint is two files, ``iter_XXXXXXX.safetensors`` (weights) and
``iter_XXXXXXX.json`` (iteration, losses, model config, vocabulary, sha256 of the weights file).
Loading verifies the checksum, so truncated or bit-flipped files are detected.

nanoGPT ``ckpt.pt`` and minGPT ``model.pt`` files are read with ``torch.load(weights_only=True)``,
which refuses pickles that would construct arbitrary objects or run code.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import __version__
from .errors import GptwavesError
from .io import atomic_write_bytes, atomic_write_json, read_json, sha256_bytes
from .model import GPT, GPTConfig

CKPT_RE = re.compile(r"^iter_(\d{7})\.json$")

# minGPT's named configurations: (n_layer, n_embd) -> n_head
MINGPT_HEADS = {(12, 768): 12, (24, 1024): 16, (36, 1280): 20, (48, 1600): 25, (8, 512): 16,
                (6, 192): 6, (4, 128): 4, (3, 48): 3}


def ckpt_stem(iteration: int) -> str:
    return f"iter_{iteration:07d}"


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
    ckpt_dir: Path, model: GPT, iteration: int, vocab: list[str], extra: dict[str, Any]
) -> CheckpointInfo:
    """Write weights then metadata (the JSON appears last, so its presence means complete)."""
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
    atomic_write_json(Path(ckpt_dir) / f"{stem}.json", meta)
    return CheckpointInfo(iteration, wpath, meta)


def list_checkpoints(ckpt_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints in a folder, sorted by iteration."""
    out = []
    d = Path(ckpt_dir)
    if not d.is_dir():
        return out
    for p in sorted(d.iterdir()):
        m = CKPT_RE.match(p.name)
        if not m:
            continue
        meta = read_json(p, "checkpoint metadata")
        out.append(CheckpointInfo(int(m.group(1)), d / meta.get("weights_file", p.stem + ".safetensors"), meta))
    return sorted(out, key=lambda c: c.iteration)


def read_safetensors(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise GptwavesError(f"checkpoint weights not found: {path}") from None
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
        meta = read_json(jpath, "checkpoint metadata")
        wpath = jpath.with_name(meta.get("weights_file", jpath.stem + ".safetensors"))
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
        meta["iteration"] = obj.get("iter_num")
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
    cfg = GPTConfig(**cfg_kwargs)
    if len(vocab) != cfg.vocab_size:
        raise GptwavesError(
            f"checkpoint {path} has vocabulary size {cfg.vocab_size}, but the corpus has "
            f"{len(vocab)} characters; pass the corpus it was trained on with --corpus"
        )
    model = build_model(cfg, state, str(path))
    meta.update(config=cfg.to_dict(), vocab=list(vocab),
                weights_sha256=sha256_bytes(path.read_bytes()))
    return model, meta


__all__ = [
    "CheckpointInfo", "save_checkpoint", "list_checkpoints", "load_checkpoint",
    "load_external_checkpoint", "ckpt_stem", "state_dict_tensors", "read_safetensors",
    "normalise_state_dict",
]
