"""atomic.py: outputs that follow the umask, no writing through planted links, one writer per output."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_cellseg.atomic import open_output, output_lock, write_text_atomic
from napari_cellseg.errors import CellsegError

posix = pytest.mark.skipif(os.name != "posix", reason="modes, symbolic links and pids as on POSIX")


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix
def test_outputs_follow_the_umask(tmp_path, umask_022):
    """mkstemp's 0600 used to reach every submission, label TIFF and checkpoint."""
    from napari_cellseg.model.checkpoint import save_checkpoint
    from napari_cellseg.io.images import write_labels
    from napari_cellseg.model.network import ModelConfig, build_model

    write_text_atomic(tmp_path / "results.json", "[]")
    write_labels(tmp_path / "labels.tif", np.ones((16, 16), np.int32))
    config = ModelConfig(arch="resnet18", class_names=["a"])
    save_checkpoint(tmp_path / "last.pt", build_model(config), config)
    assert {p.name: _mode(p) for p in tmp_path.iterdir()} == {"results.json": 0o644, "labels.tif": 0o644,
                                                               "last.pt": 0o644}
    os.umask(0o077)
    write_text_atomic(tmp_path / "private.json", "[]")
    assert _mode(tmp_path / "private.json") == 0o600


@posix
@pytest.mark.parametrize("mode", ["wb", "ab", "rb+"])
def test_open_output_never_writes_through_a_symbolic_link(tmp_path, mode):
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file")
    link = tmp_path / "out.partial.jsonl"
    link.symlink_to(victim)
    with pytest.raises(CellsegError, match="symbolic link"):
        open_output(link, mode)
    assert victim.read_text() == "someone else's file"


@posix
def test_open_output_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "out.partial.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(CellsegError, match="not a plain file"):
        open_output(fifo, "ab")


def test_open_output_modes(tmp_path):
    path = tmp_path / "log"
    with open_output(path, "wb") as f:
        f.write(b"one\n")
    with open_output(path, "ab") as f:
        f.write(b"two\n")
    with open_output(path, "rb+") as f:
        assert f.readline() == b"one\n"
        f.truncate(4)
    with open_output(path, "wb") as f:  # truncates
        f.write(b"x")
    assert path.read_bytes() == b"x"


@posix
def test_output_lock_refuses_a_live_writer_and_takes_over_a_dead_ones(tmp_path):
    out = tmp_path / "r.json"
    with output_lock(out) as lock:
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(CellsegError, match=r"another napari-cellseg process \(pid"):
            with output_lock(out):
                pass
    assert not lock.exists()  # removed on exit
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(dead.stdout.strip())  # a writer killed with -9 leaves its lock behind
    with output_lock(out):
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_lock_of_an_output_in_a_new_folder(tmp_path):
    """(13) The lock was taken before the output's folder existed: [Errno 2] ... res.json.lock."""
    out = tmp_path / "new" / "res.json"
    with output_lock(out) as lock:
        assert lock == tmp_path / "new" / "res.json.lock" and lock.is_file()
    assert not lock.exists()


def test_a_lock_holding_a_non_ascii_digit_is_stale_not_a_crash(tmp_path):
    """``"\u00b2".isdigit()`` is true but ``int`` refuses it (issue 21, 15): a lock file holding it is stale."""
    out = tmp_path / "res.json"
    (tmp_path / "res.json.lock").write_text("\u00b2")
    os.utime(tmp_path / "res.json.lock", (0, 0))  # old: not one being written just now
    with output_lock(out) as lock:
        assert lock.read_text() == str(os.getpid())


def test_a_failed_write_names_the_target_not_the_temporary_file(tmp_path):
    """What the user sees comes from the error's file name: it is theirs, never ``.x.json.1a2b.tmp``."""
    (tmp_path / "x.json").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        write_text_atomic(tmp_path / "x.json", "{}")
    assert caught.value.filename == str(tmp_path / "x.json") and caught.value.filename2 is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
