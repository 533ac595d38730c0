"""The statistics the coherence verdicts read, computed lean for the calibration's fast engine
(docs/method.md, Calibration, "Fast coherence engine").

Claims 1 and 4 read only a few numbers of a tap's summary: the induced mean |R| and participation
ratio, the excess of induced mean |R| over its sample-shuffle surrogate (with its z, p-value and,
at the checkpoints a rule compares, its jackknife CI and leave-one-out values), the same after
gain normalisation, and the space probe's R^2 (with its jackknife and, at the last checkpoint, the
95th percentile of its red-noise null). This module computes exactly those, with the waves stage's
own functions (`coherence.induced_columns`, `coherence.gain_columns`, `surrogates.excess_with_ci`,
`probe.space_probe`), in the layout of :func:`gptwaves.analysis.waves_summary.tap_summary`.

Two things differ from the waves stage: the waves are centred and split in float32 (`WORK_DTYPE`;
where every sample's analysed steps are one block, both variants from one channels-first copy:
`_columns_block`),
and the sample-shuffle surrogate *law* of mean |R| (its B values) is not drawn again for every
synthetic tap. It is drawn once per checkpoint and
tap from an independent twin (`surrogate_law`) and moved to each tap by the ratio of their
closed-form surrogate floors (`surrogate_floor`: Bartlett's variance of the correlation of two
independent series with the tap's own autocovariances). The two slots of surrogates inside the
jackknife are drawn from the tap itself, as in the stage.

Pure numpy / scipy; no I/O.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from . import coherence_nulls as _nulls
from .coherence import gain_columns, induced_columns
from .probe import space_probe
from .surrogates import ORDER_KEYS, excess_with_ci, gram, surrogate_order_parameters, surrogate_slots
from .wave_arrays import _CONST_RTOL, _absmax, _as_mask, _center0, _channels_first
from .waves_summary import _surrogate_json, probe_summary

__all__ = ["surrogate_floor", "surrogate_law", "coherence_core", "coherence_jackknife", "probe_part", "base_parts",
           "factor_analysed", "MAX_FLOOR_LAG", "VARIANTS", "LAW_FACTOR", "WORK_DTYPE"]

#: Lags summed by the closed-form surrogate floor (an AR(1) channel of coefficient 0.95 keeps 0.1 %
#: of its autocorrelation at lag 128).
MAX_FLOOR_LAG = 128
#: The shared surrogate law holds this many times the run's number of surrogates (its mean then
#: carries a third of the noise of one run's surrogate mean; each tap draws the run's number from it).
LAW_FACTOR = 10
#: The fast engine centres, splits and normalises the waves in float32 (the stages: float64); the
#: correlations it reads differ by about 1e-7 (tests/test_calibration_coherence.py compares them).
WORK_DTYPE = np.float32
#: The two variants every coherence rule runs on: the raw induced waves and the gain-normalised ones.
VARIANTS = ("raw", "gain")


def surrogate_floor(Z: np.ndarray, max_lag: int = MAX_FLOOR_LAG) -> float:
    """Closed-form expected mean |R| of the sample-shuffle surrogate of unit columns ``Z``.

    In a surrogate every pair of channels comes from two different samples, i.e. two independent
    series, so the variance of their correlation is Bartlett's ``sum_k (T - |k|) c_i(k) c_j(k)``
    summed over the sample pairs, estimated here from each channel's lagged sums averaged over
    samples (lags up to ``max_lag``); each correlation is near normal, so ``E|R_ij| = sqrt(2 / pi)
    sd_ij``. Used as a ratio between two taps of the same shape, where the estimate's own biases cancel.

    Parameters
    ----------
    Z : ndarray, shape (C, S, T)
        :func:`gptwaves.analysis.surrogates.unit_columns` output (zeros outside the mask).
    max_lag : int, optional

    Returns
    -------
    float
        Mean over channel pairs of ``sqrt(2 / pi) sd_ij`` (NaN with fewer than 2 channels).
    """
    C, S, T = Z.shape
    if C < 2 or S < 1 or T < 2:
        return float("nan")
    F, pw, n, K = _spectra(Z, max_lag)
    del F
    return _floor_of_power(pw, S, T, n, K)


def _spectra(Z: np.ndarray, max_lag: int = MAX_FLOOR_LAG) -> tuple:
    """``(F, pw, n, K)`` of :func:`surrogate_floor`: the columns' transforms zero-padded to ``n`` (C, S,
    n // 2 + 1), their power summed over samples (C, n // 2 + 1, float64), and the largest lag ``K``."""
    C, S, T = Z.shape
    K = int(min(max_lag, T - 1))
    n = scipy.fft.next_fast_len(T + K, real=True)
    F = scipy.fft.rfft(Z, n=n, axis=2)  # zero-padded to n by the transform itself
    # |F|^2 summed over samples first: the inverse transform is linear, so one per channel gives the
    # lagged sums summed over samples (in the waves' dtype: float32 sums of 2 S terms, ~1e-7 relative)
    Fv = F.view(F.real.dtype).reshape(C, S, -1)  # real and imaginary parts interleaved
    pw = np.einsum("csf,csf->cf", Fv, Fv).reshape(C, -1, 2).sum(axis=2, dtype=np.float64)
    return F, pw, n, K


def _floor_of_power(pw: np.ndarray, S: int, T: int, n: int, K: int) -> float:
    """:func:`surrogate_floor` from the columns' power summed over samples (`_spectra`)."""
    C = pw.shape[0]
    L = scipy.fft.irfft(pw, n=n, axis=1)[:, : K + 1] / S  # (C, K + 1)
    lags = np.arange(K + 1)
    w = S / (T - lags).astype(np.float64)
    w[1:] *= 2.0  # lags -k and +k
    V = (L * w) @ L.T
    iu = np.triu_indices(C, 1)
    return float(np.sqrt(2.0 / np.pi) * np.sqrt(np.maximum(V[iu], 0.0)).mean())


def _uniform_block(mask: np.ndarray) -> tuple[int, int] | None:
    """``(a, b)`` when every sample's masked steps are the same block ``[a, b)`` (a recording's mask:
    the prompt is the same length in every sample), else None."""
    if mask.shape[0] == 0 or not (mask == mask[:1]).all():
        return None
    steps = np.flatnonzero(mask[0])
    if steps.size == 0 or steps[-1] - steps[0] + 1 != steps.size:
        return None
    return int(steps[0]), int(steps[-1]) + 1


def _sumsq(X: np.ndarray) -> np.ndarray:
    """Each channel's sum of squares of ``X`` (C, ...), as float64 (accumulated by BLAS in ``X``'s dtype)."""
    flat = X.reshape(X.shape[0], -1)
    return np.array([np.dot(r, r) for r in flat], dtype=np.float64)


def _induced_units_inplace(X: np.ndarray, var: np.ndarray, norms: list | None = None) -> np.ndarray:
    """Unit columns of the induced part of per-sample centred waves ``X`` (C, S, T) whose masked
    steps are all of them (modified in place): the across-sample mean at each step removed, each
    channel scaled to unit sum of squares; channels that keep no induced variance dropped. ``norms``
    (a list, optional) receives the kept channels' norms before the scaling (float64)."""
    C, S, T = X.shape
    if S >= 2:  # `split_evoked` leaves steps seen by fewer than two samples alone
        X -= X.mean(axis=1, keepdims=True)
    # re-centring each sample is not needed here: every sample's mean over the block is already 0,
    # and so is the mean over samples of those means
    ivar = _sumsq(X)
    ok = ivar > (_CONST_RTOL**2) * var * (S * T)
    inv = np.zeros(C)
    inv[ok] = 1.0 / np.sqrt(ivar[ok])
    X *= inv.astype(X.dtype)[:, None, None]
    if norms is not None:
        norms.append(np.sqrt(ivar[ok]))
    return X if ok.all() else X[ok]


def _gain_divided(X: np.ndarray) -> np.ndarray:
    """Raw waves (C, S, T) divided by each (sample, step) vector's RMS over the channels, as
    `coherence_nulls.gain_normalise` (a vector of zeros stays zero)."""
    rms = np.sqrt(np.einsum("cst,cst->st", X, X).astype(np.float64) / max(X.shape[0], 1))
    rms[~(rms > 0)] = 1.0
    return X / rms.astype(X.dtype)[None]


def _columns_block(x: np.ndarray, a: int, b: int, variants=VARIANTS, info: dict | None = None) -> dict:
    """`_columns` where every sample's masked steps are the block ``[a, b)``: the same columns (within
    float32 rounding) in fewer passes over the waves, both variants from one transposed copy."""
    x = np.asarray(x)
    X = _channels_first(x, a, b, WORK_DTYPE)
    C, S, T = X.shape
    n = S * T
    absmax = np.maximum(X.max(axis=(1, 2)), -X.min(axis=(1, 2))).astype(np.float64)
    G = _gain_divided(X) if "gain" in variants else None  # over every channel; redone below when some are constant
    X -= X.mean(axis=2, keepdims=True)
    var = _sumsq(X) / n
    const = (var <= 0) | (np.sqrt(np.maximum(var, 0)) <= _CONST_RTOL * absmax)
    kept = np.flatnonzero(~const)
    if const.any():
        G = None if G is None else _gain_divided(_channels_first(x[:, :, kept], a, b, WORK_DTYPE))
        X = X[kept]
    out, norms = {}, []
    if "raw" in variants:
        out["raw"] = _induced_units_inplace(X, var[kept], norms)
    del X
    if G is not None:
        G -= G.mean(axis=2, keepdims=True)
        ng = _sumsq(G) / n
        okg = ng > 0
        out["gain"] = _induced_units_inplace(G if okg.all() else G[okg], ng[okg])
    if info is not None and norms:
        info.update(raw_norms=norms[0], raw_all_kept=bool(norms[0].size == C), block=(a, b))
    return out


def _columns(x: np.ndarray, mask: np.ndarray, variants=VARIANTS, info: dict | None = None) -> dict:
    """Induced unit columns of the ``variants`` of one tap: {"raw": Z, "gain": Z}. ``info`` (a dict,
    optional) receives, where the masked steps are one block, the raw variant's norms before the
    scaling (``raw_norms``), whether it kept every channel (``raw_all_kept``) and the ``block``."""
    block = _uniform_block(mask)
    if block is not None:
        return _columns_block(x, *block, variants=variants, info=info)
    n = max(int(mask.sum()), 1)
    xc0 = _center0(x, mask, WORK_DTYPE)
    absmax = _absmax(x, mask)
    var = np.square(xc0).sum(axis=(0, 1), dtype=np.float64) / n
    const = (var <= 0) | (np.sqrt(np.maximum(var, 0)) <= _CONST_RTOL * absmax)
    kept = np.flatnonzero(~const)
    out = {}
    if "raw" in variants:
        out["raw"] = induced_columns(xc0[:, :, kept] if kept.size < x.shape[2] else xc0, mask, var[kept], n)[0]
    del xc0
    if "gain" in variants:
        xg0, ng, okg = gain_columns(x, kept, mask, n, WORK_DTYPE)
        out["gain"] = induced_columns(xg0[:, :, okg], mask, ng[okg], n)[0]
    return out


def _observed(Z: np.ndarray) -> dict:
    """Order parameters of the correlation matrix of unit columns, as the stage computes them
    (mean |R| over i != j, participation ratio ``(tr R)^2 / sum R_ij^2``, the eigenvalue definition
    for a symmetric matrix); the largest eigenvalue is not read by any verdict and is not computed."""
    C = Z.shape[0]
    return _order_parameters(gram(Z.reshape(C, -1)).astype(np.float64))


def _order_parameters(R: np.ndarray) -> dict:
    """`_observed` from the correlation matrix ``R`` (C, C) float64 (clipped in place)."""
    C = R.shape[0]
    np.clip(R, -1, 1, out=R)
    np.fill_diagonal(R, 1.0)
    off = np.abs(R).sum() - C
    return {"mean_abs_corr": float(off / (C * (C - 1))) if C > 1 else float("nan"), "lambda_max_share": None,
            "participation_ratio": float(C * C / np.square(R).sum())}


def _analysed(Z: np.ndarray, keep: dict | None = None) -> tuple:
    """``(observed order parameters, surrogate floor, shape)`` of one variant's unit columns ``Z``;
    ``keep`` (a dict, optional) receives the Gram (float64) and the spectra that `factor_analysed`
    derives planted-factor taps from."""
    C, S, T = Z.shape
    G = gram(Z.reshape(C, -1)).astype(np.float64)
    if keep is None or C < 2 or S < 1 or T < 2:
        return _order_parameters(G), surrogate_floor(Z), Z.shape
    F, pw, n, K = _spectra(Z)
    keep.update(G=G.copy(), F=F, pw=pw, n=n, K=K, shape=Z.shape)
    return _order_parameters(G), _floor_of_power(pw, S, T, n, K), Z.shape


def base_parts(x, mask, pre: dict) -> dict | None:
    """Analyse an independent (base) tap's two variants into ``pre`` (the cache of `coherence_core`)
    and return what `factor_analysed` derives its planted-factor taps from: the raw variant's Gram,
    spectra and norms, and the block of masked steps; None where that cannot be done (the masked steps
    are not one block, or a channel was dropped)."""
    mask = _as_mask(mask, np.shape(x)[:2])
    info: dict = {}
    keep: dict = {}
    cols = _columns(np.asarray(x), mask, ("raw",) if "gain" in pre else VARIANTS, info=info)
    if "gain" not in pre:
        pre["gain"] = _analysed(cols["gain"])
    raw = _analysed(cols["raw"], keep)  # the spectra are kept even where the raw analysis was carried
    pre.setdefault("raw", raw)
    if "F" not in keep or not info.get("raw_all_kept"):
        return None
    return {**keep, "norms": info["raw_norms"], "block": info["block"]}


def factor_analysed(base: dict, f: np.ndarray, loading: float) -> tuple:
    """`_analysed` of the raw variant of the tap ``(b + loading f) / sqrt(1 + loading^2)`` (every
    channel of the base ``b`` plus one common factor ``f`` (S, T); `calibration.add_factor`), derived
    from the base's `base_parts` without the tap's columns.

    The centring and the induced split are linear, so the tap's induced columns before scaling are
    ``A_c = Ib_c + l If`` (the base's and the factor's induced parts; the common scale drops out):
    ``<A_i, A_j> = <Ib_i, Ib_j> + l (<Ib_i, If> + <Ib_j, If>) + l^2 |If|^2``, and each channel's power
    spectrum summed over samples is ``|F_Ib|^2 + 2 l Re(F_Ib conj(F_If)) + l^2 |F_If|^2``. The same
    numbers as analysing the tap itself, within float32 rounding (tests/test_calibration_coherence.py).
    """
    C, S, T = base["shape"]
    a, b = base["block"]
    n, K, nb = base["n"], base["K"], base["norms"]
    lam = float(loading)
    g = np.asarray(f, np.float64)[:, a:b]
    g = g - g.mean(axis=1, keepdims=True)  # each sample centred, then the across-sample mean removed
    if S >= 2:
        g -= g.mean(axis=0, keepdims=True)
    Ff = scipy.fft.rfft(g, n=n, axis=1)  # (S, n // 2 + 1)
    cross = np.einsum("csf,sf->cf", base["F"], np.conj(Ff).astype(base["F"].dtype)).astype(np.complex128)
    u = nb * scipy.fft.irfft(cross, n=n, axis=1)[:, 0]  # <Ib_c, If>
    G = np.outer(nb, nb) * base["G"] + lam * (u[:, None] + u[None, :]) + lam * lam * float(np.square(g).sum())
    n2 = np.diag(G).copy()
    pw = (nb[:, None] ** 2 * base["pw"] + 2 * lam * nb[:, None] * cross.real
          + lam * lam * np.square(np.abs(Ff)).sum(axis=0)[None, :]) / n2[:, None]
    R = G / np.sqrt(np.outer(n2, n2))
    return _order_parameters(R), _floor_of_power(pw, S, T, n, K), (C, S, T)


def surrogate_law(x, mask, n_surrogates: int, rng: np.random.Generator) -> dict:
    """The sample-shuffle surrogate law of an (independent) tap, to be moved to others: ``n_surrogates``
    surrogates (more than a run draws: `LAW_FACTOR` times as many in the calibration).

    Returns
    -------
    dict
        Per variant: ``values`` (dict of (B,) arrays per order parameter, the stage's surrogates;
        ``lambda_max_share`` NaN, as no verdict reads it) and ``floor`` (:func:`surrogate_floor` of
        the tap).
    """
    mask = _as_mask(mask, np.shape(x)[:2])
    out = {}
    for v, Z in _columns(np.asarray(x), mask).items():
        sur = surrogate_order_parameters(Z, int(n_surrogates), rng, 0, eigenvalues=False)
        out[v] = {"values": {k: np.asarray(a, np.float64) for k, a in sur["stats"].items()},
                  "floor": surrogate_floor(Z)}
    return out


def _moved(law: dict, floor: float, n_surrogates: int, rng: np.random.Generator) -> dict:
    """``n_surrogates`` of the law's values, drawn without replacement, moved to a tap whose floor is
    ``floor`` (mean |R| only: the other order parameters are not read by any verdict and keep the
    twin's values). The law holds more values than a run draws, so that its mean is precise while
    each tap's surrogate mean keeps the noise of the run's own ``n_surrogates``."""
    r = floor / law["floor"] if np.isfinite(floor) and law["floor"] > 0 else 1.0
    n_law = law["values"]["mean_abs_corr"].size
    pick = rng.choice(n_law, size=min(int(n_surrogates), n_law), replace=False)
    vals = {k: np.asarray(v)[pick] for k, v in law["values"].items()}
    vals["mean_abs_corr"] = vals["mean_abs_corr"] * r
    return vals


def _summary(observed: dict, sur: dict, alpha: float) -> dict:
    """The ``induced`` and ``surrogate`` entries of a tap summary from the observed order parameters
    and an `excess_with_ci` result."""
    sur["on"] = "induced"
    return {"induced": {k: (None if v is None else float(v)) for k, v in observed.items()},
            "surrogate": _surrogate_json(sur)}


def _coherence(x, mask, law: dict, n_surrogates: int, alpha: float, rng: np.random.Generator | None,
               n_ci_surrogates: int = 0, slot_rng: np.random.Generator | None = None,
               pre: dict | None = None) -> dict:
    """Both variants of a tap against the moved law; with ``n_ci_surrogates`` > 0 the stage's
    delete-one-sample jackknife of the paired excess too (its slots drawn from the tap with ``slot_rng``).
    ``pre`` (a dict, optional) keeps each variant's `_analysed` (observed order parameters, surrogate
    floor, shape) across calls on the same tap: filled on the first (or by `base_parts` and
    `factor_analysed`), read on later ones, which then need the tap's columns only for a jackknife."""
    mask = _as_mask(mask, np.shape(x)[:2])
    rng = np.random.default_rng(0) if rng is None else rng
    pre = {} if pre is None else pre
    need = tuple(v for v in VARIANTS if v not in pre or n_ci_surrogates > 0)  # columns only where read
    cols = _columns(np.asarray(x), mask, need) if need else {}
    parts = {}
    for v in VARIANTS:
        Z = cols.get(v)
        if v not in pre:
            pre[v] = _analysed(Z)
        obs, floor, shape = pre[v]
        vals = _moved(law[v], floor, n_surrogates, rng)
        sur = {"stats": vals, "slots": np.zeros((0, shape[1], 0, 0)), "v0": np.zeros((0, 0))}
        P = None
        if n_ci_surrogates > 0:  # the stage's slots, from the same draws; no verdict reads lambda_max
            slots = surrogate_slots(Z, int(n_ci_surrogates), slot_rng or np.random.default_rng(1))
            sur.update(slots=slots, v0=np.zeros((slots.shape[0], Z.shape[0]), np.float32))
            P = _nulls.sample_products(Z)
        Zs = Z if Z is not None else np.broadcast_to(np.float32(0), shape)  # only its shape is read
        res = excess_with_ci(Zs, {k: (np.nan if obs[k] is None else obs[k]) for k, _ in ORDER_KEYS}, sur, None,
                             n_boot=0, alpha=alpha, P=P, eigenvalues=False)
        parts[v] = _summary(obs, res, alpha)
    return {**parts["raw"], "gain_normalised": parts["gain"]}


def coherence_core(x, mask, law: dict, n_surrogates: int, alpha: float = 0.05,
                   rng: np.random.Generator | None = None, pre: dict | None = None) -> dict:
    """The coherence part of a tap summary without the jackknife: induced order parameters and the
    excess of mean |R| over the moved surrogate law (``n_surrogates`` of its values, drawn with
    ``rng``), with z and p-value (``ci``, ``se``, ``loo`` None and ``significant`` False until
    :func:`coherence_jackknife`). ``pre`` (a dict, optional) carries the tap's observed order
    parameters and surrogate floors to a later call on the same tap, which then skips them.

    Returns
    -------
    dict
        ``{"induced", "surrogate", "gain_normalised": {"induced", "surrogate"}}``, the layout of
        :func:`gptwaves.analysis.waves_summary.tap_summary`.
    """
    return _coherence(x, mask, law, n_surrogates, alpha, rng, pre=pre)


def coherence_jackknife(x, mask, law: dict, n_surrogates: int, alpha: float = 0.05, n_ci_surrogates: int = 2,
                        rng: np.random.Generator | None = None, slot_rng: np.random.Generator | None = None,
                        pre: dict | None = None) -> dict:
    """:func:`coherence_core` with the stage's delete-one-sample jackknife of the paired excess
    (``n_ci_surrogates`` surrogate slots drawn from the tap itself with ``slot_rng``): ``ci``, ``se``,
    ``loo`` and ``significant`` filled in. With the same ``rng`` as :func:`coherence_core` the
    surrogate values, and so the excess, z and p-value, are the same."""
    return _coherence(x, mask, law, n_surrogates, alpha, rng, max(int(n_ci_surrogates), 1), slot_rng, pre)


def probe_part(x, next_chars, mask, *, n_folds: int, max_steps: int, nlags: int, seed: int,
               null_q95: float | None = None, n_null: int = 0) -> dict:
    """The ``probe`` entry of a tap summary without its red-noise null and without the word-rhythm
    similarity (NaN: no verdict reads it); ``null_q95`` (and the number of null replicates it came
    from) stands in for the null where a verdict reads it."""
    p = space_probe(x, next_chars, mask=mask, n_folds=n_folds, max_steps=max_steps, n_null=0,
                    nlags=min(int(nlags), 32), seed=seed, rhythm=False,  # no verdict reads the rhythm
                    search_dtype=np.float32)  # the same penalties (tests/test_calibration_coherence.py)
    out = probe_summary(p)
    if null_q95 is not None:
        out.update(null_r2_q95=float(null_q95), n_null=int(n_null))
    return out
