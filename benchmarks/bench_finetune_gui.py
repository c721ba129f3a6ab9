"""The Fine-tune tab's loop in a real viewer: how long the GUI thread is ever blocked.

Opens a sample image, segments it with the built-in model, adds it (corrected: one cell deleted) to
a training set, fine-tunes with real background workers, and lets Segment segment it again; a 10 ms
QTimer runs throughout and the longest gap between its ticks is the longest stall a user would feel.
Run under a display: xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/bench_finetune_gui.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_cellseg.plugin import segment_widget
    from napari_cellseg.plugin.session import Device

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    viewer.open_sample("napari-cellseg", "brightfield")
    _, main = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
    main.segment.device.value = main.train.device.value = Device.cpu
    app = QApplication.instance()
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    stalls: dict[str, float] = {}

    def wait(phase: str, busy) -> None:
        start = len(ticks)
        while busy():
            app.processEvents()
            time.sleep(0.002)
        app.processEvents()
        gaps = [b - a for a, b in zip(ticks[start:], ticks[start + 1:])]
        stalls[phase] = max(gaps, default=0.0) * 1000

    main.segment.image.value = viewer.layers[0]
    main.segment.start()
    wait("segment (worker)", lambda: main.segment._worker is not None)
    layer = main.segment.current.layers[1]
    data = layer.data.copy()
    data[data == data.max()] = 0
    layer.data = data
    main.finetune.folder.value = Path(tempfile.mkdtemp(prefix="cellseg-corrected-"))
    before = len(ticks)
    tick = time.perf_counter()
    main.finetune.add_button.clicked()  # runs in the GUI thread: its own time is the stall
    app.processEvents()
    stalls["add to training set (GUI thread)"] = (time.perf_counter() - tick) * 1000
    segment_widget.ask_discard = lambda *a, **k: True
    main.finetune.steps.value = args.steps
    main.finetune.tune_button.clicked()
    wait("fine-tune (worker)", lambda: main.train._worker is not None)
    wait("segment again (worker)", lambda: main.segment._worker is not None)
    result = {"longest_stall_ms": {k: round(v, 1) for k, v in stalls.items()}, "ticks": len(ticks) - before,
              "status": main.finetune.status.value}
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    viewer.close()


if __name__ == "__main__":
    main()
