"""The tile grid covers the image, cores partition it, and an object near a seam is kept once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_cellseg.inference.tiling import axis_windows, in_core, tile_grid


def test_small_image_is_one_tile_whose_core_is_everything():
    (tile,) = tile_grid((50, 64), tile_size=64, overlap=16)
    assert (tile.y0, tile.y1, tile.x0, tile.x1) == (0, 50, 0, 64)
    far = np.array([[-1e6, -1e6, -1e6, -1e6], [1e6, 1e6, 1e6, 1e6]])
    assert in_core(far, tile).all()


def test_axis_windows_end_flush_keep_the_overlap_and_are_no_longer_than_needed():
    size, starts = axis_windows(200, tile_size=64, overlap=16)
    assert len(starts) == 4 and size == 62  # 4 windows of 64 would overlap by ~19 px; 62 px keep >= 16
    assert starts[0] == 0 and starts[-1] == 200 - size
    assert all(size - (b - a) >= 16 for a, b in zip(starts, starts[1:]))
    assert axis_windows(2500, 1024, 128) == (919, [0, 790, 1581])


@pytest.mark.parametrize("tile_size, overlap", [(64, 64), (64, 80), (0, 0), (64, -1)])
def test_tile_grid_rejects_impossible_settings(tile_size, overlap):
    with pytest.raises(ValueError):
        tile_grid((100, 100), tile_size, overlap)


def test_in_core_uses_the_box_centre():
    tiles = tile_grid((10, 200), tile_size=64, overlap=16)
    box = np.array([[50.0, 0.0, 70.0, 10.0]])  # centre x = 60
    owners = [t for t in tiles if in_core(box, t)[0]]
    assert len(owners) == 1
    lo, hi = owners[0].core_x
    assert lo <= 60 < hi


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(1, 700),
    tile_size=st.integers(8, 256),
    overlap_frac=st.floats(0.0, 0.9),
)
def test_axis_cores_partition_and_contain_small_objects(length, tile_size, overlap_frac):
    overlap = int(overlap_frac * tile_size)
    tiles = tile_grid((1, length), tile_size, overlap)
    windows = [(t.x0, t.x1) for t in tiles]
    cores = [t.core_x for t in tiles]
    assert all(0 <= a < b <= length and b - a <= tile_size for a, b in windows)
    covered = np.zeros(length, int)
    for a, b in windows:
        covered[a:b] += 1
    assert covered.min() >= 1
    # every position belongs to exactly one core
    centres = np.arange(length) + 0.5
    owners = sum(((centres >= lo) & (centres < hi)).astype(int) for lo, hi in cores)
    assert (owners == 1).all()
    # an object no larger than the overlap is inside the window of the tile that owns its centre
    for size in {1, max(overlap, 1)}:
        if size > min(length, tile_size):
            continue
        for start in range(0, length - size + 1):
            centre = start + size / 2
            (i,) = [k for k, (lo, hi) in enumerate(cores) if lo <= centre < hi]
            a, b = windows[i]
            assert a <= start and start + size <= b
