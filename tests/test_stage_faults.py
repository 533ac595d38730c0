"""Write faults in every stage that writes (waves, spelling, intervene, summary, report).

Each stage runs in a subprocess on a copy of a finished smoke run whose outputs for that stage
were removed (so it has to write), once under a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored:
writes fail with EFBIG) and once with a full disk (every fsync of a file in the run directory
fails with ENOSPC). The promise: one line ``gptwaves: error: ...`` naming a path in the run
directory and the cause, a non-zero exit (no crash, no traceback), no temporary files left, and
every file that existed before unchanged.
"""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gptwaves.cli import main
from test_fuzz import COMMANDS, NOT_READ, no_figures, smoke  # noqa: F401 - the module's fixtures

SRC = str(Path(__file__).resolve().parents[1] / "src")

#: stage -> (outputs removed first, file-size limit in bytes: above the lock file and small files,
#: below the stage's larger outputs)
STAGES = {
    "waves": (("waves",), 20_000),
    "spelling": (("spelling",), 3_000),
    "intervene": (("interventions",), 3_000),
    "summary": (("summary.json",), 4_000),
    "report-as-is": (("report",), 100_000),
}

# Runs the CLI with a full disk: fsync of any file under the run directory fails with ENOSPC
# (every gptwaves writer fsyncs before its rename, so nothing reaches its final name).
ENOSPC_RUNNER = r"""
import errno, os, sys
run = os.path.realpath(sys.argv[1])
real_fsync = os.fsync
def fsync(fd):
    try:
        where = os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        where = ""
    if where.startswith(run + os.sep):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)
os.fsync = fsync
from gptwaves.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _limited(limit: int):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def _env(corpus: str) -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=SRC,
                GPTWAVES_CORPUS=corpus, PYTHONWARNINGS="ignore")


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _run_without_stage_output(smoke, tmp_path, stage):
    """A copy of the smoke run with the stage's own output removed (so the stage writes again)."""
    run = tmp_path / "run"
    shutil.copytree(smoke, run, ignore=NOT_READ)
    for rel in STAGES[stage][0]:
        p = run / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return run


@pytest.mark.parametrize("fault", ["file-size-limit", "disk-full"])
@pytest.mark.parametrize("stage", list(STAGES))
def test_write_fault_in_stage(smoke, tmp_path, stage, fault):  # noqa: F811
    limit = STAGES[stage][1]
    run = _run_without_stage_output(smoke, tmp_path, stage)
    before = digests(run)
    argv = COMMANDS[stage](str(run))
    env = _env(os.environ["GPTWAVES_CORPUS"])
    if fault == "file-size-limit":
        proc = subprocess.run([sys.executable, "-m", "gptwaves", *argv], env=env, capture_output=True, text=True,
                              timeout=300, preexec_fn=_limited(limit))
        cause = "File too large"
    else:
        proc = subprocess.run([sys.executable, "-c", ENOSPC_RUNNER, str(run), *argv], env=env, capture_output=True,
                              text=True, timeout=300)
        cause = "No space left on device"
    err = proc.stderr.strip()
    assert proc.returncode > 0, (proc.returncode, err[-3000:])  # not 0, not a signal (-11: segfault)
    assert len(err.splitlines()) == 1 and err.startswith("gptwaves: error:"), err[-3000:]
    assert "Traceback" not in err and "internal error" not in err
    assert cause in err and str(run) in err, err
    assert [p for p in run.rglob("*") if p.name.endswith(".tmp")] == []
    after = digests(run)
    assert {k: after.get(k) for k in before} == before  # earlier results intact (new files may exist)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
@pytest.mark.parametrize("stage", list(STAGES))
def test_unwritable_folder_in_stage(smoke, tmp_path, capsys, monkeypatch, no_figures, stage, code):  # noqa: F811
    """Read-only file system and no permission (in-process: os.open refuses to create files in
    the run directory; tests run as root, where chmod would not stop the writes)."""
    run = _run_without_stage_output(smoke, tmp_path, stage)
    before = digests(run)
    real_open = os.open

    def fake_open(path, flags, *a, **kw):
        p = Path(os.fsdecode(path)).absolute()
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and run in p.parents and p.name != ".lock":
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    rc = main(COMMANDS[stage](str(run)))
    err = capsys.readouterr().err.strip()
    assert rc > 0
    assert len(err.splitlines()) == 1 and err.startswith("gptwaves: error:"), err
    assert os.strerror(code) in err and str(run) in err, err
    monkeypatch.undo()
    assert [p for p in run.rglob("*") if p.name.endswith(".tmp")] == []
    after = digests(run)
    assert {k: after.get(k) for k in before} == before


def test_unexpected_exception_is_one_line(monkeypatch, capsys):
    """cli.main's safety net: a bug gives one line (and the traceback with GPTWAVES_DEBUG=1)."""
    import gptwaves.stages.summary as ssum

    def boom(run):
        raise TypeError("unexpected\nsecond line")

    monkeypatch.setattr(ssum, "write_summary", boom)
    monkeypatch.delenv("GPTWAVES_DEBUG", raising=False)
    assert main(["summary", "--run", "/nonexistent/run"]) == 3
    err = capsys.readouterr().err.strip()
    assert err == ("gptwaves: error: internal error (TypeError: unexpected); re-run with GPTWAVES_DEBUG=1 for "
                   "the traceback and please report it")
    monkeypatch.setenv("GPTWAVES_DEBUG", "1")
    with pytest.raises(TypeError):
        main(["summary", "--run", "/nonexistent/run"])
