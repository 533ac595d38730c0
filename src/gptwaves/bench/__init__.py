"""Benchmark suite: the performance figures of issues 2-5 and 8, as ratios against baselines
measured in the same run on the same machine.

>>> from gptwaves import bench                                   # doctest: +SKIP
>>> rows = bench.run("train", quick=True, corpus="tinyshakespeare.txt")
>>> print(bench.format_table(rows))

Benches (``which``): ``train``, ``record``, ``waves``, ``spelling``, ``e2e``, ``hf`` (Hugging Face
recording against ``transformers``' generate; needs gptwaves[hf]), ``budget`` (a finished run's
stage times against the matmul peak: ``run_dir=``), ``sweep`` (a sweep member against a plain
``reproduce``), ``calibrate`` (`gptwaves calibrate` at paper sizes against one checkpoint's
analysis), or ``all``. Each
bench module has a ``run(quick=False, corpus=None, **sizes)`` returning rows; see
``bench/README.md`` for what each figure means. A bench that fails gives one row with
``ok=False`` and the error in its notes; the others still run. Bad input (a missing or corrupt
run for ``budget``) is not a failed bench: it raises its one-line error.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..errors import GptwavesError
from .common import log, machine_info

BENCHES = ("train", "record", "waves", "spelling", "e2e", "hf", "budget", "sweep", "calibrate", "profile")

__all__ = ["BENCHES", "format_table", "machine_info", "run", "run_bench", "write_json"]


def run_bench(name: str, quick: bool = False, corpus=None, **kw) -> list[dict]:
    """Run one bench module's ``run`` (keyword sizes pass through; tests use tiny ones)."""
    import importlib

    if name not in BENCHES:
        raise ValueError(f"unknown bench {name!r}; choose from all, {', '.join(BENCHES)}")
    mod = importlib.import_module(f"{__name__}.{name}")
    return mod.run(quick=quick, corpus=corpus, **kw)


def run(which: str = "all", quick: bool = False, corpus=None, *, machine: dict | None = None,
        raise_errors: bool = False, **kw) -> list[dict]:
    """Run ``which`` (a bench name or ``all``) and return its rows, each with the machine filled in.

    ``corpus``: the corpus text file (default: ``$GPTWAVES_CORPUS``, then the package's lookup).
    Extra keyword arguments go to the single bench named (not with ``all``).
    """
    names = BENCHES if which == "all" else (which,)
    if which != "all" and which not in BENCHES:
        raise ValueError(f"unknown bench {which!r}; choose from all, {', '.join(BENCHES)}")
    if which == "all" and kw:
        raise ValueError("size keywords apply to one bench, not to 'all'")
    machine = machine or machine_info()
    rows: list[dict] = []
    for name in names:
        t0 = time.perf_counter()
        try:
            got = run_bench(name, quick=quick, corpus=corpus, **kw)
        except GptwavesError:  # bad input (a missing or corrupt run): one line, not a failed row
            raise
        except Exception as e:
            if raise_errors:
                raise
            got = [{"figure": f"{name}: bench failed", "value": None, "unit": "", "baseline": None,
                    "ratio": None, "target": None, "ok": False, "machine": None,
                    "notes": f"{type(e).__name__}: {e}"}]
        log(f"{name}: done in {time.perf_counter() - t0:.1f} s")
        for r in got:
            r["bench"] = name
            r["machine"] = machine["summary"]
        rows += got
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1e4:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 1:
            return f"{v:.2f}"
        if a >= 1e-3:
            return f"{v:.3f}"
        return f"{v:.1e}"
    return str(v)


def format_table(rows: list[dict], notes: bool = False) -> str:
    """A plain-text table: figure, value (unit), baseline, ratio, target (with ok mark), machine.

    With ``notes=True`` each row's notes follow it on an indented line.
    """
    head = ["figure", "value", "baseline", "ratio", "target", "machine"]
    body = []
    for r in rows:
        val = _fmt(r.get("value"))
        unit = r.get("unit") or ""
        if r.get("value") is not None and unit:
            val += f" {unit}"
        ratio = r.get("ratio")
        tgt = r.get("target") or "-"
        ok = r.get("ok")
        if ok is not None:
            tgt += "  OK" if ok else "  MISS"
        body.append([r.get("figure", ""), val, _fmt(r.get("baseline")),
                     "-" if ratio is None else f"{ratio:.2f}x", tgt, r.get("machine") or "-"])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for r, b in zip(rows, body):
        lines.append("  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip())
        if notes and r.get("notes"):
            lines.append(f"    {r['notes']}")
    return "\n".join(lines)


def write_json(path: str | os.PathLike, rows: list[dict], machine: dict, which: str, quick: bool) -> Path:
    """Write ``{"machine": ..., "which": ..., "quick": ..., "rows": [...]}`` (atomically)."""
    from ..io import atomic_write_text

    doc = {"format": "gptwaves-bench", "which": which, "quick": quick, "machine": machine, "rows": rows}
    return atomic_write_text(Path(path), json.dumps(doc, indent=2, default=str) + "\n")
