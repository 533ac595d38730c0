"""The Python API behind the CLI: each pipeline stage as a function over a run directory.

    corpus -> train -> record -> waves (analysis) -> spelling -> report

Everything here does I/O and orchestration; the numbers come from the pure functions in
:mod:`gptwaves.analysis`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checkpoint import CheckpointInfo, ckpt_stem, list_checkpoints, load_checkpoint, load_external_checkpoint
from .corpus import Corpus
from .errors import GptwavesError
from .io import RunLock, check_run_dir, read_json
from .model import GPT
from .record import RecordSpec, record, recording_matches
from .sample import SamplingConfig


@dataclass
class LoadedCheckpoint:
    name: str  # file stem used for outputs, e.g. iter_0005000
    iteration: int | None
    model: GPT
    meta: dict


def run_checkpoints(run_dir: Path) -> list[CheckpointInfo]:
    cks = list_checkpoints(Path(run_dir) / "checkpoints")
    if not cks:
        raise GptwavesError(f"no checkpoints in {run_dir}; train first (gptwaves train --out {run_dir})")
    return cks


@dataclass(frozen=True)
class HFRef:
    """A Hugging Face model (name or local path, optional revision) in place of a checkpoint."""

    name: str
    revision: str | None = None


def select_checkpoints(run_dir: Path, which: str | int | None, corpus: str | os.PathLike | None = None,
                       n_head: int | None = None, hf_model: str | None = None,
                       hf_revision: str | None = None) -> list[tuple[str, object]]:
    """Resolve ``ITER|all|last|PATH`` (or a Hugging Face model) into a list of (name, reference)."""
    if hf_model:
        from .hf import safe_name

        return [(safe_name(hf_model, hf_revision), HFRef(hf_model, hf_revision))]
    which = "all" if which is None else str(which)
    if which in ("all", "last", "first"):
        cks = run_checkpoints(run_dir)
        if which == "last":
            cks = cks[-1:]
        elif which == "first":
            cks = cks[:1]
        return [(ckpt_stem(c.iteration), c) for c in cks]
    if which.lstrip("-").isdigit():
        it = int(which)
        cks = {c.iteration: c for c in run_checkpoints(run_dir)}
        if it not in cks:
            raise GptwavesError(f"no checkpoint at iteration {it} in {run_dir} (have: {', '.join(map(str, sorted(cks)))})")
        return [(ckpt_stem(it), cks[it])]
    p = Path(which)
    if not p.exists():
        raise GptwavesError(f"checkpoint not found: {which} (give an iteration, 'all', or a file)")
    return [(p.stem if p.suffix != ".json" else p.stem, p)]


def load_selected(ref: object, corpus: str | os.PathLike | None = None, n_head: int | None = None,
                  device: str = "auto") -> tuple[GPT, dict]:
    from .runtime import pick_device

    if isinstance(ref, HFRef):
        from .hf import HFModel

        hf = HFModel(ref.name, pick_device(device), ref.revision)
        return hf, hf.meta()  # type: ignore[return-value]
    if isinstance(ref, CheckpointInfo):
        model, meta = load_checkpoint(ref)
    else:
        p = Path(ref)  # type: ignore[arg-type]
        if p.suffix == ".json" or (p.suffix == ".safetensors" and p.with_suffix(".json").exists()):
            model, meta = load_checkpoint(p.with_suffix(".json"))
        else:
            c = Corpus.load(corpus)
            model, meta = load_external_checkpoint(p, c.tokenizer.chars, n_head=n_head)
    model.to(pick_device(device)).eval()
    return model, meta


def resolve_taps(model: GPT, taps: Sequence[str] | None) -> list[str]:
    if not taps or list(taps) == ["all"]:
        return list(model.tap_names)
    bad = [t for t in taps if t not in model.tap_names]
    if bad:
        raise GptwavesError(f"unknown tap names: {', '.join(bad)} (known: {', '.join(model.tap_names)})")
    return list(taps)


def record_run(
    run_dir: str | os.PathLike,
    checkpoint: str | int | None = "all",
    *,
    samples: int = 64,
    steps: int | None = None,
    prompt: str = "\n",
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    taps: Sequence[str] | None = None,
    dtype: str = "float32",
    context: str = "crop",
    batch_size: int = 64,
    corpus: str | os.PathLike | None = None,
    n_head: int | None = None,
    name_suffix: str = "",
    progress: bool = True,
    device: str = "auto",
    hf_model: str | None = None,
    hf_revision: str | None = None,
) -> list[Path]:
    """Record waves for the selected checkpoints; finished recordings with equal settings are reused."""
    from .runtime import graceful_stop

    from contextlib import nullcontext

    from . import distributed as dd

    run_dir = check_run_dir(run_dir)
    selected = select_checkpoints(run_dir, checkpoint, corpus, n_head, hf_model, hf_revision)
    out = []
    d = dd.init(torch.device("cuda" if device == "cuda" else "cpu").type)
    with (RunLock(run_dir) if d.main else nullcontext()), graceful_stop() as stop:
        for name, ref in selected:
            model, meta = load_selected(ref, corpus, n_head, device)
            st = steps if steps is not None else (256 if hf_model else 2 * model.config.block_size)
            spec = RecordSpec(samples=samples, steps=st, prompt=prompt, taps=tuple(resolve_taps(model, taps)),
                              sampling=SamplingConfig(temperature, top_k, top_p, seed, context),
                              batch_size=batch_size, dtype=dtype)
            path = run_dir / "recordings" / f"{name}{name_suffix}.h5"
            if not recording_matches(path, spec, meta.get("weights_sha256", "")):
                record(model, meta, list(meta["vocab"]), spec, path, progress=progress, stop=stop)
            out.append(path)
    return out


def sample_texts(model: GPT, vocab: list[str], n: int, length: int, prompt: str, sampling: SamplingConfig,
                 batch_size: int = 250, stop=None, progress: bool = False, edits: dict | None = None) -> list[str]:
    """Generate ``n`` texts (prompt + ``length`` characters) without recording taps."""
    from tqdm.auto import tqdm

    from .corpus import CharTokenizer
    from .record import batch_generator
    from .runtime import Interrupted
    from .sample import generate

    from . import distributed as dd

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


def corpus_for_run(run_dir: Path, corpus: str | os.PathLike | None) -> Corpus:
    """The corpus a run was trained on: --corpus if given, else the path in run.json (checked)."""
    info = read_json(Path(run_dir) / "run.json", "run file") if (Path(run_dir) / "run.json").exists() else {}
    c = Corpus.load(corpus if corpus is not None else (info.get("corpus_path") or None))
    if info.get("corpus_sha256") and c.sha256 != info["corpus_sha256"]:
        raise GptwavesError(f"corpus {c.path} is not the one {run_dir} was trained on (sha256 differs)")
    return c


def torch_threads() -> int:
    return torch.get_num_threads()


# ------------------------------------------------------------------------------ spelling stage

def load_lexicon_file(path: str | os.PathLike) -> frozenset[str]:
    """Read a user word list (one word per line) with clear errors for bad files."""
    from .analysis.spelling import load_word_list
    from .io import read_text_file

    text, _ = read_text_file(path, "lexicon")
    try:
        return load_word_list(text.splitlines())
    except ValueError:
        raise GptwavesError(f"lexicon file has no words: {path}") from None


def resolve_lexicon(run_dir: Path, lexicon: str | os.PathLike | None,
                    corpus: str | os.PathLike | None) -> tuple[frozenset[str], str, str]:
    """The lexicon to score words with: a user word list, else the run's training split.

    Returns (words, a name for the record, a short hash of the word set).
    """
    import hashlib

    if lexicon is not None:
        lex, name = load_lexicon_file(lexicon), str(lexicon)
    else:
        lex, name = corpus_for_run(run_dir, corpus).lexicon, "training split"
    return lex, name, hashlib.sha256("\n".join(sorted(lex)).encode()).hexdigest()[:16]


def spelling_run(
    run_dir: str | os.PathLike,
    checkpoint: str | int | None = "all",
    *,
    samples: int = 1000,
    length: int | None = None,
    prompt: str = "\n",
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    context: str = "crop",
    lexicon: str | os.PathLike | None = None,
    corpus: str | os.PathLike | None = None,
    n_head: int | None = None,
    alpha: float = 0.05,
    n_boot: int = 2000,
    batch_size: int = 250,
    figures: bool = True,
    progress: bool = True,
    device: str = "auto",
    hf_model: str | None = None,
    hf_revision: str | None = None,
) -> dict:
    """Spelling-error counting statistics for each selected checkpoint (DESIGN 5).

    Writes ``DIR/spelling/<name>.json`` (statistics + settings), ``<name>.samples.json`` (the
    generated texts), ``<name>.text.html`` (a page with misspellings highlighted), the table
    ``DIR/spelling/spelling.csv`` and figures under ``DIR/spelling/figures``. Returns
    ``{"checkpoints": [...], "crossing_iteration": ..., "table": path}``.
    """
    import json as _json

    from tqdm.auto import tqdm

    from .analysis import spelling as sp
    from .figures import spelling as spf
    from .io import atomic_write_json, atomic_write_text
    from .runtime import graceful_stop

    if samples < 2:
        raise GptwavesError(f"need at least 2 samples for a variance, not {samples}")
    run_dir = check_run_dir(run_dir)
    selected = select_checkpoints(run_dir, checkpoint, corpus, n_head, hf_model, hf_revision)
    if lexicon is None and hf_model:
        raise GptwavesError("a Hugging Face model has no training split here: pass --lexicon FILE (a word list)")
    lex, lex_name, lex_hash = resolve_lexicon(run_dir, lexicon, corpus)
    from contextlib import nullcontext

    from . import distributed as dd

    out_dir = run_dir / "spelling"
    results = []
    d = dd.init(torch.device("cuda" if device == "cuda" else "cpu").type)
    with (RunLock(run_dir) if d.main else nullcontext()), graceful_stop() as stop:
        bar = tqdm(selected, desc="spelling", unit="ckpt", disable=not progress, dynamic_ncols=True)
        for name, ref in bar:
            model, meta = load_selected(ref, corpus, n_head, device)
            L = length if length is not None else (128 if hf_model else model.config.block_size)
            sampling = SamplingConfig(temperature, top_k, top_p, seed, context)
            settings = {"samples": samples, "length": L, "prompt": prompt, "sampling": sampling.to_dict(),
                        "lexicon": lex_name, "lexicon_hash": lex_hash, "alpha": alpha, "n_boot": n_boot,
                        "batch_size": batch_size, "weights_sha256": meta.get("weights_sha256")}
            jpath = out_dir / f"{name}.json"
            if jpath.exists():
                old = _json.loads(jpath.read_text())
                if old.get("settings") == settings:
                    results.append(old)
                    continue
            spath = out_dir / f"{name}.samples.json"
            texts = None
            sample_key = {k: settings[k] for k in ("samples", "length", "prompt", "sampling", "batch_size",
                                                   "weights_sha256")}
            if spath.exists():
                try:
                    cached = _json.loads(spath.read_text())
                    if cached.get("settings") == sample_key:
                        texts = cached["texts"]
                except (OSError, ValueError, KeyError):
                    texts = None
            if texts is None:
                bar.set_postfix_str(f"{name}: sampling {samples} x {L}")
                texts = sample_texts(model, list(meta["vocab"]), samples, L, prompt, sampling,
                                     batch_size=min(batch_size, 32) if hf_model else batch_size, stop=stop,
                                     progress=progress)
                if not d.main:
                    continue  # rank 0 writes
                atomic_write_json(spath, {"settings": sample_key, "texts": texts})
            plen = len(prompt)
            if hf_model:  # lengths in characters of the decoded text
                plen = len("".join(meta["vocab"][i] for i in model.encode(prompt)))
                L = max(len(t) for t in texts) - plen
            stats = sp.analyze(texts, lex, plen, L, alpha=alpha, n_boot=n_boot, seed=seed)
            res = {"name": name, "iteration": meta.get("iteration"), "train_loss": meta.get("train_loss"),
                   "val_loss": meta.get("val_loss"), "settings": settings, "stats": stats}
            atomic_write_text(out_dir / f"{name}.text.html",
                              spf.text_page_html(texts, lex, plen, meta.get("iteration")))
            atomic_write_json(jpath, res)
            results.append(res)
    if not d.main:
        return {"checkpoints": [], "crossing_iteration": None, "table": None, "figures": []}
    results.sort(key=lambda r: (r["iteration"] is None, r["iteration"] or 0))
    table = write_spelling_table(out_dir / "spelling.csv", results)
    its = [r["iteration"] for r in results if r["iteration"] is not None]
    fano_c = [r["stats"]["correct"]["fano"] for r in results if r["iteration"] is not None]
    crossing = sp.crossing_iteration(its, fano_c) if len(its) >= 2 else None
    figs = []
    if figures and results:
        figs = spelling_figures(out_dir / "figures", results)
    return {"checkpoints": results, "crossing_iteration": crossing, "table": table, "figures": figs}


SPELLING_COLUMNS = ["iteration", "val_loss", "train_loss"] + [
    f"{w}_{k}" for w in ("correct", "misspelled")
    for k in ("mean", "var", "fano", "q", "fano_ci_lo", "fano_ci_hi", "p_value", "verdict")
] + ["error_rate", "clustering_excess", "clustering_excess_correct", "cascade_ratio", "n_samples"]


def write_spelling_table(path: Path, results: list[dict]) -> Path:
    import csv
    import io as _io

    from .io import atomic_write_text

    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(SPELLING_COLUMNS)
    for r in results:
        s = r["stats"]
        row = [r["iteration"], r["val_loss"], r["train_loss"]]
        for which in ("correct", "misspelled"):
            d = s[which]
            ci = d.get("fano_ci") or [None, None]
            row += [d["mean"], d["var"], d["fano"], d["q"], ci[0], ci[1], d["p_value"], d["verdict"]]
        row += [s["error_rate"], s["clustering_excess"], s.get("clustering_excess_correct"),
                s["cascade_ratio"], s["n_samples"]]
        w.writerow(["" if v is None else v for v in row])
    return atomic_write_text(path, buf.getvalue())


def _guarded(out: list, fn, *args, **kw) -> None:
    """Draw one figure; a figure that cannot be drawn is skipped with a warning, never fatal."""
    import warnings

    try:
        out += fn(*args, **kw)
    except (ValueError, RuntimeError, IndexError, KeyError, TypeError) as e:
        warnings.warn(f"figure {getattr(fn, '__name__', fn)} skipped: {e}", stacklevel=2)


def spelling_figures(fig_dir: Path, results: list[dict]) -> list[Path]:
    from .figures import spelling as spf

    rs = [r for r in results if r["iteration"] is not None] or results
    its = [r["iteration"] if r["iteration"] is not None else 0 for r in rs]
    stats = [r["stats"] for r in rs]
    vls = [r["val_loss"] for r in rs]
    fig_dir.mkdir(parents=True, exist_ok=True)
    out = []
    grid = rs if len(rs) <= 6 else [rs[i] for i in np.unique(np.linspace(0, len(rs) - 1, 6).round().astype(int))]
    _guarded(out, spf.plot_count_histograms,
             [(r["iteration"], r["stats"]["counts"]["correct"], r["stats"]["counts"]["misspelled"]) for r in grid],
             fig_dir / "count_histograms")
    _guarded(out, spf.plot_fano, its, stats, fig_dir / "fano",
             val_losses=vls if all(v is not None for v in vls) else None)
    _guarded(out, spf.plot_q_curves, its, stats, fig_dir / "q_curves")
    _guarded(out, spf.plot_rates, its, stats, fig_dir / "rates")
    return out


# ------------------------------------------------------------------------------ waves stage

# Prompts for context plasticity (DESIGN 4): verse, prose and a name list. Prompts with
# characters outside a model's vocabulary are skipped (other corpora).
PLASTICITY_PROMPTS = {
    "verse": "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n",
    "prose": "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "names": "ANTONIO\nSEBASTIAN\nGONZALO\nADRIAN\nFRANCISCO\nALONSO\n",
}


def focus_tap(taps: Sequence[str]) -> str:
    """The tap used for per-checkpoint figures: the residual stream after the last block."""
    blocks = [t for t in taps if t.endswith("hook_resid_post")]
    return blocks[-1] if blocks else list(taps)[-1]


def record_variants(run_dir, *, samples: int, steps: int | None, n_seeds: int, seed: int = 0,
                    corpus_obj: Corpus | None = None, **common) -> dict:
    """Extra recordings at the last checkpoint: other seeds (repeatability), other prompts (plasticity)."""
    run_dir = check_run_dir(run_dir)
    last = run_checkpoints(run_dir)[-1]
    name = ckpt_stem(last.iteration)
    vocab = set(last.meta["vocab"])
    out: dict = {"checkpoint": name, "seeds": {}, "prompts": {}}
    out["seeds"][f"seed {seed}"] = run_dir / "recordings" / f"{name}.h5"
    for s in range(seed + 1, seed + max(1, n_seeds)):
        out["seeds"][f"seed {s}"] = record_run(run_dir, last.iteration, samples=samples, steps=steps, seed=s,
                                               name_suffix=f".seed{s}", **common)[0]
    for pname, text in PLASTICITY_PROMPTS.items():
        if set(text) <= vocab:
            out["prompts"][pname] = record_run(run_dir, last.iteration, samples=samples, steps=steps, seed=seed,
                                               prompt=text, name_suffix=f".prompt-{pname}", **common)[0]
    return out


def analyze_recording(path: Path, taps: Sequence[str] | None = None, **kw) -> tuple[dict, dict]:
    """Analyse every tap of a recording; returns ({tap: analyze_tap result}, recording meta)."""
    from .analysis.waves import analyze_tap
    from .record import Recording

    with Recording.open(path) as rec:
        chars, nxt = rec.input_chars(), rec.next_chars()
        if chars.dtype.itemsize > np.dtype("<U1").itemsize:  # tokens: a token stands for its first character
            chars, nxt = chars.astype("<U1"), nxt.astype("<U1")
        mask = np.broadcast_to(~rec.is_prompt, chars.shape)
        if not mask.any():
            raise GptwavesError(f"recording {path} has no generated steps")
        res = {t: analyze_tap(rec.waves(t).astype(np.float32, copy=False), chars, nxt, mask=mask, **kw)
               for t in (taps or rec.taps)}
        return res, dict(rec.meta)


def _tap_summary(r: dict) -> dict:
    f = r["function"]
    labels = [str(x) for x in np.asarray(f["label"]).tolist()]
    counts: dict[str, int] = {}
    for lab in labels:
        if lab:
            counts[lab] = counts.get(lab, 0) + 1
    classes = list(f["classes"])
    si = classes.index("space")
    d_space = np.nan_to_num(np.abs(np.asarray(f["d_current"])[si]))
    d_space_next = np.nan_to_num(np.abs(np.asarray(f["d_next"])[si]))
    best = np.nan_to_num(np.abs(np.asarray(f["best_d"], dtype=float)))
    top = np.argsort(-best)[:10]
    per = np.asarray(r["period_acf"], dtype=float)
    return {
        **r["order_parameters"],
        "n_clusters": int(r["clustering"]["k"]),
        "silhouette": float(r["clustering"]["silhouette"]) if r["clustering"]["silhouette"] is not None else None,
        "label_counts": counts,
        "n_labelled": int(sum(counts.values())),
        "max_abs_d_space": float(max(d_space.max(initial=0), d_space_next.max(initial=0))),
        "max_abs_d_by_class": {c: float(np.nan_to_num(np.abs(np.concatenate(
            [np.asarray(f["d_current"])[i], np.asarray(f["d_next"])[i]]))).max(initial=0)) for i, c in enumerate(classes)},
        "space_channels": [int(i) for i in np.argsort(-np.maximum(d_space, d_space_next))[:8]],
        "top_channels": [{"channel": int(i), "label": labels[i], "d": float(np.asarray(f["best_d"], dtype=float)[i])}
                         for i in top],
        "median_period_acf": float(np.nanmedian(per)) if np.isfinite(per).any() else None,
        "n_oscillating": int(np.isfinite(per).sum()),
        "max_space_similarity": float(np.nanmax(r["space_similarity"])) if np.isfinite(r["space_similarity"]).any() else None,
        "n_samples": r["n_samples"], "n_steps": r["n_steps"], "n_channels": r["n_channels"],
    }


def _save_arrays(path: Path, res: dict) -> None:
    import io as _io

    from .io import atomic_write_bytes

    arrays = {}
    for tap, r in res.items():
        p = tap.replace(".", "_")
        arrays.update({
            f"{p}/R": r["R"].astype(np.float32), f"{p}/eigenvalues": r["eigenvalues"], f"{p}/acf": r["acf"],
            f"{p}/period_acf": r["period_acf"], f"{p}/strength": r["strength"], f"{p}/period_psd": r["period_psd"],
            f"{p}/space_acf": r["space_acf"], f"{p}/space_similarity": r["space_similarity"],
            f"{p}/cluster_labels": r["clustering"]["labels"], f"{p}/cluster_order": r["clustering"]["order"],
            f"{p}/linkage": r["clustering"]["linkage"], f"{p}/d_current": r["function"]["d_current"],
            f"{p}/d_next": r["function"]["d_next"], f"{p}/eta": r["eta"], f"{p}/eta_counts": r["eta_counts"],
        })
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _checkpoint_figures(fig_dir: Path, name: str, rec_path: Path, res: dict, iteration) -> list[Path]:
    import csv
    import io as _io

    from .figures import waves as wf
    from .io import atomic_write_text
    from .record import Recording

    tap = focus_tap(list(res))
    r = res[tap]
    out = []
    label = f"iteration {iteration}" if iteration is not None else name
    with Recording.open(rec_path, verify=False) as rec:
        x0 = rec.waves(tap, samples=0)
        c0 = rec.input_chars(samples=0)
        m0 = ~rec.is_prompt
    si = list(r["function"]["classes"]).index("space")
    d_space = np.asarray(r["function"]["d_current"])[si]
    out += wf.wave_heatmap(x0, c0, fig_dir / f"{name}_wave_heatmap", mask_sample=m0,
                           channel_order=r["clustering"]["order"], title=f"Waves at {tap}, sample 0, {label}")
    out += wf.selective_waves(x0, c0, d_space, fig_dir / f"{name}_space_channels", mask_sample=m0,
                              title=f"Most space-selective channels at {tap}, {label}")
    out += wf.correlation_figure(r["R"], r["clustering"], fig_dir / f"{name}_correlation",
                                 title=f"Cross-channel correlation at {tap}, {label}")
    out += wf.acf_figure(r["acf"], r["space_acf"], fig_dir / f"{name}_acf", strength=r["strength"],
                         periods=r["period_acf"], title=f"Auto-correlation at {tap}, {label}")
    out += wf.period_histogram(r["period_acf"], fig_dir / f"{name}_periods", periods_psd=r["period_psd"],
                               title=f"Dominant periods at {tap}, {label}")
    rows = wf.channel_function_rows(r["function"], r["clustering"]["labels"], top_n=20, periods=r["period_acf"])
    out += wf.channel_table_figure(rows, fig_dir / f"{name}_channel_table",
                                   title=f"Channel function at {tap}, {label}")
    all_rows = wf.channel_function_rows(r["function"], r["clustering"]["labels"], top_n=r["n_channels"],
                                        periods=r["period_acf"])
    if all_rows:
        buf = _io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(all_rows[0]))
        w.writeheader()
        w.writerows(all_rows)
        out.append(atomic_write_text(fig_dir.parent / name / "channel_function.csv", buf.getvalue()))
    return out


def waves_run(
    run_dir: str | os.PathLike,
    checkpoint: str | int | None = "all",
    *,
    variants: dict | None = None,
    samples: int = 64,
    steps: int | None = None,
    nlags: int = 64,
    k: int | None = None,
    window: int = 8,
    figures: bool = True,
    progress: bool = True,
    hf_model: str | None = None,
    hf_revision: str | None = None,
    **record_kw,
) -> dict:
    """Coherence analysis (DESIGN 4) of each selected checkpoint's recording; records if missing.

    Writes ``DIR/waves/<name>/summary.json`` (scalars, labels), ``arrays.npz`` (R, ACFs, periods,
    clustering, effect sizes, event-triggered averages), ``channel_function.csv``, and figures
    under ``DIR/waves/figures``. Returns ``{"checkpoints": [...], "repeatability": ..., "figures": [...]}``.
    """
    import json as _json

    from tqdm.auto import tqdm

    from .figures import waves as wf
    from .io import atomic_write_json, sha256_file

    run_dir = check_run_dir(run_dir)
    selected = select_checkpoints(run_dir, checkpoint, record_kw.get("corpus"), record_kw.get("n_head"),
                                  hf_model, hf_revision)
    settings = {"nlags": nlags, "k": k, "window": window}
    out_dir = run_dir / "waves"
    fig_dir = out_dir / "figures"
    results: list[dict] = []
    full: dict[str, dict] = {}
    with RunLock(run_dir):
        bar = tqdm(selected, desc="waves", unit="ckpt", disable=not progress, dynamic_ncols=True)
        for name, ref in bar:
            rec_path = run_dir / "recordings" / f"{name}.h5"
            if not rec_path.exists():
                record_run(run_dir, str(ref.iteration) if hasattr(ref, "iteration") else str(ref),
                           samples=samples, steps=steps, progress=progress, hf_model=hf_model,
                           hf_revision=hf_revision, **record_kw)
            rec_sha = sha256_file(rec_path)
            spath = out_dir / name / "summary.json"
            if spath.exists():
                old = _json.loads(spath.read_text())
                if old.get("settings") == settings and old.get("recording_sha256") == rec_sha:
                    results.append(old)
                    continue
            bar.set_postfix_str(name)
            res, meta = analyze_recording(rec_path, nlags=nlags, k=k, window=window)
            full[name] = res
            summ = {"name": name, "iteration": meta.get("iteration"), "recording": rec_path.name,
                    "recording_sha256": rec_sha, "settings": settings, "focus_tap": focus_tap(list(res)),
                    "record_settings": {k2: meta.get(k2) for k2 in ("samples", "steps", "prompt", "sampling")},
                    "taps": {t: _tap_summary(r) for t, r in res.items()}}
            _save_arrays(out_dir / name / "arrays.npz", res)
            if figures:
                _checkpoint_figures(fig_dir, name, rec_path, res, meta.get("iteration"))
            atomic_write_json(spath, summ)  # last: its presence means this checkpoint is done
            results.append(summ)
    results.sort(key=lambda r: (r["iteration"] is None, r["iteration"] or 0))
    figs: list[Path] = []
    repeat = None
    if figures and results:
        its = [r["iteration"] if r["iteration"] is not None else 0 for r in results]
        taps = list(results[0]["taps"])
        per_tap = {t: [r["taps"][t] for r in results] for t in taps}
        if len(results) >= 2:
            figs += wf.order_parameters_figure(its, per_tap, fig_dir / "order_parameters",
                                               title="Coherence order parameters across training")
            first, last = results[0]["name"], results[-1]["name"]
            ft = results[-1]["focus_tap"]
            Ra = _load_array(out_dir / first / "arrays.npz", ft, "R")
            Rb = _load_array(out_dir / last / "arrays.npz", ft, "R")
            figs += wf.correlation_comparison(Ra, Rb, fig_dir / "correlation_compare",
                                              names=(f"iteration {results[0]['iteration']}",
                                                     f"iteration {results[-1]['iteration']}"),
                                              title=f"Cross-channel correlation at {ft}: before and after training")
    if variants:
        repeat = repeatability(run_dir, variants, nlags=nlags)
        if figures and repeat:
            figs += wf.repeatability_plasticity_figure(repeat["seeds_raw"], repeat["prompts_raw"],
                                                       fig_dir / "repeatability",
                                                       title=f"Repeatability and plasticity at {repeat['tap']}, "
                                                             f"{repeat['checkpoint']}")
        if repeat:
            repeat = {k2: v for k2, v in repeat.items() if not k2.endswith("_raw")}
            atomic_write_json(out_dir / "repeatability.json", repeat)
    return {"checkpoints": results, "repeatability": repeat, "figures": figs}


def _load_array(path: Path, tap: str, key: str) -> np.ndarray:
    with np.load(path) as z:
        return z[f"{tap.replace('.', '_')}/{key}"]


def repeatability(run_dir: Path, variants: dict, nlags: int = 64) -> dict | None:
    """Similarity of correlation matrices and ACFs across seeds (same prompt) and prompts."""
    from .analysis import waves as wa
    from .record import Recording

    def stats(path: Path, tap: str):
        with Recording.open(path) as rec:
            chars = rec.input_chars()
            mask = np.broadcast_to(~rec.is_prompt, chars.shape)
            x = rec.waves(tap).astype(np.float32, copy=False)
        return wa.correlation_matrix(x, mask), wa.autocorrelation(x, nlags=nlags, mask=mask)

    seeds, prompts = variants.get("seeds", {}), variants.get("prompts", {})
    if len(seeds) < 2 and len(prompts) < 2:
        return None
    any_path = next(iter({**seeds, **prompts}.values()))
    with Recording.open(any_path) as rec:
        tap = focus_tap(rec.taps)
    out = {"checkpoint": variants.get("checkpoint"), "tap": tap}
    for key, group in (("seeds", seeds), ("prompts", prompts)):
        if len(group) >= 2:
            cmp = wa.compare_recordings([stats(Path(p), tap) for p in group.values()], list(group))
            out[f"{key}_raw"] = cmp
            n = len(group)
            iu = np.triu_indices(n, 1)
            out[key] = {"names": cmp["names"],
                        "corr_similarity": np.asarray(cmp["corr_similarity"]).tolist(),
                        "acf_similarity": np.asarray(cmp["acf_similarity"]).tolist(),
                        "mean_corr_similarity": float(np.asarray(cmp["corr_similarity"])[iu].mean()),
                        "mean_acf_similarity": float(np.asarray(cmp["acf_similarity"])[iu].mean())}
        else:
            out[f"{key}_raw"] = {"names": list(group), "corr_similarity": np.eye(len(group)),
                                 "acf_similarity": np.eye(len(group))}
    return out
