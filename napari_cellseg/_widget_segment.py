"""Segment widget: run a checkpoint on an image layer or a folder, then threshold live.

Where things go, in one hop:
- Run -> ``predict_events`` (worker: load the model, ``inference.iter_predict`` tile by tile) ->
  ``_show`` keeps the ``RawInstances`` and makes one Labels layer per class.
- Confidence / mask sliders -> ``_rethreshold`` -> ``postprocess.to_labels`` on the cached raw
  result -> ``layer.data = ...``; the network never runs again.
- Hand edits (``layer.events.paint`` / ``events.data``) mark a layer edited; the next slider move
  asks (``ask_discard``) before redrawing it, or leaves it alone. Cells drawn by hand get a
  features row with score 1.0; the model's cells keep their score.
- Segment folder -> ``folder_events`` -> one ``ImageResult`` per image in the viewer's session;
  the review box steps through them and edits stay with their image (the Export widget reads them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSlider, Label, ProgressBar, PushButton
from napari.layers import Image, Labels
from qtpy.QtWidgets import QMessageBox

from . import _gui_session
from ._reader import PREDICTION, features_table, labels_layer_kwargs, layer_meta
from ._gui_session import Device, ImageResult, path_or_none
from ._tooltips import SEGMENT as TIPS
from ._writer import scores_from_features

REVIEW_IMAGE = "review image"


def ask_discard(parent, names: list[str]) -> bool:
    """True when the user agrees to throw away hand edits of ``names`` (tests monkeypatch this)."""
    text = TIPS["discard"].format(names=", ".join(names))
    answer = QMessageBox.question(parent, TIPS["discard_title"], text, QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


# ------------------------------------------------------------------ pure generators (worker side)


def predict_events(loader, image_data, stop, tile_size: int = 1024, flip: bool = False) -> Iterator[tuple[int, int]]:
    """Yield (tiles done, tiles) while predicting; return (RawInstances, class names) or None if stopped."""
    from .images import to_rgb_uint8
    from .inference import iter_predict

    model, config, device = loader()
    image = to_rgb_uint8(np.asarray(image_data))
    steps = iter_predict(model, image, device=device, tile_size=tile_size, overlap=_overlap(tile_size), flip=flip)
    while True:
        try:
            yield next(steps)
        except StopIteration as done:
            return done.value, list(config.class_names)
        if stop():
            steps.close()
            return None


def folder_events(
    loader, paths: list[Path], stop, tile_size: int = 1024, flip: bool = False
) -> Iterator[tuple[int, int, ImageResult]]:
    """Yield (done, total, ImageResult) image by image; a cancel stops between tiles (the image
    being segmented is dropped, the finished ones are kept)."""
    from .images import read_image
    from .inference import iter_predict

    model, config, device = loader()
    for n, path in enumerate(paths, start=1):
        if stop():
            return
        steps = iter_predict(
            model, read_image(path), device=device, tile_size=tile_size, overlap=_overlap(tile_size), flip=flip
        )
        while True:
            try:
                next(steps)
            except StopIteration as done:
                raw = done.value
                break
            if stop():
                steps.close()
                return
        yield n, len(paths), ImageResult(path, raw, list(config.class_names))


def _overlap(tile_size: int) -> int:
    return min(128, tile_size // 4)  # the core's default overlap, smaller for test-sized tiles


def folder_images(folder: Path) -> list[Path]:
    """The images of a folder of TIFF files (test_release/) or of samples (``<sample>/image.tif``)."""
    from .data import find_samples
    from .errors import DatasetError
    from .pipeline import image_files

    try:
        return image_files(folder)
    except DatasetError:
        if not Path(folder).is_dir():
            raise
        return [s.image_path for s in find_samples(folder)]


# ------------------------------------------------------------------ what is on screen


@dataclass(eq=False)
class Shown:
    """The result on screen, its layers (class id -> Labels) and their edit state."""

    result: ImageResult
    image: Image
    layers: dict[int, Labels]
    edited: set[int] = field(default_factory=set)  # edited since the last redraw
    kept: set[int] = field(default_factory=set)  # the user chose to keep these edits

    def alive(self, viewer) -> bool:
        return all(layer in viewer.layers for layer in self.layers.values())


class SegmentWidget(Container):
    """Dock widget: model, image, device, Run/Cancel, live thresholds, folder run and review."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.session = _gui_session.session_for(napari_viewer)
        self.synchronous = False
        self.tile_size = 1024  # larger images are segmented tile by tile (inference.iter_predict)
        self.checkpoint = FileEdit(mode="r", filter="*.pt", label="model", tooltip=TIPS["checkpoint"])
        self.image = ComboBox(choices=self._image_layers, label="image", tooltip=TIPS["image"])
        self.device = ComboBox(choices=Device, value=Device.auto, label="device", tooltip=TIPS["device"])
        self.flip = CheckBox(value=False, text="test-time flips (2x slower)", tooltip=TIPS["flip"])
        self.run_button = PushButton(text="Segment image", tooltip=TIPS["run"])
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.score = FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, label="confidence", tooltip=TIPS["score"])
        self.mask = FloatSlider(value=0.6, min=0.0, max=1.0, step=0.01, label="mask threshold", tooltip=TIPS["mask"])
        self.folder = FileEdit(mode="d", label="folder", tooltip=TIPS["folder"])
        self.folder_button = PushButton(text="Segment folder", tooltip=TIPS["run_folder"])
        self.review = ComboBox(choices=[], label="review", tooltip=TIPS["review"])
        self.status = Label(value="", label="status")
        self.extend([self.checkpoint, self.image, self.device, self.flip, self.run_button, self.score, self.mask,
                     self.folder, self.folder_button, self.review, self.progress, self.status])
        self.status.native.setWordWrap(True)
        _gui_session.keep_narrow(self)  # long file names must not widen the dock
        self.progress.native.setFormat("idle")
        self.current: Shown | None = None
        self._worker = None
        self._stop = False
        self._redrawing = False
        self._model = None  # (key, model, config, device): reused while the file is unchanged
        self.run_button.changed.connect(lambda: self._toggle(self.run_button, self.start))
        self.folder_button.changed.connect(lambda: self._toggle(self.folder_button, self.start_folder))
        self.score.changed.connect(self._rethreshold)
        self.mask.changed.connect(self._rethreshold)
        self.review.changed.connect(self._on_review)
        self.session.events.last_checkpoint.connect(self._on_new_checkpoint)
        for name in ("inserted", "removed", "reordered"):
            getattr(napari_viewer.layers.events, name).connect(self._layers_changed)  # held weakly
        if self.session.last_checkpoint is not None:
            self._on_new_checkpoint(self.session.last_checkpoint)

    # ------------------------------------------------------------------ inputs

    def _layers_changed(self, _event=None) -> None:
        self.image.reset_choices()

    def _image_layers(self, _widget=None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _on_new_checkpoint(self, path) -> None:
        if path is not None:
            self.checkpoint.value = Path(path)
            self.status.value = f"using the model just trained: {path}"

    def _loader(self):
        """A function the worker calls to get (model, config, device); errors name the file."""
        from .checkpoint import load_model
        from .inference import resolve_device

        path, device_name = path_or_none(self.checkpoint), self.device.value.value
        if path is None:
            raise ValueError("choose a model file (.pt) first, or train one in the Train widget")

        def load():
            device = resolve_device(device_name)
            key = (str(path), path.stat().st_mtime if path.exists() else None, str(device))
            if self._model is None or self._model[0] != key:
                model, config = load_model(path, device)
                self._model = (key, model, config, device)
            return self._model[1:]

        return load

    # ------------------------------------------------------------------ running

    def _toggle(self, button, start) -> None:
        if self._worker is not None:
            self._stop = True
            button.enabled = False
        else:
            start()

    def _should_stop(self) -> bool:
        return self._stop

    def _begin(self, button, factory, on_yield, on_return=None) -> None:
        self._stop = False
        failed = []
        for b in (self.run_button, self.folder_button):
            b.enabled = b is button
        button.text = "Cancel"
        self.progress.value = 0
        self.progress.native.setFormat("loading the model")

        def done():
            self._worker = None
            self.run_button.text, self.folder_button.text = "Segment image", "Segment folder"
            self.run_button.enabled = self.folder_button.enabled = True
            self.progress.native.setFormat("stopped by an error" if failed else "cancelled" if self._stop else "done")

        self._worker = True  # a run is on even when synchronous
        self._worker = _gui_session.run(
            self, factory, on_yield=on_yield, on_return=on_return, on_done=done, on_error=failed.append
        ) or None

    def _progress(self, done: int, total: int, what: str) -> None:
        self.progress.max, self.progress.value = total, done
        self.progress.native.setFormat(f"{what} {done}/{total}")

    def start(self) -> None:
        """Segment the chosen image layer."""
        layer = self.image.value
        try:
            if layer is None:
                raise ValueError("open an image first (File > Open, or File > Open Sample)")
            loader = self._loader()
        except ValueError as exc:
            _gui_session.show_error(_gui_session.one_line(exc))
            return
        source = layer_meta(layer).get("source") or layer.source.path
        data = layer.data[0] if layer.multiscale else layer.data  # the full-resolution level

        def returned(value) -> None:
            if value is not None:
                raw, names = value
                self._show(ImageResult(Path(source) if source else None, raw, names), image_layer=layer)

        self._begin(self.run_button, lambda: predict_events(loader, data, self._should_stop, self.tile_size, self.flip.value),
                    lambda p: self._progress(*p, "tile"), returned)

    def start_folder(self) -> None:
        """Segment every image of the folder; results arrive one by one for review."""
        try:
            loader = self._loader()
            folder = path_or_none(self.folder)
            if folder is None:
                raise ValueError("choose a folder of images first")
            paths = folder_images(folder)
        except _gui_session.USER_ERRORS as exc:
            _gui_session.show_error(_gui_session.one_line(exc))
            return
        self.session.folder_results = []
        self.review.choices = []

        def arrived(item) -> None:
            done, total, result = item
            self._progress(done, total, "image")
            self.session.folder_results.append(result)
            self.review.choices = [(r.name, i) for i, r in enumerate(self.session.folder_results)]
            if done == 1:
                self.review.value = 0  # shows the first image; the others wait in the review box

        self._begin(self.folder_button, lambda: folder_events(loader, paths, self._should_stop, self.tile_size, self.flip.value), arrived)

    # ------------------------------------------------------------------ results -> layers

    def _on_review(self, index) -> None:
        results = self.session.folder_results
        if index is not None and 0 <= index < len(results):
            if self.current is None or self.current.result is not results[index]:
                self._show(results[index])

    def _show(self, result: ImageResult, image_layer: Image | None = None) -> None:
        """Put ``result`` on screen: the review (or a re-run on the same image) reuses the layers."""
        old, folder = self.current, self.session.folder_results
        reuse = old is not None and old.alive(self.viewer) and (
            (image_layer is None and any(r is old.result for r in folder)) or old.image is image_layer
        )
        if reuse and image_layer is not None and old.edited:  # a re-run would overwrite edits
            reuse = ask_discard(self.native, [old.layers[k].name for k in sorted(old.edited)])
        if image_layer is None:
            image_layer = self._review_image(result)
        layers = {}
        for k, name in enumerate(result.class_names, start=1):
            kwargs = labels_layer_kwargs(k, name, source=result.path, role=PREDICTION)
            layer = old.layers.get(k) if reuse else None
            if layer is None:
                layer = self.viewer.add_labels(
                    np.zeros(result.raw.image_shape, np.int32), scale=image_layer.scale[-2:],
                    translate=image_layer.translate[-2:], **kwargs,
                )
                layer.events.paint.connect(partial(self._on_edit, k))
                layer.events.data.connect(partial(self._on_data, k))
            layer.metadata = kwargs["metadata"]
            layers[k] = layer
        self.current = Shown(result, image_layer, layers, edited=set(result.reviewed or ()))
        self._redraw(reviewed=result.reviewed)
        self.status.value = f"{result.name}: the model found {len(result.raw)} cells"

    def _review_image(self, result: ImageResult) -> Image:
        from ._reader import image_layer as image_tuple
        from .images import read_image

        data, kwargs, _ = image_tuple(read_image(result.path), result.path, REVIEW_IMAGE)
        if REVIEW_IMAGE not in self.viewer.layers:
            return self.viewer.add_image(data, **kwargs)
        layer = self.viewer.layers[REVIEW_IMAGE]
        layer.data, layer.metadata = data, kwargs["metadata"]
        return layer

    def _rethreshold(self, _value=None) -> None:
        """Slider moved: redraw every layer, except edited ones the user chooses to keep."""
        self.session.score_thresh, self.session.mask_thresh = self.score.value, self.mask.value
        shown = self.current
        if shown is None or not shown.alive(self.viewer):
            return
        ask = sorted(shown.edited - shown.kept)
        if ask:
            if ask_discard(self.native, [shown.layers[k].name for k in ask]):
                shown.edited -= set(ask)
            else:
                shown.kept |= set(ask)
        self._redraw()

    def _redraw(self, reviewed: dict[int, np.ndarray] | None = None) -> None:
        """``to_labels`` at the slider values (reviewed classes as the user left them) -> layers."""
        from .postprocess import instance_scores, to_labels

        shown, result = self.current, self.current.result
        labels = dict(reviewed or {})
        todo = [k for k in shown.layers if k not in shown.kept and k not in labels]
        if todo:
            labels.update(to_labels(result.raw, self.score.value, self.mask.value, classes=todo))
        model_scores = instance_scores(result.raw)
        self._redrawing = True
        try:
            for k, data in labels.items():
                present = np.flatnonzero(np.bincount(data.ravel(), minlength=1))
                scores = (result.reviewed_scores or {}).get(k, model_scores) if k in (reviewed or {}) else model_scores
                shown.layers[k].data = data
                shown.layers[k].features = features_table(present[present > 0], result.class_names[k - 1], scores)
        finally:
            self._redrawing = False
        self._remember_edits()
        if shown.kept:
            names = ", ".join(shown.layers[k].name for k in sorted(shown.kept))
            self.status.value = f"{names}: your edits are kept; the sliders leave them alone until you edit again"

    def _on_edit(self, class_id: int, event) -> None:
        """A hand edit: remember it, give new cells score 1.0, keep the edit with its image."""
        shown = self.current
        if self._redrawing or shown is None or shown.layers.get(class_id) is None:
            return
        layer = shown.layers[class_id]
        shown.edited.add(class_id)
        shown.kept.discard(class_id)
        if event is not None:
            table = scores_from_features(layer.features)
            drawn = {v for v in _painted_values(event.value) if v > 0 and v not in table}
            if drawn:
                table.update(dict.fromkeys(drawn, 1.0))
                ids = np.array(sorted(table), dtype=np.int64)
                layer.features = features_table(ids, shown.result.class_names[class_id - 1], table)
        self._remember_edits()

    def _on_data(self, class_id: int, _event) -> None:
        """``layer.data`` replaced by someone else (a script, another plugin): also an edit."""
        self._on_edit(class_id, None)

    def _remember_edits(self) -> None:
        """Edited classes stay with their result (by reference: the layers get new arrays on redraw)."""
        shown = self.current
        edited = sorted(shown.edited)
        shown.result.reviewed = {k: shown.layers[k].data for k in edited} or None
        shown.result.reviewed_scores = {k: scores_from_features(shown.layers[k].features) for k in edited} or None


def _painted_values(history_item) -> set[int]:
    """Label values written by one napari paint event (mask atoms or (index, old, new) tuples)."""
    values: set[int] = set()
    for atom in history_item or ():
        new = getattr(atom, "new_value", None)
        if new is None and isinstance(atom, tuple) and len(atom) == 3:
            new = atom[2]
        if new is not None:
            values.update(int(v) for v in np.unique(np.asarray(new)))
    return values
