"""Where a finished run's time went, next to the physical limit: ``gptwaves bench budget --run DIR``.

For each stage of a ``gptwaves reproduce`` run, the arithmetic it had to do (FLOPs, counted from
the run's own settings and files) over the matmul peak measured now on this machine gives the time
at the peak; the measured time (from ``reproduce.json`` and ``metrics.jsonl``) over it is the gap a
user pays. Work counted (matmul FLOPs; LayerNorm, GELU, softmax and the optimizer are not counted,
they are memory-bound):

* training: ``6 N + 12 L d T`` per token (nanoGPT's estimate, :func:`train_flops_per_token`) for
  ``max_iters x batch x block`` tokens; at the bf16 peak where training used bf16 autocast, else fp32.
* recordings: every recording file's positions: inside the context one cached token each
  (:func:`cached_token_flops`), past it one window forward (:func:`window_forward_flops`, the last
  block for the newest position only, as gptwaves runs it); fp32.
* spelling sampling: ``samples x (length + margin)`` cached tokens per checkpoint; fp32.
* waves, spelling statistics, summary, report: numpy/scipy work on the recorded values and
  counts, no FLOP limit is given (their measured time is listed).

Measured times: the last ``reproduce`` invocation's stage timings plus those of earlier invocations
(``timings_history``). Training is also given at the run's median logged rate (``metrics.jsonl``:
steps only, evaluations excluded), which is what an uninterrupted run on a quiet machine pays when
the training was split over several invocations or ran under load.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from .common import cached_token_flops, log, make_row, matmul_peak, train_flops_per_token, window_forward_flops


def _read(path: Path, what: str = "run file") -> dict:
    from ..io import read_json

    return read_json(path, what, dict)


def check_run(run_dir: str | Path) -> Path:
    """The run directory of a finished ``gptwaves reproduce`` (one-line error otherwise)."""
    from ..errors import GptwavesError

    run_dir = Path(run_dir)
    _read(run_dir / "reproduce.json", "reproduce record")
    if not sorted((run_dir / "checkpoints").glob("iter_*.json")):
        raise GptwavesError(f"{run_dir} has no checkpoints: not a finished gptwaves run")
    return run_dir


def recording_flops(model, samples: int, prompt_len: int, steps: int) -> float:
    """FLOPs of recording ``samples`` x ``steps`` after a ``prompt_len`` prompt (crop context policy)."""
    bs = model.config.block_size
    n = prompt_len - 1 + steps  # processed positions
    inside = sum(cached_token_flops(model, j + 1) for j in range(min(n, bs)))
    return samples * inside + max(0, n - bs) * window_forward_flops(model, samples, bs)


def sampling_flops(model, samples: int, length: int) -> float:
    """FLOPs of sampling ``samples`` texts of ``length`` characters with the key/value cache."""
    return samples * sum(cached_token_flops(model, j + 1) for j in range(min(length, model.config.block_size)))


def stage_seconds(reproduce: dict) -> dict[str, float]:
    """Seconds per stage over every ``reproduce`` invocation of the run."""
    out: dict[str, float] = {}
    for t in [reproduce.get("timings") or {}, *(reproduce.get("timings_history") or [])]:
        for k, v in (t or {}).items():
            if isinstance(v, (int, float)) and k != "total":
                out[k] = out.get(k, 0.0) + float(v)
    return out


def run(quick: bool = False, corpus=None, *, run_dir: str | Path | None = None, peak_n: int | None = None) -> list[dict]:
    """Rows: per stage, measured seconds against the seconds at the matmul peak (the gap)."""
    import torch

    from ..model import GPT, GPTConfig

    if run_dir is None:
        return [make_row("budget: skipped", None, "", notes="needs a finished run: gptwaves bench budget --run DIR")]
    run_dir = check_run(run_dir)
    rep = _read(run_dir / "reproduce.json", "reproduce record")
    cks = sorted((run_dir / "checkpoints").glob("iter_*.json"))
    cfg = GPTConfig.from_dict(_read(cks[-1])["config"])
    model = GPT(cfg).eval()
    peak_n = peak_n or (512 if quick else 2048)
    log("budget: matmul peaks")
    peak32 = matmul_peak(torch.float32, peak_n) * 1e9
    peak16 = matmul_peak(torch.bfloat16, peak_n) * 1e9
    tr = rep.get("train") or {}
    bf16 = tr.get("precision") in ("bf16", "auto") and peak16 > peak32  # auto: bf16 where native (this CPU)
    seconds = stage_seconds(rep)
    rows = []

    # training
    iters = int(tr.get("max_iters") or 0)
    tokens = iters * int(tr.get("batch_size") or 0) * cfg.block_size
    f_train = train_flops_per_token(model) * tokens
    peak_t = peak16 if bf16 else peak32
    rates = []
    mpath = run_dir / "metrics.jsonl"
    if mpath.is_file():
        for line in mpath.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("kind") == "train" and isinstance(r.get("tokens_per_s"), (int, float)) and r["tokens_per_s"] > 0:
                rates.append(r["tokens_per_s"])
    at_median = tokens / statistics.median(rates) if rates else None
    rows.append(make_row(f"budget training: {iters} iterations x {tokens // max(iters, 1)} tokens, at the run's "
                         f"median rate", at_median, "s", baseline=f_train / peak_t,
                         notes=f"{f_train:.2e} FLOP at the {'bf16' if bf16 else 'fp32'} peak "
                               f"{peak_t / 1e9:.0f} GFLOP/s; median of {len(rates)} logged rates "
                               f"({statistics.median(rates) if rates else float('nan'):.0f} tok/s), evaluations "
                               f"excluded; reproduce's wall time over its invocations "
                               f"{seconds.get('train', float('nan')):.0f} s"))

    # recordings
    f_rec, n_rec, n_win = 0.0, 0, 0
    for p in sorted((run_dir / "recordings").glob("*.json")):
        m = _read(p)
        if not all(isinstance(m.get(k), int) for k in ("samples", "steps", "prompt_len")):
            continue
        f_rec += recording_flops(model, m["samples"], m["prompt_len"], m["steps"])
        n_rec += 1
        n_win += m["samples"] * max(0, m["prompt_len"] - 1 + m["steps"] - cfg.block_size)
    rows.append(make_row(f"budget recordings: {n_rec} files, {n_win} window forwards past the context",
                         seconds.get("record"), "s", baseline=f_rec / peak32,
                         notes=f"{f_rec:.2e} FLOP at the fp32 peak {peak32 / 1e9:.0f} GFLOP/s"))

    # spelling sampling (+ statistics, not separable in the stage timing)
    f_sp, n_sp = 0.0, 0
    for p in sorted((run_dir / "spelling").glob("iter_*.json")):
        if p.name.count(".") != 1:
            continue
        s = (_read(p).get("settings") or {})
        if isinstance(s.get("samples"), int) and isinstance(s.get("length"), int):
            f_sp += sampling_flops(model, s["samples"], s["length"] + int(s.get("margin") or 0))
            n_sp += 1
    rows.append(make_row(f"budget spelling: {n_sp} checkpoints, sampling + statistics", seconds.get("spelling"),
                         "s", baseline=f_sp / peak32,
                         notes=f"{f_sp:.2e} FLOP of sampling at the fp32 peak; the statistics (permutation "
                               f"nulls) are in the measured time, not in the limit"))
    for k in ("waves", "summary", "report"):
        rows.append(make_row(f"budget {k}", seconds.get(k), "s", notes="numpy/scipy on recorded values; no FLOP limit"))
    total = sum(v for v in seconds.values())
    rows.append(make_row("budget total (reproduce, every invocation)", total, "s",
                         notes="training counted at its wall time here; see the training row for the median rate"))
    return rows
