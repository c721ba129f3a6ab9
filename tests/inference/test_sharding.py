"""Sharded export: each process its share, rank 0 merges byte for byte, finished shards survive a kill;
and a real 2-process torchrun export (gloo, CPU) equal to the single-process submission."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import untrained_config, untrained_model
from napari_cellseg.inference import pipeline, sharding
from napari_cellseg.cli.main import main
from napari_cellseg.distributed import Context
from napari_cellseg.model.checkpoint import save_checkpoint
from napari_cellseg.inference.pipeline import ExportItem
from napari_cellseg.progress import drain

CONFIG = dict(box_score_thresh=0.0, detections_per_img=10)


@pytest.fixture(scope="module")
def model(one_thread):
    return untrained_model(**CONFIG)


@pytest.fixture
def folder(tmp_path):
    """Two images and a 3-plane stack: 5 export items, so the two shards interleave unevenly."""
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "a.tif", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    tifffile.imwrite(images / "b.tif", rng.integers(0, 255, (3, 40, 48), dtype=np.uint8), imagej=True,
                     metadata={"axes": "TYX"})
    tifffile.imwrite(images / "c.tif", rng.integers(0, 255, (40, 48), dtype=np.uint16))
    return images


def _items(folder):
    from napari_cellseg.io.image_reader import folder_mapping, mapped_items

    entries = folder_mapping(pipeline.image_files(folder))
    return mapped_items(pipeline.image_files(folder), {e["file_name"]: e for e in entries}, "mapping")


def _run(events):
    return drain(events)


def test_merge_interleaves_shards_in_item_order_and_copies_text(tmp_path):
    items = [ExportItem(i, f"im{i}", tmp_path) for i in (7, 3, 5, 9)]  # ids need not be sorted
    shard0, shard1 = tmp_path / "s0.json", tmp_path / "s1.json"
    shard0.write_text('[{"image_id":7,"score":0.5},{"image_id":7,"score":1e-05},{"image_id":5,"x":[1, 2]}]')
    shard1.write_text('[{"image_id":9,"score":0.25}]')  # image 3 found nothing
    out = tmp_path / "out.json"
    assert sharding.merge_shards(out, items, [shard0, shard1]) == 4
    assert out.read_text() == (
        '[{"image_id":7,"score":0.5},{"image_id":7,"score":1e-05},'
        '{"image_id":5,"x":[1, 2]},{"image_id":9,"score":0.25}]'
    )


def test_shards_equal_one_process_and_a_finished_shard_is_not_redone(folder, tmp_path, model, monkeypatch):
    items = _items(folder)
    single = tmp_path / "single.json"
    _run(pipeline.iter_export(model, items, single, score_thresh=0.0, mask_thresh=0.3))
    monkeypatch.setattr(sharding, "barrier", lambda ctx: None)  # the ranks run one after the other here
    out = tmp_path / "sharded.json"
    options = dict(score_thresh=0.0, mask_thresh=0.3)
    assert _run(sharding.iter_sharded_export(model, items, out, Context(1, 2), **options)) == 0
    assert sharding.shard_path(out, 1, 2).is_file() and not out.exists()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished shard was segmented again")

    real = sharding.iter_export
    monkeypatch.setattr(sharding, "iter_export", must_not_run)  # rank 1 restarted after a kill: nothing to do
    assert _run(sharding.iter_sharded_export(model, items, out, Context(1, 2), **options)) == 0
    monkeypatch.setattr(sharding, "iter_export", real)
    count = _run(sharding.iter_sharded_export(model, items, out, Context(0, 2), **options))
    assert out.read_bytes() == single.read_bytes() and count > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "sharded.json", "single.json"]


def test_two_process_torchrun_export_equals_the_single_process_submission(folder, tmp_path, model):
    ckpt = save_checkpoint(tmp_path / "m.pt", model, untrained_config(**CONFIG))
    args = ["--score-thresh", "0", "--mask-thresh", "0.3", "--device", "cpu"]
    assert main(["export", str(ckpt), str(folder), "--out", str(tmp_path / "one.json"), *args]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(sharding.__file__).parents[1])}  # this checkout
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
         "napari_cellseg", "export", str(ckpt), str(folder), "--out", str(tmp_path / "two.json"), *args],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "two.json").read_bytes() == (tmp_path / "one.json").read_bytes()
    assert (tmp_path / "two.json.images.json").read_bytes() == (tmp_path / "one.json.images.json").read_bytes()
    assert not list(tmp_path.glob("two.json.rank*"))  # the shards are gone


def test_shards_left_by_another_model_or_image_set_are_redone(folder, tmp_path, model, monkeypatch):
    """Not yet tried in round 3: finished shards in --out made by another model, or for other images."""
    monkeypatch.setattr(sharding, "barrier", lambda ctx: None)
    items, options = _items(folder), dict(score_thresh=0.0, mask_thresh=0.3)
    out = tmp_path / "sharded.json"
    other = untrained_model(seed=1, **CONFIG)
    _run(sharding.iter_sharded_export(other, items, out, Context(1, 2), **options))  # another model's shard
    from napari_cellseg.errors import DatasetError

    with pytest.raises(DatasetError, match=r"rank1-of-2.json is not a finished shard of this export"):
        _run(sharding.iter_sharded_export(model, items, out, Context(0, 2), **options))  # never merged
    assert not out.exists()
    _run(sharding.iter_sharded_export(model, items[:3], out, Context(1, 2), **options))  # shard of other images
    _run(sharding.iter_sharded_export(model, items, out, Context(1, 2), **options))
    _run(sharding.iter_sharded_export(model, items, out, Context(0, 2), **options))
    single = tmp_path / "single.json"
    _run(pipeline.iter_export(model, items, single, **options))
    assert out.read_bytes() == single.read_bytes()


def test_a_second_sharded_run_into_the_same_out_is_refused(folder, tmp_path, model, monkeypatch):
    """Not yet tried in round 3: two sharded runs into one --out; each rank holds a lock for the run."""
    from napari_cellseg.atomic import output_lock
    from napari_cellseg.errors import CellsegError

    monkeypatch.setattr(sharding, "barrier", lambda ctx: None)
    items, out = _items(folder), tmp_path / "sharded.json"
    first = sharding.iter_sharded_export(model, items, out, Context(1, 2))
    next(first)  # the first run's rank 1 is under way
    with pytest.raises(CellsegError, match="being written by another napari-cellseg process"):
        _run(sharding.iter_sharded_export(model, items, out, Context(1, 2)))
    _run(first)
    with output_lock(out):  # a single-process export (or the first run's rank 0) is writing the submission
        with pytest.raises(CellsegError, match="being written by another"):
            _run(sharding.iter_sharded_export(model, items, out, Context(0, 2)))
    assert _run(sharding.iter_sharded_export(model, items, out, Context(0, 2))) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "sharded.json"]
