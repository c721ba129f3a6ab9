"""Bad (and awkward but valid) input files, generated on the fly for ``test_bad_input.py``.

Every maker writes a small file at the path it is given and returns that path, so the corpus lives
in ``tmp_path`` and nothing large is committed. ``IMAGE_MAKERS`` / ``MASK_MAKERS`` map a case name
to its maker; the tests hold the expected outcome of each case.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

SHAPE = (64, 80)
"""Height x width of the images made here: the size of ``conftest.tiny_dataset``'s images."""


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def rgb(shape: tuple[int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    return _rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def _bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tiff(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, array, **kwargs)
    return path


def _pillow(path: Path, array: np.ndarray, fmt: str) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return _bytes(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------- images


def empty(path: Path) -> Path:
    return _bytes(path, b"")


def random_bytes(path: Path) -> Path:
    return _bytes(path, _rng(1).bytes(3000))


def truncated(path: Path) -> Path:
    """An uncompressed RGB TIFF cut in the middle of its pixel data (an interrupted copy)."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rgb(), photometric="rgb")
    whole = buffer.getvalue()
    return _bytes(path, whole[: len(whole) // 2])


def truncated_lzw(path: Path) -> Path:
    """A compressed TIFF cut in half: the decoder runs out of data."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, rgb(), photometric="rgb", compression="lzw")
    whole = buffer.getvalue()
    return _bytes(path, whole[: len(whole) // 2])


def png_named_tif(path: Path) -> Path:
    return _pillow(path, rgb(), "PNG")


def jpeg_named_tif(path: Path) -> Path:
    return _pillow(path, rgb(), "JPEG")


def one_pixel(path: Path) -> Path:
    return _tiff(path, np.full((1, 1), 200, np.uint8))


def z_stack(path: Path) -> Path:
    """Five slices of a confocal stack, saved the ImageJ way (axes ZYX)."""
    return _tiff(path, _rng().integers(0, 256, (5, *SHAPE), dtype=np.uint8), imagej=True, metadata={"axes": "ZYX"})


def t_stack(path: Path) -> Path:
    """Three time points (axes TYX): even three planes are no RGB."""
    return _tiff(path, _rng().integers(0, 256, (3, *SHAPE), dtype=np.uint8), imagej=True, metadata={"axes": "TYX"})


def plain_stack(path: Path) -> Path:
    """Twelve pages without any metadata, as a script writing a 3-D array makes them."""
    return _tiff(path, _rng().integers(0, 256, (12, *SHAPE), dtype=np.uint8))


def uint16(path: Path) -> Path:
    """A 12-bit camera image in a 16-bit TIFF, with a hot pixel."""
    grey = _rng().integers(200, 4000, SHAPE).astype(np.uint16)
    grey[0, 0] = 65535
    return _tiff(path, grey)


def float32(path: Path) -> Path:
    """A processed float image with negative values and a NaN."""
    grey = _rng().normal(0.0, 1.0, SHAPE).astype(np.float32)
    grey[1, 1] = np.nan
    return _tiff(path, grey)


def two_channel(path: Path) -> Path:
    """Two stains, channel first, as Fiji saves a 2-channel composite."""
    return _tiff(path, _rng().integers(0, 4096, (2, *SHAPE)).astype(np.uint16), imagej=True, metadata={"axes": "CYX"})


def two_channel_last(path: Path) -> Path:
    """Two channels stored interleaved (Y X S), as some scripts write them."""
    pixels = _rng().integers(0, 256, (*SHAPE, 2), dtype=np.uint8)
    return _tiff(path, pixels, photometric="minisblack", planarconfig="contig")


def huge_header(path: Path) -> Path:
    """A 150-byte TIFF whose header declares 100000 x 100000 8-bit pixels (10 GB) and holds none."""
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value
        (256, 4, 1, 100_000),  # ImageWidth
        (257, 4, 1, 100_000),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 8),  # StripOffsets: the data would start right after the header
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, 100_000),  # RowsPerStrip: one strip
        (279, 4, 1, 0xFFFFFFFF),  # StripByteCounts: as large as a LONG goes
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)  # no next IFD
    return _bytes(path, b"II*\0" + struct.pack("<I", 8) + ifd)


def huge_decoded(path: Path) -> Path:
    """A 130-byte TIFF declaring 16384 x 16384 pixels of two float64 samples: within the pixel limit,
    but 4 GiB once decoded (a compressed file of a few MB can declare as much and hold it)."""
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value(s)
        (256, 4, 1, (16384,)),  # ImageWidth
        (257, 4, 1, (16384,)),  # ImageLength
        (258, 3, 2, (64, 64)),  # BitsPerSample
        (259, 3, 1, (1,)),  # Compression: none
        (262, 3, 1, (1,)),  # Photometric: min-is-black
        (273, 4, 1, (8,)),  # StripOffsets
        (277, 3, 1, (2,)),  # SamplesPerPixel
        (278, 4, 1, (16384,)),  # RowsPerStrip: one strip
        (279, 4, 1, (0xFFFFFFFF,)),  # StripByteCounts
        (284, 3, 1, (1,)),  # PlanarConfiguration: contig
        (339, 3, 2, (3, 3)),  # SampleFormat: IEEE float
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, values in entries:
        packed = b"".join(struct.pack("<H" if kind == 3 else "<I", v) for v in values).ljust(4, b"\0")
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    return _bytes(path, b"II*\0" + struct.pack("<I", 8) + ifd)


def huge_png_header(path: Path) -> Path:
    """A PNG whose IHDR declares 100000 x 100000 pixels and holds no image data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return _bytes(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def zero_planes(path: Path) -> Path:
    """A stack of 0 planes (a script's empty array): no pixels at all."""
    return _tiff(path, np.zeros((0, *SHAPE), np.uint8))


def six_channels(path: Path) -> Path:
    """Six stains, channel first, as Fiji saves a composite (axes CYX): channels, not a stack."""
    return _tiff(path, _rng().integers(0, 256, (6, *SHAPE), dtype=np.uint8), imagej=True, metadata={"axes": "CYX"})


def six_channels_last(path: Path) -> Path:
    """Six interleaved samples per pixel (axes YXS)."""
    pixels = _rng().integers(0, 256, (*SHAPE, 6), dtype=np.uint8)
    return _tiff(path, pixels, photometric="minisblack", planarconfig="contig")


def cielab(path: Path) -> Path:
    """A TIFF in the CIE L*a*b* colour model, which the reader does not convert."""
    return _tiff(path, rgb(), photometric="cielab")


def cmyk(path: Path) -> Path:
    """``rgb()`` as a print shop stores it: CMYK (photometric SEPARATED), K = min(C, M, Y)."""
    cmy = 255 - rgb().astype(np.int32)
    k = cmy.min(axis=2, keepdims=True)
    scale = np.where(k < 255, 255 - k, 1)
    cmy_k = np.where(k < 255, (cmy - k) * 255 / scale, 0)
    return _tiff(path, np.dstack([cmy_k, k]).round().astype(np.uint8), photometric="separated")


def palette(path: Path) -> Path:
    """Indices 0..3 into a colour map of red, green, blue and white (photometric PALETTE)."""
    colours = np.zeros((3, 256), np.uint16)
    colours[:, :4] = np.array([[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]]) * 257
    indices = (np.arange(SHAPE[0] * SHAPE[1]) % 4).reshape(SHAPE).astype(np.uint8)
    return _tiff(path, indices, photometric="palette", colormap=colours)


def white_is_zero(path: Path) -> Path:
    """A grey image whose 0 means white (photometric MINISWHITE), as some scanners write."""
    return _tiff(path, 255 - rgb()[..., 0], photometric="miniswhite")


IMAGE_MAKERS: dict[str, Callable[[Path], Path]] = {
    "empty": empty,
    "random_bytes": random_bytes,
    "truncated": truncated,
    "truncated_lzw": truncated_lzw,
    "png_named_tif": png_named_tif,
    "jpeg_named_tif": jpeg_named_tif,
    "one_pixel": one_pixel,
    "z_stack": z_stack,
    "t_stack": t_stack,
    "plain_stack": plain_stack,
    "uint16": uint16,
    "float32": float32,
    "two_channel": two_channel,
    "two_channel_last": two_channel_last,
    "huge_header": huge_header,
    "huge_decoded": huge_decoded,
    "zero_planes": zero_planes,
    "six_channels": six_channels,
    "six_channels_last": six_channels_last,
    "cielab": cielab,
    "cmyk": cmyk,
    "palette": palette,
    "white_is_zero": white_is_zero,
}


# ---------------------------------------------------------------------------------------- masks


def mask(path: Path, labels: np.ndarray) -> Path:
    return _tiff(path, labels, compression="zlib")


def mask_wrong_size(path: Path) -> Path:
    return mask(path, np.zeros((32, 40), np.uint16))


def mask_fractional(path: Path) -> Path:
    probabilities = np.zeros(SHAPE, np.float32)
    probabilities[10:20, 10:20] = 0.7
    return mask(path, probabilities)


def mask_float_whole(path: Path) -> Path:
    """Whole ids saved as float32, as some tools do: valid."""
    labels = np.zeros(SHAPE, np.float32)
    labels[10:20, 10:20] = 1.0
    labels[30:40, 30:50] = 2.0
    return mask(path, labels)


def mask_negative(path: Path) -> Path:
    labels = np.zeros(SHAPE, np.int16)
    labels[10:20, 10:20] = -1
    return mask(path, labels)


def mask_all_zero(path: Path) -> Path:
    return mask(path, np.zeros(SHAPE, np.uint16))


def mask_one_pixel_instances(path: Path) -> Path:
    labels = np.zeros(SHAPE, np.uint16)
    labels[0, 0], labels[63, 79], labels[30, 40] = 1, 2, 3
    return mask(path, labels)


def mask_pieces(path: Path) -> Path:
    """Instance 1 in three separate pieces."""
    labels = np.zeros(SHAPE, np.uint16)
    labels[2:6, 2:6] = labels[40:44, 60:70] = labels[60:64, 0:3] = 1
    return mask(path, labels)


def mask_jpeg_named_tif(path: Path) -> Path:
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:30, 10:30] = 1
    labels[40:60, 40:70] = 2
    return _pillow(path, labels, "JPEG")


MASK_MAKERS: dict[str, Callable[[Path], Path]] = {
    "wrong_size": mask_wrong_size,
    "fractional": mask_fractional,
    "float_whole": mask_float_whole,
    "negative": mask_negative,
    "all_zero": mask_all_zero,
    "one_pixel_instances": mask_one_pixel_instances,
    "pieces": mask_pieces,
    "jpeg": mask_jpeg_named_tif,
}


# ---------------------------------------------------------------------------------------- datasets, JSON


def one_sample_folder(folder: Path, image_maker: Callable[[Path], Path] | None = None,
                      masks: dict[int, Callable[[Path], Path]] | None = None) -> Path:
    """``folder/s0/image.tif`` (a good RGB image unless ``image_maker`` is given) + ``classK.tif``.

    Without ``masks`` it gets one class-1 mask with a square instance.
    """
    sample = folder / "s0"
    sample.mkdir(parents=True, exist_ok=True)
    (image_maker or (lambda p: _tiff(p, rgb(), photometric="rgb")))(sample / "image.tif")
    if masks is None:
        labels = np.zeros(SHAPE, np.uint16)
        labels[10:30, 10:30] = 1
        masks = {1: lambda p: mask(p, labels)}
    for class_id, maker in masks.items():
        maker(sample / f"class{class_id}.tif")
    return folder


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------- checkpoints


def overwritten_tensor(source: Path, path: Path) -> Path:
    """A copy of the zip checkpoint ``source`` with 64 bytes in the middle of its largest tensor
    zeroed, as a bad disk or a careless copy would: it still loads, unless the zip's CRCs are checked."""
    import zipfile

    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data[start:start + 64] = bytes(64)
    return _bytes(path, bytes(data))
