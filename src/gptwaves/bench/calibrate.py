"""Bench ``calibrate``: the cost of `gptwaves calibrate` at the paper run's sizes, as a ratio to
the analysis time of one checkpoint.

No paper run directory is needed: the templates the calibration simulates are built in memory at
paper sizes (spelling: 14 checkpoints x 1000 samples x 112 counted characters, error rate falling
from 0.92 to 0.057 with word length mattering; coherence: 14 checkpoints x 64 samples x 500 steps x
192 channels, AR(1) coefficients 0.3-0.95), exactly what `stages.calibration` builds from a run's
files. A few replicates of each engine are timed and the full calibration is projected from them
(replicates are independent and equally costly). Baselines: the spelling stage's statistics of one
checkpoint (`analyze_words` with its permutation nulls and BCa CIs) and the waves stage's analysis
of one tap of one checkpoint (`analyze_tap`).
"""

from __future__ import annotations

import time

import numpy as np

from .common import log, make_row

PAPER_ITERS = (0, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000)


def spelling_tables(n_samples: int = 1000, length: int = 112, iterations=PAPER_ITERS, seed: int = 0) -> list[dict]:
    """Word tables like a paper run's: word lengths 1-10 (mean about 4), a space between words,
    error rate falling from 0.92 to 0.057 in log(1 + iteration), longer words more often wrong."""
    rng = np.random.default_rng(seed)
    lt = np.log1p(np.asarray(iterations, float))
    rates = 0.92 * (0.057 / 0.92) ** ((lt - lt[0]) / (lt[-1] - lt[0]))
    out = []
    for it, rate in zip(iterations, rates):
        lens = np.minimum(rng.geometric(0.25, size=(n_samples, length)), 10)
        S, St, Ln = [], [], []
        for s in range(n_samples):
            pos, j = int(rng.integers(0, 4)), 0
            while pos < length:
                n = int(lens[s, j])
                S.append(s)
                St.append(pos)
                Ln.append(n)
                pos += n + 1
                j += 1
        Ln = np.asarray(Ln)
        logit = np.log(rate / (1 - rate)) + 0.15 * (Ln - 4)
        p = 1 / (1 + np.exp(-logit))
        out.append({"iteration": int(it), "word_sample": np.asarray(S), "word_start": np.asarray(St),
                    "word_len": Ln, "word_mis": rng.random(Ln.size) < p, "n_samples": n_samples, "length": length})
    return out


def waves_checkpoints(S: int = 64, T: int = 500, C: int = 192, iterations=PAPER_ITERS, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    alphabet = np.array(list("etaoinshrdlu   \n,."))
    out = []
    for it in iterations:
        chars = rng.choice(alphabet, size=(S, T))
        nxt = np.concatenate([chars[:, 1:], rng.choice(alphabet, size=(S, 1))], axis=1)
        phi = {"blocks.5.hook_resid_post": rng.uniform(0.3, 0.95, C), "hook_embed": rng.uniform(0.0, 0.3, C)}
        out.append({"iteration": int(it), "shape": [S, T, C], "phi": phi, "chars": chars, "next_chars": nxt,
                    "mask": np.ones((S, T), bool)})
    return out


def _started(pool) -> float:
    """Seconds until every worker of ``pool`` has started, received its context and imported the
    calibration's modules (paid once per calibration; not part of the per-replicate time, which
    the few replicates timed would otherwise carry: about a second per worker)."""
    t0 = time.perf_counter()
    seen: set = set()
    for _ in range(20):  # until every worker has taken one (a worker still starting may miss a round)
        seen |= set(pool.map(_imported, [()] * pool.workers))
        if len(seen) >= pool.workers:
            break
    return time.perf_counter() - t0


def _imported() -> int:
    """Import what a calibration job imports (in a worker) and give the worker's process id, after a
    moment in which the other workers can take the other jobs."""
    import os

    import sklearn.model_selection  # noqa: F401  (the space probe's folds, imported at its first use)

    from ..analysis import calibration_waves, probe, spelling  # noqa: F401
    from ..stages import calibration, calibration_coherence  # noqa: F401

    time.sleep(0.2)
    return os.getpid()


def _time_spelling(tpl: dict, settings, shared, scens, R: int) -> tuple[float, float, bool]:
    """Seconds per replicate of the spelling scenarios ``scens`` (``R`` each) run as the stage runs
    them (chunks side by side in worker processes where it would), the workers' start, and whether
    they ran in workers."""
    from ..stages import calibration as cs

    words = sum(int(np.size(ck["word_sample"])) for ck in tpl["checkpoints"])
    n_all = settings.replicates * len(cs.SPELLING_SCENARIOS)
    if cs.cores() > 1 and words * n_all >= cs.SPELLING_PROCESS_MIN:
        log(f"calibrate: spelling, {', '.join(scens)}, {R} replicates each, {cs.cores()} worker processes")
        jobs = [(scen, r0, min(R, r0 + settings.chunk)) for scen in scens for r0 in range(0, R, settings.chunk)]
        with cs.WorkerPool({"tpl": tpl, "settings": settings}, cs.cores()) as pool:
            t_start = _started(pool)
            t0 = time.perf_counter()
            pool.map(cs.spelling_job, [(*job, shared) for job in jobs])
            return (time.perf_counter() - t0) / (R * len(scens)), t_start, True
    per = []
    for scen in scens:
        log(f"calibrate: spelling, {scen}, {R} replicates")
        t0 = time.perf_counter()
        cs.spelling_chunk(tpl, scen, 0, R, settings, shared)
        per.append((time.perf_counter() - t0) / R)
    return float(np.mean(per)), 0.0, False


def _time_coherence(wtpl: dict, settings, replicates: int) -> tuple[float, float, int, int]:
    """The coherence scenarios as the stage runs them: (seconds of the shared nulls and the workers'
    start, seconds per replicate of all scenarios, workers, replicates timed: whole batches)."""
    from ..stages import calibration as cs

    scens = list(cs.COHERENCE_SCENARIOS)  # every scenario, sharing the base draws and the taps of equal truth
    todo = {sc: {"n": settings.coherence_replicates, "verdicts": []} for sc in scens}
    workers = cs.cores() if cs._use_processes(wtpl, todo) else 1
    n_rep = -(-int(replicates) // workers) * workers
    if workers > 1:
        with cs.WorkerPool({"tpl": wtpl, "settings": settings}, workers) as pool:
            t_nulls = _started(pool)
            t0 = time.perf_counter()
            nulls = cs.CoherenceNulls(wtpl, settings, pool)
            t_nulls += time.perf_counter() - t0
            log(f"calibrate: coherence (fast), {n_rep} replicate(s) of all scenarios, {workers} worker processes")
            t0 = time.perf_counter()
            pool.map(cs.replicate_job, [(scens, r, nulls) for r in range(n_rep)])
            return t_nulls, (time.perf_counter() - t0) / n_rep, workers, n_rep
    t0 = time.perf_counter()
    nulls = cs.CoherenceNulls(wtpl, settings)
    t_nulls = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r in range(n_rep):
        log(f"calibrate: coherence (fast), replicate {r + 1} of {n_rep}, all scenarios")
        cs.replicate_fast(wtpl, scens, r, settings, nulls)
    return t_nulls, (time.perf_counter() - t0) / n_rep, 1, n_rep


def run(quick: bool = False, corpus=None, *, n_samples: int | None = None, steps: int | None = None,
        channels: int | None = None, spelling_replicates: int | None = None, coherence_replicates: int = 1,
        iterations=None) -> list[dict]:
    """Rows: projected seconds of the spelling and coherence calibrations at paper sizes (``quick``:
    200 samples, 16 x 96 x 32 recordings, 4 checkpoints), each against one checkpoint's analysis."""
    from ..analysis import spelling as sp
    from ..analysis import waves as wv
    from ..stages import calibration as cs
    from ..stages.waves import WavesSettings

    its = tuple(iterations or ((0, 100, 1000, 5000) if quick else PAPER_ITERS))
    N = n_samples or (200 if quick else 1000)
    S, T, C = (16, 96, 32) if quick else (64, 500, 192)
    T, C = steps or T, channels or C
    R = spelling_replicates or (10 if quick else 20)
    settings = cs.CalibrationSettings()
    n_sc_s, n_sc_c = len(cs.SPELLING_SCENARIOS), len(cs.COHERENCE_SCENARIOS)

    log(f"calibrate: building spelling tables ({len(its)} x {N})")
    tpl = cs.make_spelling_template(spelling_tables(N, iterations=its), n_boot=2000, n_perm=1000)
    last = tpl["checkpoints"][-1]
    t0 = time.perf_counter()
    sp.analyze_words(last["word_sample"], last["word_start"], last["word_len"], np.asarray(spelling_tables(
        N, iterations=its)[-1]["word_mis"]), N, last["length"], n_boot=2000, n_perm=1000, seed=0)
    t_ck = time.perf_counter() - t0
    log("calibrate: shared permutation nulls")
    t0 = time.perf_counter()
    shared = cs._shared_nulls(tpl, settings)
    t_shared = time.perf_counter() - t0
    scens = ("independent", "markov 1 rise", "refractory 0.5 rise")
    t_rep, t_start_s, pooled = _time_spelling(tpl, settings, shared, scens, R)
    t_shared += t_start_s  # the workers' start: once per calibration
    per = dict.fromkeys(scens)
    proj_s = t_shared + t_rep * settings.replicates * n_sc_s
    rows = [make_row(f"calibrate: spelling rules, {len(its)} checkpoints x {N} samples, {n_sc_s} scenarios x "
                     f"{settings.replicates} replicates (projected)", proj_s, "s", baseline=t_ck,
                     target=None if quick else "<= 600 s (with coherence)",
                     notes=f"fast engine; {t_rep:.3f} s per replicate (mean over {', '.join(per)}; {R} each"
                           f"{f', {cs.cores()} worker processes, wall time' if pooled else ''}), shared "
                           f"nulls{' and worker start' if pooled else ''} "
                           f"{t_shared:.1f} s; baseline: the spelling stage's statistics of one checkpoint "
                           f"(n_perm 1000, n_boot 2000), {t_ck:.2f} s")]

    log(f"calibrate: coherence, {coherence_replicates} replicate(s) at {S} x {T} x {C}")
    wtpl = cs.make_waves_template(waves_checkpoints(S, T, C, iterations=its), "blocks.5.hook_resid_post",
                                  "hook_embed", WavesSettings().to_dict())
    ck = wtpl["checkpoints"][-1]
    from ..analysis import calibration as ca

    x = ca.ar1_waves(S, T, ck["phi"]["blocks.5.hook_resid_post"], np.random.default_rng(0))
    t0 = time.perf_counter()
    wv.analyze_tap(x, ck["chars"], ck["next_chars"], mask=ck["mask"], **WavesSettings().to_dict())
    t_tap = time.perf_counter() - t0
    t_nulls, t_crep, workers, coherence_replicates = _time_coherence(wtpl, settings, coherence_replicates)
    proj_c = t_nulls + t_crep * settings.coherence_replicates
    # the exact engine analyses every distinct tap in full: projected from the baseline tap analysis
    distinct = len({(k, t) for scen in cs.COHERENCE_SCENARIOS for k, t in cs.coherence_truths(wtpl, scen).items()})
    proj_exact = t_tap * distinct * settings.coherence_replicates
    rows.append(make_row(f"calibrate: coherence rules, {len(its)} checkpoints x {S} x {T} x {C}, {n_sc_c} scenarios x "
                         f"{settings.coherence_replicates} replicates (projected)", proj_c, "s", baseline=t_tap,
                         target="reported",
                         notes=f"fast engine: shared nulls{' and worker start' if workers > 1 else ''} {t_nulls:.1f} s, "
                               f"{t_crep:.1f} s per replicate of all {n_sc_c} scenarios ({coherence_replicates} timed"
                               f"{f', {workers} worker processes, wall time' if workers > 1 else ''}); the exact engine "
                               f"would take about "
                               f"{proj_exact:.0f} s ({distinct} distinct full tap analyses per replicate); "
                               f"baseline: one tap of one checkpoint (analyze_tap with the waves stage's settings), "
                               f"{t_tap:.2f} s"))
    total = proj_s + proj_c
    rows.append(make_row("calibrate: whole calibration at these sizes (projected)", total, "s",
                         target=None if quick else "<= 600 s", ok=None if quick else bool(total <= 600),
                         notes=f"spelling {proj_s:.0f} s + coherence {proj_c:.0f} s"))
    return rows
