"""The Segment widget's layer side: which layers show an image's result, and how new labels get
into a Labels layer fast enough for a slider (``update_labels``, timed by ``benchmarks/bench_slider.py``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels

from ..inference.scale import scale_note
from .session import ImageResult, short_name
from .reader import GROUND_TRUTH, META, PREDICTION, features_table, labels_layer_kwargs, layer_meta
from .writer import scores_from_features

REVIEW = "review"  # the role of the one image layer a folder review steps through


@dataclass(eq=False)
class Shown:
    """One image layer's prediction layers (class id -> Labels), the result they show, edit state."""

    result: ImageResult
    image: Image
    layers: dict[int, Labels]
    edited: set[int] = field(default_factory=set)  # edited since the last redraw
    kept: set[int] = field(default_factory=set)  # the user chose to keep these edits
    model_tables: set[int] = field(default_factory=set)  # layers whose features are the model's scores
    visible: dict[int, set[int]] = field(default_factory=dict)  # class id -> ids on screen after the last redraw

    def live(self, viewer) -> dict[int, Labels]:
        """The layers still in the viewer (the user may delete any of them)."""
        return {k: layer for k, layer in self.layers.items() if layer in viewer.layers}

    def edit(self, class_id: int, painted: set[int] | None) -> None:
        """A hand edit of ``class_id`` (``painted``: the ids a paint event wrote): cells drawn by
        hand get score 1.0 (``drawn_ids``), and the edit stays with the result."""
        layer = self.layers[class_id]
        self.edited.add(class_id)
        self.kept.discard(class_id)
        if painted is not None:
            table = scores_from_features(layer.features)
            drawn = drawn_ids(painted, table, self.visible.get(class_id, set()))
            if drawn:
                table.update(dict.fromkeys(drawn, 1.0))
                self.model_tables.discard(class_id)
                ids = np.array(sorted(table), dtype=np.int64)
                layer.features = features_table(ids, self.result.class_names[class_id - 1], table)
        self.visible[class_id] = self.visible.get(class_id, set()) | (painted or set()) - {0}  # recount later:
        self.remember_edits()  # napari sends a paint event before it writes the pixels

    def fill(self, class_id: int, data: np.ndarray, model_scores: dict[int, float], user: bool) -> None:
        """``data`` into the class's layer with its score table: the user's (drawn cells 1.0) for a
        class the user edited, else the model's (set once: it does not change with the sliders)."""
        layer, result = self.layers[class_id], self.result
        update_labels(layer, data)
        self.visible[class_id] = present_ids(data)
        name = result.class_names[class_id - 1]
        if user:
            table = (result.reviewed_scores or {}).get(class_id, model_scores)
            layer.features = features_table(np.array(sorted(table), np.int64), name, table)
            self.model_tables.discard(class_id)
        elif class_id not in self.model_tables:
            layer.features = features_table(np.flatnonzero(result.raw.labels == class_id) + 1, name, model_scores)
            self.model_tables.add(class_id)

    def describe(self, viewer, score: float) -> str:
        """The status line: the cells on screen, those below the confidence ``score``, the scale
        chosen or capped tiles, and the layers whose edits the sliders leave alone."""
        raw, live = self.result.raw, self.live(viewer)
        on_screen = sum(len(self.visible.get(k, ())) for k in live)
        below = int(np.count_nonzero(np.isin(raw.labels, list(live)) & (raw.scores < score)))
        text = count_text(short_name(self.result.name), on_screen, below)
        text += f" ({scale_note(raw)})" if scale_note(raw) else ""
        if self.kept:
            names = ", ".join(self.layers[k].name for k in sorted(self.kept))
            text += f"; {names}: your edits are kept, the sliders leave them alone until you edit again"
        return text

    def remember_edits(self, copy: bool = False) -> None:
        """Edited classes stay with their result: by reference while shown, copied when the layers
        move on to another image."""
        edited = [k for k in sorted(self.edited) if k in self.layers]
        data = {k: self.layers[k].data for k in edited}
        self.result.reviewed = {k: (v.copy() if copy else v) for k, v in data.items()} or None
        self.result.reviewed_scores = {k: scores_from_features(self.layers[k].features) for k in edited} or None


def show_only(viewer, sets: list[Shown], shown: Shown) -> None:
    """Only ``shown``'s image and layers visible (set only where it changes: napari redraws a layer
    even when set to what it was)."""
    for other in sets:
        for layer in [other.image, *other.layers.values()]:
            if layer in viewer.layers and layer.visible != (other is shown):
                layer.visible = other is shown


def drop_superseded(viewer, sets: list[Shown], review: Shown, path) -> None:
    """Earlier runs on the image (``path``) the folder review shows now, never edited, go (layers and
    set): hidden behind the review's, under the same names, they were stale copies of an older result."""
    if layer_meta(review.image).get("role") != REVIEW or path is None:
        return
    for other in [s for s in sets if s is not review and s.result.path is not None and not s.edited]:
        if other.result.reviewed is None and other.result.path.resolve() == path.resolve():
            sets.remove(other)
            for layer in other.live(viewer).values():
                viewer.layers.remove(layer)


def present_ids(data: np.ndarray) -> set[int]:
    """Ids on screen in a label image (a bincount: a few ms on 1000 x 1000, ~5x faster than np.unique)."""
    if data.size == 0:
        return set()
    counts = np.bincount(np.asarray(data).ravel().astype(np.intp, copy=False).clip(0))  # bincount's own cast
    return {int(i) for i in np.flatnonzero(counts) if i > 0}


def drawn_ids(painted: set[int], table: dict[int, float], visible: set[int]) -> set[int]:
    """Ids of cells the user drew: painted ids that were not on screen. napari's *new label* picks
    the largest id + 1, often the id of a detection hidden below the confidence, whose score a
    drawn cell must not take; painting over a shown cell keeps that cell's score."""
    return {v for v in painted if v > 0 and (v not in table or v not in visible)}


def count_text(name: str, shown: int, below: int) -> str:
    """One count, what is on screen; the cells the confidence hides said apart."""
    text = f"{name}: {shown} cell{'s' if shown != 1 else ''} shown"
    if below:
        text += f" ({below} below the confidence)"
    return text


def update_labels(layer: Labels, data: np.ndarray) -> None:
    """New labels into ``layer``. In place when the array fits, through napari's partial update
    (``data_setitem``: only the changed pixels are re-coloured and sent to the GPU); ``layer.data =``
    re-derives dims, extent and the whole texture, ~5x slower on 1000 x 1000 (bench_slider.py)."""
    old = layer.data
    if not (isinstance(old, np.ndarray) and old.shape == data.shape and old.dtype == data.dtype) or old is data:
        layer.data = data
        return
    flat = np.flatnonzero(old != data)  # ~2x faster than a 2-D np.nonzero
    if flat.size:
        changed = np.divmod(flat, data.shape[1])
        layer.data_setitem(changed, data.ravel()[flat])
        with warnings.catch_warnings():  # napari flags its private API; without it, undo can revert a redraw
            warnings.simplefilter("ignore", FutureWarning)
            reset = getattr(layer, "_reset_history", None)  # a slider move is not an undoable edit
        if reset is not None:
            reset()


def prediction_kwargs(result: ImageResult, class_id: int) -> dict:
    """How the layer of class ``class_id`` of ``result`` is named and tagged."""
    name = result.class_names[class_id - 1]
    return labels_layer_kwargs(class_id, name, source=result.path, role=PREDICTION, name=f"{name} ({result.name})")


def add_prediction_layer(viewer, image_layer: Image, result: ImageResult, class_id: int) -> Labels:
    """An empty Labels layer for class ``class_id`` of ``result``, over ``image_layer`` (same scale and
    offset); the widget fills it, and names it again when it shows another result."""
    kwargs = prediction_kwargs(result, class_id)
    return viewer.add_labels(np.zeros(result.raw.image_shape, np.int32), scale=image_layer.scale[-2:],
                             translate=image_layer.translate[-2:], **kwargs)


def truth_below_predictions(viewer, layer) -> None:
    """A ground-truth layer opened while segmentations are shown goes below the lowest of them: added on
    top, it hid the cells being reviewed."""
    if not isinstance(layer, Labels) or layer_meta(layer).get("role") != GROUND_TRUTH or layer not in viewer.layers:
        return
    below = [i for i, la in enumerate(viewer.layers)
             if isinstance(la, Labels) and layer_meta(la).get("role") == PREDICTION]
    index = viewer.layers.index(layer)
    if below and index > min(below):
        viewer.layers.move(index, min(below))


def review_image(viewer, path: Path, name: str) -> Image:
    """The folder review's one image layer, showing (and named after) the image at ``path``; left as it is
    when it shows that image already (the folder run puts the first image on screen while segmenting it)."""
    from .reader import image_layer as image_tuple
    from ..io.images import read_image

    old = [la for la in viewer.layers if isinstance(la, Image) and layer_meta(la).get("role") == REVIEW]
    if old and layer_meta(old[0]).get("source") == str(path):
        return old[0]
    data, kwargs, _ = image_tuple(read_image(path), path, name)
    kwargs["metadata"] = {META: {**layer_meta(kwargs["metadata"]), "role": REVIEW}}
    if not old:
        layer = viewer.add_image(data, **kwargs)
        viewer.reset_view()
        return layer
    layer, fit = old[0], old[0].data.shape[:2] != data.shape[:2]
    layer.data, layer.metadata, layer.name = data, kwargs["metadata"], kwargs["name"]
    layer.reset_contrast_limits()
    if fit:  # another image size: show the whole image
        viewer.reset_view()
    return layer
