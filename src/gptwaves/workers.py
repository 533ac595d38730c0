"""Worker processes: independent pieces of analysis side by side, one single-threaded process per
core (docs/method.md: Calibration, "Worker processes"; Coherence, "Taps in worker processes").

The calibration's replicates and the taps of one recording are independent, and every random draw
in them is keyed by what it belongs to (scenario and replicate; tap and seed), so they can run side
by side and give the numbers they give one after another. One single-threaded process per core
beats one process with its work on threads here: the analyses are numpy and scipy calls between
short stretches of Python, which threads share badly (at paper sizes a coherence replicate of the
calibration took 20.6 s with its checkpoints on two threads, two replicates in two processes 15.4 s
each).

The workers are spawned, never forked (a parent that holds torch's or OpenMP's threads cannot be
forked safely), receive what they share once, leave Ctrl-C to the parent (which stops after the
work in flight), run their BLAS on one thread, and exit by themselves within a second when the
parent is killed.
"""

from __future__ import annotations

__all__ = ["cores", "in_worker", "context", "WorkerPool", "shared_pool", "drop_shared_pool"]

_IN_WORKER = False
_CONTEXT: dict = {}


def cores() -> int:
    """The cores this process may use."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def in_worker() -> bool:
    """True inside a `WorkerPool` worker (which runs everything on one thread)."""
    return _IN_WORKER


def context() -> dict:
    """What the pool gave its workers (in a worker)."""
    return _CONTEXT


def _watch_parent(ppid: int, every: float = 1.0) -> None:
    """Exit when the parent is gone (killed without shutting the pool down, e.g. by SIGTERM or
    SIGKILL): a worker waiting for work would otherwise wait for ever."""
    import os
    import time

    while True:
        time.sleep(every)
        if os.getppid() != ppid:
            os._exit(1)


#: The environment variables that set the size of a BLAS or OpenMP thread pool when it loads.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def _keep_freed_memory() -> None:
    """Keep the memory a worker frees for its next arrays (GNU libc; elsewhere nothing changes).

    By default the C library gives every array above 32 MB its own fresh pages from the system and
    returns them when the array is freed, so a worker that makes such arrays again and again (a
    tap's float64 copies, its Fourier transforms) pays a page fault for every 4 kB of each: measured
    at paper sizes, 17 % of a calibration replicate (31-32 s against 26-27 s on one thread, 500,000
    page faults against 84,000). Here arrays come from the heap and freed memory stays in it; the
    worker then holds its peak memory (the same peak: 1.17 GB for that replicate) until it exits.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not GNU libc (e.g. macOS): its allocator as it is
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    mallopt(M_MMAP_MAX, 0)  # no array gets its own mapping
    mallopt(M_TRIM_THRESHOLD, 2**30)  # the heap's free top is kept up to 1 GiB


def _init(ctx: dict) -> None:
    import os
    import signal
    import threading

    from threadpoolctl import threadpool_limits

    global _IN_WORKER, _CONTEXT
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True, name="gptwaves-parent-watch").start()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # one thread in every pool: the variables reach the libraries that load later (OpenBLAS and
    # OpenMP read them when they load: scipy's BLAS loads with the first job that imports
    # scipy.linalg, after this), `threadpool_limits` those loaded already (numpy's, with the context)
    for var in _THREAD_VARIABLES:
        os.environ[var] = "1"
    threadpool_limits(limits=1)
    _keep_freed_memory()
    _IN_WORKER = True
    _CONTEXT = ctx


class WorkerPool:
    """``workers`` spawned processes that share ``ctx`` (sent once): ``submit(fn, *args)`` runs the
    module-level function ``fn`` in one of them (``fn`` reads ``context()``). A context manager; on an
    exception the workers are stopped at once."""

    def __init__(self, ctx: dict, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = int(workers)
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init, initargs=(ctx,))

    def submit(self, fn, *args):
        return self._pool.submit(fn, *args)

    def map(self, fn, jobs: list[tuple]) -> list:
        """``[fn(*job) for job in jobs]``, side by side, in the order of the jobs."""
        futures = [self._pool.submit(fn, *job) for job in jobs]
        return [f.result() for f in futures]

    def close(self, abort: bool = False) -> None:
        """Shut the workers down; ``abort``: at once, without waiting for the work in flight."""
        if abort:
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                proc.terminate()
        self._pool.shutdown(wait=not abort, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(abort=exc_type is not None)
        return False


_SHARED: WorkerPool | None = None


def shared_pool() -> WorkerPool:
    """One pool per process with nothing shared, one worker per core, started on first use and kept
    (so that a stage that analyses many recordings pays the workers' start, about 2-6 s, once); shut
    down when the process exits."""
    import atexit

    global _SHARED
    if _SHARED is None:
        _SHARED = WorkerPool({}, cores())
        atexit.register(drop_shared_pool)
    return _SHARED


def drop_shared_pool(abort: bool = False) -> None:
    """Shut the shared pool down (a broken one, or at exit); the next `shared_pool` starts a new one."""
    global _SHARED
    pool, _SHARED = _SHARED, None
    if pool is not None:
        pool.close(abort=abort)
