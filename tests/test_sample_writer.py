"""Saving corrected images as training samples: whole or not at all, never overwriting unasked."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_cellseg.data import find_samples, read_sample
from napari_cellseg.sample_writer import SampleExistsError, count_samples, merge_classes, save_sample


def _image_and_labels(seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    one = np.zeros((20, 30), np.int32)
    one[2:6, 2:8] = 7
    one[10:15, 20:28] = 3
    two = np.zeros((20, 30), np.int32)
    two[14:19, 2:9] = 1
    return image, {1: one, 2: two, 3: np.zeros((20, 30), np.int32)}


def test_saved_sample_reads_back_as_a_training_sample(tmp_path):
    image, labels = _image_and_labels()
    path = save_sample(image, labels, tmp_path / "corrected", "cells_01.tif")
    assert path.name == "cells_01.tif"
    assert sorted(p.name for p in path.iterdir()) == ["class1.tif", "class2.tif", "image.tif"]
    [sample] = find_samples(tmp_path / "corrected")
    back_image, back_labels = read_sample(sample)
    assert np.array_equal(back_image, image)
    assert sorted(back_labels) == [1, 2] and np.array_equal(back_labels[1], labels[1])
    assert count_samples(tmp_path / "corrected") == 1 and count_samples(tmp_path / "absent") == 0


def test_existing_sample_is_kept_unless_replace(tmp_path):
    image, labels = _image_and_labels()
    save_sample(image, labels, tmp_path, "a")
    with pytest.raises(SampleExistsError, match="already holds a sample named a"):
        save_sample(image, {1: labels[1]}, tmp_path, "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["class1.tif", "class2.tif", "image.tif"]
    save_sample(image, {1: labels[1]}, tmp_path, "a", replace=True)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["class1.tif", "image.tif"]
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no staging or old folders left


@pytest.mark.parametrize("name, expected", [("../../etc/x", "_.._etc_x"), ("a/b", "a_b"), ("..", "sample"),
                                            (".hidden", "hidden"), ("x\x00y", "x_y")])
def test_odd_names_stay_inside_the_folder(tmp_path, name, expected):
    image, labels = _image_and_labels()
    path = save_sample(image, labels, tmp_path / "ds", name)
    assert path.parent == tmp_path / "ds" and path.name == expected


def test_a_failed_write_leaves_no_sample(tmp_path, monkeypatch):
    image, labels = _image_and_labels()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("napari_cellseg.sample_writer.write_labels", fail)
    with pytest.raises(OSError, match="No space"):
        save_sample(image, labels, tmp_path, "full")
    assert list(tmp_path.iterdir()) == []


def test_bad_shapes_are_refused(tmp_path):
    image, labels = _image_and_labels()
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        save_sample(image[..., 0], labels, tmp_path, "x")
    with pytest.raises(ValueError, match="image's size"):
        save_sample(image, {1: labels[1][:5]}, tmp_path, "x")


def test_merge_classes_renumbers_every_instance_once():
    _, labels = _image_and_labels()
    merged = merge_classes(labels)
    assert list(merged) == [1] and sorted(np.unique(merged[1])) == [0, 1, 2, 3]
    assert np.array_equal(merged[1] > 0, (labels[1] > 0) | (labels[2] > 0))
    assert merge_classes({}) == {} and merge_classes({1: np.zeros((3, 3), np.int32)}) == {}


def test_sample_folder_follows_the_umask(tmp_path):
    image, labels = _image_and_labels()
    old = os.umask(0o022)
    try:
        path = save_sample(image, labels, tmp_path, "m")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o755
