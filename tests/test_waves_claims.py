"""Verdict rules of claims 1 and 4 (docs/method.md, Findings) on synthetic checkpoints where the truth is known.

Every scenario goes the same way as a real run: synthetic waves of two taps per checkpoint
(``hook_embed`` and the focus tap) -> ``analyze_tap`` -> ``tap_summary`` -> ``waves_claims``.
Sizes are small (16 samples x 200 steps x 32 channels) to keep the file fast.
"""

import json
import re

import numpy as np
import pytest
from scipy.signal import lfilter

from gptwaves.analysis import claims as K
from gptwaves.analysis import waves as W
from gptwaves.analysis.waves_claims import waves_claims

S, T, C = 16, 200, 32
ITS = [0, 10, 100, 300, 1000, 3000]
FOCUS = "blocks.1.hook_resid_post"
SPACE_CH = [28, 29, 30, 31]


def words_text(seed):
    """(S, T) current and next characters: words of 3-6 letters separated by spaces."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgyp"))
    out = []
    for _ in range(S):
        s = []
        while len(s) < T + 1:
            s += list(rng.choice(letters, rng.integers(3, 7))) + [" "]
        out.append(s[: T + 1])
    ch = np.array(out, dtype="<U1")
    return ch[:, :-1], ch[:, 1:]


def embed(cur, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    vocab = sorted(set(cur.ravel()))
    E = rng.standard_normal((len(vocab), C))
    idx = np.searchsorted(vocab, cur)
    return E[idx] * scale


def focus_waves(cur, seed, coupling, space_gain):
    """AR(1) noise (phi 0.8), a shared latent AR factor (random per sample: induced, not evoked) with
    loading ``coupling`` on channels 0..27; channels 28..31 are ``space_gain`` x "c_t is a space" plus
    white noise (sd 0.3)."""
    rng = np.random.default_rng(seed)
    noise = lfilter([1.0], [1.0, -0.8], rng.standard_normal((S, T, C)), axis=1) * 0.6
    latent = lfilter([1.0], [1.0, -0.8], rng.standard_normal((S, T, 1)), axis=1) * 0.6
    load = np.zeros(C)
    load[:28] = coupling * rng.choice([-1.0, 1.0], 28)
    x = noise + latent * load
    white = rng.standard_normal((S, T, len(SPACE_CH)))
    x[:, :, SPACE_CH] = 0.3 * white + space_gain * (cur == " ")[:, :, None]
    return x


def checkpoints(couplings, gains, seed=0, input_scale=0.3, identical=False):
    cur, nxt = words_text(seed)
    cks = []
    for i, (it, c, g) in enumerate(zip(ITS, couplings, gains)):
        xe = embed(cur, seed + i, input_scale) + np.random.default_rng(seed + 50 + i).standard_normal((S, T, C))
        xf = xe.copy() if identical else focus_waves(cur, seed + 100 + i, c, g)
        null = 20 if i == len(couplings) - 1 else 0  # the probe's red-noise null is only read at the last
        taps = {t: W.tap_summary(W.analyze_tap(x, cur, nxt, nlags=32, seed=i, probe_null=null if t == FOCUS else 0))
                for t, x in (("hook_embed", xe), (FOCUS, xf))}
        cks.append({"iteration": it, "taps": taps})
    json.dumps(cks, allow_nan=False)
    return cks


def by_id(claims):
    return {c["id"]: c for c in claims}


def check_structure(claims):
    assert [c["id"] for c in claims] == [1, 4]
    for c in claims:
        for part in ("as_stated", "beyond_null"):
            assert c[part]["verdict"] in K.VERDICTS and c[part]["text"]
            assert not re.search(r"\b(None|True|False|nan|inf)\b", c[part]["text"]), c[part]["text"]
    json.dumps(claims, allow_nan=False)


@pytest.fixture(scope="module")
def growing():
    return waves_claims(checkpoints([0, 0.2, 0.4, 0.7, 1.0, 1.5], [0, 0, 0.3, 0.6, 1.0, 1.5]), FOCUS)


def test_planted_build_up_is_supported(growing):
    check_structure(growing)
    c1, c4 = by_id(growing)[1], by_id(growing)[4]
    assert c1["as_stated"]["verdict"] == K.SUPPORTED, c1["as_stated"]["text"]
    assert c1["beyond_null"]["verdict"] == K.SUPPORTED, c1["beyond_null"]["text"]
    assert c4["as_stated"]["verdict"] == K.SUPPORTED, c4["as_stated"]["text"]
    assert c4["beyond_null"]["verdict"] == K.SUPPORTED, c4["beyond_null"]["text"]
    assert "rising" in c1["as_stated"]["text"]


def test_no_coherence_is_not_supported():
    claims = waves_claims(checkpoints([0] * 6, [0] * 6, seed=1), FOCUS)
    check_structure(claims)
    c1, c4 = by_id(claims)[1], by_id(claims)[4]
    assert c1["beyond_null"]["verdict"] == K.NOT_SUPPORTED, c1["beyond_null"]["text"]
    assert c1["as_stated"]["verdict"] != K.SUPPORTED, c1["as_stated"]["text"]
    assert c4["as_stated"]["verdict"] != K.SUPPORTED, c4["as_stated"]["text"]
    assert c4["beyond_null"]["verdict"] != K.SUPPORTED, c4["beyond_null"]["text"]


def test_random_embedding_input_has_nothing_beyond_the_null():
    """The focus tap carries only the input (random embeddings of the characters, no dynamics)."""
    claims = waves_claims(checkpoints([0] * 6, [0] * 6, seed=2, input_scale=1.0, identical=True), FOCUS)
    check_structure(claims)
    for c in claims:
        assert c["beyond_null"]["verdict"] == K.NOT_SUPPORTED, c["beyond_null"]["text"]
    # the raw excess is there (the characters couple the channels), but no more than at the input
    assert by_id(claims)[1]["beyond_null"]["numbers"]["significant"] is True


def test_rise_then_fall_is_stated():
    # a clear turn (quadratic term p = 0.006, omnibus F p = 0.013): shapes need statistical support
    claims = waves_claims(checkpoints([0, 1.5, 1.4, 1.0, 0.6, 0.3], [0] * 6, seed=3), FOCUS)
    c1 = by_id(claims)[1]
    text = c1["as_stated"]["text"]
    assert "then falls" in text and "peaks at iteration 10" in text, text
    assert c1["as_stated"]["verdict"] != K.SUPPORTED
    assert c1["as_stated"]["numbers"]["trend_mean_abs_corr"]["shape"] == "rise then fall"
    assert c1["as_stated"]["numbers"]["trend_mean_abs_corr"]["peak_iteration"] == 10


def test_degenerate_inputs_are_inconclusive():
    assert all(c[p]["verdict"] == K.INCONCLUSIVE for c in waves_claims([], FOCUS)
               for p in ("as_stated", "beyond_null"))
    one = [{"iteration": 0, "taps": {FOCUS: {}, "hook_embed": {}}}]
    claims = waves_claims(one, FOCUS)
    check_structure(claims)
    assert by_id(claims)[1]["as_stated"]["verdict"] == K.INCONCLUSIVE


def test_relative_to_input(growing):
    from gptwaves.analysis.waves_claims import relative_to_input

    taps = {"hook_embed": {"induced": {"mean_abs_corr": 0.1, "participation_ratio": 50.0},
                           "surrogate": {"mean_abs_corr": {"excess": 0.05}}, "n_space_labelled": 2},
            FOCUS: {"induced": {"mean_abs_corr": 0.3, "participation_ratio": None},
                    "surrogate": {"mean_abs_corr": {"excess": 0.2}}, "n_space_labelled": 5}}
    rel = relative_to_input(taps)
    assert rel[FOCUS]["mean_abs_corr_induced"] == pytest.approx(0.2)
    assert rel[FOCUS]["excess_mean_abs_corr"] == pytest.approx(0.15)
    assert rel[FOCUS]["participation_ratio_induced"] is None and rel[FOCUS]["n_space_labelled"] == 3
    assert rel["hook_embed"]["mean_abs_corr_induced"] == 0
    assert relative_to_input({FOCUS: {}}) == {}
    json.dumps(rel, allow_nan=False)


def test_no_input_floor_is_said_in_words_and_leaves_the_comparison_open():
    cks = checkpoints([0, 0.2, 0.4, 0.7, 1.0, 1.5], [0, 0, 0.3, 0.6, 1.0, 1.5])
    for c in cks:
        c["taps"].pop("hook_embed")
    claims = waves_claims(cks, FOCUS, None)
    check_structure(claims)
    for c in claims:
        assert c["beyond_null"]["verdict"] != K.SUPPORTED, c["beyond_null"]["text"]
        assert "no input floor" in c["beyond_null"]["text"]
    assert by_id(claims)[1]["beyond_null"]["numbers"]["parts"]["above_input_floor"] is None
