"""Which axis of an image holds its channels, and which channel the network sees.

Why: a 2-channel ``(2, H, W)`` image was segmented as a 2-plane stack (the second stain as if it
were nuclei), and a channel-last ``(H, W, 2)`` one opened in napari as H planes of W x 2 pixels.
Channels are never planes. The channel axis is, in this order:

- the TIFF's own axes (tifffile's ``C`` or ``S``; a ``T`` or ``Z`` axis is planes, never channels);
- napari's ``rgb`` flag (the last axis);
- a last axis of 1..4 (``images.MAX_CHANNELS``) beside two longer ones (channel-last wins);
- the first axis of a 3-D image when it is 1..4 long and the other two are longer.

The choice (``channel``): ``None`` keeps the image as it is (``images.to_rgb_uint8``: colour
stays colour, of two channels the first), an int (0-based) takes that channel alone, e.g. the
nuclear stain, and ``MERGED`` stretches every channel on its own and keeps the brightest per pixel.
"""

from __future__ import annotations

import numpy as np

from ..errors import DatasetError
from .images import MAX_CHANNELS, to_rgb_uint8

MERGED = "merged"
Channel = int | str | None
"""None (as is), a 0-based channel index, or ``MERGED``."""


def channel_axis(shape: tuple[int, ...], axes: str = "", rgb: bool = False) -> int | None:
    """The channel axis of an array of ``shape`` (rules in the module docstring); None: no channels."""
    for letter in "CS":
        if letter in axes and shape[axes.index(letter)] > 1:
            return axes.index(letter)
    if any(a in "TZ" and n > 1 for a, n in zip(axes, shape)):
        return None  # slices or time points by the file's own word: planes, never channels
    if rgb:
        return len(shape) - 1
    if len(shape) >= 3 and 1 <= shape[-1] <= MAX_CHANNELS and min(shape[-3], shape[-2]) > MAX_CHANNELS:
        return len(shape) - 1
    if len(shape) == 3 and 1 <= shape[0] <= MAX_CHANNELS and min(shape[1:]) > MAX_CHANNELS:
        return 0
    return None


def parse_channel(text: str | int | None) -> Channel:
    """``--channel``: ``1``..``4`` (1-based, as a biologist counts), ``merged``; None or '' for as is."""
    if text is None or text == "":
        return None
    if str(text).strip().lower() == MERGED:
        return MERGED
    try:
        number = int(text)
    except ValueError:
        raise DatasetError(f"channel must be 1..{MAX_CHANNELS} or '{MERGED}', not {text!r}") from None
    if not 1 <= number <= MAX_CHANNELS:
        raise DatasetError(f"channel must be 1..{MAX_CHANNELS} or '{MERGED}', not {number}")
    return number - 1


def choose(array: np.ndarray, axis: int | None, channel: Channel) -> np.ndarray:
    """``array`` (channels on ``axis``) as the network's ``H x W x 3`` ``uint8``, with ``channel``."""
    array = np.asarray(array)
    if axis is None:
        if channel not in (None, 0, MERGED):
            raise DatasetError(f"this image has one channel; channel {channel + 1} does not exist")
        return to_rgb_uint8(array)
    hwc = np.moveaxis(array, axis, -1)
    if channel is None:
        return to_rgb_uint8(hwc)
    if channel == MERGED:
        grey = [to_rgb_uint8(hwc[..., c])[..., 0] for c in range(hwc.shape[-1])]
        return to_rgb_uint8(np.max(grey, axis=0))
    if not 0 <= channel < hwc.shape[-1]:
        raise DatasetError(f"this image has {hwc.shape[-1]} channels; channel {channel + 1} does not exist")
    return to_rgb_uint8(hwc[..., channel])


def choose_in_plane(plane: np.ndarray, channel: Channel) -> np.ndarray:
    """One plane of a stack (its channel axis found by the shape rule) with ``channel``."""
    plane = np.asarray(plane)
    return choose(plane, channel_axis(plane.shape), channel)


class ChannelPlanes:
    """Planes of a stack (planes first) with channels on ``axis`` of each plane: ``image_reader.Stack``
    takes it as its data, so every plane is read and reduced to ``channel`` only when asked for."""

    def __init__(self, data, axis: int | None, channel: Channel) -> None:
        self.data, self.axis, self.channel = data, axis, channel
        self.shape = tuple(data.shape[:1]) + tuple(
            n for i, n in enumerate(data.shape[1:]) if i != axis
        )

    def __getitem__(self, index: int) -> np.ndarray:
        return choose(np.asarray(self.data[index]), self.axis, self.channel)
