"""Recording speed and memory on the ``paper`` model, all taps.

What is measured (random-init paper-size model: speed does not depend on training; prompt "\\n")
------------------------------------------------------------------------------------------------
(i) ``S`` samples x ``steps_in`` steps (default 64 x 128: every step inside the context) and
(ii) ``S`` x ``steps_long`` steps (default 64 x 500: crop beyond the context), tokens/s
(generated characters per second) of

(a) recording end to end: :func:`gptwaves.record.record` with all taps, HDF5 file included;
(b) plain sampling: :func:`gptwaves.sample.generate` with ``taps=()``;
(c) the naive reference :func:`gptwaves.sample.naive_generate` (a full forward of the whole
    context every step, the way minGPT generates).

Targets, as ratios in one run: (i) (a)/(c) >= 5; (a)/(b) >= 0.85 in both (a within 15% of b);
(ii) the full-window steps (past the context, one uncached forward of the 128-character window
for all samples at once) run within :data:`RECORD_LIMIT_GAP` (1.2x) of the fp32 matmul peak
measured in the same run, i.e. at >= 83% of it (it was >= 50% before recordings were asked to come
within 1.2x of their limit). That
rate is the FLOPs of one window forward (2 x block weights x tokens + attention, see
:func:`gptwaves.bench.common.window_forward_flops`) over the median interval between successive
full-window forwards during recording (store and sampling included), timed by forward hooks.

Also: peak resident memory of a whole recording process for S = 64 and S = 512 (fresh
Python processes, ``VmHWM``; ``mem_steps`` steps each), and the speed of ``context="stride=64"`` in
(ii) against crop.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .common import (
    check,
    log,
    make_model,
    make_row,
    matmul_peak,
    median,
    paper_train_config,
    synthetic_vocab,
    time_repeats,
    window_forward_flops,
)

REDUCED = "; reduced sizes: target not applied"
#: Recordings past the context within this factor of their fp32 matmul limit (the target of
#: ``bench budget``'s recordings row, applied here to the window forwards that make it up).
RECORD_LIMIT_GAP = 1.2


def _spec(samples: int, steps: int, taps, context: str = "crop", batch_size: int = 64):
    from ..record import RecordSpec
    from ..sample import SamplingConfig

    return RecordSpec(samples=samples, steps=steps, prompt="\n", taps=tuple(taps),
                      sampling=SamplingConfig(seed=0, context=context), batch_size=batch_size)


def _meta(model) -> dict:
    return {"iteration": 0, "weights_sha256": "bench-random-init", "config": model.config.to_dict()}


class WindowTimer:
    """Forward hooks recording when each full-window forward (T == block_size) starts and ends."""

    def __init__(self, model):
        self.bs = model.config.block_size
        self.starts: list[float] = []
        self.ends: list[float] = []
        self._h = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _pre(self, module, args):
        if args and args[0].shape[1] == self.bs:
            self.starts.append(time.perf_counter())

    def _post(self, module, args, out):
        if args and args[0].shape[1] == self.bs:
            self.ends.append(time.perf_counter())

    def remove(self) -> None:
        for h in self._h:
            h.remove()

    def step_interval(self) -> float | None:
        """Median time between successive full-window forward starts (one full generation step)."""
        d = [b - a for a, b in zip(self.starts, self.starts[1:])]
        return median(d) if d else None

    def forward_time(self) -> float | None:
        d = [b - a for a, b in zip(self.starts, self.ends)]
        return median(d) if d else None


def _record_once(model, vocab, samples, steps, taps, tmp: Path, tag: str, context: str = "crop") -> float:
    from ..record import record

    out = tmp / f"{tag}.h5"
    t0 = time.perf_counter()
    record(model, _meta(model), vocab, _spec(samples, steps, taps, context), out, progress=False)
    dt = time.perf_counter() - t0
    for p in (out, out.with_suffix(".json")):
        p.unlink(missing_ok=True)
    return dt


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    ``VmHWM`` of /proc/self/status where available: unlike ``ru_maxrss`` it is not inherited from
    the parent's memory image at fork/exec, so a small child of a big parent reads true.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(model_overrides: dict, samples: int, steps: int, batch_size: int) -> dict:
    """Run in a fresh process: build the model, record, return peak RSS (MiB)."""
    from ..record import record

    model = make_model(paper_train_config(**model_overrides)).eval()
    rss_model = peak_rss_mib()
    vocab = synthetic_vocab(model.config.vocab_size)
    with tempfile.TemporaryDirectory(prefix="gptwaves-bench-mem-") as d:
        out = Path(d) / "rec.h5"
        record(model, _meta(model), vocab, _spec(samples, steps, model.tap_names, batch_size=batch_size),
               out, progress=False)
        size = out.stat().st_size / 2**20
    return {"peak_mib": peak_rss_mib(), "after_model_mib": rss_model, "file_mib": size}


def peak_memory(model_overrides: dict, samples: int, steps: int, batch_size: int = 64) -> dict:
    """Peak RSS of a fresh Python process recording ``samples`` x ``steps`` (all taps)."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from gptwaves.bench.record import _memory_child; "
            "print(json.dumps(_memory_child(*json.loads(sys.argv[1]))))")
    arg = json.dumps([model_overrides, samples, steps, batch_size])
    p = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"memory probe failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def newest_only_row(model, S: int, taps, repeats: int = 15) -> dict:
    """Window forward past the context (``S`` windows of ``block_size``, all taps, newest position
    kept) with the last block run for the newest position only, against the whole last block.

    The two are timed alternately (``repeats`` pairs, medians), so load affects both alike; the
    largest difference of any tap or logit between them is reported (exactness: <= 1e-5).
    """
    bs = model.config.block_size
    idx = torch.randint(model.config.vocab_size, (S, bs), generator=torch.Generator().manual_seed(0))

    def fwd():
        return model(idx, taps=taps, tap_positions=slice(-1, None), logits_last_only=True)

    fast, full, diff = [], [], 0.0
    with torch.no_grad():
        try:
            for i in range(repeats + 1):  # the first pair warms up
                for flag, out in ((True, fast), (False, full)):
                    model.newest_only_last_block = flag  # this model only (instance attribute)
                    t0 = time.perf_counter()
                    logits, _, tv = fwd()
                    dt = time.perf_counter() - t0
                    if i:
                        out.append(dt)
                    elif flag:
                        ref = {"logits": logits, **tv}
                    else:
                        diff = max(float((ref[k] - v).abs().max()) for k, v in {"logits": logits, **tv}.items())
        finally:
            del model.newest_only_last_block  # back to the class default
    return make_row(f"record (ii) window forward {S}x{bs}, last block for the newest position only vs whole",
                    S / median(fast), "windows/s", baseline=S / median(full),
                    notes=f"medians of {repeats} alternating pairs; largest difference of any tap or logit "
                          f"{diff:.1e} (exact to float rounding)")


def inplace_gelu_row(model, S: int, taps, repeats: int = 15) -> dict:
    """Window forward past the context (as :func:`newest_only_row`) with the MLP's GELU applied in
    place (:attr:`gptwaves.model.MLP.inplace_gelu`) against out of place; alternating pairs,
    medians; the outputs must be bit-identical (largest difference reported)."""
    bs = model.config.block_size
    idx = torch.randint(model.config.vocab_size, (S, bs), generator=torch.Generator().manual_seed(0))
    mlps = [b.mlp for b in model.transformer.h]
    fast, slow, outs = [], [], {}
    with torch.no_grad():
        try:
            for i in range(repeats + 1):  # the first pair warms up
                for flag, out in ((True, fast), (False, slow)) if i % 2 else ((False, slow), (True, fast)):
                    for m in mlps:
                        m.inplace_gelu = flag  # these modules only (instance attributes)
                    t0 = time.perf_counter()
                    logits, _, tv = model(idx, taps=taps, tap_positions=slice(-1, None), logits_last_only=True)
                    dt = time.perf_counter() - t0
                    if i:
                        out.append(dt)
                    else:
                        outs[flag] = {"logits": logits, **tv}
        finally:
            for m in mlps:
                del m.inplace_gelu  # back to the class default
    diff = max(float((outs[True][k] - v).abs().max()) for k, v in outs[False].items())
    return make_row(f"record (ii) window forward {S}x{bs}, GELU in place vs out of place",
                    S / median(fast), "windows/s", baseline=S / median(slow),
                    notes=f"medians of {repeats} alternating pairs; largest difference of any tap or logit "
                          f"{diff:.1e} (bit-identical: 0)")


# long: one benchmark row after another, each a measured loop and its reference
def run(quick: bool = False, corpus=None, *, samples: int | None = None, steps_in: int | None = None,
        steps_long: int | None = None, mem_samples: tuple[int, int] | None = None,
        mem_steps: int | None = None, stride: int = 64, repeats: int | None = None,
        naive_long: bool = True, model_overrides: dict | None = None, peak_n: int | None = None) -> list[dict]:
    """Rows of recording speed (i)/(ii), full-window FLOP rate, stride speed and peak memory.

    Full: 64 x 128 (3 repeats of a and b, 1 of c) and 64 x 500 (1 each), memory for S = 64 and 512
    at 128 steps; several minutes on 2 EPYC threads (the 500-step runs are most of it).
    ``quick``: 8 samples x 32 / 160 steps, memory for S = 4 and 16 at 16 steps. ``corpus`` is
    unused (a synthetic 65-character vocabulary suffices for speed).
    """
    from ..sample import SamplingConfig, generate, naive_generate

    overrides = dict(model_overrides or {})
    S = samples or (8 if quick else 64)
    steps_in = steps_in or (32 if quick else 128)
    steps_long = steps_long or (160 if quick else 500)
    mem_samples = mem_samples or ((4, 16) if quick else (64, 512))
    mem_steps = mem_steps or (16 if quick else 128)
    repeats = repeats or (1 if quick else 3)
    peak_n = peak_n or (1024 if quick else 2048)

    model = make_model(paper_train_config(**overrides)).eval()
    bs = model.config.block_size
    taps = list(model.tap_names)
    vocab = synthetic_vocab(model.config.vocab_size)
    prompt = [vocab.index("\n")]
    samp = SamplingConfig(seed=0)
    peak = matmul_peak(torch.float32, peak_n)
    rows: list[dict] = []

    def plain(steps):
        return lambda: generate(model, prompt, steps, S, samp, taps=(), generator=torch.Generator().manual_seed(0))

    def naive(steps):
        return lambda: naive_generate(model, prompt, steps, S, samp, generator=torch.Generator().manual_seed(0))

    log("record: warm-up")
    generate(model, prompt, min(steps_in, 8), S, samp, taps=taps, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="gptwaves-bench-rec-") as d:
        tmp = Path(d)
        counter = iter(range(10**6))
        res: dict[str, dict[str, float]] = {}
        for case, steps, reps in (("i", steps_in, repeats), ("ii", steps_long, 1)):
            tok = S * steps
            log(f"record ({case}) {S} x {steps}: recording (a)")
            ta = [_record_once(model, vocab, S, steps, taps, tmp, f"a{next(counter)}") for _ in range(reps)]
            log(f"record ({case}) {S} x {steps}: plain sampling (b)")
            tb = time_repeats(plain(steps), reps, warmup=0)
            tc = None
            if case == "i" or naive_long:
                log(f"record ({case}) {S} x {steps}: naive reference (c)")
                tc = time_repeats(naive(steps), 1, warmup=0)
            res[case] = {"a": tok / median(ta), "b": tok / median(tb), "c": tok / median(tc) if tc else None}
            r = res[case]
            spec = not overrides and S == 64 and steps == (128 if case == "i" else 500)
            where = "inside the context" if steps <= bs else f"crop beyond the context ({bs})"
            if r["c"] is not None:
                ratio = r["a"] / r["c"]
                rows.append(make_row(f"record ({case}) {S}x{steps} tok/s: recording (a) vs naive (c)", r["a"],
                                     "tok/s", baseline=r["c"], target=">= 5x" if case == "i" and spec else None,
                                     ok=check(ratio, ">=", 5.0) if case == "i" and spec else None,
                                     notes=f"{where}; all {len(taps)} taps, HDF5 included; a: median of {reps}, "
                                           f"c: 1 run" + ("" if spec else REDUCED)))
            rows.append(make_row(f"record ({case}) {S}x{steps} tok/s: recording (a) vs plain sampling (b)",
                                 r["a"], "tok/s", baseline=r["b"], target=">= 0.85x" if spec else None,
                                 ok=check(r["a"] / r["b"], ">=", 0.85) if spec else None,
                                 notes=f"{where}; medians of {reps}" + ("" if spec else REDUCED)))

        # full-window FLOP rate in (ii), from the forward hooks during a recording (generation only)
        if steps_long > bs:
            log(f"record (ii) {S} x {steps_long}: full-window step rate")
            timer = WindowTimer(model)
            try:
                generate(model, prompt, steps_long, S, samp, taps=taps, generator=torch.Generator().manual_seed(0))
            finally:
                timer.remove()
            flops = window_forward_flops(model, S, bs)
            step = timer.step_interval()
            fwd = timer.forward_time()
            if step:
                rate = flops / step / 1e9
                spec = not overrides and S == 64
                rows.append(make_row(f"record (ii) full-window step rate, {S} samples batched", rate, "GFLOP/s",
                                     baseline=peak, target=f">= {1 / RECORD_LIMIT_GAP:.2f}x fp32 peak" if spec else None,
                                     ok=check(rate / peak, ">=", 1 / RECORD_LIMIT_GAP) if spec else None,
                                     notes=f"median of {len(timer.starts) - 1} step intervals (forward, taps, "
                                           f"sampling); forward alone {flops / fwd / 1e9:.1f} GFLOP/s; "
                                           f"{flops / 1e9:.1f} GFLOP per window forward" + ("" if spec else REDUCED)))
            rows.append(newest_only_row(model, S, taps, repeats=5 if quick else 15))
            rows.append(inplace_gelu_row(model, S, taps, repeats=5 if quick else 15))
            log(f"record (ii) {S} x {steps_long}: stride={stride}")
            if stride <= bs:
                ts = _record_once(model, vocab, S, steps_long, taps, tmp, "stride", context=f"stride={stride}")
                tps = S * steps_long / ts
                rows.append(make_row(f"record (ii) {S}x{steps_long} tok/s: stride={stride} vs crop", tps, "tok/s",
                                     baseline=res["ii"]["a"], notes="recording end to end, 1 run each"))

    mem = {}
    for s in mem_samples:
        log(f"record: peak memory, S = {s} x {mem_steps} steps (fresh process)")
        mem[s] = peak_memory(overrides, s, mem_steps)
    lo, hi = mem_samples
    rows.append(make_row(f"record peak RSS S={hi} vs S={lo} ({mem_steps} steps, all taps)", mem[hi]["peak_mib"],
                         "MiB", baseline=mem[lo]["peak_mib"], target="<= 1.25x (flat in S)",
                         ok=check(mem[hi]["peak_mib"] / mem[lo]["peak_mib"], "<=", 1.25),
                         notes=f"whole process incl. torch; after building the model "
                               f"{mem[hi]['after_model_mib']:.0f} MiB; files {mem[lo]['file_mib']:.1f} / "
                               f"{mem[hi]['file_mib']:.1f} MiB"))
    return rows
