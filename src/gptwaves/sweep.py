"""``gptwaves sweep``: the same analysis across a family of runs that differ in one setting.

Each member is a normal run directory (``OUT/members/NAME=VALUE``, made by
:func:`gptwaves.reproduce.reproduce`, with its own summary and report), trained on a dense early
checkpoint schedule so that early changes are located, not guessed. ``collect`` reads the finished
members, measures every across-training curve's change (:mod:`gptwaves.analysis.transition`) and
fits how its location, width and height scale with the varied setting: does the change sharpen
with size (a transition) or not (a crossover)? The sweep owns ``OUT/sweep.json`` (its settings),
``OUT/sweep/`` (figures and the report page) and ``OUT/summary.json`` (its ``sweep`` entry).
Method: docs/method.md, "Sweeps: is it a phase transition?".
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .analysis import transition as tr
from .config import NON_IDENTITY_FIELDS, TrainConfig, preset
from .errors import GptwavesError, SettingsError
from .io import RunLock, atomic_write_json, atomic_write_text, check_run_dir, read_json
from .reproduce import ANALYSIS_PRESETS, AnalysisSettings
from .stages.common import focus_tap, guarded, resolve_lexicon

#: Settings a sweep cannot vary: they do not define a member (or the schedule is the sweep's own).
_NOT_VARIED = frozenset({"preset", "checkpoints", "progress", "device"}) | (NON_IDENTITY_FIELDS - {"max_iters"})

FORMAT = "gptwaves-sweep"
FORMAT_VERSION = 1


def dense_schedule(max_iters: int) -> tuple[int, ...]:
    """0, 1, 2, 3, then round(10 x 2**(k/2)) for k >= -2 (5, 7, 10, 14, 20, 28, 40, 57, 80, 113,
    160, ...) below ``max_iters``, then ``max_iters``: log-spaced from the first iterations on."""
    its = {0, 1, 2, 3}
    k = -2
    while (v := int(round(10 * 2 ** (k / 2)))) < max_iters:
        its.add(v)
        k += 1
    return tuple(sorted(i for i in its | {max_iters} if i <= max_iters))


def parse_vary(spec: str, base: TrainConfig) -> tuple[str, tuple]:
    """``"n_embd=32,64,128"`` -> (field name, typed values), checked against the training settings."""
    if not isinstance(spec, str) or "=" not in spec:
        raise SettingsError(f"--vary must look like NAME=V1,V2,..., not {spec!r}")
    name, _, vals = spec.partition("=")
    name = name.strip().replace("-", "_")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if name not in fields or name in _NOT_VARIED:
        allowed = sorted(fields - _NOT_VARIED)
        raise SettingsError(f"--vary: {name!r} is not a training setting a sweep can vary "
                            f"(choose from {', '.join(allowed)})")
    kind = type(getattr(base, name))
    out = []
    for v in (x.strip() for x in vals.split(",")):
        if not v:
            raise SettingsError(f"--vary {name}: empty value in {vals!r}")
        try:
            if kind is bool:
                if v.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                out.append(v.lower() in ("true", "1"))
            elif kind is int:
                out.append(int(v))
            elif kind is float:
                f = float(v)
                if not math.isfinite(f):
                    raise ValueError
                out.append(f)
            else:
                out.append(v)
        except ValueError:
            raise SettingsError(f"--vary {name}: {v!r} is not a valid {kind.__name__}") from None
    if len(out) < 2 or len(set(out)) != len(out):
        raise SettingsError(f"--vary {name}: give at least two distinct values, not {vals!r}")
    if len(out) > 64:
        raise SettingsError(f"--vary {name}: at most 64 members, not {len(out)}")
    return name, tuple(out)


@dataclass
class SweepSettings:
    """What a sweep is: a preset, one varied training setting and its values, the schedule.

    ``schedule`` "dense" (default) trains every member with :func:`dense_schedule`; "preset"
    keeps the preset's own checkpoints. ``analysis`` holds the members' analysis sizes (default:
    the preset's). ``n_boot`` and ``seed`` are the bootstrap of the family analysis.
    """

    preset: str = "quick"
    vary: str = "n_embd"
    values: tuple = (32, 64, 128, 256)
    train_overrides: dict = field(default_factory=dict)
    schedule: str = "dense"
    analysis: AnalysisSettings | None = None
    n_boot: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in ("dense", "preset"):
            raise SettingsError(f"--schedule must be dense or preset, not {self.schedule!r}")
        if not isinstance(self.n_boot, int) or not 20 <= self.n_boot <= 100_000:
            raise SettingsError(f"--boot must be an integer from 20 to 100000, not {self.n_boot!r}")
        self.values = tuple(self.values)
        self.members()  # every member's settings are checked before any work

    def member_config(self, value) -> TrainConfig:
        base = preset(self.preset).override(**self.train_overrides)
        cfg = base.override(**{self.vary: value})
        if self.schedule == "dense":
            cfg = cfg.override(checkpoints=dense_schedule(cfg.max_iters))
        return cfg

    def members(self) -> list[tuple[str, TrainConfig]]:
        return [(f"{self.vary}={v}", self.member_config(v)) for v in self.values]

    def analysis_settings(self) -> AnalysisSettings:
        an = self.analysis or ANALYSIS_PRESETS.get(self.preset, AnalysisSettings())
        # members are not calibrated: the family analysis reads no verdict (docs/method.md, Calibration)
        return dataclasses.replace(an, calibration=None) if an.calibration is not None else an

    def identity(self) -> dict:
        """What must match for an existing sweep folder to be continued (as JSON would store it)."""
        return json.loads(json.dumps({"preset": self.preset, "vary": self.vary, "values": list(self.values),
                "train_overrides": dict(sorted(self.train_overrides.items())), "schedule": self.schedule,
                "analysis": self.analysis_settings().to_dict()}))


def _claim_folder(out: Path, s: SweepSettings) -> None:
    """Write ``OUT/sweep.json`` on first use; refuse a folder that holds a different sweep."""
    p = out / "sweep.json"
    if p.exists():
        old = read_json(p, "sweep settings", dict)
        if old.get("identity") != s.identity():
            raise GptwavesError(f"{out} holds a different sweep (its sweep.json differs in preset, "
                                "varied setting, values, schedule or analysis sizes); use a new --out")
        return
    atomic_write_json(p, {"format": FORMAT, "format_version": FORMAT_VERSION, "identity": s.identity()})


def member_dir(out: Path, name: str) -> Path:
    return Path(out) / "members" / name


def run_member(s: SweepSettings, k: int, out, corpus=None, *, device: str = "auto",
               progress: bool = True) -> dict:
    """Run member ``k`` (0-based) to its finished report; re-running resumes and reuses."""
    from .reproduce import reproduce

    out = check_run_dir(out)
    members = s.members()
    if not 0 <= k < len(members):
        raise SettingsError(f"--member must be from 0 to {len(members) - 1}, not {k}")
    _claim_folder(out, s)
    name, cfg = members[k]
    if progress:
        print(f"sweep member {k + 1}/{len(members)}: {name}", file=sys.stderr, flush=True)
    overrides = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                 if f.name not in ("preset", "device", "progress")}
    return reproduce(s.preset, corpus, member_dir(out, name), train_overrides=overrides,
                     analysis=s.analysis_settings(), device=device, progress=progress)


def run_sweep(s: SweepSettings, out, corpus=None, *, device: str = "auto", progress: bool = True,
              jobs: int = 1, cli_args: Sequence[str] | None = None) -> dict:
    """Every member (in sequence, or ``jobs`` processes at once), then :func:`collect`.

    With ``jobs > 1`` each member runs as ``gptwaves sweep ... --member K`` in its own process
    (``cli_args`` are the sweep's own arguments), with the CPU threads split between them, its
    progress and errors in ``OUT/members/NAME.log`` and the last line of each running member's log
    repeated here every `REPORT_EVERY` seconds; on a machine with several GPUs, the process in slot
    ``j`` sees GPU ``j mod n`` only.
    """
    out = check_run_dir(out)
    _claim_folder(out, s)
    n = len(s.values)
    if jobs <= 1:
        for k in range(n):
            run_member(s, k, out, corpus, device=device, progress=progress)
    else:
        _run_parallel(s, out, jobs, list(cli_args or []), progress)
    return collect(s, out, progress=progress)


#: Seconds between the lines that say where each member running in its own process is.
REPORT_EVERY = 60.0


def member_log(out: Path, name: str) -> Path:
    """The log of a member run in its own process (``sweep --jobs``): its progress and errors."""
    return Path(out) / "members" / f"{name}.log"


def _last_line(path: Path, tail: int = 4096) -> str:
    """The last non-empty line of a log (progress lines may end in a carriage return)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    return lines[-1] if lines else ""


def _run_parallel(s: SweepSettings, out: Path, jobs: int, args: list[str], progress: bool) -> None:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    gpus = _gpu_count()
    names = [name for name, _ in s.members()]
    (Path(out) / "members").mkdir(parents=True, exist_ok=True)

    def start(k: int, slot: int) -> subprocess.Popen:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
        cmd = [sys.executable, "-m", "gptwaves", "sweep", *args, "--member", str(k)] + ([] if progress else ["--quiet"])
        with open(member_log(out, names[k]), "ab") as log:  # the child keeps its own handle
            return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def report(running: list[int]) -> None:
        for k in running:
            print(f"sweep: {names[k]} (member {k + 1}/{len(names)}): {_last_line(member_log(out, names[k]))}",
                  file=sys.stderr, flush=True)

    failed = _run_each(len(names), jobs, start, progress, report=report if progress else None,
                       names=names, logs=[member_log(out, nm) for nm in names])
    if failed:
        raise GptwavesError(f"sweep members {', '.join(map(str, failed))} failed (their errors are in "
                            f"{', '.join(str(member_log(out, names[k])) for k in failed)}); re-run the same command "
                            "to resume")


def _run_each(n: int, jobs: int, start, progress: bool, poll: float = 0.5, report=None,
              report_every: float | None = None, names=None, logs=None) -> list[int]:
    """Members ``0 .. n - 1`` with at most ``jobs`` running at once: ``start(k, slot)`` starts member
    ``k`` in slot ``slot`` (a process), and the next member starts in the first slot that frees, so
    a long member never holds the others back. ``report(running members)`` is called every
    ``report_every`` seconds (default `REPORT_EVERY`). Returns the members whose process failed."""
    import time

    every = REPORT_EVERY if report_every is None else float(report_every)
    pending, running, failed = list(range(n)), {}, []
    last = time.monotonic()
    while pending or running:
        for slot in range(jobs):
            if pending and slot not in running:
                k = pending.pop(0)
                running[slot] = (k, start(k, slot))
                if progress:
                    print(f"sweep: started member {k + 1}/{n}" + (f" ({names[k]})" if names else "")
                          + (f"; progress in {logs[k]}" if logs else ""), file=sys.stderr, flush=True)
        done = [(slot, k, p) for slot, (k, p) in running.items() if p.poll() is not None]
        if report is not None and time.monotonic() - last >= every:
            report(sorted(k for k, _ in running.values()))
            last = time.monotonic()
        if not done:
            time.sleep(poll)
            continue
        for slot, k, p in done:
            del running[slot]
            if p.returncode != 0:
                failed.append(k)
            if progress:
                print(f"sweep: member {k + 1}/{n}" + (f" ({names[k]})" if names else "")
                      + f" {'failed' if k in failed else 'finished'}", file=sys.stderr, flush=True)
    return sorted(failed)


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no torch CUDA: plain CPU processes
        return 0


# ----------------------------------------------------------------------------
# collect: the family analysis
# ----------------------------------------------------------------------------

#: Curves measured in every member: key -> (label, source). "per-sample" curves have bootstrap
#: CIs; "summary" curves are read from the member's summary.json (point values, no CI).
CURVES = {
    "coherence_excess": ("per-sample induced mean |R| excess over a circular-shift floor (focus tap)",
                         "per-sample"),
    "error_rate": ("per-sample spelling error rate", "per-sample"),
    "participation_ratio": ("induced participation ratio (focus tap)", "summary"),
    "induced_excess": ("induced mean |R| excess over the sample-shuffle surrogate (focus tap)", "summary"),
    "val_loss": ("validation loss", "summary"),
}
#: The curve whose scaling gives the sweep's headline verdict.
HEADLINE = "coherence_excess"


def _finished(out: Path, name: str) -> Path:
    d = member_dir(out, name)
    if not (d / "summary.json").is_file():
        raise GptwavesError(f"sweep member {name} is not finished ({d / 'summary.json'} is missing); "
                            "run it first (gptwaves sweep ... --member K, or without --collect)")
    return d


def _per_sample_curves(run: Path, iterations: list[int], seed: int, progress: bool) -> dict:
    """Per-sample coherence excess (focus tap) and error rate at every main checkpoint."""
    from .analysis.spelling import score_samples
    from .recording import open_recording
    from .runtime import progress_bar

    coh, err = [], []
    lex = None
    for it in progress_bar(iterations, desc=f"collect {run.name}", unit="ckpt", disable=not progress):
        name = f"iter_{it:07d}"
        with open_recording(run / "recordings" / f"{name}.h5") as rec:
            tap = focus_tap(rec.taps)
            x = rec.waves(tap)
            mask = ~np.asarray(rec.is_prompt)
        mask = np.broadcast_to(mask, x.shape[:2]) if mask.ndim == 1 else mask
        coh.append(tr.per_sample_coherence(x, mask, seed=seed)["excess"])
        sj = read_json(run / "spelling" / f"{name}.json", "spelling result", dict)
        texts = read_json(run / "spelling" / f"{name}.samples.json", "spelling samples", dict)["texts"]
        st = sj["settings"]
        if lex is None:
            lex = resolve_lexicon(run, None if st.get("lexicon") == "training split" else st.get("lexicon"),
                                  None)[0]
        sc = score_samples(texts, lex, int(sj["stats"]["prompt_len"]), int(st["length"]))
        keep = sc.n_words > 0
        err.append(sc.n_misspelled[keep] / sc.n_words[keep])
    return {"coherence_excess": coh, "error_rate": err}


def _summary_curves(summary: dict) -> tuple[list[int], dict]:
    cks = [c for c in summary.get("checkpoints", []) if c.get("iteration") is not None]
    its = [int(c["iteration"]) for c in cks]
    out = {"participation_ratio": [], "induced_excess": [], "val_loss": []}
    for c in cks:
        w = c.get("waves") or {}
        taps = [t for t in w if isinstance(w[t], dict)]
        f = w.get(focus_tap(taps), {}) if taps else {}
        out["participation_ratio"].append((f.get("induced") or {}).get("participation_ratio"))
        out["induced_excess"].append(((f.get("surrogate") or {}).get("mean_abs_corr") or {}).get("excess"))
        out["val_loss"].append(c.get("val_loss"))
    return its, out


def _point_analysis(iterations, y) -> dict:
    """The change of a curve without per-sample values: point estimates only."""
    u = tr.log_axis(iterations)
    y = np.asarray([np.nan if v is None else v for v in y], float)
    if not np.all(np.isfinite(y)):
        return {"u": u.tolist(), "curve": [None if not np.isfinite(v) else float(v) for v in y],
                "reason": "the curve has missing values"}
    mc = tr.main_change(u, y)
    cp = tr.change_point(u, y)
    return {"u": u.tolist(), "curve": y.tolist(),
            "change_point": {"estimate": None if cp is None else (cp[0] + cp[1]) / 2,
                             "bracket": None if cp is None else list(cp), "ci": [None, None]},
            **{k: {"estimate": mc[k], "ci": [None, None]} for k in ("location", "width", "height")},
            "direction": mc["direction"], "resolved": mc["resolved"], "spacing": mc["spacing"]}


def _size_of(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def collect(s: SweepSettings, out, *, progress: bool = True) -> dict:
    """The family analysis from the finished members: ``OUT/summary.json``'s ``sweep`` entry,
    ``OUT/sweep/curves.png`` and the page ``OUT/sweep/index.html``."""
    from .figures.sweep import sweep_figure

    out = check_run_dir(out)
    _claim_folder(out, s)
    names = [n for n, _ in s.members()]
    dirs = [_finished(out, n) for n in names]
    members = []
    with RunLock(out):
        for k, (name, d) in enumerate(zip(names, dirs)):
            summ = read_json(d / "summary.json", "member summary", dict)
            its, pts = _summary_curves(summ)
            if len(its) < 4:
                raise GptwavesError(f"sweep member {name} has {len(its)} checkpoints; at least 4 are needed")
            ps = _per_sample_curves(d, its, s.seed, progress)
            curves = {key: tr.curve_analysis(its, ps[key], n_boot=s.n_boot, seed=s.seed + 7919 * k)
                      for key in ps}
            curves.update({key: _point_analysis(its, pts[key]) for key in pts})
            members.append({"name": name, "value": s.values[k], "run": str(Path("members") / name),
                            "report": str(Path("members") / name / "report" / "index.html"),
                            "iterations": its, "curves": curves})
        sizes = [_size_of(v) for v in s.values]
        scaling, verdicts = {}, {}
        for key, (label, kind) in CURVES.items():
            ms = [m["curves"][key] for m in members]
            if kind != "per-sample" or any(z is None for z in sizes):
                why = ("the varied setting is not a positive number" if any(z is None for z in sizes)
                       else "no per-sample values, so no CI of the exponent")
                scaling[key] = None
                verdicts[key] = {"verdict": "inconclusive", "reason": why}
                continue
            scaling[key] = tr.family_scaling(sizes, ms)
            verdicts[key] = tr.scaling_verdict(scaling[key], ms)
        for m in members:  # the bootstrap replicates are large and only needed for the fit
            for c in m["curves"].values():
                c.pop("replicates", None)
        entry = {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": s.identity(),
                 "curves": {k: v[0] for k, v in CURVES.items()}, "headline_curve": HEADLINE,
                 "verdict": verdicts[HEADLINE], "verdicts": verdicts, "scaling": scaling,
                 "members": members, "n_boot": s.n_boot, "seed": s.seed}
        fig_dir = out / "sweep"
        figs: list = []
        guarded(figs, sweep_figure, fig_dir / "curves", entry)
        entry["figures"] = [str(p.relative_to(out)) for p in figs]
        atomic_write_json(out / "summary.json", {"format": FORMAT, "format_version": FORMAT_VERSION,
                                                 "sweep": entry})
        atomic_write_text(fig_dir / "index.html", sweep_page(entry))
    return entry


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def sweep_page(entry: dict) -> str:
    """The sweep's report page (Jinja2, autoescaped): verdicts, scaling table, member links."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("gptwaves", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["num"] = _fmt
    return env.get_template("sweep.html").render(e=entry, curves=CURVES)


__all__ = ["SweepSettings", "dense_schedule", "parse_vary", "run_member", "run_sweep", "collect", "member_log",
           "sweep_page", "CURVES", "HEADLINE"]
