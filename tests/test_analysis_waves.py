"""Tests of gptwaves.analysis.waves against independent references."""

import warnings

import numpy as np
import pytest
from scipy.special import comb

from gptwaves.analysis import waves as W

statsmodels_acf = pytest.importorskip("statsmodels.tsa.stattools").acf


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def adjusted_rand_index(a, b):
    """ARI from the contingency table (Hubert & Arabie 1985)."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1)
    n = len(a)
    sum_ij = comb(table, 2).sum()
    sum_a = comb(table.sum(1), 2).sum()
    sum_b = comb(table.sum(0), 2).sum()
    expected = sum_a * sum_b / comb(n, 2)
    maximum = 0.5 * (sum_a + sum_b)
    return (sum_ij - expected) / (maximum - expected)


def naive_silhouette(D, labels):
    n = len(labels)
    s = np.zeros(n)
    for i in range(n):
        same = [j for j in range(n) if labels[j] == labels[i] and j != i]
        if not same:
            s[i] = 0.0
            continue
        a = np.mean([D[i, j] for j in same])
        b = min(
            np.mean([D[i, j] for j in range(n) if labels[j] == other])
            for other in set(labels) if other != labels[i]
        )
        s[i] = (b - a) / max(a, b) if max(a, b) > 0 else 0.0
    return s.mean()


def synthetic_waves(seed=0, S=16, T=300, per_group=5, periods=(5, 7, 11), noise=0.5, prompt=10):
    """Three groups of channels driven by sinusoids with random phases per sample."""
    rng = np.random.default_rng(seed)
    C = per_group * len(periods)
    t = np.arange(T)
    x = np.empty((S, T, C))
    truth = np.repeat(np.arange(len(periods)), per_group)
    gain = rng.choice([-1.0, 1.0], C) * rng.uniform(0.8, 1.2, C)  # fixed per channel
    for s in range(S):
        for g, p in enumerate(periods):
            phase = rng.uniform(0, 2 * np.pi)
            drive = np.sin(2 * np.pi * t / p + phase)
            for c in np.flatnonzero(truth == g):
                x[s, :, c] = gain[c] * drive + rng.uniform(-3, 3)
    x += noise * rng.standard_normal(x.shape)
    mask = np.ones((S, T), bool)
    mask[:, :prompt] = False
    return x, mask, truth, np.array(periods)


def random_text(rng, S, T):
    alphabet = np.array(list("aeioubcdfghklmnrstAEBT ,.;!\n") + [" "] * 6)
    chars = rng.choice(alphabet, size=(S, T + 1))
    return chars[:, :-1].astype("<U1"), chars[:, 1:].astype("<U1")


# ----------------------------------------------------------------------------
# centring, correlation, order parameters
# ----------------------------------------------------------------------------


def test_center_subtracts_masked_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 1.0, (4, 20, 3))
    mask = np.ones((4, 20), bool)
    mask[:, :5] = False
    xc = W.center(x, mask)
    np.testing.assert_allclose(xc[mask].reshape(4, 15, 3).mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(xc[:, :5], x[:, :5] - x[:, 5:].mean(axis=1, keepdims=True))
    assert np.all(W.center(x, mask, fill=0.0)[:, :5] == 0)


def test_correlation_matches_corrcoef_on_pooled_centred_data():
    rng = np.random.default_rng(2)
    S, T, C = 5, 40, 6
    x = rng.standard_normal((S, T, C)) + rng.normal(0, 5, (S, 1, C))
    x[..., 1] += 0.7 * x[..., 0]
    mask = np.ones((S, T), bool)
    mask[:, :7] = False
    pooled = np.concatenate([x[s, 7:] - x[s, 7:].mean(0) for s in range(S)])
    np.testing.assert_allclose(W.correlation_matrix(x, mask), np.corrcoef(pooled.T), atol=1e-12)


def test_constant_channel_gives_zero_correlation_without_warning():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 50, 4))
    x[..., 2] = 1.2345
    x[..., 3] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        R = W.correlation_matrix(x)
        acf = W.autocorrelation(x, nlags=5)
        op = W.order_parameters(R)
    assert np.all(np.isfinite(R))
    assert R[2, 2] == 1 and R[3, 3] == 1
    assert np.all(R[2, [0, 1, 3]] == 0) and np.all(R[3, [0, 1, 2]] == 0)
    assert np.all(np.isnan(acf[2])) and np.all(np.isfinite(acf[0]))
    assert np.isfinite(op["participation_ratio"])


def test_participation_ratio_of_independent_modes():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((32, 500, 4))
    op = W.order_parameters(W.correlation_matrix(x))
    assert op["participation_ratio"] == pytest.approx(4, rel=0.05)
    assert op["lambda_max_share"] == pytest.approx(0.25, rel=0.05)
    assert op["mean_abs_corr"] < 0.02
    # 12 channels that are 3 copies each of 4 independent equal-power modes
    modes = rng.standard_normal((8, 400, 4))
    copies = np.repeat(modes, 3, axis=2) * rng.uniform(0.5, 2, 12)
    op = W.order_parameters(W.correlation_matrix(copies))
    assert op["participation_ratio"] == pytest.approx(4, rel=0.05)


def test_fully_correlated_channels():
    rng = np.random.default_rng(5)
    common = rng.standard_normal((6, 300, 1))
    x = common * rng.uniform(0.5, 2.0, 10) + 1e-6 * rng.standard_normal((6, 300, 10))
    op = W.order_parameters(W.correlation_matrix(x))
    assert op["lambda_max_share"] == pytest.approx(1.0, abs=1e-3)
    assert op["participation_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert op["mean_abs_corr"] == pytest.approx(1.0, abs=1e-3)


def test_order_parameters_closed_form():
    R = np.array([[1.0, 0.5, -0.2], [0.5, 1.0, 0.1], [-0.2, 0.1, 1.0]])
    op = W.order_parameters(R)
    lam = np.linalg.eigvalsh(R)
    assert op["mean_abs_corr"] == pytest.approx((0.5 + 0.2 + 0.1) / 3)
    assert op["lambda_max_share"] == pytest.approx(lam.max() / 3)
    assert op["participation_ratio"] == pytest.approx(9 / np.sum(R**2))


# ----------------------------------------------------------------------------
# autocorrelation and periods
# ----------------------------------------------------------------------------


def test_fft_acf_matches_statsmodels_loop():
    rng = np.random.default_rng(6)
    S, T, C, K = 5, 120, 4, 30
    x = np.cumsum(rng.standard_normal((S, T, C)), axis=1) + rng.standard_normal((S, T, C))
    mask = np.ones((S, T), bool)
    mask[:, :9] = False
    mask[2, :20] = False  # a sample with a different prompt length
    per = np.empty((S, C, K + 1))
    for s in range(S):
        start = np.argmax(mask[s])
        for c in range(C):
            per[s, c] = statsmodels_acf(x[s, start:, c], nlags=K, adjusted=False, fft=False)
    got_per = W.autocorrelation(x, nlags=K, mask=mask, per_sample=True)
    np.testing.assert_allclose(got_per, per, atol=1e-10, rtol=0)
    np.testing.assert_allclose(W.autocorrelation(x, nlags=K, mask=mask), per.mean(0), atol=1e-10, rtol=0)


def test_acf_lags_beyond_length_are_zero():
    x = np.random.default_rng(7).standard_normal((2, 10, 1))
    acf = W.autocorrelation(x, nlags=15)
    ref = np.mean([statsmodels_acf(x[s, :, 0], nlags=9, adjusted=False, fft=False) for s in range(2)], 0)
    np.testing.assert_allclose(acf[0, :10], ref, atol=1e-10)
    np.testing.assert_allclose(acf[0, 10:], 0, atol=1e-12)


def test_noncontiguous_mask_rejected():
    x = np.zeros((1, 6, 1))
    with pytest.raises(ValueError):
        W.autocorrelation(x, mask=np.array([[False, True, False, True, True, True]]))


def test_periods_recovered_by_acf_and_psd():
    x, mask, truth, periods = synthetic_waves()
    acf = W.autocorrelation(x, nlags=40, mask=mask)
    p_acf, strength = W.dominant_period_acf(acf)
    np.testing.assert_array_equal(p_acf, periods[truth])
    assert np.all(strength > 0.3)
    p_psd = W.dominant_period_psd(x, mask=mask, nperseg=128)
    np.testing.assert_allclose(p_psd, periods[truth], rtol=0.03)


def test_dominant_period_acf_edge_cases():
    lags = np.arange(30)
    decaying = np.exp(-lags / 5.0)  # never crosses zero
    damped_neg = np.r_[1.0, 0.5, -0.3, -0.2, -0.25, -0.1, -0.15, np.full(23, -0.05)]  # no positive peak
    cosine = np.cos(2 * np.pi * lags / 8) * (1 - lags / 100)
    p, s = W.dominant_period_acf(np.stack([decaying, damped_neg, cosine, np.full(30, np.nan)]))
    assert np.isnan(p[0]) and s[0] == 0
    assert np.isnan(p[1]) and s[1] == 0
    assert p[2] == 8 and s[2] == pytest.approx(cosine[8])
    assert np.isnan(p[3]) and s[3] == 0
    # a multiple of the period that is marginally higher does not win unless rel_height=1
    bumpy = cosine.copy()
    bumpy[16] = cosine[8] + 0.01
    assert W.dominant_period_acf(bumpy)[0][0] == 8
    assert W.dominant_period_acf(bumpy, rel_height=1.0)[0][0] == 16


def test_space_reference_and_similarity():
    rng = np.random.default_rng(8)
    S, T = 6, 200
    chars, _ = random_text(rng, S, T)
    ind = (chars == " ").astype(float)
    ref = W.space_reference(chars, nlags=20)
    expected = np.mean([statsmodels_acf(ind[s], nlags=20, adjusted=False, fft=False) for s in range(S)], 0)
    np.testing.assert_allclose(ref, expected, atol=1e-10)
    x = np.stack([2 * ind + 0.01 * rng.standard_normal((S, T)), rng.standard_normal((S, T))], axis=-1)
    sim = W.acf_similarity(W.autocorrelation(x, nlags=20), ref)
    assert sim[0] > 0.99
    assert abs(sim[1]) < sim[0]


# ----------------------------------------------------------------------------
# clustering
# ----------------------------------------------------------------------------


def test_silhouette_matches_naive_loop():
    rng = np.random.default_rng(9)
    for trial in range(5):
        n = 15
        P = rng.standard_normal((n, 3))
        D = np.sqrt(((P[:, None] - P[None]) ** 2).sum(-1))
        labels = rng.integers(1, 5, n)
        labels[:4] = [1, 2, 3, 4]
        labels[5] = 7  # a singleton
        assert W.silhouette_score(D, labels) == pytest.approx(naive_silhouette(D, list(labels)), abs=1e-12)


def test_clustering_recovers_groups():
    x, mask, truth, _ = synthetic_waves(seed=10)
    R = W.correlation_matrix(x, mask)
    cl = W.cluster_channels(R)
    assert cl["k"] == 3
    assert adjusted_rand_index(cl["labels"], truth) >= 0.95
    assert sorted(cl["order"]) == list(range(len(truth)))
    assert cl["linkage"].shape == (len(truth) - 1, 4)
    assert cl["silhouette"] == pytest.approx(cl["silhouettes"][3])
    # cluster ids follow the dendrogram order
    first_seen = list(dict.fromkeys(cl["labels"][cl["order"]]))
    assert first_seen == [1, 2, 3]
    fixed = W.cluster_channels(R, k=2)
    assert fixed["k"] == 2


def test_clustering_small_inputs():
    one = W.cluster_channels(np.ones((1, 1)))
    assert list(one["labels"]) == [1] and one["k"] == 1
    two = W.cluster_channels(np.array([[1.0, 0.2], [0.2, 1.0]]))
    assert list(two["labels"]) == [1, 1] and np.isnan(two["silhouette"])
    assert W.cluster_channels(np.array([[1.0, 0.2], [0.2, 1.0]]), k=2)["k"] == 2


# ----------------------------------------------------------------------------
# channel function
# ----------------------------------------------------------------------------


def test_class_indicators():
    chars = np.array([list(" \nA,ez")], dtype="<U1")
    ind = W.class_indicators(chars)
    names = list(W.CHAR_CLASSES)
    table = {n: ind[i, 0].tolist() for i, n in enumerate(names)}
    assert table["space"] == [1, 0, 0, 0, 0, 0]
    assert table["newline"] == [0, 1, 0, 0, 0, 0]
    assert table["uppercase"] == [0, 0, 1, 0, 0, 0]
    assert table["punctuation"] == [0, 0, 0, 1, 0, 0]
    assert table["vowel"] == [0, 0, 1, 0, 1, 0]
    assert table["consonant"] == [0, 0, 0, 0, 0, 1]


def test_cohens_d_matches_naive():
    rng = np.random.default_rng(11)
    S, T, C = 4, 60, 5
    x = rng.standard_normal((S, T, C)) + rng.normal(0, 3, (S, 1, C))
    mask = np.ones((S, T), bool)
    mask[:, :6] = False
    ind = rng.random((S, T)) < 0.3
    d = W.cohens_d(x, ind, mask)
    xc = W.center(x, mask)
    for c in range(C):
        a = xc[:, :, c][mask & ind]
        b = xc[:, :, c][mask & ~ind]
        sp = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        assert d[c] == pytest.approx((a.mean() - b.mean()) / sp, rel=1e-9)
    tiny = np.zeros((S, T), bool)
    tiny[0, 10] = True
    assert np.all(np.isnan(W.cohens_d(x, tiny, mask)))


def test_space_channel_gets_space_label():
    rng = np.random.default_rng(12)
    S, T = 8, 200
    chars, nxt = random_text(rng, S, T)
    space = (chars == " ").astype(float)
    x = np.stack(
        [space + 0.1 * rng.standard_normal((S, T)), rng.standard_normal((S, T)),
         (nxt == "\n") + 0.1 * rng.standard_normal((S, T))],
        axis=-1,
    )
    mask = np.ones((S, T), bool)
    mask[:, :3] = False
    f = W.channel_function(x, chars, nxt, mask)
    assert f["classes"] == list(W.CHAR_CLASSES)
    assert f["d_current"].shape == (6, 3) and f["d_next"].shape == (6, 3)
    assert f["label"][0] == "space" and f["best_d"][0] > 3
    assert f["label"][1] == ""
    assert f["label"][2] == "next:newline"


def test_event_triggered_average_recovers_impulse_response():
    rng = np.random.default_rng(13)
    S, T, Wn = 6, 400, 5
    h = np.array([0, 0, 0, 0, 0, 1.0, 2.0, -1.0, 0.5, 0.25, 0.0])  # causal response, lags -5..5
    events = np.zeros((S, T), bool)
    for s in range(S):
        events[s, rng.choice(np.arange(20, T - 20, 12), 20, replace=False)] = True  # >= 12 apart
    x = np.zeros((S, T, 2))
    for s in range(S):
        for t in np.flatnonzero(events[s]):
            x[s, t - Wn : t + Wn + 1, 0] += h
    x[..., 1] = 3.0 * x[..., 0]
    eta, n = W.event_triggered_average(x, events, window=Wn, centered=False)
    assert n == events.sum()
    np.testing.assert_allclose(eta[:, 0], h, atol=1e-12)
    np.testing.assert_allclose(eta[:, 1], 3 * h, atol=1e-12)
    # events too close to the mask edges are skipped
    mask = np.ones((S, T), bool)
    mask[:, :50] = False
    events2 = events.copy()
    events2[:, 52] = True
    events2[:, T - 2] = True
    eta2, n2 = W.event_triggered_average(x, events2, window=Wn, mask=mask, centered=False)
    assert n2 == (events[:, 55 : T - Wn]).sum()
    # several event types at once; centred version differs only by the per-sample mean
    eta3, counts = W.event_triggered_average(x, np.stack([events, events2]), window=Wn, mask=mask)
    assert eta3.shape == (2, 2 * Wn + 1, 2) and list(counts) == [events[:, 55 : T - Wn].sum(), n2]


# ----------------------------------------------------------------------------
# repeatability and the whole tap
# ----------------------------------------------------------------------------


def test_similarity_measures():
    rng = np.random.default_rng(14)
    A = np.corrcoef(rng.standard_normal((6, 50)))
    B = np.corrcoef(rng.standard_normal((6, 50)))
    iu = np.triu_indices(6, 1)
    assert W.matrix_similarity(A, A) == pytest.approx(1.0)
    assert W.matrix_similarity(A, B) == pytest.approx(np.corrcoef(A[iu], B[iu])[0, 1])
    acf_a = rng.standard_normal((4, 11))
    acf_b = 2 * acf_a + 1
    mean, per = W.acf_profile_similarity(acf_a, acf_b)
    assert mean == pytest.approx(1.0) and per.shape == (4,)
    comp = W.compare_recordings([(A, acf_a), (B, acf_b), (A, acf_a)], ["a", "b", "c"])
    assert comp["corr_similarity"].shape == (3, 3)
    assert comp["corr_similarity"][0, 2] == pytest.approx(1.0)
    assert comp["acf_similarity"][0, 1] == pytest.approx(1.0)
    np.testing.assert_allclose(comp["corr_similarity"], comp["corr_similarity"].T)


def test_analyze_tap_keys_and_consistency():
    x, mask, truth, periods = synthetic_waves(seed=15, S=8, T=200)
    rng = np.random.default_rng(15)
    chars, nxt = random_text(rng, 8, 200)
    out = W.analyze_tap(x.astype(np.float32), chars, nxt, mask, nlags=30, window=4)
    C = x.shape[2]
    assert out["R"].shape == (C, C) and out["acf"].shape == (C, 31)
    np.testing.assert_allclose(out["R"], W.correlation_matrix(x, mask), atol=1e-6)
    assert set(out["order_parameters"]) == {"mean_abs_corr", "lambda_max_share", "participation_ratio"}
    np.testing.assert_array_equal(out["period_acf"], periods[truth])
    assert out["clustering"]["k"] == 3
    assert out["eta"].shape == (6, 9, C) and out["eta_counts"].shape == (6,)
    assert out["space_acf"].shape == (31,) and out["space_similarity"].shape == (C,)
    assert out["n_steps"] == mask.sum() and out["n_channels"] == C
    assert out["psd"].shape == (C, out["psd_freqs"].size)
    assert len(out["function"]["label"]) == C


def test_tap_summary_is_json_ready_and_keeps_the_old_keys():
    import json

    x, mask, truth, periods = synthetic_waves(seed=16, S=12, T=240)
    rng = np.random.default_rng(16)
    chars, nxt = random_text(rng, 12, 240)
    r = W.analyze_tap(x, chars, nxt, mask, nlags=30, window=4, n_boot=50)
    s = W.tap_summary(r)
    json.dumps(s, allow_nan=False)
    old = {"mean_abs_corr", "lambda_max_share", "participation_ratio", "n_clusters", "silhouette", "label_counts",
           "n_labelled", "max_abs_d_space", "max_abs_d_by_class", "space_channels", "top_channels",
           "median_period_acf", "n_oscillating", "max_space_similarity", "n_samples", "n_steps", "n_channels"}
    new = {"induced", "evoked_share", "evoked_share_chance", "surrogate", "n_constant", "cluster_structure",
           "best_silhouette", "null_silhouette_q95", "n_space_labelled", "space_similarity_baseline",
           "max_space_similarity_excess", "n_period_acf_unfiltered", "class_events"}
    assert old | new <= set(s)
    assert s["mean_abs_corr"] == pytest.approx(r["order_parameters"]["mean_abs_corr"])
    assert s["induced"]["participation_ratio"] == pytest.approx(r["order_parameters_induced"]["participation_ratio"])
    assert s["surrogate"]["on"] == "induced" and s["surrogate"]["mean_abs_corr"]["significant"]
    assert s["n_clusters"] == 3 and s["cluster_structure"] and s["n_oscillating"] == 15
    assert s["median_period_acf"] == 7


def test_compare_recordings_baselines_are_json_ready():
    import json

    rng = np.random.default_rng(17)
    recs = [(np.corrcoef(rng.standard_normal((6, 50))), rng.standard_normal((6, 11))) for _ in range(3)]
    comp = W.compare_recordings(recs, ["a", "b", "c"])
    assert comp["corr_similarity_baseline"].shape == (3, 3) and comp["acf_similarity_baseline"].shape == (3, 3)
    sm = comp["summary"]
    json.dumps(sm, allow_nan=False)
    assert sm["n_pairs"] == 3
    excess = sm["mean_corr_similarity"] - sm["mean_corr_similarity_baseline"]
    assert sm["corr_similarity_excess"] == pytest.approx(excess)
    assert W.compare_recordings(recs[:1])["summary"]["mean_acf_similarity"] is None


def test_rank_p_is_a_bound_and_the_reported_p_is_not_floored():
    """With B = 10 the rank p-value cannot go below 1 / 11 (kept as ``p_rank`` with its bound); the
    reported p is the Gaussian tail of the surrogates, which measures a strong coupling below it, and
    z = excess / surrogate SD."""
    x, mask, truth, periods = synthetic_waves(seed=18, S=8, T=150)
    coh = W.coherence_with_nulls(x, mask, n_surrogates=10, n_boot=30)
    sur = coh["surrogate"]["mean_abs_corr"]
    assert coh["surrogate"]["min_p_value"] == pytest.approx(1 / 11)
    assert sur["p_rank"] == pytest.approx(1 / 11)
    assert sur["p_value"] < 1 / 11 and sur["significant"]
    assert sur["z"] == pytest.approx(sur["excess"] / sur["surrogate_sd"])
    summ = W.coherence_summary(coh)["surrogate"]
    assert summ["p_rank_bound"] == pytest.approx(1 / 11) and "min_p_value" not in summ


def test_best_silhouette_matches_cluster_channels():
    x, mask, truth, _ = synthetic_waves(seed=19)
    R = W.correlation_matrix(x, mask)
    cl = W.cluster_channels(R)
    best, k = W.best_silhouette(R)
    assert k == cl["k"] and best == pytest.approx(cl["silhouette"], abs=1e-12)
    noise = np.corrcoef(np.random.default_rng(1).standard_normal((30, 400)))
    cl = W.cluster_channels(noise)
    assert W.best_silhouette(noise) == (pytest.approx(max(cl["silhouettes"].values()), abs=1e-12), cl["k"])
