"""Hostile inputs: each gets a clear one-line error and damages nothing."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptwaves.cli import main
from gptwaves.errors import GptwavesError
from gptwaves.hf import safe_name
from gptwaves.io import RunLock, check_run_dir, safe_child


def _one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("gptwaves: error:"), err
    assert "Traceback" not in err
    return err


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Evil.marker}",))


def test_code_running_pickle_checkpoint_is_refused_by_record(tmp_path, capsys, corpus_path):
    Evil.marker = str(tmp_path / "PWNED")
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": Evil(), "model_args": {}}, ckpt)
    err = _one_line_error(capsys, ["record", "--run", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                                   "--corpus", str(corpus_path), "--quiet"])
    assert "refusing" in err
    assert not (tmp_path / "PWNED").exists()
    with open(tmp_path / "raw.pkl", "wb") as f:
        pickle.dump(Evil(), f)
    _one_line_error(capsys, ["record", "--run", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "raw.pkl"),
                             "--corpus", str(corpus_path), "--quiet"])
    assert not (tmp_path / "PWNED").exists()


def test_tampered_checkpoint_of_a_run_is_detected(train_tiny, capsys, tmp_path):
    run = train_tiny("run").run_dir
    w = sorted((run / "checkpoints").glob("*.safetensors"))[-1]
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x40
    w.write_bytes(bytes(data))
    it = int(w.stem.split("_")[1])
    err = _one_line_error(capsys, ["record", "--run", str(run), "--checkpoint", str(it), "--samples", "2",
                                   "--steps", "4", "--quiet"])
    assert "sha256" in err
    assert not list((run / "recordings").glob("*.h5")) if (run / "recordings").exists() else True


@pytest.mark.parametrize("content,needle", [
    (b"", "empty"),
    (b"aaaaaaaaaaaa", "fewer than 2 distinct"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"caf\xe9 au lait", "UTF-8"),
])
def test_corpus_edge_cases(tmp_path, capsys, content, needle):
    p = tmp_path / "c.txt"
    p.write_bytes(content)
    err = _one_line_error(capsys, ["data", "--corpus", str(p)])
    assert needle in err


def test_huge_single_line_corpus_is_fine(tmp_path, capsys):
    import random

    rnd = random.Random(0)
    text = " ".join(rnd.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(400_000))  # ~2.4 MB, one line
    p = tmp_path / "one_line.txt"
    p.write_text(text)
    assert main(["data", "--corpus", str(p), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"characters": %d' % len(text) in out
    assert main(["train", "--preset", "smoke", "--corpus", str(p), "--out", str(tmp_path / "r"), "--max-iters", "3",
                 "--checkpoints", "0,3", "--n-embd", "16", "--quiet"]) == 0


def test_run_directory_tricks():
    for bad in ("", "   ", "a\x00b", "/"):
        with pytest.raises(GptwavesError):
            check_run_dir(bad)
    base = Path("/tmp/gptwaves-test-base")
    assert safe_child(base, "recordings/x.h5") == (base / "recordings/x.h5").resolve()
    for bad in ("../escape", "/etc/passwd", "a/../../b"):
        with pytest.raises(GptwavesError):
            safe_child(base, bad)
    # names derived from outside input never contain path separators
    for name in ("../../etc/passwd", "/abs/model", "EleutherAI/pythia-70m"):
        s = safe_name(name, "step1000/../x")
        assert "/" not in s and ".." not in s.replace("...", "")


def test_dotdot_run_dir_resolves_to_the_named_folder(tmp_path, capsys, corpus_path):
    (tmp_path / "a").mkdir()
    trick = tmp_path / "a" / ".." / "b"
    assert main(["train", "--preset", "smoke", "--corpus", str(corpus_path), "--out", str(trick), "--max-iters", "2",
                 "--checkpoints", "0,2", "--n-embd", "16", "--block-size", "16", "--quiet"]) == 0
    assert (tmp_path / "b" / "run.json").is_file()
    assert not (tmp_path / "a" / "run.json").exists()


def test_second_writer_of_a_run_directory_is_refused(tmp_path, capsys, corpus_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from gptwaves.io import RunLock; "
        f"l = RunLock({str(run)!r}).acquire(); print('locked', flush=True); sys.stdin.read()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # holds the lock until killed, however long
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = _one_line_error(capsys, ["train", "--preset", "smoke", "--corpus", str(corpus_path), "--out", str(run),
                                       "--max-iters", "2", "--quiet"])
        assert "in use" in err
        assert not (run / "run.json").exists()  # nothing written by the refused process
    finally:
        holder.kill()
        holder.wait()  # dead, so its lock is released
    with RunLock(run):  # released when the holder died
        pass


# ------------------------------------------------------------------ bench budget on bad runs


def _budget_run(trained_run, tmp_path) -> Path:
    """A copy of the session's tiny run with a reproduce record, a recording and a spelling result."""
    import json
    import shutil

    src = trained_run[0]
    run = tmp_path / "run"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns(".lock"))
    (run / "reproduce.json").write_text(json.dumps({"train": {"max_iters": 20, "batch_size": 4, "precision": "fp32"},
                                                    "timings": {"train": 1.0, "record": 0.5}}))
    (run / "recordings").mkdir(exist_ok=True)
    (run / "recordings" / "iter_0000020.json").write_text(json.dumps({"samples": 2, "steps": 8, "prompt_len": 1}))
    (run / "spelling").mkdir(exist_ok=True)
    (run / "spelling" / "iter_0000020.json").write_text(json.dumps({"settings": {"samples": 4, "length": 8}}))
    return run


def _set(rel, obj):
    import json

    return lambda run: (run / rel).write_text(obj if isinstance(obj, str) else json.dumps(obj))


BUDGET_DAMAGE = {
    "no-run": lambda run: __import__("shutil").rmtree(run),
    "no-reproduce-record": lambda run: (run / "reproduce.json").unlink(),
    "reproduce-truncated": _set("reproduce.json", '{"train": {"max_iters": 2'),
    "reproduce-list": _set("reproduce.json", [1, 2]),
    "reproduce-timings-string": _set("reproduce.json", {"timings": "fast"}),
    "reproduce-max_iters-huge": _set("reproduce.json", {"train": {"max_iters": 10**40, "batch_size": 4}}),
    "reproduce-history-not-objects": _set("reproduce.json", {"timings": {}, "timings_history": [3]}),
    "no-checkpoints": lambda run: [p.unlink() for p in (run / "checkpoints").glob("iter_*.json")],
    "checkpoint-config-missing": lambda run: _set(
        sorted((run / "checkpoints").glob("iter_*.json"))[-1].relative_to(run), {"iteration": 20})(run),
    "recording-list": _set("recordings/iter_0000020.json", [1]),
    "recording-samples-huge": _set("recordings/iter_0000020.json", {"samples": 10**30, "steps": 8, "prompt_len": 1}),
    "spelling-settings-string": _set("spelling/iter_0000020.json", {"settings": "x"}),
    "spelling-length-string": _set("spelling/iter_0000020.json", {"settings": {"samples": 4, "length": "8"}}),
}


@pytest.mark.parametrize("damage", sorted(BUDGET_DAMAGE))
def test_bench_budget_on_a_missing_or_corrupt_run_is_one_line(trained_run, tmp_path, capsys, monkeypatch, damage):
    import gptwaves.bench.budget as budget

    monkeypatch.setattr(budget, "matmul_peak", lambda *a, **k: 1.0)  # the run's files are the point here
    run = _budget_run(trained_run, tmp_path)
    BUDGET_DAMAGE[damage](run)
    code = main(["bench", "budget", "--run", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and err and err[-1].startswith("gptwaves: error:"), err
    assert all(line.startswith("machine:") or "budget" in line for line in err[:-1]), err  # progress lines only
    assert "bench failed" not in err[-1] and "internal error" not in err[-1]


def test_bench_budget_on_a_good_run_and_garbage_metrics_lines(trained_run, tmp_path, capsys, monkeypatch):
    import gptwaves.bench.budget as budget

    monkeypatch.setattr(budget, "matmul_peak", lambda *a, **k: 1.0)
    run = _budget_run(trained_run, tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('[1, 2]\n{"iter": 3, "kind": "train", "tokens_per_s": "fast"}\n{"iter"\n')
    assert main(["bench", "budget", "--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "budget training" in out and "bench failed" not in out


# ------------------------------------------------------------------ option ranges before any allocation


def test_channel_ranges_are_checked_against_the_width_before_expansion():
    import tracemalloc

    from gptwaves.analysis import intervention as ia

    tracemalloc.start()
    for spec in ("1-999999999", "0,5-" + "9" * 40, "999999999999-1000000000000", "3," + "7" * 5000):
        with pytest.raises(GptwavesError, match="out of range"):
            ia.parse_channel_spec(spec, 64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20  # no expanded range (1-999999999 as a list of ints is ~36 GB)
    assert ia.parse_channel_spec("0-3,60-63", 64).tolist() == [0, 1, 2, 3, 60, 61, 62, 63]


@pytest.mark.parametrize("mode", ["scale=1e308", "scale=1e7", "clamp=-1e300", "clamp=1e999", "scale=nan", "scale=inf"])
def test_edits_that_overflow_are_refused_up_front(mode):
    from gptwaves.analysis import intervention as ia

    with pytest.raises(GptwavesError, match="finite number"):
        ia.parse_mode(mode)
    assert ia.parse_mode("scale=1e6")["value"] == 1e6


@pytest.mark.parametrize("argv", [
    ["--control-seed", "-1"], ["--mode", "scale=1e308"], ["--channels", "1-999999999"], ["--batch-size", "1e3"],
    ["--seed", "-5"], ["--temperature", "nan"], ["--samples", "9" * 5000], ["--channels", ""], ["--tap", " "],
])
def test_intervene_options_are_one_line(trained_run, capsys, argv):
    opts = {"--run": str(trained_run[0]), "--tap": "blocks.0.hook_resid_post", "--channels": "0-3",
            "--mode": "ablate", "--samples": "4"}
    opts.update(zip(argv[::2], argv[1::2]))
    err = _one_line_error(capsys, ["intervene", *[x for kv in opts.items() for x in kv], "--quiet"])
    assert "internal error" not in err and "Usage" not in err
