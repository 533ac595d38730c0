"""Plain JSON values from numpy results: the one NaN/inf -> None rule of every JSON gptwaves writes.

Pure (numpy only), so the analysis modules and the writers in :mod:`gptwaves.io` share it.
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

import numpy as np

__all__ = ["finite_or_none", "jsonable"]


def finite_or_none(v: Any) -> float | None:
    """A plain float, or None for None, NaN, inf and anything that is not a number."""
    if v is None or isinstance(v, (bool, np.bool_)):
        return None if v is None else float(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays -> Python types, tuples -> lists, paths -> str, NaN/inf -> None."""
    t = type(obj)  # the plain Python values first: most of a result's leaves are (the same outputs)
    if t is float:
        return obj if math.isfinite(obj) else None
    if t is str or t is int or t is bool or obj is None:
        return obj
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.ndim and obj.dtype.kind in "biu":  # already Python bools and ints after tolist
            return obj.tolist()
        if obj.ndim and obj.dtype.kind == "f":  # floats, with None for NaN and inf, without a Python loop
            finite = np.isfinite(obj)
            if finite.all():
                return obj.tolist()
            out = obj.astype(object)
            out[~finite] = None
            return out.tolist()
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, PurePath):
        return str(obj)
    return obj
