"""Commands that run or use whole runs: reproduce, intervene, sweep, calibrate, bench, publish."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from .errors import GptwavesError
from .cli_options import (
    cli, corpus_option, _sampling_options, _sampling, _source, run_option, _spelling_options,
    _spelling_settings, _print_findings, _LazyHelp, _size_help, _waves_help, _refuse_irrelevant,
)


@cli.command()
@click.option("--preset", "preset_name", default="smoke", show_default=True,
              help="smoke | quick | paper | shakespeare-char (training and analysis sizes; not with --hf-model).")
@corpus_option
@click.option("--out", type=click.Path(path_type=Path), default=None, show_default="runs/PRESET",
              help="Run directory (--hf-model: runs/hf-MODEL).")
@click.option("--max-iters", type=int, default=None, show_default="the preset's",
              help="Override the preset's training length.")
@click.option("--train-seed", type=int, default=None, show_default="the preset's",
              help="Override the preset's training seed.")
@click.option("--record-samples", type=int, default=None, cls=_LazyHelp,
              help_fn=_size_help("record_samples", "Samples recorded per checkpoint."))
@click.option("--record-steps", type=int, default=None, cls=_LazyHelp,
              help_fn=_size_help("record_steps", "Steps recorded per sample.", ("2 x block_size", "256 tokens")))
@click.option("--spelling-samples", type=int, default=None, cls=_LazyHelp,
              help_fn=_size_help("spelling_samples", "Samples scored for spelling per checkpoint."))
@click.option("--spelling-length", type=int, default=None, cls=_LazyHelp,
              help_fn=_size_help("spelling_length", "Counted characters per spelling sample.",
                                 ("block_size - 16", "128 characters")))
@click.option("--seed", type=int, default=None, cls=_LazyHelp,
              help_fn=_size_help("seed", "Sampling seed of the analysis stages."))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "auto"]), default=None,
              show_default="the preset's", help="Training precision (not with --hf-model).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--hf-model", default=None, show_default="none: train a gptwaves model",
              help="Analyse a Hugging Face suite instead of training: a hub name, local folders PATH1,PATH2,... "
                   "or a folder of folders (one per revision). Needs gptwaves[hf].")
@click.option("--revisions", default=None, show_default="the model's main revision, or every folder",
              help="With --hf-model NAME: step0,step1000,... or log[:N] (N log-spaced of Pythia's published "
                   "steps, default 12); with a folder of folders: folder names or log[:N].")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
              show_default=True, help="dtype the --hf-model revisions are loaded in (recordings keep "
                                      "--record-dtype).")
@click.option("--lexicon", type=click.Path(path_type=Path), default=None,
              show_default="training split; --hf-model: pyspellchecker's English", help="Word list for spelling.")
@click.option("--taps", default=None, show_default="all", help="Comma-separated taps to record, e.g. hidden.0,hidden.6.")
@click.option("--record-dtype", type=click.Choice(["float32", "float16"]), default=None, cls=_LazyHelp,
              help_fn=_size_help("record_dtype", "Storage of the recorded waves (float16 halves the files)."))
@click.option("--surrogates", type=int, default=None, cls=_LazyHelp,
              help_fn=_waves_help("n_surrogates", "Sample-shuffle surrogates of the coherence analysis (below 19 no "
                                                  "excess can be significant at alpha 0.05)."))
@click.option("--waves-ci", type=click.Choice(["jackknife", "bca"]), default=None, cls=_LazyHelp,
              help_fn=_waves_help("ci_method", "CI of the coherence excess: delete-one-sample jackknife or BCa "
                                               "bootstrap."))
@click.option("--waves-boot", type=int, default=None, cls=_LazyHelp,
              help_fn=_waves_help("n_boot", "Bootstrap resamples of the coherence excess CI (--waves-ci bca only)."))
@click.option("--calibrate/--no-calibrate", default=None,
              help="Run the calibration stage (size and power of every verdict rule; default: on for quick and "
                   "paper, off for smoke, shakespeare-char and Hugging Face suites, where --calibrate adds the "
                   "spelling rules).")
@click.option("--calibrate-coherence", type=int, default=None, show_default="40 where calibrating",
              help="Replicates per coherence scenario (0: calibrate the spelling rules only; the coherence "
                   "rules take most of the calibration's time).")
@click.pass_context
def reproduce(ctx, preset_name, corpus, out, max_iters, train_seed, record_samples, record_steps, spelling_samples,
              spelling_length, seed, device, precision, quiet, hf_model, revisions, dtype, lexicon, taps, record_dtype,
              surrogates, waves_ci, waves_boot, calibrate, calibrate_coherence):
    """Corpus -> training -> recordings -> waves -> spelling -> summary -> report, resumable."""
    from .reproduce import ANALYSIS_PRESETS, HF_ANALYSIS, AnalysisSettings
    from .reproduce import reproduce as run_reproduce

    an = HF_ANALYSIS if hf_model else ANALYSIS_PRESETS.get(preset_name, AnalysisSettings())
    _refuse_irrelevant(ctx, hf_model, revisions, waves_ci or an.waves.ci_method)
    tap_list = tuple(t.strip() for t in (taps or "").split(",") if t.strip() and t.strip() != "all") or None
    an = dataclasses.replace(an, **{k: v for k, v in dict(
        record_samples=record_samples, record_steps=record_steps, spelling_samples=spelling_samples,
        spelling_length=spelling_length, seed=seed, record_taps=tap_list, record_dtype=record_dtype,
        lexicon=None if lexicon is None else str(lexicon)).items() if v is not None})
    an = dataclasses.replace(an, waves=dataclasses.replace(an.waves, **{k: v for k, v in dict(
        n_surrogates=surrogates, n_boot=waves_boot, ci_method=waves_ci).items() if v is not None}))
    if calibrate is False:
        an = dataclasses.replace(an, calibration=None)
    elif calibrate or calibrate_coherence is not None:
        from .stages.calibration import CalibrationSettings

        cal = an.calibration or CalibrationSettings(groups=("spelling",))
        if calibrate_coherence is not None:
            cal = cal.replace(groups=("spelling", "coherence"), coherence_replicates=calibrate_coherence)
        an = dataclasses.replace(an, calibration=cal)
    if hf_model:
        if an.calibration is not None:
            raise GptwavesError("--calibrate applies to gptwaves runs; run `gptwaves calibrate --run DIR` "
                                "after a Hugging Face suite")
        from .hf import safe_name
        from .reproduce import reproduce_hf

        out = out or Path("runs") / safe_name(hf_model.split(",")[0])
        summary = reproduce_hf(hf_model, revisions, out, analysis=an, device=device, progress=not quiet,
                               dtype=dtype)
        if summary:
            click.echo(f"summary: {Path(out) / 'summary.json'}")
            click.echo(f"report:  {Path(out) / 'report' / 'index.html'}")
            _print_findings(summary)
        return
    out = out or Path("runs") / preset_name
    overrides = {k: v for k, v in dict(max_iters=max_iters, precision=precision, seed=train_seed).items()
                 if v is not None}
    summary = run_reproduce(preset_name, corpus, out, train_overrides=overrides, analysis=an, device=device,
                            progress=not quiet)
    click.echo(f"summary: {Path(out) / 'summary.json'}")
    click.echo(f"report:  {Path(out) / 'report' / 'index.html'}")
    _print_findings(summary)


@cli.command()
@run_option
@click.option("--checkpoint", default="last", show_default=True,
              help="One checkpoint: an iteration, 'last', or a checkpoint file.")
@click.option("--tap", required=True, help="Tap name, e.g. blocks.5.hook_resid_post.")
@click.option("--channels", required=True,
              help="'3,17,40', '10-20', 'all', 'cluster:K' or 'label:NAME' (e.g. label:space, label:next:space); "
                   "cluster:/label: need `gptwaves waves` for that checkpoint.")
@click.option("--mode", required=True, help="ablate | mean | clamp=V | scale=F.")
@corpus_option
@_spelling_options
@click.option("--control-seed", type=int, default=0, show_default=True,
              help="Seed of the random control channels (same number, disjoint from the target).")
@_sampling_options
def intervene(run, checkpoint, tap, channels, mode, corpus, samples, length, margin, lexicon, alpha, n_boot, n_perm,
              batch_size, control_seed, seed, temperature, top_k, top_p, context, prompt, device, n_head, quiet):
    """Ablate, clamp or scale a channel set at one tap while generating; compare with the unedited baseline."""
    from .stages.interventions import intervene_run

    settings = _spelling_settings(samples, length, margin, lexicon, alpha, n_boot, n_perm, batch_size, prompt,
                                  _sampling(seed, temperature, top_k, top_p, context))
    res = intervene_run(run, checkpoint, tap, channels, mode, settings, _source(corpus, n_head, device),
                        control_seed=control_seed, progress=not quiet)
    s, ch = res["settings"], res["channels"]
    fmt = lambda v, sign="": "  n/a" if v is None else f"{v:{sign}.3f}"  # noqa: E731
    pfmt = lambda v: "n/a" if v is None else f"{v:.2g}"  # noqa: E731
    ctrl = ch["control"]
    click.echo(f"{s['mode']} of {len(ch['target'])} channels ({s['spec']}) at {s['tap']}, {s['checkpoint']}; "
               f"control: {', '.join(map(str, ctrl)) if ctrl else ch['control_note']}")
    click.echo(f"{'condition':>9} {'err':>6} {'95% CI':^16} {'words/sample':>12} {'mean len':>8}")
    for name, c in res["conditions"].items():
        lo, hi = c["error_rate_ci"]
        click.echo(f"{name:>9} {fmt(c['error_rate']):>6} [{fmt(lo)}, {fmt(hi)}] {c['words_per_sample']:12.2f} "
                   f"{fmt(c['word_length']['mean']):>8}")
    for key, cmp in res["comparisons"].items():
        e, w = cmp["error_rate"], cmp["word_length"]
        click.echo(f"{key.replace('_', ' ')}: error rate {fmt(e['diff'], '+')} [{fmt(e['ci'][0], '+')}, "
                   f"{fmt(e['ci'][1], '+')}] (permutation p {pfmt(e['p_permutation'])}); mean word length "
                   f"{fmt(w['diff'], '+')} [{fmt(w['ci'][0], '+')}, {fmt(w['ci'][1], '+')}] "
                   f"(chi-square p {pfmt(w['chi2']['p'])})")
    click.echo(f"result: {res['path']}" + ("  (reused)" if res["reused"] else ""))


@cli.command()
@click.option("--preset", "preset_name", default="quick", show_default=True,
              help="Preset every member starts from: smoke | quick | paper | shakespeare-char")
@click.option("--vary", default="n_embd=32,64,128,256", show_default=True,
              help="The training setting that differs between members and its values, NAME=V1,V2,...")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Sweep folder: members in OUT/members/NAME=VALUE, the family analysis in OUT/sweep/.")
@corpus_option
@click.option("--member", type=int, default=None,
              help="Run only member K (0-based), e.g. as one task of a scheduler's job array.")
@click.option("--collect", "collect_only", is_flag=True,
              help="Only build the family analysis from the finished members.")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Members run at once, each in its own process (CPU threads split between them).")
@click.option("--schedule", type=click.Choice(["dense", "preset"]), default="dense", show_default=True,
              help="dense: checkpoints 0, 1, 2, 3, 5, 7, 10, 14, 20, ... (log-spaced from iteration 1); "
                   "preset: the preset's own.")
@click.option("--max-iters", type=int, default=None, help="Override the preset's training length.")
@click.option("--train-seed", type=int, default=None, help="Override the preset's training seed.")
@click.option("--record-samples", type=int, default=None, help="Recorded samples per checkpoint (default: the preset's).")
@click.option("--record-steps", type=int, default=None, help="Recorded steps (default: the preset's).")
@click.option("--spelling-samples", type=int, default=None, help="Spelling samples (default: the preset's).")
@click.option("--boot", "n_boot", type=int, default=200, show_default=True,
              help="Bootstrap replicates of the change points and the scaling fits.")
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", is_flag=True)
def sweep(preset_name, vary, out, corpus, member, collect_only, jobs, schedule, max_iters, train_seed,
          record_samples, record_steps, spelling_samples, n_boot, device, quiet):
    """Is it a phase transition? The same analysis across runs that differ in one setting."""
    from .reproduce import ANALYSIS_PRESETS, AnalysisSettings
    from .sweep import SweepSettings, collect, parse_vary, run_member, run_sweep
    from .config import preset

    if member is not None and collect_only:
        raise GptwavesError("--member and --collect exclude each other")
    name, values = parse_vary(vary, preset(preset_name))
    an = ANALYSIS_PRESETS.get(preset_name, AnalysisSettings())
    an = dataclasses.replace(an, **{k: v for k, v in dict(
        record_samples=record_samples, record_steps=record_steps, spelling_samples=spelling_samples).items()
        if v is not None})
    overrides = {k: v for k, v in dict(max_iters=max_iters, seed=train_seed).items() if v is not None}
    s = SweepSettings(preset=preset_name, vary=name, values=values, train_overrides=overrides,
                      schedule=schedule, analysis=an, n_boot=n_boot)
    if member is not None:
        run_member(s, member, out, corpus, device=device, progress=not quiet)
        click.echo(f"member {member} ({s.members()[member][0]}) finished: {Path(out) / 'members'}")
        return
    if collect_only:
        entry = collect(s, out, progress=not quiet)
    else:
        given = dict(preset=preset_name, vary=vary, out=out, corpus=corpus, schedule=schedule,
                     max_iters=max_iters, train_seed=train_seed, record_samples=record_samples,
                     record_steps=record_steps, spelling_samples=spelling_samples, boot=n_boot, device=device)
        args = [x for k, v in given.items() if v is not None for x in (f"--{k.replace('_', '-')}", str(v))]
        entry = run_sweep(s, out, corpus, device=device, progress=not quiet, jobs=jobs, cli_args=args)
    v = entry["verdict"]
    click.echo(f"sweep: {Path(out) / 'summary.json'}")
    click.echo(f"page:  {Path(out) / 'sweep' / 'index.html'}")
    click.echo(f"{entry['curves'][entry['headline_curve']]}: {v['verdict']} ({v['reason']})")



@cli.command()
@run_option
@corpus_option
@click.option("--replicates", type=int, default=None,
              help="Synthetic runs per spelling scenario (default 100).")
@click.option("--coherence-replicates", type=int, default=None,
              help="Synthetic runs per coherence scenario (default 40; 0 skips the coherence rules).")
@click.option("--engine", type=click.Choice(["fast", "exact"]), default=None,
              help="fast (default): nulls shared across replicates, only what the verdicts read computed; "
                   "exact: every replicate analysed as the stages do.")
@click.option("--only", type=click.Choice(["spelling", "coherence"]), default=None,
              help="Calibrate one group of rules only.")
@click.option("--scenario", "scenarios", multiple=True,
              help="Only this scenario (repeatable; names in docs/method.md, Calibration), e.g. to bound the cost.")
@click.option("--seed", type=int, default=None, help="Seed of the synthetic runs (default 0).")
@click.option("--quiet", is_flag=True)
def calibrate(run, corpus, replicates, coherence_replicates, engine, only, scenarios, seed, quiet):
    """Size and power of every verdict rule, simulated at this run's own sizes (DIR/calibration/)."""
    from .stages.calibration import CalibrationSettings, calibrate_run

    kw = {k: v for k, v in (("replicates", replicates), ("coherence_replicates", coherence_replicates),
                            ("engine", engine), ("seed", seed)) if v is not None}
    if only:
        kw["groups"] = (only,)
    if scenarios:
        kw["scenarios"] = tuple(scenarios)
    res = calibrate_run(run, CalibrationSettings(**kw), corpus=corpus, progress=not quiet)
    for cid in sorted(res["claims"], key=int):
        e = res["claims"][cid]
        for lv, label in (("as_stated", "as stated"), ("beyond_null", "beyond the null")):
            click.echo(f"- claim {cid}, {label}: {e[lv]['text']}")
    click.echo(f"results: {Path(run) / 'calibration' / 'calibration.json'} ({res['seconds']:.0f} s)")


@cli.command("bench")
@click.argument("which", type=click.Choice(["all", "train", "record", "waves", "spelling", "e2e", "hf", "budget",
                                                  "sweep", "calibrate", "profile"]),  # = bench.BENCHES (a test checks)
                default="all", required=False)
@click.option("--quick", is_flag=True, help="Small sizes: the whole suite in about a minute (figures off target).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rows and the machine description to this JSON file.")
@corpus_option
@click.option("--notes", is_flag=True, help="Print each row's notes under it.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="budget: the finished `gptwaves reproduce` run whose stage times to put next to the matmul peak.")
def bench(which: str, quick: bool, out: Path | None, corpus: Path | None, notes: bool, run_dir: Path | None) -> None:
    """Performance figures as ratios against baselines measured in the same run.

    WHICH: all (default), train, record, waves, spelling, e2e, hf, budget (needs --run), sweep, calibrate or
    profile (torch.profiler of one training, recording and sampling step). Progress goes to stderr, the
    table to stdout. Full sizes take long on a small CPU (see bench/README.md); use --quick to try.
    """
    from . import bench as gb

    if run_dir is not None and which != "budget":
        raise GptwavesError("--run applies to `gptwaves bench budget` only")
    if run_dir is not None:  # a missing or corrupt run: one line before anything is measured
        from .bench.budget import check_run

        check_run(run_dir)
    machine = gb.machine_info()
    click.echo(f"machine: {machine['summary']}; bf16 {'yes' if machine['bf16_cpu'] else 'no'}; "
               f"load {machine['load_average']}; {machine['date']}", err=True)
    rows = gb.run(which, quick=quick, corpus=corpus, machine=machine,
                  **({"run_dir": run_dir} if run_dir is not None else {}))
    if out is not None:
        gb.write_json(out, rows, machine, which, quick)
    click.echo(gb.format_table(rows, notes=notes))
    if out is not None:
        click.echo(f"written: {out}")


@cli.group()
def publish() -> None:
    """Publish a finished run's results into the repository's docs (generated, never typed)."""


@publish.command("run")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--readme", type=click.Path(path_type=Path), default=None,
              help="Also replace this README's <!-- results:begin --> ... <!-- results:end --> block.")
@click.option("--no-peaks", is_flag=True, help="Do not measure the matmul peaks: budget.json then has no seconds at "
              "the peak and no gaps, and says so (a fast publish).")
@click.option("--peaks", "given", nargs=2, type=float, default=None, metavar="FP32 BF16",
              help="Use these matmul peaks (GFLOP/s, measured elsewhere, e.g. by `gptwaves bench`) instead of "
              "measuring them.")
@click.option("--peak-n", type=click.IntRange(1, 16384), default=None,
              help="Matrix size of the measured peaks (default: that of `gptwaves bench budget`).")
@click.option("--peak-repeats", type=click.IntRange(1, 1000), default=None,
              help="Repeats of the measured peaks, whose median is taken (default: those of `gptwaves bench`).")
def publish_run_command(run_dir: Path, dest: Path, readme: Path | None, no_peaks: bool,
                        given: tuple[float, float] | None, peak_n: int | None, peak_repeats: int | None) -> None:
    """Copy RUN_DIR's summary.json and key figures into DEST, write its time budget to
    DEST/budget.json (stage times, machine, matmul peaks, FLOPs per stage) and DEST/claims.md."""
    from .bench.budget import given_peaks
    from .publish import publish_run

    if no_peaks and (given or peak_n or peak_repeats):
        raise GptwavesError("--no-peaks excludes --peaks, --peak-n and --peak-repeats")
    if given and (peak_n or peak_repeats):
        raise GptwavesError("--peaks (given peaks) excludes --peak-n and --peak-repeats (measured peaks)")
    peaks = "none" if no_peaks else given_peaks(*given) if given else "measure"
    for p in publish_run(run_dir, dest, readme, peaks=peaks, peak_n=peak_n, peak_repeats=peak_repeats):
        click.echo(str(p))


@publish.command("seeds")
@click.argument("out", type=click.Path(path_type=Path))
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
def publish_seeds_command(out: Path, run_dirs: tuple[Path, ...]) -> None:
    """Tabulate the verdicts of runs that differ only in their training seed into OUT (Markdown); each
    column cites its published summary.json (copied beside OUT when not yet published)."""
    from .publish import write_seeds_table

    for p in write_seeds_table(out, list(run_dirs)):
        click.echo(str(p))


@publish.command("sweep")
@click.argument("sweep_dir", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
def publish_sweep_command(sweep_dir: Path, dest: Path) -> None:
    """Copy SWEEP_DIR's summary.json (a collected `gptwaves sweep`) and curves.png into DEST, write
    what the sweep cost to DEST/cost.json (each member's stage seconds, the machine) and DEST/sweep.md."""
    from .publish_sweep import publish_sweep

    for p in publish_sweep(sweep_dir, dest):
        click.echo(str(p))
