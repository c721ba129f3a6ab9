"""Segment widget: live thresholds from the cached raw result, edit protection, runs and folders."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from napari_cellseg.plugin import segment_widget
from napari_cellseg.io import images
from napari_cellseg.inference import predict
from napari_cellseg.plugin.reader import image_layer
from napari_cellseg.plugin.session import Device, ImageResult, session_for
from napari_cellseg.plugin.segment_widget import SegmentWidget
from napari_cellseg.io.raw import RawInstances
from conftest import save_untrained
from napari_cellseg.inference.postprocess import to_labels


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    """A light checkpoint written without training: fast, and its random heads still detect."""
    return save_untrained(tmp_path_factory.mktemp("ckpt") / "untrained.pt", detections_per_img=20)


def raw_result() -> RawInstances:
    """Three instances on a 64 x 80 image: two of class 1 (scores .9, .6), one of class 2 (.3)."""
    masks = [np.full((20, 20), 200, np.uint8), np.full((10, 30), 100, np.uint8), np.full((15, 15), 250, np.uint8)]
    masks[0][:5] = 60  # the top rows only pass a low mask threshold
    boxes = [[5, 5, 25, 25], [40, 40, 70, 50], [50, 10, 65, 25]]
    return RawInstances(boxes, [0.9, 0.6, 0.3], [1, 1, 2], masks, (64, 80))


def shown_widget(viewer, source: Path | None = None) -> SegmentWidget:
    data, kwargs, _ = image_layer(np.zeros((64, 80, 3), np.uint8), source, "image")
    layer = viewer.add_image(data, **kwargs)
    widget = SegmentWidget(viewer)
    widget.device.value = Device.cpu
    widget.slider_delay_ms = 0  # redraw at once (the drag coalescing has its own test)
    widget._show(ImageResult(source, raw_result(), ["class1", "class2"]), image_layer=layer)
    placed(widget)
    return widget


def placed(widget) -> None:
    """Run the event loop until the result's layers are all added (one per turn: ``_place``)."""
    while widget._placing is not None:
        QApplication.processEvents()


def expected(widget, class_id):
    return to_labels(raw_result(), widget.score.value, widget.mask.value, classes=[1, 2])[class_id]


def test_sliders_rethreshold_from_the_cache_without_the_network(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    widget = shown_widget(viewer, Path("/data/test_release/a.tif"))
    monkeypatch.setattr(predict, "iter_predict", lambda *a, **k: pytest.fail("the network ran again"))
    class1, class2 = viewer.layers["class1 (a.tif)"], viewer.layers["class2 (a.tif)"]
    assert class1.metadata["cellseg"] == {
        "source": "/data/test_release/a.tif", "class_id": 1, "class_name": "class1", "role": "prediction"
    }
    for score, mask in [(0.5, 0.6), (0.2, 0.6), (0.2, 0.2), (0.95, 0.2), (0.0, 0.0)]:
        widget.score.value, widget.mask.value = score, mask
        for k, layer in ((1, class1), (2, class2)):
            np.testing.assert_array_equal(layer.data, expected(widget, k))
    np.testing.assert_array_equal(class2.features["index"], [3])  # instance 3 is label 3 whatever the thresholds
    np.testing.assert_allclose(class1.features["score"], [0.9, 0.6])
    assert list(class1.features["class"]) == ["class1", "class1"]
    assert (session_for(viewer).score_thresh, session_for(viewer).mask_thresh) == (0.0, 0.0)


def test_edits_are_never_silently_overwritten(make_napari_viewer, monkeypatch):
    viewer = make_napari_viewer()
    widget = shown_widget(viewer)
    class1, class2 = viewer.layers["class1 (image)"], viewer.layers["class2 (image)"]
    asked: list[list[str]] = []
    answer = {"discard": False}
    monkeypatch.setattr(
        segment_widget, "ask_discard", lambda parent, names, text=None: asked.append(names) or answer["discard"]
    )

    class1.paint((60, 75), 9, refresh=True)  # a new cell drawn by hand
    assert class1.data[60, 75] == 9 and widget.current.edited == {1}
    table = dict(zip(class1.features["index"], class1.features["score"]))
    assert table[9] == 1.0 and np.isclose(table[1], 0.9)  # drawn: 1.0; the model's keep theirs

    widget.score.value = 0.2  # keep the edits
    assert asked == [["class1 (image)"]]
    assert class1.data[60, 75] == 9
    np.testing.assert_array_equal(class2.data, expected(widget, 2))  # the unedited layer follows
    widget.mask.value = 0.3
    assert len(asked) == 1  # the answer holds while the user keeps dragging
    assert "class1 (image): your edits are kept" in widget.status.value

    class1.fill((10, 10), 0)  # delete an instance: a new edit, so the next move asks again
    assert not (class1.data == 1).any()
    answer["discard"] = True
    widget.score.value = 0.1
    assert asked[-1] == ["class1 (image)"] and len(asked) == 2
    np.testing.assert_array_equal(class1.data, expected(widget, 1))
    assert 9 not in set(class1.features["index"]) and not widget.current.edited
    assert "kept" not in widget.status.value  # after "Discard" the status says so no more

    class1.data = np.zeros_like(class1.data)  # replaced by a script or another plugin
    assert widget.current.edited == {1}


def test_a_many_class_result_adds_one_layer_per_event_loop_turn(make_napari_viewer, qtbot):
    """napari builds a Labels layer in 0.1-0.4 s: four at once froze the window for over a second. One
    layer per turn, the result shown once all are there, and a newer result ends the older one's turns."""
    viewer = make_napari_viewer()
    raw = RawInstances([[5, 5, 25, 25], [40, 40, 70, 50], [50, 10, 65, 25], [30, 5, 45, 20]], [0.9, 0.8, 0.7, 0.6],
                       [1, 2, 3, 4], [np.full((20, 20), 200, np.uint8), np.full((10, 30), 200, np.uint8),
                                      np.full((15, 15), 200, np.uint8), np.full((15, 15), 200, np.uint8)], (64, 80))
    names = ["c1", "c2", "c3", "c4"]
    image = viewer.add_image(np.zeros((64, 80), np.uint8), name="image")
    widget = SegmentWidget(viewer)
    widget._show(ImageResult(None, raw, names), image_layer=image)
    assert [la.name for la in viewer.layers] == ["image", "c1 (image)"] and widget.current is None
    qtbot.waitUntil(lambda: len(viewer.layers) == 3, timeout=5_000)
    assert widget._placing is not None and widget.current is None  # the second layer came alone
    qtbot.waitUntil(lambda: widget._placing is None, timeout=5_000)
    assert len(viewer.layers) == 5
    for k, name in enumerate(names, start=1):
        np.testing.assert_array_equal(viewer.layers[f"{name} (image)"].data, to_labels(raw, 0.5, 0.6)[k])
    assert widget.current.image is image and "4 cells shown" in widget.status.value

    other = viewer.add_image(np.zeros((64, 80), np.uint8), name="other")
    widget._show(ImageResult(None, raw, names), image_layer=other)
    widget._show(ImageResult(None, raw, names[:2]), image_layer=image)  # a newer result before the turns end
    qtbot.wait(5 * segment_widget.PLACE_MS)  # the older result's next turn came, and ended at once
    (stopped,) = [s for s in widget.sets if s.image is other]
    assert len(stopped.layers) == 1 and len(viewer.layers) == 5 and widget._placing is None
    assert [la for la in viewer.layers if la.visible] == [image, *widget.current.layers.values()]
    assert list(widget.current.layers) == [1, 2] and widget.current.image is image


def test_run_on_grey_rgb_and_rgba_layers(make_napari_viewer, qtbot, untrained):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.checkpoint.value, widget.device.value = untrained, Device.cpu
    rng = np.random.default_rng(0)
    images = {
        "grey": rng.integers(0, 4000, (64, 72), dtype=np.uint16),
        "rgb": rng.integers(0, 255, (64, 72, 3), dtype=np.uint8),
        "rgba": rng.integers(0, 255, (64, 72, 4), dtype=np.uint8),
    }
    for name, data in images.items():
        layer = viewer.add_image(data, name=name)
        widget.image.value = layer
        widget.run_button.clicked()  # a real worker thread
        assert widget.run_button.text == "Cancel"
        qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
        result = widget.current.result
        assert widget.current.image is layer and result.raw.image_shape == (64, 72)
        for k, labels in widget.current.layers.items():
            assert labels.data.shape == (64, 72) and labels.name.startswith(f"class{k}")
            ids = labels.features["index"].to_numpy()
            np.testing.assert_allclose(labels.features["score"], result.raw.scores[ids - 1])
        assert widget.progress.native.format() == "done"


def test_large_images_are_segmented_in_tiles(make_napari_viewer, untrained):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.synchronous, widget.tile_size = True, 64
    widget.checkpoint.value, widget.device.value = untrained, Device.cpu
    widget.image.value = viewer.add_image(np.random.default_rng(1).integers(0, 255, (80, 100), dtype=np.uint8))
    widget.start()
    assert widget.progress.max == 4  # 2 x 2 tiles of 64 px
    assert widget.current.result.raw.image_shape == (80, 100)
    widget.tta.value = True
    shown, progress = [], widget._progress
    widget._progress = lambda done, total, what: (shown.append((what, total)), progress(done, total, what))
    widget.start()
    assert shown[0] == ("measuring nuclei", 4)  # auto scale's first pass, named in the progress bar
    assert ("tile", 12) in shown  # each tile of its three mirror images (the first pass is the image: scale 1),
    assert shown[-1] == ("enlarged view", 4)  # then of the image enlarged 1.4x
    assert widget.current.result.raw.image_shape == (80, 100) and set(widget.current.layers) == {1, 2}


def test_folder_run_and_review_keep_each_images_edits(make_napari_viewer, qtbot, tiny_dataset, untrained, monkeypatch):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.checkpoint.value, widget.device.value = untrained, Device.cpu
    widget.folder.value = tiny_dataset / "test_release"
    monkeypatch.setattr(segment_widget, "ask_discard", lambda *a: pytest.fail("asked while reviewing"))
    widget.folder_button.clicked()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    results = session_for(viewer).folder_results
    assert [r.name for r in results] == ["test_0.tif", "test_1.tif"]
    source = viewer.layers["test_0.tif"].metadata["cellseg"]["source"]
    assert source == str(tiny_dataset / "test_release" / "test_0.tif")
    class1, new = viewer.layers["class1 (test_0.tif)"], len(results[0].raw) + 1
    class1.paint((2, 2), new)
    widget.review.value = 1
    assert viewer.layers["class1 (test_1.tif)"] is class1 and class1.data[2, 2] != new
    assert class1.metadata["cellseg"]["source"].endswith("test_1.tif")
    widget.review.value = 0
    assert class1.data[2, 2] == new and results[0].reviewed_scores[1][new] == 1.0
    assert results[1].reviewed is None


def test_cancel_a_folder_run_keeps_the_finished_images(make_napari_viewer, qtbot, tiny_dataset, untrained, monkeypatch):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.checkpoint.value, widget.device.value = untrained, Device.cpu
    folder = tiny_dataset / "test_release"
    (folder / "test_2.tif").write_bytes((folder / "test_1.tif").read_bytes())
    widget.folder.value = folder
    cancelled = threading.Event()
    read_image = images.read_image

    def read_after_cancel(path):  # the second image is read only once Cancel was clicked
        if not path.name.endswith("_0.tif"):
            cancelled.wait(30)
        return read_image(path)
    monkeypatch.setattr(images, "read_image", read_after_cancel)

    texts = []

    def cancel(item):
        if not isinstance(item[2], ImageResult):  # the first image put on screen: nothing finished yet
            return
        widget.folder_button.clicked()
        texts.append(widget.progress.native.format())  # said at once, before the worker has stopped
        cancelled.set()
    widget.folder_button.clicked()
    widget._worker.yielded.connect(cancel)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert texts == ["cancelling..."]
    assert [r.name for r in session_for(viewer).folder_results] == ["test_0.tif"]
    assert widget.progress.native.format() == "cancelled"
    assert widget.folder_button.text == "Segment folder" and widget.run_button.enabled


def test_bad_model_or_folder_is_a_notification(make_napari_viewer, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.synchronous = True
    widget.image.value = viewer.add_image(np.zeros((32, 32), np.uint8))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    widget.checkpoint.value = broken
    widget.start()
    assert len(errors) == 1 and "broken.pt" in errors[0] and "\n" not in errors[0]
    assert widget.run_button.text == "Segment image" and widget.run_button.enabled and widget.current is None
    assert widget.progress.native.format() == "stopped by an error"
    widget.folder.value = tmp_path / "missing"
    widget.start_folder()
    assert "missing" in errors[1] and widget.folder_button.enabled


def test_the_builtin_model_is_chosen_until_the_user_picks_a_file(make_napari_viewer, qtbot, untrained):
    """A new user segments on the first click: 'nuclei' is preselected and finds the sample's nuclei."""
    from napari_cellseg.plugin.segment_jobs import CHECKPOINT_FILE
    from napari_cellseg.sample_data import SAMPLE_DATASET

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    assert widget.model.value == "nuclei" and widget.checkpoint.native.isHidden()
    sample = sorted((SAMPLE_DATASET / "val").iterdir())[0]
    viewer.add_image(images.read_image(sample / "image.tif"), name=sample.name)
    widget.device.value = Device.cpu
    widget.run_button.clicked()  # a real worker thread
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    assert widget.current.result.class_names == ["nucleus"]
    assert int(widget.current.layers[1].data.max()) > 0  # nuclei found before any training

    widget.checkpoint.value = untrained  # picking a file switches to it
    assert widget.model.value == CHECKPOINT_FILE and not widget.checkpoint.native.isHidden()
    widget.model.value = "nuclei"  # and back in one click
    assert widget.checkpoint.native.isHidden()


def test_a_cell_drawn_with_new_label_scores_one_and_exports_from_my_own_image(
    make_napari_viewer, qtbot, untrained, tmp_path
):
    """napari's *new label* (largest id + 1) is often a detection hidden below the confidence: the
    drawn cell must show and export with 1.0, and the user's own image exports without a mapping."""
    import json

    import tifffile
    from napari.layers.labels._labels_key_bindings import new_label

    from napari_cellseg.plugin.export_widget import ExportWidget

    path = tmp_path / "own" / "my cells.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, np.random.default_rng(1).integers(0, 4000, (64, 72), dtype=np.uint16))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path))  # napari's own reader: no HW3 folder, no mapping file
    widget = SegmentWidget(viewer)
    widget.checkpoint.value, widget.device.value, widget.image.value = untrained, Device.cpu, layer
    widget.run_button.clicked()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    raw = widget.current.result.raw
    pairs = [i for i in range(len(raw) - 1)  # a score gap the 4-decimal slider can fall into
             if raw.labels[i] == raw.labels[i + 1] and raw.scores[i] - raw.scores[i + 1] > 2e-4]
    assert pairs, "the untrained model gave no two detections of one class in a row"
    for i in reversed(pairs):  # a confidence between two detections of one class
        widget.score.value = round(float(raw.scores[i] + raw.scores[i + 1]) / 2, 4)
        # the slider's throttle redraws with the last value once its timer fires: wait for it, or that
        # redraw would come after the hand edit below (and ask about it) and ``visible`` would be stale
        qtbot.waitUntil(lambda: not widget._timer.isActive() and not widget._due, timeout=5_000)
        k = int(raw.labels[i])
        visible = widget.current.visible[k]
        top = max(visible, default=0)  # napari's new label will be top + 1
        if top and top < len(raw) and raw.scores[top] < widget.score.value:
            break  # top + 1 is a detection hidden below the confidence
    else:
        pytest.fail("no confidence made the next id a hidden detection")
    labels = widget.current.layers[k]
    shown = sum(len(ids) for ids in widget.current.visible.values())
    assert f": {shown} cell" in widget.status.value  # one count: on screen
    assert "below the confidence)" in widget.status.value
    new_label(labels)
    assert labels.selected_label == top + 1  # the hidden detection's id
    labels.brush_size = 1
    y, x = np.argwhere(labels.data == 0)[-1]  # background: no shown cell is painted over
    labels.paint((y, x), top + 1, refresh=True)
    table = dict(zip(labels.features["index"], labels.features["score"]))
    assert table[top + 1] == 1.0 and np.isclose(table[top], raw.scores[top - 1])
    qtbot.waitUntil(lambda: f": {shown + 1} cells shown" in widget.status.value)  # one count: what is on screen

    export = ExportWidget(viewer)  # a real worker, as in napari
    out = tmp_path / "results" / "mine.json"
    out.parent.mkdir()
    export.out.value = out
    export.export()
    qtbot.waitUntil(lambda: export._worker is None, timeout=30_000)
    results = json.loads(out.read_text())
    ids = json.loads(Path(f"{out}.images.json").read_text())
    assert ids == [{"file_name": "my cells.tif", "id": 1, "height": 64, "width": 72}]
    assert {r["image_id"] for r in results} == {1} and len(results) == shown + 1
    drawn = [r for r in results if r["category_id"] == k and r["bbox"][:2] == [float(x), float(y)]]
    assert [r["score"] for r in drawn] == [1.0]
    export.export()  # again: the same ids, the file unchanged
    qtbot.waitUntil(lambda: export._worker is None, timeout=30_000)
    assert json.loads(Path(f"{out}.images.json").read_text()) == ids


def test_channels_are_never_planes_and_the_chosen_one_is_segmented(make_napari_viewer, qtbot, untrained):
    """(2, H, W) and (H, W, 2) are one image of two channels: no stack, a channel choice; the network
    sees the chosen channel (the same instances as the library on that channel alone)."""
    from napari_cellseg.io.channels import MERGED, choose
    from napari_cellseg.model.checkpoint import load_model
    from napari_cellseg.progress import drain
    from napari_cellseg.inference.scale import iter_predict_scaled

    rng = np.random.default_rng(0)
    nuclei = np.zeros((64, 72), np.uint16)
    nuclei[10:30, 10:30], nuclei[40:56, 44:64] = 3000, 2500
    other = rng.integers(0, 4000, (64, 72)).astype(np.uint16)
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.checkpoint.value, widget.device.value = untrained, Device.cpu
    model, _ = load_model(untrained, "cpu")
    assert widget.channel.native.isHidden()  # no image yet: nothing to choose
    for name, data, axis in (("first", np.stack([other, nuclei]), 0), ("last", np.stack([other, nuclei], -1), 2)):
        layer = viewer.add_image(data, name=name)
        assert widget.image.value is layer and not widget.channel.native.isHidden()
        assert list(widget.channel.choices) == [0, 1, MERGED]
        widget.channel.value = 1  # "channel 2": the nuclei
        widget.run_button.clicked()
        qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
        assert widget.stack_view.current is None and widget.current.image is layer  # not a 2-plane stack
        expected = drain(iter_predict_scaled(model, choose(data, axis, 1), tile_size=widget.tile_size))  # auto
        # the same channel gives the same (sorted) scores up to float order: under load the worker's convolutions
        # split their sums otherwise and a score moved by up to 1.03e-3 (a CI run), so 3e-3, not 1e-5
        np.testing.assert_allclose(widget.current.result.raw.scores, expected.scores, rtol=0, atol=3e-3)
        assert widget.current.result.raw.image_shape == (64, 72)
    viewer.add_image(np.zeros((64, 72), np.uint8), name="grey")
    assert widget.channel.native.isHidden()


def test_ground_truth_opened_later_goes_below_the_segmentation(make_napari_viewer, qtbot, tiny_dataset):
    viewer = make_napari_viewer()
    widget = shown_widget(viewer, tiny_dataset / "val" / "val_0" / "image.tif")
    viewer.open(str(tiny_dataset / "val" / "val_0"), plugin="napari-cellseg")  # image + ground truth, on top
    truth = [la for la in viewer.layers if la.name.endswith("(ground truth)")]
    assert truth and widget.current.layers
    lowest = lambda: min(viewer.layers.index(la) for la in widget.current.layers.values())  # noqa: E731
    qtbot.waitUntil(lambda: all(viewer.layers.index(t) < lowest() for t in truth), timeout=5_000)


def test_the_confidence_slider_takes_a_new_models_tuned_confidence_once(
        make_napari_viewer, qtbot, untrained, tmp_path, tiny_dataset):
    """A model tuned with ``napari-cellseg tune`` starts its labels at its own confidence (real workers); a
    move after that is the user's and survives a re-run; another model brings its own (0.5 when untuned)."""
    from napari_cellseg.model.checkpoint import save_with_config

    tuned = save_with_config(untrained, tmp_path / "tuned.pt", score_thresh=0.62)  # its scores here: 0.60-0.67
    viewer = make_napari_viewer()
    viewer.add_image(images.read_image(tiny_dataset / "test_release" / "test_0.tif"), name="cells")
    widget = SegmentWidget(viewer)
    widget.device.value = Device.cpu
    widget.slider_delay_ms = 0

    def run(model) -> None:
        widget.checkpoint.value = model
        widget.run_button.clicked()
        qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)

    run(tuned)
    assert widget.score.value == pytest.approx(0.62) and session_for(viewer).score_thresh == pytest.approx(0.62)
    raw = widget.current.result.raw
    drawn = to_labels(raw, widget.score.value, widget.mask.value, classes=[1, 2])
    assert 0 < sum(len(np.unique(d)) - 1 for d in drawn.values()) < np.count_nonzero(raw.scores >= 0.5)
    for k, layer in widget.current.layers.items():
        np.testing.assert_array_equal(layer.data, drawn[k])
    widget.score.value = 0.6
    run(tuned)  # the same model (cached): the user's 0.6 stays
    assert widget.score.value == pytest.approx(0.6)
    run(untrained)
    assert widget.score.value == pytest.approx(0.5) and session_for(viewer).score_thresh == pytest.approx(0.5)
