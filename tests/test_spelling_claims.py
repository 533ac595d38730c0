"""Verdict rules of the spelling claims 2, 3, 5 (gptwaves.analysis.spelling_claims)."""

import json

import numpy as np
import pytest

from gptwaves.analysis import claims as cl
from gptwaves.analysis import spelling as sp
from gptwaves.analysis.spelling_claims import spelling_claims

L = 112


def _ck(it, samp, start, ln, mis, n, **kw):
    kw = {"n_perm": 200, "n_boot": 300, "windows": [], **kw}
    return {"iteration": it, "stats": sp.analyze_words(samp, start, ln, mis, n, L, **kw)}


def _regular(rng, n, k, p_fn):
    """n samples of exactly k words of length 3 (sub-Poissonian total: F_words = 0)."""
    samp = np.repeat(np.arange(n), k)
    start = np.tile(np.arange(k) * 4, n)
    ln = np.full(samp.size, 3)
    return samp, start, ln, p_fn(samp)


def _markov(rng, n, k, stay, enter):
    mis = np.zeros((n, k), bool)
    mis[:, 0] = rng.random(n) < enter / (1 - stay + enter)
    for j in range(1, k):
        mis[:, j] = rng.random(n) < np.where(mis[:, j - 1], stay, enter)
    samp = np.repeat(np.arange(n), k)
    return samp, np.tile(np.arange(k) * 4, n), np.full(samp.size, 3), mis.ravel()


def test_structure_and_json():
    rng = np.random.default_rng(0)
    cks = [_ck(it, *_regular(rng, 300, 20, lambda s: rng.random(s.size) < p), 300)
           for it, p in ((0, 0.5), (100, 0.3), (1000, 0.1))]
    out = spelling_claims(cks)
    assert [c["id"] for c in out] == [2, 3, 5]
    for c in out:
        for part in ("as_stated", "beyond_null"):
            assert c[part]["verdict"] in cl.VERDICTS and c[part]["text"]
    json.dumps(out, allow_nan=False)


def test_claim2_planted_regular_correct_words_supported_beyond():
    # correct words anti-clustered beyond length-independence: every sample has the same
    # number of misspellings (fixed k) -> both counts have zero variance beyond the word total
    rng = np.random.default_rng(1)
    n, k = 600, 20
    cks = []
    for it, m in ((0, None), (1000, 4)):
        samp = np.repeat(np.arange(n), k)
        if m is None:  # Poisson-like early: word counts vary, iid errors
            n_i = rng.poisson(k, n)
            samp = np.repeat(np.arange(n), n_i)
            start = np.concatenate([np.arange(c) * 4 for c in n_i])
            mis = rng.random(samp.size) < 0.05
        else:
            start = np.tile(np.arange(k) * 4, n)
            mis = np.zeros((n, k), bool)
            for i in range(n):
                mis[i, rng.choice(k, m, replace=False)] = True
            mis = mis.ravel()
        cks.append(_ck(it, samp, np.minimum(start, L - 1), np.full(samp.size, 3), mis, n))
    c2 = spelling_claims(cks)[0]
    assert c2["beyond_null"]["verdict"] == cl.SUPPORTED
    assert c2["beyond_null"]["numbers"]["excess"] < 1


def test_claim2_no_checkpoints_inconclusive():
    out = spelling_claims([])
    assert out[0]["as_stated"]["verdict"] == cl.INCONCLUSIVE
    assert out[1]["as_stated"]["verdict"] == cl.INCONCLUSIVE
    assert out[2]["beyond_null"]["verdict"] == cl.INCONCLUSIVE


def test_claim5_cascade_gone_supported_and_persisting_not_supported():
    rng = np.random.default_rng(2)
    n, k = 800, 20
    early = [_ck(it, *_markov(rng, n, k, 0.6, 0.1), n) for it in (0, 100)]
    late_indep = [_ck(it, *_markov(rng, n, k, 0.1, 0.1), n) for it in (1000, 3000, 5000)]
    c5 = spelling_claims(early + late_indep)[2]
    assert c5["beyond_null"]["verdict"] == cl.SUPPORTED, c5["beyond_null"]["text"]
    assert c5["as_stated"]["verdict"] in (cl.SUPPORTED, cl.INCONCLUSIVE)
    persist = [_ck(it, *_markov(rng, n, k, 0.6, 0.1), n) for it in (0, 100, 1000)]
    assert spelling_claims(persist)[2]["beyond_null"]["verdict"] == cl.NOT_SUPPORTED


def test_claim5_never_a_cascade_not_supported_and_underpowered_inconclusive():
    rng = np.random.default_rng(3)
    indep = [_ck(it, *_markov(rng, 500, 10, 0.2, 0.2), 500) for it in (0, 100, 1000)]
    assert spelling_claims(indep)[2]["beyond_null"]["verdict"] == cl.NOT_SUPPORTED
    # a cascade early, then a tiny last checkpoint: not significant, but no power
    early = [_ck(it, *_markov(rng, 800, 20, 0.6, 0.1), 800) for it in (0, 100)]
    tiny = _ck(1000, *_markov(rng, 6, 3, 0.3, 0.1), 6, n_perm=200)
    v = spelling_claims(early + [tiny])[2]["beyond_null"]["verdict"]
    assert v in (cl.INCONCLUSIVE, cl.NOT_SUPPORTED)
    if tiny["stats"]["cascade"]["p_value"] is not None and tiny["stats"]["cascade"]["p_value"] >= 0.05:
        assert v == cl.INCONCLUSIVE


def test_claim3_as_stated_rises_with_planted_trend():
    rng = np.random.default_rng(4)
    cks = []
    for it, sigma in ((0, 0.0), (100, 0.5), (300, 1.0), (1000, 1.5), (3000, 2.0)):
        n, k = 500, 20
        samp = np.repeat(np.arange(n), k)
        z = -1.5 + sigma * rng.normal(size=n)
        mis = rng.random(samp.size) < 1 / (1 + np.exp(-z[samp]))
        cks.append(_ck(it, samp, np.tile(np.arange(k) * 4, n), np.full(samp.size, 3), mis, n))
    c3 = spelling_claims(cks)[1]
    assert c3["as_stated"]["verdict"] == cl.SUPPORTED
    assert c3["beyond_null"]["verdict"] == cl.SUPPORTED
