"""Atomic file writes: a crash or cancel never leaves a half-written file behind.

Also the one safe way to open an output we append to or rewrite in place (``open_output``: never
through a planted symbolic link) and a lock that tells a second writer of the same output to wait
(``output_lock``). Files are created with the permissions the umask gives, like any other tool's.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import CellsegError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A process killed outright (SIGKILL, power loss) cannot remove its temporary file; the next
    successful write of ``path`` removes such leftovers (those older than its own, so a concurrent
    writer's file is left alone). The temporary file is created new (``O_EXCL``, so no planted link
    is followed) with mode 0666 less the umask: outputs get the permissions the user expects.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_file(path)
    started = tmp_path.stat().st_mtime
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _remove_leftovers(path, started)
    except OSError as exc:  # the message names the user's file, not the hidden temporary one
        if exc.filename is not None and Path(exc.filename) == tmp_path and exc.errno is not None:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _new_file(path: Path) -> Path:
    """Create an empty, new temporary file beside ``path`` (the umask applies, unlike mkstemp's 0600)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "could not create a temporary file", str(path.parent))


def _remove_leftovers(path: Path, before: float) -> None:
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < before:
                old.unlink()


def open_output(path: str | os.PathLike, mode: str) -> IO[bytes]:
    """Open an output file we write in place (``"wb"``, ``"ab"`` or ``"rb+"``) without following a
    symbolic link and only if it is a plain file: a link planted at a predictable name (such as an
    export's partial file) must not make us overwrite or truncate the file it points to."""
    flags = {"wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "rb+": os.O_RDWR}[mode]
    path = Path(path)
    if path.is_symlink():
        raise CellsegError(f"{path} is a symbolic link; refused to write through it (remove it and run again)")
    # O_TRUNC only after checking what was opened: open without it, truncate below
    try:
        fd = os.open(path, (flags & ~os.O_TRUNC) | _NOFOLLOW | _NONBLOCK | _BINARY, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CellsegError(
                f"{path} is a symbolic link; refused to write through it (remove it and run again)"
            ) from None
        if exc.errno == errno.ENXIO:  # a FIFO or socket with nobody at the other end
            raise CellsegError(
                f"{path} is not a plain file; refused to write to it (remove it and run again)"
            ) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CellsegError(f"{path} is not a plain file; refused to write to it (remove it and run again)")
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, mode)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<path>.lock`` (created with ``O_EXCL``, holding our pid) while ``path`` is produced.

    A second process writing the same output is refused at once with one line instead of failing
    after all its work; a lock left by a process that no longer runs (killed) is taken over.
    """
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)  # an output in a new folder: the lock goes there first
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _BINARY, 0o666)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is None and _age(lock) < 10:  # just created, its pid not written yet
                holder = -1
            if holder is not None and _running(holder):
                raise CellsegError(
                    f"{path} is being written by another napari-cellseg process (pid {holder}, lock file {lock}); "
                    "wait for it to finish, or choose another output"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale: its writer was killed
    else:
        raise CellsegError(f"{path}: could not take the lock file {lock}; remove it if no export is running")
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if _lock_holder(lock) == os.getpid():
                lock.unlink()


def _lock_holder(lock: Path) -> int | None:
    try:
        if lock.is_symlink():
            return None
        text = lock.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _age(lock: Path) -> float:
    try:
        return time.time() - lock.lstat().st_mtime
    except OSError:
        return float("inf")


def _running(pid: int) -> bool:
    if pid in (-1, os.getpid()) or os.name == "nt":  # Windows' os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


def folder_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` could not be created or written to, or None: checked before any work starts.

    Walks up to the nearest existing ancestor, which must be a folder we may write in (a path under
    a file, or in a read-only folder, would otherwise fail only when the first result is saved).
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        if existing == folder:
            return f"{folder} is a file, not a folder"
        return f"cannot create the folder {folder}: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write in {existing}: permission denied"
    return None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
