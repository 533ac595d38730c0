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
* waves, spelling statistics, calibration, summary, report: numpy/scipy work on the recorded values
  and counts, no FLOP limit is given (their measured time is listed).

The last row is the whole run against the sum of those limits (:func:`end_to_end`).

Measured times: the last ``reproduce`` invocation's stage timings plus those of earlier invocations
(``timings_history``). Training is also given at the run's median logged rate (``metrics.jsonl``:
steps only, evaluations excluded), which is what an uninterrupted run on a quiet machine pays when
the training was split over several invocations or ran under load.

The same numbers as data: :func:`budget` returns them as one JSON object (``budget.json`` of a
published run, docs/outputs.md), :func:`budget_rows` turns that object into the rows this bench
prints, so the printed table and the published file cannot disagree.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .common import cached_token_flops, check, log, make_row, matmul_peak, train_flops_per_token, window_forward_flops

BUDGET_FORMAT = "gptwaves-budget"
BUDGET_VERSION = 1
#: Matmul peak sizes: an ``n``-cubed ``torch.mm``, median of ``repeats`` (``--quick``: n 512).
PEAK_N = 2048
PEAK_N_QUICK = 512
PEAK_REPEATS = 7
#: Stages with a FLOP limit, in the order they run; every other timed stage is listed after them.
COUNTED = ("train", "record", "spelling")
#: Target of the whole run against its limit (:func:`end_to_end`): at most this many times it.
E2E_TARGET = 1.5


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


def _is_suite(reproduce: dict) -> bool:
    """Whether a reproduce record is a Hugging Face suite's (`reproduce --hf-model`)."""
    return isinstance(reproduce.get("hf"), dict)


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
    if not (run_dir / "reproduce.json").exists():
        raise GptwavesError(f"{run_dir} has no reproduce.json: not a run made by `gptwaves reproduce` "
                            "(its stage times are what the budget is about)")
    rec = checks.read_checked(run_dir / "reproduce.json", "reproduce record", checks.reproduce_file)
    if _is_suite(rec):
        return run_dir  # a Hugging Face suite: its revisions are not gptwaves checkpoints
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


def sampling_cache_bytes(model, samples: int, length: int) -> float:
    """Bytes of keys and values (fp32) read from the key/value cache while sampling ``samples`` texts of
    ``length`` characters: every step reads the whole cache so far, as `sampling_flops` counts its contexts."""
    c = model.config
    steps = min(length, c.block_size)
    return samples * 2.0 * c.n_layer * c.n_embd * 4 * steps * (steps + 1) / 2


def _timed(t) -> dict[str, float]:
    return {k: float(v) for k, v in (t if isinstance(t, dict) else {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def invocations(reproduce: dict) -> list[dict[str, float]]:
    """The stage timings of every ``reproduce`` invocation of the run, earliest first (the last
    invocation's ``timings`` after its ``timings_history``); ``total`` kept where recorded."""
    return [_timed(t) for t in [*(reproduce.get("timings_history") or []), reproduce.get("timings") or {}]]


def stage_seconds(reproduce: dict) -> dict[str, float]:
    """Seconds per stage over every ``reproduce`` invocation of the run."""
    out: dict[str, float] = {}
    for t in invocations(reproduce):
        for k, v in t.items():
            if k != "total":
                out[k] = out.get(k, 0.0) + v
    return out


# ------------------------------------------------------------------------------ matmul peaks


def measure_peaks(n: int = PEAK_N, repeats: int = PEAK_REPEATS) -> dict:
    """The fp32 and bf16 matmul peaks measured now (GFLOP/s, median of ``repeats`` ``n``-cubed
    ``torch.mm``), as recorded in ``budget.json``."""
    import torch

    from ..errors import GptwavesError

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 16384:
        raise GptwavesError(f"the matmul peak size must be an integer in [1, 16384], not {n!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 1000:
        raise GptwavesError(f"the matmul peak repeats must be an integer in [1, 1000], not {repeats!r}")
    log(f"budget: matmul peaks ({n}^3, median of {repeats})")
    return {"status": "measured", "n": n, "repeats": repeats,
            "fp32_gflops": matmul_peak(torch.float32, n, repeats),
            "bf16_gflops": matmul_peak(torch.bfloat16, n, repeats)}


def given_peaks(fp32_gflops: float, bf16_gflops: float) -> dict:
    """Peaks measured elsewhere (e.g. by an earlier ``gptwaves bench``), as recorded in ``budget.json``."""
    import math

    from ..errors import GptwavesError

    for name, g in (("fp32", fp32_gflops), ("bf16", bf16_gflops)):
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not (math.isfinite(g) and 0 < g <= 1e9):
            raise GptwavesError(f"the given {name} matmul peak must be a number of GFLOP/s in (0, 1e9], not {g!r}")
    return {"status": "given", "n": None, "repeats": None, "fp32_gflops": float(fp32_gflops),
            "bf16_gflops": float(bf16_gflops)}


NO_PEAKS = {"status": "absent", "n": None, "repeats": None, "fp32_gflops": None, "bf16_gflops": None}


# ------------------------------------------------------------------------------ the budget as data


def _ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


# long: one block per counted stage, each its few lines of FLOP arithmetic, read top to bottom
def budget(run_dir: str | Path, peaks) -> dict:
    """The run's time budget as one JSON object (``budget.json``, docs/outputs.md): the machine
    that counted it, every ``reproduce`` invocation's stage times, the matmul ``peaks``
    (:func:`measure_peaks`, :func:`given_peaks` or :data:`NO_PEAKS`, or a function returning one,
    called once every file of the run has been read and checked), and per stage its FLOPs, seconds
    at the peak, measured seconds and their ratio (the gap)."""
    from ..checkpoint import list_checkpoints
    from ..errors import CorruptArtefactError
    from ..model import GPT, GPTConfig
    from ..train import read_metrics
    from .common import machine_info

    run_dir = check_run(run_dir)
    rpath = run_dir / "reproduce.json"
    rep = _read(rpath, "reproduce record")
    if _is_suite(rep):
        return _suite_budget(rep, peaks)
    cfg = GPTConfig.from_dict(list_checkpoints(run_dir / "checkpoints")[-1].meta["config"])
    tr = rep.get("train") or {}
    if not isinstance(tr, dict):
        raise CorruptArtefactError(f"{rpath}: train is not an object")
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
    rates = [r["tokens_per_s"] for r in read_metrics(run_dir)  # valid rows only (cut lines skipped)
             if r.get("kind") == "train" and isinstance(r.get("tokens_per_s"), (int, float))
             and not isinstance(r["tokens_per_s"], bool) and 0 < r["tokens_per_s"] < 1e15]
    model = GPT(cfg).eval()
    peaks = dict(peaks() if callable(peaks) else peaks)
    p32 = peaks.get("fp32_gflops")
    p16 = peaks.get("bf16_gflops")
    # bf16 autocast (or auto: bf16 where native) at the bf16 peak where it is the higher one; without
    # peaks, bf16 for a bf16 run and undecided for auto
    prec = tr.get("precision")
    bf16 = prec in ("bf16", "auto") and (p16 > p32 if p32 is not None and p16 is not None else prec == "bf16")
    seconds = stage_seconds(rep)

    def at_peak(flops: float, gflops):
        return flops / (gflops * 1e9) if gflops else None

    stages = {}
    tokens = iters * batch * cfg.block_size
    f_train = train_flops_per_token(model) * tokens
    median = statistics.median(rates) if rates else None
    t_peak = at_peak(f_train, p16 if bf16 else p32)
    at_median = tokens / median if median else None
    undecided = prec == "auto" and p32 is None  # bf16 or fp32: only the peaks tell
    stages["train"] = {"flops": f_train, "peak": None if undecided else "bf16" if bf16 else "fp32",
                       "seconds_at_peak": t_peak,
                       "seconds": seconds.get("train"), "gap": _ratio(at_median, t_peak),
                       "seconds_at_median_rate": at_median, "wall_gap": _ratio(seconds.get("train"), t_peak),
                       "iterations": iters, "tokens": tokens, "median_tokens_per_s": median,
                       "logged_rates": len(rates), "precision": tr.get("precision")}
    f_rec, n_win = 0.0, 0
    for samples, prompt_len, steps in recs:
        f_rec += recording_flops(model, samples, prompt_len, steps)
        n_win += samples * max(0, prompt_len - 1 + steps - cfg.block_size)
    t_peak = at_peak(f_rec, p32)
    stages["record"] = {"flops": f_rec, "peak": "fp32", "seconds_at_peak": t_peak, "seconds": seconds.get("record"),
                        "gap": _ratio(seconds.get("record"), t_peak), "files": len(recs), "window_forwards": n_win}
    f_sp = sum(sampling_flops(model, samples, length) for samples, length in spell)
    t_peak = at_peak(f_sp, p32)
    stages["spelling"] = {"flops": f_sp, "peak": "fp32", "seconds_at_peak": t_peak,
                          "seconds": seconds.get("spelling"), "gap": _ratio(seconds.get("spelling"), t_peak),
                          "checkpoints": len(spell)}
    for k, v in seconds.items():
        if k not in stages:
            stages[k] = {"flops": None, "peak": None, "seconds_at_peak": None, "seconds": v, "gap": None}
    return {"format": BUDGET_FORMAT, "format_version": BUDGET_VERSION, "machine": machine_info(),
            "invocations": invocations(rep), "peaks": peaks, "stages": stages,
            "total": {"seconds": sum(seconds.values()), "invocations": len(invocations(rep))}}


def _suite_budget(rep: dict, peaks) -> dict:
    """The time budget of a Hugging Face suite: its stage times and the machine; no FLOPs (the
    models are not gptwaves models, their cost per token is not counted here), so no gaps."""
    from .common import machine_info

    peaks = dict(peaks() if callable(peaks) else peaks)
    seconds = stage_seconds(rep)
    stages = {k: {"flops": None, "peak": None, "seconds_at_peak": None, "seconds": v, "gap": None}
              for k, v in seconds.items()}
    return {"format": BUDGET_FORMAT, "format_version": BUDGET_VERSION, "machine": machine_info(),
            "invocations": invocations(rep), "peaks": peaks, "stages": stages,
            "total": {"seconds": sum(seconds.values()), "invocations": len(invocations(rep))},
            "suite": True}


def end_to_end(b: dict) -> dict:
    """The whole run against its limit, from a :func:`budget` object (docs/method.md, Publishing results).

    Measured: training at the run's median logged rate (its wall time where no rate was logged)
    plus every other stage's measured seconds. Limit: the counted stages (training, recordings,
    spelling sampling) at their matmul peaks; the numpy/scipy stages have no FLOP limit, so all of
    their time is gap. A counted stage measured below its own limit cannot have been computed in
    that time: its work was reused from an invocation whose time is not on record, and the run's
    end-to-end time is then unknown (``incomplete`` names those stages; no gap is given).

    Returns
    -------
    dict
        ``seconds`` (measured), ``seconds_at_peak`` (the limit), ``gap`` (their ratio, None where
        the peaks are absent or the record is incomplete) and ``incomplete`` (stage names)."""
    seconds, limit, incomplete = 0.0, 0.0, []
    for k, v in (b.get("stages") or {}).items():
        t = v.get("seconds_at_median_rate") or v.get("seconds")  # only training has a logged rate
        seconds += t or 0.0
        if k in COUNTED and v.get("flops"):
            at = v.get("seconds_at_peak")
            limit = None if at is None or limit is None else limit + at
            if at is not None and (t is None or t < at):
                incomplete.append(k)
    gap = None if incomplete or not limit else seconds / limit
    return {"seconds": seconds, "seconds_at_peak": limit, "gap": gap, "incomplete": incomplete}


def _e2e_row(b: dict) -> dict:
    e = end_to_end(b)
    limit = e["seconds_at_peak"]
    if (b.get("peaks") or {}).get("fp32_gflops") is None:
        why = "peaks not measured: no limit"
    elif e["incomplete"]:
        why = (f"incomplete: {', '.join(e['incomplete'])} measured below its limit (reused from an invocation "
               f"whose time is not on record), so no end-to-end gap: the {_s(e['seconds'])} s measured are a lower "
               f"bound, the limit is {_s(limit)} s")
    else:
        why = ("training at the median logged rate plus every other stage's measured time; limit: training, "
               "recordings and spelling sampling at their matmul peaks (the numpy/scipy stages have none, so all "
               "their time is gap)")
    return make_row("budget end to end against the limit", e["seconds"], "s",
                    baseline=None if e["gap"] is None else limit, ratio=e["gap"],
                    target=f"<= {E2E_TARGET}x the limit", ok=check(e["gap"], "<=", E2E_TARGET), notes=why)


def _s(v, fmt: str = ".0f") -> str:
    return "n/a" if v is None else format(v, fmt)


def budget_rows(b: dict) -> list[dict]:
    """The bench rows of a :func:`budget` object (what ``gptwaves bench budget`` prints)."""
    st, pk = b["stages"], b["peaks"]
    n = b["total"]["invocations"]
    total = make_row(f"budget total (reproduce, {n} invocation{'' if n == 1 else 's'})", b["total"]["seconds"],
                     "s", notes="training counted at its wall time here; see the training row for the median rate")
    if b.get("suite"):  # a Hugging Face suite: stage times only (its models' FLOPs are not counted)
        return [*(make_row(f"budget {k}", v.get("seconds"), "s", notes="a Hugging Face suite: no FLOP limit")
                  for k, v in st.items()), total]
    absent = pk.get("fp32_gflops") is None
    peak_note = " (peaks not measured: no limit)" if absent else ""
    tr = st["train"]
    g = pk.get(f"{tr['peak']}_gflops") if tr["peak"] else None
    rows = [make_row(f"budget training: {tr['iterations']} iterations x {tr['tokens'] // max(tr['iterations'], 1)} "
                     f"tokens, at the run's median rate", tr["seconds_at_median_rate"], "s",
                     baseline=tr["seconds_at_peak"], ratio=tr["gap"],
                     notes=f"{tr['flops']:.2e} FLOP at the {tr['peak'] or 'bf16 or fp32'} peak {_s(g)} "
                           f"GFLOP/s{peak_note}; median "
                           f"of {tr['logged_rates']} logged rates ({_s(tr['median_tokens_per_s'])} tok/s), "
                           f"evaluations excluded; reproduce's wall time over its invocations "
                           f"{_s(tr['seconds'])} s")]
    rec = st["record"]
    rows.append(make_row(f"budget recordings: {rec['files']} files, {rec['window_forwards']} window forwards past "
                         f"the context", rec["seconds"], "s", baseline=rec["seconds_at_peak"], ratio=rec["gap"],
                         notes=f"{rec['flops']:.2e} FLOP at the fp32 peak {_s(pk.get('fp32_gflops'))} "
                               f"GFLOP/s{peak_note}"))
    sp = st["spelling"]
    rows.append(make_row(f"budget spelling: {sp['checkpoints']} checkpoints, sampling + statistics", sp["seconds"],
                         "s", baseline=sp["seconds_at_peak"], ratio=sp["gap"],
                         notes=f"{sp['flops']:.2e} FLOP of sampling at the fp32 peak{peak_note}; the statistics "
                               f"(permutation nulls) are in the measured time, not in the limit"))
    for k in ("waves", *[k for k in st if k not in (*COUNTED, "waves", "summary", "report")], "summary", "report"):
        rows.append(make_row(f"budget {k}", (st.get(k) or {}).get("seconds"), "s",
                             notes="numpy/scipy on recorded values; no FLOP limit"))
    rows += [total, _e2e_row(b)]
    return rows


def run(quick: bool = False, corpus=None, *, run_dir: str | Path | None = None,
        peak_n: int | None = None) -> list[dict]:
    """Rows: per stage, measured seconds against the seconds at the matmul peak (the gap)."""
    if run_dir is None:
        return [make_row("budget: skipped", None, "", notes="needs a finished run: gptwaves bench budget --run DIR")]
    b = budget(run_dir, lambda: measure_peaks(peak_n or (PEAK_N_QUICK if quick else PEAK_N)))
    return budget_rows(b)
