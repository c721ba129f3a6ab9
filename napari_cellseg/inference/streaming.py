"""Images of any size in bounded memory: tiles read from the file, labels written to files, tile by tile.

Why: ``predict`` holds the image and every label image whole (2.13 GB peak for an 8000 x 8000
mosaic, growing with the area). Here only one tile's pixels and one tile's label window are in
memory at a time; what stays is the compact per-cell score table.

- ``RegionReader`` reads a tile's rows from an uncompressed TIFF with positioned reads
  (``os.pread``), not a memory map: mapped pages once read count in the process's resident memory
  until unmapped. Any other file (compressed, 16-bit, PNG) is read whole and normalised once, as
  ``images.read_image`` does - bounded by that image, not by the labels.
- ``LabelFile`` is an uncompressed uint32 TIFF created at full size, written by region
  (read-modify-write of a tile's window); it appears under its name only when complete, and any
  TIFF reader (napari, Fiji) can map it lazily.
- Seams: each tile keeps the detections whose box centre lies in its core (``tiling``), so a cell
  cut by a tile edge is kept, whole, by the neighbour that sees it whole - once.
- Ids: a running counter over the tiles in row-major order, each tile's cells by score, unique
  across tiles and classes. A pixel already labelled by an earlier tile keeps its label.
- Tiles of one flat value (slide background, mosaic padding) skip the network.
- The detection cap and the region proposals follow each tile as in ``predict`` (a tile still at
  the cap after its second run is counted and warned about); freed heap memory goes back to the
  system after each tile, so the resident size does not keep the largest tile's high-water mark.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import warnings
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..atomic import atomic_path
from ..defaults import MASK_THRESH, SCORE_THRESH, TILE_SIZE, overlap_for
from ..errors import DatasetError, DetectionCapWarning
from ..io.images import read_image_size
from ..io.images import read_image
from .predict import _as_device, _detection_cap, _inference_setup, _model_device, _predict_uncapped, cap_message
from .postprocess import to_labels
from ..progress import Progress, StopCheck, stopped
from ..io.raw import RawInstances
from .tiling import tile_grid

LABEL_DTYPE = np.dtype("<u4")
STREAM_ABOVE = 4096 * 4096
"""Images with more pixels than this are streamed by the CLI (the whole-image path is the same
below it, and keeps the score table for the slider in the GUI)."""


def should_stream(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a 2-D image larger than ``STREAM_ABOVE`` pixels (read from its header)."""
    try:
        h, w = read_image_size(path)
    except DatasetError:  # stacks and unreadable files take the usual path, which names the problem
        return False
    return h * w > STREAM_ABOVE


class RegionReader:
    """An image file as an ``H x W x 3`` uint8 array-like that reads only the rows a slice asks for."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._whole: np.ndarray | None = None
        layout = _raw_layout(self.path)
        if layout is None:  # not an uncompressed 8-bit TIFF: read and normalise the whole image once
            self._whole = read_image(self.path)
            self.shape = self._whole.shape
            return
        self._offset, (h, w, self._channels) = layout
        self.shape = (h, w, 3)
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    @property
    def streamed(self) -> bool:
        """Whether tiles are read from the file (else the image was read whole)."""
        return self._whole is None

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        if self._whole is not None:
            return self._whole[key]
        ys, xs = key
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        c, row = self._channels, self.shape[1] * self._channels
        out = np.empty((max(y1 - y0, 0), max(x1 - x0, 0), c), np.uint8)
        for i, y in enumerate(range(y0, y1)):
            data = os.pread(self._fd, (x1 - x0) * c, self._offset + y * row + x0 * c)
            out[i] = np.frombuffer(data, np.uint8).reshape(x1 - x0, c)
        if c == 1:
            return np.repeat(out, 3, axis=2)
        return np.ascontiguousarray(out[:, :, :3])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._whole = None


def _raw_layout(path: Path) -> tuple[int, tuple[int, int, int]] | None:
    """(data offset, (H, W, channels)) of a one-plane uncompressed uint8 TIFF stored in one run
    (grey, RGB or RGBA, channels last); None for anything else."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, offset = tuple(series.shape), series.dataoffset
            ok = np.dtype(series.dtype) == np.uint8 and offset is not None and len(tif.pages) == 1
    except Exception:  # not a TIFF, or damaged: read_image names the problem
        return None
    if not ok:
        return None
    if len(shape) == 2:
        return offset, (shape[0], shape[1], 1)
    if len(shape) == 3 and shape[2] in (1, 3, 4) and series.axes.endswith("S"):
        return offset, (shape[0], shape[1], shape[2])
    return None


class LabelFile:
    """A full-size uint32 label TIFF on disk, read and written by rectangular window."""

    def __init__(self, path: Path, shape: tuple[int, int]) -> None:
        big = shape[0] * shape[1] * LABEL_DTYPE.itemsize > 2**31
        tifffile.imwrite(path, shape=shape, dtype=LABEL_DTYPE, photometric="minisblack", bigtiff=big)
        with tifffile.TiffFile(path) as tif:
            self._offset = tif.series[0].dataoffset
        if self._offset is None:
            raise RuntimeError(f"{path}: tifffile did not store the labels in one run")
        self.shape = shape
        self._fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        row, size = self.shape[1] * 4, (x1 - x0) * 4
        out = np.empty((y1 - y0, x1 - x0), LABEL_DTYPE)
        for i, y in enumerate(range(y0, y1)):
            out[i] = np.frombuffer(os.pread(self._fd, size, self._offset + y * row + x0 * 4), LABEL_DTYPE)
        return out

    def write(self, y0: int, x0: int, window: np.ndarray) -> None:
        row = self.shape[1] * 4
        data = np.ascontiguousarray(window, LABEL_DTYPE)
        for i in range(data.shape[0]):
            os.pwrite(self._fd, data[i].tobytes(), self._offset + (y0 + i) * row + x0 * 4)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_labels(path: str | os.PathLike) -> np.ndarray:
    """A streamed label file as a read-only memory map: napari (``viewer.add_labels``) and numpy
    read only the pages they show, so a 20000 x 20000 result opens at once."""
    return tifffile.memmap(path, mode="r")


def paint_tile(files: Mapping[int, LabelFile], raw: RawInstances, first_id: int, score_thresh: float,
               mask_thresh: float) -> dict[int, float]:
    """Paint one tile's instances (image coordinates) into the label files, ids from ``first_id``
    in score order; a pixel already labelled keeps its label. Returns the new ids' scores."""
    if not len(raw):
        return {}
    x0, y0 = (int(v) for v in raw.boxes[:, :2].min(axis=0))
    x1, y1 = (int(v) for v in raw.boxes[:, 2:].max(axis=0))
    local = RawInstances(raw.boxes - np.array([x0, y0, x0, y0], np.int32), raw.scores, raw.labels, raw.masks,
                         (y1 - y0, x1 - x0))
    labels = to_labels(local, score_thresh, mask_thresh, classes=list(files))
    present = np.unique(np.concatenate([np.unique(lab) for lab in labels.values()]))
    present = present[present > 0]  # instance i painted as i + 1
    lut = np.zeros(len(raw) + 1, LABEL_DTYPE)
    lut[present] = first_id + np.arange(len(present))
    for class_id, lab in labels.items():
        if not lab.any():
            continue
        window = files[class_id].read(y0, y1, x0, x1)
        paint = (lab > 0) & (window == 0)
        window[paint] = lut[lab[paint]]
        files[class_id].write(y0, x0, window)
    return {int(lut[i]): float(raw.scores[i - 1]) for i in present}


def iter_segment_file(
    model,
    path: str | os.PathLike,
    outputs: Mapping[int, str | os.PathLike],
    *,
    device=None,
    score_thresh: float = SCORE_THRESH,
    mask_thresh: float = MASK_THRESH,
    tile_size: int = TILE_SIZE,
    overlap: int | None = None,
    should_stop: StopCheck | None = None,
) -> Generator[Progress, None, dict[int, float] | None]:
    """Segment the image file ``path`` into one label TIFF per class (``outputs``: class id -> file),
    tile by tile; yields ``Progress(done, tiles, "tile")``, returns id -> score, or None when
    stopped (then no output file is written). ``overlap`` defaults to ``defaults.overlap_for``."""
    if not outputs:
        raise ValueError("name at least one output label file")
    reader = RegionReader(path)
    try:
        overlap = overlap_for(tile_size) if overlap is None else overlap
        return (yield from _segment(model, reader, dict(outputs), device, score_thresh, mask_thresh, tile_size,
                                    overlap, should_stop))
    finally:
        reader.close()


class _Stopped(Exception):
    """Raised inside the outputs' atomic writes so that a cancelled run leaves no label file."""


def _segment(model, reader: RegionReader, outputs: dict[int, Any], device, score_thresh: float, mask_thresh: float,
             tile_size: int, overlap: int, should_stop: StopCheck | None):
    shape = (reader.shape[0], reader.shape[1])
    tiles = tile_grid(shape, tile_size, overlap)
    device = _model_device(model) if device is None else _as_device(device)
    scores: dict[int, float] = {}
    capped = 0
    try:
        with _label_files(outputs, shape) as files, _inference_setup(model, device, None) as (base_cap, fast):
            for done, tile in enumerate(tiles, start=1):
                if stopped(should_stop):
                    raise _Stopped
                pixels = reader[tile.y0 : tile.y1, tile.x0 : tile.x1]
                if pixels.min() != pixels.max():
                    raw = _predict_uncapped(model, reader, tile, device, None, base_cap, 1.0, fast)
                    capped += raw.capped_tiles
                    scores.update(paint_tile(files, raw, len(scores) + 1, score_thresh, mask_thresh))
                    del raw
                release_freed_memory()
                yield Progress(done, len(tiles), "tile")
            cap = _detection_cap(model)
    except _Stopped:
        return None
    if capped:
        warnings.warn(DetectionCapWarning(cap_message(capped, len(tiles), cap)), stacklevel=2)
    return scores


def release_freed_memory() -> None:
    """Give the heap memory freed by the last tile back to the system (glibc's ``malloc_trim``; no-op
    elsewhere). glibc keeps the freed tile-sized blocks of the network in its heap, so the resident
    size stayed at its highest tile's; trimmed after each tile it ran ~220 MB lower (BENCHMARKS.md)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)  # None on musl
    except OSError:
        return None


@contextlib.contextmanager
def _label_files(outputs: dict[int, Any], shape: tuple[int, int]) -> Iterator[dict[int, LabelFile]]:
    """One ``LabelFile`` per class, each written atomically (complete, or not at all)."""
    with contextlib.ExitStack() as stack:
        files = {}
        for class_id, path in outputs.items():
            tmp = stack.enter_context(atomic_path(path))
            files[class_id] = LabelFile(tmp, shape)
            stack.callback(files[class_id].close)
        yield files


__all__ = ["RegionReader", "LabelFile", "paint_tile", "iter_segment_file", "open_labels", "should_stream",
           "LABEL_DTYPE", "STREAM_ABOVE"]
