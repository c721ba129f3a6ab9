"""The HW3 layout: finding samples, split, torchvision targets, and the cached, seeded dataset."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cellseg.training import dataset as data
from napari_cellseg._torch import torch
from napari_cellseg.training.dataset import CellDataset, collate, dataset_classes, instance_targets, split_samples
from napari_cellseg.io.samples import find_samples, read_sample
from napari_cellseg.errors import DatasetError
from napari_cellseg.training.transforms import train_augment
from conftest import DSB2018


needs_dsb2018 = pytest.mark.skipif(not DSB2018.is_dir(), reason="real DSB2018 data not available")


# ---------------------------------------------------------------------------------------- finding


def test_find_samples_sorted_with_optional_class_files(tiny_dataset: Path) -> None:
    samples = find_samples(tiny_dataset / "train")
    assert [s.name for s in samples] == ["sample_0", "sample_1", "sample_2", "sample_3"]
    assert [sorted(s.mask_paths) for s in samples] == [[1, 2], [1], [1, 2], [2]]
    assert samples[0].image_path == tiny_dataset / "train" / "sample_0" / "image.tif"
    assert samples[3].mask_paths[2].name == "class2.tif"
    assert dataset_classes(samples) == [1, 2] and dataset_classes(samples[1:2]) == [1]


def test_find_samples_ignores_stray_files_and_accepts_any_name(tiny_dataset: Path) -> None:
    train = tiny_dataset / "train"
    (train / "notes.txt").write_text("not a sample")
    (train / ".ipynb_checkpoints").mkdir()
    shutil.copytree(train / "sample_1", train / "Zelle ß 1")
    (train / "sample_0" / "readme.md").write_text("ignored too")
    names = [s.name for s in find_samples(train)]
    assert names == ["Zelle ß 1", "sample_0", "sample_1", "sample_2", "sample_3"]
    image, labels = read_sample(find_samples(train)[0])
    assert image.shape == (64, 80, 3) and set(labels) == {1}


def test_sample_is_hashable_and_picklable(tiny_dataset: Path) -> None:
    sample = find_samples(tiny_dataset / "train")[0]
    copy = pickle.loads(pickle.dumps(sample))
    assert copy == sample and hash(copy) == hash(sample) and len({sample, copy}) == 1
    with pytest.raises(AttributeError):
        sample.name = "other"  # type: ignore[misc]


def _error(folder: Path) -> str:
    with pytest.raises(DatasetError) as info:
        find_samples(folder)
    return str(info.value)


def test_find_samples_errors_name_the_place(tmp_path: Path, tiny_dataset: Path) -> None:
    assert "not found" in _error(tmp_path / "nowhere")
    (tmp_path / "file.tif").write_bytes(b"x")
    assert "found a file" in _error(tmp_path / "file.tif")
    (tmp_path / "empty").mkdir()
    assert "no sample folders" in _error(tmp_path / "empty")
    (tiny_dataset / "train" / "sample_2" / "image.tif").unlink()
    message = _error(tiny_dataset / "train")
    assert "sample_2" in message and "image.tif" in message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any folder")
def test_find_samples_unreadable_folder(tiny_dataset: Path) -> None:
    folder = tiny_dataset / "train"
    folder.chmod(0o000)
    try:
        assert "permission denied" in _error(folder)
    finally:
        folder.chmod(0o755)


def test_read_sample_types_and_size_check(tiny_dataset: Path) -> None:
    sample = find_samples(tiny_dataset / "train")[0]
    image, labels = read_sample(sample)
    assert image.shape == (64, 80, 3) and image.dtype == np.uint8
    assert set(labels) == {1, 2} and all(v.dtype == np.int32 and v.shape == (64, 80) for v in labels.values())
    assert labels[1].max() == 3 and labels[2].max() == 1
    tifffile.imwrite(sample.mask_paths[2], np.zeros((32, 40), np.uint16))
    with pytest.raises(DatasetError, match="class2.tif.*32 x 40.*64 x 80"):
        read_sample(sample)


# ---------------------------------------------------------------------------------------- split


def test_split_uses_val_folder(tiny_dataset: Path) -> None:
    train, val = split_samples(tiny_dataset)
    assert len(train) == 4 and [s.name for s in val] == ["val_0", "val_1"]


def test_split_without_val_is_seeded_disjoint_and_complete(tiny_dataset: Path) -> None:
    shutil.rmtree(tiny_dataset / "val")
    train, val = split_samples(tiny_dataset, val_fraction=0.1, seed=3)
    assert len(val) == 1 and len(train) == 3
    assert sorted(s.name for s in train + val) == [f"sample_{i}" for i in range(4)]
    assert split_samples(tiny_dataset, 0.1, seed=3) == (train, val)
    picks = {split_samples(tiny_dataset, 0.1, seed=seed)[1][0].name for seed in range(10)}
    assert len(picks) > 1  # the seed matters
    assert split_samples(tiny_dataset, val_fraction=0.5)[1].__len__() == 2
    assert split_samples(tiny_dataset, val_fraction=0.0)[1] == []


def test_split_keeps_one_val_of_two_and_none_of_one(tiny_dataset: Path) -> None:
    shutil.rmtree(tiny_dataset / "val")
    for name in ("sample_2", "sample_3"):
        shutil.rmtree(tiny_dataset / "train" / name)
    train, val = split_samples(tiny_dataset, val_fraction=0.01)
    assert len(train) == 1 and len(val) == 1
    shutil.rmtree(tiny_dataset / "train" / "sample_0")
    assert [len(part) for part in split_samples(tiny_dataset)] == [1, 0]


def test_split_missing_train_explains_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no 'train' folder.*train/<sample>/image.tif"):
        split_samples(tmp_path)


# ---------------------------------------------------------------------------------------- targets


def test_instance_targets_one_pixel_box_is_exclusive() -> None:
    labels = np.zeros((10, 12), np.int32)
    labels[3, 7] = 5
    masks, classes, boxes, skipped = instance_targets({2: labels})
    assert masks.shape == (1, 10, 12) and masks.dtype == np.uint8 and masks.sum() == 1 and masks[0, 3, 7] == 1
    assert classes.tolist() == [2] and classes.dtype == np.int64
    assert boxes.dtype == np.float32 and boxes.tolist() == [[7, 3, 8, 4]] and skipped == 0


def test_instance_targets_pieces_and_classes() -> None:
    one = np.zeros((20, 20), np.int32)
    one[1:3, 1:3] = 4
    one[15:18, 12:19] = 4  # a second piece of the same instance
    two = np.zeros((20, 20), np.int32)
    two[5:9, 5:7] = 4  # same id, other class: another instance
    masks, classes, boxes, _ = instance_targets({2: two, 1: one})
    assert classes.tolist() == [1, 2]
    assert boxes.tolist() == [[1, 1, 19, 18], [5, 5, 7, 9]]
    assert masks[0].sum() == 4 + 21 and masks[1].sum() == 8


def test_instance_targets_empty_and_min_pixels() -> None:
    masks, classes, boxes, skipped = instance_targets({}, shape=(6, 7))
    assert masks.shape == (0, 6, 7) and classes.shape == (0,) and boxes.shape == (0, 4) and skipped == 0
    assert instance_targets({1: np.zeros((6, 7), np.int32)})[0].shape == (0, 6, 7)
    labels = np.zeros((6, 7), np.int32)
    labels[0, 0], labels[2:5, 2:5] = 1, 2
    masks, classes, boxes, skipped = instance_targets({1: labels}, min_pixels=2)
    assert len(masks) == 1 and skipped == 1 and boxes.tolist() == [[2, 2, 5, 5]]


def test_instance_targets_dense_matches_naive_and_huge_ids() -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((96, 96), np.int32)
    for instance_id in rng.permutation(np.arange(1, 151)):  # 150 overlapping squares, some hidden
        y, x = rng.integers(0, 90, 2)
        labels[y : y + rng.integers(1, 7), x : x + rng.integers(1, 7)] = instance_id
    masks, _, boxes, _ = instance_targets({1: labels})
    ids = [i for i in np.unique(labels) if i]
    assert len(masks) == len(ids)
    for mask, box, instance_id in zip(masks, boxes, ids):
        expected = labels == instance_id
        np.testing.assert_array_equal(mask, expected)
        ys, xs = np.nonzero(expected)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    huge = np.where(labels > 0, labels + 2**30, 0).astype(np.int32)  # ids find_objects cannot index
    np.testing.assert_array_equal(instance_targets({1: huge})[0], masks)


# ---------------------------------------------------------------------------------------- dataset


def test_dataset_item_matches_torchvision_contract(tiny_dataset: Path) -> None:
    dataset = CellDataset(find_samples(tiny_dataset / "train"))
    assert len(dataset) == 4
    image, target = dataset[0]
    assert image.shape == (3, 64, 80) and image.dtype == torch.float32
    assert 0 <= float(image.min()) < float(image.max()) <= 1
    assert target["boxes"].shape == (4, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].tolist() == [1, 1, 1, 2] and target["labels"].dtype == torch.int64
    assert target["masks"].shape == (4, 64, 80) and target["masks"].dtype == torch.uint8
    assert int(target["image_id"]) == 0 and target["image_id"].dtype == torch.int64
    assert int(dataset[3][1]["image_id"]) == 3


def test_dataset_sample_without_masks_has_empty_target(tiny_dataset: Path) -> None:
    for mask in (tiny_dataset / "train" / "sample_3").glob("class*.tif"):
        mask.unlink()
    _, target = CellDataset(find_samples(tiny_dataset / "train"))[3]
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 64, 80) and target["labels"].shape == (0,)


def test_dataset_augmentation_is_seeded_by_epoch_and_index(tiny_dataset: Path) -> None:
    samples = find_samples(tiny_dataset / "train")
    dataset = CellDataset(samples, augment=train_augment(crop_size=48), seed=1)
    first = dataset[0]
    again = CellDataset(samples, augment=train_augment(crop_size=48), seed=1)[0]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["masks"], again[1]["masks"])
    dataset.set_epoch(1)
    assert dataset.epoch == 1 and not torch.equal(dataset[0][0], first[0])
    assert max(dataset[0][0].shape[1:]) <= 48


def test_dataset_mosaic_is_seeded_and_takes_its_share(tiny_dataset: Path) -> None:
    """Share 1: every item is four augmented crops in one image (instances of several samples: more than
    the item's own); share 0 leaves the items as they were; the same seed gives the same mosaics."""
    samples = find_samples(tiny_dataset / "train")
    plain = CellDataset(samples, augment=train_augment(crop_size=48), seed=1)
    mosaics = CellDataset(samples, augment=train_augment(crop_size=48), seed=1, mosaic=1.0, mosaic_size=48)
    again = CellDataset(samples, augment=train_augment(crop_size=48), seed=1, mosaic=1.0, mosaic_size=48)
    none = CellDataset(samples, augment=train_augment(crop_size=48), seed=1, mosaic=0.0)
    assert torch.equal(none[0][0], plain[0][0])
    for i in range(4):
        image, target = mosaics[i]
        assert image.shape == (3, 48, 48) and torch.equal(image, again[i][0])
        assert torch.equal(target["masks"], again[i][1]["masks"]) and not torch.equal(image, plain[i][0])
        assert target["masks"].shape[1:] == (48, 48) and len(target["boxes"]) == len(target["masks"])
    with pytest.raises(ValueError, match="probability"):
        CellDataset(samples, augment=train_augment(crop_size=48), mosaic=1.5)
    with pytest.raises(ValueError, match="augment"):
        CellDataset(samples, mosaic=0.5)


def test_dataset_cache_avoids_rereading_and_is_bounded(tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = data.read_sample
    monkeypatch.setattr(data, "read_sample", lambda s: calls.append(s.name) or real(s))
    samples = find_samples(tiny_dataset / "train")
    dataset = CellDataset(samples)
    dataset[0], dataset[0], dataset[1], dataset[0]
    assert calls == ["sample_0", "sample_1"]
    one_sample = 64 * 80 * 3 + 2 * 64 * 80 * 4  # image + two int32 label images
    small = CellDataset(samples, cache_bytes=one_sample)
    calls.clear()
    small[0], small[0], small[1], small[0]  # sample_1 pushes sample_0 out
    assert calls == ["sample_0", "sample_1", "sample_0"]
    uncached = CellDataset(samples, cache_bytes=0)
    calls.clear()
    uncached[2], uncached[2]
    assert calls == ["sample_2", "sample_2"]


def test_dataset_drops_degenerate_instances(tiny_dataset: Path) -> None:
    full = CellDataset(find_samples(tiny_dataset / "train"))
    dataset = CellDataset(find_samples(tiny_dataset / "train"), min_pixels=130)
    assert len(full[0][1]["labels"]) == 4 and len(dataset[0][1]["labels"]) == 2


def test_dataset_epoch_reaches_persistent_workers(tiny_dataset: Path) -> None:
    samples = find_samples(tiny_dataset / "train")[:2]
    dataset = CellDataset(samples, augment=train_augment(crop_size=40), seed=5, min_pixels=100)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=2, num_workers=1, persistent_workers=True, collate_fn=collate
    )
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        (images, targets), = list(loader)
        reference = CellDataset(samples, augment=train_augment(crop_size=40), seed=5)
        reference.set_epoch(epoch)
        for i, (image, target) in enumerate(zip(images, targets)):
            assert torch.equal(image, reference[i][0]) and int(target["image_id"]) == i


def test_collate_keeps_lists(tiny_dataset: Path) -> None:
    dataset = CellDataset(find_samples(tiny_dataset / "val"))
    images, targets = collate([dataset[0], dataset[1]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert len(images) == 2 and targets[1]["labels"].tolist() == [1]


# ---------------------------------------------------------------------------------------- real data


@needs_dsb2018
def test_real_sample_targets() -> None:
    (sample,) = [s for s in find_samples(DSB2018 / "val") if s.name.startswith("16c3d5935")]
    image, labels = read_sample(sample)
    masks, classes, boxes, skipped = instance_targets(labels)
    assert len(masks) == len(np.unique(labels[1])) - 1 > 0 and skipped == 0
    assert set(classes.tolist()) == {1} and (boxes[:, 2:] > boxes[:, :2]).all()
    assert masks.shape[1:] == image.shape[:2]
