"""Is a change across training a transition? Change points, widths and scaling across a family.

Pure functions on numpy arrays (numpy, scipy and ``ruptures``; no torch, no file I/O). The method
is docs/method.md, "Sweeps: is it a phase transition?".

Data conventions
----------------
iterations : array, shape (K,)
    Training iterations of the checkpoints of one run, increasing; the axis of every curve is
    ``u = log(1 + iteration)``.
per_sample : sequence of K arrays
    For each checkpoint, the per-sample values of an order parameter (one value per sample of
    that checkpoint; checkpoints have independent samples). The curve is their mean; bootstrap
    replicates resample samples within every checkpoint.

What a *change* is here (decided, see the method page)
-------------------------------------------------------
The main change of a curve is the flank from its first value to its extreme (the maximum when
the largest departure from the first value is upwards, else the minimum). Its *location* is the
``u`` where the curve first crosses 50 % of that departure, its *width* the ``u``-distance from
the 10 % to the 90 % crossing (linear interpolation between checkpoints), its *height* the
departure itself. A change narrower than the spacing of the checkpoints around it is
*unresolved*: its width is only bounded by that spacing. The change point is located
independently by ``ruptures`` (exact dynamic programming, least squares, one break).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "log_axis",
    "per_sample_coherence",
    "change_point",
    "main_change",
    "susceptibility",
    "curve_analysis",
    "power_law",
    "family_scaling",
    "scaling_verdict",
]

#: Equivalence margin of the width exponent: a width that shrinks by less than
#: 2**-0.1 - 1 = -6.7 % per doubling of the varied setting counts as "does not sharpen".
WIDTH_EXPONENT_MARGIN = 0.1


def log_axis(iterations) -> np.ndarray:
    """``u = log(1 + iteration)``, the axis of every across-training curve."""
    it = np.asarray(iterations, dtype=float)
    if it.ndim != 1 or np.any(it < 0) or np.any(np.diff(it) <= 0):
        raise ValueError("iterations must be a 1-d increasing array of non-negative numbers")
    return np.log1p(it)


# ----------------------------------------------------------------------------
# per-sample order parameter
# ----------------------------------------------------------------------------


def _standardise(z: np.ndarray) -> np.ndarray:
    """Centre each (sample, channel) series over steps and scale it to unit RMS (constant -> 0)."""
    z = z - z.mean(axis=1, keepdims=True)
    sd = np.sqrt((z * z).mean(axis=1, keepdims=True))
    return np.divide(z, sd, out=np.zeros_like(z), where=sd > 1e-12)


def _mean_abs_offdiag(z: np.ndarray) -> np.ndarray:
    """Mean |R_ij| over i != j of every sample's correlation matrix (z standardised)."""
    S, T, C = z.shape
    R = np.einsum("stc,std->scd", z, z, optimize=True) / T
    a = np.abs(R).sum(axis=(1, 2)) - np.abs(np.einsum("scc->sc", R)).sum(axis=1)
    return a / (C * (C - 1))


def per_sample_coherence(x, mask=None, seed: int = 0) -> dict:
    """Induced mean |R| of every sample, and its excess over a circular-shift floor.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
        Waves of one tap.
    mask : array_like of bool, shape (S, T), optional
        Steps to use (generated steps). Every sample must have the same number of masked steps
        (the default recordings do); they need not be contiguous.
    seed : int
        Seed of the channel shifts.

    Returns
    -------
    dict
        ``observed`` (S,): mean |R_ij| (i != j) of the sample's induced waves (the across-sample
        mean at each step removed, then each channel standardised over the sample's steps);
        ``floor`` (S,): the same after shifting every channel of the sample circularly by its
        own random offset (keeps each channel's spectrum, destroys the alignment between
        channels); ``excess`` = observed - floor.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError("x must have shape (samples, steps, channels)")
    S, T, C = x.shape
    if mask is None:
        mask = np.ones((S, T), dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    n = mask.sum(axis=1)
    if np.any(n != n[0]) or n[0] < 3 or C < 2:
        raise ValueError("every sample needs the same number (>= 3) of masked steps, and C >= 2")
    z = x[mask].reshape(S, int(n[0]), C)
    z = z - z.mean(axis=1, keepdims=True)
    z = z - z.mean(axis=0, keepdims=True)  # induced: the part time-locked to the step removed
    z = _standardise(z)
    obs = _mean_abs_offdiag(z)
    rng = np.random.default_rng(seed)
    Tn = z.shape[1]
    shift = rng.integers(1, Tn, size=(S, 1, C))
    idx = (np.arange(Tn)[None, :, None] + shift) % Tn
    floor = _mean_abs_offdiag(np.take_along_axis(z, idx, axis=1))
    return {"observed": obs, "floor": floor, "excess": obs - floor}


# ----------------------------------------------------------------------------
# one curve
# ----------------------------------------------------------------------------


def change_point(u, y, min_size: int = 2) -> tuple[float, float] | None:
    """The single most pronounced change in the mean of ``y`` along ``u``, as a bracket.

    ``ruptures.Dynp`` (least squares, one break, exact). A break between two checkpoints can
    only be placed between them, so the result is that bracket ``(u[k-1], u[k])``: the last
    checkpoint before the break and the first after it (its midpoint is the point estimate).
    ``None`` when the curve has fewer than ``2 * min_size`` points or is constant.
    """
    import ruptures as rpt  # imported here: only sweeps need it

    u = np.asarray(u, float)
    y = np.asarray(y, float)
    if len(y) < 2 * min_size or not np.all(np.isfinite(y)) or np.ptp(y) == 0:
        return None
    k = rpt.Dynp(model="l2", min_size=min_size, jump=1).fit(y.reshape(-1, 1)).predict(n_bkps=1)[0]
    return float(u[k - 1]), float(u[k])


def _crossing(u: np.ndarray, y: np.ndarray, level: float, up: bool) -> float | None:
    """First ``u`` where ``y`` reaches ``level`` (linear interpolation)."""
    hit = y >= level if up else y <= level
    if not hit.any():
        return None
    k = int(np.argmax(hit))
    if k == 0:
        return float(u[0])
    y0, y1 = y[k - 1], y[k]
    f = 0.0 if y1 == y0 else (level - y0) / (y1 - y0)
    return float(u[k - 1] + f * (u[k] - u[k - 1]))


def main_change(u, y) -> dict:
    """Location, width and height of the main change of a curve (see the module notes).

    Returns
    -------
    dict
        ``direction`` ('up'/'down'), ``height`` (extreme - first value), ``location`` (u of the
        50 % crossing), ``width`` (u from 10 % to 90 %), ``extreme_at`` (u of the extreme),
        ``spacing`` (the checkpoint spacing in u around the location) and ``resolved``
        (width > spacing). All ``None`` for a flat curve.
    """
    u = np.asarray(u, float)
    y = np.asarray(y, float)
    out = {"direction": None, "height": None, "location": None, "width": None,
           "extreme_at": None, "spacing": None, "resolved": None}
    if len(y) < 2 or not np.all(np.isfinite(y)):
        return out
    up_dev, down_dev = y.max() - y[0], y[0] - y.min()
    if max(up_dev, down_dev) <= 0:
        return out
    up = up_dev >= down_dev
    k_ext = int(np.argmax(y) if up else np.argmin(y))
    seg_u, seg_y = u[: k_ext + 1], y[: k_ext + 1]
    h = float(y[k_ext] - y[0])
    at = {q: _crossing(seg_u, seg_y, y[0] + q * h, up) for q in (0.1, 0.5, 0.9)}
    loc = at[0.5]
    k = int(np.searchsorted(u, loc, side="left")) if loc is not None else 1
    k = min(max(k, 1), len(u) - 1)
    spacing = float(u[k] - u[k - 1])
    width = at[0.9] - at[0.1] if at[0.9] is not None and at[0.1] is not None else None
    out.update(direction="up" if up else "down", height=h, location=loc, width=width,
               extreme_at=float(u[k_ext]), spacing=spacing,
               resolved=bool(width is not None and width > spacing))
    return out


def susceptibility(per_sample: Sequence) -> np.ndarray:
    """chi = S x variance over samples (ddof 1) of the per-sample order parameter, per checkpoint."""
    return np.array([len(v) * np.var(np.asarray(v, float), ddof=1) if len(v) > 1 else np.nan
                     for v in per_sample])


def _fastest_change(u: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """Interval index k (between checkpoints k and k+1) with the largest |dy/du|, and its midpoint."""
    d = np.abs(np.diff(y) / np.diff(u))
    k = int(np.nanargmax(d))
    return k, float((u[k] + u[k + 1]) / 2)


def _ci(reps, level: float = 0.95) -> list:
    """Percentile interval of the finite replicates; [None, None] when fewer than half are finite."""
    r = np.asarray([np.nan if v is None else v for v in reps], float)
    r = r[np.isfinite(r)]
    if len(r) < max(2, len(reps) // 2):
        return [None, None]
    a = (1 - level) / 2
    return [float(np.quantile(r, a)), float(np.quantile(r, 1 - a))]


def curve_analysis(iterations, per_sample: Sequence, n_boot: int = 200, seed: int = 0,
                   level: float = 0.95) -> dict:
    """Change point, main change and susceptibility of one curve, each with a bootstrap CI.

    Parameters
    ----------
    iterations : array_like, shape (K,)
        Checkpoint iterations (increasing).
    per_sample : sequence of K array_like
        Per-sample values at each checkpoint; the curve is their mean.
    n_boot : int
        Bootstrap replicates (samples resampled with replacement within every checkpoint).

    Returns
    -------
    dict
        ``u``, ``curve``, ``change_point`` {estimate (midpoint), bracket (the two checkpoints
        around the break), ci (from the 2.5 % quantile of the replicates' lower checkpoints to
        the 97.5 % quantile of their upper ones, so it includes the schedule's resolution)},
        ``location``/``width``/``height``
        {estimate, ci}, ``direction``, ``resolved``, ``spacing``, ``susceptibility`` (per
        checkpoint), ``chi_peak_at`` (u), ``fastest_change_at`` (u), ``chi_peak_coincides``
        (the susceptibility peaks at a checkpoint bounding the interval of fastest change) and
        ``replicates`` (the bootstrap values of location, width and height, for the family fit).
    """
    u = log_axis(iterations)
    vals = [np.asarray(v, float) for v in per_sample]
    if len(vals) != len(u) or any(len(v) < 2 for v in vals):
        raise ValueError("one array of at least 2 per-sample values per checkpoint is needed")
    y = np.array([v.mean() for v in vals])
    mc = main_change(u, y)
    cp = change_point(u, y)
    rng = np.random.default_rng(seed)
    reps = {"location": [], "width": [], "height": []}
    brackets = []
    for _ in range(n_boot):
        yb = np.array([v[rng.integers(0, len(v), len(v))].mean() for v in vals])
        m = main_change(u, yb)
        for key in ("location", "width", "height"):
            reps[key].append(m[key] if m["direction"] == mc["direction"] else None)
        brackets.append(change_point(u, yb) or (np.nan, np.nan))
    br = np.asarray(brackets, float)
    a = (1 - level) / 2
    cp_ci = ([float(np.nanquantile(br[:, 0], a)), float(np.nanquantile(br[:, 1], 1 - a))]
             if np.isfinite(br).all(axis=1).sum() >= max(2, n_boot // 2) else [None, None])
    chi = susceptibility(vals)
    k_fast, u_fast = _fastest_change(u, y) if len(u) > 1 else (0, None)
    k_chi = int(np.nanargmax(chi)) if np.isfinite(chi).any() else None
    return {
        "u": u.tolist(), "curve": y.tolist(),
        "change_point": {"estimate": None if cp is None else (cp[0] + cp[1]) / 2,
                         "bracket": None if cp is None else list(cp), "ci": cp_ci},
        **{key: {"estimate": mc[key], "ci": _ci(reps[key], level)} for key in ("location", "width", "height")},
        "direction": mc["direction"], "resolved": mc["resolved"], "spacing": mc["spacing"],
        "susceptibility": chi.tolist(),
        "chi_peak_at": float(u[k_chi]) if k_chi is not None else None,
        "fastest_change_at": u_fast,
        "chi_peak_coincides": bool(k_chi in (k_fast, k_fast + 1)) if k_chi is not None else None,
        "replicates": {k: [None if v is None else float(v) for v in r] for k, r in reps.items()},
    }


# ----------------------------------------------------------------------------
# across the family
# ----------------------------------------------------------------------------


def power_law(sizes, values) -> tuple[float, float] | None:
    """Least-squares fit of log(value) = log(a) + b log(size); (a, b), or None if a value <= 0."""
    s = np.asarray(sizes, float)
    v = np.asarray([np.nan if x is None else x for x in values], float)
    if len(s) < 2 or not np.all(np.isfinite(v)) or np.any(v <= 0) or np.any(s <= 0):
        return None
    b, loga = np.polyfit(np.log(s), np.log(v), 1)
    return float(np.exp(loga)), float(b)


def _fit_interval(sizes, values, level: float = 0.95) -> list:
    """Student-t interval of the exponent of :func:`power_law` from the scatter of the members about
    the fitted line (``n - 2`` degrees of freedom): how far a power law through these members is
    from pinning the exponent down. [None, None] with fewer than 3 members or an undefined fit."""
    from scipy import stats

    s = np.asarray(sizes, float)
    v = np.asarray([np.nan if x is None else x for x in values], float)
    if len(s) < 3 or not np.all(np.isfinite(v)) or np.any(v <= 0) or np.any(s <= 0):
        return [None, None]
    res = stats.linregress(np.log(s), np.log(v))
    t = float(stats.t.ppf(0.5 + level / 2, len(s) - 2))
    return [float(res.slope - t * res.stderr), float(res.slope + t * res.stderr)]


def family_scaling(sizes, members: Sequence[dict], level: float = 0.95) -> dict:
    """Power-law exponents of location, width and height of the main change against size.

    ``members`` are :func:`curve_analysis` results of one curve, in the order of ``sizes``. Two
    uncertainties of the exponent, and its CI the envelope of both (docs/method.md, "Sweeps"):

    * ``ci_bootstrap``: the measurement noise of the members' features. It pairs the i-th bootstrap
      replicate of every member (members are independent runs, so their replicates are independent);
      replicates where a member's feature is undefined or not positive are left out.
    * ``ci_fit``: the scatter of the members about the power law (:func:`_fit_interval`). A few
      members measured precisely can still disagree with any one power law; the bootstrap alone
      would then give a narrow interval for an exponent the members do not share.
    """
    out = {}
    for key in ("location", "width", "height"):
        est = [m[key]["estimate"] for m in members]
        fit = power_law(sizes, est)
        reps = list(zip(*[m["replicates"][key] for m in members])) if members else []
        bs = [f[1] for f in (power_law(sizes, r) for r in reps) if f is not None]
        ci_b = _ci(bs, level) if len(bs) >= max(2, len(reps) // 2) else [None, None]
        ci_f = _fit_interval(sizes, est, level)
        both = ci_b[0] is not None and ci_f[0] is not None
        ci = [min(ci_b[0], ci_f[0]), max(ci_b[1], ci_f[1])] if both else [None, None]
        out[key] = {"values": est, "prefactor": fit[0] if fit else None,
                    "exponent": fit[1] if fit else None, "ci": ci, "ci_bootstrap": ci_b, "ci_fit": ci_f,
                    "n_replicates": len(bs)}
    return out


def scaling_verdict(scaling: dict, members: Sequence[dict], margin: float = WIDTH_EXPONENT_MARGIN) -> dict:
    """Transition-like, crossover or inconclusive, from the width exponent (docs/method.md).

    * "sharpens with size (transition-like)": the width exponent's CI lies below 0;
    * "does not sharpen (crossover)": its CI lies above ``-margin`` (any shrinking is smaller
      than the equivalence margin) - said only when the widths are resolved by the checkpoints;
    * "inconclusive" otherwise: fewer than 3 members, an undefined exponent, a CI across the
      margin, or changes narrower than the checkpoint spacing (the width is then only bounded).
    """
    w = scaling["width"]
    ci = w["ci"]
    n = len(members)
    why = None
    if n < 3:
        why = f"{n} members; at least 3 are needed to fit an exponent with a CI"
    elif w["exponent"] is None or ci[0] is None:
        why = "the width of the change is undefined in some members or bootstrap replicates"
    elif ci[1] < 0:
        return {"verdict": "sharpens with size (transition-like)", "margin": margin,
                "reason": f"width exponent {w['exponent']:.3g}, 95% CI [{ci[0]:.3g}, {ci[1]:.3g}] below 0"}
    elif not all(m.get("resolved") for m in members):
        why = ("the change is narrower than the checkpoint spacing in some members, so its width is "
               "only bounded; a denser schedule is needed")
    elif ci[0] > -margin:
        return {"verdict": "does not sharpen (crossover)", "margin": margin,
                "reason": f"width exponent {w['exponent']:.3g}, 95% CI [{ci[0]:.3g}, {ci[1]:.3g}] "
                          f"above the equivalence margin -{margin}"}
    else:
        why = (f"width exponent {w['exponent']:.3g}, 95% CI [{ci[0]:.3g}, {ci[1]:.3g}] neither below 0 "
               f"nor above -{margin}")
    return {"verdict": "inconclusive", "margin": margin, "reason": why}
