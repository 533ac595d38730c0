"""Spelling stage: counting statistics of spelling errors per checkpoint -> ``DIR/spelling/``.

docs/method.md, Spelling.

- ``spelling/<name>.samples.json``: the generated texts, keyed by the settings that determine them
  (`SpellingSettings.texts_key`; the intervention stage reuses them as its baseline);
- ``spelling/<name>.json``: statistics and settings (reused while the settings match);
- ``spelling/<name>.text.html``: the texts with misspellings highlighted;
- ``spelling/crossing.json``: the crossing of F_correct through 1 across all checkpoints, with its
  bootstrap CI, or the reason it is not reported (docs/method.md, Spelling);
- ``spelling/spelling.csv`` and figures under ``spelling/figures/``.

The numbers come from the pure functions of :mod:`gptwaves.analysis.spelling`.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import check_int, check_real
from ..errors import SettingsError
from ..io import RunLock, atomic_write_json, atomic_write_text, check_run_dir, write_csv
from ..names import is_main_name
from ..runtime import progress_bar
from ..sample import SamplingConfig, sample_texts
from ..versions import is_current, reusable, stamp
from . import checks
from .common import ModelSource, begin_stage, guarded, load_selected, resolve_lexicon, select_checkpoints

__all__ = ["SpellingSettings", "spelling_run", "SPELLING_COLUMNS", "write_spelling_table",
           "spelling_figures", "HF_DEFAULT_LENGTH"]

#: Characters generated per sample for a Hugging Face model when not given.
HF_DEFAULT_LENGTH = 128


@dataclass(frozen=True)
class SpellingSettings:
    """Settings of the spelling statistics (docs/method.md, Spelling); also the key of the
    generated-text cache.

    Each sample has ``length`` counted characters followed by a margin of ``margin`` generated
    characters, so that no counted word is cut (a word counts where it starts).
    ``length=None``: block_size - margin, so every character is generated inside the full context.
    ``lexicon=None``: the words of the run's training split. ``batch_size`` fixes the per-batch
    random generators, hence the texts. ``n_perm``: permutations of the null models.
    """

    samples: int = 1000
    length: int | None = None
    margin: int = 16
    prompt: str = "\n"
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    lexicon: str | None = None
    alpha: float = 0.05
    n_boot: int = 2000
    n_perm: int = 1000
    batch_size: int = 250

    def __post_init__(self) -> None:
        check_int("samples", self.samples, 2, 10**7)
        if self.length is not None:
            check_int("length", self.length, 1, 10**6)
        check_int("margin", self.margin, 0, 10**4)
        check_real("alpha", self.alpha, 0, 1, lo_open=True, hi_open=True)
        check_int("n-boot", self.n_boot, 1, 10**6)
        check_int("n-perm", self.n_perm, 1, 10**6)
        check_int("batch-size", self.batch_size, 1, 10**6)
        if not isinstance(self.prompt, str) or not self.prompt:
            raise SettingsError("the prompt is empty; give at least one character")

    def replace(self, **kw) -> "SpellingSettings":
        return dataclasses.replace(self, **kw)

    def resolved_length(self, model) -> int:
        """Counted characters per sample for this model."""
        if self.length is not None:
            return self.length
        if hasattr(model, "generate_batch"):
            return HF_DEFAULT_LENGTH
        L = model.config.block_size - self.margin
        if L < 1:
            raise SettingsError(f"margin {self.margin} leaves no counted characters in a context of "
                                f"{model.config.block_size}; give --length or a smaller --margin")
        return L

    def texts_key(self, length: int, weights_sha256: str | None) -> dict:
        """Everything that determines the generated texts (the sample cache's key)."""
        return {"samples": self.samples, "length": length + self.margin, "prompt": self.prompt,
                "sampling": self.sampling.to_dict(), "batch_size": self.batch_size,
                "weights_sha256": weights_sha256}

    def record(self, length: int, lexicon_name: str, lexicon_hash: str, weights_sha256: str | None) -> dict:
        """The settings stored with a checkpoint's statistics (the key of its reuse)."""
        return {"samples": self.samples, "length": length, "margin": self.margin, "prompt": self.prompt,
                "sampling": self.sampling.to_dict(), "lexicon": lexicon_name, "lexicon_hash": lexicon_hash,
                "alpha": self.alpha, "n_boot": self.n_boot, "n_perm": self.n_perm, "batch_size": self.batch_size,
                "weights_sha256": weights_sha256}

    def analyze(self, texts: list[str], lexicon, prompt_len: int, length: int) -> dict:
        """The statistics of one checkpoint's texts (:func:`gptwaves.analysis.spelling.analyze`)."""
        from ..analysis import spelling as sp

        return sp.analyze(texts, lexicon, prompt_len, length, margin=self.margin, alpha=self.alpha,
                          n_boot=self.n_boot, n_perm=self.n_perm, seed=self.sampling.seed)


def cached_texts(path: Path, key: dict, vocab: list[str] | None = None) -> list[str] | None:
    """Texts cached at ``path`` when their key matches and they are complete (as many as the key's
    samples, each the prompt plus the key's length in characters of ``vocab``) and of the texts'
    current analysis version, else None."""
    cached = reusable(path, "texts", key, validate=lambda o: checks.texts_cache(o, key, vocab))
    return None if cached is None else cached["texts"]


def spelling_run(run_dir: str | os.PathLike, checkpoint: str | int | None = "all",
                 settings: SpellingSettings = SpellingSettings(), source: ModelSource = ModelSource(), *,
                 figures: bool = True, progress: bool = True) -> dict:
    """Spelling-error counting statistics for each selected checkpoint (docs/method.md, Spelling).

    Returns ``{"checkpoints": [per-checkpoint results, all main checkpoints analysed with these
    settings], "crossing": the `gptwaves.analysis.spelling.crossing` dict or None, "table": path,
    "figures": [paths]}``.
    """
    from .. import distributed as dd
    from ..figures import spelling as spf
    from ..runtime import graceful_stop

    run_dir = check_run_dir(run_dir)
    selected = select_checkpoints(run_dir, checkpoint, source)
    if settings.lexicon is None and source.hf_model:  # no training split here: a maintained English list
        from ..lexicon import default_lexicon

        lex, lex_name, lex_hash = default_lexicon()
    else:
        lex, lex_name, lex_hash = resolve_lexicon(run_dir, settings.lexicon, source.corpus)
    out_dir = run_dir / "spelling"
    results = []
    device, d = dd.setup(source.device)
    with (RunLock(run_dir) if d.main else nullcontext()), graceful_stop() as stop:
        if d.main:
            begin_stage(run_dir, "spelling")
        bar = progress_bar(selected, desc="spelling", unit="ckpt", disable=not progress)
        for name, ref in bar:
            model, meta = load_selected(ref, source, device)
            L = settings.resolved_length(model)
            record = settings.record(L, lex_name, lex_hash, meta.get("weights_sha256"))
            jpath = out_dir / f"{name}.json"
            old = reusable(jpath, "spelling", record, validate=lambda o, n=name: checks.spelling_result(o, n))
            if old is not None:
                results.append(old)
                continue
            spath = out_dir / f"{name}.samples.json"
            key = settings.texts_key(L, meta.get("weights_sha256"))
            texts = cached_texts(spath, key, list(meta["vocab"]))
            if texts is None:
                bar.set_postfix_str(f"{name}: sampling {settings.samples} x {L}+{settings.margin}")
                hf = source.hf_model is not None
                texts = sample_texts(model, list(meta["vocab"]), settings.samples, L + settings.margin,
                                     settings.prompt,
                                     settings.sampling, batch_size=min(settings.batch_size, 32) if hf
                                     else settings.batch_size, stop=stop, progress=progress)
                if not d.main:
                    continue  # rank 0 writes
                atomic_write_json(spath, stamp("texts", {"settings": key, "texts": texts}))
            plen, n_chars = len(settings.prompt), L
            if source.hf_model:  # tokens decode to several characters: L and M count characters
                # (docs/method.md, Hugging Face models and suites)
                plen = len("".join(meta["vocab"][i] for i in model.encode(settings.prompt)))
            stats = settings.analyze(texts, lex, plen, n_chars)
            res = stamp("spelling", {"name": name, "iteration": meta.get("iteration"),
                                     "train_loss": meta.get("train_loss"), "val_loss": meta.get("val_loss"),
                                     "settings": record, "stats": stats})
            atomic_write_text(out_dir / f"{name}.text.html",
                              spf.text_page_html(texts, lex, plen, meta.get("iteration"), length=n_chars))
            atomic_write_json(jpath, res)  # last: its presence means this checkpoint is done
            results.append(res)
    if not d.main:
        return {"checkpoints": [], "crossing": None, "table": None, "figures": []}
    results = across_checkpoints(out_dir, results, settings, figures=figures,
                                 axis="step" if source.hf_model else "iteration")
    return results


def _on_disk(out_dir: Path) -> list[dict]:
    """Every finished per-checkpoint result of the main checkpoints in ``spelling/``."""
    found = []
    for p in sorted(out_dir.glob("iter_*.json")):
        name = p.name[: -len(".json")]
        if is_main_name(name):
            r = checks.read_checked(p, "spelling result", checks.spelling_result, name, stage="spelling")
            if isinstance(r.get("stats"), dict) and isinstance(r.get("iteration"), int):
                found.append(r)
    return found


def across_checkpoints(out_dir: Path, selected: list[dict], settings: SpellingSettings, *,
                       figures: bool = True, axis: str = "iteration") -> dict:
    """Table, crossing (with its CI) and figures over all checkpoints analysed so far (``axis``: the
    training axis in words, "step" for a Hugging Face suite).

    ``selected`` are the results of this invocation; the across-training statistics use every
    main checkpoint on disk with the same settings as the last of them (so a later run on one
    checkpoint does not lose the others).
    """
    from ..analysis import spelling as sp

    selected = sorted(selected, key=lambda r: (r["iteration"] is None, r["iteration"] or 0))
    pool = {r["name"]: r for r in _on_disk(out_dir)}
    pool.update({r["name"]: r for r in selected})
    ref = selected[-1]["settings"] if selected else None
    same = [r for r in pool.values()
            if ref is not None and _comparable(r["settings"], ref) and is_current(r, "spelling")]
    results = sorted(same, key=lambda r: (r["iteration"] is None, r["iteration"] or 0)) or selected
    table = write_spelling_table(out_dir / "spelling.csv", results)
    its = [r["iteration"] for r in results if r["iteration"] is not None]
    crossing = None
    if len(its) >= 2:
        counts = [r["stats"]["counts"]["correct"] for r in results if r["iteration"] is not None]
        crossing = sp.crossing(its, counts, alpha=settings.alpha, n_boot=settings.n_boot,
                               seed=settings.sampling.seed)
        atomic_write_json(out_dir / "crossing.json", stamp("spelling", {
            "settings": ref, "crossing": crossing, "checkpoints": [r["name"] for r in results]}))
    figs = spelling_figures(out_dir / "figures", results, crossing, axis=axis) if figures and results else []
    return {"checkpoints": results, "crossing": crossing, "table": table, "figures": figs}


def _comparable(a: dict, b: dict) -> bool:
    """Two checkpoints' settings agree on everything but their weights."""
    return {k: v for k, v in a.items() if k != "weights_sha256"} == {k: v for k, v in b.items()
                                                                     if k != "weights_sha256"}


SPELLING_COLUMNS = ["iteration", "val_loss", "train_loss"] + [
    f"{w}_{k}" for w in ("correct", "misspelled")
    for k in ("mean", "var", "fano", "q", "fano_ci_lo", "fano_ci_hi", "p_value", "verdict",
              "fano_ref", "excess", "null_median", "excess_p", "excess_verdict")
] + ["words_fano", "words_renewal_reference", "error_rate", "cascade_rr", "cascade_rr_ci_lo", "cascade_rr_ci_hi",
     "cascade_p", "cascade_verdict", "n_cut", "n_samples"]


def write_spelling_table(path: Path, results: list[dict]) -> Path:
    rows = []
    for r in results:
        s = r["stats"]
        dec = s.get("decomposition") or {}
        row = [r["iteration"], r["val_loss"], r["train_loss"]]
        for which in ("correct", "misspelled"):
            d, e = s[which], dec.get(which) or {}
            ci = d.get("fano_ci") or [None, None]
            row += [d["mean"], d["var"], d["fano"], d["q"], ci[0], ci[1], d["p_value"], d["verdict"],
                    e.get("fano_ref"), e.get("excess"), e.get("null_median"), e.get("p_value"), e.get("verdict")]
        cas = s.get("cascade") or {}
        rci = cas.get("rr_ci") or [None, None]
        row += [(dec.get("words") or {}).get("fano"), (dec.get("words") or {}).get("renewal_reference"),
                s["error_rate"], cas.get("rr"), rci[0], rci[1], cas.get("p_value"), cas.get("verdict"),
                s.get("n_cut"), s["n_samples"]]
        rows.append(row)
    return write_csv(path, SPELLING_COLUMNS, rows)


def spelling_figures(fig_dir: Path, results: list[dict], crossing: dict | None = None,
                     axis: str = "iteration") -> list[Path]:
    """The spelling stage's figures; ``axis``: the training axis in words ("step" for a Hugging Face suite)."""
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
            fig_dir / "count_histograms", axis=axis)
    guarded(out, spf.plot_fano, its, stats, fig_dir / "fano",
            val_losses=vls if all(v is not None for v in vls) else None, crossing=crossing, axis=axis)
    guarded(out, spf.plot_decomposition, its, stats, fig_dir / "decomposition", axis=axis)
    guarded(out, spf.plot_cascade, its, stats, fig_dir / "cascade", axis=axis)
    guarded(out, spf.plot_q_curves, its, stats, fig_dir / "q_curves", axis=axis)
    guarded(out, spf.plot_rates, its, stats, fig_dir / "rates", axis=axis)
    return out
