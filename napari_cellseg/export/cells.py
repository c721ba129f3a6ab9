"""Per-cell outputs of a segmentation: an ImageJ/Fiji ROI set, a QuPath GeoJSON, a CSV table.

Why one list of ``Cell`` records feeds every format: the ROI set, the GeoJSON and the table then
hold the same cells (the ids of the label image, no more, no fewer), with the same class, score
and outline. Outlines follow pixel edges (``outlines``): holes stay holes, and touching cells
share their border instead of overlapping. Stacks: one record per cell and plane, its plane in
every format (ImageJ position, GeoJSON ``plane``, a CSV column).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..atomic import atomic_path, write_text_atomic
from .outlines import Polygon, mask_polygons

FORMATS = ("labels", "imagej", "geojson", "csv")
"""``labels``: a label TIFF per class; the others one file per image, every class in it."""
SUFFIXES = {"imagej": "_cells.zip", "geojson": "_cells.geojson", "csv": "_cells.csv"}
COLUMNS = ("id", "class", "score", "area", "centroid_y", "centroid_x", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1",
           "mean_intensity")
"""The table's columns (``plane`` comes first for stacks); bbox ends are exclusive, in pixels."""


@dataclass
class Cell:
    """One cell of one plane, measured on its label image."""

    id: int
    class_name: str
    score: float
    area: int
    centroid: tuple[float, float]
    """``(y, x)`` in pixels, pixel centres at ``+0.5`` (as the outlines' corners)."""
    bbox: tuple[int, int, int, int]
    """``(y0, x0, y1, x1)``, ends exclusive."""
    mean_intensity: float
    polygons: list[Polygon] = field(repr=False)
    plane: int | None = None

    def row(self) -> dict[str, object]:
        """The cell as a table row (``COLUMNS``, with ``plane`` first for stacks)."""
        values = (self.id, self.class_name, round(self.score, 4), self.area, round(self.centroid[0], 2),
                  round(self.centroid[1], 2), *self.bbox, round(self.mean_intensity, 3))
        row = dict(zip(COLUMNS, values))
        return row if self.plane is None else {"plane": self.plane, **row}


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"labels,csv"`` -> ``("labels", "csv")``, each known, none twice; order kept."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown output format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(names))


def find_cells(
    labels: Mapping[int, np.ndarray], scores: Mapping[int, float], class_names: Sequence[str],
    image: np.ndarray | Callable[[int], np.ndarray] | None = None,
) -> list[Cell]:
    """Every cell of the per-class label images (class id -> ``H x W``, or ``planes x H x W`` for a
    stack), measured; ``image`` (``H x W``, ``H x W x C``, a stack of those, or for a stack a
    function plane -> image, so planes are read one at a time) gives the mean intensity (over the
    cell's pixels and the channels; NaN without it). A cell without a score
    (drawn by hand) scores 1.0, as in the COCO export. Sorted by plane, then id."""
    cells: list[Cell] = []
    for class_id in sorted(labels):
        stack = np.asarray(labels[class_id])
        planes = stack[None] if stack.ndim == 2 else stack
        for p, plane in enumerate(planes):
            picture = None if image is None else np.asarray(
                image if stack.ndim == 2 else image(p) if callable(image) else image[p])
            cells += _plane_cells(plane, scores, class_names[class_id - 1], picture,
                                  None if stack.ndim == 2 else p)
    cells.sort(key=lambda c: (c.plane or 0, c.id))
    return cells


def _plane_cells(labels: np.ndarray, scores: Mapping[int, float], name: str, image: np.ndarray | None,
                 plane: int | None) -> list[Cell]:
    if image is not None and image.ndim == 3:
        image = image.mean(axis=2)
    cells = []
    for index, where in enumerate(ndimage.find_objects(labels), start=1):
        if where is None:
            continue
        mask = labels[where] == index
        rows, cols = np.nonzero(mask)
        y0, x0 = where[0].start, where[1].start
        mean = float(image[where][mask].mean()) if image is not None else math.nan
        cells.append(Cell(
            id=index, class_name=name, score=float(scores.get(index, 1.0)), area=int(rows.size),
            centroid=(float(rows.mean() + y0 + 0.5), float(cols.mean() + x0 + 0.5)),
            bbox=(y0, x0, where[0].stop, where[1].stop), mean_intensity=mean,
            polygons=mask_polygons(mask, (y0, x0)), plane=plane,
        ))
    return cells


# ------------------------------------------------------------------------------- writers


def write_csv(path: str | os.PathLike, cells: Sequence[Cell]) -> None:
    """One row per cell (``Cell.row``)."""
    stack = any(c.plane is not None for c in cells)
    columns = ("plane", *COLUMNS) if stack else COLUMNS
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(c.row() for c in cells)


def geojson(cells: Sequence[Cell], axis: str = "") -> dict:
    """A QuPath-style FeatureCollection: a detection per cell, its class as QuPath's
    ``classification``, score and measurements as ``measurements``; a stack's plane as QuPath
    writes it, ``geometry.plane`` (``z`` or ``t`` by ``axis``: ``Z``, ``T``, or ``""`` for z)."""
    features = []
    for cell in cells:
        rings = [[[[int(v) for v in point] for point in ring] for ring in poly] for poly in cell.polygons]
        geometry = ({"type": "Polygon", "coordinates": rings[0]} if len(rings) == 1
                    else {"type": "MultiPolygon", "coordinates": rings})
        measurements = {k: v for k, v in cell.row().items() if k not in ("class", "plane") and _finite(v)}
        properties = {"objectType": "detection", "name": roi_name(cell),
                      "classification": {"name": cell.class_name, "color": _colour(cell.class_name)},
                      "measurements": measurements, "isLocked": False}
        if cell.plane is not None:  # where QuPath's ROI reader looks for it: in the geometry
            geometry["plane"] = {"c": -1, "z": 0, "t": 0, "t" if axis == "T" else "z": cell.plane}
        features.append({"type": "Feature", "id": roi_name(cell), "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike, cells: Sequence[Cell], axis: str = "") -> None:
    write_text_atomic(path, json.dumps(geojson(cells, axis)))


def write_imagej(path: str | os.PathLike, cells: Sequence[Cell]) -> None:
    """An ImageJ/Fiji ROI set (``.zip``; Fiji: ROI Manager > More > Open): a traced polygon per
    cell, or a composite ROI for a cell with holes or several parts; a stack's ROIs carry their
    plane as position (1-based, as Fiji counts)."""
    import roifile

    rois = [_imagej_roi(roifile, cell) for cell in cells]
    with atomic_path(path) as tmp:
        tmp.unlink()  # roifile appends to an existing zip
        if rois:
            roifile.roiwrite(tmp, rois)
        else:
            import zipfile

            zipfile.ZipFile(tmp, "w").close()


def _imagej_roi(roifile, cell: Cell):
    if len(cell.polygons) == 1 and len(cell.polygons[0]) == 1:
        ring = cell.polygons[0][0][:-1]
        roi = roifile.ImagejRoi.frompoints(ring, name=roi_name(cell))
        roi.roitype = roifile.ROI_TYPE.TRACED
        roi.right, roi.bottom = int(ring[:, 0].max()), int(ring[:, 1].max())  # corners, not pixels
    else:  # ImageJ's ShapeRoi: a path of MOVETO (0) / LINETO (1) / CLOSE (4), image coordinates
        path: list[float] = []
        for ring in (r for poly in cell.polygons for r in poly):
            path += [0, *map(float, ring[0])]
            for point in ring[1:-1]:
                path += [1, *map(float, point)]
            path.append(4)
        roi = roifile.ImagejRoi()
        roi.roitype = roifile.ROI_TYPE.RECT
        roi.name = roi_name(cell)
        roi.multi_coordinates = np.asarray(path, np.float32)
        roi.shape_roi_size = len(path)
        y0, x0, y1, x1 = cell.bbox
        roi.top, roi.left, roi.bottom, roi.right = y0, x0, y1, x1
    if cell.plane is not None:
        roi.position = cell.plane + 1
    return roi


def roi_name(cell: Cell) -> str:
    """``<class>-<id>`` (``-p<plane>`` for a stack): unique in a ROI set, as Fiji needs."""
    return f"{cell.class_name}-{cell.id}" + ("" if cell.plane is None else f"-p{cell.plane}")


def write_cells(folder: str | os.PathLike, stem: str, cells: Sequence[Cell], formats: Iterable[str],
                axis: str = "") -> list[Path]:
    """Write ``<stem>_cells.zip/.geojson/.csv`` into ``folder`` for each per-cell format asked for
    (``labels`` is the caller's: it writes label images); returns the paths written."""
    written = []
    for fmt in formats:
        if fmt not in SUFFIXES:
            continue
        path = Path(folder) / f"{stem}{SUFFIXES[fmt]}"
        if fmt == "csv":
            write_csv(path, cells)
        elif fmt == "geojson":
            write_geojson(path, cells, axis)
        else:
            write_imagej(path, cells)
        written.append(path)
    return written


def _finite(value: object) -> bool:
    return not (isinstance(value, float) and not math.isfinite(value))


def _colour(name: str) -> list[int]:
    """A stable colour per class name, so QuPath shows each class in its own colour."""
    seed = sum(ord(c) * 31**i for i, c in enumerate(name)) % (2**32)
    return [int(v) for v in np.random.default_rng(seed).integers(40, 256, 3)]


__all__ = ["FORMATS", "COLUMNS", "Cell", "parse_formats", "find_cells", "write_cells", "write_csv",
           "write_geojson", "write_imagej", "geojson", "roi_name"]
