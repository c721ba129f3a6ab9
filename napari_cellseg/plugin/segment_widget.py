"""Segment widget: run a model (built-in or a checkpoint) on an image layer or a folder, then
threshold live. Where things go, in one hop:
- Run -> ``plugin.segment_jobs.predict_events`` (worker) -> ``_show``: one set of Labels layers per image
  (one per class, named after it: ``Shown``); a re-run replaces them.
- Sliders -> ``_slider_moved`` (a drag is throttled by a timer: stale values are dropped)
  -> ``_rethreshold`` -> ``postprocess.to_labels`` on the cached raw result -> the layers.
- Hand edits: the next slider move asks first (``ask_discard``); cells drawn by hand score 1.0.
- Segment folder -> ``folder_events`` -> one ``ImageResult`` per image in the session; the review box
  (choices read from the session: layer changes never empty it) steps through them on one image
  layer and one set of class layers; edits stay with their image until exported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSlider, Label, ProgressBar, PushButton
from napari.layers import Image
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QMessageBox

from . import session, stack_view
from .session import Device, ImageResult, path_or_none
from .reader import layer_meta
from .segment_jobs import (
    CHECKPOINT_FILE, ModelCache, channel_choices, first_model, folder_events, folder_images, layer_channels,
    model_choices, model_file, painted_values, predict_events, Eta,
)
from .segment_layers import (REVIEW, Shown, add_prediction_layer, drop_superseded, present_ids, review_image,
                             prediction_kwargs, show_only, truth_below_predictions)
from .tooltips import SEGMENT as TIPS
from ..defaults import DETECTOR_SCORE_FLOOR, MASK_THRESH, SCORE_THRESH, TILE_SIZE
from ..io.layout import image_name

PLACE_MS = 30  # between two new layers: the window repaints and takes input (a 0 ms timer came first)

def ask_discard(parent, names: list[str], text: str | None = None) -> bool:
    """True when the user agrees to throw away hand edits of ``names`` (tests monkeypatch this)."""
    text = (text or TIPS["discard"]).format(names=", ".join(names))
    answer = QMessageBox.question(parent, TIPS["discard_title"], text, QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


class SegmentWidget(Container):
    """Dock widget: model, image, device, Run/Cancel, live thresholds, folder run and review."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.session = session.session_for(napari_viewer)
        self.synchronous = False
        self.tile_size = TILE_SIZE  # larger images are segmented tile by tile (inference.iter_predict)
        self.slider_delay_ms = 30  # a drag redraws at most once per delay, always with the latest value
        self.model = ComboBox(choices=model_choices(), value=first_model(), label="model", tooltip=TIPS["model"])
        self.checkpoint = FileEdit(mode="r", filter="*.pt", label="checkpoint", tooltip=TIPS["checkpoint"])
        self.image = ComboBox(choices=self._image_layers, label="image", tooltip=TIPS["image"])
        self.channel = ComboBox(choices=self._channel_choices, label="channel", tooltip=TIPS["channel"])
        self.device = ComboBox(choices=Device, value=Device.auto, label="device", tooltip=TIPS["device"])
        self.tta = CheckBox(value=False, text="test-time augment (4.5x slower)", tooltip=TIPS["tta"])
        self.diameter = session.diameter_box(TIPS["diameter"])  # 0 = auto: scale.py measures the nuclei
        self.run_button = PushButton(text="Segment image", tooltip=TIPS["run"])
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.score = FloatSlider(value=SCORE_THRESH, min=0.0, max=1.0, step=0.01, label="confidence",
                                 tooltip=TIPS["score"].format(floor=DETECTOR_SCORE_FLOOR))
        self.mask = FloatSlider(value=MASK_THRESH, min=0.0, max=1.0, step=0.01, label="mask threshold",
                                tooltip=TIPS["mask"])
        self.folder = FileEdit(mode="d", label="folder", tooltip=TIPS["folder"])
        self.folder_button = PushButton(text="Segment folder", tooltip=TIPS["run_folder"])
        self.review = ComboBox(choices=self._review_choices, label="review", tooltip=TIPS["review"])
        self.status = Label(value="", label="status")
        self.extend([self.model, self.checkpoint, self.image, self.channel, self.device, self.tta, self.diameter,
                     self.run_button, self.score, self.mask, self.folder, self.folder_button, self.review,
                     self.progress, self.status])
        self.status.native.setWordWrap(True)
        session.keep_narrow(self)  # long file names must not widen the dock
        self.progress.native.setFormat("idle")
        self.sets: list[Shown] = []  # one per segmented image layer
        self.current: Shown | None = None
        self._worker = None
        self._stop = self._redrawing = False
        self._placing: object | None = None  # the ``_show`` whose layers are being added (``_place``)
        self._models = ModelCache()  # the model is reused while its file is unchanged
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._timer_fired)
        self._due = False
        self.checkpoint.visible = self.model.value == CHECKPOINT_FILE
        self.model.changed.connect(lambda value: setattr(self.checkpoint, "visible", value == CHECKPOINT_FILE))
        self.checkpoint.changed.connect(self._checkpoint_chosen)
        self.run_button.changed.connect(lambda: self._toggle(self.run_button, self.start))
        self.folder_button.changed.connect(lambda: self._toggle(self.folder_button, self.start_folder))
        self.score.changed.connect(self._slider_moved)
        self.mask.changed.connect(self._slider_moved)
        self.review.changed.connect(self._on_review)
        self.image.changed.connect(self._image_chosen)
        opened = [layer for _, layer in self._image_layers() if layer_meta(layer).get("role") != REVIEW]
        if opened:  # built after images were opened (the tab's first click): the newest, as if it had watched
            self.image.value = opened[-1]
        self._image_chosen()
        self.session.events.last_checkpoint.connect(self._on_new_checkpoint)
        events = napari_viewer.layers.events
        events.inserted.connect(self._layer_inserted)  # held weakly
        events.removed.connect(self._layers_changed)
        events.reordered.connect(self._layers_changed)
        if self.session.last_checkpoint is not None:
            self._on_new_checkpoint(self.session.last_checkpoint)
        # stacks: one stacked Labels layer per class; asks through this module's ask_discard (tests replace it)
        self.stack_view = stack_view.StackView(self, lambda parent, names: ask_discard(parent, names))

    # ------------------------------------------------------------------ inputs

    def _layers_changed(self, _event=None) -> None:
        self.image.reset_choices()
        self.review.reset_choices()
        self.sets = [s for s in self.sets if s.image in self.viewer.layers or s.live(self.viewer)]

    def _layer_inserted(self, event=None) -> None:
        """A newly opened image becomes the one to segment (not the review's own image layer)."""
        self._layers_changed()
        layer = getattr(event, "value", None)
        QTimer.singleShot(0, lambda: truth_below_predictions(self.viewer, layer))  # once the insert is over
        if isinstance(layer, Image) and layer_meta(layer).get("role") != REVIEW:
            self.image.value = layer

    def _image_layers(self, _widget=None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _channel_choices(self, _widget=None) -> list[tuple[str, object]]:
        return channel_choices(layer_channels(self.image.value)[1] if self.image.value is not None else 1)

    def _image_chosen(self, _value=None) -> None:
        """Channels are offered only for an image that has them (nuclear stain, or all merged)."""
        self.channel.reset_choices()
        self.channel.visible = len(self.channel.choices) > 1

    def _review_choices(self, _widget=None) -> list[tuple[str, int]]:
        """Read from the session each time, so napari's reset on any layer change keeps them."""
        results = self.session.folder_results
        return [(f"{i + 1}/{len(results)}  {session.short_name(r.name)}", i) for i, r in enumerate(results)]

    def _on_new_checkpoint(self, path) -> None:
        if path is not None:
            self.checkpoint.value = Path(path)
            self.status.value = f"using the model just trained: {path}"

    def _checkpoint_chosen(self, _value=None) -> None:
        """Choosing a file means using it: the model choice follows (a built-in name is one click back)."""
        if path_or_none(self.checkpoint) is not None:
            self.model.value = CHECKPOINT_FILE

    def _loader(self):
        """A function the worker calls to get (model, config, device); errors name the file."""
        return self._models.loader(model_file(self.model.value, path_or_none(self.checkpoint)), self.device.value.value)

    def error(self, message: str) -> None:
        """An error in a notification and in the dock's status line (a toast vanishes)."""
        self.status.value = f"stopped: {message}"
        session.show_error(message)

    # ------------------------------------------------------------------ running

    def _toggle(self, button, start) -> None:
        if self._worker is not None:
            self._stop = True
            button.enabled = False
            self.progress.native.setFormat("cancelling...")  # at once: the worker stops within the tile
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
        self.progress.value, self._eta = 0, Eta()  # time left shown from the second step on
        self.progress.native.setFormat("loading the model")

        def fail(message: str) -> None:
            failed.append(message)
            self.status.value = f"stopped: {message}"

        def done():
            if self._placing is not None:  # the result's layers are still being added (``_place``)
                return QTimer.singleShot(10, done)
            self._worker = None
            self.run_button.text, self.folder_button.text = "Segment image", "Segment folder"
            self.run_button.enabled = self.folder_button.enabled = True
            self.progress.native.setFormat("stopped by an error" if failed else "cancelled" if self._stop else "done")
            if self._stop and not failed:
                self.status.value = f"{self.status.value} (cancelled)" if self.status.value else "cancelled"

        self._worker = True  # a run is on even when synchronous
        self._worker = session.run(
            self, factory, on_yield=on_yield, on_return=on_return, on_done=done, on_error=fail
        ) or None

    def _progress(self, done: int, total: int, what: str) -> None:
        self.progress.max, self.progress.value = total, done
        self.progress.native.setFormat(f"{what} {done}/{total}{self._eta.text(done, total)}")

    def start(self) -> None:
        """Segment the chosen image layer."""
        self.status.value = ""
        layer = self.image.value
        try:
            if layer is None:
                raise ValueError("open an image first (File > Open File(s)..., or File > Open Sample)")
            loader = self._loader()
        except ValueError as exc:
            self.error(session.report(exc))
            return
        if stack_view.is_stack(layer):
            return self.stack_view.start(layer, loader)
        source = layer_meta(layer).get("source") or layer.source.path
        data = layer.data[0] if layer.multiscale else layer.data  # the full-resolution level
        axis, channel = layer_channels(layer)[0], self.channel.value
        note = ""
        if not layer.visible:
            layer.visible = True
            note = f" ('{layer.name}' was hidden: shown now)"
        self.status.value = f"segmenting '{layer.name}'{note}"

        def returned(value) -> None:
            if value is not None:
                raw, names = value
                self._show(ImageResult(Path(source) if source else None, raw, names), image_layer=layer)

        self._begin(self.run_button,
                    lambda: predict_events(loader, data, self._should_stop, self.tile_size, self.tta.value,
                                           axis, channel, self.diameter.value or None),
                    lambda p: self._progress(p.done, p.total, p.name), returned)

    def start_folder(self) -> None:
        """Segment every image of the folder; results arrive one by one for review."""
        self.status.value = ""
        try:
            loader = self._loader()
            folder = path_or_none(self.folder)
            if folder is None:
                raise ValueError("choose a folder of images first")
            paths = folder_images(folder)
        except session.USER_ERRORS as exc:
            self.error(session.report(exc))
            return
        edited = [r.name for r in self.session.folder_results if r.reviewed]
        if edited and not self.session.folder_exported and not ask_discard(self.native, edited, TIPS["discard_review"]):
            self.status.value = "kept the folder review; export it before segmenting another folder"
            return
        self.session.folder_results = []
        self.session.folder_exported = False
        self.review.reset_choices()
        self.status.value = f"segmenting {len(paths)} image(s) of {folder.name}"

        def arrived(item) -> None:
            done, total, result = item
            self._progress(done, total, "image")
            if isinstance(result, Path):  # the first image, on screen while it is segmented (its layer
                layer = review_image(self.viewer, result, image_name(result))  # and its labels: two short stalls)
                for la in (la for s in self.sets if s.image == layer for la in s.live(self.viewer).values()):
                    la.visible = False  # an earlier review's cells, until this image's arrive
                self.image.reset_choices()
                return
            self.session.folder_results.append(result)
            self.review.reset_choices()
            if self.review.value != 0 and done == 1:
                self.review.value = 0  # shows the first image; the others wait in the review box

        self._begin(self.folder_button,
                    lambda: folder_events(loader, paths, self._should_stop, self.tile_size, self.tta.value,
                                          self.channel.value if len(self.channel.choices) > 1 else None,
                                          self.diameter.value or None), arrived)

    # ------------------------------------------------------------------ results -> layers

    def _on_review(self, index) -> None:
        results = self.session.folder_results
        if index is not None and 0 <= index < len(results):
            if self.current is None or self.current.result is not results[index]:
                self._show(results[index])

    def _show(self, result: ImageResult, image_layer: Image | None = None) -> None:
        """Put ``result`` on screen in its image's set of layers (made, or reused and renamed);
        the other images' layers are hidden, so only this image's cells are visible."""
        if image_layer is None:
            image_layer = review_image(self.viewer, result.path, result.name)
            self.image.reset_choices()  # the review's image layer was renamed: the box showed the old name
        shown = next((s for s in self.sets if s.image == image_layer), None)  # == : napari hands plugins proxies
        if shown is not None and shown.result is not result:
            if layer_meta(image_layer).get("role") != REVIEW and shown.edited:  # a re-run on this image
                live = shown.live(self.viewer)
                names = [live[k].name for k in sorted(shown.edited) if k in live]
                if not ask_discard(self.native, names, TIPS["discard_rerun"]):  # a re-run, not a slider
                    self.status.value = f"{image_layer.name}: kept your edits; the new segmentation was not shown"
                    return
            shown.remember_edits(copy=True)  # the layers will show another result
        if shown is None:
            shown = Shown(result, image_layer, {})
            self.sets.append(shown)
        drop_superseded(self.viewer, self.sets, shown, result.path)  # before its names are taken again
        self._placing = token = object()
        self._place(shown, result, token)

    def _place(self, shown: Shown, result: ImageResult, token: object) -> None:
        """Add the missing class layers one per turn (napari builds one in 0.1-0.4 s: four at once froze the window
        1.3-1.6 s), then show ``result``, only this image's layers visible; the run ends after (``done``)."""
        if self._placing is not token:  # a newer result took over
            return
        self._placing = None  # again only while a layer is due: an error here must not hold the run open
        live = shown.live(self.viewer)
        missing = [k for k in range(1, len(result.class_names) + 1) if k not in live]
        now = missing if self.synchronous else missing[:1]  # synchronous (tests, scripts): all at once
        for k in now:
            live[k] = shown.layers[k] = add_prediction_layer(self.viewer, shown.image, result, k)
            live[k].events.paint.connect(lambda event, s=shown, k=k: self._on_edit(s, k, event))
            live[k].events.data.connect(lambda event, s=shown, k=k: self._on_edit(s, k, None))
        if missing[len(now):]:
            self._placing = token
            QTimer.singleShot(PLACE_MS, lambda: self._place(shown, result, token))
            return
        for k in range(1, len(result.class_names) + 1):
            kwargs = prediction_kwargs(result, k)
            live[k].name, live[k].metadata = kwargs["name"], kwargs["metadata"]
        for k in [k for k in live if k > len(result.class_names)]:  # a model of fewer classes (fine-tuned)
            self.viewer.layers.remove(live.pop(k))
        shown.result, shown.layers = result, live
        shown.edited, shown.kept, shown.model_tables = set(result.reviewed or ()), set(), set()
        self.current = shown
        show_only(self.viewer, self.sets, shown)
        self._models.follow(self.score, self.session)  # a new model's tuned confidence, before its first result
        self._redraw(shown, reviewed=result.reviewed)

    def _slider_moved(self, _value=None) -> None:
        """Throttle a drag: a move redraws at once, then moves within ``slider_delay_ms`` only mark
        a redraw due, which the timer does with the value of that moment (stale ones are dropped)."""
        self.session.score_thresh, self.session.mask_thresh = self.score.value, self.mask.value
        if self._timer.isActive():
            self._due = True
            return
        self._rethreshold()
        if self.slider_delay_ms > 0:
            self._timer.start(self.slider_delay_ms)

    def _timer_fired(self) -> None:
        if self._due:
            self._due = False
            self._rethreshold()
            self._timer.start(self.slider_delay_ms)

    def _rethreshold(self) -> None:
        """Redraw every layer at the slider values, except edited ones the user chooses to keep."""
        shown = self.current
        if shown is None or not shown.live(self.viewer):
            return
        live = shown.live(self.viewer)
        ask = [k for k in sorted(shown.edited - shown.kept) if k in live]
        if ask:
            if ask_discard(self.native, [live[k].name for k in ask]):
                shown.edited -= set(ask)
            else:
                shown.kept |= set(ask)
        self._redraw(shown)

    def _redraw(self, shown: Shown, reviewed: dict[int, np.ndarray] | None = None) -> None:
        """``to_labels`` at the slider values (reviewed classes as the user left them) -> layers."""
        from ..inference.postprocess import instance_scores, to_labels

        result, live = shown.result, shown.live(self.viewer)
        labels = dict(reviewed or {})
        todo = [k for k in live if k not in shown.kept and k not in labels]
        if todo:
            labels.update(to_labels(result.raw, self.score.value, self.mask.value, classes=todo))
        model_scores = instance_scores(result.raw)
        self._redrawing = True
        try:
            for k, data in labels.items():
                if k in live:
                    shown.fill(k, data, model_scores, user=k in (reviewed or {}))
        finally:
            self._redrawing = False
        shown.remember_edits()
        self.status.value = shown.describe(self.viewer, self.score.value)

    def _on_edit(self, shown: Shown, class_id: int, event) -> None:
        """A hand edit: remember it, give new cells score 1.0 (``Shown.edit``), keep it with its image."""
        if not self._redrawing and class_id in shown.layers:
            shown.edit(class_id, None if event is None else painted_values(event.value))
            self.session.folder_exported = False
            QTimer.singleShot(0, lambda: self._recount(shown, class_id))  # once napari has written the pixels

    def _recount(self, shown: Shown, class_id: int) -> None:
        if class_id in shown.live(self.viewer):
            shown.visible[class_id] = present_ids(shown.layers[class_id].data)
            if shown is self.current:
                self.status.value = shown.describe(self.viewer, self.score.value)
