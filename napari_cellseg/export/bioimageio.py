"""A bioimage.io model package: the ONNX detector with its description, test data, cover and docs.

Why ONNX weights: the package must run without this library, and the ONNX graph is the whole
detector (``onnx_model``). Mask R-CNN's outputs are detections, not an image, so the package
states its post-processing in ``README.md`` and in ``config.napari_cellseg`` (paste each 28 x 28
mask into its box, threshold, paint by score): tools that only run the weights get boxes, classes,
scores and mask probabilities; this library (``predict MODEL.onnx``) does the rest.
The package is checked with ``bioimageio.spec`` (the optional extra ``bioimageio``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._torch import torch
from ..errors import OutputError
from ..model.network import CellMaskRCNN, ModelConfig
from ..model.onnx_model import OPSET, OUTPUTS, Detector, export_onnx

TEST_SHAPE = (3, 128, 128)
CITATIONS = (
    ("He K, Gkioxari G, Dollar P, Girshick R. Mask R-CNN. ICCV 2017", "10.1109/ICCV.2017.322"),
    ("Caicedo JC et al. Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl. "
     "Nature Methods 2019", "10.1038/s41592-019-0612-7"),
)


def export_bioimageio(
    model: CellMaskRCNN, config: ModelConfig, name: str, folder: str | os.PathLike, *,
    image: np.ndarray | None = None, description: str = "", licence: str = "BSD-3-Clause",
) -> Path:
    """Write the package into ``folder`` (new or empty) and validate it; returns ``rdf.yaml``.
    ``image`` (``H x W x 3`` uint8) is the test input, e.g. a sample image; random without it."""
    from bioimageio.spec import ValidationContext, load_description, save_bioimageio_yaml_only

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputError(f"{folder}: give a new or empty folder for the bioimage.io package")
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(model, config, folder / "model.onnx")
    tensor = _test_input(image)
    np.save(folder / "test_image.npy", tensor)
    with torch.no_grad():
        outputs = [t.numpy() for t in Detector(model.cpu().eval())(torch.from_numpy(tensor))]
    for out_name, value in zip(OUTPUTS, outputs):
        np.save(folder / f"test_{out_name}.npy", value)
    _cover(folder / "cover.png", tensor, outputs, config.image_scale)
    (folder / "README.md").write_text(_readme(name, config), encoding="utf-8")
    with ValidationContext(root=folder, perform_io_checks=True):  # file names relative to the package
        descr = _description(f"napari-cellseg {name}", config,
                             description or f"Mask R-CNN cell instance segmentation ({name})", licence)
    rdf = folder / "rdf.yaml"
    save_bioimageio_yaml_only(descr, rdf)
    with ValidationContext(perform_io_checks=True):
        loaded = load_description(rdf)
    status = loaded.validation_summary.status
    if status not in ("valid-format", "passed"):
        raise OutputError(f"bioimage.io validation failed for {rdf}: {loaded.validation_summary.format()[:2000]}")
    return rdf


def _test_input(image: np.ndarray | None) -> np.ndarray:
    """``3 x H x W`` float32 in 0..1, as the graph takes it."""
    if image is None:
        return np.random.default_rng(0).random(TEST_SHAPE, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(np.asarray(image, np.float32) / 255.0, 2, 0))


def _description(name: str, config: ModelConfig, text: str, licence: str):
    from bioimageio.spec.model import v0_5 as m

    def tensor_data(kind: str):
        return m.IntervalOrRatioDataDescr(type=kind)

    index = m.IndexOutputAxis(size=m.DataDependentSize())
    space = m.ParameterizedSize(min=64, step=32)
    inputs = [m.InputTensorDescr(
        id=m.TensorId("image"), description="RGB image, float 0..1 (grey: the same plane three times)",
        axes=[m.ChannelAxis(channel_names=[m.Identifier(c) for c in ("r", "g", "b")]),
              m.SpaceInputAxis(id=m.AxisId("y"), size=space), m.SpaceInputAxis(id=m.AxisId("x"), size=space)],
        test_tensor=m.FileDescr(source=Path("test_image.npy")), data=tensor_data("float32"))]
    outputs = []
    shapes = {
        "boxes": [index, m.ChannelAxis(id=m.AxisId("coordinate"),
                                       channel_names=[m.Identifier(c) for c in ("x0", "y0", "x1", "y1")])],
        "labels": [index], "scores": [index],
        "masks": [index, m.SpaceOutputAxis(id=m.AxisId("y"), size=28), m.SpaceOutputAxis(id=m.AxisId("x"), size=28)],
    }
    notes = {"boxes": "cell boxes in input pixels (x0, y0, x1, y1)",
             "labels": f"class of each cell: {', '.join(f'{k}={n}' for k, n in enumerate(config.class_names, 1))}",
             "scores": "confidence of each cell", "masks": "28 x 28 mask probabilities inside each box (see README)"}
    for out_name in OUTPUTS:
        outputs.append(m.OutputTensorDescr(
            id=m.TensorId(out_name), description=notes[out_name], axes=shapes[out_name],
            test_tensor=m.FileDescr(source=Path(f"test_{out_name}.npy")),
            data=tensor_data("int64" if out_name == "labels" else "float32")))
    return m.ModelDescr(
        name=name, description=text, authors=[m.Author(name="napari-cellseg contributors")],
        cite=[m.CiteEntry(text=t, doi=m.Doi(doi)) for t, doi in CITATIONS], license=licence,
        documentation=m.FileDescr(source=Path("README.md")), covers=[m.FileDescr(source=Path("cover.png"))],
        inputs=inputs, outputs=outputs,
        tags=["instance-segmentation", "mask-r-cnn", "cells", "nuclei", "onnx", "napari"],
        weights=m.WeightsDescr(onnx=m.OnnxWeightsDescr(source=Path("model.onnx"), opset_version=OPSET)),
        config={"napari_cellseg": {"model_config": config.to_dict(), "postprocessing": POSTPROCESSING}},
    )


POSTPROCESSING = (
    "Paste each 28x28 mask into its box [x0, x1] where training's targets (roi_align, aligned=False) put "
    "it: pixel i (centre at i) takes the mask bilinearly at cell (i + (1 - r) / 2 - x0) / ((x1 - x0) / 28) "
    "- 0.5 (r = 1 / image_scale of the configuration: 1 unless the graph resizes), clamped to the edge "
    "cells, for pixels inside the box only; keep cells with score >= 0.5 and pixels "
    "with probability >= 0.6; paint cells in score order, a pixel going to the first cell that claims it "
    "(no overlaps). napari-cellseg does this "
    "when given model.onnx: napari-cellseg predict model.onnx IMAGES --out DIR."
)


def _readme(name: str, config: ModelConfig) -> str:
    classes = ", ".join(f"{k} = {n}" for k, n in enumerate(config.class_names, 1))
    return f"""# {name}: Mask R-CNN cell instance segmentation (napari-cellseg)

ResNet ({config.arch}) Mask R-CNN exported whole to ONNX (opset {OPSET}): normalisation, the region
proposals, non-maximum suppression and the box and mask heads are inside the graph.

## Input
`image`: float32, 3 x H x W (RGB, values 0..1), any size of at least 64 pixels; a grey image is given
as the same plane three times.

## Outputs (one entry per detected cell)
- `boxes`: N x 4, x0 y0 x1 y1 in input pixels
- `labels`: N classes ({classes})
- `scores`: N confidences (the detector keeps those >= {config.box_score_thresh:g})
- `masks`: N x 28 x 28 mask probabilities, each covering its box

## Post-processing
{POSTPROCESSING}

## Validation
COCO mask AP / AP50 on held-out annotated images: `napari-cellseg export model.onnx VAL_FOLDER --out
results.json` then `napari-cellseg evaluate results.json VAL_FOLDER`.
"""


def _cover(path: Path, tensor: np.ndarray, outputs: list[np.ndarray], image_scale: float) -> None:
    """The test image and its cells side by side (2:1, as bioimage.io asks)."""
    from ..inference.predict import paste_masks, resize_ratio
    from PIL import Image

    from .overlay import draw_outlines
    from ..inference.postprocess import to_labels
    from ..io.raw import RawInstances

    image = (np.moveaxis(tensor, 0, 2) * 255).round().astype(np.uint8)
    boxes, labels, scores, masks = (torch.from_numpy(o) for o in outputs)
    crop_boxes, crops, kept = paste_masks(masks, boxes, image.shape[:2], resize_ratio(image.shape[:2], image_scale))
    raw = RawInstances(crop_boxes, scores.numpy()[kept], labels.numpy()[kept], crops, image.shape[:2])
    painted = sum(to_labels(raw).values()) if len(raw) else np.zeros(image.shape[:2], np.int32)
    Image.fromarray(np.concatenate([image, draw_outlines(image, painted)], axis=1)).save(path)


__all__ = ["export_bioimageio", "POSTPROCESSING"]
