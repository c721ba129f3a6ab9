"""Train widget: options -> TrainConfig, training in a worker, responsiveness, cancel, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from qtpy.QtCore import QTimer

from conftest import quick
from napari_cellseg.training import engine
from napari_cellseg._torch import torch
from napari_cellseg.plugin import train_widget
from napari_cellseg.plugin.session import session_for
from napari_cellseg.plugin.segment_widget import SegmentWidget
from napari_cellseg.plugin.train_widget import Amp, TrainWidget



def test_config_carries_every_option(make_napari_viewer, tmp_path):
    widget = TrainWidget(make_napari_viewer())
    quick(widget, tmp_path / "data", tmp_path / "run")
    widget.lr.value = 3e-4
    widget.max_steps.value = 7
    widget.resume.value = tmp_path / "run" / "last.pt"
    widget.amp.value = Amp.on
    cfg = widget.config()
    assert (cfg.dataset, cfg.out_dir) == (str(tmp_path / "data"), str(tmp_path / "run"))
    assert (cfg.arch, cfg.epochs, cfg.batch_size, cfg.crop_size, cfg.val_limit) == ("resnet18", 1, 1, 64, 1)
    assert math.isclose(cfg.lr, 3e-4) and cfg.max_steps == 7 and cfg.amp is True and cfg.device == "cpu"
    assert cfg.resume == str(tmp_path / "run" / "last.pt")
    widget.max_steps.value, widget.val_limit.value = 0, 0
    widget.resume.line_edit.value = ""
    cfg = widget.config()
    assert cfg.max_steps is None and cfg.val_limit is None and cfg.resume is None


def test_start_from_the_builtin_model_or_a_file(make_napari_viewer, tmp_path):
    """Fine-tuning from the GUI: the same choice as ``train --init``; the architecture steps aside."""
    from napari_cellseg.plugin.segment_jobs import CHECKPOINT_FILE
    from napari_cellseg.model.pretrained import builtin_models

    widget = TrainWidget(make_napari_viewer())
    quick(widget, tmp_path / "data", tmp_path / "run")
    assert widget.config().init is None and widget.arch.enabled and widget.init_file.native.isHidden()
    widget.init.value = "nuclei"
    assert widget.config().init == str(builtin_models()["nuclei"].path) and not widget.arch.enabled
    widget.init.value = CHECKPOINT_FILE
    assert not widget.init_file.native.isHidden()
    with pytest.raises(ValueError, match="choose a model file"):
        widget.config()
    widget.init_file.value = tmp_path / "run" / "best.pt"
    assert widget.config().init == str(tmp_path / "run" / "best.pt")


def test_training_runs_in_a_worker_and_the_gui_stays_responsive(make_napari_viewer, qtbot, tiny_dataset, tmp_path):
    viewer = make_napari_viewer()
    segment = SegmentWidget(viewer)  # opened before training: it must pick the new model up
    widget = quick(TrainWidget(viewer), tiny_dataset, tmp_path / "run")
    widget.max_steps.value = 2
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(50)
    widget.start.clicked()
    assert widget.running and not widget.dataset.enabled
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    timer.stop()
    assert widget.done is not None and not widget.done.cancelled
    # the event loop kept running while the worker trained: the timer fired (a lower bound far
    # below the ~20 ticks per second it should manage)
    assert len(ticks) >= 10
    assert widget.plot.steps == [1, 2] and set(widget.plot.losses) >= {"loss", "loss_mask"}
    assert widget.plot.epochs == [1] and len(widget.plot.ap["AP50"]) == 1
    assert widget.progress.value == widget.progress.max == 2
    assert f"{widget.done.last.name} and best.pt in run" in widget.status.value
    assert str(widget.done.last) in widget.status.tooltip
    size = sum(f.stat().st_size for f in (tmp_path / "run").iterdir())
    assert size > 1_000_000 and f"{size / 1e6:.0f} MB" in widget.run_size.value
    assert (tmp_path / "run" / "last.pt").is_file()
    assert session_for(viewer).last_checkpoint in (widget.done.best, widget.done.last)
    assert segment.checkpoint.value == session_for(viewer).last_checkpoint
    assert not widget.running and widget.dataset.enabled


def test_cancel_stops_within_a_step_and_keeps_the_checkpoint(make_napari_viewer, qtbot, tiny_dataset, tmp_path):
    viewer = make_napari_viewer()
    segment = SegmentWidget(viewer)
    before = segment.checkpoint.value
    widget = quick(TrainWidget(viewer), tiny_dataset, tmp_path / "run")
    widget.epochs.value = 1000
    steps = []

    def on_event(event):
        if isinstance(event, engine.StepEvent):
            steps.append(event.step)
            if event.step == 1:
                widget.start.clicked()  # the button is now Cancel
    widget.start.clicked()
    widget._worker.yielded.connect(on_event)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert widget.done is not None and widget.done.cancelled
    assert max(steps) <= 2  # stops before the next step once the flag is seen
    assert widget.done.last == tmp_path / "run" / "last.pt" and widget.done.last.is_file()
    assert "cancelled" in widget.status.value
    assert widget.start.text == "Start training" and widget.start.enabled
    # a cancelled run's model is offered, not switched to
    assert session_for(viewer).last_checkpoint is None and segment.checkpoint.value == before
    assert not widget.use_button.native.isHidden()
    widget.use_button.clicked()
    assert session_for(viewer).last_checkpoint == widget.done.model == segment.checkpoint.value
    assert widget.use_button.native.isHidden()


def test_bad_folder_is_a_notification_and_the_widget_recovers(make_napari_viewer, tmp_path, errors):
    widget = quick(TrainWidget(make_napari_viewer()), tmp_path / "nowhere", tmp_path / "run")
    widget.synchronous = True
    widget.start_training()
    assert len(errors) == 1 and "nowhere" in errors[0] and "\n" not in errors[0]
    assert errors[0] in widget.status.value  # written in the dock too, not only in a toast
    assert widget.start.text == "Start training" and widget.start.enabled and widget.dataset.enabled
    widget.dataset.line_edit.value = ""
    widget.start_training()
    assert "dataset folder" in errors[1] and errors[1] in widget.status.value and errors[0] not in widget.status.value


def _nan_step(*args, **kwargs):
    return {"loss": float("nan"), "loss_mask": float("nan")}


def _oom_step(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize(
    ("step", "words"), [(_nan_step, ["nan", "learning rate"]), (_oom_step, ["out of memory", "batch size"])]
)
def test_training_failures_are_notifications(
    make_napari_viewer, tiny_dataset, tmp_path, monkeypatch, errors, step, words
):
    monkeypatch.setattr(engine, "_train_step", step)
    widget = quick(TrainWidget(make_napari_viewer()), tiny_dataset, tmp_path / "run")
    widget.synchronous = True
    widget.start_training()
    assert len(errors) == 1 and all(word in errors[0] for word in words) and "\n" not in errors[0]
    assert errors[0] in widget.status.value and "--" not in errors[0]
    assert widget.done is None and widget.progress.native.format() == "stopped by an error"
    assert not widget.running and widget.dataset.enabled


class _FakeTrain:
    """Stands in for ``engine.train``: records the config and yields the given events."""

    def __init__(self, *events):
        self.events, self.configs = events, []

    def __call__(self, cfg, should_stop=None):
        self.configs.append(cfg)
        yield from self.events
        yield engine.DoneEvent(None, None)


def _earlier_run(folder):
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"earlier model")
    return folder


@pytest.mark.parametrize("answer", ["cancel", "new", "replace"])
def test_an_earlier_run_is_replaced_only_when_the_user_agrees(
    make_napari_viewer, tiny_dataset, tmp_path, monkeypatch, answer
):
    fake = _FakeTrain()
    asked = []
    monkeypatch.setattr(train_widget, "train", fake)
    monkeypatch.setattr(
        train_widget, "ask_replace", lambda parent, folder, files, new: asked.append((folder, files, new)) or answer
    )
    run = _earlier_run(tmp_path / "run")
    widget = quick(TrainWidget(make_napari_viewer()), tiny_dataset, run)
    widget.synchronous = True
    widget.start_training()
    assert asked == [(run, ["last.pt"], tmp_path / "run-2")]
    if answer == "cancel":
        assert fake.configs == [] and "not started" in widget.status.value
    else:
        (cfg,) = fake.configs
        assert cfg.overwrite is (answer == "replace")
        assert cfg.out_dir == str(run if answer == "replace" else tmp_path / "run-2")
        assert widget.out_dir.value == Path(cfg.out_dir)
    assert (run / "last.pt").read_bytes() == b"earlier model"  # nothing touched it before the engine runs


def test_no_question_for_a_fresh_folder_or_resuming_its_own_checkpoint(
    make_napari_viewer, tiny_dataset, tmp_path, monkeypatch
):
    fake = _FakeTrain()
    monkeypatch.setattr(train_widget, "train", fake)
    monkeypatch.setattr(train_widget, "ask_replace", lambda *a: pytest.fail("asked without reason"))
    widget = quick(TrainWidget(make_napari_viewer()), tiny_dataset, tmp_path / "fresh")
    widget.synchronous = True
    widget.start_training()
    run = _earlier_run(tmp_path / "run")
    widget.out_dir.value, widget.resume.value = run, run / "last.pt"
    widget.start_training()
    assert [c.overwrite for c in fake.configs] == [False, True]


def test_status_is_reset_at_each_start_and_speaks_the_guis_words(
    make_napari_viewer, tiny_dataset, tmp_path, monkeypatch
):
    note = "AMP off: this CPU has no native bf16 units, fp32 is faster here (use --amp to force bf16)"
    seen = []

    def fake_train(cfg, should_stop=None):
        seen.append((widget.status.value, widget.progress.native.format()))
        yield engine.InfoEvent(note)
        seen.append((widget.status.value, widget.progress.native.format()))
        yield engine.DoneEvent(None, None)

    monkeypatch.setattr(train_widget, "train", fake_train)
    widget = quick(TrainWidget(make_napari_viewer()), tiny_dataset, tmp_path / "run")
    widget.synchronous = True
    widget.set_status("not trained: an old failure")
    widget.progress.native.setFormat("stopped by an error")
    widget.start_training()
    (status, bar), (info, _) = seen
    assert status.startswith("starting") and "old failure" not in status and bar == "idle"
    assert "--amp" not in info and "mixed precision to 'on'" in info


def test_advanced_options_are_folded_until_asked_for(make_napari_viewer):
    widget = TrainWidget(make_napari_viewer())
    widget.native.show()
    assert not widget.batch_size.native.isVisible() and widget.epochs.native.isVisible()
    widget.show_advanced.value = True
    assert widget.batch_size.native.isVisible() and widget.resume.native.isVisible()
