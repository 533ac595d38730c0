"""Verdicts on the spelling claims 2, 3 and 5 of the abstract (docs/method.md, Findings).

Pure functions on the per-checkpoint dicts of `gptwaves.analysis.spelling.analyze`. Each claim
gets two verdicts (`claims.claim`): **as stated** (what the abstract says, measured) and
**beyond the null** (still true once the length- and position-conditioned independent-error
reference and the permutation nulls are taken out). Every rule meets three standards:

* **size**: without the effect, "supported" at most at the level ``alpha``;
* **power before "not supported"**: "not supported" only when the effect is shown absent or
  opposite (its CI excludes the claimed direction, or lies inside the equivalence margin
  `EQUIVALENCE`: a change of at most 10% in F / null median); a test that could not have seen
  the effect says "inconclusive" and states its minimum detectable effect (80% power, `POWER`);
* **the claim's own shape**: a claim about a change is judged on the change from the first to
  the last checkpoint (independent samples: the SEs add in quadrature), with the
  across-checkpoint tests reported beside it; a claim judged over many checkpoints controls
  multiplicity (Holm).

Per checkpoint and count the rules read the *excess* ``e = F / null median`` (the closed-form
F_ref when the permutation null is absent), its SE on the log scale (`spelling.log_excess_se`)
and ``z = log e / SD of the log null``; for the cascade ``x = log(RR / null median)`` with the
null SD of log RR as its SE and ``z = x / SD``. A CI is ``log value +- z_(1 - alpha/2) SE``.

Rules (``alpha`` default 0.05; "first" / "last" = first / last checkpoint with the quantity
defined)
------------------------------------------------------------------------------------------
Claim 2, "correct spellings go from Poissonian to sub-Poissonian":

* as stated: `supported` when the first checkpoint's correct count is not sub-Poissonian, the
  last is significantly sub-Poissonian (index-of-dispersion test) and the crossing of F_correct
  through 1 is reported (`spelling.crossing`); `not supported` when the first is already
  significantly sub-Poissonian, or the last F's CI excludes F < 1 or lies inside the margin
  around 1; `inconclusive` otherwise, with the smallest sub-Poissonian F the last checkpoint
  could detect.
* beyond the null: the correct-word excess falls from the first to the last checkpoint and ends
  below the null, and the residual variance ratio r (`spelling.residual_ratio`: the variance of
  the count's deviation from its expectation over the binomial variance, which the word total
  does not move) falls too: `supported` when the CIs of ``log e_last - log e_first`` and of
  ``log r_last - log r_first`` both lie below 0 and ``e_last < 1``; `not supported` when either
  CI lies at or above 0 or inside the margin, or when the excess falls but the last one's CI lies
  above 1 (less clustered, not sub-Poissonian); `inconclusive` otherwise (minimum detectable
  change). The residual check keeps a clustering that is constant in the log-odds from passing
  as a change: F / null median moves with the share of the word-total variance in F as the error
  rate changes, r much less.
  Beside it: the number of checkpoints significant in each direction with its binomial tail,
  and Stouffer's combined z (`across_checkpoints`).

Claim 3, "misspellings show the opposite trend":

* as stated: `supported` when F_misspelled rises with training (`claims.trend`: Spearman against
  log(1 + iteration), p < alpha, shape "rising"); `not supported` when it does not and the CI of
  the change ``log F_last - log F_first`` lies at or below 0 or inside the margin; otherwise
  `inconclusive`. The text says that thinning alone raises F_misspelled as errors become rare,
  so this verdict says nothing about coherence.
* beyond the null: as claim 2 beyond, with the misspelled excess and r rising and the excess
  ending above 1.

Claim 5, "no cascade of defects once trained":

* as stated: `supported` when |z| of log RR falls towards 0 with training (`claims.trend`:
  Spearman rho < 0 with p < alpha, an early peak described but not disqualifying); `not supported`
  when it rises significantly; `inconclusive` otherwise (with the smallest Spearman rho the number
  of checkpoints can detect).
* beyond the null: `supported` when some earlier checkpoint has a cascade significant after Holm
  over the earlier checkpoints (one-sided, Gaussian tail of z) and the last checkpoint has no
  significant cascade and its CI lies entirely below that earlier checkpoint's CI; `not
  supported` when the last checkpoint has a significant cascade, or when no earlier checkpoint
  is significant and every earlier CI lies below the margin (no cascade of more than 10% ever
  existed); `inconclusive` otherwise (minimum detectable RR / null median at an earlier
  checkpoint under Holm).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist

from scipy import stats

from ..schema import CLAIM_TITLES
from . import claims as cl
from . import spelling as sp

__all__ = ["EQUIVALENCE", "POWER", "spelling_claims", "claim_correct", "claim_misspelled", "claim_cascade",
           "excess_rows", "cascade_rows", "across_checkpoints", "change", "holm"]

#: Equivalence margin on the log scale: a change of at most 10% in F / null median (or RR / null
#: median) counts as no change (docs/method.md, Findings).
EQUIVALENCE = math.log(1.1)

#: Power at which the minimum detectable effect is stated.
POWER = 0.8


def _fmt(v, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}g}"


def _get(d: Mapping | None, *keys):
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _nb(ck: Mapping) -> int:
    n = _get(ck, "stats", "n_boot")
    return 2000 if n is None else int(n)


_NORMAL = NormalDist()


def _zc(alpha: float) -> float:
    return _NORMAL.inv_cdf(1 - alpha / 2)


def _mde(se: float | None, alpha: float, crit: float | None = None) -> float | None:
    """Smallest effect (log scale) found with probability `POWER` by a test with this SE."""
    if se is None:
        return None
    return ((_zc(alpha) if crit is None else crit) + _NORMAL.inv_cdf(POWER)) * se


# ---------------------------------------------------------------------------
# Per-checkpoint rows
# ---------------------------------------------------------------------------
def excess_rows(checkpoints: Sequence[Mapping], which: str) -> list[dict]:
    """Per checkpoint: the ``which`` ("correct" / "misspelled") excess over the null.

    Returns
    -------
    list of dict
        ``iteration``, ``log_excess`` (log F / null median; log F / F_ref without the null),
        ``se`` (its SE), ``z`` (against the null; log excess / SE without the null),
        ``p_value`` (two-sided permutation; Gaussian from z without the null), ``fano``,
        ``null_median``, ``fano_ref``, ``residual_ratio`` (`spelling.residual_ratio`) with
        ``log_residual`` and ``residual_se``; None where undefined.
    """
    out = []
    for c in checkpoints:
        d = _get(c, "stats", "decomposition", which) or {}
        f, med, ref = _num(d.get("fano")), _num(d.get("null_median")), _num(d.get("fano_ref"))
        se = _num(d.get("log_excess_se"))
        z, p = _num(d.get("z")), _num(d.get("p_value"))
        base = med if med and med > 0 else ref
        lx = math.log(f / base) if f and f > 0 and base and base > 0 else None
        if not (med and med > 0) and lx is not None and se:
            z = lx / se
            p = 2 * _NORMAL.cdf(-abs(z))
        rr, rse = _num(d.get("residual_ratio")), _num(d.get("log_residual_se"))
        out.append({"iteration": c.get("iteration"), "log_excess": lx, "se": se, "z": z, "p_value": p,
                    "fano": f, "null_median": med, "fano_ref": ref, "residual_ratio": rr,
                    "log_residual": math.log(rr) if rr and rr > 0 else None, "residual_se": rse})
    return out


def cascade_rows(checkpoints: Sequence[Mapping]) -> list[dict]:
    """Per checkpoint: ``iteration``, ``rr``, ``null_median``, ``log_excess`` = log(RR / null
    median), ``se`` (null SD of log RR), ``z``, ``p_value`` (two-sided permutation), ``rr_ci``
    (BCa), ``reason``."""
    out = []
    for c in checkpoints:
        cas = _get(c, "stats", "cascade") or {}
        rr, med, sd = _num(cas.get("rr")), _num(cas.get("null_median")), _num(cas.get("log_null_sd"))
        lx = math.log(rr / med) if rr and med and rr > 0 and med > 0 else None
        z = lx / sd if lx is not None and sd else None
        out.append({"iteration": c.get("iteration"), "rr": rr, "null_median": med, "log_excess": lx,
                    "se": sd, "z": z, "p_value": _num(cas.get("p_value")), "rr_ci": cas.get("rr_ci"),
                    "reason": cas.get("reason")})
    return out


# ---------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------
def across_checkpoints(rows: Sequence[Mapping], alpha: float = 0.05) -> dict:
    """How many checkpoints are significant in each direction, and a combined test.

    A checkpoint is significant upwards (downwards) when its z exceeds z_(1 - alpha/2) (is below
    its negative): the Gaussian tail of the null, so that the number of permutations does not
    floor the p-values. The checkpoints' samples are independent, so under a calibrated null the
    number significant upwards (downwards) is Binomial(n, alpha / 2) and in either direction
    Binomial(n, alpha). Stouffer's combined z = sum z / sqrt(n) tests "beyond the null at any
    stage of training" in one direction (two-sided p).

    Parameters
    ----------
    rows : sequence of dict
        With ``z`` (None: left out).

    Returns
    -------
    dict
        ``n``, ``n_up``, ``n_down``, ``p_up``, ``p_down``, ``p_any`` (binomial upper tails:
        P(at least as many)), ``stouffer_z``, ``stouffer_p``, ``alpha``.
    """
    rs = [r for r in rows if r.get("z") is not None]
    n = len(rs)
    zc = _zc(alpha)  # Gaussian tail of z: a permutation count cannot floor the p-values
    up = sum(r["z"] > zc for r in rs)
    down = sum(r["z"] < -zc for r in rs)
    out = {"n": n, "n_up": up, "n_down": down, "p_up": None, "p_down": None, "p_any": None,
           "stouffer_z": None, "stouffer_p": None, "alpha": alpha}
    if n:
        out.update(p_up=float(stats.binom.sf(up - 1, n, alpha / 2)),
                   p_down=float(stats.binom.sf(down - 1, n, alpha / 2)),
                   p_any=float(stats.binom.sf(up + down - 1, n, alpha)))
        zs = sum(r["z"] for r in rs) / math.sqrt(n)
        out.update(stouffer_z=zs, stouffer_p=2 * _NORMAL.cdf(-abs(zs)))
    return out


def across_text(name: str, a: Mapping) -> str:
    """One sentence for an `across_checkpoints` result."""
    if not a.get("n"):
        return f"No checkpoint has a defined {name}."
    return (f"Checkpoints significantly above the null: {a['n_up']} of {a['n']}, below: {a['n_down']} "
            f"(binomial tails p = {_fmt(a['p_up'], 2)} and p = {_fmt(a['p_down'], 2)}; "
            f"{a['n_up'] + a['n_down']} in either direction, p = {_fmt(a['p_any'], 2)}); Stouffer's combined "
            f"z = {a['stouffer_z']:+.2f} (p = {_fmt(a['stouffer_p'], 2)}).")


def change(first: Mapping, last: Mapping, want: str, alpha: float = 0.05) -> dict:
    """Change of a log quantity from the first to the last checkpoint, judged by the three standards.

    Parameters
    ----------
    first, last : dict
        ``log_excess`` (the log quantity) and ``se``; independent samples.
    want : {"rise", "fall"}
        The claimed direction.

    Returns
    -------
    dict
        ``verdict``, ``diff`` (last - first), ``se``, ``ci`` [lo, hi], ``ratio`` = exp(diff) and
        ``ratio_ci``, ``mde_ratio`` (the change by this factor in the claimed direction is found
        with probability `POWER`), ``reason`` (why the verdict is what it is, in words).
    """
    a, b = first.get("log_excess"), last.get("log_excess")
    sa, sb = first.get("se"), last.get("se")
    out = {"verdict": cl.INCONCLUSIVE, "diff": None, "se": None, "ci": [None, None], "ratio": None,
           "ratio_ci": [None, None], "mde_ratio": None, "reason": "undefined at the first or last checkpoint"}
    if a is None or b is None or not sa or not sb:
        return out
    d, se = b - a, math.hypot(sa, sb)
    lo, hi = d - _zc(alpha) * se, d + _zc(alpha) * se
    sign = 1.0 if want == "rise" else -1.0
    mde = _mde(se, alpha)
    out.update(diff=d, se=se, ci=[lo, hi], ratio=math.exp(d), ratio_ci=[math.exp(lo), math.exp(hi)],
               mde_ratio=math.exp(sign * mde))
    toward = lo > 0 if want == "rise" else hi < 0
    against = hi <= 0 if want == "rise" else lo >= 0
    if toward:
        out.update(verdict=cl.SUPPORTED,
                   reason=f"the CI of the change lies {'above' if want == 'rise' else 'below'} no change")
    elif against:
        out.update(verdict=cl.NOT_SUPPORTED, reason="the CI of the change excludes the claimed direction")
    elif -EQUIVALENCE < lo and hi < EQUIVALENCE:
        out.update(verdict=cl.NOT_SUPPORTED, reason="the CI of the change lies inside the 10% equivalence margin")
    else:
        out.update(reason=(f"the CI of the change includes no change and reaches beyond the 10% margin; the smallest "
                           f"change this run could detect (80% power) is a factor of {out['mde_ratio']:.3g}"))
    return out


def change_text(name: str, ch: Mapping, first: Mapping, last: Mapping) -> str:
    if ch.get("diff") is None:
        return f"The change of {name} from the first to the last checkpoint is undefined."
    ci = ch["ratio_ci"]
    return (f"{name} changes by a factor of {ch['ratio']:.3g} (95% CI {ci[0]:.3g} to {ci[1]:.3g}) from iteration "
            f"{first['iteration']} to iteration {last['iteration']}: {ch['reason']}.")


def holm(p_values: Sequence[float | None], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family-wise level ``alpha``
    (None: not tested, never rejected)."""
    idx = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])
    m = len(idx)
    rej = [False] * len(p_values)
    for r, i in enumerate(idx):
        if p_values[i] <= alpha / (m - r):
            rej[i] = True
        else:
            break
    return rej


# ---------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------
def _excess_beyond(rows: Sequence[Mapping], alpha: float, want: str, name: str) -> dict:
    """Beyond-the-null verdict of claims 2 and 3: the change of the excess, first -> last."""
    defined = [r for r in rows if r["log_excess"] is not None and r["se"]]
    across = across_checkpoints(rows, alpha)
    nums = {"per_checkpoint": list(rows), "across": across, "change": None, "first": None, "last": None}
    if len(defined) < 2:
        return {"verdict": cl.INCONCLUSIVE, "numbers": nums,
                "text": f"Fewer than two checkpoints have the {name} excess over the null defined."}
    first, last = defined[0], defined[-1]
    ch = change(first, last, want, alpha)
    res = [{"log_excess": r["log_residual"], "se": r["residual_se"], "iteration": r["iteration"]}
           for r in (first, last)]
    ch_r = change(res[0], res[1], want, alpha)
    nums.update(change=ch, residual_change=ch_r, first=first, last=last)
    # the claim is a change *to* the claimed side of the null: the last excess must end there
    side = "below" if want == "fall" else "above"
    lx, zc = last["log_excess"], _zc(alpha)
    ends = lx < 0 if want == "fall" else lx > 0
    wrong_side = (lx - zc * last["se"] > 0) if want == "fall" else (lx + zc * last["se"] < 0)
    extra = ""
    if cl.NOT_SUPPORTED in (ch["verdict"], ch_r["verdict"]):
        v = cl.NOT_SUPPORTED
    elif ch["verdict"] == cl.SUPPORTED and ch_r["verdict"] == cl.SUPPORTED and ends:
        v = cl.SUPPORTED
    elif ch["verdict"] == cl.SUPPORTED and not ends and wrong_side:
        v = cl.NOT_SUPPORTED
    else:
        v = cl.INCONCLUSIVE
    if ch["verdict"] == cl.SUPPORTED and not ends:
        extra = (f" It does not end {side} the null (F / null median {math.exp(lx):.3g} at the last checkpoint"
                 + (", its CI on the other side of 1)." if wrong_side else ")."))
    if ch_r["diff"] is not None:
        extra += (" The residual variance ratio var(count - expected) / binomial variance, which the word total "
                  f"does not move, goes from {math.exp(res[0]['log_excess']):.3g} to "
                  f"{math.exp(res[1]['log_excess']):.3g}: {ch_r['reason']}.")
    else:
        extra += " The residual variance ratio is undefined at the first or last checkpoint."
    text = (f"The {name} excess F / null median is {math.exp(first['log_excess']):.3g} at iteration "
            f"{first['iteration']} and {math.exp(lx):.3g} at iteration {last['iteration']}. "
            + change_text(f"The {name} excess", ch, first, last) + extra + " " + across_text(f"{name} excess", across))
    return {"verdict": v, "text": text, "numbers": nums}


def claim_correct(checkpoints: Sequence[Mapping], alpha: float = 0.05,
                  crossing: Mapping | None = None) -> dict:
    """Claim 2 (see the module docstring)."""
    title = CLAIM_TITLES[2]
    cks = [c for c in checkpoints if _get(c, "stats", "correct", "fano") is not None]
    beyond = _excess_beyond(excess_rows(checkpoints, "correct"), alpha, "fall", "correct-word")
    if len(cks) < 2:
        na = {"verdict": cl.INCONCLUSIVE, "text": "Fewer than two checkpoints with F_correct defined.",
              "numbers": {"n_checkpoints": len(cks)}}
        return cl.claim(2, title, na, beyond)
    if crossing is None:
        crossing = sp.crossing([c["iteration"] for c in checkpoints],
                               [_get(c, "stats", "counts", "correct") or [] for c in checkpoints],
                               alpha=alpha, n_boot=_nb(checkpoints[-1]),
                               seed=_get(checkpoints[-1], "stats", "seed") or 0)
    a, b = cks[0]["stats"]["correct"], cks[-1]["stats"]["correct"]
    ia, ib = cks[0]["iteration"], cks[-1]["iteration"]
    first_ok = a["verdict"] in ("Poissonian", "super-Poissonian")
    last_sub = b["verdict"] == "sub-Poissonian"
    reported = bool(crossing and crossing.get("reported"))
    se_b = _num(b.get("log_se"))
    lf = math.log(b["fano"]) if b["fano"] and b["fano"] > 0 else None
    ci_b = [lf - _zc(alpha) * se_b, lf + _zc(alpha) * se_b] if lf is not None and se_b else None
    mde = _mde(se_b, alpha)
    if first_ok and last_sub and reported:
        v, why = cl.SUPPORTED, "the claimed change is there."
    elif a["verdict"] == "sub-Poissonian":
        v, why = cl.NOT_SUPPORTED, "the first checkpoint is already significantly sub-Poissonian."
    elif ci_b is not None and ci_b[0] >= 0:
        v, why = cl.NOT_SUPPORTED, "the CI of the last F_correct excludes F < 1."
    elif ci_b is not None and -EQUIVALENCE < ci_b[0] and ci_b[1] < EQUIVALENCE:
        v, why = cl.NOT_SUPPORTED, "the CI of the last F_correct lies inside the 10% margin around 1."
    else:
        v = cl.INCONCLUSIVE
        why = ("the last checkpoint could not show the change"
               + (f" (the smallest sub-Poissonian F it could detect with 80% power is {math.exp(-mde):.3g})."
                  if mde is not None else "."))
    ci = crossing.get("ci") if crossing else None
    text = (f"F_correct {_fmt(a['fano'])} ({a['verdict']}, p = {_fmt(a['p_value'], 2)}) at iteration {ia} -> "
            f"{_fmt(b['fano'])} ({b['verdict']}, p = {_fmt(b['p_value'], 2)}"
            + (f", 95% CI {math.exp(ci_b[0]):.3g} to {math.exp(ci_b[1]):.3g}" if ci_b else "")
            + f") at iteration {ib}; ")
    if reported:
        text += (f"it crosses 1 near iteration {crossing['iteration']:.0f} "
                 f"(95% bootstrap CI [{_fmt(ci[0], 4)}, {_fmt(ci[1], 4)}]); ")
    else:
        text += f"no crossing reported ({(crossing or {}).get('reason', 'not computed')}); "
    text += why
    as_stated = {"verdict": v, "text": text, "numbers": {
        "first": {"iteration": ia, "fano": a["fano"], "fano_ci": a.get("fano_ci"), "p_value": a["p_value"],
                  "verdict": a["verdict"]},
        "last": {"iteration": ib, "fano": b["fano"], "fano_ci": b.get("fano_ci"), "p_value": b["p_value"],
                 "verdict": b["verdict"], "log_se": se_b,
                 "ci": [math.exp(x) for x in ci_b] if ci_b else [None, None]},
        "mde_fano": math.exp(-mde) if mde is not None else None,
        "crossing_iteration": crossing.get("iteration") if crossing else None,
        "crossing_ci": ci, "crossing_reason": crossing.get("reason") if crossing else None}}
    return cl.claim(2, title, as_stated, beyond)


def claim_misspelled(checkpoints: Sequence[Mapping], alpha: float = 0.05) -> dict:
    """Claim 3 (see the module docstring)."""
    title = CLAIM_TITLES[3]
    its = [c["iteration"] for c in checkpoints]
    fm = [_get(c, "stats", "misspelled", "fano") for c in checkpoints]
    t = cl.trend(its, fm, alpha)
    defined = [c for c in checkpoints if _num(_get(c, "stats", "misspelled", "fano"))
               and _num(_get(c, "stats", "misspelled", "log_se"))]
    text = cl.trend_text("F_misspelled", t)
    va = vb = None
    ch = None
    if defined:
        da, db = defined[0]["stats"]["misspelled"], defined[-1]["stats"]["misspelled"]
        va, vb = da["verdict"], db["verdict"]
        text += (f" Its dispersion verdict is {va} at iteration {defined[0]['iteration']} and {vb} at iteration "
                 f"{defined[-1]['iteration']}" + (" (unchanged)." if va == vb else " (changed)."))
        if len(defined) >= 2:
            row = lambda c, d: {"iteration": c["iteration"], "log_excess": math.log(d["fano"]),  # noqa: E731
                                "se": d["log_se"]}
            ch = change(row(defined[0], da), row(defined[-1], db), "rise", alpha)
    if t.get("shape") == "rising" and cl.trend_verdict(t, "rising") == cl.SUPPORTED:
        v = cl.SUPPORTED
    elif ch is not None and ch["verdict"] == cl.NOT_SUPPORTED and t.get("shape") not in ("rise then fall",
                                                                                        "fall then rise"):
        v = cl.NOT_SUPPORTED
    else:
        v = cl.INCONCLUSIVE
    if ch is not None and ch["diff"] is not None:
        text += (f" F_misspelled changes by a factor of {ch['ratio']:.3g} (95% CI {ch['ratio_ci'][0]:.3g} to "
                 f"{ch['ratio_ci'][1]:.3g}) from first to last" + (f": {ch['reason']}." if v != cl.SUPPORTED else "."))
    text += (" Thinning alone raises F_misspelled as errors become rare (independent errors give F_misspelled "
             "closer to 1 the rarer they are), so this verdict says nothing about coherence; the verdict beyond "
             "the null does.")
    as_stated = {"verdict": v, "text": text,
                 "numbers": {"trend": t, "first_verdict": va, "last_verdict": vb, "change": ch}}
    beyond = _excess_beyond(excess_rows(checkpoints, "misspelled"), alpha, "rise", "misspelled-word")
    return cl.claim(3, title, as_stated, beyond)


def claim_cascade(checkpoints: Sequence[Mapping], alpha: float = 0.05) -> dict:
    """Claim 5 (see the module docstring)."""
    title = CLAIM_TITLES[5]
    rows = cascade_rows(checkpoints)
    zc = _zc(alpha)
    # as stated: |z| of log RR falls towards 0
    t = cl.trend([r["iteration"] for r in rows], [abs(r["z"]) if r["z"] is not None else None for r in rows],
                 alpha)
    n = t.get("n", 0)
    mde_rho = math.tanh(_mde(1.06 / math.sqrt(n - 3), alpha)) if n > 3 else None
    # the claim is where |z| ends up: a significant Spearman fall counts even after an early peak
    rho, p = t.get("rho"), t.get("p_value")
    if rho is not None and p is not None and p < alpha and rho < 0:
        v = cl.SUPPORTED
    elif rho is not None and p is not None and p < alpha and rho > 0:
        v = cl.NOT_SUPPORTED
    else:
        v = cl.INCONCLUSIVE
    text = cl.trend_text("|z| of log RR against its within-sample null", t)
    if v == cl.INCONCLUSIVE:
        text += (" Not a significant fall towards 0" + (f"; with {n} checkpoints only a Spearman rho beyond "
                                                       f"{mde_rho:.2f} is detected with 80% power." if mde_rho
                                                       else "."))
    as_stated = {"verdict": v, "text": text, "numbers": {"trend_abs_z": t, "mde_rho": mde_rho,
                                                         "per_checkpoint": rows}}

    # beyond the null
    across = across_checkpoints(rows, alpha)
    nums = {"per_checkpoint": rows, "across": across, "earlier_cascade": None, "last": rows[-1] if rows else None,
            "holm": None, "mde_ratio": None}
    defined = [r for r in rows if r["z"] is not None and r["se"]]
    last = defined[-1] if defined else None
    if last is None or last is not (rows[-1] if rows else None):
        bv = cl.INCONCLUSIVE
        bt = f"The last checkpoint's RR is undefined ({(rows[-1] if rows else {}).get('reason') or 'no checkpoints'})."
    else:
        def ci(r):
            return (r["log_excess"] - zc * r["se"], r["log_excess"] + zc * r["se"])

        earlier = defined[:-1]
        one_sided = [_NORMAL.cdf(-r["z"]) for r in earlier]
        rej = holm(one_sided, alpha)
        nums["holm"] = [{"iteration": r["iteration"], "p_one_sided": p, "significant": k}
                        for r, p, k in zip(earlier, one_sided, rej)]
        lo_l, hi_l = ci(last)
        last_casc = last["p_value"] is not None and last["p_value"] < alpha and last["z"] > 0
        lt = (f"at the last checkpoint (iteration {last['iteration']}) RR = {_fmt(last['rr'])} against the null "
              f"median {_fmt(last['null_median'])} (z = {last['z']:+.2f}, RR / median 95% CI {math.exp(lo_l):.3g} "
              f"to {math.exp(hi_l):.3g})")
        sig = [r for r, k in zip(earlier, rej) if k]
        if last_casc:
            bv = cl.NOT_SUPPORTED
            bt = f"Errors still cascade {lt}."
        elif sig:
            e = max(sig, key=lambda r: ci(r)[0])
            nums["earlier_cascade"] = e
            gone = ci(e)[0] > hi_l
            bv = cl.SUPPORTED if gone else cl.INCONCLUSIVE
            bt = (f"A cascade significant after Holm over {len(earlier)} earlier checkpoints at iteration "
                  f"{e['iteration']} (RR = {_fmt(e['rr'])}, z = {e['z']:+.2f}) "
                  + ("is gone: " if gone else "may be gone: ") + lt + "; "
                  + ("its CI lies below the earlier one." if gone else "but its CI overlaps the earlier one's."))
        else:
            crit = _NORMAL.inv_cdf(1 - alpha / max(1, len(earlier)))
            ses = sorted(r["se"] for r in earlier)
            mde = _mde(ses[len(ses) // 2], alpha, crit) if ses else None
            nums["mde_ratio"] = math.exp(mde) if mde is not None else None
            small = bool(earlier) and all(ci(r)[1] < EQUIVALENCE for r in earlier)
            bv = cl.NOT_SUPPORTED if small else cl.INCONCLUSIVE
            bt = (f"No earlier checkpoint has a cascade significant after Holm; {lt}. "
                  + ("Every earlier checkpoint's CI excludes a cascade of more than 10%: there was no cascade to "
                     "prevent." if small else
                     "The earlier checkpoints could not exclude a cascade"
                     + (f" (the smallest RR / null median Holm finds with 80% power at a typical earlier "
                        f"checkpoint is {math.exp(mde):.3g})." if mde is not None else ".")))
        bt += " " + across_text("cascade z", across)
    beyond = {"verdict": bv, "text": bt, "numbers": nums}
    return cl.claim(5, title, as_stated, beyond)


def spelling_claims(checkpoints: Sequence[Mapping], alpha: float = 0.05,
                    crossing: Mapping | None = None) -> list[dict]:
    """Claims 2, 3 and 5 of the abstract, each with its two verdicts (rules: module docstring).

    Parameters
    ----------
    checkpoints : sequence of dict
        ``{"iteration": int, "stats": <analyze() dict>}``, sorted by iteration (sorted here
        again to be safe; entries without an iteration are dropped).
    alpha : float
        Level of every test.
    crossing : dict, optional
        A `spelling.crossing` result; computed from the checkpoints' ``counts`` when None.

    Returns
    -------
    list of dict
        Three `claims.claim` dicts, ids 2, 3 and 5.
    """
    cks = sorted((c for c in checkpoints if c.get("iteration") is not None and c.get("stats")),
                 key=lambda c: c["iteration"])
    return [claim_correct(cks, alpha, crossing), claim_misspelled(cks, alpha), claim_cascade(cks, alpha)]
