"""Streaming large images: regions read from the file, labels written by window, seams and ids."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from napari_cellseg._torch import torch
from napari_cellseg.io.images import read_image
from napari_cellseg.inference.predict import predict
from napari_cellseg.inference.postprocess import to_labels
from napari_cellseg.progress import drain
from napari_cellseg.inference.tiling import tile_grid
from napari_cellseg.errors import DetectionCapWarning
from napari_cellseg.inference import streaming
from napari_cellseg.inference.streaming import LabelFile, RegionReader, iter_segment_file, open_labels, should_stream

from test_predict import mask_targets


class BlobDetector(torch.nn.Module):
    """A stand-in network: every bright blob (channel 0 > 0.5) is a cell, its mask the blob itself.

    Deterministic and instant, so the tests check the tiling, seams and ids, not a model's mood.
    """

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def detect(self, images, keep=None):
        out = []
        for image in images:
            blobs, n = ndimage.label(image[0].numpy() > 0.5)
            boxes, scores = [], []
            for ys, xs in ndimage.find_objects(blobs):
                boxes.append([xs.start, ys.start, xs.stop, ys.stop])
                scores.append(0.99 - 0.001 * (ys.start + xs.start))
            boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            masks = mask_targets([blobs == i for i in range(1, n + 1)], boxes_t)
            sel = keep(boxes_t) if keep is not None else torch.ones(len(boxes_t), dtype=torch.bool)
            out.append({"boxes": boxes_t[sel], "scores": torch.tensor(scores).reshape(-1)[sel],
                        "labels": torch.ones(len(boxes_t), dtype=torch.int64)[sel], "masks": masks[sel]})
        return out


def _discs(shape, centres, radius: int = 5) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros((*shape, 3), np.uint8)
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 255
    return image


def _same_cells(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering: the same foreground and a one-to-one map between ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


CENTRES = [(10, 10), (20, 47), (47, 20), (46, 46), (70, 30), (30, 75), (80, 80), (60, 62)]


@pytest.fixture
def disc_file(tmp_path):
    image = _discs((96, 100), CENTRES)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    return path, image


def test_streamed_labels_equal_whole_image_labels(disc_file, tmp_path):
    """Tiny tiles (40 px, overlap 16): cells cut by tile edges are kept once, whole, by one tile."""
    path, image = disc_file
    model = BlobDetector()
    out = tmp_path / "labels.tif"
    progress = []
    scores = drain(iter_segment_file(model, path, {1: out}, tile_size=40, overlap=16, score_thresh=0.5,
                                     mask_thresh=0.5), progress.append)
    streamed = tifffile.imread(out)
    assert isinstance(open_labels(out), np.memmap) and np.array_equal(open_labels(out), streamed)
    whole = to_labels(predict(model, image, tile_size=4096), 0.5, 0.5, classes=[1])[1]
    assert streamed.shape == (96, 100) and streamed.dtype == np.uint32
    assert _same_cells(streamed, whole)
    ids = np.unique(streamed[streamed > 0])
    assert ids.tolist() == list(range(1, len(CENTRES) + 1))  # unique across tiles, one per cell
    assert sorted(scores) == ids.tolist()
    tiles = len(tile_grid((96, 100), 40, 16))
    assert [(p.done, p.total) for p in progress] == [(k, tiles) for k in range(1, tiles + 1)] and tiles > 4


def test_a_cell_cut_by_every_tile_edge_is_one_cell(tmp_path):
    image = _discs((64, 64), [(32, 32)], radius=6)  # tiles of 40 / overlap 16: edges at 24 and 40
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, image, photometric="rgb")
    drain(iter_segment_file(BlobDetector(), path, {1: tmp_path / "l.tif"}, tile_size=40, overlap=16))
    labels = tifffile.imread(tmp_path / "l.tif")
    assert np.unique(labels).tolist() == [0, 1]
    assert np.array_equal(labels > 0, image[:, :, 0] > 0)


def test_flat_tiles_skip_the_network(tmp_path):
    calls = []
    model = BlobDetector()
    detect = model.detect
    model.detect = lambda images, keep=None: calls.append(1) or detect(images, keep)
    path = tmp_path / "empty.tif"
    tifffile.imwrite(path, np.full((80, 80, 3), 7, np.uint8), photometric="rgb")
    scores = drain(iter_segment_file(model, path, {1: tmp_path / "l.tif"}, tile_size=40, overlap=16))
    assert scores == {} and calls == []
    assert not tifffile.imread(tmp_path / "l.tif").any()


def test_a_tile_at_the_detection_cap_is_warned_about_and_memory_is_released_per_tile(disc_file, tmp_path, monkeypatch):
    path, _ = disc_file
    model = BlobDetector()
    detect = model.detect
    model.detect = lambda images, keep=None: [dict(d, capped=True) for d in detect(images, keep)]
    released = []
    monkeypatch.setattr(streaming, "release_freed_memory", lambda: released.append(1))
    tiles = len(tile_grid((96, 100), 40, 16))
    with pytest.warns(DetectionCapWarning, match=f"{tiles} of {tiles} tile"):
        scores = drain(iter_segment_file(model, path, {1: tmp_path / "l.tif"}, tile_size=40, overlap=16))
    assert len(scores) == len(CENTRES) and len(released) == tiles


def test_cancel_leaves_no_label_file(disc_file, tmp_path):
    path, _ = disc_file
    ticks = iter([False, False, True])
    result = drain(iter_segment_file(BlobDetector(), path, {1: tmp_path / "l.tif"}, tile_size=40, overlap=16,
                                     should_stop=lambda: next(ticks)))
    assert result is None and not (tmp_path / "l.tif").exists()
    assert not list(tmp_path.glob(".l.tif*"))


@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba", "compressed", "uint16"])
def test_region_reader_reads_what_read_image_reads(tmp_path, kind):
    rng = np.random.default_rng(0)
    data = {"rgb": rng.integers(0, 256, (30, 41, 3)), "grey": rng.integers(0, 256, (30, 41)),
            "rgba": rng.integers(0, 256, (30, 41, 4)), "compressed": rng.integers(0, 256, (30, 41, 3)),
            "uint16": rng.integers(0, 60000, (30, 41))}[kind]
    data = data.astype(np.uint16 if kind == "uint16" else np.uint8)
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, data, compression="zlib" if kind == "compressed" else None,
                     photometric="rgb" if data.ndim == 3 else "minisblack")
    reader = RegionReader(path)
    try:
        assert reader.streamed == (kind in ("rgb", "grey", "rgba"))
        whole = read_image(path)
        assert reader.shape == whole.shape
        np.testing.assert_array_equal(reader[5:17, 9:40], whole[5:17, 9:40])
        np.testing.assert_array_equal(reader[0:30, 0:41], whole)
    finally:
        reader.close()


def test_label_file_windows_round_trip(tmp_path):
    path = tmp_path / "l.tif"
    f = LabelFile(path, (20, 30))
    try:
        f.write(3, 4, np.arange(6 * 7, dtype=np.uint32).reshape(6, 7) + 70000)
        np.testing.assert_array_equal(f.read(3, 9, 4, 11), np.arange(42).reshape(6, 7) + 70000)
    finally:
        f.close()
    labels = tifffile.imread(path)
    assert labels[3:9, 4:11].min() == 70000 and labels.sum() == sum(range(42)) + 42 * 70000


def test_only_large_2d_images_stream(tmp_path, monkeypatch):
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, np.zeros((40, 50), np.uint8))
    assert not should_stream(path)
    monkeypatch.setattr("napari_cellseg.inference.streaming.STREAM_ABOVE", 1000)
    assert should_stream(path)
    assert not should_stream(tmp_path / "missing.tif")


def test_release_freed_memory_trims_the_heap_where_it_can(monkeypatch):
    calls = []
    monkeypatch.setattr(streaming, "_malloc_trim", lambda: calls.append)
    streaming.release_freed_memory()
    assert calls == [0]  # malloc_trim(0): everything above the heap's top that is free
    monkeypatch.setattr(streaming, "_malloc_trim", lambda: None)  # not glibc: nothing to do
    streaming.release_freed_memory()
    assert calls == [0]
