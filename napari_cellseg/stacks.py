"""Stacks and time-lapses: segment plane by plane into one stacked label image per class.

Why plane by plane: the network sees 2-D images, and a plane's ``RawInstances`` (crops as uint8)
takes a few hundred kB where a full-size float mask per instance would take GBs, so memory grows
with the cells found, not with planes x pixels. Ids are unique across the stack: instance ``i`` of
plane ``p`` is label ``offset[p] + i + 1``, where ``offset[p]`` counts the instances of the earlier
planes - whatever the thresholds, as ``postprocess.to_labels`` does for one image.

Axes: a TIFF's plane axis is its T or Z axis (tifffile's ``series.axes``, from ImageJ or OME
metadata). Without metadata the first axis is the planes when it is longer than
``images.MAX_CHANNELS`` (4), or when the file has a separate colour axis (``S``); a shorter first
axis of a 3-D file is read as colour channels, as for a single image. A file with both T and Z
longer than 1 is refused: save one time point or one slice. By default the same cell has a new id
in every plane; ``link_over_time`` gives it the id it had in the previous plane when their masks
overlap (IoU >= 0.5).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from .atomic import atomic_path
from .defaults import OVERLAP, TILE_SIZE
from .errors import DatasetError
from .images import MAX_CHANNELS, _check_file, _check_has_pixels, _check_size, _is_tiff, read_image, to_rgb_uint8
from .inference import RawInstances
from .layout import PLANE_SEPARATOR, ExportItem
from .postprocess import to_labels
from .progress import Progress, StopCheck, drain, stopped
from .scale import AUTO, iter_predict_scaled

_NAMED = "TZ"
_UNNAMED = "QIR"  # tifffile's letters for an axis without metadata (Q), a page sequence (I), tiles (R)


@dataclass
class Stack:
    """Planes of an image stack, planes first; each plane is any 2-D layout ``to_rgb_uint8`` reads.

    ``data`` may be a numpy array or a lazy one (dask, zarr: napari layers); a plane is read and
    normalised only when asked for. ``axis`` is ``T``, ``Z`` or ``""`` (unknown, or one image).
    """

    data: object
    axis: str = ""

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def plane(self, index: int) -> np.ndarray:
        """Plane ``index`` as ``H x W x 3`` ``uint8``: each plane normalised on its own, as a
        single image would be, so a plane segments exactly like the same image saved alone."""
        return to_rgb_uint8(np.asarray(self.data[index]))


def plane_axis(shape: tuple[int, ...], axes: str) -> int | None:
    """Index of the plane axis of a TIFF series (the rule in the module docstring); None: one image."""
    extra = [(i, a, n) for i, (a, n) in enumerate(zip(axes, shape)) if a not in "YXS" and n > 1]
    named = [(i, a) for i, a, _ in extra if a in _NAMED]
    if len(named) > 1:
        raise DatasetError(
            f"this stack has both time points and slices {tuple(shape)} (axes {axes}); "
            "save one time point or one slice (Fiji: Image > Duplicate) and use that"
        )
    if named:
        return named[0][0]
    unnamed = [(i, n) for i, a, n in extra if a in _UNNAMED]
    if not unnamed:
        return None
    i, n = unnamed[0]
    return i if n > MAX_CHANNELS or "S" in axes or len(extra) > 1 else None


def read_stack(path: str | os.PathLike) -> Stack:
    """A TIFF stack (or any image: a stack of one plane, axis ``""``), checked as ``read_image`` does."""
    path = Path(path)
    _check_file(path, "image")
    if not _is_tiff(path, "image"):
        return Stack(read_image(path)[None])
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            index = _file_plane_axis(path, shape, axes)
            if index is None:
                return Stack(read_image(path)[None])
            _check_size(path, *_plane_size(shape, axes), "image")
            data = np.moveaxis(series.asarray(), index, 0)
    except (DatasetError, MemoryError):
        raise
    except Exception as exc:  # tifffile and the codecs raise many kinds for damaged files
        raise DatasetError(f"{path}: not a readable TIFF image (damaged or truncated?): {exc}") from None
    letter = axes[index] if axes[index] in _NAMED else ""
    try:
        to_rgb_uint8(np.asarray(data[0]))  # one clear line now for a plane no image reader takes
    except DatasetError as exc:
        raise DatasetError(f"{path}: a plane of this stack: {exc}") from None
    return Stack(data, letter)


def stack_size(path: str | os.PathLike) -> tuple[int, int, int]:
    """Planes, height and width of a stack (1 plane for a single image), from the header alone."""
    path = Path(path)
    _check_file(path, "image")
    if _is_tiff(path, "image"):
        try:
            with tifffile.TiffFile(path) as tif:
                shape, axes = tuple(tif.series[0].shape), tif.series[0].axes
        except Exception as exc:
            raise DatasetError(f"{path}: not a readable TIFF image (damaged or truncated?): {exc}") from None
        index = _file_plane_axis(path, shape, axes)
        if index is not None:
            return (shape[index], *_plane_size(shape, axes))
    from .images import read_image_size

    return (1, *read_image_size(path))


def _file_plane_axis(path: Path, shape: tuple[int, ...], axes: str) -> int | None:
    """``plane_axis``, its refusal naming the file."""
    _check_has_pixels(path, shape)
    try:
        return plane_axis(shape, axes)
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _plane_size(shape: tuple[int, ...], axes: str) -> tuple[int, int]:
    if "Y" in axes and "X" in axes:
        return int(shape[axes.index("Y")]), int(shape[axes.index("X")])
    return int(shape[-2]), int(shape[-1])


@functools.lru_cache(maxsize=1)
def _cached_stack(path: str, mtime_ns: int, size: int) -> Stack:
    return read_stack(path)


def read_plane(path: str | os.PathLike, plane: int) -> np.ndarray:
    """Plane ``plane`` of a stack as RGB uint8; the last stack read stays cached, so exporting its
    planes one after another decodes the file once."""
    stat = Path(path).stat()
    stack = _cached_stack(str(path), stat.st_mtime_ns, stat.st_size)
    if not 0 <= plane < len(stack):
        raise DatasetError(f"{path}: has {len(stack)} plane(s); there is no plane {plane}")
    return stack.plane(plane)


def plane_name(file_name: str, plane: int) -> str:
    return f"{file_name}{PLANE_SEPARATOR}{plane}"


def split_plane_name(name: str) -> tuple[str, int | None]:
    """``("t1.tif", 3)`` for ``t1.tif#3``; ``(name, None)`` for anything else. Only ASCII digits
    count: ``t1.tif#²`` passes ``str.isdigit`` but is no plane number, so it is a file name."""
    file_name, sep, plane = name.rpartition(PLANE_SEPARATOR)
    return (file_name, int(plane)) if sep and plane.isascii() and plane.isdigit() else (name, None)


# ------------------------------------------------------------------------------- prediction


@dataclass
class StackInstances:
    """Raw instances of every plane; ``offsets[p]`` is added to plane ``p``'s ids (see module doc)."""

    planes: list[RawInstances]
    axis: str = ""

    @property
    def offsets(self) -> np.ndarray:
        counts = [len(raw) for raw in self.planes]
        return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else np.zeros(0, np.int64)

    @property
    def shape(self) -> tuple[int, int, int]:
        h, w = self.planes[0].image_shape if self.planes else (0, 0)
        return len(self.planes), h, w

    @property
    def nbytes(self) -> int:
        return sum(raw.nbytes for raw in self.planes)

    def __len__(self) -> int:
        return sum(len(raw) for raw in self.planes)


def iter_predict_stack(
    model,
    stack: Stack,
    *,
    device=None,
    tile_size: int = TILE_SIZE,
    overlap: int = OVERLAP,
    flip: bool = False,
    scale: float | str = AUTO,
    diameter: float | None = None,
    should_stop: StopCheck | None = None,
) -> Generator[Progress, None, StackInstances | None]:
    """Segment plane by plane, yielding ``Progress(planes_done, planes, "plane")``; returns the
    ``StackInstances``, or None when ``should_stop`` says so (checked before every plane and tile).
    Each plane gets its own ``auto`` scale (``scale.iter_predict_scaled``)."""
    results: list[RawInstances] = []
    total = len(stack)
    for p in range(total):
        if stopped(should_stop):
            return None
        raw = drain(iter_predict_scaled(model, stack.plane(p), device=device, tile_size=tile_size, overlap=overlap,
                                        flip=flip, scale=scale, diameter=diameter, should_stop=should_stop))
        if raw is None:
            return None
        results.append(raw)
        yield Progress(p + 1, total, "plane")
    return StackInstances(results, stack.axis)


def predict_stack(model, stack: Stack, **options) -> StackInstances:
    """``iter_predict_stack`` run to the end, for scripts."""
    return drain(iter_predict_stack(model, stack, **options))


def plane_labels(
    result: StackInstances, plane: int, score_thresh: float, mask_thresh: float, classes: Iterable[int]
) -> dict[int, np.ndarray]:
    """``to_labels`` of one plane with the stack-wide ids (background stays 0)."""
    labels = to_labels(result.planes[plane], score_thresh, mask_thresh, classes=classes)
    offset = int(result.offsets[plane])
    if offset:
        for image in labels.values():
            image[image > 0] += offset
    return labels


def to_stack_labels(
    result: StackInstances, score_thresh: float = 0.5, mask_thresh: float = 0.6, classes: Iterable[int] = (1,),
    out: dict[int, np.ndarray] | None = None,
) -> dict[int, np.ndarray]:
    """Class id -> ``(planes, H, W)`` int32 labels, ids unique across the stack. ``out`` (same
    shapes) is filled in place: a slider then redraws into the arrays a napari layer already shows."""
    classes = sorted(int(c) for c in classes)
    if out is None:
        out = {k: np.zeros(result.shape, np.int32) for k in classes}
    for p in range(len(result.planes)):
        for k, image in plane_labels(result, p, score_thresh, mask_thresh, classes).items():
            out[k][p] = image
    return out


def link_over_time(labels: dict[int, np.ndarray], min_iou: float = 0.5) -> dict[int, np.ndarray]:
    """A cell keeps its id from plane to plane: class by class, an instance whose mask overlaps one
    of the previous plane with IoU >= ``min_iou`` takes that id (pairs matched one to one, best IoU
    first); the others keep their stack-wide unique ids. In place; returns ``labels``. After this
    the score table of ``stack_scores`` holds for the first plane of each linked cell only."""
    for stack in labels.values():
        for t in range(1, len(stack)):
            prev, cur = stack[t - 1], stack[t]
            both = (prev > 0) & (cur > 0)
            if not both.any():
                continue
            pairs, inter = np.unique(np.stack([prev[both], cur[both]]), axis=1, return_counts=True)
            area_prev = np.bincount(prev.ravel())
            area_cur = np.bincount(cur.ravel())
            iou = inter / (area_prev[pairs[0]] + area_cur[pairs[1]] - inter)
            relabel = np.arange(area_cur.size, dtype=stack.dtype)
            taken_prev, taken_cur = set(), set()
            for j in np.argsort(-iou, kind="stable"):
                p, c = int(pairs[0, j]), int(pairs[1, j])
                if iou[j] < min_iou:
                    break
                if p not in taken_prev and c not in taken_cur:
                    relabel[c] = p  # p comes from earlier planes, so it is no id of this plane
                    taken_prev.add(p)
                    taken_cur.add(c)
            stack[t] = relabel[cur]
    return labels


def stack_scores(result: StackInstances) -> dict[int, float]:
    """Stack-wide label id -> score."""
    scores = np.concatenate([raw.scores for raw in result.planes]) if result.planes else np.zeros(0)
    return {i + 1: float(s) for i, s in enumerate(scores)}


def write_stack_labels(path: str | os.PathLike, labels: np.ndarray, axis: str = "") -> None:
    """A ``(planes, H, W)`` label stack as one deflate TIFF (uint16 when the ids fit, else uint32),
    axes recorded (``TYX``/``ZYX``; ``QYX`` when unknown) so Fiji and napari read it as a stack."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"a label stack must be a 3-D integer array, got {labels.dtype} of shape {labels.shape}")
    top = int(labels.max()) if labels.size else 0
    dtype = np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib", photometric="minisblack",
                         metadata={"axes": f"{axis or 'Q'}YX"})


# ------------------------------------------------------------------------------- export


def mapped_items(files: list[Path], mapping: dict[str, dict], mapping_path) -> list[ExportItem]:
    """Export items of a folder: ``name`` entries are images, ``name#p`` entries planes of stacks.

    Every file must be listed (as itself or by its planes) and every listed size must match the
    header, checked before any image is segmented. Items come in file order, planes in order.
    """
    planes: dict[str, list[int]] = {}
    for key in mapping:
        file_name, plane = split_plane_name(key)
        if plane is not None:
            planes.setdefault(file_name, []).append(plane)
    missing = [f.name for f in files if f.name not in mapping and f.name not in planes]
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) of {files[0].parent} are not in {mapping_path}, e.g. {missing[0]} "
            f"(a stack's planes are listed as {plane_name(missing[0], 0)}, {plane_name(missing[0], 1)}, ...)"
        )
    items = []
    for f in files:
        listed = [None] if f.name in mapping else sorted(planes[f.name])
        count, height, width = stack_size(f)
        for plane in listed:
            name = f.name if plane is None else plane_name(f.name, plane)
            entry = mapping[name]
            if plane is not None and plane >= count:
                raise DatasetError(f"{mapping_path} lists {name} but {f} has {count} plane(s)")
            if (height, width) != (entry["height"], entry["width"]):
                raise DatasetError(f"{f} is {height}x{width} but the mapping file says "
                                   f"{entry['height']}x{entry['width']} ({mapping_path})")
            items.append(ExportItem(entry["id"], name, f, (height, width), plane))
    return items


def folder_mapping(files: list[Path]) -> list[dict]:
    """Mapping entries for a folder without a mapping file: ids 1..n in file order, one entry per
    plane of a stack (``<file>#<plane>``), so the results can be traced back to their planes."""
    entries = []
    for f in files:
        count, height, width = stack_size(f)
        names = [f.name] if count == 1 and _single(f) else [plane_name(f.name, p) for p in range(count)]
        for name in names:
            entries.append({"file_name": name, "id": len(entries) + 1, "height": height, "width": width})
    return entries


def _single(path: Path) -> bool:
    """A file that is one image, not a stack of one plane."""
    if not _is_tiff(path, "image"):
        return True
    with tifffile.TiffFile(path) as tif:
        return _file_plane_axis(path, tuple(tif.series[0].shape), tif.series[0].axes) is None


def item_image(item: ExportItem) -> np.ndarray:
    """The RGB image of an export item: the file, or one plane of a stack."""
    plane, channel = getattr(item, "plane", None), getattr(item, "channel", None)
    if channel is not None:
        from .channels import choose_in_plane, read_image_channel

        if plane is None:
            return read_image_channel(item.path, channel)
        read_plane(item.path, plane)  # checks the plane, caches the stack
        stat = Path(item.path).stat()
        return choose_in_plane(_cached_stack(str(item.path), stat.st_mtime_ns, stat.st_size).data[plane], channel)
    return read_image(item.path) if plane is None else read_plane(item.path, plane)


__all__ = [
    "Stack", "StackInstances", "read_stack", "stack_size", "read_plane", "plane_axis", "plane_name", "split_plane_name",
    "iter_predict_stack", "predict_stack", "plane_labels", "link_over_time", "to_stack_labels", "stack_scores",
    "write_stack_labels", "mapped_items",
    "folder_mapping", "item_image",
]
