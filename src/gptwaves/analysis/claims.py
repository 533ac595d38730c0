"""Verdicts on the abstract's claims, and trends across training checkpoints (DESIGN 4b, 7).

Pure functions (numpy / scipy only). Every claim gets two verdicts: **as stated** (what the
abstract literally says, measured) and **beyond the null** (still true once the floors and
references are taken out). A verdict is one of `SUPPORTED`, `NOT_SUPPORTED`, `INCONCLUSIVE`.

Trend rule (DESIGN 4b, "Across checkpoints")
--------------------------------------------
A quantity ``v`` measured at iterations ``it`` has the trend Spearman ``rho`` of ``v`` against
``log(1 + it)`` with its two-sided p-value, plus the iteration of its maximum and minimum. Its
*shape* is decided as follows (``alpha`` default 0.05):

* ``"rise then fall"`` when the maximum lies strictly inside the sequence, at least two
  checkpoints follow it, and the last value has fallen from the maximum by at least
  `TURN_FRACTION` (25 %) of the rise from the first value to the maximum;
* ``"fall then rise"``, the mirror image with the minimum;
* otherwise ``"rising"`` / ``"falling"`` when the Spearman test rejects at ``alpha`` with
  ``rho > 0`` / ``rho < 0``, and ``"no trend"`` when it does not.

The shape is stated in words next to the verdicts, so that a peak followed by a decline is never
hidden behind a first-versus-last comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from ..jsonable import finite_or_none

__all__ = [
    "SUPPORTED",
    "NOT_SUPPORTED",
    "INCONCLUSIVE",
    "VERDICTS",
    "TURN_FRACTION",
    "trend",
    "trend_text",
    "trend_verdict",
    "verdict",
    "claim",
]

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"
VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)

#: Share of the rise (first -> peak) that must be given back by the last checkpoint for a
#: sequence to be called "rise then fall".
TURN_FRACTION = 0.25


_finite = finite_or_none


def trend(iterations: Sequence, values: Sequence, alpha: float = 0.05) -> dict:
    """Spearman trend of ``values`` against ``log(1 + iteration)``, with peak and shape.

    Parameters
    ----------
    iterations : sequence of int
        Training iterations (non-negative). ``None`` entries are dropped with their value.
    values : sequence of float
        The quantity at each iteration; ``None`` / NaN entries are dropped.
    alpha : float
        Level of the two-sided Spearman test.

    Returns
    -------
    dict
        ``n``, ``rho``, ``p_value`` (``None`` with fewer than 3 points or constant values),
        ``first``, ``last``, ``peak_iteration``, ``peak_value``, ``trough_iteration``,
        ``trough_value``, ``shape`` (see the module docstring) and ``alpha``.
    """
    pairs = [(int(i), _finite(v)) for i, v in zip(iterations, values) if i is not None]
    pairs = sorted((i, v) for i, v in pairs if v is not None)
    out: dict = {"n": len(pairs), "rho": None, "p_value": None, "first": None, "last": None,
                 "peak_iteration": None, "peak_value": None, "trough_iteration": None,
                 "trough_value": None, "shape": "undefined", "alpha": alpha}
    if not pairs:
        return out
    it = np.array([p[0] for p in pairs], dtype=float)
    v = np.array([p[1] for p in pairs], dtype=float)
    imax, imin = int(np.argmax(v)), int(np.argmin(v))
    out.update(first=float(v[0]), last=float(v[-1]), peak_iteration=int(it[imax]), peak_value=float(v[imax]),
               trough_iteration=int(it[imin]), trough_value=float(v[imin]))
    if len(v) < 3 or np.ptp(v) == 0:
        out["shape"] = "no trend" if len(v) >= 2 else "undefined"
        return out
    res = stats.spearmanr(np.log1p(it), v)
    rho, p = float(res.statistic), float(res.pvalue)
    out.update(rho=rho, p_value=p)
    n = len(v)
    rise, fall = v[imax] - v[0], v[imax] - v[-1]
    drop, recover = v[0] - v[imin], v[-1] - v[imin]
    if 0 < imax < n - 2 and rise > 0 and fall >= TURN_FRACTION * rise:
        out["shape"] = "rise then fall"
    elif 0 < imin < n - 2 and drop > 0 and recover >= TURN_FRACTION * drop:
        out["shape"] = "fall then rise"
    elif p < alpha:
        out["shape"] = "rising" if rho > 0 else "falling"
    else:
        out["shape"] = "no trend"
    return out


def trend_text(name: str, t: Mapping, digits: int = 3) -> str:
    """One sentence describing a `trend` result, e.g. for a findings text."""
    if t.get("n", 0) == 0:
        return f"{name}: no values."

    def f(x):
        return "n/a" if x is None else f"{x:.{digits}g}"

    s = f"{name} {f(t['first'])} -> {f(t['last'])}"
    if t.get("rho") is not None:
        s += f" (Spearman rho {t['rho']:+.2f} vs log(1+iteration), p = {t['p_value']:.2g}, n = {t['n']})"
    shape = t.get("shape")
    if shape == "rise then fall":
        s += f"; it rises to a peak of {f(t['peak_value'])} at iteration {t['peak_iteration']}, then falls"
    elif shape == "fall then rise":
        s += f"; it falls to a minimum of {f(t['trough_value'])} at iteration {t['trough_iteration']}, then rises"
    elif shape in ("rising", "falling", "no trend"):
        s += f"; {shape}"
    return s + "."


def trend_verdict(t: Mapping, want: str) -> str:
    """Verdict of an "as stated" trend claim: `SUPPORTED` when the `trend` shape is ``want``
    ("rising" or "falling"), `INCONCLUSIVE` with fewer than 3 values, no p-value, or a turn
    ("rise then fall" / "fall then rise"), `NOT_SUPPORTED` otherwise."""
    if t.get("n", 0) < 3 or t.get("p_value") is None:
        return INCONCLUSIVE
    if t.get("shape") == want:
        return SUPPORTED
    if t.get("shape") in ("rise then fall", "fall then rise"):
        return INCONCLUSIVE
    return NOT_SUPPORTED


def verdict(ok: bool | None, against: bool | None = None) -> str:
    """`SUPPORTED` when ``ok``; `NOT_SUPPORTED` when ``against`` (or ``ok is False`` and
    ``against is None``); `INCONCLUSIVE` otherwise (including ``ok is None``: not measurable)."""
    if ok is None:
        return INCONCLUSIVE
    if ok:
        return SUPPORTED
    if against is None or against:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def claim(number: int, title: str, as_stated: Mapping, beyond_null: Mapping, **extra) -> dict:
    """One claim of the abstract with its two verdicts.

    ``as_stated`` and ``beyond_null`` are mappings with ``verdict`` (one of `VERDICTS`),
    ``text`` (a sentence with the numbers) and ``numbers`` (a JSON-ready dict).
    """
    for part in (as_stated, beyond_null):
        if part.get("verdict") not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {part.get('verdict')!r}")
    return {"id": int(number), "claim": title,
            "as_stated": {"verdict": as_stated["verdict"], "text": as_stated.get("text", ""),
                          "numbers": dict(as_stated.get("numbers", {}))},
            "beyond_null": {"verdict": beyond_null["verdict"], "text": beyond_null.get("text", ""),
                            "numbers": dict(beyond_null.get("numbers", {}))},
            **extra}
