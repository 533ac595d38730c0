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
