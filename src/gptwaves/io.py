"""Small file utilities: atomic writes, checksums, run-directory locks and path checks.

Every file gptwaves writes goes through :func:`atomic_write_bytes` (write to a temporary file
in the same folder, fsync, then ``os.replace``), so a reader never sees a half-written file and
an interrupted job never damages an existing result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import GptwavesError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private (0600)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays without importing numpy at module import time
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean_floats(obj: Any) -> Any:
    """Replace NaN/inf by None so the JSON is standard (browsers reject NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_floats(v) for v in obj]
    return obj


def to_jsonable(obj: Any) -> Any:
    """Convert numpy types, paths and non-finite floats into plain JSON values."""
    return _clean_floats(json.loads(json.dumps(obj, default=_json_default)))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    For writers (h5py, matplotlib) that want a filename rather than bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GptwavesError(f"{what} not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GptwavesError(f"{what} is corrupt (not valid JSON): {path}: {e}") from None


def read_text_file(path: str | os.PathLike, what: str = "file") -> tuple[str, bytes]:
    """Read a UTF-8 text file with one-line errors: missing, a directory, empty, binary, not UTF-8.

    Returns (text, raw bytes).
    """
    p = Path(path)
    if not p.exists():
        raise GptwavesError(f"{what} file not found: {p}")
    if p.is_dir():
        raise GptwavesError(f"{what} path is a directory, not a file: {p}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise GptwavesError(f"cannot read {what} {p}: {e.strerror}") from None
    if not data:
        raise GptwavesError(f"{what} file is empty: {p}")
    if b"\x00" in data:
        raise GptwavesError(f"{what} looks binary (contains NUL bytes), not text: {p}")
    try:
        return data.decode("utf-8"), data
    except UnicodeDecodeError as e:
        raise GptwavesError(f"{what} is not valid UTF-8 (byte {e.start}): {p}") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_run_dir(path: str | os.PathLike) -> Path:
    """Validate a user-given run directory and return it resolved.

    Refuses empty names, NUL bytes, and paths that resolve to the filesystem root or to an
    existing non-directory. ``..`` components are resolved (never joined blindly), so a run
    directory is always exactly the folder the user named.
    """
    s = os.fspath(path)
    if not s or not s.strip():
        raise GptwavesError("run directory name is empty")
    if "\x00" in s:
        raise GptwavesError("run directory name contains a NUL byte")
    p = Path(s).expanduser().resolve()
    if p == Path(p.anchor):
        raise GptwavesError(f"refusing to use the filesystem root as a run directory: {s}")
    if p.exists() and not p.is_dir():
        raise GptwavesError(f"run directory exists and is not a directory: {p}")
    return p


def safe_child(base: Path, name: str) -> Path:
    """Join ``name`` under ``base`` and refuse anything escaping it (``..``, absolute paths)."""
    child = (base / name).resolve()
    base_r = base.resolve()
    if child != base_r and base_r not in child.parents:
        raise GptwavesError(f"path {name!r} escapes the run directory {base}")
    return child


_HELD: dict[Path, int] = {}  # run dir -> nesting depth, for re-entrant locking in one process


class RunLock:
    """An exclusive, non-blocking advisory lock on a run directory (``DIR/.lock``).

    A second process that tries to write the same run directory gets a clear error instead of
    corrupting it. The lock is released automatically if the process dies. Re-entrant within
    one process (``reproduce`` holds it while calling ``train``, which takes it again).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir).resolve()
        self._fd: int | None = None
        self._nested = False

    def acquire(self) -> "RunLock":
        if _HELD.get(self.run_dir, 0) > 0:
            _HELD[self.run_dir] += 1
            self._nested = True
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GptwavesError(
                f"run directory {self.run_dir} is in use by another gptwaves process"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        _HELD[self.run_dir] = 1
        return self

    def release(self) -> None:
        if self._nested:
            _HELD[self.run_dir] -= 1
            self._nested = False
            return
        if self._fd is not None:
            _HELD.pop(self.run_dir, None)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
