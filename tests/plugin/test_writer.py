"""Writer: Labels layers -> COCO results JSON that pycocotools loads, with the right ids and scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO

from napari_cellseg.plugin.reader import PREDICTION, labels_layer_kwargs, read_sample_folder
from napari_cellseg.plugin.writer import write_coco_results
from napari_cellseg.io.samples import find_samples
from napari_cellseg.inference.pipeline import samples_ground_truth


def test_sample_labels_become_results_pycocotools_loads(tiny_dataset, tmp_path):
    layers = read_sample_folder(tiny_dataset / "val" / "val_0")  # image + class1 + class2
    out = tmp_path / "val.json"
    assert write_coco_results(str(out), layers) == [str(out)]
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} == {1}  # val_0 is the first sample of val/
    assert sorted(r["category_id"] for r in results) == [1, 1, 2] and {r["score"] for r in results} == {1.0}
    samples = find_samples(tiny_dataset / "val")
    coco = COCO()
    coco.dataset = samples_ground_truth(samples, ["class1", "class2"])
    coco.createIndex()
    assert len(coco.loadRes(str(out)).anns) == 3


def test_scores_come_from_features_per_class(tiny_dataset, tmp_path):
    source = tiny_dataset / "test_release" / "test_0.tif"  # id 1 in the mapping file one folder up
    class1, class2 = np.zeros((64, 80), np.int32), np.zeros((64, 80), np.int32)
    class1[0:5, 0:5], class1[10:20, 10:20] = 1, 2
    class2[30:40, 30:40] = 2  # id 2 is a model cell in class 1 but drawn by hand in class 2
    meta1 = labels_layer_kwargs(
        1, "class1", source=source, role=PREDICTION, ids=np.array([1, 2]), scores={1: 0.7, 2: 0.4}
    )
    meta2 = labels_layer_kwargs(2, "class2", source=source, role=PREDICTION, ids=np.array([]), scores={})
    out = tmp_path / "test-results.json"
    write_coco_results(str(out), [(class1, meta1, "labels"), (class2, meta2, "labels")])
    results = json.loads(out.read_text())
    got = sorted((r["image_id"], r["category_id"], round(r["score"], 3), r["bbox"][0]) for r in results)
    assert got == [(1, 1, 0.4, 10.0), (1, 1, 0.7, 0.0), (1, 2, 1.0, 30.0)]


def test_save_layers_through_napari(make_napari_viewer, tiny_dataset, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(tiny_dataset / "train" / "sample_2"), plugin="napari-cellseg")
    viewer.layers.selection = {viewer.layers[1], viewer.layers[2]}
    out = tmp_path / "saved.json"
    viewer.layers.save(str(out), selected=True, plugin="napari-cellseg")
    results = json.loads(out.read_text())
    assert len(results) == 3 and {r["image_id"] for r in results} == {3}  # sample_2: third of train/


def test_labels_of_an_unknown_image_are_a_notification(tmp_path, errors):
    labels = np.zeros((16, 16), np.int32)
    labels[2:5, 2:5] = 1
    assert write_coco_results(str(tmp_path / "x.json"), [(labels, {"name": "class1"}, "labels")]) == []
    assert len(errors) == 1 and "unknown" in errors[0] and not (tmp_path / "x.json").exists()
    assert write_coco_results(str(tmp_path / "x.json"), [(labels, {"name": "cells"}, "labels")]) == []
    assert "class1, class2" in errors[1]


def test_layer_ids_beyond_int32_are_refused_not_wrapped():
    """uint64 paint ids (napari allows them) would wrap in int32 onto another cell or below zero."""
    import pytest

    from napari_cellseg.plugin.writer import group_layers
    from napari_cellseg.errors import LayerError

    data = np.zeros((16, 16), np.uint64)
    data[2:6, 2:6] = 2**32 + 1  # int32 makes this 1
    with pytest.raises(LayerError, match="cell id 4294967297"):
        group_layers([("class1", data, {}, None)])
    data[2:6, 2:6] = 2**31 - 1
    (group,) = group_layers([("class1", data, {}, None)])
    assert int(group.labels[1].max()) == 2**31 - 1


def test_save_my_own_image_and_its_labels_through_napari(make_napari_viewer, tmp_path):
    """An image of the user's own (no mapping file) with its labels: File > Save All Layers writes
    the results and the ids file beside them; saving again keeps the id."""
    import tifffile

    path = tmp_path / "mine" / "cells.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, np.zeros((32, 40), np.uint8))
    viewer = make_napari_viewer()
    viewer.open(str(path))
    labels = np.zeros((32, 40), np.int32)
    labels[2:6, 3:9] = 5
    viewer.add_labels(labels, **labels_layer_kwargs(1, "class1", source=path, role=PREDICTION))
    out = tmp_path / "out" / "cells.json"
    out.parent.mkdir()
    for _ in range(2):
        viewer.layers.save(str(out), plugin="napari-cellseg")  # every layer: the image and the labels
        results = json.loads(out.read_text())
        found = [(r["image_id"], r["category_id"], r["score"], r["bbox"]) for r in results]
        assert found == [(1, 1, 1.0, [3, 2, 6, 4])]
        ids = json.loads(Path(f"{out}.images.json").read_text())
        assert ids == [{"file_name": "cells.tif", "id": 1, "height": 32, "width": 40}]
