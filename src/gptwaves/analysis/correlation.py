"""Cross-channel correlation and the coherence order parameters (docs/method.md, Coherence).

Pure functions on numpy arrays; the data conventions (shapes, mask, centring, constant
channels) are those of :mod:`gptwaves.analysis.wave_arrays`.
"""

from __future__ import annotations

import numpy as np

from .wave_arrays import _CONST_RTOL, _absmax, _as_mask, _as_waves, _center0

__all__ = ["correlation_matrix", "order_parameters"]


def _corr_from_centered(xc0: np.ndarray, absmax: np.ndarray, n: int) -> np.ndarray:
    C = xc0.shape[-1]
    X = xc0.reshape(-1, C)
    cov = X.T @ X
    var = np.diag(cov).copy()
    n = max(int(n), 1)
    sd = np.sqrt(np.maximum(var, 0.0) / n)
    const = (var <= 0) | (sd <= _CONST_RTOL * absmax)
    inv = np.zeros(C)
    inv[~const] = 1.0 / np.sqrt(var[~const])
    R = cov * inv[:, None] * inv[None, :]
    np.clip(R, -1.0, 1.0, out=R)
    np.fill_diagonal(R, 1.0)
    return R


def correlation_matrix(x, mask=None) -> np.ndarray:
    """Cross-channel Pearson correlation of per-sample centred, pooled waves.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
        Waves.
    mask : array_like of bool, shape (S, T), optional
        Steps to pool (default all).

    Returns
    -------
    R : ndarray, shape (C, C)
        Pearson correlation over all masked steps of all samples, after
        subtracting each sample's per-channel mean. Constant channels (see the
        module notes) get 0 off the diagonal and 1 on it; no NaN is produced.
    """
    x = _as_waves(x)
    mask = _as_mask(mask, x.shape[:2])
    return _corr_from_centered(_center0(x, mask), _absmax(x, mask), mask.sum())


def order_parameters(R) -> dict:
    """Coherence order parameters of a correlation matrix.

    Parameters
    ----------
    R : array_like, shape (C, C)
        Correlation matrix (NaN entries are treated as 0 off the diagonal).

    Returns
    -------
    dict
        ``mean_abs_corr``: mean of ``|R_ij|`` over i != j (NaN if C < 2);
        ``lambda_max_share``: largest eigenvalue / C (1 for fully coherent,
        1/C for independent channels);
        ``participation_ratio``: ``(sum l)^2 / sum l^2`` over eigenvalues
        (effective number of independent modes, between 1 and C).
    """
    R = np.array(R, dtype=np.float64)
    C = R.shape[0]
    R = np.nan_to_num(R, nan=0.0)
    R = 0.5 * (R + R.T)
    off = ~np.eye(C, dtype=bool)
    mac = float(np.abs(R[off]).mean()) if C > 1 else float("nan")
    lam = np.linalg.eigvalsh(R)
    s2 = float(np.sum(lam**2))
    return {
        "mean_abs_corr": mac,
        "lambda_max_share": float(lam[-1] / C),
        "participation_ratio": float(np.sum(lam) ** 2 / s2) if s2 > 0 else float("nan"),
    }
