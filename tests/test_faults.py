"""Injected faults: write failures (disk full, file-size limit, read-only folder), kills at every
write boundary of training, tampered artefacts, stale temporary files, CSV formulas.

The promise under test: one line on stderr starting ``gptwaves: error:``, a non-zero exit, no
traceback, earlier results intact, no temporary files left behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import gptwaves.checkpoint as ckpt_mod
import gptwaves.io as gio
import gptwaves.train as train_mod
from gptwaves.cli import main
from gptwaves.errors import GptwavesError, WriteError
from gptwaves.io import (atomic_path, atomic_write_bytes, atomic_write_json, confined_file, csv_safe,
                         read_json, sweep_stale, write_csv, write_guard)
from gptwaves.train import read_metrics

from conftest import tiny_config

SRC = str(Path(__file__).resolve().parents[1] / "src")
pytestmark = pytest.mark.usefixtures("one_thread_module")


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("gptwaves: error:"), err
    assert "Traceback" not in err
    return err


def tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------ the writers themselves


def test_atomic_writers_turn_oserror_into_one_line_and_keep_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"old": 1})
    before = target.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gio.os, "fsync", full)
    with pytest.raises(WriteError, match=r"cannot write .*a\.json: No space left on device") as ei:
        atomic_write_json(target, {"new": 2})
    assert "\n" not in str(ei.value)
    with pytest.raises(WriteError, match="No space left"):
        with atomic_path(tmp_path / "b.h5") as tmp:
            tmp.write_bytes(b"x" * 100)
    assert target.read_bytes() == before
    assert not (tmp_path / "b.h5").exists()
    assert tmp_files(tmp_path) == []


def test_atomic_path_reports_errors_raised_by_the_writer(tmp_path):
    with pytest.raises(WriteError, match=r"cannot write .*x\.png: File too large"):
        with atomic_path(tmp_path / "x.png"):
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    assert list(tmp_path.iterdir()) == []


def test_write_guard(tmp_path):
    with pytest.raises(WriteError, match=r"cannot write .*log: Read-only file system"):
        with write_guard(tmp_path / "log"):
            raise OSError(errno.EROFS, "whatever")
    with pytest.raises(GptwavesError, match="kept"):  # other errors pass through unchanged
        with write_guard(tmp_path / "log"):
            raise GptwavesError("kept")


def test_folder_creation_failure_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="Not a directory|not a folder"):
        atomic_write_bytes(tmp_path / "file" / "sub" / "a.bin", b"1")


# ------------------------------------------------------------------ read-only run folder


@pytest.fixture
def read_only(monkeypatch):
    """Make every folder under ``root`` read-only for os.open/mkdir (tests run as root, where
    chmod does not stop writes); reads (builtin open) still work."""
    roots: list[Path] = []
    real_open, real_mkdir = os.open, os.mkdir

    def under(p) -> bool:
        p = Path(os.fsdecode(p)).absolute()
        return any(r == p or r in p.parents for r in roots)

    def fake_open(path, flags, *a, **kw):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *a, **kw)

    def fake_mkdir(path, *a, **kw):
        if under(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_mkdir(path, *a, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return roots


def test_read_only_run_folder(tmp_path, capsys, corpus_path, read_only):
    run = tmp_path / "run"
    argv = ["train", "--preset", "smoke", "--corpus", str(corpus_path), "--out", str(run), "--max-iters", "4",
            "--checkpoints", "0,2", "--n-embd", "16", "--block-size", "16", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    before = digests(run)
    read_only.append(run)
    err = one_line_error(capsys, argv[:-1] + ["--max-iters", "6", "--quiet"])
    assert "Read-only file system" in err and str(run) in err
    err = one_line_error(capsys, ["record", "--run", str(run), "--checkpoint", "last", "--samples", "2",
                                  "--steps", "4", "--quiet"])
    assert "Read-only file system" in err
    read_only.append(tmp_path / "new")
    err = one_line_error(capsys, argv[:5] + ["--out", str(tmp_path / "new" / "run")] + argv[7:])
    assert "Read-only file system" in err
    assert digests(run) == before


# ------------------------------------------------------------------ disk full while training


def test_disk_full_while_training_keeps_earlier_results(tmp_path, capsys, corpus_path, monkeypatch):
    run = tmp_path / "run"
    argv = ["train", "--preset", "smoke", "--corpus", str(corpus_path), "--out", str(run),
            "--checkpoints", "0,2,4", "--n-embd", "16", "--block-size", "16", "--device", "cpu", "--quiet",
            "--state-interval", "1000"]
    assert main(argv + ["--max-iters", "2"]) == 0
    before = digests(run)
    calls = {"n": 0}
    real_fsync = os.fsync

    def full_after(fd):  # the disk fills up part-way through the next checkpoint
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(gio.os, "fsync", full_after)
    monkeypatch.setattr(train_mod.os, "fsync", full_after)
    err = one_line_error(capsys, argv + ["--max-iters", "4"])
    assert "No space left on device" in err and str(run) in err
    assert tmp_files(run) == []
    after = digests(run)
    for name in ("run.json", "checkpoints/iter_0000000.json", "checkpoints/iter_0000002.json",
                 "checkpoints/iter_0000002.safetensors", "state/state.json"):
        assert after[name] == before[name], name
    assert not (run / "checkpoints" / "iter_0000004.json").exists()
    monkeypatch.undo()
    assert main(argv + ["--max-iters", "4"]) == 0  # the disk has room again: finishes normally
    capsys.readouterr()
    evals = [r["iter"] for r in read_metrics(run) if r["kind"] == "eval"]
    assert evals == [0, 2, 4]


# ------------------------------------------------------------------ file-size limit (subprocess)


def _limited(limit: int):
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=SRC)
    env.pop("GPTWAVES_CORPUS", None)
    return env


def _check_one_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.strip()
    assert proc.returncode not in (0, -11, 139), (proc.returncode, err)
    assert proc.returncode > 0
    assert len(err.splitlines()) == 1 and err.startswith("gptwaves: error:"), err
    assert "Traceback" not in err
    return err


def test_file_size_limit_in_train_and_record(tmp_path, corpus_path):
    run = tmp_path / "run"
    base = [sys.executable, "-m", "gptwaves", "train", "--preset", "smoke", "--corpus", str(corpus_path),
            "--out", str(run), "--n-embd", "16", "--block-size", "16",
            "--device", "cpu", "--quiet"]
    ok = subprocess.run(base + ["--max-iters", "3"], env=_env(), capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr
    before = digests(run)
    weights = (run / "checkpoints" / "iter_0000003.safetensors").stat().st_size
    # weights fit, the training state (weights + two AdamW moments) does not
    p = subprocess.run(base + ["--max-iters", "12"], env=_env(), capture_output=True,
                       text=True, timeout=600, preexec_fn=_limited(weights + 4096))
    err = _check_one_line(p)
    assert "File too large" in err and "state" in err
    assert tmp_files(run) == []
    after = digests(run)
    assert {k: v for k, v in after.items() if k in before and k != "metrics.jsonl"} == \
        {k: v for k, v in before.items() if k != "metrics.jsonl"}
    assert not (run / "checkpoints" / "iter_0000010.json").exists()
    # recording: the parts fit, the assembled HDF5 file does not -> refused before writing it
    rec = [sys.executable, "-m", "gptwaves", "record", "--run", str(run), "--checkpoint", "3",
           "--samples", "16", "--batch-size", "4", "--steps", "32", "--device", "cpu", "--quiet"]
    p = subprocess.run(rec, env=_env(), capture_output=True, text=True, timeout=600,
                       preexec_fn=_limited(150_000))
    err = _check_one_line(p)
    assert "File too large" in err and "iter_0000003.h5" in err
    assert tmp_files(run) == [] and not list(run.rglob("*.h5"))
    assert digests(run / "checkpoints") == {k[len("checkpoints/"):]: v for k, v in before.items()
                                           if k.startswith("checkpoints/")}
    # the finished parts stay for resuming; without the limit the recording completes
    p = subprocess.run(rec, env=_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert (run / "recordings" / "iter_0000003.h5").is_file()
    assert not list((run / "recordings").glob(".*parts-*"))


HDF5_FAULT = r"""
import resource, sys
from pathlib import Path
import torch
import gptwaves.record as R
from gptwaves.model import GPT, GPTConfig
from gptwaves.sample import SamplingConfig
torch.manual_seed(0)
m = GPT(GPTConfig(block_size=16, vocab_size=10, n_layer=2, n_head=2, n_embd=32, dropout=0.0)).eval()
meta = {"iteration": 0, "weights_sha256": "0" * 64, "config": m.config.to_dict()}
spec = R.RecordSpec(samples=64, steps=32, prompt="a", taps=tuple(m.tap_names), sampling=SamplingConfig(),
                    batch_size=int(sys.argv[2]))
R.check_space = lambda *a: None   # let HDF5 itself run into the limit
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    R.record(m, meta, list("abcdefghij"), spec, Path(sys.argv[1]) / "r.h5", progress=False)
except R.GptwavesError as e:
    print("ERROR", e)
"""


@pytest.mark.parametrize("batch", [64, 4])  # one in-memory batch; parts on disk
def test_hdf5_assembly_failure_does_not_crash(tmp_path, batch):
    p = subprocess.run([sys.executable, "-c", HDF5_FAULT, str(tmp_path), str(batch)], env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])  # was a segfault (139)
    assert p.stderr.strip() == "", p.stderr[-2000:]
    assert p.stdout.startswith("ERROR cannot write") and "File too large" in p.stdout
    assert len(p.stdout.strip().splitlines()) == 1
    assert not (tmp_path / "r.h5").exists() and tmp_files(tmp_path) == []


# ------------------------------------------------------------------ kills at every write boundary


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing on the way catches it."""


def _kill_at(monkeypatch, boundary: str, at_iter: int):
    """Raise Killed at one write boundary of the checkpoint at ``at_iter``."""
    if boundary == "after_weights":  # weights written, no metrics row yet
        real = train_mod.MetricsLog.write

        def write(self, row, sync=False):
            if row.get("kind") == "eval" and row["iter"] == at_iter:
                raise Killed
            return real(self, row, sync)
        monkeypatch.setattr(train_mod.MetricsLog, "write", write)
    elif boundary == "after_row":  # row written, no state yet
        real = train_mod.save_state

        def save_state(run_dir, it, *a):
            if it == at_iter:
                raise Killed
            return real(run_dir, it, *a)
        monkeypatch.setattr(train_mod, "save_state", save_state)
    elif boundary == "after_state":  # state written, no checkpoint JSON yet
        real = ckpt_mod.atomic_write_json

        def write_json(path, obj):
            if Path(path).name == f"iter_{at_iter:07d}.json":
                raise Killed
            return real(path, obj)
        monkeypatch.setattr(ckpt_mod, "atomic_write_json", write_json)


KW = dict(max_iters=20, checkpoints=(0, 10, 20), state_interval=7, dropout=0.1)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, corpus):
    run = tmp_path_factory.mktemp("ref") / "run"
    train_mod.train(tiny_config(**KW), corpus, run)
    return run


def _evals(run: Path) -> list[tuple]:
    return [(r["iter"], r["train_loss"], r["val_loss"]) for r in read_metrics(run) if r["kind"] == "eval"]


@pytest.mark.parametrize("boundary", ["after_weights", "after_row", "after_state"])
@pytest.mark.parametrize("at_iter", [10, 20])
def test_kill_at_each_write_boundary_is_repaired(tmp_path, corpus, reference_run, monkeypatch, boundary, at_iter):
    run = tmp_path / "run"
    _kill_at(monkeypatch, boundary, at_iter)
    with pytest.raises(Killed):
        train_mod.train(tiny_config(**KW), corpus, run)
    monkeypatch.undo()
    assert not (run / "checkpoints" / f"iter_{at_iter:07d}.json").exists()
    res = train_mod.train(tiny_config(**KW), corpus, run)
    assert res.iterations == 20
    again = train_mod.train(tiny_config(**KW), corpus, run)
    assert again.resumed_from == 20  # not "resumed from 14" forever
    assert _evals(run) == _evals(reference_run)  # every row exactly once, same values
    for it in (0, 10, 20):
        a = json.loads((run / "checkpoints" / f"iter_{it:07d}.json").read_text())
        b = json.loads((reference_run / "checkpoints" / f"iter_{it:07d}.json").read_text())
        assert a["weights_sha256"] == b["weights_sha256"] and a["val_loss"] == b["val_loss"]


def test_old_write_order_layout_is_repaired(tmp_path, corpus, reference_run):
    """Older versions wrote the checkpoint JSON first: a kill right after it lost the evaluation
    row for good and left the state behind ("resumed from 14" on every re-run)."""
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    for p in run.rglob(".lock"):
        p.unlink()
    # the state as it was at iteration 14, and no eval row for 20
    train_mod.train(tiny_config(**{**KW, "max_iters": 14}), corpus, tmp_path / "at14")
    shutil.rmtree(run / "state")
    shutil.copytree(tmp_path / "at14" / "state", run / "state")
    rows = [r for r in read_metrics(run) if r["iter"] <= 14]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = train_mod.train(tiny_config(**KW), corpus, run)
    assert res.resumed_from == 14
    assert train_mod.train(tiny_config(**KW), corpus, run).resumed_from == 20
    assert _evals(run) == _evals(reference_run)


SIGKILL_SCRIPT = r"""
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
import gptwaves.checkpoint as C
import gptwaves.train as T
from gptwaves.config import TrainConfig
from gptwaves.corpus import Corpus
real = C.atomic_write_json
def write_json(path, obj):
    if Path(path).name == "iter_0000010.json":
        os.kill(os.getpid(), signal.SIGKILL)   # state and row on disk, JSON not yet
    return real(path, obj)
C.atomic_write_json = write_json
cfg = TrainConfig(preset="test", n_layer=2, n_head=2, n_embd=16, block_size=16, dropout=0.1, batch_size=8,
                  learning_rate=1e-2, min_lr=1e-2, max_iters=20, eval_iters=2, log_interval=5, state_interval=7,
                  checkpoints=(0, 10, 20), progress=False, device="cpu")
T.train(cfg, Corpus.load(sys.argv[1]), Path(sys.argv[2]))
"""


def test_sigkill_before_the_checkpoint_json(tmp_path, corpus_path, corpus, reference_run):
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", SIGKILL_SCRIPT, str(corpus_path), str(run)], env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == -9, p.stderr
    assert json.loads((run / "state" / "state.json").read_text())["iteration"] == 10
    assert not (run / "checkpoints" / "iter_0000010.json").exists()
    res = train_mod.train(tiny_config(**KW), corpus, run)
    assert res.resumed_from == 10
    assert _evals(run) == _evals(reference_run)


# ------------------------------------------------------------------ paths read from artefacts


def test_confined_file(tmp_path):
    base = tmp_path / "ck"
    base.mkdir()
    (base / "w.bin").write_bytes(b"12345")
    assert confined_file(base, "w.bin", "weights", 10) == (base / "w.bin").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x", "", None, 3, "a\x00b"):
        with pytest.raises(GptwavesError):
            confined_file(base, bad, "weights")
    with pytest.raises(GptwavesError, match="too large"):
        confined_file(base, "w.bin", "weights", 4)
    os.symlink("/dev/zero", base / "zero")
    with pytest.raises(GptwavesError):
        confined_file(base, "zero", "weights")
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", base / "link")
    with pytest.raises(GptwavesError, match="outside"):
        confined_file(base, "link", "weights")  # a symbolic link out of the folder
    os.mkfifo(base / "fifo")
    with pytest.raises(GptwavesError, match="FIFO"):
        confined_file(base, "fifo", "weights")


@pytest.fixture
def small_run(tmp_path, corpus):
    run = tmp_path / "run"
    train_mod.train(tiny_config(max_iters=4, checkpoints=(0, 4)), corpus, run)
    return run


def _edit_json(path: Path, **changes):
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("field,value,needle", [
    ("weights_file", "../../../../../../etc/passwd", "outside"),
    ("weights_file", "/dev/zero", "outside"),
    ("iteration", 7, "disagrees"),
    ("iteration", "=HYPERLINK(1)", "non-negative integer"),
    ("vocab", ["a", "a"], "vocabulary"),
    ("val_loss", "NaN", "finite"),
    ("config", [1], "config"),
])
def test_tampered_checkpoint_json_is_refused(small_run, capsys, field, value, needle):
    j = small_run / "checkpoints" / "iter_0000004.json"
    _edit_json(j, **{field: value})
    with pytest.raises(GptwavesError, match=needle):
        ckpt_mod.list_checkpoints(small_run / "checkpoints")
    err = one_line_error(capsys, ["record", "--run", str(small_run), "--checkpoint", "last", "--samples", "2",
                                  "--steps", "4", "--quiet"])
    assert str(j) in err


def test_checkpoint_json_that_is_a_list(small_run):
    j = small_run / "checkpoints" / "iter_0000004.json"
    j.write_text("[1, 2]")
    with pytest.raises(GptwavesError, match="not an object"):
        ckpt_mod.list_checkpoints(small_run / "checkpoints")


def test_permuted_vocabulary_is_refused(small_run, corpus):
    j = small_run / "checkpoints" / "iter_0000004.json"
    d = json.loads(j.read_text())
    d["vocab"] = d["vocab"][::-1]
    j.write_text(json.dumps(d))
    with pytest.raises(GptwavesError, match="vocabulary differs"):
        train_mod.train(tiny_config(max_iters=4, checkpoints=(0, 4)), corpus, small_run)


@pytest.mark.parametrize("change,needle", [
    ({"file": "../../../../etc/passwd"}, "not a state file name"),
    ({"file": "state_0000003.safetensors"}, "disagrees"),
    ({"iteration": -1}, "non-negative"),
    ({"sha256": None}, "sha256"),
])
def test_tampered_state_pointer_is_refused(small_run, corpus, change, needle):
    _edit_json(small_run / "state" / "state.json", **change)
    with pytest.raises(GptwavesError, match=needle):
        train_mod.train(tiny_config(max_iters=6, checkpoints=(0, 4)), corpus, small_run)


def test_tampered_run_json(small_run, corpus):
    for bad, needle in ((b"[]", "not a dict"), (b'{"format": "gptwaves-run", "corpus_sha256": 5, "train": {}}',
                                                  "corpus_sha256")):
        (small_run / "run.json").write_bytes(bad)
        with pytest.raises(GptwavesError, match=needle):
            train_mod.read_run_info(small_run)


def test_corpus_fifo_and_device_are_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    # "at once" is an event, not a stopwatch: the command must refuse the FIFO without ever opening
    # it. A watcher holds the write end open-pending; its open returns exactly when a reader opens
    # the FIFO (and it closes at once, so a reader sees end-of-file and cannot hang the test).
    opened = threading.Event()

    def watch():
        fd = os.open(fifo, os.O_WRONLY)
        opened.set()
        os.close(fd)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    err = one_line_error(capsys, ["data", "--corpus", str(fifo)])
    opened_by_command = opened.is_set()
    release = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # let the watcher's open return
    watcher.join(timeout=60)  # a hang guard only: the open above completes it at once
    os.close(release)
    assert "FIFO" in err and not opened_by_command and not watcher.is_alive()
    err = one_line_error(capsys, ["data", "--corpus", "/dev/zero"])
    assert "not a regular file" in err


def test_corpus_path_is_stored_resolved(tmp_path, corpus_path, monkeypatch, capsys):
    shutil.copy(corpus_path, tmp_path / "c.txt")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "smoke", "--corpus", "c.txt", "--out", "run", "--max-iters", "2",
                 "--checkpoints", "0,2", "--n-embd", "16", "--block-size", "16", "--device", "cpu", "--quiet"]) == 0
    stored = json.loads((tmp_path / "run" / "run.json").read_text())["corpus_path"]
    assert Path(stored).is_absolute() and Path(stored) == (tmp_path / "c.txt").resolve()


def test_read_json_refuses_special_and_huge_files(tmp_path):
    with pytest.raises(GptwavesError, match="not a regular file"):
        read_json("/dev/zero")
    big = tmp_path / "big.json"
    big.write_text("[" + "0," * 100 + "0]")
    with pytest.raises(GptwavesError, match="too large"):
        read_json(big, max_bytes=50)
    with pytest.raises(GptwavesError, match="not a dict"):
        read_json(big, expect=dict)


def test_metrics_rows_that_are_not_objects_are_skipped(small_run):
    path = small_run / "metrics.jsonl"
    good = path.read_text().splitlines()
    expected = [json.loads(line) for line in good]
    assert len(expected) >= 2 and expected == read_metrics(small_run)  # the untouched log reads back whole
    junk = ['[1, 2]', '{"iter": "x", "kind": "eval"}', '"text"', 'null', '{"iter": -1, "kind": "eval"}',
            '{"iter": 2, "kind": "other"}', '{"iter": true, "kind": "train"}', '{"iter": 5, "kind": "train", "lr": -1}',
            '{"iter": 3']
    late = {"iter": 9, "kind": "train", "loss": 1.5, "lr": 0.01, "tokens_per_s": 10.0}
    # junk before, between and after the valid rows, and a valid row after the junk
    lines = [junk[0], good[0], *junk[1:5], *good[1:], *junk[5:], json.dumps(late), junk[-1]]
    path.write_text("\n".join(lines) + "\n")
    # every valid row is kept, unchanged and in order; every invalid one is dropped
    assert read_metrics(small_run) == [*expected, late]


# ------------------------------------------------------------------ stale temporary files


def test_sweep_stale_removes_leftovers_of_killed_runs_only(tmp_path):
    rec = tmp_path / "recordings"
    rec.mkdir()
    old_tmp = tmp_path / ".run.json.abc123.tmp"
    old_tmp.write_text("x")
    nested_tmp = tmp_path / "checkpoints" / ".iter_0000010.safetensors.xyz.tmp"
    nested_tmp.parent.mkdir()
    nested_tmp.write_text("x")
    keep = tmp_path / "notes.tmp"  # not one of ours (no leading dot)
    keep.write_text("x")
    finished = rec / ".iter_0000010.parts-aaaa"
    finished.mkdir()
    (rec / "iter_0000010.h5").write_bytes(b"h5")
    (rec / "iter_0000010.json").write_text(json.dumps({"settings_hash": "aaaa"}))
    resumable = rec / ".iter_0000020.parts-bbbb"
    resumable.mkdir()
    (resumable / "batch_00000.npz").write_bytes(b"x")
    (resumable / ".batch_00001.q1.npz.tmp").write_bytes(b"x")
    past = gio.PROCESS_START - 3600
    for p in (old_tmp, nested_tmp, keep, finished, resumable, resumable / ".batch_00001.q1.npz.tmp"):
        os.utime(p, (past, past))
    fresh = tmp_path / ".summary.json.new.tmp"  # written by this process: kept
    fresh.write_text("x")
    removed = set(sweep_stale(tmp_path))
    assert removed == {old_tmp, nested_tmp, finished, resumable / ".batch_00001.q1.npz.tmp"}
    assert keep.exists() and fresh.exists() and (resumable / "batch_00000.npz").exists()
    os.utime(resumable, (past, past))
    assert sweep_stale(tmp_path, parts_max_age_s=60) == [resumable]


def test_training_sweeps_stale_temporary_files(small_run, corpus):
    leftover = small_run / "state" / ".state.json.k1ll3d.tmp"
    leftover.write_text("{")
    past = gio.PROCESS_START - 60  # before this process started: a killed run's leftover
    os.utime(leftover, (past, past))
    train_mod.train(tiny_config(max_iters=4, checkpoints=(0, 4)), corpus, small_run)
    assert not leftover.exists()


# ------------------------------------------------------------------ CSV formulas


def test_csv_safe_and_write_csv(tmp_path):
    assert csv_safe("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    for s in ("+cmd", "-cmd|x", "@SUM(A1)", "\tx", "\rx"):
        assert csv_safe(s).startswith("'")
    for s in ("-1.5", "+3", "1e-3", "abc", "", "iter_0000010"):
        assert csv_safe(s) == s
    assert csv_safe(-1.5) == -1.5 and csv_safe(None) is None
    path = write_csv(tmp_path / "t.csv", ["name", "value"], [["=1+1", -2.5], ["ok", None], ["@x", float("nan")]])
    assert path.read_text() == "name,value\n'=1+1,-2.5\nok,\n'@x,\n"
