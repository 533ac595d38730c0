"""Worker processes (`gptwaves.workers`): a parent killed without shutting its pool down leaves no
worker behind."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
import time


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        from gptwaves.workers import WorkerPool

        if __name__ == "__main__":
            pool = WorkerPool({}, 2)
            pids = set()
            while len(pids) < 2:
                pids |= set(pool.map(os.getpid, [(), (), (), ()]))
            print(" ".join(map(str, sorted(pids))), flush=True)
            time.sleep(120)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_every_thread_pool_in_a_worker_has_one_thread(tmp_path):
    # the parent loads neither scipy nor scikit-learn before the pool starts: their BLAS and OpenMP
    # load in the worker with the job, after the worker's own start, and must have one thread too
    # (two workers with two threads each on two cores wait for each other; measured 3x slower)
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        from gptwaves.workers import WorkerPool

        def pools():
            import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS in the worker)
            import sklearn.linear_model  # noqa: F401  (and scikit-learn's OpenMP)
            from threadpoolctl import threadpool_info
            return sorted({(p["internal_api"], p["num_threads"]) for p in threadpool_info()})

        if __name__ == "__main__":
            import sys
            assert "scipy.linalg" not in sys.modules
            with WorkerPool({}, 1) as pool:
                print(pool.map(pools, [()])[0], flush=True)
    """))
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    pools = ast.literal_eval(out.stdout.strip())  # the (api, threads) pairs the script printed
    assert pools and {n for _, n in pools} == {1}, pools
    assert "openblas" in {api for api, _ in pools}


def _faults_of_a_second_large_array() -> int:
    import resource

    def touched():  # 64 MB from the C allocator, every 4 kB page written once
        a = bytearray(64 * 2**20)
        a[::4096] = b"\x01" * len(range(0, len(a), 4096))
        return a

    a = touched()
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = touched()
    del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_a_worker_reuses_the_memory_it_freed():
    # GNU libc would map fresh pages for every large array (16,384 page faults for 64 MB); a
    # worker keeps what it freed, so the second array of that size costs next to no faults
    import platform

    from gptwaves.workers import WorkerPool

    if platform.libc_ver()[0] != "glibc":
        import pytest

        pytest.skip("the allocator setting is GNU libc's")
    with WorkerPool({}, 1) as pool:
        faults = pool.map(_faults_of_a_second_large_array, [()])[0]
    assert faults < 164, faults  # under 1 % of the array's 4 kB pages
