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

import statistics
from pathlib import Path

from .common import cached_token_flops, log, make_row, matmul_peak, train_flops_per_token, window_forward_flops


def _read(path: Path, what: str = "run file") -> dict:
    from ..io import read_json

    return read_json(path, what, dict)


#: Sizes read from a run beyond this are not a run gptwaves made (the FLOP sums would be absurd).
MAX_SIZE = 10**9


def _size(obj: dict, key: str, where: Path, default=None):
    """A non-negative integer size of a run file (or ``default`` when absent); one line otherwise."""
    from ..errors import CorruptArtefactError

    v = obj.get(key, default)
    if v is default:
        return v
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SIZE:
        raise CorruptArtefactError(f"{where}: {key} = {str(v)[:40]!r} is not an integer in [0, {MAX_SIZE:,}]")
    return v


def check_run(run_dir: str | Path) -> Path:
    """The run directory of a finished ``gptwaves reproduce`` (one-line error otherwise): its
    reproduce record valid (stage timings non-negative numbers), its checkpoints valid."""
    from ..checkpoint import list_checkpoints
    from ..errors import GptwavesError
    from ..io import check_run_dir
    from ..stages import checks

    run_dir = check_run_dir(run_dir)
    if not run_dir.is_dir():
        raise GptwavesError(f"run directory not found: {run_dir}")
    checks.read_checked(run_dir / "reproduce.json", "reproduce record", checks.reproduce_file)
    if not list_checkpoints(run_dir / "checkpoints"):
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
        for k, v in (t if isinstance(t, dict) else {}).items():
            if isinstance(v, (int, float)) and k != "total":
                out[k] = out.get(k, 0.0) + float(v)
    return out


# long: one row per stage, each its few lines of FLOP arithmetic, read top to bottom
def run(quick: bool = False, corpus=None, *, run_dir: str | Path | None = None, peak_n: int | None = None) -> list[dict]:
    """Rows: per stage, measured seconds against the seconds at the matmul peak (the gap)."""
    import torch

    from ..model import GPT, GPTConfig

    if run_dir is None:
        return [make_row("budget: skipped", None, "", notes="needs a finished run: gptwaves bench budget --run DIR")]
    from ..checkpoint import list_checkpoints
    from ..errors import CorruptArtefactError
    from ..train import read_metrics

    run_dir = check_run(run_dir)
    rpath = run_dir / "reproduce.json"
    rep = _read(rpath, "reproduce record")
    cfg = GPTConfig.from_dict(list_checkpoints(run_dir / "checkpoints")[-1].meta["config"])
    tr = rep.get("train") or {}
    iters, batch = _size(tr, "max_iters", rpath, 0) or 0, _size(tr, "batch_size", rpath, 0) or 0
    if tr.get("precision") is not None and not isinstance(tr.get("precision"), str):
        raise CorruptArtefactError(f"{rpath}: train.precision is not a name")
    recs = []  # every recording's sizes and every spelling result's, checked before any measuring
    for p in sorted((run_dir / "recordings").glob("*.json")):
        m = _read(p, "recording metadata")
        if all(_size(m, k, p) is not None for k in ("samples", "steps", "prompt_len")):
            recs.append((m["samples"], m["prompt_len"], m["steps"]))
    spell = []
    for p in sorted((run_dir / "spelling").glob("iter_*.json")):
        if p.name.count(".") != 1:
            continue
        st = _read(p, "spelling result").get("settings")
        if st is not None and not isinstance(st, dict):
            raise CorruptArtefactError(f"spelling result {p}: settings is not an object")
        st = st or {}
        if _size(st, "samples", p) is not None and _size(st, "length", p) is not None:
            spell.append((st["samples"], st["length"] + (_size(st, "margin", p, 0) or 0)))
    model = GPT(cfg).eval()
    peak_n = peak_n or (512 if quick else 2048)
    log("budget: matmul peaks")
    peak32 = matmul_peak(torch.float32, peak_n) * 1e9
    peak16 = matmul_peak(torch.bfloat16, peak_n) * 1e9
    bf16 = tr.get("precision") in ("bf16", "auto") and peak16 > peak32  # auto: bf16 where native (this CPU)
    seconds = stage_seconds(rep)
    rows = []

    # training
    tokens = iters * batch * cfg.block_size
    f_train = train_flops_per_token(model) * tokens
    peak_t = peak16 if bf16 else peak32
    rates = [r["tokens_per_s"] for r in read_metrics(run_dir)  # valid rows only (cut lines skipped)
             if r.get("kind") == "train" and isinstance(r.get("tokens_per_s"), (int, float))
             and not isinstance(r["tokens_per_s"], bool) and 0 < r["tokens_per_s"] < 1e15]
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
    for samples, prompt_len, steps in recs:
        f_rec += recording_flops(model, samples, prompt_len, steps)
        n_rec += 1
        n_win += samples * max(0, prompt_len - 1 + steps - cfg.block_size)
    rows.append(make_row(f"budget recordings: {n_rec} files, {n_win} window forwards past the context",
                         seconds.get("record"), "s", baseline=f_rec / peak32,
                         notes=f"{f_rec:.2e} FLOP at the fp32 peak {peak32 / 1e9:.0f} GFLOP/s"))

    # spelling sampling (+ statistics, not separable in the stage timing)
    f_sp, n_sp = 0.0, 0
    for samples, length in spell:
        f_sp += sampling_flops(model, samples, length)
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
