"""Tests of gptwaves.analysis.spelling against independent references."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from gptwaves.analysis import spelling as sp

VOCAB = ["the", "king", "lord", "love", "death", "sweet", "night", "heart",
         "good", "come", "thou", "shall", "with", "not", "is", "a", "my", "fair"]
LEXICON = frozenset(VOCAB)


def _misspell(word):
    # same length, never in VOCAB (no vocab word starts with 'z')
    return "z" + word[1:] if len(word) > 1 else "z"


def synthetic_texts(rng, n, length, p, bursty=False, stay=0.85):
    """Samples of real words, each misspelled with overall rate ~p.

    Independent source: each word misspelled iid with prob p.
    Bursty source: two-state Markov chain, P(mis -> mis) = stay, stationary rate p.
    The misspelling keeps the word length, so the word total is unaffected.
    """
    enter = p * (1 - stay) / (1 - p)  # P(ok -> mis) giving stationary p
    texts = []
    for _ in range(n):
        parts = []
        size = 0
        state = rng.random() < p
        while size < length + 30:
            w = VOCAB[rng.integers(len(VOCAB))]
            if bursty:
                state = (rng.random() < stay) if state else (rng.random() < enter)
                mis = state
            else:
                mis = rng.random() < p
            tok = _misspell(w) if mis else w
            sep = " " if rng.random() < 0.8 else ", "
            parts.append(tok + sep)
            size += len(tok) + len(sep)
        texts.append("\n" + "".join(parts)[:length + 16])
    return texts


# ---------------------------------------------------------------- words
def test_extract_words_apostrophes_and_case():
    t = "\nDon't 'Tis O'ER the lords' a''b x"
    words = [w for w, _, _ in sp.extract_words(t, 1)]
    assert words == ["don't", "tis", "o'er", "the", "lords", "a", "b"]


def test_extract_words_spans_and_splitting():
    t = "ab1cd,ef-gh\tij.k_l "
    got = sp.extract_words(t)
    assert [w for w, _, _ in got] == ["ab", "cd", "ef", "gh", "ij", "k", "l"]
    for w, s, e in got:
        assert t[s:e].lower() == w


def test_extract_words_prompt_and_cut_final_word():
    # prompt "RO" continued by "MEO" -> word overlaps the prompt -> dropped
    t = "ROMEO: good night swe"
    assert [w for w, _, _ in sp.extract_words(t, 2)] == ["good", "night"]
    # word ending exactly at the sample end is treated as cut
    assert [w for w, _, _ in sp.extract_words("a good", 0)] == ["a"]
    # a trailing apostrophe might continue the word -> cut too
    assert [w for w, _, _ in sp.extract_words("we don'", 0)] == ["we"]
    # followed by punctuation: kept
    assert [w for w, _, _ in sp.extract_words("a good.", 0)] == ["a", "good"]
    # prompt entirely non-letters: first generated word kept
    assert sp.extract_words("\nHello there ", 1)[0] == ("hello", 1, 6)
    # margin: words are counted by start; a word started in L finishes in the margin
    t = "\nab cdefg hij klmnopqrstu"
    assert [w for w, _, _ in sp.extract_words(t, 1, length=5)] == ["ab", "cdefg"]
    assert sp.scan_words(t, 1, length=12)[1] == 0
    words, n_cut = sp.scan_words(t, 1, length=20)
    assert [w for w, _, _ in words] == ["ab", "cdefg", "hij"] and n_cut == 1


def test_lexicon_and_word_list():
    lex = sp.build_lexicon("The KING's men; 'tis o'er.\nKing")
    assert lex == frozenset({"the", "king's", "men", "tis", "o'er", "king"})
    wl = sp.load_word_list(["\ufeffHello\n", "  \n", "# comment\n", "World \n"])
    assert wl == frozenset({"hello", "world"})
    with pytest.raises(ValueError):
        sp.load_word_list([])
    with pytest.raises(ValueError):
        sp.load_word_list(["\n", "   ", "# only a comment"])


def test_score_samples():
    sc = sp.score_samples(["\nthe zing is good x", "\nzz zz the y", "\nx"], LEXICON, 1)
    assert sc.n_correct.tolist() == [3, 1, 0]
    assert sc.n_misspelled.tolist() == [1, 2, 0]
    assert sc.n_words.tolist() == [4, 3, 0]
    assert sc.words[0] == [(1, False), (5, True), (10, False), (13, False)]
    assert sc.word_sample.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert sc.word_mis.tolist() == [False, True, False, False, True, True, False]
    assert sc.word_len.tolist() == [3, 4, 2, 4, 2, 2, 3]
    assert sc.n_cut.tolist() == [1, 1, 1]


# ---------------------------------------------------------------- dispersion
def test_dispersion_poisson():
    x = np.random.default_rng(12345).poisson(4.0, 2000)
    d = sp.dispersion(x)
    assert d["n"] == 2000
    assert d["mean"] == pytest.approx(np.mean(x))
    assert d["var"] == pytest.approx(np.var(x, ddof=1))
    assert d["fano"] == pytest.approx(1.0, abs=0.1)
    assert d["q"] == pytest.approx(d["fano"] - 1)
    assert d["verdict"] == "Poissonian"
    lo, hi = d["fano_ci"]
    assert lo < 1.0 < hi
    assert lo < d["fano"] < hi
    assert d["D"] == pytest.approx(1999 * np.var(x, ddof=1) / np.mean(x))
    assert d["dof"] == 1999


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dispersion_p_value_matches_scipy(seed):
    x = np.random.default_rng(seed).poisson(3.0, 300)
    d = sp.dispersion(x, n_boot=0)
    D = (x.size - 1) * x.var(ddof=1) / x.mean()
    ref = min(1.0, 2 * min(stats.chi2.cdf(D, x.size - 1), stats.chi2.sf(D, x.size - 1)))
    assert d["p_value"] == pytest.approx(ref, rel=1e-10)


def test_dispersion_binomial_sub_and_negbin_super():
    rng = np.random.default_rng(7)
    b = sp.dispersion(rng.binomial(20, 0.3, 2000))
    assert b["fano"] == pytest.approx(0.7, abs=0.06)
    assert b["verdict"] == "sub-Poissonian"
    assert b["fano_ci"][0] < 0.7 < b["fano_ci"][1]
    nb = sp.dispersion(rng.negative_binomial(3, 0.4, 2000))  # F = 1/0.4 = 2.5
    assert nb["fano"] == pytest.approx(2.5, rel=0.15)
    assert nb["verdict"] == "super-Poissonian"


def test_bootstrap_ci_covers_true_value():
    # coverage over repeated Poisson samples: true F = 1 inside most 95% CIs
    rng = np.random.default_rng(99)
    hits = 0
    for i in range(40):
        d = sp.dispersion(rng.poisson(2.5, 400), n_boot=1000, seed=i)
        hits += d["fano_ci"][0] <= 1.0 <= d["fano_ci"][1]
    assert hits >= 33


def test_bca_matches_scipy_directly():
    x = np.random.default_rng(5).poisson(3.0, 500)
    d = sp.dispersion(x, n_boot=999, seed=0)
    res = stats.bootstrap((x,), lambda v, axis: v.var(axis=axis, ddof=1) / v.mean(axis=axis), n_resamples=999,
                          method="BCa", vectorized=True, rng=np.random.default_rng(0))
    assert d["fano_ci"][0] == pytest.approx(res.confidence_interval.low)
    assert d["fano_ci"][1] == pytest.approx(res.confidence_interval.high)
    c = sp.dispersion([2, 2, 2, 2])
    assert c["fano"] == 0 and c["fano_ci"] == [0.0, 0.0]


def test_dispersion_errors_and_zero_mean():
    with pytest.raises(ValueError):
        sp.dispersion([3])
    with pytest.raises(ValueError):
        sp.dispersion([])
    d = sp.dispersion([0, 0, 0])
    assert math.isnan(d["fano"]) and d["verdict"] == "undefined"
    with pytest.raises(ValueError):
        sp.analyze(["\nthe king "], LEXICON, 1, 10)


# ---------------------------------------------------------------- references
def test_closed_form_reference_hand_computed():
    # two samples; lengths 1 and 5; p(1) = 0, p(5) = 2/3
    samp = np.array([0, 0, 1, 1, 1])
    ln = np.array([1, 5, 5, 5, 1])
    mis = np.array([0, 1, 0, 1, 0], bool)
    r = sp.independent_reference(samp, ln, mis, 2)
    S = np.array([2 / 3, 4 / 3])
    V = np.array([2 / 9, 4 / 9])
    n = np.array([2, 3.0])
    assert r["fano_ref_misspelled"] == pytest.approx((V.mean() + S.var(ddof=1)) / S.mean())
    assert r["fano_ref_correct"] == pytest.approx((V.mean() + (n - S).var(ddof=1)) / (n - S).mean())
    assert r["rate_by_length"]["rate"][0] == 0 and r["rate_by_length"]["rate"][4] == pytest.approx(2 / 3)
    ren = sp.renewal_reference([0, 0, 0, 1, 1], [0, 2, 4, 0, 3])
    d = np.array([2, 2, 3.0])
    assert ren["cv2"] == pytest.approx(d.var(ddof=1) / d.mean() ** 2)


def test_thinning_formula_by_simulation():
    rng = np.random.default_rng(2024)
    n_i = rng.binomial(30, 0.6, 20_000)  # sub-Poissonian total
    samp = np.repeat(np.arange(n_i.size), n_i)
    mis = rng.random(samp.size) < 0.2
    r = sp.independent_reference(samp, np.ones(samp.size, int), mis, n_i.size)
    assert r["excess_misspelled"] == pytest.approx(1.0, abs=0.03)
    assert r["excess_correct"] == pytest.approx(1.0, abs=0.03)


# ---------------------------------------------------------------- synthetic sources
def test_independent_source_no_clustering():
    rng = np.random.default_rng(11)
    texts = synthetic_texts(rng, 1000, 112, 0.2)
    r = sp.analyze(texts, LEXICON, 1, 112, n_boot=200, n_perm=300)
    assert r["error_rate"] == pytest.approx(0.2, abs=0.02)
    assert r["n_cut"] == 0
    for k in ("correct", "misspelled"):
        d = r["decomposition"][k]
        assert d["excess"] == pytest.approx(1.0, abs=0.1)
        assert d["fano_ref"] == pytest.approx(d["null_median"], rel=0.05)
    assert r["cascade"]["rr"] == pytest.approx(1.0, abs=0.1)
    assert r["cascade"]["verdict"] == "independent"


def test_bursty_source_clusters():
    rng = np.random.default_rng(12)
    texts = synthetic_texts(rng, 1000, 112, 0.2, bursty=True)
    r = sp.analyze(texts, LEXICON, 1, 112, n_boot=200, n_perm=300)
    assert r["decomposition"]["misspelled"]["verdict"] == "clustered"
    assert r["excess_misspelled"] > 1.3
    assert r["cascade"]["verdict"] == "cascade" and r["cascade_rr"] > 2.0


# ---------------------------------------------------------------- windows
def test_window_counts_hand_made():
    # one sample, counted part 20 chars; words start at 0 the, 4 zzz, 8 good, 13 zq, 16 the
    samp = np.zeros(5, int)
    start = np.array([0, 4, 8, 13, 16])
    mis = np.array([0, 1, 0, 1, 0], bool)
    wc = sp.window_counts(samp, start, mis, 1, 20, 8)
    assert wc["n_windows"] == 2
    assert wc["correct"].tolist() == [1, 1] and wc["misspelled"].tolist() == [1, 1]
    wc4 = sp.window_counts(samp, start, mis, 1, 20, 4)
    assert wc4["correct"].tolist() == [1, 0, 1, 0, 1]
    assert wc4["misspelled"].tolist() == [0, 1, 0, 1, 0]
    qc = sp.q_curve(samp, start, mis, 1, 20, windows=[4, 8])
    x = np.array([1, 0, 1, 0, 1.0])
    assert qc[4]["fano_correct"] == pytest.approx(x.var(ddof=1) / x.mean())
    assert sp.default_windows(128) == [16, 32, 64, 128]
    assert sp.default_windows(112) == [16, 32, 64]
    assert sp.default_windows(10) == [10]


def test_window_full_length_equals_sample_counts():
    rng = np.random.default_rng(3)
    texts = synthetic_texts(rng, 50, 112, 0.3)
    sc = sp.score_samples(texts, LEXICON, 1, 112)
    wc = sp.window_counts(sc.word_sample, sc.word_start - 1, sc.word_mis, 50, 112, 112)
    assert wc["correct"].tolist() == sc.n_correct.tolist()
    assert wc["misspelled"].tolist() == sc.n_misspelled.tolist()


def test_stratified_null_keeps_bin_totals_and_band_brackets():
    # length strata: sample i holds only words of length i + 1, so a shuffle that keeps every
    # length bin's misspelled total keeps every sample's count: F is the same in every permutation
    n, k = 8, 10
    samp = np.repeat(np.arange(n), k)
    start = np.tile(np.arange(k) * 10, n)
    rng = np.random.default_rng(8)
    mis = rng.random(samp.size) < 0.4
    null = sp.stratified_null(samp, start, samp + 1, mis, n, 112, n_perm=50, seed=0)
    f_obs = sp.dispersion(np.bincount(samp[mis], minlength=n), n_boot=0)["fano"]
    assert np.allclose(null["fano_misspelled"], f_obs)
    # position strata: one length, the first word of every sample misspelled and no other: the
    # first position bin is all misspelled, the others all correct, so each sample keeps one
    mis = start == 0
    null = sp.stratified_null(samp, start, np.full(samp.size, 3), mis, n, 112, n_perm=50, seed=0)
    assert np.all(null["fano_misspelled"] == 0) and np.all(np.isfinite(null["fano_correct"]))
    # the Q(w) null band brackets its median
    texts = synthetic_texts(rng, 300, 112, 0.3)
    r = sp.analyze(texts, LEXICON, 1, 112, n_boot=0, n_perm=200)
    q = r["q_curve"]
    for k in ("correct", "misspelled"):
        band = q[f"null_q_{k}"]
        assert all(lo <= med <= hi for lo, med, hi in zip(band["lo"], band["median"], band["hi"]))


def test_position_bins_and_strata():
    assert sp.position_bins([0, 7, 8, 15, 16, 31, 32, 47, 48, 111]).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 7]
    assert sp.position_edges(112) == [0, 8, 16, 32, 48, 64, 80, 96]
    assert sp.strata([0, 20], [3, 15]).tolist() == [2, 2 * sp.LENGTH_BINS + 11]


def test_closed_form_reference_with_position_strata_hand_computed():
    # one length; positions 0 and 40 (bins 0 and 3): p(bin 0) = 1/2, p(bin 3) = 0
    samp = np.array([0, 0, 1, 1])
    start = np.array([0, 40, 0, 40])
    mis = np.array([1, 0, 0, 0], bool)
    r = sp.independent_reference(samp, np.full(4, 3), mis, 2, word_start=start)
    S = np.array([0.5, 0.5])
    V = np.array([0.25, 0.25])
    assert r["fano_ref_misspelled"] == pytest.approx((V.mean() + S.var(ddof=1)) / S.mean())
    assert np.allclose(np.nan_to_num(r["rate_by_position"]["rate"], nan=-1), [0.5, -1, -1, 0.0])
    assert r["rate_by_position"]["first_character"] == [0, 8, 16, 32]
    # length only: p = 1/4 for every word
    r0 = sp.independent_reference(samp, np.full(4, 3), mis, 2)
    assert r0["fano_ref_misspelled"] == pytest.approx((2 * 0.25 * 0.75 + 0) / 0.5)


def test_residual_ratio_is_one_for_independent_errors_and_its_se_matches_the_bootstrap():
    rng = np.random.default_rng(4)
    n = 2000
    n_i = rng.binomial(30, 0.6, n)
    p = rng.uniform(0.1, 0.9, n)  # known per-sample rates: S and V exact
    k = rng.binomial(n_i, p)
    S, V = n_i * p, n_i * p * (1 - p)
    r, se = sp.residual_ratio(k, S, V)
    assert r == pytest.approx(1.0, abs=3 * se)
    boot = [np.log(np.var((k - S)[j], ddof=1) / V[j].mean()) for j in (rng.integers(0, n, n) for _ in range(400))]
    assert se == pytest.approx(np.std(boot), rel=0.15)
    # a per-sample propensity raises it; the correct count has the same ratio (its deviation is -d)
    k2 = rng.binomial(n_i, np.clip(p + 0.1 * rng.normal(size=n), 0, 1))
    assert sp.residual_ratio(k2, S, V)[0] > 1.3
    assert sp.residual_ratio(n_i - k2, n_i - S, V)[0] == pytest.approx(sp.residual_ratio(k2, S, V)[0])


def test_log_excess_se_matches_the_bootstrap():
    rng = np.random.default_rng(3)
    n = 1000
    n_i = rng.binomial(30, 0.6, n)
    p_i = np.clip(0.2 + 0.1 * rng.normal(size=n), 0.01, 0.99)  # per-sample propensity: excess > 1
    k = rng.binomial(n_i, p_i)
    S, V = 0.2 * n_i, 0.2 * 0.8 * n_i
    se = sp.log_excess_se(k, S, V)
    boot = []
    for _ in range(400):
        j = rng.integers(0, n, n)
        f = k[j].var(ddof=1) / k[j].mean()
        fr = (V[j].mean() + S[j].var(ddof=1)) / S[j].mean()
        boot.append(np.log(f / fr))
    assert se == pytest.approx(np.std(boot), rel=0.15)
    assert sp.log_fano_se(k) == pytest.approx(np.std([np.log(k[j].var(ddof=1) / k[j].mean()) for j in
                                                      (rng.integers(0, n, n) for _ in range(400))]), rel=0.15)


# ---------------------------------------------------------------- cascade
def test_cascade_hand_made():
    # sample 0: M M C M M M C ; sample 1: M C M  (M = misspelled)
    s0 = "\nzz zz the zz zz zz the x"
    s1 = "\nzz the zz x"
    sc = sp.score_samples([s0, s1], LEXICON, 1)
    assert sc.word_mis.tolist() == [1, 1, 0, 1, 1, 1, 0, 1, 0, 1]
    c = sp.cascade(sc.word_sample, sc.word_mis, 2, n_boot=0)
    # pairs: s0 (MM)(MC)(CM)(MM)(MM)(MC), s1 (MC)(CM)
    assert c["n_pairs"] == 8 and c["n_pairs_prev_mis"] == 6
    assert c["p_mis_given_prev_mis"] == pytest.approx(3 / 6)
    assert c["p_mis_given_prev_correct"] == pytest.approx(2 / 2)
    assert c["rr"] == pytest.approx(0.5)


def test_cascade_null_keeps_counts_per_sample():
    samp = np.repeat(np.arange(3), [4, 1, 6])
    start = np.array([0, 10, 20, 40, 0, 0, 5, 20, 25, 50, 60])  # position bins 0 1 2 3 | 0 | 0 0 2 2 4 4
    mis = np.array([1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0], bool)
    pb = sp.position_bins(start)
    for ws, key in ((None, samp), (start, samp * 10 + pb)):
        rng = np.random.default_rng([1, 2])
        flags = np.concatenate(list(sp._group_shuffles(samp, mis, 2000, rng, ws, 4_000_000)), axis=1)
        assert flags.shape == (11, 2000)
        keys = np.unique(key)
        want = np.array([mis[key == g].sum() for g in keys])
        got = np.array([flags[key == g].sum(axis=0) for g in keys])  # (groups, permutations)
        assert np.all(got == want[:, None])  # every sample (and position bin) keeps its count
        assert len({tuple(c) for c in flags.T}) > 1  # and the flags do move
    null = sp.cascade_null(samp, mis, 3, n_perm=2000, seed=1)
    assert null.shape == (2000,)
    fin = null[np.isfinite(null)]
    assert fin.size > 1000 and np.all(fin >= 0)
    p, n = sp.perm_p_value(1.0, fin)
    assert 0 < p <= 1 and n == fin.size


# ---------------------------------------------------------------- analyze
def test_analyze_json_and_keys():
    rng = np.random.default_rng(4)
    texts = synthetic_texts(rng, 100, 64, 0.3)
    r = sp.analyze(texts, LEXICON, 1, 64, n_boot=100, n_perm=50)
    s = json.dumps(r, allow_nan=False)
    assert json.loads(s) == r
    for k in ("correct", "misspelled", "words", "error_rate", "excess_correct", "excess_misspelled", "cascade_rr",
              "decomposition", "q_curve", "cascade", "n_samples", "counts", "margin", "n_perm", "n_cut",
              "rate_by_length"):
        assert k in r
    assert r["n_samples"] == 100 and r["margin"] == 16
    assert len(r["counts"]["correct"]) == 100
    assert r["q_curve"]["windows"] == [16, 32, 64]
    assert r["correct"]["mean"] == pytest.approx(np.mean(r["counts"]["correct"]))


@pytest.mark.parametrize("texts, undefined, cascade_reason", [
    (["\nzz qq x", "\nqq zz zq x", "\nzz x"], {"correct"}, "no pair starts with a correct word"),  # all misspelled
    (["\nthe king x", "\nthe the x"], {"misspelled"}, "no pair starts with a misspelled word"),  # all correct
    (["\n   ", "\n!!"], {"correct", "misspelled"}, "no pairs of consecutive words"),  # no words
    (["\nthe x", "\nking x"], {"misspelled"}, "no pairs of consecutive words"),  # one word per sample
])
def test_analyze_degenerate_inputs_give_none_with_reason(texts, undefined, cascade_reason):
    r = sp.analyze(texts, LEXICON, 1, 8, n_boot=50, n_perm=50)
    json.dumps(r, allow_nan=False)
    for k in ("correct", "misspelled"):
        d = r["decomposition"][k]
        if k in undefined:
            assert r[k]["fano"] is None and r[k]["verdict"] == "undefined" and r[k]["reason"]
            assert d["verdict"] == "undefined" and d["reason"] and d["excess_null"] is None and d["z"] is None
        else:
            assert r[k]["fano"] is not None and r[k]["verdict"] != "undefined"
    assert r["cascade"]["rr"] is None and r["cascade"]["z"] is None
    assert r["cascade"]["reason"] == cascade_reason


# ---------------------------------------------------------------- crossing
def test_crossing_iteration():
    it = [0, 10, 100, 1000]
    f = [1.2, 1.1, 0.9, 0.7]
    x = sp.crossing_iteration(it, f)
    # interpolation in log(it+1): halfway between log(11) and log(101)
    assert x == pytest.approx(math.expm1(0.5 * (math.log(11) + math.log(101))))
    assert sp.crossing_iteration(it, f, interpolate=False) == 100
    assert sp.crossing_iteration(it, [0.9, 0.8, 0.7, 0.6]) is None
    assert sp.crossing_iteration(it, [0.9, 1.1, None, 0.8], interpolate=False) == 1000
    assert sp.crossing_iteration([100, 0, 10], [0.5, 1.5, 1.0], interpolate=False) == 100
    assert sp.crossing_iteration([0, 10], [1.0, 0.5]) == pytest.approx(0.0)
    # an early dip that comes back above 1 is not the transition; the lasting crossing is
    its = [0, 10, 20, 50, 100]
    fs = [1.08, 0.99, 1.06, 0.85, 0.86]
    assert sp.crossing_iteration(its, fs, interpolate=False) == 50
    assert sp.crossing_iteration(its, fs, interpolate=False, which="first") == 10
    x = sp.crossing_iteration(its, fs)
    t = (1.06 - 1.0) / (1.06 - 0.85)
    assert x == pytest.approx(math.expm1(math.log1p(20) + t * (math.log1p(50) - math.log1p(20))))
    assert sp.crossing_iteration(its, [1.08, 0.9, 1.1, 1.2, 1.3]) is None


def test_crossing_conditions_and_ci():
    rng = np.random.default_rng(0)
    n = 800
    pois = [rng.poisson(5, n) for _ in range(3)]
    r = sp.crossing([0, 10, 100], pois, n_boot=100)
    assert r["iteration"] is None and not r["reported"] and r["reason"]
    sub_first = [rng.binomial(10, 0.5, n), rng.poisson(5, n), rng.binomial(10, 0.5, n)]
    r = sp.crossing([0, 10, 100], sub_first, n_boot=100)
    assert not r["reported"] and "first" in r["reason"]
    r = sp.crossing([0], [rng.poisson(5, n)])
    assert not r["reported"] and "two" in r["reason"]
    json.dumps(r, allow_nan=False)
