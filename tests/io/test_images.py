"""Reading images and label images: layouts, dtypes, and one clear error per kind of bad file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_cellseg.errors import DatasetError
from napari_cellseg.io.images import read_image, read_labels, to_rgb_uint8, to_tensor, write_labels
from conftest import DSB2018


needs_dsb2018 = pytest.mark.skipif(not DSB2018.is_dir(), reason="real DSB2018 data not available")
RNG = np.random.default_rng(0)


def _write(path: Path, array: np.ndarray, **kwargs) -> Path:
    tifffile.imwrite(path, array, **kwargs)
    return path


# ---------------------------------------------------------------------------------------- read_image


def test_read_image_rgba_lzw_drops_alpha(tmp_path: Path) -> None:
    rgba = RNG.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    image = read_image(_write(tmp_path / "a.tif", rgba, compression="lzw", photometric="rgb"))
    assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
    np.testing.assert_array_equal(image, rgba[..., :3])


def test_read_image_grey_uint8_is_repeated_unchanged(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, (16, 24), dtype=np.uint8)
    image = read_image(_write(tmp_path / "g.tiff", grey))
    assert image.shape == (16, 24, 3)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], grey)


def test_read_image_png(tmp_path: Path) -> None:
    from PIL import Image

    rgb = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)


def test_read_image_uint16_ignores_hot_pixels(tmp_path: Path) -> None:
    grey = np.tile(np.arange(100, 1100, 10, dtype=np.uint16), (100, 1))  # 100 x 100 ramp
    grey[0, 0] = 65535  # one hot pixel must not darken the whole image
    image = read_image(_write(tmp_path / "16.tif", grey))
    assert image[50, 0, 0] <= 2 and image[50, -1, 0] >= 253
    assert 100 < image[50, 50, 0] < 155  # mid-ramp stays mid-grey


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a word the message must hold)."""
    (tmp / "empty.tif").write_bytes(b"")
    (tmp / "random.tif").write_bytes(np.random.default_rng(1).bytes(300))
    good = _write(tmp / "good.tif", RNG.integers(0, 256, (64, 64, 4), dtype=np.uint8), compression="lzw")
    (tmp / "truncated.tif").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _write(tmp / "stack.tif", np.zeros((6, 16, 16), np.uint8))
    _write(tmp / "zstack.tif", np.zeros((3, 16, 16), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    _write(tmp / "tiny.tif", np.zeros((1, 1), np.uint8))
    _write(tmp / "absurd.tif", np.zeros((16, 16), np.uint8))
    with tifffile.TiffFile(tmp / "absurd.tif", mode="r+") as tif:  # claim 100000 x 100000 pixels
        tif.pages[0].tags["ImageWidth"].overwrite(100_000)
        tif.pages[0].tags["ImageLength"].overwrite(100_000)
    (tmp / "folder.tif").mkdir()
    return {
        "missing": (tmp / "missing.tif", "not found"),
        "empty": (tmp / "empty.tif", "empty"),
        "random": (tmp / "random.tif", "TIFF"),
        "truncated": (tmp / "truncated.tif", "truncated"),
        "stack": (tmp / "stack.tif", "stack"),
        "zstack": (tmp / "zstack.tif", "2-D slice"),
        "tiny": (tmp / "tiny.tif", "1 x 1"),
        "absurd": (tmp / "absurd.tif", "100000 x 100000"),
        "folder": (tmp / "folder.tif", "folder"),
    }


BAD_KINDS = ["missing", "empty", "random", "truncated", "stack", "zstack", "tiny", "absurd", "folder"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_read_image_bad_file_gives_one_line_naming_it(tmp_path: Path, kind: str) -> None:
    path, word = _bad_files(tmp_path)[kind]
    with pytest.raises(DatasetError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and word in message and "\n" not in message


def test_read_image_refuses_unreadable_other_format(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"not a png at all" * 4)
    with pytest.raises(DatasetError, match="x.png"):
        read_image(tmp_path / "x.png")


# ---------------------------------------------------------------------------------------- to_rgb_uint8


@pytest.mark.parametrize(
    "shape, expected_grey",
    [((10, 12), True), ((10, 12, 1), True), ((10, 12, 2), True), ((1, 10, 12), True), ((10, 12, 3), False),
     ((10, 12, 4), False), ((3, 10, 12), False), ((4, 10, 12), False), ((1, 1, 10, 12, 3), False)],
)
def test_to_rgb_uint8_layouts(shape: tuple[int, ...], expected_grey: bool) -> None:
    array = RNG.integers(0, 256, shape, dtype=np.uint8)
    rgb = to_rgb_uint8(array)
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert (rgb[..., 0] == rgb[..., 1]).all() == expected_grey


def test_to_rgb_uint8_two_channels_keeps_first() -> None:
    array = np.zeros((10, 12, 2), np.uint8)
    array[..., 0], array[..., 1] = 7, 200
    assert (to_rgb_uint8(array) == 7).all()


def test_to_rgb_uint8_channel_first_matches_channel_last() -> None:
    hwc = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb_uint8(np.moveaxis(hwc, 2, 0)), hwc)


def test_to_rgb_uint8_constant_nan_and_bool() -> None:
    assert (to_rgb_uint8(np.full((9, 9), 1234.0)) == 0).all()
    assert (to_rgb_uint8(np.full((9, 9), np.nan, np.float32)) == 0).all()
    floats = np.linspace(0, 1, 81, dtype=np.float32).reshape(9, 9)
    floats[4, 4] = np.nan
    rgb = to_rgb_uint8(floats)
    assert rgb[4, 4, 0] == 0 and rgb[-1, -1, 0] == 255 and rgb[0, 0, 0] == 0
    mask = np.eye(9, dtype=bool)
    assert set(np.unique(to_rgb_uint8(mask))) == {0, 255}


def test_to_rgb_uint8_refuses_stack() -> None:
    with pytest.raises(DatasetError, match="stack"):
        to_rgb_uint8(np.zeros((7, 20, 20), np.uint8))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64]),
        shape=st.tuples(st.integers(5, 12), st.integers(5, 12), st.sampled_from([1, 2, 3, 4])),
    )
)
def test_to_rgb_uint8_any_input_is_deterministic_rgb(array: np.ndarray) -> None:
    rgb = to_rgb_uint8(array)
    assert rgb.shape == (*array.shape[:2], 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, to_rgb_uint8(array.copy()))


def test_a_float_image_with_a_tiny_range_is_stretched_not_turned_to_nan() -> None:
    """255 / (hi - lo) overflows for subnormal ranges; the stretch must still give 0..255."""
    image = np.array([[0, 1e-310], [2e-310, 3e-310]], np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grey = to_rgb_uint8(image)[..., 0]
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) == 4


def test_to_tensor_layout_and_range() -> None:
    image = np.zeros((5, 6, 3), np.uint8)
    image[..., 1] = 255
    tensor = to_tensor(image)
    assert tuple(tensor.shape) == (3, 5, 6) and str(tensor.dtype) == "torch.float32"
    assert float(tensor[1].min()) == 1.0 and float(tensor[0].max()) == 0.0


# ---------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64, np.uint32, np.float32])
def test_read_labels_accepts_integral_types(tmp_path: Path, dtype: type) -> None:
    labels = RNG.integers(0, 50, (16, 20)).astype(dtype)
    out = read_labels(_write(tmp_path / "m.tif", labels), shape=(16, 20, 3))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, labels.astype(np.int64))


def test_read_labels_squeezes_singleton_axes(tmp_path: Path) -> None:
    labels = RNG.integers(0, 5, (1, 16, 20)).astype(np.uint16)
    assert read_labels(_write(tmp_path / "m.tif", labels)).shape == (16, 20)


@pytest.mark.parametrize(
    "array, word",
    [
        (np.full((16, 16), 0.5, np.float32), "fractional"),
        (np.full((16, 16), -3, np.int16), "negative"),
        (np.zeros((2, 16, 16), np.uint16), "2-D"),
    ],
)
def test_read_labels_refuses_non_labels(tmp_path: Path, array: np.ndarray, word: str) -> None:
    path = _write(tmp_path / "bad mask.tif", array)
    with pytest.raises(DatasetError, match=word) as info:
        read_labels(path)
    assert str(path) in str(info.value)


def test_read_labels_shape_mismatch_names_both_sizes(tmp_path: Path) -> None:
    path = _write(tmp_path / "class1.tif", np.zeros((16, 20), np.uint16))
    with pytest.raises(DatasetError) as info:
        read_labels(path, shape=(32, 40))
    message = str(info.value)
    assert str(path) in message and "16 x 20" in message and "32 x 40" in message


def test_write_labels_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out" / "class1.tif"
    small = RNG.integers(0, 300, (16, 20)).astype(np.int32)
    write_labels(path, small)
    assert tifffile.imread(path).dtype == np.uint16
    big = small.copy()
    big[0, 0] = 100_000
    write_labels(path, big)  # overwrites in place, no temporary file left behind
    assert tifffile.TiffFile(path).pages[0].compression != 1
    np.testing.assert_array_equal(read_labels(path), big)
    assert os.listdir(path.parent) == ["class1.tif"]


def test_write_labels_refuses_float_without_touching_file(tmp_path: Path) -> None:
    path = tmp_path / "class1.tif"
    write_labels(path, np.ones((9, 9), np.uint16))
    with pytest.raises(ValueError):
        write_labels(path, np.full((9, 9), 0.5))
    assert read_labels(path).max() == 1


# ---------------------------------------------------------------------------------------- real data


@needs_dsb2018
def test_real_sample_image_and_mask_agree() -> None:
    sample = DSB2018 / "train" / "13c8ff1f49886e91c98ce795c93648ad8634c782ff57eb928ce29496b0425057"
    image = read_image(sample / "image.tif")
    labels = read_labels(sample / "class1.tif", shape=image.shape)
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert labels.shape == image.shape[:2] and labels.max() > 0
