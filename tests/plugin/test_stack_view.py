"""Segment dock on a stack: a real worker, one stacked Labels layer per class, sliders over every plane."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_cellseg.plugin import segment_widget
from napari_cellseg.inference import predict
from napari_cellseg.plugin.session import Device
from napari_cellseg.plugin.stack_view import is_stack
from napari_cellseg.plugin.segment_widget import SegmentWidget
from conftest import save_untrained
from napari_cellseg.inference.stacks import to_stack_labels

SCREENS = Path(os.environ.get("CELLSEG_SCREENS", "/work/screens/14"))


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    return save_untrained(tmp_path_factory.mktemp("ckpt") / "untrained.pt", detections_per_img=10,
                          box_score_thresh=0.0)


def _movie(planes=5) -> np.ndarray:
    """Bright discs drifting over a dark background, one position per plane."""
    yy, xx = np.mgrid[:64, :72]
    movie = np.full((planes, 64, 72), 20, np.uint16)
    for p in range(planes):
        for cy, cx in ((16, 14 + 3 * p), (44, 50 - 2 * p)):
            movie[p][(yy - cy) ** 2 + (xx - cx) ** 2 <= 64] = 3000
    return movie


def test_is_stack_follows_napari_dims(make_napari_viewer):
    viewer = make_napari_viewer()
    assert is_stack(viewer.add_image(np.zeros((5, 20, 30))))
    assert not is_stack(viewer.add_image(np.zeros((3, 20, 30))))  # 3 channels, not 3 planes (channels.py)
    assert not is_stack(viewer.add_image(np.zeros((20, 30, 2))))  # channel-last: not 20 planes of 30 x 2
    assert is_stack(viewer.add_image(np.zeros((5, 20, 30, 2))))  # planes of 2-channel images
    assert is_stack(viewer.add_image(np.zeros((3, 20, 30, 3), np.uint8), rgb=True))
    assert not is_stack(viewer.add_image(np.zeros((20, 30, 3), np.uint8), rgb=True))
    assert not is_stack(viewer.add_image(np.zeros((20, 30))))


def test_stack_layer_gives_stacked_labels_and_sliders_redraw_every_plane(make_napari_viewer, qtbot, untrained,
                                                                        monkeypatch):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    widget.checkpoint.value, widget.device.value = untrained, Device.cpu
    widget.score.value, widget.mask.value = 0.0, 0.3
    movie = _movie()
    layer = viewer.add_image(movie, name="movie", scale=(1, 0.5, 0.5))
    widget.image.value = layer
    seen = []
    widget.run_button.clicked()  # a real worker thread
    widget._worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    assert widget.progress.native.format() == "done" and seen[-1][:2] == (5, 5)
    shown = widget.stack_view.current
    assert len(shown.result.planes) == 5
    for k in (1, 2):
        labels = viewer.layers[f"class{k} (stack)"]
        assert labels.data.shape == (5, 64, 72) and tuple(labels.scale) == (1, 0.5, 0.5)
        np.testing.assert_array_equal(labels.data, to_stack_labels(shown.result, 0.0, 0.3, [k])[k])
    viewer.dims.set_point(0, 3)
    viewer.window._qt_window.resize(1300, 760)
    viewer.reset_view()
    SCREENS.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(SCREENS / "segment_stack.png"), canvas_only=False)

    monkeypatch.setattr(predict, "iter_predict", lambda *a, **k: pytest.fail("the network ran again"))
    widget.mask.value = 0.6
    for k in (1, 2):  # every plane re-thresholded from the cached raw instances
        expected = to_stack_labels(shown.result, 0.0, 0.6, [k])[k]
        np.testing.assert_array_equal(viewer.layers[f"class{k} (stack)"].data, expected)
    ids = [set(np.unique(viewer.layers[f"class{k} (stack)"].data)) - {0} for k in (1, 2)]
    assert not ids[0] & ids[1]  # one id, one instance, across planes and classes


def test_stack_edits_are_not_silently_overwritten(make_napari_viewer, untrained, monkeypatch):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.checkpoint.value, widget.device.value, widget.synchronous = untrained, Device.cpu, True
    widget.score.value, widget.mask.value = 0.0, 0.3
    widget.image.value = viewer.add_image(_movie(5), name="movie")  # 5 planes: more than channels
    widget.run_button.clicked()
    asked = []
    monkeypatch.setattr(segment_widget, "ask_discard", lambda parent, names: asked.append(names) or False)
    class1 = viewer.layers["class1 (stack)"]
    class1.paint((1, 60, 70), 999, refresh=True)
    widget.mask.value = 0.5
    assert asked == [["class1 (stack)"]] and class1.data[1, 60, 70] == 999  # kept, as the user chose
    widget.run_button.clicked()  # a re-run asks again; "no" puts the new result in new layers
    assert asked[-1] == ["class1 (stack)"] and class1.data[1, 60, 70] == 999
    assert widget.stack_view.current.layers[1] is not class1 and class1 in viewer.layers


def test_cancel_stops_between_planes(make_napari_viewer, untrained):
    from napari_cellseg.plugin.stack_view import stack_events
    from napari_cellseg.model.checkpoint import load_model

    calls = []
    events = stack_events(lambda: (*load_model(untrained), "cpu"), _movie(4), lambda: len(calls) >= 1)
    calls.append(next(events))
    with pytest.raises(StopIteration) as stopped:
        next(events)
    assert calls == [(1, 4, "plane")] and stopped.value.value is None


def test_a_stack_exports_plane_by_plane_from_the_gui(make_napari_viewer, qtbot, untrained, tmp_path):
    """As ``napari-cellseg export`` does: one image per plane (``<file>#<plane>``), ids kept beside."""
    import json

    import tifffile

    from napari_cellseg.plugin.export_widget import ExportWidget
    from napari_cellseg.inference.stacks import stack_scores

    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, _movie(5), photometric="minisblack")  # 5 planes: more than colour channels
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path))
    widget = SegmentWidget(viewer)
    widget.checkpoint.value, widget.device.value, widget.image.value = untrained, Device.cpu, layer
    widget.score.value = 0.0
    widget.run_button.clicked()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=120_000)
    shown = widget.stack_view.current
    on_screen = {k: set(np.unique(la.data)) - {0} for k, la in shown.layers.items()}
    total = sum(len(ids) for ids in on_screen.values())
    assert widget.status.value == f"5 planes: {total} cells shown"  # one count: what is on screen
    export = ExportWidget(viewer)
    export.out.value = tmp_path / "out" / "movie.json"
    export.export()
    qtbot.waitUntil(lambda: export._worker is None, timeout=30_000)
    ids = json.loads((tmp_path / "out" / "movie.json.images.json").read_text())
    assert [e["file_name"] for e in ids] == [f"movie.tif#{p}" for p in range(5)]
    results = json.loads((tmp_path / "out" / "movie.json").read_text())
    assert len(results) == total and {r["image_id"] for r in results} <= {1, 2, 3, 4, 5}
    scores = stack_scores(shown.result)
    assert sorted(r["score"] for r in results) == pytest.approx(
        sorted(scores[i] for ids in on_screen.values() for i in ids), abs=1e-6)
