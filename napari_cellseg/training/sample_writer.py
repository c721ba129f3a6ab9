"""Writing training samples in the HW3 layout: corrected images kept for fine-tuning.

A sample folder appears whole or not at all: it is written under a hidden temporary name and
renamed into place, so a crash never leaves a sample without its masks for training to trip on.
An existing sample is never overwritten unless the caller says ``replace=True`` (after asking), and
even then only a sample folder as this module writes it (``image.tif`` and ``classK.tif`` files, nothing
else) is replaced: a user's file or a folder of other files with that name is refused. What is written
is what the readers accept (image size, class numbers), so a saved sample never breaks training later.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tifffile

from ..io.samples import find_samples
from ..errors import DatasetError, OutputError
from ..io.images import MAX_PIXELS, MIN_SIDE, write_labels
from ..io.layout import CLASS_FILE, IMAGE_NAME, class_file, unsafe_character
from ..model.network import MAX_CLASSES

_UNSAFE = re.compile(r"[\x00-\x1f/\\:*?\"<>|]")
MAX_NAME_BYTES = 120
"""A sample folder name's length in UTF-8 bytes (file systems limit names to 255 bytes, not characters)."""


class SampleExistsError(DatasetError):
    """The dataset folder already holds a sample of that name."""


def sample_name(name: str) -> str:
    """``name`` made a safe, visible folder name (path separators and control characters replaced)."""
    clean = "".join("_" if unsafe_character(c) else c for c in _UNSAFE.sub("_", str(name)))
    clean = clean.strip().strip(".") or "sample"
    cut = clean.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")  # never half a character
    return cut.strip().strip(".") or "sample"


def merge_classes(labels: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Every class's instances as one class (id 1), renumbered 1..n: for a class-agnostic model."""
    merged: np.ndarray | None = None
    count = 0
    for class_id in sorted(labels):
        image = np.asarray(labels[class_id])
        merged = np.zeros(image.shape, np.int32) if merged is None else merged
        ids, inverse = np.unique(image, return_inverse=True)
        renumbered = inverse.reshape(image.shape).astype(np.int32) + (0 if ids[0] == 0 else 1)
        new = (renumbered > 0) & (merged == 0)
        merged[new] = renumbered[new] + count
        count += int((ids > 0).sum())
    return {1: merged} if merged is not None and count else {}


def save_sample(
    image: np.ndarray, labels: Mapping[int, np.ndarray], folder: str | os.PathLike, name: str, replace: bool = False
) -> Path:
    """Write ``folder/<name>/image.tif`` and one ``classK.tif`` per class with instances; returns the sample folder.

    ``image`` is ``H x W x 3`` uint8, ``labels`` ``{class id: H x W instance ids}`` of the same size.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"the image must be H x W x 3 uint8, got {image.dtype} of shape {image.shape}")
    for class_id, label_image in labels.items():
        if int(class_id) < 1 or np.shape(label_image) != image.shape[:2]:
            raise ValueError(
                f"class {class_id}: labels must be a class id >= 1 with the image's size {image.shape[:2]}"
            )
    _check_readable(image, labels)
    folder = Path(folder)
    target = folder / sample_name(name)
    if os.path.lexists(target) and not replace:
        raise SampleExistsError(f"{folder} already holds a sample named {target.name}; replace it or pick another name")
    if os.path.lexists(target):
        _check_replaceable(target)
    try:
        _write_sample(image, labels, folder, target)
    except OSError as exc:  # name the sample the user asked for, not the vanished staging folder
        raise OutputError(f"could not save the sample {target}: {exc.strerror or exc}") from None
    return target


def _check_readable(image: np.ndarray, labels: Mapping[int, np.ndarray]) -> None:
    """Refuse what ``io.samples.find_samples`` and ``io.images.read_image`` would refuse when training reads it."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE or height * width > MAX_PIXELS:
        raise DatasetError(f"the image is {height} x {width} pixels; a training sample needs at least "
                           f"{MIN_SIDE} x {MIN_SIDE} and at most {MAX_PIXELS:,} pixels")
    beyond = [int(k) for k in labels if int(k) > MAX_CLASSES]
    if beyond:
        raise DatasetError(f"class {beyond[0]} is beyond the {MAX_CLASSES} classes a model may have; "
                           "number the classes 1, 2, ...")


def _check_replaceable(target: Path) -> None:
    """``replace`` replaces only a sample as we write it: a folder of ``image.tif`` and ``classK.tif``."""
    if target.is_symlink() or not target.is_dir():
        raise OutputError(f"{target} is not a sample folder (it is a file or a link); refused to replace it")
    foreign = [p.name for p in target.iterdir()
               if p.is_symlink() or not p.is_file() or not (p.name == IMAGE_NAME or CLASS_FILE.match(p.name))]
    if foreign:
        raise OutputError(f"{target} holds files a sample does not have (e.g. {foreign[0]}); refused to replace "
                          "it. Move them away or pick another name")


def _write_sample(image: np.ndarray, labels: Mapping[int, np.ndarray], folder: Path, target: Path) -> None:
    """Write under a hidden staging folder, then rename it into place (replacing ``target``)."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder))
    try:
        tifffile.imwrite(staging / IMAGE_NAME, image, compression="lzw", photometric="rgb")
        for class_id, label_image in sorted(labels.items()):
            if np.any(label_image):
                write_labels(staging / class_file(class_id), label_image)
        os.chmod(staging, 0o777 & ~_umask())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=folder))
            os.replace(target, old / target.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def count_samples(folder: str | os.PathLike) -> int:
    """How many samples ``folder`` holds (0 when it does not exist yet)."""
    try:
        return len(find_samples(folder))
    except DatasetError:
        return 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = ["SampleExistsError", "sample_name", "merge_classes", "save_sample", "count_samples"]
