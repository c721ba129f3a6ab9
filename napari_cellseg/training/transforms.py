"""Augmentations on numpy images and label images, applied before instances are extracted.

Working on ``(image, labels)`` rather than on per-instance masks means a 2500 px image with 700
cells is cropped first and never turned into 700 full-size masks. An augmentation is any callable
``(image, labels, rng) -> (image, labels)`` with ``image`` ``H x W x 3`` uint8, ``labels``
``{class id: H x W int32}`` and ``rng`` a ``numpy.random.Generator``; all randomness comes from
``rng``, so ``CellDataset`` makes every result reproducible. Inputs are never modified (the
dataset's cache hands out read-only arrays). Evaluation uses no augmentation (``augment=None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .._torch import torch
from ..io.raw import Labels

Augment = Callable[[np.ndarray, Labels, np.random.Generator], tuple[np.ndarray, Labels]]


class Compose:
    """Apply augmentations in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Augment]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, labels: Labels, rng: np.random.Generator) -> tuple[np.ndarray, Labels]:
        for transform in self.transforms:
            image, labels = transform(image, labels, rng)
        return image, labels

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomScaleCrop:
    """Zoom by a random factor and crop a window, so the output is at most ``size x size``.

    The scale is drawn log-uniformly in ``scale`` (zooming in and out equally likely); a window of
    about ``size / scale`` pixels is cut at a random position and resized by the scale. Cells then
    vary in apparent size as they do between microscopes, and huge images train at a fixed cost.
    Images smaller than the window are scaled whole, never padded.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.75, 1.33)) -> None:
        if size < 1 or not 0 < scale[0] <= scale[1]:
            raise ValueError(f"need size >= 1 and 0 < scale[0] <= scale[1], got {size}, {scale}")
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))

    def __call__(self, image: np.ndarray, labels: Labels, rng: np.random.Generator) -> tuple[np.ndarray, Labels]:
        s = math.exp(rng.uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        height, width = image.shape[:2]
        window = max(1, round(self.size / s))
        crop_h, crop_w = min(height, window), min(width, window)
        y0 = int(rng.integers(0, height - crop_h + 1))
        x0 = int(rng.integers(0, width - crop_w + 1))
        out_h = max(1, min(self.size, round(crop_h * s)))
        out_w = max(1, min(self.size, round(crop_w * s)))
        rows, cols = slice(y0, y0 + crop_h), slice(x0, x0 + crop_w)
        image = resize_image(image[rows, cols], (out_h, out_w))
        labels = {k: resize_labels(v[rows, cols], (out_h, out_w)) for k, v in labels.items()}
        return image, labels

    def __repr__(self) -> str:
        return f"RandomScaleCrop({self.size}, scale={self.scale})"


class RandomFlip:
    """Mirror left-right and/or up-down, each with probability ``p``: cells have no handedness."""

    def __init__(self, horizontal: bool = True, vertical: bool = True, p: float = 0.5) -> None:
        self.horizontal, self.vertical, self.p = horizontal, vertical, float(p)

    def __call__(self, image: np.ndarray, labels: Labels, rng: np.random.Generator) -> tuple[np.ndarray, Labels]:
        flip_h, flip_v = rng.random(2) < self.p  # always two draws: later transforms see the same stream
        axes = tuple(axis for axis, on in ((1, flip_h and self.horizontal), (0, flip_v and self.vertical)) if on)
        if not axes:
            return image, labels
        return _apply(lambda a: np.flip(a, axis=axes), image, labels)

    def __repr__(self) -> str:
        return f"RandomFlip(horizontal={self.horizontal}, vertical={self.vertical}, p={self.p})"


class RandomRot90:
    """Rotate by 0, 90, 180 or 270 degrees: microscopy has no 'up'."""

    def __call__(self, image: np.ndarray, labels: Labels, rng: np.random.Generator) -> tuple[np.ndarray, Labels]:
        k = int(rng.integers(4))
        if k == 0:
            return image, labels
        return _apply(lambda a: np.rot90(a, k, axes=(0, 1)), image, labels)

    def __repr__(self) -> str:
        return "RandomRot90()"


class ColorJitter:
    """Mild random brightness, contrast and saturation, for stain and exposure differences.

    Each factor is drawn uniformly in ``[1 - x, 1 + x]``. Contrast pivots on the mean grey level
    and saturation on each pixel's grey value, so a grey-looking (fluorescence) image stays grey
    and still gets brightness and contrast changes. Labels are unchanged.
    """

    _LUMA = np.array([0.299, 0.587, 0.114], np.float32)

    def __init__(self, brightness: float = 0.15, contrast: float = 0.15, saturation: float = 0.15) -> None:
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)

    def __call__(self, image: np.ndarray, labels: Labels, rng: np.random.Generator) -> tuple[np.ndarray, Labels]:
        b, c, s = 1 + rng.uniform(-1, 1, 3) * (self.brightness, self.contrast, self.saturation)
        pixels = image.astype(np.float32) * np.float32(b)
        grey = pixels @ self._LUMA
        pixels = (pixels - grey.mean()) * np.float32(c) + grey.mean()
        grey = pixels @ self._LUMA
        pixels = grey[..., None] + (pixels - grey[..., None]) * np.float32(s)
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), labels

    def __repr__(self) -> str:
        return f"ColorJitter({self.brightness}, {self.contrast}, {self.saturation})"


class RandomStain:
    """Sometimes re-stain the image: mix its colour channels and bend each channel's tone curve.

    Stained and H&E nuclei differ between labs by the dyes' hue and strength far more than
    ``ColorJitter``'s mild factors cover; a random near-identity 3 x 3 channel mix (``mix``) and a
    per-channel gamma in ``[1 / (1 + gamma), 1 + gamma]`` reproduce that spread. Grey images are only
    tinted, never turned into noise. Labels are unchanged.
    """

    def __init__(self, p: float = 0.5, mix: float = 0.25, gamma: float = 0.4) -> None:
        self.p, self.mix, self.gamma = float(p), float(mix), float(gamma)

    def __call__(self, image: np.ndarray, labels: Labels, rng: np.random.Generator) -> tuple[np.ndarray, Labels]:
        on = rng.random() < self.p
        matrix = np.eye(3, dtype=np.float32) + rng.uniform(-self.mix, self.mix, (3, 3)).astype(np.float32)
        gammas = np.exp(rng.uniform(-1, 1, 3) * math.log1p(self.gamma)).astype(np.float32)  # drawn either way
        if not on:
            return image, labels
        matrix /= matrix.sum(axis=1, keepdims=True)  # each output channel keeps the input's brightness
        pixels = np.clip(image.astype(np.float32) @ matrix.T / 255.0, 0.0, 1.0) ** gammas
        return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8), labels

    def __repr__(self) -> str:
        return f"RandomStain({self.p}, mix={self.mix}, gamma={self.gamma})"


class RandomGreyInvert:
    """Sometimes grey, sometimes inverted: stained nuclei (dark on light) then look like fluorescence
    (bright on dark) and the reverse, so one model learns nuclei rather than one microscope's look."""

    def __init__(self, p_grey: float = 0.2, p_invert: float = 0.2) -> None:
        self.p_grey, self.p_invert = float(p_grey), float(p_invert)

    def __call__(self, image: np.ndarray, labels: Labels, rng: np.random.Generator) -> tuple[np.ndarray, Labels]:
        grey, invert = rng.random(2) < (self.p_grey, self.p_invert)  # always two draws
        if grey:
            luma = np.rint(image.astype(np.float32) @ ColorJitter._LUMA).clip(0, 255).astype(np.uint8)
            image = np.repeat(luma[..., None], 3, axis=2)
        if invert:
            image = 255 - image
        return image, labels

    def __repr__(self) -> str:
        return f"RandomGreyInvert({self.p_grey}, {self.p_invert})"


def train_augment(crop_size: int = 512, strong: bool = False,
                  zoom: tuple[float, float] | None = None) -> Augment:
    """The training preset: scale crop to ``crop_size``, flips, 90-degree turns, mild colour jitter.

    ``strong`` (the built-in model's recipe, and fine-tuning on a few images) zooms 0.5-2x and
    adds re-stained, grey and inverted images. ``zoom`` replaces the preset's zoom range.
    """
    if strong:
        return Compose([RandomScaleCrop(crop_size, zoom or (0.5, 2.0)), RandomFlip(), RandomRot90(), ColorJitter(),
                        RandomStain(), RandomGreyInvert()])
    return Compose([RandomScaleCrop(crop_size, zoom or (0.75, 1.33)), RandomFlip(), RandomRot90(), ColorJitter()])


def mosaic(parts: Sequence[tuple[np.ndarray, Labels]], size: int,
           rng: np.random.Generator) -> tuple[np.ndarray, Labels]:
    """Four augmented crops, one per quadrant of a ``size x size`` image split at a random point.

    Why: nuclei cut by a straight edge with another image's texture beyond it (a crop's border in a
    mosaic or a stitched scan) are seen in training, not only nuclei cut by the image's own edge.
    Each quadrant shows a random window of its part (zeros where the part is smaller); the instances in
    the windows are numbered 1..n anew, so no two parts share an id whatever ids the files held.
    Every class of any part is in the result.
    """
    if len(parts) != 4:
        raise ValueError(f"a mosaic needs four parts, got {len(parts)}")
    cy, cx = (int(rng.integers(size // 4, size - size // 4 + 1)) for _ in range(2))
    image = np.zeros((size, size, 3), np.uint8)
    classes = sorted({k for _, labels in parts for k in labels})
    out: Labels = {k: np.zeros((size, size), np.int32) for k in classes}
    offset = 0
    quadrants = ((0, cy, 0, cx), (0, cy, cx, size), (cy, size, 0, cx), (cy, size, cx, size))
    for (part_image, part_labels), (y0, y1, x0, x1) in zip(parts, quadrants):
        h, w = min(y1 - y0, part_image.shape[0]), min(x1 - x0, part_image.shape[1])
        py = int(rng.integers(0, part_image.shape[0] - h + 1))
        px = int(rng.integers(0, part_image.shape[1] - w + 1))
        image[y0:y0 + h, x0:x0 + w] = part_image[py:py + h, px:px + w]
        for k, ids in part_labels.items():
            values, index = np.unique(ids[py:py + h, px:px + w], return_inverse=True)
            index = index.reshape(h, w).astype(np.int32) + (values[0] != 0)  # 1..n, 0 for background
            out[k][y0:y0 + h, x0:x0 + w] = np.where(index > 0, index + offset, 0)
            offset += int(np.count_nonzero(values))
    return image, out


# ---------------------------------------------------------------------------------------- resizing


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``H x W x 3`` uint8, antialiased when shrinking (area-like, no moire)."""
    if tuple(image.shape[:2]) == tuple(size):
        return image
    tensor = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]  # a writable copy
    shrinking = size[0] < image.shape[0] or size[1] < image.shape[1]
    out = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return out[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image: ids are never blended into new ids."""
    height, width = labels.shape[:2]
    if (height, width) == tuple(size):
        return labels
    rows = np.minimum(((np.arange(size[0]) + 0.5) * (height / size[0])).astype(np.intp), height - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * (width / size[1])).astype(np.intp), width - 1)
    return labels[rows[:, None], cols[None, :]]


def _apply(op: Callable[[np.ndarray], np.ndarray], image: np.ndarray, labels: Labels) -> tuple[np.ndarray, Labels]:
    """The same geometric op on the image and every label image, as contiguous new arrays."""
    return np.ascontiguousarray(op(image)), {k: np.ascontiguousarray(op(v)) for k, v in labels.items()}


__all__ = [
    "Compose",
    "RandomScaleCrop",
    "RandomFlip",
    "RandomRot90",
    "ColorJitter",
    "train_augment",
    "mosaic",
    "resize_image",
    "resize_labels",
]
