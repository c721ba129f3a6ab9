"""The ONNX export against the torch model it came from: AP50 on DSB2018 val and seconds per image.

Both run through the same pipeline (``segment_image``: tiling, mask pasting, thresholds); only the
network differs (torch vs onnxruntime). Images alternate torch/ONNX first so load drift hits both;
AP figures as ``bench_nuclei.py`` (class-agnostic, scores >= 0.05, mask threshold 0.5).

Run: python benchmarks/bench_onnx.py [--model nuclei] [--onnx FILE] [--limit N] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import _common
from _common import DEFAULT_DATA, median
from bench_nuclei import figures

from napari_cellseg._torch import torch
from napari_cellseg.model.checkpoint import load_model
from napari_cellseg.io.coco import labels_to_results
from napari_cellseg.training.dataset import dataset_classes
from napari_cellseg.io.samples import find_samples
from napari_cellseg.io.images import read_image
from napari_cellseg.model.onnx_model import export_onnx
from napari_cellseg.inference.pipeline import samples_ground_truth, segment_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="nuclei", help="built-in model name or checkpoint")
    p.add_argument("--onnx", help="its .onnx export (default: exported now into a temporary folder)")
    p.add_argument("--val", default=str(DEFAULT_DATA / "val"))
    p.add_argument("--limit", type=int, help="first N val images only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="4 images")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    info = _common.header("ONNX (onnxruntime) vs torch: AP50 and seconds per image")
    samples = find_samples(args.val)[: 4 if args.quick else args.limit]
    torch_model, config = load_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(args.onnx or Path(tmp) / "model.onnx")
        if not args.onnx:
            tick = time.perf_counter()
            export_onnx(torch_model, config, onnx_path)
            print(f"# exported and checked in {time.perf_counter() - tick:.1f} s")
        onnx_model, _ = load_model(onnx_path)
        models = {"torch": torch_model, "onnx": onnx_model}
        results = {name: [] for name in models}
        seconds = {name: [] for name in models}
        for image_id, sample in enumerate(samples, start=1):
            image = read_image(sample.image_path)
            for name in (list(models) if image_id % 2 else list(models)[::-1]):
                tick = time.perf_counter()
                labels, scores = segment_image(models[name], image, score_thresh=0.05, mask_thresh=0.5)
                seconds[name].append(time.perf_counter() - tick)
                results[name] += labels_to_results(labels, image_id, scores)
            print(f"# {image_id}/{len(samples)} {image.shape[1]}x{image.shape[0]}: torch "
                  f"{seconds['torch'][-1]:.2f} s, onnx {seconds['onnx'][-1]:.2f} s", flush=True)
    classes = dataset_classes(samples)
    gt = samples_ground_truth(samples, [f"class{k}" for k in range(1, max(classes) + 1)])
    out = {"model": args.model, "images": len(samples), "threads": args.threads,
           **{name: {**figures(gt, results[name], 0.5), "median_s": median(seconds[name]),
                     "mean_s": sum(seconds[name]) / len(samples)} for name in models}}
    out["AP50_difference"] = out["onnx"]["AP50"] - out["torch"]["AP50"]
    out["detections"] = {name: len(results[name]) for name in models}
    _common.footer(info)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
