"""The HW3 dataset layout and its image-id rules, in one place so the reader, the writer, export,
training and the GUI agree on them.

A dataset root holds ``train/<sample>/image.tif`` with optional ``classK.tif`` masks (K = 1, 2, ...),
optionally ``val/`` likewise, and ``test_release/*.tif`` with ``test_image_name_to_ids.json``, which
gives each test image its id. A folder of samples without a mapping file numbers its samples
1..n in name order. Standard library only: the slider path and the reader import it cheaply.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError

IMAGE_NAME = "image.tif"
"""A sample folder's image."""
TEST_FOLDER = "test_release"
"""The test images of a HW3 root."""
MAPPING_NAME = "test_image_name_to_ids.json"
PLANE_SEPARATOR = "#"
"""A plane of a stack is named ``<file>#<plane>`` (0-based) in mapping files and COCO image entries."""
"""Test image file name -> submission id, height and width; lives in the HW3 root."""
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
"""Files a folder of images may hold (``predict``, ``export``, Segment folder); the format itself is
told by the file's first bytes (``images.read_image``)."""
CLASS_FILE = re.compile(r"^class(\d+)\.tiff?$", re.IGNORECASE)
"""A sample's mask file of class K (``class1.tif``, ``class2.tiff``, ...)."""


_HIDING = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories that hide or fake what a name says: control characters (C0 and C1), format
characters (bidi overrides such as U+202E, zero-width joiners), surrogates, line separators."""


def unsafe_character(text: str) -> str | None:
    """The first character of ``text`` that must not reach a file name or the terminal, or None.

    ``t1_nu\u202egnp.exe.tif`` shows as ``t1_nuexe.png.tif``: names from a checkpoint, a card or
    a user's layer are checked with this one rule before they name a file or are printed."""
    return next((c for c in text if unicodedata.category(c) in _HIDING), None)


def printable(text: object, limit: int = 300) -> str:
    """``text`` safe to print on one terminal line: each hiding character (ANSI escapes, ``\\r``,
    bidi overrides) shown as its ``\\uXXXX`` code, cut to ``limit`` characters."""
    text = str(text)
    shown = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in _HIDING else c for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def class_name(class_id: int) -> str:
    """The name of class ``class_id`` where nothing better is known (``class1``, ...): the name of
    its mask file, of its Labels layer and of its COCO category."""
    return f"class{int(class_id)}"


def class_file(class_id: int) -> str:
    """The mask file name of class ``class_id`` in a sample folder."""
    return class_name(class_id) + ".tif"


def default_class_names(count: int) -> list[str]:
    """Default names of classes 1..count, as a dataset without names calls them."""
    return [class_name(k) for k in range(1, int(count) + 1)]


def image_files(folder: str | Path) -> list[Path]:
    """The images (TIFF, PNG, JPEG) directly inside ``folder`` (such as ``test_release/``), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


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
    channel: int | str | None = None  # ``channels.choose``: None as is, a 0-based channel, or "merged"


def sample_image_id(sample_names: Sequence[str], name: str) -> int:
    """The image id of sample ``name`` in a folder of samples (no mapping file there): its place
    1..n in name order, as ``io.samples.find_samples`` lists them and ``pipeline.sample_items`` numbers them."""
    return sorted(sample_names).index(name) + 1


def image_name(path: str | Path) -> str:
    """The name an image goes by: a sample's image by its folder's name, any other file by its own."""
    path = Path(path)
    return path.parent.name if is_sample_image(path) else path.name


def ids_file(results: str | Path) -> Path:
    """``<results>.images.json``: the ids given to images no mapping file lists (the user's own), in the
    mapping file's format beside the results, so the results can be read back and a re-export keeps them."""
    return Path(f"{results}.images.json")


def find_mapping(start: str | Path) -> Path | None:
    """``test_image_name_to_ids.json`` next to ``start`` or up to two folders up (a test image in
    ``<root>/test_release/`` finds ``<root>/test_image_name_to_ids.json``)."""
    start = Path(start)
    folder = start if start.is_dir() else start.parent
    for candidate in (folder, folder.parent, folder.parent.parent):
        if (candidate / MAPPING_NAME).is_file():
            return candidate / MAPPING_NAME
    return None
