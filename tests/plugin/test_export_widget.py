"""Export & Evaluate widget: layers or a reviewed folder -> COCO results JSON; AP against truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from napari_cellseg.plugin.reader import GROUND_TRUTH, PREDICTION, image_layer, labels_layer_kwargs
from napari_cellseg.plugin.session import ImageResult, session_for
from napari_cellseg.plugin.export_widget import FOLDER, ExportWidget
from napari_cellseg.io.coco import ground_truth, write_json
from napari_cellseg.io.rle import decode_mask
from napari_cellseg.io.samples import find_samples, read_sample
from napari_cellseg.io.images import read_image
from napari_cellseg.io.raw import RawInstances


def add_prediction(viewer, source: Path, labels: dict[int, np.ndarray], scores: dict[int, float], role=PREDICTION):
    """Layers as the Segment widget makes them: the image, one Labels layer per class."""
    data, kwargs, _ = image_layer(read_image(source), source, source.stem)
    viewer.add_image(data, **kwargs)
    for k, label_image in labels.items():
        ids = np.unique(label_image)
        viewer.add_labels(label_image, **labels_layer_kwargs(k, f"class{k}", source=source, role=role,
                                                             ids=ids[ids > 0], scores=scores))


def widget_for(viewer) -> ExportWidget:
    widget = ExportWidget(viewer)
    widget.synchronous = True
    return widget


def test_export_visible_layers_with_the_mapping_ids(make_napari_viewer, tiny_dataset, tmp_path):
    viewer = make_napari_viewer()
    source = tiny_dataset / "test_release" / "test_1.tif"  # id 2 in test_image_name_to_ids.json
    class1 = np.zeros((64, 80), np.int32)
    class1[2:10, 2:10], class1[20:30, 20:30] = 1, 4  # 4: drawn by hand, no features row
    class2 = np.zeros((64, 80), np.int32)
    class2[40:50, 40:60] = 4  # the same id in another class keeps its own score
    add_prediction(viewer, source, {1: class1, 2: class2}, {1: 0.8, 4: 0.3})
    viewer.layers["class1"].features = {"index": [1], "class": ["class1"], "score": [0.8]}
    truth = read_sample(find_samples(tiny_dataset / "val")[0])[1]  # ground truth layers are not exported
    viewer.add_labels(truth[1], **labels_layer_kwargs(1, "class1", source=source, role=GROUND_TRUTH))
    hidden = viewer.add_labels(class1, **labels_layer_kwargs(1, "class1", source=source, role=PREDICTION))
    hidden.visible = False
    widget = widget_for(viewer)
    widget.out.value = tmp_path / "test-results.json"
    widget.export()
    results = json.loads((tmp_path / "test-results.json").read_text())
    found = sorted((r["category_id"], r["bbox"][0], round(r["score"], 3)) for r in results)
    assert found == [(1, 2.0, 0.8), (1, 20.0, 1.0), (2, 40.0, 0.3)]
    assert {r["image_id"] for r in results} == {2} and widget.written == tmp_path / "test-results.json"
    mask = decode_mask(next(r for r in results if r["category_id"] == 2)["segmentation"])
    np.testing.assert_array_equal(mask, class2 == 4)


def test_export_also_writes_per_cell_files(make_napari_viewer, tiny_dataset, tmp_path):
    """The same cells as the COCO results, class by class (id 4 is in both classes)."""
    import csv

    import roifile

    viewer = make_napari_viewer()
    source = tiny_dataset / "test_release" / "test_1.tif"
    class1, class2 = np.zeros((64, 80), np.int32), np.zeros((64, 80), np.int32)
    class1[2:10, 2:10], class1[20:30, 20:30], class2[40:50, 40:60] = 1, 4, 4
    add_prediction(viewer, source, {1: class1, 2: class2}, {1: 0.8, 4: 0.3})
    widget = widget_for(viewer)
    widget.out.value = tmp_path / "test-results.json"
    widget.cell_files.value = ["imagej", "geojson", "csv"]
    widget.export()
    results = json.loads((tmp_path / "test-results.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "test_1_cells.csv", encoding="utf-8")))
    assert sorted((r["class"], r["id"], r["area"]) for r in rows) == [
        ("class1", "1", "64"), ("class1", "4", "100"), ("class2", "4", "200")]
    assert len(rows) == len(results)
    features = json.loads((tmp_path / "test_1_cells.geojson").read_text())["features"]
    assert sorted(f["properties"]["measurements"]["score"] for f in features) == pytest.approx(
        sorted(r["score"] for r in results), abs=1e-4)
    assert len(roifile.roiread(tmp_path / "test_1_cells.zip")) == len(results)


def test_a_missing_mapping_entry_is_a_notification(make_napari_viewer, tiny_dataset, tmp_path, errors):
    viewer = make_napari_viewer()
    stray = tiny_dataset / "test_release" / "stray.tif"
    stray.write_bytes((tiny_dataset / "test_release" / "test_0.tif").read_bytes())
    labels = np.zeros((64, 80), np.int32)
    labels[5:9, 5:9] = 1
    add_prediction(viewer, stray, {1: labels}, {1: 0.5})
    widget = widget_for(viewer)
    widget.out.value = tmp_path / "out.json"
    widget.export()
    assert len(errors) == 1 and "stray.tif" in errors[0] and "not listed" in errors[0]
    assert not (tmp_path / "out.json").exists() and widget.export_button.enabled
    widget.mapping.value = tmp_path / "nope.json"
    widget.export()
    assert "nope.json" in errors[1]


def test_export_a_reviewed_folder_to_one_file(make_napari_viewer, tiny_dataset, tmp_path):
    viewer = make_napari_viewer()
    raw = RawInstances([[0, 0, 10, 10], [20, 20, 40, 30]], [0.9, 0.4], [1, 2],
                       [np.full((10, 10), 255, np.uint8), np.full((10, 20), 255, np.uint8)], (64, 80))
    folder = tiny_dataset / "test_release"
    edited = np.zeros((64, 80), np.int32)
    edited[50:60, 50:60] = 7
    reviewed = ImageResult(folder / "test_1.tif", raw, ["class1", "class2"], {1: edited}, {1: {}})
    session = session_for(viewer)
    session.folder_results = [ImageResult(folder / "test_0.tif", raw, ["class1", "class2"]), reviewed]
    session.score_thresh = 0.5  # the class-2 cell (0.4) is below the confidence of the moment
    widget = widget_for(viewer)
    widget.source.value = FOLDER
    widget.out.value = tmp_path / "test-results.json"
    widget.export()
    results = json.loads((tmp_path / "test-results.json").read_text())
    assert sorted((r["image_id"], r["category_id"], r["score"]) for r in results) == [
        (1, 1, pytest.approx(0.9)), (2, 1, 1.0)]
    coco_gt = COCO()
    coco_gt.dataset = ground_truth(
        [(1, "test_0.tif", {1: edited}), (2, "test_1.tif", {1: edited})], ["class1", "class2"]
    )
    coco_gt.createIndex()
    assert len(coco_gt.loadRes(str(tmp_path / "test-results.json")).anns) == 2


def test_evaluate_against_sample_folders_and_a_coco_json(make_napari_viewer, tiny_dataset, tmp_path, errors):
    viewer = make_napari_viewer()
    sample = find_samples(tiny_dataset / "val")[0]
    _, truth = read_sample(sample)
    add_prediction(viewer, sample.image_path, truth, {})  # a perfect segmentation
    widget = widget_for(viewer)
    widget.evaluate()  # ground truth: the sample folder the image came from
    assert widget.metrics["AP"] == pytest.approx(1.0) and widget.metrics["AP_per_class"]["class2"] == pytest.approx(1.0)
    cells = [widget.table.item(r, 0).text() for r in range(widget.table.rowCount())]
    assert cells[:5] == ["AP", "AP50", "AP75", "AP class1", "AP class2"] and widget.table.item(0, 1).text() == "1.000"
    row = cells.index("TP/(TP+FP+FN) @IoU 0.5, score >= 0.5")  # at the session's confidence
    assert widget.table.item(row, 1).text() == "1.000" and "PQ class2" in cells
    sizes = widget.metrics["AP50_by_diameter"]  # AP50 by nucleus size; a size with no nuclei reads n/a
    for size, value in sizes.items():
        item = widget.table.item(cells.index(f"AP50 diameter {size}"), 1)
        assert item.text() == ("n/a" if value is None else f"{value:.3f}")
        assert ("ground truth" in item.toolTip()) == (value is None)
    assert None in sizes.values() and widget.table.item(row, 0).toolTip() == cells[row]

    viewer.layers["class2"].data = np.zeros_like(truth[2])  # miss the class-2 cells
    widget.truth_folder.value = tiny_dataset / "val"  # the folder of samples: only val_0 is scored
    widget.evaluate()
    assert widget.metrics["AP_per_class"] == {"class1": pytest.approx(1.0), "class2": 0.0}

    gt = ground_truth([(1, sample.name, truth)], ["class1", "class2"])
    write_json(tmp_path / "gt.json", gt)
    widget.truth_folder.line_edit.value = ""
    widget.truth_json.value = tmp_path / "gt.json"
    widget.evaluate()
    assert widget.metrics["AP_per_class"]["class1"] == pytest.approx(1.0) and not errors

    widget.truth_json.value = tiny_dataset / "test_image_name_to_ids.json"
    widget.evaluate()
    assert len(errors) == 1 and "not COCO ground truth" in errors[0] and widget.evaluate_button.enabled


def test_a_test_image_is_not_scored_against_val(make_napari_viewer, tiny_dataset, errors):
    viewer = make_napari_viewer()
    truth = read_sample(find_samples(tiny_dataset / "val")[0])[1]
    add_prediction(viewer, tiny_dataset / "test_release" / "test_1.tif", truth, {})  # same size, other image
    widget = widget_for(viewer)
    widget.truth_folder.value = tiny_dataset / "val"
    widget.evaluate()
    assert len(errors) == 1 and errors[0].startswith("test_1.tif (1 of the 1 images of the segmentation) not in val/")
    assert widget.status.value == f"stopped: {errors[0]}" and widget.metrics is None


def test_export_names_its_images_and_asks_for_several(make_napari_viewer, tiny_dataset, tmp_path, monkeypatch):
    from napari_cellseg.plugin import export_widget

    viewer = make_napari_viewer()
    labels = np.zeros((64, 80), np.int32)
    labels[5:9, 5:9] = 1
    for name in ("test_0.tif", "test_1.tif"):
        add_prediction(viewer, tiny_dataset / "test_release" / name, {1: labels}, {1: 0.5})
    asked = []
    answer = {"yes": False}
    monkeypatch.setattr(export_widget, "ask_several", lambda parent, names: asked.append(names) or answer["yes"])
    widget = widget_for(viewer)
    widget.out.value = tmp_path / "out.json"
    widget.export()
    assert asked == [["test_0.tif", "test_1.tif"]] and not (tmp_path / "out.json").exists()
    assert widget.status.value == "not exported: the visible layers cover 2 images (test_0.tif, test_1.tif)"
    answer["yes"] = True
    widget.export()
    assert widget.status.value.startswith("wrote 2 cells of 2 images (test_0.tif, test_1.tif) to")
    viewer.layers[-1].visible = False  # the second image's layer hidden: one image, no question
    widget.export()
    assert len(asked) == 2 and "of 1 image (test_0.tif)" in widget.status.value


def test_a_failed_write_names_the_users_file_not_a_hidden_temp_file(
    make_napari_viewer, qtbot, tiny_dataset, tmp_path, errors
):
    """The results file's name taken by a folder: the write goes to a hidden temporary file first,
    and the message named it (".results.json.1a2b3c4d.tmp: is a folder") instead of results.json."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    labels = np.zeros((64, 80), np.int32)
    labels[5:9, 5:9] = 1
    add_prediction(viewer, tiny_dataset / "test_release" / "test_1.tif", {1: labels}, {1: 0.5})
    widget = ExportWidget(viewer)  # a real worker
    (tmp_path / "results.json").mkdir()
    widget.out.value = tmp_path / "results.json"
    widget.export()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert len(errors) == 1 and widget.status.value == f"stopped: {errors[0]}"
    assert "results.json: is a folder" in errors[0] and ".tmp" not in errors[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind
