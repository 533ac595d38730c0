"""Tests of gptwaves.analysis.spelling against independent references."""

import json
import math
import time

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
        while size < length + 10:
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
        texts.append("\n" + "".join(parts)[:length])
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


def test_bootstrap_matches_naive_resampling():
    # multinomial shortcut == classic index resampling in distribution
    rng = np.random.default_rng(5)
    x = rng.poisson(3.0, 500)
    d = sp.dispersion(x, n_boot=4000, seed=0)
    idx = np.random.default_rng(1).integers(0, x.size, (4000, x.size))
    xs = x[idx]
    f = xs.var(axis=1, ddof=1) / xs.mean(axis=1)
    lo, hi = np.quantile(f, [0.025, 0.975])
    assert d["fano_ci"][0] == pytest.approx(lo, abs=0.03)
    assert d["fano_ci"][1] == pytest.approx(hi, abs=0.03)


def test_dispersion_errors_and_zero_mean():
    with pytest.raises(ValueError):
        sp.dispersion([3])
    with pytest.raises(ValueError):
        sp.dispersion([])
    d = sp.dispersion([0, 0, 0])
    assert math.isnan(d["fano"]) and d["verdict"] == "undefined"
    with pytest.raises(ValueError):
        sp.analyze(["\nthe king "], LEXICON, 1, 10)


# ---------------------------------------------------------------- thinning
def test_thinning_formula_by_simulation():
    rng = np.random.default_rng(2024)
    n = rng.binomial(30, 0.6, 200_000)  # sub-Poissonian total, F_N = 0.4
    p = 0.2
    k = rng.binomial(n, p)
    fn = n.var(ddof=1) / n.mean()
    fk = k.var(ddof=1) / k.mean()
    assert fk == pytest.approx((1 - p) + p * fn, rel=0.02)
    ref = sp.independent_reference(n - k, k)
    assert ref["error_rate"] == pytest.approx(p, abs=0.005)
    assert ref["fano_words"] == pytest.approx(fn)
    assert ref["clustering_excess_misspelled"] == pytest.approx(1.0, abs=0.02)
    assert ref["clustering_excess_correct"] == pytest.approx(1.0, abs=0.02)
    # super-Poissonian total too
    n2 = rng.negative_binomial(5, 0.3, 200_000)
    k2 = rng.binomial(n2, p)
    ref2 = sp.independent_reference(n2 - k2, k2)
    assert ref2["clustering_excess_misspelled"] == pytest.approx(1.0, abs=0.03)
    assert ref2["clustering_excess_correct"] == pytest.approx(1.0, abs=0.03)


# ---------------------------------------------------------------- synthetic sources
def test_independent_source_no_clustering():
    rng = np.random.default_rng(11)
    texts = synthetic_texts(rng, 2000, 128, 0.2)
    r = sp.analyze(texts, LEXICON, 1, 128, n_boot=200)
    assert r["error_rate"] == pytest.approx(0.2, abs=0.02)
    assert r["clustering_excess"] == pytest.approx(1.0, abs=0.1)
    assert r["clustering_excess_correct"] == pytest.approx(1.0, abs=0.1)
    assert r["cascade_ratio"] == pytest.approx(1.0, abs=0.08)
    # the majority (correct) count is sub-Poissonian from thinning alone
    assert r["correct"]["verdict"] == "sub-Poissonian"


def test_bursty_source_clusters():
    rng = np.random.default_rng(12)
    texts = synthetic_texts(rng, 2000, 128, 0.2, bursty=True)
    r = sp.analyze(texts, LEXICON, 1, 128, n_boot=200)
    assert r["error_rate"] == pytest.approx(0.2, abs=0.04)
    assert r["clustering_excess"] > 1.5
    assert r["cascade_ratio"] > 2.0
    c = r["cascade"]
    assert c["mean_run_length"] > 1.5 * c["geometric_mean_run_length"]
    assert c["chi2_p"] < 1e-6


# ---------------------------------------------------------------- windows
def test_window_counts_hand_made():
    # prompt "\n" (len 1); generated part 20 chars; w = 8 -> windows [1,9), [9,17)
    #        0         1         2
    #        012345678901234567890
    text = "\nthe zzz good zq the."
    sc = sp.score_samples([text, "\nzz"], LEXICON, 1)
    # words start at 1 the, 5 zzz, 9 good, 14 zq, 17 the (last partial window)
    wc = sp.window_counts(sc, 20, 8)
    # sample 1 ("\nzz", 3 chars) has no complete window
    assert wc["n_windows"] == 2
    assert wc["correct"].tolist() == [1, 1]
    assert wc["misspelled"].tolist() == [1, 1]
    wc4 = sp.window_counts(sc, 20, 4)
    # windows [1,5) [5,9) [9,13) [13,17) [17,21)
    assert wc4["correct"].tolist() == [1, 0, 1, 0, 1]
    assert wc4["misspelled"].tolist() == [0, 1, 0, 1, 0]
    qc = sp.q_curve(sc, 20, 1, windows=[4, 8])
    assert set(qc) == {4, 8}
    assert qc[4]["n_windows"] == 5
    x = np.array([1, 0, 1, 0, 1.0])
    assert qc[4]["fano_correct"] == pytest.approx(x.var(ddof=1) / x.mean())
    assert qc[4]["q_correct"] == pytest.approx(qc[4]["fano_correct"] - 1)
    assert sp.default_windows(128) == [16, 32, 64, 128]
    assert sp.default_windows(300) == [16, 32, 64, 128, 256]
    assert sp.default_windows(10) == [10]


def test_window_full_length_equals_sample_counts():
    rng = np.random.default_rng(3)
    texts = synthetic_texts(rng, 50, 128, 0.3)
    sc = sp.score_samples(texts, LEXICON, 1)
    wc = sp.window_counts(sc, 128, 128)
    assert wc["correct"].tolist() == sc.n_correct.tolist()
    assert wc["misspelled"].tolist() == sc.n_misspelled.tolist()


# ---------------------------------------------------------------- cascade
def test_cascade_hand_made():
    # sample 0: M M C M M M C ; sample 1: M C M  (M = misspelled)
    s0 = "\nzz zz the zz zz zz the x"
    s1 = "\nzz the zz x"
    sc = sp.score_samples([s0, s1], LEXICON, 1)
    assert sc.word_mis.tolist() == [1, 1, 0, 1, 1, 1, 0, 1, 0, 1]
    c = sp.cascade(sc)
    assert c["run_lengths"] == [2, 1, 1]  # runs: 2, 3 | 1, 1
    assert c["n_runs"] == 4
    p = 7 / 10
    assert c["p_mis"] == pytest.approx(p)
    # pairs within samples: s0 6 pairs, s1 2 pairs; prev M: (M,M)(M,C)(M,M)(M,M)(M,C) | (M,C)
    assert c["n_pairs"] == 8
    assert c["n_pairs_prev_mis"] == 6
    assert c["p_mis_given_prev_mis"] == pytest.approx(3 / 6)
    assert c["cascade_ratio"] == pytest.approx((3 / 6) / p)
    assert c["geometric_expected"] == pytest.approx([4 * (1 - p) * p**i for i in range(3)])
    assert c["mean_run_length"] == pytest.approx(7 / 4)


def test_cascade_run_not_spanning_samples():
    sc = sp.score_samples(["\nthe zz x", "\nzz the x"], LEXICON, 1)
    c = sp.cascade(sc)
    assert c["run_lengths"] == [2]
    assert c["n_pairs"] == 2


# ---------------------------------------------------------------- analyze
def test_analyze_json_and_keys():
    rng = np.random.default_rng(4)
    texts = synthetic_texts(rng, 100, 64, 0.3)
    r = sp.analyze(texts, LEXICON, 1, 64, n_boot=100)
    s = json.dumps(r, allow_nan=False)
    assert json.loads(s) == r
    for k in ("correct", "misspelled", "error_rate", "clustering_excess",
              "clustering_excess_correct", "cascade_ratio", "reference", "q_curve",
              "cascade", "n_samples", "counts"):
        assert k in r
    assert r["n_samples"] == 100
    assert len(r["counts"]["correct"]) == 100
    assert r["q_curve"]["windows"] == [16, 32, 64]
    assert r["correct"]["mean"] == pytest.approx(np.mean(r["counts"]["correct"]))


def test_analyze_all_misspelled_gives_none_not_nan():
    texts = ["\nzz qq x", "\nqq zz zq x", "\nzz x"]
    r = sp.analyze(texts, LEXICON, 1, 8, n_boot=50)
    assert r["correct"]["verdict"] == "undefined"
    assert r["correct"]["fano"] is None
    json.dumps(r, allow_nan=False)


def test_analyze_speed():
    rng = np.random.default_rng(0)
    texts = synthetic_texts(rng, 1000, 128, 0.2)
    t = time.perf_counter()
    sp.analyze(texts, LEXICON, 1, 128)
    assert time.perf_counter() - t < 1.0


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
