"""Synthetic truth of the calibration (docs/method.md, "Calibration"): the templates (what the
synthetic truth keeps of the run: its word tables and error rates, its recordings' shapes,
per-channel AR(1) coefficients and texts) and the engines that draw replicates from them and
analyse each with the same analysis functions as the real run. Re-exported by
`gptwaves.stages.calibration`.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import GptwavesError
from ..io import read_json
from ..names import is_main_name
from . import checks
from .calibration_plan import (COHERENCE_SCENARIOS, SPACE_CHANNELS, SPELLING_SCENARIOS, CalibrationSettings,
                               spelling_findings, waves_findings)

__all__ = ["spelling_template", "make_spelling_template", "waves_template", "make_waves_template",
           "spelling_chunk", "coherence_truths", "coherence_chunk", "draw_tap", "base_tap", "wave_settings",
           "planted_factor", "COHERENCE_SEEDS", "SPELLING_SEEDS"]


# ---------------------------------------------------------------------------
# Templates: what the synthetic truth keeps of the run
# ---------------------------------------------------------------------------
def _lexicon_for(run_dir: Path, settings: dict, corpus):
    from .common import load_lexicon_file, resolve_lexicon

    name, want = settings.get("lexicon"), settings.get("lexicon_hash")
    if name == "training split":
        lex, _, h = resolve_lexicon(run_dir, None, corpus)
    elif name and Path(name).is_file():
        lex = load_lexicon_file(name)
        h = hashlib.sha256("\n".join(sorted(lex)).encode()).hexdigest()[:16]
    else:
        from ..lexicon import default_lexicon

        lex, _, h = default_lexicon()
    if want and h != want:
        raise GptwavesError(f"the lexicon of {run_dir}'s spelling results ({name}) is not available here "
                            f"(hash differs); pass --corpus or re-run the spelling stage")
    return lex


def spelling_template(run_dir: Path, corpus=None) -> dict | None:
    """The run's spelling word tables: per main checkpoint its iteration, word arrays, the base
    log-odds of every word, and the stage's settings; None when the run has no spelling results."""
    from ..analysis import spelling as sp

    sdir = run_dir / "spelling"
    if not sdir.is_dir():
        return None
    results = []
    for p in sorted(sdir.glob("iter_*.json")):
        name = p.name[: -len(".json")]
        if name.endswith(".samples") or not is_main_name(name):
            continue
        r = checks.read_checked(p, "spelling result", checks.spelling_result, name, stage=f"spelling --run {run_dir}")
        if isinstance(r.get("iteration"), int):
            results.append(r)
    if not results:
        return None
    results.sort(key=lambda r: r["iteration"])
    sett = results[-1]["settings"]
    results = [r for r in results if {k: v for k, v in r["settings"].items() if k != "weights_sha256"}
               == {k: v for k, v in sett.items() if k != "weights_sha256"}]
    lex = _lexicon_for(run_dir, sett, corpus)
    tables = []
    for r in results:
        sp_path = sdir / f"{r['name']}.samples.json"
        if not sp_path.is_file():
            raise GptwavesError(f"{sp_path} is missing: the calibration needs the generated texts; "
                                f"re-run `gptwaves spelling --run {run_dir}`")
        texts = read_json(sp_path, "spelling samples", dict).get("texts")
        st = r["stats"]
        plen, L = int(st.get("prompt_len", len(sett.get("prompt", "\n")))), int(st["length"])
        sc = sp.score_samples(texts, lex, plen, L)
        tables.append({"name": r["name"], "iteration": r["iteration"], "word_sample": sc.word_sample,
                       "word_start": sc.word_start - plen, "word_len": sc.word_len, "word_mis": sc.word_mis,
                       "n_samples": len(sc), "length": L})
    return make_spelling_template(tables, alpha=float(sett.get("alpha", 0.05)), n_boot=int(sett.get("n_boot", 2000)),
                                  n_perm=int(sett.get("n_perm", 1000)),
                                  seed=int((sett.get("sampling") or {}).get("seed", 0)),
                                  identity=[[r["name"], r["settings"].get("weights_sha256")] for r in results])


def make_spelling_template(tables: list[dict], *, alpha: float = 0.05, n_boot: int = 2000, n_perm: int = 1000,
                           seed: int = 0, identity=None) -> dict:
    """A spelling template from word tables (per checkpoint ``iteration``, ``word_sample``,
    ``word_start``, ``word_len``, ``word_mis``, ``n_samples``, ``length``) and the spelling stage's
    settings: what `spelling_chunk` simulates."""
    from ..analysis import calibration as ca

    cks = []
    for t in sorted(tables, key=lambda t: t["iteration"]):
        mis = np.asarray(t["word_mis"], dtype=bool)
        start, wlen = np.asarray(t["word_start"], dtype=np.int64), np.asarray(t["word_len"], dtype=np.int64)
        cks.append({"name": t.get("name", f"iter_{t['iteration']:07d}"), "iteration": int(t["iteration"]),
                    "word_sample": np.asarray(t["word_sample"], dtype=np.int64), "word_start": start,
                    "word_len": wlen, "n_samples": int(t["n_samples"]), "length": int(t["length"]),
                    "base_logit": ca.base_logits(start, wlen, mis, int(t["length"])),
                    "error_rate": float(mis.mean()) if mis.size else 0.0, "n_words": int(mis.size)})
    return {"checkpoints": cks, "alpha": float(alpha), "n_boot": int(n_boot), "n_perm": int(n_perm),
            "seed": int(seed), "identity": identity if identity is not None else [[c["name"], None] for c in cks]}


def waves_template(run_dir: Path) -> dict | None:
    """The run's recordings as the coherence truth keeps them: per main checkpoint its shape, the
    focus and input taps' per-channel lag-1 autocorrelation, texts (current / next character) and
    mask; None when the run has no wave results."""
    from ..analysis.oscillation import autocorrelation
    from ..recording import Recording
    from .common import focus_tap

    wdir = run_dir / "waves"
    if not wdir.is_dir():
        return None
    summaries = []
    for d in sorted(wdir.iterdir()):
        if d.is_dir() and is_main_name(d.name) and (d / "summary.json").is_file():
            s = checks.read_checked(d / "summary.json", "waves summary", checks.waves_summary, d.name,
                                    stage=f"waves --run {run_dir}")
            if isinstance(s.get("iteration"), int):
                summaries.append(s)
    if not summaries:
        return None
    summaries.sort(key=lambda s: s["iteration"])
    focus = summaries[-1].get("focus_tap") or focus_tap(list(summaries[-1]["taps"]))
    inp = "hook_embed"
    cks = []
    for s in summaries:
        path = run_dir / "recordings" / f"{s['name']}.h5"
        if not path.is_file():
            raise GptwavesError(f"{path} is missing: the calibration needs the recordings; "
                                f"re-run `gptwaves record --run {run_dir}`")
        with Recording.open(path) as rec:
            chars, nxt = rec.input_chars(), rec.next_chars()
            if chars.dtype.itemsize > np.dtype("<U1").itemsize:
                chars, nxt = chars.astype("<U1"), nxt.astype("<U1")
            mask = np.broadcast_to(~rec.is_prompt, chars.shape).copy()
            phis = {}
            for t in (focus, inp):
                if t in rec.taps:
                    x = rec.waves(t).astype(np.float32, copy=False)
                    acf = autocorrelation(x, nlags=1, mask=mask)
                    phis[t] = np.nan_to_num(np.asarray(acf)[:, 1]).astype(float)
        if focus not in phis:
            continue
        cks.append({"name": s["name"], "iteration": s["iteration"], "shape": list(chars.shape) + [phis[focus].size],
                    "phi": phis, "chars": chars, "next_chars": nxt, "mask": mask})
    if not cks:
        return None
    return make_waves_template(cks, focus, inp, summaries[-1].get("settings") or {},
                               identity=[[s["name"], s.get("recording_sha256")] for s in summaries])


def make_waves_template(checkpoints: list[dict], focus: str, input_tap: str, settings: dict, identity=None) -> dict:
    """A coherence template: per checkpoint ``iteration``, ``shape`` (S, T, C), ``phi`` {tap: (C,)
    lag-1 coefficients}, ``chars``, ``next_chars`` and ``mask`` (S, T); the waves stage's settings
    (`WavesSettings` fields): what `coherence_chunk` simulates."""
    cks = sorted(checkpoints, key=lambda c: c["iteration"])
    return {"checkpoints": cks, "focus": focus, "input": input_tap, "settings": dict(settings),
            "identity": identity if identity is not None else [[f"iter_{c['iteration']:07d}", None] for c in cks]}


# ---------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------
def _rr_null_centre(word_sample, mis, n_samples: int, word_start=None) -> float:
    """RR expected under the within-sample permutation null (within each sample's position bins when
    ``word_start`` is given and the spelling module has position bins), from the expected pair counts
    of a uniformly random placement of each group's errors; used to move a shared null to a replicate."""
    from ..analysis import spelling as sp

    s = np.asarray(word_sample, dtype=np.int64)
    m = np.asarray(mis, dtype=bool)
    if s.size < 2:
        return float("nan")
    pos = sp.position_bins(word_start) if word_start is not None and hasattr(sp, "position_bins") \
        else np.zeros(s.size, np.int64)
    gi = s * (int(pos.max(initial=0)) + 1) + pos  # the group of each word (sample x position bin)
    n_g = np.bincount(gi).astype(float)  # empty groups are never indexed
    k_g = np.bincount(gi, weights=m.astype(float))
    p = k_g[gi] / n_g[gi]  # P(word is misspelled)
    same_s = s[1:] == s[:-1]
    a_, b_ = gi[:-1][same_s], gi[1:][same_s]
    pa, pb = p[:-1][same_s], p[1:][same_s]
    same_g = a_ == b_
    ng, kg = n_g[a_], k_g[a_]
    with np.errstate(divide="ignore", invalid="ignore"):
        both = np.where(same_g, np.where(ng > 1, kg * (kg - 1) / (ng * (ng - 1)), 0.0), pa * pb)
    mm, pm = both.sum(), pa.sum()
    cm, pc = (pb - both).sum(), (1 - pa).sum()
    if pm <= 0 or pc <= 0 or cm <= 0:
        return float("nan")
    return float((mm / pm) / (cm / pc))


def _last_call_kept(fn):
    """``fn`` that gives its last result again when called again with the very same arguments (the
    same array objects; other values equal). The last arguments are held, so no new object can
    take their identity."""
    last: dict = {}

    @functools.wraps(fn)
    def kept(*args, **kw):
        vals, names = (*args, *kw.values()), tuple(kw)
        if last and last["names"] == names and len(last["vals"]) == len(vals) \
                and all(map(_same_value, last["vals"], vals)):
            return last["out"]
        out = fn(*args, **kw)
        last.update(names=names, vals=vals, out=out)
        return out

    return kept


def _same_value(a, b) -> bool:
    """The same object, or two equal values neither of which is an array."""
    if a is b:
        return True
    return not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray) and bool(a == b)


def _call(fn, *args, **kw):
    """``fn(*args, **kw)`` with only the keywords ``fn`` accepts (the spelling functions gained a
    ``word_start`` keyword for position strata; the calibration works with either signature)."""
    params = inspect.signature(fn).parameters
    return fn(*args, **{k: v for k, v in kw.items() if k in params})


class _SharedNulls:
    """Permutation nulls of one checkpoint, computed once from an independent-error replicate and
    moved to each replicate by its closed-form centre (the fast engine; docs/method.md, Calibration).

    `injected` swaps them in for the spelling module's `stratified_null` and `cascade_null` while a
    replicate is analysed, so that `analyze_words` itself turns them into p-values, medians, z and
    verdicts exactly as the spelling stage does: only the permutation draws are shared.
    """

    def __init__(self, ck: dict, tpl: dict, flags: np.ndarray):
        from ..analysis import spelling as sp

        s, st, wl, N, L = ck["word_sample"], ck["word_start"], ck["word_len"], ck["n_samples"], ck["length"]
        self.n_perm = int(tpl["n_perm"])
        null = sp.stratified_null(s, st, wl, flags, N, L, [], self.n_perm, tpl["seed"], None)
        ref = _call(sp.independent_reference, s, wl, flags, N, word_start=st)
        self.fano = {"correct": np.asarray(null["fano_correct"], float),
                     "misspelled": np.asarray(null["fano_misspelled"], float)}
        self.ref = {"correct": ref["fano_ref_correct"], "misspelled": ref["fano_ref_misspelled"]}
        self.rr = np.asarray(_call(sp.cascade_null, s, flags, N, self.n_perm, tpl["seed"], word_start=st), float)
        self.positions = "word_start" in inspect.signature(sp.cascade_null).parameters
        self.rr_centre = _rr_null_centre(s, flags, N, st if self.positions else None)

    def stratified(self, word_sample, word_start, word_len, word_mis, n_samples, length, windows=(), *a, **kw):
        from ..analysis import spelling as sp

        ref = _call(sp.independent_reference, word_sample, word_len, word_mis, n_samples, word_start=word_start)
        out = {}
        for name in ("correct", "misspelled"):
            r0, r = self.ref[name], ref[f"fano_ref_{name}"]
            ok = r0 and r and np.isfinite(r0) and np.isfinite(r) and r0 > 0
            out[f"fano_{name}"] = self.fano[name] * (r / r0) if ok else self.fano[name]
        out["windows"] = {int(w): {"fano_correct": np.full(self.n_perm, np.nan),
                                   "fano_misspelled": np.full(self.n_perm, np.nan)} for w in windows}
        return out

    def cascade(self, word_sample, word_mis, n_samples, *a, word_start=None, **kw):
        c = _rr_null_centre(word_sample, word_mis, int(n_samples), word_start if self.positions else None)
        return self.rr * (c / self.rr_centre) if np.isfinite(c) and self.rr_centre > 0 else self.rr

    @contextmanager
    def injected(self):
        from ..analysis import spelling as sp

        orig = sp.stratified_null, sp.cascade_null, sp.independent_reference
        sp.stratified_null, sp.cascade_null = self.stratified, self.cascade
        sp.independent_reference = _last_call_kept(orig[2])  # `analyze_words` and `stratified` ask alike
        try:
            yield
        finally:
            sp.stratified_null, sp.cascade_null, sp.independent_reference = orig


def _shared_nulls(tpl: dict, settings: CalibrationSettings, pool=None) -> list:
    """Every checkpoint's `_SharedNulls`, one checkpoint per job in ``pool`` (a
    `gptwaves.workers.WorkerPool` whose context holds ``tpl`` and ``settings``) when one is given."""
    n = len(tpl["checkpoints"])
    if pool is not None:
        return pool.map(shared_null_job, [(i,) for i in range(n)])
    return [_shared_null(tpl, settings, i) for i in range(n)]


def _shared_null(tpl: dict, settings: CalibrationSettings, i: int) -> _SharedNulls:
    """The shared permutation nulls of checkpoint ``i``, from its own independent-error draw."""
    from ..analysis import calibration as ca

    ck = tpl["checkpoints"][i]
    rng = np.random.default_rng([settings.seed, 0, i])
    flags = ca.simulate_flags(ck["word_sample"], ck["base_logit"], ck["n_samples"], 1, rng)[0]
    return _SharedNulls(ck, tpl, flags)


def shared_null_job(i: int) -> _SharedNulls:
    """`_shared_null` in a worker process whose context holds ``tpl`` and ``settings``."""
    from ..workers import context

    ctx = context()
    return _shared_null(ctx["tpl"], ctx["settings"], i)


def spelling_chunk(tpl: dict, scenario: str, r0: int, r1: int, settings: CalibrationSettings,
                   shared: dict | None = None) -> list[dict]:
    """Verdicts of claims 2, 3, 5 on replicates ``r0 .. r1 - 1`` of one spelling scenario."""
    from ..analysis import calibration as ca
    from ..analysis import spelling as sp

    kind, strength, shape = SPELLING_SCENARIOS[scenario]
    cks = tpl["checkpoints"]
    prof = ca.strength_profile([c["iteration"] for c in cks], strength, shape)
    if kind == "refractory":  # strength is a relative risk: 1 = none, rising/falling towards it
        prof = 1.0 - ca.strength_profile([c["iteration"] for c in cks], 1.0 - strength, shape)
    R = r1 - r0
    sidx = list(SPELLING_SCENARIOS).index(scenario)
    flags = []
    for i, ck in enumerate(cks):  # one generator per replicate: the same draws whatever the chunking
        flags.append(np.concatenate([ca.simulate_flags(ck["word_sample"], ck["base_logit"], ck["n_samples"], 1,
                                                       np.random.default_rng([settings.seed, 1, sidx, i, r]),
                                                       kind=kind, strength=float(prof[i]))
                                     for r in range(r0, r1)]))
    alpha, fast = tpl["alpha"], settings.engine == "fast"
    out = []
    for r in range(R):
        stats = []
        for i, ck in enumerate(cks):
            mis = flags[i][r]
            args = (ck["word_sample"], ck["word_start"], ck["word_len"], mis, ck["n_samples"], ck["length"])
            if fast:
                with shared[i].injected():
                    st = sp.analyze_words(*args, alpha=alpha, n_boot=0, n_perm=tpl["n_perm"], seed=tpl["seed"],
                                          windows=[])
            else:
                st = sp.analyze_words(*args, alpha=alpha, n_boot=tpl["n_boot"], n_perm=tpl["n_perm"],
                                      seed=tpl["seed"], windows=[])
            stats.append({"iteration": ck["iteration"], "stats": st})
        crossing = sp.crossing([c["iteration"] for c in cks], [s["stats"]["counts"]["correct"] for s in stats],
                               alpha=alpha, n_boot=0, seed=tpl["seed"])
        if fast:
            v = _bracketed(stats, alpha, crossing, cks[-1], flags[-1][r], tpl)
        else:
            v = spelling_findings(stats, alpha, crossing)
        out.append(v)
    return out


#: Below this many word-replicates left (words of all checkpoints x replicates of all scenarios)
#: the spelling scenarios run in this process: a worker process costs about 2 s to start.
SPELLING_PROCESS_MIN = 10_000_000


def spelling_job(scenario: str, r0: int, r1: int, shared: list) -> tuple[list[dict], float]:
    """`spelling_chunk` with the shared nulls ``shared`` (`_shared_nulls`: a few hundred kilobytes) in a
    `gptwaves.workers.WorkerPool` worker whose context holds ``tpl`` and ``settings``: (verdicts, seconds)."""
    import time

    from ..workers import context

    ctx = context()
    t0 = time.perf_counter()
    v = spelling_chunk(ctx["tpl"], scenario, r0, r1, ctx["settings"], shared)
    return v, time.perf_counter() - t0


def _bracketed(stats: list[dict], alpha: float, crossing: dict, ck: dict, mis: np.ndarray, tpl: dict) -> dict:
    """The verdicts with the last checkpoint's RR CI (not computed by the fast engine) set to its
    narrowest and widest possible values; only when they differ is the BCa CI computed."""
    from ..analysis import spelling as sp

    cas = stats[-1]["stats"]["cascade"]
    rr = cas.get("rr")
    if rr is None:
        return spelling_findings(stats, alpha, crossing)
    cas["rr_ci"] = [rr, rr]
    narrow = spelling_findings(stats, alpha, crossing)
    cas["rr_ci"] = [0.0, 1e300]
    wide = spelling_findings(stats, alpha, crossing)
    if narrow == wide:
        return narrow
    real = sp.cascade(ck["word_sample"], mis, ck["n_samples"], n_boot=tpl["n_boot"], seed=tpl["seed"] + 2)
    cas["rr_ci"] = real["rr_ci"]
    return spelling_findings(stats, alpha, crossing)


def coherence_truths(tpl: dict, scenario: str) -> dict:
    """``{(checkpoint index, tap index (0 focus, 1 input)): truth}`` of one coherence scenario, the
    truth a tuple of integers (planted gain SD, excess and space response, each x 1e6): taps with the
    same truth are the same draw in every scenario."""
    from ..analysis import calibration as ca

    sc = COHERENCE_SCENARIOS[scenario]
    its = [c["iteration"] for c in tpl["checkpoints"]]
    exc = ca.strength_profile(its, sc["excess"], sc["shape"])
    spc = ca.strength_profile(its, sc["space"], sc["shape"])
    out = {}
    for i in range(len(its)):
        for ti in (0, 1):
            planted = ti == 0 or sc["input"]
            out[(i, ti)] = tuple(int(round(1e6 * v)) for v in
                                 ((sc["gain"], exc[i], spc[i]) if planted else (0.0, 0.0, 0.0)))
    return out


def wave_settings(tpl: dict) -> dict:
    """The waves stage's analysis settings of a coherence template, with the number of clusters
    fixed: no verdict reads the clustering, and a fixed k skips the surrogates' silhouette search
    (docs/method.md, Calibration)."""
    from .waves import WavesSettings

    fields = WavesSettings.__dataclass_fields__
    wset = WavesSettings(**{k: v for k, v in tpl["settings"].items() if k in fields}).analysis_kwargs()
    wset["k"] = wset.get("k") or 2
    return wset


def base_tap(ck: dict, tap: str, seed: int, i: int, r: int, ti: int) -> np.ndarray:
    """The independent part of one synthetic tap: stationary AR(1) channels with the tap's lag-1
    coefficients, drawn from ``default_rng([seed, 2, i, r, ti])``, the same for every planted truth
    of checkpoint ``i``, replicate ``r`` and tap ``ti`` (common random numbers across scenarios)."""
    from ..analysis import calibration as ca

    S, T, _ = ck["shape"]
    return ca.ar1_waves(S, T, ck["phi"][tap], np.random.default_rng([seed, 2, i, r, ti]))


def draw_tap(ck: dict, tap: str, truth: tuple, seed: int, i: int, r: int, ti: int,
             bases: dict | None = None) -> np.ndarray:
    """One synthetic tap of checkpoint ``ck`` (index ``i``), replicate ``r``, tap index ``ti`` (0 focus,
    1 input) with the planted ``truth`` of `coherence_truths`: `base_tap`'s AR(1) channels, then the
    planted gain, common factor and next-space response, drawn from ``default_rng([seed, 8, i, r, ti,
    *truth])``. Both coherence engines draw their taps here, so they see the same data. ``bases``
    (a dict the caller keeps for one replicate) holds each base by ``(i, r, ti)``, so the scenarios of
    a replicate draw it once."""
    from ..analysis import calibration as ca

    if bases is None:
        base = base_tap(ck, tap, seed, i, r, ti)
    else:
        if (i, r, ti) not in bases:
            bases[(i, r, ti)] = base_tap(ck, tap, seed, i, r, ti)
            bases[(i, r, ti)].setflags(write=False)  # shared by the scenarios: never changed in place
        base = bases[(i, r, ti)]
    if not any(truth):
        return base
    x = base.copy()
    C = ck["shape"][2]
    gain, excess, space = (v / 1e6 for v in truth)
    rng = _planted_rng(seed, i, r, ti, truth)
    if truth[0]:
        ca.shared_gain(x, gain, rng)
    if truth[1]:
        ca.add_factor(x, _factor_rho(ck, tap, excess), rng)
    if truth[2]:
        ch = np.random.default_rng([seed, 3]).choice(C, min(SPACE_CHANNELS, C), replace=False)
        ca.add_space_response(x, ck["next_chars"] == " ", space, ch)
    return x


def _planted_rng(seed: int, i: int, r: int, ti: int, truth: tuple) -> np.random.Generator:
    """The generator of the planted parts of one tap (`COHERENCE_SEEDS`)."""
    return np.random.default_rng([seed, 8, i, r, ti, *truth])


def _factor_rho(ck: dict, tap: str, excess: float) -> float:
    """The pairwise correlation of the common factor planted for an ``excess`` of mean |R|."""
    from ..analysis import calibration as ca

    return ca.rho_for_excess(excess, ca.floor_sigma(ck["phi"][tap], int(ck["mask"].sum())))


def planted_factor(ck: dict, tap: str, truth: tuple, seed: int, i: int, r: int, ti: int) -> tuple | None:
    """``(loading, factor (S, T))`` of the common factor `draw_tap` plants for a ``truth`` that plants
    nothing else (None for any other truth): the same draw, so that the fast engine can derive such a
    tap from its base (`gptwaves.analysis.calibration_waves.factor_analysed`)."""
    from ..analysis import calibration as ca

    if truth[0] or truth[2] or not truth[1]:
        return None
    rho = _factor_rho(ck, tap, truth[1] / 1e6)
    if rho <= 0:
        return None
    S, T, _ = ck["shape"]
    rng = _planted_rng(seed, i, r, ti, truth)  # as `draw_tap`: the factor is its first draw
    return ca.factor_loading(rho), ca.factor_series(S, T, rng, np.float32)


#: How the spelling flags are seeded (recorded in each replicates file).
SPELLING_SEEDS = "spelling: numpy default_rng([seed, 1, scenario index, checkpoint index, replicate])"
#: How the coherence taps are seeded (recorded in each replicates file).
COHERENCE_SEEDS = ("coherence: base AR(1) channels default_rng([seed, 2, checkpoint index, replicate, tap (0 focus, "
                   "1 input)]), shared by every scenario; planted parts default_rng([seed, 8, checkpoint index, "
                   "replicate, tap, planted gain, excess and space response x 1e6])")


def coherence_chunk(tpl: dict, scenario: str, r0: int, r1: int, settings: CalibrationSettings,
                    cache: dict | None = None, bases: dict | None = None) -> list[dict]:
    """Verdicts of claims 1 and 4 on replicates ``r0 .. r1 - 1`` of one coherence scenario: every
    checkpoint's focus and input taps drawn and analysed by `analysis.waves.analyze_tap` with the
    run's wave settings (the number of clusters fixed: no verdict reads it).

    A tap's draw depends only on (checkpoint, replicate, tap, planted structure), so a tap with the
    same truth in several scenarios (the input tap of most of them, every tap at a strength of 0) is
    drawn and analysed once when the scenarios share ``cache`` (a dict kept across calls); ``bases``
    is `draw_tap`'s.
    """
    from ..analysis.waves import analyze_tap
    from ..analysis.waves_summary import tap_summary

    cks = tpl["checkpoints"]
    truths = coherence_truths(tpl, scenario)
    wset = wave_settings(tpl)
    focus, inp = tpl["focus"], tpl["input"]
    cache = {} if cache is None else cache
    out = []
    for r in range(r0, r1):
        rows = []
        for i, ck in enumerate(cks):
            taps = {}
            for ti, t in enumerate((focus, inp)):
                if t not in ck["phi"]:
                    continue
                truth = truths[(i, ti)]
                key = (i, r, ti, truth)
                if key not in cache:
                    x = draw_tap(ck, t, truth, settings.seed, i, r, ti, bases)
                    res = analyze_tap(x, ck["chars"], ck["next_chars"], mask=ck["mask"], **wset)
                    cache[key] = tap_summary(res)
                taps[t] = cache[key]
            rows.append({"iteration": ck["iteration"], "taps": taps})
        out.append(waves_findings(rows, focus))
    return out

