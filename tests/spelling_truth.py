"""Synthetic truth for the spelling verdict rules, vectorised over replicates.

A *replicate* is one simulated training: ``len(rates)`` checkpoints, each with ``n`` fresh samples
of ``L`` = 112 counted characters (independent samples at every checkpoint, as in a run). Words
have geometric lengths; their starts are regular (a word, a space or two: a sub-Poissonian word
total, as in generated text) or uniform with a Poisson word total (``poisson=True``) or a
binomial one of Fano factor ``poisson`` (a float below 1). The log-odds of a
misspelling is ``offset + 0.2 (min(length, 12) - 3) + slope * start / L + sigma * u_i`` with a
per-sample propensity ``u_i ~ N(0, 1)``, plus ``markov`` after a misspelled word (a cascade); a
``refractory`` factor multiplies the probability after a misspelled word (anti-clustering). The
offset of each checkpoint is set so that the error rate follows ``rates``.

`simulate` returns, per replicate, the checkpoint dicts that `spelling_claims` reads, with the
closed-form reference standing in for the permutation null of the counts (they agree on data
without clustering: tests/test_analysis_spelling.py) and the cascade's within-sample,
within-position permutation null run for all replicates at once with ``n_perm`` permutations
(`spelling.cascade_null` with ``block``). The per-checkpoint numbers are those of
`spelling.analyze_words` without the BCa intervals (which no rule reads).

``python tests/spelling_truth.py [replicates [scenario ...]]`` prints the verdict frequencies of
every rule at the paper run's sizes (14 checkpoints, 1000 samples, error rate 0.92 -> 0.057) for
the scenarios of `scenarios` (all, or those numbered); docs/method.md quotes them.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import expit

from gptwaves.analysis import claims as cl
from gptwaves.analysis import spelling as sp
from gptwaves.analysis.spelling_claims import spelling_claims

L = 112


@dataclass(frozen=True)
class Truth:
    """Error model of one checkpoint (see the module docstring)."""

    rate: float
    slope: float = -2.0
    sigma: float = 0.0
    markov: float = 0.0
    refractory: float = 1.0


def paper_rates(n_ck: int = 14, first: float = 0.92, last: float = 0.057) -> list[float]:
    """Error rates falling geometrically in the odds from ``first`` to ``last``."""
    lo, hi = math.log(first / (1 - first)), math.log(last / (1 - last))
    return [float(expit(x)) for x in np.linspace(lo, hi, n_ck)]


def _layout(rng, R, n, poisson):
    K = 40  # word slots: more than 40 words in 112 characters essentially never happen
    lens = rng.geometric(0.3, (R, n, K))
    if poisson:  # random starts; word total Poisson (poisson is True) or binomial with F = poisson
        f = 1.0 if poisson is True else float(poisson)
        n_w = (rng.poisson(20, (R, n, 1)) if f >= 1 else
               rng.binomial(int(round(20 / (1 - f))), 1 - f, (R, n, 1)))
        u = np.where(np.arange(K) < n_w, rng.random((R, n, K)), np.inf)
        u.sort(axis=2)
        valid = np.isfinite(u)
        starts = np.where(valid, np.floor(np.where(valid, u, 0) * L), L).astype(np.int64)
    else:
        step = lens + 1 + (rng.random((R, n, K)) < 0.2)
        starts = np.cumsum(step, axis=2) - step
        valid = starts < L
    return lens, starts, valid


def _errors(rng, lens, starts, valid, offset, t: Truth):
    R, n, K = lens.shape
    z = offset + 0.2 * (np.minimum(lens, 12) - 3) + t.slope * starts / L
    if t.sigma:
        z = z + t.sigma * rng.normal(size=(R, n, 1))
    u = rng.random(lens.shape)
    if not t.markov and t.refractory == 1.0:
        return (u < expit(z)) & valid
    mis = np.zeros(lens.shape, dtype=bool)
    prev = np.zeros((R, n), dtype=bool)
    for k in range(K):
        p = expit(z[:, :, k] + t.markov * prev)
        p = np.where(prev, p * t.refractory, p)
        prev = (u[:, :, k] < p) & valid[:, :, k]
        mis[:, :, k] = prev
    return mis


def _offset(t: Truth, poisson: bool) -> float:
    """Log-odds offset giving about the error rate ``t.rate`` for independent errors with this
    length, position and propensity structure (a cascade or refractory effect changes the
    rate a little)."""
    rng = np.random.default_rng(12345)
    lens, starts, valid = _layout(rng, 1, 2000, poisson)
    z = 0.2 * (np.minimum(lens, 12) - 3) + t.slope * starts / L
    if t.sigma:
        z = z + t.sigma * rng.normal(size=(1, 2000, 1))
    z = z[valid]
    lo, hi = -15.0, 15.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expit(z + mid).mean() < t.rate else (lo, mid)
    return (lo + hi) / 2


_OFFSETS: dict = {}


def _checkpoint(rng, R, n, t: Truth, poisson, n_perm, seed):
    """Per-replicate stats dicts of one checkpoint."""
    key = (t, poisson)
    if key not in _OFFSETS:
        _OFFSETS[key] = _offset(t, poisson)
    lens, starts, valid = _layout(rng, R, n, poisson)
    mis = _errors(rng, lens, starts, valid, _OFFSETS[key], t)
    r_idx, i_idx, _ = np.nonzero(valid)
    g = r_idx * n + i_idx  # global sample index (replicate-major, text order inside)
    st, ln, ms = starts[valid], lens[valid], mis[valid]
    n_w = valid.sum(axis=2).astype(float)
    k_m = mis.sum(axis=2).astype(float)
    # closed-form reference with strata length x position, per replicate
    strat = sp.strata(st, ln)
    ns = int(strat.max()) + 1
    rk = r_idx * ns + strat
    with np.errstate(invalid="ignore", divide="ignore"):
        p_s = np.bincount(rk, weights=ms, minlength=R * ns) / np.bincount(rk, minlength=R * ns)
    pij = np.nan_to_num(p_s)[rk]
    S = np.bincount(g, weights=pij, minlength=R * n).reshape(R, n)
    V = np.bincount(g, weights=pij * (1 - pij), minlength=R * n).reshape(R, n)
    out = [dict() for _ in range(R)]
    for name, k, Sx in (("correct", n_w - k_m, n_w - S), ("misspelled", k_m, S)):
        mean, var = k.mean(axis=1), k.var(axis=1, ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            F = var / mean
            Fref = (V.mean(axis=1) + Sx.var(axis=1, ddof=1)) / Sx.mean(axis=1)
        D = (n - 1) * F
        p = np.minimum(1.0, 2 * np.minimum(stats.chi2.cdf(D, n - 1), stats.chi2.sf(D, n - 1)))
        se_f = sp.log_fano_se(k)
        se_x = sp.log_excess_se(k, Sx, V)
        rr, rr_se = sp.residual_ratio(k, Sx, V)
        for r in range(R):
            ok = bool(np.isfinite(F[r]) and mean[r] > 0)
            verdict = ("undefined" if not ok else "sub-Poissonian" if p[r] < 0.05 and F[r] < 1
                       else "super-Poissonian" if p[r] < 0.05 and F[r] > 1 else "Poissonian")
            out[r][name] = {"fano": float(F[r]) if ok else None, "p_value": float(p[r]) if ok else None,
                            "verdict": verdict, "log_se": _f(se_f[r])}
            out[r].setdefault("decomposition", {})[name] = {
                "fano": float(F[r]) if ok else None, "fano_ref": _f(Fref[r]), "null_median": None,
                "log_excess_se": _f(se_x[r]), "z": None, "p_value": None, "residual_ratio": _f(rr[r]),
                "log_residual_se": _f(rr_se[r])}
            out[r].setdefault("counts", {})[name] = k[r]
    # cascade RR against the within-sample, within-position null (all replicates at once)
    same = g[1:] == g[:-1]
    prev, cur, rp = ms[:-1][same], ms[1:][same], r_idx[1:][same]
    cnt = [np.bincount(rp, weights=w, minlength=R) for w in (prev & cur, prev, ~prev & cur, ~prev)]
    rr = sp._rr(*cnt)
    if n_perm:
        null = sp.cascade_null(g, ms, R * n, n_perm, seed, word_start=st, block=np.repeat(np.arange(R), n),
                               max_chunk_elems=32_000_000)
    for r in range(R):
        cas = {"rr": _f(rr[r]), "null_median": None, "log_null_sd": None, "p_value": None, "rr_ci": [None, None]}
        if n_perm and cas["rr"]:
            s = sp._null_summary(float(rr[r]), null[:, r], math.nan, 0.05, "cascade", "anti-cascade")
            cas.update(null_median=_f(s["null_median"]), log_null_sd=_f(s["log_null_sd"]), p_value=_f(s["p_value"]))
        out[r]["cascade"] = cas
    return out


def _f(v):
    return float(v) if v is not None and np.isfinite(v) else None


def simulate(truths, R: int, n: int, seed: int, poisson: bool = False, n_perm: int = 40,
             iterations=None) -> list[list[dict]]:
    """``R`` replicates of a training whose checkpoints follow ``truths`` (one `Truth` each).

    Returns one list of ``{"iteration", "stats"}`` checkpoint dicts per replicate. ``n_perm = 0``
    skips the cascade null (claim 5 then inconclusive).
    """
    its = iterations or [int(round(x)) for x in np.geomspace(10, 5000, len(truths) - 1)]
    its = [0, *its] if iterations is None else its
    rng = np.random.default_rng(seed)
    per_ck = [_checkpoint(rng, R, n, t, poisson, n_perm, seed + 7919 * j) for j, t in enumerate(truths)]
    return [[{"iteration": its[j], "stats": per_ck[j][r]} for j in range(len(truths))] for r in range(R)]


KEYS = ("2a", "2b", "3a", "3b", "5a", "5b")  # claim and level: a = as stated, b = beyond the null


def verdicts(reps) -> list[dict]:
    """Per replicate, the verdict of every rule: ``{"2a": ..., "2b": ..., ..., "5b": ...}``."""
    out = []
    for cks in reps:
        its = [c["iteration"] for c in cks]
        crossing = sp.crossing(its, [c["stats"]["counts"]["correct"] for c in cks], n_boot=0)
        cs = {c["id"]: c for c in spelling_claims(cks, crossing=crossing)}
        out.append({f"{k}{p}": cs[k][part]["verdict"] for k in (2, 3, 5)
                    for p, part in (("a", "as_stated"), ("b", "beyond_null"))})
    return out


def tally(vs, key: str) -> dict:
    """How often each verdict came out for rule ``key`` (e.g. "2b")."""
    return {v: sum(x[key] == v for x in vs) for v in cl.VERDICTS}


# scenarios at the paper's sizes: (description, truths, layout, whether the cascade null is needed)
def scenarios(rates):
    n = len(rates)
    half = n // 2
    ramp = np.linspace(0, 1, n)
    return [
        ("independent, position-dependent rate", [Truth(r) for r in rates], False, True),
        ("per-sample propensity SD 0.5, constant", [Truth(r, sigma=0.5) for r in rates], False, False),
        ("refractory RR 0.24 from the middle on", [Truth(r, refractory=1.0 if j < half else 0.24)
                                                 for j, r in enumerate(rates)], False, False),
        ("propensity SD 0 -> 1 (clustering builds up)", [Truth(r, sigma=float(s)) for r, s in zip(rates, ramp)],
         False, False),
        ("Markov cascade +1 log-odds, first half only", [Truth(r, markov=1.0 if j < half else 0.0)
                                                         for j, r in enumerate(rates)], False, True),
        ("Markov cascade +1 log-odds, constant", [Truth(r, markov=1.0) for r in rates], False, True),
    ]


def main(R: int = 100, only: list[int] | None = None) -> None:  # pragma: no cover - a measurement
    rates = paper_rates()
    print(f"paper sizes: {len(rates)} checkpoints x 1000 samples, error rate {rates[0]:.2f} -> {rates[-1]:.3f}, "
          f"{R} replicates; cells: supported / not supported / inconclusive (claim 5 only where the cascade "
          f"null was run)")
    for j, (name, truths, poisson, cascade) in enumerate(scenarios(rates)):
        if only and j not in only:
            continue
        reps = simulate(truths, R, 1000, seed=100 * j, poisson=poisson, n_perm=30 if cascade else 0)
        vs = verdicts(reps)
        cells = []
        for key in KEYS:
            t = tally(vs, key)
            cells.append(f"{key} {t[cl.SUPPORTED]}/{t[cl.NOT_SUPPORTED]}/{t[cl.INCONCLUSIVE]}")
        print(f"{name:48s} " + "  ".join(cells), flush=True)


if __name__ == "__main__":  # pragma: no cover
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100, [int(x) for x in sys.argv[2:]] or None)
