"""Verdicts on the abstract's claims, and trends across training checkpoints.

docs/method.md, "Trends across checkpoints" and "Findings".

Pure functions (numpy / scipy only). Every claim gets two verdicts: **as stated** (what the
abstract literally says, measured) and **beyond the null** (still true once the floors and
references are taken out). A verdict is one of `SUPPORTED`, `NOT_SUPPORTED`, `INCONCLUSIVE`.

Trend rule (docs/method.md, "Trends across checkpoints")
-------------------------------------------------------
A quantity ``v`` measured at iterations ``it`` has the trend Spearman ``rho`` of ``v`` against
``x = log(1 + it)`` with its two-sided p-value, plus the iteration of its maximum and minimum.
The p-value is *exact* up to `EXACT_MAX_N` values (the permutation distribution of rho,
enumerated; ties kept) and the t approximation above: a monotone series of 3 or 4 points has
exact p = 1/3 or 1/12, never "significant" at 0.05.

The *shape* needs statistical support (``alpha`` default 0.05). With at least `SHAPE_MIN_N` values,
the quadratic model ``v ~ 1 + x + x^2`` is fitted by least squares and

1. its omnibus F test against a constant (``p_shape``) must reject at ``alpha``, otherwise the
   shape is ``"no trend"``: under independent noise no shape at all is named with probability
   above ``alpha``, whatever the data (the gate);
2. ``"rise then fall"`` when, in addition, the quadratic term is significant (``p_turn``, t test
   at ``alpha``) and negative, the maximum lies strictly inside the sequence with at least two
   checkpoints after it, and the last value has fallen from the maximum by at least
   `TURN_FRACTION` (25 %) of the rise from the first value to the maximum; ``"fall then rise"``
   is the mirror image (positive quadratic term, the minimum);
3. otherwise ``"rising"`` / ``"falling"`` when the Spearman test rejects at ``alpha`` with
   ``rho > 0`` / ``rho < 0``, and ``"no trend"`` when it does not.

With fewer than `SHAPE_MIN_N` values (no residual degrees of freedom worth a test) only the
Spearman test decides, and no turn is named.

The shape is stated in words next to the verdicts, so that a peak followed by a decline is never
hidden behind a first-versus-last comparison.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
from scipy import special, stats

from ..jsonable import finite_or_none

__all__ = [
    "SUPPORTED",
    "NOT_SUPPORTED",
    "INCONCLUSIVE",
    "VERDICTS",
    "TURN_FRACTION",
    "EXACT_MAX_N",
    "SHAPE_MIN_N",
    "spearman_test",
    "quadratic_test",
    "on_axis",
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

#: Up to this many values the Spearman p-value is exact (all n! orderings; 3.6 M at n = 10).
EXACT_MAX_N = 10

#: Fewest values for which a shape other than a Spearman trend can be named (the quadratic fit
#: then has at least 2 residual degrees of freedom).
SHAPE_MIN_N = 5


_finite = finite_or_none


@lru_cache(maxsize=None)
def _orderings(n: int) -> np.ndarray:
    """All ``n!`` orderings of ``range(n)`` as an ``(n!, n)`` int8 array (built by insertion)."""
    p = np.zeros((1, 0), dtype=np.int8)
    for k in range(1, n + 1):
        m = p.shape[0]
        out = np.empty((m * k, k), dtype=np.int8)
        for pos in range(k):
            blk = out[pos * m : (pos + 1) * m]
            blk[:, :pos], blk[:, pos], blk[:, pos + 1 :] = p[:, :pos], k - 1, p[:, pos:]
        p = out
    return p


@lru_cache(maxsize=None)
def _untied_null(n: int) -> np.ndarray:
    """Sorted |sum of products| of doubled centred ranks 2r - (n + 1) over all orderings (integers)."""
    r = 2 * np.arange(1, n + 1) - (n + 1)
    perms = _orderings(n)
    out = np.concatenate([np.abs(r[perms[lo : lo + (1 << 19)]] @ r) for lo in range(0, len(perms), 1 << 19)])
    return np.sort(out)


def spearman_test(x: Sequence, y: Sequence) -> tuple[float, float, bool]:
    """Spearman rho of ``y`` against ``x`` with its two-sided p-value.

    Parameters
    ----------
    x, y : sequence of float
        Paired values (at least 3, neither constant).

    Returns
    -------
    rho : float
    p_value : float
        Exact (the share of all ``n!`` orderings of ``y``'s ranks whose |rho| is at least the
        observed one; ties keep their average ranks) for ``n <= EXACT_MAX_N``, else scipy's t
        approximation.
    exact : bool
        Whether the p-value is exact.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    rho = float(rx @ ry / np.sqrt((rx @ rx) * (ry @ ry)))
    if n > EXACT_MAX_N:
        return rho, float(stats.spearmanr(x, y).pvalue), False
    obs = abs(float(rx @ ry))
    if len(np.unique(x)) == n and len(np.unique(y)) == n:  # no ties: the null depends on n only
        null = _untied_null(n)
        return rho, float(len(null) - np.searchsorted(null, round(4 * obs) - 0.5)) / len(null), True
    perms = _orderings(n)
    hits = 0
    for lo in range(0, len(perms), 1 << 19):  # chunks keep the gathered ranks under 50 MB
        s = ry[perms[lo : lo + (1 << 19)]] @ rx
        hits += int(np.count_nonzero(np.abs(s) >= obs - 1e-9 * (1 + obs)))
    return rho, hits / len(perms), True


def quadratic_test(x: Sequence, y: Sequence) -> dict:
    """Least-squares fit of ``y ~ 1 + z + z^2`` (``z``: ``x`` standardised) with its tests.

    Parameters
    ----------
    x, y : sequence of float
        At least 4 paired values, ``x`` not constant.

    Returns
    -------
    dict
        ``p_shape`` (omnibus F test of the linear and quadratic terms against a constant, on
        2 and n - 3 degrees of freedom), ``p_turn`` (two-sided t test of the quadratic term,
        n - 3 degrees of freedom), ``curvature`` (the quadratic coefficient, in units of ``y``
        per squared standard deviation of ``x``). A perfect fit gives p-values 0 (1 for a zero
        coefficient).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    z = (x - x.mean()) / x.std()
    X = np.column_stack([np.ones(n), z, z * z])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    rss = float(np.sum((y - X @ beta) ** 2))
    tss = float(np.sum((y - y.mean()) ** 2))
    df = n - 3
    c = float(beta[2])
    scale = max(tss, float(np.sum(y * y)), 1e-300)
    if rss <= 1e-24 * scale:  # exact fit: any non-zero term is certain
        return {"p_shape": 0.0 if tss > 1e-24 * scale else 1.0,
                "p_turn": 0.0 if abs(c) > 1e-12 * np.sqrt(scale) else 1.0, "curvature": c}
    s2 = rss / df
    f = ((tss - rss) / 2) / s2
    se = np.sqrt(s2 * np.linalg.inv(X.T @ X)[2, 2])
    # the F and t survival functions scipy.stats.f.sf and t.sf call, without their per-call argument handling
    return {"p_shape": float(special.fdtrc(2, df, f)), "p_turn": float(2 * special.stdtr(df, -(abs(c) / se))),
            "curvature": c}


def trend(iterations: Sequence, values: Sequence, alpha: float = 0.05) -> dict:
    """Spearman trend of ``values`` against ``log(1 + iteration)``, with peak and shape.

    Parameters
    ----------
    iterations : sequence of int
        Training iterations (non-negative). ``None`` entries are dropped with their value.
    values : sequence of float
        The quantity at each iteration; ``None`` / NaN entries are dropped.
    alpha : float
        Level of every test of the rule.

    Returns
    -------
    dict
        ``n``, ``rho``, ``p_value`` (``None`` with fewer than 3 points or constant values),
        ``exact`` (whether ``p_value`` is exact), ``p_shape`` and ``p_turn`` (the quadratic
        model's tests; ``None`` with fewer than `SHAPE_MIN_N` values), ``first``, ``last``,
        ``peak_iteration``, ``peak_value``, ``trough_iteration``, ``trough_value``, ``shape``
        (see the module docstring) and ``alpha``.
    """
    pairs = [(int(i), _finite(v)) for i, v in zip(iterations, values) if i is not None]
    pairs = sorted((i, v) for i, v in pairs if v is not None)
    out: dict = {"n": len(pairs), "rho": None, "p_value": None, "exact": None, "p_shape": None,
                 "p_turn": None, "first": None, "last": None, "peak_iteration": None, "peak_value": None,
                 "trough_iteration": None, "trough_value": None, "shape": "undefined", "alpha": alpha}
    if not pairs:
        return out
    it = np.array([p[0] for p in pairs], dtype=float)
    v = np.array([p[1] for p in pairs], dtype=float)
    imax, imin = int(np.argmax(v)), int(np.argmin(v))
    out.update(first=float(v[0]), last=float(v[-1]), peak_iteration=int(it[imax]), peak_value=float(v[imax]),
               trough_iteration=int(it[imin]), trough_value=float(v[imin]))
    if len(v) < 3 or np.ptp(v) == 0 or np.ptp(it) == 0:
        out["shape"] = "no trend" if len(v) >= 2 else "undefined"
        return out
    x = np.log1p(it)
    rho, p, exact = spearman_test(x, v)
    out.update(rho=rho, p_value=p, exact=exact)
    n = len(v)
    monotone = ("rising" if rho > 0 else "falling") if p < alpha else "no trend"
    if n < SHAPE_MIN_N:
        out["shape"] = monotone
        return out
    q = quadratic_test(x, v)
    out.update(p_shape=q["p_shape"], p_turn=q["p_turn"])
    if q["p_shape"] >= alpha:  # the gate: no shape without an omnibus trend
        out["shape"] = "no trend"
        return out
    turn = q["p_turn"] < alpha
    rise, fall = v[imax] - v[0], v[imax] - v[-1]
    drop, recover = v[0] - v[imin], v[-1] - v[imin]
    if turn and q["curvature"] < 0 and 0 < imax < n - 2 and rise > 0 and fall >= TURN_FRACTION * rise:
        out["shape"] = "rise then fall"
    elif turn and q["curvature"] > 0 and 0 < imin < n - 2 and drop > 0 and recover >= TURN_FRACTION * drop:
        out["shape"] = "fall then rise"
    else:
        out["shape"] = monotone
    return out


def on_axis(text: str, axis: str = "iteration") -> str:
    """``text`` with its training axis named ``axis``: ``"step"`` turns every "iteration(s)" into
    "step(s)" (a Hugging Face suite's revisions are training steps); ``"iteration"`` keeps it."""
    if axis == "iteration":
        return text
    return re.sub(r"\b([Ii])teration(s?)\b", lambda m: ("S" if m.group(1) == "I" else "s") + "tep" + m.group(2),
                  text)


def _p(p: float) -> str:
    """A p-value for a sentence: two significant digits, "< 0.0001" below that."""
    return "< 0.0001" if p < 1e-4 else f"= {p:.2g}"


def trend_text(name: str, t: Mapping, digits: int = 3) -> str:
    """One sentence describing a `trend` result, e.g. for a findings text."""
    if t.get("n", 0) == 0:
        return f"{name}: no values."

    def f(x):
        return "n/a" if x is None else f"{x:.{digits}g}"

    s = f"{name} {f(t['first'])} -> {f(t['last'])}"
    if t.get("rho") is not None:
        s += (f" (Spearman rho {t['rho']:+.2f} vs log(1+iteration), {'exact ' if t.get('exact') else ''}"
              f"p {_p(t['p_value'])}, n = {t['n']})")
    shape = t.get("shape")
    if shape == "rise then fall":
        s += f"; it rises to a peak of {f(t['peak_value'])} at iteration {t['peak_iteration']}, then falls"
    elif shape == "fall then rise":
        s += f"; it falls to a minimum of {f(t['trough_value'])} at iteration {t['trough_iteration']}, then rises"
    elif shape in ("rising", "falling", "no trend"):
        s += f"; {shape}"
    return s + "."


def trend_verdict(t: Mapping, want: str) -> str:
    """Verdict of an "as stated" trend claim (docs/method.md, "Trends across checkpoints").

    `SUPPORTED` when the `trend` shape is ``want`` ("rising" or "falling"); `NOT_SUPPORTED` when
    it is the opposite trend (evidence against the claim); `INCONCLUSIVE` otherwise: fewer than 3
    values, no p-value, a turn, or "no trend" (a trend the test cannot see is not evidence that
    there is none; with 3 or 4 values not even a monotone series is significant at 0.05).
    """
    if t.get("n", 0) < 3 or t.get("p_value") is None:
        return INCONCLUSIVE
    shape = t.get("shape")
    if shape == want:
        return SUPPORTED
    if {shape, want} == {"rising", "falling"}:
        return NOT_SUPPORTED
    return INCONCLUSIVE


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
