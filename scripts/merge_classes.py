"""Copy a HW3 sample folder with every class merged into one (``class1.tif``), for a class-agnostic model.

The built-in ``nuclei`` model is trained on DSB2018 with fluorescence and stained nuclei as one
class: telling them apart cost 0.12 AP50 and a user asking for nuclei does not care which.

Run: python scripts/merge_classes.py ../shared/data/dsb2018/train /tmp/nuclei/train
"""

from __future__ import annotations

import sys

from napari_cellseg.data import find_samples, read_sample
from napari_cellseg.sample_writer import merge_classes, save_sample


def main(src: str, dst: str) -> None:
    total = 0
    for sample in find_samples(src):
        image, labels = read_sample(sample)
        merged = merge_classes(labels)
        save_sample(image, merged, dst, sample.name, replace=True)
        total += int(merged[1].max()) if merged else 0
    sys.stdout.write(f"{dst}: {total} instances in one class\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
