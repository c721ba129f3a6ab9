"""No silent cap: cells found in a dense mosaic in one go against its images one by one.

Tiles ``--grid`` x ``--grid`` crops (``--crop`` px, top-left) of DSB2018 val images into one mosaic
(8 x 8 x 256 px = 2048 x 2048 px by default), segments it with the default detection cap (which
follows each tile's area and is raised when a tile hits it), and with the model's fixed cap as
before (the old behaviour), then each crop on its own. Cells = instances with score >= 0.5. Scale 1
throughout, so the figure isolates the cap. Run: python benchmarks/bench_dense.py [--grid 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import DEFAULT_DATA, write_figures

from napari_cellseg._torch import torch
from napari_cellseg.model.checkpoint import load_model
from napari_cellseg.io.samples import find_samples
from napari_cellseg.errors import DetectionCapWarning
from napari_cellseg.io.images import read_image
from napari_cellseg.inference.predict import predict


def crops(val: Path, count: int, size: int) -> list[np.ndarray]:
    """The top-left ``size`` x ``size`` crop of the first ``count`` val images at least that large."""
    out = []
    for sample in find_samples(val):
        image = read_image(sample.image_path)
        if min(image.shape[:2]) >= size:
            out.append(np.ascontiguousarray(image[:size, :size]))
        if len(out) == count:
            return out
    raise SystemExit(f"only {len(out)} val images are {size} px or larger")


def cells(raw) -> int:
    return int((raw.scores >= 0.5).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="nuclei")
    p.add_argument("--val", default=str(DEFAULT_DATA / "val"))
    p.add_argument("--grid", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    p.add_argument("--skip-fixed", action="store_true", help="skip the run with the model's fixed cap")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, config = load_model(args.model)
    pieces = crops(Path(args.val), args.grid * args.grid, args.crop)
    rows = [np.concatenate(pieces[r * args.grid:(r + 1) * args.grid], axis=1) for r in range(args.grid)]
    mosaic = np.ascontiguousarray(np.concatenate(rows, axis=0))
    out = {"model": args.model, "mosaic": list(mosaic.shape[:2]), "images": len(pieces), "threads": args.threads}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DetectionCapWarning)
        tick = time.perf_counter()
        raw = predict(model, mosaic)
        out["one_go"] = {"cells": cells(raw), "capped_tiles": raw.capped_tiles, "seconds": time.perf_counter() - tick}
        if not args.skip_fixed:
            tick = time.perf_counter()
            old = predict(model, mosaic, max_detections=config.detections_per_img)
            out["fixed_cap"] = {"cap": config.detections_per_img, "cells": cells(old),
                                "capped_tiles": old.capped_tiles, "seconds": time.perf_counter() - tick}
    out["warnings"] = [str(w.message) for w in caught]
    tick = time.perf_counter()
    out["one_by_one"] = {"cells": sum(cells(predict(model, piece)) for piece in pieces),
                         "seconds": time.perf_counter() - tick}
    out["ratio"] = out["one_go"]["cells"] / max(out["one_by_one"]["cells"], 1)
    if "fixed_cap" in out:
        out["ratio_fixed_cap"] = out["fixed_cap"]["cells"] / max(out["one_by_one"]["cells"], 1)
    write_figures(out, args.json)


if __name__ == "__main__":
    main()
