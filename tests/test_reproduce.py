"""End to end: `gptwaves reproduce --preset smoke` (summary.json, report), and fault injection:
SIGKILL at random moments of every stage, re-run after each, and the final results equal an
uninterrupted run's (bit-identical weights and waves, identical statistics)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.slow

# smaller analysis sizes than the preset's defaults keep the suite fast; the pipeline is the same
ARGS = ["--preset", "smoke", "--record-samples", "8", "--record-steps", "48", "--spelling-samples", "120"]
SUMMARY_KEYS = {"preset", "corpus_sha256", "timings", "checkpoints", "findings", "settings", "versions"}


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    from conftest import SHARED_TINY_SHAKESPEARE, make_text

    if SHARED_TINY_SHAKESPEARE.is_file():
        return SHARED_TINY_SHAKESPEARE
    p = tmp_path_factory.mktemp("c") / "corpus.txt"
    p.write_text(make_text(200_000))
    return p


def _cmd(out: Path, corpus: Path, quiet: bool = True) -> list[str]:
    return [sys.executable, "-m", "gptwaves", "reproduce", *ARGS, "--corpus", str(corpus), "--out", str(out)] + (
        ["--quiet"] if quiet else [])


def _env() -> dict:
    # one thread: the suite runs on two workers, and a second thread per process would only contend
    return {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, corpus_file) -> Path:
    out = tmp_path_factory.mktemp("clean") / "run"
    r = subprocess.run(_cmd(out, corpus_file), capture_output=True, text=True, env=_env(),
                       timeout=1800)  # a hang guard only
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_bench_budget_of_the_finished_run(clean_run, capsys):
    """`gptwaves bench budget --run DIR`: every stage's measured time, the FLOP limits from the run's
    own files (window forwards past the context counted from the recordings' sizes)."""
    from gptwaves.bench.budget import recording_flops
    from gptwaves.bench.common import window_forward_flops
    from gptwaves.cli import main
    from gptwaves.model import GPT, GPTConfig

    assert main(["bench", "budget", "--run", str(clean_run), "--quick", "--notes"]) == 0
    out = capsys.readouterr().out
    for stage in ("training", "recordings", "spelling", "waves", "summary", "report", "total"):
        assert f"budget {stage}" in out
    from gptwaves import bench

    rows = {r["figure"].split(":")[0]: r for r in bench.run("budget", run_dir=clean_run, quick=True, raise_errors=True)}
    repro = json.loads((clean_run / "reproduce.json").read_text())
    assert rows["budget recordings"]["value"] == pytest.approx(repro["timings"]["record"])
    assert rows["budget training"]["baseline"] > 0 and rows["budget recordings"]["ratio"] > 0
    metas = [json.loads(p.read_text()) for p in sorted((clean_run / "recordings").glob("*.json"))]
    cfg = json.loads(sorted((clean_run / "checkpoints").glob("iter_*.json"))[-1].read_text())["config"]
    windows = sum(m["samples"] * max(0, m["prompt_len"] - 1 + m["steps"] - cfg["block_size"]) for m in metas)
    assert f"{windows} window forwards past the context" in rows["budget recordings"]["figure"].split(":")[1]
    model = GPT(GPTConfig.from_dict(cfg))
    one = metas[0]
    # the steps past the context cost one window forward each, the ones before one cached token each
    extra = recording_flops(model, one["samples"], one["prompt_len"], one["steps"] + 1) \
        - recording_flops(model, one["samples"], one["prompt_len"], one["steps"])
    assert extra == pytest.approx(window_forward_flops(model, one["samples"], cfg["block_size"]))
    assert main(["bench", "waves", "--run", str(clean_run)]) != 0  # --run is budget's only
    assert main(["bench", "budget", "--run", str(clean_run / "missing")]) > 0  # one line, no table
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gptwaves: error: ") and "not found" in err[-1] and "missing" in err[-1]


def test_reproduce_smoke_summary_and_report(clean_run):
    s = json.loads((clean_run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(s)
    assert s["preset"] == "smoke"
    for stage in ("train", "record", "waves", "spelling"):
        assert stage in s["timings"]
    repro = json.loads((clean_run / "reproduce.json").read_text())  # reproduce's own record: every stage
    assert {"train", "record", "waves", "spelling", "summary", "report", "total"} <= set(repro["timings"])
    its = [c["iteration"] for c in s["checkpoints"]]
    assert its == sorted(its) and its[0] == 0 and its[-1] == 200
    for c in s["checkpoints"]:
        assert c["val_loss"] > 0 and c["train_loss"] > 0
        for tap, w in c["waves"].items():
            assert 0 <= w["mean_abs_corr"] <= 1 and 0 < w["lambda_max_share"] <= 1 and w["participation_ratio"] >= 1
        sp = c["spelling"]
        for which in ("correct", "misspelled"):
            d = sp[which]
            assert {"mean", "var", "fano", "q", "fano_ci", "p_value", "verdict"} <= set(d)
            if d["fano"] is not None:
                assert abs(d["q"] - (d["fano"] - 1)) < 1e-12
        assert 0 <= sp["error_rate"] <= 1
        assert {"words", "cascade", "n_cut"} <= set(sp)
        for which in ("correct", "misspelled"):
            assert {"fano_ref", "excess", "null_median", "excess_p"} <= set(sp[which])
    assert s["checkpoints"][-1]["val_loss"] < s["checkpoints"][0]["val_loss"]
    f = s["findings"]
    assert "crossing_iteration" in f and [c["id"] for c in f["claims"]] == [1, 2, 3, 4, 5]
    assert s["format_version"] == 2
    for c in f["claims"]:
        for part in ("as_stated", "beyond_null"):
            assert c[part]["verdict"] in ("supported", "not supported", "inconclusive") and c[part]["text"]
    html = (clean_run / "report" / "index.html").read_text()
    assert "<html" in html.lower() and f["claims"][0]["claim"] in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)  # works offline
    assert not re.search(r"""url\(\s*["']?https?://""", html, re.I)


_ANNOUNCE = re.compile(r"^\[\d+/\d+\] (\w+) \(elapsed")


def _stage_kill(out: Path, corpus: Path, stage: str, rng: random.Random, expected_s: float) -> str:
    """Start reproduce, wait for the event "`stage` announced", SIGKILL it a random moment into the stage,
    and check that the kill landed inside it. Returns the stage the process was in when killed.

    The moment is a random share (1-12 %) of the stage's duration in the uninterrupted run, so the kill
    lands inside the stage unless this run is more than 8 times faster (the uninterrupted run may have
    shared the two cores with another test worker while this one runs alone: a factor of 2.5 has been
    seen); that it did is then checked from the process's own stage announcements, not assumed."""
    p = subprocess.Popen(_cmd(out, corpus, quiet=False), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, env=_env(), start_new_session=True)
    lines = []
    for line in p.stderr:  # ends when the process does (a hang is the outer test run's to catch)
        lines.append(line)
        if f"] {stage} (" in line:
            break
    assert lines and f"] {stage} (" in lines[-1], (
        f"reproduce never announced {stage} (rc {p.poll()}): {''.join(lines)[-2000:]}")
    time.sleep(rng.uniform(0.01, 0.12) * expected_s)
    os.killpg(p.pid, signal.SIGKILL)  # the group exists: the process cannot exit before it is reaped
    p.wait(timeout=120)  # a hang guard only
    lines += p.stderr.read().replace("\r", "\n").splitlines()  # what it printed before it died
    p.stderr.close()
    assert p.returncode == -signal.SIGKILL, f"reproduce ended by itself (rc {p.returncode}) before the kill"
    announced = [m.group(1) for m in map(_ANNOUNCE.match, (ln.strip() for ln in lines)) if m]
    return announced[-1]


@pytest.mark.parametrize("script,landed", [
    ("print('[1/6] train (elapsed 0 s)', file=sys.stderr, flush=True); time.sleep(600)", "train"),
    # the stage was over before the kill (both lines are written before the first is read): reported,
    # so the caller's `== stage` check fails
    ("print('[1/6] train (elapsed 0 s)\\n[2/6] record (elapsed 0 s)', file=sys.stderr, flush=True); "
     "time.sleep(600)", "record"),
])
def test_stage_kill_reports_where_it_landed(monkeypatch, tmp_path, script, landed):
    """The kill helper's own check, on a stand-in process that announces stages (no training)."""
    monkeypatch.setattr(sys.modules[__name__], "_cmd",
                        lambda out, corpus, quiet=True: [sys.executable, "-c", "import sys, time; " + script])
    assert _stage_kill(tmp_path, tmp_path, "train", random.Random(0), expected_s=0.0) == landed


def _datasets(path: Path) -> dict:
    out = {}
    with h5py.File(path) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def _strip(s: dict) -> dict:
    s = dict(s)
    for k in ("timings", "timings_history", "machine", "training", "corpus_path"):
        s.pop(k, None)
    return s


def test_sigkill_at_every_stage_then_resume_equals_clean_run(tmp_path, clean_run, corpus_file):
    rng = random.Random(1234)
    out = tmp_path / "run"
    timings = json.loads((clean_run / "reproduce.json").read_text())["timings"]
    for stage in ("train", "record", "waves", "spelling", "report"):
        assert _stage_kill(out, corpus_file, stage, rng, timings[stage]) == stage  # killed inside the stage
        # nothing half-written is ever visible under its final name
        for p in out.rglob("*"):
            assert not p.name.endswith(".tmp") or p.name.startswith("."), p
    r = subprocess.run(_cmd(out, corpus_file), capture_output=True, text=True, env=_env(),
                       timeout=1800)  # a hang guard only
    assert r.returncode == 0, r.stderr[-3000:]

    # checkpoints: bit-identical weights and metadata
    for a in sorted((clean_run / "checkpoints").iterdir()):
        b = out / "checkpoints" / a.name
        assert b.read_bytes() == a.read_bytes(), a.name
    # recordings: identical datasets (attributes carry a creation time)
    recs = sorted((clean_run / "recordings").glob("*.h5"))
    assert recs
    for a in recs:
        da, db = _datasets(a), _datasets(out / "recordings" / a.name)
        assert da.keys() == db.keys()
        for k in da:
            assert np.array_equal(da[k], db[k]), (a.name, k)
    # statistics: identical summary apart from timings
    sa = json.loads((clean_run / "summary.json").read_text())
    sb = json.loads((out / "summary.json").read_text())
    assert _strip(sa) == _strip(sb)
    assert (out / "report" / "index.html").is_file()


def test_an_invocation_stopped_in_a_stage_keeps_the_times_of_the_stages_it_finished(tmp_path, monkeypatch):
    """reproduce.json is written after every stage: an invocation stopped in the waves stage leaves the
    train and record times, and the next invocation carries them in ``timings_history`` (so that a
    published run's time budget counts them)."""
    import torch

    from conftest import make_text
    from gptwaves import reproduce as rp
    from gptwaves.stages import waves

    corpus = tmp_path / "c.txt"
    corpus.write_text(make_text(30000, seed=3))
    small = rp.AnalysisSettings(record_samples=4, record_steps=24, spelling_samples=24, repeat_seeds=1,
                                record_taps=("hook_embed", "blocks.1.hook_resid_post"))

    def stopped(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(waves, "waves_run", stopped)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(KeyboardInterrupt):
            rp.reproduce("smoke", corpus, tmp_path / "run", train_overrides={"max_iters": 10}, analysis=small,
                         device="cpu", progress=False)
        first = json.loads((tmp_path / "run" / "reproduce.json").read_text())
        assert set(first["timings"]) == {"train", "record"} and first["timings_history"] == []
        assert first["timings"]["train"] > 0 and first["timings"]["record"] > 0
        monkeypatch.undo()
        rp.reproduce("smoke", corpus, tmp_path / "run", train_overrides={"max_iters": 10}, analysis=small,
                     device="cpu", progress=False)
    finally:
        torch.set_num_threads(n)
    again = json.loads((tmp_path / "run" / "reproduce.json").read_text())
    assert again["timings_history"] == [first["timings"]]
    assert {"waves", "spelling", "summary", "report"} <= set(again["timings"])
