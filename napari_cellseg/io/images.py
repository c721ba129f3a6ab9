"""Reading microscopy images and label images, normalised to the core's conventions.

Every image the core sees is ``H x W x 3`` ``uint8`` (see ``docs/architecture.md``); every label
image is ``H x W`` ``int32`` with 0 as background. The readers check a file's declared size before
decoding it, so a damaged or absurd header gives one clear line instead of a crash or a
multi-gigabyte allocation, and every message names the file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from ..atomic import atomic_path
from ..errors import DatasetError

if TYPE_CHECKING:
    from .._torch import torch

MIN_SIDE = 8
"""Smaller images cannot hold a cell the network could see; they are refused as damaged."""
MAX_PIXELS = 2**28
"""Pixels in one 2-D plane (16384 x 16384); beyond that the header is damaged or the file is a mosaic."""
MAX_DECODED_BYTES = 2 * 2**30
"""Bytes one image may decode to (2 GiB): a small compressed file can declare 16384 x 16384 x 4
float64 pixels, within the pixel limit but 8 GiB once decoded."""
MAX_CHANNELS = 4
"""More planes than this along an extra axis is a Z/T stack, not colour channels."""
PERCENTILES = (0.5, 99.5)
"""Robust range for 16-bit and float images: a few hot pixels must not make the image black."""
_TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_STACK_AXES = "ZT"
"""tifffile axis letters that mean slices or time points, never colour, whatever their length."""


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x H x W float32 in [0, 1], what the network takes (torch imported here:
    reading an image, as napari's reader does in the GUI thread, needs none)."""
    from .._torch import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


# ---------------------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a microscopy image as ``H x W x 3`` ``uint8``, or raise ``DatasetError`` naming the file.

    TIFFs are read with tifffile (LZW, deflate, 16-bit, float, ImageJ); other formats (PNG, JPEG,
    BMP) with Pillow, whose lazy header gives the size before decoding as tifffile does. The format
    is told by the file's first bytes, not its name: a PNG saved as ``image.tif`` reads as a PNG.
    """
    path = Path(path)
    array = _read_array(path, "image")
    try:
        return to_rgb_uint8(array)
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """An image's height and width from its header alone, after ``read_image``'s checks on it.

    Cheap enough to check a whole folder against a mapping file before any image is segmented.
    """
    path = Path(path)
    _check_file(path, "image")
    reader = _read_tiff if _is_tiff(path, "image") else _read_pillow
    return reader(path, "image", decode=False)


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Normalise any 2-D image to ``H x W x 3`` ``uint8``, deterministically (training = inference).

    Layouts: ``H x W`` grey, ``H x W x C`` and channel-first ``C x H x W`` with C in 1..4 (when
    both H and W exceed 4; channel-last wins when both read). C = 1 is repeated to grey RGB; C = 2
    keeps the first channel only, because averaging two stains blurs both; C = 4 drops alpha.
    ``uint8`` is kept as is, ``bool`` becomes 0/255; any other dtype is stretched so that the
    0.5th..99.5th percentile of all channels together (finite values only) maps to 0..255, which
    keeps colour balance and ignores hot pixels. A constant image maps to 0, NaN and inf to 0.
    """
    array = np.asarray(array)
    hwc = _as_hwc(array)
    channels = hwc.shape[2]
    if channels == 2:
        hwc = hwc[:, :, :1]
    elif channels == 4:
        hwc = hwc[:, :, :3]
    rgb = _scale_to_uint8(hwc)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb)


def _as_hwc(array: np.ndarray) -> np.ndarray:
    """Put the channel axis last; raise ``DatasetError`` for stacks and unusable shapes."""
    if array.ndim > 3:
        array = _squeeze_extra(array)
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise DatasetError(f"expected a 2-D image, got an array of shape {array.shape}")
    if 1 <= array.shape[2] <= MAX_CHANNELS:
        return array
    if 1 <= array.shape[0] <= MAX_CHANNELS and min(array.shape[1:]) > MAX_CHANNELS:
        return np.moveaxis(array, 0, 2)
    raise DatasetError(_stack_message(array.shape))


def _squeeze_extra(array: np.ndarray) -> np.ndarray:
    """Drop singleton axes beyond the third, e.g. ImageJ's T=1 Z=1 C x Y x X."""
    singletons = tuple(i for i, n in enumerate(array.shape) if n == 1)
    drop = singletons[: array.ndim - 3]
    squeezed = np.squeeze(array, axis=drop) if drop else array
    if squeezed.ndim > 3:
        raise DatasetError(_stack_message(array.shape))
    return squeezed


def _stack_message(shape: tuple[int, ...]) -> str:
    return (
        f"this is a stack of shape {tuple(shape)} (several slices or time points); "
        "save one 2-D slice (e.g. in Fiji: Image > Duplicate, one slice) and use that"
    )


def _scale_to_uint8(hwc: np.ndarray) -> np.ndarray:
    """Map any dtype to uint8: uint8 as is, the rest by a robust percentile stretch."""
    if hwc.dtype == np.uint8:
        return hwc
    if hwc.dtype == np.bool_:
        return hwc.astype(np.uint8) * np.uint8(255)
    if not (np.issubdtype(hwc.dtype, np.integer) or np.issubdtype(hwc.dtype, np.floating)):
        raise DatasetError(f"cannot show pixels of type {hwc.dtype} as an image")
    # float32 is exact for 16-bit data and halves the memory; wider types need float64
    values = hwc.astype(np.float32 if hwc.dtype.itemsize <= 2 else np.float64) / 2  # halves never overflow
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(hwc.shape, np.uint8)
    lo, hi = np.percentile(values[finite], PERCENTILES)
    if hi <= lo:  # mostly one value: fall back to the full range before calling it constant
        lo, hi = values[finite].min(), values[finite].max()
    if hi <= lo:
        return np.zeros(hwc.shape, np.uint8)
    # divide before scaling: 255 / (hi - lo) overflows for a tiny range and then 0 * inf is NaN;
    # values far above hi may still overflow to inf, which the clip turns into 255
    with np.errstate(over="ignore"):
        scaled = (np.where(finite, values, lo) - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- labels


def read_labels(path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read an instance label image as ``H x W`` ``int32`` (0 = background).

    Any integer type is accepted, and floats that hold whole numbers (some tools save masks as
    float32). ``shape`` is the image's shape (only ``H, W`` are compared): a mask drawn on another
    image must not be paired with this one silently.
    """
    path = Path(path)
    array = _read_array(path, "mask")
    array = np.squeeze(array)
    if array.ndim != 2:
        raise DatasetError(
            f"{path}: a mask must be one 2-D image of instance ids, but it has shape {tuple(array.shape)}"
        )
    labels = _labels_to_int32(array, path)
    if shape is not None and tuple(labels.shape) != tuple(shape[:2]):
        h, w = shape[:2]
        raise DatasetError(
            f"{path}: the mask is {labels.shape[0]} x {labels.shape[1]} pixels but its image is "
            f"{h} x {w}; a mask must have the size of its image"
        )
    return labels


def _labels_to_int32(array: np.ndarray, path: Path) -> np.ndarray:
    """Check that the values are instance ids (whole, >= 0, fit int32) and convert."""
    if array.dtype == np.bool_:
        return array.astype(np.int32)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.floor(array)):
            raise DatasetError(
                f"{path}: a mask must hold whole instance ids (0 = background), "
                "but it has fractional or NaN values; is it a probability map?"
            )
    elif not np.issubdtype(array.dtype, np.integer):
        raise DatasetError(f"{path}: a mask must hold integer instance ids, not {array.dtype}")
    if array.size and array.min() < 0:
        raise DatasetError(f"{path}: a mask must not hold negative values (found {array.min()})")
    if array.size and array.max() > np.iinfo(np.int32).max:
        raise DatasetError(f"{path}: instance id {array.max()} is too large (the limit is 2**31 - 1)")
    return array.astype(np.int32)


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write an instance label image as a deflate-compressed TIFF, whole or not at all.

    Stored as ``uint16`` when the ids fit (what HW3 and Fiji expect), else ``uint32``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} of shape {labels.shape}")
    top = int(labels.max()) if labels.size else 0
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: label images cannot hold negative ids (found {int(labels.min())})")
    if top > np.iinfo(np.uint32).max:  # astype would wrap such ids onto others silently
        raise ValueError(f"{path}: instance id {top} does not fit a label TIFF (at most 2**32 - 1); renumber the cells")
    dtype = np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib", photometric="minisblack")


# ---------------------------------------------------------------------------------------- readers


def _read_array(path: Path, what: str) -> np.ndarray:
    """The raw array of an image or mask file, read by the format its first bytes announce."""
    _check_file(path, what)
    return _read_tiff(path, what) if _is_tiff(path, what) else _read_pillow(path, what)


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise DatasetError(f"{path}: {what} file not found")
    if not path.is_file():
        raise DatasetError(f"{path}: this is a folder or a special file; expected the {what} file")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: the {what} file is empty (0 bytes); was the copy interrupted?")


def _is_tiff(path: Path, what: str) -> bool:
    """Whether the file starts with a TIFF signature (classic or BigTIFF, either byte order)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in _TIFF_SIGNATURES
    except PermissionError:
        raise DatasetError(f"{path}: permission denied; cannot read the {what} file") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the {what} file: {exc.strerror or exc}") from None


def _read_tiff(path: Path, what: str, decode: bool = True) -> np.ndarray | tuple[int, int]:
    """Decode the first series of a TIFF after checking its declared shape (only its size without ``decode``)."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            size = _check_declared(path, tuple(series.shape), series.axes, what)
            _check_bytes(path, tuple(series.shape), np.dtype(series.dtype).itemsize, what)
            if not decode:
                return size
            array = series.asarray()
            return _colour_model(path, tif.pages[0], array, series.axes) if what == "image" else array
    except (DatasetError, MemoryError):
        raise
    except PermissionError:
        raise DatasetError(f"{path}: permission denied; cannot read the {what} file") from None
    except Exception as exc:  # tifffile, imagecodecs and numpy raise many kinds for damaged files
        raise DatasetError(f"{path}: not a readable TIFF {what} (damaged or truncated?): {exc}") from None


def _colour_model(path: Path, page, array: np.ndarray, axes: str) -> np.ndarray:
    """Honour the TIFF's colour model (palette, CMYK, white-is-zero) or refuse it: read as plain
    grey or RGB, a CMYK image came out inverted and a palette image as its raw indices."""
    kind = int(page.photometric)
    if kind in (1, 2) or (kind == 6 and int(page.compression) == 7):  # grey, RGB, JPEG's YCbCr (decoded as RGB)
        return array
    if kind == 0:  # MINISWHITE: 0 is white
        return np.iinfo(array.dtype).max - array if array.dtype.kind in "ui" else -array.astype(np.float32)
    if kind == 3 and page.colormap is not None and array.dtype.kind == "u":  # PALETTE: look the colours up
        colours = (np.asarray(page.colormap, np.uint32) >> 8).astype(np.uint8)
        return np.moveaxis(np.take(colours, array, axis=1, mode="clip"), 0, -1)
    if kind == 5 and getattr(page, "inkset", 1) == 1 and "S" in axes and array.shape[axes.index("S")] >= 4:
        cmyk = np.moveaxis(array, axes.index("S"), -1)[..., :4].astype(np.float32)
        cmyk /= np.iinfo(array.dtype).max if array.dtype.kind in "ui" else max(float(np.nanmax(cmyk)), 1e-12)
        rgb = 255 * (1 - cmyk[..., :3]) * (1 - cmyk[..., 3:])
        return np.clip(np.nan_to_num(rgb), 0, 255).round().astype(np.uint8)
    name = getattr(page.photometric, "name", str(kind))
    raise DatasetError(f"{path}: the image is stored in the {name} colour model, which this tool does not "
                       "convert; save it as RGB or greyscale (Fiji: Image > Type > RGB Color)")


def _check_has_pixels(path: Path, shape: tuple[int, ...]) -> None:
    """A series with a 0-length axis holds no image at all: say so, not that it is a stack."""
    if 0 in shape:
        raise DatasetError(f"{path}: the file holds no pixels (shape {tuple(shape)}): an empty stack or a "
                           "damaged file")


def _check_declared(path: Path, shape: tuple[int, ...], axes: str, what: str) -> tuple[int, int]:
    """Refuse stacks, tiny and absurd sizes from the header, before any pixel is decoded; the plane's H, W."""
    _check_has_pixels(path, shape)
    channels = [n for axis, n in zip(axes, shape) if axis in "CS" and n > MAX_CHANNELS]
    if channels:
        raise DatasetError(
            f"{path}: the {what} has {channels[0]} channels (shape {tuple(shape)}, axes {axes}); 1 to {MAX_CHANNELS} "
            "are read (grey, two stains, RGB, RGBA): save the channels to segment as one RGB or grey image"
        )
    planes = [(axis, n) for axis, n in zip(axes, shape) if axis not in "YXS" and n > 1]
    if len(planes) > 1 or any(axis in _STACK_AXES or n > MAX_CHANNELS for axis, n in planes):
        raise DatasetError(f"{path}: {_stack_message(shape)}")
    if "Y" in axes and "X" in axes:
        height, width = shape[axes.index("Y")], shape[axes.index("X")]
    else:  # unusual series without named axes: the last two are the plane
        height, width = (1, 1, *shape)[-2:]
    _check_size(path, height, width, what)
    return int(height), int(width)


def _check_size(path: Path, height: int, width: int, what: str) -> None:
    if height * width > MAX_PIXELS:
        raise DatasetError(
            f"{path}: declares {height} x {width} pixels, more than the {MAX_PIXELS:,} this tool reads; "
            "the header is damaged or the image must be cut into tiles first"
        )
    if min(height, width) < MIN_SIDE:
        raise DatasetError(
            f"{path}: the {what} is only {height} x {width} pixels; at least {MIN_SIDE} x {MIN_SIDE} is needed"
        )


def _check_bytes(path: Path, shape: tuple[int, ...], itemsize: int, what: str) -> None:
    """Refuse an image that would decode to more than ``MAX_DECODED_BYTES``, before decoding it."""
    decoded = math.prod(int(n) for n in shape) * int(itemsize)
    if decoded > MAX_DECODED_BYTES:
        raise DatasetError(
            f"{path}: the {what} would take {decoded / 2**30:.1f} GiB in memory once decoded, more than the "
            f"{MAX_DECODED_BYTES / 2**30:.0f} GiB this tool reads at once; cut it into tiles or save it as 8-bit first"
        )


_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}


def _read_pillow(path: Path, what: str, decode: bool = True) -> np.ndarray | tuple[int, int]:
    """PNG, JPEG, BMP...: Pillow reads the size lazily, so it is checked before decoding.

    Palette and CMYK images become RGB; a mask keeps its palette indices, which are its ids.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            _check_size(path, im.height, im.width, what)
            _check_bytes(path, (im.height, im.width, len(im.getbands())), _PILLOW_BYTES.get(im.mode, 1), what)
            if what == "mask" and im.format == "JPEG":
                raise DatasetError(
                    f"{path}: this mask is a JPEG, whose lossy compression changes pixel values and so "
                    "the instance ids; save masks as TIFF or PNG"
                )
            if not decode:
                return im.height, im.width
            if what == "image" and im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            return np.array(im)  # writable: torch warns on (and must not share) a read-only buffer
    except (DatasetError, MemoryError):
        raise
    except Image.DecompressionBombError:
        raise DatasetError(f"{path}: the {what} is too large to read safely; cut it into tiles first") from None
    except UnidentifiedImageError:
        raise DatasetError(
            f"{path}: not an image file this tool can read (neither TIFF nor PNG, JPEG, BMP; "
            "damaged?); use TIFF (.tif), PNG or JPEG"
        ) from None
    except PermissionError:
        raise DatasetError(f"{path}: permission denied; cannot read the {what} file") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... for damaged files
        raise DatasetError(f"{path}: could not read the {what} (damaged or truncated?): {exc}") from None


__all__ = ["read_image", "read_image_size", "to_rgb_uint8", "read_labels", "write_labels", "to_tensor"]
