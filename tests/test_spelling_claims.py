"""Verdict rules of the spelling claims 2, 3, 5 (gptwaves.analysis.spelling_claims)."""

import json

import numpy as np
import pytest
from scipy import stats

from gptwaves.analysis import claims as cl
from gptwaves.analysis import spelling as sp
from gptwaves.analysis.spelling_claims import across_checkpoints, change, holm, spelling_claims

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


def _chain(rng, n, k, after_mis, after_cor):
    """n samples of k words: a two-state chain, P(mis | previous mis) = after_mis, else after_cor."""
    mis = np.zeros((n, k), bool)
    mis[:, 0] = rng.random(n) < after_cor / (1 - after_mis + after_cor)
    for j in range(1, k):
        mis[:, j] = rng.random(n) < np.where(mis[:, j - 1], after_mis, after_cor)
    samp = np.repeat(np.arange(n), k)
    return samp, np.tile(np.arange(k) * 5, n), np.full(samp.size, 3), mis.ravel()


def test_claim2_planted_anti_clustering_supported_beyond():
    # independent errors first, errors that avoid each other last (P(mis | mis) 0.1 against 0.5):
    # both counts become more regular than independence predicts, so the correct excess falls below 1
    rng = np.random.default_rng(1)
    n, k = 600, 20
    cks = [_ck(0, *_chain(rng, n, k, 0.4, 0.4), n), _ck(1000, *_chain(rng, n, k, 0.1, 0.5), n)]
    c2 = spelling_claims(cks)[0]
    b = c2["beyond_null"]
    assert b["verdict"] == cl.SUPPORTED, b["text"]
    ch = b["numbers"]["change"]
    assert ch["ci"][1] < 0 and ch["ratio"] < 1
    assert b["numbers"]["last"]["log_excess"] < 0
    assert "changes by a factor of" in b["text"] and "Stouffer" in b["text"]
    for w in ("None", "nan", "True"):
        assert w not in b["text"] and w not in c2["as_stated"]["text"]


def test_claim2_no_checkpoints_inconclusive():
    out = spelling_claims([])
    assert out[0]["as_stated"]["verdict"] == cl.INCONCLUSIVE
    assert out[0]["beyond_null"]["verdict"] == cl.INCONCLUSIVE
    assert out[1]["as_stated"]["verdict"] == cl.INCONCLUSIVE
    assert out[2]["beyond_null"]["verdict"] == cl.INCONCLUSIVE


def test_claim5_cascade_gone_supported_and_persisting_not_supported():
    rng = np.random.default_rng(2)
    n, k = 800, 20
    early = [_ck(it, *_markov(rng, n, k, 0.6, 0.1), n) for it in (0, 100)]
    late_indep = [_ck(it, *_markov(rng, n, k, 0.1, 0.1), n) for it in (1000, 3000, 5000)]
    c5 = spelling_claims(early + late_indep)[2]
    assert c5["beyond_null"]["verdict"] == cl.SUPPORTED, c5["beyond_null"]["text"]
    assert any(h["significant"] for h in c5["beyond_null"]["numbers"]["holm"])
    persist = [_ck(it, *_markov(rng, n, k, 0.6, 0.1), n) for it in (0, 100, 1000)]
    c5p = spelling_claims(persist)[2]["beyond_null"]
    assert c5p["verdict"] == cl.NOT_SUPPORTED and "still cascade" in c5p["text"]


def test_claim5_never_a_cascade_not_supported_only_with_power():
    # independent errors with many samples: every earlier CI excludes a cascade beyond 10%
    rng = np.random.default_rng(3)
    big = [_ck(it, *_markov(rng, 3000, 20, 0.3, 0.3), 3000, n_boot=0) for it in (0, 100, 1000)]
    b = spelling_claims(big)[2]["beyond_null"]
    assert b["verdict"] == cl.NOT_SUPPORTED, b["text"]
    assert "no cascade to prevent" in b["text"]
    # the same truth with few samples cannot exclude a cascade: inconclusive, with the detectable size
    small = [_ck(it, *_markov(rng, 60, 10, 0.3, 0.3), 60, n_boot=0) for it in (0, 100, 1000)]
    b = spelling_claims(small)[2]["beyond_null"]
    assert b["verdict"] == cl.INCONCLUSIVE, b["text"]
    assert b["numbers"]["mde_ratio"] > 1.1 and "80% power" in b["text"]
    # the rate of "supported" without any cascade is measured on 181 simulated trainings in
    # tests/test_spelling_rules.py (size tests)


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
    assert "Thinning alone raises F_misspelled as errors become rare" in c3["as_stated"]["text"]
    assert c3["beyond_null"]["verdict"] == cl.SUPPORTED
    a = c3["beyond_null"]["numbers"]["across"]
    assert a["n"] == 5 and a["n_up"] >= 3 and a["stouffer_z"] > 3


# ------------------------------------------------------------------ building blocks
def test_across_checkpoints_binomial_tail_and_stouffer():
    rows = [{"z": 2.5, "p_value": 0.01}] * 3 + [{"z": -2.2, "p_value": 0.03}] + [{"z": 0.1, "p_value": 0.9}] * 10
    a = across_checkpoints(rows, 0.05)
    assert (a["n"], a["n_up"], a["n_down"]) == (14, 3, 1)
    assert a["p_any"] == pytest.approx(stats.binom.sf(3, 14, 0.05))  # 4 of 14 at alpha 0.05
    assert round(a["p_any"], 3) == 0.004
    assert a["p_up"] == pytest.approx(stats.binom.sf(2, 14, 0.025))
    zs = (3 * 2.5 - 2.2 + 10 * 0.1) / np.sqrt(14)
    assert a["stouffer_z"] == pytest.approx(zs) and a["stouffer_p"] == pytest.approx(2 * stats.norm.sf(zs))
    assert across_checkpoints([{"z": None, "p_value": None}])["n"] == 0


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.005, 0.2, None]
    want = multipletests([x for x in p if x is not None], alpha=0.05, method="holm")[0].tolist()
    assert holm(p, 0.05)[:5] == want and holm(p, 0.05)[5] is False


@pytest.mark.parametrize("a, b, se, want, verdict", [
    (0.0, -0.5, 0.1, "fall", cl.SUPPORTED),          # CI below 0
    (0.0, 0.5, 0.1, "fall", cl.NOT_SUPPORTED),       # CI excludes the claimed direction
    (0.0, 0.01, 0.01, "fall", cl.NOT_SUPPORTED),     # CI inside the 10% margin
    (0.0, -0.05, 0.2, "fall", cl.INCONCLUSIVE),      # weak: cannot tell
    (0.0, 0.5, 0.1, "rise", cl.SUPPORTED),
])
def test_change_rule(a, b, se, want, verdict):
    ch = change({"log_excess": a, "se": se}, {"log_excess": b, "se": se}, want)
    assert ch["verdict"] == verdict, ch
    assert ch["se"] == pytest.approx(np.hypot(se, se))
    if verdict == cl.INCONCLUSIVE:
        mde = (stats.norm.isf(0.025) + stats.norm.isf(0.2)) * np.hypot(se, se)
        assert ch["mde_ratio"] == pytest.approx(np.exp(-mde)) and "80% power" in ch["reason"]
