"""Waves stage: coherence analysis of each checkpoint's recording -> ``DIR/waves/``.

docs/method.md, Coherence and Coherence against its floors.

- ``waves/<name>/summary.json``: per-tap scalars and labels (:func:`gptwaves.analysis.waves_summary.tap_summary`),
  the settings and the recording's sha256 (reused while both match);
- ``waves/<name>/arrays.npz``: R, ACFs, periods, clustering, effect sizes, event-triggered averages;
- ``waves/<name>/channel_function.csv``; figures under ``waves/figures/``;
- ``waves/repeatability.json``: similarity across seeds and prompts at the last checkpoint.

The numbers come from the pure functions of :mod:`gptwaves.analysis.waves`; this module reads
recordings, writes files and draws.
"""

from __future__ import annotations

import dataclasses
import io as _io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptArtefactError, GptwavesError
from ..io import RunLock, atomic_write_bytes, atomic_write_json, check_run_dir, sha256_file
from ..io import write_csv
from ..analysis.waves_summary import tap_summary
from ..names import iteration_of_name
from ..recording import recording_is_current
from ..runtime import progress_bar
from ..versions import reusable, stamp
from .checks import waves_summary
from .common import ModelSource, begin_stage, focus_tap, guarded, input_floor, select_checkpoints
from .recordings import RecordSettings, record_run

__all__ = ["WavesSettings", "analyze_recording", "waves_run", "repeatability", "load_array"]


@dataclass(frozen=True)
class WavesSettings:
    """Settings of the coherence analysis (docs/method.md, Coherence and Coherence against its
    floors); all are recorded with each result.

    ``k=None``: number of clusters by silhouette (gated by the surrogates); ``window``: half-width
    of event-triggered averages; ``n_surrogates``: sample-shuffle surrogates; ``n_boot``: bootstrap
    resamples of the excess CI when ``ci_method="bca"`` (default ``"jackknife"``: delete-one-sample
    interval, see docs/method.md); ``min_events``: steps needed inside and outside a class for labels;
    ``probe_folds``, ``probe_max_steps``, ``probe_null``: the space probe's GroupKFold splits, training
    steps per sample and AR(1) red-noise replicates (the null is drawn at the focus tap and
    the input floor only, the taps the verdict compares; docs/method.md, "Findings").
    """

    nlags: int = 64
    k: int | None = None
    window: int = 8
    n_surrogates: int = 20
    n_boot: int = 200
    alpha: float = 0.05
    min_events: int = 30
    seed: int = 0
    ci_method: str = "jackknife"
    probe_folds: int = 5
    probe_max_steps: int = 64
    probe_null: int = 20

    def __post_init__(self) -> None:
        from ..config import check_choice, check_int, check_real

        check_int("nlags", self.nlags, 1, 100_000)
        if self.k is not None:
            check_int("clusters", self.k, 1, 100_000)
        check_int("window", self.window, 0, 100_000)
        check_int("n-surrogates", self.n_surrogates, 1, 100_000)
        check_int("n-boot", self.n_boot, 1, 1_000_000)
        check_real("alpha", self.alpha, 0, 1, lo_open=True, hi_open=True)
        check_int("min-events", self.min_events, 0, 10**9)
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_choice("ci-method", self.ci_method, ("jackknife", "bca"))
        check_int("probe-folds", self.probe_folds, 2, 1000)
        check_int("probe-max-steps", self.probe_max_steps, 2, 10**7)
        check_int("probe-null", self.probe_null, 0, 100_000)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def analysis_kwargs(self) -> dict:
        return self.to_dict()


#: Taps of at least this many values (S x T x C) are analysed in worker processes, one per core,
#: when a recording has more than one (`gptwaves.workers`); smaller ones in this process.
TAP_PROCESS_MIN_ELEMENTS = 1_000_000


def analyze_recording(path: Path, settings: WavesSettings = WavesSettings(),
                      taps: Sequence[str] | None = None) -> tuple[dict, dict]:
    """Analyse every tap of a recording; returns ``({tap: analyze_tap result}, recording meta)``.

    With more than one core and large taps the taps are analysed side by side in worker processes
    (`TAP_PROCESS_MIN_ELEMENTS`; the same results: each tap's analysis depends only on its waves
    and the settings)."""
    from concurrent.futures.process import BrokenProcessPool

    from ..recording import Recording
    from ..workers import cores, drop_shared_pool, shared_pool
    from .waves_taps import analyze_one as _analyze_one

    with Recording.open(path) as rec:
        chars, nxt = rec.input_chars(), rec.next_chars()
        if chars.dtype.itemsize > np.dtype("<U1").itemsize:  # tokens: a token stands for its first character
            chars, nxt = chars.astype("<U1"), nxt.astype("<U1")
        mask = np.broadcast_to(~rec.is_prompt, chars.shape)
        if not mask.any():
            raise GptwavesError(f"recording {path} has no generated steps")
        all_taps = list(taps or rec.taps)
        null_taps = {focus_tap(list(rec.taps)), input_floor(list(rec.taps))}
        kws = {}
        for t in all_taps:
            kws[t] = settings.analysis_kwargs()
            if t not in null_taps:  # the probe's red-noise null is only needed where the verdict looks
                kws[t]["probe_null"] = 0
        size = int(np.prod(rec.wave_dataset(all_taps[0]).shape)) if all_taps else 0
        if cores() > 1 and len(all_taps) > 1 and size >= TAP_PROCESS_MIN_ELEMENTS:
            try:
                pool = shared_pool()
                # the taps with the probe's red-noise null take about twice as long: first, so that
                # no worker is left with one of them at the end
                order = sorted(all_taps, key=lambda t: kws[t]["probe_null"] == 0)
                futures = {t: pool.submit(_analyze_one, rec.waves(t).astype(np.float32, copy=False), chars, nxt,
                                          np.ascontiguousarray(mask), kws[t], str(path), t) for t in order}
                try:
                    return {t: futures[t].result() for t in all_taps}, dict(rec.meta)
                except BaseException:
                    for f in futures.values():
                        f.cancel()
                    raise
            except BrokenProcessPool as e:
                import warnings

                drop_shared_pool(abort=True)
                warnings.warn(f"waves: worker processes failed ({type(e).__name__}: {e}); "
                              "continuing in this process", stacklevel=2)
        res = {}
        for t in all_taps:
            res[t] = _analyze_one(rec.waves(t).astype(np.float32, copy=False), chars, nxt, mask, kws[t], str(path), t)
        return res, dict(rec.meta)


def _array_key(tap: str, key: str) -> str:
    return f"{tap.replace('.', '_')}/{key}"


def _save_arrays(path: Path, res: dict) -> None:
    arrays = {}
    for tap, r in res.items():
        def put(key, value):
            arrays[_array_key(tap, key)] = value

        put("R", r["R"].astype(np.float32))
        put("R_induced", r["R_induced"].astype(np.float32))
        for key in ("eigenvalues", "acf", "period_acf", "period_acf_all", "strength", "period_psd", "space_acf",
                    "space_similarity", "eta", "eta_counts", "oscillating", "kept_channels", "evoked_share_channels"):
            put(key, np.asarray(r[key]))
        for key in ("labels", "order", "linkage"):
            put(f"cluster_{key}" if key != "linkage" else "linkage", r["clustering"][key])
        put("labels", np.asarray([str(v) for v in np.asarray(r["function"]["label"]).tolist()], dtype=str))
        put("d_current", r["function"]["d_current"])
        put("d_next", r["function"]["d_next"])
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _arrays_ok(path: Path, taps) -> bool:
    """True when a checkpoint's ``arrays.npz`` opens and holds the arrays of every tap (else the
    checkpoint is analysed again)."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            return all(_array_key(t, k) in files for t in taps for k in ("R", "cluster_labels", "cluster_order",
                                                                         "labels", "d_current"))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def _check_recording_identity(path: Path, name: str, meta: dict, ref) -> None:
    """The recording of checkpoint ``name`` is of that iteration and of the run's vocabulary."""
    it = iteration_of_name(name)
    if it is not None and meta.get("iteration") != it:
        raise GptwavesError(f"recording {path} says iteration {meta.get('iteration')!r}, its name {name}: it is "
                            f"not this checkpoint's; delete it and re-run `gptwaves record`")
    vocab = getattr(ref, "meta", {}).get("vocab") if hasattr(ref, "meta") else None
    if vocab is not None and list(meta.get("vocab") or []) != list(vocab):
        raise GptwavesError(f"recording {path}: its vocabulary differs from the checkpoint's; delete it and "
                            f"re-run `gptwaves record`")


def load_array(path: Path, tap: str, key: str) -> np.ndarray:
    """One array of a checkpoint's ``arrays.npz`` (never unpickles objects)."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            return z[_array_key(tap, key)]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise GptwavesError(f"cannot read {key} of {tap} from {path}: {e}") from None


def _checkpoint_figures(fig_dir: Path, name: str, rec_path: Path, res: dict, iteration,
                        axis: str = "iteration") -> list[Path]:
    from ..figures import waves as wf
    from ..recording import Recording

    tap = focus_tap(list(res))
    r = res[tap]
    out: list[Path] = []
    label = f"{axis} {iteration}" if iteration is not None else name
    with Recording.open(rec_path, verify=False) as rec:
        x0 = rec.waves(tap, samples=0)
        c0 = rec.input_chars(samples=0)
        m0 = ~rec.is_prompt
    si = list(r["function"]["classes"]).index("space")
    d_space = np.asarray(r["function"]["d_current"])[si]
    guarded(out, wf.wave_heatmap, x0, c0, fig_dir / f"{name}_wave_heatmap", mask_sample=m0,
            channel_order=r["clustering"]["order"], title=f"Waves at {tap}, sample 0, {label}")
    guarded(out, wf.selective_waves, x0, c0, d_space, fig_dir / f"{name}_space_channels", mask_sample=m0,
            title=f"Most space-selective channels at {tap}, {label}")
    guarded(out, wf.correlation_figure, r["R"], r["clustering"], fig_dir / f"{name}_correlation",
            title=f"Cross-channel correlation at {tap}, {label}")
    guarded(out, wf.acf_figure, r["acf"], r["space_acf"], fig_dir / f"{name}_acf", strength=r["strength"],
            periods=r["period_acf"], title=f"Auto-correlation at {tap}, {label}")
    guarded(out, wf.period_histogram, r["period_acf"], fig_dir / f"{name}_periods", periods_psd=r["period_psd"],
            title=f"Dominant periods at {tap}, {label}")
    guarded(out, wf.event_triggered_figure, r["eta"], r["eta_counts"], r["eta_classes"], r["eta_lags"],
            r["function"]["d_current"], fig_dir / f"{name}_event_triggered",
            title=f"Event-triggered averages at {tap}, {label}")
    rows = wf.channel_function_rows(r["function"], r["clustering"]["labels"], top_n=20, periods=r["period_acf"])
    guarded(out, wf.channel_table_figure, rows, fig_dir / f"{name}_channel_table",
            title=f"Channel function at {tap}, {label}")
    all_rows = wf.channel_function_rows(r["function"], r["clustering"]["labels"], top_n=r["n_channels"],
                                        periods=r["period_acf"])
    if all_rows:
        out.append(write_csv(fig_dir.parent / name / "channel_function.csv", list(all_rows[0]),
                             [list(row.values()) for row in all_rows]))
    return out


def _across_checkpoint_figures(out_dir: Path, results: list[dict], axis: str = "iteration") -> list[Path]:
    from ..figures import waves as wf

    fig_dir = out_dir / "figures"
    figs: list[Path] = []
    if len(results) < 2:
        return figs
    its = [r["iteration"] if r["iteration"] is not None else 0 for r in results]
    taps = list(results[0]["taps"])
    per_tap = {t: [r["taps"][t] for r in results] for t in taps}
    guarded(figs, wf.order_parameters_figure, its, per_tap, fig_dir / "order_parameters",
            title="Coherence order parameters across training", axis=axis)
    first, last = results[0], results[-1]
    ft = focus_tap(taps)
    guarded(figs, wf.coherence_null_figure, [{"iteration": i, "taps": r["taps"]} for i, r in zip(its, results)],
            ft, fig_dir / "coherence_nulls", input_tap=input_floor(taps), title=f"Coherence at {ft} against its floors",
            axis=axis)
    Ra = load_array(out_dir / first["name"] / "arrays.npz", ft, "R")
    Rb = load_array(out_dir / last["name"] / "arrays.npz", ft, "R")
    order = load_array(out_dir / last["name"] / "arrays.npz", ft, "cluster_order")
    guarded(figs, wf.correlation_comparison, Ra, Rb, fig_dir / "correlation_compare", order=order,
            names=(f"{axis} {first['iteration']}", f"{axis} {last['iteration']}"),
            title=f"Cross-channel correlation at {ft}: before and after training")
    return figs


def waves_run(run_dir: str | os.PathLike, checkpoint: str | int | None = "all",
              settings: WavesSettings = WavesSettings(), *, record: RecordSettings = RecordSettings(),
              source: ModelSource = ModelSource(), variants: dict | None = None, figures: bool = True,
              progress: bool = True) -> dict:
    """Coherence analysis of each selected checkpoint's recording; records (with ``record``) if missing.

    Returns ``{"checkpoints": [per-checkpoint summary dicts], "repeatability": dict | None,
    "figures": [paths]}``.
    """
    from ..figures import waves as wf

    run_dir = check_run_dir(run_dir)
    selected = select_checkpoints(run_dir, checkpoint, source)
    key = settings.to_dict()
    out_dir = run_dir / "waves"
    fig_dir = out_dir / "figures"
    axis = "step" if source.hf_model else "iteration"  # the training axis in words (a suite's revisions: steps)
    results: list[dict] = []
    with RunLock(run_dir):
        begin_stage(run_dir, "waves")
        bar = progress_bar(selected, desc="waves", unit="ckpt", disable=not progress)
        for name, ref in bar:
            rec_path = run_dir / "recordings" / f"{name}.h5"
            if not recording_is_current(rec_path):  # missing, or of an older analysis version
                which = str(ref.iteration) if hasattr(ref, "iteration") else str(ref)
                record_run(run_dir, which, record, source, progress=progress)
            rec_sha = sha256_file(rec_path)
            spath = out_dir / name / "summary.json"
            old = reusable(spath, "waves", key, recording_sha256=rec_sha, validate=lambda o, n=name: waves_summary(o, n))
            if old is not None and _arrays_ok(out_dir / name / "arrays.npz", old["taps"]):
                results.append(old)
                continue
            bar.set_postfix_str(name)
            res, meta = analyze_recording(rec_path, settings)
            _check_recording_identity(rec_path, name, meta, ref)
            summ = stamp("waves", {
                "name": name, "iteration": meta.get("iteration"), "recording": rec_path.name,
                "recording_sha256": rec_sha, "settings": key, "focus_tap": focus_tap(list(res)),
                "record_settings": {k2: meta.get(k2) for k2 in ("samples", "steps", "prompt", "sampling")},
                "taps": {t: tap_summary(r) for t, r in res.items()}})
            _save_arrays(out_dir / name / "arrays.npz", res)
            if figures:
                _checkpoint_figures(fig_dir, name, rec_path, res, meta.get("iteration"), axis)
            atomic_write_json(spath, summ)  # last: its presence means this checkpoint is done
            results.append(summ)
    results.sort(key=lambda r: (r["iteration"] is None, r["iteration"] or 0))
    figs: list[Path] = _across_checkpoint_figures(out_dir, results, axis) if figures else []
    repeat = None
    if variants:
        repeat, raw = repeatability(variants, settings)
        if repeat:
            if figures:
                guarded(figs, wf.repeatability_plasticity_figure, raw["seeds"], raw["prompts"],
                        fig_dir / "repeatability",
                        title=f"Repeatability and plasticity at {repeat['tap']}, {repeat['checkpoint']}")
            atomic_write_json(out_dir / "repeatability.json", repeat)
    return {"checkpoints": results, "repeatability": repeat, "figures": figs}


def repeatability(variants: dict, settings: WavesSettings = WavesSettings()) -> tuple[dict | None, dict]:
    """Similarity of correlation matrices and ACFs across seeds (same prompt) and prompts.

    Returns ``(JSON-ready result or None, raw comparison matrices for the figure)``.
    """
    from ..analysis.correlation import correlation_matrix
    from ..analysis.oscillation import autocorrelation
    from ..analysis.repeatability import compare_recordings
    from ..recording import Recording

    def stats(path: Path, tap: str):
        with Recording.open(path) as rec:
            chars = rec.input_chars()
            mask = np.broadcast_to(~rec.is_prompt, chars.shape)
            x = rec.waves(tap).astype(np.float32, copy=False)
        return correlation_matrix(x, mask), autocorrelation(x, nlags=settings.nlags, mask=mask)

    seeds, prompts = variants.get("seeds", {}), variants.get("prompts", {})
    if len(seeds) < 2 and len(prompts) < 2:
        return None, {}
    any_path = next(iter({**seeds, **prompts}.values()))
    with Recording.open(any_path) as rec:
        tap = focus_tap(rec.taps)
    out: dict = {"checkpoint": variants.get("checkpoint"), "tap": tap}
    raw: dict = {}
    for key, group in (("seeds", seeds), ("prompts", prompts)):
        if len(group) >= 2:
            cmp = compare_recordings([stats(Path(p), tap) for p in group.values()], list(group), seed=settings.seed)
            raw[key] = cmp
            n = len(group)
            iu = np.triu_indices(n, 1)
            out[key] = {"names": cmp["names"],
                        "corr_similarity": np.asarray(cmp["corr_similarity"]).tolist(),
                        "acf_similarity": np.asarray(cmp["acf_similarity"]).tolist(),
                        "mean_corr_similarity": float(np.asarray(cmp["corr_similarity"])[iu].mean()),
                        "mean_acf_similarity": float(np.asarray(cmp["acf_similarity"])[iu].mean()),
                        "baselines": cmp["summary"]}
        else:
            raw[key] = {"names": list(group), "corr_similarity": np.eye(len(group)),
                        "acf_similarity": np.eye(len(group))}
    return out, raw
