"""Shapes, masks and per-sample centring of hidden-state waves (docs/method.md, Coherence).

The helpers every wave analysis shares: checking the (S, T, C) shape, the mask of analysed
steps and its one contiguous block per sample, and the per-sample centring all coherence
statistics start from. Pure functions on numpy arrays.

The data conventions (shapes of ``x``, ``chars``, ``next_chars``, ``mask``) and the conventions decided
for centring and constant channels are those stated in :mod:`gptwaves.analysis.waves`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["center"]

_CONST_RTOL = 1e-10


def _as_waves(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"waves must have shape (S, T, C), got {x.shape}")
    return x


def _as_mask(mask, shape2) -> np.ndarray:
    if mask is None:
        return np.ones(shape2, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(shape2):
        raise ValueError(f"mask shape {mask.shape} does not match (S, T) = {tuple(shape2)}")
    return mask


def _bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample [start, stop) of the contiguous True block; empty -> start == stop."""
    S, T = mask.shape
    has = mask.any(axis=1)
    start = np.where(has, mask.argmax(axis=1), 0)
    stop = np.where(has, T - mask[:, ::-1].argmax(axis=1), 0)
    if np.any(mask.sum(axis=1) != stop - start):
        raise ValueError("mask must hold one contiguous block of True steps per sample")
    return start, stop


def _groups(mask: np.ndarray):
    """Yield (sample_indices, start, stop) for samples sharing the same masked block."""
    start, stop = _bounds(mask)
    keys = np.stack([start, stop], axis=1)
    for a, b in np.unique(keys, axis=0):
        if b > a:
            yield np.flatnonzero((start == a) & (stop == b)), int(a), int(b)


def _center0(x: np.ndarray, mask: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Per-sample centred waves with zeros outside the mask, in ``dtype`` (float64 for the stages;
    the calibration's fast engine works in float32)."""
    m = mask[:, :, None]
    xf = np.where(m, x, dtype(0)).astype(dtype, copy=False)
    n = np.maximum(mask.sum(axis=1), 1).astype(dtype)[:, None, None]
    xf -= xf.sum(axis=1, keepdims=True) / n
    xf *= m
    return xf


def _channels_first(x: np.ndarray, a: int, b: int, dtype=np.float32) -> np.ndarray:
    """Steps ``[a, b)`` of waves (S, T, C) as a C-contiguous (C, S, b - a) copy in ``dtype``, one sample
    at a time (a whole-array transposed copy is about 3x slower at recording sizes: its reads leave
    the cache)."""
    S, _, C = x.shape
    out = np.empty((C, S, max(b - a, 0)), dtype)
    for s in range(S):
        out[:, s, :] = x[s, a:b].T
    return out


def _absmax(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Largest absolute raw value of each channel over masked steps."""
    if not mask.any():
        return np.zeros(x.shape[-1])
    return np.abs(x[mask]).max(axis=0).astype(np.float64)


def center(x, mask=None, fill=None) -> np.ndarray:
    """Subtract each sample's per-channel mean over its masked steps.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
        Waves.
    mask : array_like of bool, shape (S, T), optional
        Steps that define the mean. Default: all steps.
    fill : float or None, optional
        Value written at steps outside the mask. ``None`` (default) subtracts
        the mean there too.

    Returns
    -------
    xc : ndarray of float64, shape (S, T, C)
        Centred waves. A sample without masked steps becomes NaN (or ``fill``).
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    xf = x.astype(np.float64)
    n = mask.sum(axis=1).astype(np.float64)[:, None, None]
    s = np.where(mask[:, :, None], xf, 0.0).sum(axis=1, keepdims=True)
    mean = np.divide(s, n, out=np.full(s.shape, np.nan), where=n > 0)
    xc = xf - mean
    if fill is not None:
        xc[~mask] = fill
    return xc


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation between matching rows of a and b (broadcasting)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    am = a - a.mean(axis=-1, keepdims=True)
    bm = b - b.mean(axis=-1, keepdims=True)
    num = (am * bm).sum(axis=-1)
    den = np.sqrt((am**2).sum(axis=-1) * (bm**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)
