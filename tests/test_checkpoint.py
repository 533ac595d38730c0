"""Safe checkpoints: round trip, integrity, config mismatch, nanoGPT/minGPT files, pickles."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex

import pytest
import torch

from gptwaves.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_external_checkpoint,
    save_checkpoint,
)
from gptwaves.errors import GptwavesError
from gptwaves.model import GPT, GPTConfig

VOCAB = list("\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _model(perturb, seed=0, **kw) -> GPT:
    base = dict(block_size=16, vocab_size=len(VOCAB), n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    base.update(kw)
    torch.manual_seed(seed)
    return perturb(GPT(GPTConfig(**base)), seed=seed).eval()


def _logits(model, seed=0, T=12):
    idx = torch.randint(model.config.vocab_size, (2, T), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(idx)[0], idx


@pytest.fixture
def saved(tmp_path, perturb):
    m = _model(perturb)
    info = save_checkpoint(tmp_path / "ck", m, 42, VOCAB, {"val_loss": 1.5, "train_loss": 1.4})
    return m, info, tmp_path / "ck" / "iter_0000042.json"


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_bit_identical(tmp_path, perturb, tie):
    m = _model(perturb, tie_weights=tie, bias=not tie)
    info = save_checkpoint(tmp_path, m, 7, VOCAB, {"val_loss": 2.0})
    assert info.path.name == "iter_0000007.safetensors"
    meta = json.loads((tmp_path / "iter_0000007.json").read_text())
    assert meta["weights_sha256"] == hashlib.sha256(info.path.read_bytes()).hexdigest()
    assert meta["iteration"] == 7 and meta["vocab"] == VOCAB and meta["val_loss"] == 2.0
    m2, meta2 = load_checkpoint(tmp_path / "iter_0000007.json")
    assert not m2.training
    assert m2.config == m.config
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    if tie:
        assert m2.transformer.wte.weight.data_ptr() == m2.lm_head.weight.data_ptr()
    a, idx = _logits(m)
    with torch.no_grad():
        b = m2(idx)[0]
    assert torch.equal(a, b)
    # the same through list_checkpoints / CheckpointInfo
    (info2,) = list_checkpoints(tmp_path)
    assert info2.iteration == 7 and info2.val_loss == 2.0
    m3, _ = load_checkpoint(info2)
    assert all(torch.equal(v, m3.state_dict()[k]) for k, v in sd.items())


def test_truncated_weights_rejected(saved):
    _, info, jpath = saved
    data = info.path.read_bytes()
    info.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GptwavesError, match="sha256"):
        load_checkpoint(jpath)


def test_bit_flip_rejected(saved):
    _, info, jpath = saved
    data = bytearray(info.path.read_bytes())
    data[len(data) - 100] ^= 0x01  # inside the tensor data: still a valid safetensors file
    info.path.write_bytes(bytes(data))
    with pytest.raises(GptwavesError, match="sha256"):
        load_checkpoint(jpath)


def test_missing_weights_rejected(saved):
    _, info, jpath = saved
    info.path.unlink()
    with pytest.raises(GptwavesError, match="not found"):
        load_checkpoint(jpath)


def test_corrupt_metadata_rejected(saved):
    _, _, jpath = saved
    jpath.write_text("{not json")
    with pytest.raises(GptwavesError, match="not valid JSON"):
        load_checkpoint(jpath)


def test_config_mismatch_named(saved):
    _, _, jpath = saved
    meta = json.loads(jpath.read_text())
    meta["config"]["n_embd"] = 32
    jpath.write_text(json.dumps(meta))
    with pytest.raises(GptwavesError) as e:
        load_checkpoint(jpath)
    msg = str(e.value)
    assert "does not match" in msg and "size mismatch" in msg and "16" in msg and "32" in msg


def test_layer_count_mismatch_named(saved):
    _, _, jpath = saved
    meta = json.loads(jpath.read_text())
    meta["config"]["n_layer"] = 3
    jpath.write_text(json.dumps(meta))
    with pytest.raises(GptwavesError, match=r"missing transformer\.h\.2"):
        load_checkpoint(jpath)


def test_vocab_mismatch_in_metadata(saved):
    _, _, jpath = saved
    meta = json.loads(jpath.read_text())
    meta["vocab"] = meta["vocab"][:-1]
    jpath.write_text(json.dumps(meta))
    with pytest.raises(GptwavesError, match="vocabulary size"):
        load_checkpoint(jpath)


# ------------------------------------------------------------------ nanoGPT / minGPT files


def _nanogpt_ckpt(model: GPT, with_mask_buffers: bool) -> dict:
    """What nanoGPT's train.py writes (model compiled: '_orig_mod.' prefixes)."""
    cfg = model.config
    sd = {}
    for k, v in model.state_dict().items():
        sd["_orig_mod." + k] = v.clone()
    if cfg.tie_weights:  # nanoGPT ties: both keys present, the same storage
        sd["_orig_mod.lm_head.weight"] = sd["_orig_mod.transformer.wte.weight"]
    if with_mask_buffers:  # nanoGPT without flash attention registers a causal mask 'bias'
        mask = torch.tril(torch.ones(cfg.block_size, cfg.block_size)).view(1, 1, cfg.block_size, cfg.block_size)
        for i in range(cfg.n_layer):
            sd[f"_orig_mod.transformer.h.{i}.attn.bias"] = mask
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    loss = model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1]
    loss.backward()
    opt.step()  # populate optimizer state (its state dict goes in the file); weights saved before
    model.eval()
    return {
        "model": sd,
        "optimizer": opt.state_dict(),
        "model_args": dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                           block_size=cfg.block_size, bias=cfg.bias, vocab_size=cfg.vocab_size,
                           dropout=0.2),
        "iter_num": 5000,
        "best_val_loss": torch.tensor(1.4697),
        "config": {"out_dir": "out-shakespeare-char", "eval_interval": 250, "dataset": "shakespeare_char",
                   "gradient_accumulation_steps": 1, "batch_size": 64, "learning_rate": 1e-3,
                   "decay_lr": True, "compile": True, "wandb_log": False, "init_from": "scratch"},
    }


@pytest.mark.parametrize("with_mask_buffers", [False, True])
def test_nanogpt_checkpoint(tmp_path, perturb, ref_forward, with_mask_buffers):
    src = _model(perturb, n_layer=3, n_head=4, n_embd=16, bias=False, tie_weights=True, gelu="exact")
    sd_before = {k: v.clone() for k, v in src.state_dict().items()}
    ckpt = _nanogpt_ckpt(src, with_mask_buffers)
    src.load_state_dict(sd_before)
    path = tmp_path / "ckpt.pt"
    torch.save(ckpt, path)
    model, meta = load_external_checkpoint(path, VOCAB)
    assert meta["format"] == "nanoGPT" and meta["iteration"] == 5000
    assert meta["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = model.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size) == (3, 4, 16, 16)
    assert cfg.bias is False and cfg.tie_weights is True and cfg.gelu == "exact"
    assert cfg.dropout == 0.0 and not model.training
    a, idx = _logits(src)
    with torch.no_grad():
        b = model(idx)[0]
    assert torch.equal(a, b)
    ref, _ = ref_forward(sd_before, 4, idx[0], gelu="exact")
    torch.testing.assert_close(b[0].double(), ref, rtol=1e-5, atol=1e-5)


def _mingpt_state(model: GPT) -> dict:
    """minGPT's model.state_dict(): untied head, causal-mask buffers '.attn.bias' (1,1,bs,bs)."""
    cfg = model.config
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    mask = torch.tril(torch.ones(cfg.block_size, cfg.block_size)).view(1, 1, cfg.block_size, cfg.block_size)
    for i in range(cfg.n_layer):
        sd[f"transformer.h.{i}.attn.bias"] = mask.clone()
    return sd


def test_mingpt_gpt_nano_checkpoint(tmp_path, perturb, ref_forward):
    vocab = VOCAB[:40]
    src = _model(perturb, vocab_size=40, n_layer=3, n_head=3, n_embd=48, block_size=16, gelu="tanh")
    sd = _mingpt_state(src)
    path = tmp_path / "model.pt"
    torch.save(sd, path)
    model, meta = load_external_checkpoint(path, vocab)  # n_head inferred from gpt-nano (3, 48)
    assert meta["format"] == "minGPT"
    cfg = model.config
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd) == (3, 3, 48)
    assert cfg.tie_weights is False and cfg.bias is True and cfg.gelu == "tanh"
    a, idx = _logits(src)
    with torch.no_grad():
        b = model(idx)[0]
    assert torch.equal(a, b)
    ref, _ = ref_forward(src.state_dict(), 3, idx[1], gelu="tanh")
    torch.testing.assert_close(b[1].double(), ref, rtol=1e-5, atol=1e-5)


def test_mingpt_custom_config_needs_n_head(tmp_path, perturb):
    src = _model(perturb, n_layer=2, n_head=4, n_embd=16, gelu="tanh")
    path = tmp_path / "model.pt"
    torch.save(_mingpt_state(src), path)
    with pytest.raises(GptwavesError, match="n.head"):
        load_external_checkpoint(path, VOCAB)
    model, _ = load_external_checkpoint(path, VOCAB, n_head=4)
    a, idx = _logits(src)
    with torch.no_grad():
        assert torch.equal(model(idx)[0], a)


def test_external_vocab_mismatch(tmp_path, perturb):
    src = _model(perturb)
    path = tmp_path / "ckpt.pt"
    torch.save(_nanogpt_ckpt(src, False), path)
    with pytest.raises(GptwavesError) as e:
        load_external_checkpoint(path, VOCAB[:-3])
    msg = str(e.value)
    assert "vocabulary size" in msg and str(len(VOCAB)) in msg and str(len(VOCAB) - 3) in msg


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_malicious_pickle_refused(tmp_path, perturb, how):
    marker = tmp_path / "MARKER"
    payload = {"model": {"transformer.wte.weight": torch.zeros(3, 4)}, "evil": _Evil(marker)}
    path = tmp_path / "ckpt.pt"
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(GptwavesError, match="refusing"):
        load_external_checkpoint(path, VOCAB)
    assert not marker.exists()


def test_garbage_and_truncated_external_files(tmp_path, perturb):
    p = tmp_path / "ckpt.pt"
    p.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(GptwavesError):
        load_external_checkpoint(p, VOCAB)
    torch.save(_nanogpt_ckpt(_model(perturb), False), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(GptwavesError, match="truncated or corrupt"):
        load_external_checkpoint(p, VOCAB)
    with pytest.raises(GptwavesError, match="not found"):
        load_external_checkpoint(tmp_path / "missing.pt", VOCAB)


def test_external_not_a_state_dict(tmp_path):
    p = tmp_path / "x.pt"
    torch.save([torch.zeros(2)], p)
    with pytest.raises(GptwavesError, match="not a state dict"):
        load_external_checkpoint(p, VOCAB)
    torch.save({"foo": torch.zeros(2)}, p)
    with pytest.raises(GptwavesError, match="not a GPT state dict"):
        load_external_checkpoint(p, VOCAB)
