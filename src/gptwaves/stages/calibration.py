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
fast spelling engine with the exact one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GptwavesError
from ..io import RunLock, atomic_write_json, check_run_dir, read_json
from ..names import is_main_name
from ..versions import is_current, reusable, stamp
from . import checks
from .common import begin_stage

__all__ = ["CalibrationSettings", "calibrate_run", "read_calibration", "make_spelling_template",
           "make_waves_template", "spelling_chunk", "coherence_chunk", "summarise", "summary_entry",
           "SPELLING_SCENARIOS",
           "COHERENCE_SCENARIOS", "CLAIM_PLAN", "spelling_findings", "waves_findings", "rules_fingerprint",
           "CALIBRATION_VERSION"]

#: Format of calibration.json (docs/outputs.md).
CALIBRATION_VERSION = 1


@dataclass(frozen=True)
class CalibrationSettings:
    """Settings of the calibration (docs/method.md, "Calibration").

    ``replicates``: synthetic runs per spelling scenario; ``coherence_replicates``: per coherence
    scenario (each is a full wave analysis of every checkpoint, so they cost far more);
    ``engine``: ``"fast"`` (spelling permutation nulls shared across replicates, see the method
    page) or ``"exact"`` (every replicate analysed exactly as the spelling stage does);
    ``chunk``: replicates per saved step; ``groups``: which claim groups to calibrate;
    ``scenarios``: only these scenarios (names of `SPELLING_SCENARIOS` / `COHERENCE_SCENARIOS`;
    None: all), e.g. to bound the cost of the coherence rules at large sizes.
    """

    replicates: int = 100
    coherence_replicates: int = 40
    engine: str = "fast"
    seed: int = 0
    chunk: int = 10
    groups: tuple[str, ...] = ("spelling", "coherence")
    scenarios: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        from ..config import check_choice, check_int

        check_int("replicates", self.replicates, 1, 10**6)
        check_int("coherence-replicates", self.coherence_replicates, 0, 10**6)
        check_choice("engine", self.engine, ("fast", "exact"))
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_int("chunk", self.chunk, 1, 10**6)
        for g in self.groups:
            check_choice("group", g, ("spelling", "coherence"))
        for name in self.scenarios or ():
            check_choice("scenario", name, (*SPELLING_SCENARIOS, *COHERENCE_SCENARIOS))

    def replace(self, **kw) -> "CalibrationSettings":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------
# Scenarios and which claim they calibrate
# ---------------------------------------------------------------------------
#: name -> (kind, strength, shape across checkpoints) of `analysis.calibration.simulate_flags`.
SPELLING_SCENARIOS: dict[str, tuple[str, float, str]] = {
    "independent": ("independent", 0.0, "constant"),
    "propensity 0.3": ("propensity", 0.3, "constant"),
    "propensity 0.5": ("propensity", 0.5, "constant"),
    "markov 1 constant": ("markov", 1.0, "constant"),
    "markov 0.25 rise": ("markov", 0.25, "rise"),
    "markov 0.5 rise": ("markov", 0.5, "rise"),
    "markov 1 rise": ("markov", 1.0, "rise"),
    "markov 0.25 fall": ("markov", 0.25, "fall"),
    "markov 0.5 fall": ("markov", 0.5, "fall"),
    "markov 1 fall": ("markov", 1.0, "fall"),
    "refractory 0.8 rise": ("refractory", 0.8, "rise"),
    "refractory 0.65 rise": ("refractory", 0.65, "rise"),
    "refractory 0.5 rise": ("refractory", 0.5, "rise"),
}

#: name -> planted structure of the focus tap (and of the input tap when ``input`` is True):
#: ``excess`` of mean |R| from a common factor, shared ``gain`` SD, ``space`` Cohen's d of a
#: next-space response in `SPACE_CHANNELS` channels; ``shape`` across checkpoints.
COHERENCE_SCENARIOS: dict[str, dict] = {
    "independent": {"excess": 0.0, "gain": 0.0, "space": 0.0, "shape": "constant", "input": False},
    "shared gain": {"excess": 0.0, "gain": 0.5, "space": 0.0, "shape": "constant", "input": False},
    "factor 0.01 rise": {"excess": 0.01, "gain": 0.0, "space": 0.0, "shape": "rise", "input": False},
    "factor 0.02 rise": {"excess": 0.02, "gain": 0.0, "space": 0.0, "shape": "rise", "input": False},
    "factor 0.05 rise": {"excess": 0.05, "gain": 0.0, "space": 0.0, "shape": "rise", "input": False},
    "factor 0.05 equal to input": {"excess": 0.05, "gain": 0.0, "space": 0.0, "shape": "rise", "input": True},
    "space 1 rise": {"excess": 0.0, "gain": 0.0, "space": 1.0, "shape": "rise", "input": False},
    "space 2 rise": {"excess": 0.0, "gain": 0.0, "space": 2.0, "shape": "rise", "input": False},
    "space 2 equal to input": {"excess": 0.0, "gain": 0.0, "space": 2.0, "shape": "rise", "input": True},
}
SPACE_CHANNELS = 8

#: Per claim: its group, the no-effect scenarios (a "supported" there is a false one) and the
#: planted effect (a family of scenarios of increasing strength: power and minimum detectable effect).
CLAIM_PLAN: dict[int, dict] = {
    1: {"group": "coherence",
        "nulls": {"as_stated": ["independent", "shared gain"],
                  "beyond_null": ["independent", "shared gain", "factor 0.05 equal to input"]},
        "effect": {"what": "excess of mean |R| over independent channels",
                   "at": "at the last checkpoint, rising from 0",
                   "stronger": "larger",
                   "scenarios": [(0.01, "factor 0.01 rise"), (0.02, "factor 0.02 rise"), (0.05, "factor 0.05 rise")]}},
    4: {"group": "coherence",
        "nulls": {"as_stated": ["independent"], "beyond_null": ["independent", "space 2 equal to input"]},
        "effect": {"what": "next-space response (Cohen's d, 8 channels)", "at": "at the last checkpoint, rising from 0",
                   "stronger": "larger", "scenarios": [(1.0, "space 1 rise"), (2.0, "space 2 rise")]}},
    2: {"group": "spelling",
        "nulls": {lv: ["independent", "propensity 0.3", "propensity 0.5"] for lv in ("as_stated", "beyond_null")},
        "effect": {"what": "refractory relative risk", "at": "at the last checkpoint, falling from 1",
                   "stronger": "smaller",
                   "scenarios": [(0.8, "refractory 0.8 rise"), (0.65, "refractory 0.65 rise"),
                                 (0.5, "refractory 0.5 rise")]}},
    3: {"group": "spelling",
        "nulls": {lv: ["independent", "propensity 0.3", "propensity 0.5", "markov 1 constant"]
                  for lv in ("as_stated", "beyond_null")},
        "effect": {"what": "Markov cascade (log-odds step)", "at": "at the last checkpoint, rising from 0",
                   "stronger": "larger",
                   "scenarios": [(0.25, "markov 0.25 rise"), (0.5, "markov 0.5 rise"), (1.0, "markov 1 rise")]}},
    5: {"group": "spelling",
        "nulls": {lv: ["independent", "markov 1 constant"] for lv in ("as_stated", "beyond_null")},
        "effect": {"what": "Markov cascade (log-odds step)", "at": "at the first checkpoint, falling to 0",
                   "stronger": "larger",
                   "scenarios": [(0.25, "markov 0.25 fall"), (0.5, "markov 0.5 fall"), (1.0, "markov 1 fall")]}},
}
LEVELS = ("as_stated", "beyond_null")


def rules_fingerprint() -> str:
    """sha256 (16 hex) of what a verdict depends on: every module of `gptwaves.analysis` (statistics,
    nulls, rules, synthetic truth) and the summary's verdict entry point; a change to any of them
    invalidates stored replicates and marks an old calibration as such in summary.json."""
    from .. import analysis
    from .summary import findings_from

    h = hashlib.sha256()
    for f in sorted(Path(analysis.__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(inspect.getsource(findings_from).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------
# Adapters: a synthetic run -> the stage results the summary's verdict entry point reads
# ---------------------------------------------------------------------------
def _verdicts(findings: dict, ids) -> dict:
    return {str(c["id"]): {lv: c[lv]["verdict"] for lv in LEVELS} for c in findings["claims"] if c["id"] in ids}


def spelling_findings(checkpoints: list[dict], alpha: float, crossing: dict | None) -> dict:
    """Verdicts of claims 2, 3 and 5 on spelling results ``[{"iteration", "stats"}]`` (the
    summary's `findings_from`, no waves): ``{"2": {"as_stated": v, "beyond_null": v}, ...}``."""
    from .summary import findings_from

    res = [{"name": f"iter_{c['iteration']:07d}", "iteration": c["iteration"], "stats": c["stats"],
            "settings": {"alpha": alpha}} for c in checkpoints]
    return _verdicts(findings_from({"checkpoints": []}, {"checkpoints": res, "crossing": crossing}), (2, 3, 5))


def waves_findings(checkpoints: list[dict], focus: str) -> dict:
    """Verdicts of claims 1 and 4 on wave results ``[{"iteration", "taps": {tap: tap_summary}}]``."""
    from .summary import findings_from

    res = [{"name": f"iter_{c['iteration']:07d}", "iteration": c["iteration"], "taps": c["taps"],
            "focus_tap": focus} for c in checkpoints]
    return _verdicts(findings_from({"checkpoints": res}, {"checkpoints": []}), (1, 4))


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
    from ..analysis import waves as wv
    from ..record import Recording
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
                    acf = wv.autocorrelation(x, nlags=1, mask=mask)
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
    g = s * (int(pos.max(initial=0)) + 1) + pos
    _, gi = np.unique(g, return_inverse=True)
    n_g = np.bincount(gi).astype(float)
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

        orig = sp.stratified_null, sp.cascade_null
        sp.stratified_null, sp.cascade_null = self.stratified, self.cascade
        try:
            yield
        finally:
            sp.stratified_null, sp.cascade_null = orig


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


def coherence_chunk(tpl: dict, scenario: str, r0: int, r1: int, settings: CalibrationSettings,
                    cache: dict | None = None) -> list[dict]:
    """Verdicts of claims 1 and 4 on replicates ``r0 .. r1 - 1`` of one coherence scenario: every
    checkpoint's focus and input taps drawn and analysed by `analysis.waves.analyze_tap` with the
    run's wave settings (the number of clusters fixed: no verdict reads it).

    A tap's draw depends only on (checkpoint, replicate, tap, planted structure), so a tap with the
    same truth in several scenarios (the input tap of most of them, every tap at a strength of 0) is
    drawn and analysed once when the scenarios share ``cache`` (a dict kept across calls).
    """
    from ..analysis import calibration as ca
    from ..analysis import waves as wv
    from .waves import WavesSettings

    sc = COHERENCE_SCENARIOS[scenario]
    cks = tpl["checkpoints"]
    its = [c["iteration"] for c in cks]
    exc = ca.strength_profile(its, sc["excess"], sc["shape"])
    spc = ca.strength_profile(its, sc["space"], sc["shape"])
    truths = coherence_truths(tpl, scenario)
    fields = WavesSettings.__dataclass_fields__
    wset = WavesSettings(**{k: v for k, v in tpl["settings"].items() if k in fields}).analysis_kwargs()
    # no verdict reads the clustering: a fixed k skips the surrogates' silhouette search (docs/method.md)
    wset["k"] = wset.get("k") or 2
    focus, inp = tpl["focus"], tpl["input"]
    cache = {} if cache is None else cache
    out = []
    for r in range(r0, r1):
        rows = []
        for i, ck in enumerate(cks):
            S, T, C = ck["shape"]
            taps = {}
            for ti, t in enumerate((focus, inp)):
                if t not in ck["phi"]:
                    continue
                truth = truths[(i, ti)]
                key = (i, r, ti, truth)
                if key not in cache:
                    rng = np.random.default_rng([settings.seed, 2, i, r, ti, *truth])
                    x = ca.ar1_waves(S, T, ck["phi"][t], rng)
                    if truth[0]:
                        ca.shared_gain(x, sc["gain"], rng)
                    if truth[1]:
                        sigma = ca.floor_sigma(ck["phi"][t], int(ck["mask"].sum()))
                        ca.add_factor(x, ca.rho_for_excess(float(exc[i]), sigma), rng)
                    if truth[2]:
                        ch = np.random.default_rng([settings.seed, 3]).choice(C, min(SPACE_CHANNELS, C),
                                                                              replace=False)
                        ca.add_space_response(x, ck["next_chars"] == " ", float(spc[i]), ch)
                    res = wv.analyze_tap(x, ck["chars"], ck["next_chars"], mask=ck["mask"], **wset)
                    cache[key] = wv.tap_summary(res)
                taps[t] = cache[key]
            rows.append({"iteration": ck["iteration"], "taps": taps})
        out.append(waves_findings(rows, focus))
    return out


# ---------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------
def _file_name(group: str, scenario: str) -> str:
    return f"{group}.{scenario.replace(' ', '_')}.json"


def _identity(tpl: dict, group: str, settings: CalibrationSettings) -> dict:
    """The settings a replicates file is reused under (its inputs, the run's checkpoints and the
    rules fingerprint, are stored beside them: docs/method.md, Reuse of earlier results)."""
    return {"group": group, "engine": settings.engine if group == "spelling" else "exact", "seed": settings.seed,
            "chunk": settings.chunk,
            "analysis": {k: tpl[k] for k in ("alpha", "n_boot", "n_perm", "seed") if k in tpl}
            if group == "spelling" else tpl["settings"]}


def _valid_replicates(obj) -> None:
    v = obj.get("verdicts")
    if not isinstance(v, list) or obj.get("done") != len(v) or not all(isinstance(x, dict) for x in v):
        raise GptwavesError("replicates file without its verdicts")


def calibrate_run(run_dir: str | os.PathLike, settings: CalibrationSettings = CalibrationSettings(), *,
                  corpus=None, progress: bool = True) -> dict:
    """Simulate every verdict rule on synthetic truth built from the run (module docstring) and
    write ``calibration/``; returns the calibration dict (also in ``calibration/calibration.json``)."""
    from tqdm.auto import tqdm

    from ..runtime import Interrupted, graceful_stop

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
        total = sum(n for *_, n in jobs)
        bar = tqdm(total=total, desc="calibrate", unit="rep", disable=not progress, dynamic_ncols=True)
        replicates: dict[str, dict] = {}
        shared_cache: dict[int, list] = {}
        coh_cache: dict = {}  # tap summaries shared by the coherence scenarios (same truth, same draw)
        for g, scen, n in jobs:
            tpl = tpls[g]
            key = _identity(tpl, g, settings)
            path = out_dir / "replicates" / _file_name(g, scen)
            inputs = {"scenario": scen, "rules": rules_fingerprint(), "run": tpl["identity"]}
            old = reusable(path, "calibration", key, validate=_valid_replicates, **json_ready(inputs))
            verdicts = list(old["verdicts"])[:n] if old else []
            seconds = float(old.get("seconds", 0.0)) if old else 0.0
            bar.update(len(verdicts))
            while len(verdicts) < n:
                if stop:
                    raise Interrupted("calibration interrupted; re-run to resume")
                r0 = len(verdicts)
                r1 = min(n, r0 + settings.chunk)
                bar.set_postfix_str(f"{g}: {scen}")
                t0 = time.perf_counter()
                if g == "spelling":
                    shared = None
                    if settings.engine == "fast":
                        if 0 not in shared_cache:
                            shared_cache[0] = _shared_nulls(tpl, settings)
                        shared = shared_cache[0]
                    verdicts += spelling_chunk(tpl, scen, r0, r1, settings, shared)
                else:
                    verdicts += coherence_chunk(tpl, scen, r0, r1, settings, coh_cache)
                seconds += time.perf_counter() - t0
                seeds = {"base": settings.seed, "rule": "spelling: numpy default_rng([seed, 1, scenario index, "
                                                        "checkpoint index, replicate]); "
                                                        "coherence: default_rng([seed, 2, checkpoint index, "
                                                        "replicate, tap (0 focus, 1 input), planted gain, "
                                                        "excess and space response x 1e6])"}
                atomic_write_json(path, stamp("calibration", {"settings": key, **json_ready(inputs), "seeds": seeds,
                                                              "done": len(verdicts), "seconds": seconds,
                                                              "verdicts": verdicts}))
                bar.update(r1 - r0)
            replicates[f"{g}:{scen}"] = {"group": g, "scenario": scen, "verdicts": verdicts, "seconds": seconds}
        bar.close()
        result = summarise(replicates, settings, tpls)
        result["seconds"] = time.perf_counter() - t_start
        result = stamp("calibration", result)
        atomic_write_json(out_dir / "calibration.json", result)
    return result


def json_ready(obj):
    """``obj`` as it reads back from JSON (tuples as lists), so that stored inputs compare equal."""
    import json

    return json.loads(json.dumps(obj))


def _shared_nulls(tpl: dict, settings: CalibrationSettings) -> list:
    from ..analysis import calibration as ca

    out = []
    for i, ck in enumerate(tpl["checkpoints"]):
        rng = np.random.default_rng([settings.seed, 0, i])
        flags = ca.simulate_flags(ck["word_sample"], ck["base_logit"], ck["n_samples"], 1, rng)[0]
        out.append(_SharedNulls(ck, tpl, flags))
    return out


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
