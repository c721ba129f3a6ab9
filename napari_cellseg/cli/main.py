"""``napari-cellseg``: the headless twin of every widget, for scripts, clusters and torchrun.

Bad input ends in one line on stderr and a non-zero exit, never a traceback
(set NAPARI_CELLSEG_DEBUG=1 to see one).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from ..defaults import DETECTOR_SCORE_FLOOR, MASK_THRESH, SCORE_THRESH, TILE_SIZE
from ..errors import CellsegError

PROG = "napari-cellseg"


class _DefaultsHelp(argparse.HelpFormatter):
    """``--help`` says each option's default, so nobody trains resnet50_v2 at 512 px on a CPU unawares;
    options without a default (None, off) are left as they are."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        quiet = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if quiet or "%(default)" in text or "default:" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".strip()


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line as well (argparse would print the whole usage block first);
    the exit status stays argparse's 2, which tells a usage error from a failed run (1).
    Every subcommand's parser is one too (argparse makes them of the parent's class), so all
    show their defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _DefaultsHelp)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _number_between(low: float, high: float, unit: str = ""):
    """An argparse type: a number from ``low`` to ``high`` (``unit`` names what it counts)."""
    of_unit, in_unit = (f" of {unit}", f" {unit}") if unit else ("", "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number{of_unit}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}{in_unit}, got {text}")
        return value

    return parse


_fraction = _number_between(0.0, 1.0)
_diameter = _number_between(1, 2000, "pixels")


def _formats(text: str) -> tuple[str, ...]:
    from ..export.cells import parse_formats

    try:
        return parse_formats(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _scale(text: str) -> float | str:
    from ..inference.scale import parse_scale

    try:
        return parse_scale(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _channel(text: str):
    from ..io.channels import parse_channel
    from ..errors import DatasetError

    try:
        return parse_channel(text)
    except DatasetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_inference_options(p: argparse.ArgumentParser, labels: bool) -> None:
    """``labels``: the outputs are label images, whose confidence defaults to the model's tuned one;
    a COCO submission (export) is ranked by AP, which counts low-confidence detections too."""
    floor = f"the detector itself drops those below {DETECTOR_SCORE_FLOOR:g}"
    if labels:
        p.add_argument("--score-thresh", type=_fraction, default=None,
                       help=f"keep instances at least this confident (default: the model's tuned confidence, "
                            f"see tune; else {SCORE_THRESH:g}; {floor})")
    else:
        p.add_argument("--score-thresh", type=_fraction, default=SCORE_THRESH,
                       help=f"keep instances at least this confident ({floor}; COCO AP counts low-confidence "
                            f"detections too: 0.05 gives the highest)")
    p.add_argument("--mask-thresh", type=_fraction, default=MASK_THRESH, help="mask probability that counts as cell")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto: cuda, then mps, then cpu")
    p.add_argument("--tile-size", type=_positive_int, default=TILE_SIZE, help="larger images are segmented in tiles")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: also segment the image mirrored left-right, up-down and both, "
                        "and 1.4x larger, and merge the five views (about 4.5 times the time, more AP)")
    p.add_argument("--channel", type=_channel, default=None, metavar="N|merged",
                   help="of a multi-channel image, segment channel N (1-based, e.g. the nuclear stain) or "
                        "'merged' (every channel stretched, the brightest kept); default: colour as is, "
                        "of two channels the first")
    p.add_argument("--scale", type=_scale, default="auto",
                   help="resize factor before segmenting; auto (default): measure the nuclei in a first pass and "
                        "bring them to the size the model segments best (no second pass when they already are)")
    p.add_argument("--diameter", type=_diameter, metavar="PX",
                   help="typical nucleus diameter in pixels: sets the scale that brings it to the size the model "
                        "segments best "
                        "(overrides --scale)")


def build_parser() -> argparse.ArgumentParser:
    from ..model.network import ARCHS, WEIGHTS
    from ..model.pretrained import DEFAULT_MODEL

    parser = _Parser(prog=PROG, description="Cell instance segmentation with Mask R-CNN.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or resume) a model on a HW3 dataset folder")
    t.add_argument("dataset", help="folder holding train/ (and optionally val/)")
    t.add_argument("--out", required=True, help="run folder for last.pt and best.pt")
    t.add_argument("--arch", default="resnet50_v2", choices=ARCHS, help="resnet18 is the light model for CPUs")
    t.add_argument("--weights", default="none", choices=WEIGHTS, help="pretrained weights (needs internet)")
    t.add_argument("--epochs", type=_positive_int, default=50, help="passes over the training images")
    t.add_argument("--batch-size", type=_positive_int, default=2, help="images per step")
    t.add_argument("--lr", type=float, default=1e-4, help="learning rate (AdamW)")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto: cuda, then mps, then cpu")
    t.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: where it is faster: CUDA, or CPUs with native bf16)")
    t.add_argument("--resume", help="checkpoint to continue from (last.pt)")
    t.add_argument("--init", metavar="MODEL",
                   help="start a new run from these weights: a built-in model (nuclei) or a checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that already holds last.pt/best.pt, replacing them")
    t.add_argument("--max-steps", type=_positive_int, help="stop after this many steps in all")
    t.add_argument("--workers", type=int, default=0, help="data loading processes")
    t.add_argument("--seed", type=int, default=0, help="random seed (split, crops, augmentation)")
    t.add_argument("--crop-size", type=_positive_int, default=512, help="training crop side in pixels")
    t.add_argument("--val-limit", type=_positive_int, help="validate on at most this many images")
    t.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="stop after this many minutes of training steps, learning-rate schedule fitted to it")
    t.add_argument("--val-every", type=_positive_int, default=1, help="validate every N epochs (and after the last)")
    t.add_argument("--warmup-steps", type=int, default=100, help="steps of linear learning-rate warm-up")
    t.add_argument("--clip-grad", type=float, default=10.0, help="gradient norm clipping")
    t.add_argument("--detections", type=_positive_int,
                   help="detections per image (dense images need more; default: the --init model's, else 200)")
    t.add_argument("--image-scale", type=float, default=1.0, help="resize factor inside the model (1 = none)")
    t.add_argument("--roi-samples", type=_positive_int,
                   help="regions sampled per image to train the heads (128 trains about 2x faster on a CPU; "
                        "default: the --init model's, else 512)")
    t.add_argument("--augment", default="standard", choices=["standard", "strong"],
                   help="strong: zoom 0.5-2x, grey and inverted images (for few images or mixed microscopes)")
    t.add_argument("--zoom", type=_number_between(0.1, 8), nargs=2, metavar=("LOW", "HIGH"),
                   help="zoom training crops by a factor in this range (default: the --augment preset's, "
                        "0.75-1.33 or 0.5-2)")
    t.add_argument("--mosaic", type=_fraction, default=0.0, metavar="SHARE",
                   help="share of training crops made of four crops of different images (nuclei cut by a border "
                        "with another image beyond it, as in mosaics and stitched scans; default 0)")

    p = sub.add_parser("predict", help="segment images into label TIFFs (one per class), ROI sets, GeoJSON, CSV")
    p.add_argument("checkpoint", help="a checkpoint file, a built-in model (nuclei) or a .onnx export")
    p.add_argument("images", help="an image (TIFF, PNG, JPEG; TIFF stacks too) or a folder of them")
    p.add_argument("--out", required=True, help="folder for the outputs (--format): <image>_<class>.tif label images, "
                   "<image>_cells.zip/.geojson/.csv")
    p.add_argument("--link", action="store_true",
                   help="stacks: a cell keeps its id from plane to plane where its masks overlap (IoU >= 0.5)")
    p.add_argument("--format", type=_formats, default=("labels",), metavar="LIST",
                   help="comma list of outputs per image: labels (a label TIFF per class), imagej (Fiji ROI set "
                        "<image>_cells.zip), geojson (QuPath <image>_cells.geojson), csv (a row per cell)")
    _add_inference_options(p, labels=True)

    e = sub.add_parser("export", help="segment test_release/ and write the COCO submission JSON")
    e.add_argument("checkpoint", help="a checkpoint file, a built-in model (nuclei) or a .onnx export")
    e.add_argument("dataset", help="HW3 root (test_release/ + mapping), a folder of samples, or of TIFFs")
    e.add_argument("--out", required=True, help="results JSON, e.g. test-results.json")
    e.add_argument("--mapping", help="image name -> id file (default: the dataset's test_image_name_to_ids.json)")
    e.add_argument("--restart", action="store_true", help="ignore the partial results of an interrupted export")
    e.add_argument("--allow-missing", action="store_true",
                   help="export even when images listed in the mapping file are missing (they get no results)")
    _add_inference_options(e, labels=False)

    u = sub.add_parser("tune", help="choose a model's confidence on ground-truth samples (best TP/(TP+FP+FN))")
    u.add_argument("checkpoint", help="a checkpoint file or a built-in model (nuclei)")
    u.add_argument("samples", help="a folder of samples with classK.tif (e.g. dataset/val), or a dataset with val/")
    u.add_argument("--out", required=True, help="the tuned checkpoint to write (a copy: the input is kept)")
    u.add_argument("--limit", type=_positive_int, help="tune on the first N samples only")
    u.add_argument("--mask-thresh", type=_fraction, default=MASK_THRESH, help="mask probability that counts as cell")
    u.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto: cuda, then mps, then cpu")
    u.add_argument("--tile-size", type=_positive_int, default=TILE_SIZE, help="larger images are segmented in tiles")
    u.add_argument("--tta", action="store_true", help="tune for segmenting with --tta")
    u.add_argument("--scale", type=_scale, default="auto", help="as predict's --scale")

    v = sub.add_parser("evaluate", help="COCO mask AP of a results JSON against ground-truth samples")
    v.add_argument("results")
    v.add_argument("ground_truth", help="folder of samples with classK.tif (e.g. dataset/val)")
    v.add_argument("--max-dets", type=_positive_int, default=1000, help="detections per image evaluated")
    v.add_argument("--class-agnostic", action="store_true",
                   help="merge every class into one: score finding the cells, not naming their class")
    v.add_argument("--mapping", help="image name -> id file the results were numbered with (default: the "
                   "samples numbered 1..n by name, as export writes them)")
    v.add_argument("--score-thresh", type=_fraction, default=SCORE_THRESH,
                   help="confidence for TP/(TP+FP+FN), precision, recall, F1 and PQ (COCO AP uses every result)")

    d = sub.add_parser("demo", help="segment the shipped sample data with the built-in model, export and evaluate")
    d.add_argument("--out", default="cellseg-demo",
                   help="folder for the JSON files and the fine-tuned run (new or empty, or an earlier demo's)")
    d.add_argument("--model", default=DEFAULT_MODEL, help="built-in model name or checkpoint")
    d.add_argument("--fine-tune", type=_positive_int, metavar="STEPS",
                   help="then fine-tune the model this many steps on the sample train images and score again")
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="auto: cuda, then mps, then cpu")

    m = sub.add_parser("export-model", help="save a model for other tools: ONNX or a bioimage.io package")
    m.add_argument("checkpoint", help="a checkpoint file or a built-in model (nuclei)")
    m.add_argument("--format", required=True, choices=["onnx", "bioimageio"],
                   help="onnx: the whole detector for any image size (needs the 'onnx' extra); bioimageio: a "
                        "model package folder with the ONNX weights (needs the 'bioimageio' extra)")
    m.add_argument("--out", required=True, help="the .onnx file, or the (new or empty) package folder")
    m.add_argument("--licence", default="BSD-3-Clause", help="bioimageio: the weights' SPDX licence")

    sub.add_parser("models", help="list the built-in models, what they were trained on and their accuracy")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from . import commands, model_commands

        from ..errors import DetectionCapWarning

        with warnings.catch_warnings():
            warnings.simplefilter("always", DetectionCapWarning)  # one line per image that lost cells
            warnings.showwarning = _warning_line
            name = args.command.replace("-", "_")
            return getattr(model_commands if name in model_commands.__all__ else commands, name)(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CellsegError, ValueError, OSError) as exc:
        if os.environ.get("NAPARI_CELLSEG_DEBUG"):
            raise
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings (cells lost to the detection cap) as one line, like the errors."""
    from ..errors import DetectionCapWarning

    if issubclass(category, DetectionCapWarning):
        print(f"{PROG}: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
