"""Taps analysed side by side in worker processes (gptwaves.parallel) give the results of the
serial analysis; the choice of workers; a dead worker or a bad tap is one line naming the tap."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

from gptwaves.bench.waves import write_recording
from gptwaves.errors import GptwavesError
from gptwaves.parallel import MIN_PARALLEL_ELEMENTS, TapPool, tap_workers
from gptwaves.stages.waves import WavesSettings, _tap_result, analyze_recording

SETTINGS = WavesSettings(nlags=8, n_surrogates=19, min_events=5)


def _close(a, b, path=""):
    """Nested results equal up to float rounding (BLAS thread counts differ between processes)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)) and not (a and isinstance(a[0], (int, float))):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    else:
        x, y = np.asarray(a), np.asarray(b)
        assert x.shape == y.shape, path
        if x.dtype.kind in "fc":
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=path)
        else:
            np.testing.assert_array_equal(x, y, err_msg=path)


def test_workers_equal_the_serial_analysis(tmp_path):
    path = write_recording(tmp_path / "r.h5", taps=4, S=6, T=120, C=12)
    serial, meta = analyze_recording(path, SETTINGS, workers=0)
    with TapPool(workers=2) as pool:
        parallel, meta2 = analyze_recording(path, SETTINGS, pool=pool)
        again, _ = analyze_recording(path, SETTINGS, pool=pool)  # the pool serves a second recording
    assert list(parallel) == list(serial) == meta["taps"] and meta2 == meta
    _close(serial, parallel)
    _close(serial, again)


def test_choice_of_workers(monkeypatch):
    monkeypatch.setattr("gptwaves.parallel.available_cores", lambda: 2)
    assert tap_workers(8, MIN_PARALLEL_ELEMENTS) == 2  # paper-size recording on 2 cores
    assert tap_workers(8, MIN_PARALLEL_ELEMENTS - 1) == 0  # small: in this process
    assert tap_workers(1, 10 * MIN_PARALLEL_ELEMENTS) == 0  # one tap
    assert tap_workers(3, 10, workers=8) == 3 and tap_workers(3, 10, workers=1) == 0
    monkeypatch.setattr("gptwaves.parallel.available_cores", lambda: 1)
    assert tap_workers(8, 10 * MIN_PARALLEL_ELEMENTS) == 0


def test_worker_failures_are_one_line(tmp_path):
    def dead():
        raise BrokenProcessPool("A process in the process pool was terminated abruptly")

    with pytest.raises(GptwavesError, match=r"r.h5, tap blocks.0.hook_resid_post: a waves worker process died"):
        _tap_result(tmp_path / "r.h5", "blocks.0.hook_resid_post", dead)

    def bad():
        raise ValueError("mask selects no steps")

    with pytest.raises(GptwavesError, match=r"^r.h5, tap hook_embed: mask selects no steps$"):
        _tap_result(tmp_path / "r.h5", "hook_embed", bad)
