"""COCO mask AP / AP50 / AP75 / AP per class with pycocotools, and the matching figures cell papers
quote (TP/(TP+FP+FN), precision, recall, F1, panoptic quality at one IoU and confidence).

COCOeval's default cap of 100 detections per image understates AP on dense images (a DSB2018
image can hold 369 nuclei), so one evaluation runs with maxDets = [1, 100, max_dets] and both the
uncapped headline (``max_dets``) and the standard-cap (100) figures are read from its precision
array. Undefined figures (no ground truth to score against) are 0.0 for the headline numbers and
None per class, so the result stays valid JSON.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..io.rle import compressed_rle
from ..errors import DatasetError

STANDARD_MAX_DETS = 100
DIAMETER_BINS = (8, 16, 32)
"""Edges (px) of the nucleus sizes AP50 is also reported for, by equivalent diameter (a disc of the
same area): COCO's small / medium / large split at areas of 32^2 and 96^2 px, which puts nearly every
DSB2018 nucleus in "small". Why: a model can score well overall and miss the small nuclei (the built-in model
misses most under 8 px); one headline figure hides that."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """pycocotools prints progress; library code never does."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _coco_gt(gt: Mapping[str, Any]) -> COCO:
    """A COCO object over copies of the annotations: COCOeval writes into them."""
    coco = COCO()
    coco.dataset = {
        "images": [dict(image) for image in gt["images"]],
        "annotations": [dict(ann) for ann in gt["annotations"]],
        "categories": [dict(cat) for cat in gt["categories"]],
    }
    coco.createIndex()
    return coco


def _coco_dt(coco_gt: COCO, results: Sequence[Mapping[str, Any]]) -> COCO:
    """Results as a COCO object, like ``loadRes`` for masks but safe on an empty list.

    loadRes also takes a result's area from its bbox when one is present; here it is the mask
    area, so area ranges mean the same for predictions and ground truth.
    """
    anns = []
    for result in results:
        image = coco_gt.imgs[result["image_id"]]
        try:
            rle = compressed_rle(result["segmentation"])
        except ValueError as err:
            name = image["file_name"]
            raise DatasetError(f"A result for image {name} is damaged ({err}).") from None
        if rle["size"] != [image["height"], image["width"]]:
            raise DatasetError(
                f"A result for image {image['file_name']} is {rle['size'][0]} x {rle['size'][1]}, "
                f"the image is {image['height']} x {image['width']}."
            )
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": result["image_id"],
                "category_id": result["category_id"],
                "score": float(result["score"]),
                "segmentation": rle,
                "area": float(mask_utils.area(rle)),
                "bbox": list(mask_utils.toBbox(rle)),
                "iscrowd": 0,
            }
        )
    coco = COCO()
    coco.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "annotations": anns,
        "categories": list(coco_gt.dataset["categories"]),
    }
    coco.createIndex()
    return coco


def _mean_precision(precision: np.ndarray) -> float | None:
    """Mean over defined entries; pycocotools marks 'no ground truth' with -1."""
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def _size_ranges() -> tuple[list[list[float]], list[str]]:
    """COCOeval area ranges: all, then one per nucleus size of ``DIAMETER_BINS`` (labels in px of
    equivalent diameter). COCOeval ignores ground truth outside a range, and detections outside it that
    match nothing, so each size's AP50 is the AP50 of those nuclei alone."""
    edges = [0.0, *DIAMETER_BINS, float("inf")]
    areas = [min(np.pi * d * d / 4, 1e10) for d in edges]
    labels = [f"<{DIAMETER_BINS[0]} px"]
    labels += [f"{a}-{b} px" for a, b in zip(DIAMETER_BINS, DIAMETER_BINS[1:])] + [f">={DIAMETER_BINS[-1]} px"]
    return [[0.0, 1e10]] + [[lo, hi] for lo, hi in zip(areas, areas[1:])], ["all"] + labels


def evaluate(
    gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], max_dets: int = 1000
) -> dict:
    """COCO "segm" evaluation of ``results`` against ``gt`` over the images of ``gt`` only."""
    if max_dets < 1:
        raise ValueError(f"max_dets must be at least 1, got {max_dets}")
    image_ids = {image["id"] for image in gt["images"]}
    results = [r for r in results if r["image_id"] in image_ids]
    with _quiet():
        coco_gt = _coco_gt(gt)
        evaluator = COCOeval(coco_gt, _coco_dt(coco_gt, results), iouType="segm")
        evaluator.params.maxDets = [1, STANDARD_MAX_DETS, max_dets]
        evaluator.params.areaRng, evaluator.params.areaRngLbl = _size_ranges()
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [iou threshold, recall, class, area range, max dets]
    iou = evaluator.params.iouThrs
    t50, t75 = int(np.argmin(np.abs(iou - 0.5))), int(np.argmin(np.abs(iou - 0.75)))
    names = {cat["id"]: cat["name"] for cat in gt["categories"]}

    def ap(t: Any = slice(None), k: Any = slice(None), m: int = 2, a: int = 0) -> float | None:
        return _mean_precision(precision[t, :, k, a, m])  # area range 0 = "all"

    return {
        "AP": ap() or 0.0,
        "AP50": ap(t50) or 0.0,
        "AP75": ap(t75) or 0.0,
        "AP_per_class": {
            names[cat_id]: ap(k=k) for k, cat_id in enumerate(evaluator.params.catIds)
        },
        "AP@100": ap(m=1) or 0.0,
        "AP50@100": ap(t50, m=1) or 0.0,
        "AP50_by_diameter": {label: ap(t50, a=a) for a, label in enumerate(evaluator.params.areaRngLbl) if a},
        "max_dets": max_dets,
        "num_images": len(image_ids),
        "num_detections": len(results),
    }


def class_agnostic(
    gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], name: str = "object"
) -> tuple[dict, list]:
    """Ground truth and results with every class merged into one (id 1): scores finding the
    objects, not telling their classes apart (how a one-class model such as ``nuclei`` is judged)."""
    merged = dict(gt, categories=[{"id": 1, "name": name}],
                  annotations=[dict(a, category_id=1) for a in gt["annotations"]])
    return merged, [dict(r, category_id=1) for r in results]


def matching(
    gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], iou: float = 0.5, score_thresh: float = 0.5
) -> dict[str, float]:
    """The figures cell papers quote (StarDist's ``matching``), summed over all images: TP, FP, FN at
    mask IoU ``iou``; ``accuracy`` TP / (TP + FP + FN) (DSB2018's metric's basis), ``precision``,
    ``recall``, ``f1`` and ``panoptic_quality`` (sum of matched IoUs / (TP + FP/2 + FN/2)).

    Results at or above ``score_thresh`` are matched to ground truth of the same image and class,
    one to one, best IoU first (above IoU 0.5 a match is unique anyway). Every figure is 0.0 when
    its denominator is (no objects and no results).
    """
    truth: dict[tuple[int, int], list] = {}
    for ann in gt["annotations"]:
        truth.setdefault((ann["image_id"], ann["category_id"]), []).append(compressed_rle(ann["segmentation"]))
    found: dict[tuple[int, int], list] = {}
    for r in results:
        if r["score"] >= score_thresh:
            found.setdefault((r["image_id"], r["category_id"]), []).append(compressed_rle(r["segmentation"]))
    tp, matched_iou = 0, 0.0
    for key, preds in found.items():
        gts = truth.get(key, [])
        if not gts:
            continue
        ious = np.asarray(mask_utils.iou(preds, gts, [0] * len(gts)), dtype=np.float64).reshape(len(preds), len(gts))
        pairs = np.argwhere(ious >= iou)
        order = np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="stable")
        used_p, used_g = set(), set()
        for p, g in pairs[order]:
            if p not in used_p and g not in used_g:
                used_p.add(p)
                used_g.add(g)
                matched_iou += ious[p, g]
        tp += len(used_p)
    n_pred = sum(len(v) for v in found.values())
    n_true = len(gt["annotations"])
    fp, fn = n_pred - tp, n_true - tp

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    return {"accuracy": ratio(tp, tp + fp + fn), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn), "panoptic_quality": ratio(matched_iou, tp + fp / 2 + fn / 2),
            "tp": tp, "fp": fp, "fn": fn, "iou": iou, "score_thresh": score_thresh}


def matching_per_class(
    gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], iou: float = 0.5, score_thresh: float = 0.5
) -> dict[str, dict[str, float]]:
    """``matching`` of each category of ``gt`` on its own, by category name."""
    return {
        cat["name"]: matching(
            dict(gt, annotations=[a for a in gt["annotations"] if a["category_id"] == cat["id"]]),
            [r for r in results if r["category_id"] == cat["id"]], iou, score_thresh,
        )
        for cat in gt["categories"]
    }


MATCHING_ROWS = (("accuracy", "TP/(TP+FP+FN)"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
                 ("panoptic_quality", "PQ"))
"""The matching figures shown (CLI table, Export tab), in order, with their labels."""


def metric_rows(metrics: Mapping[str, Any]) -> list[tuple[str, float | None]]:
    """(label, value) rows of an evaluation for a table: COCO AP figures (per class, AP50 per object
    size), then the matching figures class-agnostic and per class (when ``evaluation.evaluate.evaluate``
    computed them)."""
    rows: list[tuple[str, float | None]] = [(key, metrics.get(key)) for key in ("AP", "AP50", "AP75")]
    rows += [(f"AP {name}", value) for name, value in metrics.get("AP_per_class", {}).items()]
    rows += [(f"AP50 diameter {size}", value) for size, value in metrics.get("AP50_by_diameter", {}).items()]
    agnostic = metrics.get("matching")
    if agnostic:
        where = f"@IoU {agnostic['iou']:g}, score >= {agnostic['score_thresh']:g}"
        rows += [(f"{label} {where}", agnostic[key]) for key, label in MATCHING_ROWS]
        per_class = metrics.get("matching_per_class", {})
        if len(per_class) > 1:
            rows += [(f"{label} {name}", figures[key]) for name, figures in per_class.items()
                     for key, label in MATCHING_ROWS]
    return rows


def _fmt(value: float | None) -> str:
    return "n/a (no ground truth)" if value is None else f"{value:.4f}"


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """A small table for the CLI: headline AP figures, standard-cap figures, AP per class, then the
    matching figures (TP/(TP+FP+FN), precision, recall, F1, PQ) class-agnostic and per class."""
    cap = metrics["max_dets"]
    rows = metric_rows(metrics)
    rows[3:3] = [(f"AP (standard cap, {STANDARD_MAX_DETS} per image)", metrics["AP@100"]),
                 (f"AP50 (standard cap, {STANDARD_MAX_DETS} per image)", metrics["AP50@100"])]
    width = max(len(label) for label, _ in rows)
    header = (
        f"COCO mask AP over {metrics['num_images']} images, {metrics['num_detections']} "
        f"detections (up to {cap} per image)"
    )
    return "\n".join([header] + [f"  {label:<{width}}  {_fmt(value)}" for label, value in rows])
