"""Publish a finished run's results into the repository's docs, generated, never typed.

    python -m gptwaves.publish run RUN_DIR docs/results/NAME [--readme README.md]
    python -m gptwaves.publish seeds docs/results/seeds.md RUN_DIR [RUN_DIR ...]

``run`` copies ``summary.json`` and the key figures (small PNGs) of a run into
``docs/results/NAME/``, writes ``claims.md`` there (both verdicts of every claim with their
numbers, a per-checkpoint table, the time of each stage), and with ``--readme`` replaces the block
between ``<!-- results:begin -->`` and ``<!-- results:end -->`` of the README with one figure and a
short table. ``seeds`` tabulates the verdicts and the crossing iteration of several runs that differ
only in their training seed, with mean and spread; a verdict that differs between seeds is marked
fragile.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from .errors import GptwavesError
from .io import atomic_write_text, read_json
from .results_page import headline

__all__ = ["publish_run", "seeds_table", "claims_markdown", "readme_block", "KEY_FIGURES"]

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

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


def _fmt(v, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:.{nd}g}" if isinstance(v, float) else str(v)
    return str(v)


def _summary(run_dir: Path) -> dict:
    from .stages.summary import SUMMARY_FORMAT, SUMMARY_VERSION

    s = read_json(Path(run_dir) / "summary.json", "summary", dict)
    if s.get("format") != SUMMARY_FORMAT or s.get("format_version") != SUMMARY_VERSION:
        raise GptwavesError(f"{run_dir}/summary.json is not a gptwaves summary of format version {SUMMARY_VERSION}; "
                            f"rebuild it with `gptwaves summary --run {run_dir}`")
    return s


def _claims(s: dict) -> list[dict]:
    return [c for c in (s.get("findings") or {}).get("claims", []) if isinstance(c, dict) and "as_stated" in c]


def claims_markdown(s: dict, *, with_text: bool = True) -> str:
    """The claims table of a summary (format 2): both verdicts, and their sentences of numbers."""
    out = ["| # | claim | as stated | beyond the null |", "|---|---|---|---|"]
    for c in _claims(s):
        out.append(f"| {c['id']} | {c['claim']} | **{c['as_stated']['verdict']}** | **{c['beyond_null']['verdict']}** |")
    if with_text:
        out.append("")
        for c in _claims(s):
            cal = (((s.get("calibration") or {}).get("claims") or {}).get(str(c["id"])) or {})
            extra = {k: f" *Calibration:* {cal[k]['text']}" if (cal.get(k) or {}).get("text") else ""
                     for k in ("as_stated", "beyond_null")}
            out.append(f"**{c['id']}. {c['claim']}.** *As stated ({c['as_stated']['verdict']}):* "
                       f"{c['as_stated']['text']}{extra['as_stated']} *Beyond the null ({c['beyond_null']['verdict']}):* "
                       f"{c['beyond_null']['text']}{extra['beyond_null']}")
            out.append("")
    cr = (s.get("findings") or {}).get("crossing") or {}
    if not with_text:
        out.append("")
    if cr.get("iteration") is not None:
        lo, hi = (cr.get("ci") or [None, None])
        out.append(f"Crossing of F_correct through 1: iteration {_fmt(cr['iteration'], 4)} "
                   f"(95% bootstrap CI {_fmt(lo, 4) if lo is not None else 'open'} to "
                   f"{_fmt(hi, 4) if hi is not None else 'open'}).")
    else:
        out.append(f"Crossing of F_correct through 1: not reported ({cr.get('reason') or 'no spelling statistics'}).")
    return "\n".join(out) + "\n"


def _checkpoint_markdown(s: dict) -> str:
    from .stages.common import focus_tap

    cks = [c for c in s.get("checkpoints") or [] if isinstance(c, dict)]
    tap = next((focus_tap(list(c["waves"])) for c in reversed(cks) if c.get("waves")), None)
    out = ["| iteration | val loss | F correct (verdict) | F/F_ref correct (p) | F misspelled (verdict) | "
           "F/F_ref misspelled (p) | error rate | RR (p) | induced mean abs R | excess over surrogate [CI] |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cks:
        sp = c.get("spelling") or {}
        cor, mis, cas = sp.get("correct") or {}, sp.get("misspelled") or {}, sp.get("cascade") or {}
        w = (c.get("waves") or {}).get(tap) or {}
        sur = (w.get("surrogate") or {}).get("mean_abs_corr") or {}
        ci = sur.get("ci") or [None, None]
        out.append(
            f"| {c.get('iteration')} | {_fmt(c.get('val_loss'), 4)} | {_fmt(cor.get('fano'))} ({cor.get('verdict', 'n/a')}) "
            f"| {_fmt(cor.get('excess'))} ({_fmt(cor.get('excess_p'), 2)}) "
            f"| {_fmt(mis.get('fano'))} ({mis.get('verdict', 'n/a')}) | {_fmt(mis.get('excess'))} "
            f"({_fmt(mis.get('excess_p'), 2)}) | {_fmt(sp.get('error_rate'))} | {_fmt(cas.get('rr'))} "
            f"({_fmt(cas.get('p_value'), 2)}) | {_fmt((w.get('induced') or {}).get('mean_abs_corr'))} "
            f"| {_fmt(sur.get('excess'))} [{_fmt(ci[0])}, {_fmt(ci[1])}] |")
    return (f"Focus tap: `{tap}`.\n\n" if tap else "") + "\n".join(out) + "\n"


def _timings_markdown(run_dir: Path) -> str:
    p = Path(run_dir) / "reproduce.json"
    if not p.is_file():
        return "Stage timings: not recorded (the run was not made by `gptwaves reproduce`).\n"
    r = read_json(p, "reproduce record", dict)
    tm = {k: v for k, v in (r.get("timings") or {}).items() if isinstance(v, (int, float))}
    hist = [h for h in r.get("timings_history") or [] if isinstance(h, dict)]
    rows = ["| stage | seconds (last invocation) | seconds (all invocations) |", "|---|---|---|"]
    for k, v in tm.items():
        total = v + sum(h.get(k, 0) for h in hist if isinstance(h.get(k), (int, float)))
        rows.append(f"| {k} | {v:.1f} | {total:.1f} |")
    return "\n".join(rows) + "\n"


def _resolve_figures(run_dir: Path, s: dict) -> list[tuple[Path, str]]:
    names = [f"iter_{c['iteration']:07d}" for c in s.get("checkpoints") or []
             if isinstance(c, dict) and isinstance(c.get("iteration"), int)]
    first, last = (names[0], names[-1]) if names else ("", "")
    out = []
    for src, dst in KEY_FIGURES:
        p = Path(run_dir) / src.format(first=first, last=last)
        if p.is_file():
            out.append((p, dst))
    return out


def readme_block(s: dict, results_dir: str, figure: str | None, link: str = "docs/results.md") -> str:
    """The README's results block: one figure and a short claims table, linking to the full results."""
    lines = [BEGIN, ""]
    preset = s.get("preset") or "?"
    if figure:
        lines += [f"![F against training with its independent-error reference and permutation null "
                  f"({preset} preset)]({results_dir}/{figure})", ""]
    lines += [f"*Generated by `python -m gptwaves.publish` from `{results_dir}/summary.json` ({preset} preset, "
              f"{len(s.get('checkpoints') or [])} checkpoints). Full numbers, what is reproduced and what only the "
              f"null models reveal: [{link}]({link}).*", ""]
    lines += [headline(s), ""]
    lines.append(claims_markdown(s, with_text=False).rstrip("\n"))
    lines += ["", END]
    return "\n".join(lines)


def publish_run(run_dir: str | Path, dest: str | Path, readme: str | Path | None = None) -> list[Path]:
    """Copy a run's summary and key figures into ``dest`` and write ``dest/claims.md``; optionally
    rewrite the README's results block. Returns the files written."""
    run_dir, dest = Path(run_dir), Path(dest)
    s = _summary(run_dir)
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    shutil.copyfile(run_dir / "summary.json", dest / "summary.json")
    written.append(dest / "summary.json")
    figs = _resolve_figures(run_dir, s)
    for src, name in figs:
        shutil.copyfile(src, dest / name)
        written.append(dest / name)
    md = [f"# Results of the `{s.get('preset')}` run (generated)", "",
          f"Generated by `python -m gptwaves.publish run` from `{dest.as_posix()}/summary.json` "
          f"(gptwaves {s.get('gptwaves_version')}). Do not edit by hand.", "",
          "## Claims", "", claims_markdown(s), "## Checkpoints", "", _checkpoint_markdown(s),
          "## Time of each stage", "", _timings_markdown(run_dir), "## Figures", ""]
    md += [f"![{name}]({name})" for _, name in figs]
    written.append(atomic_write_text(dest / "claims.md", "\n".join(md) + "\n"))
    if readme is not None:
        readme = Path(readme)
        text = readme.read_text(encoding="utf-8")
        if BEGIN not in text or END not in text:
            raise GptwavesError(f"{readme} has no {BEGIN} ... {END} block")
        rel = dest.resolve().relative_to(readme.resolve().parent).as_posix()
        fig = next((n for _, n in figs if n == "fano_reference_null.png"), None)
        a, b = text.index(BEGIN), text.index(END) + len(END)
        written.append(atomic_write_text(readme, text[:a] + readme_block(s, rel, fig) + text[b:]))
    return written


def seeds_table(run_dirs: list[str | Path]) -> str:
    """Verdicts and crossing per training seed, with the spread; verdicts that differ are fragile."""
    runs = []
    for d in run_dirs:
        s = _summary(Path(d))
        seed = ((s.get("settings") or {}).get("train") or {}).get("seed")
        runs.append((seed, s))
    out = ["| claim | " + " | ".join(f"seed {seed}" for seed, _ in runs) + " | robust? |",
           "|---|" + "---|" * len(runs) + "---|"]
    ids = sorted({c["id"] for _, s in runs for c in _claims(s)})
    for cid in ids:
        for part, label in (("as_stated", "as stated"), ("beyond_null", "beyond the null")):
            vs = []
            title = ""
            for _, s in runs:
                c = next((c for c in _claims(s) if c["id"] == cid), None)
                title = title or (c["claim"] if c else "")
                vs.append(c[part]["verdict"] if c else "n/a")
            robust = "same in every seed" if len(set(vs)) == 1 else "**fragile**"
            out.append(f"| {cid}. {title} ({label}) | " + " | ".join(vs) + f" | {robust} |")
    crossings = [((s.get("findings") or {}).get("crossing") or {}) for _, s in runs]
    its = [c.get("iteration") for c in crossings]
    out.append("| crossing iteration of F_correct | " + " | ".join(
        _fmt(i, 4) if i is not None else f"not reported ({c.get('reason') or 'n/a'})" for i, c in zip(its, crossings))
        + " | " + (f"mean {statistics.mean([i for i in its if i is not None]):.0f}, sd "
                   f"{statistics.stdev([i for i in its if i is not None]):.0f}"
                   if sum(i is not None for i in its) >= 2 else "fewer than 2 reported") + " |")
    for key, label in (("val_loss", "final val loss"),):
        vals = [((s.get("checkpoints") or [{}])[-1]).get(key) for _, s in runs]
        ok = [v for v in vals if isinstance(v, (int, float))]
        out.append(f"| {label} | " + " | ".join(_fmt(v, 4) for v in vals) + " | "
                   + (f"mean {statistics.mean(ok):.3f}, sd {statistics.stdev(ok):.3f}" if len(ok) >= 2 else "")
                   + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gptwaves.publish", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("run", help="publish one run into docs/results/NAME")
    a.add_argument("run_dir")
    a.add_argument("dest")
    a.add_argument("--readme", default=None)
    b = sub.add_parser("seeds", help="tabulate verdicts across training seeds")
    b.add_argument("out")
    b.add_argument("run_dirs", nargs="+")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "run":
            for p in publish_run(args.run_dir, args.dest, args.readme):
                print(p)
        else:
            atomic_write_text(args.out, seeds_table(args.run_dirs))
            print(args.out)
    except GptwavesError as e:
        print(f"gptwaves: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
