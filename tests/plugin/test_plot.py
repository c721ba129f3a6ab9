"""The training plot is drawn off the GUI thread, follows napari's theme, keeps fonts readable and
counts epochs in whole numbers."""

from __future__ import annotations

import threading

from matplotlib.colors import to_hex
from napari.utils.theme import get_theme

from napari_cellseg.plugin import plot as plot_module
from napari_cellseg.plugin.plot import FONT_PT, TrainingPlot, theme_colours
from napari_cellseg.plugin.train_widget import TrainWidget


def _shown(qtbot, theme: str = "dark") -> TrainingPlot:
    plot = TrainingPlot(theme)
    qtbot.addWidget(plot)
    plot.resize(320, 300)
    plot.show()
    return plot


def _drawn(qtbot, plot: TrainingPlot) -> None:
    """Wait until the image shows the data as it is now."""
    qtbot.waitUntil(lambda: plot.drawings > 0 and plot.idle, timeout=20_000)


def _colours_of(plot: TrainingPlot) -> tuple[str, str, str]:
    ax = plot.ap_ax
    return to_hex(plot.figure.get_facecolor()), to_hex(ax.get_facecolor()), to_hex(ax.title.get_color())


def test_plot_takes_the_theme_colours(qtbot):
    plot = _shown(qtbot, "dark")
    _drawn(qtbot, plot)
    dark = get_theme("dark")
    assert _colours_of(plot) == (dark.background.as_hex(), dark.background.as_hex(), dark.text.as_hex())
    plot.set_theme("light")
    _drawn(qtbot, plot)
    light = get_theme("light")
    assert _colours_of(plot) == (light.background.as_hex(), light.background.as_hex(), light.text.as_hex())
    seen = plot.grab().toImage().pixelColor(2, 2)  # what the user sees (a 16-bit display rounds it)
    assert all(abs(a - b) <= 8 for a, b in zip(seen.getRgb()[:3], light.background.as_rgb_tuple()[:3]))
    assert theme_colours("system")["background"] in (dark.background.as_hex(), light.background.as_hex())


def test_the_train_dock_follows_the_viewer_theme(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.theme = "light"
    _drawn(qtbot, widget.plot)
    assert _colours_of(widget.plot)[0] == get_theme("light").background.as_hex()
    viewer.theme = "dark"
    _drawn(qtbot, widget.plot)
    assert _colours_of(widget.plot)[0] == get_theme("dark").background.as_hex()


def test_epoch_ticks_are_whole_numbers_and_fonts_readable(qtbot):
    plot = _shown(qtbot)
    for step in range(1, 4):
        plot.add_step(step, {"loss": 2.0 / step, "loss_mask": 1.0 / step})
    plot.add_epoch(1, {"AP": 0.1, "AP50": 0.2})
    plot.add_epoch(2, {"AP": 0.2, "AP50": 0.3})
    _drawn(qtbot, plot)
    for ax in (plot.loss_ax, plot.ap_ax):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        texts = [*ax.get_xticklabels(), *ax.get_yticklabels(), *ax.get_legend().get_texts(), ax.xaxis.label]
        assert min(t.get_fontsize() for t in texts) >= FONT_PT >= 9


def test_one_epoch_alone_still_gets_whole_epoch_ticks(qtbot):
    """A single validated epoch got matplotlib's 0.1-wide range around it: ticks 0.945, 0.960, ..."""
    plot = _shown(qtbot)
    plot.add_step(1, {"loss": 1.0})
    plot.add_epoch(1, {"AP": 0.1, "AP50": 0.2})
    _drawn(qtbot, plot)
    for ax in (plot.loss_ax, plot.ap_ax):
        (x0, x1), ticks = ax.get_xlim(), ax.get_xticks()
        assert x1 - x0 >= 4 and all(float(t).is_integer() for t in ticks if x0 <= t <= x1)


def test_a_run_without_validation_says_so_instead_of_ap_0(qtbot):
    plot = _shown(qtbot)
    plot.no_validation()
    _drawn(qtbot, plot)
    assert [t.get_text() for t in plot.ap_ax.texts] == ["no validation images"] and not plot.ap_ax.lines
    plot.clear()
    _drawn(qtbot, plot)
    assert plot.validated and not plot.ap_ax.texts


def test_matplotlib_draws_in_its_own_thread_and_the_last_point_always_arrives(qtbot, monkeypatch):
    """Building and drawing the figure held the GUI thread 0.3-2.7 s on a busy CPU: the GUI thread
    now only copies the points. A burst of steps is drawn in a few drawings, never one per step,
    and the last drawing holds the last step."""
    monkeypatch.setattr(plot_module, "MIN_INTERVAL_S", 0.05)
    plot = _shown(qtbot)
    for step in range(1, 201):
        plot.add_step(step, {"loss": 2.0 / step, "loss_mask": 1.0 / step})
        if step % 50 == 0:
            qtbot.wait(30)
    _drawn(qtbot, plot)
    assert 1 <= plot.drawings < 20
    assert set(plot._figure.drawn_in) and threading.main_thread().name not in plot._figure.drawn_in
    assert all(name.startswith("cellseg-plot") for name in plot._figure.drawn_in)
    assert [line.get_xdata()[-1] for line in plot.loss_ax.get_lines()] == [200, 200]
    assert plot.loss_ax.get_xlim()[1] >= 200  # the axis grew with the run


def test_tick_labels_stay_whole_when_the_dock_resizes_the_plot(qtbot):
    """The dock sizes the plot after it is built; laid out for the old size, its tick labels were cut."""
    plot = _shown(qtbot)
    _drawn(qtbot, plot)
    plot.resize(200, 300)
    qtbot.waitUntil(lambda: plot.idle and plot.figure.get_figwidth() * plot.figure.dpi < 210, timeout=20_000)
    for ax in (plot.loss_ax, plot.ap_ax):
        assert min(t.get_window_extent().x0 for t in ax.get_yticklabels() if t.get_text()) >= 0


def test_a_hidden_plot_draws_once_it_is_shown(qtbot):
    plot = TrainingPlot()
    qtbot.addWidget(plot)
    plot.add_step(1, {"loss": 1.0})
    qtbot.wait(700)
    assert plot.drawings == 0  # no size yet: nothing drawn for nobody
    plot.resize(300, 280)
    plot.show()
    _drawn(qtbot, plot)
    assert [line.get_xdata()[-1] for line in plot.loss_ax.get_lines()] == [1]
