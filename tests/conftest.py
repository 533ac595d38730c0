"""Shared fixtures for the foundation tests: a synthetic corpus, a tiny training config,
a helper that trains a tiny run, and an independent reference implementation of the GPT
forward pass (explicit loops, written from the nanoGPT/minGPT definitions)."""

from __future__ import annotations

import contextlib
import math
import os
import random
from pathlib import Path

import pytest
import torch

from gptwaves.config import TrainConfig
from gptwaves.corpus import Corpus

# in CI a skip is a failure unless tests/allowed_skips.py lists it with its reason
#: The suite writes PNG figures only (drawing the SVG twin doubles the cost of every stage at test
#: sizes, where drawing dominates); the modules that test the default formats ask for both with the
#: ``all_figure_formats`` fixture. Subprocesses inherit it.
os.environ.setdefault("GPTWAVES_FIGURES", "png")


@pytest.fixture(scope="module")
def all_figure_formats():
    """The default figure formats (PNG and SVG) for a whole module."""
    mp = pytest.MonkeyPatch()
    mp.delenv("GPTWAVES_FIGURES", raising=False)
    yield
    mp.undo()


from allowed_skips import (pytest_collectreport, pytest_runtest_makereport,  # noqa: E402,F401
                           pytest_sessionfinish, pytest_terminal_summary)

def _find_tiny_shakespeare() -> Path:
    """The shared offline copy: $GPTWAVES_TEST_TINY_SHAKESPEARE, $GPTWAVES_CORPUS, or ../shared/data."""
    candidates = [os.environ.get("GPTWAVES_TEST_TINY_SHAKESPEARE"), os.environ.get("GPTWAVES_CORPUS"),
                  str(Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt")]
    for c in candidates:
        if c and Path(c).is_file() and Path(c).name == "tinyshakespeare.txt":
            return Path(c)
    return Path(candidates[-1])


SHARED_TINY_SHAKESPEARE = _find_tiny_shakespeare()

_WORDS = (
    "the of and to a in that is was he for it with as his on be at by this had not are but "
    "from or have an they which one you were her all she there would their we him been has "
    "when who will more no if out so said what up its about into than them can only other new "
    "some could time these two may then do first any my now such like our over man me even most "
    "made after also did many before must through back years where much your way well down "
    "should because each just those people how too little state good very make world still own "
    "see men work long get here between both life being under never day same another know while "
    "last might us great old year off come since against go came right used take three don't "
    "king's thou art"
).split()


def make_text(n_chars: int = 20000, seed: int = 0) -> str:
    """English-like text: capitalised lines of common words with punctuation."""
    rnd = random.Random(seed)
    lines, n = [], 0
    while n < n_chars:
        line = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(4, 10)))
        line = line[0].upper() + line[1:] + rnd.choice(".,;!?:")
        lines.append(line)
        n += len(line) + 1
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def synthetic_text() -> str:
    return make_text()


@pytest.fixture(scope="session")
def corpus_path(tmp_path_factory, synthetic_text) -> Path:
    """A ~20 KB synthetic corpus file shared by the session (read-only)."""
    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_text(synthetic_text, encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def corpus(corpus_path) -> Corpus:
    return Corpus.load(corpus_path)


@pytest.fixture
def tiny_shakespeare_path() -> Path:
    if not SHARED_TINY_SHAKESPEARE.is_file():
        pytest.skip(f"Tiny Shakespeare not available at {SHARED_TINY_SHAKESPEARE}")
    return SHARED_TINY_SHAKESPEARE


def tiny_config(**kw) -> TrainConfig:
    """A model that trains a few hundred iterations per second on one CPU core."""
    base = dict(
        preset="test", n_layer=2, n_head=2, n_embd=16, block_size=16, dropout=0.0,
        batch_size=8, learning_rate=1e-2, min_lr=1e-2, max_iters=40, eval_iters=2,
        log_interval=5, state_interval=10, progress=False, device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Run with ``n`` torch threads (tiny models are fastest on one, and resume comparisons
    need the same count in both runs); restores the previous count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module():
    """One torch thread for a whole test module (use with ``pytest.mark.usefixtures``): tiny
    models gain nothing from intra-op threads, and thread contention on a busy 2-core machine
    slows them down many times."""
    with torch_threads(1):
        yield


@pytest.fixture
def tiny_cfg() -> TrainConfig:
    return tiny_config()


@pytest.fixture
def train_tiny(tmp_path, corpus, one_thread):
    """``train_tiny(name="run", corpus=None, **overrides)`` trains a tiny run under tmp_path."""
    from gptwaves.train import train

    def _train(name: str = "run", corpus_: Corpus | None = None, **overrides):
        return train(tiny_config(**overrides), corpus_ or corpus, tmp_path / name)

    return _train


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, corpus):
    """One tiny run trained once per session: (run_dir, TrainConfig, TrainResult). Read-only."""
    from gptwaves.train import train

    cfg = tiny_config(max_iters=60)
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    with torch_threads(1):
        res = train(cfg, corpus, run_dir)
    return run_dir, cfg, res


# ------------------------------------------------------------------ reference GPT forward

def _layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + eps) * w
    return y + b if b is not None else y


def _gelu(x, kind):
    if kind == "tanh":  # minGPT NewGELU
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def reference_forward(sd: dict, n_head: int, idx, gelu: str = "tanh"):
    """Logits (T, V) and taps for one sequence ``idx``, from a raw state dict, in float64.

    Written from scratch: explicit per-head, per-position causal attention with a manual
    softmax; LayerNorm and GELU by their formulas. ``lm_head.weight`` falls back to wte (tied).
    """
    sd = {k: v.detach().to(torch.float64) for k, v in sd.items()}
    idx = torch.as_tensor(idx, dtype=torch.long)
    T = idx.shape[0]
    g = sd.get
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:T]
    taps = {"hook_embed": x.clone()}
    n_layer = len({k.split(".")[2] for k in sd if k.startswith("transformer.h.")})
    C = x.shape[1]
    hs = C // n_head
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        h = _layer_norm(x, sd[p + "ln_1.weight"], g(p + "ln_1.bias"))
        qkv = h @ sd[p + "attn.c_attn.weight"].T
        if g(p + "attn.c_attn.bias") is not None:
            qkv = qkv + sd[p + "attn.c_attn.bias"]
        q, k, v = qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :]
        y = torch.zeros(T, C, dtype=torch.float64)
        for head in range(n_head):
            cols = slice(head * hs, (head + 1) * hs)
            for t in range(T):
                scores = [float(q[t, cols] @ k[s, cols]) / math.sqrt(hs) for s in range(t + 1)]
                m = max(scores)
                e = [math.exp(sc - m) for sc in scores]
                z = sum(e)
                for s in range(t + 1):
                    y[t, cols] += (e[s] / z) * v[s, cols]
        a = y @ sd[p + "attn.c_proj.weight"].T
        if g(p + "attn.c_proj.bias") is not None:
            a = a + sd[p + "attn.c_proj.bias"]
        x = x + a
        h = _layer_norm(x, sd[p + "ln_2.weight"], g(p + "ln_2.bias"))
        f = h @ sd[p + "mlp.c_fc.weight"].T
        if g(p + "mlp.c_fc.bias") is not None:
            f = f + sd[p + "mlp.c_fc.bias"]
        f = _gelu(f, gelu) @ sd[p + "mlp.c_proj.weight"].T
        if g(p + "mlp.c_proj.bias") is not None:
            f = f + sd[p + "mlp.c_proj.bias"]
        x = x + f
        taps[f"blocks.{i}.hook_resid_post"] = x.clone()
    x = _layer_norm(x, sd["transformer.ln_f.weight"], g("transformer.ln_f.bias"))
    taps["ln_final.hook_normalized"] = x
    head_w = sd.get("lm_head.weight", sd["transformer.wte.weight"])
    return x @ head_w.T, taps


@pytest.fixture(scope="session")
def ref_forward():
    return reference_forward


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Give every parameter (LayerNorm and biases included) random O(scale) values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return model


@pytest.fixture(scope="session")
def perturb():
    return perturb_


#: Test modules by their measured cost, longest first (a suite run with ``--durations``,
#: 2026-12-01). pytest-xdist's ``--dist loadfile`` hands out whole modules in collection order, so
#: starting the longest first keeps both workers busy to the end instead of leaving one module
#: running alone at the tail.
LONGEST_FIRST = ("test_hf_suite.py", "test_fuzz.py", "test_reproduce.py", "test_stage_faults.py",
                 "test_sweep.py", "test_spelling_nulls.py", "test_waves_nulls.py", "test_waves_rules.py",
                 "test_stages.py", "test_distributed.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda it: rank.get(it.path.name, len(rank)))  # stable: the rest keep their order
