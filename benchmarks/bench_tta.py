"""What ``--tta`` costs: seconds per image without and with test-time augmentation (the four flips and
the 1.4x view), the two run in turn on each image so that a busy machine slows both alike.

Run: python benchmarks/bench_tta.py [--model nuclei] [--val DIR] [--every 9] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import DEFAULT_DATA, write_figures

from napari_cellseg._torch import torch
from napari_cellseg.inference.scale import iter_predict_scaled
from napari_cellseg.io.images import read_image
from napari_cellseg.io.samples import find_samples
from napari_cellseg.model.checkpoint import load_model
from napari_cellseg.progress import drain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="nuclei", help="built-in model name or checkpoint")
    p.add_argument("--val", default=str(DEFAULT_DATA / "val"))
    p.add_argument("--every", type=int, default=9, help="every Nth image of the folder")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model)
    samples = find_samples(args.val)[:: args.every]
    seconds = {False: 0.0, True: 0.0}
    for sample in samples:
        image = read_image(sample.image_path)
        for tta in (False, True):
            tick = time.perf_counter()
            drain(iter_predict_scaled(model, image, tta=tta))
            seconds[tta] += time.perf_counter() - tick
    n = len(samples)
    write_figures({"model": args.model, "images": n, "threads": args.threads,
                   "seconds_per_image": seconds[False] / n, "seconds_per_image_tta": seconds[True] / n,
                   "ratio": seconds[True] / seconds[False]}, args.json)


if __name__ == "__main__":
    main()
