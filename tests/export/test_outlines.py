"""Outlines along pixel edges: exact areas, holes, touching cells, round trip to the mask."""

import numpy as np
import pytest

from napari_cellseg.export.outlines import fill_polygon, mask_polygons, polygon_area, ring_area


@pytest.mark.parametrize("seed", range(20))
def test_random_masks_round_trip_exactly(seed):
    mask = np.random.default_rng(seed).random((9, 11)) < 0.55
    polygons = mask_polygons(mask, origin=(3, 5))
    assert sum(polygon_area(p) for p in polygons) == mask.sum()
    back = np.zeros((12, 16), bool)
    for polygon in polygons:
        assert not (back & fill_polygon(polygon, back.shape)).any()  # parts never overlap
        back |= fill_polygon(polygon, back.shape)
    assert np.array_equal(back[3:, 5:], mask) and back.sum() == mask.sum()


def test_a_hole_is_a_negative_ring_inside_its_cell():
    ring = np.ones((7, 7), bool)
    ring[2:5, 2:5] = False
    (polygon,) = mask_polygons(ring)
    outer, hole = polygon
    assert ring_area(outer) == 49 and ring_area(hole) == -9
    assert outer[0].tolist() == outer[-1].tolist()  # closed
    assert len(outer) == 5 and len(hole) == 5  # straight runs collapse to the four corners


def test_diagonal_pixels_are_two_parts_largest_first():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    mask[1:3, 1:3] = True
    polygons = mask_polygons(mask)
    assert [polygon_area(p) for p in polygons] == [4, 1]


def test_touching_cells_share_their_border():
    labels = np.zeros((6, 8), np.int32)
    labels[1:5, 1:4], labels[1:5, 4:7] = 1, 2
    left, right = (mask_polygons(labels == k)[0][0] for k in (1, 2))
    shared = {tuple(p) for p in left} & {tuple(p) for p in right}
    assert shared == {(4, 1), (4, 5)}
