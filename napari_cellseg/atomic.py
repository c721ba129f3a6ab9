"""Atomic file writes: a crash or cancel never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    A process killed outright (SIGKILL, power loss) cannot remove its temporary file; the next
    successful write of ``path`` removes such leftovers (those older than its own, so a concurrent
    writer's file is left alone).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    started = tmp_path.stat().st_mtime
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _remove_leftovers(path, started)
    finally:
        tmp_path.unlink(missing_ok=True)


def _remove_leftovers(path: Path, before: float) -> None:
    for old in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < before:
                old.unlink()


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
