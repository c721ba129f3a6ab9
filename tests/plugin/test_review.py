"""A review session driven as a user does: docked widgets, real worker threads, layers added and
removed while the folder is segmented and reviewed (the crash of issue 10 fails here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_cellseg.plugin import segment_widget
from napari_cellseg.plugin.session import Device, session_for
from napari_cellseg.plugin.segment_widget import SegmentWidget
from conftest import save_untrained


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    """A light checkpoint written without training: fast, and its random heads still detect."""
    return save_untrained(tmp_path_factory.mktemp("ckpt") / "untrained.pt", detections_per_img=20)


def docked(viewer, untrained) -> SegmentWidget:
    """The Segment tab as users get it: in the plugin's dock, built by napari, which hands the plugin a
    proxy of the viewer whose every layer read is a new proxy object (comparing layers with ``is`` left a
    stale set of layers per reviewed image), and which resets no choices on layer changes by itself."""
    _, main = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
    widget = main.segment
    widget.checkpoint.value, widget.device.value = untrained, Device.cpu
    return widget


def visible_names(viewer) -> set[str]:
    return {layer.name for layer in viewer.layers if layer.visible}


def test_folder_review_survives_layers_added_and_removed(
    make_napari_viewer, qtbot, tiny_dataset, untrained, errors, monkeypatch
):
    viewer = make_napari_viewer()
    widget = docked(viewer, untrained)
    folder = tiny_dataset / "test_release"
    (folder / "test_2.tif").write_bytes((folder / "test_1.tif").read_bytes())
    widget.folder.value = folder
    monkeypatch.setattr(segment_widget, "ask_discard", lambda *a: pytest.fail("asked while reviewing"))
    widget.folder_button.clicked()
    added, first, results = [], [], session_for(viewer).folder_results
    widget._worker.yielded.connect(  # after the widget's own handler
        lambda _item: first or first.append(([la.name for la in viewer.layers], len(results)))
    )
    widget._worker.yielded.connect(
        lambda _item: added.append(viewer.add_points(np.zeros((1, 2)), name=f"points {len(added)}"))
    )
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    assert first == [(["test_0.tif"], 0)]  # the first image is on screen while it is segmented
    assert not errors and widget.progress.native.format() == "done"
    assert [r.name for r in session_for(viewer).folder_results] == ["test_0.tif", "test_1.tif", "test_2.tif"]
    assert len(widget.review.choices) == 3 and widget.review.value == 0
    assert {"test_0.tif", "class1 (test_0.tif)", "class2 (test_0.tif)"} <= visible_names(viewer)

    viewer.layers.remove(added[0])  # removing or adding any layer keeps the review list
    viewer.add_labels(np.zeros((8, 8), np.int32), name="my notes")
    assert len(widget.review.choices) == 3
    class1 = viewer.layers["class1 (test_0.tif)"]
    class1.paint((2, 2), 99)
    widget.review.value = 2
    assert class1.name == "class1 (test_2.tif)" and class1.data[2, 2] != 99
    assert widget.image.current_choice == widget.image.value.name  # the box shows the layer's name now
    assert "class1 (test_0.tif)" not in viewer.layers  # one set of layers, not a pile
    viewer.layers.remove("class2 (test_2.tif)")  # the user deletes a layer mid-review
    widget.review.value = 0
    assert viewer.layers["class1 (test_0.tif)"].data[2, 2] == 99  # the edit stayed with its image
    assert "class2 (test_0.tif)" in viewer.layers  # re-made on the next step
    predictions = [la.name for la in viewer.layers if la.name.startswith("class")]
    assert sorted(predictions) == ["class1 (test_0.tif)", "class2 (test_0.tif)"] and not errors
    assert len(widget.sets) == 1  # one set of layers for the review, whichever image it shows


def test_the_review_drops_an_earlier_unedited_run_on_its_image(
    make_napari_viewer, qtbot, tiny_dataset, untrained, errors, monkeypatch
):
    """Image 1 segmented alone, then its folder: the review showed image 1 in its own layers while the
    earlier run's labels stayed, hidden, under the same names. An edited earlier run stays (the user's work)."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    widget = docked(viewer, untrained)
    monkeypatch.setattr(segment_widget, "ask_discard", lambda *a: pytest.fail("asked without an edit at stake"))
    folder = tiny_dataset / "test_release"
    for name in ("test_1.tif", "test_0.tif"):
        (layer,) = viewer.open(str(folder / name))
        widget.image.value = layer
        widget.run_button.clicked()
        qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    edited = widget.current.layers[1]
    edited.paint((3, 3), 77)  # test_0's earlier run holds an edit
    widget.folder.value = folder
    widget.folder_button.clicked()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    widget.review.value = [r.name for r in session_for(viewer).folder_results].index("test_1.tif")
    names = [layer.name for layer in viewer.layers]
    assert names.count("class1 (test_1.tif)") == 1 and names.count("class2 (test_1.tif)") == 1
    assert all(la.visible for la in widget.current.layers.values())
    assert "test_1" in names  # the user's own image layer stays
    assert edited in viewer.layers and not edited.visible and edited.data[3, 3] == 77 and not errors


def test_runs_replace_their_layers_and_hide_other_images(make_napari_viewer, qtbot, untrained, errors):
    viewer = make_napari_viewer()
    widget = docked(viewer, untrained)
    rng = np.random.default_rng(0)
    first = viewer.add_image(rng.integers(0, 255, (64, 72, 3), dtype=np.uint8), name="first")
    assert widget.image.value is first  # the selector follows a newly opened image
    widget.run_button.clicked()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert {"class1 (image)", "class2 (image)"} <= visible_names(viewer)
    layers = set(widget.current.layers.values())
    widget.run_button.clicked()  # a re-run replaces the image's layers, never piles new ones
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert set(widget.current.layers.values()) == layers and len(viewer.layers) == 3

    second = viewer.add_image(rng.integers(0, 255, (64, 72), dtype=np.uint8), name="second")
    assert widget.image.value is second
    second.visible = False
    widget.run_button.clicked()
    assert "'second' was hidden: shown now" in widget.status.value and second.visible
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    hidden = {layer.name for layer in viewer.layers if not layer.visible}
    assert hidden == {"first"} | {layer.name for layer in layers}  # only the current image's cells show
    assert widget.status.value.startswith("image: ") and " shown" in widget.status.value and not errors


def test_errors_are_written_in_the_dock_and_status_starts_fresh(make_napari_viewer, qtbot, tmp_path, untrained, errors):
    viewer = make_napari_viewer()
    widget = docked(viewer, untrained)
    viewer.add_image(np.zeros((32, 32), np.uint8))
    widget.checkpoint.value = tmp_path / "gone.pt"
    widget.run_button.clicked()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert len(errors) == 1 and widget.status.value == f"stopped: {errors[0]}"
    assert "Errno" not in errors[0] and "gone.pt" in errors[0]
    widget.checkpoint.value = untrained
    widget.run_button.clicked()
    assert "stopped" not in widget.status.value  # a new run does not show the old error
    qtbot.waitUntil(lambda: widget._worker is None, timeout=60_000)
    assert " shown" in widget.status.value and widget.progress.native.format() == "done"


def test_a_drag_draws_only_the_latest_value(make_napari_viewer, qtbot, untrained, monkeypatch):
    viewer = make_napari_viewer()
    widget = docked(viewer, untrained)
    widget.synchronous = True
    viewer.add_image(np.random.default_rng(2).integers(0, 255, (64, 72, 3), dtype=np.uint8))
    widget.start()
    drawn = []
    redraw = widget._redraw
    monkeypatch.setattr(
        widget, "_redraw", lambda shown, reviewed=None: drawn.append(widget.score.value) or redraw(shown)
    )
    widget.slider_delay_ms = 50
    for value in np.linspace(0.1, 0.9, 20):  # twenty moves faster than one redraw
        widget.score.value = float(value)
    assert drawn == [pytest.approx(0.1)]  # the first move is drawn at once, the others wait
    qtbot.waitUntil(lambda: len(drawn) == 2, timeout=5_000)
    qtbot.wait(120)
    assert drawn == [pytest.approx(0.1), pytest.approx(0.9)]  # the 18 stale values were dropped
    expected = widget.current.result.raw.scores >= 0.9
    assert widget.current.layers[1].data.max() <= np.flatnonzero(expected).size


def test_a_new_folder_run_asks_before_dropping_unexported_edits(
    make_napari_viewer, tiny_dataset, untrained, monkeypatch
):
    from napari_cellseg.plugin.session import ImageResult
    from napari_cellseg.inference.predict import RawInstances

    viewer = make_napari_viewer()
    widget = docked(viewer, untrained)
    session = session_for(viewer)
    raw = RawInstances(np.zeros((0, 4)), [], [], [], (64, 80))
    edited = ImageResult(
        tiny_dataset / "test_release" / "test_0.tif", raw, ["class1"], {1: np.ones((64, 80), np.int32)}
    )
    session.folder_results = [edited]
    asked = []
    monkeypatch.setattr(segment_widget, "ask_discard", lambda parent, names, text=None: asked.append(names) or False)
    widget.folder.value = tiny_dataset / "test_release"
    widget.start_folder()
    assert asked == [["test_0.tif"]] and session.folder_results == [edited] and widget._worker is None
    assert widget.status.value.startswith("kept the folder review")
    session.folder_exported = True  # exported: a new run goes ahead without asking
    widget.synchronous = True
    widget.start_folder()
    assert len(asked) == 1 and [r.name for r in session.folder_results] == ["test_0.tif", "test_1.tif"]
