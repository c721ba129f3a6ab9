"""Thresholds -> one label image per class, without overlaps; fast enough to follow a slider.

Why per-crop painting: ``RawInstances`` is sorted by score, so painting instances in order into
pixels nobody has claimed yet gives "the higher score wins" with no sorting and no full-image
pass per instance - each instance costs a few numpy operations on its own small crop.

Rules, shared by the GUI, the CLI and the exporter:
- a pixel belongs to an instance when its stored probability is ``>= mask_thresh``, i.e.
  ``mask_u8 >= ceil(mask_thresh * 255 - 1e-6)`` (the slack absorbs float rounding, so a
  threshold of exactly k / 255 keeps the value k); 0.5 keeps exactly torchvision's p >= 0.5;
  ``mask_thresh = 0`` therefore fills the whole crop;
- an instance is kept when ``score >= score_thresh`` and it still owns at least ``MIN_OWNED`` of
  its own mask pixels once the better-scored instances have painted (and at least one pixel);
- instance ``i`` of the raw result is always label ``i + 1``, whatever the thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..defaults import MASK_THRESH, SCORE_THRESH
from ..io.raw import RawInstances

MIN_OWNED = 0.5
"""Share of its own mask an instance must still own to be kept. Why: a detection mostly hidden under
a better-scored one is a duplicate of it, and its visible sliver would be a false cell the user has
to delete by hand (Detectron2's panoptic merge drops them at the same 0.5). On DSB2018 val (the
built-in model, round 7): TP/(TP+FP+FN) 0.722 -> 0.728 at the best confidence (0.716 -> 0.722 with
the confidence chosen on other images), AP50 0.812 -> 0.814."""


def mask_level(mask_thresh: float) -> int:
    """The smallest stored uint8 value whose probability (value / 255) is ``>= mask_thresh``."""
    if not 0.0 <= mask_thresh <= 1.0:
        raise ValueError(f"mask_thresh must be between 0 and 1, got {mask_thresh}")
    return int(math.ceil(mask_thresh * 255 - 1e-6))


def to_labels(
    raw: RawInstances,
    score_thresh: float = SCORE_THRESH,
    mask_thresh: float = MASK_THRESH,
    classes: Iterable[int] | None = None,
) -> dict[int, np.ndarray]:
    """Class id -> H x W int32 label image (instance ``i`` -> label ``i + 1``), no overlaps.

    ``classes`` lists the class ids to return (default: those present in ``raw``); a class with
    no kept instance gets an all-zero image. Instances of classes not asked for are ignored: they
    neither appear nor hide the others.
    """
    level = mask_level(mask_thresh)
    wanted = sorted({int(c) for c in (np.unique(raw.labels) if classes is None else classes)})
    out = dict(zip(wanted, _zero_images(len(wanted), raw.image_shape)))
    claimed = np.zeros(raw.image_shape, bool)
    boxes, labels, masks = raw.boxes.tolist(), raw.labels.tolist(), raw.masks
    for i in _candidates(raw, score_thresh, wanted).tolist():
        x0, y0, x1, y1 = boxes[i]
        taken = claimed[y0:y1, x0:x1]
        mask = masks[i] >= level
        paint = mask & ~taken
        owned = np.count_nonzero(paint)
        if not owned or owned < MIN_OWNED * np.count_nonzero(mask):
            continue
        taken |= paint
        out[labels[i]][y0:y1, x0:x1][paint] = i + 1
    return out


def _zero_images(n: int, shape: tuple[int, int]) -> list[np.ndarray]:
    """``n`` zeroed int32 images carved from one block.

    Why one block: the first write to fresh memory costs a page fault per 4 KiB page, about 8 ms
    for four separate 1000 x 1000 images; numpy asks the kernel for 2 MiB huge pages only for
    allocations of 4 MiB or more, which one block reaches and a single 1000 x 1000 image does not.
    The images are views of the block, so the block lives as long as any of them.
    """
    return list(np.zeros((n, *shape), np.int32))


def _candidates(raw: RawInstances, score_thresh: float, classes: list[int]) -> np.ndarray:
    """Indices, best score first, of the instances that pass the score and class filters."""
    ok = (raw.scores >= score_thresh) & np.isin(raw.labels, classes)
    return np.flatnonzero(ok)


def model_confidence(model: object) -> float:
    """The confidence ``model``'s label images start at: its tuned one (``ModelConfig.score_thresh``,
    set by ``napari-cellseg tune``), else ``SCORE_THRESH``."""
    value = getattr(model, "score_thresh", None)
    return SCORE_THRESH if value is None else float(value)


def instance_scores(raw: RawInstances) -> dict[int, float]:
    """Label id -> score, for tables and exports (ids are stable, so this never changes)."""
    return {i + 1: float(s) for i, s in enumerate(raw.scores)}


__all__ = ["to_labels", "MIN_OWNED", "mask_level", "model_confidence", "instance_scores"]
