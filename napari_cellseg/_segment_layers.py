"""The Segment widget's layer side: which layers show an image's result, and how new labels get
into a Labels layer fast enough for a slider (``update_labels``, timed by ``benchmarks/bench_slider.py``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from napari.layers import Image, Labels

from ._gui_session import ImageResult
from ._reader import META, layer_meta

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

    def live(self, viewer) -> dict[int, Labels]:
        """The layers still in the viewer (the user may delete any of them)."""
        return {k: layer for k, layer in self.layers.items() if layer in viewer.layers}


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


def review_image(viewer, result: ImageResult) -> Image:
    """The folder review's one image layer, showing (and named after) ``result``'s image."""
    from ._reader import image_layer as image_tuple
    from .images import read_image

    data, kwargs, _ = image_tuple(read_image(result.path), result.path, result.name)
    kwargs["metadata"] = {META: {**layer_meta(kwargs["metadata"]), "role": REVIEW}}
    old = [la for la in viewer.layers if isinstance(la, Image) and layer_meta(la).get("role") == REVIEW]
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
