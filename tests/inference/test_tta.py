"""Test-time augmentation: mirroring back is exact, the views of one object merge into one instance,
a flip-equivariant detector gives the same objects with and without flips, and ``tta`` adds an enlarged view."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_cellseg.inference.predict import predict
from napari_cellseg.io.raw import RawInstances
from napari_cellseg.inference.tiling import tile_grid
from napari_cellseg.inference.scale import AIM, ZOOM_VIEW, iter_predict_scaled
from napari_cellseg.inference.tta import FLIPS, flipped, merge_views, unflip
from napari_cellseg.progress import drain
from test_predict import PerfectDetector, _seam_image


def _raw(boxes, scores, labels, shape=(20, 30)) -> RawInstances:
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 256, (y1 - y0, x1 - x0), dtype=np.uint8) for x0, y0, x1, y1 in boxes]
    return RawInstances(np.array(boxes).reshape(-1, 4), scores, labels, masks, shape)


def _mask_boxes(raw: RawInstances) -> np.ndarray:
    """Each instance's box around its pixels at mask threshold 0.5, in image coordinates (its crop may
    reach a pixel further where the mask fades out: mirrored, on the other side)."""
    out = []
    for (x0, y0, _, _), mask in zip(raw.boxes, raw.masks):
        ys, xs = np.nonzero(mask >= 128)
        out.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
    return np.array(out).reshape(-1, 4)


def test_unflip_moves_boxes_and_flips_crops_and_twice_is_identity():
    raw = _raw([[2, 3, 7, 9], [20, 0, 30, 4]], [0.9, 0.4], [1, 2])
    once = unflip(raw, True, False)
    np.testing.assert_array_equal(once.boxes, [[23, 3, 28, 9], [0, 0, 10, 4]])
    np.testing.assert_array_equal(once.masks[0], raw.masks[0][:, ::-1])
    both = unflip(raw, True, True)
    np.testing.assert_array_equal(both.boxes, [[23, 11, 28, 17], [0, 16, 10, 20]])
    np.testing.assert_array_equal(both.masks[1], raw.masks[1][::-1, ::-1])
    for lr, ud in FLIPS:
        twice = unflip(unflip(raw, lr, ud), lr, ud)
        np.testing.assert_array_equal(twice.boxes, raw.boxes)
        assert all(np.array_equal(m, n) for m, n in zip(twice.masks, raw.masks))


def test_a_box_found_in_a_flipped_image_comes_back_to_the_object():
    image = np.zeros((20, 30), np.uint8)
    image[3:9, 2:7] = 255
    for lr, ud in FLIPS:
        ys, xs = np.nonzero(flipped(image, lr, ud))
        found = RawInstances([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [1.0], [1],
                             [np.full((6, 5), 255, np.uint8)], (20, 30))
        np.testing.assert_array_equal(unflip(found, lr, ud).boxes, [[2, 3, 7, 9]])


def test_an_object_seen_in_both_views_is_one_instance_with_averaged_mask_and_score():
    a = RawInstances([[0, 0, 4, 2]], [0.8], [1], [np.full((2, 4), 200, np.uint8)], (10, 10))
    b = RawInstances([[1, 0, 5, 2]], [0.6], [1], [np.full((2, 4), 100, np.uint8)], (10, 10))  # IoU 0.6
    (merged_box,), (score,) = (m := merge_views([a, b])).boxes, m.scores
    np.testing.assert_array_equal(merged_box, [0, 0, 5, 2])
    assert score == pytest.approx(0.7)
    np.testing.assert_array_equal(m.masks[0], [[100, 150, 150, 150, 50]] * 2)  # 0 where a view has no crop


def test_objects_seen_in_one_view_only_keep_their_mask_at_half_the_score():
    a = RawInstances([[0, 0, 4, 4]], [0.8], [1], [np.full((4, 4), 255, np.uint8)], (10, 10))
    b = RawInstances([[0, 0, 4, 4], [6, 6, 9, 9]], [0.6, 0.5], [2, 1],
                     [np.ones((4, 4), np.uint8), np.ones((3, 3), np.uint8)],
                     (10, 10))  # same box as a but another class: not the same object
    m = merge_views([a, b])
    np.testing.assert_allclose(m.scores, [0.4, 0.3, 0.25])  # sorted by score
    np.testing.assert_array_equal(m.labels, [1, 2, 1])
    assert np.array_equal(m.masks[0], a.masks[0]) and len(merge_views([a, RawInstances.empty((10, 10))])) == 1


def test_four_views_average_over_all_four_with_a_missed_view_counted_as_zero():
    crop = np.full((2, 4), 200, np.uint8)
    seen = RawInstances([[0, 0, 4, 2]], [0.8], [1], [crop], (10, 10))
    moved = RawInstances([[1, 0, 5, 2]], [0.4], [1], [crop], (10, 10))  # IoU 0.6 with the first box
    stray = RawInstances([[6, 6, 9, 9]], [0.9], [1], [np.full((3, 3), 100, np.uint8)], (10, 10))
    m = merge_views([seen, moved, stray, seen])
    np.testing.assert_allclose(m.scores, [0.5, 0.225])  # (0.8 + 0.4 + 0.8) / 4; 0.9 / 4
    np.testing.assert_array_equal(m.boxes, [[0, 0, 5, 2], [6, 6, 9, 9]])
    np.testing.assert_array_equal(m.masks[0], [[133, 200, 200, 200, 67]] * 2)  # over the 3 views that saw it
    np.testing.assert_array_equal(m.masks[1], np.full((3, 3), 100))


def test_views_of_different_images_are_refused():
    with pytest.raises(ValueError, match="different images"):
        merge_views([RawInstances.empty((10, 10)), RawInstances.empty((10, 11))])


def test_flips_with_a_flip_equivariant_detector_keep_every_object_once():
    image, objects = _seam_image()
    detector = PerfectDetector()
    plain = predict(detector, image, tile_size=64, overlap=24)
    flipped = predict(detector, image, tile_size=64, overlap=24, flip=True)
    assert len(detector.calls) == 5 * len(tile_grid(image.shape[:2], 64, 24))  # each tile of the four views
    assert len(flipped) == len(plain) == len(objects)
    ours, theirs = _mask_boxes(plain), _mask_boxes(flipped)
    order = np.lexsort(ours.T), np.lexsort(theirs.T)
    np.testing.assert_array_equal(theirs[order[1]], ours[order[0]])
    np.testing.assert_allclose(flipped.scores[order[1]], plain.scores[order[0]], rtol=1e-6)


class _SizedDetector(PerfectDetector):
    """A detector with an image scale that segments 16 px objects best: auto keeps the seam image at 1x."""

    object_diameter = 16 / AIM

    def __init__(self) -> None:
        super().__init__()
        self.transform = SimpleNamespace(image_scale=1.0)


def test_tta_reuses_auto_scales_first_pass_as_the_unflipped_view_and_adds_an_enlarged_view():
    image, objects = _seam_image()
    detector = _SizedDetector()
    plain = predict(detector, image, tile_size=64, overlap=24, flip=True)
    tiles, detector.calls, progress = len(tile_grid(image.shape[:2], 64, 24)), [], []
    raw = drain(iter_predict_scaled(detector, image, tile_size=64, overlap=24, tta=True), progress.append)
    enlarged = len(tile_grid(image.shape[:2], 64, round(24 / ZOOM_VIEW)))  # tiles of at least 64 px
    # measured once, then three mirrored views, then the enlarged one
    assert raw.scale == 1.0 and len(detector.calls) == 4 * tiles + enlarged
    assert [p.name for p in progress][-1] == "enlarged view" and progress[0].name == "measuring nuclei"
    assert len(raw) == len(plain) == len(objects)  # every object once: the views agree
    ours, theirs = _mask_boxes(plain), _mask_boxes(raw)
    order = np.lexsort(ours.T), np.lexsort(theirs.T)
    np.testing.assert_array_equal(theirs[order[1]], ours[order[0]])
    np.testing.assert_allclose(raw.scores[order[1]], plain.scores[order[0]], rtol=1e-6)


def test_tta_on_a_model_that_cannot_resize_is_the_four_flips_only():
    image, _ = _seam_image()
    detector = PerfectDetector()  # like an ONNX graph: no image scale to change
    raw = drain(iter_predict_scaled(detector, image, tile_size=64, overlap=24, tta=True))
    assert raw.scale == 1.0 and len(detector.calls) == 4 * len(tile_grid(image.shape[:2], 64, 24))
