"""Channel sets and edit modes of channel interventions (docs/method.md, Interventions).

Pure functions (no file I/O, no torch): the parsing of channel specifications and edit modes
given on the command line, their canonical spellings and file-safe names, and the random
control channels. Errors in user input raise :class:`gptwaves.errors.GptwavesError` with a
one-line message. Every name is re-exported by :mod:`gptwaves.analysis.intervention`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

import numpy as np

from ..errors import GptwavesError

__all__ = ["MAX_EDIT_VALUE", "parse_channel_spec", "channel_spec_canonical", "parse_mode", "mode_canonical", "slug",
           "control_channels"]

# Edit modes (parse_mode): ``ablate`` (set to 0), ``mean`` (set to the channel mean),
# ``clamp=V`` (set to V), ``scale=F`` (multiply by F).

_INT = r"\d+"

#: Largest magnitude of a clamp value or scale factor: the edited activations (float32) and what
#: the model computes from them stay finite (docs/method.md, "Interventions").
MAX_EDIT_VALUE = 1e6


def parse_channel_spec(spec: str, n_channels: int, labels: Sequence[str] | None = None,
                       clusters: Sequence[int] | None = None) -> np.ndarray:
    """Resolve a channel specification into sorted, unique channel indices.

    Parameters
    ----------
    spec : str
        One of

        * a list of channels and inclusive ranges, comma separated:
          ``"3,17,40"``, ``"10-20"``, ``"0,4-7,12"`` (whitespace ignored);
        * ``"all"``: every channel;
        * ``"cluster:K"`` (or ``"cluster:K1,K2"``): channels whose cluster id
          (``clusters[c]``) is K;
        * ``"label:NAME"``: channels whose function label (``labels[c]``) is
          NAME, e.g. ``label:space`` or ``label:next:space``.
    n_channels : int
        Number of channels C of the tap; valid indices are ``0..C-1``.
    labels : sequence of str, optional
        Function label per channel (``""`` for unlabelled); needed by ``label:``.
    clusters : sequence of int, optional
        Cluster id per channel; needed by ``cluster:``.

    Returns
    -------
    ndarray of int64
        Sorted unique channel indices (never empty).

    Raises
    ------
    GptwavesError
        Malformed spec, a reversed range, an index outside ``0..C-1``, an
        unknown cluster id or label, or an empty channel set.

    Examples
    --------
    >>> parse_channel_spec("3, 1-2,3", 8).tolist()
    [1, 2, 3]
    >>> parse_channel_spec("label:space", 3, labels=["space", "", "space"]).tolist()
    [0, 2]
    """
    if not isinstance(spec, str) or not spec.strip():
        raise GptwavesError("channel spec is empty: give channels like '3,17,40' or '10-20', "
                            "'cluster:K' or 'label:NAME'")
    n_channels = int(n_channels)
    s = spec.strip()
    if s.startswith("cluster:"):
        out = _cluster_channels(spec, s, n_channels, clusters)
    elif s.startswith("label:"):
        out = _labelled_channels(spec, s, n_channels, labels)
    elif s == "all":
        out = np.arange(n_channels)
    else:
        out = _listed_channels(spec, s, n_channels)
    out = np.unique(np.asarray(out, dtype=np.int64))
    if out.size == 0:
        raise GptwavesError(f"channel spec {spec!r} selects no channel")
    return out


def _cluster_channels(spec: str, s: str, n_channels: int, clusters) -> np.ndarray:
    """Channels of a ``cluster:K[,K2...]`` spec (``s`` is the stripped spec)."""
    if clusters is None:
        raise GptwavesError("cluster ids are not available for 'cluster:' specs")
    cl = np.asarray(clusters).ravel()
    if cl.size != n_channels:
        raise GptwavesError(f"cluster ids cover {cl.size} channels, the tap has {n_channels}")
    body = s[len("cluster:"):].replace(" ", "")
    if not re.fullmatch(rf"{_INT}(,{_INT})*", body):
        raise GptwavesError(f"bad cluster spec {spec!r}: use 'cluster:K' with an integer K")
    have = sorted({int(v) for v in cl.tolist()})
    want = [int(v) for v in body.split(",")]
    bad = [k for k in want if k not in have]
    if bad:
        raise GptwavesError(f"no cluster {', '.join(map(str, bad))} at this tap "
                            f"(cluster ids: {', '.join(map(str, have))})")
    return np.flatnonzero(np.isin(cl, want))


def _labelled_channels(spec: str, s: str, n_channels: int, labels) -> np.ndarray:
    """Channels of a ``label:NAME`` spec (``s`` is the stripped spec)."""
    if labels is None:
        raise GptwavesError("channel labels are not available for 'label:' specs")
    lab = [str(v) for v in np.asarray(labels, dtype=object).ravel().tolist()]
    if len(lab) != n_channels:
        raise GptwavesError(f"labels cover {len(lab)} channels, the tap has {n_channels}")
    name = s[len("label:"):].strip()
    if not name:
        raise GptwavesError(f"bad label spec {spec!r}: use 'label:NAME', e.g. label:space")
    out = np.flatnonzero(np.asarray([v == name for v in lab], dtype=bool))
    if out.size == 0:
        counts: dict[str, int] = {}
        for v in lab:
            if v:
                counts[v] = counts.get(v, 0) + 1
        have = ", ".join(f"{k} ({n})" for k, n in sorted(counts.items())) or "none"
        raise GptwavesError(f"no channel is labelled {name!r} at this tap (labels present: {have})")
    return out


def _listed_channels(spec: str, s: str, n_channels: int) -> np.ndarray:
    """Channels of a list of indices and inclusive ranges (``s`` is the stripped spec)."""
    body = re.sub(r"\s+", "", s)
    if not re.fullmatch(rf"{_INT}(-{_INT})?(,{_INT}(-{_INT})?)*", body):
        raise GptwavesError(f"bad channel spec {spec!r}: use a list like '3,17,40', ranges like "
                            "'10-20', 'all', 'cluster:K' or 'label:NAME'")
    # every bound is checked against the width before any range is expanded (no allocation
    # from a spec like 1-999999999)
    parts = []
    for part in body.split(","):
        a_s, _, b_s = part.partition("-")
        if len(a_s) > 12 or len(b_s) > 12:
            raise GptwavesError(f"channel {part!r} out of range: this tap has {n_channels} channels "
                                f"(0-{n_channels - 1})")
        a, b = int(a_s), int(b_s or a_s)
        if b < a:
            raise GptwavesError(f"bad channel range {part!r}: the end is before the start")
        if b >= n_channels:
            raise GptwavesError(f"channel {b if a < n_channels else a} out of range: this tap has {n_channels} "
                                f"channels (0-{n_channels - 1})")
        parts.append((a, b))
    return np.unique(np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in parts]))


def channel_spec_canonical(spec: str) -> str:
    """A canonical spelling of a spec (for output names): lists as sorted ranges.

    ``"17, 3,4,5"`` -> ``"3-5,17"``; ``cluster:`` / ``label:`` specs are only
    stripped of whitespace. The spec must already be valid.
    """
    s = spec.strip()
    if s.startswith("cluster:"):
        return re.sub(r"\s+", "", s)
    if s.startswith("label:"):
        return "label:" + s[len("label:"):].strip()
    if s == "all":
        return s
    idx: set[int] = set()
    for part in re.sub(r"\s+", "", s).split(","):
        a, _, b = part.partition("-")
        idx.update(range(int(a), int(b or a) + 1))
    return _ranges(sorted(idx))


def _ranges(idx: Sequence[int]) -> str:
    out, i = [], 0
    idx = list(idx)
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        out.append(str(idx[i]) if j == i else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ",".join(out)


def control_channels(target: Sequence[int], n_channels: int, seed: int = 0) -> np.ndarray | None:
    """Randomly chosen control channels: as many as ``target``, disjoint from it.

    Parameters
    ----------
    target : sequence of int
        The intervened channels.
    n_channels : int
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    ndarray of int64 or None
        Sorted indices, or None when fewer than ``len(target)`` channels lie
        outside the target set (no disjoint control exists).
    """
    target = np.unique(np.asarray(target, dtype=np.int64))
    rest = np.setdiff1d(np.arange(int(n_channels)), target)
    if rest.size < target.size:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rest, size=target.size, replace=False)).astype(np.int64)


def parse_mode(mode: str) -> dict:
    """Parse an edit mode.

    Parameters
    ----------
    mode : str
        ``"ablate"`` (set the channels to 0), ``"mean"`` (set them to their
        mean value), ``"clamp=V"`` (set them to V) or ``"scale=F"`` (multiply
        them by F). V and F are finite decimal numbers (``1``, ``-2.5``,
        ``3e-1``) of magnitude at most ``MAX_EDIT_VALUE``. Surrounding whitespace is
        ignored; nothing else is accepted.

    Returns
    -------
    dict
        ``{"kind": "ablate"|"mean"|"clamp"|"scale", "value": float or None}``.

    Raises
    ------
    GptwavesError
        For anything else (unknown kind, missing/extra/non-finite value).
    """
    usage = "use 'ablate', 'mean', 'clamp=V' or 'scale=F'"
    if not isinstance(mode, str) or not mode.strip():
        raise GptwavesError(f"edit mode is empty: {usage}")
    s = mode.strip()
    if s in ("ablate", "mean"):
        return {"kind": s, "value": None}
    kind, eq, val = s.partition("=")
    kind = kind.strip()
    if kind in ("ablate", "mean"):
        raise GptwavesError(f"edit mode {kind!r} takes no value (got {mode!r})")
    if kind not in ("clamp", "scale"):
        raise GptwavesError(f"unknown edit mode {mode!r}: {usage}")
    val = val.strip()
    if not eq or not val:
        raise GptwavesError(f"edit mode {kind!r} needs a value: {kind}={'V' if kind == 'clamp' else 'F'}")
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", val):
        raise GptwavesError(f"bad value {val!r} in edit mode {mode!r}: give a finite number")
    v = float(val)
    if not math.isfinite(v) or abs(v) > MAX_EDIT_VALUE:
        raise GptwavesError(f"bad value {val!r} in edit mode {mode!r}: give a finite number of magnitude at most "
                            f"{MAX_EDIT_VALUE:g} (larger edits overflow the activations)")
    return {"kind": kind, "value": v}


def mode_canonical(mode: dict) -> str:
    """Canonical text of a parsed mode: ``ablate``, ``mean``, ``clamp=2.0``, ``scale=0.5``."""
    if mode["value"] is None:
        return mode["kind"]
    return f"{mode['kind']}={float(mode['value'])!r}"


def slug(text: str, max_len: int = 60) -> str:
    """A filesystem-safe name for ``text``.

    Characters outside ``[A-Za-z0-9.+-]`` become ``_`` (``:`` ``,`` ``=`` ``/``
    ...), a leading ``.`` or ``-`` is replaced, and names longer than
    ``max_len`` are shortened and given an 8-hex-digit hash of the original
    text, so distinct long texts keep distinct names.
    """
    s = re.sub(r"[^A-Za-z0-9.+-]", "_", text) or "_"
    if s[0] in ".-":
        s = "_" + s
    if len(s) > max_len:
        h = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        s = s[: max_len - 9] + "~" + h
    return s

