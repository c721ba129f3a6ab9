"""Saving corrected images as training samples: whole or not at all, never overwriting unasked."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_cellseg.io.samples import find_samples, read_sample
from napari_cellseg.errors import DatasetError, OutputError
from napari_cellseg.training.sample_writer import (
    SampleExistsError, count_samples, merge_classes, sample_name, save_sample,
)


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

    monkeypatch.setattr("napari_cellseg.training.sample_writer.write_labels", fail)
    with pytest.raises(OutputError, match="No space"):
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


# ------------------------------------------------------------ hostile names and targets (issue 21)


def test_replace_refuses_a_users_file_of_that_name(tmp_path):
    """(2) ``replace=True`` replaced whatever had the name: here a user's own file."""
    image, labels = _image_and_labels()
    (tmp_path / "notes").write_text("mine")
    with pytest.raises(OutputError, match="not a sample folder"):
        save_sample(image, labels, tmp_path, "notes", replace=True)
    assert (tmp_path / "notes").read_text() == "mine"


def test_replace_refuses_a_folder_of_foreign_files(tmp_path):
    """(2) A folder holding anything but image.tif and classK.tif is not ours to delete."""
    image, labels = _image_and_labels()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "thesis.docx").write_text("years of work")
    with pytest.raises(OutputError, match="thesis.docx"):
        save_sample(image, labels, tmp_path, "a", replace=True)
    assert (tmp_path / "a" / "thesis.docx").read_text() == "years of work"


def test_replace_refuses_a_link_of_that_name(tmp_path):
    image, labels = _image_and_labels()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "a").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="link"):
        save_sample(image, labels, tmp_path, "a", replace=True)
    assert (tmp_path / "a").is_symlink() and (tmp_path / "elsewhere").is_dir()


def test_sample_name_is_cut_in_bytes_not_characters(tmp_path):
    """(10) 120 emoji are 480 bytes: the name was cut at 120 characters and the file system refused it."""
    name = sample_name("\U0001F52C" * 120)
    assert len(name.encode("utf-8")) <= 120 and name == "\U0001F52C" * 30
    image, labels = _image_and_labels()
    assert save_sample(image, labels, tmp_path, "\U0001F52C" * 120).is_dir()


def test_sample_name_drops_bidi_and_c1_controls():
    """(11) Names must not show something other than what they are."""
    assert sample_name("nu\u202egnp.exe") == "nu_gnp.exe"
    assert sample_name("a\x85b\u200bc") == "a_b_c"


@pytest.mark.parametrize("shape, classes, match", [
    ((1, 1), {1: None}, "1 x 1 pixels"),
    ((20, 30), {1_000_000: None}, "class 1000000"),
])
def test_samples_the_readers_would_refuse_are_not_written(tmp_path, shape, classes, match):
    """(16) save_sample wrote 1 x 1 images and class1000000.tif, which training then refused."""
    image = np.zeros((*shape, 3), np.uint8)
    labels = {k: np.ones(shape, np.int32) for k in classes}
    with pytest.raises(DatasetError, match=match):
        save_sample(image, labels, tmp_path, "s")
    assert not any(tmp_path.iterdir())


def test_a_failed_write_names_the_sample_not_the_staging_folder(tmp_path, monkeypatch):
    """(16) The error named the hidden staging folder, which no longer exists."""
    import tifffile

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    image, labels = _image_and_labels()
    with pytest.raises(OutputError) as err:
        save_sample(image, labels, tmp_path, "s")
    assert str(tmp_path / "s") in str(err.value) and ".tmp" not in str(err.value)
    assert not any(tmp_path.iterdir())
