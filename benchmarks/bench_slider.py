"""Slider latency end to end: value change -> Labels layers' data set -> the canvas repainted.

Run by hand under a display (``xvfb-run -s "-screen 0 1366x768x24" python benchmarks/bench_slider.py``):
napari's window at 1366 x 768 with the Segment dock, a 1000 x 1000 image with 300 synthetic cell
instances (12-60 px blobs, as ``_common.synthetic_raw``), two classes. Each step moves the
confidence slider to a new value and times

- ``set``: from ``slider.value = v`` to the layers holding the new labels (the widget's work:
  ``to_labels`` + updating the layers), and
- ``paint``: on to the end of the vispy canvas's next draw event (``QApplication.processEvents``
  until the canvas's ``draw`` event has fired), i.e. what the user waits for.

The drag coalescing timer is switched off (``slider_delay_ms = 0``) so every value is drawn; a
real drag draws fewer. ``--profile`` prints where the time of the ``set`` part goes. Ends with
one JSON line holding every figure.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import time

import numpy as np

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import synthetic_raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="image height and width")
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--steps", type=int, default=40, help="slider moves timed (after 5 warm-up moves)")
    parser.add_argument("--profile", action="store_true", help="profile the 'set' part of the moves")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_cellseg.plugin.session import ImageResult
    from napari_cellseg.plugin.segment_widget import SegmentWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    image = viewer.add_image(np.random.default_rng(1).integers(0, 255, (args.size, args.size), dtype=np.uint8))
    raw = synthetic_raw((args.size, args.size), args.instances)
    widget.slider_delay_ms = 0
    widget._show(ImageResult(None, raw, ["class1", "class2"]), image_layer=image)
    app = QApplication.instance()
    while widget._placing is not None:  # one class layer per event-loop turn
        app.processEvents()
    for _ in range(20):
        app.processEvents()
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    draws: list[float] = []
    canvas.events.draw.connect(lambda _event: draws.append(time.perf_counter()), position="last")

    values = [0.2 + 0.6 * ((i * 7) % 23) / 22 for i in range(args.steps + 5)]  # jumps both ways
    set_ms, paint_ms, cpu_ms = [], [], []
    profiler = cProfile.Profile() if args.profile else None
    for i, value in enumerate(values):
        before = len(draws)
        c0, t0 = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        widget.score.value = round(value, 2) if round(value, 2) != widget.score.value else round(value, 2) + 0.01
        if profiler is not None:
            profiler.disable()
        t1 = time.perf_counter()
        deadline = t1 + 5
        while len(draws) == before and time.perf_counter() < deadline:
            app.processEvents()
        c1 = time.process_time()
        if len(draws) == before:
            raise SystemExit("the canvas never redrew: is a display attached?")
        if i >= 5:
            set_ms.append((t1 - t0) * 1000)
            paint_ms.append((draws[-1] - t0) * 1000)
            cpu_ms.append((c1 - c0) * 1000)
    figures = {
        "image": f"{args.size}x{args.size}", "instances": args.instances, "steps": args.steps,
        "set_median_ms": statistics.median(set_ms), "end_to_end_median_ms": statistics.median(paint_ms),
        "end_to_end_p90_ms": sorted(paint_ms)[int(0.9 * len(paint_ms))], "end_to_end_max_ms": max(paint_ms),
        "end_to_end_cpu_median_ms": statistics.median(cpu_ms), "load_average_1min": os.getloadavg()[0],
    }
    print(f"slider move on {figures['image']} with {args.instances} instances, {args.steps} moves:")
    print(f"  layers updated      median {figures['set_median_ms']:.1f} ms")
    print(f"  canvas repainted    median {figures['end_to_end_median_ms']:.1f} ms, "
          f"p90 {figures['end_to_end_p90_ms']:.1f} ms, max {figures['end_to_end_max_ms']:.1f} ms")
    print(f"  CPU time of the process for a move, to the repaint: median {figures['end_to_end_cpu_median_ms']:.1f} ms "
          f"(wall time counts waits for the CPU too: load average {figures['load_average_1min']:.1f})")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    print(json.dumps(figures))
    viewer.close()


if __name__ == "__main__":
    main()
