"""The Segment dock on stacks and time-lapses: one stacked Labels layer per class.

Where things go, in one hop:
- Segment image on a layer with an extra napari dimension (``is_stack``) -> ``StackView.start`` ->
  worker ``stack_events`` (``stacks.iter_predict_stack``: progress and cancel per plane) ->
  ``StackView._show`` keeps the ``StackInstances`` and makes one ``(planes, H, W)`` Labels layer per class.
- Confidence / mask sliders -> ``StackView._rethreshold`` -> ``stacks.to_stack_labels`` on the
  cached raw instances of every plane, into the arrays on screen; the network never runs again.
- A hand edit marks its layer; the next slider move asks (``ask_discard``, given by the widget) first.
These layers have the role ``stack``: the Export dock (``plugin.writer.group_layers``) and the writer take
them plane by plane, named ``<file>#<plane>`` as ``napari-cellseg export`` names them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from napari.layers import Image, Labels

from .reader import STACK_ROLE, features_table, labels_layer_kwargs, layer_meta
from .segment_jobs import AS_IS, layer_channels, painted_values
from .segment_layers import count_text, drawn_ids
from .writer import scores_from_features
from ..defaults import TILE_SIZE, overlap_for
from ..progress import Progress

ROLE = STACK_ROLE


def is_stack(layer: Image) -> bool:
    """An image layer with planes: 3-D once its channels are set apart (``channels.channel_axis``:
    a (2, H, W) or (H, W, 2) image has channels, never planes)."""
    data = layer.data[0] if layer.multiscale else layer.data
    return data.ndim - (layer_channels(layer)[0] is not None) == 3


def stack_events(
    loader, data, stop, tile_size: int = TILE_SIZE, tta: bool = False, axis: int | None = None, channel=None,
    diameter: float | None = None,
) -> Iterator[Progress]:
    """Worker side: yield (planes done, planes); return (StackInstances, class names), None if stopped.
    ``axis``: the channel axis of the layer's data (planes first), ``channel`` the one to segment;
    ``diameter``: the Segment tab's nucleus diameter (None: each plane's scale is ``auto``)."""
    from ..io.channels import ChannelPlanes
    from ..inference.stacks import iter_predict_stack
    from ..io.image_reader import Stack

    model, config, device = loader()
    if axis is not None:
        data = ChannelPlanes(data, axis - 1, None if channel == AS_IS else channel)
    overlap = overlap_for(tile_size)
    steps = iter_predict_stack(model, Stack(data), device=device, tile_size=tile_size, overlap=overlap, tta=tta,
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

        axis, channel = layer_channels(layer)[0], w.channel.value
        w._begin(w.run_button, lambda: stack_events(loader, data, w._should_stop, w.tile_size, w.tta.value, axis,
                                                    channel, w.diameter.value or None),
                 lambda p: w._progress(p.done, p.total, "plane"), returned)

    def _show(self, result, class_names: list[str], image: Image, source) -> None:
        """One stacked Labels layer per class, placed on the image (same planes, scale, offset)."""
        old = self.current
        if old is not None and old.edited:  # a re-run would overwrite hand edits: ask, or add new layers
            if not self.ask_discard(self.widget.native, [old.layers[k].name for k in sorted(old.edited)]):
                old = None
        layers = {}
        for k, name in enumerate(class_names, start=1):
            kwargs = labels_layer_kwargs(k, name, source=source, role=ROLE)  # Export takes it plane by plane
            layer = old.layers.get(k) if old is not None else None
            if layer is None or layer not in self.widget.viewer.layers or layer.data.shape != result.shape:
                layer = self.widget.viewer.add_labels(
                    np.zeros(result.shape, np.int32), scale=image.scale, translate=image.translate,
                    **kwargs,
                )
                layer.events.paint.connect(partial(self._on_edit, k))
            layers[k] = layer
        self.current = StackShown(result, class_names, layers)
        self.widget._models.follow(self.widget.score, self.widget.session)  # a new model's tuned confidence
        self._redraw()

    def _on_edit(self, class_id: int, event=None) -> None:
        """A hand edit: remembered, and cells drawn by hand score 1.0 whatever id napari gave them."""
        if self._redrawing or self.current is None:
            return
        shown = self.current
        shown.edited.add(class_id)
        shown.kept.discard(class_id)
        layer = shown.layers[class_id]
        table = scores_from_features(layer.features)  # the ids on screen: hidden detections have no row
        drawn = drawn_ids(painted_values(getattr(event, "value", None)), table, set(table))
        if drawn:
            table.update(dict.fromkeys(drawn, 1.0))
            ids = np.array(sorted(table), np.int64)
            layer.features = features_table(ids, shown.class_names[class_id - 1], table)

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
        from ..inference.stacks import stack_scores, to_stack_labels

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
        on_screen = sum(len(layer.features) for layer in shown.layers.values())
        below = int(sum(np.count_nonzero(p.scores < w.score.value) for p in shown.result.planes))
        w.status.value = count_text(f"{len(shown.result.planes)} planes", on_screen, below)
