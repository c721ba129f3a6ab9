"""Stacks and time-lapses: segment plane by plane into one stacked label image per class.

Why plane by plane: the network sees 2-D images, and a plane's ``RawInstances`` (crops as uint8)
takes a few hundred kB where a full-size float mask per instance would take GBs, so memory grows
with the cells found, not with planes x pixels. Ids are unique across the stack: instance ``i`` of
plane ``p`` is label ``offset[p] + i + 1``, where ``offset[p]`` counts the instances of the earlier
planes - whatever the thresholds, as ``postprocess.to_labels`` does for one image. Reading stacks
(which axis holds the planes) is ``io.image_reader``'s. By default the same cell has a new id in every
plane; ``link_over_time`` gives it the id it had in the previous plane when their masks overlap
(IoU >= 0.5).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass

import numpy as np

from ..defaults import OVERLAP, TILE_SIZE
from ..io.image_reader import Stack
from ..progress import Progress, StopCheck, drain, stopped
from .postprocess import to_labels
from .predict import RawInstances
from .scale import AUTO, iter_predict_scaled


@dataclass
class StackInstances:
    """Raw instances of every plane; ``offsets[p]`` is added to plane ``p``'s ids (see module doc)."""

    planes: list[RawInstances]
    axis: str = ""

    @property
    def offsets(self) -> np.ndarray:
        counts = [len(raw) for raw in self.planes]
        return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else np.zeros(0, np.int64)

    @property
    def shape(self) -> tuple[int, int, int]:
        h, w = self.planes[0].image_shape if self.planes else (0, 0)
        return len(self.planes), h, w

    @property
    def nbytes(self) -> int:
        return sum(raw.nbytes for raw in self.planes)

    def __len__(self) -> int:
        return sum(len(raw) for raw in self.planes)


def iter_predict_stack(
    model,
    stack: Stack,
    *,
    device=None,
    tile_size: int = TILE_SIZE,
    overlap: int = OVERLAP,
    tta: bool = False,
    scale: float | str = AUTO,
    diameter: float | None = None,
    should_stop: StopCheck | None = None,
) -> Generator[Progress, None, StackInstances | None]:
    """Segment plane by plane, yielding ``Progress(planes_done, planes, "plane")``; returns the
    ``StackInstances``, or None when ``should_stop`` says so (checked before every plane and tile).
    Each plane gets its own ``auto`` scale (``scale.iter_predict_scaled``)."""
    results: list[RawInstances] = []
    total = len(stack)
    for p in range(total):
        if stopped(should_stop):
            return None
        raw = drain(iter_predict_scaled(model, stack.plane(p), device=device, tile_size=tile_size, overlap=overlap,
                                        tta=tta, scale=scale, diameter=diameter, should_stop=should_stop))
        if raw is None:
            return None
        results.append(raw)
        yield Progress(p + 1, total, "plane")
    return StackInstances(results, stack.axis)


def predict_stack(model, stack: Stack, **options) -> StackInstances:
    """``iter_predict_stack`` run to the end, for scripts."""
    return drain(iter_predict_stack(model, stack, **options))


def plane_labels(
    result: StackInstances, plane: int, score_thresh: float, mask_thresh: float, classes: Iterable[int]
) -> dict[int, np.ndarray]:
    """``to_labels`` of one plane with the stack-wide ids (background stays 0)."""
    labels = to_labels(result.planes[plane], score_thresh, mask_thresh, classes=classes)
    offset = int(result.offsets[plane])
    if offset:
        for image in labels.values():
            image[image > 0] += offset
    return labels


def to_stack_labels(
    result: StackInstances, score_thresh: float = 0.5, mask_thresh: float = 0.6, classes: Iterable[int] = (1,),
    out: dict[int, np.ndarray] | None = None,
) -> dict[int, np.ndarray]:
    """Class id -> ``(planes, H, W)`` int32 labels, ids unique across the stack. ``out`` (same
    shapes) is filled in place: a slider then redraws into the arrays a napari layer already shows."""
    classes = sorted(int(c) for c in classes)
    if out is None:
        out = {k: np.zeros(result.shape, np.int32) for k in classes}
    for p in range(len(result.planes)):
        for k, image in plane_labels(result, p, score_thresh, mask_thresh, classes).items():
            out[k][p] = image
    return out


def link_over_time(labels: dict[int, np.ndarray], min_iou: float = 0.5) -> dict[int, np.ndarray]:
    """A cell keeps its id from plane to plane: class by class, an instance whose mask overlaps one
    of the previous plane with IoU >= ``min_iou`` takes that id (pairs matched one to one, best IoU
    first); the others keep their stack-wide unique ids. In place; returns ``labels``. After this
    the score table of ``stack_scores`` holds for the first plane of each linked cell only."""
    for stack in labels.values():
        for t in range(1, len(stack)):
            prev, cur = stack[t - 1], stack[t]
            both = (prev > 0) & (cur > 0)
            if not both.any():
                continue
            pairs, inter = np.unique(np.stack([prev[both], cur[both]]), axis=1, return_counts=True)
            area_prev = np.bincount(prev.ravel())
            area_cur = np.bincount(cur.ravel())
            iou = inter / (area_prev[pairs[0]] + area_cur[pairs[1]] - inter)
            relabel = np.arange(area_cur.size, dtype=stack.dtype)
            taken_prev, taken_cur = set(), set()
            for j in np.argsort(-iou, kind="stable"):
                p, c = int(pairs[0, j]), int(pairs[1, j])
                if iou[j] < min_iou:
                    break
                if p not in taken_prev and c not in taken_cur:
                    relabel[c] = p  # p comes from earlier planes, so it is no id of this plane
                    taken_prev.add(p)
                    taken_cur.add(c)
            stack[t] = relabel[cur]
    return labels


def stack_scores(result: StackInstances) -> dict[int, float]:
    """Stack-wide label id -> score."""
    scores = np.concatenate([raw.scores for raw in result.planes]) if result.planes else np.zeros(0)
    return {i + 1: float(s) for i, s in enumerate(scores)}


__all__ = [
    "StackInstances", "iter_predict_stack", "predict_stack", "plane_labels", "link_over_time", "to_stack_labels",
    "stack_scores",
]
