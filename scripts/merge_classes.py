"""Copy a HW3 sample folder with every class merged into one (``class1.tif``), for a class-agnostic model.

The built-in ``nuclei`` model is trained on DSB2018 with fluorescence and stained nuclei as one
class: telling them apart cost 0.12 AP50 and a user asking for nuclei does not care which.
Images are hard-linked (or copied) so the merged folder costs only the new masks.

Run: python scripts/merge_classes.py ../shared/data/dsb2018/train /tmp/nuclei/train
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np

from napari_cellseg.data import IMAGE_NAME, find_samples
from napari_cellseg.images import read_image, read_labels, write_labels


def merge_sample(image_path: Path, mask_paths: dict[int, Path], dest: Path) -> int:
    """Write ``dest/image.tif`` and one ``class1.tif`` with each class's instances renumbered; returns the count."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        os.link(image_path, dest / IMAGE_NAME)
    except OSError:
        shutil.copyfile(image_path, dest / IMAGE_NAME)
    shape = read_image(image_path).shape
    merged = np.zeros(shape[:2], np.int32)
    count = 0
    for path in mask_paths.values():
        labels = read_labels(path, shape=shape)
        ids, inverse = np.unique(labels, return_inverse=True)
        renumbered = inverse.reshape(labels.shape).astype(np.int32)  # 0 stays 0: ids[0] == 0 when present
        if ids[0] != 0:
            renumbered += 1
        new = (renumbered > 0) & (merged == 0)
        merged[new] = renumbered[new] + count
        count += int((ids > 0).sum())
    if count:
        write_labels(dest / "class1.tif", merged)
    return count


def main(src: str, dst: str) -> None:
    total = 0
    for sample in find_samples(src):
        total += merge_sample(sample.image_path, sample.mask_paths, Path(dst) / sample.name)
    sys.stdout.write(f"{dst}: {total} instances in one class\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
