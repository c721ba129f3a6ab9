"""The HW3 dataset layout and its image-id rules, in one place so the reader, the writer, export,
training and the GUI agree on them.

A dataset root holds ``train/<sample>/image.tif`` with optional ``classK.tif`` masks (K = 1, 2, ...),
optionally ``val/`` likewise, and ``test_release/*.tif`` with ``test_image_name_to_ids.json``, which
gives each test image its id. A folder of samples without a mapping file numbers its samples
1..n in name order. Standard library only: the slider path and the reader import it cheaply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

IMAGE_NAME = "image.tif"
"""A sample folder's image."""
TEST_FOLDER = "test_release"
"""The test images of a HW3 root."""
MAPPING_NAME = "test_image_name_to_ids.json"
"""Test image file name -> submission id, height and width; lives in the HW3 root."""
IMAGE_SUFFIXES = (".tif", ".tiff")
CLASS_FILE = re.compile(r"^class(\d+)\.tiff?$", re.IGNORECASE)
"""A sample's mask file of class K (``class1.tif``, ``class2.tiff``, ...)."""


def class_file(class_id: int) -> str:
    """The mask file name of class ``class_id`` in a sample folder."""
    return f"class{int(class_id)}.tif"


def default_class_names(count: int) -> list[str]:
    """Default names of classes 1..count, as a dataset without names calls them (``class1``, ...)."""
    return [f"class{k}" for k in range(1, int(count) + 1)]


def is_sample_image(path: str | Path) -> bool:
    """Whether ``path`` is the image of a sample folder (``<sample>/image.tif``)."""
    return Path(path).name.lower() == IMAGE_NAME


@dataclass(frozen=True)
class ExportItem:
    """One image to export: its submission id, name (file name in the mapping), path, expected size;
    ``plane`` picks one plane of a stack (then ``name`` is ``<file>#<plane>``, see ``stacks``)."""

    image_id: int
    name: str
    path: Path
    shape: tuple[int, int] | None = None
    plane: int | None = None


def sample_ids(names: Sequence[str]) -> dict[str, int]:
    """Sample name -> image id for a folder of samples without a mapping file: 1..n in name order."""
    return {name: i for i, name in enumerate(sorted(names), start=1)}
