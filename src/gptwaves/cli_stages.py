"""Commands of the pipeline's stages, one each: data, train, record, spelling, waves, summary, report."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .errors import GptwavesError
from .tables import fmt_number
from .cli_options import (
    cli, corpus_option, _train_options, _build_train_config, _sampling_options, _sampling, _source, _unescape,
    _hf_options, run_option, checkpoint_option, _record_options, _spelling_options, _spelling_settings,
    spelling_table, waves_table, _echo_table, _print_findings,
)


@cli.command()
@corpus_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def data(corpus: Path | None, as_json: bool) -> None:
    """Describe the corpus: size, vocabulary, words, checksum."""
    from .corpus import Corpus

    info = Corpus.load(corpus).describe()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"corpus        {info['path']}")
    click.echo(f"characters    {info['characters']:,}  (train {info['train_characters']:,}, val {info['val_characters']:,})")
    click.echo(f"vocabulary    {info['vocab_size']} characters: {info['vocabulary']!r}")
    click.echo(f"words         {info['words']:,} ({info['distinct_words']:,} distinct; training lexicon {info['lexicon_size']:,})")
    click.echo(f"sha256        {info['sha256']}" + ("  (Tiny Shakespeare, verified)" if info["is_tiny_shakespeare"] else ""))


@cli.command()
@click.option("--preset", "preset_name", default="paper", show_default=True,
              help="paper | quick | smoke | shakespeare-char")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Run directory.")
@corpus_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_train_options
def train(preset_name: str, out: Path, corpus: Path | None, quiet: bool, **overrides) -> None:
    """Train a GPT with checkpoints across training (re-run to resume)."""
    from .corpus import Corpus
    from .io import check_run_dir
    from .train import train as run_train

    cfg = _build_train_config(preset_name, overrides)
    if quiet:
        cfg = cfg.override(progress=False)
    run_dir = check_run_dir(out)
    c = Corpus.load(corpus)
    res = run_train(cfg, c, run_dir)
    last = res.checkpoints[-1] if res.checkpoints else None
    msg = f"trained {cfg.preset} to iteration {res.iterations} in {res.seconds:.1f} s"
    if res.resumed_from is not None:
        msg += f" (resumed from {res.resumed_from})"
    if last is not None:
        msg += f"; final train loss {last.train_loss:.4f}, val loss {last.val_loss:.4f}"
    click.echo(msg)
    click.echo(f"checkpoints: {run_dir / 'checkpoints'}")


@cli.command()
@run_option
@checkpoint_option
@corpus_option
@_record_options
@click.option("--taps", default="all", show_default=True, help="Comma-separated tap names, or 'all'.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True)
@click.option("--batch-size", type=int, default=None, help="Samples per batch (fixes the random streams).")
@_sampling_options
@_hf_options
def record(run, checkpoint, corpus, samples, steps, taps, dtype, batch_size, seed, temperature, top_k,
           top_p, context, prompt, device, n_head, quiet, hf_model, hf_revision, hf_dtype):
    """Generate text while recording hidden-state waves to HDF5 (DIR/recordings/)."""
    from .stages.recordings import RecordSettings, record_run

    tap_list = tuple(t.strip() for t in taps.split(",") if t.strip())
    settings = RecordSettings(samples=samples, steps=steps, prompt=_unescape(prompt),
                              taps=None if tap_list in ((), ("all",)) else tap_list, dtype=dtype,
                              sampling=_sampling(seed, temperature, top_k, top_p, context),
                              **({"batch_size": batch_size} if batch_size is not None else {}))
    for p in record_run(run, checkpoint, settings, _source(corpus, n_head, device, hf_model, hf_revision, hf_dtype),
                        progress=not quiet):
        click.echo(str(p))


@cli.command()
@run_option
@checkpoint_option
@corpus_option
@_spelling_options
@_sampling_options
@_hf_options
def spelling(run, checkpoint, corpus, samples, length, margin, lexicon, alpha, n_boot, n_perm, batch_size, seed,
             temperature, top_k, top_p, context, prompt, device, n_head, quiet, hf_model, hf_revision, hf_dtype):
    """Counting statistics of spelling errors (Fano factor, Poisson tests, null models) per checkpoint."""
    from .stages.spelling import spelling_run

    settings = _spelling_settings(samples, length, margin, lexicon, alpha, n_boot, n_perm, batch_size, prompt,
                                  _sampling(seed, temperature, top_k, top_p, context))
    res = spelling_run(run, checkpoint, settings, _source(corpus, n_head, device, hf_model, hf_revision, hf_dtype),
                       progress=not quiet)
    _echo_table(spelling_table(res["checkpoints"]))
    fmt = fmt_number
    c = res.get("crossing") or {}
    if c.get("iteration") is not None:
        ci = c.get("ci") or [None, None]
        click.echo(f"F_correct crosses 1 near iteration {c['iteration']:.0f} (95% CI {fmt(ci[0], 4)} to "
                   f"{fmt(ci[1], 4)})")
    else:
        click.echo(f"no crossing of F_correct through 1 reported: {c.get('reason') or 'fewer than 2 checkpoints'}")
    click.echo("F/F_ref: F over its independent-error reference (p: stratified permutation null); RR: cascade "
               "relative risk (p: within-sample permutation null); z_correct, z_misspelled, z_RR: log(F / null "
               "median) and log(RR / null median) in standard deviations of their permutation nulls")
    click.echo(f"table: {res['table']}")


@cli.command()
@run_option
@checkpoint_option
@corpus_option
@_record_options
@click.option("--nlags", type=int, default=None, help="Auto-correlation lags (default 64).")
@click.option("--clusters", "k", type=int, default=None, help="Number of clusters (default: best silhouette).")
@click.option("--window", type=int, default=None, help="Event-triggered average half-width (default 8).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (to record).")
@click.option("--quiet", is_flag=True)
@_hf_options
def waves(run, checkpoint, corpus, samples, steps, nlags, k, window, device, quiet, hf_model, hf_revision,
          hf_dtype):
    """Coherence analysis of recorded waves (records what it needs if missing)."""
    from .stages.recordings import RecordSettings
    from .stages.waves import WavesSettings, waves_run

    settings = WavesSettings(**{key: v for key, v in dict(nlags=nlags, k=k, window=window).items() if v is not None})
    res = waves_run(run, checkpoint, settings, record=RecordSettings(samples=samples, steps=steps),
                    source=_source(corpus, None, device, hf_model, hf_revision, hf_dtype), progress=not quiet)

    _echo_table(waves_table(res["checkpoints"]))
    click.echo("excess: induced mean |R| minus its sample-shuffle surrogate mean, 95% CI, * significant; z = excess "
               "/ surrogate SD; excess, gain-normalised: the same after gain normalisation; space probe R^2: "
               "out-of-fold R^2 of the space probe; space channels: channels labelled space or next:space.")
    click.echo(f"results: {Path(run) / 'waves'}")


@cli.command()
@run_option
def summary(run):
    """Build DIR/summary.json from what the stages left in the run directory."""
    from .io import read_json
    from .stages.summary import write_summary

    path = write_summary(run)
    click.echo(f"summary: {path}")
    _print_findings(read_json(path, "summary"))


@cli.command()
@run_option
@click.option("--no-summary", is_flag=True, help="Use DIR/summary.json as it is instead of rebuilding it.")
def report(run, no_summary):
    """Build the self-contained HTML report DIR/report/index.html (rebuilds summary.json first)."""
    from .io import check_run_dir
    from .stages.report import build_report
    from .stages.summary import write_summary

    run_dir = check_run_dir(run)
    if not run_dir.is_dir():
        raise GptwavesError(f"run directory not found: {run_dir}")
    if not no_summary:
        click.echo(f"summary: {write_summary(run_dir)}")
    click.echo(f"report:  {build_report(run_dir)}")
