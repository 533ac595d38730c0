"""Across checkpoints: the crossing of F_correct through 1 with its bootstrap CI
(docs/method.md, Spelling).

Pure functions on numpy arrays.
"""

from __future__ import annotations

import math

import numpy as np

from ..jsonable import jsonable

from .spelling_dispersion import _fano_axis, dispersion

__all__ = ["crossing_iteration", "crossing"]


def crossing_iteration(iterations, fano_values, interpolate: bool = True, which: str = "last"):
    """Iteration where a Fano factor drops through 1 (point estimate, no conditions).

    Parameters
    ----------
    iterations : array_like of int
        Checkpoint iterations (sorted internally).
    fano_values : array_like of float
        F at each checkpoint; None/NaN entries are skipped.
    interpolate : bool, optional
        If True (default), linearly interpolate F in ``log(iteration + 1)``
        between the checkpoint with F >= 1 and the next one with F < 1 and
        return the iteration where F = 1 (a float). If False, return the first
        checkpoint iteration with F < 1 that follows one with F >= 1.
    which : {"last", "first"}, optional
        ``"last"`` (default): the downward crossing after which F stays below 1 at
        every later checkpoint; None if F ends at or above 1. ``"first"``: the
        first downward crossing.

    Returns
    -------
    float or None
        None when F never goes from >= 1 to < 1 between consecutive (finite)
        checkpoints. Use `crossing` for the reported crossing (conditions and CI).
    """
    if which not in ("last", "first"):
        raise ValueError("which must be 'last' or 'first'")
    it = np.asarray(iterations, dtype=float)
    f = np.asarray([math.nan if v is None else v for v in fano_values], dtype=float)
    if it.shape != f.shape:
        raise ValueError("iterations and fano_values must have the same length")
    order = np.argsort(it, kind="stable")
    it, f = it[order], f[order]
    ok = np.isfinite(f) & np.isfinite(it)
    it, f = it[ok], f[ok]
    found = None
    for i in range(1, it.size):
        if f[i - 1] >= 1.0 and f[i] < 1.0:
            if not interpolate:
                found = float(it[i])
            else:
                x0, x1 = math.log1p(it[i - 1]), math.log1p(it[i])
                t = (f[i - 1] - 1.0) / (f[i - 1] - f[i])
                found = float(math.expm1(x0 + t * (x1 - x0)))
            if which == "first":
                return found
    if found is not None and f[-1] >= 1.0:
        return None  # F came back above 1 and stayed there: no lasting transition
    return found


def crossing(iterations, correct_counts, alpha: float = 0.05, n_boot: int = 2000, seed: int = 0,
             ci: float = 0.95) -> dict:
    """The crossing of F_correct through 1 across checkpoints, with its bootstrap CI.

    Reported only when the first checkpoint is not sub-Poissonian and the last is
    significantly sub-Poissonian (index-of-dispersion test of `dispersion` at ``alpha``), and
    F has a lasting downward crossing of 1 (`crossing_iteration`, interpolated in
    ``log(1 + iteration)``); otherwise ``iteration`` is None and ``reason`` says why.

    The CI resamples the samples within every checkpoint (``n_boot`` times, with
    replacement), recomputes every F and the crossing; a replicate without a lasting crossing
    is placed after the last checkpoint when its last F >= 1 (not yet crossed) and before the
    first one otherwise (F < 1 throughout); the bounds are the ``(1 - ci)/2`` and
    ``(1 + ci)/2`` quantiles (inverted-CDF) of that ordering; an open bound is None.
    (Written by hand: the statistic is undefined in some replicates, which
    `scipy.stats.bootstrap` cannot take.)

    Parameters
    ----------
    iterations : sequence of int
    correct_counts : sequence of array_like of int
        Per checkpoint, the per-sample correct-word counts.
    alpha, n_boot, seed, ci : optional
        The generator is ``numpy.random.default_rng([seed, 3])``.

    Returns
    -------
    dict
        ``iteration`` (float or None), ``ci`` [lo, hi], ``reported`` (bool), ``reason``,
        ``first`` / ``last`` {``iteration``, ``fano``, ``p_value``, ``verdict``},
        ``iterations``, ``fano``, ``boot_not_crossed_fraction`` (replicates not crossed by
        the last checkpoint), ``boot_below_fraction`` (replicates below 1 throughout),
        ``n_boot``, ``seed``, ``alpha``.
    """
    pairs = sorted(((int(i), np.asarray(c, dtype=float).ravel())
                    for i, c in zip(iterations, correct_counts) if i is not None),
                   key=lambda p: p[0])
    pairs = [p for p in pairs if p[1].size >= 2]
    its = [p[0] for p in pairs]
    disp = [dispersion(c, alpha=alpha, n_boot=0) for _, c in pairs]
    fano = [d["fano"] for d in disp]
    out = dict(iteration=None, ci=[None, None], reported=False, reason=None, first=None, last=None,
               iterations=its, fano=fano, boot_not_crossed_fraction=None, boot_below_fraction=None,
               n_boot=int(n_boot), seed=int(seed), alpha=float(alpha))

    def brief(k):
        return dict(iteration=its[k], fano=fano[k], p_value=disp[k]["p_value"], verdict=disp[k]["verdict"])

    if len(pairs) < 2:
        out["reason"] = "fewer than two checkpoints with at least two samples"
        return jsonable(out)
    out["first"], out["last"] = brief(0), brief(-1)
    a, b = disp[0], disp[-1]
    if a["verdict"] == "undefined" or b["verdict"] == "undefined":
        out["reason"] = "F_correct undefined at the first or last checkpoint (no correct words)"
    elif a["verdict"] == "sub-Poissonian":
        out["reason"] = (f"the first checkpoint (iteration {its[0]}) is already significantly "
                         f"sub-Poissonian (F = {a['fano']:.3g}, p = {a['p_value']:.2g})")
    elif b["verdict"] != "sub-Poissonian":
        out["reason"] = (f"the last checkpoint (iteration {its[-1]}) is not significantly "
                         f"sub-Poissonian (F = {b['fano']:.3g}, p = {b['p_value']:.2g})")
    else:
        x = crossing_iteration(its, fano)
        if x is None:
            out["reason"] = ("F_correct is below 1 at every checkpoint (the first not significantly): "
                             "no crossing inside the checkpoints")
    if out["reason"] is not None:
        return jsonable(out)
    out.update(iteration=x, reported=True)
    if n_boot and n_boot > 0:
        out.update(_crossing_ci(its, pairs, int(n_boot), seed, ci))
    return jsonable(out)


def _crossing_ci(its: list, pairs: list, n_boot: int, seed: int, ci: float) -> dict:
    """The bootstrap CI of :func:`crossing` (samples resampled within every checkpoint)."""
    rng = np.random.default_rng([int(seed), 3])
    fb = np.empty((n_boot, len(pairs)))
    for k, (_, c) in enumerate(pairs):
        xs = c[rng.integers(0, c.size, (n_boot, c.size))]
        fb[:, k] = _fano_axis(xs, axis=1)
    vals = np.empty(n_boot)
    for r in range(n_boot):
        v = crossing_iteration(its, fb[r])
        if v is None:
            f = fb[r][np.isfinite(fb[r])]
            v = math.inf if f.size and f[-1] >= 1.0 else -math.inf
        vals[r] = v
    lo, hi = np.quantile(vals, [(1 - ci) / 2, (1 + ci) / 2], method="inverted_cdf")
    return {"ci": [float(lo) if np.isfinite(lo) else None, float(hi) if np.isfinite(hi) else None],
            "boot_not_crossed_fraction": float(np.mean(vals == math.inf)),
            "boot_below_fraction": float(np.mean(vals == -math.inf))}
