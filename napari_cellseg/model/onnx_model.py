"""The whole detector as ONNX: export it, check it with onnxruntime, and run it in its place.

Why the ONNX graph ends where ``CellMaskRCNN.detect`` ends (boxes, classes, scores and 28 x 28
mask probabilities, not full-size masks): pasting every mask into a full-size image is what makes
torchvision's output 14 GB on large images; the paste, the thresholds and the tiling stay in
``inference``/``postprocess``, shared with the torch model, so both give the same label images.
The graph takes any image size: ``image`` is a float ``3 x H x W`` in 0..1 (``images.to_tensor``);
normalisation, the resize by ``image_scale``, the RPN, NMS and the heads are all inside.

``OnnxModel`` stands in for the torch model wherever the pipeline takes one (``detect``, and the
few attributes ``inference`` and ``pipeline`` read); ``checkpoint.load_model`` returns it for a
``.onnx`` file, so ``predict``, ``export`` and ``segment`` accept one. onnxruntime is the optional
extra ``onnx`` (``pip install napari-cellseg[onnx]``); exporting needs the ``onnx`` package too.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .._torch import torch
from ..atomic import atomic_path
from ..errors import CheckpointError
from .network import CellMaskRCNN, ModelConfig

OPSET = 17
OUTPUTS = ("boxes", "labels", "scores", "masks")
CHECK_SHAPES = ((3, 64, 80), (3, 96, 72))
"""Image sizes the exported graph is checked on: two, so a size frozen into the graph shows."""


class Detector(torch.nn.Module):
    """``detect`` of one image as a plain forward (what the exporter traces)."""

    def __init__(self, model: CellMaskRCNN) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        det = self.model.detect([image])[0]
        return tuple(det[name] for name in OUTPUTS)


def export_onnx(model: CellMaskRCNN, config: ModelConfig, path: str | Path, *, check: bool = True) -> Path:
    """Write ``model`` as ONNX to ``path`` (class names and configuration in its metadata); with
    ``check`` run it in onnxruntime on two image sizes and refuse a graph that disagrees with torch."""
    _require("onnx", "exporting to ONNX")
    import onnx

    path = Path(path)
    detector = Detector(model.cpu().eval()).eval()
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on constants; check_onnx tests two image sizes instead
        torch.onnx.export(
            detector, (torch.rand(*CHECK_SHAPES[0]),), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=["image"], output_names=list(OUTPUTS),
            dynamic_axes={"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in OUTPUTS}},
        )
        graph = onnx.load(str(tmp))
        meta = {"napari_cellseg_config": json.dumps(config.to_dict()), "class_names": json.dumps(config.class_names)}
        for key, value in meta.items():
            graph.metadata_props.add(key=key, value=value)
        graph.doc_string = ("napari-cellseg Mask R-CNN: image 3xHxW float 0..1 -> boxes xyxy, labels, scores, "
                            "masks 28x28")
        onnx.save(graph, str(tmp))
        if check:
            check_onnx(tmp, detector)
    return path


def check_onnx(path: str | Path, detector: torch.nn.Module, tolerance: float = 1e-3) -> None:
    """Run the graph in onnxruntime and torch on random images of ``CHECK_SHAPES``; raise when the
    detections differ (count, classes, or boxes, scores and mask probabilities beyond ``tolerance``)."""
    session = OnnxModel(path).session
    generator = torch.Generator().manual_seed(0)
    for shape in CHECK_SHAPES:
        image = torch.rand(*shape, generator=generator)
        with torch.no_grad():
            expected = [t.numpy() for t in detector(image)]
        got = session.run(list(OUTPUTS), {"image": image.numpy()})
        for name, want, have in zip(OUTPUTS, expected, got):
            if want.shape != have.shape or (want.size and np.abs(want.astype(np.float64) - have).max() > tolerance):
                raise CheckpointError(f"the ONNX model disagrees with torch on its {name} for a {shape} image")


class OnnxModel(torch.nn.Module):
    """An exported ``.onnx`` detector run by onnxruntime, used where a ``CellMaskRCNN`` is.

    It holds no weights of its own; a buffer with the file's sha256 gives it an identity, so
    ``checkpoint.weights_digest`` (which keeps an export from resuming with another model) tells
    two ONNX files apart.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        _require("onnxruntime", "running a .onnx model")
        import onnxruntime

        path = Path(path)
        data = path.read_bytes()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # onnxruntime's warnings about unused initialisers are noise here
        try:
            self.session = onnxruntime.InferenceSession(data, options, providers=_providers(onnxruntime))
        except Exception as exc:  # onnxruntime raises its own kinds for damaged or foreign files
            raise CheckpointError(f"{path}: not a usable ONNX model: {str(exc).splitlines()[0]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "napari_cellseg_config" not in meta:
            raise CheckpointError(f"{path}: not an ONNX model exported by napari-cellseg (no configuration in it)")
        try:
            self.config = ModelConfig.from_dict(json.loads(meta["napari_cellseg_config"]))
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path} has an unusable model configuration: {exc}") from None
        digest = bytearray(hashlib.sha256(data).digest())
        self.register_buffer("file_sha256", torch.frombuffer(digest, dtype=torch.uint8))
        # what inference and pipeline read from a torch model: its class count and detection cap
        self.roi_heads = SimpleNamespace(
            box_predictor=SimpleNamespace(cls_score=SimpleNamespace(out_features=self.config.num_classes)),
            detections_per_img=self.config.detections_per_img,
        )

    def detect(
        self, images: list[torch.Tensor], keep: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """``CellMaskRCNN.detect`` through onnxruntime (``keep`` filters after the mask head)."""
        results = []
        for image in images:
            outputs = self.session.run(list(OUTPUTS), {"image": image.detach().float().cpu().numpy()})
            det = {name: torch.from_numpy(np.ascontiguousarray(out)) for name, out in zip(OUTPUTS, outputs)}
            if keep is not None:
                sel = keep(det["boxes"]).cpu()
                det = {name: value[sel] for name, value in det.items()}
            results.append(det)
        return results


def load_onnx(path: str | Path, device: str | torch.device = "cpu") -> tuple[OnnxModel, ModelConfig]:
    """``checkpoint.load_model`` for a ``.onnx`` file (onnxruntime picks CUDA when it has it)."""
    model = OnnxModel(path)
    return model.to(device).eval(), model.config


def _providers(onnxruntime) -> list[str]:
    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise CheckpointError(f"{what} needs the {module} package: pip install 'napari-cellseg[onnx]'")


__all__ = ["OPSET", "OUTPUTS", "export_onnx", "check_onnx", "OnnxModel", "load_onnx"]
