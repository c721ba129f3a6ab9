"""The Segment widget's worker side: pure generators (no Qt, no layers) and small helpers.

``predict_events`` segments one image tile by tile, ``folder_events`` a folder image by image;
both hand ``stop`` to ``inference.predict.iter_predict`` as its ``should_stop`` (``progress``'s contract),
checked before every tile, so Cancel is quick. They run in napari's ``thread_worker``
through ``plugin.session.run``; the widget turns what they yield into layers in the GUI thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .session import ImageResult
from ..defaults import TILE_SIZE, overlap_for
from ..progress import Eta, Progress, drain  # noqa: F401  (Eta: the widget's progress text)


CHECKPOINT_FILE = "a checkpoint file..."
"""The Segment dock's model choice that uses the file picked below it rather than a built-in model."""


def model_choices() -> list[str]:
    from ..model.pretrained import builtin_models

    return [*builtin_models(), CHECKPOINT_FILE]


def first_model() -> str:
    """The built-in model for a user who has none of their own yet."""
    from ..model.pretrained import DEFAULT_MODEL, builtin_models

    return DEFAULT_MODEL if DEFAULT_MODEL in builtin_models() else CHECKPOINT_FILE


def model_file(choice: str, checkpoint: Path | None) -> Path:
    """The file behind the dock's model choice; a missing choice is one line for the user."""
    from ..model.pretrained import builtin_models

    if choice != CHECKPOINT_FILE:
        return builtin_models()[choice].path
    if checkpoint is None:
        raise ValueError("choose a model file (.pt) first, pick the built-in model, or train one in the Train tab")
    return checkpoint


AS_IS = "as is"
"""The channel choice that keeps an image as it is (``channels.choose`` with None)."""


def layer_channels(layer) -> tuple[int | None, int]:
    """The channel axis of an image layer's data (``channels.channel_axis``) and how many channels."""
    from ..io.channels import channel_axis

    data = layer.data[0] if layer.multiscale else layer.data
    axis = channel_axis(tuple(data.shape), rgb=layer.rgb)
    return axis, 1 if axis is None else int(data.shape[axis])


def channel_choices(count: int) -> list[tuple[str, object]]:
    """The Segment dock's channel choices for an image of ``count`` channels."""
    from ..io.channels import MERGED

    if count < 2:
        return [(AS_IS, AS_IS)]
    colour = [("colour, as it is", AS_IS)] if count >= 3 else []
    return [*colour, *((f"channel {c + 1}", c) for c in range(count)), ("merged (brightest)", MERGED)]


class ModelCache:
    """The last model loaded, reused while its file (path, time stamp) and device are unchanged."""

    def __init__(self) -> None:
        self.entry = None  # (key, model, config, device)
        self.confidence: float | None = None  # a newly loaded model's own, until the slider takes it

    def loader(self, path: Path, device_name: str):
        """A function the worker calls to get (model, config, device); it imports torch there, in the
        worker (here, in the GUI thread, it waited 3 s on the warm-up's import of torch)."""

        def load():
            from ..model.checkpoint import load_model
            from ..devices import resolve_device

            device = resolve_device(device_name)
            key = (str(path), path.stat().st_mtime if path.exists() else None, str(device))
            if self.entry is None or self.entry[0] != key:
                from ..inference.postprocess import model_confidence

                model, config = load_model(path, device)
                if self.entry is None or self.entry[0][:2] != key[:2]:  # another file, not another device
                    self.confidence = model_confidence(model)
                self.entry = (key, model, config, device)
            return self.entry[1:]

        return load

    def follow(self, slider, session) -> None:
        """Once per newly loaded model, before its first result is drawn: the confidence slider takes the
        model's tuned confidence (``napari-cellseg tune``; 0.5 for others), quietly (no redraw of the old
        result, no question about edits); moves after that are the user's."""
        value, self.confidence = self.confidence, None
        if value is not None and value != slider.value:
            with slider.changed.blocked():
                slider.value = value
            session.score_thresh = value


def predict_events(
    loader, image_data, stop, tile_size: int = TILE_SIZE, tta: bool = False, axis: int | None = None,
    channel=None, diameter: float | None = None,
) -> Iterator[Progress]:
    """Yield ``Progress`` per tile while predicting; return (RawInstances, class names) or None if stopped.
    ``axis``/``channel``: the image's channel axis and the channel to segment (``channels.choose``);
    ``diameter`` (px) sets the scale, None: ``auto`` (``scale.iter_predict_scaled``)."""
    from ..io.channels import choose
    from ..inference.scale import iter_predict_scaled

    model, config, device = loader()
    image = choose(np.asarray(image_data), axis, None if channel == AS_IS else channel)
    raw = yield from iter_predict_scaled(model, image, device=device, tile_size=tile_size, overlap=overlap(tile_size),
                                         tta=tta, diameter=diameter, should_stop=stop)
    return None if raw is None else (raw, list(config.class_names))


def folder_events(
    loader, paths: list[Path], stop, tile_size: int = TILE_SIZE, tta: bool = False, channel=None,
    diameter: float | None = None,
) -> Iterator[tuple[int, int, ImageResult | Path]]:
    """Yield (done, total, ImageResult) image by image, and first (0, total, path of the first image); a
    cancel stops between tiles (the image being segmented is dropped, the finished ones are kept)."""
    from ..io.image_reader import read
    from ..inference.scale import iter_predict_scaled

    model, config, device = loader()
    channel = None if channel == AS_IS else channel
    for n, path in enumerate(paths, start=1):
        if stop():
            return
        if n == 1:
            yield 0, len(paths), path  # the GUI shows the first image while it is segmented
        raw = drain(iter_predict_scaled(model, read(path, channel=channel), device=device, tile_size=tile_size,
                                        overlap=overlap(tile_size), tta=tta, diameter=diameter, should_stop=stop))
        if raw is None:
            return
        yield n, len(paths), ImageResult(path, raw, list(config.class_names))


def overlap(tile_size: int) -> int:
    """The core's default tile overlap, smaller for test-sized tiles (``defaults.overlap_for``)."""
    return overlap_for(tile_size)


def folder_images(folder: Path) -> list[Path]:
    """The images of a folder of image files (test_release/, PNG, JPEG) or of samples (``<sample>/image.tif``)."""
    from ..io.samples import find_samples
    from ..errors import DatasetError
    from ..io.layout import image_files

    try:
        return image_files(folder)
    except DatasetError:
        if not Path(folder).is_dir():
            raise
        return [s.image_path for s in find_samples(folder)]


def painted_values(history_item) -> set[int]:
    """Label values written by one napari paint event (mask atoms or (index, old, new) tuples)."""
    values: set[int] = set()
    for atom in history_item or ():
        new = getattr(atom, "new_value", None)
        if new is None and isinstance(atom, tuple) and len(atom) == 3:
            new = atom[2]
        if new is not None:
            values.update(int(v) for v in np.unique(np.asarray(new)))
    return values
