"""``gptwaves reproduce``: corpus -> training -> recordings -> waves -> spelling -> report.

Each stage skips work whose outputs exist with the same settings, so re-running resumes and a
changed setting reruns only what depends on it. ``DIR/summary.json`` is the machine-readable
result; ``DIR/report/index.html`` the human one.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import TrainConfig, preset
from .corpus import Corpus
from .errors import GptwavesError
from .io import RunLock, atomic_write_json, check_run_dir, read_json
from .sample import SamplingConfig
from .stages.calibration import CalibrationSettings
from .stages.common import ModelSource
from .stages.recordings import RecordSettings
from .stages.spelling import SpellingSettings
from .stages.waves import WavesSettings


@dataclass
class AnalysisSettings:
    """Sizes of the analysis stages (per preset; each is a CLI option of `reproduce`)."""

    record_samples: int = 64
    record_steps: int | None = None  # default: 2 x block_size (crop beyond the context)
    spelling_samples: int = 1000
    spelling_length: int | None = None  # default: block_size
    repeat_seeds: int = 3
    seed: int = 0
    record_taps: tuple[str, ...] | None = None  # default: every tap
    record_dtype: str = "float32"  # storage of the waves (float16 halves the files)
    lexicon: str | None = None  # default: the training split (Hugging Face models: gptwaves.lexicon)
    waves: WavesSettings = field(default_factory=WavesSettings)  # coherence analysis and its null models
    # size and power of the verdict rules (`gptwaves calibrate`); None: not run (docs/method.md, Calibration)
    calibration: CalibrationSettings | None = None

    def __post_init__(self) -> None:
        for name in ("record_samples", "spelling_samples"):
            if getattr(self, name) < (2 if name == "spelling_samples" else 1):
                raise GptwavesError(f"{name.replace('_', '-')} must be at least "
                                    f"{2 if name == 'spelling_samples' else 1}, not {getattr(self, name)}")
        for name in ("record_steps", "spelling_length"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise GptwavesError(f"{name.replace('_', '-')} must be positive, not {v}")
        if self.repeat_seeds < 1:
            raise GptwavesError(f"repeat-seeds must be at least 1, not {self.repeat_seeds}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def record_settings(self) -> RecordSettings:
        return RecordSettings(samples=self.record_samples, steps=self.record_steps,
                              taps=tuple(self.record_taps) if self.record_taps else None, dtype=self.record_dtype,
                              sampling=SamplingConfig(seed=self.seed))

    def spelling_settings(self) -> SpellingSettings:
        return SpellingSettings(samples=self.spelling_samples, length=self.spelling_length,
                                lexicon=self.lexicon, sampling=SamplingConfig(seed=self.seed))


ANALYSIS_PRESETS = {
    "smoke": AnalysisSettings(record_samples=16, record_steps=96, spelling_samples=300, repeat_seeds=2),
    # calibration of every rule on by default where verdicts are read (docs/method.md, Calibration, "Where
    # it runs": about 15 minutes against a quick run of about an hour, 40 against a paper run of hours)
    "quick": AnalysisSettings(record_samples=64, record_steps=256, spelling_samples=1000,
                              calibration=CalibrationSettings()),
    "paper": AnalysisSettings(record_samples=64, record_steps=500, spelling_samples=1000,
                              calibration=CalibrationSettings()),
    "shakespeare-char": AnalysisSettings(record_samples=64, record_steps=512, spelling_samples=1000),
}

STAGES = ("train", "record", "waves", "spelling", "calibrate", "summary", "report")


@dataclass
class StageClock:
    """Prints a line per stage with elapsed time and a rough estimate of what is left."""

    weights: dict[str, float]
    t0: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    quiet: bool = False
    stages: tuple[str, ...] = STAGES

    def start(self, name: str) -> float:
        done = sum(self.weights.get(s, 0) for s in self.timings)
        total = sum(self.weights.values())
        elapsed = time.perf_counter() - self.t0
        eta = ""
        if done > 0 and elapsed > 1:
            left = elapsed * (total - done) / done
            eta = f", about {_fmt_s(left)} left"
        i = self.stages.index(name) + 1 if name in self.stages else 0
        if not self.quiet:
            print(f"[{i}/{len(self.stages)}] {name} (elapsed {_fmt_s(elapsed)}{eta})", file=sys.stderr, flush=True)
        return time.perf_counter()

    def stop(self, name: str, t: float) -> None:
        self.timings[name] = round(time.perf_counter() - t, 3)


def _fmt_s(s: float) -> str:
    s = max(0.0, s)
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


# rough share of wall time per stage on a CPU, used only for the time-left estimate
STAGE_WEIGHTS = {
    "smoke": {"train": 0.2, "record": 0.1, "waves": 0.3, "spelling": 0.15, "summary": 0.01, "report": 0.1},
    "quick": {"train": 0.6, "record": 0.1, "waves": 0.1, "spelling": 0.15, "calibrate": 0.2, "summary": 0.01,
              "report": 0.04},
    "paper": {"train": 0.9, "record": 0.03, "waves": 0.02, "spelling": 0.04, "calibrate": 0.03, "summary": 0.0,
              "report": 0.01},
}


def reproduce(
    preset_name: str = "smoke",
    corpus: str | os.PathLike | None = None,
    out: str | os.PathLike = "runs/smoke",
    *,
    train_overrides: dict | None = None,
    analysis: AnalysisSettings | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Run the whole pipeline into ``out`` and return the summary dict.

    Every stage's settings are built and validated before anything is trained or written.
    """
    from .stages.recordings import record_run, record_variants
    from .stages.spelling import spelling_run
    from .stages.waves import waves_run
    from .train import train

    try:
        cfg: TrainConfig = preset(preset_name)
        cfg = cfg.override(**(train_overrides or {}), device=device, progress=progress)
    except ValueError as e:
        raise GptwavesError(str(e)) from None
    an = analysis or ANALYSIS_PRESETS.get(preset_name, AnalysisSettings())
    rec, spl, wav = an.record_settings(), an.spelling_settings(), an.waves
    run_dir = check_run_dir(out)
    clock = StageClock(STAGE_WEIGHTS.get(preset_name, STAGE_WEIGHTS["paper"]), quiet=not progress,
                       stages=STAGES if an.calibration else tuple(s for s in STAGES if s != "calibrate"))
    c = Corpus.load(corpus)
    source = ModelSource(corpus=c.path, device=device)
    with RunLock(run_dir):
        history = _timings_history(run_dir)

        def note() -> None:  # analysis sizes and timings so far, for the summary; written after every
            # stage, so that an invocation stopped later keeps the times of the stages it finished
            atomic_write_json(run_dir / "reproduce.json", {
                "preset": preset_name, "train": cfg.to_dict(), "analysis": an.to_dict(),
                "timings": dict(clock.timings), "timings_history": history})

        t = clock.start("train")
        train(cfg, c, run_dir)
        clock.stop("train", t)
        note()

        t = clock.start("record")
        record_run(run_dir, "all", rec, source, progress=progress)
        extra = record_variants(run_dir, rec, source, n_seeds=an.repeat_seeds, progress=progress)
        clock.stop("record", t)
        note()

        t = clock.start("waves")
        waves_run(run_dir, "all", wav, record=rec, source=source, variants=extra, progress=progress)
        clock.stop("waves", t)
        note()

        t = clock.start("spelling")
        spelling_run(run_dir, "all", spl, source, progress=progress)
        clock.stop("spelling", t)
        note()

        if an.calibration is not None:
            from .stages.calibration import calibrate_run

            t = clock.start("calibrate")
            calibrate_run(run_dir, an.calibration, corpus=c.path, progress=progress)
            clock.stop("calibrate", t)
            note()

        return _summary_and_report(run_dir, clock, note)


#: Analysis sizes of a Hugging Face suite (record steps and spelling length: the module defaults).
HF_ANALYSIS = AnalysisSettings(record_samples=64, record_steps=None, spelling_samples=1000)

HF_STAGES = ("record", "spelling", "waves", "summary", "report")
HF_STAGE_WEIGHTS = {"record": 0.4, "waves": 0.2, "spelling": 0.35, "summary": 0.01, "report": 0.04}


def reproduce_hf(
    hf_model: str,
    revisions: str | None = None,
    out: str | os.PathLike = "runs/hf",
    *,
    analysis: AnalysisSettings | None = None,
    device: str = "auto",
    progress: bool = True,
    dtype: str = "float32",
) -> dict:
    """The whole analysis across the training revisions of a Hugging Face model suite.

    ``hf_model``/``revisions`` as in :func:`gptwaves.hf.suite_revisions` (a hub name with
    ``step0,step1000,...`` or ``log[:N]``; local folders ``PATH1,PATH2,...``; a folder of folders).
    Each revision is the checkpoint ``iter_{step:07d}`` of the run, so the step is the iteration
    axis of every figure, the crossing and the claims; ``reproduce.json`` (and so summary.json's
    ``hf`` entry and the report) lists the revisions in place of a training curve. Resumable
    like `reproduce`; a revision that cannot be loaded stops the run with one line naming it,
    keeping what is finished. Under torchrun the samples of every revision are sharded across
    ranks (each on its own GPU) and rank 0 analyses and writes the summary and report.
    Every revision is checked (config, weights file, tokenizer; the same architecture, width,
    layer count and vocabulary) before the first is recorded. ``dtype``: the dtype the revisions
    are loaded in (float32, bfloat16, float16); the recordings keep ``analysis.record_dtype``.
    Returns the summary dict (``{}`` on ranks other than 0).
    """
    from . import distributed as dd
    from .hf import check_revisions, suite_revisions
    from .stages.recordings import record_run, record_variants
    from .stages.spelling import spelling_run
    from .stages.waves import waves_run

    revs = suite_revisions(hf_model, revisions)
    check_revisions(revs)  # fail fast: every revision before the first is recorded
    an = analysis or HF_ANALYSIS
    rec, spl, wav = an.record_settings(), an.spelling_settings(), an.waves
    run_dir = check_run_dir(out)
    source = ModelSource(device=device, hf_model=hf_model, hf_revision=revisions, hf_dtype=dtype)
    _, d = dd.setup(device)
    clock = StageClock(HF_STAGE_WEIGHTS, quiet=not progress or not d.main, stages=HF_STAGES)
    hf_info = {"model": hf_model, "revisions_spec": revisions, "dtype": dtype,
               "revisions": [{"name": r.name, "model": r.model, "revision": r.revision, "step": r.step}
                             for r in revs],
               "iteration_axis": "training step of the revision"}
    with RunLock(run_dir) if d.main else _nothing():
        history = _timings_history(run_dir) if d.main else []

        def note() -> None:
            if d.main:
                atomic_write_json(run_dir / "reproduce.json", {
                    "preset": None, "train": None, "hf": hf_info, "analysis": an.to_dict(),
                    "timings": dict(clock.timings), "timings_history": history})

        note()
        t = clock.start("record")
        record_run(run_dir, "all", rec, source, progress=progress and d.main)
        extra = record_variants(run_dir, rec, source, n_seeds=an.repeat_seeds, progress=progress and d.main)
        clock.stop("record", t)

        t = clock.start("spelling")
        spelling_run(run_dir, "all", spl, source, progress=progress and d.main)
        clock.stop("spelling", t)
        dd.barrier()
        if not d.main:
            return {}

        t = clock.start("waves")
        waves_run(run_dir, "all", wav, record=rec, source=source, variants=extra, progress=progress)
        clock.stop("waves", t)
        note()

        return _summary_and_report(run_dir, clock, note)


def _nothing():
    from contextlib import nullcontext

    return nullcontext()


def _summary_and_report(run_dir: Path, clock: StageClock, note) -> dict:
    """The last two stages of every pipeline: summary.json, then the report, each written once."""
    from .stages.report import build_report
    from .stages.summary import write_summary

    t = clock.start("summary")
    write_summary(run_dir)
    clock.stop("summary", t)
    t = clock.start("report")
    build_report(run_dir)
    clock.stop("report", t)
    clock.timings["total"] = round(time.perf_counter() - clock.t0, 3)
    note()
    return read_json(run_dir / "summary.json", "summary")


def _timings_history(run_dir: Path) -> list[dict]:
    """Stage timings of earlier invocations on this run directory (a resumed run re-times only
    the work it still had to do, so the first complete timings stay visible here)."""
    p = run_dir / "reproduce.json"
    if not p.exists():
        return []
    try:
        old = read_json(p)
    except GptwavesError:
        return []
    if not isinstance(old, dict):
        return []
    hist = old.get("timings_history") if isinstance(old.get("timings_history"), list) else []
    return list(hist) + ([old["timings"]] if isinstance(old.get("timings"), dict) and old["timings"] else [])


__all__ = ["reproduce", "reproduce_hf", "AnalysisSettings", "ANALYSIS_PRESETS", "HF_ANALYSIS"]
