"""napari writer: Labels layers -> a COCO results JSON (File > Save Layers, ``.json``).

Also the one place that turns Labels layers back into what ``coco.labels_to_results`` takes, for
the writer and the Export & Evaluate widget alike:

- the image: ``metadata["cellseg"]["source"]``; its id comes from the mapping file by file name,
  or, for a HW3 sample (``<sample>/image.tif``), from its position in its folder (1..n, the ids
  ``pipeline.samples_ground_truth`` and ``napari-cellseg evaluate`` use), or, for the user's own
  image, from ``<results>.images.json`` beside the results (``layout.ids_file``);
- a stack layer (role ``stack``, planes first): one image per plane, named ``<file>#<plane>``;
- the class: ``metadata["cellseg"]["class_id"]`` (else a ``classK`` layer name);
- the scores: the layer's ``features`` (``index`` -> ``score``); an id without a row was drawn by
  hand and scores 1.0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info

from .reader import META, STACK_ROLE, layer_meta
from .session import USER_ERRORS, report
from ..errors import DatasetError, LayerError
from ..io.layout import (
    MAPPING_NAME, PLANE_SEPARATOR, find_mapping, ids_file, image_name, is_sample_image, sample_image_id,
)

_CLASS_NAME = re.compile(r"class(\d+)", re.IGNORECASE)


@dataclass
class ImageLabels:
    """All class layers of one image, copied out of napari (safe to use in a worker)."""

    source: Path | None
    labels: dict[int, np.ndarray] = field(default_factory=dict)
    scores: dict[int, dict[int, float]] = field(default_factory=dict)  # class id -> {id: score}

    @property
    def shape(self) -> tuple[int, int]:
        return next(iter(self.labels.values())).shape[:2]


def class_id_of(name: str, metadata: Mapping) -> int:
    meta = layer_meta(metadata)
    if meta.get("class_id"):
        return int(meta["class_id"])
    match = _CLASS_NAME.search(name or "")
    if match and int(match.group(1)) >= 1:
        return int(match.group(1))
    raise LayerError(f"layer '{name}': its cell class is unknown; name it class1, class2, ...")


def scores_from_features(features) -> dict[int, float]:
    """Instance id -> score from a layer's features table ({} when it has none)."""
    if features is None or "index" not in features or "score" not in features:
        return {}
    ids, values = np.asarray(features["index"]), np.asarray(features["score"], dtype=float)
    return {int(i): float(s) for i, s in zip(ids, values) if np.isfinite(s)}


def group_layers(layers: Iterable[tuple[str, np.ndarray, Mapping, object]]) -> list[ImageLabels]:
    """(name, data, metadata, features) of Labels layers -> one ``ImageLabels`` per source image."""
    groups: dict[str, ImageLabels] = {}
    for name, data, metadata, features in _planes(layers):
        source = layer_meta(metadata).get("source")
        data = np.asarray(data)
        if data.ndim != 2:
            raise LayerError(f"layer '{name}' is not a 2-D label image (shape {data.shape})")
        class_id = class_id_of(name, metadata)
        group = groups.setdefault(str(source), ImageLabels(Path(source) if source else None))
        if class_id in group.labels:
            raise LayerError(f"two layers hold class {class_id} of the same image; hide or remove one ('{name}')")
        if data.size and np.issubdtype(data.dtype, np.integer) and int(data.max()) > np.iinfo(np.int32).max:
            raise LayerError(  # int32 would wrap such an id onto another cell or a negative number
                f"layer '{name}' holds cell id {int(data.max())}, above the 2**31 - 1 this tool keeps; "
                "renumber its cells"
            )
        group.labels[class_id] = np.array(data, dtype=np.int32, copy=True)
        group.scores[class_id] = scores_from_features(features)
    return list(groups.values())


def _planes(layers: Iterable[tuple[str, np.ndarray, Mapping, object]]) -> Iterator[tuple]:
    """Stack layers (role ``stack``, planes first) as one 2-D layer per plane of ``<file>#<plane>``,
    the names ``napari-cellseg export`` gives planes; other layers as they are."""
    for name, data, metadata, features in layers:
        meta = layer_meta(metadata)
        if meta.get("role") != STACK_ROLE or np.ndim(data) != 3:
            yield name, data, metadata, features
            continue
        for plane in range(np.shape(data)[0]):
            source = f"{meta.get('source')}{PLANE_SEPARATOR}{plane}" if meta.get("source") else None
            yield f"{name}, plane {plane}", data[plane], {META: {**meta, "source": source}}, features


def image_id_for(source: Path | None, shape: tuple[int, ...], mapping_path: Path | None = None) -> int | None:
    """The submission id of an image (see the module docstring); None when no mapping file applies."""
    from ..io.coco import check_image_in_mapping, load_mapping
    from ..io.samples import find_samples

    if source is None:
        raise LayerError(
            "the image of these labels is unknown (not opened from a file); open the image from its file first"
        )
    if is_sample_image(source):  # a mapping file lists test images, never image.tif of a sample
        return sample_image_id([s.name for s in find_samples(source.parent.parent)], source.parent.name)
    mapping_path = mapping_path or find_mapping(source)
    if mapping_path is None:
        return None
    return check_image_in_mapping(load_mapping(mapping_path), source.name, shape, source=Path(mapping_path).name)


def to_results(
    groups: Iterable[ImageLabels], mapping_path: Path | None = None, ids_file: Path | None = None
) -> list[dict]:
    """COCO results of all groups; each class gets its own score table (ids repeat across classes).

    An image no mapping file lists (the user's own) gets an id from ``ids_file`` (``layout.ids_file``,
    ``coco.stable_image_ids``); without ``ids_file`` that is an error."""
    from ..io.coco import labels_to_results, stable_image_ids

    groups = list(groups)
    ids = [image_id_for(g.source, g.shape, mapping_path) for g in groups]
    own = {image_name(g.source): g.shape for g, i in zip(groups, ids) if i is None}
    if own and ids_file is None:
        raise DatasetError(f"no mapping file for {next(iter(own))}: choose {MAPPING_NAME} in Export & Evaluate")
    generated = stable_image_ids(ids_file, own) if own else {}
    results: list[dict] = []
    for group, image_id in zip(groups, ids):
        image_id = generated[image_name(group.source)] if image_id is None else image_id
        for class_id in sorted(group.labels):
            results += labels_to_results({class_id: group.labels[class_id]}, image_id, group.scores.get(class_id, {}))
    return results


def write_coco_results(path: str, layer_data: list[tuple]) -> list[str]:
    """npe2 writer: the given Labels layers -> ``path`` (COCO results, written atomically)."""
    from ..io.coco import write_json

    try:
        labels = [
            (meta.get("name", ""), data, meta.get("metadata") or {}, meta.get("features"))
            for data, meta, kind in layer_data if kind == "labels"
        ]
        results = to_results(group_layers(labels), ids_file=ids_file(path))
        write_json(path, results)
    except USER_ERRORS as exc:
        show_error(report(exc))
        return []
    show_info(f"wrote {len(results)} cells to {path}")
    return [str(path)]
