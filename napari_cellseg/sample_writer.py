"""Writing training samples in the HW3 layout: corrected images kept for fine-tuning.

A sample folder appears whole or not at all: it is written under a hidden temporary name and
renamed into place, so a crash never leaves a sample without its masks for training to trip on.
An existing sample is never overwritten unless the caller says ``replace=True`` (after asking).
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

from .data import find_samples
from .errors import DatasetError
from .images import write_labels
from .layout import IMAGE_NAME, class_file

_UNSAFE = re.compile(r"[\x00-\x1f/\\:*?\"<>|]")


class SampleExistsError(DatasetError):
    """The dataset folder already holds a sample of that name."""


def sample_name(name: str) -> str:
    """``name`` made a safe, visible folder name (path separators and control characters replaced)."""
    clean = _UNSAFE.sub("_", str(name)).strip().strip(".") or "sample"
    return clean[:120]


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
    folder = Path(folder)
    target = folder / sample_name(name)
    if target.exists() and not replace:
        raise SampleExistsError(f"{folder} already holds a sample named {target.name}; replace it or pick another name")
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
    return target


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
