"""Small file utilities: atomic writes, checksums, run-directory locks and path checks.

Every file gptwaves writes goes through :func:`atomic_write_bytes` (write to a temporary file
in the same folder, fsync, then ``os.replace``), so a reader never sees a half-written file and
an interrupted job never damages an existing result.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import hashlib
import json
import math
import numbers
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import CorruptArtefactError, GptwavesError, WriteError

#: When this process started (files and folders older than this are not ours; see sweep_stale).
PROCESS_START = time.time()

#: Upper bounds for files read back (a tampered name pointing at /dev/zero or a huge file must
#: not exhaust memory). JSON artefacts are small; corpora are text read whole into memory.
MAX_JSON_BYTES = 256 << 20
MAX_TEXT_BYTES = 1 << 30


def describe_oserror(e: BaseException) -> str:
    """The cause of an OSError in a few words ("No space left on device"), never a traceback."""
    if isinstance(e, OSError) and isinstance(e.errno, int) and e.errno > 0:
        return os.strerror(e.errno)  # h5py puts a many-line report in strerror: not that
    if isinstance(e, OSError) and e.strerror:
        return " ".join(str(e.strerror).split())[:200]
    text = " ".join(str(e).split())  # h5py/HDF5 messages are long: keep the errno part if any
    low = text.lower()
    for code in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EIO):
        if f"errno = {code}" in low or os.strerror(code).lower() in low:
            return os.strerror(code)
    return text[:200] or type(e).__name__


def write_error(path: str | os.PathLike, e: BaseException, what: str = "") -> WriteError:
    """A one-line :class:`WriteError` naming ``path`` and the cause of ``e``."""
    return WriteError(f"cannot write {what + ' ' if what else ''}{os.fspath(path)}: {describe_oserror(e)}"
                      .replace("\n", " "))


@contextlib.contextmanager
def write_guard(path: str | os.PathLike, what: str = "") -> Iterator[None]:
    """Turn any ``OSError`` raised inside the block into a one-line :class:`WriteError` for ``path``.

    For writers that do not go through :func:`atomic_write_bytes`/:func:`atomic_path`
    (appending to a log, ``mkdir``)::

        with write_guard(run_dir / "metrics.jsonl"):
            f.write(line)
    """
    try:
        yield
    except GptwavesError:
        raise
    except OSError as e:
        raise write_error(path, e, what) from None


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(f"cannot write into {folder}: it exists and is not a folder") from None
    except OSError as e:
        raise write_error(folder, e, "folder") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone makes files private (0600)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename).

    A failed write (disk full, file-size limit, read-only folder ...) raises a one-line
    :class:`~gptwaves.errors.WriteError` naming ``path``; the temporary file is removed and an
    existing ``path`` is left untouched.
    """
    path = Path(path)
    _mkdir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy types, paths and non-finite floats into plain JSON values (NaN/inf -> null:
    browsers reject NaN)."""
    from .jsonable import jsonable

    return jsonable(obj)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    For writers (h5py, matplotlib) that want a filename rather than bytes.
    An ``OSError`` raised while writing (in the block or on the final fsync/rename) becomes a
    one-line :class:`~gptwaves.errors.WriteError` naming ``path``; the temporary file is always
    removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    _mkdir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp", dir=path.parent)
        os.fchmod(fd, _FILE_MODE)
        os.close(fd)
    except OSError as e:
        raise write_error(path, e) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except GptwavesError:
        raise
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


#: JSON nested deeper than this is not something gptwaves writes (its files are a few levels deep).
MAX_JSON_DEPTH = 64

#: The folder every read must stay inside while :func:`confine_reads` is active (None: anywhere).
_READ_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("gptwaves_read_root", default=None)


@contextlib.contextmanager
def confine_reads(root: str | os.PathLike) -> Iterator[Path]:
    """While active, every read through this module's readers (:func:`read_json`,
    :func:`read_bytes_bounded`, :func:`read_text_file`, :func:`check_regular_file`) must resolve
    to a file inside ``root``: a symbolic link out of a run directory (a figure linked to
    ``/etc/passwd``, a waves folder linked in from another run) is refused in one line."""
    token = _READ_ROOT.set(Path(os.path.realpath(root)))
    try:
        yield _READ_ROOT.get()
    finally:
        _READ_ROOT.reset(token)


def check_inside_root(path: str | os.PathLike, what: str = "file") -> None:
    """Refuse ``path`` when it resolves outside the folder of an active :func:`confine_reads`."""
    root = _READ_ROOT.get()
    if root is None:
        return
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        raise CorruptArtefactError(f"{what} {path} leads outside the run directory {root} (a symbolic link "
                                   f"to {real}); refusing to read it")


def _kind(mode: int) -> str:
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "special")


def read_bytes_bounded(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, with one-line errors.

    The file is opened without blocking (``O_NONBLOCK``: a FIFO never hangs) and checked on the
    open descriptor (``fstat``: no race between the check and the read), so a FIFO, device,
    socket or folder is refused, and never more than ``max_bytes`` are read (``/dev/zero``, a
    file that grows). Inside :func:`confine_reads` the path must resolve inside the run.
    """
    p = Path(path)
    check_inside_root(p, what)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise GptwavesError(f"{what} not found: {p}") from None
    except OSError as e:
        raise GptwavesError(f"cannot read {what} {p}: {describe_oserror(e)}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise GptwavesError(f"{what} path is a directory, not a file: {p}")
        if not stat.S_ISREG(st.st_mode):
            raise GptwavesError(f"{what} {p} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise GptwavesError(f"{what} {p} is too large ({st.st_size:,} bytes > {max_bytes:,})")
        chunks, n = [], 0
        while n <= max_bytes:
            block = os.read(fd, min(1 << 20, max_bytes + 1 - n))
            if not block:
                break
            chunks.append(block)
            n += len(block)
        if n > max_bytes:
            raise GptwavesError(f"{what} {p} is too large (over {max_bytes:,} bytes)")
        return b"".join(chunks)
    except OSError as e:
        raise GptwavesError(f"cannot read {what} {p}: {describe_oserror(e)}") from None
    except MemoryError:
        raise GptwavesError(f"{what} {p} does not fit in memory") from None
    finally:
        os.close(fd)


def json_depth_ok(obj: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``obj`` is nested at most ``limit`` levels deep (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, (dict, list)):
            if d > limit:
                return False
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return True


def parse_json_bytes(data: bytes, path: str | os.PathLike, what: str = "file") -> Any:
    """Decode JSON with one-line errors: not UTF-8, not JSON, integers of thousands of digits,
    nesting deeper than :data:`MAX_JSON_DEPTH`."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CorruptArtefactError(f"{what} is corrupt (not valid JSON): {path}: "
                                   f"{' '.join(str(e).split())[:200]}") from None
    except ValueError as e:  # Python's limit on int digits (a 5000-digit number)
        raise CorruptArtefactError(f"{what} {path} holds an absurd number: {' '.join(str(e).split())[:120]}") \
            from None
    if not json_depth_ok(obj):
        raise CorruptArtefactError(f"{what} {path} is nested deeper than {MAX_JSON_DEPTH} levels: not a "
                                   "gptwaves file")
    return obj


def read_json(path: str | os.PathLike, what: str = "file", expect: type | None = None,
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file with one-line errors: missing, not a regular file (FIFOs and devices are
    refused without blocking), too big, not JSON, absurd numbers, too deeply nested.

    ``expect`` (e.g. ``dict``) also checks the type of the top-level value.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise GptwavesError(f"{what} not found: {path}")
    obj = parse_json_bytes(read_bytes_bounded(path, what, max_bytes), path, what)
    if expect is not None and not isinstance(obj, expect):
        raise CorruptArtefactError(
            f"{what} {path} holds a JSON {type(obj).__name__}, not a {expect.__name__}")
    return obj


def check_regular_file(path: str | os.PathLike, what: str = "file", max_bytes: int | None = None) -> int:
    """Refuse anything but an existing regular file of at most ``max_bytes``; return its size.

    FIFOs, devices (``/dev/zero``), sockets and folders are refused *before* they are opened, so
    reading never hangs and never fills memory.
    """
    p = Path(path)
    check_inside_root(p, what)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise GptwavesError(f"{what} not found: {p}") from None
    except OSError as e:
        raise GptwavesError(f"cannot read {what} {p}: {describe_oserror(e)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise GptwavesError(f"{what} path is a directory, not a file: {p}")
    if not stat.S_ISREG(st.st_mode):
        raise GptwavesError(f"{what} {p} is {_kind(st.st_mode)}, not a regular file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise GptwavesError(f"{what} {p} is too large ({st.st_size:,} bytes > {max_bytes:,})")
    return st.st_size


def confined_file(base: str | os.PathLike, name: Any, what: str = "file", max_bytes: int | None = None,
                  must_exist: bool = True) -> Path:
    """The file ``name`` (read from an artefact) inside folder ``base``, refusing anything else.

    ``name`` must be a non-empty string without NUL bytes; after resolving ``..`` and symbolic
    links it must lie inside ``base``. With ``must_exist`` it must also be a regular file of at
    most ``max_bytes``. Errors are one line naming ``what`` and the offending name.
    """
    base = Path(base)
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CorruptArtefactError(f"{what}: invalid file name {name!r} (in {base})")
    child = (base / name).resolve()
    base_r = base.resolve()
    if base_r not in child.parents:
        raise CorruptArtefactError(f"{what}: file name {name!r} points outside {base}")
    if must_exist:
        check_regular_file(child, what, max_bytes)
    return child


def physical_memory() -> int:
    """Bytes of physical memory (a generous bound for files read whole into memory)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 64 << 30


# ---------------------------------------------------------------------------- stale files

def _is_our_tmp(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp")


def sweep_stale(folder: str | os.PathLike, *, recursive: bool = True, parts_max_age_s: float | None = None,
                older_than: float | None = None) -> list[Path]:
    """Remove temporary files (``.NAME.XXXX.tmp``) and orphaned ``.NAME.parts-*`` folders.

    Call it when a stage starts, while holding the run's :class:`RunLock` (a live writer of the
    same run would hold the lock, so what is left over is from a killed process). Only entries
    last modified before ``older_than`` (default: when this process started) are touched, so
    files this process is writing are never removed.

    A parts folder (``recordings/.iter_0000100.parts-HASH``) holds the finished batches of an
    interrupted recording; it is kept for resuming unless the recording it belongs to is already
    finished (``iter_0000100.h5`` + ``.json`` with the same settings hash), or it is older than
    ``parts_max_age_s`` seconds when that is given. Returns the removed paths.
    """
    folder = Path(folder)
    cutoff = PROCESS_START if older_than is None else older_than
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        try:
            st = p.lstat()
        except OSError:
            continue
        if st.st_mtime >= cutoff:
            continue
        if stat.S_ISREG(st.st_mode) and _is_our_tmp(p):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
        elif stat.S_ISDIR(st.st_mode) and p.name.startswith(".") and ".parts-" in p.name:
            stem, _, h = p.name[1:].rpartition(".parts-")
            side = folder / f"{stem}.json"
            finished = False
            if (folder / f"{stem}.h5").is_file() and side.is_file():
                with contextlib.suppress(GptwavesError, OSError):
                    meta = read_json(side, "recording metadata", dict)
                    finished = meta.get("settings_hash") == h
            old = parts_max_age_s is not None and time.time() - st.st_mtime > parts_max_age_s
            if finished or old:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            else:
                removed += sweep_stale(p, recursive=False, older_than=cutoff)
    if recursive:
        for p in entries:
            if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and p.exists():
                removed += sweep_stale(p, recursive=True, parts_max_age_s=parts_max_age_s, older_than=cutoff)
    return removed


# ---------------------------------------------------------------------------- CSV

_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run as a formula.

    Strings starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return get a leading ``'``
    (OWASP's advice), except plain numbers written as text (``-1.5``, ``+3``), which stay as they
    are. Numbers, None and booleans are returned unchanged.
    """
    if not isinstance(value, str):
        return value
    if value.startswith(_CSV_FORMULA_START):
        try:
            float(value)
            if value.strip() == value and value.lower().lstrip("+-") not in ("inf", "infinity", "nan"):
                return value
        except ValueError:
            pass
        return "'" + value
    return value


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV file atomically with every cell passed through :func:`csv_safe`.

    None becomes an empty cell; non-finite floats become empty cells too.
    """
    import csv
    import io as _io

    def cell(v: Any) -> Any:
        if v is None:
            return ""
        if isinstance(v, float) and not math.isfinite(v):
            return ""
        if isinstance(v, numbers.Number) and not isinstance(v, bool):
            return v
        return csv_safe(str(v))

    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_safe(str(h)) for h in header])
    for r in rows:
        w.writerow([cell(v) for v in r])
    return atomic_write_text(path, buf.getvalue())


def read_text_file(path: str | os.PathLike, what: str = "file",
                   max_bytes: int = MAX_TEXT_BYTES) -> tuple[str, bytes]:
    """Read a UTF-8 text file with one-line errors: missing, a directory, a FIFO or device, too
    large, empty, binary, not UTF-8.

    Returns (text, raw bytes).
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise GptwavesError(f"{what} file not found: {p}")
    data = read_bytes_bounded(p, what, max_bytes)
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
        _mkdir(self.run_dir)
        lock = self.run_dir / ".lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise WriteError(f"cannot write into run directory {self.run_dir}: {describe_oserror(e)}") from None
            raise write_error(lock, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GptwavesError(
                f"run directory {self.run_dir} is in use by another gptwaves process"
            ) from None
        with contextlib.suppress(OSError):  # the pid is informative only (a full disk must not stop us)
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
