"""A small matplotlib canvas for the Train widget: loss terms per step, validation AP per epoch.

Its colours follow the napari theme (``set_theme``): matplotlib's white defaults made a white box
in the dark theme. Fonts stay at 9 pt or more, and the axes count steps and epochs in whole numbers.
"""

from __future__ import annotations

from collections import defaultdict

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from qtpy.QtCore import QTimer

_LOSS_LABELS = {
    "loss": "total",
    "loss_classifier": "class",
    "loss_box_reg": "box",
    "loss_mask": "mask",
    "loss_objectness": "objectness",
    "loss_rpn_box_reg": "rpn box",
}

FONT_PT = 9
"""Smallest font of the plot (ticks, legends); titles are one point larger."""

_FALLBACK = {"background": "#23242b", "text": "#f0f1f2", "grid": "#565f6c"}


def theme_colours(theme_name: str) -> dict[str, str]:
    """Background, text and grid colours of a napari theme (``system`` resolved to dark or light)."""
    try:
        from napari.utils.theme import get_system_theme, get_theme

        theme = get_theme(get_system_theme() if theme_name == "system" else theme_name)
    except (ImportError, KeyError, ValueError):
        return dict(_FALLBACK)
    return {
        "background": theme.background.as_hex(),
        "text": theme.text.as_hex(),
        "grid": theme.secondary.as_hex(),
    }


class TrainingPlot(FigureCanvasQTAgg):
    """Two panels that follow training; redraws are coalesced (at most two a second) so fast steps
    cost the GUI thread little."""

    def __init__(self, theme: str = "dark") -> None:
        figure = Figure(figsize=(3.7, 3.1), dpi=96, layout="constrained")  # the Train tab fits 768 px unscrolled
        super().__init__(figure)
        self.setMinimumHeight(256)  # train_widget.PLOT_HEIGHT
        self.loss_ax, self.ap_ax = figure.subplots(2, 1)
        self.colours = theme_colours(theme)
        self.steps: list[int] = []
        self.losses: dict[str, list[float]] = defaultdict(list)
        self.epochs: list[int] = []
        self.ap: dict[str, list[float]] = defaultdict(list)
        self.validated = True  # False: the run has no validation images, and the plot says so
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self.redraw)
        self._background = None  # the drawn figure without its lines, for blitting
        self.mpl_connect("draw_event", self._on_draw)
        self.redraw()

    def set_theme(self, theme: str) -> None:
        """Recolour for the napari theme ``theme`` (dark, light or system)."""
        self.colours = theme_colours(theme)
        self._rebuild()

    def clear(self) -> None:
        self.steps.clear()
        self.losses.clear()
        self.epochs.clear()
        self.ap.clear()
        self.validated = True
        self.redraw()

    def add_step(self, step: int, losses: dict[str, float]) -> None:
        self.steps.append(step)
        for key, value in losses.items():
            self.losses[key].append(value)
        self._schedule()

    def add_epoch(self, epoch: int, metrics: dict) -> None:
        self.epochs.append(epoch)
        for key in ("AP", "AP50"):
            self.ap[key].append(float(metrics.get(key) or 0.0))
        self._schedule()

    def no_validation(self) -> None:
        """The run has no validation images: an empty panel that says so, not a line at AP 0."""
        if self.validated:
            self.validated = False
            self._schedule()

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        """New points into the lines drawn already (``set_data``, no new layout); the whole figure
        is built again only when a line or the no-validation note appears or goes (``ax.clear()``
        and the constrained layout took 0.4-2.7 s of the GUI thread per redraw on a busy CPU)."""
        keys = (tuple(self.losses), tuple(self.ap), self.validated)  # "no validation images" is layout too
        if keys != getattr(self, "_keys", None):
            self._keys = keys
            self._rebuild()
            return
        for line, key in zip(self.loss_ax.get_lines(), self.losses):
            line.set_data(self.steps, self.losses[key])
        for line, key in zip(self.ap_ax.get_lines(), self.ap):
            line.set_data(self.epochs, self.ap[key])
        if self._grow_limits() or self._background is None:
            self.draw()  # new ticks: everything (``_draw_lines`` adds the lines)
            return
        self.restore_region(self._background)  # the same axes: only the lines are drawn again
        self._draw_lines()
        self.blit(self.figure.bbox)

    def _grow_limits(self) -> bool:
        """Whether an axis had to grow: limits leave room ahead (half the range again), so most
        redraws keep the ticks, labels and legends and only draw the lines (their text took most of
        a full redraw's time in the GUI thread)."""
        top = max((max(v) for v in self.losses.values() if v), default=0.0)
        grown = False
        for ax, xs, tops in ((self.loss_ax, self.steps, top), (self.ap_ax, self.epochs, None)):
            if not xs:
                continue
            (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
            first, last = xs[0], xs[-1]
            if last > x1 or first < x0 or first > x0 + (x1 - x0) / 2:  # a resumed run starts late
                span = max(4, 1.5 * (last - first))
                ax.set_xlim(first - 0.04 * span, first + span)
                grown = True
            if tops is not None and (tops > y1 or tops < y1 / 4 or y0 != 0):
                ax.set_ylim(0, tops * 1.15 or 1.0)
                grown = True
        return grown

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """A new size lays the axes out again at the next draw (the dock sizes the plot after it is
        built: without it the tick labels were cut at the left)."""
        self.figure.set_layout_engine("constrained")
        super().resizeEvent(event)

    def _on_draw(self, _event=None) -> None:
        """After a full draw (which skips the animated lines): keep the background, add the lines.
        The constrained layout runs at the first draw and after a resize only: titles and labels never
        change, so the axes keep their place (laying out took ~20% of a full draw, 100 vs 81 ms)."""
        if self.figure.get_constrained_layout():
            self.figure.set_layout_engine("none")
        self._background = self.copy_from_bbox(self.figure.bbox)
        self._draw_lines()

    def _draw_lines(self) -> None:
        for ax in (self.loss_ax, self.ap_ax):
            for line in ax.get_lines():
                ax.draw_artist(line)

    def _rebuild(self) -> None:
        """Lines, legends and colours anew (the layout stays: see ``_on_draw``)."""
        ax = self.loss_ax
        ax.clear()
        ax.set_title("training loss", fontsize=FONT_PT + 1)
        ax.set_xlabel("step", fontsize=FONT_PT)
        for key, values in self.losses.items():
            ax.plot(self.steps, values, label=_LOSS_LABELS.get(key, key), lw=1.8 if key == "loss" else 1.0,
                    animated=True)
        if self.losses:
            self._legend(ax, "upper right", ncols=2)
        ax = self.ap_ax
        ax.clear()
        ax.set_title("validation", fontsize=FONT_PT + 1)
        ax.set_xlabel("epoch", fontsize=FONT_PT)
        ax.set_ylim(0, 1)
        for key, values in self.ap.items():
            ax.plot(self.epochs, values, marker="o", label=key, animated=True)
        if self.ap:
            self._legend(ax, "upper left", ncols=2)
        if not self.validated:
            ax.text(0.5, 0.5, "no validation images", transform=ax.transAxes, ha="center", va="center",
                    fontsize=FONT_PT + 1, color=self.colours["text"])
        self._grow_limits()
        self._colour()
        self.draw()  # now, not draw_idle: its unparented timer could fire after the dock is closed

    def _legend(self, ax, loc: str, ncols: int) -> None:
        legend = ax.legend(fontsize=FONT_PT, loc=loc, ncols=ncols, framealpha=0.7)
        legend.get_frame().set_facecolor(self.colours["background"])
        legend.get_frame().set_edgecolor(self.colours["grid"])
        for text in legend.get_texts():
            text.set_color(self.colours["text"])

    def _colour(self) -> None:
        c = self.colours
        self.figure.set_facecolor(c["background"])
        for ax in (self.loss_ax, self.ap_ax):
            ax.set_facecolor(c["background"])
            ax.tick_params(labelsize=FONT_PT, colors=c["text"])
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no step 1.5, no epoch 0.5
            ax.title.set_color(c["text"])
            ax.xaxis.label.set_color(c["text"])
            ax.grid(True, color=c["grid"], linewidth=0.5, alpha=0.6)
            for spine in ax.spines.values():
                spine.set_color(c["grid"])
