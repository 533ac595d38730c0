"""Where the time of one step goes: ``gptwaves bench profile``.

:mod:`torch.profiler` on the ``paper`` model (random initial weights: speed does not depend on
training), three steps a run repeats thousands of times:

``train``
    One training iteration exactly as :func:`gptwaves.train.train` runs it (64 x 128 characters,
    the preset's resolved precision under :func:`gptwaves.train.autocast_ctx`, the dropout masks
    of a new run (:data:`gptwaves.train.NEW_RUN_DROPOUT_MASKS`), forward, backward,
    gradient clipping, fused AdamW step, ``zero_grad``).
``record``
    Recording steps past the context with every tap: :func:`gptwaves.sample.generate` after a
    prompt that fills the 128-character window, so each step is one uncached window forward of 64
    samples plus the copies of the taps to numpy (the prompt's own forward is in the profile too,
    about one step's worth).
``sample``
    Spelling sampling inside the context: :func:`gptwaves.sample.generate` without taps, 250
    samples (the spelling stage's batch), one cached token per step.

Figures: the median wall time of one step (``repeats`` profiled runs after a warm-up), the share of
the profiled CPU time spent in the matrix products (``aten::mm``/``addmm``/``bmm``/``baddbmm``, the
oneDNN ``linear``/``matmul`` kernels, fused attention), and the top operators by their own
(exclusive) CPU time, each as a share. ``--quick`` shrinks the sizes for a smoke check (the
figures are then not the paper's). Times taken while another process shares the cores are not
speed figures; the shares are less sensitive to load.
"""

from __future__ import annotations

import statistics
import time

import torch

from .common import log, make_model, make_row, paper_train_config

#: Operators counted as matrix products (the work with a FLOP limit; everything else is overhead
#: a faster implementation could remove).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product",
              "aten::_flash_attention", "mkldnn", "onednn", "aten::linear_backward")
#: Operators that only call others: their own time is bookkeeping, they are left out of the top list
#: only if they hold no exclusive time worth listing.
TOP = 8


def is_matmul(name: str) -> bool:
    """Whether profiler operator ``name`` is a matrix product (see :data:`MATMUL_OPS`)."""
    return any(name.startswith(p) or p in name for p in MATMUL_OPS)


def profile_step(fn, repeats: int = 3, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times, then ``repeats`` times under :mod:`torch.profiler`.

    Returns ``seconds`` (median wall time of one call, profiled), ``matmul_share`` (share of the
    summed exclusive CPU time in :func:`is_matmul` operators) and ``top`` (name, share, calls per
    step) of the operators with the largest exclusive CPU time.
    """
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        fn()
    walls = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            walls.append(time.perf_counter() - t0)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return {"seconds": statistics.median(walls),
            "matmul_share": sum(e.self_cpu_time_total for e in events if is_matmul(e.key)) / total,
            "top": [(e.key, e.self_cpu_time_total / total, e.count / repeats) for e in events[:TOP]]}


def _train_step(quick: bool):
    from ..runtime import resolve_precision
    from ..train import NEW_RUN_DROPOUT_MASKS, autocast_ctx, make_optimizer

    cfg = paper_train_config(**({"n_layer": 2, "n_embd": 48, "n_head": 2, "batch_size": 8, "block_size": 32}
                                if quick else {}))
    model, device = make_model(cfg).set_dropout_masks(NEW_RUN_DROPOUT_MASKS), torch.device("cpu")
    model.train()
    opt = make_optimizer(model, cfg, device)
    g = torch.Generator().manual_seed(0)
    V = model.config.vocab_size
    x = torch.randint(V, (cfg.batch_size, cfg.block_size), generator=g)
    y = torch.randint(V, (cfg.batch_size, cfg.block_size), generator=g)

    def step():
        with autocast_ctx(cfg, device):
            _, loss, _ = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, f"batch {cfg.batch_size} x {cfg.block_size}, {resolve_precision(cfg.precision, device)}"


def _generate_step(quick: bool, record: bool):
    from ..sample import SamplingConfig, generate

    cfg = paper_train_config(**({"n_layer": 2, "n_embd": 48, "n_head": 2, "block_size": 32} if quick else {}))
    model = make_model(cfg).eval()
    bs = model.config.block_size
    if record:
        batch, steps = (8, 3) if quick else (64, 9)
        prompt = list(torch.randint(model.config.vocab_size, (bs,), generator=torch.Generator().manual_seed(0)))
        prompt = [int(i) for i in prompt]
        taps = tuple(model.tap_names)
    else:
        batch, steps = (16, 8) if quick else (250, 64)
        prompt, taps = [1], ()
    sampling = SamplingConfig(seed=0)

    def step():
        generate(model, prompt, steps, batch, sampling, taps=taps, generator=torch.Generator().manual_seed(0))

    what = (f"{batch} samples, {steps} steps after a {bs}-character prompt, {len(taps)} taps" if record
            else f"{batch} samples, {steps} cached steps, no taps")
    return step, steps, what


def run(quick: bool = False, corpus=None, *, repeats: int | None = None) -> list[dict]:
    """Rows: per profiled step its median time, its matrix-product share and its top operators."""
    repeats = repeats or (2 if quick else 3)
    rows = []
    for name in ("train", "record", "sample"):
        log(f"profile: {name}")
        if name == "train":
            fn, what = _train_step(quick)
            per = 1
        else:
            fn, per, what = _generate_step(quick, record=name == "record")
        res = profile_step(fn, repeats=repeats)
        rows.append(make_row(f"profile {name}: time per step", res["seconds"] / per * 1e3, "ms",
                             notes=f"{what}; median of {repeats} profiled runs"
                                   + ("" if name == "train" else f" / {per} steps")))
        rows.append(make_row(f"profile {name}: matrix-product share", 100 * res["matmul_share"], "%",
                             notes="exclusive CPU time in matmul kernels / all exclusive CPU time"))
        for op, share, calls in res["top"]:
            rows.append(make_row(f"profile {name}: {op}", 100 * share, "%",
                                 notes=f"{calls:g} calls per run; {'matmul' if is_matmul(op) else 'overhead'}"))
    return rows
