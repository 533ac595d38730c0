"""Cost of one sweep member against a plain ``reproduce`` of the same preset.

Both run in fresh interpreters (``python -m gptwaves``) into a temporary folder, one after the
other: first ``reproduce`` (the baseline), then ``sweep --vary seed=A,B`` over two members that
differ only in their training seed, so each member is the baseline's run on the sweep's dense
checkpoint schedule, plus the family analysis. The figure is the sweep's time per member over
the baseline's time: the price of the dense schedule and the collect step. ``quick`` shrinks
both runs to seconds (for tests); the full bench uses the smoke preset at its own sizes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import log, make_row

QUICK_ARGS = ["--max-iters", "5", "--record-samples", "4", "--record-steps", "24", "--spelling-samples", "20"]


def _timed(cmd: list[str], timeout: float) -> tuple[float, str | None]:
    log(f"sweep bench: {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=dict(os.environ))
        err = None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["no output"])[-1]
    except subprocess.TimeoutExpired:
        err = f"timed out after {timeout:.0f} s"
    return time.perf_counter() - t0, err


def run(quick: bool = False, corpus=None, *, preset: str = "smoke", timeout: float = 3600) -> list[dict]:
    """One row: seconds per sweep member, with the plain reproduce as baseline."""
    args = list(QUICK_ARGS if quick else [])
    if corpus is not None:
        args += ["--corpus", str(corpus)]
    py = [sys.executable, "-m", "gptwaves"]
    with tempfile.TemporaryDirectory(prefix="gptwaves-bench-sweep-") as d:
        base, err = _timed([*py, "reproduce", "--preset", preset, "--out", str(Path(d) / "plain"), "--quiet",
                            *args], timeout)
        if err is None:
            total, err = _timed([*py, "sweep", "--preset", preset, "--vary", "seed=1337,1338",
                                 "--out", str(Path(d) / "sweep"), "--quiet", "--boot", "50", *args], timeout)
    name = f"sweep member ({preset}{', reduced sizes' if quick else ''}) against plain reproduce"
    if err:
        return [make_row(name, None, "s", ok=False, notes=f"failed: {err}")]
    per = total / 2
    return [make_row(name, per, "s", baseline=base,
                     notes="fresh interpreters, one after the other; 2 members differing in the training "
                           "seed, dense schedule, family analysis included; baseline = one reproduce")]
