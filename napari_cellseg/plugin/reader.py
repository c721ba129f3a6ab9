"""napari reader: a HW3 sample folder, or a COCO results JSON over its image.

Also the one place that says how our layers look (``image_layer``, ``labels_layer_kwargs``): the
Segment widget and the sample data build their layers here too. Every layer we make carries
``metadata["cellseg"]`` = ``{"source": image path, "class_id", "class_name", "role"}`` so the
Export widget and the writer can find the image id and the class later, after any edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_error

from .session import USER_ERRORS, report
from ..errors import DatasetError
from ..io.layout import IMAGE_NAME, MAPPING_NAME, TEST_FOLDER, class_name, find_mapping

META = "cellseg"
PREDICTION = "prediction"
GROUND_TRUTH = "ground truth"
STACK_ROLE = "stack"  # a segmented stack: one (planes, H, W) layer per class, exported plane by plane


# ---------------------------------------------------------------- how our layers look


def layer_meta(layer_or_metadata: Any) -> dict:
    """Our part of a layer's metadata (empty when the layer is not ours)."""
    metadata = getattr(layer_or_metadata, "metadata", layer_or_metadata) or {}
    meta = metadata.get(META) if isinstance(metadata, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


def image_layer(image: np.ndarray, source: Path | None, name: str) -> tuple:
    """Layer data tuple of an RGB image that remembers the file it came from."""
    meta = {META: {"source": str(source) if source else None}}
    return image, {"name": name, "rgb": image.ndim == 3 and image.shape[-1] in (3, 4), "metadata": meta}, "image"


def features_table(label_image_ids: np.ndarray, class_name: str, scores: Mapping[int, float]) -> dict:
    """napari features: one row per instance id, shown on hover (score 1.0 = drawn by hand)."""
    ids = np.asarray(label_image_ids, dtype=np.int64)
    return {
        "index": ids,
        "class": np.full(len(ids), class_name, dtype=object),
        "score": np.array([float(scores.get(int(i), 1.0)) for i in ids], dtype=np.float32),
    }


def labels_layer_kwargs(
    class_id: int,
    class_name: str,
    *,
    source: Path | None,
    role: str,
    ids: np.ndarray | None = None,
    scores: Mapping[int, float] | None = None,
    name: str | None = None,
) -> dict:
    """Keyword arguments for ``viewer.add_labels`` (or a layer data tuple) of one class."""
    kwargs: dict[str, Any] = {
        "name": name or (class_name if role == PREDICTION else f"{class_name} ({role})"),
        "metadata": {
            META: {"source": str(source) if source else None, "class_id": int(class_id),
                   "class_name": class_name, "role": role}
        },
    }
    if ids is not None:
        kwargs["features"] = features_table(ids, class_name, scores or {})
    if role == GROUND_TRUTH:
        kwargs["opacity"] = 0.5
    return kwargs


# ---------------------------------------------------------------- the reader contribution


def napari_get_reader(path: str | list[str]):
    """Our reader for a sample folder or a results JSON; None for anything else."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_dir() and (p / IMAGE_NAME).is_file():
        return read_sample_folder
    if p.suffix.lower() == ".json" and p.is_file() and _looks_like_results(p):
        return read_results_json
    return None


def _looks_like_results(path: Path) -> bool:
    """A results list mentions 'segmentation' early; the mapping file and others do not."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(65536)
    except OSError:
        return False
    return head.lstrip().startswith("[") and '"segmentation"' in head


def _reported(read):
    """Reader errors become one notification line and no layers, never a traceback."""

    def wrapper(path):
        try:
            return read(path)
        except USER_ERRORS as exc:
            show_error(report(exc))
            return [(None,)]

    wrapper.__name__ = read.__name__
    wrapper.__doc__ = read.__doc__
    return wrapper


@_reported
def read_sample_folder(path: str | Path) -> list[tuple]:
    """``<sample>/image.tif`` + ``classK.tif`` -> the image and one ground-truth layer per class."""
    from ..io.samples import read_sample_dir, read_sample

    folder = Path(path)
    sample = read_sample_dir(folder)
    image, labels = read_sample(sample)
    return sample_layers(sample.image_path, image, labels, name=folder.name[:12])


def sample_layers(source: Path, image: np.ndarray, labels: Mapping[int, np.ndarray], name: str) -> list[tuple]:
    layers = [image_layer(image, source, name)]
    for class_id in sorted(labels):
        kwargs = labels_layer_kwargs(class_id, class_name(class_id), source=source, role=GROUND_TRUTH)
        layers.append((labels[class_id], kwargs, "labels"))
    return layers


@_reported
def read_results_json(path: str | Path) -> list[tuple]:
    """A COCO results file -> each image it covers (found via the mapping) with its class layers.

    With several images, all but the first are hidden and layer names start with the image name.
    """
    from ..io.coco import load_mapping, read_results, results_to_labels
    from ..io.images import read_image

    path = Path(path)
    mapping_path = find_mapping(path)
    if mapping_path is None:
        raise DatasetError(
            f"{path.name}: no {MAPPING_NAME} next to it or in its parent folder, so its images are unknown"
        )
    mapping = load_mapping(mapping_path)
    by_id = {entry["id"]: name for name, entry in mapping.items()}
    results = read_results(path, mapping_ids=set(by_id))
    image_ids = list(dict.fromkeys(r["image_id"] for r in results))
    if not image_ids:
        raise DatasetError(f"{path.name} holds no results")
    layers: list[tuple] = []
    for n, image_id in enumerate(image_ids):
        image_path = _find_image(by_id[image_id], (path.parent, mapping_path.parent))
        image = read_image(image_path)
        labels, scores = results_to_labels(results, image_id, image.shape)
        prefix = f"{Path(by_id[image_id]).stem[:8]} " if len(image_ids) > 1 else ""
        group = [image_layer(image, image_path, f"{prefix}image")]
        for class_id, label_image in labels.items():
            ids = np.unique(label_image)
            kwargs = labels_layer_kwargs(
                class_id, class_name(class_id), source=image_path, role=PREDICTION,
                ids=ids[ids > 0], scores=scores, name=prefix + class_name(class_id),
            )
            group.append((label_image, kwargs, "labels"))
        for _, kwargs, _ in group:
            kwargs["visible"] = n == 0
        layers += group
    return layers


def _find_image(file_name: str, folders: tuple[Path, ...]) -> Path:
    for folder in folders:
        for candidate in (folder / file_name, folder / TEST_FOLDER / file_name):
            if candidate.is_file():
                return candidate
    raise DatasetError(f"image {file_name} not found next to the results file or in {TEST_FOLDER}/")
