"""A picture of a segmentation: the image with each cell's outline drawn in, as a PNG.

Why: a number (AP50) does not show a newcomer what the model does; a picture of the cells it
found does, and opens in any viewer without napari.
"""

from __future__ import annotations

import os

import numpy as np

from ..atomic import atomic_path


def outlines(labels: np.ndarray) -> np.ndarray:
    """Boolean image of each cell's border pixels (inside the cell, next to another id or the
    background), so touching cells each keep their own outline."""
    labels = np.asarray(labels)
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = np.zeros(labels.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        edge |= padded[dy : dy + labels.shape[0], dx : dx + labels.shape[1]] != centre
    return edge & (labels > 0)


def draw_outlines(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 ``image`` with the outlines of ``labels`` (``H x W``) drawn in, a bright
    colour per cell (fixed by its id) so neighbours stand apart."""
    picture = np.array(image, np.uint8, copy=True)
    edge = outlines(labels)
    ids = labels[edge].astype(np.int64)
    palette = np.array([[255, 255, 0], [0, 255, 255], [255, 0, 255], [80, 255, 80], [255, 140, 0]], np.uint8)
    picture[edge] = palette[ids % len(palette)]
    return picture


def write_overlay(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray) -> None:
    """Save ``draw_outlines(image, labels)`` as a PNG (atomically)."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(draw_outlines(image, labels)).save(tmp, format="PNG")


__all__ = ["outlines", "draw_outlines", "write_overlay"]
