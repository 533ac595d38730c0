"""Device choice, graceful interruption and progress helpers shared by long jobs."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterable
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from .errors import GptwavesError


class Interrupted(GptwavesError):
    """Raised when a long job stopped cleanly on SIGINT/SIGTERM; re-running resumes it."""

    exit_code = 130


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GptwavesError("device 'cuda' requested but no CUDA GPU is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GptwavesError(f"unknown device {name!r}") from None


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 matmul (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where bf16 matmuls are native (CPUs with AVX512-BF16/AMX, GPUs with
    bf16 support), else ``fp32``; ``fp32`` and ``bf16`` are returned unchanged."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


class StopFlag:
    """Set by SIGINT/SIGTERM inside :func:`graceful_stop`; loops check it between steps."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.requested


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """Turn the first SIGINT/SIGTERM into a flag (a second one interrupts at once)."""
    flag = StopFlag()
    old: dict[int, object] = {}

    def handler(signum, frame):  # noqa: ARG001
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True
        flag.signum = signum
        print("\ngptwaves: stopping after the current step (Ctrl-C again to abort)...",
              file=sys.stderr)

    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old[s] = signal.signal(s, handler)
            except ValueError:  # not in the main thread
                pass
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)  # type: ignore[arg-type]


class LineProgress:
    """Progress as plain lines, for a log file or a pipe: one line when it starts, one at most every
    ``every_s`` seconds, one when it ends; never a carriage return or a cursor-control sequence.

    Has the parts of tqdm's interface gptwaves uses: iteration, ``update``, ``set_postfix_str``,
    ``set_postfix``, ``close`` and use as a context manager.
    """

    def __init__(self, iterable: Iterable | None = None, *, desc: str = "", total: int | None = None,
                 unit: str = "it", initial: int = 0, every_s: float = 30.0, file=None) -> None:
        self.iterable, self.desc, self.unit, self.every_s = iterable, desc, unit, every_s
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.postfix = total, initial, ""
        self.file = file
        self._t0 = self._last = time.monotonic()
        self._closed = False
        self._line("start")

    def _line(self, what: str) -> None:
        out = self.file if self.file is not None else sys.stderr
        of = f"/{self.total}" if self.total is not None else ""
        post = f", {self.postfix}" if self.postfix else ""
        took = f", {time.monotonic() - self._t0:.0f} s" if what != "start" else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}{post}{took}{' (done)' if what == 'done' else ''}",
              file=out, flush=True)

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._line("update")

    def update(self, n: int = 1) -> None:
        self.n += n
        self._tick()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:  # noqa: ARG002
        self.postfix = str(s)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kw: Any) -> None:  # noqa: ARG002
        items = {**(ordered_dict or {}), **kw}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def __iter__(self):
        for x in self.iterable or ():
            yield x
            self.update(1)
        self.close()  # as tqdm does when its iterable is exhausted

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line("done")

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, desc: str, total: int | None = None, unit: str = "it",
                 disable: bool = False, leave: bool = True, initial: int = 0, file=None):
    """The progress display of every long job.

    On a terminal: a tqdm bar. Written to a file or a pipe (``gptwaves reproduce ... 2> log``):
    :class:`LineProgress`, plain lines without the carriage returns and cursor movements (``ESC[A``)
    that bars, nested ones above all, leave in a log. ``disable``: nothing at all.
    """
    out = file if file is not None else sys.stderr
    if disable:
        return tqdm(iterable, total=total, disable=True)
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty:
        return LineProgress(iterable, desc=desc, total=total, unit=unit, initial=initial, file=file)
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, initial=initial, file=file,
                dynamic_ncols=True, mininterval=0.5)
