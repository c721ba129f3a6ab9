"""Reading a HW3 dataset folder: its samples (``<sample>/image.tif`` + ``classK.tif``), each one's
image and ground-truth label images.

The layout's names (``train/``, ``test_release/``, ``classK.tif``) are ``layout``'s; training targets and
the torch dataset are ``training.dataset``'s. A mask holds uint16 instance ids (0 = background); a
class absent from a sample has no file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .images import read_image, read_labels
from .layout import CLASS_FILE, IMAGE_NAME
from .raw import Labels


@dataclass(frozen=True)
class Sample:
    """One image of the dataset and its class masks.

    ``mask_paths`` maps class id -> ``classK.tif`` and is kept a plain dict so callers can index
    it and so samples pickle into DataLoader workers; it is left out of the hash (equal samples
    still hash equal) so a ``Sample`` can be a dict key or set member. Treat it as read-only.
    """

    name: str
    image_path: Path
    mask_paths: dict[int, Path] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_path", Path(self.image_path))
        ordered = {int(k): Path(v) for k, v in sorted(self.mask_paths.items())}
        object.__setattr__(self, "mask_paths", ordered)


# ---------------------------------------------------------------------------------------- finding


def find_samples(folder: str | os.PathLike) -> list[Sample]:
    """All ``<sample>/image.tif`` in ``folder``, sorted by name; stray files and hidden folders are ignored."""
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise DatasetError(f"{folder}: expected a folder of samples (<sample>/image.tif), found a file")
    samples = [read_sample_dir(d) for d in _subfolders(folder)]
    if not samples:
        raise DatasetError(f"{folder}: no sample folders in it; expected {folder}/<sample>/{IMAGE_NAME}")
    return sorted(samples, key=lambda s: s.name)


def _list_dir(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except PermissionError:
        raise DatasetError(f"{folder}: permission denied; cannot list the folder") from None
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot list the folder: {exc.strerror or exc}") from None


def _subfolders(folder: Path) -> list[Path]:
    """Visible sub-folders; '.ipynb_checkpoints' and the like are not samples."""
    return [Path(e.path) for e in _list_dir(folder) if not e.name.startswith(".") and e.is_dir()]


def read_sample_dir(sample_dir: Path) -> Sample:
    """The ``Sample`` of one folder holding ``image.tif`` and its ``classK.tif`` masks."""
    entries = {e.name: Path(e.path) for e in _list_dir(sample_dir) if e.is_file()}
    if (sample_dir / IMAGE_NAME).is_dir():
        raise DatasetError(f"{sample_dir / IMAGE_NAME}: this is a folder; expected the sample's image file")
    if IMAGE_NAME not in entries:
        raise DatasetError(
            f"{sample_dir}: sample folder '{sample_dir.name}' has no {IMAGE_NAME}; "
            "every sample folder needs one (remove the folder or add the image)"
        )
    masks: dict[int, Path] = {}
    for name, path in sorted(entries.items()):
        match = CLASS_FILE.match(name)
        if match and int(match.group(1)) >= 1:
            masks.setdefault(int(match.group(1)), path)
    return Sample(sample_dir.name, entries[IMAGE_NAME], masks)


def read_sample(sample: Sample) -> tuple[np.ndarray, Labels]:
    """The image (``H x W x 3`` uint8) and its label images ``{class id: H x W int32}``."""
    image = read_image(sample.image_path)
    labels = {k: read_labels(p, shape=image.shape) for k, p in sample.mask_paths.items()}
    return image, labels
