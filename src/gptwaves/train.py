"""Training with checkpoints across training, resumable bit-identically (docs/method.md, Model).

Layout of a run directory::

    DIR/run.json                      identity of the run (settings, corpus checksum)
    DIR/checkpoints/iter_XXXXXXX.*    weights (safetensors) + metadata (JSON) at each scheduled iteration
    DIR/state/state.json              pointer to the newest resumable training state
    DIR/state/state_XXXXXXX.safetensors   model, optimizer, RNG states and data position
    DIR/metrics.jsonl                 one row per log interval and per evaluation

Re-running the same command resumes from the newest state and ends with weights bit-identical
to an uninterrupted run (same device and thread count). A first SIGINT/SIGTERM stops cleanly
after the current step, saving a state.

At a scheduled iteration the files are written in this order: weights, the evaluation row of
metrics.jsonl, the training state, and last the checkpoint JSON, whose presence marks the
checkpoint done. A kill at any point in between is repaired by the next run (and a folder
written by older versions, where the JSON came first, is repaired too: a missing evaluation row
is restored from the checkpoint JSON and a state left behind is brought forward).

Settings are validated, and checked against the corpus and the machine's memory, before
anything is written; a failed write (disk full, file-size limit, read-only folder) is one line
naming the file, and leaves the previous files intact.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from . import __version__
from .checkpoint import SHA256_RE, check_vocab, list_checkpoints, read_safetensors, save_checkpoint
from .config import TrainConfig
from .corpus import Corpus
from .errors import CorruptArtefactError, GptwavesError, SettingsError
from .io import (RunLock, atomic_write_bytes, atomic_write_json, atomic_write_text, check_regular_file, confined_file,
                 physical_memory, read_json, sha256_bytes, sweep_stale, write_guard)
from .model import DROPOUT_MASKS, GPT
from .runtime import Interrupted, graceful_stop, pick_device, progress_bar

RUN_FORMAT = "gptwaves-run"
#: How a new run draws its dropout masks (docs/method.md, Model, "Dropout masks"). A run keeps the kind it started
#: with: run.json records it, and a run.json without the entry (written before ``packed16``
#: existed) resumes with torch's ``bernoulli`` masks, bit-identically.
NEW_RUN_DROPOUT_MASKS = "packed16"
STATE_RE = re.compile(r"^state_(\d{7})\.safetensors$")


def run_identity(cfg: TrainConfig, corpus: Corpus) -> dict:
    return {"format": RUN_FORMAT, "corpus_sha256": corpus.sha256, "train": cfg.identity()}


def refuse_foreign_dir(run_dir: Path) -> None:
    """A non-empty folder without run.json (or checkpoints) is not ours: refuse to write there."""
    if (run_dir / "run.json").exists() or not run_dir.is_dir():
        return
    if any(p.name not in {".lock"} for p in run_dir.iterdir()) and not (run_dir / "checkpoints").exists():
        raise GptwavesError(f"{run_dir} is not empty and holds no gptwaves run; choose another --out")


def read_run_info(run_dir: str | os.PathLike) -> dict:
    """Read and validate ``DIR/run.json``; one-line errors name the file.

    Returns the dict (keys ``format``, ``corpus_sha256``, ``train``, and from most versions
    ``vocab``, ``corpus_path``, ``created_by``, ``dropout_masks``). ``corpus_path`` is returned as written; it is a
    user path, checked when the corpus is loaded (a regular file of bounded size).
    """
    path = Path(run_dir) / "run.json"
    info = read_json(path, "run file", dict)
    if info.get("format") != RUN_FORMAT:
        raise GptwavesError(f"{Path(run_dir)} holds something that is not a gptwaves run")
    if not isinstance(info.get("corpus_sha256"), str) or not SHA256_RE.match(info["corpus_sha256"]):
        raise CorruptArtefactError(f"run file {path}: corpus_sha256 is not a sha256 hex digest")
    if not isinstance(info.get("train"), dict):
        raise CorruptArtefactError(f"run file {path}: 'train' settings are not an object")
    if "vocab" in info:
        check_vocab(info["vocab"], f"run file {path}")
    if info.get("dropout_masks", "bernoulli") not in DROPOUT_MASKS:
        raise CorruptArtefactError(f"run file {path}: dropout_masks {info['dropout_masks']!r} is not one of "
                                   f"{', '.join(DROPOUT_MASKS)}")
    cp = info.get("corpus_path")
    if cp is not None and (not isinstance(cp, str) or not cp or "\x00" in cp):
        raise CorruptArtefactError(f"run file {path}: corpus_path {cp!r} is not a file path")
    return info


def check_or_create_run(run_dir: Path, cfg: TrainConfig, corpus: Corpus) -> None:
    """Refuse an output folder that holds a different run; create run.json for a new one."""
    path = run_dir / "run.json"
    ident = run_identity(cfg, corpus)
    if path.exists():
        old = read_run_info(run_dir)
        if old.get("corpus_sha256") != corpus.sha256:
            raise GptwavesError(
                f"{run_dir} holds a run trained on a different corpus (sha256 "
                f"{str(old.get('corpus_sha256'))[:12]}... vs {corpus.sha256[:12]}...); choose another --out"
            )
        diff = sorted(k for k in set(old.get("train", {})) | set(ident["train"])
                      if old.get("train", {}).get(k) != ident["train"].get(k))
        if diff:
            shown = ", ".join(f"{k}={old['train'].get(k)!r}->{ident['train'].get(k)!r}" for k in diff[:4])
            raise GptwavesError(f"{run_dir} holds a run with different settings ({shown}); choose another --out")
        if "vocab" in old and old["vocab"] != corpus.tokenizer.chars:
            raise CorruptArtefactError(f"run file {path}: its vocabulary differs from the corpus's (tampered?)")
        return
    refuse_foreign_dir(run_dir)
    cpath = str(Path(corpus.path).resolve()) if corpus.path else None  # works from any folder later
    atomic_write_json(path, {**ident, "created_by": f"gptwaves {__version__}",
                             "vocab": corpus.tokenizer.chars, "corpus_path": cpath,
                             "dropout_masks": NEW_RUN_DROPOUT_MASKS})


def run_dropout_masks(info: dict) -> str:
    """The dropout mask kind of a run from its run.json (``bernoulli`` for runs that predate the entry)."""
    return info.get("dropout_masks", "bernoulli")


def estimate_training_bytes(cfg: TrainConfig, vocab_size: int) -> int:
    """A rough upper estimate of the memory one training step needs (weights, gradients, AdamW
    moments, causal masks and activations incl. attention matrices), in bytes."""
    C, L, T, B, H = cfg.n_embd, cfg.n_layer, cfg.block_size, cfg.batch_size, cfg.n_head
    params = 12 * L * C * C + (2 * vocab_size + T) * C
    masks = L * T * T
    acts = B * T * (16 * C * L + 2 * H * T * L + vocab_size * 2)
    return 16 * params + masks + 4 * acts


def preflight(cfg: TrainConfig, corpus: Corpus, device: torch.device) -> None:
    """Check settings against the corpus and the machine before anything is written."""
    cfg.validate()
    for split, ids in (("training", corpus.train_ids), ("validation", corpus.val_ids)):
        if len(ids) <= cfg.block_size + 1:
            raise SettingsError(
                f"corpus {split} split of {len(ids)} characters is too short for --block-size "
                f"{cfg.block_size}")
    need = estimate_training_bytes(cfg, corpus.tokenizer.vocab_size)
    if device.type == "cuda":
        have = torch.cuda.get_device_properties(device).total_memory
    else:
        have = physical_memory()
    if need > 2 * have:
        raise SettingsError(
            f"these settings need about {need / 2**30:,.0f} GiB of memory to train, the "
            f"{device.type} device has {have / 2**30:,.0f} GiB; choose a smaller model, block or batch size")


def lr_at(cfg: TrainConfig, it: int) -> float:
    """nanoGPT's schedule: linear warm-up, then cosine decay to min_lr (or constant)."""
    if cfg.warmup_iters > 0 and it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if cfg.lr_decay_iters <= 0:
        return cfg.learning_rate
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(max(ratio, 0.0), 1.0)))
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (every parameter with dim >= 2, as nanoGPT)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=True)


class Batcher:
    """Random contiguous windows of the training split, from a seeded generator."""

    def __init__(self, ids: torch.Tensor, block_size: int, batch_size: int, device: torch.device):
        if len(ids) <= block_size + 1:
            raise GptwavesError(
                f"corpus split of {len(ids)} characters is too short for block_size {block_size}"
            )
        self.windows = ids.unfold(0, block_size + 1, 1)  # (N - bs, bs + 1) view
        self.batch_size = batch_size
        self.device = device

    def get(self, gen: torch.Generator, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of windows; with ``world`` > 1 this rank's slice of the same global batch."""
        ix = torch.randint(self.windows.shape[0], (self.batch_size,), generator=gen)
        if world > 1:
            per = self.batch_size // world
            ix = ix[rank * per : (rank + 1) * per]
        w = self.windows[ix]
        x, y = w[:, :-1], w[:, 1:]
        if self.device.type != "cpu":
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return x.contiguous(), y.contiguous()


def autocast_ctx(cfg: TrainConfig, device: torch.device):
    """bf16 autocast or nothing, following ``cfg.precision`` (``auto``: see resolve_precision)."""
    from .runtime import resolve_precision

    if cfg.precision not in ("fp32", "bf16", "auto"):
        raise GptwavesError(f"unknown precision {cfg.precision!r} (fp32, bf16 or auto)")
    if resolve_precision(cfg.precision, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(model: GPT, batches: dict[str, list], cfg: TrainConfig, device: torch.device) -> dict[str, float]:
    was_training = model.training
    model.eval()
    out = {}
    for split, bl in batches.items():
        losses = []
        for x, y in bl:
            with autocast_ctx(cfg, device):
                _, loss, _ = model(x.to(device), y.to(device))
            losses.append(float(loss))
        out[split] = sum(losses) / len(losses)
    model.train(was_training)
    return out


def fixed_eval_batches(corpus: Corpus, cfg: TrainConfig, device: torch.device) -> dict[str, list]:
    """The same evaluation batches at every checkpoint (seeded apart from training)."""
    gen = torch.Generator().manual_seed(cfg.seed + 7919)
    out = {}
    for split, ids in (("train", corpus.train_ids), ("val", corpus.val_ids)):
        b = Batcher(torch.from_numpy(ids), cfg.block_size, cfg.batch_size, torch.device("cpu"))
        out[split] = [b.get(gen) for _ in range(cfg.eval_iters)]
    return out


# ---------------------------------------------------------------------------- training state

def _rng_tensor(state: torch.Tensor) -> torch.Tensor:
    return state.clone().contiguous()


def save_state(run_dir: Path, it: int, model: GPT, opt: torch.optim.Optimizer,
               gen: torch.Generator, device: torch.device) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().clone().contiguous()
    osd = opt.state_dict()
    for pid, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().clone().contiguous()
    tensors["rng.torch"] = _rng_tensor(torch.get_rng_state())
    tensors["rng.data"] = _rng_tensor(gen.get_state())
    if device.type == "cuda":
        tensors["rng.cuda"] = _rng_tensor(torch.cuda.get_rng_state(device))
    data = st_save(tensors)
    sdir = run_dir / "state"
    name = f"state_{it:07d}.safetensors"
    atomic_write_bytes(sdir / name, data)
    atomic_write_json(sdir / "state.json", {
        "iteration": it, "file": name, "sha256": sha256_bytes(data),
        "param_groups": osd["param_groups"],
    })
    for p in sdir.glob("state_*.safetensors"):  # keep only the newest state
        if p.name != name:
            try:
                p.unlink(missing_ok=True)
            except OSError:  # a read-only leftover is harmless: state.json names the newest
                pass


def load_state(run_dir: Path, model: GPT, opt: torch.optim.Optimizer, gen: torch.Generator,
               device: torch.device) -> int | None:
    ptr = run_dir / "state" / "state.json"
    if not ptr.exists():
        return None
    meta = read_state_pointer(run_dir)
    hint = f"; delete {run_dir / 'state'} to train again from the start"
    path = confined_file(run_dir / "state", meta["file"], f"training state {ptr}: file", physical_memory())
    tensors = read_safetensors(path, meta["sha256"])
    missing = [k for k in ("rng.torch", "rng.data") if k not in tensors]
    if missing:
        raise CorruptArtefactError(f"training state {path} is incomplete (no {', '.join(missing)}){hint}")
    msd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(msd)
    except RuntimeError:
        raise GptwavesError(f"training state in {run_dir} does not match the model settings{hint}") from None
    states: dict[int, dict] = {}
    try:
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                states.setdefault(int(pid), {})[name] = v.to(device) if name != "step" else v
        opt.load_state_dict({"state": states, "param_groups": meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        gen.set_state(tensors["rng.data"])
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CorruptArtefactError(f"training state {path} is inconsistent ({first}){hint}") from None
    return int(meta["iteration"])


def read_state_pointer(run_dir: Path) -> dict:
    """Read and validate ``DIR/state/state.json`` (iteration, file name, checksum, param groups)."""
    ptr = Path(run_dir) / "state" / "state.json"
    meta = read_json(ptr, "training state", dict)
    src = f"training state {ptr}"
    it = meta.get("iteration")
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        raise CorruptArtefactError(f"{src}: iteration {it!r} is not a non-negative integer")
    name = meta.get("file")
    m = STATE_RE.match(name) if isinstance(name, str) else None
    if not m:
        raise CorruptArtefactError(f"{src}: file {name!r} is not a state file name")
    if int(m.group(1)) != it:
        raise CorruptArtefactError(f"{src}: iteration {it} disagrees with the file name {name}")
    if not isinstance(meta.get("sha256"), str) or not SHA256_RE.match(meta["sha256"]):
        raise CorruptArtefactError(f"{src}: sha256 is not a sha256 hex digest")
    pg = meta.get("param_groups")
    if not isinstance(pg, list) or not all(isinstance(g, dict) for g in pg):
        raise CorruptArtefactError(f"{src}: param_groups is not a list of objects")
    return meta


# ---------------------------------------------------------------------------- metrics log

def _metrics_row(line: str) -> dict | None:
    """A metrics row, or None for a line cut by a kill or otherwise invalid."""
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(row, dict):
        return None
    it = row.get("iter")
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        return None
    if row.get("kind") not in ("train", "eval"):
        return None
    for k in ("loss", "lr", "tokens_per_s", "train_loss", "val_loss"):  # numbers (a loss may be NaN)
        v = row.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or (k in ("lr", "tokens_per_s") and not (math.isfinite(v) and v >= 0))):
            return None
    return row


def _metrics_lines(path: Path) -> list[tuple[str, dict]]:
    """(line, row) for every valid row of a metrics log (a regular file of at most 1 GiB)."""
    if not path.exists():
        return []
    check_regular_file(path, "metrics log", 1 << 30)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise GptwavesError(f"cannot read metrics log {path}: {e.strerror or e}") from None
    out = []
    for line in text.splitlines():
        row = _metrics_row(line)
        if row is not None:
            out.append((line, row))
    return out


class MetricsLog:
    """Append-only JSONL log; on resume rows past the resumed iteration are dropped.

    ``eval_iters`` is the set of iterations that have an evaluation row (a repaired or resumed
    run never writes one twice).
    """

    def __init__(self, path: Path, resume_from: int | None):
        self.path = path
        kept = []
        self.eval_iters: set[int] = set()
        for line, row in _metrics_lines(path):
            if resume_from is not None and row["iter"] <= resume_from:
                if row["kind"] == "eval":
                    if row["iter"] in self.eval_iters:
                        continue
                    self.eval_iters.add(row["iter"])
                kept.append(line)
        atomic_write_text(path, "".join(r + "\n" for r in kept))
        with write_guard(path):
            self._f = open(path, "a", encoding="utf-8")

    def write(self, row: dict, sync: bool = False) -> None:
        with write_guard(self.path):
            self._f.write(json.dumps(row) + "\n")
            self._f.flush()
            if sync:
                os.fsync(self._f.fileno())
        if row.get("kind") == "eval":
            self.eval_iters.add(int(row["iter"]))

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:  # the write that failed was already reported
            pass


def read_metrics(run_dir: Path) -> list[dict]:
    """The valid rows of ``DIR/metrics.jsonl`` (dicts with a non-negative integer ``iter`` and a
    ``kind`` of train or eval); cut or tampered lines are skipped."""
    return [row for _, row in _metrics_lines(Path(run_dir) / "metrics.jsonl")]


# ---------------------------------------------------------------------------- main loop

@dataclass
class TrainResult:
    run_dir: Path
    iterations: int
    checkpoints: list
    seconds: float
    resumed_from: int | None


def train(cfg: TrainConfig, corpus: Corpus, run_dir: str | os.PathLike) -> TrainResult:
    """Train (or resume) a run; returns when ``cfg.max_iters`` is reached."""
    from . import distributed as dd

    run_dir = Path(run_dir)
    d = dd.info()
    cfg.validate()
    preflight(cfg, corpus, pick_device(cfg.device))
    if d.enabled and cfg.batch_size % d.world:
        raise GptwavesError(f"batch size {cfg.batch_size} is not divisible by {d.world} processes")
    device, d = dd.setup(cfg.device)  # the one device/torchrun setup of train, record and spelling
    if not d.main:  # only rank 0 writes; the others follow its files
        dd.barrier()
        return _train_locked(cfg, corpus, run_dir, device, d)
    refuse_foreign_dir(run_dir)  # before the lock, which would leave a .lock file there
    with RunLock(run_dir):
        sweep_stale(run_dir)  # temporary files of killed runs (the lock says none is live)
        check_or_create_run(run_dir, cfg, corpus)
        dd.barrier()
        return _train_locked(cfg, corpus, run_dir, device, d)


# long: the training loop with its resume, evaluation, checkpoint and interrupt steps in the order they run
def _train_locked(cfg: TrainConfig, corpus: Corpus, run_dir: Path, device: torch.device, d=None) -> TrainResult:
    from . import distributed as dd

    d = d or dd.DistInfo()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    mcfg = cfg.model_config(corpus.tokenizer.vocab_size)
    model = GPT(mcfg).to(device).set_dropout_masks(run_dropout_masks(read_run_info(run_dir)))
    opt = make_optimizer(model, cfg, device)
    fwd = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    gen = torch.Generator().manual_seed(cfg.seed)
    start = load_state(run_dir, model, opt, gen, device)
    resumed_from = start
    it = start or 0
    if it > cfg.max_iters:
        raise GptwavesError(f"{run_dir} was already trained to iteration {it} > --max-iters {cfg.max_iters}")
    schedule = cfg.schedule()
    ckpt_dir = run_dir / "checkpoints"
    vocab = corpus.tokenizer.chars
    done_meta = {c.iteration: c.meta for c in list_checkpoints(ckpt_dir, vocab=vocab)}
    done = set(done_meta)
    state_it = start
    batcher = Batcher(torch.from_numpy(corpus.train_ids), cfg.block_size, cfg.batch_size, device)
    eval_batches = fixed_eval_batches(corpus, cfg, device)
    log = MetricsLog(run_dir / "metrics.jsonl", resumed_from) if d.main else None
    tokens_per_iter = cfg.batch_size * cfg.block_size
    bar = progress_bar(total=cfg.max_iters, initial=it, desc=f"train {cfg.preset}", unit="it",
                       disable=not (cfg.progress and d.main))
    last_val = None
    model.train()
    try:
        with graceful_stop() as stop:
            t_last, it_last = time.perf_counter(), it
            while True:
                if it in schedule and it not in done:
                    losses = evaluate(model, eval_batches, cfg, device)
                    last_val = losses["val"]
                    if d.main:
                        # row and state first, the JSON (which marks the checkpoint done) last
                        def before_meta(it=it, losses=losses):
                            nonlocal state_it
                            if it not in log.eval_iters:
                                log.write({"iter": it, "kind": "eval", "train_loss": losses["train"],
                                           "val_loss": losses["val"]}, sync=True)
                            save_state(run_dir, it, model, opt, gen, device)
                            state_it = it

                        save_checkpoint(ckpt_dir, model, it, vocab, {
                            "train_loss": losses["train"], "val_loss": losses["val"],
                            "train_config": cfg.identity(), "corpus_sha256": corpus.sha256,
                            "tokens_seen": it * tokens_per_iter,
                        }, before_meta=before_meta)
                    done.add(it)
                elif it in schedule and d.main:
                    # done earlier; repair what a kill (or an older version's write order) lost
                    meta = done_meta.get(it)
                    if it not in log.eval_iters and meta is not None:
                        log.write({"iter": it, "kind": "eval", "train_loss": meta.get("train_loss"),
                                   "val_loss": meta.get("val_loss")}, sync=True)
                    if state_it is None or state_it < it:
                        save_state(run_dir, it, model, opt, gen, device)
                        state_it = it
                    if meta is not None and meta.get("val_loss") is not None:
                        last_val = meta["val_loss"]
                if it >= cfg.max_iters:
                    break
                if dd.any_flag(bool(stop), device):
                    if d.main and state_it != it:
                        save_state(run_dir, it, model, opt, gen, device)
                    raise Interrupted(f"training interrupted at iteration {it}; re-run the same command to resume")
                lr = lr_at(cfg, it)
                for g in opt.param_groups:
                    g["lr"] = lr
                x, y = batcher.get(gen, d.rank, d.world)
                with autocast_ctx(cfg, device):
                    _, loss, _ = fwd(x, y)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                it += 1
                lossf = dd.mean_scalar(loss.item(), device) if d.enabled else loss.item()
                if not math.isfinite(lossf):
                    raise GptwavesError(
                        f"training diverged: loss is {lossf} at iteration {it} (try a lower --learning-rate); "
                        "checkpoints written so far are kept"
                    )
                bar.update(1)
                if it % cfg.log_interval == 0 or it == cfg.max_iters:
                    now = time.perf_counter()
                    tps = (it - it_last) * tokens_per_iter / max(now - t_last, 1e-9)
                    t_last, it_last = now, it
                    if log is not None:
                        log.write({"iter": it, "kind": "train", "loss": lossf, "lr": lr, "tokens_per_s": tps})
                    post = {"loss": f"{lossf:.3f}", "tok/s": f"{tps:,.0f}"}
                    if last_val is not None:
                        post["val"] = f"{last_val:.3f}"
                    bar.set_postfix(post, refresh=False)
                if it % cfg.state_interval == 0 and it not in schedule and d.main:
                    save_state(run_dir, it, model, opt, gen, device)
                    state_it = it
    finally:
        bar.close()
        if log is not None:
            log.close()
    dd.barrier()
    return TrainResult(run_dir, it, list_checkpoints(ckpt_dir), time.perf_counter() - t0, resumed_from)
