"""What every command shares: the command group, option decorators and the settings they build,
the checkpoint tables as text, and the checks given to every option (:func:`_harden`)."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

import click

from . import __version__
from .errors import GptwavesError
from .tables import checkpoint_table

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
