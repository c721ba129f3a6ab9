"""Per-cell outputs: the same cells in the ROI set, the GeoJSON and the table as in the labels."""

import csv
import json

import numpy as np
import pytest
import roifile

from napari_cellseg.export.cells import find_cells, parse_formats, write_cells
from napari_cellseg.export.outlines import fill_polygon, ring_area


def _labels() -> dict[int, np.ndarray]:
    """Class 1: a ring with a hole (id 1), two touching cells (2, 3); class 2: a cell in two parts (5)."""
    a = np.zeros((20, 24), np.int32)
    a[1:8, 1:8] = 1
    a[3:6, 3:6] = 0
    a[10:15, 2:6], a[10:15, 6:10] = 2, 3
    b = np.zeros_like(a)
    b[2:5, 14:17] = 5
    b[8:10, 18:22] = 5
    return {1: a, 2: b}


def _all(tmp_path, labels, image=None):
    cells = find_cells(labels, {1: 0.9, 2: 0.8, 3: 0.7, 5: 0.6}, ["nucleus", "other"], image)
    paths = write_cells(tmp_path, "img", cells, ("labels", "imagej", "geojson", "csv"))
    assert [p.name for p in paths] == ["img_cells.zip", "img_cells.geojson", "img_cells.csv"]
    return cells


def test_every_format_holds_the_cells_of_the_labels(tmp_path):
    labels = _labels()
    image = np.arange(20 * 24, dtype=np.float64).reshape(20, 24)
    cells = _all(tmp_path, labels, image)
    ids = {k: set(np.unique(v[v > 0]).tolist()) for k, v in labels.items()}
    assert [c.id for c in cells] == [1, 2, 3, 5]

    rows = list(csv.DictReader(open(tmp_path / "img_cells.csv", encoding="utf-8")))
    assert [int(r["id"]) for r in rows] == [1, 2, 3, 5]
    for row in rows:
        k = 1 if row["class"] == "nucleus" else 2
        assert int(row["id"]) in ids[k]
        mask = labels[k] == int(row["id"])
        assert int(row["area"]) == mask.sum()
        assert float(row["mean_intensity"]) == pytest.approx(image[mask].mean(), abs=1e-3)
        assert float(row["centroid_y"]) == pytest.approx(np.nonzero(mask)[0].mean() + 0.5, abs=0.01)
    assert rows[0]["score"] == "0.9" and rows[0]["bbox_y1"] == "8"

    features = json.loads((tmp_path / "img_cells.geojson").read_text())["features"]
    assert [f["properties"]["name"] for f in features] == ["nucleus-1", "nucleus-2", "nucleus-3", "other-5"]
    hole = features[0]["geometry"]
    assert hole["type"] == "Polygon" and len(hole["coordinates"]) == 2  # outer ring and the hole
    assert features[3]["geometry"]["type"] == "MultiPolygon"
    assert features[3]["properties"]["classification"]["name"] == "other"
    for feature, cell in zip(features, cells):
        polygons = feature["geometry"]["coordinates"]
        polygons = [polygons] if feature["geometry"]["type"] == "Polygon" else polygons
        filled = np.zeros((20, 24), bool)
        for polygon in polygons:
            filled |= fill_polygon([np.asarray(r) for r in polygon], filled.shape)
        k = 1 if cell.class_name == "nucleus" else 2
        assert np.array_equal(filled, labels[k] == cell.id)
        assert feature["properties"]["measurements"]["score"] == pytest.approx(cell.score)

    rois = roifile.roiread(tmp_path / "img_cells.zip")
    assert [r.name for r in rois] == ["nucleus-1", "nucleus-2", "nucleus-3", "other-5"]
    assert rois[0].composite and rois[3].composite  # a hole, two parts
    for roi, k, cell_id in ((rois[1], 1, 2), (rois[2], 1, 3)):
        corners = roi.coordinates()
        closed = np.vstack([corners, corners[:1]])
        assert abs(ring_area(closed)) == (labels[k] == cell_id).sum()
    parts = rois[3].coordinates(multi=True)
    assert len(parts) == 2 and sum(abs(ring_area(p)) for p in parts) == (labels[2] == 5).sum()


def test_a_stack_has_the_plane_in_every_record(tmp_path):
    a = _labels()[1]
    stack = {1: np.stack([a, np.where(a == 2, 7, 0)]), 2: np.zeros((2, 20, 24), np.int32)}
    cells = find_cells(stack, {7: 0.5}, ["nucleus", "other"])
    write_cells(tmp_path, "movie", cells, ("csv", "geojson", "imagej"), axis="T")
    assert [(c.plane, c.id) for c in cells] == [(0, 1), (0, 2), (0, 3), (1, 7)]
    rows = list(csv.DictReader(open(tmp_path / "movie_cells.csv", encoding="utf-8")))
    assert [r["plane"] for r in rows] == ["0", "0", "0", "1"] and rows[0]["mean_intensity"] == "nan"
    features = json.loads((tmp_path / "movie_cells.geojson").read_text())["features"]
    assert [f["geometry"]["plane"]["t"] for f in features] == [0, 0, 0, 1]
    assert [r.position for r in roifile.roiread(tmp_path / "movie_cells.zip")] == [1, 1, 1, 2]
    planes = np.stack([np.full((20, 24), 10.0), np.full((20, 24), 30.0)])
    read = []
    measured = find_cells(stack, {}, ["nucleus", "other"], lambda p: read.append(p) or planes[p])
    assert [c.mean_intensity for c in measured] == [10.0, 10.0, 10.0, 30.0] and set(read) == {0, 1}


def test_no_cells_writes_empty_files(tmp_path):
    cells = find_cells({1: np.zeros((5, 5), np.int32)}, {}, ["nucleus"])
    write_cells(tmp_path, "empty", cells, ("imagej", "geojson", "csv"))
    assert json.loads((tmp_path / "empty_cells.geojson").read_text())["features"] == []
    assert (tmp_path / "empty_cells.csv").read_text().startswith("id,class,score")
    assert roifile.roiread(tmp_path / "empty_cells.zip") == []


def test_formats_parse_and_refuse_unknown():
    assert parse_formats("labels, CSV,csv") == ("labels", "csv")
    with pytest.raises(ValueError, match="unknown output format tiff"):
        parse_formats("labels,tiff")
