"""One tap of a recording through `analyze_tap`, as the waves stage runs it, in this process or in a
worker process (`gptwaves.workers`): this module imports no torch and no I/O, so that a worker
starts fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import CorruptArtefactError, GptwavesError

__all__ = ["analyze_one"]


def analyze_one(x, chars, nxt, mask, kw: dict, where: str, tap: str) -> dict:
    """`analyze_tap` of one tap's waves, its bad input as one line."""
    from ..analysis.waves import analyze_tap

    if not np.isfinite(x).all():
        raise CorruptArtefactError(f"recording {where}: waves/{tap} holds NaN or infinite values")
    try:
        return analyze_tap(x, chars, nxt, mask=mask, **kw)
    except ValueError as e:
        raise GptwavesError(f"{Path(where).name}, tap {tap}: {e}") from None
