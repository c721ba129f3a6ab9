"""Channel axes: found from TIFF metadata, napari's rgb flag or the shape; never taken for planes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cellseg.io.channels import MERGED, ChannelPlanes, channel_axis, choose, parse_channel
from napari_cellseg.io.image_reader import read
from napari_cellseg.cli.main import build_parser
from napari_cellseg.errors import DatasetError


def _two_channels() -> tuple[np.ndarray, np.ndarray]:
    nuclei = np.zeros((64, 72), np.uint16)
    nuclei[10:30, 10:30] = 3000
    return np.random.default_rng(0).integers(0, 4000, (64, 72)).astype(np.uint16), nuclei


def test_channel_axis_rules():
    assert channel_axis((2, 64, 72)) == 0 and channel_axis((64, 72, 2)) == 2
    assert channel_axis((64, 72, 3), rgb=True) == 2 and channel_axis((5, 64, 72, 2)) == 3
    assert channel_axis((5, 64, 72)) is None and channel_axis((64, 72)) is None  # planes, or one grey image
    assert channel_axis((3, 64, 72), "ZYX") is None  # the file says slices
    assert channel_axis((64, 2, 72), "YCX") == 1  # the file says channels


@pytest.mark.parametrize("layout", ["first", "last", "imagej"])
def test_read_the_chosen_channel_of_a_file(tmp_path, layout):
    other, nuclei = _two_channels()
    path = tmp_path / "cells.tif"
    if layout == "imagej":
        tifffile.imwrite(path, np.stack([other, nuclei]), imagej=True, metadata={"axes": "CYX"})
    else:
        tifffile.imwrite(path, np.stack([other, nuclei], 0 if layout == "first" else -1))
    image = read(path, channel=1)
    np.testing.assert_array_equal(image, choose(nuclei, None, None))
    assert image.shape == (64, 72, 3) and image[20, 20, 0] == 255 and image[50, 50, 0] == 0
    merged = read(path, channel=MERGED)
    assert merged.shape == (64, 72, 3) and merged[20, 20, 0] == 255
    with pytest.raises(DatasetError, match="2 channels; channel 3 does not exist"):
        read(path, channel=2)


def test_stack_planes_keep_only_the_chosen_channel():
    other, nuclei = _two_channels()
    movie = np.stack([np.stack([other, nuclei], -1)] * 5)  # (T, H, W, C)
    planes = ChannelPlanes(movie, 2, 1)
    assert planes.shape == (5, 64, 72)
    np.testing.assert_array_equal(planes[3], choose(nuclei, None, None))


def test_the_cli_takes_a_channel():
    parser = build_parser()
    args = parser.parse_args(["predict", "nuclei", "x.tif", "--out", "o", "--channel", "2"])
    assert args.channel == 1
    args = parser.parse_args(["export", "nuclei", "d", "--out", "r.json", "--channel", "merged"])
    assert args.channel == MERGED and parse_channel(None) is None
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "nuclei", "x.tif", "--out", "o", "--channel", "7"])
