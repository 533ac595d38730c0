"""Training: checkpoint schedule, learning, metrics, lr schedule, bit-identical resume."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gptwaves.train as train_mod
from gptwaves.checkpoint import list_checkpoints, load_checkpoint
from gptwaves.config import LOG_SCHEDULE, TrainConfig
from gptwaves.errors import GptwavesError
from gptwaves.runtime import Interrupted
from gptwaves.train import lr_at, read_metrics

# ------------------------------------------------------------------ schedule


def test_schedule_log_spaced_capped():
    assert TrainConfig(max_iters=5000).schedule() == [
        0, 10, 20, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000]
    assert TrainConfig(max_iters=120).schedule() == [0, 10, 20, 50, 100, 120]
    assert TrainConfig(max_iters=100).schedule() == [0, 10, 20, 50, 100]
    assert TrainConfig(max_iters=7).schedule() == [0, 7]
    assert TrainConfig(max_iters=0).schedule() == [0]
    assert TrainConfig(max_iters=40, checkpoints=(5, 30, 500)).schedule() == [0, 5, 30, 40]
    s = TrainConfig(max_iters=100000).schedule()
    assert s == list(LOG_SCHEDULE) and s[0] == 0 and s[-1] == 100000
    # roughly log-spaced: successive ratios stay between 1.3 and 2.5 after the first steps
    ratios = [b / a for a, b in zip(s[1:], s[2:])]
    assert all(1.3 <= r <= 2.5 for r in ratios)


# ------------------------------------------------------------------ a trained run


def test_run_layout_and_checkpoints(trained_run, corpus):
    run_dir, cfg, res = trained_run
    assert res.iterations == 60 and res.resumed_from is None
    assert [c.iteration for c in res.checkpoints] == [0, 10, 20, 50, 60]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["corpus_sha256"] == corpus.sha256
    assert run["train"]["n_embd"] == 16 and "max_iters" not in run["train"]
    for c in res.checkpoints:
        assert c.path.exists()
        assert c.meta["weights_sha256"] == hashlib.sha256(c.path.read_bytes()).hexdigest()
        assert c.meta["tokens_seen"] == c.iteration * cfg.batch_size * cfg.block_size
        assert c.meta["vocab"] == corpus.tokenizer.chars
        assert math.isfinite(c.train_loss) and math.isfinite(c.val_loss)


def test_loss_falls(trained_run, corpus):
    run_dir, cfg, res = trained_run
    first, last = res.checkpoints[0], res.checkpoints[-1]
    # an untrained model (weights ~N(0, 0.02)) predicts nearly uniformly: loss ~ ln(vocab)
    assert abs(first.val_loss - math.log(corpus.tokenizer.vocab_size)) < 0.1
    assert last.val_loss < first.val_loss - 0.8
    assert last.train_loss < first.train_loss - 0.8


def test_checkpoint_val_loss_is_reproducible(trained_run, corpus):
    """The stored val loss is the model's mean cross-entropy on fixed validation windows."""
    run_dir, cfg, res = trained_run
    model, meta = load_checkpoint(res.checkpoints[-1])
    batches = train_mod.fixed_eval_batches(corpus, cfg, torch.device("cpu"))
    losses = []
    with torch.no_grad():
        for x, y in batches["val"]:
            logits = model(x)[0].double()
            losses.append(float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())))
            # windows really come from the validation split
            text = corpus.tokenizer.decode(torch.cat([x[0], y[0, -1:]]).numpy())
            assert text in corpus.val_text
    assert meta["val_loss"] == pytest.approx(sum(losses) / len(losses), abs=1e-5)


def test_metrics_rows(trained_run):
    run_dir, cfg, res = trained_run
    rows = read_metrics(run_dir)
    train_rows = [r for r in rows if r.get("kind") == "train"]
    eval_rows = [r for r in rows if r.get("kind") == "eval"]
    assert [r["iter"] for r in train_rows] == list(range(5, 61, 5))
    for r in train_rows:
        assert {"iter", "loss", "lr", "tokens_per_s"} <= set(r)
        assert math.isfinite(r["loss"]) and r["tokens_per_s"] > 0
        assert r["lr"] == pytest.approx(cfg.learning_rate)
    assert [r["iter"] for r in eval_rows] == [0, 10, 20, 50, 60]
    ck = {c.iteration: c for c in res.checkpoints}
    for r in eval_rows:
        assert r["val_loss"] == ck[r["iter"]].val_loss


def _nanogpt_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    # nanoGPT train.py get_lr
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def test_lr_schedule_matches_nanogpt():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=5000)
    for it in (0, 1, 50, 99, 100, 101, 1000, 2550, 4999, 5000, 5001, 9000):
        assert lr_at(cfg, it) == pytest.approx(_nanogpt_lr(it, 1e-3, 1e-4, 100, 5000), rel=1e-12), it
    const = TrainConfig(learning_rate=5e-4, min_lr=5e-4, warmup_iters=0, lr_decay_iters=0)
    assert all(lr_at(const, it) == 5e-4 for it in (0, 1, 100, 10**6))


def test_logged_lr_follows_schedule(train_tiny):
    res = train_tiny(max_iters=30, log_interval=1, learning_rate=1e-2, min_lr=1e-3,
                     warmup_iters=5, lr_decay_iters=20)
    rows = [r for r in read_metrics(res.run_dir) if r.get("kind") == "train"]
    assert [r["iter"] for r in rows] == list(range(1, 31))
    for r in rows:  # row `iter` is logged after the step taken at iteration iter - 1
        assert r["lr"] == pytest.approx(_nanogpt_lr(r["iter"] - 1, 1e-2, 1e-3, 5, 20), rel=1e-12)


# ------------------------------------------------------------------ resume


def _final_weights(run_dir: Path, it: int):
    meta = json.loads((run_dir / "checkpoints" / f"iter_{it:07d}.json").read_text())
    tensors = load_file(run_dir / "checkpoints" / meta["weights_file"])
    return meta, tensors


def assert_same_run(a: Path, b: Path, it: int):
    ma, ta = _final_weights(a, it)
    mb, tb = _final_weights(b, it)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert ma["weights_sha256"] == mb["weights_sha256"]
    assert ma["val_loss"] == mb["val_loss"] and ma["train_loss"] == mb["train_loss"]
    ra = {r["iter"]: r["loss"] for r in read_metrics(a) if r.get("kind") == "train"}
    rb = {r["iter"]: r["loss"] for r in read_metrics(b) if r.get("kind") == "train"}
    assert ra == rb  # the same losses, each logged exactly once


class _FlagAfter:
    """A stop flag that turns True on its (n+1)-th check: the loop checks it once per iteration."""

    def __init__(self, n: int):
        self.n = n
        self.checks = 0

    def __bool__(self) -> bool:
        self.checks += 1
        return self.checks > self.n


RESUME_KW = dict(max_iters=40, dropout=0.1, state_interval=7)  # dropout: the torch RNG matters


def test_resume_after_interruption_is_bit_identical(train_tiny, tmp_path, monkeypatch):
    train_tiny("A", **RESUME_KW)
    flag = _FlagAfter(23)

    @contextlib.contextmanager
    def fake_stop():
        yield flag

    monkeypatch.setattr(train_mod, "graceful_stop", fake_stop)
    with pytest.raises(Interrupted, match="iteration 23"):
        train_tiny("B", **RESUME_KW)
    b = tmp_path / "B"
    assert json.loads((b / "state" / "state.json").read_text())["iteration"] == 23
    assert [c.iteration for c in list_checkpoints(b / "checkpoints")] == [0, 10, 20]
    monkeypatch.undo()
    res = train_tiny("B", **RESUME_KW)
    assert res.resumed_from == 23 and res.iterations == 40
    assert_same_run(tmp_path / "A", b, 40)
    # every checkpoint along the way is identical too
    for it in (0, 10, 20):
        assert _final_weights(tmp_path / "A", it)[0]["weights_sha256"] == _final_weights(b, it)[0]["weights_sha256"]


def test_extending_max_iters_is_bit_identical(train_tiny, tmp_path):
    train_tiny("A", **RESUME_KW)
    r1 = train_tiny("B", **{**RESUME_KW, "max_iters": 25})
    assert r1.iterations == 25 and [c.iteration for c in r1.checkpoints] == [0, 10, 20, 25]
    r2 = train_tiny("B", **RESUME_KW)
    assert r2.resumed_from == 25
    assert_same_run(tmp_path / "A", tmp_path / "B", 40)
    # running the finished command again does no work and changes nothing
    before = (tmp_path / "B" / "checkpoints" / "iter_0000040.safetensors").read_bytes()
    r3 = train_tiny("B", **RESUME_KW)
    assert r3.resumed_from == 40 and r3.iterations == 40
    assert (tmp_path / "B" / "checkpoints" / "iter_0000040.safetensors").read_bytes() == before
    # asking for fewer iterations than already trained is an error
    with pytest.raises(GptwavesError, match="already trained"):
        train_tiny("B", **{**RESUME_KW, "max_iters": 30})


def test_dropout_masks_of_new_and_older_runs(train_tiny, tmp_path, monkeypatch):
    """A new run draws packed16 dropout masks and says so in run.json; a run.json without the entry
    (written before packed16 existed) keeps torch's bernoulli masks, so an older run resumes
    bit-identically (docs/method.md, Model)."""
    kw = dict(RESUME_KW, max_iters=15)
    train_tiny("new", **kw)
    assert json.loads((tmp_path / "new" / "run.json").read_text())["dropout_masks"] == "packed16"
    monkeypatch.setattr(train_mod, "NEW_RUN_DROPOUT_MASKS", "bernoulli")
    train_tiny("old", **kw)  # an older run from start to end
    train_tiny("resumed", **{**kw, "max_iters": 10})
    monkeypatch.undo()
    info = json.loads((tmp_path / "resumed" / "run.json").read_text())
    del info["dropout_masks"]  # as an older version wrote it
    (tmp_path / "resumed" / "run.json").write_text(json.dumps(info))
    assert train_tiny("resumed", **kw).resumed_from == 10
    assert_same_run(tmp_path / "old", tmp_path / "resumed", 15)
    # the two kinds of masks give different runs (the test above is not vacuous)
    assert _final_weights(tmp_path / "new", 15)[0]["weights_sha256"] != \
        _final_weights(tmp_path / "old", 15)[0]["weights_sha256"]
    info["dropout_masks"] = "coin"
    (tmp_path / "resumed" / "run.json").write_text(json.dumps(info))
    with pytest.raises(GptwavesError, match="dropout_masks 'coin'"):
        train_tiny("resumed", **{**kw, "max_iters": 20})


def test_different_settings_refused(train_tiny, tmp_path):
    train_tiny("A", max_iters=10)
    before = (tmp_path / "A" / "run.json").read_bytes()
    with pytest.raises(GptwavesError, match="different settings.*n_embd"):
        train_tiny("A", max_iters=10, n_embd=32)
    with pytest.raises(GptwavesError, match="different settings.*learning_rate"):
        train_tiny("A", max_iters=10, learning_rate=1e-3)
    assert (tmp_path / "A" / "run.json").read_bytes() == before


def test_corpus_too_short_for_block_size(train_tiny):
    from gptwaves.corpus import Corpus

    c = Corpus(text="abcdefghij" * 5)
    with pytest.raises(GptwavesError, match="too short"):
        train_tiny(corpus_=c, block_size=16, max_iters=2)


# ------------------------------------------------------------------ SIGKILL in a subprocess


def _train_cmd(out: Path, corpus_path: Path, max_iters: int) -> list[str]:
    return [sys.executable, "-m", "gptwaves", "train", "--preset", "smoke", "--out", str(out),
            "--corpus", str(corpus_path), "--n-layer", "2", "--n-head", "2", "--n-embd", "16",
            "--block-size", "16", "--batch-size", "8", "--dropout", "0.1", "--eval-iters", "2",
            "--max-iters", str(max_iters), "--state-interval", "7", "--log-interval", "10",
            "--device", "cpu", "--quiet"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("GPTWAVES_CORPUS", None)
    return env


@pytest.mark.slow
def test_sigkill_and_rerun_is_bit_identical(tmp_path, corpus_path):
    n = 600
    ref_dir, victim_dir = tmp_path / "ref", tmp_path / "victim"
    # the uninterrupted reference runs alongside (one thread each, same as the victim)
    ref = subprocess.Popen(_train_cmd(ref_dir, corpus_path, n), env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    victim = subprocess.Popen(_train_cmd(victim_dir, corpus_path, n), env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = victim_dir / "state" / "state.json"
    # The kill is decided by events in the victim's files, not by a clock: a state at iteration >= 100
    # is saved, and the metrics log has moved past it (so the kill lands between two states, with
    # training after the last one). The victim has 500 iterations left then.
    guard = time.monotonic() + 900  # a hang guard only
    killed_after = None
    while victim.poll() is None and time.monotonic() < guard:
        try:
            it = json.loads(state.read_text())["iteration"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            it = 0
        if it >= 100 and any(r["iter"] > it for r in read_metrics(victim_dir)):
            victim.send_signal(signal.SIGKILL)
            killed_after = it
            break
        time.sleep(0.002)
    if killed_after is None and victim.poll() is None:  # the hang guard fired
        victim.kill()
    victim.wait(30)
    assert killed_after is not None, (
        f"the run ended (rc {victim.returncode}) before it could be killed: {victim.stderr.read()!r}")
    assert victim.returncode == -signal.SIGKILL
    st = json.loads(state.read_text())
    assert 100 <= st["iteration"] < n
    assert not (victim_dir / "checkpoints" / f"iter_{n:07d}.json").exists()

    rerun = subprocess.run(_train_cmd(victim_dir, corpus_path, n), env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed from {st['iteration']}" in rerun.stdout
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err
    assert_same_run(ref_dir, victim_dir, n)
    for c in list_checkpoints(ref_dir / "checkpoints"):
        other = _final_weights(victim_dir, c.iteration)[0]
        assert other["weights_sha256"] == c.meta["weights_sha256"], c.iteration


def test_openmp_threads_sleep_while_waiting():
    """Importing gptwaves before torch makes OpenMP threads sleep at barriers (docs/method.md,
    Model, "Threads"); a value the user set is kept."""
    code = "import os, gptwaves, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ACTIVE", out.stderr
