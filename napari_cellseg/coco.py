"""Label images <-> COCO results (RLE), the mapping file, and COCO ground truth.

A submission is a JSON list of ``{"image_id", "bbox", "score", "category_id", "segmentation"}``
where the segmentation is pycocotools' compressed RLE (column-major runs, counts as a str).
Dense images hold hundreds of instances, so every instance is encoded from its bounding crop
(O(crop), not O(H x W)) and decoded from its runs; pycocotools only compresses the run lengths,
which keeps the strings byte-identical to ``pycocotools.mask.encode``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

from .atomic import write_text_atomic
from .errors import DatasetError

Labels = dict[int, np.ndarray]

RESULT_KEYS = ("image_id", "bbox", "score", "category_id", "segmentation")
_REQUIRED_RESULT_KEYS = ("image_id", "category_id", "score", "segmentation")
_MAPPING_KEYS = ("file_name", "id", "height", "width")


# ---------------------------------------------------------------- RLE primitives


def _counts_from_crop(crop: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Column-major run lengths of a mask known only inside its bounding crop.

    Each crop column is padded with a background pixel above and below, so the runs found there
    never cross columns; runs that continue from the bottom of one image column into the top of
    the next (an instance spanning all rows) are merged afterwards, as pycocotools would.
    """
    h, w = crop.shape
    padded = np.zeros((w, h + 2), dtype=np.int8)  # one row per crop column: column-major order
    padded[:, 1:-1] = crop.T
    edges = np.diff(padded.ravel())
    starts = np.flatnonzero(edges == 1) + 1
    ends = np.flatnonzero(edges == -1) + 1

    def to_image(pos: np.ndarray) -> np.ndarray:
        column, row = np.divmod(pos, h + 2)
        return (column + left) * height + (row - 1 + top)

    starts, ends = to_image(starts), to_image(ends)
    if starts.size > 1:  # runs that touch across a column boundary are one run
        keep = np.concatenate(([True], starts[1:] != ends[:-1]))
        starts = starts[keep]
        ends = ends[np.concatenate((keep[1:], [True]))]
    return _counts_from_runs(starts, ends, height * width)


def _counts_from_runs(starts: np.ndarray, ends: np.ndarray, total: int) -> np.ndarray:
    """Alternating background/foreground lengths, pycocotools' layout (last run never empty)."""
    if starts.size == 0:
        return np.array([total], dtype=np.int64)
    edges = np.empty(2 * starts.size + 2, dtype=np.int64)
    edges[0] = 0
    edges[1:-1:2] = starts
    edges[2:-1:2] = ends
    edges[-1] = total
    counts = np.diff(edges)
    return counts if counts[-1] > 0 else counts[:-1]


def _compress(counts: Sequence[np.ndarray], height: int, width: int) -> list[dict]:
    """Uncompressed run lengths -> compressed RLEs with str counts (pycocotools does the LEB128)."""
    if not counts:
        return []
    rles = mask_utils.frPyObjects(
        [{"size": [height, width], "counts": c} for c in counts], height, width
    )
    return [{"size": [height, width], "counts": r["counts"].decode("ascii")} for r in rles]


def _parse_counts(counts: str | bytes) -> np.ndarray:
    """pycocotools' compressed counts string -> run lengths (int64), vectorised.

    Mirrors ``rleFrString``: 5-bit groups offset by 48, bit 0x20 = more groups follow, bit 0x10
    of the last group = negative; from the fourth count on, values are deltas to two counts back.
    """
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0 or chars.min() < 0 or chars.max() > 63 or chars[-1] & 0x20:
        raise ValueError("not a compressed RLE string")
    last = (chars & 0x20) == 0
    group_end = np.flatnonzero(last)
    group_start = np.concatenate(([0], group_end[:-1] + 1))
    if (group_end - group_start).max() > 6:  # over 35 bits: no uint32 count needs that
        raise ValueError("RLE count out of range")
    shift = 5 * (np.arange(chars.size) - np.repeat(group_start, group_end - group_start + 1))
    values = np.add.reduceat((chars & 0x1F) << shift, group_start)
    negative = (chars[group_end] & 0x10) != 0
    values[negative] -= np.left_shift(1, shift[group_end[negative]] + 5)
    # Undo the delta coding (counts[m] += counts[m - 2] for m > 2): running sums of every other
    # value, from counts[1] and from counts[2].
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    return values


def _rle_counts(rle: Mapping[str, Any]) -> tuple[np.ndarray, int, int]:
    """Validated run lengths and (H, W) of an RLE with str, bytes or list counts.

    Raises ValueError when the RLE cannot describe an H x W mask; pycocotools' C decoder does not
    check this and would write out of bounds.
    """
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError("segmentation must be an RLE with 'size' and 'counts'")
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(_is_int(v) and v >= 0 for v in size)
    ):
        raise ValueError("RLE size must be [height, width]")
    height, width = int(size[0]), int(size[1])
    raw = rle["counts"]
    if isinstance(raw, (str, bytes)):
        counts = _parse_counts(raw) if raw else np.zeros(0, dtype=np.int64)
    elif isinstance(raw, (list, tuple, np.ndarray)) and all(_is_int(v) for v in raw):
        counts = np.asarray(raw, dtype=np.int64).reshape(-1)
    else:
        raise ValueError("RLE counts must be a string or a list of integers")
    if counts.size and counts.min() < 0:
        raise ValueError("RLE has negative run lengths")
    if int(counts.sum()) != height * width:
        raise ValueError(f"RLE runs cover {int(counts.sum())} pixels, not {height} x {width}")
    return counts, height, width


def _runs(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-major [start, end) of each foreground run."""
    edges = np.concatenate(([0], np.cumsum(counts)))
    return edges[1:-1:2], edges[2::2]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def encode_mask(mask: np.ndarray) -> dict:
    """Bool or 0/1 H x W mask -> compressed RLE, identical to pycocotools' encode (counts str)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be H x W, got shape {mask.shape}")
    height, width = mask.shape
    counts = _counts_from_crop(mask != 0, 0, 0, height, width)
    return _compress([counts], height, width)[0]


def decode_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """RLE (counts str, bytes or an uncompressed list) -> bool H x W mask.

    Validates the runs first, so a damaged submission raises ValueError instead of crashing.
    """
    counts, height, width = _rle_counts(rle)
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(width, height).T


def compressed_rle(rle: Mapping[str, Any]) -> dict:
    """Any accepted RLE -> validated compressed RLE with str counts, the one form we pass on.

    Raises ValueError for an RLE that does not describe its H x W mask.
    """
    counts, height, width = _rle_counts(rle)
    if isinstance(rle["counts"], (str, bytes)):
        text = rle["counts"]
        return {"size": [height, width], "counts": text if isinstance(text, str) else text.decode()}
    return _compress([counts], height, width)[0]


# ---------------------------------------------------------------- labels <-> results


def _instances(instance_image: np.ndarray) -> Iterator[tuple[int, tuple[slice, slice], np.ndarray]]:
    """(id, bounding slices, crop mask) of each instance; one pass over the image in total."""
    image = np.asarray(instance_image)
    if image.ndim != 2:
        raise ValueError(f"a label image must be H x W, got shape {image.shape}")
    if image.dtype == bool:
        image = image.astype(np.uint8)
    for index, slices in enumerate(ndimage.find_objects(image)):
        if slices is not None:
            yield index + 1, slices, image[slices] == index + 1


def _encode_instances(instance_image: np.ndarray) -> list[tuple[int, dict, list[float], int]]:
    """(id, compressed RLE, bbox [x, y, w, h], area) per instance, each from its crop only."""
    height, width = np.shape(instance_image)
    ids, counts, boxes, areas = [], [], [], []
    for instance_id, (rows, cols), crop in _instances(instance_image):
        ids.append(instance_id)
        counts.append(_counts_from_crop(crop, rows.start, cols.start, height, width))
        boxes.append(
            [float(cols.start), float(rows.start), float(cols.stop - cols.start),
             float(rows.stop - rows.start)]
        )
        areas.append(int(np.count_nonzero(crop)))
    rles = _compress(counts, height, width)
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
            counts, rle_h, rle_w = _rle_counts(result["segmentation"])
        except ValueError as err:
            raise DatasetError(f"Image {image_id}: a result has a damaged mask ({err}).") from None
        if (rle_h, rle_w) != (height, width):
            raise DatasetError(
                f"Image {image_id} is {height} x {width} but a result mask is {rle_h} x {rle_w}: "
                "the results were made for another image."
            )
        target = flat[int(result["category_id"])]
        for start, end in zip(*_runs(counts)):
            target[start:end] = rank + 1
        scores[rank + 1] = float(result["score"])
    labels = {k: np.ascontiguousarray(v.reshape(width, height).T) for k, v in flat.items()}
    return labels, dict(sorted(scores.items()))


# ---------------------------------------------------------------- mapping file


def _load_json(path: str | os.PathLike, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} {path} does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{what} {path} is not valid JSON ({err}).") from None


def load_mapping(path: str | os.PathLike) -> dict[str, dict]:
    """``test_image_name_to_ids.json`` -> file_name -> {"id", "height", "width"}.

    Duplicates are errors, not last-one-wins: a submission with two images under one id would be
    scored against the wrong ground truth without anyone noticing.
    """
    entries = _load_json(path, "Mapping file")
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
        if not all(_is_int(entry[k]) for k in ("id", "height", "width")):
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


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write compact, strictly valid JSON (no NaN) that appears whole or not at all."""
    write_text_atomic(path, json.dumps(obj, separators=(",", ":"), allow_nan=False))


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
    results = _load_json(path, "Results file")
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
    if not _is_int(image_id) or not _is_int(category_id):
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
