"""End-to-end time of ``gptwaves reproduce --preset smoke``.

A fresh interpreter (``python -m gptwaves``) runs the whole pipeline (corpus, training, recordings,
waves, spelling, summary, report) into a temporary folder; the wall-clock time includes the
interpreter start and imports. Target: <= 180 s. ``quick`` shrinks the run (fewer iterations and
samples), which takes the figure off its target.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import log, make_row

QUICK_ARGS = ["--max-iters", "20", "--record-samples", "4", "--record-steps", "40",
              "--spelling-samples", "20", "--spelling-length", "32"]


def run(quick: bool = False, corpus=None, *, extra_args: list[str] | None = None,
        timeout: float = 1800) -> list[dict]:
    """One row: seconds of the smoke reproduction (with ``extra_args`` appended to the command)."""
    args = list(extra_args if extra_args is not None else (QUICK_ARGS if quick else []))
    with tempfile.TemporaryDirectory(prefix="gptwaves-bench-e2e-") as d:
        out = Path(d) / "smoke"
        cmd = [sys.executable, "-m", "gptwaves", "reproduce", "--preset", "smoke", "--out", str(out), "--quiet",
               *args]
        if corpus is not None:
            cmd += ["--corpus", str(corpus)]
        log(f"e2e: {' '.join(cmd[1:])}")
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                               env=dict(os.environ))
            err = None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["no output"])[-1]
        except subprocess.TimeoutExpired:
            err = f"timed out after {timeout:.0f} s"
        dt = time.perf_counter() - t0
        made = sorted(x.name for x in out.iterdir()) if out.is_dir() else []
    full = not args
    if err:
        return [make_row("e2e reproduce --preset smoke", None, "s", target="<= 180 s", ok=False,
                         notes=f"failed: {err}")]
    return [make_row("e2e reproduce --preset smoke" + ("" if full else " (reduced sizes)"), dt, "s",
                     target="<= 180 s" if full else None, ok=(dt <= 180.0) if full else None,
                     notes=("fresh interpreter, into a temp dir; " + (" ".join(args) + "; " if args else "")
                            + f"produced: {', '.join(made)}"))]
