"""Label images <-> COCO results (RLE), the mapping file, and COCO ground truth.

A submission is a JSON list of ``{"image_id", "bbox", "score", "category_id", "segmentation"}``
where the segmentation is pycocotools' compressed RLE (column-major runs, counts as a str; the
encoding itself lives in ``rle.py``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..atomic import write_text_atomic
from ..errors import DatasetError
from .raw import Labels
from .rle import compress, compressed_rle, counts_from_crop, is_int, rle_counts, runs


_REQUIRED_RESULT_KEYS = ("image_id", "category_id", "score", "segmentation")
_MAPPING_KEYS = ("file_name", "id", "height", "width")
_MAX_DIRECT_ID = 2**20
"""Above this id, label images are renumbered before ``find_objects`` (which allocates per id)."""


# ---------------------------------------------------------------- labels <-> results


def instances(instance_image: np.ndarray) -> Iterator[tuple[int, tuple[slice, slice], np.ndarray]]:
    """(id, bounding slices, crop mask) of each instance in id order; one pass over the image in
    total, and huge ids renumbered first. Export and training targets both read instances here."""
    image = np.asarray(instance_image)
    if image.ndim != 2:
        raise ValueError(f"a label image must be H x W, got shape {image.shape}")
    if image.dtype == bool:
        image = image.astype(np.uint8)
    if not np.issubdtype(image.dtype, np.integer):
        raise DatasetError(f"a label image must hold whole instance ids, not {image.dtype}")
    if image.size and image.min() < 0:
        raise DatasetError(
            f"a label image holds the negative id {int(image.min())}; instance ids must be 0 (background) "
            "or positive, so those cells cannot be exported"
        )
    ids = None
    if image.size and int(image.max()) > _MAX_DIRECT_ID:
        # find_objects keeps one slot per possible id: one cell with id 2**25 would cost GBs
        ids, flat = np.unique(image, return_inverse=True)
        image = flat.reshape(image.shape).astype(np.int32) + (0 if ids[0] == 0 else 1)
        ids = ids if ids[0] == 0 else np.concatenate(([0], ids))
    for index, slices in enumerate(ndimage.find_objects(image)):
        if slices is not None:
            yield (index + 1 if ids is None else int(ids[index + 1])), slices, image[slices] == index + 1


def _encode_instances(instance_image: np.ndarray) -> list[tuple[int, dict, list[float], int]]:
    """(id, compressed RLE, bbox [x, y, w, h], area) per instance, each from its crop only."""
    height, width = np.shape(instance_image)
    ids, counts, boxes, areas = [], [], [], []
    for instance_id, (rows, cols), crop in instances(instance_image):
        ids.append(instance_id)
        counts.append(counts_from_crop(crop, rows.start, cols.start, height, width))
        boxes.append(
            [float(cols.start), float(rows.start), float(cols.stop - cols.start),
             float(rows.stop - rows.start)]
        )
        areas.append(int(np.count_nonzero(crop)))
    rles = compress(counts, height, width)
    return list(zip(ids, rles, boxes, areas))


def labels_to_results(
    labels: Mapping[int, np.ndarray], image_id: int, scores: Mapping[int, float] | None = None
) -> list[dict]:
    """One COCO result per instance of each class image; hand-drawn instances score 1.0."""
    scores = scores or {}
    results = []
    for class_id in sorted(labels):
        for instance_id, rle, bbox, _ in _encode_instances(labels[class_id]):
            results.append(
                {
                    "image_id": int(image_id),
                    "bbox": bbox,
                    "score": float(scores.get(instance_id, 1.0)),
                    "category_id": int(class_id),
                    "segmentation": rle,
                }
            )
    return results


def results_to_labels(
    results: Iterable[Mapping[str, Any]],
    image_id: int,
    shape: tuple[int, ...],
    score_thresh: float = 0.0,
) -> tuple[Labels, dict[int, float]]:
    """The results of one image -> (labels, score per id), e.g. to open a submission in napari.

    Ids run 1.. by descending score across all classes (one score table serves every class
    image); where instances of a class overlap, the higher score keeps the pixel. Every class
    with a result for this image gets a label image, even when the threshold empties it, so
    layers do not come and go with a slider.
    """
    height, width = int(shape[0]), int(shape[1])
    mine = [r for r in results if r["image_id"] == image_id]
    classes = sorted({int(r["category_id"]) for r in mine})
    flat = {k: np.zeros(height * width, np.int32) for k in classes}
    kept = [r for r in mine if float(r["score"]) >= score_thresh]
    kept.sort(key=lambda r: -float(r["score"]))
    scores: dict[int, float] = {}
    for rank in range(len(kept) - 1, -1, -1):  # lowest score first: higher scores paint over
        result = kept[rank]
        try:
            counts, rle_h, rle_w = rle_counts(result["segmentation"])
        except ValueError as err:
            raise DatasetError(f"Image {image_id}: a result has a damaged mask ({err}).") from None
        if (rle_h, rle_w) != (height, width):
            raise DatasetError(
                f"Image {image_id} is {height} x {width} but a result mask is {rle_h} x {rle_w}: "
                "the results were made for another image."
            )
        target = flat[int(result["category_id"])]
        for start, end in zip(*runs(counts)):
            target[start:end] = rank + 1
        scores[rank + 1] = float(result["score"])
    labels = {k: np.ascontiguousarray(v.reshape(width, height).T) for k, v in flat.items()}
    return labels, dict(sorted(scores.items()))


# ---------------------------------------------------------------- mapping file


def load_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """A JSON file's content; a missing or malformed file is one line naming it as ``what``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} {path} does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{what} {path} is not valid JSON ({err}).") from None
    except RecursionError:  # [[[[...]]]] nested thousands deep: no results or mapping file looks like that
        raise DatasetError(f"{what} {path} is nested too deeply to be a {what.lower()}.") from None


def load_mapping(path: str | os.PathLike) -> dict[str, dict]:
    """``test_image_name_to_ids.json`` -> file_name -> {"id", "height", "width"}.

    Duplicates are errors, not last-one-wins: a submission with two images under one id would be
    scored against the wrong ground truth without anyone noticing.
    """
    entries = load_json(path, "Mapping file")
    if not isinstance(entries, list):
        raise DatasetError(f"Mapping file {path} must hold a list of images.")
    mapping: dict[str, dict] = {}
    ids: set[int] = set()
    for n, entry in enumerate(entries):
        where = f"Mapping file {path}, entry {n}"
        if not isinstance(entry, dict) or any(k not in entry for k in _MAPPING_KEYS):
            raise DatasetError(f"{where}: needs keys {', '.join(_MAPPING_KEYS)}.")
        name, image_id = entry["file_name"], entry["id"]
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{where}: file_name must be a non-empty string.")
        if not _plain_file_name(name):
            raise DatasetError(
                f"{where}: file_name {name[:80]!r} must be the name of an image in the test folder, "
                "not a path (no folders, '..' or drive letters)."
            )
        if not all(is_int(entry[k]) for k in ("id", "height", "width")):
            raise DatasetError(f"{where}: id, height and width must be integers.")
        if entry["height"] <= 0 or entry["width"] <= 0:
            raise DatasetError(f"{where}: height and width must be positive.")
        if image_id in ids:
            raise DatasetError(f"{where}: id {image_id} is used twice.")
        if name in mapping:
            raise DatasetError(f"{where}: file name {name} is listed twice.")
        ids.add(image_id)
        mapping[name] = {"id": image_id, "height": entry["height"], "width": entry["width"]}
    return mapping


def _plain_file_name(name: str) -> bool:
    """A bare file name: mapping files may not point the reader at images outside the dataset folder."""
    return (name not in (".", "..") and not any(c in name for c in "/\\:")
            and not any(ord(c) < 32 for c in name))


def check_image_in_mapping(
    mapping: Mapping[str, Mapping[str, int]],
    file_name: str | os.PathLike,
    shape: tuple[int, ...],
    source: str = "the mapping file",
) -> int:
    """The image id of ``file_name``; an error if it is not mapped or its size disagrees.

    A size mismatch means the wrong image (or a resized copy) would be submitted under this id.
    """
    name = Path(file_name).name
    entry = mapping.get(str(file_name)) or mapping.get(name)
    if entry is None:
        raise DatasetError(f"Image {name} is not listed in {source}.")
    height, width = int(shape[0]), int(shape[1])
    if (entry["height"], entry["width"]) != (height, width):
        raise DatasetError(
            f"Image {name} is {height} x {width} but {source} says "
            f"{entry['height']} x {entry['width']}."
        )
    return int(entry["id"])


def stable_image_ids(ids_path: str | os.PathLike, images: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """Ids for images no mapping file lists (file name -> H, W): the ids ``ids_path`` already gives,
    new ones after its largest for the rest; the file is rewritten (atomically) when it grows, so
    a re-export of the same images keeps their ids and a results file can be read back."""
    ids_path = Path(ids_path)
    known = load_mapping(ids_path) if ids_path.exists() else {}
    next_id = max((int(e["id"]) for e in known.values()), default=0) + 1
    added = False
    for name, shape in images.items():
        if name not in known:
            known[name] = {"id": next_id, "height": int(shape[0]), "width": int(shape[1])}
            next_id, added = next_id + 1, True
    if added:
        write_json(ids_path, [{"file_name": n, **e} for n, e in known.items()])
    return {name: check_image_in_mapping(known, name, shape, source=ids_path.name) for name, shape in images.items()}


# ---------------------------------------------------------------- ground truth, JSON files


def ground_truth(
    items: Iterable[tuple[int, str, Mapping[int, np.ndarray]]], class_names: Sequence[str]
) -> dict:
    """COCO ground truth (images, annotations as compressed RLE, categories) from label images.

    Annotation ids start at 1: COCOeval uses 0 for "unmatched", so an id 0 would never match.
    """
    images, annotations, seen = [], [], set()
    for image_id, file_name, labels in items:
        height, width = _labels_shape(labels, file_name)
        if image_id in seen:
            raise DatasetError(f"Image {file_name}: id {image_id} is used twice.")
        seen.add(image_id)
        images.append(
            {"id": int(image_id), "file_name": str(file_name), "height": height, "width": width}
        )
        for class_id in sorted(labels):
            if not 1 <= class_id <= len(class_names):
                raise DatasetError(
                    f"Image {file_name}: class {class_id} is not one of 1..{len(class_names)}."
                )
            for _, rle, bbox, area in _encode_instances(labels[class_id]):
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": int(image_id),
                        "category_id": int(class_id),
                        "segmentation": rle,
                        "area": area,
                        "bbox": bbox,
                        "iscrowd": 0,
                    }
                )
    categories = [{"id": k, "name": name} for k, name in enumerate(class_names, start=1)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _labels_shape(labels: Mapping[int, np.ndarray], file_name: str) -> tuple[int, int]:
    """The one H x W shared by all class images of a sample."""
    shapes = {np.shape(image) for image in labels.values()}
    if len(shapes) != 1:
        detail = "has no label images" if not shapes else f"has label images of sizes {shapes}"
        raise DatasetError(f"Image {file_name} {detail}.")
    shape = shapes.pop()
    if len(shape) != 2:
        raise DatasetError(f"Image {file_name}: label images must be H x W, not {shape}.")
    return int(shape[0]), int(shape[1])


def compact_json(obj: Any) -> str:
    """Compact, strictly valid JSON (no NaN): the form of every results file we write."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``compact_json(obj)`` so that it appears whole or not at all."""
    write_text_atomic(path, compact_json(obj))


def read_results(
    path: str | os.PathLike,
    mapping_ids: set[int] | None = None,
    num_classes: int | None = None,
    image_sizes: Mapping[int, tuple[int, int]] | None = None,
) -> list[dict]:
    """Load and check a results JSON; segmentations come back as compressed RLE (counts str).

    Every mask is checked against its own size here, so a damaged file fails with its name and
    entry instead of crashing pycocotools' C code later; with ``image_sizes`` (image id -> height,
    width, e.g. from the mapping file) also against its image's size. Ids missing from
    ``image_sizes`` are left to ``mapping_ids`` or the caller.
    """
    results = load_json(path, "Results file")
    if not isinstance(results, list):
        raise DatasetError(f"Results file {path} must hold a list of results.")
    checked = []
    for n, result in enumerate(results):
        where = f"Results file {path}, entry {n}"
        if not isinstance(result, dict) or any(k not in result for k in _REQUIRED_RESULT_KEYS):
            raise DatasetError(f"{where}: needs keys {', '.join(_REQUIRED_RESULT_KEYS)}.")
        checked.append(_checked_result(result, where, mapping_ids, num_classes))
        size = None if image_sizes is None else image_sizes.get(checked[-1]["image_id"])
        rle_size = tuple(checked[-1]["segmentation"]["size"])
        if size is not None and rle_size != tuple(size):
            raise DatasetError(
                f"{where}: the mask is {rle_size[0]} x {rle_size[1]} but image {checked[-1]['image_id']} is "
                f"{size[0]} x {size[1]}; the results were made for other images."
            )
    return checked


def _checked_result(
    result: dict, where: str, mapping_ids: set[int] | None, num_classes: int | None
) -> dict:
    image_id, category_id, score = result["image_id"], result["category_id"], result["score"]
    if not is_int(image_id) or not is_int(category_id):
        raise DatasetError(f"{where}: image_id and category_id must be integers.")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise DatasetError(f"{where}: score must be a finite number.")
    if mapping_ids is not None and image_id not in mapping_ids:
        raise DatasetError(f"{where}: image id {image_id} is not in the mapping file.")
    if num_classes is not None and not 1 <= category_id <= num_classes:
        raise DatasetError(f"{where}: category {category_id} is not one of 1..{num_classes}.")
    bbox = result.get("bbox")
    if bbox is not None and (
        not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox)
    ):
        raise DatasetError(f"{where}: bbox must be [x, y, width, height].")
    try:
        segmentation = compressed_rle(result["segmentation"])
    except ValueError as err:
        raise DatasetError(f"{where}: bad segmentation ({err}).") from None
    return {**result, "segmentation": segmentation}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
