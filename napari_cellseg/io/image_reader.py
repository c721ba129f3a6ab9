"""The one image reader: a 2-D image, a plane of a stack, either with a channel choice (``read``).

Why one module: reading what the network sees of a file (the file, plane ``p`` of a time-lapse, the
nuclear channel of a two-stain image) used to bounce between ``images``, ``stacks`` and ``channels``;
here one call decides. ``images`` decodes and checks single files, ``channels`` finds the channel
axis; this module knows stacks (their planes, sizes and plane names ``file.tif#p``) and the folder's
export items.

Axes: a TIFF's plane axis is its T or Z axis (tifffile's ``series.axes``, from ImageJ or OME
metadata). Without metadata the first axis is the planes when it is longer than
``images.MAX_CHANNELS`` (4), or when the file has a separate colour axis (``S``); a shorter first
axis of a 3-D file is read as colour channels, as for a single image. A file with both T and Z
longer than 1 is refused: save one time point or one slice.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ..atomic import atomic_path
from ..errors import DatasetError
from .channels import Channel, channel_axis, choose, choose_in_plane
from .images import (MAX_CHANNELS, _check_bytes, _check_file, _check_has_pixels, _check_size, _is_tiff, _read_array,
                     read_image, to_rgb_uint8)
from .layout import PLANE_SEPARATOR, ExportItem


def read(path: str | os.PathLike, plane: int | None = None, channel: Channel = None) -> np.ndarray:
    """What the network sees of a file, ``H x W x 3`` ``uint8``: the image (``plane`` None) or plane
    ``plane`` of a stack, as it is (``channel`` None) or reduced to ``channel`` (``channels``)."""
    if plane is None:
        return read_image(path) if channel is None else _read_image_channel(path, channel)
    image = read_plane(path, plane)  # checks the plane number, caches the stack
    if channel is None:
        return image
    stat = Path(path).stat()
    return choose_in_plane(_cached_stack(str(path), stat.st_mtime_ns, stat.st_size).data[plane], channel)


def item_image(item: ExportItem) -> np.ndarray:
    """The image of an export item (a file, or one plane of a stack, with its channel choice)."""
    return read(item.path, getattr(item, "plane", None), getattr(item, "channel", None))


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


def _read_image_channel(path: str | os.PathLike, channel: Channel) -> np.ndarray:
    """A 2-D image file as ``H x W x 3`` ``uint8`` with ``channel`` (``read_image`` for None).

    A TIFF's header is read first: its channel axis by ``channel_axis`` (tifffile names a channel-last
    ``(H, W, 2)`` file ``QYX``, H planes of W x 2, which the plain reader refuses as a stack)."""
    path = Path(path)
    if channel is None:
        return read_image(path)
    _check_file(path, "image")
    if not _is_tiff(path, "image"):
        array = _read_array(path, "image")
        return _choose_in_file(path, array, channel_axis(array.shape), channel)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            keep = [i for i, n in enumerate(series.shape) if n > 1]
            shape = tuple(int(series.shape[i]) for i in keep)
            axis = channel_axis(shape, "".join(series.axes[i] for i in keep))
            plane = [n for i, n in enumerate(shape) if i != axis]
            if len(plane) != 2:
                raise DatasetError(f"{path}: of shape {tuple(series.shape)}, not one image with channels; "
                                   "save one 2-D slice (Fiji: Image > Duplicate) and use that")
            _check_size(path, *plane, "image")
            _check_bytes(path, shape, np.dtype(series.dtype).itemsize, "image")
            array = series.asarray().reshape(shape)
    except (DatasetError, MemoryError):
        raise
    except Exception as exc:  # tifffile and the codecs raise many kinds for damaged files
        raise DatasetError(f"{path}: not a readable TIFF image (damaged or truncated?): {exc}") from None
    return _choose_in_file(path, array, axis, channel)


def _choose_in_file(path: Path, array: np.ndarray, axis: int | None, channel: Channel) -> np.ndarray:
    try:
        return choose(array, axis, channel)
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None


__all__ = [
    "read", "item_image", "Stack", "read_stack", "stack_size", "read_plane", "plane_axis", "plane_name",
    "split_plane_name", "write_stack_labels", "mapped_items", "folder_mapping",
]
