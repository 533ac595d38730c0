"""Training with checkpoints across training, resumable bit-identically (DESIGN 2).

Layout of a run directory::

    DIR/run.json                      identity of the run (settings, corpus checksum)
    DIR/checkpoints/iter_XXXXXXX.*    weights (safetensors) + metadata (JSON) at each scheduled iteration
    DIR/state/state.json              pointer to the newest resumable training state
    DIR/state/state_XXXXXXX.safetensors   model, optimizer, RNG states and data position
    DIR/metrics.jsonl                 one row per log interval and per evaluation

Re-running the same command resumes from the newest state and ends with weights bit-identical
to an uninterrupted run (same device and thread count). A first SIGINT/SIGTERM stops cleanly
after the current step, saving a state.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as st_save
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import list_checkpoints, read_safetensors, save_checkpoint
from .config import TrainConfig
from .corpus import Corpus
from .errors import GptwavesError
from .io import RunLock, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json, sha256_bytes
from .model import GPT
from .runtime import Interrupted, graceful_stop, pick_device

RUN_FORMAT = "gptwaves-run"


def run_identity(cfg: TrainConfig, corpus: Corpus) -> dict:
    return {"format": RUN_FORMAT, "corpus_sha256": corpus.sha256, "train": cfg.identity()}


def refuse_foreign_dir(run_dir: Path) -> None:
    """A non-empty folder without run.json (or checkpoints) is not ours: refuse to write there."""
    if (run_dir / "run.json").exists() or not run_dir.is_dir():
        return
    if any(p.name not in {".lock"} for p in run_dir.iterdir()) and not (run_dir / "checkpoints").exists():
        raise GptwavesError(f"{run_dir} is not empty and holds no gptwaves run; choose another --out")


def check_or_create_run(run_dir: Path, cfg: TrainConfig, corpus: Corpus) -> None:
    """Refuse an output folder that holds a different run; create run.json for a new one."""
    path = run_dir / "run.json"
    ident = run_identity(cfg, corpus)
    if path.exists():
        old = read_json(path, "run file")
        if old.get("format") != RUN_FORMAT:
            raise GptwavesError(f"{run_dir} holds something that is not a gptwaves run")
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
        return
    refuse_foreign_dir(run_dir)
    atomic_write_json(path, {**ident, "created_by": f"gptwaves {__version__}",
                             "vocab": corpus.tokenizer.chars, "corpus_path": str(corpus.path)})


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
            p.unlink(missing_ok=True)


def load_state(run_dir: Path, model: GPT, opt: torch.optim.Optimizer, gen: torch.Generator,
               device: torch.device) -> int | None:
    ptr = run_dir / "state" / "state.json"
    if not ptr.exists():
        return None
    meta = read_json(ptr, "training state")
    tensors = read_safetensors(run_dir / "state" / meta["file"], meta.get("sha256"))
    msd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(msd)
    except RuntimeError:
        raise GptwavesError(f"training state in {run_dir} does not match the model settings") from None
    states: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            states.setdefault(int(pid), {})[name] = v.to(device) if name != "step" else v
    opt.load_state_dict({"state": states, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.data"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return int(meta["iteration"])


# ---------------------------------------------------------------------------- metrics log

class MetricsLog:
    """Append-only JSONL log; on resume rows past the resumed iteration are dropped."""

    def __init__(self, path: Path, resume_from: int | None):
        self.path = path
        rows = []
        if path.exists():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if resume_from is not None and row.get("iter", 0) <= resume_from:
                    rows.append(line)
        atomic_write_text(path, "".join(r + "\n" for r in rows))
        self._f = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


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
    device = pick_device(cfg.device)
    if d.enabled:
        if cfg.batch_size % d.world:
            raise GptwavesError(f"batch size {cfg.batch_size} is not divisible by {d.world} processes")
        if device.type == "cuda":
            device = torch.device("cuda", d.local_rank)
        dd.init(device.type)
    if not d.main:  # only rank 0 writes; the others follow its files
        dd.barrier()
        return _train_locked(cfg, corpus, run_dir, device, d)
    refuse_foreign_dir(run_dir)  # before the lock, which would leave a .lock file there
    with RunLock(run_dir):
        check_or_create_run(run_dir, cfg, corpus)
        dd.barrier()
        return _train_locked(cfg, corpus, run_dir, device, d)


def _train_locked(cfg: TrainConfig, corpus: Corpus, run_dir: Path, device: torch.device, d=None) -> TrainResult:
    from . import distributed as dd

    d = d or dd.DistInfo()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    mcfg = cfg.model_config(corpus.tokenizer.vocab_size)
    model = GPT(mcfg).to(device)
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
    done = {c.iteration for c in list_checkpoints(ckpt_dir)}
    batcher = Batcher(torch.from_numpy(corpus.train_ids), cfg.block_size, cfg.batch_size, device)
    eval_batches = fixed_eval_batches(corpus, cfg, device)
    log = MetricsLog(run_dir / "metrics.jsonl", resumed_from) if d.main else None
    vocab = corpus.tokenizer.chars
    tokens_per_iter = cfg.batch_size * cfg.block_size
    bar = tqdm(total=cfg.max_iters, initial=it, desc=f"train {cfg.preset}", unit="it",
               disable=not (cfg.progress and d.main), dynamic_ncols=True, mininterval=0.5)
    last_val = None
    model.train()
    try:
        with graceful_stop() as stop:
            t_last, it_last = time.perf_counter(), it
            while True:
                if it in schedule and it not in done:
                    losses = evaluate(model, eval_batches, cfg, device)
                    last_val = losses["val"]
                    done.add(it)
                if it in schedule and d.main and not (ckpt_dir / f"iter_{it:07d}.json").exists():
                    save_checkpoint(ckpt_dir, model, it, vocab, {
                        "train_loss": losses["train"], "val_loss": losses["val"],
                        "train_config": cfg.identity(), "corpus_sha256": corpus.sha256,
                        "tokens_seen": it * tokens_per_iter,
                    })
                    log.write({"iter": it, "kind": "eval", "train_loss": losses["train"],
                               "val_loss": losses["val"]})
                    save_state(run_dir, it, model, opt, gen, device)
                if it >= cfg.max_iters:
                    break
                if dd.any_flag(bool(stop), device):
                    if d.main:
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
    finally:
        bar.close()
        if log is not None:
            log.close()
    dd.barrier()
    return TrainResult(run_dir, it, list_checkpoints(ckpt_dir), time.perf_counter() - t0, resumed_from)
