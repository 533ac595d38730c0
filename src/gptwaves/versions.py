"""Analysis versions of the stages, the one rule for reusing a stage's earlier output, and the
package versions recorded beside results (docs/method.md, Reuse of earlier results).

A stage's output is reused only when three things match the stored file:

1. its ``analysis_version``: the stage's number in :data:`STAGE_VERSIONS` when it was written;
2. its ``settings``: everything the user chose that determines it;
3. its inputs' checksums (the checkpoint weights, the recording file, the lexicon), stored
   under their own names (``weights_sha256``, ``recording_sha256``, ...) or inside the settings.

A file without a version, with another version, with other settings or inputs, or one that its
validator refuses is recomputed, never reused. :func:`stamp` writes the version into an output.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import GptwavesError
from .io import read_json

__all__ = ["STAGE_VERSIONS", "analysis_version", "stamp", "is_current", "reusable", "package_versions"]

#: The analysis version of each stage's outputs.
#:
#: MAINTAINERS: bump a stage's number (by one) in the same commit as any change that could change
#: a number that stage writes (an estimator, a null, a default that is not part of the stored
#: settings, the random streams, the generation code). Every earlier output of that stage is
#: then recomputed instead of being reused, and so is everything derived from it. Version 1 is
#: the first versioned release: every output written before versions existed is recomputed.
#: A new stage adds its own entry here and uses :func:`reusable` and :func:`stamp`.
STAGE_VERSIONS: dict[str, int] = {
    "recordings": 1,     # recordings/<name>.h5 (+ sidecar): generated tokens, entropies and waves
    "texts": 1,          # spelling/<name>.samples.json and interventions/baseline/*: generated texts
    "waves": 3,          # waves/<name>/summary.json (+ arrays.npz): coherence analysis (2: z, gain, probe; 3: probe folds in float64)
    "spelling": 2,       # spelling/<name>.json: counting statistics of spelling errors (2: position strata)
    "interventions": 1,  # interventions/<name>/result.json
    "calibration": 2,    # calibration outputs (2: the probe folds in float64)
}


def analysis_version(stage: str) -> int:
    """The current analysis version of ``stage`` (a key of :data:`STAGE_VERSIONS`)."""
    try:
        return STAGE_VERSIONS[stage]
    except KeyError:
        raise KeyError(f"no analysis version for stage {stage!r}; add it to gptwaves.versions.STAGE_VERSIONS") from None


def stamp(stage: str, output: Mapping[str, Any]) -> dict:
    """``output`` with the stage's current ``analysis_version`` as its first entry (to be written)."""
    return {"analysis_version": analysis_version(stage), **{k: v for k, v in output.items() if k != "analysis_version"}}


def is_current(output: Any, stage: str) -> bool:
    """True when ``output`` (a stage's JSON object) carries the stage's current analysis version."""
    v = output.get("analysis_version") if isinstance(output, dict) else None
    return isinstance(v, int) and not isinstance(v, bool) and v == analysis_version(stage)


def reusable(path: str | Path, stage: str, settings: Any, *, validate: Callable[[dict], Any] | None = None,
             **inputs: Any) -> dict | None:
    """The earlier output of ``stage`` at ``path`` when it may be reused, else None.

    It may be reused when it is a readable JSON object whose ``analysis_version`` is the stage's
    current one, whose ``settings`` equal ``settings`` and whose entry of each keyword name
    (the inputs' checksums, e.g. ``recording_sha256=...``) equals that keyword's value, and which
    ``validate`` (if given; it raises a :class:`~gptwaves.errors.GptwavesError`, as the
    validators of :mod:`gptwaves.stages.checks` do) accepts. Anything else (missing, unreadable,
    older, different, damaged) gives None: the work is redone and the file rewritten.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        old = read_json(path, f"{stage} output", dict)
    except GptwavesError:
        return None
    if not is_current(old, stage) or old.get("settings") != settings:
        return None
    if any(old.get(k) != v for k, v in inputs.items()):
        return None
    if validate is not None:
        try:
            validate(old)
        except GptwavesError:
            return None
    return old


def package_versions() -> dict[str, str]:
    """Versions of gptwaves, Python and the packages that compute the numbers (recorded in outputs).

    The heavy packages are imported here, not at module level: this module is imported by the
    command line's start-up path, which must not pay for torch and h5py.
    """
    import h5py
    import numpy as np
    import scipy
    import torch

    from . import __version__

    import sklearn

    return {"gptwaves": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "h5py": h5py.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
            "python": platform.python_version()}
