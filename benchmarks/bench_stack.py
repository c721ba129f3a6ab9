"""A stack segmented plane by plane: peak RSS and seconds per plane, against one single image.

Each configuration runs in a fresh Python process (``--child``) that reports its RSS before
inference (model built, stack in memory) and its peak RSS (``ru_maxrss``) after it, so the
difference is what inference and the label stacks added:

- ``image``: one plane as a 2-D image, ``inference.predict.predict`` + ``postprocess.to_labels``;
- ``stack-10`` / ``stack-100``: ``stacks.iter_predict_stack`` over 10 / 100 planes +
  ``stacks.to_stack_labels``; one ``(planes, H, W)`` int32 image per class is the output itself.

Memory flat in the planes means: the raw instances grow with the cells found (bytes reported),
the rest of the peak does not grow with the planes beyond the label stacks' own size.
Random weights with ``box_score_thresh=0`` give ``--detections`` junk detections per plane (the
cost depends on their count, not on their quality). The CPU is shared with other jobs: times are
medians per plane over the run, and the single image is also timed in lockstep inside the stack
run (one image after every tenth plane), which is the ratio to quote.

    python benchmarks/bench_stack.py            # 100 planes of 256 x 256
    python benchmarks/bench_stack.py --quick    # 10 planes of 96 x 96
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, planes: int, size: int, detections: int, repeats: int) -> dict:
    from napari_cellseg._torch import torch
    from napari_cellseg.inference.predict import predict
    from napari_cellseg.model.network import ModelConfig, build_model
    from napari_cellseg.inference.postprocess import to_labels
    from napari_cellseg.progress import drain
    from napari_cellseg.inference.stacks import iter_predict_stack, to_stack_labels
    from napari_cellseg.io.image_reader import Stack

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="resnet18", class_names=["class1", "class2"], box_score_thresh=0.0,
                                    detections_per_img=detections)).eval()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (planes, size, size), dtype=np.uint16)
    stack = Stack(data, "T")
    predict(model, Stack(data[:1]).plane(0))  # warm-up (first-call allocations), not measured
    before = rss_mb()
    times = []
    if kind == "image":
        for _ in range(repeats):
            t0 = time.perf_counter()
            raw = predict(model, stack.plane(0))
            to_labels(raw, 0.0, 0.5, classes=[1, 2])
            times.append(time.perf_counter() - t0)
        raw_bytes, instances = raw.nbytes, len(raw)
    else:
        single, image = [], stack.plane(0)
        clock = [time.perf_counter()]

        def on_plane(_progress) -> None:
            times.append(time.perf_counter() - clock[0])
            if len(times) % max(1, planes // 10) == 0:  # the baseline in lockstep: one image between planes
                t1 = time.perf_counter()
                to_labels(predict(model, image), 0.0, 0.5, classes=[1, 2])
                single.append(time.perf_counter() - t1)
            clock[0] = time.perf_counter()

        result = drain(iter_predict_stack(model, stack), on_plane)
        t0 = time.perf_counter()
        labels = to_stack_labels(result, 0.0, 0.5, classes=[1, 2])
        label_s = time.perf_counter() - t0
        raw_bytes, instances = result.nbytes, len(result)
        assert labels[1].shape == (planes, size, size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"kind": kind, "planes": planes if kind != "image" else 1, "size": size, "rss_before_mb": round(before, 1),
           "peak_mb": round(peak, 1), "added_mb": round(peak - before, 1),
           "s_per_plane": round(statistics.median(times), 3),
           "raw_kb": round(raw_bytes / 1024, 1), "instances": instances}
    if kind != "image":
        out["to_stack_labels_s"] = round(label_s, 3)
        out["single_image_s_lockstep"] = round(statistics.median(single), 3)
        out["plane_vs_image_lockstep"] = round(statistics.median(times) / statistics.median(single), 3)
        out["label_stacks_mb"] = round(2 * planes * size * size * 4 / 2**20, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--planes", type=int, default=100)
    parser.add_argument("--detections", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=1)
    args = parser.parse_args()
    if args.quick:
        args.size, args.planes, args.repeats = 96, 10, 3
    if args.child:
        kind = args.child[0]
        planes = args.planes if kind == "stack-big" else max(1, args.planes // 10) if kind == "stack-small" else 1
        print(json.dumps(child(kind, planes, args.size, args.detections, args.repeats)))
        return
    info = C.header(f"stack of {args.planes} planes of {args.size} x {args.size} vs one image")
    rows = []
    for kind in ("image", "stack-small", "stack-big"):
        cmd = [sys.executable, __file__, "--child", kind, "--size", str(args.size), "--planes", str(args.planes),
               "--detections", str(args.detections), "--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row))
    big = rows[-1]
    summary = {"machine": info, "rows": rows,
               "s_per_plane_ratio_stack_vs_image_lockstep": big["plane_vs_image_lockstep"],
               "peak_mb_image_stack10_stack100": [r["peak_mb"] for r in rows],
               "added_mb_small_vs_big": [rows[1]["added_mb"], big["added_mb"]]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
