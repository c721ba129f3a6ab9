"""Peak RSS of CPU inference: tiled vs untiled on a 2500 x 2000 image with 700+ instances, and
torchvision's pasted masks vs ``RawInstances`` where torchvision's fit in memory.

Every configuration runs in a fresh Python process (``--child``), so one run's allocations never
pollute another's peak; the child reports ``ru_maxrss`` (peak resident set size over its whole
life, imports included) and its RSS just before inference (model built, image loaded), so the
difference is what inference itself added.

Configurations:
- ``tiled``: ``inference.predict`` with the default 1024 px tiles (9 tiles for 2500 x 2000), a
  per-tile cap giving 700+ instances in all. Target: peak < 4 GB.
- ``tiled_balanced``: an experiment, not the library's behaviour: the same number of tiles per
  axis, each only as large as the axis needs (2500 x 2000: 919 x 752 px tiles instead of 1024 x 1024),
  with the per-tile cap scaled by the tile area (the same detections per pixel).
- ``untiled``: the same image as one tile (``tile_size`` = the image size), cap = the tiled count.
- ``forward-1000`` / ``predict-1000``: torchvision's forward (N x 1 x H x W float masks) vs ours on a
  1000 x 1000 image with 300 instances. torchvision at 2500 x 2000 x 700 would need 14 GB for the
  masks alone (N * H * W * 4 bytes): too much for a shared 24 GiB machine, so it is only computed
  (``--torchvision-large`` runs it anyway).

Random weights with ``box_score_thresh=0`` give the requested count of junk detections (the cost
depends on the count, not the quality).

    python benchmarks/bench_memory.py            # full
    python benchmarks/bench_memory.py --quick    # smoke test (small image)
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def balanced_tile_grid(shape, tile_size, overlap):
    """Experiment (not in the library): per axis, the same number of tiles as ``tile_grid`` but each
    only as large as needed to cover the axis with the required overlap (2000 px: 3 x 752 px, not 3 x 1024)."""
    import math

    from napari_cellseg import tiling

    sizes, starts = [], []
    for length in shape:
        n = len(tiling.axis_starts(length, tile_size, overlap))
        size = length if n == 1 else min(tile_size, math.ceil((length + (n - 1) * overlap) / n))
        sizes.append(size)
        starts.append(tiling.axis_starts(length, size, overlap))
    (th, tw), (ys, xs) = sizes, starts
    return [
        tiling.Tile(y0, y0 + th, x0, x0 + tw, cy, cx)
        for y0, cy in zip(ys, tiling._cores(ys, th))
        for x0, cx in zip(xs, tiling._cores(xs, tw))
    ]


def child(cfg: dict) -> None:
    from napari_cellseg import inference
    from napari_cellseg._torch import torch
    from napari_cellseg.images import to_tensor
    from napari_cellseg.inference import predict
    from napari_cellseg.postprocess import to_labels

    if cfg.get("balanced"):
        inference.tile_grid = balanced_tile_grid
    image = np.load(cfg["image"])
    model = C.random_model(cfg["arch"], score_thresh=0.0, detections=cfg["cap"])
    gc.collect()
    rss0, peak0 = C.rss_bytes(), C.peak_rss_bytes()
    t0 = time.perf_counter()
    if cfg["mode"] == "forward":
        with torch.no_grad():
            out = model([to_tensor(image)])[0]
        n = int(len(out["scores"]))
        held = int(out["masks"].numel() * out["masks"].element_size())
    else:
        raw = predict(model, image, tile_size=cfg["tile_size"], max_detections=cfg["cap"])
        to_labels(raw, 0.5, 0.6, classes=[1, 2])
        n, held = len(raw), raw.nbytes
    seconds = time.perf_counter() - t0
    print(json.dumps({
        **cfg, "instances": n, "seconds": seconds, "result_bytes": held,
        "rss_before": rss0, "peak_before": peak0, "peak": C.peak_rss_bytes(), "rss_after": C.rss_bytes(),
    }))


def run(script: Path, cfg: dict) -> dict:
    res = C.run_child(script, ["--child", json.dumps(cfg)])
    res["added"] = res["peak"] - res["rss_before"]
    print(
        f"{cfg['label']}: {res['instances']} instances, {C.fmt_s(res['seconds'])}, peak RSS "
        f"{C.mb(res['peak'])} MB (before inference {C.mb(res['rss_before'])} MB, inference added "
        f"{C.mb(res['added'])} MB), result held {C.mb(res['result_bytes'])} MB"
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--cap", type=int, default=250, help="detections per tile in the tiled run")
    ap.add_argument("--repeats", type=int, default=1, help="fresh processes per configuration")
    ap.add_argument("--torchvision-large", action="store_true", help="also run torchvision's forward at full size")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    info = C.header("bench_memory")
    script = Path(__file__).resolve()
    big, small, n_small = ((1250, 1000), (500, 500), 50) if args.quick else ((2500, 2000), (1000, 1000), 300)
    cap = 40 if args.quick else args.cap
    summary: dict = {"machine": info, "arch": args.arch, "shape": list(big)}
    with tempfile.TemporaryDirectory() as tmp:
        big_path, small_path = Path(tmp, "big.npy"), Path(tmp, "small.npy")
        np.save(big_path, C.mosaic(args.data, big))
        np.save(small_path, C.mosaic(args.data, small))
        base = {"arch": args.arch}
        runs: dict[str, list[dict]] = {}
        for r in range(args.repeats):
            tiled = run(script, {**base, "label": "tiled", "mode": "predict", "image": str(big_path),
                                 "tile_size": 1024, "cap": cap})
            runs.setdefault("tiled", []).append(tiled)
            # same detections per pixel as the square tiles: the cap scales with the tile area
            bt = balanced_tile_grid(big, 1024, 128)[0]
            bcap = max(1, round(cap * bt.shape[0] * bt.shape[1] / min(1024, big[0]) / min(1024, big[1])))
            runs.setdefault("tiled_balanced", []).append(run(script, {
                **base, "label": f"tiled, balanced {bt.shape[0]}x{bt.shape[1]} tiles (experiment)", "mode": "predict",
                "image": str(big_path), "tile_size": 1024, "cap": bcap, "balanced": True}))
            runs.setdefault("untiled", []).append(run(script, {
                **base, "label": "untiled", "mode": "predict", "image": str(big_path),
                "tile_size": max(big), "cap": max(tiled["instances"], 1)}))
            runs.setdefault("forward_small", []).append(run(script, {
                **base, "label": f"torchvision forward {small[0]}x{small[1]}", "mode": "forward",
                "image": str(small_path), "tile_size": 0, "cap": n_small}))
            runs.setdefault("predict_small", []).append(run(script, {
                **base, "label": f"predict {small[0]}x{small[1]}", "mode": "predict",
                "image": str(small_path), "tile_size": 1024, "cap": n_small}))
            if args.torchvision_large:
                runs.setdefault("forward_large", []).append(run(script, {
                    **base, "label": f"torchvision forward {big[0]}x{big[1]}", "mode": "forward",
                    "image": str(big_path), "tile_size": 0, "cap": tiled["instances"]}))

    def med(name: str, key: str) -> float:
        return C.median([r[key] for r in runs[name]])

    for name in runs:
        summary[name] = {k: med(name, k) for k in ("peak", "added", "seconds", "instances", "result_bytes")}
    summary["tiled_vs_untiled_peak_ratio"] = med("tiled", "peak") / med("untiled", "peak")
    summary["torchvision_large_masks_bytes_computed"] = med("tiled", "instances") * big[0] * big[1] * 4
    summary["small_peak_ratio_ours_vs_torchvision"] = med("predict_small", "peak") / med("forward_small", "peak")
    print(
        f"peak RSS tiled {C.mb(med('tiled', 'peak'))} MB vs untiled {C.mb(med('untiled', 'peak'))} MB "
        f"(ratio {summary['tiled_vs_untiled_peak_ratio']:.2f}); time per image tiled "
        f"{C.fmt_s(med('tiled', 'seconds'))} vs untiled {C.fmt_s(med('untiled', 'seconds'))}"
    )
    print(
        f"{small[0]}x{small[1]}: peak RSS ours {C.mb(med('predict_small', 'peak'))} MB vs torchvision forward "
        f"{C.mb(med('forward_small', 'peak'))} MB; torchvision at {big[0]}x{big[1]} would hold "
        f"{C.mb(summary['torchvision_large_masks_bytes_computed'])} MB of masks"
    )
    C.footer(info)
    C.dump_summary("memory", summary)


if __name__ == "__main__":
    main()
