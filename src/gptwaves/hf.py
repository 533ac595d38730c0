"""Hugging Face causal language models as instruments (optional extra ``gptwaves[hf]``).

The recorder, wave analysis and spelling statistics work for any ``transformers`` causal LM:
taps are the model's hidden states per layer (``hidden.0`` = embeddings output, ``hidden.{i}``
= output of layer i; for GPT-2 the last one is after the final LayerNorm), a step is a token,
and spelling is measured on the decoded text. For the character classes of the wave analysis a
token stands for its first character (" the" is a space-initial token).

With network access::

    gptwaves record --hf-model gpt2 --run runs/gpt2 --samples 64 --steps 256
    gptwaves waves  --hf-model gpt2 --run runs/gpt2
    gptwaves spelling --hf-model gpt2 --run runs/gpt2 --lexicon words.txt

Pythia's training checkpoints (``EleutherAI/pythia-70m`` with ``--hf-revision step1000`` etc.)
give the across-training analysis; ``gptwaves reproduce --hf-model NAME --revisions R1,R2,...``
runs all of it (see :func:`suite_revisions`).

Revisions are checkpoints: a revision whose training step is known (``step1000``; a local folder
named ``step1000``, ``checkpoint-1000``, ``iter_1000`` or ``1000``) is the run's checkpoint
``iter_{step:07d}``, so everything downstream (summary, crossing, claims, report) uses the step
as the iteration axis. A single model without a step keeps the name ``hf-<model>[@<revision>]``
and has no iteration.

Special tokens (``<|endoftext|>``, padding) decode to a newline in the recorded vocabulary, so
that their names are never scored as words and no word runs across a document boundary; the
NUL character (a byte-level BPE token; HDF5 strings cannot hold it) decodes to U+FFFD.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .errors import GptwavesError
from .sample import Batch, SamplingConfig, entropy_of, filter_logits


@dataclass
class HFConfig:
    n_embd: int
    n_layer: int
    block_size: int
    vocab_size: int
    name: str
    revision: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def safe_name(name: str, revision: str | None = None) -> str:
    """A file-name-safe label for a model: no path separators, no '..'."""

    def clean(t: str) -> str:
        return re.sub(r"\.{2,}", "_", re.sub(r"[^A-Za-z0-9._-]+", "_", t))

    s = clean(name.strip("/").split("/")[-1] if "/" in name else name)
    if revision:
        s += "@" + clean(revision)
    return "hf-" + s


# ------------------------------------------------------------------------------ suites of revisions

#: Pythia's published training checkpoints (EleutherAI model cards): step0, the powers of two
#: step1 ... step512, then every 1000 steps up to step143000: 154 revisions for every size.
PYTHIA_STEPS: tuple[int, ...] = (0, *(2**k for k in range(10)), *range(1000, 143001, 1000))

#: Revisions the ``log`` shortcut picks when no count is given.
LOG_DEFAULT_COUNT = 12

_STEP = re.compile(r"(?:^|[^A-Za-z])(?:step|checkpoint|iter|it)[-_]?(\d+)$|^(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Revision:
    """One revision of a model suite: ``model`` (hub name or local folder), ``revision`` (a hub
    revision or None) and the training ``step`` it was saved at (None when unknown)."""

    model: str
    revision: str | None = None
    step: int | None = None

    @property
    def name(self) -> str:
        """The run's checkpoint name: ``iter_{step:07d}`` when the step is known."""
        return f"iter_{self.step:07d}" if self.step is not None else safe_name(self.model, self.revision)

    def label(self) -> str:
        return f"{self.model}@{self.revision}" if self.revision else self.model


def step_of(label: str) -> int | None:
    """The training step a revision or folder name states (``step1000``, ``checkpoint-1000``,
    ``iter_0001000``, ``rev_step1000``, ``1000``), else None."""
    base = label.rstrip("/").split("/")[-1]
    m = _STEP.search(base)
    return int(m.group(1) or m.group(2)) if m else None


def log_spaced(steps, count: int = LOG_DEFAULT_COUNT) -> list[int]:
    """``count`` of the available ``steps`` spaced evenly in log(1 + step) from the first to the
    last (the nearest unused step to each target; all of them when there are fewer)."""
    avail = sorted(set(int(s) for s in steps))
    if count < 2:
        raise GptwavesError(f"the log shortcut needs at least 2 revisions, not {count}")
    if len(avail) <= count:
        return avail
    x = np.log1p(np.asarray(avail, dtype=float))
    picked: list[int] = []
    for t in np.linspace(x[0], x[-1], count):
        order = np.argsort(np.abs(x - t), kind="stable")
        picked.append(next(int(i) for i in order if int(i) not in picked))
    return [avail[i] for i in sorted(picked)]


def _is_model_folder(p) -> bool:
    return (p / "config.json").is_file()


def _parse_log(spec: str) -> int | None:
    """``log`` -> LOG_DEFAULT_COUNT, ``log:N`` -> N, anything else -> None."""
    m = re.fullmatch(r"log(?::(\d+))?", spec.strip())
    if not m:
        return None
    return int(m.group(1)) if m.group(1) else LOG_DEFAULT_COUNT


def _check_steps(revs: list[Revision]) -> list[Revision]:
    if len(revs) > 1:
        unknown = [r.label() for r in revs if r.step is None]
        if unknown:
            raise GptwavesError(f"cannot tell the training step of {unknown[0]}: name revisions step<N> "
                                "(folders step<N>, checkpoint-<N> or <N>)")
        seen: dict[int, str] = {}
        for r in revs:
            if r.step in seen:
                raise GptwavesError(f"{seen[r.step]} and {r.label()} are both step {r.step}")
            seen[r.step] = r.label()  # type: ignore[index]
    return sorted(revs, key=lambda r: (r.step is None, r.step or 0))


def suite_revisions(model: str, revisions: str | None = None) -> list[Revision]:
    """The revisions of a model suite, in training order.

    Parameters
    ----------
    model : str
        A hub name (``EleutherAI/pythia-70m``), a local model folder, comma-separated local
        folders (``PATH1,PATH2,...``: one revision each), or a folder of model folders.
    revisions : str, optional
        Comma-separated hub revisions (``step0,step1000``), or ``log`` / ``log:N``: N (default
        12) revisions log-spaced in step from the first to the last published one. For a hub
        name ``log`` uses Pythia's published schedule (`PYTHIA_STEPS`; the hub is not listed,
        so this works offline until the weights are loaded); for a folder of folders it picks
        among the folders; a comma list there names the folders to use.

    Returns
    -------
    list of Revision
        Sorted by step. With more than one revision every step must be known and distinct.
    """
    from pathlib import Path

    model = str(model).strip()
    revisions = None if revisions is None or not str(revisions).strip() else str(revisions).strip()
    log_n = _parse_log(revisions) if revisions else None
    if not model:
        raise GptwavesError("--hf-model is empty")
    if "," in model:
        paths = [m.strip() for m in model.split(",") if m.strip()]
        if revisions:
            raise GptwavesError("give either several local folders or --revisions, not both")
        missing = [p for p in paths if not Path(p).is_dir()]
        if missing:
            raise GptwavesError(f"model folder not found: {missing[0]}")
        return _check_steps([Revision(p, None, step_of(p)) for p in paths])
    p = Path(model)
    if p.is_dir() and not _is_model_folder(p):
        subs = sorted(q for q in p.iterdir() if q.is_dir() and _is_model_folder(q))
        if not subs:
            raise GptwavesError(f"{model} is neither a model folder (no config.json) nor a folder of them")
        revs = _check_steps([Revision(str(q), None, step_of(q.name)) for q in subs])
        if log_n is not None:
            keep = set(log_spaced([r.step for r in revs], log_n))
            revs = [r for r in revs if r.step in keep]
        elif revisions:
            want = [w.strip() for w in revisions.split(",") if w.strip()]
            by = {Path(r.model).name: r for r in revs}
            bad = [w for w in want if w not in by]
            if bad:
                raise GptwavesError(f"no revision folder {bad[0]!r} in {model} (have: {', '.join(by)})")
            revs = _check_steps([by[w] for w in want])
        return revs
    if p.is_dir():  # one local model folder
        if revisions:
            raise GptwavesError(f"{model} is a local folder: revisions apply to hub names "
                                "(give one folder per revision instead)")
        return [Revision(model, None, step_of(p.name))]
    if log_n is not None:
        if "pythia" not in model.lower():
            raise GptwavesError(f"the log shortcut knows the published steps of Pythia only; list the revisions "
                                f"of {model} (--revisions R1,R2,...)")
        return [Revision(model, f"step{s}", s) for s in log_spaced(PYTHIA_STEPS, log_n)]
    if revisions:
        return _check_steps([Revision(model, r.strip(), step_of(r.strip()))
                             for r in revisions.split(",") if r.strip()])
    return [Revision(model, None, None)]


#: Model dtypes a Hugging Face model can be loaded in (``--dtype``); recordings stay float32 or
#: float16 as their own setting says (hidden states are converted on the way out).
HF_DTYPES = ("float32", "bfloat16", "float16")

_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
            "pytorch_model.bin.index.json")
_TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
#: What must agree across the revisions of a suite: (config keys, words for the message).
_SAME = ((("model_type",), "architecture"), (("hidden_size", "n_embd", "d_model"), "width"),
         (("num_hidden_layers", "n_layer"), "layer count"), (("vocab_size",), "vocabulary size"))


def _safetensors_ok(path) -> bool:
    """Whether ``path`` starts like a safetensors file (8-byte header length, then a JSON object)."""
    import json
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return False
            (n,) = struct.unpack("<Q", head)
            if n <= 1 or n > 100 * 2**20:
                return False
            return isinstance(json.loads(fh.read(n)), dict)
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def _local_config(folder, what: str) -> dict:
    """A local revision's config.json, checked: the folder has weights and a tokenizer."""
    import json
    from pathlib import Path

    p = Path(folder)
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GptwavesError(f"revision {what} has no config.json ({p})") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise GptwavesError(f"revision {what}: config.json cannot be read ({type(e).__name__}: "
                            f"{str(e)[:120]})") from None
    if not isinstance(cfg, dict):
        raise GptwavesError(f"revision {what}: config.json is not a JSON object")
    weights = [w for w in _WEIGHTS if (p / w).is_file()] or sorted(q.name for q in p.glob("*.safetensors"))
    if not weights:
        raise GptwavesError(f"revision {what} has no weights file (model.safetensors or pytorch_model.bin) in {p}")
    bad = [w for w in weights if w.endswith(".safetensors") and not _safetensors_ok(p / w)]
    if bad:
        raise GptwavesError(f"revision {what}: {bad[0]} is not a valid safetensors file ({p})")
    if not any((p / t).is_file() for t in _TOKENIZER):
        raise GptwavesError(f"revision {what} has no tokenizer (tokenizer.json, vocab.json, ...) in {p}")
    return cfg


def _hub_config(rev: "Revision", listing: dict) -> dict:
    """A hub revision's config (downloaded alone, a few kB); when the hub can be listed, its weights
    and tokenizer files are checked too."""
    try:
        from transformers import AutoConfig
    except ImportError:
        raise GptwavesError("Hugging Face models need the optional extra: pip install 'gptwaves[hf]'") from None
    try:
        cfg = AutoConfig.from_pretrained(rev.model, revision=rev.revision).to_dict()
    except Exception as e:  # noqa: BLE001 - a missing revision, no network, ...: one line naming it
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise GptwavesError(f"cannot read the config of {rev.label()}: {first[:200]}") from None
    import os

    if not listing.get("ok", True) or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return cfg
    try:
        from huggingface_hub import list_repo_files

        files = set(list_repo_files(rev.model, revision=rev.revision))
    except Exception:  # noqa: BLE001 - offline: the config was enough to find the revision
        listing["ok"] = False  # do not wait for the hub again for the other revisions
        return cfg
    if not any(f in _WEIGHTS or f.endswith(".safetensors") for f in files):
        raise GptwavesError(f"revision {rev.label()} has no weights file on the hub")
    if not any(t in files for t in _TOKENIZER):
        raise GptwavesError(f"revision {rev.label()} has no tokenizer on the hub")
    return cfg


def check_revisions(revs: Sequence["Revision"]) -> None:
    """Check every revision before the first is loaded (docs/method.md, "Hugging Face models and
    suites"): each has a config, a weights file and a tokenizer, and all have the same
    architecture, width, layer count and vocabulary size. One line names the odd one."""
    from collections import Counter
    from pathlib import Path

    cfgs, listing = [], {}
    for r in revs:
        what = r.revision or Path(r.model).name or r.model
        cfgs.append(_local_config(r.model, what) if Path(r.model).is_dir() else _hub_config(r, listing))
    if len(revs) < 2:
        return
    for keys, words in _SAME:
        vals = [next((c[k] for k in keys if k in c), None) for c in cfgs]
        common, _ = Counter(map(repr, vals)).most_common(1)[0]
        odd = [i for i, v in enumerate(vals) if repr(v) != common]
        if odd:
            i = odd[0]
            j = next(k for k, v in enumerate(vals) if repr(v) == common)
            raise GptwavesError(f"revision {revs[i].label()} has {words} {vals[i]}, the other revisions "
                                f"{vals[j]} (e.g. {revs[j].label()}): a suite must be one model across training")


def _fingerprint_cache():
    import os
    from pathlib import Path

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gptwaves" / "hf-file-sha256.json"


def _file_sha256(path, cache: dict) -> str:
    """sha256 of a file's content, reused while its size and mtime are unchanged."""
    st = path.stat()
    key = str(path.resolve())
    hit = cache.get(key)
    if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
        return str(hit["sha256"])
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": h.hexdigest()}
    return h.hexdigest()


def fingerprint(name_or_path: str, revision: str | None, dtype: str = "float32") -> str:
    """What identifies a model's weights: the hub name and revision, or for a local folder a
    checksum of its files' names and contents (weights, config, tokenizer), so that a copied
    folder keeps its cached results. Each file's sha256 is computed once and cached by path, size
    and mtime (``$XDG_CACHE_HOME/gptwaves/hf-file-sha256.json``). A dtype other than float32 is
    part of the identity (its hidden states differ)."""
    import json
    from pathlib import Path

    from .io import atomic_write_json

    suffix = "" if dtype == "float32" else f"+{dtype}"
    p = Path(name_or_path)
    if not p.is_dir():
        return f"hf:{name_or_path}@{revision or 'main'}{suffix}"
    cpath = _fingerprint_cache()
    try:
        cache = json.loads(cpath.read_text())
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    before = json.dumps(cache, sort_keys=True)
    h = hashlib.sha256()
    for f in sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")):
        h.update(f"{f.name}\0{_file_sha256(f, cache)}\n".encode())
    if json.dumps(cache, sort_keys=True) != before:
        try:
            atomic_write_json(cpath, cache)
        except (OSError, GptwavesError):
            pass  # a read-only home: the checksums are computed again next time
    return f"hf-local:{h.hexdigest()[:32]}{suffix}"


class HFModel:
    """A ``transformers`` causal LM with the interface the recorder needs."""

    def __init__(self, name_or_path: str, device: str | torch.device = "cpu", revision: str | None = None,
                 step: int | None = None, dtype: str = "float32"):
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise GptwavesError("Hugging Face models need the optional extra: pip install 'gptwaves[hf]'") from None
        from transformers.utils import logging as hf_logging

        if dtype not in HF_DTYPES:
            raise GptwavesError(f"model dtype must be one of {', '.join(HF_DTYPES)}, not {dtype!r}")

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
            self.model = AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision,
                                                              dtype=getattr(torch, dtype))
        except Exception as e:  # noqa: BLE001 - any failure to load is one line naming the revision
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            what = f"{name_or_path!r}" + (f" at revision {revision!r}" if revision else "")
            raise GptwavesError(f"cannot load Hugging Face model {what}: {first[:200]}") from None
        self.model.eval().to(device)
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        cfg = self.model.config
        n_layer = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer")
        block = (getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 1024)
        V = self.model.get_output_embeddings().weight.shape[0]
        self.config = HFConfig(n_embd=cfg.hidden_size, n_layer=n_layer, block_size=int(block), vocab_size=V,
                               name=name_or_path, revision=revision)
        self.tap_names = [f"hidden.{i}" for i in range(n_layer + 1)]
        n_tok = len(self.tokenizer)
        special = set(getattr(self.tokenizer, "all_special_ids", None) or [])
        # NUL cannot be stored in HDF5 strings (byte-level BPE has a token for it): U+FFFD instead
        self.vocab = ["\n" if i in special else self.tokenizer.decode([i]).replace("\x00", "\ufffd")
                      if i < n_tok else "" for i in range(V)]
        self._nchars = np.array([len(v) for v in self.vocab], dtype=np.int64)
        self.step = step
        self.name = safe_name(name_or_path, revision)
        self.dtype = dtype
        self._fingerprint = fingerprint(name_or_path, revision, dtype)

    def parameters(self):
        return self.model.parameters()

    def encode(self, text: str, what: str = "prompt") -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not ids:
            raise GptwavesError(f"{what} encodes to no tokens")
        return list(ids)

    def meta(self) -> dict:
        return {"iteration": self.step, "weights_sha256": self._fingerprint,
                "config": self.config.to_dict(), "vocab": self.vocab, "source": self.config.name,
                "hf_model": self.config.name, "hf_revision": self.config.revision, "hf_dtype": self.dtype}

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor, past=None):
        # newer transformers call the cache argument `cache`, older ones `past_key_values`
        kw = {self._cache_arg: past}
        out = self.model(input_ids=ids, use_cache=True, output_hidden_states=True, **kw)
        new = getattr(out, "cache", None)
        if new is None:
            new = getattr(out, "past_key_values", None)
        return out.logits, out.hidden_states, new

    @torch.no_grad()
    def generate_batch(self, prompt_ids: Sequence[int], steps: int, batch_size: int, cfg: SamplingConfig, *,
                       taps: Sequence[str] = (), generator: torch.Generator | None = None,
                       tap_dtype=np.float32, edits=None, min_chars: int | None = None, on_step=None) -> Batch:
        """Batched sampling with the model's own KV cache, recording hidden states at each step.

        Beyond the model's context the window is cropped and recomputed (crop semantics).
        ``min_chars``: stop before ``steps`` tokens once every sample has generated at least this
        many decoded characters (spelling counts characters of sub-word text); the returned
        arrays are then shorter. ``on_step(k, steps)``, when given, is called after each generated
        token (progress within a batch).
        """
        if edits:
            raise GptwavesError("channel interventions are not supported for Hugging Face models")
        if steps <= 0:
            raise GptwavesError(f"steps must be positive, not {steps}")
        bad = [t for t in taps if t not in self.tap_names]
        if bad:
            raise GptwavesError(f"unknown tap names: {', '.join(bad)} (known: hidden.0 .. hidden.{self.config.n_layer})")
        device = next(self.model.parameters()).device
        P = len(prompt_ids)
        B, n, bs = batch_size, P - 1 + steps, self.config.block_size
        idx = [int(t) for t in taps_index(taps)]
        seq = torch.empty(B, P + steps, dtype=torch.long, device=device)
        seq[:, :P] = torch.tensor(list(prompt_ids), device=device)
        rec = {t: np.empty((B, n, self.config.n_embd), dtype=tap_dtype) for t in taps}
        ent = np.empty((B, n), dtype=np.float32)

        def store(j0, logits, hs):
            t = logits.shape[1]
            ent[:, j0 : j0 + t] = entropy_of(logits).cpu().numpy()
            for name, i in zip(taps, idx):
                rec[name][:, j0 : j0 + t] = hs[i][:, -t:].float().cpu().numpy()

        first = min(P, bs)
        logits, hs, past = self._forward(seq[:, :first])
        store(0, logits, hs)
        j = first - 1
        while j < P - 1:  # long prompts: cropped full windows
            j += 1
            logits, hs, past = self._forward(seq[:, max(0, j - bs + 1) : j + 1])
            store(j, logits[:, -1:], [h[:, -1:] for h in hs])
            past = None
        last = logits[:, -1]
        made = np.zeros(B, dtype=np.int64)
        done = steps
        for step in range(steps):
            lg = filter_logits(last.float() / cfg.temperature, cfg.top_k, cfg.top_p)
            seq[:, j + 1] = torch.multinomial(lg.softmax(-1).cpu(), 1, generator=generator).squeeze(-1).to(device)
            if on_step is not None:
                on_step(step + 1, steps)
            if min_chars is not None:
                made += self._nchars[seq[:, j + 1].cpu().numpy()]
                if made.min() >= min_chars:
                    done = step + 1
                    break
            if step == steps - 1:
                break
            j += 1
            if past is not None and j < bs:
                logits, hs, past = self._forward(seq[:, j : j + 1], past)
            else:
                logits, hs, past = self._forward(seq[:, max(0, j - bs + 1) : j + 1])
                past = None
            store(j, logits[:, -1:], [h[:, -1:] for h in hs])
            last = logits[:, -1]
        if done < steps:
            n = P - 1 + done
            return Batch(tokens=seq[:, : P + done].cpu().numpy(), entropy=ent[:, :n],
                         taps={t: a[:, :n] for t, a in rec.items()}, prompt_len=P)
        return Batch(tokens=seq.cpu().numpy(), entropy=ent, taps=rec, prompt_len=P)


def taps_index(taps: Sequence[str]) -> list[int]:
    return [int(t.split(".")[1]) for t in taps]
