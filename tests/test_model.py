"""GPT forward pass against an explicit reference, taps, KV cache, weight tying.

docs/method.md, Model and Recording waves."""

from __future__ import annotations

import pytest
import torch

from gptwaves.model import GPT, GPTConfig, KVCache, tap_names

TOL = dict(rtol=1e-5, atol=1e-5)


def make_model(perturb, seed=0, **kw) -> GPT:
    base = dict(block_size=16, vocab_size=11, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    base.update(kw)
    torch.manual_seed(seed)
    m = GPT(GPTConfig(**base))
    perturb(m, seed=seed)
    return m.eval()


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tie", [False, True])
def test_logits_and_taps_match_reference(perturb, ref_forward, gelu, bias, tie):
    m = make_model(perturb, n_layer=3, n_head=4, n_embd=16, gelu=gelu, bias=bias, tie_weights=tie)
    cfg = m.config
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(cfg.vocab_size, (2, 13), generator=gen)
    with torch.no_grad():
        logits, loss, taps = m(idx, taps=m.tap_names)
    assert loss is None
    assert logits.shape == (2, 13, cfg.vocab_size)
    assert set(taps) == set(tap_names(3))
    sd = m.state_dict()
    assert ("transformer.ln_f.bias" in sd) == bias
    for b in range(2):
        ref_logits, ref_taps = ref_forward(sd, cfg.n_head, idx[b], gelu=gelu)
        torch.testing.assert_close(logits[b].double(), ref_logits, **TOL)
        for name, val in ref_taps.items():
            torch.testing.assert_close(taps[name][b].double(), val, **TOL, msg=name)
    # the reference must actually distinguish the GELU variants (the test would be vacuous otherwise)
    other = "exact" if gelu == "tanh" else "tanh"
    ref_other, _ = ref_forward(sd, cfg.n_head, idx[0], gelu=other)
    assert not torch.allclose(logits[0].double(), ref_other, rtol=1e-6, atol=1e-6)


def test_loss_is_mean_cross_entropy(perturb):
    m = make_model(perturb)
    idx = torch.randint(11, (3, 16), generator=torch.Generator().manual_seed(2))
    tgt = torch.randint(11, (3, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, loss, _ = m(idx, tgt)
    logp = torch.log_softmax(logits.double(), -1)
    manual = -logp.gather(-1, tgt[..., None]).mean()
    torch.testing.assert_close(loss.double(), manual, rtol=1e-6, atol=1e-6)


def test_tap_identities(perturb):
    m = make_model(perturb, n_layer=3)
    idx = torch.randint(11, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _, _, taps = m(idx, taps=m.tap_names)
    tr = m.transformer
    embed = tr.wte.weight[idx] + tr.wpe.weight[torch.arange(10)]
    torch.testing.assert_close(taps["hook_embed"], embed, rtol=0, atol=0)
    with torch.no_grad():
        lnf = tr.ln_f(taps["blocks.2.hook_resid_post"])
    torch.testing.assert_close(taps["ln_final.hook_normalized"], lnf, rtol=0, atol=1e-7)
    # a tap subset and tap_positions
    with torch.no_grad():
        logits_last, _, last = m(idx, taps=["blocks.1.hook_resid_post"], tap_positions=slice(-1, None),
                                 logits_last_only=True)
    assert list(last) == ["blocks.1.hook_resid_post"]
    assert last["blocks.1.hook_resid_post"].shape == (2, 1, 16)
    torch.testing.assert_close(last["blocks.1.hook_resid_post"], taps["blocks.1.hook_resid_post"][:, -1:])
    assert logits_last.shape == (2, 1, 11)


def test_unknown_tap_raises(perturb):
    m = make_model(perturb)
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="blocks.7.hook_resid_post"):
        m(idx, taps=["blocks.7.hook_resid_post"])
    with pytest.raises(ValueError, match="hook_nonsense"):
        m(idx, taps=["hook_embed", "hook_nonsense"])


def test_too_long_sequence_raises(perturb):
    m = make_model(perturb)
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(1, 17, dtype=torch.long))


def test_causality(perturb):
    """Changing a later token never changes earlier logits."""
    m = make_model(perturb)
    idx = torch.randint(11, (1, 12), generator=torch.Generator().manual_seed(5))
    idx2 = idx.clone()
    idx2[0, 8] = (idx2[0, 8] + 1) % 11
    with torch.no_grad():
        a, _, _ = m(idx)
        b, _, _ = m(idx2)
    torch.testing.assert_close(a[:, :8], b[:, :8], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("bias", [True, False])
def test_kv_cache_matches_full_forward(perturb, bias):
    m = make_model(perturb, n_layer=3, bias=bias, gelu="exact" if bias else "tanh")
    B, T, P = 3, 16, 5
    idx = torch.randint(11, (B, T), generator=torch.Generator().manual_seed(6))
    names = m.tap_names
    with torch.no_grad():
        full_logits, _, full_taps = m(idx, taps=names)
        cache = KVCache(m.config, B, T, "cpu", torch.float32)
        logits, _, taps = m(idx[:, :P], taps=names, cache=cache)  # the prompt in one call
        assert cache.length == P
        torch.testing.assert_close(logits, full_logits[:, :P], **TOL)
        for n in names:
            torch.testing.assert_close(taps[n], full_taps[n][:, :P], **TOL, msg=n)
        for t in range(P, T):  # then one token at a time
            logits, _, taps = m(idx[:, t : t + 1], taps=names, cache=cache)
            assert cache.length == t + 1
            torch.testing.assert_close(logits[:, 0], full_logits[:, t], **TOL, msg=f"logits at {t}")
            for n in names:
                torch.testing.assert_close(taps[n][:, 0], full_taps[n][:, t], **TOL, msg=f"{n} at {t}")
        with pytest.raises(ValueError, match="block_size"):
            m(idx[:, :1], cache=cache)


def test_kv_cache_multi_token_chunks(perturb):
    """Chunks of several new tokens after a non-empty cache (the causal mask inside a chunk)."""
    m = make_model(perturb)
    idx = torch.randint(11, (2, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full, _, ft = m(idx, taps=["blocks.0.hook_resid_post"])
        cache = KVCache(m.config, 2, 16, "cpu", torch.float32)
        outs, taps = [], []
        for a, b in ((0, 3), (3, 4), (4, 9), (9, 16)):
            lo, _, tp = m(idx[:, a:b], taps=["blocks.0.hook_resid_post"], cache=cache)
            outs.append(lo)
            taps.append(tp["blocks.0.hook_resid_post"])
    torch.testing.assert_close(torch.cat(outs, 1), full, **TOL)
    torch.testing.assert_close(torch.cat(taps, 1), ft["blocks.0.hook_resid_post"], **TOL)


def test_tied_weights_share_memory():
    m = GPT(GPTConfig(block_size=8, vocab_size=7, n_layer=1, n_head=1, n_embd=8, tie_weights=True))
    assert m.transformer.wte.weight is m.lm_head.weight
    assert m.transformer.wte.weight.data_ptr() == m.lm_head.weight.data_ptr()
    with torch.no_grad():
        m.lm_head.weight[0, 0] = 123.0
    assert m.transformer.wte.weight[0, 0].item() == 123.0
    untied = GPT(GPTConfig(block_size=8, vocab_size=7, n_layer=1, n_head=1, n_embd=8, tie_weights=False))
    assert untied.transformer.wte.weight.data_ptr() != untied.lm_head.weight.data_ptr()


def test_parameter_names_are_nanogpt_names():
    m = GPT(GPTConfig(block_size=8, vocab_size=7, n_layer=2, n_head=2, n_embd=8, bias=True))
    names = set(m.state_dict())
    expected = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
                "transformer.ln_f.bias", "lm_head.weight"}
    for i in range(2):
        for sub in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            expected |= {f"transformer.h.{i}.{sub}.weight", f"transformer.h.{i}.{sub}.bias"}
    assert names == expected


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="gelu"):
        GPTConfig(gelu="relu")
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=8, vocab_size=5)
    assert GPTConfig.from_dict({**cfg.to_dict(), "unrelated": 1}) == cfg


@pytest.mark.parametrize("bias", [True, False])
def test_newest_position_shortcut_equals_full_forward(perturb, bias):
    """An uncached forward keeping only the newest position (the recording path beyond the
    context) runs the last block for that position only: every tap and the logits equal the full
    forward's last position to 1e-5; an edit at the last block turns the shortcut off."""
    m = make_model(perturb, n_layer=3, n_embd=48, n_head=4, block_size=32, bias=bias)
    idx = torch.randint(11, (5, 32), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        logits, _, full = m(idx, taps=m.tap_names)
        last_logits, _, last = m(idx, taps=m.tap_names, tap_positions=slice(-1, None), logits_last_only=True)
    for name in m.tap_names:
        assert last[name].shape == (5, 1, 48)
        torch.testing.assert_close(last[name], full[name][:, -1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(last_logits, logits[:, -1:], rtol=0, atol=1e-5)

    seen = []

    def edit(h):
        seen.append(h.shape[1])
        return h * 2

    with torch.no_grad():
        m(idx, taps=m.tap_names, tap_positions=slice(-1, None), logits_last_only=True,
          edits={"blocks.2.hook_resid_post": edit})
    assert seen == [32]  # the edit saw every position: no shortcut


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
def test_inference_gelu_in_place_equals_autograd_path(perturb, gelu):
    """Without autograd the MLP applies GELU in place (a speed-up of recording and sampling): the
    output is bit-identical to the out-of-place path that training takes."""
    m = make_model(perturb, gelu=gelu)
    x = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(4))
    mlp = m.transformer.h[0].mlp
    with torch.no_grad():
        fast = mlp(x)
    slow = mlp(x)
    assert slow.requires_grad and not fast.requires_grad
    assert torch.equal(fast, slow.detach())
