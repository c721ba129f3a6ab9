"""The training plot follows napari's theme, keeps fonts readable and counts epochs in whole numbers."""

from __future__ import annotations

from matplotlib.colors import to_hex
from napari.utils.theme import get_theme

from napari_cellseg.plugin.plot import FONT_PT, TrainingPlot, theme_colours
from napari_cellseg.plugin.train_widget import TrainWidget


def _colours_of(plot: TrainingPlot) -> tuple[str, str, str]:
    ax = plot.ap_ax
    return to_hex(plot.figure.get_facecolor()), to_hex(ax.get_facecolor()), to_hex(ax.title.get_color())


def test_plot_takes_the_theme_colours(qtbot):
    plot = TrainingPlot("dark")
    qtbot.addWidget(plot)
    dark = get_theme("dark")
    assert _colours_of(plot) == (dark.background.as_hex(), dark.background.as_hex(), dark.text.as_hex())
    plot.set_theme("light")
    light = get_theme("light")
    assert _colours_of(plot) == (light.background.as_hex(), light.background.as_hex(), light.text.as_hex())
    assert theme_colours("system")["background"] in (dark.background.as_hex(), light.background.as_hex())


def test_the_train_dock_follows_the_viewer_theme(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.theme = "light"
    assert _colours_of(widget.plot)[0] == get_theme("light").background.as_hex()
    viewer.theme = "dark"
    assert _colours_of(widget.plot)[0] == get_theme("dark").background.as_hex()


def test_epoch_ticks_are_whole_numbers_and_fonts_readable(qtbot):
    plot = TrainingPlot()
    qtbot.addWidget(plot)
    for step in range(1, 4):
        plot.add_step(step, {"loss": 2.0 / step, "loss_mask": 1.0 / step})
    plot.add_epoch(1, {"AP": 0.1, "AP50": 0.2})
    plot.add_epoch(2, {"AP": 0.2, "AP50": 0.3})
    plot.redraw()
    for ax in (plot.loss_ax, plot.ap_ax):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        texts = [*ax.get_xticklabels(), *ax.get_yticklabels(), *ax.get_legend().get_texts(), ax.xaxis.label]
        assert min(t.get_fontsize() for t in texts) >= FONT_PT >= 9


def test_a_run_without_validation_says_so_instead_of_ap_0(qtbot):
    plot = TrainingPlot()
    qtbot.addWidget(plot)
    plot.no_validation()
    plot.redraw()
    assert [t.get_text() for t in plot.ap_ax.texts] == ["no validation images"] and not plot.ap_ax.lines
    plot.clear()
    assert plot.validated and not plot.ap_ax.texts


def test_new_points_within_the_axes_draw_only_the_lines(qtbot, monkeypatch):
    """A redraw drew every tick label and legend again (most of its time in the GUI thread): points
    that fit the axes are blitted, and the axes grow with room ahead when a point leaves them."""
    plot = TrainingPlot()
    qtbot.addWidget(plot)
    plot.show()
    for step in (1, 2, 3):
        plot.add_step(step, {"loss": 2.0 / step, "loss_mask": 1.0 / step})
        plot.redraw()
    full = []
    monkeypatch.setattr(plot, "draw", lambda: full.append(plot.loss_ax.get_xlim()))
    plot.add_step(4, {"loss": 0.5, "loss_mask": 0.25})
    plot.redraw()
    assert full == [] and [len(line.get_xdata()) for line in plot.loss_ax.get_lines()] == [4, 4]
    plot.add_step(40, {"loss": 0.4, "loss_mask": 0.2})
    plot.redraw()
    assert len(full) == 1 and full[0][1] > 40  # grown, with room for the next steps


def test_tick_labels_stay_whole_when_the_dock_resizes_the_plot(qtbot):
    """The dock sizes the plot after it is built; laid out for the old size, its tick labels were cut."""
    plot = TrainingPlot()
    qtbot.addWidget(plot)
    plot.show()
    qtbot.waitUntil(lambda: not plot.figure.get_constrained_layout())  # laid out once, then kept
    plot.resize(200, 300)
    qtbot.waitUntil(lambda: not plot.figure.get_constrained_layout(), timeout=5_000)  # laid out again
    for ax in (plot.loss_ax, plot.ap_ax):
        assert min(t.get_window_extent().x0 for t in ax.get_yticklabels() if t.get_text()) >= 0
