"""One dock for the whole plugin: Train, Segment, Export and Fine-tune as tabs.

Three separate docks stacked on the right needed a window about 1535 px tall and long file names
widened them until the image canvas had under a third of the window. Here the three widgets share
one dock of ``DOCK_WIDTH`` px, each tab scrolls, so napari fits a 1366 x 768 laptop screen with the
canvas keeping at least half the width. The widgets are the same objects the separate docks use
(``TrainWidget``, ``SegmentWidget``, ``ExportWidget``): they share the viewer's session, so the
model just trained is what Segment uses, and Segment's results are what Export writes.

A tab is built the first time it is shown or used (``main.segment`` etc.): building all four held
the GUI thread 0.38-0.56 s (cProfile) when the dock was added, the Train tab alone 0.12-0.18 s; the
others cost their own first click (39-63 ms on an idle machine, BENCHMARKS.md).
"""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QFrame, QLabel, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from . import session, warm_up
from .session import DOCK_WIDTH

TABS = ("Train", "Segment", "Export", "Fine-tune")
"""The tabs, left to right."""

TITLE = "Cell segmentation"
"""The dock's title bar text (napari's own adds the plugin name, which a 310 px dock cuts)."""
MAX_DOCK_WIDTH = 520
"""Widest the dock may be dragged (px): on a 1366 px screen the canvas keeps half the window."""


def scrollable() -> QScrollArea:
    """An empty vertical scroll area that never makes the dock wider than the tab (its widget's
    layout takes the tab's widget first, then a stretch)."""
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addStretch(1)  # a short tab keeps its rows together at the top
    area = QScrollArea()
    area.setWidget(holder)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return area


class CellsegWidget(QWidget):
    """Dock widget: the Train, Segment, Export and Fine-tune widgets as tabs of one narrow dock."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        warm_up.warm_up(napari_viewer)  # imports for the first layer and run, off the GUI thread
        self.viewer = napari_viewer
        self._built: dict[str, object] = {}
        self.tabs = QTabWidget()
        for title in TABS:
            self.tabs.addTab(scrollable(), title)
        self.tabs.currentChanged.connect(lambda index: self.tab(TABS[index]))
        self.tab(TABS[0])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMaximumWidth(MAX_DOCK_WIDTH)

    def tab(self, title: str):
        """The widget of the tab ``title``, built and put in its tab on first use."""
        if title not in self._built:
            widget = self._make(title)
            self._built[title] = widget
            session.keep_narrow(widget)
            self.tabs.widget(TABS.index(title)).widget().layout().insertWidget(0, widget.native)
        return self._built[title]

    def _make(self, title: str):
        if title == "Train":
            from .train_widget import TrainWidget

            return TrainWidget(self.viewer)
        if title == "Segment":
            from .segment_widget import SegmentWidget

            return SegmentWidget(self.viewer)
        if title == "Export":
            from .export_widget import ExportWidget

            return ExportWidget(self.viewer)
        from .finetune_widget import FineTuneWidget

        return FineTuneWidget(self.viewer, self.segment, self.train, self.show_tab)

    train = property(lambda self: self.tab("Train"), doc="The Train tab's widget (built on first use).")
    segment = property(lambda self: self.tab("Segment"), doc="The Segment tab's widget.")
    export = property(lambda self: self.tab("Export"), doc="The Export tab's widget.")
    finetune = property(lambda self: self.tab("Fine-tune"), doc="The Fine-tune tab's widget.")

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(DOCK_WIDTH, 600)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(min(DOCK_WIDTH, super().minimumSizeHint().width()), 200)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """napari titles the dock "Cell segmentation (napari-cellseg)", cut at 310 px: the short
        title in the bar, the whole one in its tooltip (napari's title bar holds a QLabel ``title``)."""
        super().showEvent(event)
        QTimer.singleShot(100, warm_up.dock_drawn)  # after the first paint: then the warm-up imports
        dock = self.parentWidget()
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parentWidget()
        label = getattr(getattr(dock, "title", None), "title", None)
        if isinstance(label, QLabel) and label.text() != TITLE:
            label.setToolTip(label.text())
            label.setText(TITLE)

    def show_tab(self, title: str) -> None:
        """Bring the tab called ``title`` (Train, Segment, Export, Fine-tune) to the front."""
        self.tabs.setCurrentIndex(TABS.index(title))
