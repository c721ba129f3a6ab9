"""The human-in-the-loop tab as a user drives it: segment, correct, add to the training set,
fine-tune (a real training worker), and Segment then uses the new model on the same image."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellseg.plugin import finetune_widget, segment_widget
from napari_cellseg.plugin.session import Device, session_for
from napari_cellseg.plugin.segment_jobs import CHECKPOINT_FILE
from napari_cellseg.plugin.finetune_widget import few_images_settings
from napari_cellseg.model.checkpoint import load_checkpoint
from napari_cellseg.io.samples import find_samples, read_sample
from napari_cellseg.io.images import read_image
from conftest import save_untrained


@pytest.fixture
def main_dock(make_napari_viewer, qtbot, tiny_dataset, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    image = read_image(tiny_dataset / "train" / "sample_0" / "image.tif")
    viewer.add_image(image, name="sample_0")
    _, main = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
    main.segment.checkpoint.value = save_untrained(tmp_path / "start.pt", class_names=["nucleus", "mitosis"],
                                                   detections_per_img=20)
    main.segment.device.value = main.train.device.value = Device.cpu
    return viewer, main


def test_correct_add_fine_tune_and_resegment(main_dock, qtbot, tmp_path, monkeypatch):
    viewer, main = main_dock
    main.show_tab("Segment")
    main.segment.run_button.clicked()  # a real worker
    qtbot.waitUntil(lambda: main.segment._worker is None, timeout=60_000)
    class1 = main.segment.current.layers[1]
    corrected = np.zeros_like(class1.data)
    corrected[4:14, 4:16] = 1  # the user paints the cells the model missed
    corrected[30:46, 40:60] = 2
    class1.data = corrected

    tune = main.finetune
    tune.add_button.clicked()
    assert "training-set folder" in tune.status.value  # no folder yet: said in the dock
    tune.folder.value = tmp_path / "corrected"
    assert tune.count.value == "0 corrected images"
    tune.add_button.clicked()
    assert tune.count.value == "1 corrected image" and "added sample_0" in tune.status.value
    [sample] = find_samples(tmp_path / "corrected" / "train")
    _, labels = read_sample(sample)
    np.testing.assert_array_equal(labels[1], corrected)

    monkeypatch.setattr(finetune_widget, "ask_replace_sample", lambda *a: False)
    tune.add_button.clicked()  # the same image again: asked, kept
    assert "not added" in tune.status.value and tune.count.value == "1 corrected image"

    # re-segmenting replaces the corrected layers (they are safe in the training set): Segment asks
    monkeypatch.setattr(segment_widget, "ask_discard", lambda *a, **k: True)
    tune.steps.value = 2
    tune.tune_button.clicked()  # fills the Train tab and starts it in a worker
    assert main.tabs.tabText(main.tabs.currentIndex()) == "Train" and main.train.running
    cfg = main.train.config(**few_images_settings(1)["extra"])
    assert cfg.init == str(tmp_path / "start.pt") and cfg.max_steps == 2 and cfg.augment == "strong"
    qtbot.waitUntil(lambda: main.train._worker is None, timeout=180_000)
    new = session_for(viewer).last_checkpoint
    assert new is not None and new.parent.parent == tmp_path / "corrected"
    assert new.name == "last.pt" and not (new.parent / "best.pt").exists()  # no validation: the last weights
    ckpt = load_checkpoint(new)
    assert ckpt["train_args"]["init"] == str(tmp_path / "start.pt") and ckpt["step"] == 2
    assert ckpt["config"]["class_names"] == ["nucleus", "mitosis"] and ckpt["config"]["detections_per_img"] == 20
    assert not main.train.plot.validated and not main.train.plot.ap["AP"]  # "no validation images", no AP 0
    assert main.segment.model.value == CHECKPOINT_FILE and main.segment.checkpoint.value == new
    qtbot.waitUntil(lambda: main.segment._worker is None, timeout=60_000)  # segmented again
    assert "fine-tuned model" in tune.status.value
    names = [layer.name for layer in main.segment.current.layers.values()]
    assert [name.split(" (")[0] for name in names] == ["nucleus", "mitosis"]  # the class names, not class1


def test_fine_tune_needs_corrected_images(main_dock, tmp_path):
    _, main = main_dock
    main.finetune.folder.value = tmp_path / "empty"
    main.finetune.tune_button.clicked()
    assert "no images yet" in main.finetune.status.value and not main.train.running


def test_few_image_settings_scale_with_the_images():
    assert [few_images_settings(n)["steps"] for n in (1, 5, 10, 20)] == [60, 150, 300, 400]
    assert few_images_settings(1)["batch_size"] == 1 and few_images_settings(10)["extra"]["val_fraction"] == 0.0


def test_adding_never_replaces_a_folder_the_tool_did_not_write(main_dock, qtbot, tmp_path, monkeypatch):
    """(2) Asked to replace sample_0, the dock deleted whatever had that name; now it says why not."""
    _, main = main_dock
    main.show_tab("Segment")
    main.segment.run_button.clicked()
    qtbot.waitUntil(lambda: main.segment._worker is None, timeout=60_000)
    theirs = tmp_path / "corrected" / "train" / "sample_0"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    monkeypatch.setattr(finetune_widget, "ask_replace_sample", lambda *a: True)
    monkeypatch.setattr(finetune_widget.session, "show_error", lambda message: None)
    main.finetune.folder.value = tmp_path / "corrected"
    main.finetune.add_button.clicked()
    assert "stopped:" in main.finetune.status.value and "notes.txt" in main.finetune.status.value
    assert (theirs / "notes.txt").read_text() == "mine"


def test_a_cancelled_fine_tuning_leaves_segment_alone(main_dock, tmp_path):
    from napari_cellseg.training.engine import DoneEvent

    viewer, main = main_dock
    tune, before = main.finetune, main.segment.checkpoint.value
    tune._waiting = True  # as after the Fine-tune button
    main.train._on_finished(DoneEvent(tmp_path / "last.pt", None, cancelled=True))
    assert "cancelled" in tune.status.value and not tune._waiting
    assert session_for(viewer).last_checkpoint is None and main.segment.checkpoint.value == before
