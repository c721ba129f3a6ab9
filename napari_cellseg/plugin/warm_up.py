"""Imports warmed off the GUI thread once the dock is on screen, so that no click pays for them; then
the objects they made are frozen out of the garbage collector's sweeps.

With torch imported the process holds about 455,000 objects: one full collection walks them all
(0.7 s with one core busy) with the GIL held, so the GUI froze whenever one fell, in the GUI thread
or in a worker (adding a Labels layer: 514 ms, of which the collection 265 ms, even before torch).
``gc.freeze`` moves every object alive then out of the sweeps; modules and classes live for the
whole session anyway. A layer that was already open is the exception: its memory would never be
reclaimed once removed, so removing one unfreezes, collects once, and freezes again.
"""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Callable

from qtpy.QtCore import QTimer

from .session import unwrapped
from ..torch_libs import preload

log = logging.getLogger("napari_cellseg")


WARM_MODULES = ("pandas", "napari.layers.labels", "skimage.color.colorconv", "napari_cellseg.inference.postprocess",
                "napari_cellseg.io.channels", "napari_cellseg.model.checkpoint", "napari_cellseg.inference.predict",
                "napari_cellseg.io.coco", "napari_cellseg.training.config", "napari_cellseg.training.sample_writer",
                "matplotlib.backends.backend_agg")
"""Imported off the GUI thread when the dock opens: napari's first Labels layer imported pandas for its
features table in the GUI thread (0.7 s on a busy CPU) and scikit-image's colour module for its colours
(0.22 s), and drew vispy's dash patterns (0.22 s; cached once computed, so the warm-up draws them);
the first run the model's modules, Start and Add-to-training-set torch (the dock itself imports none:
3.0 s when the Train tab did), the Train tab's plot matplotlib (drawn in its own thread)."""
_warmed: list[threading.Thread] = []
_viewers: weakref.WeakSet = weakref.WeakSet()
_frozen_layers: set[int] = set()  # ids of the layers open at the freeze (alive until removed)
_refreeze_due: list[bool] = []
REFREEZE_DELAY_MS = 500
_dock_drawn = threading.Event()
WARM_UP_WAIT_S = 2.0  # longest the warm-up waits for the dock's first drawing (``dock_drawn``)


def warm_up(viewer=None) -> threading.Thread:
    """Import ``WARM_MODULES`` and set up napari's unit registry (1.2 s at the first layer) in a
    background thread, once per process; the GUI thread meets them ready (or waits on the import
    lock, as it would have anyway). The imports start once the dock has been drawn (or after
    ``WARM_UP_WAIT_S``): importing beside the dock's construction took the GIL from it, and adding
    the dock stalled the GUI thread 0.54-0.59 s instead of 0.12 s (idle machine, bench_gui_stalls.py).
    Then freezes what exists (module docstring); ``viewer``'s layers open at that moment are watched."""
    viewer = unwrapped(viewer)
    if viewer is not None and viewer not in _viewers:
        _viewers.add(viewer)
        viewer.layers.events.removed.connect(_on_removed)
    if not _warmed:
        def work() -> None:
            import importlib

            _dock_drawn.wait(WARM_UP_WAIT_S)
            try:
                import pint

                preload()  # torch's libraries load without the GIL: the import's stall 0.45 -> 0.13 s
                _ = pint.get_application_registry().pixel  # the lazy registry is built on first use
                for name in WARM_MODULES:
                    importlib.import_module(name)
                importlib.import_module("vispy.visuals.line.dash_atlas").DashAtlas()  # vispy caches its patterns
            except Exception:  # a warm-up never breaks the dock: the GUI thread imports what is missing
                log.debug("warm-up import failed", exc_info=True)
            _freeze()

        _warmed.append(threading.Thread(target=work, name="cellseg-warm-up", daemon=True))
        _warmed[0].start()
    return _warmed[0]


def _freeze() -> None:
    _frozen_layers.update(id(layer) for viewer in list(_viewers) for layer in list(viewer.layers))
    gc.freeze()


def _on_removed(event) -> None:
    """A layer open at the freeze was removed: collect it (one full sweep), then freeze again; once
    napari has let go of it (its controls are deleted later), and once for several removals."""
    layer = unwrapped(event.value)
    if id(layer) in _frozen_layers:
        _frozen_layers.discard(id(layer))
        if not _refreeze_due:
            _refreeze_due.append(True)
            QTimer.singleShot(REFREEZE_DELAY_MS, _refreeze)


def _refreeze() -> None:
    _refreeze_due.clear()
    gc.unfreeze()
    gc.collect()
    _freeze()


def dock_drawn() -> None:
    """The dock is on screen: the warm-up may start importing."""
    _dock_drawn.set()


def when_warm(widget, callback: Callable[[], None]) -> None:
    """Call ``callback`` in the GUI thread once ``warm_up`` has finished (at once if it has): what
    needs torch (the CUDA question) waits for it instead of importing it in the GUI thread."""
    thread = warm_up()
    if not thread.is_alive():
        callback()
        return
    timer = QTimer(widget.native)

    def check() -> None:
        if not thread.is_alive():
            timer.stop()
            callback()

    timer.timeout.connect(check)
    timer.start(50)
