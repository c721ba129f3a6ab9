"""The demo's picture: each cell's outline, touching cells apart, drawn into a PNG."""

import numpy as np
from PIL import Image

from napari_cellseg.export.overlay import draw_outlines, outlines, write_overlay


def test_touching_cells_each_keep_their_outline():
    labels = np.zeros((8, 10), np.int32)
    labels[1:7, 1:5], labels[1:7, 5:9] = 1, 2
    edge = outlines(labels)
    assert edge[3, 4] and edge[3, 5]  # both sides of the shared border
    assert not edge[3, 2] and not edge[3, 7] and not edge[0].any()  # inside and background stay clear
    assert edge[labels == 1].sum() == 2 * 6 + 2 * 2  # the ring of a 6 x 4 cell


def test_the_png_is_the_image_with_outlines(tmp_path):
    image = np.full((8, 10, 3), 30, np.uint8)
    labels = np.zeros((8, 10), np.int32)
    labels[2:6, 2:6] = 3
    write_overlay(tmp_path / "o.png", image, labels)
    picture = np.asarray(Image.open(tmp_path / "o.png"))
    assert np.array_equal(picture, draw_outlines(image, labels))
    assert (picture[outlines(labels)] != 30).all() and (picture[~outlines(labels)] == 30).all()
