"""Intervention stage (docs/method.md, Interventions) -> ``DIR/interventions/``.

Channel interventions: edit a channel set at one tap during generation and re-measure the spelling
statistics (docs/method.md, Spelling) and word lengths.

    gptwaves waves     --run DIR --checkpoint ITER          # labels and clusters (for cluster:/label:)
    gptwaves intervene --run DIR --checkpoint ITER --tap blocks.5.hook_resid_post \
                       --channels label:space --mode ablate

Three conditions are generated with the same per-batch random generators
(:func:`gptwaves.sample.batch_generator`), so sample ``i`` of each starts from the same random
stream and differences are caused by the edit:

- *baseline*: no edit;
- *edited*: the edit applied to the target channels at the tap, at every position of every step;
- *control*: the same edit applied to as many randomly chosen other channels (``control_seed``).

Edits (``mode``): ``ablate`` sets the channels to 0, ``clamp=V`` to V, ``scale=F`` multiplies
them by F, ``mean`` sets them to their mean over the generated steps of the checkpoint's recording
``DIR/recordings/<name>.h5`` (when it exists, holds the tap and was made with these weights),
otherwise over a batch of up to 256 unedited samples generated with the baseline's settings
(seed ``seed``, batch 0). The source is recorded with the result.

Outputs go to ``DIR/interventions/<name>__<tap>__<spec>__<mode>/``: ``result.json`` (settings,
channel lists, per-condition statistics, comparisons with the baseline, package versions),
``samples.json`` (the edited and control texts) and figures (PNG + SVG). The baseline texts are
cached under ``DIR/interventions/baseline/`` (or taken from ``DIR/spelling/<name>.samples.json``
when it was generated with identical settings). Re-running with the same settings reuses
``result.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..analysis import intervention as ia
from ..errors import GptwavesError
from ..io import read_json
from ..sample import sample_texts
from ..versions import package_versions, reusable, stamp
from .checks import intervention_result
from .common import ModelSource, guarded
from .spelling import SpellingSettings

__all__ = ["intervene_run", "make_edit", "tap_labels", "channel_means", "intervention_dir_name",
           "MEAN_SAMPLES"]

#: Unedited samples generated for ``mode=mean`` when no usable recording exists.
MEAN_SAMPLES = 256


# ------------------------------------------------------------------------------ edits

def make_edit(channels: Sequence[int], mode: dict, means: Sequence[float] | None = None
              ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function ``f(h) -> h`` for :meth:`gptwaves.model.GPT.forward`'s ``edits``.

    ``mode`` is :func:`gptwaves.analysis.intervention.parse_mode`'s dict; ``means`` (one value per
    channel, same order) is required for ``mean``. The input is not modified (a copy is edited).
    """
    idx_np = np.asarray(channels, dtype=np.int64)
    kind, value = mode["kind"], mode["value"]
    if kind == "mean":
        if means is None or len(means) != idx_np.size:
            raise ValueError("mode 'mean' needs one mean per channel")
    cache: dict = {}

    def edit(h: torch.Tensor) -> torch.Tensor:
        key = (h.device, h.dtype)
        if key not in cache:
            vals = torch.as_tensor(np.asarray(means, dtype=np.float64), dtype=h.dtype, device=h.device) \
                if kind == "mean" else None
            cache[key] = (torch.as_tensor(idx_np, device=h.device), vals)
        idx, vals = cache[key]
        if idx.numel() == 0:
            return h
        h = h.clone()
        if kind == "ablate":
            h[..., idx] = 0
        elif kind == "clamp":
            h[..., idx] = float(value)
        elif kind == "mean":
            h[..., idx] = vals
        elif kind == "scale":
            h[..., idx] = h[..., idx] * float(value)
        else:  # pragma: no cover - parse_mode guarantees the kinds
            raise ValueError(f"unknown edit kind {kind!r}")
        return h

    return edit


# ------------------------------------------------------------------------------ labels, clusters, means

def tap_labels(run_dir: Path, name: str, tap: str, checkpoint_hint: str | None = None) -> dict:
    """Cluster ids and function labels of a tap's channels, as the waves stage stored them in
    ``DIR/waves/<name>/arrays.npz`` (labels follow :func:`gptwaves.analysis.channel_labels.channel_function`,
    classes with too few events unlabelled). Raises a one-line GptwavesError when the waves analysis
    (or that tap in it) is missing or predates stored labels.
    """
    path = Path(run_dir) / "waves" / name / "arrays.npz"
    hint = checkpoint_hint if checkpoint_hint is not None else name
    again = f"`gptwaves waves --run {run_dir} --checkpoint {hint}`"
    if not path.is_file():
        raise GptwavesError(f"no waves analysis for checkpoint {name}: run {again} first")
    import zipfile

    p = tap.replace(".", "_")
    try:
        with np.load(path, allow_pickle=False) as z:
            need = [f"{p}/cluster_labels", f"{p}/labels"]
            if not all(k in z.files for k in need):
                raise GptwavesError(f"the waves analysis of {name} has no labels for tap {tap}: record that tap "
                                    f"and run {again} again")
            clusters = np.asarray(z[need[0]]).astype(np.int64)
            labels = [str(v) for v in np.asarray(z[need[1]]).tolist()]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise GptwavesError(f"waves analysis file {path} is unreadable ({e}); run {again} again") from None
    if len(labels) != len(clusters):
        raise GptwavesError(f"waves analysis file {path} is inconsistent (labels vs clusters); run {again} again")
    return {"clusters": clusters, "labels": labels, "path": path}


def _recording_source(run_dir: Path, name: str, tap: str, weights_sha256: str | None) -> dict | None:
    """The checkpoint's recording when it can supply channel means (cheap: sidecar JSON only)."""
    path = Path(run_dir) / "recordings" / f"{name}.h5"
    side = path.with_suffix(".json")
    if not (path.is_file() and side.is_file()):
        return None
    try:
        meta = read_json(side, "recording metadata", dict)
    except GptwavesError:
        return None
    if not isinstance(meta.get("taps"), list) or tap not in meta["taps"]:
        return None
    if weights_sha256 and meta.get("weights_sha256") not in (None, weights_sha256):
        return None
    return {"kind": "recording", "path": str(path.relative_to(run_dir)), "sha256": meta.get("sha256")}


def channel_means(*, run_dir: Path, source: dict | None, tap: str, model, prompt_ids: list[int], length: int,
                  sampling, n_samples: int = MEAN_SAMPLES) -> np.ndarray:
    """Mean of every channel of ``tap`` over generated steps (all samples pooled), float64 (C,).

    From the recording described by ``source`` (see :func:`_recording_source`), else from
    ``n_samples`` unedited samples generated with ``sampling`` (batch generator 0).
    """
    from ..recording import Recording
    from ..sample import batch_generator, generate

    if source is not None:
        with Recording.open(Path(run_dir) / source["path"]) as rec:
            gen = ~np.asarray(rec.is_prompt, dtype=bool)
            total = np.zeros(rec.wave_dataset(tap).shape[-1], dtype=np.float64)
            count = 0
            for x in rec.iter_batches(tap):
                x = np.asarray(x)[:, gen]
                total += x.astype(np.float64).sum(axis=(0, 1))
                count += x.shape[0] * x.shape[1]
        if count == 0:
            raise GptwavesError(f"recording {source['path']} has no generated steps for channel means")
        if not np.isfinite(total).all():
            raise GptwavesError(f"recording {source['path']}: the waves at {tap} hold NaN or infinite values")
        return total / count
    res = generate(model, prompt_ids, length, n_samples, sampling, taps=[tap],
                   generator=batch_generator(sampling.seed, 0))
    x = res.taps[tap][:, res.prompt_len - 1:]  # generated steps only
    return x.astype(np.float64).mean(axis=(0, 1))


# ------------------------------------------------------------------------------ naming

def intervention_dir_name(name: str, tap: str, spec: str, mode: str) -> str:
    """``<name>__<tap>__<spec>__<mode>`` with every part made filesystem-safe."""
    return "__".join(ia.slug(x) for x in (name, tap, spec, mode))


# ------------------------------------------------------------------------------ statistics per condition

def _condition(texts: list[str], lex, P: int, L: int, settings: SpellingSettings) -> tuple[dict, dict]:
    n_boot, seed = settings.n_boot, settings.sampling.seed
    st = settings.analyze(texts, lex, P, L)
    mis = np.asarray(st["counts"]["misspelled"], dtype=np.int64)
    cor = np.asarray(st["counts"]["correct"], dtype=np.int64)
    words = mis + cor
    per = ia.word_lengths_per_sample(texts, P, L)
    allw = np.concatenate(per) if per else np.zeros(0, dtype=np.int64)
    rate = ia.bootstrap_ratio(mis, words, n_boot=n_boot, seed=seed + 7)
    hist = ia.length_histogram(allw)
    summary = {
        "error_rate": rate["value"], "error_rate_ci": rate["ci"],
        "n_words": int(words.sum()), "words_per_sample": float(words.mean()),
        "word_length": {"mean": float(allw.mean()) if allw.size else None,
                        "lengths": list(range(1, hist.size + 1)), "counts": hist.tolist()},
        "spelling": st,
    }
    raw = {"mis": mis, "words": words, "lengths": per, "texts": texts}
    return summary, raw


def _compare(base: dict, other: dict, P: int, n_boot: int, alpha: float, seed: int) -> dict:
    return {
        "error_rate": ia.compare_rates(base["mis"], base["words"], other["mis"], other["words"], paired=True,
                                       n_boot=n_boot, alpha=alpha, seed=seed),
        "word_length": ia.compare_distributions(base["lengths"], other["lengths"], paired=True, n_boot=n_boot,
                                                alpha=alpha, seed=seed + 3),
        "divergence": ia.divergence(base["texts"], other["texts"], P),
    }


# ------------------------------------------------------------------------------ the stage

def _baseline_texts(run_dir: Path, name: str, key: dict, generate_fn, vocab: list[str] | None = None
                    ) -> tuple[list[str], str]:
    """Baseline texts: from the spelling stage's samples or our cache when settings match, else new."""
    from ..io import atomic_write_json
    from .spelling import cached_texts

    spath = run_dir / "spelling" / f"{name}.samples.json"
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cpath = run_dir / "interventions" / "baseline" / f"{ia.slug(name)}__{h}.json"
    for path in (spath, cpath):
        texts = cached_texts(path, key, vocab)
        if texts is not None:
            return texts, str(path.relative_to(run_dir))
    texts = generate_fn()
    atomic_write_json(cpath, stamp("texts", {"settings": key, "texts": texts}))
    return texts, str(cpath.relative_to(run_dir))


def intervene_run(
    run_dir: str | os.PathLike,
    checkpoint: str | int,
    tap: str,
    channels: str,
    mode: str,
    settings: SpellingSettings = SpellingSettings(),
    source: ModelSource = ModelSource(),
    *,
    control_seed: int = 0,
    progress: bool = True,
    figures: bool = True,
) -> dict:
    """Edit a channel set at one tap during generation and measure the effect (docs/method.md, Interventions).

    Parameters
    ----------
    run_dir : path
        Run directory.
    checkpoint : str or int
        One checkpoint: an iteration, ``last``, ``first`` or a checkpoint file.
    tap : str
        Tap name, e.g. ``blocks.5.hook_resid_post``.
    channels : str
        Channel spec: ``"3,17,40"``, ``"10-20"``, ``"all"``, ``"cluster:K"`` or ``"label:NAME"``
        (cluster ids and labels come from ``DIR/waves/<name>/arrays.npz``; see
        :func:`gptwaves.analysis.intervention.parse_channel_spec`).
    mode : str
        ``ablate``, ``mean``, ``clamp=V`` or ``scale=F``.
    settings : SpellingSettings
        Generation and statistics settings, as in the spelling stage (whose texts are reused as the
        baseline when they were generated with the same settings); ``n_boot`` also counts the
        permutations of the comparisons.
    source : ModelSource
        Corpus, lexicon source, device (as in the other stages).
    control_seed : int
        Seed of the random choice of control channels (as many as the target, disjoint from it).
    progress, figures : optional

    Returns
    -------
    dict
        The content of ``result.json`` plus ``path`` (its location), ``out_dir`` and ``reused``.
    """
    from ..corpus import CharTokenizer
    from ..io import RunLock, atomic_write_json
    from ..runtime import graceful_stop
    from .common import resolve_lexicon

    parsed_mode, mode_c, control_seed = _checked_request(mode, control_seed, tap, channels)
    prompt = settings.prompt
    run_dir, name, model, meta, ch = _model_and_channels(run_dir, checkpoint, source, tap, channels, control_seed)
    L = settings.resolved_length(model)
    vocab = list(meta["vocab"])
    prompt_ids = CharTokenizer(vocab).encode(prompt, what="prompt")
    lex, lex_name, lex_hash = resolve_lexicon(run_dir, settings.lexicon, source.corpus)
    stored = _stored_settings(run_dir, name, meta, tap, ch, parsed_mode, mode_c, control_seed, L, settings,
                              lex_name, lex_hash)
    mean_source = stored["mean_source"]
    out_dir = run_dir / "interventions" / intervention_dir_name(name, tap, ch["spec"], mode_c)
    rpath = out_dir / "result.json"
    old = reusable(rpath, "interventions", stored, validate=intervention_result)
    if old is not None:
        if figures and not all((out_dir / f).is_file() for f in old.get("figures", [])):
            _figures(out_dir, old)
        return {**old, "path": rpath, "out_dir": out_dir, "reused": True}

    with RunLock(run_dir), graceful_stop() as stop:
        texts, base_from, means_all = _generate(run_dir, name, model, meta, tap, ch, parsed_mode, mean_source,
                                                prompt_ids, L, settings, stop, progress)
        result = _result(out_dir.name, stored, ch, means_all, base_from,
                         *_conditions(texts, lex, len(prompt), L, settings))
        atomic_write_json(out_dir / "samples.json", {"settings": stored, "edited": texts["edited"],
                                                     "control": texts["control"]})
        if figures:
            result["figures"] = _figures(out_dir, result)
        atomic_write_json(rpath, result)  # last: its presence means the intervention is done
    result = read_json(rpath, "intervention result", dict)
    return {**result, "path": rpath, "out_dir": out_dir, "reused": False}


def _checked_request(mode: str, control_seed: int, tap: str, channels: str) -> tuple[dict, str, int]:
    """The parsed edit mode, its canonical text and the checked control seed of :func:`intervene_run`;
    refuses an empty tap or channel spec."""
    from ..config import check_int
    from ..sample import MAX_SAMPLING_SEED

    parsed_mode = ia.parse_mode(mode)  # finite and bounded (docs/method.md, "Interventions")
    mode_c = ia.mode_canonical(parsed_mode)
    control_seed = check_int("control_seed", control_seed, 0, MAX_SAMPLING_SEED)
    if not isinstance(tap, str) or not tap.strip():
        raise GptwavesError("--tap is empty: give a tap name, e.g. blocks.0.hook_resid_post")
    if not isinstance(channels, str) or not channels.strip():
        raise GptwavesError("--channels is empty: give channels like '3,17,40' or '10-20', 'cluster:K' or 'label:NAME'")
    return parsed_mode, mode_c, control_seed


def _model_and_channels(run_dir, checkpoint, source: ModelSource, tap: str, channels: str, control_seed: int):
    """The one checkpoint of :func:`intervene_run` loaded, and its channel sets: ``(run_dir, name, model,
    meta, {"target", "control", "spec" (canonical), "C", "info" (labels and clusters or None)})``."""
    from ..io import check_run_dir
    from ..model import GPT
    from .common import load_selected, select_checkpoints

    run_dir = check_run_dir(run_dir)
    if not run_dir.is_dir():
        raise GptwavesError(f"run directory not found: {run_dir}")
    selected = select_checkpoints(run_dir, checkpoint, source)
    if len(selected) != 1:
        raise GptwavesError(f"give one checkpoint (an iteration, 'last' or a file), not {checkpoint!r}")
    name, ref = selected[0]
    model, meta = load_selected(ref, source)
    if not isinstance(model, GPT):
        raise GptwavesError("interventions need a GPT checkpoint (gptwaves, nanoGPT or minGPT)")
    if tap not in model.tap_names:
        raise GptwavesError(f"unknown tap {tap!r} (known: {', '.join(model.tap_names)})")
    C = model.config.n_embd
    hint = str(meta.get("iteration")) if meta.get("iteration") is not None else str(checkpoint)
    info = None
    spec_s = channels.strip() if isinstance(channels, str) else channels
    if isinstance(spec_s, str) and spec_s.startswith(("cluster:", "label:")):
        info = tap_labels(run_dir, name, tap, hint)
    target = ia.parse_channel_spec(spec_s, C, labels=info["labels"] if info else None,
                                   clusters=info["clusters"] if info else None)
    spec_c = ia.channel_spec_canonical(spec_s)
    control = ia.control_channels(target, C, control_seed)
    return run_dir, name, model, meta, {"target": target, "control": control, "spec": spec_c, "C": C, "info": info}


def _stored_settings(run_dir: Path, name: str, meta: dict, tap: str, ch: dict, parsed_mode: dict, mode_c: str,
                     control_seed: int, L: int, settings: SpellingSettings, lex_name, lex_hash) -> dict:
    """The settings an intervention's result is stored and reused under (with where the channel means
    of a ``mean`` edit come from)."""
    samples, prompt, sampling = settings.samples, settings.prompt, settings.sampling
    mean_source = None
    if parsed_mode["kind"] == "mean":
        mean_source = _recording_source(run_dir, name, tap, meta.get("weights_sha256")) or {
            "kind": "generation", "samples": min(MEAN_SAMPLES, samples), "seed": sampling.seed, "batch": 0}
    stored = {
        "checkpoint": name, "iteration": meta.get("iteration"), "weights_sha256": meta.get("weights_sha256"),
        "tap": tap, "spec": ch["spec"], "channels": ch["target"].tolist(), "n_channels_tap": ch["C"],
        "mode": mode_c, "mode_parsed": parsed_mode, "mean_source": mean_source, "control_seed": control_seed,
        "control_channels": None if ch["control"] is None else ch["control"].tolist(),
        "samples": samples, "length": L, "margin": settings.margin, "prompt": prompt,
        "sampling": sampling.to_dict(), "batch_size": settings.batch_size, "lexicon": lex_name,
        "lexicon_hash": lex_hash, "n_boot": settings.n_boot, "n_perm": settings.n_perm, "alpha": settings.alpha,
    }
    return stored


def _generate(run_dir: Path, name: str, model, meta: dict, tap: str, ch: dict, parsed_mode: dict, mean_source,
              prompt_ids, L: int, settings: SpellingSettings, stop, progress: bool) -> tuple[dict, str, object]:
    """The texts of :func:`intervene_run`'s conditions (``{"baseline", "edited", "control"}``, control
    None without control channels), where the baseline came from, and the channel means of a
    ``mean`` edit (None otherwise)."""
    samples, prompt, sampling = settings.samples, settings.prompt, settings.sampling
    vocab = list(meta["vocab"])

    def gen(edits=None):
        return sample_texts(model, vocab, samples, L + settings.margin, prompt, sampling,
                            batch_size=settings.batch_size, stop=stop, progress=progress, edits=edits)

    key = settings.texts_key(L, meta.get("weights_sha256"))
    base_texts, base_from = _baseline_texts(run_dir, name, key, gen, vocab)
    means_all = None
    if parsed_mode["kind"] == "mean":
        means_all = channel_means(run_dir=run_dir, source=mean_source if mean_source["kind"] == "recording"
                                  else None, tap=tap, model=model, prompt_ids=prompt_ids, length=L,
                                  sampling=sampling, n_samples=min(MEAN_SAMPLES, samples))

    def edit_for(c):
        return {tap: make_edit(c, parsed_mode, None if means_all is None else means_all[c])}

    edited_texts = gen(edit_for(ch["target"]))
    control_texts = gen(edit_for(ch["control"])) if ch["control"] is not None else None
    return {"baseline": base_texts, "edited": edited_texts, "control": control_texts}, base_from, means_all


def _conditions(texts: dict, lex, P: int, L: int, settings: SpellingSettings) -> tuple[dict, dict]:
    """Per condition (baseline, edited, control when there is one) its statistics, and the comparisons
    of the edited and control conditions with the baseline."""
    conds, raw = {}, {}
    for cname, tx in texts.items():
        if tx is None:
            continue
        conds[cname], raw[cname] = _condition(tx, lex, P, L, settings)
    n_boot, alpha, seed = settings.n_boot, settings.alpha, settings.sampling.seed
    comparisons = {"edited_vs_baseline": _compare(raw["baseline"], raw["edited"], P, n_boot, alpha, seed)}
    if "control" in raw:
        comparisons["control_vs_baseline"] = _compare(raw["baseline"], raw["control"], P, n_boot, alpha, seed)
    return conds, comparisons


def _result(name: str, stored: dict, ch: dict, means_all, base_from: str, conds: dict, comparisons: dict) -> dict:
    """The content of an intervention's ``result.json`` (figures filled in later)."""
    target, control, info = ch["target"], ch["control"], ch["info"]
    labels = info["labels"] if info else None
    return stamp("interventions", {
        "kind": "gptwaves-intervention",
        "name": name,
        "settings": stored,
        "channels": {
            "target": target.tolist(),
            "control": None if control is None else control.tolist(),
            "control_note": None if control is not None else
            "no control: fewer channels outside the target set than in it",
            "target_labels": None if labels is None else [labels[c] for c in target.tolist()],
            "target_clusters": None if info is None else [int(info["clusters"][c]) for c in target.tolist()],
            "means": None if means_all is None else {
                "target": means_all[target].tolist(),
                "control": None if control is None else means_all[control].tolist()},
        },
        "baseline_texts": base_from,
        "conditions": conds,
        "comparisons": comparisons,
        "packages": package_versions(),
        "figures": [],
    })


def _figures(out_dir: Path, result: dict) -> list[str]:
    from ..figures import intervention as fi

    paths: list = []
    guarded(paths, fi.plot_error_rates, result, out_dir / "error_rates")
    guarded(paths, fi.plot_word_lengths, result, out_dir / "word_lengths")
    guarded(paths, fi.plot_count_histograms, result, out_dir / "counts")
    return [Path(p).name for p in paths]
