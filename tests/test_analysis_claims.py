"""Trend rule and claim structure (analysis/claims.py) on sequences whose shape is known."""

import numpy as np
import pytest
from scipy import stats

from gptwaves.analysis import claims as cl

import sizecheck

ITS = [0, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000]


def test_trend_matches_scipy_spearman_above_the_exact_range():
    rng = np.random.default_rng(0)
    its = ITS + [3000, 5000]  # n = 14 (the paper preset): scipy's t approximation
    v = rng.normal(size=len(its)) + np.log1p(its) * 0.3
    t = cl.trend(its, v)
    ref = stats.spearmanr(np.log1p(its), v)
    assert t["n"] == 14 and t["exact"] is False
    assert t["rho"] == pytest.approx(ref.statistic)
    assert t["p_value"] == pytest.approx(ref.pvalue)


@pytest.mark.parametrize("n, p", [(3, 1 / 3), (4, 1 / 12)])
def test_few_monotone_points_are_never_significant(n, p):
    # exact two-sided p of a perfectly monotone series: 2 / n!
    for sign in (1, -1):
        t = cl.trend(ITS[:n], sign * np.arange(n, dtype=float))
        assert t["exact"] is True and t["rho"] == pytest.approx(sign)
        assert t["p_value"] == pytest.approx(p)
        assert t["shape"] == "no trend"
        assert "exact p = " in cl.trend_text("x", t) and "no trend" in cl.trend_text("x", t)


def test_exact_p_matches_full_enumeration_at_n6_with_and_without_ties():
    rng = np.random.default_rng(3)
    x = np.log1p(ITS[:6])
    for y in (rng.normal(size=6), np.array([1.0, 2, 2, 3, 1, 4]), np.arange(6.0)):
        ref = stats.permutation_test((y,), lambda yy: stats.spearmanr(x, yy).statistic,
                                     permutation_type="pairings", n_resamples=10**6)  # 720 orderings: exact
        t = cl.trend(ITS[:6], y)
        assert t["exact"] is True and t["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert cl.trend(ITS[:6], np.arange(6.0))["p_value"] == pytest.approx(2 / 720)
    assert cl.trend(ITS[:6], np.arange(6.0))["shape"] == "rising"


def test_quadratic_test_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(4)
    x = np.log1p(ITS)
    y = -0.3 * (x - 4) ** 2 + rng.normal(size=len(x))
    z = (x - x.mean()) / x.std()
    fit = sm.OLS(y, sm.add_constant(np.column_stack([z, z * z]))).fit()
    q = cl.quadratic_test(x, y)
    assert q["p_shape"] == pytest.approx(fit.f_pvalue) and q["p_turn"] == pytest.approx(fit.pvalues[2])
    assert q["curvature"] == pytest.approx(fit.params[2])


def test_monotone_rise_and_fall():
    assert cl.trend(ITS, np.log1p(ITS))["shape"] == "rising"
    assert cl.trend(ITS, -np.log1p(ITS))["shape"] == "falling"


def test_rise_then_fall_is_stated():
    v = [0.14, 0.47, 0.45, 0.37, 0.34, 0.32]  # the smoke run's mean |R|: a peak at iteration 10
    t = cl.trend([0, 10, 20, 50, 100, 200], v)
    assert t["shape"] == "rise then fall"  # quadratic term p = 0.016, omnibus F p = 0.026
    assert t["peak_iteration"] == 10
    assert "peak" in cl.trend_text("mean |R|", t)


def test_fall_then_rise():
    t = cl.trend(ITS, [5, 3, 2, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4, 4])
    assert t["shape"] == "fall then rise" and t["trough_iteration"] == 50


def _shape_ignoring_p(its, v):
    """A rule that names shapes from the data's form alone (the rule before the tests were
    required): a turn whenever the extremum is interior and 25% is given back, else the sign of
    rho. The size test below must fail it."""
    v = np.asarray(v, dtype=float)
    n, imax, imin = len(v), int(np.argmax(v)), int(np.argmin(v))
    if 0 < imax < n - 2 and v[imax] - v[-1] >= cl.TURN_FRACTION * (v[imax] - v[0]):
        return "rise then fall"
    if 0 < imin < n - 2 and v[-1] - v[imin] >= cl.TURN_FRACTION * (v[0] - v[imin]):
        return "fall then rise"
    return "rising" if stats.spearmanr(np.log1p(its), v).statistic > 0 else "falling"


@pytest.mark.parametrize("its", [ITS, ITS[:6], ITS + [3000, 5000]], ids=["n12", "n6-smoke", "n14-paper"])
def test_noise_gets_no_shape_at_the_planned_size(its):
    # docs/method.md, "Trends across checkpoints": any shape at all (rising, falling or a turn) is
    # named for pure noise with probability <= alpha. Measured (seed 1): 8 of 181 (n = 12), 10 of
    # 181 (n = 6), 5 of 181 (n = 14), allowed <= 16; seed bases 0-3 gave at most 13 of 181 at
    # every n. The same sequences under a rule that ignores the p-values: 181 of 181 (n = 12).
    plan = sizecheck.plan()
    rng = np.random.default_rng(1)
    seqs = rng.normal(size=(plan.n, len(its)))
    shapes = [cl.trend(its, v)["shape"] for v in seqs]
    named = sum(s != "no trend" for s in shapes)
    assert plan.ok(named), plan.describe(named)
    naive = sum(_shape_ignoring_p(its, v) != "no trend" for v in seqs)
    assert not plan.ok(naive), plan.describe(naive)  # the test tells a bad rule from a good one


def test_planted_trends_are_found():
    # a log-linear rise of 1.5 noise SDs per SD of log(1 + iteration), and an inverted U centred
    # in the log axis, 1.5 noise SDs deep at unit distance; measured (seed 2): rising 92 of 100,
    # rise then fall 100 of 100 (n = 12); seed bases 0, 1, 3: at least 93 and 99.
    rng = np.random.default_rng(2)
    x = np.log1p(ITS)
    z = (x - x.mean()) / x.std()
    zm = (z.min() + z.max()) / 2
    up = [cl.trend(ITS, 1.5 * z + rng.normal(size=len(z)))["shape"] for _ in range(100)]
    turn = [cl.trend(ITS, -1.5 * (z - zm) ** 2 + rng.normal(size=len(z)))["shape"] for _ in range(100)]
    assert up.count("rising") >= sizecheck.power_threshold(100, 0.85)
    assert turn.count("rise then fall") >= sizecheck.power_threshold(100, 0.9)
    assert "falling" not in up and "fall then rise" not in turn


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
    # a trend the test cannot see is inconclusive, never "not supported": 4 monotone points, or noise
    assert cl.trend_verdict(cl.trend(ITS[:4], [4, 3, 2, 1]), "rising") == cl.INCONCLUSIVE
    assert cl.trend_verdict(cl.trend(ITS, np.random.default_rng(5).normal(size=12)), "rising") == cl.INCONCLUSIVE


def test_on_axis_names_the_training_step():
    assert cl.on_axis("At iteration 5; iterations 0 to 9. Iteration", "step") == "At step 5; steps 0 to 9. Step"
    assert cl.on_axis("At iteration 5", "iteration") == "At iteration 5"
