"""Prediction: masks pasted where training put them, no full-size images or doubled tiles, progress, devices."""

from __future__ import annotations

import math
import warnings
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.measure import regionprops
from skimage.measure import label as connected_components

from napari_cellseg._torch import torch
from napari_cellseg.io.images import to_tensor
from napari_cellseg.progress import drain
from napari_cellseg.devices import resolve_device
from napari_cellseg.inference.fastpath import exact
from napari_cellseg.errors import DetectionCapWarning
from napari_cellseg.inference import predict as predict_module
from napari_cellseg.inference.predict import (
    iter_predict, mask_quality, paste_masks, predict, resize_ratio, tile_cap, tile_proposals,
)
from napari_cellseg.io.raw import RawInstances
from napari_cellseg.model.network import (
    MAX_DETECTIONS, ModelConfig, ScaleTransform, build_model, set_detections_per_img,
)
from napari_cellseg.inference.scale import scale_note

from torch.nn import functional as F  # noqa: E402
from torchvision.models.detection.roi_heads import paste_masks_in_image  # noqa: E402
from torchvision.ops import roi_align  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_model(one_thread):
    """Random weights; 10 detections per image keep the mask head cheap on 2 CPU cores."""
    torch.manual_seed(0)
    return build_model(ModelConfig(arch="resnet18", class_names=["a", "b"], detections_per_img=10)).eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _canvas(raw: RawInstances, i: int) -> np.ndarray:
    """Instance ``i``'s crop placed into a full image (tests only: production never does this)."""
    out = np.zeros(raw.image_shape, np.uint8)
    x0, y0, x1, y1 = raw.boxes[i]
    out[y0:y1, x0:x1] = raw.masks[i]
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _assert_valid(raw: RawInstances, shape: tuple[int, int]) -> None:
    assert raw.image_shape == shape
    assert raw.boxes.dtype == np.int32 and raw.scores.dtype == np.float32 and raw.labels.dtype == np.int32
    assert np.all(np.diff(raw.scores) <= 0)
    h, w = shape
    for (x0, y0, x1, y1), m in zip(raw.boxes, raw.masks):
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert m.dtype == np.uint8 and m.shape == (y1 - y0, x1 - x0)


# --- pasting -------------------------------------------------------------------------------------


def _ellipses(shape: tuple[int, int], n: int, seed: int) -> np.ndarray:
    """``n`` filled ellipses (radii 1.5-7 px: nuclei of 3-14 px) as N x H x W booleans."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8)
        ry, rx = rng.uniform(1.5, 7.0, size=2)
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return np.stack(out)


@pytest.mark.parametrize("factor", [1.0, 2.0, 3.0])
def test_paste_masks_inverts_the_mask_targets_training_learns(factor):
    """Training shows the network each nucleus as torchvision's target: the mask, enlarged with the image,
    projected onto its box by ``roi_align``. Pasting that target back through the resize gives the nucleus
    itself, pixel for pixel, where torchvision's ``paste_masks_in_image`` is off by up to a pixel (most of
    a small nucleus)."""
    shape = (64, 80)
    truth = _ellipses(shape, 30, seed=int(factor))
    size = (math.floor(shape[0] * factor), math.floor(shape[1] * factor))
    network = torch.from_numpy(truth[:, None].astype(np.float32))
    if factor != 1.0:  # the image's resize (network.ScaleTransform), applied to the masks
        network = F.interpolate(network, size=size, mode="bilinear", align_corners=False) >= 0.5
    boxes = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # the dataset's boxes: exclusive ends
                          for ys, xs in (torch.nonzero(m[0], as_tuple=True) for m in network)], dtype=torch.float32)
    targets = mask_targets(list(network[:, 0].numpy()), boxes)
    ratio = resize_ratio(shape, factor)
    image_boxes = boxes * torch.tensor([ratio[1], ratio[0], ratio[1], ratio[0]])  # as detect's resize_boxes
    crop_boxes, crops, kept = paste_masks(targets, image_boxes, shape, ratio)
    theirs = paste_masks_in_image(targets[:, None], image_boxes, shape, padding=1)[:, 0].numpy()
    assert kept.tolist() == list(range(len(truth)))
    raw = RawInstances(crop_boxes, np.linspace(1, 0, len(truth)), np.ones(len(truth)), crops, shape)
    for level in (128, 153):  # mask thresholds 0.5 and the shipped 0.6
        np.testing.assert_array_equal(np.stack([_canvas(raw, i) >= level for i in range(len(truth))]), truth)
        assert np.mean([_iou(t >= level / 255, m) for t, m in zip(theirs, truth)]) < 0.85


def test_paste_masks_by_hand():
    """A mask of ones in the box [10, 20] x [4, 6]: cell k holds x = 10 + (k + 1/2) 10 / 28, so pixels 10..20
    lie within the box (the edges' half cells take the edge cells' values) and nothing outside does; a
    mask of 0.5 on its left half and 1 on its right rises between the two middle cells."""
    masks = torch.ones(2, 28, 28)
    masks[1, :, :14] = 0.5
    boxes = torch.tensor([[10.0, 4.0, 20.0, 6.0], [10.0, 4.0, 20.0, 6.0]])
    crop_boxes, crops, kept = paste_masks(masks, boxes, (32, 32))
    assert crop_boxes.tolist() == [[10, 4, 21, 7]] * 2 and kept.tolist() == [0, 1]
    assert (crops[0] == 255).all()
    # pixel 15 is cell (15 - 10) / (10 / 28) - 1/2 = 13.5: half way between the halves
    np.testing.assert_array_equal(crops[1][0], [128] * 5 + [191] + [255] * 5)


def test_paste_masks_through_an_enlargement_shifts_by_half_the_lost_pixel():
    """With the image enlarged 2x (ratio 0.5), a network pixel n lies at (n + 1/2) / 2 - 1/2 in the image: the
    box [20, 40] in network pixels starts at image pixel 9.75, so pixel 10 is its first and pixel 19 its last."""
    crop_boxes, crops, _ = paste_masks(torch.ones(1, 28, 28), torch.tensor([[10.0, 10.0, 20.0, 20.0]]), (32, 32),
                                       ratio=(0.5, 0.5))
    assert crop_boxes.tolist() == [[10, 10, 20, 20]] and (crops[0] == 255).all()
    assert resize_ratio((64, 80), 1.5) == (64 / 96, 80 / 120) and resize_ratio((7, 9), 0.5) == (7 / 3, 9 / 4)


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.4, 1.873, 2.571, 3.7])
def test_resize_ratio_follows_the_networks_own_resize(scale):
    """``resize_ratio`` restates ``ScaleTransform``'s sizes (the transform cannot be asked: ONNX traces it);
    it must agree with what the network does to each side."""
    for shape in ((256, 257), (603, 1000), (999, 64)):
        resized, _ = ScaleTransform(scale).resize(torch.zeros(3, *shape))
        assert resize_ratio(shape, scale) == tuple(side / new for side, new in zip(shape, resized.shape[-2:]))


def test_mask_quality_is_the_mean_probability_over_the_masks_own_pixels():
    masks = torch.zeros(3, 1, 28, 28)
    masks[0, 0, :2, :2] = torch.tensor([[0.9, 0.9], [0.6, 0.2]])  # sure: 0.9, 0.9, 0.6
    masks[1, 0] = 1.0
    masks[2, 0] = 0.49  # nothing at 0.5: empty at every mask threshold from 0.5 up
    assert torch.allclose(mask_quality(masks), torch.tensor([0.8, 1.0, 0.0]))


def test_paste_masks_drops_a_box_outside_the_image():
    masks = torch.ones(2, 28, 28)
    boxes = torch.tensor([[2.0, 2.0, 10.0, 10.0], [200.0, 200.0, 210.0, 210.0]])
    crop_boxes, crops, kept = paste_masks(masks, boxes, (32, 32))
    assert kept.tolist() == [0] and len(crops) == 1 and crop_boxes.shape == (1, 4)


# --- a real (random) model -----------------------------------------------------------------------


def test_single_tile_equals_torchvision_forward(tiny_model, monkeypatch):
    """The exact path (``fastpath.exact``) is torchvision's result (its class scores: the mask quality
    they are multiplied by is set to 1 here, and tested below), its masks pasted by ``paste_masks`` (tested
    above) instead of torchvision's; the fast path is tested in test_fastpath."""
    monkeypatch.setattr(predict_module, "mask_quality", lambda masks: torch.ones(len(masks)))
    image = _image(72, 96)
    with exact():  # the model's own cap, fixed: by default a tile that hits it is run again with a higher one
        raw = predict(tiny_model, image, tile_size=128, overlap=32, max_detections=10)
    with torch.inference_mode():
        ref = tiny_model([to_tensor(image)])[0]
        det = tiny_model.detect([to_tensor(image)])[0]
    crop_boxes, crops, kept = paste_masks(det["masks"], det["boxes"], (72, 96))  # a box around no pixel: none
    assert len(raw) == len(kept) > 0 and len(ref["scores"]) - len(kept) <= 2
    np.testing.assert_array_equal(raw.scores, ref["scores"].numpy()[kept])
    np.testing.assert_array_equal(raw.labels, ref["labels"].numpy()[kept])
    _assert_valid(raw, (72, 96))
    np.testing.assert_array_equal(raw.boxes, crop_boxes)
    assert all(np.array_equal(a, b) for a, b in zip(raw.masks, crops))


def test_scores_are_class_scores_times_mask_quality_best_first(tiny_model, monkeypatch):
    image = _image(72, 96)
    monkeypatch.setattr(predict_module, "mask_quality", lambda masks: torch.ones(len(masks)))
    with exact():
        plain = predict(tiny_model, image, tile_size=128, overlap=32, max_detections=10)  # class scores, best first
    quality = torch.linspace(0.1, 1.0, len(plain))  # rising: reverses the class-score order
    monkeypatch.setattr(predict_module, "mask_quality", lambda masks: quality[: len(masks)])
    with exact():
        rescored = predict(tiny_model, image, tile_size=128, overlap=32, max_detections=10)
    expected = plain.scores * quality.numpy()
    order = np.argsort(-expected, kind="stable")
    assert len(plain) > 2 and order.tolist() != list(range(len(plain)))
    np.testing.assert_allclose(rescored.scores, expected[order], rtol=1e-6)
    np.testing.assert_array_equal(rescored.boxes, plain.boxes[order])
    assert all(np.array_equal(a, plain.masks[i]) for a, i in zip(rescored.masks, order))


def test_iter_predict_reports_each_tile_and_returns_the_result(tiny_model):
    image = _image(80, 90, seed=2)
    steps = iter_predict(tiny_model, image, tile_size=48, overlap=16, max_detections=10)
    progress = []
    raw = drain(steps, progress.append)
    assert [p[:2] for p in progress] == [(k, 6) for k in range(0, 7)]  # 0: the pass has begun
    assert {p.name for p in progress} == {"tile"}
    _assert_valid(raw, (80, 90))
    assert 0 < len(raw) <= 6 * 10


def test_iter_predict_stops_between_tiles_when_asked(tiny_model):
    seen = []  # Cancel is clicked once the pass began and two tiles are done (checks run inside tiles too)
    steps = iter_predict(tiny_model, _image(80, 90, seed=2), tile_size=48, overlap=16,
                         should_stop=lambda: len(seen) >= 3)
    assert drain(steps, seen.append) is None  # stopped: no result
    assert [p.done for p in seen] == [0, 1, 2]  # the third tile never finishes


def test_max_detections_caps_each_tile_and_settings_come_back(tiny_model):
    tiny_model.train()
    try:
        raw = predict(tiny_model, _image(64, 64), max_detections=3)
        assert 0 < len(raw) <= 3
        assert tiny_model.training
        assert tiny_model.roi_heads.detections_per_img == 10
    finally:
        tiny_model.eval()


def test_cancelling_between_tiles_restores_the_model(tiny_model):
    tiny_model.train()
    try:
        steps = iter_predict(tiny_model, _image(64, 100), tile_size=64, overlap=16, max_detections=2)
        assert next(steps)[:2] == (0, 2) and next(steps)[:2] == (1, 2)
        assert not tiny_model.training and tiny_model.roi_heads.detections_per_img == 2
        steps.close()
        assert tiny_model.training and tiny_model.roi_heads.detections_per_img == 10
    finally:
        tiny_model.eval()


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((32, 32), np.uint8),
        np.zeros((32, 32, 4), np.uint8),
        np.zeros((32, 32, 3), np.float32),
        np.zeros((0, 32, 3), np.uint8),
        [[0, 0, 0]],
    ],
)
def test_predict_rejects_images_outside_the_convention_before_running(tiny_model, image):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        iter_predict(tiny_model, image)


def test_bad_tiling_settings_are_rejected(tiny_model):
    with pytest.raises(ValueError):
        iter_predict(tiny_model, _image(32, 32), tile_size=64, overlap=64)
    with pytest.raises(ValueError):
        iter_predict(tiny_model, _image(32, 32), max_detections=0)


# --- de-duplication across tile seams, with a perfect fake detector -----------------------------


def mask_targets(masks: list[np.ndarray], boxes: torch.Tensor) -> torch.Tensor:
    """N x 28 x 28: each object's mask on its box as training shows it to the network (torchvision's
    ``project_masks_on_boxes``): what a perfectly trained mask head predicts."""
    if not len(masks):
        return torch.zeros(0, 28, 28)
    rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes.float()], dim=1)
    return roi_align(torch.from_numpy(np.stack(masks))[:, None].float(), rois, (28, 28), 1.0)[:, 0]


class PerfectDetector(torch.nn.Module):
    """Finds every bright connected blob in the tile it is given, cut or whole, like a real one.

    Its score is the blob's grey level, so each object of the synthetic image is recognisable.
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[tuple[int, int]] = []

    def detect(self, images: list[torch.Tensor], keep=None) -> list[dict[str, torch.Tensor]]:
        (image,) = images
        self.calls.append(tuple(image.shape[-2:]))
        grey = image[0].numpy()
        blobs = connected_components(grey > 0)
        regions = regionprops(blobs, intensity_image=grey)
        boxes = torch.tensor([[r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]] for r in regions],
                             dtype=torch.float32).reshape(-1, 4)
        n = len(regions)
        det = {
            "boxes": boxes,
            "scores": torch.tensor([r.intensity_max for r in regions], dtype=torch.float32),
            "labels": torch.ones(n, dtype=torch.int64),
            "masks": mask_targets([blobs == r.label for r in regions], boxes),
        }
        sel = keep(det["boxes"]) if keep is not None else slice(None)
        return [{k: v[sel] for k, v in det.items()}]


def _seam_image() -> tuple[np.ndarray, dict[int, tuple[int, int, int, int]]]:
    """160 x 160 with 16 x 16 squares across every tile edge and overlap midline of the grid.

    With tile_size 64 and overlap 24 the 58 px tiles start at 0, 34, 68, 102 (edges at 34, 58, 68,
    92, 102, 126, midlines at 46, 80, 114); squares are 2+ px apart so each is one connected blob.
    """
    image = np.zeros((160, 160, 3), np.uint8)
    objects = {}
    starts = (2, 22, 41, 59, 77, 95, 113, 136)
    for k, (y, x) in enumerate((y, x) for y in starts for x in starts):
        grey = 40 + 3 * k
        image[y : y + 16, x : x + 16] = grey
        objects[grey] = (x, y, x + 16, y + 16)
    return image, objects


def test_objects_straddling_seams_are_kept_exactly_once(monkeypatch):
    monkeypatch.setattr(predict_module, "mask_quality", lambda masks: torch.ones(len(masks)))  # scores: grey levels
    image, objects = _seam_image()
    detector = PerfectDetector()
    raw = predict(detector, image, tile_size=64, overlap=24)
    assert len(detector.calls) > 4 and all(max(s) <= 64 for s in detector.calls)
    found = np.round(raw.scores * 255).astype(int)
    assert sorted(found.tolist()) == sorted(objects)  # every object once, no doubles, no cut copies
    for i, grey in enumerate(found):
        x0, y0, x1, y1 = objects[grey]
        np.testing.assert_array_equal(np.argwhere(_canvas(raw, i) >= 128).min(0), [y0, x0])
        np.testing.assert_array_equal(np.argwhere(_canvas(raw, i) >= 128).max(0) + 1, [y1, x1])


def test_tiled_and_untiled_agree_for_a_perfect_detector(monkeypatch):
    monkeypatch.setattr(predict_module, "mask_quality", lambda masks: torch.ones(len(masks)))  # scores: grey levels
    image, _ = _seam_image()
    tiled = predict(PerfectDetector(), image, tile_size=64, overlap=24)
    whole = predict(PerfectDetector(), image, tile_size=4096)
    np.testing.assert_array_equal(tiled.scores, whole.scores)
    np.testing.assert_array_equal(tiled.boxes, whole.boxes)


# --- RawInstances and devices --------------------------------------------------------------------


def _raw3() -> RawInstances:
    masks = [np.full((2, 3), 200, np.uint8), np.full((4, 4), 100, np.uint8), np.full((1, 1), 255, np.uint8)]
    boxes = [[0, 0, 3, 2], [1, 1, 5, 5], [7, 7, 8, 8]]
    return RawInstances(boxes, [0.9, 0.5, 0.2], [1, 2, 1], masks, (10, 10))


def test_raw_instances_size_select_and_empty():
    raw = _raw3()
    assert len(raw) == 3
    assert raw.nbytes == 3 * 16 + 3 * 4 + 3 * 4 + (6 + 16 + 1)
    picked = raw.select([2, 0])
    assert picked.scores.tolist() == pytest.approx([0.2, 0.9]) and picked.masks[0].shape == (1, 1)
    assert raw.select(np.array([False, True, False])).labels.tolist() == [2]
    empty = RawInstances.empty((5, 6))
    assert len(empty) == 0 and empty.image_shape == (5, 6) and empty.boxes.shape == (0, 4)


def test_concatenate_sorts_by_score():
    raw = _raw3()
    merged = RawInstances.concatenate([raw.select([2]), raw.select([0, 1])], raw.image_shape)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.5, 0.2])
    assert [m.shape for m in merged.masks] == [(2, 3), (4, 4), (1, 1)]


def test_raw_instances_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        RawInstances(np.zeros((2, 4)), [0.5], [1], [np.zeros((1, 1), np.uint8)], (4, 4))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
    else:
        with pytest.raises(ValueError, match="there is no GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


# --- property: an image that fits one tile is segmented exactly as untiled -----------------------


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_image_that_fits_one_tile_is_the_untiled_result(tiny_model, data):
    h, w = data.draw(st.integers(16, 96), label="height"), data.draw(st.integers(16, 96), label="width")
    tile = data.draw(st.integers(max(h, w), 160), label="tile_size")
    overlap = data.draw(st.integers(0, tile - 1), label="overlap")
    image = _image(h, w, seed=data.draw(st.integers(0, 3), label="seed"))
    unit_quality = patch.object(predict_module, "mask_quality", lambda masks: torch.ones(len(masks)))
    with exact(), unit_quality:  # torchvision's result (its class scores, and its cap) is compared below
        tiled = predict(tiny_model, image, tile_size=tile, overlap=overlap, max_detections=10)
        whole = predict(tiny_model, image, tile_size=4096, overlap=0, max_detections=10)
    for name in ("boxes", "scores", "labels"):
        np.testing.assert_array_equal(getattr(tiled, name), getattr(whole, name))
    assert all(np.array_equal(a, b) for a, b in zip(tiled.masks, whole.masks)) and len(tiled) == len(whole)
    with torch.inference_mode():
        ref = tiny_model([to_tensor(image)])[0]
        det = tiny_model.detect([to_tensor(image)])[0]
    kept = paste_masks(det["masks"], det["boxes"], (h, w))[2]  # those whose box holds a pixel
    np.testing.assert_array_equal(tiled.scores, ref["scores"].numpy()[kept])
    np.testing.assert_array_equal(tiled.labels, ref["labels"].numpy()[kept])


def test_a_stop_inside_a_tile_ends_the_run_before_the_tile_is_done(tiny_model):
    """Cancel is checked before every layer of the network, not only between tiles (a 1024 px tile
    took 16 s on a busy CPU); the hooks are gone afterwards."""
    calls = []

    def stop_at_tenth() -> bool:
        calls.append(1)
        return len(calls) >= 10

    steps = list(iter_predict(tiny_model, _image(96, 96), tile_size=1024, should_stop=stop_at_tenth))
    assert [s.done for s in steps] == [0] and len(calls) == 10  # stopped within the one tile, after 9 layers
    assert not any(m._forward_pre_hooks for m in tiny_model.modules())
    assert isinstance(predict(tiny_model, _image(96, 96)), RawInstances)  # runs on without the hooks


# --- the detection cap ---------------------------------------------------------------------------


def test_tile_cap_follows_the_tile_area_within_bounds():
    assert tile_cap((1024, 1024), 500) == 1024
    assert tile_cap((256, 256), 500) == 500  # never below the model's own cap
    assert tile_cap((512, 512), 100, scale=2.0) == 1024  # network pixels count
    assert tile_cap((100_000, 100_000), 500) == MAX_DETECTIONS


def test_tile_proposals_follow_the_area_below_the_exact_paths():
    assert tile_proposals((384, 384), 500) == 1152  # 128 network pixels each
    assert tile_proposals((256, 256), 500) == 1000  # at least torchvision's 1,000 (the exact path: 2,000)
    assert tile_proposals((1024, 1024), 1024) == 4096  # never above the exact path's 4 per detection
    assert tile_proposals((256, 256), 500, scale=2.0) == 2000  # network pixels count


def test_the_fast_path_sizes_proposals_per_tile_and_restores_them(tiny_model):
    def proposals(shape: tuple[int, int], tile: int, cap: int = 10) -> list[tuple[int, int]]:
        """(after NMS, per level before NMS) of each tile, fast then exact; a fixed cap: no second run."""
        seen = []
        hook = tiny_model.rpn.register_forward_pre_hook(
            lambda m, i: seen.append((m._post_nms_top_n["testing"], m._pre_nms_top_n["testing"])))
        try:
            predict(tiny_model, _image(*shape), tile_size=tile, overlap=tile // 4, max_detections=cap)
            with exact():
                predict(tiny_model, _image(*shape), tile_size=tile, overlap=tile // 4, max_detections=cap)
        finally:
            hook.remove()
        return seen

    assert proposals((96, 64), 64) == [(1000, 1000)] * 4  # small tiles: the floor, as the exact path
    assert proposals((400, 400), 512, cap=500) == [(1250, 1250), (2000, 2000)]  # fast: 1 per 128 px^2
    assert tiny_model.rpn._post_nms_top_n["testing"] == tiny_model.rpn._pre_nms_top_n["testing"] == 1000


@pytest.fixture(scope="module")
def dense_mosaic(one_thread):
    """The nuclei model with its cap lowered to 20, and a 2 x 2 mosaic of sample nuclei crops (~40 cells)."""
    from napari_cellseg.model.checkpoint import load_model
    from napari_cellseg.io.images import read_image
    from napari_cellseg.sample_data import SAMPLE_DATASET

    model = load_model("nuclei")[0]
    set_detections_per_img(model, 20)
    image = read_image(sorted((SAMPLE_DATASET / "val").iterdir())[0] / "image.tif")[:128, :128]
    top = np.concatenate([image, image[:, ::-1]], axis=1)
    return model, np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def test_a_tile_that_hits_the_cap_is_run_again_with_a_higher_one(dense_mosaic):
    model, image = dense_mosaic
    with warnings.catch_warnings():
        warnings.simplefilter("error", DetectionCapWarning)
        raw = predict(model, image)
    generous = predict(model, image, max_detections=500)  # more proposals: a longer low-score tail
    confident = int((raw.scores >= 0.5).sum())
    assert raw.capped_tiles == 0 and len(raw) > 20 and confident == (generous.scores >= 0.5).sum() > 20
    assert model.roi_heads.detections_per_img == 20  # the model's cap comes back


def test_a_fixed_cap_that_is_hit_is_never_silent(dense_mosaic):
    model, image = dense_mosaic
    with pytest.warns(DetectionCapWarning, match="1 of 1 tile.* limit of 20 detections"):
        raw = predict(model, image, max_detections=20)
    assert raw.capped_tiles == 1 and len(raw) == 20
    assert "1 tile(s) hit the detection limit" in scale_note(raw)
