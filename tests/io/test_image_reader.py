"""The one image reader: a file, a plane of a stack, either with a channel (``io.image_reader``)."""

import numpy as np
import pytest
import tifffile

from napari_cellseg.errors import DatasetError
from napari_cellseg.io import image_reader
from napari_cellseg.io.channels import MERGED
from napari_cellseg.io.images import read_image

from conftest import MOVIE_SHAPE as SHAPE, write_movie as _movie


@pytest.mark.parametrize(
    ("shape", "axes", "expected"),
    [
        ((5, 40, 48), "TYX", 0),
        ((3, 40, 48), "ZYX", 0),  # named: planes even when short
        ((5, 2, 40, 48), "ZCYX", 0),
        ((5, 40, 48), "QYX", 0),  # no metadata, longer than 4: planes
        ((3, 40, 48), "QYX", None),  # no metadata, short: colour channels, as for one image
        ((2, 40, 48, 3), "IYXS", 0),  # a separate colour axis: the first one is planes
        ((40, 48, 3), "YXS", None),
        ((1, 1, 40, 48), "TZYX", None),
    ],
)
def test_plane_axis_follows_the_documented_rule(shape, axes, expected):
    assert image_reader.plane_axis(shape, axes) == expected


def test_time_and_slices_together_are_refused():
    with pytest.raises(DatasetError, match="both time points and slices"):
        image_reader.plane_axis((3, 4, 40, 48), "TZYX")


def test_read_stack_keeps_planes_and_axis_while_read_image_still_refuses(tmp_path):
    data = _movie(tmp_path / "movie.tif", planes=5)
    stack = image_reader.read_stack(tmp_path / "movie.tif")
    assert (len(stack), stack.axis) == (5, "T")
    assert np.array_equal(stack.plane(2), np.repeat(data[2][:, :, None], 3, axis=2))
    assert image_reader.stack_size(tmp_path / "movie.tif") == (5, *SHAPE)
    with pytest.raises(DatasetError, match="this is a stack"):
        read_image(tmp_path / "movie.tif")
    tifffile.imwrite(tmp_path / "one.tif", data[0])
    assert len(image_reader.read_stack(tmp_path / "one.tif")) == 1


def test_label_stack_round_trips_with_its_axis(tmp_path):
    labels = np.arange(2 * 8 * 10, dtype=np.int32).reshape(2, 8, 10)
    image_reader.write_stack_labels(tmp_path / "l.tif", labels, "Z")
    with tifffile.TiffFile(tmp_path / "l.tif") as tif:
        assert tif.series[0].axes == "ZYX"
        assert np.array_equal(tif.series[0].asarray(), labels)


def test_read_takes_a_file_a_plane_and_a_channel_in_one_call(tmp_path):
    """``read`` is what the network sees: the plain image, plane p of a stack, a channel of either."""
    rng = np.random.default_rng(0)
    two = rng.integers(0, 4000, (2, *SHAPE), dtype=np.uint16)  # one image of two channels
    tifffile.imwrite(tmp_path / "two.tif", two, metadata={"axes": "CYX"})
    nuclei = image_reader.read(tmp_path / "two.tif", channel=1)
    assert nuclei.shape == (*SHAPE, 3) and nuclei.dtype == np.uint8
    assert np.array_equal(nuclei[..., 0], nuclei[..., 2])  # one channel, shown grey
    assert not np.array_equal(nuclei, image_reader.read(tmp_path / "two.tif", channel=0))
    assert image_reader.read(tmp_path / "two.tif", channel=MERGED).shape == (*SHAPE, 3)
    movie = rng.integers(0, 4000, (5, 2, *SHAPE), dtype=np.uint16)  # 5 time points of two channels
    tifffile.imwrite(tmp_path / "movie.tif", movie, imagej=True, metadata={"axes": "TCYX"})
    plane = image_reader.read(tmp_path / "movie.tif", plane=3, channel=1)
    tifffile.imwrite(tmp_path / "alone.tif", movie[3], metadata={"axes": "CYX"})
    assert np.array_equal(plane, image_reader.read(tmp_path / "alone.tif", channel=1))  # a plane reads as itself
    _movie(tmp_path / "grey.tif", planes=3)
    assert np.array_equal(image_reader.read(tmp_path / "grey.tif", plane=1), image_reader.read_stack(
        tmp_path / "grey.tif").plane(1))
    with pytest.raises(DatasetError, match="no plane 7"):
        image_reader.read(tmp_path / "grey.tif", plane=7)
    assert np.array_equal(image_reader.read(tmp_path / "alone.tif", channel=None), read_image(tmp_path / "alone.tif"))
