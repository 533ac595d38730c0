"""Basis-free test of "space channels": a cross-validated linear probe (docs/method.md, Findings, claim 4).

The residual stream has no privileged basis, so "channels that stand out" is measured by what a
*linear read-out of all channels* can tell, not by per-channel labels (docs/method.md, "Findings",
claim 4). Pure functions on numpy arrays (no torch, no file I/O); scikit-learn supplies the folds
(``GroupKFold``) and, in the tests, the reference estimator the closed form is compared with.

Decisions taken here (the caller should know)
---------------------------------------------
* Target: ``y = 1`` when the next character ``c_{t+1}`` is a space, at the analysed (masked) steps.
* Probe: ridge regression of ``y`` on the tap's raw values (a linear-probability probe:
  ``StandardScaler`` then ridge over ``alphas``, penalty chosen inside each training fold by
  efficient leave-one-out: scikit-learn's ``RidgeCV`` estimator, computed in closed form by
  :func:`ridge_fit`), cross-validated with ``GroupKFold`` by sample, so no sample is in the
  training and the test fold at once. Metric: out-of-fold ``R^2 = 1 - SSE / SST`` over all
  analysed steps (SST about the pooled mean). Decided R^2 rather than AUC: it is the scale of the
  equivalence margin (0.02 in probe R^2), it is additive over samples (so the jackknife below is
  exact and cheap), and it is 0 for a probe that knows nothing (slightly below 0 out of fold).
* Cost: the probe is fitted on at most ``max_steps`` evenly spaced steps per sample (default 64:
  64 samples x 64 steps = 4096 rows for the paper's recordings) and *evaluated* on every analysed
  step of the held-out samples; the subsampling only thins the training rows.
* Uncertainty: a grouped delete-one-sample jackknife of the out-of-fold R^2 (the out-of-fold
  predictions held fixed: the interval is of the estimate at this S x T given the fitted folds,
  it does not include refitting). Its leave-one-out values (``loo``) give *paired* CIs of the
  difference between two taps of the same recording
  (:func:`gptwaves.analysis.coherence_nulls.paired_difference`).
* Word rhythm of the projection: the similarity (Pearson over lags 1..``nlags``) of the ACF of
  the out-of-fold projection with the ACF of the indicator "next character is a space" (the
  word-rhythm reference of section 4), the ACFs averaged over samples.
* Red-noise null *distribution*: ``n_null`` replicates in which every channel is replaced by an
  independent stationary AR(1) series with that channel's lag-1 autocorrelation (same S x T,
  same mask, same targets), each probed the same way with the penalty fixed at the median
  penalty chosen on the data. Reported: the null R^2 values, their 95th percentile (an order
  statistic, ``method="higher"``: the largest of 20), and the same for the rhythm similarity.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy import stats as _stats

__all__ = ["space_probe", "ridge_fit", "PROBE_ALPHAS"]

#: Ridge penalties searched inside each training fold (on standardised channels).
PROBE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 7))


def _fit_rows(mask: np.ndarray, max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample, step) indices of the training rows: at most ``max_steps`` evenly spaced per sample."""
    ss, tt = [], []
    for s in range(mask.shape[0]):
        t = np.flatnonzero(mask[s])
        if t.size == 0:
            continue
        if t.size > max_steps:
            t = t[np.round(np.linspace(0, t.size - 1, max_steps)).astype(int)]
        ss.append(np.full(t.size, s))
        tt.append(t)
    if not ss:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(ss), np.concatenate(tt)


def _acf_mean(v: np.ndarray, mask: np.ndarray, nlags: int) -> np.ndarray:
    """Biased ACF (lags 0..nlags) of each sample's centred masked block, averaged over samples."""
    out, n = np.zeros(nlags + 1), 0
    for s in range(v.shape[0]):
        t = np.flatnonzero(mask[s])
        if t.size < 2:
            continue
        a = v[s, t[0]:t[-1] + 1] - v[s, t[0]:t[-1] + 1].mean()
        c0 = float(a @ a)
        if c0 <= 0:
            continue
        L = min(nlags, a.size - 1)
        f = np.fft.rfft(a, 2 * a.size)
        r = np.fft.irfft(f * np.conj(f))[: L + 1] / c0
        out[: L + 1] += r
        n += 1
    return out / n if n else np.full(nlags + 1, np.nan)


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a[1:], b[1:]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(_stats.pearsonr(a[ok], b[ok]).statistic)


def _r2_parts(y: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> tuple[float, np.ndarray | None]:
    """Out-of-fold R^2 over the masked steps and its leave-one-sample-out values (None if undefined)."""
    m = mask.astype(np.float64)
    n_s = m.sum(axis=1)
    sy = (y * m).sum(axis=1)
    syy = (y * y * m).sum(axis=1)
    sse = (np.square(y - pred) * m).sum(axis=1)

    def r2(n, a, b, e):
        sst = b - a * a / n if n > 0 else 0.0
        return 1.0 - e / sst if sst > 1e-12 else float("nan")

    full = r2(n_s.sum(), sy.sum(), syy.sum(), sse.sum())
    used = np.flatnonzero(n_s > 0)
    loo = np.array([r2(n_s.sum() - n_s[s], sy.sum() - sy[s], syy.sum() - syy[s], sse.sum() - sse[s]) for s in used])
    return full, (loo if np.isfinite(loo).all() and used.size >= 3 else None)


def ridge_fit(Z, y, alphas):
    """Ridge regression with an unpenalised intercept on standardised rows ``Z`` (n, C), the penalty
    chosen among ``alphas`` by efficient leave-one-out, in closed form.

    The same estimator as scikit-learn's ``RidgeCV(alphas=alphas)`` (default generalised
    cross-validation: the penalty with the smallest mean squared leave-one-out error, the first of
    equal ones) and, for one penalty, ``Ridge(alpha)``; tests/test_probe.py compares them. With the
    centred rows ``Zc = V S^2 V'`` eigen-decomposed once (C x C), each penalty costs a matrix-vector
    product: the hat matrix's diagonal is ``1/n + sum_k W_ik^2 / (s_k^2 + alpha)`` with ``W = Zc V``,
    and the leave-one-out residual is ``e_i / (1 - h_ii)``. scikit-learn forms that diagonal
    anew for every penalty, several times slower at the probe's sizes (docs/method.md, Findings, claim 4).

    Parameters
    ----------
    Z : ndarray, shape (n, C)
    y : ndarray, shape (n,)
    alphas : float or sequence of float
        One penalty (no search) or the penalties searched.

    Returns
    -------
    coef : ndarray, shape (C,)
    intercept : float
    alpha : float
        The penalty used.
    """
    Z = np.asarray(Z, np.float64)
    y = np.asarray(y, np.float64)
    zm, ym = Z.mean(axis=0), float(y.mean())
    Zc, yc = Z - zm, y - ym
    grid = np.atleast_1d(np.asarray(alphas, np.float64))
    coef, alpha = _ridge_solve(Zc.T @ Zc, Zc.T @ yc, grid, lambda V: Zc @ V, yc)
    return coef, ym - float(zm @ coef), alpha


def _ridge_solve(G, Zy, grid, rows_times=None, yc=None):
    """`ridge_fit`'s coefficients and penalty from the centred rows' Gram ``G = Zc'Zc`` (C, C) and
    ``Zy = Zc'yc`` (C,): one penalty by Cholesky, a search over ``grid`` by the leave-one-out
    residuals, for which ``rows_times(V)`` gives ``Zc @ V`` and ``yc`` the centred targets."""
    if grid.size == 1 and grid[0] > 0:  # one penalty: the normal equations, positive definite
        A = np.array(G, np.float64)
        A[np.diag_indices_from(A)] += grid[0]
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(A), Zy), float(grid[0])  # LAPACK potrf/potrs
    s2, V = np.linalg.eigh(G)
    s2 = np.maximum(s2, 0.0)
    Wy = V.T @ Zy
    k = 0
    if grid.size > 1:
        W = rows_times(V)  # in the search's dtype (`_cv_predict`)
        D = 1.0 / (s2[:, None] + grid[None, :])  # (C, A)
        h = 1.0 / yc.size + np.square(W) @ D.astype(W.dtype, copy=False)  # (n, A): the hat matrix's diagonal
        resid = yc[:, None] - W @ (D * Wy[:, None]).astype(W.dtype, copy=False)
        loo = resid / (1.0 - h)
        k = int(np.argmin(np.mean(np.square(loo), axis=0)))
    return V @ (Wy / (s2 + grid[k])), float(grid[k])


def _standard_scale(var: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """``StandardScaler.scale_`` from population variances and means of ``n`` rows: the standard
    deviation, 1 for the features scikit-learn counts as constant (its float64 two-pass error bound)."""
    eps = np.finfo(np.float64).eps
    const = var <= n * eps * var + (n * mean * eps) ** 2
    return np.where(const, 1.0, np.sqrt(np.maximum(var, 0.0)))


def _fold_rows(groups, fit, folds) -> list[np.ndarray]:
    """Per fold, the rows it predicts: every row of the samples in its test part."""
    return [np.isin(groups, np.unique(groups[fit[test]])) for _, test in folds]


def _cv_predict(X, y, groups, fit, folds, alphas, sels=None, search_dtype=np.float64):
    """Out-of-fold predictions for every row of ``X`` (N, C) and the penalty chosen per fold.

    ``fit`` indexes the training rows; ``folds`` are (train, test) positions into ``fit``; ``sels``
    (optional, from `_fold_rows`) the rows each fold predicts. Each training fold is standardised as
    scikit-learn's ``StandardScaler`` does and ridge-regressed (`ridge_fit`): with ``alphas`` a
    sequence the penalty is searched, with a number it is fixed. The folds' means, variances and Grams
    come from those of all training rows less those of the fold's test rows (the rows first centred
    on their overall mean, so the subtraction keeps float64 precision); a channel whose fold variance
    is small enough for that subtraction to matter is recomputed from its rows. The same predictions
    as the pipeline within 1e-6 (tests/test_probe.py), in a fraction of its time. ``search_dtype``:
    of the rows in the penalty search's leave-one-out residuals (float32 halves its cost; the
    coefficients are float64 either way).
    """
    from .surrogates import gram

    sels = _fold_rows(groups, fit, folds) if sels is None else sels
    grid = np.atleast_1d(np.asarray(alphas, np.float64))
    search = np.ndim(alphas) > 0
    Xf = np.asarray(X[fit], np.float64)
    m0 = Xf.mean(axis=0)
    Xf -= m0
    yf = np.asarray(y[fit], np.float64)
    G, sx, sxy, sy = gram(Xf.T), Xf.sum(axis=0), Xf.T @ yf, float(yf.sum())
    var_all = np.diag(G) / max(Xf.shape[0], 1)
    dt = np.dtype(search_dtype)
    Xs = Xf.astype(dt, copy=False)
    pred = np.zeros(X.shape[0])
    chosen = []
    for (train, test), sel in zip(folds, sels):
        Xt, yt, n = Xf[test], yf[test], train.size
        mu = (sx - Xt.sum(axis=0)) / n
        ybar = (sy - float(yt.sum())) / n
        Gc = G - gram(Xt.T) - n * np.outer(mu, mu)
        var = np.diag(Gc) / n
        small = np.flatnonzero(var <= 1e-6 * var_all)  # cancellation: this channel from its own rows
        if small.size:
            col = Xf[np.ix_(train, small)]
            mu[small] = col.mean(axis=0)
            var[small] = np.square(col - mu[small]).mean(axis=0)
            Xc = Xf[train] - mu
            Gc[small, :] = Xc[:, small].T @ Xc
            Gc[:, small] = Gc[small, :].T
        scale = _standard_scale(var, mu + m0, n)
        Zy = (sxy - Xt.T @ yt - n * ybar * mu) / scale
        Gz = Gc / np.outer(scale, scale)
        if search:
            Xr = Xs[train]
            yc = yf[train] - ybar
            coef, alpha = _ridge_solve(Gz, Zy, grid, lambda V: Xr @ (V / scale[:, None]).astype(dt, copy=False)
                                       - ((mu / scale) @ V).astype(dt, copy=False), yc)
            chosen.append(alpha)
        else:
            coef, _ = _ridge_solve(Gz, Zy, grid)
        w = coef / scale  # prediction on the raw rows: one matrix-vector product
        pred[sel] = X[sel] @ w + (ybar - float((mu + m0) @ w))
    return pred, chosen


def _ar1_like(shape, rng: np.random.Generator, phi: np.ndarray) -> np.ndarray:
    """Independent stationary AR(1) channels with lag-1 coefficients ``phi``: float32 (S, T, C)."""
    S, T, C = shape
    e = rng.standard_normal((T, S, C), dtype=np.float32)
    p = np.asarray(phi, np.float32)
    e[0] /= np.sqrt(np.maximum(1.0 - p * p, 1e-6))  # stationary start
    for t in range(1, T):  # the recursion over steps, all samples and channels at once
        e[t] += p * e[t - 1]
    return e.transpose(1, 0, 2)


def _lag1(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Lag-1 autocorrelation of each channel (centred per sample, pooled over masked pairs)."""
    m = mask[:, :, None]
    n = np.maximum(mask.sum(axis=1), 1)[:, None, None]
    xc = np.where(m, x, 0.0).astype(np.float64)
    xc = (xc - xc.sum(axis=1, keepdims=True) / n) * m
    num = (xc[:, 1:] * xc[:, :-1] * (mask[:, 1:] & mask[:, :-1])[:, :, None]).sum(axis=(0, 1))
    den = np.square(xc).sum(axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(phi, -0.999, 0.999)


def space_probe(x, next_chars, mask=None, n_folds: int = 5, max_steps: int = 64, n_null: int = 20,
                nlags: int = 32, seed: int = 0, alphas=PROBE_ALPHAS, confidence: float = 0.95,
                rhythm: bool = True, search_dtype=np.float64) -> dict:
    """Cross-validated linear probe for "the next character is a space", with CI and red-noise null.

    Parameters
    ----------
    x : array_like, shape (S, T, C)
        Waves of one tap.
    next_chars : array_like of str, shape (S, T)
    mask : array_like of bool, shape (S, T), optional
        Steps analysed (default all).
    n_folds : int, optional
        ``GroupKFold`` splits by sample (fewer when there are fewer samples).
    max_steps : int, optional
        Training rows per sample (evenly spaced); evaluation uses every masked step.
    n_null : int, optional
        AR(1) red-noise replicates (0: no null).
    nlags : int, optional
        Lags of the word-rhythm ACF similarity.
    seed : int, optional
    alphas : sequence of float, optional
    confidence : float, optional
    rhythm : bool, optional
        False: the word-rhythm similarities are not computed (NaN; for callers that read only R^2).
    search_dtype : numpy dtype, optional
        Of the penalty search (`_cv_predict`); the calibration's fast engine uses float32.

    Returns
    -------
    dict
        ``r2`` (out-of-fold R^2, NaN when undefined), ``loo`` (S',) leave-one-sample-out R^2 or
        None, ``se``, ``ci`` ([lo, hi] jackknife, ``r2 +- t_{S'-1} se``, or None),
        ``rhythm_similarity``, ``space_rate`` (share of targets = 1), ``null_r2`` (n_null,),
        ``null_r2_q95``, ``null_rhythm``, ``null_rhythm_q95``, ``ridge_penalty`` (median chosen
        penalty), ``n_folds``, ``n_fit_rows``, ``n_eval_steps``, ``n_samples``.
    """
    from sklearn.model_selection import GroupKFold

    x = np.asarray(x)
    S, T, C = x.shape
    mask = np.ones((S, T), bool) if mask is None else np.asarray(mask, bool)
    y = (np.asarray(next_chars) == " ").astype(np.float64)
    rows = _fit_rows(mask, max(int(max_steps), 2))
    n_samp = int(mask.any(axis=1).sum())
    out = {"r2": float("nan"), "loo": None, "se": None, "ci": None, "rhythm_similarity": float("nan"),
           "space_rate": float(y[mask].mean()) if mask.any() else float("nan"), "null_r2": np.zeros(0),
           "null_r2_q95": float("nan"), "null_rhythm": np.zeros(0), "null_rhythm_q95": float("nan"),
           "ridge_penalty": float("nan"), "n_folds": 0, "n_fit_rows": int(rows[0].size), "n_eval_steps": int(mask.sum()),
           "n_samples": n_samp, "max_steps": int(max_steps), "confidence": confidence}
    k, ym = min(int(n_folds), n_samp), y[mask]
    if k < 2 or C == 0 or ym.size == 0 or ym.min() == ym.max():
        return out
    # rows: every masked step (evaluation), in (sample, step) order; training rows are a subset
    ms, mt = np.nonzero(mask)
    pos = np.full((S, T), -1)
    pos[ms, mt] = np.arange(ms.size)
    fit = pos[rows[0], rows[1]]
    folds = list(GroupKFold(n_splits=k).split(fit, groups=ms[fit]))
    X = np.asarray(x[ms, mt], np.float32)
    yv = y[ms, mt]

    def r2_and_rhythm(pred):
        P = np.zeros((S, T))
        P[ms, mt] = pred
        return _r2_parts(y, P, mask), (_similarity(_acf_mean(P, mask, nlags), ref) if rhythm else float("nan"))

    ref = _acf_mean(y, mask, nlags) if rhythm else None
    sels = _fold_rows(ms, fit, folds)
    pred, chosen = _cv_predict(X, yv, ms, fit, folds, np.asarray(alphas, np.float64), sels, search_dtype)
    (r2, loo), similarity = r2_and_rhythm(pred)
    out.update(r2=r2, loo=loo, rhythm_similarity=similarity, ridge_penalty=float(np.median(chosen)), n_folds=k)
    if loo is not None:
        m = loo.size
        se = float(np.sqrt((m - 1) / m * np.sum((loo - loo.mean()) ** 2)))
        tq = float(_stats.t.ppf(0.5 + confidence / 2, m - 1))
        out.update(se=se, ci=[r2 - tq * se, r2 + tq * se])
    if int(n_null) > 0:
        out.update(_red_noise_null(x, mask, ms, mt, yv, fit, folds, out["ridge_penalty"], int(n_null), seed,
                                   r2_and_rhythm, sels))
    return out


def _red_noise_null(x, mask, ms, mt, yv, fit, folds, penalty, n_null: int, seed: int, r2_and_rhythm,
                    sels=None) -> dict:
    """The AR(1) red-noise null of :func:`space_probe`: the probe refitted (same folds, same penalty) on
    ``n_null`` AR(1) twins of the waves; their R^2 and rhythm similarity and the 95th percentiles."""
    rng = np.random.default_rng([int(seed), 4])
    phi = _lag1(x, mask)
    nr, nh = [], []
    for _ in range(n_null):
        xn = _ar1_like(x.shape, rng, phi)[ms, mt]
        (r, _), h = r2_and_rhythm(_cv_predict(xn, yv, ms, fit, folds, penalty, sels)[0])
        nr.append(r)
        nh.append(h)
    nr, nh = np.asarray(nr), np.asarray(nh)
    return dict(null_r2=nr, null_rhythm=nh,
                null_r2_q95=float(np.quantile(nr[np.isfinite(nr)], 0.95, method="higher"))
                if np.isfinite(nr).any() else float("nan"),
                null_rhythm_q95=float(np.quantile(nh[np.isfinite(nh)], 0.95, method="higher"))
                if np.isfinite(nh).any() else float("nan"))
