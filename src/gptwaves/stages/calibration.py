"""Calibration stage: the size and power of every verdict rule at the run's own sizes
-> ``DIR/calibration/``.

Synthetic truth is built from the run itself (its spelling word tables and error rates, its
recordings' shapes, per-channel AR(1) coefficients and texts; `gptwaves.analysis.calibration`),
each synthetic run is analysed by the same analysis functions as the real one and judged by the
same entry point the summary uses (`gptwaves.stages.summary.findings_from`): the rules are never
copied. One thin adapter per claim group turns a synthetic run into the stage results that entry
point reads (`spelling_findings`, `waves_findings`).

- ``calibration/replicates/<group>.<scenario>.json``: the verdicts of every replicate of one
  scenario, its seeds and settings (written after every chunk of replicates: an interrupted run
  resumes from the last finished chunk; reused while the settings and the rules are unchanged);
- ``calibration/calibration.json``: per claim and verdict level, the false-"supported" rate under
  every no-effect scenario and the power of every planted effect with Monte Carlo CIs, and the
  minimum detectable effect at 80 % power (read into summary.json by the summary stage).

docs/method.md, "Calibration", states the scenarios, the engines and the measured agreement of the
fast engines with the exact ones.

The settings, scenarios and adapters live in `gptwaves.stages.calibration_plan`, the templates and
engines in `gptwaves.stages.calibration_truth` (the fast coherence engine in
`gptwaves.stages.calibration_coherence`); this module runs the stage and summarises, and every
name of the two stays importable from here.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import GptwavesError
from ..io import RunLock, atomic_write_json, check_run_dir, read_json
from ..versions import is_current, reusable, stamp
from .calibration_plan import (CLAIM_PLAN, COHERENCE_SCENARIOS, LEVELS, SPACE_CHANNELS, SPELLING_SCENARIOS,
                               CalibrationSettings, rules_fingerprint, spelling_findings, waves_findings)
# calibrate_run calls the engines through this module's names (the fault tests replace them here)
from .calibration_truth import (COHERENCE_SEEDS, SPELLING_PROCESS_MIN, SPELLING_SEEDS, _shared_nulls, coherence_chunk,
                                coherence_truths, spelling_job,
                                make_spelling_template,
                                make_waves_template, spelling_chunk, spelling_template, waves_template)
from .calibration_coherence import (PROCESS_MIN_ELEMENTS, CoherenceNulls, coherence_chunk_fast, replicate_fast, replicate_job,
                                    scenario_claims)
from ..workers import WorkerPool, cores
from .common import begin_stage

__all__ = ["CalibrationSettings", "calibrate_run", "read_calibration", "make_spelling_template",
           "make_waves_template", "spelling_chunk", "coherence_chunk", "summarise", "summary_entry",
           "SPELLING_SCENARIOS",
           "COHERENCE_SCENARIOS", "CLAIM_PLAN", "spelling_findings", "waves_findings", "rules_fingerprint",
           "CALIBRATION_VERSION", "SPACE_CHANNELS", "LEVELS", "coherence_truths", "spelling_template",
           "waves_template", "CoherenceNulls", "coherence_chunk_fast", "scenario_claims", "replicate_fast",
           "replicate_job", "spelling_job", "WorkerPool", "cores"]

#: Format of calibration.json (docs/outputs.md).
CALIBRATION_VERSION = 1


# ---------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------
def _file_name(group: str, scenario: str) -> str:
    return f"{group}.{scenario.replace(' ', '_')}.json"


def _identity(tpl: dict, group: str, settings: CalibrationSettings) -> dict:
    """The settings a replicates file is reused under (its inputs, the run's checkpoints and the
    rules fingerprint, are stored beside them: docs/method.md, Reuse of earlier results)."""
    return {"group": group, "engine": settings.engine, "seed": settings.seed,
            "chunk": settings.chunk,
            "analysis": {k: tpl[k] for k in ("alpha", "n_boot", "n_perm", "seed") if k in tpl}
            if group == "spelling" else tpl["settings"]}


def _valid_replicates(obj) -> None:
    v = obj.get("verdicts")
    if not isinstance(v, list) or obj.get("done") != len(v) or not all(isinstance(x, dict) for x in v):
        raise GptwavesError("replicates file without its verdicts")


class _Replicates:
    """The stored replicates of every scenario of one calibration: loaded (reused by the versioned
    rule), extended a chunk at a time, written after every chunk (docs/method.md, Calibration)."""

    def __init__(self, out_dir: Path, tpls: dict, jobs: list, settings: CalibrationSettings, bar, stop):
        from ..runtime import Interrupted

        self.tpls, self.settings, self.bar, self.stop, self._interrupted = tpls, settings, bar, stop, Interrupted
        self.state: dict = {}
        for g, scen, n in jobs:
            key = _identity(tpls[g], g, settings)
            path = out_dir / "replicates" / _file_name(g, scen)
            inputs = {"scenario": scen, "rules": rules_fingerprint(), "run": tpls[g]["identity"]}
            old = reusable(path, "calibration", key, validate=_valid_replicates, **json_ready(inputs))
            self.state[(g, scen)] = {"n": n, "key": key, "path": path, "inputs": inputs,
                                     "verdicts": list(old["verdicts"])[:n] if old else [],
                                     "seconds": float(old.get("seconds", 0.0)) if old else 0.0}
            bar.update(len(self.state[(g, scen)]["verdicts"]))

    def _check_stop(self):
        if self.stop:
            raise self._interrupted("calibration interrupted; re-run to resume")

    def _save(self, g: str, scen: str) -> None:
        st = self.state[(g, scen)]
        seeds = {"base": self.settings.seed, "rule": SPELLING_SEEDS if g == "spelling" else COHERENCE_SEEDS}
        atomic_write_json(st["path"], stamp("calibration", {
            "settings": st["key"], **json_ready(st["inputs"]), "seeds": seeds, "done": len(st["verdicts"]),
            "seconds": st["seconds"], "verdicts": st["verdicts"]}))

    def _add(self, g: str, scen: str, fn, *args) -> None:
        st = self.state[(g, scen)]
        self.bar.set_postfix_str(f"{g}: {scen}")
        t0 = time.perf_counter()
        st["verdicts"] += fn(*args)
        st["seconds"] += time.perf_counter() - t0

    def _spelling_jobs(self) -> list[tuple[str, int, int]]:
        """(scenario, r0, r1) of every chunk of the spelling scenarios still to run, in order."""
        jobs = []
        for (g, scen), st in self.state.items():
            r = len(st["verdicts"])
            while g == "spelling" and r < st["n"]:
                jobs.append((scen, r, min(st["n"], r + self.settings.chunk)))
                r = jobs[-1][2]
        return jobs

    def spelling(self) -> None:
        """One scenario after another, a chunk of replicates at a time; with the fast engine on a
        large run and more than one core, the chunks run side by side in worker processes and are
        stored in their order (the same verdicts: every draw is keyed by its scenario and replicate)."""
        from concurrent.futures.process import BrokenProcessPool

        tpl, shared = self.tpls.get("spelling"), None
        jobs = self._spelling_jobs()
        if not jobs:
            return
        fast = self.settings.engine == "fast"
        words = sum(int(np.size(ck["word_sample"])) for ck in tpl["checkpoints"])
        if fast and cores() > 1 and len(jobs) > 1 and \
                words * sum(r1 - r0 for _, r0, r1 in jobs) >= SPELLING_PROCESS_MIN:
            try:
                with WorkerPool({"tpl": tpl, "settings": self.settings}, cores()) as pool:
                    self.bar.set_postfix_str("spelling: shared nulls")
                    shared = _shared_nulls(tpl, self.settings, pool)  # one checkpoint per job
                    futures = [pool.submit(spelling_job, *job, shared) for job in jobs]
                    for (scen, r0, r1), fut in zip(jobs, futures):
                        self._check_stop()
                        self.bar.set_postfix_str(f"spelling: {scen}")
                        st = self.state[("spelling", scen)]
                        verdicts, seconds = fut.result()
                        st["verdicts"] += verdicts
                        st["seconds"] += seconds  # in the workers: their summed time
                        self._save("spelling", scen)
                        self.bar.update(r1 - r0)
                return
            except BrokenProcessPool as e:
                _pool_failed(e)
                jobs = self._spelling_jobs()
        if fast and shared is None:
            shared = _shared_nulls(tpl, self.settings)
        for scen, r0, r1 in jobs:
            self._check_stop()
            self._add("spelling", scen, spelling_chunk, tpl, scen, r0, r1, self.settings, shared)
            self._save("spelling", scen)
            self.bar.update(r1 - r0)

    def coherence(self) -> None:
        """A chunk of replicates at a time, every scenario of a replicate in turn, so that they share
        its base draws (`calibration_truth.draw_tap`); each scenario's file is written after every chunk.
        With the fast engine on large taps and more than one core, whole replicates run side by side
        in worker processes (`_coherence_pooled`; the same verdicts: every draw is keyed by its replicate)."""
        from concurrent.futures.process import BrokenProcessPool

        tpl, cache, nulls = self.tpls.get("coherence"), {}, None  # cache: tap parts of equal truth and draw
        todo = {sc: st for (g, sc), st in self.state.items() if g == "coherence"}
        pool, no_pool = None, False
        try:
            while any(len(st["verdicts"]) < st["n"] for st in todo.values()):
                r0 = min(len(st["verdicts"]) for st in todo.values() if len(st["verdicts"]) < st["n"])
                due = [sc for sc, st in todo.items() if len(st["verdicts"]) == r0 < st["n"]]
                r_end = min(max(todo[sc]["n"] for sc in due), r0 + self.settings.chunk)
                if self.settings.engine == "fast" and pool is None and not no_pool and _use_processes(tpl, todo):
                    pool = WorkerPool({"tpl": tpl, "settings": self.settings}, cores())
                if self.settings.engine == "fast" and nulls is None:
                    self.bar.set_postfix_str("coherence: shared nulls")
                    try:
                        nulls = CoherenceNulls(tpl, self.settings, pool)
                    except BrokenProcessPool as e:
                        _pool_failed(e)
                        pool.close(abort=True)
                        pool, no_pool = None, True
                        nulls = CoherenceNulls(tpl, self.settings)
                if pool is not None:
                    self._check_stop()  # a stop during the shared nulls
                    try:
                        self._coherence_pooled(pool, todo, nulls)
                    except BrokenProcessPool as e:
                        _pool_failed(e)
                        pool.close(abort=True)
                        pool, no_pool = None, True
                    continue
                r = r0
                while r < r_end:
                    bases: dict = {}
                    for sc in [sc for sc in due if r < todo[sc]["n"]]:
                        self._check_stop()
                        if nulls is None:
                            self._add("coherence", sc, coherence_chunk, tpl, sc, r, r + 1, self.settings, cache, bases)
                        else:
                            self._add("coherence", sc, coherence_chunk_fast, tpl, sc, r, r + 1, self.settings,
                                      cache, nulls, bases)
                        self.bar.update(1)
                    r += 1
                for sc in due:
                    self._save("coherence", sc)
        finally:
            if pool is not None:
                pool.close(abort=sys.exc_info()[0] is not None)

    def _coherence_pooled(self, pool, todo: dict, nulls) -> None:
        """Every coherence replicate still to run, as whole-replicate jobs (`replicate_job`) kept in
        flight in the worker processes, so that a worker starts the next one as soon as it is free;
        the results are taken in order, each scenario's file is written at every chunk boundary and,
        at a stop, after the last finished replicate (the work then in flight is dropped)."""
        from collections import deque

        first = min(len(st["verdicts"]) for st in todo.values() if len(st["verdicts"]) < st["n"])
        jobs = iter([(scs, q) for q in range(first, max(st["n"] for st in todo.values()))
                     if (scs := [sc for sc, st in todo.items() if len(st["verdicts"]) <= q < st["n"]])])
        ahead: deque = deque()

        def fill():  # one job queued beyond the one running in each worker
            while len(ahead) <= pool.workers and (job := next(jobs, None)) is not None:
                ahead.append((job, pool.submit(replicate_job, *job, nulls)))

        fill()
        while ahead:
            (scs, q), fut = ahead.popleft()
            self.bar.set_postfix_str(f"coherence: replicate {q + 1}")
            got = fut.result()
            fill()
            stop = bool(self.stop)
            for sc in scs:  # every scenario of the job has exactly q replicates before it
                st = todo[sc]
                verdicts, seconds = got[sc]
                st["verdicts"] += verdicts
                st["seconds"] += seconds  # in the workers: their summed time
                self.bar.update(1)
                if stop or len(st["verdicts"]) % self.settings.chunk == 0 or len(st["verdicts"]) == st["n"]:
                    self._save("coherence", sc)
            if stop:
                raise self._interrupted("calibration interrupted; re-run to resume")

    def replicates(self) -> dict:
        return {f"{g}:{scen}": {"group": g, "scenario": scen, "verdicts": st["verdicts"], "seconds": st["seconds"]}
                for (g, scen), st in self.state.items()}


def _pool_failed(e: BaseException) -> None:
    """Worker processes that could not start or died (e.g. a script that starts the calibration
    without an ``if __name__ == "__main__":`` guard, which spawned processes need): say so once and
    go on in this process."""
    import warnings

    warnings.warn(f"calibration: worker processes failed ({type(e).__name__}: {e}); continuing in this process",
                  stacklevel=3)


def _use_processes(tpl: dict, todo: dict) -> bool:
    """Whole replicates in worker processes where it pays: more than one core, more than one
    replicate left and taps of at least `PROCESS_MIN_ELEMENTS` values."""
    left = max((st["n"] - len(st["verdicts"]) for st in todo.values()), default=0)
    size = max((int(np.prod(ck["shape"])) for ck in tpl["checkpoints"]), default=0)
    return cores() > 1 and left > 1 and size >= PROCESS_MIN_ELEMENTS


def calibrate_run(run_dir: str | os.PathLike, settings: CalibrationSettings = CalibrationSettings(), *,
                  corpus=None, progress: bool = True) -> dict:
    """Simulate every verdict rule on synthetic truth built from the run (module docstring) and
    write ``calibration/``; returns the calibration dict (also in ``calibration/calibration.json``)."""
    from ..runtime import graceful_stop, progress_bar

    run_dir = check_run_dir(run_dir)
    out_dir = run_dir / "calibration"
    t_start = time.perf_counter()
    with RunLock(run_dir), graceful_stop() as stop:
        begin_stage(run_dir, "calibration")
        tpls = {}
        if "spelling" in settings.groups:
            tpls["spelling"] = spelling_template(run_dir, corpus)
        if "coherence" in settings.groups and settings.coherence_replicates > 0:
            tpls["coherence"] = waves_template(run_dir)
        tpls = {g: t for g, t in tpls.items() if t is not None}
        if not tpls:
            raise GptwavesError(f"{run_dir} has no spelling or waves results to calibrate: run `gptwaves spelling` "
                                f"and/or `gptwaves waves` first (or `gptwaves reproduce`)")
        jobs = []
        for g, tpl in tpls.items():
            names = SPELLING_SCENARIOS if g == "spelling" else COHERENCE_SCENARIOS
            n = settings.replicates if g == "spelling" else settings.coherence_replicates
            jobs += [(g, s, n) for s in names if settings.scenarios is None or s in settings.scenarios]
        bar = progress_bar(total=sum(n for *_, n in jobs), desc="calibrate", unit="rep", disable=not progress)
        reps = _Replicates(out_dir, tpls, jobs, settings, bar, stop)
        reps.spelling()
        reps.coherence()
        bar.close()
        result = summarise(reps.replicates(), settings, tpls)
        result["seconds"] = time.perf_counter() - t_start
        result = stamp("calibration", result)
        atomic_write_json(out_dir / "calibration.json", result)
    return result


def json_ready(obj):
    """``obj`` as it reads back from JSON (tuples as lists), so that stored inputs compare equal."""
    import json

    return json.loads(json.dumps(obj))


def summarise(replicates: dict, settings: CalibrationSettings, tpls: dict) -> dict:
    """Per claim and level: false-"supported" rates, power with Monte Carlo CIs, minimum detectable
    effect (the content of calibration.json)."""
    from ..analysis import calibration as ca
    from ..analysis.claims import SUPPORTED, VERDICTS

    claims = {}
    for cid, plan in CLAIM_PLAN.items():
        g = plan["group"]
        if g not in tpls:
            continue
        entry = {"group": g, "effect": plan["effect"]["what"], "effect_at": plan["effect"]["at"],
                 "stronger": plan["effect"]["stronger"]}
        for lv in LEVELS:
            def rate(scen, want=SUPPORTED):
                vs = replicates.get(f"{g}:{scen}", {}).get("verdicts", [])
                k = sum(1 for v in vs if v.get(str(cid), {}).get(lv) == want)
                return ca.mc_rate(k, len(vs))

            def counts(scen):
                vs = replicates.get(f"{g}:{scen}", {}).get("verdicts", [])
                return {w: sum(1 for v in vs if v.get(str(cid), {}).get(lv) == w) for w in VERDICTS}

            nulls = [{"scenario": s, **rate(s), "verdicts": counts(s)} for s in plan["nulls"][lv]]
            power = [{"scenario": s, "strength": st, **rate(s), "verdicts": counts(s)}
                     for st, s in plan["effect"]["scenarios"]]
            worst = max(nulls, key=lambda d: d["rate"] if d["rate"] is not None else -1) if nulls else None
            entry[lv] = {"false_supported": nulls, "worst_false_supported": worst, "power": power,
                         "min_detectable": ca.min_detectable([p["strength"] for p in power],
                                                             [p["rate"] for p in power],
                                                             stronger=plan["effect"]["stronger"])}
            entry[lv]["text"] = ca.calibration_text(entry[lv], entry["effect"], entry["effect_at"])
        claims[str(cid)] = entry
    run = {}
    if "spelling" in tpls:
        t = tpls["spelling"]
        run["spelling"] = {"checkpoints": len(t["checkpoints"]), "samples": t["checkpoints"][-1]["n_samples"],
                           "words_last": t["checkpoints"][-1]["n_words"],
                           "error_rate_first": t["checkpoints"][0]["error_rate"],
                           "error_rate_last": t["checkpoints"][-1]["error_rate"]}
    if "coherence" in tpls:
        t = tpls["coherence"]
        run["coherence"] = {"checkpoints": len(t["checkpoints"]), "shape": t["checkpoints"][-1]["shape"],
                            "focus_tap": t["focus"], "input_tap": t["input"]}
    return {"format": "gptwaves-calibration", "format_version": CALIBRATION_VERSION,
            "settings": settings.to_dict(), "rules": rules_fingerprint(), "run": run,
            "scenarios": {"spelling": {k: list(v) for k, v in SPELLING_SCENARIOS.items()},
                          "coherence": COHERENCE_SCENARIOS},
            "seconds_by_scenario": {k: v["seconds"] for k, v in replicates.items()},
            "claims": claims}


def read_calibration(run_dir: str | os.PathLike) -> dict | None:
    """``calibration/calibration.json`` of a run, or None when absent or from other rules."""
    p = Path(run_dir) / "calibration" / "calibration.json"
    if not p.is_file():
        return None
    try:
        obj = read_json(p, "calibration", dict)
    except GptwavesError:
        return None
    return obj if obj.get("format") == "gptwaves-calibration" else None


def summary_entry(run_dir: str | os.PathLike) -> dict | None:
    """The ``calibration`` entry of summary.json: per claim and level the sentence for readers, the
    false-"supported" rates, the power with Monte Carlo CIs and the minimum detectable effect; None
    when the run was not calibrated. ``current`` is False when the rules changed since (the numbers
    then describe the old rules: re-run `gptwaves calibrate`)."""
    cal = read_calibration(run_dir)
    if cal is None or not isinstance(cal.get("claims"), dict):
        return None
    current = cal.get("rules") == rules_fingerprint() and is_current(cal, "calibration")

    def slim(d: dict, *extra: str) -> dict:
        return {k: d.get(k) for k in ("scenario", *extra, "rate", "ci", "k", "n")}

    claims = {}
    for cid, e in cal["claims"].items():
        if not isinstance(e, dict):
            continue
        claims[cid] = {"effect": e.get("effect"), "effect_at": e.get("effect_at")}
        for lv in LEVELS:
            x = e.get(lv) or {}
            text = x.get("text") or ""
            if not current:
                text = "Calibrated for an earlier version of the rules (re-run `gptwaves calibrate`): " + text
            claims[cid][lv] = {"text": text,
                               "false_supported": [slim(d) for d in x.get("false_supported") or []],
                               "power": [slim(d, "strength") for d in x.get("power") or []],
                               "min_detectable": x.get("min_detectable")}
    return {"current": current, "settings": cal.get("settings"), "run": cal.get("run"),
            "seconds": cal.get("seconds"), "claims": claims}
