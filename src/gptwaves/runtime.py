"""Device choice, graceful interruption and progress helpers shared by long jobs."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Iterator

import torch

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
