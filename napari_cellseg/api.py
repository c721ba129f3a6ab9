"""The public API, one call per job: ``segment``, ``load_model``, ``train``, ``evaluate``.

Why: a script, a notebook or a cluster job should not need to know that segmenting is split into
``model.checkpoint.load_model``, ``inference.predict.predict`` and ``inference.postprocess.to_labels``,
or that training is a generator of events; each call takes the CLI's options and returns one
object. Models loaded by name or path stay cached, so segmenting many images in a loop loads the
model once. ``napari_cellseg/__init__.py`` exports these names lazily (the import stays cheap).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .export.cells import Cell, find_cells, write_cells
from .defaults import MASK_THRESH, SCORE_THRESH, TILE_SIZE


@dataclass
class Segmentation:
    """What ``segment`` found in one image or stack.

    ``labels`` holds every class in one instance image (``H x W``, or ``planes x H x W`` for a
    stack; 0 = background, ids unique); ``class_labels`` the same split by class id (1-based, as
    ``class_names``). ``classes`` and ``scores`` map each id in ``labels`` to its class name and
    the model's confidence.
    """

    labels: np.ndarray
    class_labels: dict[int, np.ndarray]
    classes: dict[int, str]
    scores: dict[int, float]
    class_names: list[str]
    image: np.ndarray | None = field(default=None, repr=False)
    """The image as the model saw it (RGB uint8), for the table's mean intensity."""
    axis: str = ""

    def cells(self) -> list[Cell]:
        """Every cell measured, with its outline (``export.cells.Cell``)."""
        return find_cells(self.class_labels, self.scores, self.class_names, self.image)

    def table(self) -> list[dict[str, object]]:
        """A row per cell: id, class, score, area, centroid, bbox, mean intensity (and plane for a
        stack); ``pandas.DataFrame(result.table())`` makes it a data frame."""
        return [cell.row() for cell in self.cells()]

    def write(self, folder: str | os.PathLike, stem: str, formats: Sequence[str] = ("labels", "csv")) -> list[Path]:
        """Write the formats of ``predict --format`` into ``folder`` as ``<stem>_...``; returns the paths."""
        from .io.images import write_labels
        from .io.image_reader import write_stack_labels

        folder = Path(folder)
        written = []
        if "labels" in formats:
            for k, image in self.class_labels.items():
                path = folder / f"{stem}_{self.class_names[k - 1]}.tif"
                if image.ndim == 2:
                    write_labels(path, image)
                else:
                    write_stack_labels(path, image, self.axis)
                written.append(path)
        return written + write_cells(folder, stem, self.cells(), formats, self.axis)


def segment(
    image: np.ndarray | str | os.PathLike,
    model: object = "nuclei",
    *,
    score_thresh: float | None = None,
    mask_thresh: float = MASK_THRESH,
    tile_size: int = TILE_SIZE,
    tta: bool = False,
    device: str = "auto",
    link: bool = False,
    stack: bool | None = None,
    class_names: Sequence[str] | None = None,
    scale: float | str = "auto",
    diameter: float | None = None,
) -> Segmentation:
    """Segment ``image`` with ``model`` (a built-in name such as ``"nuclei"``, a checkpoint path, what
    ``load_model`` returned, or a ``CellMaskRCNN`` with its ``class_names``); options as
    ``napari-cellseg predict`` (``score_thresh``: default the model's tuned confidence, else 0.5).

    ``image``: an array (``H x W`` grey, ``H x W x C`` or ``C x H x W`` colour with C <= 4, any
    dtype) or an image file; ``planes x H x W`` (or ``planes x H x W x C``) is a stack, segmented
    plane by plane (``stack`` forces either reading). ``link``: a stack's cell keeps its id from
    plane to plane where its masks overlap. ``scale`` (``"auto"`` or a factor) and ``diameter``
    (the nuclei's size in pixels) as ``--scale``/``--diameter`` (``inference/scale.py``).
    """
    from .inference.stacks import iter_predict_stack, stack_scores, to_stack_labels
    from .io.image_reader import read_stack
    from .progress import drain

    net, names = _model(model, device, class_names)
    if score_thresh is None:
        from .inference.postprocess import model_confidence

        score_thresh = model_confidence(net)
    data = read_stack(image) if isinstance(image, (str, os.PathLike)) else _as_stack(np.asarray(image), stack)
    classes = range(1, len(names) + 1)
    if len(data) == 1:
        from .inference.pipeline import segment_image

        rgb = data.plane(0)
        class_labels, scores = segment_image(net, rgb, score_thresh=score_thresh, mask_thresh=mask_thresh,
                                             tile_size=tile_size, tta=tta, scale=scale, diameter=diameter)
    else:
        raw = drain(iter_predict_stack(net, data, tile_size=tile_size, tta=tta, scale=scale, diameter=diameter))
        class_labels, scores = to_stack_labels(raw, score_thresh, mask_thresh, classes), stack_scores(raw)
        if link:
            from .inference.stacks import link_over_time

            link_over_time(class_labels)
        rgb = np.stack([data.plane(p) for p in range(len(data))])
    merged = np.zeros(next(iter(class_labels.values())).shape, np.int32)
    which: dict[int, str] = {}
    for k, labels in class_labels.items():
        merged += labels  # the classes never share a pixel (to_labels paints each pixel once)
        which.update((int(i), names[k - 1]) for i in np.unique(labels) if i)
    kept = {i: scores[i] for i in which if i in scores}
    return Segmentation(merged, class_labels, which, kept, list(names), rgb, data.axis)


def _as_stack(array: np.ndarray, stack: bool | None):
    """An array as a ``Stack``: one plane unless it reads as planes (see ``segment``)."""
    from .io.image_reader import Stack

    if stack is None:
        colour = array.ndim == 3 and (array.shape[2] <= 4 or array.shape[0] <= 4 < min(array.shape[1:]))
        stack = array.ndim == 4 or (array.ndim == 3 and not colour)
    return Stack(array if stack else array[None])


def _model(model: object, device: str, class_names: Sequence[str] | None):
    """The network and its class names: a loaded model as it is, a name or path loaded once."""
    if isinstance(model, (str, os.PathLike)):
        model = _load(str(model), str(device))
    if isinstance(model, tuple):  # load_model's (network, config)
        net, config = model
        return net, list(class_names or config.class_names)
    count = model.roi_heads.box_predictor.cls_score.out_features - 1
    names = list(class_names) if class_names is not None else [f"class{k}" for k in range(1, count + 1)]
    if len(names) != count:
        raise ValueError(f"the model has {count} classes but {len(names)} class names were given")
    return model, names


@functools.lru_cache(maxsize=2)
def _load(model: str, device: str):
    return load_model(model, device)


def load_model(model: str | os.PathLike = "nuclei", device: str = "auto"):
    """``(network, config)`` of a built-in model (``"nuclei"``), a checkpoint or a ``.onnx`` export, in
    eval mode on ``device`` (``"auto"``: the GPU when there is one); ``segment(image, model=...)``
    takes it as it is, ``config.class_names`` names its classes."""
    from .devices import resolve_device
    from .model.checkpoint import load_model as load

    return load(model, resolve_device(device))


def train(dataset: str | os.PathLike, out_dir: str | os.PathLike = "runs/cellseg", *,
          progress: Callable[[object], None] | None = None, **options):
    """Train (or fine-tune, ``init="nuclei"``; or resume, ``resume=...``) on a HW3 dataset folder until
    done; ``options`` are ``TrainConfig``'s fields (the ``train`` command's options by name).

    ``progress`` receives every event (steps, epochs with validation metrics) as it happens. Returns
    the final ``DoneEvent``: ``.model`` is the checkpoint the run hands on (best on validation, else
    its last), ``.metrics`` its validation figures."""
    from .training.config import TrainConfig
    from .training.engine import train as run

    done = None
    for done in run(TrainConfig(dataset=str(dataset), out_dir=str(out_dir), **options)):  # the last is DoneEvent
        if progress is not None:
            progress(done)
    return done


def evaluate(results: str | os.PathLike, truth: str | os.PathLike, *, mapping: str | os.PathLike | None = None,
             class_agnostic: bool = False, score_thresh: float = SCORE_THRESH) -> dict[str, object]:
    """COCO AP/AP50 (all and per class) and TP/(TP+FP+FN), precision, recall, F1 and PQ at IoU 0.5 of
    a results JSON (``export``'s) against a folder of samples with ground truth (``val/``); as
    ``napari-cellseg evaluate``. ``mapping``: the file naming the results' image ids."""
    from .evaluation.evaluate import evaluate_file

    return evaluate_file(results, truth, mapping=mapping, class_agnostic=class_agnostic, score_thresh=score_thresh)


__all__ = ["Segmentation", "segment", "load_model", "train", "evaluate"]
