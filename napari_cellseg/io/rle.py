"""COCO run-length encoding (RLE), built from each instance's bounding crop.

Dense images hold hundreds of instances, so an instance is encoded from its crop (O(crop), not
O(H x W)) and decoded from its runs; pycocotools only compresses the run lengths, which keeps the
strings byte-identical to ``pycocotools.mask.encode``. Runs are validated before decoding, so a
damaged file raises ValueError instead of crashing pycocotools' C decoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

def counts_from_crop(crop: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
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
    return _counts_fromruns(starts, ends, height * width)


def _counts_fromruns(starts: np.ndarray, ends: np.ndarray, total: int) -> np.ndarray:
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


def compress(counts: Sequence[np.ndarray], height: int, width: int) -> list[dict]:
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


def rle_counts(rle: Mapping[str, Any]) -> tuple[np.ndarray, int, int]:
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
        or not all(is_int(v) and v >= 0 for v in size)
    ):
        raise ValueError("RLE size must be [height, width]")
    height, width = int(size[0]), int(size[1])
    raw = rle["counts"]
    if isinstance(raw, (str, bytes)):
        counts = _parse_counts(raw) if raw else np.zeros(0, dtype=np.int64)
    elif isinstance(raw, (list, tuple, np.ndarray)) and all(is_int(v) for v in raw):
        if any(not 0 <= int(v) <= height * width for v in raw):  # also keeps them within int64
            raise ValueError(f"RLE has a run length outside 0..{height * width} (the pixels of {height} x {width})")
        counts = np.asarray(raw, dtype=np.int64).reshape(-1)
    else:
        raise ValueError("RLE counts must be a string or a list of integers")
    if counts.size and counts.min() < 0:
        raise ValueError("RLE has negative run lengths")
    if int(counts.sum()) != height * width:
        raise ValueError(f"RLE runs cover {int(counts.sum())} pixels, not {height} x {width}")
    return counts, height, width


def is_int(value: Any) -> bool:
    """A whole number that is not a bool (JSON ids, sizes and run lengths)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def runs(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-major [start, end) of each foreground run."""
    edges = np.concatenate(([0], np.cumsum(counts)))
    return edges[1:-1:2], edges[2::2]


def encode_mask(mask: np.ndarray) -> dict:
    """Bool or 0/1 H x W mask -> compressed RLE, identical to pycocotools' encode (counts str)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be H x W, got shape {mask.shape}")
    height, width = mask.shape
    counts = counts_from_crop(mask != 0, 0, 0, height, width)
    return compress([counts], height, width)[0]


def decode_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """RLE (counts str, bytes or an uncompressed list) -> bool H x W mask.

    Validates the runs first, so a damaged submission raises ValueError instead of crashing.
    """
    counts, height, width = rle_counts(rle)
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(width, height).T


def compressed_rle(rle: Mapping[str, Any]) -> dict:
    """Any accepted RLE -> validated compressed RLE with str counts, the one form we pass on.

    Raises ValueError for an RLE that does not describe its H x W mask.
    """
    counts, height, width = rle_counts(rle)
    if isinstance(rle["counts"], (str, bytes)):
        text = rle["counts"]
        return {"size": [height, width], "counts": text if isinstance(text, str) else text.decode()}
    return compress([counts], height, width)[0]
