"""Screenshot for the README at 1366 x 768: sample -> model -> segmentation in the one-dock plugin.

Run under a virtual display of a laptop's size with real rendering (xcb, not offscreen):

    xvfb-run -a -s "-screen 0 1366x768x24" python scripts/screenshot.py [--checkpoint runs/x/best.pt] [--tabs DIR]

It segments a sample image with the built-in ``nuclei`` model (the Segment tab's first choice);
``--checkpoint`` segments with another model, ``--steps N`` first trains the light model for N steps
through the Train tab (live plot). ``--finetune DIR`` then shoots the human-in-the-loop steps: a
corrected image added to a training set, fine-tuning in the Train tab, the image segmented again.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")  # offscreen has no OpenGL: napari would draw black


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained model (.pt); default: train a few steps now")
    parser.add_argument("--out", default="docs/screenshot.png")
    parser.add_argument("--steps", type=int, default=0, help="first train this many steps in the Train tab")
    parser.add_argument("--sample", default="fluorescence", choices=["fluorescence", "brightfield"])
    parser.add_argument("--score", type=float, default=0.5, help="confidence slider value to show")
    parser.add_argument("--tabs", help="also save one screenshot per tab (and the light theme) in this folder")
    parser.add_argument("--size", default="1366x768", help="window size, WIDTHxHEIGHT")
    parser.add_argument("--finetune", help="also shoot the correct, add, fine-tune, re-segment loop into this folder")
    args = parser.parse_args(argv)

    import napari
    import numpy as np
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    from napari_cellseg.plugin.train_widget import Amp, Device
    from napari_cellseg.sample_data import SAMPLE_DATASET

    viewer = napari.Viewer(title="napari-cellseg", show=True)
    window = viewer.window._qt_window
    window.resize(*(int(n) for n in args.size.split("x")))
    viewer.open_sample("napari-cellseg", args.sample)
    image, truth = viewer.layers[0], viewer.layers[1]
    _, main = viewer.window.add_plugin_dock_widget("napari-cellseg", "Cell segmentation")
    train, segment, export = main.train, main.segment, main.export
    for widget in (train, segment, export):
        widget.synchronous = True  # a script: wait for each step
    app = QApplication.instance()

    train.dataset.value = SAMPLE_DATASET
    if args.steps > 0:
        train.out_dir.value = Path(tempfile.mkdtemp(prefix="cellseg-screenshot-"))
        train.arch.value, train.epochs.value, train.max_steps.value = "resnet18", 1000, max(1, args.steps)
        train.batch_size.value, train.crop_size.value, train.val_limit.value = 2, 128, 1
        train.lr.value, train.device.value, train.amp.value = 1e-3, Device.auto, Amp.auto
        train.start_training()
        if train.done is None or train.done.last is None:
            print("training failed", file=sys.stderr)
            return 1
    if args.checkpoint:
        segment.checkpoint.value = Path(args.checkpoint).resolve()
    segment.image.value = image
    segment.start()
    if segment.current is None:
        print("segmentation failed", file=sys.stderr)
        return 1
    segment.score.value = args.score
    truth.visible = False
    image.contrast_limits = (0, float(np.percentile(image.data, 99.8)))  # dim fluorescence: brighten
    export.evaluate()  # against the sample's own ground truth: fills the AP table
    viewer.layers.selection.active = segment.current.layers[1]
    for toast in window.findChildren(NapariQtNotification):
        toast.close()  # e.g. the PyQt5 deprecation notice

    def settle() -> None:
        import time

        for _ in range(20):
            app.processEvents()
        end = time.monotonic() + 10  # the plot is drawn in its own thread (plugin.plot)
        while train.plot.isVisible() and not train.plot.idle and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    main.show_tab("Segment")
    settle()
    viewer.reset_view()  # once the docks have settled the canvas size
    settle()
    hint, canvas = window.minimumSizeHint(), viewer.window._qt_viewer.canvas.native.width()
    print(f"window {window.width()} x {window.height()}, minimum {hint.width()} x {hint.height()}, "
          f"canvas {canvas} px wide")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False, flash=False)  # composites the OpenGL canvas
    print(f"saved {out} ({segment.status.value})")
    if args.tabs:
        folder = Path(args.tabs)
        folder.mkdir(parents=True, exist_ok=True)
        shots = [("Train", "dark"), ("Segment", "dark"), ("Export", "dark"), ("Train", "light")]
        for tab, theme in shots:
            viewer.theme = theme
            main.show_tab(tab)
            train.show_advanced.value = tab == "Train" and theme == "light"  # the folded options, unfolded
            settle()
            path = folder / f"{tab.split()[0].lower()}-{theme}.png"
            viewer.screenshot(str(path), canvas_only=False, flash=False)
            print(f"saved {path}")
        train.show_advanced.value = False
        bar = main.tabs.currentWidget().verticalScrollBar()  # the Train tab, scrolled to its plot
        settle()
        bar.setValue(bar.maximum())
        settle()
        viewer.screenshot(str(folder / "train-plot-light.png"), canvas_only=False, flash=False)
        print(f"saved {folder / 'train-plot-light.png'}")
    if args.finetune:
        shoot_finetune(viewer, main, Path(args.finetune), settle)
    viewer.close()
    return 0


def shoot_finetune(viewer, main, folder: Path, settle) -> None:
    """The Fine-tune tab's loop as a user goes through it, one screenshot a step."""
    from napari_cellseg.plugin import segment_widget

    folder.mkdir(parents=True, exist_ok=True)
    viewer.theme = "dark"
    segment, tune = main.segment, main.finetune
    layer = segment.current.layers[1]
    corrected = layer.data.copy()
    corrected[corrected == corrected.max()] = 0  # the user deletes a doubtful cell ...
    layer.data = corrected
    tune.folder.value = Path(tempfile.mkdtemp(prefix="cellseg-corrected-"))
    tune.steps.value = 20
    tune.add_button.clicked()
    main.show_tab("Fine-tune")
    settle()
    viewer.screenshot(str(folder / "1-added.png"), canvas_only=False, flash=False)
    segment_widget.ask_discard = lambda *a, **k: True  # the re-run replaces the saved, corrected layers
    tune.fine_tune()  # the Train tab runs it (synchronously here), then Segment segments again
    main.show_tab("Train")
    settle()
    viewer.screenshot(str(folder / "2-fine-tuned.png"), canvas_only=False, flash=False)
    main.show_tab("Fine-tune")
    settle()
    viewer.screenshot(str(folder / "3-resegmented.png"), canvas_only=False, flash=False)
    print(f"saved {folder}/1-added.png, 2-fine-tuned.png, 3-resegmented.png ({tune.status.value})")


if __name__ == "__main__":
    raise SystemExit(main())
