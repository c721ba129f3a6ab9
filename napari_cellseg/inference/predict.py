"""Run the network once per image (tile by tile when large) and keep compact raw instances.

Why raw instances: thresholds are chosen afterwards with sliders, so the network output is kept
as it is - each mask's probabilities cropped to its box, as uint8 - and ``postprocess.to_labels``
turns it into label images in milliseconds. torchvision would paste every mask into a full-size
float image (N x H x W: 14 GB for 700 cells on a 2500 x 2000 image); here each 28 x 28 map is
resized into its own box only, where training's geometry puts it (``paste_masks``).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from .._torch import torch
from ..io.images import to_tensor
from ..devices import resolve_device
from .fastpath import accelerated
from ..defaults import OVERLAP, TILE_SIZE
from ..errors import DetectionCapWarning
from ..model.network import MAX_DETECTIONS, exact_proposals, set_detections_per_img, set_proposals
from ..progress import Progress, StopCheck, drain, stopped
from ..io.raw import RawInstances
from .tiling import Tile, in_core, tile_grid
from .tta import FLIPS, flipped, merge_views, unflip


def iter_predict(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    device: str | torch.device | None = None,
    tile_size: int = TILE_SIZE,
    overlap: int = OVERLAP,
    max_detections: int | None = None,
    flip: bool = False,
    scale: float = 1.0,
    should_stop: StopCheck | None = None,
    plain: RawInstances | None = None,
) -> Generator[Progress, None, RawInstances | None]:
    """Predict tile by tile, yielding ``Progress(tiles_done, tiles, "tile")``; returns the
    ``RawInstances``, or None when ``should_stop`` says so (checked before every tile).

    A generator so the GUI can show progress and cancel between tiles (``progress``'s contract);
    arguments are checked when it is called, before the first tile. Only one tile's network output is alive at a time.
    ``max_detections`` fixes the cap per tile; by default it follows the tile (``tile_cap``) and a
    tile that hits it is run again once with 4x the cap. A tile that still hits it is counted in the
    result's ``capped_tiles`` and a ``DetectionCapWarning`` says so: cells are never lost silently.
    ``scale`` resizes the image inside the model (``scale.py`` decides it). An image no larger than
    ``tile_size`` is one tile: exactly the untiled result. ``flip`` also segments the image mirrored
    left-right, up-down and both, and merges the four views (``tta.merge_views``): four times the
    time, more AP. ``plain``: the unmirrored view's result when already at hand (auto's first pass), so
    only the mirrored views are run.
    """
    _check_image(image)
    if max_detections is not None and max_detections < 1:
        raise ValueError("max_detections must be at least 1")
    if not 0.05 <= scale <= 8:
        raise ValueError(f"the scale factor must be between 0.05 and 8, got {scale:g}")
    tiles = tile_grid((image.shape[0], image.shape[1]), tile_size, overlap)
    device = _model_device(model) if device is None else _as_device(device)
    if plain is not None and not flip:
        raise ValueError("plain (the unmirrored view's result) is only used with flip")
    return _run_tiles(model, image, tiles, device, max_detections, flip, should_stop, scale, plain)


def _run_tiles(
    model: torch.nn.Module, image: np.ndarray, tiles: list[Tile], device: torch.device, max_detections: int | None,
    flip: bool, should_stop: StopCheck | None, scale: float = 1.0, plain: RawInstances | None = None,
) -> Generator[Progress, None, RawInstances | None]:
    """The generator behind ``iter_predict`` (which checks its arguments before the first step)."""
    shape = (image.shape[0], image.shape[1])
    flips = FLIPS if flip else FLIPS[:1]
    results = [] if plain is None else [plain]
    runs = flips[len(results):]
    total = len(tiles) * len(runs)
    with _inference_setup(model, device, max_detections, scale) as (base_cap, fast), _stop_inside(model, should_stop):
        yield Progress(0, total, "tile")  # the pass has begun: a progress bar can name it before its first tile
        for v, (lr, ud) in enumerate(runs):
            view, parts = flipped(image, lr, ud), []
            for done, tile in enumerate(tiles, start=1):
                if stopped(should_stop):
                    return None
                try:
                    parts.append(_predict_uncapped(model, view, tile, device, max_detections, base_cap, scale, fast))
                except _Stopped:
                    return None
                yield Progress(v * len(tiles) + done, total, "tile")
            results.append(unflip(RawInstances.concatenate(parts, shape), lr, ud))
        cap = _detection_cap(model)
    result = merge_views(results) if flip else results[0]
    result.scale, result.capped_tiles = scale, sum(r.capped_tiles for r in results)
    if result.capped_tiles:
        warnings.warn(DetectionCapWarning(cap_message(result.capped_tiles, len(tiles) * len(flips), cap)),
                      stacklevel=2)
    return result


AREA_PER_DETECTION = 32 * 32
"""Network pixels per allowed detection when a tile's cap is set from its area: a 1024 px tile
allows 1,024, more than the densest DSB2018 image holds; ``CellMaskRCNN.detect`` says when it is hit anyway."""


def tile_cap(tile_shape: tuple[int, int], base: int, scale: float = 1.0) -> int:
    """The detection cap of a tile: its area (in network pixels) over ``AREA_PER_DETECTION``,
    never below the model's own cap ``base`` nor above ``MAX_DETECTIONS``."""
    area = tile_shape[0] * tile_shape[1] * scale * scale
    return int(min(MAX_DETECTIONS, max(base, math.ceil(area / AREA_PER_DETECTION))))


AREA_PER_PROPOSAL = 128
"""Network pixels per region proposal on the fast path. torchvision keeps a fixed number (here
``exact_proposals(cap)``): 2,000 boxes through the box branch for ~50 cells on a 256 x 256 image."""
MIN_PROPOSALS = 1000
"""The fewest proposals a tile gets (torchvision's default): small images lost confident cells below it."""


def tile_proposals(tile_shape: tuple[int, int], cap: int, scale: float = 1.0) -> int:
    """Region proposals for a tile on the fast path, before (per pyramid level) and after the RPN's NMS:
    its area in network pixels over ``AREA_PER_PROPOSAL``, at least ``MIN_PROPOSALS``, never more than
    the exact path's ``exact_proposals(cap)`` (one per 128 px^2 on a 1000 px tile raised its peak memory
    from 1.3 to 2.2 GB; BENCHMARKS.md)."""
    area = tile_shape[0] * tile_shape[1] * scale * scale
    return int(min(exact_proposals(cap), max(MIN_PROPOSALS, math.ceil(area / AREA_PER_PROPOSAL))))


def cap_message(capped: int, tiles: int, cap: int | None) -> str:
    """One line for the user when tiles hit the detection cap (the CLI's warning, the GUI's status)."""
    return (f"{capped} of {tiles} tile(s) hit the limit of {cap} detections: some cells may be missing; "
            "use a smaller tile size or a higher detection limit")


def _predict_uncapped(
    model: torch.nn.Module, image: np.ndarray, tile: Tile, device: torch.device, fixed: int | None, base: int | None,
    scale: float, fast: bool = False,
) -> RawInstances:
    """One tile under a cap that follows its area, run again once with 4x the cap when it is hit
    (unless the caller ``fixed`` the cap; once: each run costs a whole tile); a tile that still hits
    it keeps ``capped_tiles == 1``. On the fast path the proposals follow the tile's area (``tile_proposals``),
    the same in both runs."""
    if fixed is None and base is not None:
        set_detections_per_img(model, tile_cap(tile.shape, base, scale))
    proposals = None
    if fast and (cap := _detection_cap(model)) is not None:
        proposals = tile_proposals(tile.shape, cap, scale)
        set_proposals(model, proposals)
    part = _predict_tile(model, image, tile, device)
    if fixed is None and part.capped_tiles and (cap := _detection_cap(model) or MAX_DETECTIONS) < MAX_DETECTIONS:
        set_detections_per_img(model, min(4 * cap, MAX_DETECTIONS))
        if proposals is not None:  # the same proposals: the exact path's 4 per detection took a dense tile over 2 GB
            set_proposals(model, proposals)
        part = _predict_tile(model, image, tile, device)
    return part


def predict(model: torch.nn.Module, image: np.ndarray, **options: Any) -> RawInstances:
    """``iter_predict`` run to the end, for scripts and the CLI; ``options`` are its keywords
    (``device``, ``tile_size``, ``overlap``, ``max_detections``, ``flip``)."""
    return drain(iter_predict(model, image, **options))


def paste_masks(
    masks: torch.Tensor, boxes: torch.Tensor, image_shape: tuple[int, int], ratio: tuple[float, float] = (1.0, 1.0)
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Resize each M x M probability map into the image where the network drew it, keeping only its crop.

    The exact inverse of how training made the mask targets: torchvision projects a ground-truth mask
    onto a box ``[x0, x1]`` with ``roi_align`` (``aligned=False``), so mask cell k holds the image at
    ``x0 + (k + 1/2) w / M``, pixel i's centre being at i. Through the network's resize (``ratio``: image
    pixels per network pixel, (y, x); a network pixel n lies at ``(n + 1/2) r - 1/2`` in the image), image
    pixel i therefore takes the mask at cell ``(i + (1 - r) / 2 - x0) / (w / M) - 1/2``, bilinearly, inside the
    box only (``boxes`` in image pixels, as ``CellMaskRCNN.detect`` gives them).

    Why not torchvision's ``paste_masks_in_image``: it grows the box to whole pixels and resizes the mask
    into it, which draws every mask half a pixel up and left (more after an enlargement) and up to a pixel
    off - most of a 6 px nucleus's overlap with itself. DSB2018 ``val/``, the built-in model, scale auto:
    COCO AP 0.525 -> 0.572, AP75 0.568 -> 0.626, AP50 0.837 -> 0.847 (docs/model-nuclei.md).

    Returns the crop bounds (xyxy, exclusive ends), the crops as uint8 (round(p * 255)), and the
    indices of the instances kept (one whose box holds no pixel centre of the image is dropped).
    """
    h_img, w_img = image_shape
    m = masks.shape[-1]
    probs = masks.float().cpu().numpy()
    crop_boxes, crops, kept = [], [], []
    for i, (x0, y0, x1, y1) in enumerate(boxes.float().cpu().tolist()):
        rows = _resampling(y0, y1, m, ratio[0], h_img)
        cols = _resampling(x0, x1, m, ratio[1], w_img)
        if rows is None or cols is None:
            continue
        (top, weights_y), (left, weights_x) = rows, cols
        crop = weights_y @ probs[i] @ weights_x.T
        crops.append(np.clip(np.rint(crop * 255), 0, 255).astype(np.uint8))
        crop_boxes.append((left, top, left + len(weights_x), top + len(weights_y)))
        kept.append(i)
    return np.asarray(crop_boxes, np.int32).reshape(-1, 4), crops, np.asarray(kept, np.intp)


def resize_ratio(shape: tuple[int, int], scale: float) -> tuple[float, float]:
    """Image pixels per network pixel, (y, x), of an image of ``shape`` that the network resizes by
    ``scale``: as ``network.ScaleTransform``, the resized side is ``floor(side * scale)``."""
    if scale == 1.0:
        return 1.0, 1.0
    return tuple(side / max(math.floor(side * scale), 1) for side in shape)


def _resampling(start: float, end: float, cells: int, ratio: float, size: int) -> tuple[int, np.ndarray] | None:
    """Along one axis, the first image pixel inside the box ``[start, end]`` and each such pixel's
    bilinear weights over the mask's cells (pixels x cells; ``paste_masks``' geometry); None where the
    box misses the image. Within half a cell of the box's edge a pixel takes the edge cell's value."""
    step = max(end - start, 1e-3) / cells
    shift = (1.0 - ratio) / 2
    first = max(math.ceil(start - shift), 0)
    stop = min(math.floor(end - shift) + 1, size)
    if stop <= first:
        return None
    at = (np.arange(first, stop, dtype=np.float32) + np.float32(shift - start)) / np.float32(step) - np.float32(0.5)
    at = np.clip(at, 0, cells - 1)
    low = np.minimum(np.floor(at).astype(np.intp), cells - 2)
    frac = at - low
    weights = np.zeros((len(at), cells), np.float32)
    rows = np.arange(len(at))
    weights[rows, low] = 1 - frac
    weights[rows, low + 1] = frac
    return first, weights


def mask_quality(masks: torch.Tensor) -> torch.Tensor:
    """Each mask's mean probability over its own pixels (p >= 0.5): the confidence of a detection is
    its class score times this, SOLOv2's "maskness".

    Why: the class score rates the box, not the outline; a blurred, unsure mask (a sliver, two
    touching nuclei, a smear) ranks lower than a crisp one with the same score. DSB2018 ``val/``,
    round 8, scale auto, each way at its own tuned confidence: COCO AP 0.501 -> 0.519, AP50 0.835 ->
    0.836, TP/(TP+FP+FN) with the confidence tuned on other images 0.736 -> 0.742 (stained AP50
    0.762 -> 0.746). ``masks``: N x 1 x M x M probabilities; a mask
    with no pixel at 0.5 gets 0 (it is empty at every mask threshold from 0.5 up).
    """
    probs = masks.float().flatten(1)
    sure = probs >= 0.5
    return (probs * sure).sum(1) / sure.sum(1).clamp(min=1)


def _predict_tile(model: torch.nn.Module, image: np.ndarray, tile: Tile, device: torch.device) -> RawInstances:
    """Detect in one tile, keep the detections centred in its core, paste them in image coordinates
    (in the detector's order: ``RawInstances.concatenate`` ranks them by the quality-weighted score)."""
    shape = (image.shape[0], image.shape[1])
    offset = torch.tensor([tile.x0, tile.y0, tile.x0, tile.y0], dtype=torch.float32)

    def centred_in_core(boxes: torch.Tensor) -> torch.Tensor:
        inside = in_core((boxes.float().cpu() + offset).numpy(), tile)
        return torch.from_numpy(inside).to(boxes.device)

    with torch.inference_mode():
        tensor = to_tensor(image[tile.y0 : tile.y1, tile.x0 : tile.x1]).to(device)
        det = model.detect([tensor], keep=centred_in_core)[0]
        capped = bool(det.get("capped", False))
        boxes = det["boxes"].float().cpu() + offset
        masks, labels = det["masks"].cpu(), det["labels"].cpu()
        scores = det["scores"].float().cpu() * mask_quality(masks)
        del det
        crop_boxes, crops, kept = paste_masks(masks, boxes, shape, resize_ratio(tile.shape, _network_scale(model)))
    return RawInstances(crop_boxes, scores.numpy()[kept], labels.numpy()[kept], crops, shape,
                        capped_tiles=int(capped))


class _Stopped(Exception):
    """Raised inside the network when ``should_stop`` says so: a cancel waits for one layer, not a tile."""


@contextlib.contextmanager
def _stop_inside(model: torch.nn.Module, should_stop: StopCheck | None) -> Iterator[None]:
    """Check ``should_stop`` before every leaf layer of ``model`` (a 1024 px tile took 16 s on a busy CPU,
    so a check per tile let a cancel wait that long); the hooks go when the run ends."""
    if should_stop is None:
        yield
        return

    def check(_module, _inputs) -> None:
        if should_stop():
            raise _Stopped

    handles = [m.register_forward_pre_hook(check) for m in model.modules() if next(m.children(), None) is None]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _inference_setup(
    model: torch.nn.Module, device: torch.device, max_detections: int | None, scale: float = 1.0
) -> Iterator[int | None]:
    """Eval mode on ``device`` (a given cap, the image scale times ``scale``) for the run, on the CPU
    the fast heads (``fastpath``); mode, cap, scale and heads come back afterwards. Yields the
    model's own cap and whether the fast path is on."""
    was_training = model.training
    old_cap = _detection_cap(model)
    transform = getattr(model, "transform", None)
    old_scale = getattr(transform, "image_scale", None)
    model.to(device)
    model.eval()
    if max_detections is not None:
        set_detections_per_img(model, max_detections)
    if old_scale is not None:
        transform.image_scale = old_scale * scale
    try:
        with accelerated(model, device) as fast:
            # an ONNX graph's cap and proposals are fixed at export
            yield (old_cap, fast) if hasattr(model, "rpn") else (None, False)
    finally:
        if old_cap is not None and hasattr(model, "rpn"):
            set_detections_per_img(model, old_cap)  # the cap and the proposals
        if old_scale is not None:
            transform.image_scale = old_scale
        model.train(was_training)


def _network_scale(model: torch.nn.Module) -> float:
    """The factor the network resizes its input by: the torch model's (for this run), an ONNX model's fixed one."""
    scale = getattr(getattr(model, "transform", None), "image_scale", None)
    if scale is None:
        scale = getattr(getattr(model, "config", None), "image_scale", 1.0)
    return float(scale)


def _detection_cap(model: torch.nn.Module) -> int | None:
    roi_heads = getattr(model, "roi_heads", None)
    return getattr(roi_heads, "detections_per_img", None)


def _check_image(image: np.ndarray) -> None:
    """The core's convention is H x W x 3 uint8; anything else is a caller's mistake worth naming."""
    ok = (
        isinstance(image, np.ndarray)
        and image.ndim == 3
        and image.shape[2] == 3
        and image.dtype == np.uint8
        and image.shape[0] > 0
        and image.shape[1] > 0
    )
    if not ok:
        got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(
            f"prediction needs an RGB image as an H x W x 3 uint8 array, got {got}; "
            "convert it with napari_cellseg.io.images.to_rgb_uint8 first"
        )


def _model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _as_device(device: str | torch.device) -> torch.device:
    return resolve_device(device) if isinstance(device, str) else torch.device(device)


__all__ = ["RawInstances", "resolve_device", "iter_predict", "predict", "paste_masks", "resize_ratio", "mask_quality",
           "tile_cap", "cap_message"]
