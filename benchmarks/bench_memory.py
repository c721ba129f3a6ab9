"""Peak RSS of CPU inference: tiled vs untiled on a 2500 x 2000 image with 700+ instances, and
torchvision's pasted masks vs ``RawInstances`` where torchvision's fit in memory.

Every configuration runs in a fresh Python process (``--child``), so one run's allocations never
pollute another's peak; the child reports ``ru_maxrss`` (peak resident set size over its whole
life, imports included) and its RSS just before inference (model built, image loaded), so the
difference is what inference itself added.

Configurations:
- ``tiled``: ``inference.predict.predict`` with the default ``tile_size`` 1024 (2500 x 2000: 9 tiles of
  919 x 752 px), a per-tile cap giving 700+ instances in all. Target: peak < 4 GB.
- ``tiled_square``: baseline, the library's grid before tiles were shrunk to fit: 9 square tiles
  of 1024 px, the per-tile cap scaled by the tile area (the same detections per pixel).
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


def square_tile_grid(shape, tile_size, overlap):
    """The library's grid before tiles were shrunk to fit (baseline): square ``tile_size`` tiles, as
    many per axis as now, spread to end flush (2000 px: 3 x 1024 px overlapping by 536 px)."""
    from napari_cellseg.inference import tiling

    sizes, starts = [], []
    for length in shape:
        n = len(tiling.axis_windows(length, tile_size, overlap)[1])
        size = min(length, tile_size)
        sizes.append(size)
        starts.append([0] if n == 1 else [round(i * (length - size) / (n - 1)) for i in range(n)])
    (th, tw), (ys, xs) = sizes, starts
    return [
        tiling.Tile(y0, y0 + th, x0, x0 + tw, cy, cx)
        for y0, cy in zip(ys, tiling._cores(ys, th))
        for x0, cx in zip(xs, tiling._cores(xs, tw))
    ]


def child(cfg: dict) -> None:
    from napari_cellseg.inference import predict as inference
    from napari_cellseg._torch import torch
    from napari_cellseg.io.images import to_tensor
    from napari_cellseg.inference.predict import predict
    from napari_cellseg.inference.postprocess import to_labels

    if cfg.get("square"):
        inference.tile_grid = square_tile_grid
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
    ap.add_argument("--cap", type=int, default=250, help="detections per 1024 x 1024 px of tile in the tiled runs")
    ap.add_argument("--repeats", type=int, default=1, help="fresh processes per configuration")
    ap.add_argument("--torchvision-large", action="store_true", help="also run torchvision's forward at full size")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    from napari_cellseg.inference.tiling import tile_grid

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
        for _ in range(args.repeats):
            # --cap is per 1024 x 1024 px: each grid's cap scales with its tile area (same detections per pixel)
            for name, square in (("tiled", False), ("tiled_square", True)):
                t = (square_tile_grid if square else tile_grid)(big, 1024, 128)[0]
                tcap = max(1, round(cap * t.shape[0] * t.shape[1] / 1024**2))
                label = f"tiled, {t.shape[0]}x{t.shape[1]} tiles" + (" (previous square grid)" if square else "")
                runs.setdefault(name, []).append(run(script, {
                    **base, "label": label, "mode": "predict", "image": str(big_path), "tile_size": 1024,
                    "cap": tcap, "square": square}))
            tiled = runs["tiled"][-1]
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
    summary["tiled_vs_square_seconds_ratio"] = med("tiled", "seconds") / med("tiled_square", "seconds")
    summary["tiled_vs_untiled_peak_ratio"] = med("tiled", "peak") / med("untiled", "peak")
    summary["torchvision_large_masks_bytes_computed"] = med("tiled", "instances") * big[0] * big[1] * 4
    summary["small_peak_ratio_ours_vs_torchvision"] = med("predict_small", "peak") / med("forward_small", "peak")
    print(
        f"peak RSS tiled {C.mb(med('tiled', 'peak'))} MB vs untiled {C.mb(med('untiled', 'peak'))} MB "
        f"(ratio {summary['tiled_vs_untiled_peak_ratio']:.2f}); time per image tiled "
        f"{C.fmt_s(med('tiled', 'seconds'))} vs untiled {C.fmt_s(med('untiled', 'seconds'))} "
        f"and previous square tiles {C.fmt_s(med('tiled_square', 'seconds'))} "
        f"(ratio {summary['tiled_vs_square_seconds_ratio']:.2f})"
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
