"""Mask R-CNN for cells: configuration, builders, and a model that autocasts only its backbone.

Why a subclass of torchvision's ``MaskRCNN``:
- bf16 autocast over the whole network breaks box coding on large images (bf16 resolves ~8 px at
  1024 px), so only backbone + FPN run under autocast and the RPN and ROI heads stay in fp32;
- microscopy must not be upscaled 256 -> 800 px as torchvision does for photos: the model resizes
  by a fixed ``image_scale`` (1.0 = never);
- ``detect`` stops before torchvision pastes every mask into a full-size float image (700 cells on
  a 2500 x 2000 image would be 14 GB); ``inference.predict.predict`` pastes them into their boxes only.
"""

from __future__ import annotations

import dataclasses
import math
import urllib.error
from collections import OrderedDict
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from .._torch import torch, torchvision
from ..defaults import ARCHS, DETECTOR_SCORE_FLOOR, SCORE_THRESH
from ..errors import CheckpointError
from ..io.layout import printable, unsafe_character

from torch import nn  # noqa: E402
from torchvision.models.detection import MaskRCNN  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor  # noqa: E402
from torchvision.models.detection.roi_heads import maskrcnn_inference  # noqa: E402
from torchvision.models.detection.rpn import RPNHead  # noqa: E402
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes  # noqa: E402
from torchvision.ops import misc as misc_nn_ops  # noqa: E402


RPN_ANCHORS = 3
"""Anchors per location the region proposal head is built for: one per aspect ratio, no more, no fewer."""

MAX_CLASSES = 100
"""Classes a model may have; a stray ``class1000000.tif`` must not size the network."""

WEIGHTS = ("none", "imagenet", "coco")
"""Pretrained weights: ``none`` (from scratch), ``imagenet`` (backbone), ``coco`` (whole detector)."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; stored in every checkpoint."""

    arch: str = "resnet50_v2"
    class_names: list[str] = field(default_factory=lambda: ["class1", "class2", "class3", "class4"])
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    detections_per_img: int = 200
    box_nms_thresh: float = 0.3
    box_score_thresh: float = DETECTOR_SCORE_FLOOR
    """The detector drops cells below this score itself; the confidence slider works above it."""
    image_scale: float = 1.0
    roi_samples: int = 512
    """RoIs sampled per image to train the box and mask heads; fewer (128) make cheaper steps on a CPU."""
    object_diameter: float = 0.0
    """Median diameter (px) of the training set's objects, which ``scale.py`` brings images to;
    0 = not recorded (``scale.DEFAULT_DIAMETER`` is used)."""
    score_thresh: float = SCORE_THRESH
    """The confidence this model's label images start at (``predict``, the Segment tab's slider):
    ``napari-cellseg tune`` sets it to the one that scored best on images with ground truth."""

    @property
    def num_classes(self) -> int:
        """Classes including background (id 0); class id k is ``class_names[k - 1]``."""
        return len(self.class_names) + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so checkpoints load with ``weights_only=True``."""
        d = dataclasses.asdict(self)
        d["anchor_sizes"] = list(self.anchor_sizes)
        d["aspect_ratios"] = list(self.aspect_ratios)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """The config stored in a checkpoint, validated: a downloaded checkpoint is untrusted input
        (its class names become file names, its numbers sizes), so it is checked once, here."""
        if not isinstance(d, dict):
            raise ValueError(f"the model configuration must be a dictionary, not {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for key in ("anchor_sizes", "aspect_ratios"):
            if key in kwargs:
                if not isinstance(kwargs[key], (list, tuple)):
                    raise ValueError(f"{key} must be a list of numbers")
                kwargs[key] = tuple(kwargs[key])
        if "class_names" in kwargs and isinstance(kwargs["class_names"], tuple):
            kwargs["class_names"] = list(kwargs["class_names"])
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse any value that would crash the model, exhaust memory or name a file elsewhere."""
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        _check_class_names(self.class_names)
        if len(self.anchor_sizes) != 5 or not all(_is_int(v) and 1 <= v <= 4096 for v in self.anchor_sizes):
            raise ValueError("anchor_sizes needs 5 whole sizes between 1 and 4096 pixels, one per FPN level")
        if len(self.aspect_ratios) != RPN_ANCHORS or not all(
                _is_number(v) and 0.01 <= v <= 100 for v in self.aspect_ratios):
            raise ValueError(f"aspect_ratios needs {RPN_ANCHORS} numbers between 0.01 and 100, one per anchor "
                             f"of the region proposal head (got {len(self.aspect_ratios)} values)")
        if not _is_int(self.detections_per_img) or not 1 <= self.detections_per_img <= MAX_DETECTIONS:
            raise ValueError(f"detections per image must be a whole number from 1 to {MAX_DETECTIONS:,}, "
                             f"got {self.detections_per_img!r}")
        for name in ("box_nms_thresh", "box_score_thresh", "score_thresh"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
        if not _is_int(self.roi_samples) or not 16 <= self.roi_samples <= 4096:
            raise ValueError("roi_samples must be between 16 and 4096")
        if not _is_number(self.object_diameter) or not 0 <= self.object_diameter <= 4096:
            raise ValueError(f"object diameter must be between 0 and 4096 pixels, got {self.object_diameter!r}")
        if not _is_number(self.image_scale) or not MIN_IMAGE_SCALE <= self.image_scale <= 8:
            raise ValueError(f"image scale must be between {MIN_IMAGE_SCALE} and 8, got {self.image_scale!r}")


MAX_DETECTIONS = 10_000
"""Detections per image: dense images hold ~1,000 cells; 1e9 would allocate without end."""
MASK_CHUNK = 512  # masks computed at once per image: each holds a few 128 x 14 x 14 maps (4,096: > 1 GB)


def exact_proposals(detections: int) -> int:
    """Region proposals for a detection cap on the exact path: four per detection, at least 1,000."""
    return max(1000, 4 * int(detections))


MAX_PROPOSALS = exact_proposals(MAX_DETECTIONS)
MIN_IMAGE_SCALE = 0.05
"""Smaller factors shrink a tile below what the backbone's 32 px stride can see (0.001 crashed)."""
MAX_CLASS_NAME = 64
MIN_SCALED_SIDE = 64
"""Shortest training crop side after ``image_scale``: the backbone's 32 px stride leaves 2 x 2 cells,
which training batch norm needs (at 1 x 1 with batch 1 it fails)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_class_names(names: Any) -> None:
    """Class names become parts of file names (``<image>_<class>.tif``): each must be a safe, short,
    unique name, never a path (``../x`` in a downloaded checkpoint wrote files outside ``--out``)."""
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError("the model needs a list of at least one class name")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"the model has {len(names)} classes; at most {MAX_CLASSES} are supported")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"class name {name!r} is not a non-empty text")
        if (len(name) > MAX_CLASS_NAME or name in (".", "..") or any(c in name for c in '/\\:')
                or unsafe_character(name) is not None):
            raise ValueError(
                f"class name {printable(name, 80)!r} cannot be part of a file name (it must be at most "
                f"{MAX_CLASS_NAME} characters without / \\ : or control or text-direction characters)"
            )
    if len({n.casefold() for n in names}) != len(names):
        raise ValueError("class names must be unique (their label files would overwrite each other)")


class ScaleTransform(GeneralizedRCNNTransform):
    """Normalise and batch like torchvision, but resize by a fixed factor (1.0: not at all)."""

    def __init__(self, image_scale: float) -> None:
        super().__init__(
            min_size=800, max_size=1333, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]
        )
        self.image_scale = float(image_scale)

    def resize(self, image, target=None):
        if self.image_scale == 1.0:
            return image, target
        h, w = image.shape[-2:]
        if min(h, w) * self.image_scale < 8:  # 0 px crashed inside torch's interpolate
            raise ValueError(
                f"image scale {self.image_scale:g} shrinks a {h} x {w} image below 8 pixels; use a larger image scale"
            )
        image = nn.functional.interpolate(
            image[None], scale_factor=self.image_scale, mode="bilinear", recompute_scale_factor=True,
            align_corners=False,
        )[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
            if "masks" in target:
                masks = target["masks"][:, None].float()
                masks = nn.functional.interpolate(masks, size=image.shape[-2:], mode="nearest")
                target["masks"] = masks[:, 0].byte()
        return image, target


class CellMaskRCNN(MaskRCNN):
    """torchvision's Mask R-CNN with backbone-only autocast and a ``detect`` without pasting."""

    def __init__(self, backbone: nn.Module, image_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(backbone, **kwargs)
        self.transform = ScaleTransform(image_scale)
        self.amp_dtype: torch.dtype | None = None

    def features(self, tensors: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Backbone + FPN, under autocast when ``amp_dtype`` is set; always returns fp32."""
        if self.amp_dtype is None:
            return self.backbone(tensors)
        with torch.autocast(tensors.device.type, dtype=self.amp_dtype):
            feats = self.backbone(tensors)
        return OrderedDict((k, v.float()) for k, v in feats.items())

    def forward(self, images, targets=None):
        """Training: dict of losses. Evaluation: torchvision's output (pasted full-size masks)."""
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch, targets = self.transform(images, targets)
        feats = self.features(batch.tensors)
        proposals, proposal_losses = self.rpn(batch, feats, targets)
        detections, detector_losses = self.roi_heads(feats, proposals, batch.image_sizes, targets)
        if self.training:
            return {**detector_losses, **proposal_losses}
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    @torch.no_grad()
    def detect(
        self, images: list[torch.Tensor], keep: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Detections in input-image coordinates with ``masks`` as N x 28 x 28 probabilities.

        ``keep`` maps an image's boxes (input coordinates) to a boolean mask of those to keep; the
        rest are dropped before the mask head runs, so tiling does not pay for masks it discards.
        """
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch, _ = self.transform(images)
        feats = self.features(batch.tensors)
        proposals, _ = self.rpn(batch, feats)
        heads = self.roi_heads
        box_feats = heads.box_head(heads.box_roi_pool(feats, proposals, batch.image_sizes))
        logits, regression = heads.box_predictor(box_feats)
        boxes, scores, labels = heads.postprocess_detections(logits, regression, proposals, batch.image_sizes)
        detections, net_boxes = [], []
        for b, s, lab, size, orig in zip(boxes, scores, labels, batch.image_sizes, original_sizes):
            out = resize_boxes(b, size, orig)
            sel = keep(out) if keep is not None else slice(None)
            # capped: the cap cut this image's detections (the lowest-scoring ones were dropped)
            detections.append({"boxes": out[sel], "scores": s[sel], "labels": lab[sel],
                               "capped": len(b) >= heads.detections_per_img})
            net_boxes.append(b[sel])
        probs = self._mask_probs(feats, net_boxes, [d["labels"] for d in detections], batch.image_sizes)
        for det, prob in zip(detections, probs):
            det["masks"] = prob
        return detections

    def _mask_probs(self, feats, boxes: list[torch.Tensor], labels: list[torch.Tensor], sizes) -> list[torch.Tensor]:
        """N x 28 x 28 mask probabilities per image, one image's detections ``MASK_CHUNK`` at a time."""
        heads = self.roi_heads
        if len(boxes) == 1 and len(boxes[0]) > MASK_CHUNK:
            return [torch.cat([self._mask_probs(feats, [b], [lab], sizes)[0]
                               for b, lab in zip(boxes[0].split(MASK_CHUNK), labels[0].split(MASK_CHUNK))])]
        mask_feats = heads.mask_head(heads.mask_roi_pool(feats, boxes, sizes))
        return [prob[:, 0] for prob in maskrcnn_inference(heads.mask_predictor(mask_feats), labels)]


def _fetch(weights_enum: Any) -> dict[str, torch.Tensor]:
    """Download (or read from the torch hub cache) torchvision's pretrained weights."""
    try:
        return weights_enum.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"could not fetch pretrained weights {weights_enum} (no internet?): {exc}. "
            "Train with --weights none, or put the file in the torch hub cache "
            f"({torch.hub.get_dir()}/checkpoints) first."
        ) from None


def _resnet50_backbone(weights: str, v2: bool) -> tuple[nn.Module, dict[str, Any], Any]:
    """ResNet-50-FPN body and heads as torchvision builds them, plus the COCO weights enum."""
    from torchvision.models import ResNet50_Weights, resnet50
    from torchvision.models.detection import (
        MaskRCNN_ResNet50_FPN_V2_Weights,
        MaskRCNN_ResNet50_FPN_Weights,
    )

    pretrained = weights != "none"
    body_weights = ResNet50_Weights.IMAGENET1K_V1 if weights == "imagenet" else None
    trainable = 3 if pretrained else 5
    if v2:
        body = resnet50(weights=None)
        if body_weights is not None:
            body.load_state_dict(_fetch(body_weights))
        backbone = _resnet_fpn_extractor(body, trainable, norm_layer=nn.BatchNorm2d)
        heads = {
            "rpn_head": RPNHead(256, RPN_ANCHORS, conv_depth=2),
            "box_head": FastRCNNConvFCHead((256, 7, 7), [256] * 4, [1024], norm_layer=nn.BatchNorm2d),
            "mask_head": MaskRCNNHeads(256, [256] * 4, 1, norm_layer=nn.BatchNorm2d),
        }
        coco = MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1
    else:
        norm = misc_nn_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
        body = resnet50(weights=None, norm_layer=norm)
        if body_weights is not None:
            body.load_state_dict(_fetch(body_weights))
        backbone = _resnet_fpn_extractor(body, trainable)
        heads = {}
        coco = MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    return backbone, heads, coco


def _resnet18_backbone(weights: str) -> tuple[nn.Module, dict[str, Any]]:
    """The light model: ResNet-18 with trainable BatchNorm, a 128-channel FPN, slim heads."""
    from torchvision.models import ResNet18_Weights, resnet18
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    if weights == "coco":
        raise ValueError("COCO weights exist only for resnet50 and resnet50_v2; use imagenet or none")
    body = resnet18(weights=None)
    if weights == "imagenet":
        body.load_state_dict(_fetch(ResNet18_Weights.IMAGENET1K_V1))
    channels = 128
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[64, 128, 256, 512],
        out_channels=channels,
        extra_blocks=LastLevelMaxPool(),
    )
    heads = {
        "rpn_head": RPNHead(channels, RPN_ANCHORS),
        "box_head": TwoMLPHead(channels * 7 * 7, 512),
        "mask_head": MaskRCNNHeads(channels, [channels] * 4, 1),
    }
    return backbone, heads


def build_model(config: ModelConfig, weights: str = "none") -> CellMaskRCNN:
    """Build the network for ``config``; ``weights`` picks torchvision's pretrained weights."""
    config.validate()
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    coco = None
    if config.arch == "resnet18":
        backbone, heads = _resnet18_backbone(weights)
    else:
        backbone, heads, coco = _resnet50_backbone(weights, v2=config.arch == "resnet50_v2")
    channels = backbone.out_channels
    representation = 512 if config.arch == "resnet18" else 1024
    anchors = AnchorGenerator(
        tuple((s,) for s in config.anchor_sizes), (tuple(config.aspect_ratios),) * len(config.anchor_sizes)
    )
    proposals = exact_proposals(config.detections_per_img)
    model = CellMaskRCNN(
        backbone,
        image_scale=config.image_scale,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_test=proposals,
        rpn_post_nms_top_n_test=proposals,
        box_predictor=FastRCNNPredictor(representation, 91 if weights == "coco" else config.num_classes),
        mask_predictor=MaskRCNNPredictor(channels, channels, 91 if weights == "coco" else config.num_classes),
        box_detections_per_img=config.detections_per_img,
        box_nms_thresh=config.box_nms_thresh,
        box_score_thresh=config.box_score_thresh,
        box_batch_size_per_image=config.roi_samples,
        **heads,
    )
    if weights == "coco":
        model.load_state_dict(_fetch(coco))
        model.roi_heads.box_predictor = FastRCNNPredictor(representation, config.num_classes)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(channels, channels, config.num_classes)
    model.object_diameter = float(config.object_diameter)
    model.score_thresh = float(config.score_thresh)
    return model


def set_detections_per_img(model: CellMaskRCNN, n: int) -> None:
    """Change the detection cap at inference time (dense images need more than the default)."""
    if not 1 <= int(n) <= MAX_DETECTIONS:
        raise ValueError(f"detections per image must be from 1 to {MAX_DETECTIONS:,}, got {n}")
    model.roi_heads.detections_per_img = int(n)
    set_proposals(model, exact_proposals(n))


def set_proposals(model: CellMaskRCNN, n: int) -> None:
    """Region proposals at inference, per level before the RPN's NMS and after it (``predict`` sizes them)."""
    if not 1 <= int(n) <= MAX_PROPOSALS:
        raise ValueError(f"proposals must be from 1 to {MAX_PROPOSALS:,}, got {n}")
    model.rpn._pre_nms_top_n["testing"] = model.rpn._post_nms_top_n["testing"] = int(n)


__all__ = ["ARCHS", "WEIGHTS", "ModelConfig", "CellMaskRCNN", "build_model", "set_detections_per_img", "torchvision"]
