"""The Segment dock on stacks and time-lapses: one stacked Labels layer per class.

Where things go, in one hop:
- Segment image on a layer with an extra napari dimension (``is_stack``) -> ``StackView.start`` ->
  worker ``stack_events`` (``stacks.iter_predict_stack``: progress and cancel per plane) ->
  ``StackView._show`` keeps the ``StackInstances`` and makes one ``(planes, H, W)`` Labels layer per class.
- Confidence / mask sliders -> ``StackView._rethreshold`` -> ``stacks.to_stack_labels`` on the
  cached raw instances of every plane, into the arrays on screen; the network never runs again.
- A hand edit marks its layer; the next slider move asks (``ask_discard``, given by the widget) first.
These layers have the role ``stack`` and no class id, so the Export dock (2-D images) leaves them
out; export stacks with ``napari-cellseg export`` (planes named ``<file>#<plane>``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from napari.layers import Image, Labels

from ._reader import features_table, labels_layer_kwargs, layer_meta
from .defaults import TILE_SIZE, overlap_for
from .progress import Progress

ROLE = "stack"


def is_stack(layer: Image) -> bool:
    """An image layer with planes: 3-D grey, or 4-D RGB(A) (napari's dims show a plane slider)."""
    data = layer.data[0] if layer.multiscale else layer.data
    return data.ndim == (4 if layer.rgb else 3)


def stack_events(
    loader, data, stop, tile_size: int = TILE_SIZE, flip: bool = False, diameter: float | None = None
) -> Iterator[Progress]:
    """Worker side: yield (planes done, planes); return (StackInstances, class names), None if stopped.
    ``diameter``: the Segment tab's nucleus diameter (None: each plane's scale is ``auto``)."""
    from .stacks import Stack, iter_predict_stack

    model, config, device = loader()
    overlap = overlap_for(tile_size)
    steps = iter_predict_stack(model, Stack(data), device=device, tile_size=tile_size, overlap=overlap, flip=flip,
                               diameter=diameter, should_stop=stop)
    result = yield from steps
    return None if result is None else (result, list(config.class_names))


@dataclass(eq=False)
class StackShown:
    result: object  # stacks.StackInstances
    class_names: list[str]
    layers: dict[int, Labels]
    edited: set[int] = field(default_factory=set)
    kept: set[int] = field(default_factory=set)


class StackView:
    """The stack part of a ``SegmentWidget``: runs on stacks and their live thresholds."""

    def __init__(self, widget, ask_discard: Callable[[object, list[str]], bool]) -> None:
        self.widget = widget
        self.ask_discard = ask_discard  # the Segment widget's question: this module never imports the widget
        self.current: StackShown | None = None
        self._redrawing = False
        widget.score.changed.connect(self._rethreshold)
        widget.mask.changed.connect(self._rethreshold)

    def start(self, layer: Image, loader) -> None:
        w = self.widget
        data = layer.data[0] if layer.multiscale else layer.data
        source = layer_meta(layer).get("source") or layer.source.path

        def returned(value) -> None:
            if value is not None:
                self._show(*value, layer, source)

        w._begin(w.run_button, lambda: stack_events(loader, data, w._should_stop, w.tile_size, w.flip.value,
                                                    w.diameter.value or None),
                 lambda p: w._progress(p.done, p.total, "plane"), returned)

    def _show(self, result, class_names: list[str], image: Image, source) -> None:
        """One stacked Labels layer per class, placed on the image (same planes, scale, offset)."""
        old = self.current
        if old is not None and old.edited:  # a re-run would overwrite hand edits: ask, or add new layers
            if not self.ask_discard(self.widget.native, [old.layers[k].name for k in sorted(old.edited)]):
                old = None
        layers = {}
        for k, name in enumerate(class_names, start=1):
            kwargs = labels_layer_kwargs(k, name, source=source, role=ROLE)
            kwargs["metadata"]["cellseg"].pop("class_id")  # not a 2-D image the Export dock could take
            layer = old.layers.get(k) if old is not None else None
            if layer is None or layer not in self.widget.viewer.layers or layer.data.shape != result.shape:
                layer = self.widget.viewer.add_labels(
                    np.zeros(result.shape, np.int32), scale=image.scale, translate=image.translate,
                    **kwargs,
                )
                layer.events.paint.connect(partial(self._on_edit, k))
            layers[k] = layer
        self.current = StackShown(result, class_names, layers)
        self._redraw()
        planes = len(result.planes)
        self.widget.status.value = f"{planes} planes: the model found {len(result)} cells in all"

    def _on_edit(self, class_id: int, _event=None) -> None:
        if not self._redrawing and self.current is not None:
            self.current.edited.add(class_id)
            self.current.kept.discard(class_id)

    def _rethreshold(self, _value=None) -> None:
        shown = self.current
        if shown is None or not all(layer in self.widget.viewer.layers for layer in shown.layers.values()):
            return
        ask = sorted(shown.edited - shown.kept)
        if ask:
            if self.ask_discard(self.widget.native, [shown.layers[k].name for k in ask]):
                shown.edited -= set(ask)
            else:
                shown.kept |= set(ask)
        self._redraw()

    def _redraw(self) -> None:
        """Every plane at the slider values, into the arrays on screen (no new 100-plane arrays)."""
        from .stacks import stack_scores, to_stack_labels

        shown, w = self.current, self.widget
        todo = {k: layer.data for k, layer in shown.layers.items() if k not in shown.kept}
        if not todo:
            return
        to_stack_labels(shown.result, w.score.value, w.mask.value, classes=list(todo), out=todo)
        scores = stack_scores(shown.result)
        self._redrawing = True
        try:
            for k, data in todo.items():
                present = np.flatnonzero(np.bincount(data.ravel(), minlength=1))
                layer = shown.layers[k]
                layer.data = data  # the same array, changed in place: napari redraws it
                layer.features = features_table(present[present > 0], shown.class_names[k - 1], scores)
        finally:
            self._redrawing = False
