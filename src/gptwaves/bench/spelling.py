"""Speed of the spelling statistics for one checkpoint.

(i) 1000 samples x 128 characters (the default of docs/method.md, Spelling: L = 112
counted characters + a margin of M = 16, the whole sample inside the context) of the ``paper`` model: sampling
(:func:`gptwaves.sample.sample_texts`, batch 250, prompt "\\n") plus the count statistics
(:func:`gptwaves.analysis.spelling.analyze` against the Tiny Shakespeare training lexicon, 2000
BCa resamples, 1000 permutations of both nulls). Target: <= 30 s in total, and the statistics
alone <= 2 s, against a baseline measured in the same run: the two permutation nulls
written as a per-word Python loop, timed on a few permutations and scaled to ``n_perm``.
(ii) 200 x 500 characters (crop beyond the context): reported.
The statistics' own time is reported separately in both.

The model is randomly initialised unless a gptwaves checkpoint (its ``.json``) is given; the
sampling cost does not depend on training, the statistics' cost somewhat does (word counts).
"""

from __future__ import annotations

import time

from .common import check, log, make_model, make_row, matmul_peak, paper_train_config

#: Sampling for spelling within this factor of its fp32 matmul limit (the time its cached steps'
#: FLOPs take at the measured peak).
SAMPLING_LIMIT_GAP = 1.5


def _load_model(checkpoint, vocab_size: int, overrides: dict):
    if checkpoint:
        from pathlib import Path

        from ..checkpoint import load_checkpoint

        model, meta = load_checkpoint(Path(checkpoint).with_suffix(".json"))
        return model.eval(), list(meta["vocab"]), f"checkpoint {Path(checkpoint).name}"
    return make_model(paper_train_config(**overrides), vocab_size).eval(), None, "random-init paper model"


def _loop_nulls(word_sample, word_len, word_mis, n_samples: int, n_perm: int, seed: int = 0) -> None:
    """Baseline: the stratified and the within-sample permutation nulls as per-word Python loops."""
    import random

    import numpy as np

    rnd = random.Random(seed)
    bins: dict = {}
    for j, ln in enumerate(word_len):
        bins.setdefault(min(int(ln), 12), []).append(j)
    by_sample: dict = {}
    for j, s in enumerate(word_sample):
        by_sample.setdefault(int(s), []).append(j)
    for _ in range(n_perm):
        flags = list(word_mis)
        for idx in bins.values():
            vals = [flags[j] for j in idx]
            rnd.shuffle(vals)
            for j, v in zip(idx, vals):
                flags[j] = v
        k = [0] * n_samples
        for j, s in enumerate(word_sample):
            k[int(s)] += flags[j]
        np.var(k, ddof=1)
        mm = pm = cm = pc = 0
        for idx in by_sample.values():
            vals = [word_mis[j] for j in idx]
            rnd.shuffle(vals)
            for a, b in zip(vals[:-1], vals[1:]):
                if a:
                    pm += 1
                    mm += b
                else:
                    pc += 1
                    cm += b


def run(quick: bool = False, corpus=None, *, checkpoint=None, short: tuple[int, int] | None = None,
        long: tuple[int, int] | None = None, batch_size: int = 250, n_boot: int = 2000,
        n_perm: int = 1000, margin: int = 16, model_overrides: dict | None = None) -> list[dict]:
    """Rows: total time and statistics time for (i) and (ii).

    ``(n, length)`` are generated characters per sample: L = length - M counted ones, with
    M = min(margin, length // 4). Full: (i) 1000 x 128, (ii) 200 x 500 (the 500-character run is several minutes on 2 EPYC
    threads: every step past 128 is a full window forward). ``quick``: 100 x 128 and 16 x 160.
    """
    from ..analysis.spelling import analyze, score_samples
    from ..sample import sample_texts
    from ..corpus import Corpus
    from ..sample import SamplingConfig

    c = Corpus.load(corpus)
    t0 = time.perf_counter()
    lexicon = c.lexicon
    t_lex = time.perf_counter() - t0
    model, vocab, what = _load_model(checkpoint, c.tokenizer.vocab_size, dict(model_overrides or {}))
    vocab = vocab or c.tokenizer.chars
    short = short or ((100, 128) if quick else (1000, 128))
    long = long or ((16, 160) if quick else (200, 500))
    bs = model.config.block_size
    rows = []
    for case, (n, length) in (("i", short), ("ii", long)):
        log(f"spelling ({case}): sampling {n} x {length}")
        t0 = time.perf_counter()
        texts = sample_texts(model, vocab, n, length, "\n", SamplingConfig(seed=0), batch_size=batch_size)
        t_sample = time.perf_counter() - t0
        log(f"spelling ({case}): statistics")
        M = min(int(margin), length // 4)
        L = length - M
        t0 = time.perf_counter()
        stats = analyze(texts, lexicon, 1, L, margin=M, n_boot=n_boot, n_perm=n_perm, seed=0)
        t_stats = time.perf_counter() - t0
        sc = score_samples(texts, lexicon, 1, L)
        b_perm = max(1, min(5, n_perm))
        t0 = time.perf_counter()
        _loop_nulls(sc.word_sample, sc.word_len, sc.word_mis, n, b_perm)
        t_base = (time.perf_counter() - t0) * n_perm / b_perm
        total = t_sample + t_stats
        is_target = case == "i" and (n, length) == (1000, 128)
        where = "inside the context" if length <= bs else f"crop beyond the context ({bs})"
        rows.append(make_row(f"spelling ({case}) {n}x{length} sampling + statistics", total, "s",
                             target="<= 30 s" if is_target else None, ok=(total <= 30.0) if is_target else None,
                             notes=f"{what}; {where}; sampling {t_sample:.2f} s "
                                   f"({n * length / t_sample:,.0f} chars/s), batch {batch_size}"))
        rows.append(make_row(f"spelling ({case}) {n}x{length} statistics only", t_stats, "s", baseline=t_base,
                             target="<= 2 s" if is_target else None, ok=(t_stats <= 2.0) if is_target else None,
                             notes=f"L {L} + M {M}; {stats['n_words_total']} words, {stats['n_cut']} cut, n_boot "
                                   f"{n_boot}, n_perm {n_perm}; baseline: both permutation nulls as per-word Python "
                                   f"loops, {b_perm} permutations timed, scaled to {n_perm}; lexicon of the "
                                   f"training split built once in {t_lex:.2f} s (not included)"))
        if case == "i" and length <= bs:
            rows.append(_limit_row(model, n, length, t_sample, is_target, batch_size))
    return rows


def _limit_row(model, n: int, length: int, t_sample: float, is_target: bool, batch_size: int) -> dict:
    """Sampling ``n`` x ``length`` characters in ``t_sample`` seconds against the time its cached
    steps' FLOPs take at the fp32 matmul peak measured now; the notes add the time its reads of the
    key/value cache take at the copy bandwidth measured now (the other bound of a cached step)."""
    from .budget import sampling_cache_bytes, sampling_flops

    flops = sampling_flops(model, n, length)
    peak = matmul_peak()
    t_limit = flops / (peak * 1e9)
    cache_bytes = sampling_cache_bytes(model, n, length)
    bw = copy_bandwidth()
    t_cache = cache_bytes / (bw * 1e9)
    return make_row(f"spelling (i) {n}x{length} sampling vs its fp32 matmul limit", t_sample, "s", baseline=t_limit,
                    target=f"<= {SAMPLING_LIMIT_GAP}x" if is_target else None,
                    ok=check(t_sample / t_limit, "<=", SAMPLING_LIMIT_GAP) if is_target else None,
                    notes=f"{flops / 1e9:.1f} GFLOP of cached steps (head included), batch {batch_size}; fp32 peak "
                          f"{peak:.0f} GFLOP/s: {t_limit:.2f} s at the peak; ratio = gap to the limit; the cache "
                          f"reads, {cache_bytes / 1e9:.1f} GB at the copy bandwidth ({bw:.1f} GB/s read + write), take "
                          f"{t_cache:.2f} s ({t_sample / t_cache:.2f}x)")


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """GB/s read (and as many written) by a ``mib`` MiB float32 tensor copy: the median of ``repeats``."""
    import torch

    a = torch.ones(mib * 2**18)
    b = torch.empty_like(a)
    b.copy_(a)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        b.copy_(a)
        times.append(time.perf_counter() - t0)
    return a.numel() * 4 / sorted(times)[len(times) // 2] / 1e9
