"""Publish a finished run's results into the repository's docs, generated, never typed.

    gptwaves publish run RUN_DIR docs/results/NAME [--readme README.md]
    gptwaves publish seeds docs/results/seeds.md RUN_DIR [RUN_DIR ...]
    gptwaves publish sweep SWEEP_DIR docs/results/NAME

(``python -m gptwaves.publish run|seeds|sweep ...`` is the same command; ``sweep`` publishes a
collected ``gptwaves sweep``, its stage times and its tables: :mod:`gptwaves.publish_sweep`.)

``run`` copies ``summary.json`` and the key figures (small PNGs) of a run into
``docs/results/NAME/``, writes the run's time budget to ``budget.json`` there (the stage times of
every ``reproduce`` invocation, the machine, the matmul peaks measured now or given or left out
with ``--no-peaks``, the FLOPs and gap per stage: ``gptwaves bench budget``'s rows as data), writes
``claims.md`` (both verdicts of every claim with their numbers, a per-checkpoint table, the time
table of ``budget.json``), and with ``--readme`` replaces the block
between ``<!-- results:begin -->`` and ``<!-- results:end -->`` of the README with one figure and a
short table. ``seeds`` tabulates the verdicts and the crossing iteration of several runs that differ
only in their training seed, with mean and spread; a verdict that differs between seeds is marked
fragile.

Everything is checked before anything is written (docs/method.md, "Publishing results"): the
summary's structure and numbers (finite, of a sensible size), the files read (regular files inside
the run, no symbolic link out of it, no FIFO), the output folder and the README (its markers, its
folder). Every value copied into Markdown is escaped (table cells, HTML, links and images, line
breaks), so no value can add markup or forge the README's markers. Every file is written atomically
(an existing publication is left intact by any fault).
"""

from __future__ import annotations

import math
import os
import re
import statistics
import sys
from pathlib import Path

from .errors import CorruptArtefactError, GptwavesError
from .io import (atomic_write_bytes, atomic_write_json, atomic_write_text, check_run_dir, confine_reads,
                 read_bytes_bounded, read_json, read_text_file)
from .results_page import budget_markdown, headline
from . import schema
from .tables import checkpoint_table

__all__ = ["publish_run", "seeds_table", "seeds_table_of", "claims_markdown", "claims_text", "readme_block", "md_escape", "check_summary",
           "KEY_FIGURES", "BEGIN", "END"]

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
VERDICTS = ("supported", "not supported", "inconclusive")
#: Limits of what is published: a figure (small PNGs), a README, a stage's seconds, an iteration.
MAX_FIGURE_BYTES = 32 << 20
MAX_README_BYTES = 16 << 20
MAX_SECONDS = 1e9
MAX_ITERATION = 2**53
MAX_TEXT = 10_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:-]{0,63}")  # presets, versions, taps, stage names, seeds
_REL = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")  # the results folder, relative to the README

#: (source relative to the run directory; {last} / {first} = the last / first checkpoint's name), target name
KEY_FIGURES = (
    ("spelling/figures/decomposition.png", "fano_reference_null.png"),
    ("spelling/figures/fano.png", "fano.png"),
    ("spelling/figures/cascade.png", "cascade.png"),
    ("waves/figures/coherence_nulls.png", "coherence_floors.png"),
    ("waves/figures/correlation_compare.png", "correlation_untrained_vs_trained.png"),
    ("waves/figures/{last}_correlation.png", "correlation_trained_clusters.png"),
    ("waves/figures/{last}_wave_heatmap.png", "wave_heatmap.png"),
    ("waves/figures/{last}_channel_table.png", "channel_function.png"),
    ("figures/training_curves.png", "training_curves.png"),
)

_SPELLING_SUMMARY = schema.in_summary(schema.SPELLING_FIELDS)
_TAP_SUMMARY = schema.in_summary(schema.TAP_FIELDS)

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(text: object) -> str:
    """``text`` as inert Markdown: one line (control characters and line breaks become spaces),
    HTML escaped (``<`` ``>`` ``&``: no tags, no comments, hence no forged markers), and the
    characters that make emphasis, code, links, images or table cells (``\\ ` * _ [ ] | ~``)
    backslash-escaped."""
    s = "".join(" " if (ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029") else ch for ch in str(text))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


# ------------------------------------------------------------------------------ checks


class _Bad(Exception):
    pass


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _need(obj, key, kinds: tuple, where: str):
    v = obj.get(key) if isinstance(obj, dict) else None
    ok = any((t is None and v is None) or (t is float and _is_num(v)) or
             (t is int and isinstance(v, int) and not isinstance(v, bool)) or
             (t not in (None, float, int) and isinstance(v, t)) for t in kinds)
    if not ok:
        names = "/".join("null" if t is None else "a number" if t is float else "an integer" if t is int
                         else f"a JSON {'object' if t is dict else 'array' if t is list else 'string'}" for t in kinds)
        raise _Bad(f"{where}{key} = {str(v)[:40]!r} is not {names}")
    return v


def _name(v, where: str) -> None:
    if v is not None and not (isinstance(v, str) and _NAME.fullmatch(v)):
        raise _Bad(f"{where} = {str(v)[:40]!r} is not a plain name (letters, digits, '.', '_', '+', ':', '-')")


def _bounded(v, where: str, lo: float, hi: float) -> None:
    if v is not None and not (_is_num(v) and math.isfinite(v) and lo <= v <= hi):
        raise _Bad(f"{where} = {str(v)[:40]!r} is not a number in [{lo:g}, {hi:g}]")


def _text(v, where: str, empty: bool = True) -> None:
    if not isinstance(v, str) or len(v) > MAX_TEXT or (not empty and not v.strip()):
        raise _Bad(f"{where} is not {'a non-empty' if not empty else 'a'} text of at most {MAX_TEXT} characters")


def _check(s) -> None:
    from .stages.checks import _Bad as ValuesBad
    from .stages.checks import check_values

    if not isinstance(s, dict):
        raise _Bad("it is not a JSON object")
    try:
        check_values(s)  # no NaN or infinity, no absurd numbers, probabilities in [0, 1], ordered intervals
    except ValuesBad as e:
        raise _Bad(str(e)) from None
    for k in ("preset", "gptwaves_version"):
        _name(s.get(k), k)
    settings = _need(s, "settings", (dict, None), "")
    train = _need(settings or {}, "train", (dict, None), "settings.")
    if train:
        seed = _need(train, "seed", (int, None), "settings.train.")
        _bounded(seed, "settings.train.seed", 0, MAX_ITERATION)
    for i, c in enumerate(_need(s, "checkpoints", (list, None), "") or []):
        w = f"checkpoints[{i}]."
        if not isinstance(c, dict):
            raise _Bad(f"checkpoints[{i}] is not a JSON object")
        _bounded(_need(c, "iteration", (int, None), w), w + "iteration", 0, MAX_ITERATION)
        _need(c, "val_loss", (float, None), w)
        sp = _need(c, "spelling", (dict, None), w) or {}
        why = schema.check_fields(sp, _SPELLING_SUMMARY, w + "spelling") if sp else None
        if why:  # every number at its declared range (gptwaves.schema)
            raise _Bad(why)
        for k in ("correct", "misspelled", "cascade"):
            d = _need(sp, k, (dict, None), w + "spelling.") or {}
            for q, v in d.items():
                if not (v is None or _is_num(v) or isinstance(v, (list, dict)) or q == "verdict"
                        or isinstance(v, (str, bool))):
                    raise _Bad(f"{w}spelling.{k}.{q} has an unexpected type")
        for tap, v in (_need(c, "waves", (dict, None), w) or {}).items():
            _name(tap, f"{w}waves tap")
            if not isinstance(v, dict):
                raise _Bad(f"{w}waves.{tap} is not a JSON object")
            why = schema.check_fields(v, _TAP_SUMMARY, f"{w}waves.{tap}")
            if why:
                raise _Bad(why)
            _need(v, "induced", (dict, None), f"{w}waves.{tap}.")
            sur = _need(v, "surrogate", (dict, None), f"{w}waves.{tap}.") or {}
            _need(sur, "mean_abs_corr", (dict, None), f"{w}waves.{tap}.surrogate.")
    f = _need(s, "findings", (dict,), "")
    for i, c in enumerate(_need(f, "claims", (list,), "findings.")):
        w = f"findings.claims[{i}]"
        if not isinstance(c, dict):
            raise _Bad(f"{w} is not a JSON object")
        cid = _need(c, "id", (int,), w + ".")
        _bounded(cid, w + ".id", 1, 99)
        _text(c.get("claim"), w + ".claim (its title)", empty=False)
        for part in ("as_stated", "beyond_null"):
            p = _need(c, part, (dict,), w + ".")
            if p.get("verdict") not in VERDICTS:
                raise _Bad(f"{w}.{part}.verdict = {str(p.get('verdict'))[:40]!r} is not one of {', '.join(VERDICTS)}")
            _text(p.get("text"), f"{w}.{part}.text")
    cal = _need(s, "calibration", (dict, None), "") or {}
    for k, v in (_need(cal, "claims", (dict, None), "calibration.") or {}).items():
        if not isinstance(v, dict):
            raise _Bad(f"calibration.claims.{k} is not a JSON object")
        for part in ("as_stated", "beyond_null"):
            p = _need(v, part, (dict, None), f"calibration.claims.{k}.") or {}
            if p.get("text") is not None:
                _text(p["text"], f"calibration.claims.{k}.{part}.text")
    cr = _need(f, "crossing", (dict, None), "findings.") or {}
    _bounded(_need(cr, "iteration", (float, None), "findings.crossing."), "findings.crossing.iteration", 0,
             MAX_ITERATION)
    ci = _need(cr, "ci", (list, None), "findings.crossing.")
    if ci is not None:
        if len(ci) != 2:
            raise _Bad(f"findings.crossing.ci has {len(ci)} values, not 2")
        for v in ci:
            _bounded(v, "findings.crossing.ci", 0, MAX_ITERATION)
    if cr.get("reason") is not None:
        _text(cr["reason"], "findings.crossing.reason")


def check_summary(s, path: str | os.PathLike = "summary.json") -> dict:
    """Refuse (one line naming ``path`` and the field) a summary that publish cannot render
    faithfully: wrong structure, non-finite or absurd numbers, a claim without a title, a verdict
    outside the three, a crossing interval that is not two numbers, names with markup."""
    from .stages.summary import SUMMARY_FORMAT, SUMMARY_VERSION

    if not isinstance(s, dict) or s.get("format") != SUMMARY_FORMAT or s.get("format_version") != SUMMARY_VERSION:
        raise GptwavesError(f"{path} is not a gptwaves summary of format version {SUMMARY_VERSION}; rebuild it with "
                            "`gptwaves summary --run RUN_DIR`")
    try:
        _check(s)
    except _Bad as e:
        raise CorruptArtefactError(f"{path} cannot be published: {e}; rebuild it with `gptwaves summary --run "
                                   "RUN_DIR`") from None
    return s


def _run_dir(run_dir: str | os.PathLike, what: str = "run directory") -> Path:
    p = check_run_dir(run_dir)
    if not p.is_dir():
        raise GptwavesError(f"{what} not found: {run_dir}")
    return p


def _summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    with confine_reads(run_dir):
        return check_summary(read_json(path, "summary", dict), path)


# ------------------------------------------------------------------------------ Markdown


def _fmt(v, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if math.isfinite(v) else "n/a"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**15 else f"{v:.{nd}g}"
    return md_escape(v)


def _claims(s: dict) -> list[dict]:
    return [c for c in (s.get("findings") or {}).get("claims", []) if isinstance(c, dict) and "as_stated" in c]


def claims_text(s: dict) -> str:
    """Each claim's two verdicts with their sentences of numbers and, where the run was calibrated,
    the calibration sentence of each level; then the crossing of F_correct (Markdown, escaped)."""
    out = []
    for c in _claims(s):
        a, b = c["as_stated"], c["beyond_null"]
        cal = (((s.get("calibration") or {}).get("claims") or {}).get(str(c["id"])) or {})
        extra = {k: f" *Calibration:* {md_escape(cal[k]['text'])}" if (cal.get(k) or {}).get("text") else ""
                 for k in ("as_stated", "beyond_null")}
        out.append(f"**{int(c['id'])}. {md_escape(c['claim'])}.** *As stated ({md_escape(a['verdict'])}):* "
                   f"{md_escape(a['text'])}{extra['as_stated']} *Beyond the null ({md_escape(b['verdict'])}):* "
                   f"{md_escape(b['text'])}{extra['beyond_null']}")
        out.append("")
    cr = (s.get("findings") or {}).get("crossing") or {}
    if cr.get("iteration") is not None:
        lo, hi = (cr.get("ci") or [None, None])
        out.append(f"Crossing of F_correct through 1: iteration {_fmt(cr['iteration'], 4)} "
                   f"(95% bootstrap CI {_fmt(lo, 4) if lo is not None else 'open'} to "
                   f"{_fmt(hi, 4) if hi is not None else 'open'}).")
    else:
        out.append(f"Crossing of F_correct through 1: not reported "
                   f"({md_escape(cr.get('reason') or 'no spelling statistics')}).")
    return "\n".join(out) + "\n"


def claims_markdown(s: dict, *, with_text: bool = True) -> str:
    """The claims table of a (checked) summary: both verdicts, and (``with_text``) `claims_text`."""
    out = ["| # | claim | as stated | beyond the null |", "|---|---|---|---|"]
    for c in _claims(s):
        out.append(f"| {int(c['id'])} | {md_escape(c['claim'])} | **{md_escape(c['as_stated']['verdict'])}** | "
                   f"**{md_escape(c['beyond_null']['verdict'])}** |")
    if with_text:
        return "\n".join(out) + "\n\n" + claims_text(s)
    cr = (s.get("findings") or {}).get("crossing") or {}
    out.append("")
    out.append(claims_text({**s, "findings": {"claims": [], "crossing": cr}}).rstrip("\n"))
    return "\n".join(out) + "\n"


def checkpoint_table_markdown(table) -> str:
    """A checkpoint table (:func:`gptwaves.tables.checkpoint_table`) as a Markdown table, every
    cell escaped (the same cells as the report and the CLI)."""
    out = ["| " + " | ".join(md_escape(c) for c in table.labels) + " |", "|" + "---|" * len(table.columns)]
    out += ["| " + " | ".join(md_escape(c.text) for c in row) + " |" for row in table.rows]
    return "\n".join(out) + "\n"


def _checkpoint_markdown(s: dict) -> str:
    from .stages.common import focus_tap, input_floor

    cks = [c for c in s.get("checkpoints") or [] if isinstance(c, dict)]
    taps = next((list(c["waves"]) for c in reversed(cks) if c.get("waves")), None)
    tap = focus_tap(taps) if taps else None
    table = checkpoint_table(cks, "claims", tap=tap, floor=input_floor(taps) if taps else None)
    return (f"Focus tap: `{tap}`.\n\n" if tap else "") + checkpoint_table_markdown(table)


def _timings(run_dir: Path) -> tuple[dict, list[dict]]:
    """The stage timings of ``reproduce.json`` (checked: plain stage names, seconds in [0, 1e9]).
    A run without one was not made by ``gptwaves reproduce`` and has no time budget to publish."""
    p = run_dir / "reproduce.json"
    if not os.path.lexists(p):
        raise GptwavesError(f"{run_dir} has no reproduce.json: publish needs a run made by `gptwaves reproduce` "
                            "(its stage times are published in budget.json)")
    with confine_reads(run_dir):
        r = read_json(p, "reproduce record", dict)
    try:
        tm = _need(r, "timings", (dict, None), "") or {}
        hist = _need(r, "timings_history", (list, None), "") or []
        for i, h in enumerate([tm, *hist]):
            if not isinstance(h, dict):
                raise _Bad(f"timings_history[{i - 1}] is not a JSON object")
            for k, v in h.items():
                _name(k, "a stage name")
                _bounded(v, f"the seconds of stage {k}", 0, MAX_SECONDS)
    except _Bad as e:
        raise CorruptArtefactError(f"reproduce record {p} cannot be published: {e}") from None
    return tm, hist


def _budget(run_dir: Path, s: dict, peaks) -> dict:
    """``budget.json``: the run's time budget (:func:`gptwaves.bench.budget.budget`) with the run it
    belongs to; ``peaks`` is ``"measure"`` (with ``peak_n`` and ``peak_repeats`` bound by the
    caller), ``"none"`` or a function or object of peaks (docs/method.md, "Publishing results")."""
    from .bench import budget as bb
    from .stages.checks import _Bad as ValuesBad
    from .stages.checks import check_values

    with confine_reads(run_dir):
        b = bb.budget(run_dir, bb.NO_PEAKS if peaks == "none" else peaks)
    b["run"] = {"preset": s.get("preset"), "gptwaves_version": s.get("gptwaves_version"),
                "machine": s.get("machine")}
    try:
        check_values(b)
    except ValuesBad as e:
        raise CorruptArtefactError(f"the time budget of {run_dir} cannot be published: {e}") from None
    return b


def _read_figures(run_dir: Path, s: dict) -> list[tuple[bytes, str]]:
    """The key figures present in the run: (PNG bytes, published name). Each must be a regular
    PNG file of at most MAX_FIGURE_BYTES inside the run (a link out of the run is refused)."""
    names = [f"iter_{c['iteration']:07d}" for c in s.get("checkpoints") or []
             if isinstance(c, dict) and isinstance(c.get("iteration"), int)]
    first, last = (names[0], names[-1]) if names else ("", "")
    out = []
    with confine_reads(run_dir):
        for src, dst in KEY_FIGURES:
            p = run_dir / src.format(first=first, last=last)
            if not os.path.lexists(p):
                continue
            data = read_bytes_bounded(p, "figure", MAX_FIGURE_BYTES)
            if not data.startswith(PNG_MAGIC):
                raise CorruptArtefactError(f"figure {p} is not a PNG file")
            out.append((data, dst))
    return out


def readme_block(s: dict, results_dir: str, figure: str | None, link: str = "docs/results.md") -> str:
    """The README's results block: one figure and a short claims table, linking to the full results."""
    if not _REL.fullmatch(results_dir) or ".." in results_dir.split("/"):
        raise GptwavesError(f"the results folder {results_dir!r} must be a plain relative path (letters, digits, "
                            "'.', '_', '-', '/') under the README's folder")
    lines = [BEGIN, ""]
    preset = md_escape(s.get("preset") or "?")
    if figure:
        lines += [f"![F against training with its independent-error reference and permutation null "
                  f"({preset} preset)]({results_dir}/{figure})", ""]
    lines += [f"*Generated by `gptwaves publish` from `{results_dir}/summary.json` ({preset} preset, "
              f"{len(s.get('checkpoints') or [])} checkpoints). Full numbers, what is reproduced and what only the "
              f"null models reveal: [{link}]({link}).*", ""]
    lines += [headline(s), ""]
    lines.append(claims_markdown(s, with_text=False).rstrip("\n"))
    lines += ["", END]
    block = "\n".join(lines)
    if block.count(BEGIN) != 1 or block.count(END) != 1:  # md_escape makes this impossible; never rely on it alone
        raise GptwavesError("a value of the summary forges the README's results markers; refusing to publish it")
    return block


def _new_readme(readme: Path, dest: Path, s: dict, figure: str | None) -> str:
    """The README's new text (read and checked before anything is written)."""
    text, _ = read_text_file(readme, "README", MAX_README_BYTES)
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise GptwavesError(f"{readme} must hold exactly one {BEGIN} ... {END} block (begin before end)")
    try:
        rel = dest.resolve().relative_to(readme.resolve().parent).as_posix()
    except ValueError:
        raise GptwavesError(f"the results folder {dest} is not under the README's folder "
                            f"{readme.resolve().parent}: the README could not link to it") from None
    a, b = text.index(BEGIN), text.index(END) + len(END)
    return text[:a] + readme_block(s, rel, figure) + text[b:]


def _check_dest(dest: Path, run_dir: Path, what: str = "run") -> Path:
    s = os.fspath(dest)
    if not s.strip() or "\x00" in s:
        raise GptwavesError(f"invalid output folder {s!r}")
    if dest.exists() and not dest.is_dir():
        raise GptwavesError(f"output folder {dest} exists and is not a folder")
    d = dest.resolve()
    if d == run_dir or run_dir in d.parents:
        raise GptwavesError(f"output folder {dest} is inside the {what} {run_dir}: publish into the docs, not the {what}")
    return d


def publish_run(run_dir: str | Path, dest: str | Path, readme: str | Path | None = None, *,
                peaks="measure", peak_n: int | None = None, peak_repeats: int | None = None) -> list[Path]:
    """Copy a run's summary and key figures into ``dest``, write its time budget to
    ``dest/budget.json`` and ``dest/claims.md``; optionally rewrite the README's results block.
    Returns the files written.

    ``peaks``: ``"measure"`` (the fp32 and bf16 matmul peaks measured now on this machine, an
    ``peak_n``-cubed ``torch.mm``, median of ``peak_repeats``), ``"none"`` (no peaks: the budget's
    seconds at the peak and gaps are absent, and marked so), or a peaks object
    (:func:`gptwaves.bench.budget.given_peaks`).

    Everything is read and checked first (summary, reproduce record, checkpoints, recordings,
    figures, README, where the README can link) and the peaks measured; only then is anything
    written, each file atomically."""
    from .bench import budget as bb

    run = _run_dir(run_dir)
    dest = Path(dest)
    _check_dest(dest, run)
    s = _summary(run)
    with confine_reads(run):
        summary_bytes = read_bytes_bounded(run / "summary.json", "summary")
    _timings(run)
    figs = _read_figures(run, s)
    new_readme = None
    if readme is not None:
        fig = next((n for _, n in figs if n == "fano_reference_null.png"), None)
        new_readme = _new_readme(Path(readme), dest, s, fig)
    if peaks == "measure":
        n, r = peak_n or bb.PEAK_N, peak_repeats or bb.PEAK_REPEATS
        peaks = lambda: bb.measure_peaks(n, r)  # noqa: E731 (after every file is checked)
    elif not (peaks == "none" or isinstance(peaks, dict)):
        raise GptwavesError(f"peaks must be 'measure', 'none' or given peaks, not {peaks!r}")
    b = _budget(run, s, peaks)
    version = md_escape(s.get("gptwaves_version") or "n/a")
    md = [f"# Results of the `{s.get('preset') or 'n/a'}` run (generated)", "",
          f"Generated by `gptwaves publish run` from `summary.json` and `budget.json` in this folder (gptwaves "
          f"{version}). Do not edit by hand.", "",
          "## Claims", "", claims_markdown(s), "## Checkpoints", "", _checkpoint_markdown(s),
          "## Time of each stage", "", budget_markdown(b), "## Figures", ""]
    md += [f"![{name}]({name})" for _, name in figs]
    written = [atomic_write_bytes(dest / "summary.json", summary_bytes), atomic_write_json(dest / "budget.json", b)]
    written += [atomic_write_bytes(dest / name, data) for data, name in figs]
    written.append(atomic_write_text(dest / "claims.md", "\n".join(md) + "\n"))
    if new_readme is not None:
        written.append(atomic_write_text(Path(readme), new_readme))
    return written


def seeds_table(run_dirs: list[str | Path], sources: list[str] | None = None) -> str:
    """`seeds_table_of` the summaries of ``run_dirs``."""
    return seeds_table_of([_summary(_run_dir(d)) for d in run_dirs], sources)


def seeds_table_of(summaries: list[dict], sources: list[str] | None = None) -> str:
    """Verdicts and crossing per training seed, with the spread; verdicts that differ are fragile. A
    claim whose stage a run did not run (e.g. a seed trained and scored for spelling only) is "not
    run" there and left out of the comparison. ``sources``: the link of each column's published
    summary.json, listed under the table."""
    from .stages.summary import NOT_RUN

    runs = [(((s.get("settings") or {}).get("train") or {}).get("seed"), s) for s in summaries]
    out = ["| claim | " + " | ".join(f"seed {_fmt(seed)}" for seed, _ in runs) + " | robust? |",
           "|---|" + "---|" * len(runs) + "---|"]
    ids = sorted({c["id"] for _, s in runs for c in _claims(s)})
    for cid in ids:
        for part, label in (("as_stated", "as stated"), ("beyond_null", "beyond the null")):
            vs = []
            title = ""
            for _, s in runs:
                c = next((c for c in _claims(s) if c["id"] == cid), None)
                title = title or (c["claim"] if c else "")
                ran = c is not None and c[part].get("text") not in NOT_RUN
                vs.append(c[part]["verdict"] if ran else "not run")
            judged = [v for v in vs if v != "not run"]
            if not judged:
                robust = "not run"
            elif len(set(judged)) > 1:
                robust = "**fragile**"
            else:
                robust = "same in every seed" if len(judged) == len(vs) else \
                    f"same in every seed that ran it ({len(judged)} of {len(vs)})"
            out.append(f"| {cid}. {md_escape(title)} ({label}) | " + " | ".join(map(md_escape, vs))
                       + f" | {robust} |")
    crossings = [((s.get("findings") or {}).get("crossing") or {}) for _, s in runs]
    its = [c.get("iteration") for c in crossings]
    out.append("| crossing iteration of F_correct | " + " | ".join(
        _fmt(i, 4) if i is not None else f"not reported ({md_escape(c.get('reason') or 'n/a')})"
        for i, c in zip(its, crossings))
        + " | " + (f"mean {statistics.mean([i for i in its if i is not None]):.0f}, sd "
                   f"{statistics.stdev([i for i in its if i is not None]):.0f}"
                   if sum(i is not None for i in its) >= 2 else "fewer than 2 reported") + " |")
    for key, label in (("val_loss", "final val loss"),):
        vals = [((s.get("checkpoints") or [{}])[-1]).get(key) for _, s in runs]
        ok = [v for v in vals if _is_num(v)]
        out.append(f"| {label} | " + " | ".join(_fmt(v, 4) for v in vals) + " | "
                   + (f"mean {statistics.mean(ok):.3f}, sd {statistics.stdev(ok):.3f}" if len(ok) >= 2 else "")
                   + " |")
    if sources:
        out.append("")
        out.append("Each column is read from a published summary.json: " + "; ".join(
            f"seed {_fmt(seed)}: [{src}]({src})" for (seed, _), src in zip(runs, sources)) + ".")
    return "\n".join(out) + "\n"


def _seed_claims_markdown(s: dict) -> str:
    """``claims.md`` of a seed published by `write_seeds_table`: its verdicts with their numbers and
    its per-checkpoint table (no figures or time budget: those belong to a run published with
    ``publish run``)."""
    seed = md_escape(_fmt((((s.get("settings") or {}).get("train") or {}).get("seed"))))
    version = md_escape(s.get("gptwaves_version") or "n/a")
    return "\n".join([f"# Results of training seed {seed} of the `{md_escape(s.get('preset') or 'n/a')}` preset "
                      "(generated)", "",
                      f"Generated by `gptwaves publish seeds` from `summary.json` in this folder (gptwaves "
                      f"{version}), a column of a seed table. Do not edit by hand.", "",
                      "## Claims", "", claims_markdown(s), "## Checkpoints", "", _checkpoint_markdown(s)]) + "\n"


def write_seeds_table(out: str | Path, run_dirs: list[str | Path]) -> list[Path]:
    """``seeds_table`` written atomically to ``out`` (refused when ``out`` is a folder), each column
    citing the published summary.json it is read from: a byte-identical one already published under
    ``out``'s folder (e.g. the run published with ``publish run``), else a copy written to
    ``<out folder>/<out stem without "-seeds">-seed<seed>/summary.json`` (e.g. ``paper-seed1338``,
    with its verdicts and per-checkpoint table in ``claims.md`` beside it), so
    that every number of the table can be checked from the published files (a results page renders
    it from them with ``gen:seeds:NAME,NAME,...``). Returns the files written."""
    import hashlib

    out = Path(out)
    if not os.fspath(out).strip() or "\x00" in os.fspath(out):
        raise GptwavesError(f"invalid output file {os.fspath(out)!r}")
    if out.is_dir():
        raise GptwavesError(f"output {out} is a folder, not a file")
    root = out.parent
    published = {}
    for p in sorted(root.glob("*/summary.json")):
        if p.is_file() and not p.is_symlink():
            published.setdefault(hashlib.sha256(read_bytes_bounded(p, "published summary")).hexdigest(), p)
    written, sources = [], []
    for d in run_dirs:
        run = _run_dir(d)
        with confine_reads(run):
            data = read_bytes_bounded(run / "summary.json", "summary")
        seed = ((_summary(run).get("settings") or {}).get("train") or {}).get("seed")
        dest = published.get(hashlib.sha256(data).hexdigest())
        if dest is None:
            dest = root / f"{out.stem.removesuffix('-seeds')}-seed{seed}" / "summary.json"
            written.append(atomic_write_bytes(dest, data))
            written.append(atomic_write_text(dest.parent / "claims.md", _seed_claims_markdown(_summary(run))))
        sources.append(dest.relative_to(root).as_posix())
    written.append(atomic_write_text(out, seeds_table(run_dirs, sources)))
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m gptwaves.publish ...``: the same as ``gptwaves publish ...``."""
    from .cli import main as cli_main

    return cli_main(["publish", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
