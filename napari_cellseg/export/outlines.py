"""Exact cell outlines: a label mask -> polygons along pixel edges, holes included.

Why pixel edges (not contours through pixel centres): a polygon that follows the edges of the
cell's pixels encloses exactly those pixels - its area is the pixel count and filling it gives the
mask back - and two touching cells share their border instead of overlapping or leaving a gap.
Coordinates are ``(x, y)`` of pixel corners: pixel ``(row r, column c)`` spans ``x`` in
``[c, c + 1]`` and ``y`` in ``[r, r + 1]``, as ImageJ and QuPath place them.

A cell is split into 4-connected parts (pixels touching only at a corner are separate parts, as
``scipy.ndimage.label`` counts them); each part is one polygon: its outer ring (positive area by
the shoelace formula in image coordinates) and one ring per hole (negative area).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Ring = np.ndarray
"""``(n, 2)`` int64 ``(x, y)`` corners, closed (the last point repeats the first)."""
Polygon = list[Ring]
"""The outer ring first, then the holes."""

_STEP = ((1, 0), (0, 1), (-1, 0), (0, -1))
"""Edge directions in image coordinates (y down): east, south, west, north; a right turn is +1."""


def mask_polygons(mask: np.ndarray, origin: tuple[int, int] = (0, 0)) -> list[Polygon]:
    """Polygons of a boolean mask, one per 4-connected part, largest part first; ``origin`` is the
    ``(row, column)`` of ``mask[0, 0]`` in the image, added to every corner."""
    mask = np.asarray(mask, bool)
    parts, count = ndimage.label(mask)
    polygons = []
    for index, part_slice in enumerate(ndimage.find_objects(parts), start=1):
        if part_slice is None:
            continue
        part = parts[part_slice] == index
        rings = _trace(part)
        outer = [r for r in rings if ring_area(r) > 0]
        holes = [r for r in rings if ring_area(r) < 0]
        top, left = origin[0] + part_slice[0].start, origin[1] + part_slice[1].start
        shift = np.array([left, top], np.int64)
        polygons += [[ring + shift for ring in [o, *(holes if i == 0 else [])]] for i, o in enumerate(outer)]
    polygons.sort(key=lambda poly: -polygon_area(poly))
    return polygons


def ring_area(ring: Ring) -> float:
    """Signed area (shoelace): positive for an outer ring, negative for a hole."""
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) / 2)


def polygon_area(polygon: Polygon) -> float:
    """Pixels enclosed: the outer ring less its holes."""
    return sum(ring_area(ring) for ring in polygon)


def _trace(mask: np.ndarray) -> list[Ring]:
    """Every boundary ring of a mask, the cell on the right of each edge (image coordinates).

    Edges start at pixel corners; a corner where two cell pixels touch only diagonally has two
    ways on, and turning right keeps each pixel with its own 4-connected side.
    """
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    sides = (
        (inner & ~padded[:-2, 1:-1], (0, 0), 0),  # top edge, eastwards from the top-left corner
        (inner & ~padded[1:-1, 2:], (1, 0), 1),  # right edge, southwards from the top-right corner
        (inner & ~padded[2:, 1:-1], (1, 1), 2),  # bottom edge, westwards from the bottom-right corner
        (inner & ~padded[1:-1, :-2], (0, 1), 3),  # left edge, northwards from the bottom-left corner
    )
    ways: dict[tuple[int, int], list[int]] = {}
    for where, (dx, dy), direction in sides:
        rows, cols = np.nonzero(where)
        for x, y in zip((cols + dx).tolist(), (rows + dy).tolist()):
            ways.setdefault((x, y), []).append(direction)

    def way_on(point: tuple[int, int], came: int) -> int:
        out = ways[point]
        return (came + 1) % 4 if len(out) > 1 else out[0]

    used: set[tuple[tuple[int, int], int]] = set()
    rings = []
    for start, directions in list(ways.items()):
        for first in directions:
            if (start, first) in used:
                continue
            ring, point, direction = [start], start, first
            while True:
                used.add((point, direction))
                point = (point[0] + _STEP[direction][0], point[1] + _STEP[direction][1])
                ring.append(point)
                direction = way_on(point, direction)
                if (point, direction) == (start, first):
                    break
            rings.append(_corners(np.asarray(ring, np.int64)))
    return rings


def _corners(ring: np.ndarray) -> Ring:
    """Drop the points in the middle of straight runs; the ring stays closed."""
    body = ring[:-1]
    before, after = np.roll(body, 1, axis=0), np.roll(body, -1, axis=0)
    turn = np.any((body - before) != (after - body), axis=1)
    kept = body[turn]
    return np.vstack([kept, kept[:1]])


def fill_polygon(polygon: Polygon, shape: tuple[int, int]) -> np.ndarray:
    """The pixels whose centres lie inside the polygon (even-odd over its rings): the inverse of
    ``mask_polygons``, for tests and for readers that want masks back from outlines."""
    from matplotlib.path import Path as MplPath

    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    centres = np.column_stack([cols.ravel() + 0.5, rows.ravel() + 0.5])
    inside = np.zeros(len(centres), bool)
    for ring in polygon:
        inside ^= MplPath(ring).contains_points(centres)
    return inside.reshape(shape)


__all__ = ["Ring", "Polygon", "mask_polygons", "ring_area", "polygon_area", "fill_polygon"]
