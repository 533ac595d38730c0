"""Publish a sweep's family analysis into the repository's docs, generated, never typed.

    gptwaves publish sweep SWEEP_DIR docs/results/NAME

(``python -m gptwaves.publish sweep ...`` is the same command.)

``SWEEP_DIR`` is the folder of ``gptwaves sweep --out`` once collected (docs/method.md, "Sweeps: is
it a phase transition?"). Publishing copies its ``summary.json`` (the ``sweep`` entry: verdicts,
scaling exponents, each member's change) byte for byte into ``docs/results/NAME/``, with the figure
``sweep/curves.png`` as ``curves.png`` when there is one; writes ``cost.json``, what the sweep
cost (each member's stage seconds from its own ``summary.json``, summed over every ``reproduce``
invocation it records, the machine, the totals); and writes ``sweep.md``, the verdict with its
reason and the scaling, verdict, member and cost tables (:func:`sweep_markdown`, which the results
page renders as ``<!-- gen:sweep:NAME -->``; its quotes read ``NAME:sweep/...`` and ``NAME-cost:...``).

The conventions of :mod:`gptwaves.publish` hold (docs/method.md, "Publishing results"): everything
is read and checked before anything is written (the sweep summary's format and structure, every
number finite, the members' summaries and stage times, the figure a PNG file); every read is
confined to ``SWEEP_DIR`` (no symbolic link or member folder out of it, no FIFO, bounded sizes);
the output folder is not inside the sweep; every value copied into Markdown is escaped
(:func:`gptwaves.publish.md_escape`); every file is written atomically.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from .errors import CorruptArtefactError, GptwavesError
from .io import (atomic_write_bytes, atomic_write_json, atomic_write_text, confine_reads,
                 parse_json_bytes, read_bytes_bounded, read_json)
from .publish import (MAX_FIGURE_BYTES, _check_dest, _run_dir, MAX_ITERATION, MAX_SECONDS, MAX_TEXT, PNG_MAGIC, _Bad, _bounded, _fmt,
                      _is_num, _name, _need, _text, md_escape)

__all__ = ["publish_sweep", "sweep_markdown", "check_sweep_summary", "check_cost", "sweep_cost", "COST_FORMAT",
           "COST_VERSION", "SWEEP_VERDICTS"]

COST_FORMAT = "gptwaves-sweep-cost"
COST_VERSION = 1
#: The verdicts of :func:`gptwaves.analysis.transition.scaling_verdict`.
SWEEP_VERDICTS = ("sharpens with size (transition-like)", "does not sharpen (crossover)", "inconclusive")
QUANTITIES = ("location", "width", "height")
#: A sweep has at most 64 members (:func:`gptwaves.sweep.parse_vary`).
MAX_MEMBERS = 64
#: A member's folder, relative to the sweep (``members/NAME=VALUE``): no ``..``, no absolute path.
_RUN = re.compile(r"[A-Za-z0-9._+=,:-]+(/[A-Za-z0-9._+=,:-]+)*")


# ------------------------------------------------------------------------------ checks


def _finite(obj, where: str) -> None:
    """Every number of a JSON value finite and of a sensible size (gptwaves writes null for an
    undefined number)."""
    stack = [(obj, where)]
    while stack:
        o, w = stack.pop()
        if isinstance(o, float) and not (math.isfinite(o) and abs(o) <= 1e300):
            raise _Bad(f"{w or 'a value'} = {o!r} is not a finite number")
        if isinstance(o, int) and not isinstance(o, bool) and abs(o) > MAX_ITERATION:
            raise _Bad(f"{w} = {str(o)[:40]} is absurdly large")
        if isinstance(o, dict):
            stack += [(v, (f"{w}." if w else "") + (str(k) if re.fullmatch(r"\w+", str(k)) else repr(str(k)[:40])))
                      for k, v in o.items()]
        elif isinstance(o, list):
            stack += [(v, f"{w}[{i}]") for i, v in enumerate(o)]


def _scalar(v, where: str) -> None:
    if not (v is None or _is_num(v) or isinstance(v, bool) or (isinstance(v, str) and len(v) <= MAX_TEXT)):
        raise _Bad(f"{where} is not a number, a text or a truth value")


def _member_head(m, w: str) -> None:
    """A member entry is a JSON object with a name and a value (sweep summary and cost alike)."""
    if not isinstance(m, dict):
        raise _Bad(f"{w} is not a JSON object")
    _text(m.get("name"), f"{w}.name", empty=False)
    _scalar(m.get("value"), f"{w}.value")


def _pair(v, where: str) -> None:
    if v is not None and not (isinstance(v, list) and len(v) == 2 and all(x is None or _is_num(x) for x in v)):
        raise _Bad(f"{where} = {str(v)[:40]!r} is not an interval [low, high]")


def _verdict(v, where: str) -> None:
    if not isinstance(v, dict) or v.get("verdict") not in SWEEP_VERDICTS:
        got = v.get("verdict") if isinstance(v, dict) else v
        raise _Bad(f"{where}.verdict = {str(got)[:40]!r} is not one of: {'; '.join(SWEEP_VERDICTS)}")
    _text(v.get("reason"), f"{where}.reason")
    _need(v, "margin", (float, None), f"{where}.")


def _check_members(e: dict, curves: dict, scaling: dict) -> None:
    """What :func:`sweep_markdown` reads of each member: its name, value, folder, and the change of
    every scaled curve and of the headline curve."""
    members = _need(e, "members", (list,), "sweep.")
    if not 1 <= len(members) <= MAX_MEMBERS:
        raise _Bad(f"sweep.members has {len(members)} members, not 1 to {MAX_MEMBERS}")
    head = e["headline_curve"]
    for i, m in enumerate(members):
        w = f"sweep.members[{i}]"
        _member_head(m, w)
        run = _need(m, "run", (str,), f"{w}.")
        if not _RUN.fullmatch(run) or ".." in run.split("/"):
            raise _Bad(f"{w}.run = {run[:60]!r} is not a plain folder inside the sweep (letters, digits, "
                       "'._+=,:-', '/'; no '..')")
        mc = _need(m, "curves", (dict,), f"{w}.")
        for key in dict.fromkeys([k for k, sc in scaling.items() if sc] + [head]):
            c = _need(mc, key, (dict,), f"{w}.curves.")
            for q in QUANTITIES if scaling.get(key) else ():
                _need(_need(c, q, (dict,), f"{w}.curves.{key}."), "estimate", (float, None), f"{w}.curves.{key}.{q}.")
        c = mc[head]
        cp = _need(c, "change_point", (dict, None), f"{w}.curves.{head}.") or {}
        _need(cp, "estimate", (float, None), f"{w}.curves.{head}.change_point.")
        _pair(cp.get("ci"), f"{w}.curves.{head}.change_point.ci")
        for k in ("chi_peak_at", "fastest_change_at"):
            _need(c, k, (float, None), f"{w}.curves.{head}.")
        if not isinstance(c.get("chi_peak_coincides"), (bool, type(None))):
            raise _Bad(f"{w}.curves.{head}.chi_peak_coincides is not true, false or null")


def _check_entry(e) -> None:
    if not isinstance(e, dict):
        raise _Bad("sweep is not a JSON object")
    st = _need(e, "settings", (dict,), "sweep.")
    for k in ("preset", "vary", "schedule"):
        _name(st.get(k), f"sweep.settings.{k}")
    for i, v in enumerate(_need(st, "values", (list, None), "sweep.settings.") or []):
        _scalar(v, f"sweep.settings.values[{i}]")
    curves = _need(e, "curves", (dict,), "sweep.")
    for k, label in curves.items():
        _name(k, "a curve key of sweep.curves")
        _text(label, f"sweep.curves.{k}")
    head = _need(e, "headline_curve", (str,), "sweep.")
    if head not in curves:
        raise _Bad(f"sweep.headline_curve = {head[:40]!r} is not one of sweep.curves")
    _verdict(e.get("verdict"), "sweep.verdict")
    for k, v in _need(e, "verdicts", (dict,), "sweep.").items():
        _name(k, "a curve key of sweep.verdicts")
        _verdict(v, f"sweep.verdicts.{k}")
    scaling = _need(e, "scaling", (dict,), "sweep.")
    for key, sc in scaling.items():
        if key not in curves:
            raise _Bad(f"sweep.scaling has a curve {key[:40]!r} that is not one of sweep.curves")
        for q in QUANTITIES if sc is not None else ():
            f = _need(sc, q, (dict,), f"sweep.scaling.{key}.")
            _need(f, "exponent", (float, None), f"sweep.scaling.{key}.{q}.")
            _pair(f.get("ci"), f"sweep.scaling.{key}.{q}.ci")
    _need(e, "n_boot", (int, None), "sweep.")
    _check_members(e, curves, scaling)


def check_sweep_summary(s, path: str | os.PathLike = "summary.json") -> dict:
    """Refuse (one line naming ``path`` and the field) a sweep summary that cannot be published
    faithfully: not ``gptwaves sweep``'s format, a number that is not finite, a verdict outside the
    three, a member without a name or with a folder outside the sweep, a missing change or CI.

    Parameters
    ----------
    s : object
        The parsed ``summary.json`` of a sweep folder: ``{"format", "format_version", "sweep"}``.
    path : str or path-like
        Named in the error.

    Returns
    -------
    dict
        ``s``, checked.
    """
    from .sweep import FORMAT, FORMAT_VERSION

    if not isinstance(s, dict) or s.get("format") != FORMAT or s.get("format_version") != FORMAT_VERSION:
        raise GptwavesError(f"{path} is not a gptwaves sweep summary (format {FORMAT}, version {FORMAT_VERSION}); "
                            "rebuild it with `gptwaves sweep ... --collect`")
    try:
        if not isinstance(s.get("sweep"), dict):
            raise _Bad("it has no sweep entry (a JSON object)")
        _finite(s, "")
        _check_entry(s["sweep"])
    except _Bad as e:
        raise CorruptArtefactError(f"{path} cannot be published: {e}; rebuild it with `gptwaves sweep ... "
                                   "--collect`") from None
    return s


def check_cost(c, path: str | os.PathLike = "cost.json") -> dict:
    """Refuse (one line naming ``path`` and the field) a sweep's cost object (:func:`sweep_cost`)
    of another format, with a number that is not finite, a stage name with markup or seconds out of
    [0, 1e9]. Returns ``c``."""
    if not isinstance(c, dict) or c.get("format") != COST_FORMAT or c.get("format_version") != COST_VERSION:
        raise GptwavesError(f"{path} is not a gptwaves sweep cost (format {COST_FORMAT}, version {COST_VERSION}); "
                            "publish the sweep again with `gptwaves publish sweep`")
    try:
        _finite(c, "")
        for k, v in (_need(c, "machine", (dict, None), "") or {}).items():
            _name(k, "a field of machine")
            _scalar(v, f"machine.{k}")
        _name(c.get("gptwaves_version"), "gptwaves_version")
        members = _need(c, "members", (list,), "")
        for i, m in enumerate(members):
            w = f"members[{i}]"
            _member_head(m, w)
            _bounded(_need(m, "invocations", (int,), f"{w}."), f"{w}.invocations", 1, MAX_ITERATION)
            for k, v in _need(m, "seconds", (dict,), f"{w}.").items():
                _name(k, f"a stage name of {w}.seconds")
                _bounded(v, f"{w}.seconds.{k}", 0, MAX_SECONDS)
            _bounded(_need(m, "total", (float,), f"{w}."), f"{w}.total", 0, MAX_SECONDS * 100)
            _need(m, "final_val_loss", (float, None), f"{w}.")
        _bounded(_need(c, "total", (float,), ""), "total", 0, MAX_SECONDS * 100 * MAX_MEMBERS)
    except _Bad as e:
        raise CorruptArtefactError(f"{path} cannot be used: {e}") from None
    return c


# ------------------------------------------------------------------------------ reading the sweep


def _member_cost(sweep: Path, m: dict) -> tuple[dict, dict | None, str | None]:
    """One member's row of the cost (its stage seconds summed over every invocation its summary
    records, ``total`` rows left out; the last checkpoint's validation loss), its machine and version."""
    from .stages.summary import SUMMARY_FORMAT, SUMMARY_VERSION

    p = sweep / m["run"] / "summary.json"
    with confine_reads(sweep):
        s = read_json(p, "member summary", dict)
    if s.get("format") != SUMMARY_FORMAT or s.get("format_version") != SUMMARY_VERSION:
        raise GptwavesError(f"member summary {p} is not a gptwaves summary of format version {SUMMARY_VERSION}; "
                            "rebuild it with `gptwaves summary --run RUN_DIR`")
    try:
        tm = s.get("timings")
        if not isinstance(tm, dict) or not tm:
            raise _Bad("it records no stage timings (the members of a sweep are made by `gptwaves reproduce`)")
        seconds: dict[str, float] = {}
        hist = _need(s, "timings_history", (list, None), "") or []
        for i, h in enumerate([*hist, tm]):
            if not isinstance(h, dict):
                raise _Bad(f"timings_history[{i}] is not a JSON object")
            for k, v in h.items():
                _name(k, "a stage name")
                _bounded(v, f"the seconds of stage {k}", 0, MAX_SECONDS)
                if k != "total" and v is not None:
                    seconds[k] = seconds.get(k, 0.0) + v
        machine = _need(s, "machine", (dict, None), "")
        for k, v in (machine or {}).items():
            _name(k, "a field of machine")
            _scalar(v, f"machine.{k}")
            _bounded(v if _is_num(v) else None, f"machine.{k}", -1e300, 1e300)
        _name(s.get("gptwaves_version"), "gptwaves_version")
        cks = _need(s, "checkpoints", (list, None), "") or []
        last = cks[-1] if cks else {}
        if not isinstance(last, dict):
            raise _Bad(f"checkpoints[{len(cks) - 1}] is not a JSON object")
        loss = _need(last, "val_loss", (float, None), f"checkpoints[{len(cks) - 1}].")
        _bounded(loss, f"checkpoints[{len(cks) - 1}].val_loss", -1e300, 1e300)
    except _Bad as e:
        raise CorruptArtefactError(f"member summary {p} cannot be published: {e}") from None
    seconds = {k: round(v, 3) for k, v in seconds.items()}
    row = {"name": m["name"], "value": m.get("value"), "run": m["run"], "invocations": len(hist) + 1,
           "seconds": seconds, "total": round(sum(seconds.values()), 3), "final_val_loss": loss}
    return row, machine, s.get("gptwaves_version")


def sweep_cost(sweep_dir: str | os.PathLike, entry: dict) -> dict:
    """What a sweep cost: ``cost.json`` (docs/outputs.md).

    Parameters
    ----------
    sweep_dir : str or path-like
        The sweep folder; every member summary read must lie inside it.
    entry : dict
        The sweep's checked ``sweep`` entry (:func:`check_sweep_summary`); ``members[k]["run"]``
        is member k's folder relative to ``sweep_dir``.

    Returns
    -------
    dict
        ``{"format", "format_version", "machine" (the first member's, as its summary stores it),
        "gptwaves_version" (the first member's), "members": [{"name", "value", "run",
        "invocations", "seconds": {stage: s}, "total", "final_val_loss"}], "total"}``; a member's
        seconds are summed over every ``reproduce`` invocation its summary records.
    """
    sweep = _run_dir(sweep_dir, "sweep folder")
    rows, machines, versions = [], [], []
    for m in entry["members"]:
        row, machine, version = _member_cost(sweep, m)
        rows.append(row)
        machines.append(machine)
        versions.append(version)
    return {"format": COST_FORMAT, "format_version": COST_VERSION, "machine": machines[0],
            "gptwaves_version": versions[0], "members": rows, "total": round(sum(r["total"] for r in rows), 3)}


# ------------------------------------------------------------------------------ Markdown


def _ci(ci) -> str:
    lo, hi = ci if isinstance(ci, list) and len(ci) == 2 else (None, None)
    return "n/a" if lo is None and hi is None else f"{_fmt(lo)} to {_fmt(hi)}"


def _scaling_table(entry: dict) -> list[str]:
    members, curves = entry["members"], entry["curves"]
    scaled = [(k, sc) for k, sc in entry["scaling"].items() if sc]
    if not scaled:
        return ["No curve has a fitted scaling (the varied setting is not a positive number, or no curve has "
                "per-sample values)."]
    out = ["Location, width and height of the main change of each curve with per-sample values (u), in each "
           "member, and the exponent b of the fit log(feature) = log(a) + b log(setting):", "",
           "| curve | quantity | " + " | ".join(md_escape(m["name"]) for m in members) + " | exponent | 95% CI |",
           "|---|---|" + "---|" * len(members) + "---|---|"]
    for key, sc in scaled:
        for j, q in enumerate(QUANTITIES):
            label = md_escape(curves.get(key, key)) if j == 0 else ""
            cells = [_fmt(((m["curves"][key].get(q) or {}).get("estimate"))) for m in members]
            out.append(f"| {label} | {q} | " + " | ".join(cells) + f" | {_fmt(sc[q].get('exponent'))} | "
                       f"{_ci(sc[q].get('ci'))} |")
    return out


def _members_table(entry: dict) -> list[str]:
    head = entry["headline_curve"]
    out = [f"The change of the {md_escape(entry['curves'][head])} in each member (u):", "",
           "| member | change point (95% CI) | susceptibility peak | fastest change | coincide |",
           "|---|---|---|---|---|"]
    for m in entry["members"]:
        c = m["curves"][head]
        cp = c.get("change_point") or {}
        out.append(f"| {md_escape(m['name'])} | {_fmt(cp.get('estimate'))} ({_ci(cp.get('ci'))}) | "
                   f"{_fmt(c.get('chi_peak_at'))} | {_fmt(c.get('fastest_change_at'))} | "
                   f"{_fmt(c.get('chi_peak_coincides'))} |")
    return out


def _cost_table(cost: dict) -> list[str]:
    rows = cost["members"]
    stages = list(dict.fromkeys(k for r in rows for k in r["seconds"]))
    out = ["Seconds of each stage in each member, summed over every `gptwaves reproduce` invocation its summary "
           "records:", "",
           "| member | " + " | ".join(md_escape(k) for k in stages) + " | total | invocations | final val loss |",
           "|---|" + "---|" * len(stages) + "---|---|---|"]
    for r in rows:
        out.append(f"| {md_escape(r['name'])} | " + " | ".join(
            f"{r['seconds'][k]:.1f}" if k in r["seconds"] else "n/a" for k in stages)
            + f" | {r['total']:.1f} | {int(r['invocations'])} | {_fmt(r.get('final_val_loss'), 4)} |")
    sums = [sum(r["seconds"].get(k, 0.0) for r in rows) for k in stages]
    out.append("| all members | " + " | ".join(f"{v:.1f}" for v in sums) + f" | {cost['total']:.1f} | | |")
    m = cost.get("machine") or {}
    out += ["", (f"Machine as the first member recorded it: {md_escape(m.get('platform'))}, processor "
                 f"{md_escape(m.get('processor') or 'not recorded')}." if m.get("platform")
                 else "The members recorded no machine.")]
    return out


def sweep_markdown(entry: dict, cost: dict | None = None, *, level: int = 3) -> str:
    """The published tables of a sweep (Markdown, every value escaped): the verdict and its reason,
    the scaling table, the verdict of each curve, the change of each member and, with ``cost``, the
    seconds of each member and stage (docs/method.md, "Sweeps: is it a phase transition?").

    Parameters
    ----------
    entry : dict
        A checked ``sweep`` entry (:func:`check_sweep_summary`).
    cost : dict, optional
        The sweep's checked cost object (:func:`sweep_cost`, :func:`check_cost`).
    level : int
        The level of the section headings (``###`` by default, for a block of the results page).
    """
    h = "#" * level
    st, curves, v = entry.get("settings") or {}, entry["curves"], entry["verdict"]
    values = ", ".join(md_escape(x) for x in st.get("values") or [])
    out = [f"Sweep of `{st.get('vary')}` over {values} at the `{st.get('preset')}` preset "
           f"({md_escape(st.get('schedule') or 'n/a')} checkpoint schedule, {len(entry['members'])} members, "
           f"{_fmt(entry.get('n_boot'))} bootstrap replicates). The axis of every curve is u = log(1 + iteration).",
           "", f"{h} Verdict", "",
           f"**{md_escape(v['verdict'])}** for the {md_escape(curves[entry['headline_curve']])}: "
           f"{md_escape(v.get('reason') or 'no reason given')}.", "",
           "A change *sharpens with size* when the 95% CI of the exponent of its width (the 10-90% rise in u) "
           "against the varied setting lies below 0, the CI being the envelope of the members' bootstrap interval "
           "and the interval from their scatter about the power law; it *does not sharpen* when that CI lies above "
           f"-{_fmt(v.get('margin') if v.get('margin') is not None else 0.1)} and every member's change is "
           "resolved by the checkpoints; otherwise the sweep is inconclusive.", "",
           f"{h} Scaling with {md_escape(st.get('vary'))}", "", *_scaling_table(entry), "",
           "| curve | verdict | why |", "|---|---|---|"]
    out += [f"| {md_escape(curves.get(k, k))} | {md_escape(x['verdict'])} | {md_escape(x.get('reason') or '')} |"
            for k, x in entry["verdicts"].items()]
    out += ["", f"{h} Members", "", *_members_table(entry)]
    if cost is not None:
        out += ["", f"{h} Cost", "", *_cost_table(cost)]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ publishing


def _read_figure(sweep: Path) -> bytes | None:
    p = sweep / "sweep" / "curves.png"
    if not os.path.lexists(p):
        return None
    with confine_reads(sweep):
        data = read_bytes_bounded(p, "figure", MAX_FIGURE_BYTES)
    if not data.startswith(PNG_MAGIC):
        raise CorruptArtefactError(f"figure {p} is not a PNG file")
    return data


def publish_sweep(sweep_dir: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Publish a collected sweep into ``dest`` (docs/method.md, "Publishing results").

    Writes ``dest/summary.json`` (the sweep's, byte for byte), ``dest/cost.json``
    (:func:`sweep_cost`), ``dest/curves.png`` (when the sweep drew it) and ``dest/sweep.md``
    (:func:`sweep_markdown` with the figure), each atomically, after everything is read and
    checked: nothing is written when any of it is refused.

    Parameters
    ----------
    sweep_dir : str or path-like
        The sweep's folder (``gptwaves sweep --out``), collected.
    dest : str or path-like
        The output folder (e.g. ``docs/results/NAME``); not inside ``sweep_dir``.

    Returns
    -------
    list of Path
        The files written.
    """
    sweep = _run_dir(sweep_dir, "sweep folder")
    dest = Path(dest)
    _check_dest(dest, sweep, "sweep")
    path = sweep / "summary.json"
    with confine_reads(sweep):
        data = read_bytes_bounded(path, "sweep summary")
    entry = check_sweep_summary(parse_json_bytes(data, path, "sweep summary"), path)["sweep"]
    cost = check_cost(sweep_cost(sweep, entry), "the cost of the sweep")
    figure = _read_figure(sweep)
    st = entry["settings"]
    md = [f"# Sweep of `{st.get('vary')}` at the `{st.get('preset')}` preset (generated)", "",
          f"Generated by `gptwaves publish sweep` from `summary.json` and `cost.json` in this folder (gptwaves "
          f"{md_escape(cost.get('gptwaves_version') or 'n/a')}). Do not edit by hand.", "",
          sweep_markdown(entry, cost, level=2).rstrip("\n")]
    if figure is not None:
        md += ["", "## Figure", "", "![every member's curves against log(1 + iteration), one panel per curve]"
               "(curves.png)"]
    written = [atomic_write_bytes(dest / "summary.json", data), atomic_write_json(dest / "cost.json", cost)]
    if figure is not None:
        written.append(atomic_write_bytes(dest / "curves.png", figure))
    written.append(atomic_write_text(dest / "sweep.md", "\n".join(md) + "\n"))
    return written
