"""Pipeline stages on a tiny trained run: ``record`` (all checkpoints, reuse, nanoGPT files),
``spelling`` (files, numbers, caching) and ``waves`` (files, order parameters)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gptwaves.analysis import spelling as sp
from gptwaves.errors import GptwavesError
from gptwaves.analysis import waves as wa
from gptwaves.api import ModelSource, RecordSettings, SamplingConfig, SpellingSettings, WavesSettings
from gptwaves.stages.spelling import SPELLING_COLUMNS
from gptwaves.stages.waves import waves_run as _waves_run


def spelling_run(run_dir, which, *, seed=0, corpus=None, progress=False, figures=True, **kw):
    """The spelling stage with settings objects built from keyword arguments."""
    from gptwaves.stages.spelling import spelling_run as run

    return run(run_dir, which, SpellingSettings(sampling=SamplingConfig(seed=seed), **kw), ModelSource(corpus=corpus),
               progress=progress, figures=figures)


def waves_run(run_dir, which, *, samples=64, steps=None, batch_size=64, progress=False, figures=True, **kw):
    return _waves_run(run_dir, which, WavesSettings(**kw), record=RecordSettings(samples=samples, steps=steps,
                                                                                   batch_size=batch_size),
                      progress=progress, figures=figures)
from gptwaves.cli import main
from gptwaves.config import TrainConfig
from gptwaves.corpus import Corpus
from gptwaves.model import GPT, GPTConfig
from gptwaves.record import Recording
from gptwaves.figures.common import figure_formats

ITERS = (0, 20)


pytestmark = pytest.mark.usefixtures("one_thread_module")


def tiny_train_config(**kw) -> TrainConfig:
    base = dict(preset="test", n_layer=2, n_head=2, n_embd=16, block_size=16, dropout=0.0, batch_size=8,
                learning_rate=1e-2, min_lr=1e-2, max_iters=ITERS[-1], eval_iters=2, log_interval=5,
                state_interval=10, progress=False, device="cpu", checkpoints=ITERS)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def stage_corpus(tmp_path_factory, synthetic_text) -> tuple[Path, Corpus]:
    p = tmp_path_factory.mktemp("stage_corpus") / "corpus.txt"
    p.write_text(synthetic_text, encoding="utf-8")
    return p, Corpus.load(p)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, stage_corpus) -> Path:
    """A tiny run with checkpoints at ITERS (module-private: the tests below add outputs to it)."""
    from gptwaves.train import train

    run_dir = tmp_path_factory.mktemp("stages") / "run"
    train(tiny_train_config(), stage_corpus[1], run_dir)
    return run_dir


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    """A fresh copy of the trained run for one test."""
    dst = tmp_path / "run"
    shutil.copytree(trained, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def cli(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    return cap.out


def mtimes(paths) -> dict:
    return {str(p): Path(p).stat().st_mtime_ns for p in paths}


# --------------------------------------------------------------------------- record

def test_record_all_checkpoints_and_reuse(run_dir, capsys):
    args = ["record", "--run", run_dir, "--checkpoint", "all", "--samples", "3", "--steps", "20",
            "--batch-size", "2", "--quiet"]
    out = cli(capsys, *args)
    files = sorted((run_dir / "recordings").glob("*.h5"))
    assert [f.name for f in files] == [f"iter_{i:07d}.h5" for i in ITERS]
    assert [Path(line) for line in out.split()] == files
    for f, it in zip(files, ITERS):
        with Recording.open(f) as rec:
            assert rec.iteration == it and rec.n_samples == 3
            assert rec.meta["steps"] == 20 and rec.meta["batch_size"] == 2
            assert rec.taps == ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post",
                                "ln_final.hook_normalized"]
            ck = json.loads((run_dir / "checkpoints" / f"iter_{it:07d}.json").read_text())
            assert rec.meta["weights_sha256"] == ck["weights_sha256"]
            assert rec.meta["model_config"] == ck["config"]
    before = mtimes(files + [f.with_suffix(".json") for f in files])
    cli(capsys, *args)
    assert mtimes(files + [f.with_suffix(".json") for f in files]) == before
    # a changed setting re-records (only the selected checkpoint)
    cli(capsys, "record", "--run", run_dir, "--checkpoint", "0", "--samples", "3", "--steps", "20",
        "--batch-size", "2", "--seed", "1", "--quiet")
    after = mtimes(files)
    changed = [k for k in before if k in after and after[k] != before[k]]
    assert changed == [str(run_dir / "recordings" / "iter_0000000.h5")]
    with Recording.open(run_dir / "recordings" / "iter_0000000.h5") as rec:
        assert rec.meta["seed"] == 1
    assert not list((run_dir / "recordings").glob(".*parts*"))


def nanogpt_checkpoint(path: Path, vocab_size: int, seed: int = 0) -> GPT:
    """A nanoGPT-style ckpt.pt (torch.compile prefixes, model_args, iter_num); returns the model."""
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size=16, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                    bias=True, tie_weights=False, gelu="exact")
    model = GPT(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    state = {"_orig_mod." + k: v.clone() for k, v in model.state_dict().items()}
    args = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, bias=True, vocab_size=vocab_size, dropout=0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "model_args": args, "iter_num": 5, "config": {}, "best_val_loss": 1.0}, path)
    return model


@torch.no_grad()
def test_record_external_nanogpt_checkpoint(tmp_path, stage_corpus, capsys):
    corpus_path, corpus = stage_corpus
    ext = tmp_path / "nanogpt" / "out"
    ckpt = ext / "ckpt.pt"
    model = nanogpt_checkpoint(ckpt, corpus.tokenizer.vocab_size)
    ext_before = {p.name: p.stat().st_mtime_ns for p in ext.iterdir()}
    run = tmp_path / "analysis"
    out = cli(capsys, "record", "--run", run, "--checkpoint", ckpt, "--corpus", corpus_path,
              "--samples", "2", "--steps", "20", "--prompt", "Th", "--quiet")
    rec_path = run / "recordings" / "ckpt.h5"
    assert out.split() == [str(rec_path)]
    # outputs only under --run; the checkpoint folder is untouched
    assert {p.name: p.stat().st_mtime_ns for p in ext.iterdir()} == ext_before
    produced = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert all(p.startswith("analysis/") or p == "nanogpt/out/ckpt.pt" for p in produced), produced
    assert (run / "recordings" / "ckpt.json").exists()
    with Recording.open(rec_path) as rec:
        assert rec.iteration == 5
        assert rec.vocab == corpus.tokenizer.chars
        assert rec.meta["model_config"]["gelu"] == "exact"
        assert rec.texts()[0].startswith("Th")
        seq = torch.as_tensor(rec.tokens(), dtype=torch.long)
        waves = {t: rec.waves(t) for t in rec.taps}
    # the recorded waves are those of the checkpoint's weights (full forward of the cropped context)
    for j in range(seq.shape[1] - 1):
        lo = max(0, j - 15)
        _, _, tv = model(seq[:, lo : j + 1], taps=model.tap_names)
        for t in model.tap_names:
            assert np.abs(waves[t][:, j] - tv[t][:, -1].numpy()).max() <= 1e-5, (t, j)


# --------------------------------------------------------------------------- spelling

def test_spelling_stage(run_dir, stage_corpus):
    corpus_path, corpus = stage_corpus
    kw = dict(samples=12, seed=2, n_boot=40, n_perm=50, margin=4, batch_size=5, progress=False, corpus=corpus_path)
    res = spelling_run(run_dir, "all", **kw)
    sdir = run_dir / "spelling"
    names = [f"iter_{i:07d}" for i in ITERS]
    assert [r["iteration"] for r in res["checkpoints"]] == list(ITERS)
    for name in names:
        for suffix in (".json", ".samples.json", ".text.html"):
            assert (sdir / f"{name}{suffix}").is_file(), (name, suffix)
        page = (sdir / f"{name}.text.html").read_text()
        assert "spelling-samples" in page and "12 of 12 samples" in page
    # the table: documented columns, one row per checkpoint
    documented = ["iteration", "val_loss", "train_loss", "correct_mean", "correct_var", "correct_fano",
                  "correct_q", "correct_fano_ci_lo", "correct_fano_ci_hi", "correct_p_value", "correct_verdict",
                  "misspelled_mean", "misspelled_var", "misspelled_fano", "misspelled_q",
                  "misspelled_fano_ci_lo", "misspelled_fano_ci_hi", "misspelled_p_value", "misspelled_verdict",
                  "error_rate", "cascade_rr", "n_cut", "n_samples"]
    for w in ("correct", "misspelled"):
        i = documented.index(f"{w}_verdict") + 1
        documented[i:i] = [f"{w}_fano_ref", f"{w}_excess", f"{w}_null_median", f"{w}_excess_p", f"{w}_excess_verdict"]
    i = documented.index("error_rate")
    documented[i:i] = ["words_fano", "words_renewal_reference"]
    i = documented.index("cascade_rr") + 1
    documented[i:i] = ["cascade_rr_ci_lo", "cascade_rr_ci_hi", "cascade_p", "cascade_verdict"]
    assert res["table"] == sdir / "spelling.csv"
    with open(sdir / "spelling.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == documented == SPELLING_COLUMNS
    assert [int(r[0]) for r in rows[1:]] == list(ITERS)
    # figures in both formats
    figs = {Path(p).name for p in res["figures"]}
    assert figs and all(Path(p).is_file() for p in res["figures"])
    stems = {Path(p).stem for p in res["figures"]}
    for stem in stems:
        assert all(f"{stem}.{e}" in figs for e in figure_formats())
    assert {"fano", "q_curves", "rates", "decomposition", "cascade"} <= stems
    # the crossing across checkpoints: reported with its CI, or the reason it is not
    crossing = json.loads((sdir / "crossing.json").read_text())
    assert crossing["checkpoints"] == names and (crossing["crossing"]["iteration"] is not None
                                                  or crossing["crossing"]["reason"])
    # numbers equal the analysis recomputed on the saved samples
    lex = corpus.lexicon
    for name, r, row in zip(names, res["checkpoints"], rows[1:]):
        saved = json.loads((sdir / f"{name}.samples.json").read_text())
        texts = saved["texts"]
        assert len(texts) == 12 and all(len(t) == 1 + 12 + 4 and t[0] == "\n" for t in texts)
        stats = sp.analyze(texts, lex, 1, 12, margin=4, alpha=0.05, n_boot=40, n_perm=50, seed=2)
        on_disk = json.loads((sdir / f"{name}.json").read_text())
        assert on_disk["stats"] == stats
        assert json.loads(json.dumps(r["stats"])) == stats
        assert on_disk["settings"]["length"] == 12 and on_disk["settings"]["margin"] == 4
        assert on_disk["settings"]["samples"] == 12
        assert on_disk["settings"]["sampling"]["seed"] == 2
        table = dict(zip(rows[0], row))
        for which in ("correct", "misspelled"):
            for key in ("mean", "var", "fano"):
                v = stats[which][key]
                assert (table[f"{which}_{key}"] == "" if v is None else float(table[f"{which}_{key}"]) == v)
            assert table[f"{which}_verdict"] == stats[which]["verdict"]
        assert int(table["n_samples"]) == 12

    # same settings: nothing is resampled or recomputed
    watched = [sdir / f"{n}{s}" for n in names for s in (".json", ".samples.json")]
    before = mtimes(watched)
    res2 = spelling_run(run_dir, "all", **{**kw, "figures": False})
    assert mtimes(watched) == before
    assert [r["stats"] for r in res2["checkpoints"]] == [r["stats"] for r in res["checkpoints"]]
    # another --n-boot: statistics recomputed from the same samples
    samples_before = mtimes([sdir / f"{n}.samples.json" for n in names])
    res3 = spelling_run(run_dir, "all", **{**kw, "n_boot": 30, "figures": False})
    assert mtimes([sdir / f"{n}.samples.json" for n in names]) == samples_before
    for name, r in zip(names, res3["checkpoints"]):
        assert (sdir / f"{name}.json").stat().st_mtime_ns != before[str(sdir / f"{name}.json")]
        texts = json.loads((sdir / f"{name}.samples.json").read_text())["texts"]
        assert r["stats"]["n_boot"] == 30
        assert json.loads(json.dumps(r["stats"])) == sp.analyze(texts, lex, 1, 12, margin=4, n_boot=30, n_perm=50,
                                                                seed=2)
    # another seed: new samples
    spelling_run(run_dir, "last", **{**kw, "seed": 3, "figures": False})
    assert (sdir / f"{names[-1]}.samples.json").stat().st_mtime_ns != samples_before[
        str(sdir / f"{names[-1]}.samples.json")]


def test_spelling_samples_are_the_models(run_dir, stage_corpus):
    """The saved texts are what sample_texts draws (same seed, batch generators) for that checkpoint."""
    from gptwaves.stages.common import load_selected, select_checkpoints
    from gptwaves.sample import sample_texts
    from gptwaves.sample import SamplingConfig

    corpus_path, _ = stage_corpus
    spelling_run(run_dir, "last", samples=7, seed=4, n_boot=10, n_perm=20, margin=4, batch_size=3, progress=False,
                 corpus=corpus_path, figures=False)
    (name, ref), = select_checkpoints(run_dir, "last")
    model, meta = load_selected(ref, device="cpu")
    texts = sample_texts(model, meta["vocab"], 7, 12 + 4, "\n", SamplingConfig(seed=4), batch_size=3)
    saved = json.loads((run_dir / "spelling" / f"{name}.samples.json").read_text())["texts"]
    assert saved == texts


# --------------------------------------------------------------------------- waves

def test_waves_stage(run_dir, capsys):
    res = waves_run(run_dir, "all", samples=4, steps=40, nlags=8, window=3, progress=False, batch_size=2)
    wdir = run_dir / "waves"
    names = [f"iter_{i:07d}" for i in ITERS]
    assert [r["name"] for r in res["checkpoints"]] == names
    # recordings were made where missing
    assert sorted(p.name for p in (run_dir / "recordings").glob("*.h5")) == [f"{n}.h5" for n in names]
    for name in names:
        for f in ("summary.json", "arrays.npz", "channel_function.csv"):
            assert (wdir / name / f).is_file(), (name, f)
        for fig in ("wave_heatmap", "correlation", "acf", "periods", "channel_table", "space_channels"):
            assert all((wdir / "figures" / f"{name}_{fig}.{e}").is_file() for e in figure_formats()), (name, fig)
    for fig in ("order_parameters", "correlation_compare"):
        assert all((wdir / "figures" / f"{fig}.{e}").is_file() for e in figure_formats())

    for name in names:
        summary = json.loads((wdir / name / "summary.json").read_text())
        rec_path = run_dir / "recordings" / f"{name}.h5"
        assert summary["recording"] == rec_path.name
        assert summary["settings"] == {"nlags": 8, "k": None, "window": 3, "n_surrogates": 20, "n_boot": 200,
                                       "alpha": 0.05, "min_events": 30, "seed": 0, "ci_method": "jackknife",
                                       "probe_folds": 5, "probe_max_steps": 64, "probe_null": 20}
        with Recording.open(rec_path) as rec:
            assert summary["iteration"] == rec.iteration
            mask = np.broadcast_to(~rec.is_prompt, (rec.n_samples, rec.is_prompt.shape[0]))
            assert set(summary["taps"]) == set(rec.taps)
            with np.load(wdir / name / "arrays.npz") as z:
                for tap in rec.taps:
                    x = rec.waves(tap)
                    R = wa.correlation_matrix(x, mask)
                    op = wa.order_parameters(R)
                    s = summary["taps"][tap]
                    for key in ("mean_abs_corr", "lambda_max_share", "participation_ratio"):
                        assert s[key] == pytest.approx(op[key], rel=1e-9, abs=1e-12), (tap, key)
                    assert s["n_samples"] == 4 and s["n_steps"] == mask.sum() and s["n_channels"] == 16
                    p = tap.replace(".", "_")
                    np.testing.assert_allclose(z[f"{p}/R"], R, atol=1e-6)
                    np.testing.assert_allclose(z[f"{p}/acf"], wa.autocorrelation(x, nlags=8, mask=mask),
                                               atol=1e-9)
    # re-running with the same settings (here through the CLI) reuses recordings and summaries
    watched = [wdir / n / "summary.json" for n in names] + [wdir / n / "arrays.npz" for n in names] + [
        run_dir / "recordings" / f"{n}.h5" for n in names]
    before = mtimes(watched)
    out = cli(capsys, "waves", "--run", run_dir, "--checkpoint", "all", "--nlags", "8", "--window", "3", "--quiet")
    assert mtimes(watched) == before
    assert "blocks.1.hook_resid_post" in out and "mean |R| raw" in out
    lines = [ln.split() for ln in out.splitlines() if "ln_final.hook_normalized" in ln]
    assert [int(ln[0]) for ln in lines] == list(ITERS)
    last = json.loads((wdir / names[-1] / "summary.json").read_text())["taps"]["ln_final.hook_normalized"]
    assert float(lines[-1][2]) == pytest.approx(last["mean_abs_corr"], abs=6e-4)
    # another nlags recomputes
    res2 = waves_run(run_dir, "last", nlags=6, window=3, progress=False, figures=False)
    assert res2["checkpoints"][0]["settings"]["nlags"] == 6
    with np.load(wdir / names[-1] / "arrays.npz") as z:
        assert z["hook_embed/acf"].shape == (16, 7)


# --------------------------------------------------------------------------- summary and report from disk

def test_summary_and_report_after_step_by_step_commands(run_dir, stage_corpus, capsys):
    """The README's step-by-step commands, then `gptwaves summary` and `gptwaves report`: both are
    built from the run directory alone (no reproduce), and agree with the stages' own files."""
    corpus_path, _ = stage_corpus
    with pytest.raises(GptwavesError, match="no waves or spelling results"):
        from gptwaves.stages.summary import build_summary

        build_summary(run_dir)
    cli(capsys, "waves", "--run", run_dir, "--samples", "4", "--steps", "40", "--nlags", "8", "--quiet")
    cli(capsys, "spelling", "--run", run_dir, "--samples", "10", "--n-boot", "30", "--n-perm", "30", "--margin", "4",
        "--corpus", corpus_path, "--quiet")
    out = cli(capsys, "summary", "--run", run_dir)
    assert "summary:" in out and "Coherence builds up" in out
    s = json.loads((run_dir / "summary.json").read_text())
    assert [c["iteration"] for c in s["checkpoints"]] == list(ITERS)
    for c in s["checkpoints"]:
        sp = json.loads((run_dir / "spelling" / f"iter_{c['iteration']:07d}.json").read_text())
        assert c["spelling"]["correct"]["fano"] == sp["stats"]["correct"]["fano"]
        wv = json.loads((run_dir / "waves" / f"iter_{c['iteration']:07d}" / "summary.json").read_text())
        assert c["waves"]["hook_embed"]["mean_abs_corr"] == wv["taps"]["hook_embed"]["mean_abs_corr"]
    assert s["settings"]["train"]["preset"] == s["preset"]
    out = cli(capsys, "report", "--run", run_dir)
    html = (run_dir / "report" / "index.html").read_text()
    assert "report:" in out and s["findings"]["claims"][0]["claim"] in html
    assert (run_dir / "figures" / "training_curves.png").is_file()  # drawn by the report from metrics.jsonl


def test_taps_in_worker_processes_equal_the_taps_here(tmp_path, monkeypatch):
    """The taps of a large recording are analysed side by side in worker processes (forced here on a
    small one): the same results as one after another in this process; bad waves are refused with
    the same one line from a worker."""
    import json

    import h5py

    from gptwaves import workers
    from gptwaves.analysis.waves_summary import tap_summary
    from gptwaves.bench.waves import write_recording
    from gptwaves.errors import CorruptArtefactError
    from gptwaves.jsonable import jsonable as json_ready
    from gptwaves.stages import waves as ws

    path = write_recording(tmp_path / "rec.h5", 3, 8, 80, 12)
    settings = ws.WavesSettings(nlags=8, window=3, n_surrogates=19, min_events=5, probe_null=3)
    here, _ = ws.analyze_recording(path, settings)
    monkeypatch.setattr(ws, "TAP_PROCESS_MIN_ELEMENTS", 0)
    monkeypatch.setattr(workers, "cores", lambda: 2)
    started = []
    monkeypatch.setattr(workers, "WorkerPool", lambda *a, _p=workers.WorkerPool: started.append(a[-1]) or _p(*a))
    try:
        pooled, _ = ws.analyze_recording(path, settings)
        assert started == [2] and list(pooled) == list(here)
        for t in here:
            assert json.dumps(json_ready(tap_summary(pooled[t]))) == json.dumps(json_ready(tap_summary(here[t])))
        with h5py.File(path, "r+") as f:
            w = f["waves"][list(here)[1]]
            w[0, 3, 0] = np.nan
        with pytest.raises(CorruptArtefactError, match="holds NaN or infinite values"):
            ws.analyze_recording(path, settings)
        assert started == [2]  # the same pool, started once
    finally:
        workers.drop_shared_pool()
