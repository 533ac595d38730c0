"""Command-line interface: a thin layer over the Python API.

Every user-facing problem raises :class:`gptwaves.errors.GptwavesError`, printed here as one
line (``gptwaves: error: ...``) with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from pathlib import Path

import click

from . import __version__
from .errors import GptwavesError
from .tables import checkpoint_table, fmt_number

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="gptwaves")
def cli() -> None:
    """Hidden-state waves and spelling-error statistics of a small character-level GPT.

    Environment: GPTWAVES_CORPUS (the corpus file), GPTWAVES_FIGURES (figure formats: png, svg,
    png,svg (default) or none), GPTWAVES_DEBUG (tracebacks of internal errors).
    """
    if os.environ.get("GPTWAVES_FIGURES"):  # a bad value is a one-line error now, not a warning per figure
        from .figures.common import figure_formats

        figure_formats()


corpus_option = click.option(
    "--corpus", type=click.Path(dir_okay=True, path_type=Path), default=None,
    help="Corpus text file (default: $GPTWAVES_CORPUS, then the cached or downloaded Tiny Shakespeare).",
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


def _train_options(f):
    from .config import TrainConfig

    opts = [
        ("--n-layer", int), ("--n-head", int), ("--n-embd", int), ("--block-size", int),
        ("--dropout", float), ("--batch-size", int), ("--learning-rate", float), ("--min-lr", float),
        ("--warmup-iters", int), ("--lr-decay-iters", int), ("--beta1", float), ("--beta2", float),
        ("--weight-decay", float), ("--grad-clip", float), ("--max-iters", int), ("--eval-iters", int),
        ("--log-interval", int), ("--state-interval", int), ("--seed", int),
    ]
    names = {x.name for x in TrainConfig.__dataclass_fields__.values()}
    for flag, typ in reversed(opts):
        assert flag[2:].replace("-", "_") in names
        f = click.option(flag, type=typ, default=None, help=f"Override the preset's {flag[2:]}.")(f)
    f = click.option("--bias/--no-bias", default=None, help="Biases in Linear/LayerNorm.")(f)
    f = click.option("--tie-weights/--untie-weights", default=None, help="Tie embedding and head weights.")(f)
    f = click.option("--gelu", type=click.Choice(["tanh", "exact"]), default=None)(f)
    f = click.option("--precision", type=click.Choice(["fp32", "bf16", "auto"]), default=None,
                     help="fp32, bf16 autocast, or auto (bf16 where native: AVX512-BF16 CPUs, recent GPUs).")(f)
    f = click.option("--device", default=None, help="auto, cpu or cuda.")(f)
    f = click.option("--checkpoints", default=None,
                     help="Comma-separated checkpoint iterations (default: the log-spaced schedule).")(f)
    return f


def _build_train_config(preset_name: str, overrides: dict):
    """The preset with the CLI's overrides; TrainConfig validates every field itself."""
    from .config import preset

    ck = overrides.pop("checkpoints", None)
    if ck:
        try:
            overrides["checkpoints"] = tuple(int(x) for x in ck.split(",") if x.strip())
        except ValueError:
            raise GptwavesError(f"--checkpoints must be comma-separated integers, not {ck!r}") from None
    return preset(preset_name).override(**overrides)


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


def _default(cls, name: str):
    """A settings dataclass's default for one field: each default is declared once, in the dataclass."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _sampling_options(f):
    from .sample import SamplingConfig

    f = click.option("--seed", type=int, default=_default(SamplingConfig, "seed"), show_default=True,
                     help="Sampling seed.")(f)
    f = click.option("--temperature", type=float, default=_default(SamplingConfig, "temperature"),
                     show_default=True)(f)
    f = click.option("--top-k", type=int, default=None, help="Sample from the k most likely characters.")(f)
    f = click.option("--top-p", type=float, default=None, help="Nucleus sampling threshold.")(f)
    f = click.option("--context", default=_default(SamplingConfig, "context"), show_default=True,
                     help="Beyond block_size: 'crop' (exact minGPT semantics) or 'stride=K'.")(f)
    f = click.option("--prompt", default="\n", show_default="newline",
                     help="Prompt text (backslash escapes like \\n are understood).")(f)
    f = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")(f)
    f = click.option("--n-head", type=int, default=None,
                     help="Heads of an external minGPT checkpoint when they cannot be inferred.")(f)
    f = click.option("--quiet", is_flag=True, help="No progress bars.")(f)
    return f


def _sampling(seed, temperature, top_k, top_p, context):
    from .sample import SamplingConfig

    return SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, context=context)


def _source(corpus=None, n_head=None, device="auto", hf_model=None, hf_revision=None, hf_dtype="float32"):
    from .stages.common import ModelSource

    if n_head is not None and not 1 <= n_head <= 4096:
        raise GptwavesError(f"--n-head must be in [1, 4096], not {n_head}")
    if hf_revision is not None and hf_model is None:
        raise GptwavesError("--hf-revision needs --hf-model")
    if hf_dtype != "float32" and not hf_model:
        raise GptwavesError("--hf-dtype applies to --hf-model")
    return ModelSource(corpus=corpus, n_head=n_head, device=device, hf_model=hf_model, hf_revision=hf_revision,
                       hf_dtype=hf_dtype)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError:
        raise GptwavesError(f"prompt has an invalid escape sequence: {text!r}") from None


def _hf_options(f):
    f = click.option("--hf-dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
                     show_default=True, help="dtype the Hugging Face model is loaded in.")(f)
    f = click.option("--hf-revision", default=None,
                     help="Revision(s) of the Hugging Face model: step1000, a comma list (step0,step1000), or "
                          "log[:N] (N log-spaced published steps); each revision is checkpoint iter_STEP.")(f)
    f = click.option("--hf-model", default=None,
                     help="A Hugging Face causal LM (name or local path) instead of a gptwaves checkpoint; "
                          "needs the optional extra gptwaves[hf].")(f)
    return f


run_option = click.option("--run", "--run-dir", "run", required=True, type=click.Path(path_type=Path),
                          help="Run directory (outputs go here).")
checkpoint_option = click.option(
    "--checkpoint", default="all", show_default=True,
    help="Iteration, 'all', 'last', or a checkpoint file (gptwaves .json/.safetensors, nanoGPT ckpt.pt, minGPT model.pt).")


def _record_options(f):
    from .stages.recordings import RecordSettings

    f = click.option("--samples", type=int, default=_default(RecordSettings, "samples"), show_default=True,
                     help="Samples to record.")(f)
    f = click.option("--steps", type=int, default=None, help="Generation steps (default: 2 x block_size).")(f)
    return f


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


def _spelling_options(f):
    from .stages.spelling import SpellingSettings

    f = click.option("--samples", type=int, default=_default(SpellingSettings, "samples"), show_default=True)(f)
    f = click.option("--length", type=int, default=None,
                     help="Counted characters per sample (default: block_size - margin).")(f)
    f = click.option("--margin", type=int, default=_default(SpellingSettings, "margin"), show_default=True,
                     help="Characters generated past the counted ones, so that no counted word is cut.")(f)
    f = click.option("--lexicon", type=click.Path(path_type=Path), default=None,
                     help="Word list (one word per line); default: the words of the training split "
                          "(Hugging Face models: pyspellchecker's English dictionary, gptwaves[hf]).")(f)
    f = click.option("--alpha", type=float, default=_default(SpellingSettings, "alpha"), show_default=True,
                     help="Significance level of every test.")(f)
    f = click.option("--n-boot", type=int, default=_default(SpellingSettings, "n_boot"), show_default=True,
                     help="Bootstrap resamples.")(f)
    f = click.option("--n-perm", type=int, default=_default(SpellingSettings, "n_perm"), show_default=True,
                     help="Permutations of the null models.")(f)
    f = click.option("--batch-size", type=int, default=_default(SpellingSettings, "batch_size"),
                     show_default=True, help="Samples per batch (fixes the random streams, hence the texts).")(f)
    return f


def _spelling_settings(samples, length, margin, lexicon, alpha, n_boot, n_perm, batch_size, prompt, sampling):
    from .stages.spelling import SpellingSettings

    return SpellingSettings(samples=samples, length=length, margin=margin, prompt=_unescape(prompt),
                            sampling=sampling, lexicon=None if lexicon is None else str(lexicon), alpha=alpha,
                            n_boot=n_boot, n_perm=n_perm, batch_size=batch_size)


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


def spelling_table(checkpoints: list[dict]):
    """The `spelling` command's table: the checkpoint table (gptwaves.schema) of its results."""
    from .stages.summary import spelling_entry

    return checkpoint_table([{"iteration": r.get("iteration"), "val_loss": r.get("val_loss"),
                              "spelling": spelling_entry(r["stats"])} for r in checkpoints], "cli-spelling")


def waves_table(checkpoints: list[dict]):
    """The `waves` command's table: the checkpoint table (gptwaves.schema), one row per tap."""
    return checkpoint_table([{"iteration": r.get("iteration"), "waves": r["taps"]} for r in checkpoints],
                            "cli-waves")


def table_text(table) -> str:
    """A checkpoint table as aligned plain text (the same cells as the report and the claims page)."""
    rows = [table.labels] + [[c.text for c in r] for r in table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(table.columns))]
    return "\n".join("  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)


def _echo_table(table) -> None:
    click.echo(table_text(table))


def _print_findings(summary: dict) -> None:
    for c in (summary.get("findings") or {}).get("claims", []):
        if "as_stated" in c:
            click.echo(f"- {c['claim']}: as stated {c['as_stated']['verdict']}; beyond the null "
                       f"{c['beyond_null']['verdict']}. {c['as_stated']['text']} {c['beyond_null']['text']}")
        else:
            click.echo(f"- {c['claim']}: {c['verdict']}. {c['text']}")


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


class _LazyHelp(click.Option):
    """An option whose help is built when help is shown (the per-preset analysis sizes live in
    gptwaves.reproduce, which the CLI imports only when it runs)."""

    def __init__(self, *a, help_fn=None, **kw):
        super().__init__(*a, **kw)
        self.help_fn = help_fn

    def get_help_record(self, ctx):
        if self.help_fn is not None:
            self.help = self.help_fn()
        return super().get_help_record(ctx)


def _size_help(name: str, what: str, when_none: tuple[str, str] = ("", "")):
    """Help text listing an analysis size's default for every preset and for --hf-model (declared
    once, in gptwaves.reproduce's ANALYSIS_PRESETS and HF_ANALYSIS)."""

    def build() -> str:
        from .reproduce import ANALYSIS_PRESETS, HF_ANALYSIS

        def val(a, none):
            v = getattr(a, name)
            return none if v is None else str(v)

        vals = {p: val(a, when_none[0]) for p, a in ANALYSIS_PRESETS.items()}
        per = (next(iter(vals.values())) + " for every preset" if len(set(vals.values())) == 1
               else ", ".join(f"{p} {v}" for p, v in vals.items()))
        return f"{what} [default: {per}; --hf-model {val(HF_ANALYSIS, when_none[1])}]"

    return build


def _waves_help(name: str, what: str):
    def build() -> str:
        from .stages.waves import WavesSettings

        return f"{what} [default: {_default(WavesSettings, name)}]"

    return build


#: Options that only mean something for one source: refused with the other (one line).
_TRAINING_ONLY = {"preset_name": "--preset", "max_iters": "--max-iters", "train_seed": "--train-seed",
                  "corpus": "--corpus", "precision": "--precision"}


def _refuse_irrelevant(ctx, hf_model, revisions, waves_ci) -> None:
    """One-line errors for options the chosen source ignores (docs/method.md, "Hugging Face models
    and suites"): training options with --hf-model, --revisions/--dtype without it, --waves-boot
    without the BCa interval."""
    from click.core import ParameterSource

    given = {k for k in ctx.params if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)}
    if hf_model:
        bad = [flag for k, flag in _TRAINING_ONLY.items() if k in given]
        if bad:
            raise GptwavesError(f"{', '.join(bad)} {'applies' if len(bad) == 1 else 'apply'} to training a "
                                "gptwaves model, not to --hf-model (a suite is trained elsewhere)")
    else:
        if revisions:
            raise GptwavesError("--revisions needs --hf-model")
        if "dtype" in given:
            raise GptwavesError("--dtype applies to --hf-model (a gptwaves model trains with --precision)")
    if "waves_boot" in given and waves_ci != "bca":
        raise GptwavesError("--waves-boot sets the bootstrap resamples of --waves-ci bca; the default coherence "
                            "excess CI is a jackknife and draws none")


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
              help="Run the calibration stage (size and power of the spelling rules; default: on for quick and "
                   "paper, off for smoke and Hugging Face suites).")
@click.option("--calibrate-coherence", type=int, default=None, show_default="off",
              help="Also calibrate the coherence rules with this many replicates per scenario (costly).")
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
    elif calibrate or calibrate_coherence:
        from .stages.calibration import CalibrationSettings

        cal = an.calibration or CalibrationSettings(groups=("spelling",))
        if calibrate_coherence:
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
              help="Spelling: permutation nulls shared across replicates (fast, default) or per replicate (exact).")
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
    """Tabulate the verdicts of runs that differ only in their training seed into OUT (Markdown)."""
    from .publish import write_seeds_table

    click.echo(str(write_seeds_table(out, list(run_dirs))))



# ---------------------------------------------------------------------------- option ranges

class _Integer(click.ParamType):
    """An integer option: plain decimal digits (at most 18: no 5000-digit numbers, no ``1e3``),
    and for seeds not negative. The settings objects check each option's own range."""

    name = "integer"

    def __init__(self, non_negative: bool = False, lo: int | None = None, hi: int | None = None):
        self.non_negative, self.lo, self.hi = non_negative, lo, hi

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            v = value
        else:
            s = str(value).strip()
            if not re.fullmatch(r"[+-]?\d{1,18}", s):
                self.fail(f"{str(value)[:40]!r} is not an integer" + (" of at most 18 digits" if
                          re.fullmatch(r"[+-]?\d+", s) else ""), param, ctx)
            v = int(s)
        if self.non_negative and v < 0:
            self.fail(f"{v} is negative (seeds are 0 or more)", param, ctx)
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            self.fail(f"{v} is not in [{'' if self.lo is None else self.lo}, {'' if self.hi is None else self.hi}]",
                      param, ctx)
        return v


class _Finite(click.ParamType):
    """A real-number option: finite (no nan, inf or overflow to inf); ranges are the settings'."""

    name = "number"

    def __init__(self, lo: float | None = None, hi: float | None = None):
        self.lo, self.hi = lo, hi

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            v = value
        else:
            s = str(value).strip()
            try:
                v = float(s) if len(s) <= 64 else math.nan
            except ValueError:
                self.fail(f"{str(value)[:40]!r} is not a number", param, ctx)
            if not math.isfinite(v):
                self.fail(f"{str(value)[:40]!r} is not a finite number", param, ctx)
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            self.fail(f"{v:g} is not in [{'' if self.lo is None else self.lo}, {'' if self.hi is None else self.hi}]",
                      param, ctx)
        return v


#: Options naming a file that is read: one that does not exist is an error even where the run
#: would not need it.
INPUT_FILES = ("corpus", "lexicon", "readme")


class _NonBlank(click.ParamType):
    """A text or path option given on the command line must not be empty (an empty ``--out`` is
    not the current folder, an empty ``--hf-model`` is not "no model") nor hold a NUL byte;
    whitespace alone is refused too, except in a prompt."""

    def __init__(self, inner: click.ParamType, blank_ok: bool = False):
        self.inner, self.blank_ok, self.name = inner, blank_ok, inner.name

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not (ctx is not None and param is not None and ctx.get_parameter_source(
                param.name) is click.core.ParameterSource.DEFAULT):
            if value == "" or (not self.blank_ok and not value.strip()):
                self.fail("it is empty", param, ctx)
            if "\x00" in value:
                self.fail("it contains a NUL byte", param, ctx)
            if param is not None and param.name == "device" and not re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,3})?",
                                                                                  value.strip()):
                self.fail(f"unknown device {value[:40]!r}: give auto, cpu, cuda or cuda:N", param, ctx)
            if param is not None and param.name in INPUT_FILES and not os.path.lexists(value):
                self.fail(f"file not found: {value[:200]}", param, ctx)  # never silently unused
        return self.inner.convert(value, param, ctx)

    def get_metavar(self, *args, **kwargs):
        return self.inner.get_metavar(*args, **kwargs)

    def to_info_dict(self):
        return self.inner.to_info_dict()


def _harden(group: click.Group) -> None:
    """Give every integer and real option of every command (present and future) the checks above,
    so no option passes nan, inf, a huge or non-integer number, or a negative seed to the stages."""
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _harden(cmd)
            continue
        for prm in cmd.params:
            lo, hi = getattr(prm.type, "min", None), getattr(prm.type, "max", None)  # IntRange, FloatRange
            if isinstance(prm.type, click.types.IntParamType):
                prm.type = _Integer(non_negative="seed" in (prm.name or ""), lo=lo, hi=hi)
            elif isinstance(prm.type, click.types.FloatParamType):
                prm.type = _Finite(lo=lo, hi=hi)
            elif isinstance(prm.type, (click.types.StringParamType, click.Path)):
                prm.type = _NonBlank(prm.type, blank_ok=prm.name == "prompt")


_harden(cli)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="gptwaves", standalone_mode=False)
    except GptwavesError as e:
        click.echo(f"gptwaves: error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("gptwaves: aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("gptwaves: interrupted; re-run the same command to resume", err=True)
        return 130
    except click.ClickException as e:  # usage errors too: one line like every other error
        msg = " ".join(e.format_message().split())
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if isinstance(e, click.UsageError) and ctx is not None else ""
        click.echo(f"gptwaves: error: {msg}{hint}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except OSError as e:  # a write or read fault the stages did not name themselves
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(f"gptwaves: error: {where}{e.strerror or e}", err=True)
        return 1
    except MemoryError:
        click.echo("gptwaves: error: out of memory; try fewer --samples or a smaller batch", err=True)
        return 1
    except Exception as e:  # a bug, not bad input: still one line (GPTWAVES_DEBUG=1 shows the traceback)
        import os

        if os.environ.get("GPTWAVES_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:200]
        click.echo(f"gptwaves: error: internal error ({type(e).__name__}: {first}); re-run with "
                   "GPTWAVES_DEBUG=1 for the traceback and please report it", err=True)
        return 3
    return 0


def entry() -> None:  # pragma: no cover
    sys.exit(main())
