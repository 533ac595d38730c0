"""Verdicts on the wave claims 1 and 4 of the abstract (DESIGN.md section 7).

Pure functions on the per-checkpoint tap summaries of
:func:`gptwaves.analysis.waves.tap_summary`; numpy / scipy only.

Rules (``alpha`` default 0.05; trends by :func:`gptwaves.analysis.claims.trend`)
-------------------------------------------------------------------------------
Claim 1, "coherence builds up", at the focus tap, on the *induced* order parameters:

* as stated: the trend of induced mean |R| is rising (Spearman rho > 0, p < alpha) and the trend
  of the induced participation ratio falling (rho < 0, p < alpha): supported, unless mean |R|
  rises then falls (or PR falls then rises), which is inconclusive while the rise is still
  significant and not supported otherwise; neither trend significant in the claimed direction:
  not supported; one of them: inconclusive. Fewer than 3 checkpoints: inconclusive.
* beyond the null: at the last checkpoint the excess of induced mean |R| over the sample-shuffle
  surrogate is significant (rank test and its CI, a delete-one-sample jackknife by default), its CI
  lies above the CI of the first checkpoint's excess, and above the CI of the input floor's excess
  (``hook_embed`` of the same checkpoint). All three: supported; any one false: not supported;
  otherwise (a number missing) inconclusive.

Claim 4, "space channels stand out", at the focus tap:

* as stated: the trends of the number of channels labelled ``space`` or ``next:space`` and of the
  largest word-rhythm ACF similarity both rising (rho > 0, p < alpha): supported; neither:
  not supported; one: inconclusive.
* beyond the null, at the last checkpoint: (a) more space / next:space labels than the input
  floor (``hook_embed``) has, and (b) the largest word-rhythm similarity exceeds both the input
  floor's and the largest similarity of the channels' AR(1) twins (``space_similarity_baseline``:
  what red noise with each channel's own lag-1 autocorrelation gives). Both: supported; neither:
  not supported; one: inconclusive.

A rise followed by a fall is stated in words in the texts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from . import claims as _c

__all__ = ["waves_claims", "claim_coherence", "claim_space_channels", "series", "relative_to_input"]

#: Relative tolerance of "exceeds" comparisons (so that equal numbers up to rounding never exceed).
_TOL = 1e-9

CLAIM1 = "Coherence builds up with training"
CLAIM4 = "Space-associated channels stand out"


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


def _ci(c):
    return "[n/a]" if not c else f"[{_f(c[0])}, {_f(c[1])}]"


def _above(a, b):
    """CI a entirely above CI b (None when either is missing)."""
    if not a or not b or a[0] is None or b[1] is None:
        return None
    return bool(a[0] > b[1] + _TOL * max(1.0, abs(b[1])))


def _above_words(above, what: str) -> str:
    """``_above``'s answer in words (never True/None in a sentence)."""
    if above is None:
        return f"cannot be compared with {what} (a number is missing)"
    return f"lies above {what}" if above else f"does not lie above {what}"


def _up(t, alpha):
    return t["rho"] is not None and t["p_value"] is not None and t["rho"] > 0 and t["p_value"] < alpha


def _down(t, alpha):
    return t["rho"] is not None and t["p_value"] is not None and t["rho"] < 0 and t["p_value"] < alpha


def _slim(t):
    return {k: t.get(k) for k in ("n", "rho", "p_value", "first", "last", "peak_iteration", "peak_value",
                                  "trough_iteration", "trough_value", "shape")}


def claim_coherence(checkpoints: Sequence[Mapping], focus_tap: str, input_tap: str | None = "hook_embed",
                    alpha: float = 0.05) -> dict:
    """Claim 1 (coherence builds up), see the module docstring for the rules."""
    its, mac = series(checkpoints, focus_tap, "induced", "mean_abs_corr")
    _, pr = series(checkpoints, focus_tap, "induced", "participation_ratio")
    t_mac, t_pr = _c.trend(its, mac, alpha), _c.trend(its, pr, alpha)
    up, down = _up(t_mac, alpha), _down(t_pr, alpha)
    turn = t_mac["shape"] == "rise then fall" or t_pr["shape"] == "fall then rise"
    if t_mac["n"] < 3:
        v1 = _c.INCONCLUSIVE
    elif turn:
        v1 = _c.INCONCLUSIVE if up else _c.NOT_SUPPORTED
    elif up and down:
        v1 = _c.SUPPORTED
    elif not up and not down:
        v1 = _c.NOT_SUPPORTED
    else:
        v1 = _c.INCONCLUSIVE
    text1 = (f"At {focus_tap} (induced, evoked part removed): "
             + _c.trend_text("mean |R|", t_mac) + " " + _c.trend_text("Participation ratio", t_pr))
    if turn:
        text1 += (f" Coherence does not simply build up: mean |R| peaks at iteration {t_mac['peak_iteration']}"
                  f" ({_f(t_mac['peak_value'])}) and is {_f(t_mac['last'])} at the last checkpoint.")
    as_stated = {"verdict": v1, "text": text1,
                 "numbers": {"tap": focus_tap, "iterations": its, "mean_abs_corr_induced": mac,
                             "participation_ratio_induced": pr, "trend_mean_abs_corr": _slim(t_mac),
                             "trend_participation_ratio": _slim(t_pr)}}

    # beyond the null
    if not checkpoints:
        return _c.claim(1, CLAIM1, as_stated, {"verdict": _c.INCONCLUSIVE, "text": "No checkpoints.", "numbers": {}})
    first, last = checkpoints[0], checkpoints[-1]
    s_last = _get(last, "taps", focus_tap, "surrogate", "mean_abs_corr") or {}
    s_first = _get(first, "taps", focus_tap, "surrogate", "mean_abs_corr") or {}
    s_in = (_get(last, "taps", input_tap, "surrogate", "mean_abs_corr") or {}) if input_tap else {}
    sig = s_last.get("significant") if s_last else None
    above_first = _above(s_last.get("ci"), s_first.get("ci")) if len(checkpoints) >= 2 else None
    above_input = _above(s_last.get("ci"), s_in.get("ci"))
    parts = [sig, above_first, above_input]
    if all(p is True for p in parts):
        v2 = _c.SUPPORTED
    elif any(p is False for p in parts):
        v2 = _c.NOT_SUPPORTED
    else:
        v2 = _c.INCONCLUSIVE
    _, exc = series(checkpoints, focus_tap, "surrogate", "mean_abs_corr", "excess")
    t_exc = _c.trend(its, exc, alpha)
    first_it = first.get("iteration")
    text2 = (f"Excess of induced mean |R| over the sample-shuffle surrogate at {focus_tap}: "
             f"{_f(s_last.get('excess'))} {_ci(s_last.get('ci'))} at iteration {last.get('iteration')} "
             f"(surrogate p = {_f(s_last.get('p_value'), 2)}, {'significant' if sig else 'not significant'}), "
             f"vs {_f(s_first.get('excess'))} {_ci(s_first.get('ci'))} at iteration {first.get('iteration')} and "
             + (f"{_f(s_in.get('excess'))} {_ci(s_in.get('ci'))} at the input floor {input_tap}; " if input_tap
                else "no input floor (the model's embedding tap was not recorded); ")
             + f"its CI {_above_words(above_first, f'that of iteration {first_it}')}"
             + f" and {_above_words(above_input, 'that of the input floor')}. "
             + _c.trend_text("The excess", t_exc))
    beyond = {"verdict": v2, "text": text2,
              "numbers": {"tap": focus_tap, "input_tap": input_tap, "last": s_last or None,
                          "first": s_first or None, "input_floor": s_in or None,
                          "significant": sig, "above_first": above_first, "above_input_floor": above_input,
                          "excess_by_checkpoint": exc, "trend_excess": _slim(t_exc),
                          "participation_ratio_last": _get(last, "taps", focus_tap, "surrogate",
                                                           "participation_ratio"),
                          "lambda_max_share_last": _get(last, "taps", focus_tap, "surrogate", "lambda_max_share")}}
    return _c.claim(1, CLAIM1, as_stated, beyond)


def claim_space_channels(checkpoints: Sequence[Mapping], focus_tap: str, input_tap: str | None = "hook_embed",
                         alpha: float = 0.05) -> dict:
    """Claim 4 (space channels stand out), see the module docstring for the rules."""
    its, nlab = series(checkpoints, focus_tap, "n_space_labelled")
    _, sim = series(checkpoints, focus_tap, "max_space_similarity")
    t_lab, t_sim = _c.trend(its, nlab, alpha), _c.trend(its, sim, alpha)
    up_l, up_s = _up(t_lab, alpha), _up(t_sim, alpha)
    if t_lab["n"] < 3 and t_sim["n"] < 3:
        v1 = _c.INCONCLUSIVE
    elif up_l and up_s:
        v1 = _c.SUPPORTED
    elif not up_l and not up_s:
        v1 = _c.NOT_SUPPORTED
    else:
        v1 = _c.INCONCLUSIVE
    text1 = (f"At {focus_tap}: " + _c.trend_text("Channels labelled space or next:space", t_lab, digits=3)
             + " " + _c.trend_text("Largest word-rhythm ACF similarity", t_sim))
    as_stated = {"verdict": v1, "text": text1,
                 "numbers": {"tap": focus_tap, "iterations": its, "n_space_labelled": nlab,
                             "max_space_similarity": sim, "trend_labels": _slim(t_lab),
                             "trend_similarity": _slim(t_sim)}}
    if not checkpoints:
        return _c.claim(4, CLAIM4, as_stated, {"verdict": _c.INCONCLUSIVE, "text": "No checkpoints.", "numbers": {}})
    last = checkpoints[-1]
    ft = _get(last, "taps", focus_tap) or {}
    it = (_get(last, "taps", input_tap) or {}) if input_tap else {}
    n_f, n_i = ft.get("n_space_labelled"), it.get("n_space_labelled")
    s_f, s_i, s_b = ft.get("max_space_similarity"), it.get("max_space_similarity"), ft.get("space_similarity_baseline")
    labels_ok = None if n_f is None or n_i is None else bool(n_f > n_i)
    if s_f is None or s_i is None or s_b is None:
        rhythm_ok = None
    else:
        rhythm_ok = bool(s_f > s_i + _TOL and s_f > s_b + _TOL)
    if labels_ok and rhythm_ok:
        v2 = _c.SUPPORTED
    elif labels_ok is False and rhythm_ok is False:
        v2 = _c.NOT_SUPPORTED
    else:
        v2 = _c.INCONCLUSIVE
    floor = f"the input floor {input_tap}" if input_tap else "the input floor (not recorded)"
    text2 = (f"At iteration {last.get('iteration')}: {n_f if n_f is not None else 'n/a'} channels labelled space or "
             f"next:space at {focus_tap} vs {n_i if n_i is not None else 'n/a'} at {floor}; "
             f"largest word-rhythm similarity {_f(s_f, 2)} vs {_f(s_i, 2)} at {input_tap or 'the input floor'} and "
             f"{_f(s_b, 2)} for the channels' AR(1) twins (red-noise baseline).")
    beyond = {"verdict": v2, "text": text2,
              "numbers": {"tap": focus_tap, "input_tap": input_tap, "iteration": last.get("iteration"),
                          "n_space_labelled": n_f, "n_space_labelled_input": n_i,
                          "max_space_similarity": s_f, "max_space_similarity_input": s_i,
                          "space_similarity_baseline": s_b, "labels_above_input": labels_ok,
                          "rhythm_above_baselines": rhythm_ok}}
    return _c.claim(4, CLAIM4, as_stated, beyond)


def waves_claims(checkpoints: Sequence[Mapping], focus_tap: str, input_tap: str | None = "hook_embed",
                 alpha: float = 0.05) -> list[dict]:
    """Claims 1 and 4 of DESIGN section 7 from per-checkpoint tap summaries.

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

    Returns
    -------
    list of dict
        Two :func:`gptwaves.analysis.claims.claim` dicts, ids 1 and 4.
    """
    cks = sorted(checkpoints, key=lambda c: (c.get("iteration") is None, c.get("iteration") or 0))
    return [claim_coherence(cks, focus_tap, input_tap, alpha), claim_space_channels(cks, focus_tap, input_tap, alpha)]


def relative_to_input(taps: Mapping[str, Mapping], input_tap: str = "hook_embed") -> dict:
    """Every tap of one checkpoint relative to its input floor (DESIGN 4b).

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
        "n_space_labelled": d, "max_space_similarity": d}}`` with each ``d`` =
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
             "max_space_similarity": ("max_space_similarity",)}
    out = {}
    for tap, summ in taps.items():
        row = {}
        for name, path in paths.items():
            a, b = _get(summ, *path), _get(base, *path)
            row[name] = None if a is None or b is None else float(a) - float(b)
        out[tap] = row
    return out
