"""The space probe's ridge (docs/method.md, Findings, claim 4) against scikit-learn, its independent
reference: the closed-form leave-one-out search picks the penalty ``RidgeCV`` picks and predicts what
``StandardScaler`` + ``RidgeCV`` (or ``Ridge`` at a fixed penalty) predicts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gptwaves.analysis.probe import PROBE_ALPHAS, _cv_predict, ridge_fit


def _data(seed, n=600, C=24, signal=0.3, constant=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, C)).astype(np.float32) * rng.uniform(0.1, 5, C).astype(np.float32)
    X += rng.standard_normal((n, 1)).astype(np.float32)  # correlated channels, as in a residual stream
    if constant:
        X[:, 3] = 2.5  # a dead channel: StandardScaler gives it scale 1
    y = (X[:, :4].sum(axis=1) * signal + rng.standard_normal(n) > 0.8).astype(np.float64)
    return X, y


@pytest.mark.parametrize("seed, signal, constant", [(0, 0.3, False), (1, 0.0, False), (2, 1.0, True), (3, 0.05, True)])
def test_ridge_fit_is_ridgecv(seed, signal, constant):
    X, y = _data(seed, signal=signal, constant=constant)
    Z = StandardScaler().fit_transform(X)
    ref = RidgeCV(alphas=np.array(PROBE_ALPHAS)).fit(Z, y)
    coef, b0, alpha = ridge_fit(Z, y, PROBE_ALPHAS)
    assert alpha == ref.alpha_
    np.testing.assert_allclose(coef, ref.coef_, rtol=1e-5, atol=1e-8)
    assert b0 == pytest.approx(ref.intercept_, abs=1e-8)
    fixed = Ridge(alpha=3.0).fit(Z.astype(np.float64), y)
    coef, b0, alpha = ridge_fit(Z, y, 3.0)
    assert alpha == 3.0
    np.testing.assert_allclose(coef, fixed.coef_, rtol=1e-6, atol=1e-9)
    assert b0 == pytest.approx(fixed.intercept_, abs=1e-9)


@pytest.mark.parametrize("alphas", [np.asarray(PROBE_ALPHAS), 10.0])
def test_cross_validated_predictions_are_the_pipelines(alphas):
    X, y = _data(4, n=900, C=16, constant=True)
    groups = np.repeat(np.arange(30), 30)
    fit = np.arange(0, 900, 2)  # every other row trains, every row is predicted out of fold
    folds = list(GroupKFold(n_splits=5).split(fit, groups=groups[fit]))
    pred, chosen = _cv_predict(X, y, groups, fit, folds, alphas)
    ref = np.zeros_like(pred)
    for train, test in folds:
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas) if np.ndim(alphas) else Ridge(alpha=alphas))
        model.fit(X[fit[train]].astype(np.float64), y[fit[train]])
        sel = np.isin(groups, np.unique(groups[fit[test]]))
        ref[sel] = model.predict(X[sel].astype(np.float64))
    np.testing.assert_allclose(pred, ref, rtol=1e-6, atol=1e-8)
    assert len(chosen) == (5 if np.ndim(alphas) else 0)


@pytest.mark.parametrize("alphas", [np.asarray(PROBE_ALPHAS), 10.0])
@pytest.mark.parametrize("case", ["large offset", "constant in a training fold", "tiny scale"])
def test_fold_moments_by_subtraction_keep_the_pipelines_precision(alphas, case):
    # the folds' moments are all training rows' less the test rows': a channel far from zero, one
    # that is constant except in one fold's samples, and one of tiny scale still give the pipeline
    X, y = _data(5, n=900, C=16)
    groups = np.repeat(np.arange(30), 30)
    if case == "large offset":
        X[:, 5] = X[:, 5] * np.float32(1e-3) + np.float32(1e4)
    elif case == "constant in a training fold":
        X[:, 6] = 1.5
        X[groups == 0, 6] += np.random.default_rng(0).standard_normal(30).astype(np.float32)
    else:
        X[:, 7] *= np.float32(1e-12)
    fit = np.arange(0, 900, 2)
    folds = list(GroupKFold(n_splits=5).split(fit, groups=groups[fit]))
    pred, chosen = _cv_predict(X, y, groups, fit, folds, alphas)
    ref, ref_chosen = np.zeros_like(pred), []
    for train, test in folds:
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas) if np.ndim(alphas) else Ridge(alpha=alphas))
        model.fit(X[fit[train]].astype(np.float64), y[fit[train]])
        if np.ndim(alphas):
            ref_chosen.append(model[-1].alpha_)
        sel = np.isin(groups, np.unique(groups[fit[test]]))
        ref[sel] = model.predict(X[sel].astype(np.float64))
    np.testing.assert_allclose(pred, ref, rtol=1e-6, atol=1e-8)
    assert chosen == ref_chosen
