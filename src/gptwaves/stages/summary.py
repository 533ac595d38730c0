"""Summary stage: ``DIR/summary.json``, the machine-readable result of a run, built from the run
directory alone (so it works after the step-by-step commands as after ``reproduce``).

It reads what the stages left: ``run.json`` and the checkpoints (training), ``metrics.jsonl``,
``waves/<name>/summary.json`` and ``waves/repeatability.json``, ``spelling/<name>.json``, and
``reproduce.json`` (analysis sizes and stage timings, when the run was made by ``reproduce``).
Schema: docs/outputs.md.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path

from .. import __version__
from ..errors import GptwavesError
from ..io import atomic_write_json, check_run_dir, read_json
from .common import is_main_name

__all__ = ["build_summary", "write_summary", "read_stage_results", "findings_from", "SUMMARY_FORMAT"]

SUMMARY_FORMAT = "gptwaves-summary"


def _f(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _fmt(v, nd=3):
    return "n/a" if v is None else f"{v:.{nd}f}"


def _read_obj(path: Path, what: str) -> dict | None:
    """A JSON object written by a stage, or None when missing; a damaged one is a one-line error."""
    if not path.is_file():
        return None
    obj = read_json(path, what)
    if not isinstance(obj, dict):
        raise GptwavesError(f"{what} {path} is not a JSON object; delete it and re-run its stage")
    return obj


def _by_iteration(results: list[dict]) -> list[dict]:
    return sorted(results, key=lambda r: (r.get("iteration") is None, r.get("iteration") or 0))


def read_stage_results(run_dir: Path) -> dict:
    """What the waves and spelling stages wrote: ``{"waves": {...}, "spelling": {...}}`` in the
    shape the stages return (checkpoints sorted by iteration, crossing iteration, repeatability)."""
    from ..analysis import spelling as sp

    run_dir = Path(run_dir)
    waves, spelling = [], []
    wdir, sdir = run_dir / "waves", run_dir / "spelling"
    if wdir.is_dir():
        for d in sorted(wdir.iterdir()):
            r = _read_obj(d / "summary.json", "waves summary") if d.is_dir() else None
            if r is not None and isinstance(r.get("taps"), dict):
                waves.append(r)
    if sdir.is_dir():
        for p in sorted(sdir.glob("*.json")):
            if p.name.endswith(".samples.json"):
                continue
            r = _read_obj(p, "spelling result")
            if r is not None and isinstance(r.get("stats"), dict):
                spelling.append(r)
    waves, spelling = _by_iteration(waves), _by_iteration(spelling)
    its = [r["iteration"] for r in spelling if r.get("iteration") is not None]
    fano_c = [r["stats"]["correct"]["fano"] for r in spelling if r.get("iteration") is not None]
    crossing = sp.crossing_iteration(its, fano_c) if len(its) >= 2 else None
    return {"waves": {"checkpoints": waves, "repeatability": _read_obj(wdir / "repeatability.json", "repeatability")},
            "spelling": {"checkpoints": spelling, "crossing_iteration": crossing}}


def _train_settings(run_dir: Path, reproduce_info: dict | None) -> dict | None:
    if reproduce_info and isinstance(reproduce_info.get("train"), dict):
        return reproduce_info["train"]
    run = _read_obj(run_dir / "run.json", "run file")
    if run is None or not isinstance(run.get("train"), dict):
        return None
    from ..checkpoint import list_checkpoints

    cks = list_checkpoints(run_dir / "checkpoints")
    return {**run["train"], "max_iters": cks[-1].iteration if cks else None}


def build_summary(run_dir: str | Path) -> dict:
    """The summary of a run directory, from its files (see the module docstring)."""
    from ..record import package_versions
    from ..train import read_metrics

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GptwavesError(f"run directory not found: {run_dir}")
    stages = read_stage_results(run_dir)
    waves, spelling = stages["waves"], stages["spelling"]
    if not waves["checkpoints"] and not spelling["checkpoints"]:
        raise GptwavesError(f"{run_dir} has no waves or spelling results yet: run `gptwaves waves` and/or "
                            f"`gptwaves spelling` first (or `gptwaves reproduce`)")
    repro = _read_obj(run_dir / "reproduce.json", "reproduce record")
    run = _read_obj(run_dir / "run.json", "run file") or {}
    train_settings = _train_settings(run_dir, repro)
    wv = {r["iteration"]: r for r in waves["checkpoints"] if is_main_name(str(r.get("name")))
          or r.get("iteration") is None}
    sp = {r["iteration"]: r for r in spelling["checkpoints"]}
    its = sorted(set(wv) | set(sp), key=lambda x: (x is None, x or 0))
    cks = []
    for it in its:
        w, s = wv.get(it), sp.get(it)
        entry = {"iteration": it,
                 "train_loss": (s or {}).get("train_loss"), "val_loss": (s or {}).get("val_loss"),
                 "waves": None, "spelling": None}
        if w:
            entry["waves"] = {t: {k: v[k] for k in ("mean_abs_corr", "lambda_max_share", "participation_ratio")}
                              for t, v in w["taps"].items()}
        if s:
            st = s["stats"]
            keep = ("mean", "var", "fano", "q", "fano_ci", "p_value", "verdict")
            entry["spelling"] = {
                "correct": {k: st["correct"][k] for k in keep},
                "misspelled": {k: st["misspelled"][k] for k in keep},
                "error_rate": st["error_rate"], "clustering_excess": st["clustering_excess"],
                "clustering_excess_correct": st.get("clustering_excess_correct"),
                "cascade_ratio": st["cascade_ratio"], "n_samples": st["n_samples"],
            }
        cks.append(entry)
    findings = findings_from(cks, waves, spelling)
    metrics = read_metrics(run_dir)
    tps = [r["tokens_per_s"] for r in metrics if r.get("kind") == "train" and r.get("tokens_per_s")]
    repro = repro or {}
    return {
        "format": SUMMARY_FORMAT,
        "gptwaves_version": __version__,
        "preset": (train_settings or {}).get("preset"),
        "corpus_sha256": run.get("corpus_sha256"),
        "corpus_path": run.get("corpus_path"),
        "settings": {"train": train_settings, "analysis": repro.get("analysis"),
                     "record": (waves["checkpoints"] or [{}])[0].get("record_settings"),
                     "spelling": (spelling["checkpoints"] or [{}])[0].get("settings")},
        "versions": package_versions(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "timings": repro.get("timings"),
        "timings_history": repro.get("timings_history", []),
        "training": {"median_tokens_per_s": sorted(tps)[len(tps) // 2] if tps else None},
        "checkpoints": cks,
        "repeatability": waves.get("repeatability"),
        "findings": findings,
    }


def write_summary(run_dir: str | Path) -> Path:
    """Build the summary from the run directory and write ``DIR/summary.json``; returns its path."""
    run_dir = check_run_dir(run_dir)
    return atomic_write_json(run_dir / "summary.json", build_summary(run_dir))


def findings_from(cks: list[dict], waves: dict, spelling: dict) -> dict:
    """One verdict with its numbers for each claim of the abstract."""
    claims = []
    wck = [c for c in cks if c["waves"]]
    # 1. coherence builds up with training
    if len(wck) >= 2:
        a, b = wck[0], wck[-1]
        taps = list(b["waves"])
        up = [t for t in taps if b["waves"][t]["mean_abs_corr"] > a["waves"][t]["mean_abs_corr"]]
        pr_down = [t for t in taps if b["waves"][t]["participation_ratio"] < a["waves"][t]["participation_ratio"]]
        ft = (waves.get("checkpoints") or [{}])[-1].get("focus_tap", taps[-1])
        wa, wb = a["waves"][ft], b["waves"][ft]
        n = len(taps)
        verdict = ("supported" if len(up) > n / 2 and len(pr_down) > n / 2 else
                   "not supported" if len(up) <= n / 2 and len(pr_down) <= n / 2 else "inconclusive")
        text = (f"From iteration {a['iteration']} to {b['iteration']}, mean |R| rose at {len(up)}/{n} taps and the "
                f"participation ratio fell at {len(pr_down)}/{n}; at {ft} mean |R| {_fmt(wa['mean_abs_corr'])} -> "
                f"{_fmt(wb['mean_abs_corr'])}, dominant-mode share {_fmt(wa['lambda_max_share'])} -> "
                f"{_fmt(wb['lambda_max_share'])}, participation ratio {_fmt(wa['participation_ratio'], 1)} -> "
                f"{_fmt(wb['participation_ratio'], 1)}.")
    else:
        verdict, text = "inconclusive", "Fewer than two checkpoints with wave analysis."
    claims.append({"claim": "Coherence builds up with training", "verdict": verdict, "text": text})

    sck = [c for c in cks if c["spelling"] and c["spelling"]["correct"]["fano"] is not None]
    crossing = spelling.get("crossing_iteration")

    def ci(d):
        c = d.get("fano_ci") or [None, None]
        return f"[{_fmt(c[0], 2)}, {_fmt(c[1], 2)}]"

    # 2. correct spellings: Poissonian -> sub-Poissonian
    if len(sck) >= 2:
        a, b = sck[0], sck[-1]
        ca, cb = a["spelling"]["correct"], b["spelling"]["correct"]
        ok = ca["verdict"] in ("Poissonian", "super-Poissonian") and cb["verdict"] == "sub-Poissonian"
        verdict = "supported" if ok else ("not supported" if cb["verdict"] != "sub-Poissonian" else "inconclusive")
        ce_a = a["spelling"].get("clustering_excess_correct")
        ce_b = b["spelling"].get("clustering_excess_correct")
        text = (f"F_correct {_fmt(ca['fano'])} {ci(ca)} ({ca['verdict']}, p={_fmt(ca['p_value'], 3)}) at iteration "
                f"{a['iteration']} -> {_fmt(cb['fano'])} {ci(cb)} ({cb['verdict']}, p={_fmt(cb['p_value'], 3)}) at "
                f"iteration {b['iteration']}; "
                + (f"F_correct crosses 1 near iteration {crossing:.0f}" if crossing is not None else
                   "no crossing of F = 1 observed")
                + f". Against the independent-error reference, F/F_ref = {_fmt(ce_a)} -> {_fmt(ce_b)}.")
    else:
        verdict, text = "inconclusive", "Fewer than two checkpoints with spelling statistics."
    claims.append({"claim": "Correct spellings go from Poissonian to sub-Poissonian", "verdict": verdict,
                   "text": text})

    # 3. misspellings: the opposite trend
    mck = [c for c in cks if c["spelling"] and c["spelling"]["misspelled"]["fano"] is not None]
    if len(mck) >= 2:
        a, b = mck[0], mck[-1]
        ma, mb = a["spelling"]["misspelled"], b["spelling"]["misspelled"]
        rising = mb["fano"] > ma["fano"]
        sig = (ma.get("fano_ci") and mb.get("fano_ci") and ma["fano_ci"][1] is not None and mb["fano_ci"][0] is not None
               and mb["fano_ci"][0] > ma["fano_ci"][1])
        verdict = "supported" if rising and sig else ("inconclusive" if rising else "not supported")
        text = (f"F_misspelled {_fmt(ma['fano'])} {ci(ma)} ({ma['verdict']}) at iteration {a['iteration']} -> "
                f"{_fmt(mb['fano'])} {ci(mb)} ({mb['verdict']}) at iteration {b['iteration']}; error rate "
                f"{_fmt(a['spelling']['error_rate'])} -> {_fmt(b['spelling']['error_rate'])}; clustering excess "
                f"F/F_ref {_fmt(a['spelling']['clustering_excess'])} -> {_fmt(b['spelling']['clustering_excess'])}; "
                f"cascade ratio {_fmt(a['spelling']['cascade_ratio'])} -> {_fmt(b['spelling']['cascade_ratio'])}.")
    else:
        verdict, text = "inconclusive", "Fewer than two checkpoints with misspelling statistics."
    claims.append({"claim": "Misspellings show the opposite trend (towards Poissonian / super-Poissonian)",
                   "verdict": verdict, "text": text})

    # 4. space-associated channels stand out: word rhythm in the ACFs and space labels
    wres = waves.get("checkpoints") or []
    if wres:
        first, last = wres[0], wres[-1]
        ft = last.get("focus_tap") or list(last["taps"])[-1]

        def space_count(r, tap):
            v = r["taps"][tap]["label_counts"]
            return v.get("space", 0) + v.get("next:space", 0)

        def sim(r):
            return r["taps"][ft].get("max_space_similarity")

        s0, s1 = sim(first), sim(last)
        n_last = space_count(last, ft)
        classes = last["taps"][ft]["max_abs_d_by_class"]
        d_space = classes.get("space", 0.0)
        best_other = max((c for c in classes if c != "space"), key=classes.get, default=None)
        rhythm = s1 is not None and s1 >= 0.8 and (s0 is None or s1 - s0 >= 0.3)
        verdict = ("supported" if rhythm and n_last > 0 else
                   "not supported" if (s1 is None or s1 < 0.5) and n_last == 0 else "inconclusive")
        text = (f"At {ft}, the channel ACF closest to the space-indicator ACF (word rhythm) has similarity "
                f"{_fmt(s0, 2)} at iteration {first['iteration']} -> {_fmt(s1, 2)} at iteration {last['iteration']}; "
                f"{n_last} channels are labelled space or next:space (|d| >= 1) at iteration {last['iteration']} "
                f"(vs {space_count(first, ft)} at iteration {first['iteration']}, where the residual stream still "
                f"mostly carries the input embedding); largest space |d| = {_fmt(d_space, 2)}"
                + (f", strongest other class {best_other} |d| = {_fmt(classes[best_other], 2)}" if best_other else "")
                + ".")
    else:
        verdict, text = "inconclusive", "No wave analysis."
    claims.append({"claim": "Space-associated channels stand out", "verdict": verdict, "text": text})
    return {"crossing_iteration": _f(crossing), "claims": claims}
