"""The Train widget's live plot: loss terms per step, validation AP per epoch, drawn off the GUI thread.

matplotlib draws the figure in one background thread (``_Figure``: a figure only that thread
touches, on an Agg canvas) and hands the pixels back; the widget only paints that image. Laying
out and drawing the figure in the GUI thread had held it 0.3-2.7 s per build or redraw on a busy
CPU; here the GUI thread copies a few lists per redraw and never imports matplotlib. At most one
drawing is in flight: points that arrive meanwhile are drawn next, stale states are skipped, and a
redraw waits at least ``MIN_INTERVAL_S`` (or five drawing times on a slow CPU) after the last.

The colours follow the napari theme (matplotlib's white defaults made a white box in the dark
theme); fonts stay at 9 pt or more; the axes count steps and epochs in whole numbers.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from qtpy.QtCore import QObject, QSize, QTimer, Signal
from qtpy.QtGui import QColor, QImage, QPainter
from qtpy.QtWidgets import QWidget

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
PLOT_HEIGHT = 256
"""The plot's minimum height (px): the Train tab still fits 768 px unscrolled."""
MIN_INTERVAL_S = 0.5
"""Shortest time between two drawings of one plot."""

_FALLBACK = {"background": "#23242b", "text": "#f0f1f2", "grid": "#565f6c"}
_DRAWER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cellseg-plot")
"""The one thread that runs matplotlib for every plot (matplotlib is not thread-safe)."""


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


@dataclass
class Snapshot:
    """What one drawing shows: copies taken in the GUI thread, read by the drawing thread."""

    steps: list[int]
    losses: dict[str, list[float]]
    epochs: list[int]
    ap: dict[str, list[float]]
    validated: bool
    colours: dict[str, str]
    size: tuple[int, int]  # device pixels
    dpi: float


@dataclass
class _Figure:
    """The matplotlib side of one plot; used only in the drawing thread. The layout (constrained)
    is computed when the size, the theme or the set of lines changes; other drawings set new data
    and limits only."""

    figure: object = None
    key: tuple = ()
    drawn_in: set[str] = field(default_factory=set)  # the drawing threads' names (tests check them)

    def draw(self, snap: Snapshot) -> tuple[bytes, int, int]:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.drawn_in.add(threading.current_thread().name)
        key = (snap.size, snap.dpi, tuple(snap.colours.items()), tuple(snap.losses), tuple(snap.ap), snap.validated)
        if self.figure is None or key != self.key:
            self.figure = Figure(figsize=(snap.size[0] / snap.dpi, snap.size[1] / snap.dpi), dpi=snap.dpi,
                                 layout="constrained")
            FigureCanvasAgg(self.figure)
            self._build(snap)
            self.key = key
        loss_ax, ap_ax = self.axes
        for line, name in zip(loss_ax.get_lines(), snap.losses):
            line.set_data(snap.steps, snap.losses[name])
        for line, name in zip(ap_ax.get_lines(), snap.ap):
            line.set_data(snap.epochs, snap.ap[name])
        _fit_limits(loss_ax, snap.steps, max((max(v) for v in snap.losses.values() if v), default=0.0))
        _fit_limits(ap_ax, snap.epochs, None)
        canvas = self.figure.canvas
        canvas.draw()
        if self.figure.get_constrained_layout():
            self.figure.set_layout_engine("none")  # laid out once per build: titles and labels never change
        width, height = (int(v) for v in canvas.get_width_height(physical=True))
        return bytes(canvas.buffer_rgba()), width, height

    @property
    def axes(self):
        return self.figure.axes

    def _build(self, snap: Snapshot) -> None:
        c = snap.colours
        loss_ax, ap_ax = self.figure.subplots(2, 1)
        loss_ax.set_title("training loss", fontsize=FONT_PT + 1)
        loss_ax.set_xlabel("step", fontsize=FONT_PT)
        for key, values in snap.losses.items():
            loss_ax.plot(snap.steps, values, label=_LOSS_LABELS.get(key, key), lw=1.8 if key == "loss" else 1.0)
        if snap.losses:
            _legend(loss_ax, "upper right", c)
        ap_ax.set_title("validation", fontsize=FONT_PT + 1)
        ap_ax.set_xlabel("epoch", fontsize=FONT_PT)
        ap_ax.set_ylim(0, 1)
        for key, values in snap.ap.items():
            ap_ax.plot(snap.epochs, values, marker="o", label=key)
        if snap.ap:
            _legend(ap_ax, "upper left", c)
        if not snap.validated:
            ap_ax.text(0.5, 0.5, "no validation images", transform=ap_ax.transAxes, ha="center", va="center",
                       fontsize=FONT_PT + 1, color=c["text"])
        _colour(self.figure, c)


def _fit_limits(ax, xs: list[int], top: float | None) -> None:
    """Axes that leave room ahead (half the range again), so the ticks do not move every step."""
    if not xs:
        return
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    first, last = xs[0], xs[-1]
    if last > x1 or first < x0 or first > x0 + (x1 - x0) / 2 or x1 - x0 < 4:  # a resumed run starts late;
        span = max(4, 1.5 * (last - first))  # one point alone got matplotlib's 0.1-wide range: ticks 0.945 ...
        ax.set_xlim(first - 0.04 * span, first + span)
    if top is not None and (top > y1 or top < y1 / 4 or y0 != 0):
        ax.set_ylim(0, top * 1.15 or 1.0)


def _legend(ax, loc: str, c: dict[str, str]) -> None:
    legend = ax.legend(fontsize=FONT_PT, loc=loc, ncols=2, framealpha=0.7)
    legend.get_frame().set_facecolor(c["background"])
    legend.get_frame().set_edgecolor(c["grid"])
    for text in legend.get_texts():
        text.set_color(c["text"])


def _colour(figure, c: dict[str, str]) -> None:
    from matplotlib.ticker import MaxNLocator

    figure.set_facecolor(c["background"])
    for ax in figure.axes:
        ax.set_facecolor(c["background"])
        ax.tick_params(labelsize=FONT_PT, colors=c["text"])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no step 1.5, no epoch 0.5; kept by new limits
        ax.title.set_color(c["text"])
        ax.xaxis.label.set_color(c["text"])
        ax.grid(True, color=c["grid"], linewidth=0.5, alpha=0.6)
        for spine in ax.spines.values():
            spine.set_color(c["grid"])


class _Mailbox(QObject):
    """Carries finished drawings from the drawing thread into the GUI thread (a queued signal). One
    for all plots, made in the GUI thread and never deleted: the drawing thread holds no Qt object
    of a plot, so a dock closed mid-drawing is never freed from that thread."""

    drawn = Signal(object, object)  # (weak reference to the plot, result)

    def deliver(self, plot_ref, result) -> None:
        plot = plot_ref()
        if plot is not None:
            try:
                plot._drawn(result)
            except RuntimeError:  # the plot's widget was deleted by Qt
                pass


_MAILBOX: list[_Mailbox] = []


def _mailbox() -> _Mailbox:
    if not _MAILBOX:
        _MAILBOX.append(_Mailbox())
        _MAILBOX[0].drawn.connect(_MAILBOX[0].deliver)
    return _MAILBOX[0]


class TrainingPlot(QWidget):
    """Two panels that follow training, painted from the image the drawing thread made."""

    def __init__(self, theme: str = "dark") -> None:
        super().__init__()
        self.setMinimumHeight(PLOT_HEIGHT)
        self.colours = theme_colours(theme)
        self.steps: list[int] = []
        self.losses: dict[str, list[float]] = defaultdict(list)
        self.epochs: list[int] = []
        self.ap: dict[str, list[float]] = defaultdict(list)
        self.validated = True  # False: the run has no validation images, and the plot says so
        self.drawings = 0  # finished drawings (tests wait on it)
        self._figure = _Figure()
        self._image: QImage | None = None
        self._busy = False  # a drawing is in flight
        self._due = False  # something changed since the drawing in flight started
        self._last = (0.0, 0.0)  # (when the last drawing started, how long it took)
        self._mailbox = _mailbox()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._submit)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(355, 298)

    # ------------------------------------------------------------------ data (GUI thread)

    def set_theme(self, theme: str) -> None:
        """Recolour for the napari theme ``theme`` (dark, light or system)."""
        self.colours = theme_colours(theme)
        self.redraw()

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
        self.redraw()

    def add_epoch(self, epoch: int, metrics: dict) -> None:
        self.epochs.append(epoch)
        for key in ("AP", "AP50"):
            self.ap[key].append(float(metrics.get(key) or 0.0))
        self.redraw()

    def no_validation(self) -> None:
        """The run has no validation images: an empty panel that says so, not a line at AP 0."""
        if self.validated:
            self.validated = False
            self.redraw()

    @property
    def idle(self) -> bool:
        """No drawing in flight or due: the image shows the data as it is."""
        return not (self._busy or self._due or self._timer.isActive())

    @property
    def figure(self):
        """The last drawn matplotlib figure (read it only while ``idle``: the drawing thread owns it)."""
        return self._figure.figure

    @property
    def loss_ax(self):
        return self._figure.axes[0]

    @property
    def ap_ax(self):
        return self._figure.axes[1]

    # ------------------------------------------------------------------ drawing

    def redraw(self) -> None:
        """Draw the current data soon: now if nothing is in flight and the last drawing is old enough."""
        if self._busy:
            self._due = True
            return
        if self._timer.isActive():
            return
        started, took = self._last
        wait = started + max(MIN_INTERVAL_S, 5 * took) - time.perf_counter()
        self._timer.start(max(0, int(wait * 1000)))

    def _submit(self) -> None:
        if not self.isVisible():
            self._due = True  # drawn when shown (``showEvent``): a hidden plot has no size yet
            return
        ratio = self.devicePixelRatioF()
        size = (max(1, round(self.width() * ratio)), max(1, round(self.height() * ratio)))
        snap = Snapshot(list(self.steps), {k: list(v) for k, v in self.losses.items()}, list(self.epochs),
                        {k: list(v) for k, v in self.ap.items()}, self.validated, dict(self.colours), size, 96 * ratio)
        self._busy, self._due = True, False
        started = time.perf_counter()
        mailbox, figure, ref = self._mailbox, self._figure, weakref.ref(self)

        def draw() -> None:
            try:
                pixels = figure.draw(snap)
            except Exception as exc:  # noqa: BLE001 - shown in the log, the plot keeps its last image
                pixels = exc
            mailbox.drawn.emit(ref, (pixels, started, time.perf_counter() - started))

        _DRAWER.submit(draw)

    def _drawn(self, result) -> None:
        pixels, started, took = result
        self._busy, self._last = False, (started, took)
        self.drawings += 1
        if isinstance(pixels, Exception):
            import logging

            logging.getLogger(__name__).warning("the training plot could not be drawn: %s", pixels)
        else:
            data, width, height = pixels
            image = QImage(data, width, height, QImage.Format.Format_RGBA8888)
            image.setDevicePixelRatio(self.devicePixelRatioF())
            self._image = image.copy()  # owns its pixels
            self.update()
        if self._due:
            self._due = False
            self.redraw()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        if self._image is None:
            painter.fillRect(self.rect(), QColor(self.colours["background"]))
        else:
            painter.drawImage(self.rect(), self._image)
        painter.end()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """A new size is drawn and laid out again (laid out for the old size, tick labels were cut)."""
        super().resizeEvent(event)
        self.redraw()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        self._due = False
        self.redraw()

