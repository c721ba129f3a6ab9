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
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import StallRecorder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--why", action="store_true", help="sample the GUI thread's stack during each stall")
    args = p.parse_args()

    import napari

    from napari_cellseg.plugin import segment_widget
    from napari_cellseg.plugin.session import Device

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    viewer.open_sample("napari-cellseg", "brightfield")
    _, main = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
    main.segment.device.value = main.train.device.value = Device.cpu
    rec = StallRecorder(why=args.why)
    before = len(rec.ticks)

    main.segment.image.value = viewer.layers[0]
    start = rec.mark()
    main.segment.start()
    rec.wait("segment (worker)", lambda: main.segment._worker is not None, start)
    layer = main.segment.current.layers[1]
    data = layer.data.copy()
    data[data == data.max()] = 0
    layer.data = data
    main.finetune.folder.value = Path(tempfile.mkdtemp(prefix="cellseg-corrected-"))
    rec.timed("add to training set (GUI thread)", main.finetune.add_button.clicked)
    segment_widget.ask_discard = lambda *a, **k: True
    main.finetune.steps.value = args.steps
    start = rec.mark()
    main.finetune.tune_button.clicked()
    rec.wait("fine-tune (worker)", lambda: main.train._worker is not None, start)
    start = rec.mark()
    rec.wait("segment again (worker)", lambda: main.segment._worker is not None, start)
    result = {**rec.figures(), "ticks": len(rec.ticks) - before, "status": main.finetune.status.value}
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    viewer.close()

if __name__ == "__main__":
    main()
