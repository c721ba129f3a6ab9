"""Reader: HW3 sample folders and COCO results files open as layers; anything else is declined."""

from __future__ import annotations

import json

import numpy as np

from napari_cellseg.plugin.reader import GROUND_TRUTH, PREDICTION, napari_get_reader, read_results_json
from napari_cellseg.io.coco import labels_to_results, write_json
from napari_cellseg.io.samples import find_samples, read_sample
from napari_cellseg.io.images import read_image


def test_declines_what_it_cannot_read(tiny_dataset, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tiny_dataset / "test_image_name_to_ids.json")) is None  # a list, no masks
    assert napari_get_reader(str(tiny_dataset / "train")) is None  # a folder of samples, not a sample
    assert napari_get_reader(str(tiny_dataset / "test_release" / "test_0.tif")) is None
    sample = str(tiny_dataset / "train" / "sample_0")
    assert napari_get_reader([sample, sample]) is None
    assert napari_get_reader([sample]) is not None


def test_sample_folder_opens_as_image_and_truth_layers(make_napari_viewer, tiny_dataset):
    folder = tiny_dataset / "train" / "sample_0"
    layers = napari_get_reader(str(folder))(str(folder))
    assert [t for _, _, t in layers] == ["image", "labels", "labels"]
    image, truth = read_sample(find_samples(tiny_dataset / "train")[0])
    np.testing.assert_array_equal(layers[0][0], image)
    for (data, kwargs, _), k in zip(layers[1:], (1, 2)):
        np.testing.assert_array_equal(data, truth[k])
        assert kwargs["metadata"]["cellseg"] == {
            "source": str(folder / "image.tif"), "class_id": k, "class_name": f"class{k}", "role": GROUND_TRUTH}

    viewer = make_napari_viewer()  # through napari and the manifest
    viewer.open(str(tiny_dataset / "train" / "sample_1"), plugin="napari-cellseg")
    assert [layer.name for layer in viewer.layers] == ["sample_1", "class1 (ground truth)"]
    assert viewer.layers[0].rgb and viewer.layers[0].data.shape == (64, 80, 3)


def results_file(tiny_dataset, name="results.json"):
    """Two cells of class 1 (scores .9, .2) and one of class 2 on test_1.tif (id 2)."""
    class1, class2 = np.zeros((64, 80), np.int32), np.zeros((64, 80), np.int32)
    class1[5:15, 5:15], class1[30:40, 30:50], class2[50:60, 2:12] = 1, 2, 3
    results = labels_to_results({1: class1}, 2, {1: 0.9, 2: 0.2}) + labels_to_results({2: class2}, 2, {3: 0.5})
    write_json(tiny_dataset / name, results)
    return tiny_dataset / name, class1, class2


def test_results_json_opens_over_its_image(make_napari_viewer, tiny_dataset):
    path, class1, class2 = results_file(tiny_dataset)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-cellseg")
    assert [layer.name for layer in viewer.layers] == ["image", "class1", "class2"]
    image = viewer.layers["image"]
    np.testing.assert_array_equal(image.data, read_image(tiny_dataset / "test_release" / "test_1.tif"))
    layer1, layer2 = viewer.layers["class1"], viewer.layers["class2"]
    assert layer1.metadata["cellseg"]["role"] == PREDICTION
    assert layer1.metadata["cellseg"]["source"] == str(tiny_dataset / "test_release" / "test_1.tif")
    scores1 = dict(zip(layer1.features["index"], layer1.features["score"]))
    assert sorted(np.round(list(scores1.values()), 3)) == [0.2, 0.9]
    for instance in (1, 2):  # ids are renumbered by score, masks and scores stay together
        ids = np.unique(layer1.data[class1 == instance])
        assert len(ids) == 1 and np.array_equal(layer1.data == ids[0], class1 == instance)
    assert (layer2.data > 0).sum() == (class2 > 0).sum()


def test_several_images_open_with_the_first_visible(tiny_dataset):
    path, _, _ = results_file(tiny_dataset)
    results = json.loads(path.read_text())
    results.append({**results[0], "image_id": 1})
    path.write_text(json.dumps(results))
    layers = read_results_json(path)
    names = [kwargs["name"] for _, kwargs, _ in layers]
    assert names == ["test_1 image", "test_1 class1", "test_1 class2", "test_0 image", "test_0 class1"]
    assert [kwargs["visible"] for _, kwargs, _ in layers] == [True] * 3 + [False] * 2


def test_bad_results_are_a_notification(tiny_dataset, tmp_path, errors):
    path, _, _ = results_file(tiny_dataset)
    results = json.loads(path.read_text())
    write_json(path, [{**results[0], "image_id": 99}])
    assert read_results_json(path) == [(None,)]
    assert len(errors) == 1 and "99" in errors[0] and "\n" not in errors[0]

    alone = tmp_path / "alone" / "results.json"  # no mapping file nearby
    alone.parent.mkdir()
    alone.write_text(json.dumps(results))
    assert read_results_json(alone) == [(None,)]
    assert "test_image_name_to_ids.json" in errors[1]

    (tiny_dataset / "test_release" / "test_1.tif").unlink()
    path, _, _ = results_file(tiny_dataset)
    assert read_results_json(path) == [(None,)]
    assert "test_1.tif not found" in errors[2]
