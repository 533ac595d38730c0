"""CLI (data, train): one-line errors on bad input, run-folder protection, divergence."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gptwaves.cli import main

TINY = ["--preset", "smoke", "--n-layer", "2", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "8", "--eval-iters", "2", "--max-iters", "12", "--device", "cpu", "--quiet"]


def assert_one_line_error(rc: int, err: str, *needles: str) -> str:
    assert rc != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gptwaves: error:"), err
    for n in needles:
        assert re.search(n, lines[0], re.IGNORECASE), (n, lines[0])
    return lines[0]


def run_main(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def bad_corpora(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 20)
    (d / "latin1.txt").write_bytes("Ça va très bien, merci.\n".encode("latin-1") * 20)
    (d / "one.txt").write_text("z" * 500)
    (d / "folder").mkdir()
    return {
        "missing": (d / "missing.txt", "not found"),
        "empty": (d / "empty.txt", "empty"),
        "binary": (d / "binary.bin", "binary|NUL"),
        "non-utf8": (d / "latin1.txt", "UTF-8"),
        "one-character": (d / "one.txt", "distinct"),
        "directory": (d / "folder", "directory"),
    }


KINDS = ["missing", "empty", "binary", "non-utf8", "one-character", "directory"]


@pytest.mark.parametrize("kind", KINDS)
def test_data_bad_corpus(capsys, bad_corpora, kind):
    path, needle = bad_corpora[kind]
    rc, out, err = run_main(capsys, "data", "--corpus", path)
    assert_one_line_error(rc, err, needle)
    assert out == ""


@pytest.mark.parametrize("kind", KINDS)
def test_train_bad_corpus(capsys, tmp_path, bad_corpora, kind):
    path, needle = bad_corpora[kind]
    out_dir = tmp_path / "run"
    rc, out, err = run_main(capsys, "train", *TINY, "--out", out_dir, "--corpus", path)
    assert_one_line_error(rc, err, needle)
    assert not out_dir.exists()


def test_data_json_counts(capsys, corpus_path, synthetic_text):
    rc, out, err = run_main(capsys, "data", "--corpus", corpus_path, "--json")
    assert rc == 0 and err == ""
    info = json.loads(out)
    words = [w.lower() for w in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", synthetic_text)]
    n_train = int(0.9 * len(synthetic_text))
    train_words = re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", synthetic_text[:n_train])
    assert info["characters"] == len(synthetic_text)
    assert info["vocab_size"] == len(set(synthetic_text))
    assert info["vocabulary"] == "".join(sorted(set(synthetic_text)))
    assert info["words"] == len(words)
    assert info["distinct_words"] == len(set(words))
    assert info["train_characters"] == n_train
    assert info["val_characters"] == len(synthetic_text) - n_train
    assert info["lexicon_size"] == len({w.lower() for w in train_words})
    assert info["is_tiny_shakespeare"] is False
    assert Path(info["path"]) == corpus_path
    # the human-readable form works too
    rc, out, _ = run_main(capsys, "data", "--corpus", corpus_path)
    assert rc == 0 and f"{len(synthetic_text):,}" in out


def test_data_uses_env_corpus(capsys, monkeypatch, corpus_path, synthetic_text):
    monkeypatch.setenv("GPTWAVES_CORPUS", str(corpus_path))
    rc, out, _ = run_main(capsys, "data", "--json")
    assert rc == 0 and json.loads(out)["characters"] == len(synthetic_text)


def test_train_then_different_settings_refused(capsys, tmp_path, corpus_path, one_thread):
    out_dir = tmp_path / "run"
    rc, out, err = run_main(capsys, "train", *TINY, "--out", out_dir, "--corpus", corpus_path)
    assert rc == 0, err
    assert "trained" in out
    run_json = (out_dir / "run.json").read_bytes()
    listing = sorted(p.name for p in (out_dir / "checkpoints").iterdir())
    rc, out, err = run_main(capsys, "train", *TINY, "--n-embd", "32", "--out", out_dir, "--corpus", corpus_path)
    assert_one_line_error(rc, err, "different settings", "n_embd")
    rc, out, err = run_main(capsys, "train", *TINY, "--seed", "7", "--out", out_dir, "--corpus", corpus_path)
    assert_one_line_error(rc, err, "different settings", "seed")
    other = tmp_path / "other.txt"
    other.write_text(corpus_path.read_text() + "extra line\n")
    rc, out, err = run_main(capsys, "train", *TINY, "--out", out_dir, "--corpus", other)
    assert_one_line_error(rc, err, "different corpus")
    assert (out_dir / "run.json").read_bytes() == run_json
    assert sorted(p.name for p in (out_dir / "checkpoints").iterdir()) == listing
    # a larger --max-iters is not a different run: it continues
    rc, out, err = run_main(capsys, "train", *TINY, "--max-iters", "15", "--out", out_dir, "--corpus", corpus_path)
    assert rc == 0, err
    assert "resumed from 12" in out


def test_non_run_folder_refused(capsys, tmp_path, corpus_path):
    out_dir = tmp_path / "photos"
    out_dir.mkdir()
    (out_dir / "holiday.jpg").write_bytes(b"\xff\xd8 not really")
    rc, out, err = run_main(capsys, "train", *TINY, "--out", out_dir, "--corpus", corpus_path)
    assert_one_line_error(rc, err, "not empty", "no gptwaves run")
    assert sorted(p.name for p in out_dir.iterdir()) == ["holiday.jpg"]


def test_foreign_run_json_refused(capsys, tmp_path, corpus_path):
    out_dir = tmp_path / "x"
    out_dir.mkdir()
    (out_dir / "run.json").write_text('{"format": "something-else"}')
    rc, out, err = run_main(capsys, "train", *TINY, "--out", out_dir, "--corpus", corpus_path)
    assert_one_line_error(rc, err, "not a gptwaves run")
    (out_dir / "run.json").write_text("{broken")
    rc, out, err = run_main(capsys, "train", *TINY, "--out", out_dir, "--corpus", corpus_path)
    assert_one_line_error(rc, err, "corrupt")


def test_out_is_a_file_refused(capsys, tmp_path, corpus_path):
    f = tmp_path / "file"
    f.write_text("x")
    rc, out, err = run_main(capsys, "train", *TINY, "--out", f, "--corpus", corpus_path)
    assert_one_line_error(rc, err, "not a directory")


def test_diverged_training_is_one_line_error(capsys, tmp_path, corpus_path, one_thread, monkeypatch):
    """A loss that becomes NaN mid-training (here injected after 5 steps; an absurd learning rate
    is refused by the settings check before training) stops with one line, keeping checkpoints."""
    from gptwaves.model import GPT

    orig, calls = GPT.forward, []

    def nan_after_5(self, *a, **kw):
        logits, loss, taps = orig(self, *a, **kw)
        if loss is not None and self.training:
            calls.append(1)
            if len(calls) > 5:
                loss = loss * float("nan")
        return logits, loss, taps

    monkeypatch.setattr(GPT, "forward", nan_after_5)
    out_dir = tmp_path / "run"
    rc, out, err = run_main(capsys, "train", *TINY, "--max-iters", "30", "--learning-rate", "1e-3",
                            "--grad-clip", "0", "--out", out_dir, "--corpus", corpus_path)
    line = assert_one_line_error(rc, err, "diverged", r"nan|inf")
    assert "learning-rate" in line
    ck = sorted(p.name for p in (out_dir / "checkpoints").iterdir())
    assert "iter_0000000.json" in ck and "iter_0000000.safetensors" in ck
    assert (out_dir / "run.json").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--n-embd", "10", "--n-head", "3"], "divisible"),
        (["--preset", "nonsense"], "unknown preset"),
        (["--max-iters", "-5"], "max-iters"),
        (["--batch-size", "0"], "batch-size"),
        (["--checkpoints", "1,x"], "checkpoints"),
    ],
)
def test_bad_settings(capsys, tmp_path, corpus_path, args, needle):
    rc, out, err = run_main(capsys, "train", *TINY, *args, "--out", tmp_path / "r", "--corpus", corpus_path)
    assert_one_line_error(rc, err, needle)
    assert not (tmp_path / "r").exists()


def _gptwaves_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("gptwaves")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gptwaves"]


def test_console_script_errors_in_subprocess(tmp_path, bad_corpora):
    """The installed entry point: non-zero exit, one stderr line, no traceback."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    path, needle = bad_corpora["binary"]
    p = subprocess.run([*_gptwaves_cmd(), "data", "--corpus", str(path)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert_one_line_error(p.returncode, p.stderr, needle)
    path, needle = bad_corpora["non-utf8"]
    p = subprocess.run([sys.executable, "-m", "gptwaves", "train", *TINY, "--out", str(tmp_path / "r"),
                        "--corpus", str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert_one_line_error(p.returncode, p.stderr, needle)
