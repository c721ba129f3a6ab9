"""The CPU fast path of prediction, on by default: the same weights, a fraction of the time of the plain
path (10 DSB val images, one thread, loaded machine; BENCHMARKS.md).

Why these parts: profiling the built-in ``nuclei`` model on DSB val images (one thread) put three
quarters of the time in the heads, not the backbone - the mask predictor 31% (a 1 x 1 convolution
to two channels and a 2 x 2 transposed convolution, slow in NCHW layout), the box RoI pooling 19%
(torchvision's CPU RoIAlign), the box head 16% (2,000 proposals through a
6272 x 512 layer) and the mask head 14%. So, for the duration of a prediction only:

- the mask head and the transposed convolution run channels-last (oneDNN's fast layout);
- the mask logits are one matrix product on the channels-last features;
- the box head's linear layers compute in int8 (dynamic quantisation, one scale per output channel);
- on one thread, the RoI pooling is one sparse matrix product per pyramid level (the same sums);
- (in ``predict``, when this path is on) the region proposals follow the tile's area instead of
  torchvision's fixed count, so a small image sends fewer boxes through the box branch.

``accelerated`` swaps these wrappers in and the original modules back afterwards, so weights, the
state dict and training never see them. Off on other devices, with ``NAPARI_CELLSEG_EXACT=1``
or inside ``exact()``: then the model runs as it is (the exact fallback). Weights changed by
fine-tuning are noticed (their version counter) and re-quantised.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator

from .._torch import torch

from torch import nn  # noqa: E402

EXACT_ENV = "NAPARI_CELLSEG_EXACT"
"""Set to 1 to run every prediction on the plain (exact) path."""

_state = threading.local()


def fast_enabled() -> bool:
    """Whether predictions on the CPU take the fast path (the default)."""
    return os.environ.get(EXACT_ENV, "") not in ("1", "true", "yes") and not getattr(_state, "exact", False)


@contextlib.contextmanager
def exact() -> Iterator[None]:
    """Predictions inside run the plain path (this thread only): for comparisons and debugging."""
    old = getattr(_state, "exact", False)
    _state.exact = True
    try:
        yield
    finally:
        _state.exact = old


@contextlib.contextmanager
def accelerated(model: nn.Module, device: torch.device) -> Iterator[bool]:
    """Swap the fast heads into ``model`` (a ``CellMaskRCNN``) for the block; yields whether it did."""
    heads = getattr(model, "roi_heads", None)
    if (device.type != "cpu" or not fast_enabled() or not isinstance(heads, nn.Module) or model.training
            or not hasattr(heads, "mask_head")):  # e.g. an ONNX model's stand-in: nothing to swap
        yield False
        return
    swaps = {
        "mask_head": ChannelsLast(heads.mask_head),
        "mask_predictor": FastMaskPredictor(heads.mask_predictor),
    }
    if torch.get_num_threads() == 1:  # measured faster on one thread only; see SparseRoIPool
        swaps.update(box_roi_pool=SparseRoIPool(heads.box_roi_pool), mask_roi_pool=SparseRoIPool(heads.mask_roi_pool))
    box_head = int8_linears(heads.box_head)
    if box_head is not None:
        swaps["box_head"] = box_head
    originals = {name: getattr(heads, name) for name in swaps}
    for name, module in swaps.items():
        setattr(heads, name, module)
    try:
        yield True
    finally:
        for name, module in originals.items():
            setattr(heads, name, module)


class ChannelsLast(nn.Module):
    """Runs ``module`` on channels-last input: oneDNN's fast convolution layout on CPUs."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))


class FastMaskPredictor(nn.Module):
    """torchvision's ``MaskRCNNPredictor`` (2 x 2 transposed conv, ReLU, 1 x 1 conv) channels-last,
    the 1 x 1 convolution as one matrix product."""

    def __init__(self, predictor: nn.Module) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.predictor
        y = torch.relu(p.conv5_mask(x.contiguous(memory_format=torch.channels_last)))
        logits = p.mask_fcn_logits
        w = logits.weight.reshape(logits.out_channels, -1)
        out = torch.addmm(logits.bias, y.permute(0, 2, 3, 1).reshape(-1, w.shape[1]), w.t())
        n, _, h, wd = y.shape
        return out.reshape(n, h, wd, w.shape[0]).permute(0, 3, 1, 2)


class SparseRoIPool(nn.Module):
    """``MultiScaleRoIAlign`` as one sparse matrix product per pyramid level.

    torchvision's CPU RoIAlign walks each RoI channel by channel on one core. Each output bin is a
    fixed weighted sum of 16 feature pixels (2 x 2 samples, 4 bilinear corners), so all bins of a
    level form a sparse (bins x pixels) matrix times the channels-last (pixels x channels) features:
    the same sums, vectorised over channels (2.5x at 7 x 7, 1.5x at 14 x 14 measured; equal to
    ``roi_align`` to 1e-6, one thread). With two threads on the loaded test machine torchvision's
    was faster in one micro-benchmark (0.36 s vs 1.26 s for 2,000 RoIs, very noisy), so the swap is
    made for single-threaded runs only. Adaptive sampling (``sampling_ratio <= 0``) keeps torchvision's.
    """

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x, boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        pool = self.pool
        size = pool.output_size
        if len(boxes) != 1 or pool.sampling_ratio <= 0 or size[0] != size[1] or not len(boxes[0]):
            return pool(x, boxes, image_shapes)
        feats = [x[name] for name in pool.featmap_names]
        if pool.scales is None or pool.map_levels is None:
            pool(x, [boxes[0][:1]], image_shapes)  # torchvision sets up its level scales
        levels = pool.map_levels(boxes) if len(feats) > 1 else torch.zeros(len(boxes[0]), dtype=torch.int64)
        out = boxes[0].new_zeros((len(boxes[0]), size[0] * size[1], feats[0].shape[1]))
        for level, (feat, scale) in enumerate(zip(feats, pool.scales)):
            idx = torch.where(levels == level)[0]
            if len(idx):
                out[idx] = _roi_align_level(feat, boxes[0][idx], size[0], scale, pool.sampling_ratio)
        return out.reshape(len(out), size[0], size[1], -1).permute(0, 3, 1, 2)


def _roi_align_level(feat: torch.Tensor, boxes: torch.Tensor, bins: int, scale: float, grid: int) -> torch.Tensor:
    """torchvision's ``roi_align`` (``aligned=False``) of one image's level: (R, bins * bins, C)."""
    _, channels, h, w = feat.shape
    r = len(boxes)
    b = boxes.float() * scale
    ylo, yhi, wylo, wyhi = _samples(b[:, 1], (b[:, 3] - b[:, 1]).clamp(min=1.0), bins, grid, h)
    xlo, xhi, wxlo, wxhi = _samples(b[:, 0], (b[:, 2] - b[:, 0]).clamp(min=1.0), bins, grid, w)
    ys = torch.stack([ylo, ylo, yhi, yhi], -1).reshape(r, bins, 1, grid, 1, 4)
    xs = torch.stack([xlo, xhi, xlo, xhi], -1).reshape(r, 1, bins, 1, grid, 4)
    wy = torch.stack([wylo, wylo, wyhi, wyhi], -1).reshape(r, bins, 1, grid, 1, 4)
    wx = torch.stack([wxlo, wxhi, wxlo, wxhi], -1).reshape(r, 1, bins, 1, grid, 4)
    per_bin = grid * grid * 4
    cols = (ys * w + xs).reshape(-1)
    vals = (wy * wx / (grid * grid)).reshape(-1).to(feat.dtype)
    rows = r * bins * bins
    crow = torch.arange(0, rows * per_bin + 1, per_bin)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore")
        matrix = torch.sparse_csr_tensor(crow, cols, vals, (rows, h * w))
    pixels = feat[0].permute(1, 2, 0).reshape(h * w, channels)
    return (matrix @ pixels).reshape(r, bins * bins, channels)


def _samples(start: torch.Tensor, length: torch.Tensor, bins: int, grid: int, size: int):
    """Sample positions along one axis of each RoI as torchvision's bilinear_interpolate takes them:
    (low index, high index, low weight, high weight), each (R, bins * grid); outside -> weight 0."""
    k = torch.arange(bins * grid, dtype=start.dtype)
    step = length / bins
    pos = start[:, None] + (k // grid)[None] * step[:, None] + ((k % grid) + 0.5)[None] * (step / grid)[:, None]
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    edge = low >= size - 1
    low = torch.where(edge, torch.full_like(low, size - 1), low)
    high = torch.where(edge, low, low + 1)
    frac = torch.where(edge, torch.zeros_like(pos), pos - low)
    return low, high, (1 - frac) * inside, frac * inside


_int8_cache: dict[int, tuple[tuple, nn.Module]] = {}


def int8_linears(module: nn.Module) -> nn.Module | None:
    """A copy of ``module`` whose linear layers compute in int8 (weights quantised per output
    channel, activations per batch), cached until the weights change; None where this torch has no
    quantised CPU kernels (the caller keeps the float module)."""
    key = tuple((id(p), p._version, p.data_ptr()) for p in module.parameters())
    cached = _int8_cache.get(id(module))
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        with warnings.catch_warnings():  # torch.ao.quantization warns it is moving to torchao
            warnings.simplefilter("ignore")
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            quantised = quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, inplace=False)
    except (ImportError, RuntimeError, AttributeError, NotImplementedError):
        return None
    _int8_cache.clear()  # one model at a time is fast; a second one re-quantises (milliseconds)
    _int8_cache[id(module)] = (key, quantised)
    return quantised


__all__ = ["EXACT_ENV", "accelerated", "exact", "fast_enabled", "int8_linears"]
