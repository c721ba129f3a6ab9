"""Copy HW3 sample folders with every class merged into one (``class1.tif``), for a class-agnostic model.

The built-in ``nuclei`` model is trained on DSB2018 with fluorescence and stained nuclei as one
class: telling them apart cost AP50 and a user asking for nuclei does not care which.
``--repeat-stained N`` writes each sample that had stained nuclei (``class2``) N times (``_rep1``...),
so the rarer, weaker kind is seen as often as it needs.

Run: python scripts/merge_classes.py ../shared/data/dsb2018/train [MORE_SOURCES...] /tmp/nuclei/train
"""

from __future__ import annotations

import argparse
import sys

from napari_cellseg.io.samples import find_samples, read_sample
from napari_cellseg.training.sample_writer import merge_classes, save_sample


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="train/ folders in the HW3 layout")
    parser.add_argument("dst")
    parser.add_argument("--repeat-stained", type=int, default=1)
    args = parser.parse_args(argv)
    total = copies = 0
    for src in args.sources:
        for sample in find_samples(src):
            image, labels = read_sample(sample)
            merged = merge_classes(labels)
            repeats = args.repeat_stained if 2 in labels else 1
            for r in range(repeats):
                save_sample(image, merged, args.dst, sample.name + (f"_rep{r}" if r else ""), replace=True)
                copies += 1
            total += int(merged[1].max()) if merged else 0
    sys.stdout.write(f"{args.dst}: {copies} samples, {total} distinct instances in one class\n")


if __name__ == "__main__":
    main()
