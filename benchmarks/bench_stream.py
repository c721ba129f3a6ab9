"""Peak memory and time per megapixel of streamed segmentation (``streaming.iter_segment_file``).

For each ``--sizes`` N, an N x N mosaic of real DSB val images (``_common.mosaic``) is written as an
uncompressed RGB TIFF; a fresh Python process then segments it with the built-in ``nuclei`` model
into a label TIFF, tile by tile, and reports its peak RSS (``ru_maxrss``, imports and model
included), its RSS before the run and after every tile, the time, the tiles and the cells.
``--stop-after K`` cancels each run after K tiles (a partial run: its time per megapixel is over
the image share its tiles cover, and the cancelled run leaves no label file). Target: peak <= 2 GB at
8000 and 20000 px, and time per megapixel at 20000 px within 1.2x of the 1000 px one.

    python benchmarks/bench_stream.py --sizes 1000 8000 20000
    python benchmarks/bench_stream.py --quick
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def child(cfg: dict) -> None:
    import numpy as np
    import tifffile

    from napari_cellseg.model.checkpoint import load_model
    from napari_cellseg.progress import drain
    from napari_cellseg.inference.streaming import iter_segment_file

    model, _ = load_model(cfg["model"])
    gc.collect()
    rss0 = C.rss_bytes()
    ticks: list[float] = []
    rss: list[int] = []
    pixels: list[int] = []

    def tick(p) -> None:
        ticks.append(time.perf_counter())
        rss.append(C.rss_bytes())

    stop_after = cfg.get("stop_after") or 0
    t0 = time.perf_counter()
    scores = drain(iter_segment_file(model, cfg["image"], {1: cfg["out"]}, tile_size=cfg["tile_size"],
                                     should_stop=lambda: bool(stop_after) and len(ticks) >= stop_after), tick)
    elapsed = ticks[-1] - t0
    from napari_cellseg.inference.tiling import tile_grid

    n = cfg["size"]
    pixels = [t.shape[0] * t.shape[1] for t in tile_grid((n, n), cfg["tile_size"], 128)][: len(ticks)]
    done = scores is not None
    top = 0
    if done:
        labels = tifffile.memmap(cfg["out"], mode="r")
        top = int(np.max(labels)) if labels.size <= 1e8 else max(scores, default=0)
    print(json.dumps({"peak_rss": C.peak_rss_bytes(), "rss_before": rss0, "seconds": elapsed, "tiles": len(ticks),
                      "complete": done, "tile_megapixels": sum(pixels) / 1e6, "rss_per_tile_mb": [C.mb(r) for r in rss],
                      "cells": len(scores) if done else None, "max_id": top}))


def _tiled_mp(n: int, args) -> float:
    """Megapixels the tiles of an n x n image cover (overlaps counted), for a stopped run's share."""
    from napari_cellseg.inference.tiling import tile_grid

    return sum(t.shape[0] * t.shape[1] for t in tile_grid((n, n), args.tile_size, 128)) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA)
    ap.add_argument("--model", default="nuclei")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--workdir", type=Path, default=None, help="where the mosaics go (default: a temporary folder)")
    ap.add_argument("--stop-after", type=int, default=0, help="stop each run after this many tiles (0: never)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.quick:
        args.sizes = [600]
    import tifffile

    info = C.header("bench_stream")
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.sizes:
            image_path, out = Path(tmp) / f"mosaic{n}.tif", Path(tmp) / f"labels{n}.tif"
            image = C.mosaic(args.data, (n, n))
            tifffile.imwrite(image_path, image, photometric="rgb")
            del image
            cfg = {"model": args.model, "image": str(image_path), "out": str(out), "tile_size": args.tile_size,
                   "size": n, "stop_after": args.stop_after}
            res = C.run_child(Path(__file__), ["--child", json.dumps(cfg)], timeout=4 * 3600)
            done_mp = n * n / 1e6 if res["complete"] else res["tile_megapixels"] * (n * n / 1e6) / _tiled_mp(n, args)
            res.update(size=n, megapixels=n * n / 1e6, s_per_mp=res["seconds"] / done_mp,
                       load=[round(x, 2) for x in __import__("os").getloadavg()])
            results.append(res)
            part = "" if res["complete"] else f" (stopped after {res['tiles']} tiles)"
            print(f"{n} x {n}{part}: peak RSS {C.mb(res['peak_rss'])} MB (before {C.mb(res['rss_before'])} MB), "
                  f"{C.fmt_s(res['seconds'])} = {res['s_per_mp']:.2f} s/MP, {res['tiles']} tiles, "
                  f"{res['cells']} cells, load {res['load']}", flush=True)
            image_path.unlink()
            out.unlink(missing_ok=True)  # a stopped run leaves none
    C.footer(info)
    C.dump_summary("bench_stream", {"machine": info, "results": results})


if __name__ == "__main__":
    main()
