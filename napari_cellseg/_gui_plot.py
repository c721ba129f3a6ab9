"""A small matplotlib canvas for the Train widget: loss terms per step, validation AP per epoch."""

from __future__ import annotations

from collections import defaultdict

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer

_LOSS_LABELS = {
    "loss": "total",
    "loss_classifier": "class",
    "loss_box_reg": "box",
    "loss_mask": "mask",
    "loss_objectness": "objectness",
    "loss_rpn_box_reg": "rpn box",
}


class TrainingPlot(FigureCanvasQTAgg):
    """Two panels that follow training; redraws are coalesced (at most two a second) so fast steps
    cost the GUI thread little."""

    def __init__(self) -> None:
        figure = Figure(figsize=(4.2, 2.4), dpi=80, layout="constrained")
        super().__init__(figure)
        self.setMinimumHeight(180)
        self.loss_ax, self.ap_ax = figure.subplots(1, 2)
        self.steps: list[int] = []
        self.losses: dict[str, list[float]] = defaultdict(list)
        self.epochs: list[int] = []
        self.ap: dict[str, list[float]] = defaultdict(list)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self.redraw)
        self.redraw()

    def clear(self) -> None:
        self.steps.clear()
        self.losses.clear()
        self.epochs.clear()
        self.ap.clear()
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

    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start()

    def redraw(self) -> None:
        ax = self.loss_ax
        ax.clear()
        ax.set_title("loss", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        for key, values in self.losses.items():
            ax.plot(self.steps, values, label=_LOSS_LABELS.get(key, key), lw=1.5 if key == "loss" else 0.8)
        if self.losses:
            ax.legend(fontsize=6, loc="upper right")
        ax = self.ap_ax
        ax.clear()
        ax.set_title("validation", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylim(0, 1)
        for key, values in self.ap.items():
            ax.plot(self.epochs, values, marker="o", label=key)
        if self.ap:
            ax.legend(fontsize=6, loc="upper left")
        for ax in (self.loss_ax, self.ap_ax):
            ax.tick_params(labelsize=7)
        self.draw()  # now, not draw_idle: its unparented timer could fire after the dock is closed
