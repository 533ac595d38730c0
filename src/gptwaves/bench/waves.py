"""Speed of the coherence analysis.

* A paper-scale recording (8 taps x 192 channels x 64 samples x 500 steps) of synthetic waves
  (AR(1) noise, a common mode and a per-channel oscillation; float32), written as a gptwaves
  HDF5 recording and analysed completely with :func:`gptwaves.api.analyze_recording` (every tap
  through :func:`gptwaves.analysis.waves.analyze_tap`: correlation, eigenvalues, ACF, periods,
  Welch PSD, space reference, clustering with silhouette, channel function, event-triggered
  averages, and the null models of docs/method.md, Coherence against its floors: evoked/induced
  split, 20 sample-shuffle surrogates (syrk Gram matrices of the shuffled float32 waves), the
  paired BCa bootstrap CI of the excess (200 resamples), the silhouette gate and the red-noise
  test). Target: < 10 s (median of repeats), reading the file included (4.6 s before the null
  models were added).
* The cost of the null models on one tap: ``analyze_tap`` with the defaults against
  ``n_surrogates=0, n_boot=0`` on the same (S, T, C) waves.
* The ACF of all channels by FFT (:func:`gptwaves.analysis.oscillation.autocorrelation`) against a
  loop over statsmodels ``acf(adjusted=False)`` on the same subset (192 channels x 8 samples by
  default), reported as series per second and their ratio, with the largest difference of the
  two results as a correctness check.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import log, make_row, median, synthetic_vocab


def synthetic_waves(S: int, T: int, C: int, seed: int = 0) -> np.ndarray:
    """(S, T, C) float32: AR(1) noise (phi 0.9) + a shared slow mode + per-channel oscillations."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    noise = lfilter([1.0], [1.0, -0.9], rng.standard_normal((S, T, C)), axis=1)
    common = lfilter([1.0], [1.0, -0.95], rng.standard_normal((S, T, 1)), axis=1)
    t = np.arange(T)[None, :, None]
    period = rng.uniform(3.0, 20.0, size=(1, 1, C))
    phase = rng.uniform(0, 2 * np.pi, size=(S, 1, C))
    amp = rng.uniform(0.0, 2.0, size=(1, 1, C))
    x = noise + rng.uniform(-1, 1, size=(1, 1, C)) * common + amp * np.sin(2 * np.pi * t / period + phase)
    return x.astype(np.float32)


def synthetic_tokens(S: int, T: int, vocab: list[str], seed: int = 0) -> np.ndarray:
    """(S, T + 1) int32 character ids: letters with a space every ~5 characters, prompt "\\n"."""
    rng = np.random.default_rng(seed + 1)
    letters = [i for i, c in enumerate(vocab) if c.isalpha()]
    ids = rng.choice(letters, size=(S, T + 1))
    ids[rng.random((S, T + 1)) < 0.18] = vocab.index(" ")
    ids[:, 0] = vocab.index("\n")
    return ids.astype(np.int32)


def write_recording(path: Path, taps: int, S: int, T: int, C: int, seed: int = 0) -> Path:
    """A gptwaves recording file (prompt "\\n", no prompt positions) with synthetic waves."""
    import h5py

    from ..recording import FORMAT

    vocab = synthetic_vocab()
    names = ["hook_embed", *[f"blocks.{i}.hook_resid_post" for i in range(taps - 2)],
             "ln_final.hook_normalized"][:taps]
    with h5py.File(path, "w") as f:
        attrs = {"format": FORMAT, "taps": json.dumps(names), "prompt_len": 1, "samples": S, "steps": T,
                 "iteration": 0, "prompt": "\n"}
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("vocab", data=np.array(vocab, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("tokens", data=synthetic_tokens(S, T, vocab, seed), chunks=(1, T + 1))
        f.create_dataset("is_prompt", data=np.zeros(T, dtype=bool))
        f.create_dataset("entropy", data=np.full((S, T), np.log(len(vocab)), dtype=np.float32))
        g = f.create_group("waves")
        for i, name in enumerate(names):
            g.create_dataset(name, data=synthetic_waves(S, T, C, seed + 10 + i), chunks=(1, T, C))
    return path


def run(quick: bool = False, corpus=None, *, taps: int | None = None, samples: int | None = None,
        steps: int | None = None, channels: int | None = None, repeats: int | None = None,
        acf_samples: int | None = None, nlags: int = 64) -> list[dict]:
    """Rows: full analysis time of a recording, and FFT ACF vs a statsmodels loop.

    Full: 8 taps x 192 x 64 x 500, 3 repeats; ACF on 192 channels x 8 samples. ``quick``: 8 taps x
    192 x 16 x 200, 1 repeat; ACF on 2 samples. ``corpus`` is unused.
    """
    from ..analysis.oscillation import autocorrelation
    from ..stages.waves import WavesSettings, analyze_recording

    taps = taps or 8
    S = samples or (16 if quick else 64)
    T = steps or (200 if quick else 500)
    C = channels or 192
    repeats = repeats or (1 if quick else 3)
    acf_S = acf_samples or (2 if quick else 8)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gptwaves-bench-waves-") as d:
        path = write_recording(Path(d) / "synthetic.h5", taps, S, T, C)
        log(f"waves: analysing {taps} taps x {C} channels x {S} samples x {T} steps ({repeats} repeats)")
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            res, _ = analyze_recording(path, WavesSettings(nlags=nlags))
            times.append(time.perf_counter() - t0)
        full = (taps, C, S, T) == (8, 192, 64, 500)
        rows.append(make_row(f"waves full analysis {taps} taps x {C} ch x {S} samples x {T} steps", median(times),
                             "s", target="< 10 s" if full else None,
                             ok=(median(times) < 10.0) if full else None,
                             notes=f"analyze_recording incl. HDF5 read, median of {repeats}; "
                                   f"{median(times) / taps:.2f} s per tap; with 20 surrogates, 200 bootstrap "
                                   f"resamples and the red-noise test; clusters chosen "
                                   f"{sorted({int(r['clustering']['k']) for r in res.values()})}, significant "
                                   f"excess of induced mean |R| at "
                                   f"{sum(r['surrogate']['mean_abs_corr']['significant'] for r in res.values())}"
                                   f"/{taps} taps"))

    from ..analysis.waves import analyze_tap

    xw = synthetic_waves(S, T, C, seed=11)
    vocab = synthetic_vocab()
    ids = synthetic_tokens(S, T, vocab)
    chars = np.array(vocab)[ids].astype("<U1")
    cur, nxt = chars[:, :-1], chars[:, 1:]
    t_plain = median([_timed(lambda: analyze_tap(xw, cur, nxt, nlags=nlags, n_surrogates=0, n_boot=0))
                      for _ in range(repeats)])
    t_null = median([_timed(lambda: analyze_tap(xw, cur, nxt, nlags=nlags)) for _ in range(repeats)])
    rows.append(make_row(f"waves null models (coherence floors) on one tap {C} ch x {S} samples x {T} steps",
                         t_null, "s",
                         baseline=t_plain, notes=f"analyze_tap with 20 surrogates, 200 bootstrap resamples, "
                                                 f"red-noise test vs without surrogates/bootstrap ({t_plain:.2f} s); "
                                                 f"median of {repeats}"))

    x = synthetic_waves(acf_S, T, C, seed=3)
    try:
        from statsmodels.tsa.stattools import acf as sm_acf
    except ImportError:
        rows.append(make_row("waves ACF: FFT (all channels) vs statsmodels acf loop", None, "series/s",
                             notes="skipped: statsmodels is not installed (pip install gptwaves[test])"))
        return rows
    nlags = min(nlags, T - 1)
    n_series = acf_S * C
    log(f"waves: ACF of {n_series} series, FFT vs statsmodels loop")
    t_fft = median([_timed(lambda: autocorrelation(x, nlags=nlags)) for _ in range(max(3, repeats))])
    ours = autocorrelation(x, nlags=nlags)
    t0 = time.perf_counter()
    ref = np.zeros((C, nlags + 1))
    for s in range(acf_S):
        for c in range(C):
            ref[c] += sm_acf(x[s, :, c].astype(np.float64), nlags=nlags, adjusted=False)
    t_loop = time.perf_counter() - t0
    ref /= acf_S
    err = float(np.nanmax(np.abs(ours - ref)))
    rows.append(make_row(f"waves ACF {C} ch x {acf_S} samples x {T} steps: FFT vs statsmodels acf loop",
                         n_series / t_fft, "series/s", baseline=n_series / t_loop,
                         notes=f"nlags {nlags}; FFT median of {max(3, repeats)}, loop 1 run "
                               f"({t_loop:.2f} s); max |diff| {err:.1e}"))
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
