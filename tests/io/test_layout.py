"""The HW3 layout and image-id rules, owned by ``layout``."""

from __future__ import annotations

import pytest

from napari_cellseg.io import layout
from napari_cellseg.errors import DatasetError


def test_names_of_the_layout():
    assert layout.class_name(3) == "class3" and layout.class_file(3) == "class3.tif"
    assert layout.default_class_names(2) == ["class1", "class2"]
    assert layout.CLASS_FILE.match("Class12.TIFF").group(1) == "12"
    assert layout.CLASS_FILE.match("class1.png") is None


def test_sample_ids_are_the_place_in_name_order():
    names = ["b", "a", "c"]
    assert [layout.sample_image_id(names, n) for n in ("a", "b", "c")] == [1, 2, 3]


def test_a_sample_image_goes_by_its_folders_name(tmp_path):
    assert layout.is_sample_image(tmp_path / "cells_01" / "image.tif")
    assert layout.image_name(tmp_path / "cells_01" / "image.tif") == "cells_01"
    assert not layout.is_sample_image(tmp_path / "test_release" / "a.tif")
    assert layout.image_name(tmp_path / "test_release" / "a.tif") == "a.tif"


def test_the_mapping_file_is_found_from_a_test_image(tmp_path):
    test = tmp_path / layout.TEST_FOLDER
    test.mkdir()
    (test / "a.tif").write_bytes(b"")
    assert layout.find_mapping(test / "a.tif") is None
    (tmp_path / layout.MAPPING_NAME).write_text("[]")
    assert layout.find_mapping(test / "a.tif") == tmp_path / layout.MAPPING_NAME


def test_image_files_lists_images_by_name_and_refuses_an_empty_folder(tmp_path):
    for name in ("b.TIFF", "a.tif", "c.png", "d.JPG", "e.jpeg", "notes.txt", "f.bmp"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in layout.image_files(tmp_path)] == ["a.tif", "b.TIFF", "c.png", "d.JPG", "e.jpeg"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"no images \(\.tif, \.tiff, \.png, \.jpg, \.jpeg\)"):
        layout.image_files(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not found"):
        layout.image_files(tmp_path / "missing")
