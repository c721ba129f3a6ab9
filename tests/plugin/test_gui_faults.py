"""Faults in the GUI: a worker error is one notification, the widget recovers, nothing is left behind.

- The dataset folder vanishes (or turns into a file) while the Train widget's worker is training:
  one plain error notification (no traceback notification, the worker never "errors"), the form
  comes back, the step already trained is kept in ``last.pt``, and a second run finishes.
- Ten start/cancel cycles of the Train widget leave no running worker, no busy pool thread, no
  extra Python thread and no growing memory.
- The Segment widget given a truncated or missing checkpoint: one line, Run usable again, and a
  good checkpoint at the same path then works.
"""

from __future__ import annotations

import gc
import shutil
import threading
import weakref
from pathlib import Path

import numpy as np
import psutil
import pytest
from napari.utils.notifications import ErrorNotification, NotificationSeverity, notification_manager
from qtpy.QtCore import QThreadPool
from superqt.utils._qthreading import WorkerBase

from conftest import quick, write_tiny_dataset, save_untrained
from napari_cellseg.plugin import train_widget
from napari_cellseg.training import engine
from napari_cellseg.plugin.session import Device, session_for
from napari_cellseg.plugin.segment_widget import SegmentWidget
from napari_cellseg.plugin.train_widget import TrainWidget

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def notes():
    """Every notification shown during the test, in order."""
    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


def error_lines(notes) -> list[str]:
    return [n.message for n in notes if n.severity == NotificationSeverity.ERROR]


def assert_no_traceback(notes, errored) -> None:
    """Errors reached the user as plain one-line notifications, never as an uncaught exception."""
    assert not errored, f"the worker raised: {errored!r}"
    assert not [n for n in notes if isinstance(n, ErrorNotification)], "an uncaught exception was shown"



def form(widget: TrainWidget) -> list:
    return [widget.dataset, widget.arch, widget.epochs, widget.batch_size, widget.lr, widget.device, widget.amp,
            widget.crop_size, widget.max_steps, widget.val_limit, widget.out_dir, widget.resume]


def start_and_wait(qtbot, widget, on_event=None, timeout=60_000) -> list:
    """Click Start, wait until the worker is done; returns what its ``errored`` signal carried."""
    errored: list = []
    widget.start.clicked()
    worker = widget._worker
    assert worker is not None and widget.running
    worker.errored.connect(errored.append)
    if on_event is not None:
        worker.yielded.connect(on_event)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=timeout)
    return errored


# ---------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("fault", ["removed", "replaced by a file"])
def test_dataset_vanishing_mid_training_is_a_notification_and_a_rerun_works(
    make_napari_viewer, qtbot, tiny_dataset, tmp_path, monkeypatch, notes, fault
):
    viewer = make_napari_viewer()
    widget = quick(TrainWidget(viewer), tiny_dataset, tmp_path / "run")
    real_step, vanished = engine._train_step, threading.Event()

    def step_then_vanish(*args, **kwargs):  # in the worker thread, after the first step
        losses = real_step(*args, **kwargs)
        if not vanished.is_set():
            shutil.rmtree(tiny_dataset)
            if fault == "replaced by a file":
                tiny_dataset.write_text("not a folder any more")
            vanished.set()
        return losses
    monkeypatch.setattr(engine, "_train_step", step_then_vanish)
    monkeypatch.setattr(train_widget, "ask_replace", lambda *a: "replace")  # the rerun replaces the failed run

    errored = start_and_wait(qtbot, widget)
    assert vanished.is_set()
    assert_no_traceback(notes, errored)
    errors = error_lines(notes)
    assert len(errors) == 1 and str(tiny_dataset) in errors[0] and "\n" not in errors[0]
    assert widget.done is None and widget.progress.native.format() == "stopped by an error"
    assert widget.start.text == "Start training" and widget.start.enabled and not widget.running
    assert all(w.enabled for w in form(widget))
    assert (tmp_path / "run" / "last.pt").is_file()  # the step trained before the fault is kept
    assert session_for(viewer).last_checkpoint is None

    if tiny_dataset.is_file():
        tiny_dataset.unlink()
    write_tiny_dataset(tiny_dataset)
    widget.max_steps.value = 1
    widget.out_dir.value = tmp_path / "run2"  # run/ holds last.pt: a fresh run there needs overwrite (issue 12)
    errored = start_and_wait(qtbot, widget)
    assert_no_traceback(notes, errored)
    assert len(error_lines(notes)) == 1  # nothing new
    assert widget.done is not None and not widget.done.cancelled
    assert widget.progress.value == widget.progress.max == 1
    assert session_for(viewer).last_checkpoint in (widget.done.best, widget.done.last)
    assert widget.start.text == "Start training" and widget.start.enabled and all(w.enabled for w in form(widget))


def _remember(models: list, model):
    models.append(weakref.ref(model))
    return model


def _python_threads() -> list[str]:
    def label(t: threading.Thread) -> str:
        return f"{t.name}{' (dummy)' if isinstance(t, threading._DummyThread) else ''}"

    return sorted(label(t) for t in threading.enumerate())


def test_ten_start_cancel_cycles_leave_no_threads_or_memory(
    make_napari_viewer, qtbot, tiny_dataset, tmp_path, monkeypatch, notes
):
    widget = quick(TrainWidget(make_napari_viewer()), tiny_dataset, tmp_path / "run")
    widget.epochs.value = 1000
    models: list[weakref.ref] = []
    real_build = engine.build_model
    monkeypatch.setattr(engine, "build_model", lambda *a, **k: _remember(models, real_build(*a, **k)))
    monkeypatch.setattr(train_widget, "ask_replace", lambda *a: "replace")  # each cycle replaces the last
    pool, process = QThreadPool.globalInstance(), psutil.Process()
    threads_before = _python_threads()
    threads, native, rss, steps = [], [], [], []

    for cycle in range(10):
        seen: list[int] = []

        def cancel_at_first_step(event, seen=seen):
            if isinstance(event, engine.StepEvent):
                seen.append(event.step)
                if len(seen) == 1:
                    widget.start.clicked()  # the button is Cancel now
        errored = start_and_wait(qtbot, widget, cancel_at_first_step)
        qtbot.waitUntil(lambda: pool.activeThreadCount() == 0 and not WorkerBase._worker_set, timeout=10_000)
        assert_no_traceback(notes, errored)
        assert widget.done is not None and widget.done.cancelled, f"cycle {cycle + 1}"
        assert widget.start.text == "Start training" and widget.start.enabled and all(w.enabled for w in form(widget))
        steps.append(max(seen))
        gc.collect()
        threads.append(_python_threads())
        native.append(process.num_threads())
        rss.append(process.memory_info().rss)
        assert [m for m in models if m() is not None] == [], f"cycle {cycle + 1}: a trained model is still alive"

    assert not error_lines(notes)
    assert max(steps) <= 2  # each cancel stopped within a step
    # Qt's pool thread is at most one dummy Python thread (PyQt5 usually registers none); the set never changes
    extra = [t for t in threads[0] if t not in threads_before]
    assert all(t.endswith("(dummy)") for t in extra) and len(extra) <= 1, extra
    assert all(t == threads[0] for t in threads), threads
    assert max(native[2:]) <= native[2] + 2, f"OS threads per cycle: {native}"  # a leak adds one a cycle
    assert len(models) == 10
    growth = (rss[-1] - rss[2]) / 2**20
    assert growth < 150, f"RSS grew {growth:.0f} MB over cycles 3..10: {[round(r / 2**20) for r in rss]}"


# ---------------------------------------------------------------------------------------- segmenting


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    return save_untrained(tmp_path_factory.mktemp("ckpt") / "untrained.pt", detections_per_img=20)


@pytest.mark.parametrize("fault", ["truncated", "missing"])
def test_broken_or_missing_checkpoint_is_a_notification_then_a_good_one_works(
    make_napari_viewer, qtbot, tmp_path, untrained, notes, fault
):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.device.value = Device.cpu
    widget.image.value = viewer.add_image(np.random.default_rng(0).integers(0, 255, (64, 72), np.uint8), name="cells")
    model = tmp_path / "model.pt"
    if fault == "truncated":
        data = untrained.read_bytes()
        model.write_bytes(data[: len(data) // 2])
    widget.checkpoint.value = model

    def run() -> list:
        errored: list = []
        widget.run_button.clicked()
        assert widget.run_button.text == "Cancel" and widget._worker is not None
        widget._worker.errored.connect(errored.append)
        qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
        return errored

    errored = run()
    assert_no_traceback(notes, errored)
    errors = error_lines(notes)
    assert len(errors) == 1 and str(model) in errors[0] and "\n" not in errors[0]
    assert ("not found" if fault == "missing" else "damaged or truncated") in errors[0]
    assert widget.progress.native.format() == "stopped by an error" and widget.current is None
    assert widget.run_button.text == "Segment image" and widget.run_button.enabled and widget.folder_button.enabled
    assert [layer.name for layer in viewer.layers] == ["cells"]

    shutil.copyfile(untrained, model)  # a good model at the same path: no failure is remembered
    errored = run()
    assert_no_traceback(notes, errored)
    assert len(error_lines(notes)) == 1
    assert widget.progress.native.format() == "done" and widget.current is not None
    assert widget.current.result.raw.image_shape == (64, 72)
    assert widget.run_button.text == "Segment image" and widget.run_button.enabled
