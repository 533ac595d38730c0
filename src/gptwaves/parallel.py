"""Worker processes for the per-tap coherence analysis (one BLAS thread each).

The analysis of one tap is a few hundred small matrix products and FFTs (192 x 192 Gram matrices,
64-sample Welch segments): two BLAS threads on one tap gain little, while two taps analysed side by
side in separate processes use both cores fully (``gptwaves bench waves``). The pool is started
with ``spawn`` (safe after torch and OpenMP ran in the parent) and each worker limits every BLAS
and OpenMP pool to one thread with ``threadpoolctl``. Results do not depend on the number of
workers: each tap's random draws are seeded from the settings alone.

This module imports neither torch nor h5py; workers import only :mod:`gptwaves.analysis.waves`
(and whatever the parent's ``__main__`` needs).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

__all__ = ["available_cores", "tap_workers", "tap_pool", "TapPool", "MIN_PARALLEL_ELEMENTS"]

#: Below this many wave values in a recording (taps x samples x steps x channels) the taps are
#: analysed in the calling process: starting workers (about 1-2 s) would cost more than it saves.
MIN_PARALLEL_ELEMENTS = 4_000_000

_limits = None  # keeps the worker's threadpool limits alive


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def tap_workers(n_taps: int, n_elements: int, workers: int | None = None) -> int:
    """Number of worker processes for ``n_taps`` taps holding ``n_elements`` values in all.

    ``workers=None`` chooses: one per core up to one per tap, or 0 (analyse in this process) for
    one core, one tap or a recording under :data:`MIN_PARALLEL_ELEMENTS`. An explicit number is
    capped at the number of taps; 0 or 1 means in-process.
    """
    if workers is None:
        if n_elements < MIN_PARALLEL_ELEMENTS:
            return 0
        workers = available_cores()
    n = min(int(workers), n_taps)
    return n if n >= 2 else 0


def _one_thread() -> None:
    global _limits
    import signal

    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _limits = threadpool_limits(limits=1)


def tap_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` single-threaded workers (spawned, not forked)."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_one_thread)


class TapPool:
    """A pool started on first need and shared by several recordings (one start per stage).

    ``workers`` as in :func:`tap_workers`. Use as a context manager: on an exception (Ctrl-C
    included) pending work is cancelled and the workers are stopped.
    """

    def __init__(self, workers: int | None = None):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._n = 0

    def get(self, n_taps: int, n_elements: int) -> tuple[ProcessPoolExecutor | None, int]:
        """``(executor, workers)`` for a recording, or ``(None, 0)`` to analyse it in this process."""
        n = tap_workers(n_taps, n_elements, self.workers)
        if n == 0:
            return None, 0
        if self._pool is None:
            self._pool, self._n = tap_pool(n), n
        return self._pool, min(n, self._n)

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=cancel)
            self._pool = None

    def __enter__(self) -> "TapPool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(cancel=exc_type is not None)
