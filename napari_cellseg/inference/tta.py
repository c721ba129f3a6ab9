"""Test-time flips: segment the image as it is, mirrored left-right, up-down and both, then average
the four views.

Why at the level of ``RawInstances``: every view is compact crops in image coordinates, so an
instance seen in several views is merged by averaging its probability crops (over the union of their
boxes) and its scores, and re-thresholding stays free. A view that missed an instance counts as a
score of 0 and an empty crop: detections few views agree on are often spurious, and ranking them
lower helps AP. Measured on DSB2018 ``val/`` with the built-in model's round 9 (scale auto, up to 4x;
the views cached once, then merged), no flips / left-right only / all four: AP 0.524 / 0.542 /
**0.558**, AP50 0.837 / 0.847 / **0.849**, TP/(TP+FP+FN) with the confidence tuned on other images
0.754 / 0.758 / 0.758, stained AP50 0.754 / 0.775 / 0.770 (docs/model-nuclei.md); the first
measurement (a 50-minute CPU model, left-right only): AP 0.321 -> 0.335, AP50 0.637 -> 0.650.
``--tta`` (``scale.iter_predict_scaled``) merges the four flips with a view enlarged ``scale.ZOOM_VIEW``
times the same way: AP50 0.854 (docs/model-nuclei.md, Test-time augmentation). These figures predate
``predict.paste_masks``' geometry: since then AP 0.572 -> 0.586 and AP50 0.847 -> 0.855 with ``--tta``
(part of the flips' gain had been undoing the old paste's half-pixel shift); round 17 B's weights:
AP 0.590 -> 0.598, AP50 0.860 -> 0.867.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._torch import torch
from ..io.raw import RawInstances

from torchvision.ops import box_iou  # noqa: E402

MATCH_IOU = 0.5
"""Box IoU from which two views' instances of the same class are taken to be one object."""
FLIPS = ((False, False), (True, False), (False, True), (True, True))
"""The views, as (left-right, up-down) mirrorings: the image itself first."""


def flipped(image: np.ndarray, lr: bool, ud: bool) -> np.ndarray:
    """``image`` mirrored left-right and/or up-down (a contiguous copy when mirrored)."""
    if lr:
        image = image[:, ::-1]
    if ud:
        image = image[::-1]
    return np.ascontiguousarray(image) if lr or ud else image


def unflip(raw: RawInstances, lr: bool, ud: bool) -> RawInstances:
    """Instances found in a mirrored image, put back in the image's coordinates (mirroring is its own
    inverse, so this also mirrors a result); ``raw`` itself when nothing was mirrored."""
    if not (lr or ud):
        return raw
    height, width = raw.image_shape
    boxes, masks = raw.boxes.copy(), raw.masks
    if lr:
        boxes[:, 0], boxes[:, 2] = width - raw.boxes[:, 2], width - raw.boxes[:, 0]
        masks = [m[:, ::-1] for m in masks]
    if ud:
        boxes[:, 1], boxes[:, 3] = height - raw.boxes[:, 3], height - raw.boxes[:, 1]
        masks = [m[::-1] for m in masks]
    masks = [np.ascontiguousarray(m) for m in masks]
    return RawInstances(boxes, raw.scores, raw.labels, masks, raw.image_shape, raw.scale, raw.capped_tiles)


def merge_views(views: Sequence[RawInstances], match_iou: float = MATCH_IOU) -> RawInstances:
    """One result from views of the same image: an object's score is the mean over all views of its
    score there (0 where a view missed it), its crop the mean of the crops of the views that saw it
    (so an object one view saw keeps its outline, at a lower score).

    The views are merged in turn, greedily by score: each object found so far takes the unmatched
    instance of the next view of the same class with the highest IoU against the box it was first
    seen with, if that IoU is at least ``match_iou``; the view's other instances are new objects.
    """
    first = views[0]
    if any(view.image_shape != first.image_shape for view in views):
        raise ValueError(f"views of different images: {sorted({v.image_shape for v in views})}")
    anchors, labels = first.boxes.copy(), first.labels.copy()
    boxes, scores = first.boxes.copy(), first.scores.astype(np.float64)
    sums = [m.astype(np.uint16) for m in first.masks]
    seen = np.ones(len(first), np.int64)
    for view in views[1:]:
        iou = np.zeros((len(anchors), len(view)), np.float32)
        if len(anchors) and len(view):
            iou = box_iou(torch.from_numpy(anchors).float(), torch.from_numpy(view.boxes).float()).numpy()
            iou[labels[:, None] != view.labels[None, :]] = 0.0
        taken = np.zeros(len(view), bool)
        for i in np.argsort(-scores, kind="stable"):
            j = int(np.argmax(np.where(taken, -1.0, iou[i]))) if len(view) else -1
            if j >= 0 and not taken[j] and iou[i, j] >= match_iou:
                taken[j] = True
                boxes[i], sums[i] = _add_crops(boxes[i], sums[i], view.boxes[j], view.masks[j])
                scores[i] += view.scores[j]
                seen[i] += 1
        new = np.flatnonzero(~taken)
        anchors = np.concatenate([anchors, view.boxes[new]])
        boxes = np.concatenate([boxes, view.boxes[new]])
        labels = np.concatenate([labels, view.labels[new]])
        scores = np.concatenate([scores, view.scores[new]])
        sums += [view.masks[j].astype(np.uint16) for j in new]
        seen = np.concatenate([seen, np.ones(len(new), np.int64)])
    masks = [((total + k // 2) // k).astype(np.uint8) for total, k in zip(sums, seen.tolist())]
    merged = RawInstances(boxes, scores / len(views), labels, masks, first.image_shape)
    return merged.select(np.argsort(-merged.scores, kind="stable"))


def _add_crops(box_a, total_a, box_b, crop_b) -> tuple[np.ndarray, np.ndarray]:
    """The sum of two crops over the union of their boxes (0 outside a crop)."""
    union = np.array([min(box_a[0], box_b[0]), min(box_a[1], box_b[1]), max(box_a[2], box_b[2]),
                      max(box_a[3], box_b[3])])
    total = np.zeros((union[3] - union[1], union[2] - union[0]), np.uint16)
    for (x0, y0, x1, y1), crop in ((box_a, total_a), (box_b, crop_b)):
        total[y0 - union[1] : y1 - union[1], x0 - union[0] : x1 - union[0]] += crop
    return union, total


__all__ = ["FLIPS", "MATCH_IOU", "flipped", "merge_views", "unflip"]
