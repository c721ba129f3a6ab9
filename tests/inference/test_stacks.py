"""Stacks: axes, plane-by-plane prediction with stack-wide ids, label stacks, planes in exports."""

import json

import numpy as np
import pytest
import tifffile

from napari_cellseg.inference import pipeline, stacks
from napari_cellseg.io import image_reader
from conftest import MOVIE_SHAPE as SHAPE, untrained_config, untrained_model, write_movie as _movie
from napari_cellseg.cli.main import main
from napari_cellseg.errors import DatasetError
from napari_cellseg.model.checkpoint import save_checkpoint
from napari_cellseg.inference.postprocess import to_labels
from napari_cellseg.progress import drain
from napari_cellseg.inference.scale import iter_predict_scaled

CONFIG = dict(box_score_thresh=0.0, detections_per_img=10)


@pytest.fixture(scope="module")
def model(one_thread):
    return untrained_model(**CONFIG)


def test_planes_are_segmented_alone_and_ids_are_unique_across_the_stack(tmp_path, model):
    _movie(tmp_path / "movie.tif", planes=3)
    stack = image_reader.read_stack(tmp_path / "movie.tif")
    steps = stacks.iter_predict_stack(model, stack)
    progress = []
    result = drain(steps, progress.append)
    assert [(p.done, p.total) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    labels = stacks.to_stack_labels(result, 0.0, 0.3, classes=[1, 2])
    assert labels[1].shape == (3, *SHAPE) and labels[1].dtype == np.int32
    seen = [set(np.unique(labels[k][p])) - {0} for p in range(3) for k in (1, 2)]
    assert sum(len(s) for s in seen) == len(set().union(*seen)) > 0  # no id in two planes or classes
    offset = 0
    for p in range(3):  # each plane is exactly the single-image result, ids shifted
        alone = to_labels(drain(iter_predict_scaled(model, stack.plane(p))), 0.0, 0.3, classes=[1, 2])
        for k in (1, 2):
            assert np.array_equal(labels[k][p], np.where(alone[k] > 0, alone[k] + offset, 0))
        offset += len(result.planes[p])
    assert len(stacks.stack_scores(result)) == len(result) == offset


def test_raw_instances_stay_compact(tmp_path, model):
    _movie(tmp_path / "movie.tif", planes=2)
    result = stacks.predict_stack(model, image_reader.read_stack(tmp_path / "movie.tif"))
    full_size = len(result) * SHAPE[0] * SHAPE[1] * 4  # one float mask per instance
    assert len(result) > 0 and result.nbytes < full_size / 4


def test_cancel_stops_between_planes(tmp_path, model):
    _movie(tmp_path / "movie.tif", planes=3)
    seen = []  # Cancel is clicked once plane 1 is done

    # scale 1: one pass per plane (auto may add a second)
    movie = image_reader.read_stack(tmp_path / "movie.tif")
    steps = stacks.iter_predict_stack(model, movie, should_stop=lambda: bool(seen), scale=1.0)
    seen.append(next(steps))
    assert seen[0][:2] == (1, 3)
    with pytest.raises(StopIteration) as stopped:
        next(steps)
    assert stopped.value.value is None


def test_cli_predict_writes_a_label_stack_per_class(tmp_path, model):
    save_checkpoint(tmp_path / "m.pt", model, untrained_config(**CONFIG))
    _movie(tmp_path / "movie.tif", planes=5)
    assert main(["predict", str(tmp_path / "m.pt"), str(tmp_path / "movie.tif"), "--out", str(tmp_path / "out"),
                 "--score-thresh", "0", "--mask-thresh", "0.3", "--device", "cpu", "--link",
                 "--format", "labels,csv"]) == 0
    cells = set()
    for name in ("class1", "class2"):
        with tifffile.TiffFile(tmp_path / "out" / f"movie_{name}.tif") as tif:
            assert (tif.series[0].axes, tif.series[0].shape) == ("TYX", (5, *SHAPE))
            planes = tif.series[0].asarray()
        cells |= {(p, name, int(i)) for p, plane in enumerate(planes) for i in np.unique(plane) if i}
    import csv

    rows = list(csv.DictReader(open(tmp_path / "out" / "movie_cells.csv", encoding="utf-8")))
    assert cells and {(int(r["plane"]), r["class"], int(r["id"])) for r in rows} == cells and len(rows) == len(cells)


def test_export_names_planes_file_hash_plane(tmp_path, model):
    folder = tmp_path / "images"
    folder.mkdir()
    data = _movie(folder / "movie.tif", planes=2)
    tifffile.imwrite(folder / "still.tif", data[1])  # the same pixels as plane 1, saved alone
    entries = image_reader.folder_mapping(pipeline.image_files(folder))
    assert [(e["file_name"], e["id"]) for e in entries] == [("movie.tif#0", 1), ("movie.tif#1", 2), ("still.tif", 3)]
    (tmp_path / "map.json").write_text(json.dumps(entries))
    items = pipeline.export_items(folder, tmp_path / "map.json")
    assert [(i.name, i.plane) for i in items] == [("movie.tif#0", 0), ("movie.tif#1", 1), ("still.tif", None)]
    out = tmp_path / "results.json"
    list(pipeline.iter_export(model, items, out, score_thresh=0.0, mask_thresh=0.3))
    results = json.loads(out.read_text())
    by_image = {i: [{k: v for k, v in r.items() if k != "image_id"} for r in results if r["image_id"] == i]
                for i in (1, 2, 3)}
    assert by_image[2] == by_image[3] and by_image[2]  # a plane exports as the same image saved alone


def test_mapping_that_lists_a_missing_plane_is_refused(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _movie(folder / "movie.tif", planes=2)
    entries = [{"file_name": f"movie.tif#{p}", "id": p + 1, "height": SHAPE[0], "width": SHAPE[1]} for p in (0, 2)]
    (tmp_path / "map.json").write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match="has 2 plane"):
        pipeline.export_items(folder, tmp_path / "map.json")
    (tmp_path / "map.json").write_text(json.dumps([]))
    with pytest.raises(DatasetError, match="movie.tif#0"):
        pipeline.export_items(folder, tmp_path / "map.json")


def _disc(cy, cx, r=6, shape=SHAPE):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_link_over_time_keeps_a_moving_cells_id_and_gives_new_cells_theirs():
    movie = np.zeros((3, *SHAPE), np.int32)
    movie[0][_disc(10, 10)] = 1
    movie[0][_disc(30, 30)] = 2  # vanishes after plane 0
    movie[1][_disc(10, 12)] = 3  # plane 0's cell 1, moved by 2 px
    movie[1][_disc(30, 40)] = 4  # a new cell, far from cell 2
    movie[2][_disc(10, 14)] = 5
    movie[2][_disc(31, 40)] = 6
    linked = stacks.link_over_time({1: movie.copy()})[1]
    assert [sorted(set(np.unique(linked[t])) - {0}) for t in range(3)] == [[1, 2], [1, 4], [1, 4]]
    assert np.array_equal(linked > 0, movie > 0)  # only the ids change, never the masks
