"""Batched generation with a key/value cache that can record every hidden-state channel.

docs/method.md, Recording waves.

Positions and steps
-------------------
For a prompt of ``P`` characters and ``T`` generation steps the sequence has ``P + T``
characters and ``n = P - 1 + T`` positions are processed and recorded. Position ``j`` takes the
input character ``seq[j]`` and predicts ``seq[j + 1]``. Positions ``j < P - 1`` are prompt
positions (their next character is dictated by the prompt; flagged ``is_prompt``); position
``P - 1 + t`` is generation step ``t`` (it processes the newest character and samples the next).

Context policy
--------------
``crop`` (default, minGPT semantics): the context is cropped to the last ``block_size``
characters. Up to ``block_size`` the cache is used; beyond it every step is a full forward of
the window (batched across samples), as learned absolute positions require. Recorded values
equal those of a full, uncached forward over the same context.

``stride=K``: when the window is full, keep the last ``K`` characters, refill the cache with
them, and continue incrementally (cheaper; the context length then varies between K and
block_size). The policy is recorded with the data.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from . import distributed as dd
from .config import check_int, check_real
from .corpus import CharTokenizer
from .errors import GptwavesError, SettingsError
from .model import GPT, KVCache
from .runtime import Interrupted, progress_bar

#: Bounds of the sampling settings: below 1e-6 the scaled logits can overflow float32, and
#: recording seeds are multiplied by 1_000_003 and must stay within torch's 64-bit seed range.
MIN_TEMPERATURE = 1e-6
MAX_TEMPERATURE = 1e6
MAX_SAMPLING_SEED = 2**44


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    context: str = "crop"  # "crop" or "stride=K"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "SamplingConfig":
        """Check every field (finite temperature > 0, top-k >= 1, top-p in (0, 1], seed, policy)."""
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not self.temperature > 0 or not math.isfinite(self.temperature):
            raise SettingsError(f"--temperature must be a finite number > 0, not {self.temperature!r}")
        check_real("temperature", self.temperature, MIN_TEMPERATURE, MAX_TEMPERATURE)
        if self.top_k is not None:
            check_int("top_k", self.top_k, 1, 1 << 31)
        if self.top_p is not None:
            check_real("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        check_int("seed", self.seed, 0, MAX_SAMPLING_SEED)
        if not isinstance(self.context, str):
            raise SettingsError(f"--context must be 'crop' or 'stride=K', not {self.context!r}")
        parse_context(self.context)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def parse_context(policy: str) -> int | None:
    """Return None for ``crop`` or K for ``stride=K``; raise on anything else."""
    if policy == "crop":
        return None
    m = re.fullmatch(r"stride=(\d{1,9})", policy) if isinstance(policy, str) else None
    if not m or int(m.group(1)) < 1:
        raise SettingsError(f"unknown context policy {policy!r}: use 'crop' or 'stride=K' (K >= 1)")
    return int(m.group(1))


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Mask logits outside the top-k set and/or the top-p (nucleus) set with -inf."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last axis (the model's own distribution)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@dataclass
class Batch:
    """The result of one batch: tokens (B, P+T), entropy (B, n), taps name -> (B, n, C)."""

    tokens: np.ndarray
    entropy: np.ndarray
    taps: dict[str, np.ndarray]
    prompt_len: int

    @property
    def n_positions(self) -> int:
        return self.tokens.shape[1] - 1


# long: prompt, window and cached generation steps in one loop that shares the KV cache and tap buffers
@torch.no_grad()
def generate(
    model: GPT,
    prompt_ids: Sequence[int] | Sequence[Sequence[int]],
    steps: int,
    batch_size: int,
    cfg: SamplingConfig,
    *,
    taps: Sequence[str] = (),
    generator: torch.Generator | None = None,
    tap_dtype: np.dtype = np.float32,
    on_step: Callable[[int], None] | None = None,
    edits: dict | None = None,
) -> Batch:
    """Generate ``batch_size`` samples of ``steps`` characters after a prompt, recording taps.

    ``prompt_ids`` is one prompt (shared by the batch) or one prompt per sample, all of the same
    length. Returns numpy arrays; recorded taps are kept for every position (prompt included).
    ``edits`` (tap -> function on hidden states) applies a channel intervention at every step.
    """
    if steps <= 0:
        raise GptwavesError(f"steps must be positive, not {steps}")
    device = next(model.parameters()).device
    if len(prompt_ids) and isinstance(prompt_ids[0], (list, tuple, np.ndarray)):
        prompts = [list(p) for p in prompt_ids]  # type: ignore[arg-type]
        if len(prompts) != batch_size or len({len(p) for p in prompts}) != 1:
            raise GptwavesError("per-sample prompts must number batch_size and share one length")
    else:
        prompts = [list(prompt_ids)] * batch_size  # type: ignore[list-item]
    P = len(prompts[0])
    if P == 0:
        raise GptwavesError("the prompt is empty; give at least one character")
    bs = model.config.block_size
    stride = parse_context(cfg.context)
    if stride is not None and stride > bs:
        raise GptwavesError(f"stride {stride} exceeds block_size {bs}")
    taps = list(taps)
    known = set(model.tap_names)
    bad = [t for t in taps if t not in known]
    if bad:
        raise GptwavesError(f"unknown tap names: {', '.join(bad)} (known: {', '.join(model.tap_names)})")
    n = P - 1 + steps
    B = batch_size
    seq = torch.empty(B, P + steps, dtype=torch.long, device=device)
    seq[:, :P] = torch.tensor(prompts, dtype=torch.long, device=device)
    C = model.config.n_embd
    rec = {t: np.empty((B, n, C), dtype=tap_dtype) for t in taps}
    ent = np.empty((B, n), dtype=np.float32)
    model_dtype = next(model.parameters()).dtype
    cache = KVCache(model.config, B, bs, device, model_dtype)

    def store(j0: int, logits: torch.Tensor, tapvals: dict[str, torch.Tensor]) -> None:
        # logits (B, t, V) and taps (B, t, C) for positions j0 .. j0 + t - 1
        t = logits.shape[1]
        ent[:, j0 : j0 + t] = entropy_of(logits).cpu().numpy()
        for name, v in tapvals.items():
            rec[name][:, j0 : j0 + t] = v.float().cpu().numpy()

    def sample_next(logits_last: torch.Tensor) -> torch.Tensor:
        logits = logits_last.float() / cfg.temperature
        logits = filter_logits(logits, cfg.top_k, cfg.top_p)
        probs = logits.softmax(-1)
        if device.type == "cpu" or generator is None:
            return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(device)

    # 1) prompt positions inside the window, one cached forward
    first = min(P, bs)
    logits, _, tv = model(seq[:, :first], taps=taps, cache=cache, edits=edits)
    store(0, logits, tv)
    j = first - 1  # newest processed position
    # prompt positions beyond the window (long prompts): full windows, crop semantics
    while j < P - 1:
        j += 1
        logits, tv = _window_forward(model, seq, j, bs, taps, edits)
        store(j, logits, tv)
        cache.length = bs + 1  # the cache is no longer valid for incremental steps
    # 2) generation steps: position j has been processed; sample seq[j + 1]
    last_logits = logits[:, -1]
    for step in range(steps):
        seq[:, j + 1] = sample_next(last_logits)
        if on_step is not None:
            on_step(step)
        if step == steps - 1:
            break
        j += 1  # process the newly sampled character at position j
        if cache.length < bs:
            logits, _, tv = model(seq[:, j : j + 1], taps=taps, cache=cache, logits_last_only=True, edits=edits)
        elif stride is None:
            logits, tv = _window_forward(model, seq, j, bs, taps, edits)
        else:  # refill the cache with the last `stride` characters, newest included
            cache.length = 0
            logits, _, tv = model(seq[:, j - stride + 1 : j + 1], taps=taps, cache=cache,
                                  tap_positions=slice(-1, None), logits_last_only=True, edits=edits)
        store(j, logits[:, -1:], {k: v[:, -1:] for k, v in tv.items()})
        last_logits = logits[:, -1]
    return Batch(tokens=seq.cpu().numpy(), entropy=ent, taps=rec, prompt_len=P)


def _window_forward(model: GPT, seq: torch.Tensor, j: int, bs: int, taps: Sequence[str], edits=None):
    """Full, uncached forward of the last ``bs`` characters ending at position ``j``."""
    lo = max(0, j - bs + 1)
    logits, _, tv = model(seq[:, lo : j + 1], taps=taps, tap_positions=slice(-1, None),
                          logits_last_only=True, edits=edits)
    return logits, tv


@torch.no_grad()
def naive_generate(model: GPT, prompt_ids: Sequence[int], steps: int, batch_size: int,
                   cfg: SamplingConfig, generator: torch.Generator | None = None) -> np.ndarray:
    """Reference generation the way minGPT does it: a full forward of the context every step."""
    device = next(model.parameters()).device
    bs = model.config.block_size
    idx = torch.tensor([list(prompt_ids)] * batch_size, dtype=torch.long, device=device)
    for _ in range(steps):
        ctx = idx if idx.size(1) <= bs else idx[:, -bs:]
        logits, _, _ = model(ctx)
        logits = filter_logits(logits[:, -1].float() / cfg.temperature, cfg.top_k, cfg.top_p)
        nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    return idx.cpu().numpy()


def batch_generator(seed: int, batch_index: int) -> torch.Generator:
    """Batch ``batch_index`` of a sampling run has its own seeded generator, so resumed or
    sharded runs are bit-identical to one uninterrupted process."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + batch_index)


def sample_texts(model, vocab: list[str], n: int, length: int, prompt: str, sampling: SamplingConfig,
                 batch_size: int, stop=None, progress: bool = False, edits: dict | None = None) -> list[str]:
    """Generate ``n`` texts (prompt + ``length`` characters) without recording taps.

    Batch ``b`` uses its own seeded generator; under torchrun the batches are sharded across
    ranks and gathered in batch order, so the texts equal a single process's.
    """
    gen_fn = getattr(model, "generate_batch", None)  # Hugging Face adapter
    ids = model.encode(prompt, what="prompt") if gen_fn else CharTokenizer(vocab).encode(prompt, what="prompt")
    by_batch: dict[int, list[str]] = {}
    itos = np.array(vocab, dtype=str)
    nb = -(-n // batch_size)
    d = dd.info()
    for b in progress_bar(dd.shard(nb, d), desc="sample", unit="batch", disable=not progress, leave=False):
        if stop:
            raise Interrupted("sampling interrupted; re-run to resume")
        size = min(batch_size, n - b * batch_size)
        if gen_fn is not None:  # sub-word tokens: `length` characters, at most `length` tokens
            res = gen_fn(ids, length, size, sampling, generator=batch_generator(sampling.seed, b), edits=edits,
                         min_chars=length)
        else:
            res = generate(model, ids, length, size, sampling, generator=batch_generator(sampling.seed, b),
                           edits=edits)
        by_batch[b] = ["".join(r) for r in itos[res.tokens].tolist()]
        if gen_fn is not None:  # prompt + exactly `length` generated characters (when reached)
            plen = len("".join(vocab[i] for i in ids))
            by_batch[b] = [t[: plen + length] for t in by_batch[b]]
    if d.enabled:  # merge the shards of every rank, in batch order (same as one process)
        gathered: list = [None] * d.world
        torch.distributed.all_gather_object(gathered, by_batch)
        for g in gathered:
            by_batch.update(g)
    return [t for b in sorted(by_batch) for t in by_batch[b]]
