"""Shared helpers of the benchmark suite: machine description, timing, rows, matmul peaks, FLOPs.

Conventions (every bench module follows them)
---------------------------------------------
* A *row* is a dict with keys ``figure, value, unit, baseline, ratio, target, ok, machine, notes``.
  ``baseline`` is measured in the same run, in the same unit as ``value``; ``ratio`` is always
  ``value / baseline`` (so for throughputs higher is better; the ``target`` says which way).
  ``ok`` is True/False when the figure has a target, None when it is only reported.
* Timings are medians of repeated measurements, taken after a warm-up; where a measurement is
  long (a whole recording), the number of repeats is given in the notes.
* Everything runs on the CPU with torch's default thread count (recorded in the machine).
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

#: Figures of the paper model (docs/method.md, Model): minGPT gpt-mini with a 65-character vocabulary.
PAPER_VOCAB = 65


def log(msg: str) -> None:
    """Progress line on stderr (the table goes to stdout)."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ machine

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict:
    """CPU model, cores, torch version and threads, bf16 support, load average and date."""
    from ..runtime import cpu_has_bf16

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    info = {
        "cpu": cpu_model(),
        "cores": cores,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "bf16_cpu": cpu_has_bf16(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    info["summary"] = machine_summary(info)
    return info


def machine_summary(info: dict) -> str:
    """One short line for the table's machine column."""
    return f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['threads']} threads"


# ------------------------------------------------------------------------------ rows

def make_row(figure: str, value, unit: str, *, baseline=None, target: str | None = None,
             ok: bool | None = None, notes: str = "", ratio=None) -> dict:
    """A result row; ``ratio`` defaults to value / baseline when both are numbers."""
    if ratio is None and isinstance(value, (int, float)) and isinstance(baseline, (int, float)) and baseline:
        ratio = value / baseline
    return {"figure": figure, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio,
            "target": target, "ok": ok, "machine": None, "notes": notes}


def check(ratio_or_value, op: str, threshold: float) -> bool | None:
    """``ok`` for a target like ``>= 1.3``; None when the measured value is missing."""
    if ratio_or_value is None:
        return None
    return bool(ratio_or_value >= threshold) if op == ">=" else bool(ratio_or_value <= threshold)


# ------------------------------------------------------------------------------ timing

def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def time_repeats(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------------------ matmul peak

@functools.cache
def _matmul_peak_cached(dtype_name: str, n: int, repeats: int, threads: int) -> tuple[float, list[float]]:
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    times = time_repeats(lambda: torch.mm(a, b, out=c), repeats, warmup=2)
    return 2.0 * n**3 / median(times) / 1e9, times


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 7) -> float:
    """Measured matmul rate in GFLOP/s: median time of an ``n``-cubed ``torch.mm``.

    Cached per (dtype, n, repeats, thread count), so every bench in one process compares against
    the same peak.
    """
    name = str(dtype).replace("torch.", "")
    return _matmul_peak_cached(name, int(n), int(repeats), torch.get_num_threads())[0]


def peak_rows(n: int, repeats: int) -> tuple[dict[str, float], list[dict]]:
    """fp32 and bf16 matmul peaks (GFLOP/s) and their rows."""
    peaks, rows = {}, []
    for dt, expect in ((torch.float32, "about 180 GFLOP/s"), (torch.bfloat16, "about 415 GFLOP/s")):
        g = matmul_peak(dt, n, repeats)
        name = "fp32" if dt == torch.float32 else "bf16"
        peaks[name] = g
        rows.append(make_row(f"matmul peak {name} ({n}^3 torch.mm)", g, "GFLOP/s",
                             notes=f"median of {repeats}; issue quotes {expect} on the 2-thread EPYC"))
    return peaks, rows


# ------------------------------------------------------------------------------ models, FLOPs

def paper_train_config(**overrides):
    """The ``paper`` preset with optional overrides (tests use tiny sizes)."""
    from ..config import preset

    return preset("paper").override(**overrides)


def make_model(cfg=None, vocab_size: int = PAPER_VOCAB, seed: int = 0):
    """A randomly initialised gptwaves GPT of the preset's shape (speed does not depend on training)."""
    from ..model import GPT

    cfg = cfg or paper_train_config()
    torch.manual_seed(seed)
    return GPT(cfg.model_config(vocab_size))


def matmul_params(model) -> int:
    """Weights of the Linear layers inside the blocks (what the per-token matmuls multiply by)."""
    return sum(m.weight.numel() for m in model.transformer.h.modules() if isinstance(m, torch.nn.Linear))


def train_flops_per_token(model) -> float:
    """nanoGPT's estimate: 6 N + 12 n_layer n_embd block_size (N: non-embedding parameters)."""
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    n -= model.transformer.wpe.weight.numel()
    if not c.tie_weights:  # nanoGPT counts wte only through the tied head
        n -= model.transformer.wte.weight.numel()
    return 6.0 * n + 12.0 * c.n_layer * c.n_embd * c.block_size


def window_forward_flops(model, batch: int, length: int) -> float:
    """FLOPs of one uncached forward of ``batch`` windows of ``length`` tokens, head on the last only.

    2 x (block matmul weights) per token, plus q k^T and att v (2 x 2 x T^2 x C per layer, counted in
    full as nanoGPT does), plus the head for the newest position. With
    ``GPT.newest_only_last_block`` (the default) the last block computes keys and values for every
    token but its query, attention output, projection and MLP for the newest one only, and only
    that work is counted.
    """
    c = model.config
    per_seq = 2.0 * matmul_params(model) * length + 4.0 * c.n_layer * length**2 * c.n_embd
    if getattr(model, "newest_only_last_block", False) and c.n_layer:
        last = model.transformer.h[-1]
        w_block = sum(m.weight.numel() for m in last.modules() if isinstance(m, torch.nn.Linear))
        w_kv = 2 * last.attn.c_attn.weight.numel() // 3
        per_seq -= 2.0 * (w_block - w_kv) * (length - 1)  # q, projection, MLP: newest token only
        per_seq -= 4.0 * (length**2 - length) * c.n_embd  # one query row instead of length
    per_seq += 2.0 * c.n_embd * c.vocab_size
    return batch * per_seq


def cached_token_flops(model, context: int) -> float:
    """FLOPs of one new token with the key/value cache attending to ``context`` positions (head included)."""
    c = model.config
    return 2.0 * matmul_params(model) + 4.0 * c.n_layer * context * c.n_embd + 2.0 * c.n_embd * c.vocab_size


def synthetic_vocab(n: int = PAPER_VOCAB) -> list[str]:
    """A character vocabulary of size ``n`` containing newline and space (for recording benches)."""
    chars = ["\n", " "] + [chr(c) for c in range(33, 127)]
    if n > len(chars):
        raise ValueError(f"synthetic vocabulary has at most {len(chars)} characters")
    return sorted(chars[:n])
