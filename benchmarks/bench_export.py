"""Folder export streams: memory does not grow with the folder; time per image.

Runs ``pipeline.iter_export`` over ``--images`` images and samples this process's RSS after each
finished image, then fits a line (MB per image) through the samples after the first
``--settle`` images (the allocator's first high-water marks). Two folders:

- ``real``: the first images of DSB2018 ``test_release/`` with its mapping file (sizes vary from
  256 x 256 to 1024 x 1024, so RSS moves with image size as well);
- ``same``: one 520 x 696 test image linked ``--images`` times under different names, so any
  growth is the exporter's, not a bigger image's.

Random weights give ~half their detections a score above the default 0.5 export threshold;
``--checkpoint`` uses a trained model instead.

    python benchmarks/bench_export.py            # 30 images per folder
    python benchmarks/bench_export.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from napari_cellseg.inference.pipeline import ExportItem, export_items, iter_export  # noqa: E402
from napari_cellseg.progress import drain  # noqa: E402


def _median_growth(y: np.ndarray) -> float:
    k = len(y) // 3
    if k < 1:
        return float("nan")
    return float((np.median(y[-k:]) - np.median(y[:k])) / (len(y) - k))


def export(model, items: list[ExportItem], out: Path, settle: int) -> dict:
    rss, stamps = [C.rss_bytes()], [time.perf_counter()]

    def sample(_progress) -> None:
        stamps.append(time.perf_counter())
        rss.append(C.rss_bytes())

    written = drain(iter_export(model, items, out, resume=False), sample)
    per_image = np.diff(stamps)
    y = np.array(rss[1:], float) / 2**20
    x = np.arange(1, len(y) + 1)
    tail = slice(min(settle, len(y) - 2), None)
    slope = float(np.polyfit(x[tail], y[tail], 1)[0]) if len(y[tail]) >= 2 else float("nan")
    return {
        "images": len(items),
        "results_written": written,
        "seconds_per_image_median": C.median(per_image.tolist()),
        "seconds_per_image_mean": float(per_image.mean()),
        "rss_mb_before": C.mb(rss[0]),
        "rss_mb_after_each": [round(v, 1) for v in y.tolist()],
        "rss_mb_max": float(y.max()),
        "slope_mb_per_image": slope,
        "slope_from_image": int(x[tail][0]),
        "growth_mb_first_to_last_after_settle": float(y[-1] - y[tail][0]),
        # robust to single-image spikes: median RSS of the last third minus that of the first third
        "median_growth_mb_per_image": _median_growth(y[tail]),
        "output_json_mb": C.mb(out.stat().st_size) if out.exists() else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--checkpoint")
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--settle", type=int, default=5, help="images before the slope is fitted")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.images, args.settle = 6, 2

    info = C.header("bench_export")
    model = C.load_model(args.checkpoint, args.arch, score_thresh=0.05, detections=200)
    summary: dict = {"machine": info, "arch": args.arch, "checkpoint": args.checkpoint}
    real = export_items(args.data)[: args.images]
    pick = next((it for it in real if it.shape == (520, 696)), real[0])
    with tempfile.TemporaryDirectory() as tmp:
        same_dir = Path(tmp, "same")
        same_dir.mkdir()
        same = []
        for k in range(args.images):
            link = same_dir / f"copy{k:03d}.tif"
            link.symlink_to(pick.path)
            same.append(ExportItem(k + 1, link.name, link, pick.shape))
        for name, items in (("real", real), ("same", same)):
            res = export(model, items, Path(tmp, f"{name}.json"), args.settle)
            summary[name] = res
            print(
                f"export {name}: {res['images']} images, {res['results_written']} results, "
                f"{C.fmt_s(res['seconds_per_image_median'])} per image (median), RSS {res['rss_mb_before']} MB "
                f"before -> max {res['rss_mb_max']:.1f} MB; slope after image {res['slope_from_image']}: "
                f"{res['slope_mb_per_image']:+.2f} MB/image "
                f"(growth {res['growth_mb_first_to_last_after_settle']:+.1f} MB; "
                f"median last third vs first third {res['median_growth_mb_per_image']:+.3f} MB/image)"
            )
            print("  RSS MB after each image: " + json.dumps(res["rss_mb_after_each"]))
    C.footer(info)
    C.dump_summary("export", summary)


if __name__ == "__main__":
    main()
