"""Trend rule and claim structure (analysis/claims.py) on sequences whose shape is known."""

import numpy as np
import pytest
from scipy import stats

from gptwaves.analysis import claims as cl

ITS = [0, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000]


def test_trend_matches_scipy_spearman():
    rng = np.random.default_rng(0)
    v = rng.normal(size=len(ITS)) + np.log1p(ITS) * 0.3
    t = cl.trend(ITS, v)
    ref = stats.spearmanr(np.log1p(ITS), v)
    assert t["rho"] == pytest.approx(ref.statistic)
    assert t["p_value"] == pytest.approx(ref.pvalue)
    assert t["n"] == len(ITS)


def test_monotone_rise_and_fall():
    assert cl.trend(ITS, np.log1p(ITS))["shape"] == "rising"
    assert cl.trend(ITS, -np.log1p(ITS))["shape"] == "falling"


def test_rise_then_fall_is_stated():
    v = [0.14, 0.47, 0.45, 0.37, 0.34, 0.32]  # the smoke run's mean |R|: a peak at iteration 10
    t = cl.trend([0, 10, 20, 50, 100, 200], v)
    assert t["shape"] == "rise then fall"
    assert t["peak_iteration"] == 10
    assert "peak" in cl.trend_text("mean |R|", t)


def test_fall_then_rise():
    t = cl.trend(ITS, [5, 3, 2, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4, 4])
    assert t["shape"] == "fall then rise" and t["trough_iteration"] == 50


def test_noise_has_no_trend_in_most_seeds():
    rng = np.random.default_rng(1)
    shapes = [cl.trend(ITS, rng.normal(size=len(ITS)))["shape"] for _ in range(400)]
    # monotone shapes come only from the Spearman test: its size is alpha
    assert np.mean([s in ("rising", "falling") for s in shapes]) <= 0.08


def test_missing_values_and_short_sequences():
    t = cl.trend([0, 10, None, 20], [1.0, None, 3.0, float("nan")])
    assert t["n"] == 1 and t["rho"] is None and t["shape"] == "undefined"
    assert cl.trend([0, 10], [1, 2])["shape"] == "no trend"
    assert cl.trend([], [])["n"] == 0
    assert cl.trend(ITS, np.ones(len(ITS)))["rho"] is None


def test_claim_structure_and_validation():
    c = cl.claim(1, "x", {"verdict": cl.SUPPORTED, "text": "t", "numbers": {"a": 1}},
                 {"verdict": cl.INCONCLUSIVE, "text": "u"})
    assert c["as_stated"]["verdict"] == "supported" and c["beyond_null"]["numbers"] == {}
    with pytest.raises(ValueError):
        cl.claim(1, "x", {"verdict": "maybe"}, {"verdict": cl.SUPPORTED})
    assert cl.verdict(True) == cl.SUPPORTED
    assert cl.verdict(False) == cl.NOT_SUPPORTED
    assert cl.verdict(False, against=False) == cl.INCONCLUSIVE
    assert cl.verdict(None) == cl.INCONCLUSIVE


def test_trend_verdict():
    assert cl.trend_verdict(cl.trend(ITS, np.log1p(ITS)), "rising") == cl.SUPPORTED
    assert cl.trend_verdict(cl.trend(ITS, -np.log1p(ITS)), "rising") == cl.NOT_SUPPORTED
    assert cl.trend_verdict(cl.trend([0, 10, 20, 50, 100, 200], [0.14, 0.47, 0.45, 0.37, 0.34, 0.32]),
                            "rising") == cl.INCONCLUSIVE
    assert cl.trend_verdict(cl.trend([0, 10], [1, 2]), "rising") == cl.INCONCLUSIVE
