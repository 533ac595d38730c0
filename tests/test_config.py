"""Settings validation: every invalid value is one line, before anything is written."""

from __future__ import annotations

import math

import pytest

from gptwaves.cli import main
from gptwaves.config import (PRESETS, TrainConfig, check_choice, check_device, check_int, check_real, preset)
from gptwaves.errors import GptwavesError, SettingsError
from gptwaves.model import GPTConfig
from gptwaves.record import RecordSpec
from gptwaves.sample import SamplingConfig

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_presets_are_valid():
    for cfg in PRESETS.values():
        assert cfg.validate() is cfg
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("field,value", [
    ("dropout", 2.0), ("dropout", -0.1), ("dropout", 1.0), ("dropout", math.nan),
    ("learning_rate", math.nan), ("learning_rate", 0.0), ("learning_rate", -1e-3), ("learning_rate", math.inf),
    ("min_lr", -1.0), ("beta1", 2.0), ("beta1", 1.0), ("beta2", -0.5), ("weight_decay", math.nan),
    ("grad_clip", math.nan), ("grad_clip", -1.0), ("grad_clip", math.inf),
    ("n_head", 0), ("n_head", 5), ("n_layer", 0), ("n_embd", -4), ("block_size", 0), ("block_size", 10**7),
    ("batch_size", 0), ("max_iters", -1), ("eval_iters", 0), ("log_interval", 0), ("state_interval", 0),
    ("warmup_iters", -1), ("lr_decay_iters", -5),
    ("seed", 10**23), ("seed", -1), ("seed", 1.5), ("seed", True),
    ("device", "meta"), ("device", "cuda:x"), ("device", ""), ("precision", "fp8"), ("gelu", "relu"),
    ("checkpoints", (10, -1)), ("checkpoints", "10,20"), ("checkpoints", (1.5,)),
    ("bias", "yes"), ("n_layer", "6"), ("progress", 1),
])
def test_invalid_train_settings_are_refused(field, value):
    with pytest.raises(SettingsError) as ei:
        preset("smoke").override(**{field: value})
    msg = str(ei.value)
    assert "\n" not in msg and ("--" + field.replace("_", "-")) in msg or "model setting" in msg
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, GptwavesError)


def test_valid_edge_values_are_accepted():
    cfg = preset("smoke").override(dropout=0.0, beta1=0.0, grad_clip=0.0, max_iters=0, seed=0, device="cuda:1",
                                   checkpoints=(0,), learning_rate=1)
    assert cfg.learning_rate == 1 and cfg.device == "cuda:1"


def test_unknown_setting_is_a_settings_error():
    with pytest.raises(SettingsError, match="unknown training settings"):
        preset("smoke").override(colour="red")
    with pytest.raises(SettingsError, match="unknown preset"):
        preset("nope")


def test_check_helpers():
    assert check_int("n", 3, 1, 5) == 3
    assert check_real("alpha", 0.05, 0, 1, lo_open=True, hi_open=True) == 0.05
    for bad in (0.0, 1.0, 2.0, math.nan, "0.1", None):
        with pytest.raises(SettingsError, match="--alpha"):
            check_real("alpha", bad, 0, 1, lo_open=True, hi_open=True)
    for bad in (0, -3, 2.5, "4", None, False):
        with pytest.raises(SettingsError, match="--n-boot"):
            check_int("n_boot", bad, 1)
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(SettingsError):
        check_choice("mode", "c", ("a", "b"))
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps"):
        assert check_device("device", ok) == ok
    for bad in ("meta", "cuda:", "gpu", "cpu ", None):
        with pytest.raises(SettingsError):
            check_device("device", bad)


@pytest.mark.parametrize("kw", [
    dict(temperature=0.0), dict(temperature=-1.0), dict(temperature=math.nan), dict(temperature=math.inf),
    dict(temperature=1e-30), dict(top_k=0), dict(top_k=1.5), dict(top_p=0.0), dict(top_p=1.5),
    dict(top_p=math.nan), dict(seed=-1), dict(seed=2**70), dict(context="stride=0"), dict(context="wrap"),
    dict(context=None),
])
def test_invalid_sampling_settings(kw):
    with pytest.raises(SettingsError):
        SamplingConfig(**kw)


@pytest.mark.parametrize("kw", [
    dict(samples=0), dict(samples=-1), dict(samples=2.5), dict(steps=0), dict(batch_size=0),
    dict(dtype="int8"), dict(prompt=""), dict(taps="hook_embed"), dict(samples=10**9),
])
def test_invalid_record_spec(kw):
    base = dict(samples=4, steps=8, prompt="\n", taps=("hook_embed",), sampling=SamplingConfig())
    with pytest.raises(GptwavesError):
        RecordSpec(**{**base, **kw})


def test_model_config_rejects_nonsense():
    for kw in (dict(n_head=0), dict(vocab_size=0), dict(dropout=1.5), dict(block_size=-1), dict(n_layer=2.0)):
        with pytest.raises(ValueError):
            GPTConfig(**kw)


@pytest.mark.parametrize("args", [
    ["--dropout", "2"], ["--learning-rate", "nan"], ["--beta1", "2"], ["--n-head", "0"], ["--device", "meta"],
    ["--grad-clip", "nan"], ["--seed", "100000000000000000000000"], ["--block-size", "100000"],
    ["--block-size", "4000"],  # allowed in general, but longer than the corpus's validation split
    ["--n-embd", "16384", "--n-layer", "1024"],  # would need far more memory than the machine has
    ["--max-iters", "-1"], ["--checkpoints", "5,-3"],
])
def test_cli_invalid_settings_write_nothing(tmp_path, capsys, corpus_path, args):
    run = tmp_path / "run"
    code = main(["train", "--preset", "smoke", "--corpus", str(corpus_path), "--out", str(run), "--quiet",
                 "--max-iters", "2", *args])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("gptwaves: error:"), err
    assert not run.exists()  # nothing written: the folder stays clean for the corrected command
