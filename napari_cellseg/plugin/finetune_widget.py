"""Correct & fine-tune: the human-in-the-loop tab. Corrected images become training samples; a
button fine-tunes the model in use on them; Segment then uses the new model on the same image.

Thin on purpose: saving is ``sample_writer.save_sample``; fine-tuning is the Train tab itself,
filled with settings for a few images (``few_images_settings``), so progress, plots, cancel and the
"replace an earlier run?" question are the Train tab's. When training saves a model, the session
hands it to Segment (as after any training), and this tab asks Segment to segment the image again.
The user switches back by picking the earlier model in Segment's model list. A cancelled
fine-tuning changes nothing: Segment keeps its model, and the Train tab offers the cancelled one.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
from magicgui.widgets import Container, FileEdit, Label, PushButton, SpinBox
from qtpy.QtWidgets import QMessageBox

from . import session
from .session import path_or_none, short_path
from .segment_jobs import CHECKPOINT_FILE, model_file
from .tooltips import FINETUNE as TIPS
from ..errors import CellsegError
from ..io.layout import image_name


def few_images_settings(n_samples: int) -> dict:
    """Fine-tuning on a handful of corrected images: a short schedule (about 30 steps an image,
    60 to 400), a low learning rate, strong augmentation, every image for training (no validation)."""
    return {"steps": int(min(400, max(60, 30 * n_samples))), "lr": 1e-4, "crop_size": 256,
            "batch_size": max(1, min(2, n_samples)),
            "extra": {"augment": "strong", "val_fraction": 0.0, "warmup_steps": 10}}


def ask_replace_sample(parent, name: str, folder: Path) -> bool:
    """Whether to replace the sample ``name`` already in ``folder`` (tests monkeypatch this)."""
    answer = QMessageBox.question(parent, "Replace this sample?", TIPS["replace"].format(name=name, folder=folder))
    return answer == QMessageBox.StandardButton.Yes


class FineTuneWidget(Container):
    """Tab of the main dock: training-set folder, Add current image, Fine-tune."""

    def __init__(self, napari_viewer, segment, train, show_tab=lambda title: None) -> None:
        super().__init__(labels=True)
        self.viewer, self.segment, self.train_widget, self.show_tab = napari_viewer, segment, train, show_tab
        self.folder = FileEdit(mode="d", label="training set", tooltip=TIPS["folder"])
        self.count = Label(value="no folder chosen", label="holds")
        self.add_button = PushButton(text="Add current image to training set", tooltip=TIPS["add"])
        self.steps = SpinBox(value=0, min=0, max=100000, label="steps (0 = auto)", tooltip=TIPS["steps"])
        self.tune_button = PushButton(text="Fine-tune on the training set", tooltip=TIPS["tune"])
        self.status = Label(value="", label="status")
        self.extend([self.folder, self.count, self.add_button, self.steps, self.tune_button, self.status])
        self.status.native.setWordWrap(True)
        self.folder.changed.connect(self._update_count)
        self.add_button.changed.connect(self.add_current)
        self.tune_button.changed.connect(self.fine_tune)
        self._waiting = False
        session.session_for(napari_viewer).events.last_checkpoint.connect(self._on_new_model)
        train.trained.connect(self._on_trained)
        session.keep_narrow(self)

    def samples_folder(self) -> Path:
        root = path_or_none(self.folder)
        if root is None:
            raise ValueError("choose the training-set folder first (new or one made here before)")
        return root / "train"

    def _update_count(self, _value=None) -> None:
        from ..training.sample_writer import count_samples  # torch: warmed off the GUI thread (warm_up.warm_up)

        root = path_or_none(self.folder)
        n = count_samples(root / "train") if root is not None else 0
        self.count.value = f"{n} corrected image{'s' if n != 1 else ''}" if root is not None else "no folder chosen"

    def error(self, message: str) -> None:
        self.status.value = f"stopped: {message}"
        session.show_error(message)

    def add_current(self, _value=None) -> None:
        """The image Segment shows, with its label layers as corrected now, as one training sample."""
        from ..io.images import to_rgb_uint8
        from ..training.sample_writer import SampleExistsError, save_sample  # warmed (warm_up.warm_up)

        shown = self.segment.current
        try:
            folder = self.samples_folder()
            if shown is None or shown.image not in self.viewer.layers:
                raise ValueError("segment an image in the Segment tab and correct its masks first")
            data = shown.image.data[0] if shown.image.multiscale else shown.image.data
            image = to_rgb_uint8(np.asarray(data))
            labels = {k: np.asarray(layer.data) for k, layer in shown.live(self.viewer).items()}
            name = Path(image_name(shown.result.path)).stem if shown.result.path else shown.image.name
            try:
                path = save_sample(image, labels, folder, name)
            except SampleExistsError:
                if not ask_replace_sample(self.native, name, folder):
                    self.status.value = f"not added: {name} is already in the training set"
                    return
                path = save_sample(image, labels, folder, name, replace=True)
        except (ValueError, OSError, CellsegError) as exc:  # e.g. a user's own folder of that name
            self.error(session.one_line(exc))
            return
        cells = sum(int(len(np.unique(v)) - 1) for v in labels.values())
        self._update_count()
        self.status.value = f"added {path.name} ({cells} cells) to {short_path(folder.parent)}"

    def fine_tune(self, _value=None) -> None:
        """Fill the Train tab for a few images, starting from the model Segment uses, and start it."""
        from ..training.sample_writer import count_samples

        try:
            folder = self.samples_folder()
            n = count_samples(folder)
            if n == 0:
                raise ValueError("the training set holds no images yet: add corrected images first")
            start = self.segment.model.value
            init = model_file(start, path_or_none(self.segment.checkpoint))
        except (ValueError, OSError) as exc:
            self.error(session.one_line(exc))
            return
        settings = few_images_settings(n)
        train = self.train_widget
        train.dataset.value = folder.parent
        if start == CHECKPOINT_FILE:
            train.init.value, train.init_file.value = CHECKPOINT_FILE, init
        else:
            train.init.value = start
        train.epochs.value = 100000  # the step count decides
        train.max_steps.value = self.steps.value or settings["steps"]
        train.lr.value, train.crop_size.value = settings["lr"], settings["crop_size"]
        train.batch_size.value = settings["batch_size"]
        train.val_limit.value = 0
        train.out_dir.value = folder.parent / datetime.now().strftime("fine-tuned-%Y%m%d-%H%M%S")
        self._waiting = True
        self.status.value = (f"fine-tuning {start if start != CHECKPOINT_FILE else init.name} on {n} image(s) for "
                             f"{train.max_steps.value} steps: progress and Cancel in the Train tab")
        self.show_tab("Train")
        train.start_training(**settings["extra"])

    def _on_trained(self, done) -> None:
        if self._waiting and done.cancelled:
            self._waiting = False
            self.status.value = ("fine-tuning cancelled: Segment keeps its model; the Train tab offers the "
                                 "cancelled run's model if you want it")

    def _on_new_model(self, path) -> None:
        if not self._waiting or path is None:
            return
        self._waiting = False
        self.status.value = (f"Segment now uses the fine-tuned model {short_path(path)} and segments the image "
                             "again; pick the earlier model in Segment to switch back")
        if self.segment.current is not None and self.segment._worker is None:
            self.segment.image.value = self.segment.current.image
            self.segment.start()
