"""Accuracy and speed of a model on DSB2018 val, as the built-in ``nuclei`` model is judged.

Class-agnostic COCO mask AP / AP50 / AP75 (every class merged into one; scores >= 0.05, up to 1000
detections evaluated), the same per image kind (class1 = fluorescence, class2 = stained), the
DSB2018 papers' TP / (TP + FP + FN), precision, recall, F1 and panoptic quality at IoU 0.5 (scores
>= the model's confidence: its tuned one, else 0.5), and seconds per image, at the shipped mask threshold
(0.6; rounds 1-5 were measured at 0.5). ``--scale`` is predict's (default ``auto``; 1 = as the network
sees the file). ``--cv``: how well a tuned confidence carries to unseen images - three random halvings
of the images; on each, the cut ``napari-cellseg tune`` would choose on one half is scored on the other.

Run: python benchmarks/bench_nuclei.py [--model nuclei] [--val DIR] [--limit N] [--scale auto|F] [--tta] [--cv]
     [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _common import DEFAULT_DATA, write_figures

from napari_cellseg._torch import torch
from napari_cellseg.defaults import MASK_THRESH
from napari_cellseg.model.checkpoint import load_model
from napari_cellseg.io.coco import labels_to_results
from napari_cellseg.training.dataset import dataset_classes
from napari_cellseg.io.samples import find_samples
from napari_cellseg.io.images import read_image
from napari_cellseg.evaluation.metrics import class_agnostic, evaluate, matching
from napari_cellseg.inference.pipeline import samples_ground_truth, segment_image
from napari_cellseg.inference.postprocess import model_confidence
from napari_cellseg.inference.scale import AUTO_RANGE, parse_scale
from napari_cellseg.inference.tta import FLIPS
from napari_cellseg.inference.tuning import best_cut

KINDS = {1: "fluorescence", 2: "stained"}


def score(model, samples, mask_thresh: float, scale="auto", tta: bool = False) -> tuple[list[dict], list[float]]:
    results, seconds = [], []
    for image_id, sample in enumerate(samples, start=1):
        image = read_image(sample.image_path)
        tick = time.perf_counter()
        labels, scores = segment_image(model, image, score_thresh=0.05, mask_thresh=mask_thresh, scale=scale,
                                       tta=tta)
        seconds.append(time.perf_counter() - tick)
        results += labels_to_results(labels, image_id, scores)
    return results, seconds


def figures(gt: dict, results: list[dict], score_thresh: float) -> dict:
    gt1, res1 = class_agnostic(gt, results)
    m = evaluate(gt1, res1, max_dets=1000)
    match = matching(gt1, res1, iou=0.5, score_thresh=score_thresh)
    return {"AP": m["AP"], "AP50": m["AP50"], "AP75": m["AP75"], "AP50_by_diameter": m["AP50_by_diameter"],
            "accuracy@0.5": match["accuracy"],
            **{k: match[k] for k in ("precision", "recall", "f1", "panoptic_quality", "tp", "fp", "fn")},
            "images": m["num_images"]}


def subset(gt: dict, results: list[dict], ids: set[int]) -> tuple[dict, list[dict]]:
    """Ground truth and results of the images ``ids`` only."""
    sub = dict(gt, images=[i for i in gt["images"] if i["id"] in ids],
               annotations=[a for a in gt["annotations"] if a["image_id"] in ids])
    return sub, [r for r in results if r["image_id"] in ids]


def by_kind(gt: dict, results: list[dict], class_id: int, score_thresh: float) -> dict:
    """The figures on the images holding class ``class_id`` ground truth only."""
    return figures(*subset(gt, results, {a["image_id"] for a in gt["annotations"] if a["category_id"] == class_id}),
                   score_thresh)


def cross_validated(gt: dict, results: list[dict], splits: int = 3) -> dict:
    """TP/(TP+FP+FN) at cuts chosen on other images: each random halving tunes on one half and scores the
    other, both ways; the counts are pooled over each halving's two halves."""
    gt1, res1 = class_agnostic(gt, results)
    ids = sorted(i["id"] for i in gt1["images"])
    rng, out = np.random.default_rng(0), []
    for _ in range(splits):
        order = rng.permutation(ids)
        halves = [set(order[::2].tolist()), set(order[1::2].tolist())]
        tp = fp = fn = 0
        cuts = []
        for tune_on, score_on in (halves, halves[::-1]):
            cut = best_cut(*subset(gt1, res1, tune_on)).score_thresh
            m = matching(*subset(gt1, res1, score_on), iou=0.5, score_thresh=cut)
            tp, fp, fn, cuts = tp + m["tp"], fp + m["fp"], fn + m["fn"], cuts + [cut]
        out.append({"cuts": cuts, "accuracy@0.5": tp / (tp + fp + fn)})
    return {"splits": out, "accuracy@0.5": float(np.mean([s["accuracy@0.5"] for s in out])),
            "chosen_on_all": best_cut(gt1, res1).score_thresh}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="nuclei", help="built-in model name or checkpoint")
    p.add_argument("--val", default=str(DEFAULT_DATA / "val"))
    p.add_argument("--limit", type=int, help="first N val images only")
    p.add_argument("--mask-thresh", type=float, default=MASK_THRESH, help="default: the shipped one")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--scale", type=parse_scale, default="auto", help="auto (the default of predict/export) or a factor")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (predict's --tta: ~4.5x slower)")
    p.add_argument("--score-thresh", type=float, help="confidence of the matching figures (default: the model's)")
    p.add_argument("--cv", action="store_true", help="also cross-validate the tuned confidence (a few minutes)")
    p.add_argument("--results", help="also write the COCO results here (to score them again later)")
    p.add_argument("--json", help="write the figures here (scripts/pack_model.py --metrics reads it)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    samples = find_samples(args.val)[: args.limit]
    model, config = load_model(args.model)
    classes = dataset_classes(samples)
    gt = samples_ground_truth(samples, [f"class{k}" for k in range(1, max(classes) + 1)])
    results, seconds = score(model, samples, args.mask_thresh, args.scale, args.tta)
    if args.results:
        Path(args.results).write_text(json.dumps(results))
    cut = model_confidence(model) if args.score_thresh is None else args.score_thresh
    out = {"model": args.model, "val": str(args.val), "mask_thresh": args.mask_thresh, "scale": args.scale,
           "auto_range": list(AUTO_RANGE), "views": len(FLIPS) + 1 if args.tta else 1,
           "score_thresh": cut, "all": figures(gt, results, cut),
           **{KINDS.get(k, f"class{k}"): by_kind(gt, results, k, cut) for k in classes},
           "seconds_per_image": sum(seconds) / len(seconds), "threads": args.threads}
    if args.cv:
        out["confidence_cv"] = cross_validated(gt, results)
    write_figures(out, args.json)


if __name__ == "__main__":
    main()
