"""Spelling stage: counting statistics of spelling errors per checkpoint (DESIGN 5) -> ``DIR/spelling/``.

- ``spelling/<name>.samples.json``: the generated texts, keyed by the settings that determine them
  (`SpellingSettings.texts_key`; the intervention stage reuses them as its baseline);
- ``spelling/<name>.json``: statistics and settings (reused while the settings match);
- ``spelling/<name>.text.html``: the texts with misspellings highlighted;
- ``spelling/spelling.csv`` and figures under ``spelling/figures/``.

The numbers come from the pure functions of :mod:`gptwaves.analysis.spelling`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GptwavesError
from ..io import RunLock, atomic_write_json, atomic_write_text, check_run_dir
from ..sample import SamplingConfig
from .common import ModelSource, guarded, load_selected, resolve_lexicon, reusable, select_checkpoints, write_csv

__all__ = ["SpellingSettings", "sample_texts", "spelling_run", "SPELLING_COLUMNS", "write_spelling_table",
           "spelling_figures", "HF_DEFAULT_LENGTH"]

#: Characters generated per sample for a Hugging Face model when not given.
HF_DEFAULT_LENGTH = 128


@dataclass(frozen=True)
class SpellingSettings:
    """Settings of the spelling statistics (DESIGN 5); also the key of the generated-text cache.

    ``length=None``: block_size characters per sample; ``lexicon=None``: the words of the
    run's training split. ``batch_size`` fixes the per-batch random generators, hence the texts.
    """

    samples: int = 1000
    length: int | None = None
    prompt: str = "\n"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    lexicon: str | None = None
    alpha: float = 0.05
    n_boot: int = 2000
    batch_size: int = 250

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise GptwavesError(f"need at least 2 samples for a variance, not {self.samples}")
        if self.length is not None and self.length <= 0:
            raise GptwavesError(f"length must be positive, not {self.length}")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and 0 < self.alpha < 1):
            raise GptwavesError(f"alpha must be in (0, 1), not {self.alpha}")
        if self.n_boot < 1:
            raise GptwavesError(f"n-boot must be at least 1 (a confidence interval needs resamples), not {self.n_boot}")
        if self.batch_size <= 0:
            raise GptwavesError(f"batch size must be positive, not {self.batch_size}")
        if not self.prompt:
            raise GptwavesError("the prompt is empty; give at least one character")

    def replace(self, **kw) -> "SpellingSettings":
        return dataclasses.replace(self, **kw)

    def resolved_length(self, model) -> int:
        if self.length is not None:
            return self.length
        return HF_DEFAULT_LENGTH if hasattr(model, "generate_batch") else model.config.block_size

    def texts_key(self, length: int, weights_sha256: str | None) -> dict:
        """Everything that determines the generated texts (the sample cache's key)."""
        return {"samples": self.samples, "length": length, "prompt": self.prompt,
                "sampling": self.sampling.to_dict(), "batch_size": self.batch_size,
                "weights_sha256": weights_sha256}

    def record(self, length: int, lexicon_name: str, lexicon_hash: str, weights_sha256: str | None) -> dict:
        """The settings stored with a checkpoint's statistics (the key of its reuse)."""
        return {"samples": self.samples, "length": length, "prompt": self.prompt,
                "sampling": self.sampling.to_dict(), "lexicon": lexicon_name, "lexicon_hash": lexicon_hash,
                "alpha": self.alpha, "n_boot": self.n_boot, "batch_size": self.batch_size,
                "weights_sha256": weights_sha256}


def sample_texts(model, vocab: list[str], n: int, length: int, prompt: str, sampling: SamplingConfig,
                 batch_size: int, stop=None, progress: bool = False, edits: dict | None = None) -> list[str]:
    """Generate ``n`` texts (prompt + ``length`` characters) without recording taps.

    Batch ``b`` uses its own seeded generator; under torchrun the batches are sharded across
    ranks and gathered in batch order, so the texts equal a single process's.
    """
    from tqdm.auto import tqdm

    from .. import distributed as dd
    from ..corpus import CharTokenizer
    from ..record import batch_generator
    from ..runtime import Interrupted
    from ..sample import generate

    gen_fn = getattr(model, "generate_batch", None)  # Hugging Face adapter
    ids = model.encode(prompt, what="prompt") if gen_fn else CharTokenizer(vocab).encode(prompt, what="prompt")
    by_batch: dict[int, list[str]] = {}
    itos = np.array(vocab, dtype=str)
    nb = -(-n // batch_size)
    d = dd.info()
    for b in tqdm(dd.shard(nb, d), desc="sample", disable=not progress, leave=False):
        if stop:
            raise Interrupted("sampling interrupted; re-run to resume")
        size = min(batch_size, n - b * batch_size)
        if gen_fn is not None:
            res = gen_fn(ids, length, size, sampling, generator=batch_generator(sampling.seed, b), edits=edits)
        else:
            res = generate(model, ids, length, size, sampling, generator=batch_generator(sampling.seed, b),
                           edits=edits)
        by_batch[b] = ["".join(r) for r in itos[res.tokens].tolist()]
    if d.enabled:  # merge the shards of every rank, in batch order (same as one process)
        import torch.distributed as tdist

        gathered: list = [None] * d.world
        tdist.all_gather_object(gathered, by_batch)
        for g in gathered:
            by_batch.update(g)
    return [t for b in sorted(by_batch) for t in by_batch[b]]


def cached_texts(path: Path, key: dict) -> list[str] | None:
    """Texts cached at ``path`` when their key matches and they are complete, else None."""
    cached = reusable(path, key)
    if cached is None:
        return None
    texts = cached.get("texts")
    if not (isinstance(texts, list) and len(texts) == key["samples"] and all(isinstance(t, str) for t in texts)):
        return None
    return texts


def spelling_run(run_dir: str | os.PathLike, checkpoint: str | int | None = "all",
                 settings: SpellingSettings = SpellingSettings(), source: ModelSource = ModelSource(), *,
                 figures: bool = True, progress: bool = True) -> dict:
    """Spelling-error counting statistics for each selected checkpoint (DESIGN 5).

    Returns ``{"checkpoints": [per-checkpoint result dicts], "crossing_iteration": ..., "table": path,
    "figures": [paths]}``.
    """
    from tqdm.auto import tqdm

    from .. import distributed as dd
    from ..analysis import spelling as sp
    from ..figures import spelling as spf
    from ..runtime import graceful_stop

    run_dir = check_run_dir(run_dir)
    selected = select_checkpoints(run_dir, checkpoint, source)
    if settings.lexicon is None and source.hf_model:
        raise GptwavesError("a Hugging Face model has no training split here: pass --lexicon FILE (a word list)")
    lex, lex_name, lex_hash = resolve_lexicon(run_dir, settings.lexicon, source.corpus)
    out_dir = run_dir / "spelling"
    results = []
    device, d = dd.setup(source.device)
    with (RunLock(run_dir) if d.main else nullcontext()), graceful_stop() as stop:
        bar = tqdm(selected, desc="spelling", unit="ckpt", disable=not progress, dynamic_ncols=True)
        for name, ref in bar:
            model, meta = load_selected(ref, source, device)
            L = settings.resolved_length(model)
            record = settings.record(L, lex_name, lex_hash, meta.get("weights_sha256"))
            jpath = out_dir / f"{name}.json"
            old = reusable(jpath, record)
            if old is not None:
                results.append(old)
                continue
            spath = out_dir / f"{name}.samples.json"
            key = settings.texts_key(L, meta.get("weights_sha256"))
            texts = cached_texts(spath, key)
            if texts is None:
                bar.set_postfix_str(f"{name}: sampling {settings.samples} x {L}")
                hf = source.hf_model is not None
                texts = sample_texts(model, list(meta["vocab"]), settings.samples, L, settings.prompt,
                                     settings.sampling, batch_size=min(settings.batch_size, 32) if hf
                                     else settings.batch_size, stop=stop, progress=progress)
                if not d.main:
                    continue  # rank 0 writes
                atomic_write_json(spath, {"settings": key, "texts": texts})
            plen, n_chars = len(settings.prompt), L
            if source.hf_model:  # lengths in characters of the decoded text
                plen = len("".join(meta["vocab"][i] for i in model.encode(settings.prompt)))
                n_chars = max(len(t) for t in texts) - plen
            stats = sp.analyze(texts, lex, plen, n_chars, alpha=settings.alpha, n_boot=settings.n_boot,
                               seed=settings.sampling.seed)
            res = {"name": name, "iteration": meta.get("iteration"), "train_loss": meta.get("train_loss"),
                   "val_loss": meta.get("val_loss"), "settings": record, "stats": stats}
            atomic_write_text(out_dir / f"{name}.text.html",
                              spf.text_page_html(texts, lex, plen, meta.get("iteration")))
            atomic_write_json(jpath, res)  # last: its presence means this checkpoint is done
            results.append(res)
    if not d.main:
        return {"checkpoints": [], "crossing_iteration": None, "table": None, "figures": []}
    results.sort(key=lambda r: (r["iteration"] is None, r["iteration"] or 0))
    table = write_spelling_table(out_dir / "spelling.csv", results)
    its = [r["iteration"] for r in results if r["iteration"] is not None]
    fano_c = [r["stats"]["correct"]["fano"] for r in results if r["iteration"] is not None]
    crossing = sp.crossing_iteration(its, fano_c) if len(its) >= 2 else None
    figs = spelling_figures(out_dir / "figures", results) if figures and results else []
    return {"checkpoints": results, "crossing_iteration": crossing, "table": table, "figures": figs}


SPELLING_COLUMNS = ["iteration", "val_loss", "train_loss"] + [
    f"{w}_{k}" for w in ("correct", "misspelled")
    for k in ("mean", "var", "fano", "q", "fano_ci_lo", "fano_ci_hi", "p_value", "verdict")
] + ["error_rate", "clustering_excess", "clustering_excess_correct", "cascade_ratio", "n_samples"]


def write_spelling_table(path: Path, results: list[dict]) -> Path:
    rows = []
    for r in results:
        s = r["stats"]
        row = [r["iteration"], r["val_loss"], r["train_loss"]]
        for which in ("correct", "misspelled"):
            d = s[which]
            ci = d.get("fano_ci") or [None, None]
            row += [d["mean"], d["var"], d["fano"], d["q"], ci[0], ci[1], d["p_value"], d["verdict"]]
        row += [s["error_rate"], s["clustering_excess"], s.get("clustering_excess_correct"),
                s["cascade_ratio"], s["n_samples"]]
        rows.append(row)
    return write_csv(path, SPELLING_COLUMNS, rows)


def spelling_figures(fig_dir: Path, results: list[dict]) -> list[Path]:
    from ..figures import spelling as spf

    rs = [r for r in results if r["iteration"] is not None] or results
    its = [r["iteration"] if r["iteration"] is not None else 0 for r in rs]
    stats = [r["stats"] for r in rs]
    vls = [r["val_loss"] for r in rs]
    fig_dir.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    grid = rs if len(rs) <= 6 else [rs[i] for i in np.unique(np.linspace(0, len(rs) - 1, 6).round().astype(int))]
    guarded(out, spf.plot_count_histograms,
            [(r["iteration"], r["stats"]["counts"]["correct"], r["stats"]["counts"]["misspelled"]) for r in grid],
            fig_dir / "count_histograms")
    guarded(out, spf.plot_fano, its, stats, fig_dir / "fano",
            val_losses=vls if all(v is not None for v in vls) else None)
    guarded(out, spf.plot_q_curves, its, stats, fig_dir / "q_curves")
    guarded(out, spf.plot_rates, its, stats, fig_dir / "rates")
    return out
