"""One dock for the whole plugin: Train, Segment, Export and Fine-tune as tabs.

Three separate docks stacked on the right needed a window about 1535 px tall and long file names
widened them until the image canvas had under a third of the window. Here the three widgets share
one dock of ``DOCK_WIDTH`` px, each tab scrolls, so napari fits a 1366 x 768 laptop screen with the
canvas keeping at least half the width. The widgets are the same objects the separate docks use
(``TrainWidget``, ``SegmentWidget``, ``ExportWidget``): they share the viewer's session, so the
model just trained is what Segment uses, and Segment's results are what Export writes.
"""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QDockWidget, QFrame, QLabel, QScrollArea, QTabWidget, QVBoxLayout, QWidget

from . import session
from .session import DOCK_WIDTH
from .export_widget import ExportWidget
from .finetune_widget import FineTuneWidget
from .segment_widget import SegmentWidget
from .train_widget import TrainWidget

TITLE = "Cell segmentation"
"""The dock's title bar text (napari's own adds the plugin name, which a 310 px dock cuts)."""
MAX_DOCK_WIDTH = 520
"""Widest the dock may be dragged (px): on a 1366 px screen the canvas keeps half the window."""


def scrollable(widget: QWidget) -> QScrollArea:
    """``widget`` in a vertical scroll area that never makes the dock wider than the tab."""
    holder = QWidget()
    layout = QVBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(widget)
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
        session.warm_up()  # imports for the first layer and run, off the GUI thread
        self.viewer = napari_viewer
        self.train = TrainWidget(napari_viewer)
        self.segment = SegmentWidget(napari_viewer)
        self.export = ExportWidget(napari_viewer)
        self.finetune = FineTuneWidget(napari_viewer, self.segment, self.train, self.show_tab)
        self.tabs = QTabWidget()
        tabs = (("Train", self.train), ("Segment", self.segment), ("Export", self.export),
                ("Fine-tune", self.finetune))
        for title, widget in tabs:
            session.keep_narrow(widget)
            self.tabs.addTab(scrollable(widget.native), title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        self.setMaximumWidth(MAX_DOCK_WIDTH)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(DOCK_WIDTH, 600)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(min(DOCK_WIDTH, super().minimumSizeHint().width()), 200)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """napari titles the dock "Cell segmentation (napari-cellseg)", cut at 310 px: the short
        title in the bar, the whole one in its tooltip (napari's title bar holds a QLabel ``title``)."""
        super().showEvent(event)
        dock = self.parentWidget()
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parentWidget()
        label = getattr(getattr(dock, "title", None), "title", None)
        if isinstance(label, QLabel) and label.text() != TITLE:
            label.setToolTip(label.text())
            label.setText(TITLE)

    def show_tab(self, title: str) -> None:
        """Bring the tab called ``title`` (Train, Segment, Export, Fine-tune) to the front."""
        titles = [self.tabs.tabText(i).replace("&&", "&") for i in range(self.tabs.count())]
        self.tabs.setCurrentIndex(titles.index(title))
