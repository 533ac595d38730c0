"""Generation with the KV cache (gptwaves.sample): exactness against full uncached forwards,
crop and stride context policies, prompt handling and the sampling filters (docs/method.md, Recording waves)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gptwaves.errors import GptwavesError
from gptwaves.model import GPT, GPTConfig
from gptwaves.sample import SamplingConfig, entropy_of, filter_logits, generate, naive_generate, parse_context

BS = 16
V = 23
TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread_module")


def make_model(seed: int = 0, vocab_size: int = V, block_size: int = BS, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=16,
                    dropout=0.0, **kw)
    model = GPT(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # O(1) weights: peaked, position-dependent distributions
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.4)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> GPT:
    return make_model()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def full_forward(model: GPT, seq: torch.Tensor, lo: int, j: int):
    """Uncached forward over seq[:, lo:j+1] (positions restart at 0); values at its last position."""
    logits, _, tv = model(seq[:, lo : j + 1], taps=model.tap_names)
    return logits[:, -1], {k: v[:, -1] for k, v in tv.items()}


def direct_entropy(logits: torch.Tensor) -> np.ndarray:
    p = torch.softmax(logits.double(), -1)
    return (-(p * torch.log(p)).sum(-1)).numpy()


def check_against_reference(model, res, context_start):
    """Every recorded position j equals a full forward over seq[context_start(j) : j + 1]."""
    seq = torch.as_tensor(res.tokens, dtype=torch.long)
    n = res.n_positions
    assert res.entropy.shape == (seq.shape[0], n)
    for j in range(n):
        lo = context_start(j)
        assert 0 <= lo <= j and j - lo + 1 <= model.config.block_size
        logits, taps = full_forward(model, seq, lo, j)
        for name in model.tap_names:
            diff = np.abs(res.taps[name][:, j] - taps[name].numpy()).max()
            assert diff <= TOL, (name, j, diff)
        np.testing.assert_allclose(res.entropy[:, j], direct_entropy(logits), atol=TOL, rtol=0)


def crop_start(j: int) -> int:
    return max(0, j - BS + 1)


def stride_starts(n: int, K: int, bs: int = BS) -> list[int]:
    """Context start of each position under ``stride=K``, derived from the policy's definition:
    the context grows from the start; once it would exceed the window it restarts from the
    last K characters (newest included) and grows again until full."""
    starts, start = [], 0
    for j in range(n):
        if j - start + 1 > bs:
            start = j - K + 1
        starts.append(start)
    return starts


# --------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("prompt", [[3], [1, 4, 1, 5, 9]])
def test_crop_exact_against_full_forward(model, prompt):
    steps = 3 * BS + 5  # well beyond the window
    cfg = SamplingConfig(seed=0)
    res = generate(model, prompt, steps, 3, cfg, taps=model.tap_names, generator=gen(11))
    P = len(prompt)
    assert res.tokens.shape == (3, P + steps)
    assert res.prompt_len == P
    assert (res.tokens[:, :P] == np.array(prompt)).all()
    assert set(res.taps) == set(model.tap_names)
    for name in model.tap_names:
        assert res.taps[name].shape == (3, P - 1 + steps, 16)
        assert res.taps[name].dtype == np.float32
    check_against_reference(model, res, crop_start)


def test_crop_tokens_equal_naive_generate(model):
    steps = 2 * BS + 7
    cfg = SamplingConfig()
    res = generate(model, [2, 7], steps, 4, cfg, taps=model.tap_names, generator=gen(5))
    ref = naive_generate(model, [2, 7], steps, 4, cfg, generator=gen(5))
    np.testing.assert_array_equal(res.tokens, ref)
    # without taps: the same tokens
    res2 = generate(model, [2, 7], steps, 4, cfg, generator=gen(5))
    np.testing.assert_array_equal(res2.tokens, ref)


@torch.no_grad()
def independent_generate(model, prompt, steps, B, seed, context_start, temperature=1.0):
    """Sample with a full forward of the policy's context each step (no cache, no library filters)."""
    g = gen(seed)
    seq = torch.tensor([list(prompt)] * B, dtype=torch.long)
    for _ in range(steps):
        j = seq.shape[1] - 1
        logits, _, _ = model(seq[:, context_start(j) : j + 1])
        probs = torch.softmax(logits[:, -1].float() / temperature, -1)
        nxt = torch.multinomial(probs, 1, generator=g)
        seq = torch.cat([seq, nxt], 1)
    return seq.numpy()


def test_crop_tokens_equal_independent_loop(model):
    steps = 2 * BS + 3
    res = generate(model, [0], steps, 3, SamplingConfig(), generator=gen(8))
    np.testing.assert_array_equal(res.tokens, independent_generate(model, [0], steps, 3, 8, crop_start))


@pytest.mark.parametrize("K", [1, 5, BS])
def test_stride_exact_against_full_forward(model, K):
    steps = 3 * BS + 4
    prompt = [6, 2]
    res = generate(model, prompt, steps, 2, SamplingConfig(context=f"stride={K}"), taps=model.tap_names,
                   generator=gen(3))
    starts = stride_starts(res.n_positions, K)
    check_against_reference(model, res, lambda j: starts[j])
    # the tokens follow the same policy
    ref = independent_generate(model, prompt, steps, 2, 3, lambda j: stride_starts(j + 1, K)[j])
    np.testing.assert_array_equal(res.tokens, ref)


def test_stride_contexts_differ_from_crop(model):
    steps = 2 * BS + 2
    a = generate(model, [1], steps, 2, SamplingConfig(context="stride=4"), taps=["hook_embed"],
                 generator=gen(1))
    starts = stride_starts(a.n_positions, 4)
    # positions after the refill use restarted absolute positions: embeddings differ from crop
    j = BS  # first position beyond the window
    assert starts[j] == BS - 4 + 1
    seq = torch.as_tensor(a.tokens)
    _, crop_taps = full_forward(model, seq, crop_start(j), j)
    assert np.abs(a.taps["hook_embed"][:, j] - crop_taps["hook_embed"].numpy()).max() > 1e-3


def test_long_prompt_crop(model):
    prompt = [int(x) for x in np.random.default_rng(0).integers(0, V, BS + 6)]
    steps = BS + 3
    cfg = SamplingConfig()
    res = generate(model, prompt, steps, 2, cfg, taps=model.tap_names, generator=gen(4))
    assert res.tokens.shape == (2, len(prompt) + steps)
    assert (res.tokens[:, : len(prompt)] == np.array(prompt)).all()
    check_against_reference(model, res, crop_start)
    np.testing.assert_array_equal(res.tokens, naive_generate(model, prompt, steps, 2, cfg, generator=gen(4)))


def test_prompt_exactly_block_size(model):
    prompt = list(range(BS))
    res = generate(model, prompt, 5, 2, SamplingConfig(), taps=model.tap_names, generator=gen(2))
    check_against_reference(model, res, crop_start)
    np.testing.assert_array_equal(
        res.tokens, naive_generate(model, prompt, 5, 2, SamplingConfig(), generator=gen(2)))


def test_per_sample_prompts(model):
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    res = generate(model, prompts, BS + 4, 3, SamplingConfig(), taps=model.tap_names, generator=gen(9))
    np.testing.assert_array_equal(res.tokens[:, :3], np.array(prompts))
    check_against_reference(model, res, crop_start)
    # each row behaves like its own prompt: prompt positions equal a single-prompt run's
    for i, p in enumerate(prompts):
        single = generate(model, p, 1, 1, SamplingConfig(), taps=model.tap_names, generator=gen(0))
        for name in model.tap_names:
            np.testing.assert_allclose(res.taps[name][i, :2], single.taps[name][0, :2], atol=TOL)


def test_per_sample_prompts_must_agree(model):
    with pytest.raises(GptwavesError):
        generate(model, [[1, 2], [3]], 3, 2, SamplingConfig())
    with pytest.raises(GptwavesError):
        generate(model, [[1, 2], [3, 4]], 3, 3, SamplingConfig())


def test_generate_rejects_bad_arguments(model):
    with pytest.raises(GptwavesError):
        generate(model, [1], 0, 2, SamplingConfig())
    with pytest.raises(GptwavesError):
        generate(model, [], 3, 2, SamplingConfig())
    with pytest.raises(GptwavesError, match="unknown tap"):
        generate(model, [1], 3, 2, SamplingConfig(), taps=["blocks.9.hook_resid_post"])
    with pytest.raises(GptwavesError):
        generate(model, [1], 3, 2, SamplingConfig(context=f"stride={BS + 1}"))
    for bad in ("stride=0", "stride", "window", "stride=-2"):
        with pytest.raises(GptwavesError):
            parse_context(bad)
    assert parse_context("crop") is None and parse_context("stride=7") == 7
    for kw in ({"temperature": 0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(GptwavesError):
            SamplingConfig(**kw)


def test_tap_dtype_float16(model):
    a = generate(model, [1], 10, 2, SamplingConfig(), taps=model.tap_names, generator=gen(1))
    b = generate(model, [1], 10, 2, SamplingConfig(), taps=model.tap_names, generator=gen(1),
                 tap_dtype=np.float16)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    for name in model.tap_names:
        assert b.taps[name].dtype == np.float16
        np.testing.assert_allclose(b.taps[name].astype(np.float32), a.taps[name], rtol=2e-3, atol=2e-3)


def test_on_step_called_once_per_step(model):
    seen = []
    generate(model, [1], 7, 1, SamplingConfig(), generator=gen(0), on_step=seen.append)
    assert seen == list(range(7))


# --------------------------------------------------------------------------- determinism

def test_same_seed_same_result_different_seed_differs(model):
    cfg = SamplingConfig()
    a = generate(model, [1], BS + 5, 4, cfg, taps=model.tap_names, generator=gen(21))
    b = generate(model, [1], BS + 5, 4, cfg, taps=model.tap_names, generator=gen(21))
    c = generate(model, [1], BS + 5, 4, cfg, taps=model.tap_names, generator=gen(22))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.entropy, b.entropy)
    for name in model.tap_names:
        np.testing.assert_array_equal(a.taps[name], b.taps[name])
    assert not np.array_equal(a.tokens, c.tokens)


# --------------------------------------------------------------------------- sampling filters

@torch.no_grad()
def argmax_path_check(model, res):
    seq = torch.as_tensor(res.tokens)
    P = res.prompt_len
    for j in range(P - 1, seq.shape[1] - 1):
        logits, _ = full_forward(model, seq, crop_start(j), j)
        np.testing.assert_array_equal(res.tokens[:, j + 1], logits.argmax(-1).numpy())


def test_top_k_1_is_greedy(model):
    res = generate(model, [3], BS + 8, 3, SamplingConfig(top_k=1), generator=gen(0))
    argmax_path_check(model, res)
    # independent of the seed
    other = generate(model, [3], BS + 8, 3, SamplingConfig(top_k=1, seed=5), generator=gen(99))
    np.testing.assert_array_equal(res.tokens, other.tokens)


def test_tiny_top_p_is_greedy(model):
    res = generate(model, [5], BS + 8, 3, SamplingConfig(top_p=1e-6), generator=gen(0))
    argmax_path_check(model, res)


def test_tiny_temperature_is_greedy(model):
    res = generate(model, [5], BS + 4, 2, SamplingConfig(temperature=1e-4), generator=gen(3))
    argmax_path_check(model, res)


def test_temperature_tokens_equal_direct_sampling(model):
    for T in (0.5, 2.0):
        res = generate(model, [4], BS + 6, 3, SamplingConfig(temperature=T), generator=gen(7))
        ref = independent_generate(model, [4], BS + 6, 3, 7, crop_start, temperature=T)
        np.testing.assert_array_equal(res.tokens, ref)


def test_entropy_is_of_the_unscaled_distribution(model):
    """Temperature changes sampling, not the recorded entropy of the model's own distribution."""
    res = generate(model, [4], 6, 2, SamplingConfig(temperature=0.3), generator=gen(7))
    seq = torch.as_tensor(res.tokens)
    for j in range(res.n_positions):
        logits, _ = full_forward(model, seq, crop_start(j), j)
        np.testing.assert_allclose(res.entropy[:, j], direct_entropy(logits), atol=TOL)


def empirical_next(model, cfg, n=20000):
    res = generate(model, [2], 1, n, cfg, generator=gen(123))
    return np.bincount(res.tokens[:, 1], minlength=V) / n


@torch.no_grad()
def test_sampling_distribution_matches_filters(model):
    logits = model(torch.tensor([[2]]))[0][0, -1].double()
    for cfg in (SamplingConfig(temperature=0.7), SamplingConfig(top_k=3), SamplingConfig(top_p=0.6),
                SamplingConfig(temperature=1.5, top_k=5)):
        z = (logits / cfg.temperature).numpy()
        keep = np.ones(V, bool)
        if cfg.top_k:
            keep &= z >= np.sort(z)[-cfg.top_k]
        if cfg.top_p:
            order = np.argsort(-z)
            p = np.exp(z[order] - z.max())
            p /= p.sum()
            before = np.concatenate([[0.0], np.cumsum(p)[:-1]])
            keep_p = np.zeros(V, bool)
            keep_p[order[before < cfg.top_p]] = True
            keep &= keep_p
        expected = np.where(keep, np.exp(z - z.max()), 0.0)
        expected /= expected.sum()
        got = empirical_next(model, cfg)
        assert (got[~keep] == 0).all(), cfg
        assert 0.5 * np.abs(got - expected).sum() < 0.03, cfg


def test_filter_logits_against_numpy():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(5, 30)), dtype=torch.float32)
    for k in (1, 4, 29, 30, 50):
        out = filter_logits(x, k, None).numpy()
        for row, orow in zip(x.numpy(), out):
            kept = np.isfinite(orow)
            assert kept.sum() == min(k, 30)
            assert set(np.flatnonzero(kept)) == set(np.argsort(-row)[: min(k, 30)])
            np.testing.assert_array_equal(orow[kept], row[kept])
    for p in (1e-9, 0.3, 0.9, 1.0):
        out = filter_logits(x, None, p).numpy()
        for row, orow in zip(x.numpy(), out):
            order = np.argsort(-row)
            probs = np.exp(row[order] - row.max())
            probs /= probs.sum()
            n_keep = 30 if p >= 1.0 else int(np.searchsorted(np.cumsum(probs), p) + 1)
            assert set(np.flatnonzero(np.isfinite(orow))) == set(order[:n_keep]), p
    np.testing.assert_array_equal(filter_logits(x, None, None).numpy(), x.numpy())


def test_entropy_of_matches_formula():
    x = torch.randn(4, 7, 11)
    p = torch.softmax(x.double(), -1)
    np.testing.assert_allclose(entropy_of(x).numpy(), (-(p * p.log()).sum(-1)).numpy(), atol=1e-6)
    # uniform distribution: log V
    assert torch.allclose(entropy_of(torch.zeros(3, 11)), torch.full((3,), float(np.log(11))), atol=1e-6)


def test_model_with_bias_free_tied_exact_gelu():
    """nanoGPT-style configuration: the cache path stays exact too."""
    m = make_model(seed=4, bias=False, tie_weights=True, gelu="exact")
    res = generate(m, [1, 2], 2 * BS, 2, SamplingConfig(), taps=m.tap_names, generator=gen(0))
    check_against_reference(m, res, crop_start)
