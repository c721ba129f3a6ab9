"""Generic GUI helpers: messages in the GUI's words, short paths, run sizes, narrow docks."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np

from napari_cellseg.plugin.session import (
    DOCK_WIDTH, folder_size, gui_words, human_size, keep_narrow, one_line, short_name, short_path,
)
from napari_cellseg.plugin.export_widget import ExportWidget
from napari_cellseg.plugin.segment_widget import SegmentWidget
from napari_cellseg.plugin.train_widget import TrainWidget
from napari_cellseg.errors import DatasetError


def test_os_errors_say_what_happened_to_which_file():
    missing = one_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/cells"))
    assert missing == "/data/cells: not found"
    assert one_line(PermissionError(errno.EACCES, "Permission denied", "/x")) == "/x: you have no permission to use it"
    assert "Errno" not in one_line(OSError(errno.ENOSPC, "No space left on device"))
    assert one_line(DatasetError("val/: no sample folders in it\nmore detail")) == "val/: no sample folders in it"


def test_short_names_keep_both_ends():
    name = "06350c7cc618be442c15706db7a68e91f313758d224de4608f9b960106d4f9ca"
    short = short_name(name)
    assert len(short) <= 28 and short.startswith("06350c7cc618") and short.endswith("06d4f9ca")
    assert short_name("test_0.tif") == "test_0.tif"


def test_messages_name_no_command_line_options():
    text = gui_words("the loss became nan at epoch 1, step 2. Lower the learning rate or train without AMP.")
    assert "mixed precision to 'off'" in text and "AMP." not in text
    assert "--" not in one_line(ValueError("AMP off: fp32 is faster here (use --amp to force bf16)"))


def test_short_paths_and_sizes(tmp_path):
    assert short_path(Path("/home/me/runs/a/best.pt")) == str(Path("a", "best.pt"))
    sizes = (512, 4_500, 390_000_000, 1_234_000_000)
    assert [human_size(n) for n in sizes] == ["512 bytes", "4 kB", "390 MB", "1.2 GB"]
    (tmp_path / "last.pt").write_bytes(b"x" * 3000)
    (tmp_path / "best.pt").write_bytes(b"x" * 1000)
    assert folder_size(tmp_path) == 4000 and folder_size(tmp_path / "nowhere") == 0


def test_long_names_do_not_widen_a_dock(make_napari_viewer, qtbot, tmp_path):
    # before: a long layer name or path in a status line made a dock need 1532-1587 px
    viewer = make_napari_viewer()
    long = "a_folder_name_much_longer_than_any_dock_is_wide_" * 4
    viewer.add_image(np.zeros((8, 8)), name=long)
    train, segment, export = TrainWidget(viewer), SegmentWidget(viewer), ExportWidget(viewer)  # narrowed in __init__
    train.dataset.value = tmp_path / long
    for widget in (train, segment, export):
        widget.status.value = f"saved /{long}/{long}/last.pt"
        widget.native.show()
    qtbot.wait(20)
    assert all(w.native.minimumSizeHint().width() < DOCK_WIDTH for w in (train, segment, export))
    assert str(tmp_path / long) in train.dataset.line_edit.native.toolTip()
    keep_narrow(train)  # a second call (the main dock narrows its tabs too) changes nothing
    assert train.native.minimumSizeHint().width() < DOCK_WIDTH


def test_report_logs_unexpected_errors_with_their_traceback(caplog, monkeypatch):
    import logging

    from napari_cellseg.plugin.session import report
    from napari_cellseg.errors import DatasetError

    monkeypatch.delenv("NAPARI_CELLSEG_DEBUG", raising=False)
    caplog.set_level(logging.INFO, logger="napari_cellseg")
    try:
        raise RuntimeError("CUDA error: an illegal memory access\nlong details")
    except RuntimeError as exc:
        assert report(exc) == "CUDA error: an illegal memory access"  # the user sees one line
    [bug] = caplog.records
    assert bug.levelno == logging.ERROR and bug.exc_info is not None  # the log keeps the traceback
    caplog.clear()
    assert report(DatasetError("train/: folder not found")) == "train/: folder not found"
    assert [r.levelno for r in caplog.records] == [logging.INFO] and caplog.records[0].exc_info is None
    caplog.clear()
    monkeypatch.setenv("NAPARI_CELLSEG_DEBUG", "1")  # every error with its traceback
    report(DatasetError("train/: folder not found"))
    assert caplog.records[0].levelno == logging.ERROR and caplog.records[0].exc_info is not None


def test_workers_leave_qt_pool_threads_free_for_qts_own_image_conversion(qtbot):
    """A frozen window: the GUI thread waited (holding the GIL) for a free pool thread to convert an
    image while a training and a segmenting worker filled the 2-thread pool of a 2-core machine."""
    import threading

    from qtpy.QtCore import QThreadPool

    from napari_cellseg.plugin import session

    pool, release = QThreadPool.globalInstance(), threading.Event()
    before = pool.maxThreadCount()
    try:
        pool.setMaxThreadCount(2)
        widget = type("W", (), {})()
        workers = [session.run(widget, lambda: iter([release.wait(10)]), on_yield=lambda _: None) for _ in range(2)]
        qtbot.waitUntil(lambda: pool.activeThreadCount() >= 2, timeout=5000)
        # room for both workers and the free threads (not active < max: in a full run, other tests' work
        # and Qt's own conversions may hold the free threads for a moment, which is what they are for)
        assert pool.maxThreadCount() >= len(workers) + session.FREE_POOL_THREADS
    finally:
        release.set()
        for worker in workers:
            qtbot.waitUntil(lambda w=worker: not w.is_running, timeout=10_000)
        pool.setMaxThreadCount(before)
