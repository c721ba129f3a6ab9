"""The tile grid for large images and the rule that keeps each object exactly once.

Why cores: neighbouring tiles overlap, so an object near a seam is detected twice (whole in one
tile, maybe cut in the other). Splitting every overlap at its midline partitions the image into
one *core* per tile; a detection is kept only by the tile whose core holds its box centre. An
object smaller than the overlap whose centre lies in a tile's core lies wholly inside that tile,
and a detection cut by a tile's edge has its centre beyond the midline, so it is dropped there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """A window ``[y0, y1) x [x0, x1)`` of the image and its core (half-open, in pixels)."""

    y0: int
    y1: int
    x0: int
    x1: int
    core_y: tuple[float, float]
    core_x: tuple[float, float]

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


def axis_windows(length: int, tile_size: int, overlap: int) -> tuple[int, list[int]]:
    """Window length and evenly spaced starts along one axis.

    The fewest windows of at most ``tile_size`` whose overlaps are >= ``overlap``, each shrunk to
    the shortest length that still keeps those overlaps: a 2500 px side takes three 919 px windows,
    not three of 1024 px that overlap by 286 px, so the network sees a third fewer pixels.
    """
    if length <= tile_size:
        return length, [0]
    n = math.ceil((length - overlap) / (tile_size - overlap))
    size = math.ceil((length + (n - 1) * overlap) / n)
    span = length - size
    return size, [round(i * span / (n - 1)) for i in range(n)]


def _cores(starts: list[int], size: int) -> list[tuple[float, float]]:
    """Split each overlap at its midline; the outer cores reach to infinity so they partition R."""
    cuts = [(nxt + prev + size) / 2 for prev, nxt in zip(starts, starts[1:])]
    edges = [-math.inf, *cuts, math.inf]
    return list(zip(edges[:-1], edges[1:]))


def tile_grid(shape: tuple[int, int], tile_size: int, overlap: int) -> list[Tile]:
    """Tiles of at most ``tile_size`` px covering ``shape`` (row-major), with their cores."""
    if tile_size < 1:
        raise ValueError(f"the tile size must be at least 1 px, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"the tile overlap ({overlap} px) must be between 0 and the tile size ({tile_size} px)")
    (th, ys), (tw, xs) = axis_windows(shape[0], tile_size, overlap), axis_windows(shape[1], tile_size, overlap)
    return [
        Tile(y0, y0 + th, x0, x0 + tw, cy, cx)
        for y0, cy in zip(ys, _cores(ys, th))
        for x0, cx in zip(xs, _cores(xs, tw))
    ]


def in_core(boxes: np.ndarray, tile: Tile) -> np.ndarray:
    """Which ``(N, 4)`` xyxy boxes, in image coordinates, have their centre in ``tile``'s core."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    (ylo, yhi), (xlo, xhi) = tile.core_y, tile.core_x
    return (cx >= xlo) & (cx < xhi) & (cy >= ylo) & (cy < yhi)


__all__ = ["Tile", "axis_windows", "tile_grid", "in_core"]
