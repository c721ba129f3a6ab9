"""The one-dock plugin as a user meets it on a 1366 x 768 laptop screen: it fits, every tab is
usable, and a training run started from the Train tab in a real worker can be cancelled."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import quick
from napari_cellseg.training import engine
from napari_cellseg.plugin.session import DOCK_WIDTH, session_for
from napari_cellseg.plugin.main_widget import CellsegWidget

SCREEN = (1366, 768)


@pytest.fixture
def laptop(make_napari_viewer, qtbot):
    """A shown viewer at 1366 x 768 with an image and the plugin's main dock."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.random.default_rng(0).integers(0, 255, (64, 80), dtype=np.uint8), name="cells")
    dock, main = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    qtbot.wait(50)
    return viewer, dock, main


def _canvas_width(viewer) -> int:
    return viewer.window._qt_viewer.canvas.native.width()


def test_the_main_dock_fits_a_laptop_screen(laptop, qtbot):
    viewer, dock, main = laptop
    window = viewer.window._qt_window
    assert isinstance(main, CellsegWidget)
    titles = [main.tabs.tabText(i) for i in range(main.tabs.count())]
    assert titles == ["Train", "Segment", "Export", "Fine-tune"]
    hint = window.minimumSizeHint()
    assert hint.width() <= SCREEN[0] and hint.height() <= SCREEN[1]  # was 608 x 1535 with three docks
    assert (window.width(), window.height()) == SCREEN
    assert _canvas_width(viewer) >= SCREEN[0] / 2 and dock.width() <= DOCK_WIDTH + 20
    for index, widget in enumerate((main.train, main.segment, main.export, main.finetune)):
        main.tabs.setCurrentIndex(index)
        qtbot.wait(10)
        area = main.tabs.currentWidget()
        # each tab fits the dock's height: what does not fit scrolls, nothing is cut off below the screen
        assert widget.native.isVisible() and area.height() <= dock.height() <= SCREEN[1]
        assert area.viewport().width() >= widget.native.minimumSizeHint().width()
    main.show_tab("Export")
    assert main.tabs.currentWidget().widget().isAncestorOf(main.export.native)
    title = dock.title.title  # napari's title bar: not cut in the 310 px dock
    assert title.text() == "Cell segmentation" and title.fontMetrics().horizontalAdvance(title.text()) <= title.width()
    # long names (a layer, a path) leave the canvas its half
    viewer.add_image(np.zeros((8, 8)), name="a_very_long_image_name_from_the_microscope_" * 4)
    main.train.dataset.value = "/data/" + "a_very_long_folder_name_" * 8
    qtbot.wait(50)
    assert _canvas_width(viewer) >= SCREEN[0] / 2


def test_tabs_are_built_when_first_shown_and_meet_what_happened_before(make_napari_viewer, qtbot):
    """Building all four tabs held the GUI thread 0.4-0.6 s when the dock was added: only the first
    is built then. A tab built later sees the images opened and the model trained meanwhile."""
    viewer = make_napari_viewer(show=True)
    _, main = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
    assert list(main._built) == ["Train"]
    first = viewer.add_image(np.zeros((32, 32), np.uint8), name="first")
    newest = viewer.add_image(np.zeros((32, 32), np.uint8), name="newest")
    main.tabs.setCurrentIndex(1)  # the user clicks the Segment tab
    qtbot.wait(20)
    assert list(main._built) == ["Train", "Segment"] and main.segment.native.isVisible()
    assert main.segment.image.value is newest and first in main.segment.image.choices
    assert main.tabs.currentWidget().widget().isAncestorOf(main.segment.native)
    main.show_tab("Fine-tune")  # needs Segment and Train: both exist once, shared
    assert main.finetune.segment is main.segment and main.finetune.train_widget is main.train
    assert set(main._built) == {"Train", "Segment", "Fine-tune"}
    assert main.tabs.tabText(main.tabs.currentIndex()) == "Fine-tune"
    qtbot.waitUntil(main.finetune.native.isVisible, timeout=5_000)


def test_the_tabs_share_one_session_and_training_is_cancelled_from_its_tab(laptop, qtbot, tiny_dataset, tmp_path):
    viewer, _, main = laptop
    main.show_tab("Train")
    train = quick(main.train, tiny_dataset, tmp_path / "run")
    train.epochs.value = 1000
    assert not train.synchronous  # a real worker, as in napari
    steps = []

    def on_event(event):
        if isinstance(event, engine.StepEvent):
            steps.append(event.step)
            if event.step == 1:
                train.start.clicked()  # the user clicks Cancel

    train.start.clicked()
    train._worker.yielded.connect(on_event)
    # the user keeps working meanwhile: opens and closes an image, looks at the Segment tab
    layer = viewer.add_image(np.zeros((32, 32), np.uint8), name="another image")
    main.show_tab("Segment")
    assert any(choice is layer for choice in main.segment.image.choices)
    viewer.layers.remove(layer)
    assert not any(choice is layer for choice in main.segment.image.choices)
    qtbot.waitUntil(lambda: train._worker is None, timeout=120_000)
    assert train.done is not None and train.done.cancelled and max(steps) <= 2
    assert "cancelled" in train.status.value and "MB" in train.run_size.value
    assert (tmp_path / "run" / "last.pt").is_file()
    # a cancelled run's model is offered, not switched to; taken, the Segment tab picks it up
    assert session_for(viewer).last_checkpoint is None
    train.use_button.clicked()
    assert main.segment.checkpoint.value == session_for(viewer).last_checkpoint == train.done.last
    assert train.start.text == "Start training" and train.dataset.enabled


def test_the_menu_offers_the_one_dock_only(make_napari_viewer):
    """Three separate docks besides the combined one made two live Segment widgets and a window of
    663 x 1770 px; the menu offers the combined dock alone."""
    from npe2 import PluginManager

    viewer = make_napari_viewer()
    widgets = PluginManager.instance().get_manifest("napari-cellseg").contributions.widgets
    assert [w.display_name for w in widgets] == ["Cell segmentation"]
    _, main = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
    assert main.segment.status.native is not None


def test_the_training_progress_text_is_readable_in_the_dock(laptop, qtbot):
    """'ep 6/12 - loss 2.496 - l' cut the ETA off: the bar holds the step, a wrapping line the rest."""
    from napari_cellseg.training.engine import StepEvent

    _, _, main = laptop
    main.show_tab("Train")
    train = main.train
    for step in (1, 1234):
        train._on_step(StepEvent(epoch=12, step=step, total_steps=12000, losses={"loss": 2.4961}, lr=1e-4,
                                 images_per_s=3.0))
    qtbot.wait(20)
    bar = train.progress.native
    text = bar.text()
    assert text == "step 1234/12000" and bar.fontMetrics().horizontalAdvance(text) + 12 <= bar.width()
    info = train.step_info.native  # the second line wraps in the dock's width
    assert info.text().startswith("epoch 12, loss 2.496, ETA ") and info.wordWrap()
    assert info.width() <= train.native.width() and info.heightForWidth(info.width()) <= info.height() + 1
