"""The whole GUI path: sample -> train (worker) -> segment (worker) -> sliders -> paint -> export."""

from __future__ import annotations

import json

import numpy as np
from pycocotools.coco import COCO

from napari_cellseg.plugin.session import session_for
from napari_cellseg.plugin.train_widget import Amp, Device
from napari_cellseg.io.rle import decode_mask
from napari_cellseg.io.samples import find_samples
from napari_cellseg.inference.pipeline import samples_ground_truth
from napari_cellseg.sample_data import SAMPLE_DATASET


def test_sample_train_segment_edit_export(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cellseg", "fluorescence")
    image = viewer.layers[0]
    _, main = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
    train, segment, export = main.train, main.segment, main.export

    # train a few steps of the light model in the worker
    train.dataset.value, train.out_dir.value = SAMPLE_DATASET, tmp_path / "run"
    train.arch.value, train.epochs.value, train.max_steps.value = "resnet18", 1, 2
    train.batch_size.value, train.crop_size.value, train.val_limit.value = 1, 64, 1
    train.lr.value, train.device.value, train.amp.value = 1e-3, Device.cpu, Amp.off
    train.start.clicked()
    qtbot.waitUntil(lambda: train._worker is None, timeout=120_000)
    assert train.done is not None and train.done.last.is_file()

    # the Segment widget already has the new model; segment the sample image in the worker
    assert segment.checkpoint.value == session_for(viewer).last_checkpoint
    segment.image.value, segment.device.value = image, Device.cpu
    segment.run_button.clicked()
    qtbot.waitUntil(lambda: segment._worker is None, timeout=120_000)
    raw = segment.current.result.raw
    class1 = segment.current.layers[1]
    assert class1.name.startswith("class1 (") and class1.data.shape == image.data.shape[:2]

    # both sliders redraw from the cached result
    segment.score.value, segment.mask.value = 0.05, 0.3
    qtbot.waitUntil(lambda: not segment._timer.isActive(), timeout=5_000)  # the drag's last redraw is done
    assert segment.session.score_thresh == 0.05 and not segment.current.edited

    # paint one new instance, as napari's "new label" would number it
    new_id = len(raw) + 1
    class1.brush_size = 7
    class1.paint((128, 128), new_id)
    drawn = class1.data == new_id
    assert drawn.sum() > 10 and segment.current.edited == {1}

    export.out.value = tmp_path / "test-results.json"
    export.export_button.clicked()
    qtbot.waitUntil(lambda: export._worker is None, timeout=60_000)
    results = json.loads((tmp_path / "test-results.json").read_text())
    mine = [r for r in results if r["score"] == 1.0]
    assert len(mine) == 1 and mine[0]["category_id"] == 1 and mine[0]["image_id"] == 1
    np.testing.assert_array_equal(decode_mask(mine[0]["segmentation"]), drawn)
    model_cells = [r for r in results if r is not mine[0]]
    scores = dict(zip(class1.features["index"], class1.features["score"]))
    assert all(r["score"] < 1.0 for r in model_cells) and all(np.isfinite(list(scores.values())))

    # the submission loads in pycocotools against the ground truth of that image (id 1 of val/)
    coco = COCO()
    coco.dataset = samples_ground_truth(find_samples(SAMPLE_DATASET / "val")[:1], ["class1", "class2"])
    coco.createIndex()
    assert len(coco.loadRes(str(tmp_path / "test-results.json")).anns) == len(results)
