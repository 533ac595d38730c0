"""Verdicts on the spelling claims 2, 3 and 5 of the abstract (DESIGN section 7).

Pure functions on the per-checkpoint dicts of `gptwaves.analysis.spelling.analyze`. Each claim
gets two verdicts (`claims.claim`): **as stated** (what the abstract says, measured) and
**beyond the null** (still true once the length-conditioned independent-error reference and
the permutation nulls of DESIGN 5 are taken out).

Rules (``alpha`` default 0.05; "first" / "last" = first / last checkpoint with the quantity
defined)
------------------------------------------------------------------------------------------
Claim 2, "correct spellings go from Poissonian to sub-Poissonian":

* as stated: `supported` when the first checkpoint's correct count is not sub-Poissonian,
  the last is significantly sub-Poissonian (index-of-dispersion test) and the crossing of
  F_correct through 1 is reported (`spelling.crossing`, with its bootstrap CI);
  `not supported` when the last is not significantly sub-Poissonian or the first already is;
  `inconclusive` otherwise (fewer than two checkpoints, F undefined, F below 1 throughout).
* beyond the null: `supported` when at the last checkpoint the correct-word excess over the
  length-conditioned reference is significantly below 1 (stratified permutation p < alpha
  and F below the null median: more regular than thinning of the word total predicts);
  `not supported` otherwise (not significant, or significant in the other direction: the
  direction is stated); `inconclusive` when undefined.

Claim 3, "misspellings show the opposite trend":

* as stated: `supported` when F_misspelled rises with training (`claims.trend`: Spearman
  against log(1 + iteration), p < alpha, shape "rising"); `inconclusive` for "rise then
  fall" / "fall then rise" or fewer than three defined values; `not supported` otherwise.
  The first and last dispersion verdicts are stated (whether the verdict changes).
* beyond the null: `supported` when at the last checkpoint the misspelled excess is
  significantly above 1 (permutation p < alpha, F above the null median: clustering of
  errors beyond length-conditioned independence); `not supported` otherwise (direction
  stated); `inconclusive` when undefined.

Claim 5, "no cascade of defects once trained":

* as stated: `supported` when |log RR| (distance of the cascade relative risk from 1)
  falls with training (`claims.trend` shape "falling"); `inconclusive` with fewer than
  three defined RR or a "fall then rise" / "rise then fall" shape; `not supported`
  otherwise.
* beyond the null: the claim needs evidence of a cascade that was there and is gone.
  `supported` when (a) an earlier checkpoint has a significant cascade (within-sample
  permutation p < alpha, RR above the null median), (b) the last checkpoint has no
  significant cascade, and (c) the last checkpoint had the power to see it: the upper bound
  of its RR CI (BCa) is below the earlier cascade's RR (the largest significant one).
  `not supported` when the last checkpoint has a significant cascade, or when no checkpoint
  ever has one (nothing was suppressed). `inconclusive` when (a) and (b) hold but not (c)
  (lack of power), or the last RR is undefined.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from . import claims as cl
from . import spelling as sp

__all__ = ["spelling_claims", "claim_correct", "claim_misspelled", "claim_cascade"]


def _fmt(v, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}g}"


def _get(d: Mapping | None, *keys):
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d


def _nb(ck: Mapping) -> int:
    n = _get(ck, "stats", "n_boot")
    return 2000 if n is None else int(n)


def _sig(dec: Mapping | None, alpha: float) -> bool | None:
    p = _get(dec, "p_value")
    return None if p is None else p < alpha


def _direction(dec: Mapping) -> str:
    f, med = dec.get("fano"), dec.get("null_median")
    if f is None or med is None:
        return "undefined"
    return "above" if f > med else "below"


def _excess_beyond(dec: Mapping | None, alpha: float, want: str, name: str, it) -> dict:
    """Beyond-the-null verdict on one count's excess at one checkpoint."""
    nums = {"iteration": it, "fano": _get(dec, "fano"), "fano_ref": _get(dec, "fano_ref"),
            "excess": _get(dec, "excess"), "null_median": _get(dec, "null_median"),
            "null_band": _get(dec, "null_band"), "excess_null": _get(dec, "excess_null"),
            "p_value": _get(dec, "p_value")}
    sig = _sig(dec, alpha)
    if dec is None or sig is None or nums["fano"] is None or nums["null_median"] is None:
        reason = _get(dec, "reason") or "not measured"
        return {"verdict": cl.INCONCLUSIVE, "numbers": nums,
                "text": f"The {name} excess at iteration {it} is undefined ({reason})."}
    d = _direction(dec)
    ok = sig and d == want
    what = ("significantly " + ("above" if d == "above" else "below") if sig else "not significantly different from")
    text = (f"At iteration {it}, F_{name} = {_fmt(nums['fano'])} against the length-conditioned "
            f"independent-error reference {_fmt(nums['fano_ref'])} (excess {_fmt(nums['excess'])}; "
            f"permutation null median {_fmt(nums['null_median'])}, two-sided p = {_fmt(nums['p_value'], 2)}): "
            f"{what} {'' if sig else 'the '}null.")
    if not ok and sig:
        text += f" The excess goes the other way ({d} the null)."
    return {"verdict": cl.SUPPORTED if ok else cl.NOT_SUPPORTED, "text": text, "numbers": nums}


def claim_correct(checkpoints: Sequence[Mapping], alpha: float = 0.05,
                  crossing: Mapping | None = None) -> dict:
    """Claim 2 (see the module docstring)."""
    title = "Correct spellings go from Poissonian to sub-Poissonian"
    cks = [c for c in checkpoints if _get(c, "stats", "correct", "fano") is not None]
    if len(cks) < 2:
        na = {"verdict": cl.INCONCLUSIVE, "text": "Fewer than two checkpoints with F_correct defined.",
              "numbers": {"n_checkpoints": len(cks)}}
        return cl.claim(2, title, na, dict(na))
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
    if first_ok and last_sub and reported:
        v = cl.SUPPORTED
    elif not last_sub or a["verdict"] == "sub-Poissonian":
        v = cl.NOT_SUPPORTED
    else:
        v = cl.INCONCLUSIVE
    ci = crossing.get("ci") if crossing else None
    text = (f"F_correct {_fmt(a['fano'])} ({a['verdict']}, p = {_fmt(a['p_value'], 2)}) at iteration {ia} -> "
            f"{_fmt(b['fano'])} ({b['verdict']}, p = {_fmt(b['p_value'], 2)}) at iteration {ib}; ")
    if reported:
        text += (f"it crosses 1 near iteration {crossing['iteration']:.0f} "
                 f"(95% bootstrap CI [{_fmt(ci[0], 4)}, {_fmt(ci[1], 4)}]).")
    else:
        text += f"no crossing reported: {(crossing or {}).get('reason', 'not computed')}."
    as_stated = {"verdict": v, "text": text, "numbers": {
        "first": {"iteration": ia, "fano": a["fano"], "fano_ci": a.get("fano_ci"), "p_value": a["p_value"],
                  "verdict": a["verdict"]},
        "last": {"iteration": ib, "fano": b["fano"], "fano_ci": b.get("fano_ci"), "p_value": b["p_value"],
                 "verdict": b["verdict"]},
        "crossing_iteration": crossing.get("iteration") if crossing else None,
        "crossing_ci": ci, "crossing_reason": crossing.get("reason") if crossing else None}}
    beyond = _excess_beyond(_get(checkpoints[-1], "stats", "decomposition", "correct"), alpha, "below",
                            "correct", checkpoints[-1]["iteration"])
    return cl.claim(2, title, as_stated, beyond)


def claim_misspelled(checkpoints: Sequence[Mapping], alpha: float = 0.05) -> dict:
    """Claim 3 (see the module docstring)."""
    title = "Misspellings show the opposite trend"
    its = [c["iteration"] for c in checkpoints]
    fm = [_get(c, "stats", "misspelled", "fano") for c in checkpoints]
    t = cl.trend(its, fm, alpha)
    defined = [c for c in checkpoints if _get(c, "stats", "misspelled", "fano") is not None]
    v = cl.trend_verdict(t, "rising")
    text = cl.trend_text("F_misspelled", t)
    va = vb = None
    if defined:
        va, vb = defined[0]["stats"]["misspelled"]["verdict"], defined[-1]["stats"]["misspelled"]["verdict"]
        text += (f" Its dispersion verdict is {va} at iteration {defined[0]['iteration']} and {vb} at iteration "
                 f"{defined[-1]['iteration']}" + (" (unchanged)." if va == vb else " (changed)."))
    ex = cl.trend(its, [_get(c, "stats", "decomposition", "misspelled", "excess") for c in checkpoints], alpha)
    as_stated = {"verdict": v, "text": text,
                 "numbers": {"trend": t, "first_verdict": va, "last_verdict": vb, "excess_trend": ex}}
    beyond = _excess_beyond(_get(checkpoints[-1], "stats", "decomposition", "misspelled") if checkpoints else None,
                            alpha, "above", "misspelled", checkpoints[-1]["iteration"] if checkpoints else None)
    beyond["text"] += " " + cl.trend_text("The misspelled excess F/F_ref", ex)
    beyond["numbers"]["excess_trend"] = ex
    return cl.claim(3, title, as_stated, beyond)


def claim_cascade(checkpoints: Sequence[Mapping], alpha: float = 0.05) -> dict:
    """Claim 5 (see the module docstring)."""
    title = "No cascade of defects once trained"
    rows = []
    for c in checkpoints:
        cas = _get(c, "stats", "cascade") or {}
        rows.append({"iteration": c["iteration"], "rr": cas.get("rr"), "rr_ci": cas.get("rr_ci"),
                     "p_value": cas.get("p_value"), "null_median": cas.get("null_median"),
                     "verdict": cas.get("verdict"), "reason": cas.get("reason")})
    dist = [abs(math.log(r["rr"])) if r["rr"] else None for r in rows]
    t = cl.trend([r["iteration"] for r in rows], dist, alpha)
    v = cl.trend_verdict(t, "falling")
    defined = [r for r in rows if r["rr"] is not None]
    text = cl.trend_text("|log RR| (distance of the cascade relative risk from 1)", t)
    if defined:
        text += (f" RR {_fmt(defined[0]['rr'])} at iteration {defined[0]['iteration']} -> "
                 f"{_fmt(defined[-1]['rr'])} at iteration {defined[-1]['iteration']}.")
    as_stated = {"verdict": v, "text": text, "numbers": {"trend_abs_log_rr": t, "per_checkpoint": rows}}

    def cascade_sig(r):
        return (r["p_value"] is not None and r["p_value"] < alpha and r["rr"] is not None
                and r["null_median"] is not None and r["rr"] > r["null_median"])

    nums = {"per_checkpoint": rows, "earlier_cascade": None, "last": rows[-1] if rows else None}
    last = rows[-1] if rows else None
    if last is None or last["rr"] is None or last["p_value"] is None:
        bv = cl.INCONCLUSIVE
        bt = f"The last checkpoint's RR is undefined ({(last or {}).get('reason') or 'no checkpoints'})."
    elif cascade_sig(last):
        bv = cl.NOT_SUPPORTED
        bt = (f"At the last checkpoint (iteration {last['iteration']}) errors still cascade: RR = {_fmt(last['rr'])} "
              f"against the within-sample null median {_fmt(last['null_median'])} (p = {_fmt(last['p_value'], 2)}).")
    else:
        early = [r for r in rows[:-1] if cascade_sig(r)]
        lt = (f"at the last checkpoint (iteration {last['iteration']}) RR = {_fmt(last['rr'])} "
              f"[{_fmt((last['rr_ci'] or [None])[0])}, {_fmt((last['rr_ci'] or [None, None])[1])}], "
              f"p = {_fmt(last['p_value'], 2)} (no significant cascade)")
        if not early:
            bv = cl.NOT_SUPPORTED
            bt = ("No checkpoint shows a significant cascade (within-sample permutation null), so there is no "
                  f"cascade whose suppression could be observed; {lt}.")
        else:
            e = max(early, key=lambda r: r["rr"])
            nums["earlier_cascade"] = e
            hi = (last["rr_ci"] or [None, None])[1]
            powered = hi is not None and hi < e["rr"]
            bv = cl.SUPPORTED if powered else cl.INCONCLUSIVE
            bt = (f"A significant cascade at iteration {e['iteration']} (RR = {_fmt(e['rr'])}, p = "
                  f"{_fmt(e['p_value'], 2)}) is gone: {lt}; "
                  + ("the last CI excludes the earlier RR." if powered else
                     "but the last CI does not exclude the earlier RR (possibly lack of power)."))
    beyond = {"verdict": bv, "text": bt, "numbers": nums}
    return cl.claim(5, title, as_stated, beyond)


def spelling_claims(checkpoints: Sequence[Mapping], alpha: float = 0.05,
                    crossing: Mapping | None = None) -> list[dict]:
    """Claims 2, 3 and 5 of DESIGN 7, each with its two verdicts (rules: module docstring).

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
