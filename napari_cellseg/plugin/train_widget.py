"""Train widget: collects the options of ``engine.TrainConfig`` and follows ``engine.train``.

The training generator runs in a ``thread_worker`` (``plugin.session.run``); its events arrive in the
GUI thread (``_on_event``) where they move the progress bar, the plot and the status line. Cancel
sets a flag that ``engine.train`` checks before every step, so it stops within one step and
saves ``last.pt``. When training finishes, the model it hands on (``DoneEvent.model``: best on
validation, else the last weights) goes to the viewer's session, where the Segment widget picks it
up; a cancelled run's model is only offered (``use_button``): the user decides.

The dock stays narrow (``plugin.session.keep_narrow``): the finer options fold away under
"advanced options", and every message, errors included, also lands in the status line, which
each start resets. Before a run would replace the models of an earlier one, ``ask_replace`` asks.
"""

from __future__ import annotations

import time
from datetime import datetime
from enum import Enum
from pathlib import Path

from magicgui.widgets import (
    CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox,
)
from napari.utils.notifications import show_info
from psygnal import Signal
from qtpy.QtWidgets import QMessageBox

from typing import TYPE_CHECKING

from . import session, warm_up
from .session import Device, folder_size, gui_words, human_size, path_or_none, short_path
from .tooltips import TRAIN as TIPS
from ..defaults import ARCHS
from .plot import TrainingPlot
from .segment_jobs import CHECKPOINT_FILE, model_choices, model_file

if TYPE_CHECKING:  # torch: imported in the worker (``train``) or by the warm-up, never while the dock opens
    from ..training.engine import DoneEvent, EpochEvent, StepEvent, TrainConfig

SCRATCH = "random weights"
"""The Train dock's "start from" choice for a new network; the others fine-tune (``TrainConfig.init``)."""


class Amp(Enum):
    auto = None
    on = True
    off = False


def train(cfg: TrainConfig, should_stop=None):
    """``training.engine.train``, imported when the worker calls it: torch loads off the GUI thread
    (tests monkeypatch this)."""
    from ..training.engine import train as engine_train

    return engine_train(cfg, should_stop=should_stop)


def default_run_folder() -> Path:
    return Path.home() / "napari-cellseg" / datetime.now().strftime("run-%Y%m%d-%H%M%S")


def next_free_folder(folder: Path) -> Path:
    """``folder-2``, ``folder-3``, ...: the first sibling of ``folder`` that does not exist yet."""
    n = 2
    while folder.with_name(f"{folder.name}-{n}").exists():
        n += 1
    return folder.with_name(f"{folder.name}-{n}")


def ask_replace(parent, folder: Path, files: list[str], new: Path) -> str:
    """``replace``, ``new`` (train into ``new``) or ``cancel``: what to do with an earlier run's
    models in ``folder`` (tests monkeypatch this)."""
    text = TIPS["replace"].format(folder=folder, files=", ".join(files), new=new)
    box = QMessageBox(QMessageBox.Icon.Question, TIPS["replace_title"], text, QMessageBox.StandardButton.Cancel, parent)
    replace = box.addButton("Replace", QMessageBox.ButtonRole.DestructiveRole)
    fresh = box.addButton("New folder", QMessageBox.ButtonRole.AcceptRole)
    box.setDefaultButton(fresh)
    box.exec()
    clicked = box.clickedButton()
    return "replace" if clicked == replace else "new" if clicked == fresh else "cancel"


def _eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TrainWidget(Container):
    """Dock widget: dataset, model and training options, Start/Cancel, progress, live plot."""

    trained = Signal(object)
    """Emits each run's ``DoneEvent`` (finished or cancelled), after the session has its model."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.synchronous = False  # tests: run the generator in the GUI thread
        self.dataset = FileEdit(mode="d", label="dataset folder", tooltip=TIPS["dataset"])
        self.arch = ComboBox(choices=ARCHS, value="resnet18", label="architecture", tooltip=TIPS["arch"])
        self.init = ComboBox(choices=[SCRATCH, *model_choices()], value=SCRATCH, label="start from",
                             tooltip=TIPS["init"])
        self.init_file = FileEdit(mode="r", filter="*.pt", label="weights file", tooltip=TIPS["init_file"])
        self.epochs = SpinBox(value=20, min=1, max=100000, label="epochs", tooltip=TIPS["epochs"])
        self.batch_size = SpinBox(value=2, min=1, max=256, label="batch size", tooltip=TIPS["batch_size"])
        self.lr = FloatSpinBox(value=1e-4, min=1e-6, max=1.0, step=1e-5, label="learning rate", tooltip=TIPS["lr"])
        self.lr.native.setDecimals(6)
        self.device = ComboBox(choices=Device, value=Device.auto, label="device", tooltip=TIPS["device"])
        self.amp = ComboBox(choices=Amp, value=Amp.auto, label="mixed precision", tooltip=TIPS["amp"])
        self.crop_size = SpinBox(value=512, min=32, max=4096, step=32, label="crop size", tooltip=TIPS["crop_size"])
        self.max_steps = SpinBox(value=0, min=0, max=10**7, label="max steps", tooltip=TIPS["max_steps"])
        self.val_limit = SpinBox(value=0, min=0, max=10**6, label="validation images", tooltip=TIPS["val_limit"])
        self.out_dir = FileEdit(mode="d", label="output folder", tooltip=TIPS["out_dir"])
        self.resume = FileEdit(mode="r", filter="*.pt", label="resume from", tooltip=TIPS["resume"])
        self.show_advanced = CheckBox(value=False, text="advanced options", tooltip=TIPS["advanced"])
        self.advanced = Container(labels=True, label="", widgets=[
            self.batch_size, self.lr, self.amp, self.crop_size, self.max_steps, self.val_limit, self.resume,
        ])
        self.advanced.margins = (0, 0, 0, 0)
        self.start = PushButton(text="Start training", tooltip=TIPS["start"])
        self.use_button = PushButton(text="Use the cancelled run's model in Segment", tooltip=TIPS["use_cancelled"])
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="", label="status")
        self.step_info = Label(value="", label="training")  # wraps: the bar holds ~25 characters in the dock
        self.run_size = Label(value="nothing yet", label="on disk", tooltip=TIPS["run_size"])
        self.extend([
            self.dataset, self.init, self.init_file, self.arch, self.epochs, self.device, self.out_dir,
            self.show_advanced, self.advanced,
            self.start, self.use_button, self.progress, self.step_info, self.status, self.run_size,
        ])
        self.advanced.visible = False
        self.use_button.visible = False
        self.use_button.changed.connect(self.use_cancelled)
        self.init_file.visible = False
        self.init.changed.connect(self._init_changed)
        self.advanced._labeled_widget()._label_widget.visible = False  # its rows have their own names
        self.show_advanced.changed.connect(self._show_advanced)
        self.progress.native.setFormat("idle")
        self.status.native.setWordWrap(True)
        self.step_info.native.setWordWrap(True)
        self.run_size.native.setWordWrap(True)
        self.plot = TrainingPlot(napari_viewer.theme)  # matplotlib draws it in its own thread
        self.plot.setToolTip(TIPS["plot"])
        self.native.layout().addWidget(self.plot)
        napari_viewer.events.theme.connect(self._follow_theme)
        session.keep_narrow(self)
        self.start.changed.connect(self._toggle)
        self._worker = None
        self._stop = False
        self._clock: tuple[float, int] | None = None
        self.done: DoneEvent | None = None
        self._arch_chosen = False  # the user's choice wins over the default that follows the hardware
        self.arch.changed.connect(self._note_arch_choice)
        warm_up.when_warm(self, self._default_arch)

    # ------------------------------------------------------------------ options -> core

    def config(self, **extra) -> TrainConfig:
        """The core's config from the widgets (the same fields the CLI fills); ``extra`` sets fields
        the dock shows no box for (the fine-tune tab's strong augmentation, no validation)."""
        dataset = path_or_none(self.dataset)
        if dataset is None:
            raise ValueError("choose the dataset folder first (it holds train/ and optionally val/)")
        out = path_or_none(self.out_dir)
        if out is None:
            out = default_run_folder()
            self.out_dir.value = out
        resume = path_or_none(self.resume)
        from ..training.config import TrainConfig  # warmed off the GUI thread when the dock opened

        init = None if self.init.value == SCRATCH else str(model_file(self.init.value, path_or_none(self.init_file)))
        return TrainConfig(
            dataset=str(dataset), out_dir=str(out), arch=self.arch.value, epochs=self.epochs.value,
            batch_size=self.batch_size.value, lr=float(self.lr.value), device=self.device.value.value,
            amp=self.amp.value.value, resume=str(resume) if resume else None,
            max_steps=self.max_steps.value or None, crop_size=self.crop_size.value,
            val_limit=self.val_limit.value or None, init=init, **extra,
        )

    def _note_arch_choice(self, _value=None) -> None:
        self._arch_chosen = True

    def _default_arch(self) -> None:
        """A GPU trains the larger network; asked once torch is loaded (off the GUI thread)."""
        if self._arch_chosen:
            return
        from .._torch import torch

        self.arch.value = "resnet50_v2" if torch.cuda.is_available() else "resnet18"

    def _init_changed(self, value: str) -> None:
        """Fine-tuning keeps the starting model's network, so the architecture choice steps aside."""
        self.init_file.visible = value == CHECKPOINT_FILE
        self.arch.enabled = value == SCRATCH

    def _show_advanced(self, shown: bool) -> None:
        self.advanced.visible = shown

    def _follow_theme(self, event=None) -> None:
        try:
            self.plot.set_theme(self.viewer.theme)
        except RuntimeError:  # the dock was closed: its canvas is gone
            pass

    def set_status(self, text: str) -> None:
        """The dock's status line; its tooltip keeps the whole text when a long line is cut."""
        self.status.value = text
        self.status.tooltip = text

    def _fail(self, message: str) -> None:
        """An error, in the dock as well as in the notification that ``plugin.session.run`` shows."""
        self.set_status(f"not trained: {message}")

    @property
    def running(self) -> bool:
        return self.start.text != "Start training"

    def _toggle(self) -> None:
        if self.running:
            self.cancel()
        else:
            self.start_training()

    def start_training(self, **extra) -> None:
        self.set_status("")
        self.run_size.value = "nothing yet"
        self.step_info.value = ""
        self.progress.value = 0
        self.progress.native.setFormat("idle")
        try:
            cfg = self.config(**extra)
        except ValueError as exc:
            message = session.report(exc)
            session.show_error(message)
            self._fail(message)
            return
        if not self._may_write(cfg):
            self.set_status("not started: the earlier model in the output folder is kept")
            return
        self._stop = False
        self._clock = None
        self.done = None
        self.use_button.visible = False
        self.plot.clear()
        self._set_running(True)
        self.set_status(f"starting: {cfg.arch} on {short_path(cfg.dataset)}, saving into {short_path(cfg.out_dir)}")
        self._worker = session.run(
            self, lambda: train(cfg, should_stop=self._should_stop), on_yield=self._on_event, on_done=self._on_done,
            on_error=self._fail,
        )

    def _may_write(self, cfg: TrainConfig) -> bool:
        """Whether training may write into ``cfg.out_dir``; asks before replacing an earlier run's
        models (resuming from that folder's own checkpoint is no replacement). Sets ``cfg.overwrite``
        and, for a new run folder, ``cfg.out_dir``."""
        out = Path(cfg.out_dir)
        files = [name for name in ("best.pt", "last.pt") if (out / name).is_file()]
        if not files or (cfg.resume and Path(cfg.resume).resolve().parent == out.resolve()):
            cfg.overwrite = bool(files)
            return True
        new = next_free_folder(out)
        answer = ask_replace(self.native, out, files, new)
        if answer == "new":
            cfg.out_dir = str(new)
            self.out_dir.value = new
        cfg.overwrite = answer == "replace"
        return answer in ("replace", "new")

    def cancel(self) -> None:
        """Ask training to stop before its next step; it saves last.pt and reports DoneEvent."""
        self._stop = True
        self.start.enabled = False
        self.set_status("cancelling after this step...")

    def _should_stop(self) -> bool:
        return self._stop

    def _set_running(self, running: bool) -> None:
        self.start.text = "Cancel" if running else "Start training"
        self.start.enabled = True
        for widget in (self.dataset, self.arch, self.epochs, self.device, self.out_dir, self.advanced):
            widget.enabled = not running

    # ------------------------------------------------------------------ core events -> GUI

    def _on_event(self, event) -> None:
        from ..training.engine import DoneEvent, EpochEvent, InfoEvent, StepEvent  # loaded by the worker

        if isinstance(event, StepEvent):
            self._on_step(event)
        elif isinstance(event, EpochEvent):
            self._on_epoch(event)
        elif isinstance(event, InfoEvent):
            self.set_status(gui_words(event.message))
        elif isinstance(event, DoneEvent):
            self._on_finished(event)

    def _on_step(self, event: StepEvent) -> None:
        now = time.perf_counter()
        if self._clock is None:
            self._clock = (now, event.step)
        start, first = self._clock
        rate = (now - start) / max(1, event.step - first)  # seconds per step since the first one
        eta = _eta(rate * (event.total_steps - event.step)) if event.step > first else "..."
        self.progress.max = event.total_steps
        self.progress.value = event.step
        # two lines: the bar (150 px in a 310 px dock) cut "epoch 6 - step .. - loss 2.496 - l" before the ETA
        self.progress.native.setFormat(f"step {event.step}/{event.total_steps}")
        self.step_info.value = f"epoch {event.epoch}, loss {event.losses.get('loss', 0):.3f}, ETA {eta}"
        self.plot.add_step(event.step, event.losses)

    def _on_epoch(self, event: EpochEvent) -> None:
        """Validated epochs go on the plot; without validation images the plot says so (no AP 0)."""
        m, text = event.metrics, f"epoch {event.epoch}/{event.epochs}"
        if m:
            self.plot.add_epoch(event.epoch, m)
            text += f": AP {m.get('AP', 0):.3f}, AP50 {m.get('AP50', 0):.3f}{' (best so far)' if event.best else ''}"
        elif event.val_images == 0:
            self.plot.no_validation()
            text += " (no validation images)"
        if event.checkpoint is not None:
            self._show_run_size(Path(event.checkpoint).parent)
            text += f"; saved {short_path(event.checkpoint)}"
        self.set_status(text)

    def _on_finished(self, event: DoneEvent) -> None:
        self.done = event
        model = event.model
        what = "cancelled" if event.cancelled else "finished"
        saved = [path for path in (event.last, event.best) if path is not None]
        self.set_status(f"training {what}: " + (
            f"saved {' and '.join(path.name for path in saved)} in {saved[0].parent.name}" if saved else "nothing saved"
        ) + ("" if model is None else f"; {_handed_on(event)}"))
        self.status.tooltip = f"last checkpoint: {event.last}" + (f"\nbest: {event.best}" if event.best else "")
        if model is not None:
            self._show_run_size(Path(model).parent)
        self.progress.native.setFormat(f"{what} at step {self.progress.value}/{self.progress.max}")
        if model is None:
            return
        if event.cancelled:
            self.use_button.visible = True
            show_info(f"Training cancelled. Its model is {model}; the Segment widget keeps the model it had.")
        else:
            session.session_for(self.viewer).last_checkpoint = Path(model)
            show_info(f"Training finished. The Segment widget now uses {model}")
        self.trained.emit(event)

    def use_cancelled(self, _value=None) -> None:
        """The user takes the cancelled run's model after all: Segment switches to it."""
        if self.done is not None and self.done.model is not None:
            session.session_for(self.viewer).last_checkpoint = Path(self.done.model)
            self.set_status(f"Segment now uses the cancelled run's {short_path(self.done.model)}")
        self.use_button.visible = False

    def _show_run_size(self, folder: Path) -> None:
        self.run_size.value = f"{human_size(folder_size(folder))} in {folder.name}"
        self.run_size.tooltip = f"{TIPS['run_size']}\n{folder}"

    def _on_done(self) -> None:
        self._worker = None
        self._set_running(False)
        if self.done is None:
            self.progress.native.setFormat("stopped by an error")


def _handed_on(event: DoneEvent) -> str:
    """Which model the run hands on, and why that one."""
    if event.best is not None:
        which = f"best.pt (best validation AP {event.best_ap:.3f})"
    else:
        which = f"{event.last.name} (its last weights: no validation images)"
    return f"its model is {which}" if event.cancelled else f"Segment now uses {which}"

