"""The commands about a model itself: ``tune`` its confidence, list the built-in ``models``,
``export-model`` for other tools."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..defaults import SCORE_THRESH
from ..devices import resolve_device
from ..errors import CellsegError
from ..inference.postprocess import model_confidence
from ..inference.scale import model_diameter, target_diameter
from ..io.layout import printable
from ..io.samples import find_samples
from ..model.checkpoint import load_checkpoint, load_model, model_card
from ..model.network import ModelConfig
from ..model.pretrained import builtin_models
from ..sample_data import SAMPLE_DATASET
from .commands import _drain


def tune(args: argparse.Namespace) -> int:
    """The confidence with the best TP/(TP+FP+FN) on ground-truth samples, written into a copy of the
    checkpoint (``inference.tuning``); the figures at 0.5 and at the chosen cut are printed."""
    from ..inference.tuning import iter_tune
    from ..model.checkpoint import save_with_config

    folder = Path(args.samples)
    samples = find_samples(folder / "val" if (folder / "val").is_dir() else folder)[: args.limit]
    model, config = load_model(args.checkpoint, resolve_device(args.device))
    tuning = _drain(iter_tune(model, samples, config.class_names, mask_thresh=args.mask_thresh,
                              tile_size=args.tile_size, tta=args.tta, scale=args.scale), "tune")
    save_with_config(args.checkpoint, args.out, score_thresh=tuning.score_thresh)
    for cut in sorted({model_confidence(model), 0.5, tuning.score_thresh}):
        f = tuning.figures.get(cut)
        if f is not None:
            print(f"confidence {cut:.2f}: TP/(TP+FP+FN) {f['accuracy']:.4f}  precision {f['precision']:.4f}  "
                  f"recall {f['recall']:.4f}  F1 {f['f1']:.4f}  (TP {f['tp']}, FP {f['fp']}, FN {f['fn']})")
    print(f"chosen confidence {tuning.score_thresh:.2f} on {tuning.images} image(s): wrote {args.out}")
    return 0


def models(args: argparse.Namespace) -> int:
    """The built-in models with what they were trained on and their measured accuracy. A damaged
    entry is listed as such and the others still shown; card text is printed escaped (no terminal
    control sequences), as cards come with the weights."""
    found = builtin_models()
    if not found:
        print("no built-in models are installed")
    for name, model in found.items():
        try:
            card = model_card(name)
        except CellsegError as exc:
            print(f"{printable(name)}  (unusable: {printable(exc)})")
            continue
        print(f"{printable(name)}  ({model.path.stat().st_size / 1e6:.1f} MB, {printable(card.get('arch', '?'))}, "
              f"classes: {printable(', '.join(card.get('classes', [])))})")
        for key in ("description", "trained_on", "licence", "recipe"):
            if card.get(key):
                print(f"  {key.replace('_', ' ')}: {printable(card[key])}")
        config = ModelConfig.from_dict(load_checkpoint(name)["config"])
        print(f"  nucleus diameter it was trained at: {model_diameter(config):g} px; segments best at "
              f"{target_diameter(config):.3g} px (--scale auto and --diameter bring nuclei to it)")
        print(f"  confidence its label images start at: {config.score_thresh:g}"
              f"{' (tuned: napari-cellseg tune)' if config.score_thresh != SCORE_THRESH else ''}")
        for split, figures in card.get("metrics", {}).items():
            shown = "  ".join(f"{label} {figures[key]:.3f}" for key, label in
                              (("AP50", "AP50"), ("AP", "AP"), ("accuracy@0.5", "TP/(TP+FP+FN)@0.5"), ("f1", "F1"),
                               ("panoptic_quality", "PQ")) if key in figures)
            if shown:
                print(f"  {printable(split)}: {shown}")
    return 0


def export_model(args: argparse.Namespace) -> int:
    """The model in a format other tools run: ONNX (checked in onnxruntime against torch), or a
    bioimage.io package of it (validated with bioimageio.spec) whose test image is a sample image."""
    model, config = load_model(args.checkpoint, "cpu")
    if args.format == "onnx":
        from ..model.onnx_model import export_onnx

        path = export_onnx(model, config, args.out)
        print(f"wrote {path} (checked in onnxruntime against torch); run it with: napari-cellseg predict {path} IMAGES")
        return 0
    from ..export.bioimageio import export_bioimageio
    from ..io.samples import read_sample

    image, _ = read_sample(find_samples(SAMPLE_DATASET / "val")[0])
    name = Path(str(args.checkpoint)).stem
    rdf = export_bioimageio(model, config, name, args.out, image=image[:image.shape[0] // 32 * 32,
                                                                        :image.shape[1] // 32 * 32],
                            licence=args.licence)
    print(f"wrote the bioimage.io package {rdf.parent} (validated with bioimageio.spec); zip the folder to share it")
    return 0


__all__ = ["tune", "models", "export_model"]
