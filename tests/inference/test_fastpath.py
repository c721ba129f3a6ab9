"""The CPU fast path: each swapped part computes what the original does, and nothing outlives a run."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cellseg.inference import fastpath
from napari_cellseg._torch import torch
from napari_cellseg.inference.fastpath import FastMaskPredictor, SparseRoIPool, accelerated, exact, fast_enabled
from napari_cellseg.inference.predict import predict
from napari_cellseg.model.network import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model(one_thread):
    torch.manual_seed(0)
    return build_model(ModelConfig(arch="resnet18", class_names=["a", "b"], detections_per_img=10)).eval()


def _features(model, size: int = 96) -> dict:
    with torch.no_grad():
        return model.backbone(torch.rand(1, 3, size, size))


def _boxes(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Boxes of every scale, some reaching past the image (RoIAlign's edge rules are tested too)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * (size + 20) - 10
    wh = torch.rand(n, 2, generator=g) ** 2 * size + 0.3
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("which", ["box_roi_pool", "mask_roi_pool"])
def test_sparse_roi_pool_equals_torchvision(model, which):
    pool = getattr(model.roi_heads, which)
    feats, boxes = _features(model), [_boxes(300, 96)]
    ref = pool(feats, boxes, [(96, 96)])
    got = SparseRoIPool(pool)(feats, boxes, [(96, 96)])
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_sparse_roi_pool_with_no_boxes_falls_back(model):
    pool = model.roi_heads.box_roi_pool
    got = SparseRoIPool(pool)(_features(model), [torch.zeros(0, 4)], [(96, 96)])
    assert got.shape == (0, 128, 7, 7)


def test_fast_mask_predictor_equals_torchvision(model):
    x = torch.rand(7, 128, 14, 14)
    predictor = model.roi_heads.mask_predictor
    with torch.no_grad():
        torch.testing.assert_close(FastMaskPredictor(predictor)(x), predictor(x), atol=1e-5, rtol=1e-5)


def test_fast_mask_predictor_with_no_detections(model):
    with torch.no_grad():
        assert FastMaskPredictor(model.roi_heads.mask_predictor)(torch.zeros(0, 128, 14, 14)).shape == (0, 3, 28, 28)


def test_int8_box_head_is_close_and_cached(model):
    head = model.roi_heads.box_head
    quantised = fastpath.int8_linears(head)
    if quantised is None:
        pytest.skip("this torch has no quantised CPU kernels")
    x = torch.rand(50, 128 * 7 * 7)
    with torch.no_grad():
        ref, got = head(x), quantised(x)
    assert (got - ref).abs().max() <= 0.05 * ref.abs().max()
    assert fastpath.int8_linears(head) is quantised  # same weights: no re-quantisation
    with torch.no_grad():
        head.fc7.bias.add_(1.0)  # fine-tuning changed the weights
    try:
        assert fastpath.int8_linears(head) is not quantised
    finally:
        with torch.no_grad():
            head.fc7.bias.sub_(1.0)


def test_accelerated_swaps_for_the_block_only(model):
    keys = list(model.state_dict())
    originals = dict(model.roi_heads.named_children())
    with accelerated(model, CPU) as on:
        assert on
        assert isinstance(model.roi_heads.box_roi_pool, SparseRoIPool)
    assert dict(model.roi_heads.named_children()) == originals
    assert list(model.state_dict()) == keys


def test_exact_paths_leave_the_model_alone(model, monkeypatch):
    with exact():
        assert not fast_enabled()
        with accelerated(model, CPU) as on:
            assert not on
    assert fast_enabled()
    monkeypatch.setenv(fastpath.EXACT_ENV, "1")
    with accelerated(model, CPU) as on:
        assert not on
    monkeypatch.delenv(fastpath.EXACT_ENV)
    with accelerated(model, torch.device("meta")) as on:  # any device but the CPU
        assert not on
    model.train()
    try:
        with accelerated(model, CPU) as on:
            assert not on
    finally:
        model.eval()


def test_fast_predict_matches_exact_predict(model):
    """The same instances up to the int8 box head's rounding (random weights give near-equal scores,
    so they are matched by box, not by rank): boxes within 2 px, scores within 0.02."""
    image = np.random.default_rng(3).integers(0, 256, (128, 160, 3), dtype=np.uint8)
    fast = predict(model, image, max_detections=100)  # a cap far above the count: no swaps at the cut
    with exact():
        plain = predict(model, image, max_detections=100)
    assert len(plain) > 0 and abs(len(fast) - len(plain)) <= 1
    distance = np.abs(fast.boxes[:, None, :].astype(int) - plain.boxes[None, :, :]).max(axis=2)
    nearest = distance.argmin(axis=1)
    matched = (distance.min(axis=1) <= 2) & (np.abs(fast.scores - plain.scores[nearest]) <= 0.02)
    assert matched.mean() >= 0.75  # NMS on random weights flips a few near-duplicates
