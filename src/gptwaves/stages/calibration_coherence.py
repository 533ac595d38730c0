"""The fast coherence engine of the calibration (docs/method.md, Calibration, "Fast coherence
engine"): the verdicts of claims 1 and 4 on synthetic taps, computing only what the rules read.

What it leaves out, all of it unread by the verdicts (leaving it out changes no verdict):
- per scenario, only the claims it calibrates (`scenario_claims`): the coherence statistics for
  claim 1's scenarios, the space probe for claim 4's;
- the input tap only at the last checkpoint (the rules compare with it there and nowhere else);
- the jackknife of the excess only at the first and last checkpoints and at each variant's peak
  (where a rule reads a standard error or an interval); the probe's red-noise null only at the
  last checkpoint's focus tap;
- oscillations, channel labels, clustering, event-triggered averages and the probe's word-rhythm
  similarity.

What it derives instead of analysing again (equal in exact arithmetic, within float32 rounding in
floats): the raw variant of a planted-factor tap from its base's Gram and spectra plus the factor's
cross terms, the gain-normalised variant of a shared-gain tap from its base (`_from_base`), at the
checkpoints without a jackknife.

What it approximates: the sample-shuffle surrogate law of mean |R| (per checkpoint and tap) and
the probe's red-noise null (once, at the last focus tap) are drawn from an independent twin
(`CoherenceNulls`) and shared by every replicate, the law moved to each tap by the ratio of
closed-form surrogate floors; the probe's penalty search runs in float32 (the same penalties); the
waves are centred and split in float32
(`gptwaves.analysis.calibration_waves`). tests/test_calibration_coherence.py measures the agreement
with the exact engine (`calibration_truth.coherence_chunk`), which analyses every tap in full, and
docs/method.md states it.
"""

from __future__ import annotations

import numpy as np

from .calibration_plan import CLAIM_PLAN, CalibrationSettings, waves_findings
from .calibration_truth import coherence_truths, draw_tap, planted_factor, wave_settings

__all__ = ["scenario_claims", "CoherenceNulls", "coherence_chunk_fast", "replicate_fast", "replicate_job",
           "null_job", "PROCESS_MIN_ELEMENTS"]


def _defaults() -> dict:
    import inspect

    from ..analysis.waves import analyze_tap

    return {k: p.default for k, p in inspect.signature(analyze_tap).parameters.items()}


#: `analyze_tap`'s defaults, for the settings the waves stage does not set (declared there once).
_ANALYZE_TAP_DEFAULTS = _defaults()


def scenario_claims(scenario: str) -> tuple[int, ...]:
    """The coherence claims whose calibration reads ``scenario`` (as a null or as a planted effect)."""
    out = []
    for cid, plan in CLAIM_PLAN.items():
        if plan["group"] != "coherence":
            continue
        names = {s for lv in plan["nulls"].values() for s in lv} | {s for _, s in plan["effect"]["scenarios"]}
        if scenario in names:
            out.append(cid)
    return tuple(out)


class CoherenceNulls:
    """The nulls shared by every replicate of a coherence template: per checkpoint the focus tap's
    (and, at the last checkpoint, the input tap's) sample-shuffle surrogate law, drawn from an
    independent AR(1) twin with the tap's lag-1 coefficients by the waves stage's surrogate code
    (`LAW_FACTOR` times the run's number of surrogates), and the last focus tap's red-noise probe null (the run's
    number of null replicates)."""

    def __init__(self, tpl: dict, settings: CalibrationSettings, pool=None):
        cks = tpl["checkpoints"]
        last = len(cks) - 1
        jobs = [(i, ti, tap) for i, ck in enumerate(cks) for ti, tap in enumerate((tpl["focus"], tpl["input"]))
                if tap in ck["phi"] and (ti == 0 or i == last)]
        jobs.sort(key=lambda job: (job[:2] != (last, 0), job[:2]))  # the one with the probe's null first
        if pool is not None:  # a `gptwaves.workers.WorkerPool` whose context holds tpl and settings
            done = list(zip(jobs, pool.map(null_job, jobs)))
        else:
            done = _each(jobs, lambda job: _null_part(tpl, settings, *job))
        self.laws: dict = {}
        self.probe_q95, self.probe_n_null = None, 0
        for (i, ti, _), (law, probe) in done:
            self.laws[(i, ti)] = law
            if probe is not None:
                self.probe_q95, self.probe_n_null = probe["null_r2_q95"], int(np.size(probe["null_r2"]))


def _null_part(tpl: dict, settings: CalibrationSettings, i: int, ti: int, tap: str) -> tuple:
    """One checkpoint and tap of `CoherenceNulls`: (surrogate law, red-noise probe null or None)."""
    from ..analysis import calibration as ca
    from ..analysis import calibration_waves as cw
    from ..analysis.probe import space_probe

    wset = wave_settings(tpl)
    cks = tpl["checkpoints"]
    ck = cks[i]
    S, T, _ = ck["shape"]
    rng = np.random.default_rng([settings.seed, 5, i, ti])
    x = ca.ar1_waves(S, T, ck["phi"][tap], rng)
    law = cw.surrogate_law(x, ck["mask"], cw.LAW_FACTOR * int(wset["n_surrogates"]), rng)
    probe = None
    if ti == 0 and i == len(cks) - 1:
        probe = space_probe(x, ck["next_chars"], mask=ck["mask"], n_folds=wset["probe_folds"],
                            max_steps=wset["probe_max_steps"], n_null=wset["probe_null"],
                            nlags=min(int(wset["nlags"]), 32), seed=wset["seed"], rhythm=False)
    return law, probe


def null_job(i: int, ti: int, tap: str) -> tuple:
    """`_null_part` in a worker process whose context holds ``tpl`` and ``settings``."""
    from ..workers import context

    ctx = context()
    return _null_part(ctx["tpl"], ctx["settings"], i, ti, tap)


def _each(items, fn):
    """``[(item, fn(item))]`` with the checkpoints spread over one thread per core: the work is numpy,
    scipy and BLAS calls that release the GIL, each checkpoint's taps are drawn from their own seeds
    and written under their own cache keys, so the order of the work changes no number. BLAS runs on
    one thread inside each (its own threads on top of these would only contend for the same cores:
    measured 1.6x slower on 2 cores)."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    items = list(items)
    n = min(len(items), _workers())
    if n <= 1:
        return [(i, fn(i)) for i in items]
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=n) as pool:
        return list(zip(items, pool.map(fn, items)))


def _workers() -> int:
    """Threads of the fast engine: the cores this process may use (one inside a worker process)."""
    from ..workers import cores, in_worker

    return 1 if in_worker() else cores()


def _peak(values: list) -> int | None:
    """Index of the largest non-missing value, the first of equal ones (as the claim-1 rule picks it)."""
    vals = [(i, v) for i, v in enumerate(values) if v is not None]
    return max(vals, key=lambda iv: iv[1])[0] if vals else None


def coherence_chunk_fast(tpl: dict, scenario: str, r0: int, r1: int, settings: CalibrationSettings,
                         cache: dict | None, nulls: CoherenceNulls, bases: dict | None = None) -> list[dict]:
    """Verdicts of the claims `scenario_claims` names on replicates ``r0 .. r1 - 1`` of one coherence
    scenario (the module docstring says what is computed); the taps are `draw_tap`'s, as in the
    exact engine. ``cache`` (kept across calls) holds each tap's parts by (checkpoint, replicate,
    tap, truth), so scenarios that share a truth share its analysis; ``bases`` (kept across the
    scenarios of a replicate) is `draw_tap`'s, so they share the base draw too."""
    from ..analysis import calibration_waves as cw

    claims = scenario_claims(scenario)
    cks = tpl["checkpoints"]
    last = len(cks) - 1
    truths = coherence_truths(tpl, scenario)
    wset = wave_settings(tpl)
    alpha = float(wset["alpha"])
    n_ci = int(wset.get("n_ci_surrogates", _ANALYZE_TAP_DEFAULTS["n_ci_surrogates"]))
    n_sur = int(wset["n_surrogates"])
    focus, inp = tpl["focus"], tpl["input"]
    cache = {} if cache is None else cache
    out = []
    for r in range(r0, r1):
        drawn: dict = {}

        def x_of(i, ti, tap, truth):
            if (i, ti) not in drawn:
                drawn[(i, ti)] = draw_tap(cks[i], tap, truth, settings.seed, i, r, ti, bases)
            return drawn[(i, ti)]

        def part(kind, i, ti, tap):
            truth = truths[(i, ti)]
            key = (i, r, ti, truth, kind)
            if kind == "core" and i in (0, last):  # the jackknife is always read there: one pass for both
                kind, key = "jackknife", (i, r, ti, truth, "jackknife")
            if key not in cache:
                ck, x = cks[i], x_of(i, ti, tap, truth)
                pick = np.random.default_rng([settings.seed, 7, i, r, ti, *truth])  # the same in both passes
                pre = cache.setdefault((i, r, ti, truth, "pre"), {})  # observed values and floors, kept
                if kind == "core":
                    _from_base(pre, cache, bases if bases is not None else drawn, cks, settings.seed, i, r, ti,
                               tap, truth)
                    cache[key] = cw.coherence_core(x, ck["mask"], nulls.laws[(i, ti)], n_sur, alpha, pick, pre)
                elif kind == "jackknife":
                    slot = np.random.default_rng([settings.seed, 6, i, r, ti, *truth])
                    cache[key] = cw.coherence_jackknife(x, ck["mask"], nulls.laws[(i, ti)], n_sur, alpha, n_ci,
                                                        pick, slot, pre)
                else:
                    cache[key] = cw.probe_part(x, ck["next_chars"], ck["mask"], n_folds=wset["probe_folds"],
                                               max_steps=wset["probe_max_steps"], nlags=wset["nlags"],
                                               seed=wset["seed"])
            return cache[key]

        taps_at = [[(ti, t) for ti, t in enumerate((focus, inp)) if t in ck["phi"] and (ti == 0 or i == last)]
                   for i, ck in enumerate(cks)]
        rows = [{"iteration": ck["iteration"], "taps": {t: {} for _, t in taps_at[i]}} for i, ck in enumerate(cks)]
        if 1 in claims:
            for i, got in _each(range(len(cks)), lambda i: [(t, part("core", i, ti, t)) for ti, t in taps_at[i]]):
                for t, d in got:
                    rows[i]["taps"][t].update(d)
            # the jackknife where a rule reads a standard error: first, last, each variant's peak
            exc = [(row["taps"].get(focus) or {}).get("surrogate", {}).get("mean_abs_corr", {}).get("excess")
                   for row in rows]
            exc_g = [(((row["taps"].get(focus) or {}).get("gain_normalised") or {}).get("surrogate") or {})
                     .get("mean_abs_corr", {}).get("excess") for row in rows]
            at = sorted({0, last, _peak(exc), _peak(exc_g)} - {None})
            for i, got in _each(at, lambda i: [(t, part("jackknife", i, ti, t)) for ti, t in taps_at[i]]):
                for t, d in got:
                    rows[i]["taps"][t].update(d)
        if 4 in claims:
            for i, got in _each(range(len(cks)), lambda i: [(ti, t, part("probe", i, ti, t)) for ti, t in taps_at[i]]):
                for ti, t, d in got:
                    p = dict(d)
                    if ti == 0 and i == last:
                        p.update(null_r2_q95=nulls.probe_q95, n_null=nulls.probe_n_null)
                    rows[i]["taps"][t]["probe"] = p
        v = waves_findings(rows, focus)
        out.append({str(c): v[str(c)] for c in claims})
    return out


def _from_base(pre: dict, cache: dict, where: dict, cks: list, seed: int, i: int, r: int, ti: int, tap: str,
               truth: tuple) -> None:
    """Fill a tap's ``pre`` (`calibration_waves.coherence_core`) from its base where that is exact in
    exact arithmetic: the raw variant of a planted-factor tap (`factor_analysed`), the gain-normalised
    variant of a shared-gain tap (the shared gain divides out). The base itself is analysed once for
    both (`base_parts`; its parts kept in ``where``, a dict of one replicate, its ``pre`` in ``cache``)."""
    from ..analysis import calibration_waves as cw

    factor = planted_factor(cks[i], tap, truth, seed, i, r, ti)
    gain_only = bool(truth[0]) and not any(truth[1:])
    if any(truth) and factor is None and not gain_only:
        return
    key = (i, r, ti, "base parts")
    if key not in where:
        base_pre = cache.setdefault((i, r, ti, (0, 0, 0), "pre"), {})
        x0 = draw_tap(cks[i], tap, (0, 0, 0), seed, i, r, ti, where)
        where[key] = (cw.base_parts(x0, cks[i]["mask"], base_pre), base_pre)
    parts, base_pre = where[key]
    if parts is None:
        return
    if factor is not None:
        pre.setdefault("raw", cw.factor_analysed(parts, factor[1], factor[0]))
    elif gain_only and base_pre["gain"][2][0] == parts["shape"][0]:  # the base kept every channel in both
        pre.setdefault("gain", base_pre["gain"])


def replicate_fast(tpl: dict, scenarios: list[str], r: int, settings: CalibrationSettings,
                   nulls: CoherenceNulls) -> dict:
    """Replicate ``r`` of each of ``scenarios`` in turn, sharing its base draws and the analyses of
    equal truth: ``{scenario: (verdicts of one replicate, seconds)}``. The same verdicts as
    `coherence_chunk_fast` on that replicate (every random draw is keyed by the replicate)."""
    import time

    cache: dict = {}
    bases: dict = {}
    out = {}
    for sc in scenarios:
        t0 = time.perf_counter()
        v = coherence_chunk_fast(tpl, sc, r, r + 1, settings, cache, nulls, bases)
        out[sc] = (v, time.perf_counter() - t0)
    return out


#: Below this many values per tap (S x T x C) the replicates run in this process (their checkpoints
#: on threads): a worker process costs about 2 s to start, more than a small replicate.
PROCESS_MIN_ELEMENTS = 1_000_000


def replicate_job(scenarios: list[str], r: int, nulls: CoherenceNulls) -> dict:
    """`replicate_fast` in a `gptwaves.workers.WorkerPool` worker whose context holds ``tpl`` and
    ``settings`` (the shared nulls travel with each job: a few hundred kilobytes)."""
    from ..workers import context

    ctx = context()
    return replicate_fast(ctx["tpl"], scenarios, r, ctx["settings"], nulls)
