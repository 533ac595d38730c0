"""Calibration of the verdict rules: their size and power at a run's own sizes (docs/method.md, Calibration).

Pure functions (numpy / scipy only, no I/O): the synthetic truths a rule is simulated on, built
from a run's own tables, and the Monte Carlo summaries of the verdicts the rules give on them
(docs/method.md, "Calibration"). The rules themselves are never copied here: the calibration
stage (`gptwaves.stages.calibration`) passes every synthetic run through the same verdict
functions the summary uses.

Spelling truth
--------------
A checkpoint's word table (sample, start offset, length of every counted word) is kept as it
is; only the misspelling flags are drawn, with the base log-odds of each word
``logit p(length bin, position bin)`` taken from the run's own flags at that checkpoint
(`base_logits`), and one of

* ``independent``: flags independent given length and position;
* ``propensity``: a per-sample offset ``u_i ~ N(0, s^2)`` added to the log-odds of every word of
  sample ``i`` (heterogeneity: clustering of errors in some samples);
* ``markov``: ``+s`` on the log-odds of a word whose predecessor in the same sample is
  misspelled (a cascade);
* ``refractory``: the probability of a word whose predecessor is misspelled multiplied by
  ``s`` (a relative risk ``s`` < 1: errors avoid each other).

Every generator draws ``R`` replicates at once (`simulate_flags`, shape ``(R, W)``); the
sequential kinds loop over the rank of a word within its sample (at most the longest sample's
word count), never over words or replicates.

Coherence truth
---------------
Stationary unit-variance AR(1) channels with a checkpoint's recorded per-channel lag-1
coefficients (`ar1_waves`), optionally with a shared gain (every channel of a (sample, step)
multiplied by the same log-normal factor, `shared_gain`), a common AR(1) factor of pairwise
correlation ``rho`` (`add_factor`; `rho_for_excess` picks ``rho`` so that the expected excess
of mean |R| over the independent floor is a given value), or a response to the next
character being a space in a few channels (`add_space_response`, Cohen's d ``d`` per channel).

Monte Carlo summaries
---------------------
`mc_rate`: a rate ``k / n`` with its Clopper-Pearson (exact) or Wilson interval;
`min_detectable`: the smallest effect with power >= 80 %, interpolated linearly between the
simulated strengths (None with a reason when no simulated strength reaches it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, special, stats

__all__ = ["POSITION_BINS", "strength_profile", "base_logits", "simulate_flags", "ar1_waves", "shared_gain",
           "add_factor", "factor_loading", "factor_series", "FACTOR_PHI", "rho_for_excess", "floor_sigma",
           "add_space_response", "mc_rate", "min_detectable", "calibration_text", "excess_of_rho"]

#: Position bins of the base error rate: the counted characters split into this many equal parts.
POSITION_BINS = 4


def strength_profile(iterations: Sequence[int], strength: float, shape: str) -> np.ndarray:
    """Strength of a planted effect at each checkpoint.

    ``shape`` is ``"constant"`` (``strength`` everywhere), ``"rise"`` (0 at the first checkpoint
    to ``strength`` at the last, linear in ``log(1 + iteration)``) or ``"fall"`` (the mirror).
    """
    it = np.log1p(np.asarray(iterations, dtype=float))
    span = it[-1] - it[0] if it.size else 0.0
    frac = (it - it[0]) / span if span > 0 else np.ones_like(it)
    if shape == "constant":
        return np.full(it.shape, float(strength))
    if shape == "rise":
        return float(strength) * frac
    if shape == "fall":
        return float(strength) * (1.0 - frac)
    raise ValueError(f"unknown shape {shape!r}")


def base_logits(word_start, word_len, word_mis, length: int, length_bins: int = 12,
                position_bins: int = POSITION_BINS, eps: float = 1e-4) -> np.ndarray:
    """Log-odds of an error for every word, from the run's own flags: the error rate of its
    (length bin, position bin) cell, the cell pooled into its length bin when the cell has fewer
    than 20 words; rates are clipped to ``[eps, 1 - eps]``.

    Parameters
    ----------
    word_start, word_len, word_mis : array_like, shape (W,)
        Start offset in the counted characters, length and misspelling flag of every word.
    length : int
        Counted characters L per sample (the position bins split ``[0, L)``).

    Returns
    -------
    ndarray, shape (W,)
    """
    start = np.asarray(word_start, dtype=np.int64)
    lb = np.clip(np.asarray(word_len, dtype=np.int64), 1, length_bins) - 1
    mis = np.asarray(word_mis, dtype=bool)
    pb = np.clip(start * position_bins // max(int(length), 1), 0, position_bins - 1)
    cell = lb * position_bins + pb
    nc = np.bincount(cell, minlength=length_bins * position_bins)
    mc = np.bincount(cell[mis], minlength=length_bins * position_bins)
    nl = np.bincount(lb, minlength=length_bins)
    ml = np.bincount(lb[mis], minlength=length_bins)
    p_len = np.where(nl > 0, ml / np.maximum(nl, 1), mis.mean() if mis.size else 0.0)
    p_cell = np.where(nc >= 20, mc / np.maximum(nc, 1), np.repeat(p_len, position_bins))
    p = np.clip(p_cell[cell], eps, 1.0 - eps)
    return special.logit(p)


def simulate_flags(word_sample, base_logit, n_samples: int, replicates: int, rng: np.random.Generator, *,
                   kind: str = "independent", strength: float = 0.0) -> np.ndarray:
    """Misspelling flags of ``replicates`` synthetic copies of one checkpoint's word table.

    Parameters
    ----------
    word_sample : array_like of int, shape (W,)
        Sample of every word (non-decreasing; a sample's words in text order).
    base_logit : array_like of float, shape (W,)
        Log-odds of an error of every word without the effect (`base_logits`).
    n_samples : int
    replicates : int
    rng : numpy.random.Generator
    kind : {"independent", "propensity", "markov", "refractory"}
        See the module docstring; ``strength`` is the SD of the propensity, the log-odds step of
        the Markov cascade, or the relative risk of the refractory kind (1: none).

    Returns
    -------
    ndarray of bool, shape (replicates, W)
    """
    samp = np.asarray(word_sample, dtype=np.int64)
    base = np.asarray(base_logit, dtype=float)
    R, W = int(replicates), samp.size
    if kind not in ("independent", "propensity", "markov", "refractory"):
        raise ValueError(f"unknown kind {kind!r}")
    if kind == "independent" or (kind in ("propensity", "markov") and strength == 0) or \
            (kind == "refractory" and strength == 1):
        return rng.random((R, W)) < special.expit(base)[None, :]
    if kind == "propensity":
        u = rng.normal(0.0, float(strength), (R, int(n_samples)))
        return rng.random((R, W)) < special.expit(base[None, :] + u[:, samp])
    # sequential kinds: word k's probability depends on word k - 1 of its sample
    return _chained_flags(samp, base, R, rng, kind, float(strength))


def _chained_flags(samp: np.ndarray, base: np.ndarray, R: int, rng: np.random.Generator, kind: str,
                   strength: float) -> np.ndarray:
    """`simulate_flags` of the Markov and refractory kinds.

    The uniforms are drawn one rank of a word within its sample after another (all first words, then
    all second words, ...), and word k is misspelled when its uniform is below ``p1`` (after an
    error) or ``p0`` (otherwise). Without a loop over the words: with ``a = u < p0`` and ``b = u < p1``,
    a word where ``a == b`` (and every first word) takes ``a`` whatever came before, and each other
    word keeps (``b``) or flips (``a``) the previous outcome, so a word's flag is the flag of the last
    such reset before it, flipped once per flipping word in between.
    """
    W = samp.size
    first = np.flatnonzero(np.r_[True, samp[1:] != samp[:-1]]) if W else np.zeros(0, np.int64)
    rank = np.arange(W) - np.repeat(first, np.diff(np.r_[first, W]))  # samples are runs of `samp`
    small = np.int16 if rank.max(initial=0) < 2**15 else np.int64  # a radix sort for small ranks
    order = np.argsort(rank.astype(small), kind="stable")  # each rank's words in text order
    u = np.empty((R, W))
    if W:
        u[:, order] = np.concatenate([rng.random((R, n)) for n in np.bincount(rank)], axis=1)
    p0 = special.expit(base)
    p1 = special.expit(base + strength) if kind == "markov" else p0 * strength
    a, b = u < p0, u < p1
    reset = (a == b) | (rank == 0)
    flip = a & ~reset  # a and not b: the opposite of the previous outcome
    last = np.maximum.accumulate(np.where(reset, np.arange(W), 0), axis=1)  # the last reset so far
    rows = np.arange(R)[:, None]
    flips = np.cumsum(flip, axis=1)
    return a[rows, last] ^ ((flips - flips[rows, last]) % 2 == 1)


def ar1_waves(S: int, T: int, phi, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """Stationary unit-variance AR(1) channels, shape (S, T, C), channel c with coefficient ``phi[c]``
    (clipped to [-0.99, 0.99]); independent across samples and channels."""
    phi = np.clip(np.nan_to_num(np.asarray(phi, dtype=np.float64)), -0.99, 0.99).astype(dtype)
    C = phi.size
    x = rng.standard_normal((S, T, C), dtype=dtype)
    scale = np.sqrt(1.0 - phi * phi).astype(dtype)
    for t in range(1, T):
        x[:, t] *= scale
        x[:, t] += phi * x[:, t - 1]
    return x


def shared_gain(x: np.ndarray, sd: float, rng: np.random.Generator, phi: float = 0.9) -> np.ndarray:
    """Multiply every channel of each (sample, step) by one log-normal gain ``exp(sd g - sd^2)``,
    ``g`` a unit-variance AR(1) series over steps (coefficient ``phi``): every pair of channels
    keeps population correlation 0 (in place; returns ``x``)."""
    S, T = x.shape[:2]
    g = ar1_waves(S, T, [phi], rng, dtype=np.float64)[..., 0]
    x *= np.exp(float(sd) * g - float(sd) ** 2).astype(x.dtype)[..., None]
    return x


#: Lag-1 coefficient of the planted common factor (`add_factor`).
FACTOR_PHI = 0.9


def add_factor(x: np.ndarray, rho: float, rng: np.random.Generator, phi: float = FACTOR_PHI) -> np.ndarray:
    """Mix a common unit-variance AR(1) factor into every channel so that every pair has
    population correlation ``rho`` (``x <- (x + l f) / sqrt(1 + l^2)``, ``l`` = `factor_loading`,
    ``f`` = `factor_series`; in place; returns ``x``)."""
    if rho <= 0:
        return x
    lam = factor_loading(rho)
    f = factor_series(x.shape[0], x.shape[1], rng, x.dtype, phi)
    x += lam * f[..., None]
    x /= math.sqrt(1.0 + lam * lam)
    return x


def factor_loading(rho: float) -> float:
    """The loading ``l`` of `add_factor` that gives every pair of channels correlation ``rho``:
    ``l^2 = rho / (1 - rho)``."""
    return math.sqrt(rho / (1.0 - rho))


def factor_series(S: int, T: int, rng: np.random.Generator, dtype=np.float32, phi: float = FACTOR_PHI) -> np.ndarray:
    """The common factor of `add_factor`, shape (S, T): one unit-variance AR(1) series per sample."""
    return ar1_waves(S, T, [phi], rng, dtype=dtype)[..., 0]


def excess_of_rho(rho: float, sigma: float) -> float:
    """Expected ``E|rho + sigma Z| - E|sigma Z|`` (Z standard normal): the excess of mean |R| a
    pairwise correlation ``rho`` gives over the independent floor when the sampling SD of one
    correlation is ``sigma``."""
    if sigma <= 0:
        return abs(rho)
    m = abs(rho) / sigma
    folded = sigma * (math.sqrt(2 / math.pi) * math.exp(-m * m / 2) + m * (1 - 2 * stats.norm.cdf(-m)))
    return folded - sigma * math.sqrt(2 / math.pi)


def rho_for_excess(excess: float, sigma: float) -> float:
    """The pairwise correlation whose expected excess of mean |R| (`excess_of_rho`) is ``excess``."""
    if excess <= 0:
        return 0.0
    return float(optimize.brentq(lambda r: excess_of_rho(r, sigma) - excess, 0.0, 0.999))


def floor_sigma(phi, n_rows: int) -> float:
    """Sampling SD of the correlation of two independent AR(1) channels pooled over ``n_rows``
    steps (Bartlett: ``(1 + a b) / (1 - a b) / n``), root-mean-square over all pairs of ``phi``."""
    phi = np.clip(np.nan_to_num(np.asarray(phi, dtype=float)), -0.99, 0.99)
    ab = np.outer(phi, phi)
    v = (1 + ab) / (1 - ab) / max(int(n_rows), 1)
    iu = np.triu_indices(phi.size, 1)
    return float(np.sqrt(v[iu].mean())) if iu[0].size else float(np.sqrt(1.0 / max(int(n_rows), 1)))


def add_space_response(x: np.ndarray, next_space, d: float, channels: Sequence[int]) -> np.ndarray:
    """Add ``d`` (in units of the channel's SD, i.e. Cohen's d) to the given channels at every step
    whose next character is a space, centred over all steps (in place; returns ``x``)."""
    if d == 0 or not len(channels):
        return x
    ns = np.asarray(next_space, dtype=np.float32)
    resp = (ns - ns.mean()) * np.float32(d)
    x[:, :, list(channels)] += resp[..., None]
    return x


def mc_rate(k: int, n: int, ci: float = 0.95, method: str = "clopper-pearson") -> dict:
    """A Monte Carlo rate ``k / n`` with its binomial interval.

    Parameters
    ----------
    k, n : int
        Replicates with the event, replicates simulated.
    ci : float
        Confidence level.
    method : {"clopper-pearson", "wilson"}
        Exact (conservative) or Wilson score interval (`scipy.stats.binomtest`).

    Returns
    -------
    dict
        ``k``, ``n``, ``rate`` (None when n = 0), ``ci`` [lo, hi], ``method``.
    """
    k, n = int(k), int(n)
    if n <= 0:
        return {"k": k, "n": n, "rate": None, "ci": [None, None], "method": method}
    meth = {"clopper-pearson": "exact", "wilson": "wilson"}[method]
    lo, hi = stats.binomtest(k, n).proportion_ci(confidence_level=ci, method=meth)
    return {"k": k, "n": n, "rate": k / n, "ci": [float(lo), float(hi)], "method": method}


def min_detectable(strengths: Sequence[float], powers: Sequence[float], target: float = 0.8,
                   stronger: str = "larger") -> dict:
    """Smallest simulated effect strength with power >= ``target``, interpolated linearly.

    Parameters
    ----------
    strengths, powers : sequence of float
        Simulated strengths and their power (any order).
    target : float
    stronger : {"larger", "smaller"}
        Whether larger or smaller strengths are stronger effects (a relative risk below 1 is
        stronger when smaller).

    Returns
    -------
    dict
        ``effect`` (float or None), ``target``, ``reason`` (None, or why no effect is given).
    """
    pairs = sorted(zip(strengths, powers), key=lambda p: p[0], reverse=(stronger == "smaller"))
    pairs = [(float(s), float(p)) for s, p in pairs if p is not None]
    if not pairs:
        return {"effect": None, "target": target, "reason": "no effect simulated"}
    if pairs[0][1] >= target:
        return {"effect": pairs[0][0], "target": target,
                "reason": "already reached at the weakest simulated effect (an upper bound)"}
    for (s0, p0), (s1, p1) in zip(pairs, pairs[1:]):
        if p1 >= target:
            e = s0 + (target - p0) / (p1 - p0) * (s1 - s0) if p1 > p0 else s1
            return {"effect": float(e), "target": target, "reason": None}
    return {"effect": None, "target": target,
            "reason": f"not reached at the strongest simulated effect ({pairs[-1][0]:g}: power {pairs[-1][1]:.2f})"}


def _pct(x) -> str:
    if x is None:
        return "n/a"
    v = 100.0 * float(x)
    if 0 < v < 0.1:
        return "under 0.1%"
    return f"{v:.0f}%" if v >= 1 or v == 0 else f"{v:.1f}%"


def calibration_text(level: dict, what: str, at: str = "") -> str:
    """One sentence for a reader next to a verdict: the power against the strongest planted effect,
    the minimum detectable effect, and the worst false-"supported" rate, with Monte Carlo CIs.

    ``level`` is one level entry of calibration.json (``power``, ``worst_false_supported``,
    ``min_detectable``); ``what`` names the planted effect, ``at`` where it is planted.
    """
    parts = []
    power = [p for p in level.get("power") or [] if p.get("rate") is not None]
    if power:
        p = power[-1]
        lo, hi = p["ci"]
        parts.append(f"Calibrated on synthetic runs of this run's sizes: this test says \"supported\" for a "
                     f"planted {what} of {p['strength']:g} ({at}) in {_pct(p['rate'])} of {p['n']} runs "
                     f"(95% CI {_pct(lo)} to {_pct(hi)})")
        mde = level.get("min_detectable") or {}
        if mde.get("effect") is not None and mde.get("reason") is None:
            parts.append(f"80% power is reached at {mde['effect']:.3g}")
        elif mde.get("effect") is not None:
            parts.append(f"80% power already at the weakest simulated effect, {mde['effect']:.3g}")
        elif mde.get("reason"):
            parts.append(f"80% power: {mde['reason']}")
    w = level.get("worst_false_supported")
    if w and w.get("rate") is not None:
        lo, hi = w["ci"]
        parts.append(f"with no effect it says \"supported\" in {_pct(w['rate'])} of {w['n']} runs "
                     f"(worst no-effect case: {w['scenario']}; 95% CI {_pct(lo)} to {_pct(hi)})")
    return ("; ".join(parts) + ".") if parts else "Not calibrated."
