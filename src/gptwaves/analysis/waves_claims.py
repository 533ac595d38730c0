"""Verdicts on the wave claims 1 and 4 of the abstract (docs/method.md, Findings).

Pure functions on the per-checkpoint tap summaries of
:func:`gptwaves.analysis.waves.tap_summary`; numpy / scipy only. The rules are stated in
docs/method.md, "Findings"; in short (``alpha`` default 0.05; trends by
:func:`gptwaves.analysis.claims.trend`; equivalence margins `MARGIN_EXCESS` = 0.02 in mean |R|
excess and `MARGIN_PROBE` = 0.02 in probe R^2):

A part of a rule is *shown* (True) when its CI lies on the claimed side of 0, *shown absent*
(False) when its CI lies on the other side or inside the equivalence margin, and *open* (None)
otherwise. A verdict is supported when every part is shown, not supported when any part is shown
absent, inconclusive otherwise: "not supported" is only said where the data could have seen the
effect.

Claim 1, "coherence builds up", at the focus tap, on the *induced* order parameters:

* as stated: the trend of induced mean |R| is rising (Spearman rho > 0, p < alpha) and the trend
  of the induced participation ratio falling: supported, unless mean |R| rises then falls (or PR
  falls then rises), which is inconclusive while the rise is still significant and not supported
  otherwise; neither trend significant in the claimed direction: not supported; one of them:
  inconclusive. Fewer than `MIN_TREND_N` (5) checkpoints: inconclusive (no exact Spearman test
  can reject at 0.05 with fewer). The same rule on the gain-normalised
  values is stated in words.
* beyond the null, on the excess of induced mean |R| over the sample-shuffle surrogate: (a) the
  last checkpoint's excess is significant (unfloored Gaussian-tail p < alpha and CI above 0),
  (b) the change from the first to the last checkpoint (independent recordings: CI from the two
  jackknife SEs) is above 0, (c) the paired jackknife CI of focus minus ``hook_embed`` at the last
  checkpoint is above 0, (d) the shape of the excess across checkpoints: a rise followed by a
  significant fall (CI of peak minus last above 0), or a significant falling trend, is shown
  absent; a rise then a fall that is not significant is open. The rule runs on the raw induced
  waves and on the gain-normalised ones; the verdict is the weaker of the two, and the text says
  whether it survives normalisation. The surrogate p-values of every checkpoint and tap are
  Holm-corrected together and reported (how many are significant at every checkpoint).

Claim 4, "space channels stand out", on the basis-free space probe (out-of-fold R^2 of a linear
probe for "the next character is a space", :mod:`gptwaves.analysis.probe`) at the focus tap:

* as stated: it rises across training: the probe R^2 trend is "rising" (at least 5
  checkpoints) and the change first -> last (CI) is above 0: supported; a falling trend, or a
  change below 0 or inside the margin: not supported; otherwise inconclusive.
* beyond the null, at the last checkpoint: (a) the paired jackknife CI of focus minus
  ``hook_embed`` probe R^2 is above 0 (a 99% interval: at 95% a focus tap equal in law to the
  input came out "supported" in about 1 of 40 runs, so the verdict flipped between seeds; shown
  absent by two one-sided tests at 5% against the margin, or a 95% CI below 0) and (b) the focus
  R^2 exceeds the 95th percentile of its AR(1) red-noise null distribution (shown absent when its
  whole CI lies at or below it). The word-rhythm similarity of the probe's projection (with its
  own null percentile) and the
  per-channel labels are reported as description, not as evidence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..schema import CLAIM_TITLES
from . import claims as _c
from .coherence_nulls import holm, independent_difference, paired_difference

__all__ = ["waves_claims", "claim_coherence", "claim_space_channels", "series", "relative_to_input",
           "coherence_significance", "MARGIN_EXCESS", "MARGIN_PROBE"]

#: Relative tolerance of "exceeds" comparisons (so that equal numbers up to rounding never exceed).
_TOL = 1e-9
#: Equivalence margins (docs/method.md, "Findings"): an effect whose CI lies inside +-margin is absent.
MARGIN_EXCESS = 0.02
MARGIN_PROBE = 0.02

CLAIM1, CLAIM4 = CLAIM_TITLES[1], CLAIM_TITLES[4]  # declared in gptwaves.schema

_RANK = {_c.NOT_SUPPORTED: 0, _c.INCONCLUSIVE: 1, _c.SUPPORTED: 2}


def _get(d, *path):
    for p in path:
        if not isinstance(d, Mapping) or p not in d:
            return None
        d = d[p]
    return d


def series(checkpoints: Sequence[Mapping], tap: str, *path) -> tuple[list[int], list]:
    """Iterations and the value at ``path`` of ``tap``'s summary at each checkpoint (None if absent)."""
    its = [int(c["iteration"]) if c.get("iteration") is not None else None for c in checkpoints]
    return its, [_get(c.get("taps", {}), tap, *path) for c in checkpoints]


def _f(v, nd=3):
    return "n/a" if v is None else f"{v:.{nd}g}"


def _n(v):
    return "n/a" if v is None else str(v)


def _ci(c):
    return "[n/a]" if not c or c[0] is None or c[1] is None else f"[{_f(c[0])}, {_f(c[1])}]"


#: Fewest checkpoints at which a trend can be significant: an exact two-sided Spearman test cannot
#: reject at 0.05 below 5 points (smallest p: 1/3 at n = 3, 1/12 at n = 4), while the asymptotic
#: p-value of ``scipy.stats.spearmanr`` is 0 for any perfect ordering (a size of 1/6 at n = 3).
MIN_TREND_N = 5


def _above_words(above, what: str) -> str:
    """``_above``'s answer in words (never True/None in a sentence)."""
    if above is None:
        return f"cannot be compared with {what} (a number is missing)"
    return f"lies above {what}" if above else f"does not lie above {what}"


def _up(t, alpha):
    return (t["rho"] is not None and t["p_value"] is not None and t["n"] >= MIN_TREND_N
            and t["rho"] > 0 and t["p_value"] < alpha)


def _down(t, alpha):
    return (t["rho"] is not None and t["p_value"] is not None and t["n"] >= MIN_TREND_N
            and t["rho"] < 0 and t["p_value"] < alpha)


def _slim(t):
    return {k: t.get(k) for k in ("n", "rho", "p_value", "first", "last", "peak_iteration", "peak_value",
                                  "trough_iteration", "trough_value", "shape")}


def _status(ci, margin) -> bool | None:
    """True: CI above 0; False: CI below 0 or inside [-margin, margin]; None: open or missing."""
    if not ci or ci[0] is None or ci[1] is None:
        return None
    if ci[0] > 0:
        return True
    if ci[1] < 0 or (ci[0] >= -margin and ci[1] <= margin):
        return False
    return None


def _status_two_level(d: Mapping, margin: float, up: float = 0.99, equivalence: float = 0.90) -> bool | None:
    """Status of a difference from its estimate and SE (t with n - 1 df): shown when the ``up``
    two-sided CI lies above 0 (one-sided level (1 - up) / 2); shown absent when the ``equivalence``
    CI lies inside [-margin, margin] (two one-sided tests at (1 - equivalence) / 2) or the 95% CI
    lies below 0; open otherwise."""
    from scipy import stats as _st

    est, se, n = d.get("difference"), d.get("se"), d.get("n_samples")
    if est is None or se is None or not n or n < 3:
        return None
    q = lambda c: float(_st.t.ppf(0.5 + c / 2, n - 1))  # noqa: E731
    if est - q(up) * se > 0:
        return True
    if est + q(0.95) * se < 0 or (est - q(equivalence) * se >= -margin and est + q(equivalence) * se <= margin):
        return False
    return None


def _combine(parts) -> str:
    if parts and all(p is True for p in parts):
        return _c.SUPPORTED
    if any(p is False for p in parts):
        return _c.NOT_SUPPORTED
    return _c.INCONCLUSIVE


def _word(b) -> str:
    return {True: "yes", False: "no (shown absent)", None: "open"}[b]


def _num_or_none(v):
    return None if v is None or not np.isfinite(v) else float(v)


def coherence_significance(checkpoints: Sequence[Mapping], alpha: float = 0.05, variant: tuple = ()) -> dict:
    """Holm correction of the surrogate tests of mean |R| over every checkpoint and tap.

    Parameters
    ----------
    checkpoints : sequence of dict
        ``{"iteration": int, "taps": {tap: tap_summary}}``.
    alpha : float, optional
    variant : tuple, optional
        Path prefix inside a tap summary (``("gain_normalised",)`` for the gain-normalised test).

    Returns
    -------
    dict
        ``m`` tests, ``n_significant`` (uncorrected), ``n_significant_holm``,
        ``every_checkpoint_holm`` ({tap: bool}: significant after Holm at every checkpoint),
        ``rows`` ([{iteration, tap, z, p_value, p_holm, significant_holm}]).
    """
    rows = []
    for c in checkpoints:
        for tap, summ in (c.get("taps") or {}).items():
            d = _get(summ, *variant, "surrogate", "mean_abs_corr") or {}
            rows.append({"iteration": c.get("iteration"), "tap": tap, "z": d.get("z"), "p_value": d.get("p_value"),
                         "ci_above_0": bool(d.get("ci") and d["ci"][0] is not None and d["ci"][0] > 0)})
    p = np.array([np.nan if r["p_value"] is None else float(r["p_value"]) for r in rows])
    adj = holm(p)
    for r, a in zip(rows, adj):
        above = r.pop("ci_above_0")
        r["p_holm"] = _num_or_none(a)
        r["significant_holm"] = bool(np.isfinite(a) and a < alpha and above)
    taps = sorted({r["tap"] for r in rows})
    every = {t: bool(all(r["significant_holm"] for r in rows if r["tap"] == t)) for t in taps}
    return {"m": int(np.isfinite(p).sum()), "n_significant": int(np.sum(np.nan_to_num(p, nan=1.0) < alpha)),
            "n_significant_holm": int(sum(r["significant_holm"] for r in rows)), "every_checkpoint_holm": every,
            "alpha": alpha, "rows": rows}


def _as_stated_coherence(checkpoints, focus_tap, alpha, variant=()):
    its, mac = series(checkpoints, focus_tap, *variant, "induced", "mean_abs_corr")
    _, pr = series(checkpoints, focus_tap, *variant, "induced", "participation_ratio")
    t_mac, t_pr = _c.trend(its, mac, alpha), _c.trend(its, pr, alpha)
    up, down = _up(t_mac, alpha), _down(t_pr, alpha)
    turn = t_mac["shape"] == "rise then fall" or t_pr["shape"] == "fall then rise"
    if t_mac["n"] < MIN_TREND_N:
        v = _c.INCONCLUSIVE
    elif turn:
        v = _c.INCONCLUSIVE if up else _c.NOT_SUPPORTED
    elif up and down:
        v = _c.SUPPORTED
    elif not up and not down:
        v = _c.NOT_SUPPORTED
    else:
        v = _c.INCONCLUSIVE
    return v, its, mac, pr, t_mac, t_pr, turn


def _beyond_coherence(checkpoints, focus_tap, input_tap, alpha, margin, variant=()):
    """The beyond-the-null rule of claim 1 on one variant (raw induced or gain-normalised)."""
    its, exc = series(checkpoints, focus_tap, *variant, "surrogate", "mean_abs_corr", "excess")
    _, ses = series(checkpoints, focus_tap, *variant, "surrogate", "mean_abs_corr", "se")
    first, last = checkpoints[0], checkpoints[-1]
    s_last = _get(last, "taps", focus_tap, *variant, "surrogate", "mean_abs_corr") or {}
    s_first = _get(first, "taps", focus_tap, *variant, "surrogate", "mean_abs_corr") or {}
    s_in = (_get(last, "taps", input_tap, *variant, "surrogate", "mean_abs_corr") or {}) if input_tap else {}
    if s_last.get("significant"):
        sig = True
    else:
        st = _status(s_last.get("ci"), margin)
        sig = False if st is False else None
    change = (independent_difference(s_last.get("excess"), s_last.get("se"), s_first.get("excess"),
                                     s_first.get("se")) if len(checkpoints) >= 2 else
              {"difference": None, "se": None, "ci": None})
    vs_input = paired_difference(s_last.get("excess"), s_last.get("loo"), s_in.get("excess"), s_in.get("loo"))
    t_exc = _c.trend(its, exc, alpha)
    fall = None
    shape_ok: bool | None = True
    vals = [(i, v) for i, v in enumerate(exc) if v is not None]
    if len(vals) >= 3:
        ip, peak = max(vals, key=lambda iv: iv[1])
        first_v, last_v = vals[0][1], vals[-1][1]
        # a turn: the peak lies inside and the last checkpoint has given back at least TURN_FRACTION of
        # the rise (the trend rule's own threshold; smaller dips are not a shape)
        if vals[0][0] < ip < vals[-1][0] and peak > first_v and peak - last_v >= _c.TURN_FRACTION * (peak - first_v):
            fall = independent_difference(peak, ses[ip], last_v, s_last.get("se"))
            fall["peak_iteration"] = its[ip]
            shape_ok = False if fall["ci"] and fall["ci"][0] > 0 else None
    if t_exc["shape"] == "falling" and t_exc["n"] >= MIN_TREND_N:
        shape_ok = False
    parts = {"significant_last": sig, "above_first": _status(change["ci"], margin) if len(checkpoints) >= 2 else None,
             "above_input_floor": _status(vs_input["ci"], margin), "shape": shape_ok}
    return {"verdict": _combine(list(parts.values())), "parts": parts, "last": s_last or None,
            "first": s_first or None, "input_floor": s_in or None, "change": change, "vs_input": vs_input,
            "fall_after_peak": fall, "trend_excess": _slim(t_exc), "excess_by_checkpoint": exc, "iterations": its}


def _strip_loo(d):
    return None if not d else {k: v for k, v in d.items() if k != "loo"}


def claim_coherence(checkpoints: Sequence[Mapping], focus_tap: str, input_tap: str | None = "hook_embed",
                    alpha: float = 0.05, margin: float = MARGIN_EXCESS) -> dict:
    """Claim 1 (coherence builds up), see the module docstring for the rules."""
    gain_avail = any(_get(c, "taps", focus_tap, "gain_normalised") for c in checkpoints)
    as_stated = _coherence_as_stated(checkpoints, focus_tap, alpha, gain_avail)
    # beyond the null
    if not checkpoints:
        return _c.claim(1, CLAIM1, as_stated, {"verdict": _c.INCONCLUSIVE, "text": "No checkpoints.", "numbers": {}})
    raw = _beyond_coherence(checkpoints, focus_tap, input_tap, alpha, margin)
    gain = _beyond_coherence(checkpoints, focus_tap, input_tap, alpha, margin, ("gain_normalised",)) \
        if gain_avail else None
    v2 = raw["verdict"] if gain is None else min(raw["verdict"], gain["verdict"], key=_RANK.get)
    holm_raw = coherence_significance(checkpoints, alpha)
    first, last = checkpoints[0], checkpoints[-1]
    beyond = {"verdict": v2,
              "text": _coherence_beyond_text(raw, gain, v2, holm_raw, first, last, focus_tap, input_tap, margin),
              "numbers": _coherence_beyond_numbers(raw, gain, holm_raw, last, focus_tap, input_tap, margin)}
    return _c.claim(1, CLAIM1, as_stated, beyond)


def _coherence_as_stated(checkpoints: Sequence[Mapping], focus_tap: str, alpha: float, gain_avail: bool) -> dict:
    """Claim 1 as stated: the trends of the induced order parameters (and the same after gain
    normalisation, when the checkpoints have it)."""
    v1, its, mac, pr, t_mac, t_pr, turn = _as_stated_coherence(checkpoints, focus_tap, alpha)
    text1 = (f"At {focus_tap} (induced, evoked part removed): "
             + _c.trend_text("mean |R|", t_mac) + " " + _c.trend_text("Participation ratio", t_pr))
    if turn:
        text1 += (f" Coherence does not simply build up: mean |R| peaks at iteration {t_mac['peak_iteration']}"
                  f" ({_f(t_mac['peak_value'])}) and is {_f(t_mac['last'])} at the last checkpoint.")
    v1g = None
    if gain_avail:
        v1g, *_ = _as_stated_coherence(checkpoints, focus_tap, alpha, ("gain_normalised",))
        text1 += (f" After gain normalisation (each step's vector divided by its RMS over channels) the same rule "
                  f"gives \"{v1g}\": the verdict {'survives' if v1g == v1 else 'does not survive'} normalisation.")
    as_stated = {"verdict": v1, "text": text1,
                 "numbers": {"tap": focus_tap, "iterations": its, "mean_abs_corr_induced": mac,
                             "participation_ratio_induced": pr, "trend_mean_abs_corr": _slim(t_mac),
                             "trend_participation_ratio": _slim(t_pr), "verdict_gain_normalised": v1g}}
    return as_stated


def _coherence_beyond_text(raw: dict, gain: dict | None, v2: str, holm_raw: dict, first: Mapping, last: Mapping,
                           focus_tap: str, input_tap: str | None, margin: float) -> str:
    """The sentence of claim 1 beyond the null."""
    sl, sf = raw["last"] or {}, raw["first"] or {}
    p = raw["parts"]
    text2 = (f"Excess of induced mean |R| over the sample-shuffle surrogate at {focus_tap}: "
             f"{_f(sl.get('excess'))} {_ci(sl.get('ci'))}, z = {_f(sl.get('z'))} surrogate SDs "
             f"(Gaussian-tail p = {_f(sl.get('p_value'), 2)}; a rank p from "
             f"{_get(last, 'taps', focus_tap, 'surrogate', 'n_surrogates') or 'n/a'} surrogates could not go below "
             f"{_f(_get(last, 'taps', focus_tap, 'surrogate', 'p_rank_bound'), 2)}) at iteration "
             f"{last.get('iteration')}, vs {_f(sf.get('excess'))} {_ci(sf.get('ci'))} at iteration "
             f"{first.get('iteration')}: change {_f(raw['change']['difference'])} {_ci(raw['change']['ci'])}; "
             + (f"focus minus the input floor {input_tap} (paired jackknife): "
                f"{_f(raw['vs_input']['difference'])} {_ci(raw['vs_input']['ci'])}. " if input_tap else
                "no input floor (the model's embedding tap was not recorded). ")
             + _c.trend_text("The excess", raw["trend_excess"]))
    if raw["fall_after_peak"] is not None:
        fa = raw["fall_after_peak"]
        text2 += (f" Its fall from the peak at iteration {fa['peak_iteration']} to the last checkpoint is "
                  f"{_f(fa['difference'])} {_ci(fa['ci'])}"
                  + (", significant: a rise followed by a significant fall is not a build-up."
                     if p["shape"] is False else ", not significant."))
    elif p["shape"] is False:
        text2 += " The excess falls across training: not a build-up."
    text2 += (f" Significant at the last checkpoint: {_word(p['significant_last'])}; above iteration "
              f"{first.get('iteration')}: {_word(p['above_first'])}; above the input floor: "
              f"{_word(p['above_input_floor'])}; shape of a build-up: {_word(p['shape'])} "
              f"(equivalence margin {margin:g}).")
    text2 += (f" Surrogate tests of mean |R| Holm-corrected over {holm_raw['m']} checkpoint-tap pairs: "
              f"{holm_raw['n_significant_holm']} significant"
              + (f", at every checkpoint at {focus_tap}" if holm_raw["every_checkpoint_holm"].get(focus_tap) else "")
              + ".")
    if gain is not None:
        gl = gain["last"] or {}
        text2 += (f" After gain normalisation the excess at the last checkpoint is {_f(gl.get('excess'))} "
                  f"{_ci(gl.get('ci'))} (z = {_f(gl.get('z'))}) and the same rule gives \"{gain['verdict']}\": the "
                  f"verdict {'survives' if gain['verdict'] == raw['verdict'] else 'does not survive'} normalisation"
                  + ("" if gain["verdict"] == raw["verdict"] else f"; the weaker verdict, \"{v2}\", is reported")
                  + ".")
    return text2


def _coherence_beyond_numbers(raw: dict, gain: dict | None, holm_raw: dict, last: Mapping, focus_tap: str,
                              input_tap: str | None, margin: float) -> dict:
    """The numbers of claim 1 beyond the null."""
    diff_last = _get(last, "taps", focus_tap, "gain_normalised", "raw_minus_normalised", "mean_abs_corr")
    return {"tap": focus_tap, "input_tap": input_tap, "margin": margin,
            "last": _strip_loo(raw["last"]), "first": _strip_loo(raw["first"]),
            "input_floor": _strip_loo(raw["input_floor"]), "parts": raw["parts"],
            "significant": raw["parts"]["significant_last"], "change_first_to_last": raw["change"],
            "focus_minus_input": raw["vs_input"], "fall_after_peak": raw["fall_after_peak"],
            "excess_by_checkpoint": raw["excess_by_checkpoint"], "trend_excess": raw["trend_excess"],
            "verdict_raw": raw["verdict"],
            "verdict_gain_normalised": None if gain is None else gain["verdict"],
            "survives_gain_normalisation": None if gain is None else gain["verdict"] == raw["verdict"],
            "gain_normalised": None if gain is None else {
                "last": _strip_loo(gain["last"]), "parts": gain["parts"],
                "change_first_to_last": gain["change"], "focus_minus_input": gain["vs_input"],
                "trend_excess": gain["trend_excess"],
                "excess_by_checkpoint": gain["excess_by_checkpoint"]},
            "raw_minus_gain_normalised_last": diff_last,
            "holm": {k: v for k, v in holm_raw.items()},
            "participation_ratio_last": _strip_loo(_get(last, "taps", focus_tap, "surrogate",
                                                        "participation_ratio")),
            "lambda_max_share_last": _strip_loo(_get(last, "taps", focus_tap, "surrogate",
                                                     "lambda_max_share"))}


def claim_space_channels(checkpoints: Sequence[Mapping], focus_tap: str, input_tap: str | None = "hook_embed",
                         alpha: float = 0.05, margin: float = MARGIN_PROBE) -> dict:
    """Claim 4 (space channels stand out, on the basis-free space probe), see the module docstring."""
    its, r2 = series(checkpoints, focus_tap, "probe", "r2")
    t_r2 = _c.trend(its, r2, alpha)
    first = _get(checkpoints[0], "taps", focus_tap, "probe") if checkpoints else None
    last = _get(checkpoints[-1], "taps", focus_tap, "probe") if checkpoints else None
    first, last = first or {}, last or {}
    change = (independent_difference(last.get("r2"), last.get("se"), first.get("r2"), first.get("se"))
              if len(checkpoints) >= 2 else {"difference": None, "se": None, "ci": None})
    st_change = _status(change["ci"], margin)
    if t_r2["n"] < MIN_TREND_N:
        v1 = _c.NOT_SUPPORTED if st_change is False else _c.INCONCLUSIVE
    elif t_r2["shape"] == "rising" and st_change is True:
        v1 = _c.SUPPORTED
    elif t_r2["shape"] == "falling" or st_change is False:
        v1 = _c.NOT_SUPPORTED
    else:
        v1 = _c.INCONCLUSIVE
    _, nlab = series(checkpoints, focus_tap, "n_space_labelled")
    _, rhythm = series(checkpoints, focus_tap, "probe", "rhythm_similarity")
    text1 = (f"Out-of-fold R^2 of a linear probe for \"the next character is a space\" at {focus_tap}: "
             + _c.trend_text("probe R^2", t_r2) + f" Change from the first to the last checkpoint "
             f"{_f(change['difference'])} {_ci(change['ci'])} (equivalence margin {margin:g}). "
             f"As description only: channels labelled space or next:space {_n(nlab[0] if nlab else None)} -> "
             f"{_n(nlab[-1] if nlab else None)}.")
    as_stated = {"verdict": v1, "text": text1,
                 "numbers": {"tap": focus_tap, "iterations": its, "probe_r2": r2, "trend_probe_r2": _slim(t_r2),
                             "change_first_to_last": change, "rhythm_similarity": rhythm,
                             "n_space_labelled": nlab, "margin": margin}}
    if not checkpoints:
        return _c.claim(4, CLAIM4, as_stated, {"verdict": _c.INCONCLUSIVE, "text": "No checkpoints.", "numbers": {}})
    lastc = checkpoints[-1]
    inp = (_get(lastc, "taps", input_tap, "probe") or {}) if input_tap else {}
    vs_input = paired_difference(last.get("r2"), last.get("loo"), inp.get("r2"), inp.get("loo"))
    # 99% for "shown" (so that a same-law pair does not flip between seeds), TOST at 5% for "absent"
    st_in = _status_two_level(vs_input, margin)
    vs_input["ci99"] = paired_difference(last.get("r2"), last.get("loo"), inp.get("r2"), inp.get("loo"),
                                         confidence=0.99)["ci"]
    q95, r2l, ci_l = last.get("null_r2_q95"), last.get("r2"), last.get("ci")
    if q95 is None or r2l is None:
        st_null = None
    elif r2l > q95 + _TOL * max(1.0, abs(q95)):
        st_null = True
    elif ci_l and ci_l[1] is not None and ci_l[1] <= q95:
        st_null = False
    else:
        st_null = None
    v2 = _combine([st_in, st_null])
    ft = _get(lastc, "taps", focus_tap) or {}
    it = (_get(lastc, "taps", input_tap) or {}) if input_tap else {}
    floor = input_tap or "the input floor (not recorded)"
    text2 = (f"At iteration {lastc.get('iteration')}: probe R^2 {_f(r2l)} {_ci(ci_l)} at {focus_tap} vs "
             + (f"{_f(inp.get('r2'))} {_ci(inp.get('ci'))} at the input floor {input_tap}; paired jackknife "
                f"difference {_f(vs_input['difference'])} {_ci(vs_input['ci'])} (99%: {_ci(vs_input['ci99'])}; "
                f"above the input floor: {_word(st_in)}; " if input_tap else
                "no input floor (the model's embedding tap was not recorded), so above it: open (")
             + f"equivalence margin {margin:g}); 95th percentile of the AR(1) red-noise null distribution "
             f"({_n(last.get('n_null'))} replicates) {_f(q95)} (exceeded: {_word(st_null)}). Word-rhythm similarity of "
             f"the probe's projection {_f(last.get('rhythm_similarity'), 2)} (red-noise 95th percentile "
             f"{_f(last.get('null_rhythm_q95'), 2)}). As description only: {_n(ft.get('n_space_labelled'))} "
             f"channels labelled space or next:space at {focus_tap}, {_n(it.get('n_space_labelled'))} at "
             f"{floor}.")
    beyond = {"verdict": v2, "text": text2,
              "numbers": {"tap": focus_tap, "input_tap": input_tap, "iteration": lastc.get("iteration"),
                          "probe": _strip_loo(last), "probe_input": _strip_loo(inp),
                          "focus_minus_input": vs_input, "above_input_floor": st_in, "above_red_noise": st_null,
                          "margin": margin, "n_space_labelled": ft.get("n_space_labelled"),
                          "n_space_labelled_input": it.get("n_space_labelled"),
                          "max_space_similarity": ft.get("max_space_similarity"),
                          "max_space_similarity_input": it.get("max_space_similarity")}}
    return _c.claim(4, CLAIM4, as_stated, beyond)


def waves_claims(checkpoints: Sequence[Mapping], focus_tap: str, input_tap: str | None = "hook_embed",
                 alpha: float = 0.05, margin_excess: float = MARGIN_EXCESS,
                 margin_probe: float = MARGIN_PROBE) -> list[dict]:
    """Claims 1 and 4 (docs/method.md, Findings) from per-checkpoint tap summaries.

    Parameters
    ----------
    checkpoints : sequence of dict
        ``{"iteration": int, "taps": {tap: tap_summary(...)}}``, sorted by iteration.
    focus_tap : str
        Tap the claims are judged at (normally the last ``blocks.{i}.hook_resid_post``).
    input_tap : str or None, optional
        The input floor of the same checkpoint: the model's embedding tap (default ``hook_embed``;
        ``hidden.0`` for Hugging Face models; None when it was not recorded, which the texts say
        and which leaves the beyond-the-null verdicts that need it inconclusive).
    alpha : float, optional
    margin_excess, margin_probe : float, optional
        Equivalence margins of mean |R| excess and probe R^2.

    Returns
    -------
    list of dict
        Two :func:`gptwaves.analysis.claims.claim` dicts, ids 1 and 4.
    """
    cks = sorted(checkpoints, key=lambda c: (c.get("iteration") is None, c.get("iteration") or 0))
    return [claim_coherence(cks, focus_tap, input_tap, alpha, margin_excess),
            claim_space_channels(cks, focus_tap, input_tap, alpha, margin_probe)]


def relative_to_input(taps: Mapping[str, Mapping], input_tap: str = "hook_embed") -> dict:
    """Every tap of one checkpoint relative to its input floor (docs/method.md, Coherence against its floors).

    Parameters
    ----------
    taps : dict
        ``{tap: tap_summary(...)}`` of one checkpoint.
    input_tap : str, optional

    Returns
    -------
    dict
        ``{tap: {"mean_abs_corr_induced": d, "lambda_max_share_induced": d,
        "participation_ratio_induced": d, "excess_mean_abs_corr": d,
        "n_space_labelled": d, "probe_r2": d, "max_space_similarity": d}}`` with each ``d`` =
        value at the tap - value at ``input_tap`` (None where either is
        missing); empty when the input tap is absent.
    """
    base = taps.get(input_tap)
    if not base:
        return {}
    paths = {"mean_abs_corr_induced": ("induced", "mean_abs_corr"),
             "lambda_max_share_induced": ("induced", "lambda_max_share"),
             "participation_ratio_induced": ("induced", "participation_ratio"),
             "excess_mean_abs_corr": ("surrogate", "mean_abs_corr", "excess"),
             "n_space_labelled": ("n_space_labelled",),
             "probe_r2": ("probe", "r2"),
             "max_space_similarity": ("max_space_similarity",)}
    out = {}
    for tap, summ in taps.items():
        row = {}
        for name, path in paths.items():
            a, b = _get(summ, *path), _get(base, *path)
            row[name] = None if a is None or b is None else float(a) - float(b)
        out[tap] = row
    return out
