"""Null-model suite of the spelling statistics (docs/method.md, Spelling and Findings).

Synthetic checkpoints with known truth go through the same analysis (`analyze_words`, and
`analyze` on synthetic text) and findings code (`spelling_claims`) as real runs.
"""

import numpy as np
import pytest
from scipy.special import expit

from gptwaves.analysis import claims as cl
from gptwaves.analysis import spelling as sp
from gptwaves.analysis.spelling_claims import spelling_claims

L = 112
ITERS = [0, 100, 300, 1000, 2500, 5000]


def words(rng, n, length=L, logit=None, kind="iid", sigma=1.2, stay=0.6, p_len=0.3):
    """Word table of n samples: geometric lengths, 1-2 separator characters.

    ``logit(lengths)`` (or ``logit(lengths, starts)``) gives the log-odds of a misspelling;
    kind "iid": independent given length; "bursty": a per-sample N(0, sigma^2) log-odds
    offset; "markov": a two-state chain (P(mis | prev mis) = stay) independent of length.
    """
    K = length // 2 + 1
    lens = rng.geometric(p_len, (n, K))
    step = lens + 1 + (rng.random((n, K)) < 0.2)
    starts = np.cumsum(step, axis=1) - step
    valid = starts < length
    lb = np.minimum(lens, 12)
    if logit is not None and logit.__code__.co_argcount == 2:  # log-odds by length and start
        logit = (lambda f: lambda lb: f(lb, starts))(logit)
    if kind == "markov":
        enter = 0.1
        mis = np.zeros((n, K), dtype=bool)
        mis[:, 0] = rng.random(n) < enter / (1 - stay + enter)
        u = rng.random((n, K))
        for j in range(1, K):
            mis[:, j] = u[:, j] < np.where(mis[:, j - 1], stay, enter)
    else:
        z = logit(lb)
        if kind == "bursty":
            z = z + sigma * rng.normal(size=(n, 1))
        mis = rng.random((n, K)) < expit(z)
    rows = np.nonzero(valid)[0]
    return rows, starts[valid], lens[valid], mis[valid]


def checkpoint(rng, n, logit=None, kind="iid", n_perm=100, n_boot=0, seed=0, **kw):
    s, st, ln, m = words(rng, n, logit=logit, kind=kind, **kw)
    return sp.analyze_words(s, st, ln, m, n, L, margin=16, n_perm=n_perm, n_boot=n_boot, seed=seed,
                            windows=[])


def falling_logits(n_ck=len(ITERS)):
    """Length-dependent log-odds whose overall rate falls from about 0.9 to 0.15."""
    offs = np.linspace(2.0, -2.9, n_ck)
    return [lambda lb, o=o: o + 0.35 * (lb - 3) for o in offs]


# ------------------------------------------------------------------ iid errors, falling rate
def test_iid_length_dependent_falling_rate_not_supported_beyond_null():
    """Errors independent given length (and position: logit slope -2 over the sample), rate falling
    0.9 -> 0.15 over six checkpoints of 300 samples: claims 2 and 3 beyond the null "supported" in
    at most 16 of 181 simulated trainings (plan(): a size-0.05 rule fails with p = 0.0097, a
    size-0.15 rule passes with p = 0.0097). Measured: 2b 4, 3b 5 of 181."""
    from sizecheck import plan
    from spelling_truth import Truth, paper_rates, simulate, tally, verdicts

    pl = plan()
    vs = verdicts(simulate([Truth(r) for r in paper_rates(6, 0.9, 0.15)], pl.n, 300, seed=1000, n_perm=0))
    for k in ("2b", "3b"):
        n = tally(vs, k)[cl.SUPPORTED]
        assert pl.ok(n), (k, pl.describe(n))


@pytest.mark.parametrize("slope, kind", [(0.0, "iid"), (-2.0, "iid"), (-2.0, "bursty")])
def test_closed_form_and_permutation_null_agree_without_clustering(slope, kind):
    """The closed-form reference and the stratified permutation null's median agree (within 5%) on
    errors independent given length and position, with or without a position-dependent rate; with a
    per-sample propensity (bursty) the excess is above 1 for both."""
    ratios = []
    for seed in range(6):
        rng = np.random.default_rng(1100 + seed)
        s, st, ln, m = words(rng, 400, logit=lambda lb, st: -0.5 + 0.35 * (lb - 3) + slope * st / L, kind=kind)
        r = sp.analyze_words(s, st, ln, m, 400, L, n_perm=200, n_boot=0, seed=seed, windows=[])
        for name in ("correct", "misspelled"):
            d = r["decomposition"][name]
            ratios.append(d["fano_ref"] / d["null_median"])
            if kind == "bursty":
                assert d["excess_null"] > 1
            else:
                assert 0.8 < d["excess_null"] < 1.25 and np.isfinite(d["z"])
    assert np.all(np.abs(np.asarray(ratios) - 1) < 0.05), ratios


def test_length_blind_reference_would_be_biased_but_ours_is_not():
    # errors depend strongly on length: the old (1-p) + p F_words reference is off, ours is not
    rng = np.random.default_rng(5)
    r = checkpoint(rng, 1500, lambda lb: -3.0 + 0.8 * lb, n_perm=300)
    d = r["decomposition"]
    fw, p = d["words"]["fano"], r["error_rate"]
    old_m = (1 - p) + p * fw
    assert abs(d["misspelled"]["fano"] / old_m - 1) > 0.1  # the old excess is biased
    assert abs(d["misspelled"]["excess"] - 1) < 0.1
    assert abs(d["correct"]["excess"] - 1) < 0.1
    assert d["misspelled"]["p_value"] > 0.01 and d["correct"]["p_value"] > 0.01


# ------------------------------------------------------------------ planted clustering
@pytest.mark.parametrize("kind", ["bursty", "markov"])
def test_clustered_errors_detected(kind):
    n_seeds = 20
    hits = 0
    for seed in range(n_seeds):
        rng = np.random.default_rng(2000 + seed)
        r = checkpoint(rng, 1000, lambda lb: -1.5 + 0.1 * lb, kind=kind, n_perm=200, seed=seed)
        d = r["decomposition"]["misspelled"]
        hits += d["p_value"] < 0.05 and d["excess"] > 1
    assert hits >= 19, hits


def test_clustered_errors_claim3_beyond_supported_through_analyze_text():
    """Errors that become bursty in synthetic *text* (per-sample propensity SD 0 -> 1.5 while the
    rate falls), through `analyze` and `spelling_claims`; the same propensity held constant is not
    a build-up and is not called one."""
    vocab = ["the", "king", "lord", "love", "death", "sweet", "night", "heart", "a", "my", "is"]
    lex = frozenset(vocab)
    rng = np.random.default_rng(7)

    def texts(n, base, sd):
        out = []
        for _ in range(n):
            pi = expit(base + sd * rng.normal())
            ws = [vocab[k] for k in rng.integers(0, len(vocab), 40)]
            ws = ["q" + w[1:] if rng.random() < pi else w for w in ws]
            out.append(("\n" + " ".join(ws))[: 1 + L + 16])
        return out

    def run(sds):
        return [{"iteration": it, "stats": sp.analyze(texts(600, b, sd), lex, 1, L, margin=16, n_boot=200,
                                                      n_perm=300, seed=1)}
                for it, b, sd in zip([0, 1000, 5000], [1.0, -0.5, -1.5], sds)]

    cks = run([0.0, 0.75, 1.5])
    for c in cks:
        assert c["stats"]["n_cut"] == 0 and c["stats"]["margin"] == 16
    c2, c3, c5 = spelling_claims(cks)
    assert c3["beyond_null"]["verdict"] == cl.SUPPORTED, c3["beyond_null"]["text"]
    assert cks[-1]["stats"]["decomposition"]["misspelled"]["excess"] > 1.2
    const = spelling_claims(run([1.5, 1.5, 1.5]))[1]["beyond_null"]
    assert const["verdict"] != cl.SUPPORTED, const["text"]


# ------------------------------------------------------------------ crossing under F = 1
def test_no_crossing_reported_when_f_is_one_throughout():
    n_seeds, n = 200, 1000
    reported = 0
    for seed in range(n_seeds):
        rng = np.random.default_rng(3000 + seed)
        counts = [rng.poisson(lam, n) for lam in (2.0, 4.0, 6.0, 8.0, 10.0, 12.0)]
        res = sp.crossing(ITERS, counts, n_boot=0, seed=seed)
        reported += res["reported"]
        if not res["reported"]:
            assert res["iteration"] is None and res["reason"]
    assert reported <= 0.05 * n_seeds, reported


def test_crossing_found_with_ci_when_planted():
    # F_correct goes 1.3 -> 0.6: negative binomial early, binomial late
    rng = np.random.default_rng(11)
    n = 1000
    counts = [rng.negative_binomial(20, 1 / 1.3, n), rng.negative_binomial(40, 1 / 1.1, n),
              rng.binomial(40, 0.1, n), rng.binomial(20, 0.25, n), rng.binomial(15, 0.4, n)]
    its = [0, 100, 300, 1000, 3000]
    res = sp.crossing(its, counts, n_boot=500, seed=0)
    assert res["reported"]
    assert 100 < res["iteration"] < 300
    lo, hi = res["ci"]
    assert lo is not None and hi is not None and lo <= res["iteration"] <= hi
    assert 0 <= lo and hi <= 1000


# ------------------------------------------------------------------ cascade test size
@pytest.mark.parametrize("n_words", [5, 20])
def test_cascade_test_size(n_words):
    """Heterogeneous samples (rates 0.1-0.5), independent errors: the within-sample null rejects
    in 2-8% of 300 data sets (all run at once through ``block``)."""
    n_seeds, n = 300, 250
    rng = np.random.default_rng(4000 + 1000 * n_words)
    samp = np.repeat(np.arange(n_seeds * n), n_words)
    p_i = np.repeat(rng.uniform(0.1, 0.5, n_seeds * n), n_words)
    mis = rng.random(samp.size) < p_i
    blk = np.repeat(np.arange(n_seeds), n)
    null = sp.cascade_null(samp, mis, n_seeds * n, n_perm=100, seed=1, block=blk, max_chunk_elems=64_000_000)
    rej = 0
    for r in range(n_seeds):
        sel = slice(r * n * n_words, (r + 1) * n * n_words)
        c = sp.cascade(samp[sel] - r * n, mis[sel], n, n_boot=0)
        rej += sp.perm_p_value(c["rr"], null[:, r])[0] < 0.05
    assert 0.02 <= rej / n_seeds <= 0.08, rej / n_seeds


@pytest.mark.parametrize("slope, sigma", [(-2.0, 0.0), (0.0, 0.8), (-2.0, 0.8)])
def test_cascade_null_size_with_position_dependent_rate_and_heterogeneity(slope, sigma):
    """Independent errors whose rate falls along the sample (logit slope -2 over the 112
    characters) and/or differs between samples (propensity SD 0.8): the within-sample,
    within-position null rejects at most 16 of 181 times (plan()). Measured with these seeds: 10, 8
    and 5 of 181 (100 samples per replicate, 40 permutations). Shuffling within samples only
    (position ignored) rejects 122 of 181 times under the position slope."""
    from sizecheck import plan
    from spelling_truth import Truth, _errors, _layout, _offset

    pl = plan()
    n = 100
    rng = np.random.default_rng(4400 + int(10 * sigma))
    lens, starts, valid = _layout(rng, pl.n, n, False)
    t = Truth(0.3, slope=slope, sigma=sigma)
    mis = _errors(rng, lens, starts, valid, _offset(t, False), t)
    r_idx, i_idx, _ = np.nonzero(valid)
    g, st, ms = r_idx * n + i_idx, starts[valid], mis[valid]
    blk = np.repeat(np.arange(pl.n), n)
    same = g[1:] == g[:-1]
    prev, cur, rp = ms[:-1][same], ms[1:][same], r_idx[1:][same]
    obs = sp._rr(*[np.bincount(rp, weights=w, minlength=pl.n) for w in (prev & cur, prev, ~prev & cur, ~prev)])
    null = sp.cascade_null(g, ms, pl.n * n, n_perm=40, seed=5, word_start=st, block=blk)
    rej = sum(sp.perm_p_value(obs[r], null[:, r])[0] < 0.05 for r in range(pl.n))
    print(f"cascade null size (slope {slope}, sigma {sigma}): {pl.describe(rej)}")
    assert pl.ok(rej), pl.describe(rej)
    if slope and not sigma:
        blind = sp.cascade_null(g, ms, pl.n * n, n_perm=40, seed=5, block=blk)
        rej_blind = sum(sp.perm_p_value(obs[r], blind[:, r])[0] < 0.05 for r in range(pl.n))
        print(f"position ignored: {rej_blind} of {pl.n}")
        assert rej_blind > 2 * pl.k, rej_blind


def test_cascade_detected_in_markov_errors():
    rng = np.random.default_rng(9)
    s, st, ln, m = words(rng, 1000, kind="markov", stay=0.5)
    r = sp.analyze_words(s, st, ln, m, 1000, L, n_boot=200, n_perm=300, windows=[])
    c = r["cascade"]
    assert c["verdict"] == "cascade" and c["p_value"] < 0.01
    assert c["rr_ci"][0] > 1


# ------------------------------------------------------------------ BCa coverage
@pytest.mark.slow
@pytest.mark.parametrize("dist", ["poisson", "binomial", "negbin"])
def test_bca_coverage_of_fano(dist):
    R, n = (500, 1000) if dist == "negbin" else (400, 600)  # heavy tail: BCa needs the larger N
    rng = np.random.default_rng({"poisson": 1, "binomial": 2, "negbin": 3}[dist])
    if dist == "poisson":
        x, F = rng.poisson(4.0, (R, n)), 1.0
    elif dist == "binomial":
        x, F = rng.binomial(20, 0.3, (R, n)), 0.7
    else:
        x, F = rng.negative_binomial(5, 1 / 3, (R, n)), 3.0  # mean 10, F = 3
    lo, hi = sp.fano_bca(x, n_boot=999, seed=0, batch=20)
    cover = np.mean((lo <= F) & (F <= hi))
    assert 0.93 <= cover <= 0.97, cover
