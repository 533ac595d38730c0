"""Summary stage: ``DIR/summary.json``, the machine-readable result of a run, built from the run
directory alone (so it works after the step-by-step commands as after ``reproduce``).

It reads what the stages left: ``run.json`` and the checkpoints (training), ``metrics.jsonl``,
``waves/<name>/summary.json`` and ``waves/repeatability.json``, ``spelling/<name>.json``, and
``reproduce.json`` (analysis sizes and stage timings, when the run was made by ``reproduce``).
Schema: docs/outputs.md.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .. import __version__, schema
from ..errors import GptwavesError
from ..jsonable import finite_or_none
from ..io import atomic_write_json, check_run_dir, read_json
from . import checks
from .checks import read_checked
from ..names import is_main_name
from ..versions import analysis_version, is_current, package_versions
from .common import focus_tap, input_floor

__all__ = ["build_summary", "write_summary", "read_stage_results", "findings_from", "spelling_entry",
           "waves_entry", "SUMMARY_FORMAT", "SUMMARY_VERSION"]

SUMMARY_FORMAT = "gptwaves-summary"
#: 2: two verdicts per claim (as stated / beyond the null), floors and null references next to
#: every coherence and spelling number (docs/outputs.md). 1 (no field): one verdict per claim.
SUMMARY_VERSION = 2

CLAIM_TITLES = schema.CLAIM_TITLES  # declared once, in gptwaves.schema




def _read_obj(path: Path, what: str, validator=None, *args, stage: str | None = None) -> dict | None:
    """A JSON object written by a stage, or None when missing; a damaged one (or one that
    ``validator``, from :mod:`.checks`, refuses) is a one-line error; so is anything there that is
    not a regular file (a FIFO, a folder, a link out of the run), never taken as missing."""
    if not os.path.lexists(path):
        return None
    if validator is not None:
        return read_checked(path, what, validator, *args, stage=stage)
    obj = read_json(path, what)
    if not isinstance(obj, dict):
        raise GptwavesError(f"{what} {path} is not a JSON object; delete it and re-run its stage")
    return obj


def _current(result: dict, stage: str, path: Path, rerun: str) -> dict:
    """``result`` when the current analysis version of ``stage`` made it; a result of an older
    analysis is never summarised (docs/method.md, Reuse of earlier results): one line instead."""
    if not is_current(result, stage):
        v = result.get("analysis_version")
        made = "an analysis without a version" if v is None else f"analysis version {v}"
        raise GptwavesError(f"{path} was computed by {made}, the current is {analysis_version(stage)}; "
                            f"re-run `gptwaves {rerun}` (it recomputes it)")
    return result


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
            r = _read_obj(d / "summary.json", "waves summary", checks.waves_summary, d.name,
                          stage=f"waves --run {run_dir}") if d.is_dir() else None
            if r is not None:
                waves.append(_current(r, "waves", d / "summary.json", f"waves --run {run_dir}"))
    if sdir.is_dir():
        for p in sorted(sdir.glob("*.json")):
            if p.name.endswith(".samples.json") or p.name == "crossing.json":
                continue
            r = _read_obj(p, "spelling result", checks.spelling_result, p.name[: -len(".json")],
                          stage=f"spelling --run {run_dir}")
            if r is not None:
                spelling.append(_current(r, "spelling", p, f"spelling --run {run_dir}"))
    waves, spelling = _by_iteration(waves), _by_iteration(spelling)
    spelling = [r for r in spelling if is_main_name(str(r.get("name"))) or r.get("iteration") is None]
    crossing = None
    try:
        stored = _read_obj(sdir / "crossing.json", "spelling crossing", checks.crossing_file)
    except GptwavesError:
        stored = None  # a damaged crossing is computed again from the checkpoints below
    if stored and is_current(stored, "spelling") and stored.get("checkpoints") == [r.get("name") for r in spelling]:
        crossing = stored.get("crossing")
    elif sum(r.get("iteration") is not None for r in spelling) >= 2:  # stages run on other subsets
        sett = spelling[-1].get("settings") or {}
        cks = [r for r in spelling if r.get("iteration") is not None]
        crossing = sp.crossing([r["iteration"] for r in cks], [r["stats"]["counts"]["correct"] for r in cks],
                               alpha=sett.get("alpha", 0.05), n_boot=sett.get("n_boot", 2000),
                               seed=(sett.get("sampling") or {}).get("seed", 0))
    repeat = _read_obj(wdir / "repeatability.json", "repeatability", checks.repeatability_file,
                       stage="reproduce (repeatability comes from its seed and prompt variants)")
    return {"waves": {"checkpoints": waves, "repeatability": repeat},
            "spelling": {"checkpoints": spelling, "crossing": crossing}}


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
    """The summary of a run directory, from its files (see the module docstring). Every file read
    is a regular file inside the run (io.confine_reads): a symbolic link out of it (a waves folder
    linked in from another run) is refused in one line."""
    from ..io import confine_reads

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GptwavesError(f"run directory not found: {run_dir}")
    with confine_reads(run_dir):
        return _build_summary(run_dir)


def _build_summary(run_dir: Path) -> dict:
    from ..train import read_metrics, read_run_info

    stages = read_stage_results(run_dir)
    waves, spelling = stages["waves"], stages["spelling"]
    if not waves["checkpoints"] and not spelling["checkpoints"]:
        raise GptwavesError(f"{run_dir} has no waves or spelling results yet: run `gptwaves waves` and/or "
                            f"`gptwaves spelling` first (or `gptwaves reproduce`)")
    repro = _read_obj(run_dir / "reproduce.json", "reproduce record", checks.reproduce_file)
    run = read_run_info(run_dir) if (run_dir / "run.json").is_file() else {}
    train_settings = _train_settings(run_dir, repro)
    wv = {r["iteration"]: r for r in waves["checkpoints"] if is_main_name(str(r.get("name")))
          or r.get("iteration") is None}
    sp = {r["iteration"]: r for r in spelling["checkpoints"]}
    its = sorted(set(wv) | set(sp), key=lambda x: (x is None, x or 0))
    cks = []
    for it in its:
        w, s = wv.get(it), sp.get(it)
        entry = {"iteration": it,  # the losses: gptwaves.schema.CHECKPOINT_FIELDS, from the spelling result
                 **{f.summary: (s or {}).get(f.path) for f in schema.CHECKPOINT_FIELDS if f.path != "iteration"},
                 "waves": None, "spelling": None}
        if w:
            entry["waves"] = {t: waves_entry(v) for t, v in w["taps"].items()}
        if s:
            entry["spelling"] = spelling_entry(s["stats"])
        cks.append(entry)
    axis = "step" if isinstance((repro or {}).get("hf"), dict) else "iteration"  # a suite's revisions: steps
    findings = findings_from(waves, spelling, axis=axis)
    metrics = read_metrics(run_dir)
    tps = [r["tokens_per_s"] for r in metrics if r.get("kind") == "train" and r.get("tokens_per_s")]
    repro = repro or {}
    return {
        "format": SUMMARY_FORMAT,
        "format_version": SUMMARY_VERSION,
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
        "hf": repro.get("hf"),  # a Hugging Face suite: its revisions replace the training curve
        "checkpoints": cks,
        "repeatability": waves.get("repeatability"),
        "findings": findings,
        "calibration": _calibration(run_dir),
    }


def _calibration(run_dir: Path) -> dict | None:
    """Size and power of each verdict rule at this run's sizes (`gptwaves calibrate`), or None."""
    from .calibration import summary_entry

    return summary_entry(run_dir)


def write_summary(run_dir: str | Path) -> Path:
    """Build the summary from the run directory and write ``DIR/summary.json``; returns its path."""
    run_dir = check_run_dir(run_dir)
    return atomic_write_json(run_dir / "summary.json", build_summary(run_dir))


def waves_entry(tap: dict) -> dict:
    """The per-tap coherence numbers of summary.json: raw order parameters, the induced ones
    (evoked component removed), the evoked share, the sample-shuffle surrogate's mean, excess, CI,
    z and unfloored p for each induced order parameter, the same after gain normalisation with the
    paired CI of raw minus normalised, and the space probe (docs/method.md, "Coherence against its
    floors"): the fields of :data:`gptwaves.schema.TAP_FIELDS` that declare a summary path."""
    return schema.summary_entry(tap, schema.TAP_FIELDS)


def spelling_entry(st: dict) -> dict:
    """The per-checkpoint spelling numbers of summary.json: each count's dispersion next to its
    length-conditioned reference and permutation null, the word-total renewal reference, the
    cascade relative risk with its null (docs/method.md, Spelling): the fields of
    :data:`gptwaves.schema.SPELLING_FIELDS` that declare a summary path."""
    return schema.summary_entry(st, schema.SPELLING_FIELDS)


#: The reasons a claim carries when its stage was not run (a run with training and spelling only):
#: the seed table shows such a claim as "not run", not as a verdict.
NOT_RUN = ("No wave analysis.", "No spelling statistics.")


def _inconclusive(number: int, why: str) -> dict:
    from ..analysis import claims as cl

    part = {"verdict": cl.INCONCLUSIVE, "text": why}
    return cl.claim(number, CLAIM_TITLES[number], part, part)


def findings_from(waves: dict, spelling: dict, axis: str = "iteration") -> dict:
    """Two verdicts (as stated / beyond the null) with their numbers for each claim (docs/method.md, Findings).

    Claims 1 and 4 are judged at the focus tap against the input floor, the model's embedding tap
    (`input_floor`); ``axis`` names the training axis in the sentences ("step" for a Hugging Face
    suite, docs/method.md, "Trends across checkpoints")."""
    from ..analysis.claims import on_axis
    from ..analysis.spelling_claims import spelling_claims
    from ..analysis.waves_claims import waves_claims

    claims: list[dict] = []
    wres = [r for r in waves.get("checkpoints") or [] if r.get("iteration") is not None]
    if wres:
        taps = list(wres[-1]["taps"])
        claims += waves_claims([{"iteration": r["iteration"], "taps": r["taps"]} for r in wres], focus_tap(taps),
                               input_floor(taps))
    else:
        claims += [_inconclusive(1, NOT_RUN[0]), _inconclusive(4, NOT_RUN[0])]
    sres = [r for r in spelling.get("checkpoints") or [] if r.get("iteration") is not None]
    crossing = spelling.get("crossing")
    if sres:
        alpha = (sres[-1].get("settings") or {}).get("alpha", 0.05)
        claims += spelling_claims([{"iteration": r["iteration"], "stats": r["stats"]} for r in sres], alpha=alpha,
                                  crossing=crossing)
    else:
        claims += [_inconclusive(n, NOT_RUN[1]) for n in (2, 3, 5)]
    claims.sort(key=lambda c: c["id"])
    for c in claims:
        for part in ("as_stated", "beyond_null"):
            c[part]["text"] = on_axis(c[part]["text"], axis)
    return {"crossing": crossing,
            "crossing_iteration": finite_or_none((crossing or {}).get("iteration")),
            "claims": claims}
