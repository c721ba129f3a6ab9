"""Augmentations: geometry stays aligned between image and labels, results follow the generator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_cellseg.training.transforms import (
    ColorJitter, Compose, RandomFlip, RandomRot90, RandomScaleCrop, RandomStain, mosaic, resize_labels, train_augment,
)


def _coded(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Label blocks whose ids are written in the image, so misalignment is visible; read-only like the cache."""
    rng = np.random.default_rng(seed)
    labels = np.kron(rng.integers(0, 40, (height // 4 + 1, width // 4 + 1)), np.ones((4, 4), int))[:height, :width]
    labels = labels.astype(np.int32)
    image = np.stack([labels * 5, labels * 3, np.full_like(labels, 9)], axis=-1).astype(np.uint8)
    other = (labels % 3).astype(np.int32)
    for array in (image, labels, other):
        array.setflags(write=False)
    return image, {1: labels, 2: other}


def _assert_aligned(image: np.ndarray, labels: dict[int, np.ndarray]) -> None:
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert all(v.shape == image.shape[:2] and v.dtype == np.int32 for v in labels.values())
    np.testing.assert_array_equal(image[..., 0], (labels[1] * 5).astype(np.uint8))
    np.testing.assert_array_equal(labels[2], labels[1] % 3)


@pytest.mark.parametrize("transform", [RandomFlip(p=1.0), RandomFlip(horizontal=False, p=1.0), RandomRot90()])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_transforms_keep_alignment(transform, seed: int) -> None:
    image, labels = _coded(20, 28)
    out_image, out_labels = transform(image, labels, np.random.default_rng(seed))
    _assert_aligned(out_image, out_labels)
    assert sorted(out_image.shape[:2]) == [20, 28]
    assert np.array_equal(np.sort(out_labels[1], axis=None), np.sort(labels[1], axis=None))


def test_flip_and_rot90_do_what_they_say() -> None:
    image, labels = _coded(8, 12)
    flipped, flipped_labels = RandomFlip(vertical=False, p=1.0)(image, labels, np.random.default_rng(0))
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    np.testing.assert_array_equal(flipped_labels[1], labels[1][:, ::-1])
    rng = np.random.default_rng(7)
    k = int(np.random.default_rng(7).integers(4))
    rotated, _ = RandomRot90()(image, labels, rng)
    np.testing.assert_array_equal(rotated, np.rot90(image, k))


def test_scale_crop_without_scaling_is_an_aligned_crop() -> None:
    image, labels = _coded(100, 90)
    out_image, out_labels = RandomScaleCrop(32, scale=(1.0, 1.0))(image, labels, np.random.default_rng(3))
    assert out_image.shape == (32, 32, 3)
    _assert_aligned(out_image, out_labels)
    windows = np.lib.stride_tricks.sliding_window_view(labels[1], (32, 32))
    assert (windows == out_labels[1]).all(axis=(2, 3)).any()  # the output is a window of the input


@pytest.mark.parametrize("seed", range(4))
def test_scale_crop_bounds_and_nearest_labels(seed: int) -> None:
    image, labels = _coded(300, 200, seed)
    out_image, out_labels = RandomScaleCrop(64)(image, labels, np.random.default_rng(seed))
    assert max(out_image.shape[:2]) <= 64 and min(out_image.shape[:2]) >= 60
    assert set(np.unique(out_labels[1])) <= set(np.unique(labels[1]))  # no blended ids
    assert out_image.dtype == np.uint8 and out_labels[1].shape == out_image.shape[:2]


def test_scale_crop_small_image_is_scaled_not_padded() -> None:
    image, labels = _coded(40, 30)
    sizes = set()
    for seed in range(6):
        out_image, out_labels = RandomScaleCrop(512)(image, labels, np.random.default_rng(seed))
        assert out_labels[1].shape == out_image.shape[:2]
        sizes.add(out_image.shape[:2])
        ratio = out_image.shape[0] / 40
        assert 0.7 < ratio < 1.4 and abs(out_image.shape[1] / 30 - ratio) < 0.05  # whole image, one scale
    assert len(sizes) > 1


def test_resize_labels_nearest() -> None:
    labels = np.array([[1, 2], [3, 4]], np.int32)
    np.testing.assert_array_equal(resize_labels(labels, (4, 4)), np.kron(labels, np.ones((2, 2), np.int32)))
    np.testing.assert_array_equal(resize_labels(np.kron(labels, np.ones((3, 3), np.int32)), (2, 2)), labels)


def test_color_jitter_is_mild_keeps_grey_and_labels() -> None:
    rng = np.random.default_rng(0)
    grey = np.repeat(rng.integers(0, 256, (16, 16, 1), dtype=np.uint8), 3, axis=2)
    labels = {1: np.ones((16, 16), np.int32)}
    outputs = [ColorJitter()(grey, labels, np.random.default_rng(seed)) for seed in range(5)]
    for image, out_labels in outputs:
        assert out_labels is labels and image.dtype == np.uint8
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
        assert np.abs(image.astype(int) - grey).mean() < 30
    assert any(not np.array_equal(image, grey) for image, _ in outputs)


def test_color_jitter_changes_saturation_of_colour() -> None:
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[...] = (200, 60, 90)
    jitter = ColorJitter(brightness=0, contrast=0, saturation=0.5)
    spreads = {int(np.ptp(jitter(colour, {}, np.random.default_rng(s))[0][0, 0])) for s in range(5)}
    assert len(spreads) > 1


def test_random_stain_recolours_keeps_labels_and_range() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    labels = {1: np.ones((16, 16), np.int32)}
    outputs = [RandomStain(p=1.0)(image, labels, np.random.default_rng(seed)) for seed in range(6)]
    for out, out_labels in outputs:
        assert out_labels is labels and out.dtype == np.uint8 and out.shape == image.shape
        assert abs(float(out.mean()) - float(image.mean())) < 40  # a re-stain, not noise
    assert len({out.tobytes() for out, _ in outputs}) == 6
    off, _ = RandomStain(p=0.0)(image, labels, np.random.default_rng(1))
    assert off is image


def test_train_augment_is_reproducible_and_bounded() -> None:
    image, labels = _coded(150, 170)
    augment = train_augment(crop_size=48)
    assert isinstance(augment, Compose) and len(augment.transforms) == 4
    a = augment(image, labels, np.random.default_rng(11))
    b = augment(image, labels, np.random.default_rng(11))
    c = augment(image, labels, np.random.default_rng(12))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1][1], b[1][1])
    assert not np.array_equal(a[0], c[0]) or not np.array_equal(a[1][1], c[1][1])
    assert max(a[0].shape[:2]) <= 48 and a[1][1].shape == a[0].shape[:2]
    assert set(np.unique(a[1][1])) <= set(np.unique(labels[1]))


@pytest.mark.parametrize("strong", [False, True])
def test_train_augment_zoom_replaces_the_presets_range(strong: bool) -> None:
    """With zoom 2-3 every 48 px crop shows a window of 16-24 source pixels (cells 2-3x larger)."""
    crop = train_augment(crop_size=48, strong=strong, zoom=(2.0, 3.0)).transforms[0]
    assert isinstance(crop, RandomScaleCrop) and crop.scale == (2.0, 3.0)
    preset = train_augment(crop_size=48, strong=strong).transforms[0]
    assert preset.scale == ((0.5, 2.0) if strong else (0.75, 1.33))
    ids = np.arange(1, 400 * 400 + 1, dtype=np.int32).reshape(400, 400)  # each pixel its own id
    image = np.zeros((400, 400, 3), np.uint8)
    for seed in range(20):
        _, out = crop(image, {1: ids}, np.random.default_rng(seed))
        assert 45 <= min(out[1].shape) <= max(out[1].shape) <= 48 and 16 ** 2 <= np.unique(out[1]).size <= 24 ** 2


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60), st.integers(1, 60), st.integers(8, 64), st.integers(0, 2**32 - 1))
def test_train_augment_any_size(height: int, width: int, size: int, seed: int) -> None:
    image, labels = _coded(height, width)
    out_image, out_labels = train_augment(crop_size=size)(image, labels, np.random.default_rng(seed))
    assert out_image.ndim == 3 and 1 <= min(out_image.shape[:2]) and max(out_image.shape[:2]) <= size
    assert all(v.shape == out_image.shape[:2] for v in out_labels.values())


def _part(value: int, size: tuple[int, int], classes: dict[int, int]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """A flat image of grey ``value`` whose labels are each class's one instance filling it."""
    image = np.full((*size, 3), value, np.uint8)
    return image, {k: np.full(size, instance, np.int32) for k, instance in classes.items()}


@pytest.mark.parametrize("seed", range(5))
def test_mosaic_puts_one_part_in_each_quadrant_with_its_own_ids(seed: int) -> None:
    """Part 2 holds the largest id a label file may, parts 1 and 4 the same id; part 4 is smaller than
    its quadrant (zeros around it)."""
    parts = [_part(10, (32, 32), {1: 1}), _part(20, (32, 32), {1: 2**31 - 1}), _part(30, (32, 32), {2: 7}),
             _part(40, (12, 12), {1: 1})]
    image, labels = mosaic(parts, 32, np.random.default_rng(seed))
    assert image.shape == (32, 32, 3) and sorted(labels) == [1, 2]
    assert all(v.shape == (32, 32) and v.dtype == np.int32 for v in labels.values())
    cy, cx = np.argwhere(image[..., 0] == 40)[0]  # the smallest part starts at the split point
    assert 8 <= cy <= 24 and 8 <= cx <= 24
    assert (image[:cy, :cx, 0] == 10).all() and (image[:cy, cx:, 0] == 20).all()
    assert (image[cy:, :cx, 0] == 30).all()
    corner = image[cy:, cx:, 0].copy()
    h, w = min(32 - cy, 12), min(32 - cx, 12)
    assert (corner[:h, :w] == 40).all()
    corner[:h, :w] = 0
    assert not corner.any()
    # the instances are numbered anew in order of the parts: no two share an id
    assert set(np.unique(labels[1][:cy, :cx])) == {1} and set(np.unique(labels[1][:cy, cx:])) == {2}
    assert set(np.unique(labels[2][cy:, :cx])) == {3} and set(np.unique(labels[1][cy:, :cx])) == {0}
    assert set(np.unique(labels[1][cy:, cx:])) <= {0, 4} and (labels[1][image[..., 0] == 40] == 4).all()
    assert (labels[1][image[..., 0] == 0] == 0).all() and (labels[2][image[..., 0] == 0] == 0).all()


def test_mosaic_needs_four_parts() -> None:
    with pytest.raises(ValueError, match="four parts"):
        mosaic([_part(1, (8, 8), {1: 1})] * 3, 8, np.random.default_rng(0))
