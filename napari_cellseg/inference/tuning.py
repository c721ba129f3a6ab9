"""The confidence a model's label images start at, chosen on images with ground truth, as StarDist's
``optimize_thresholds`` chooses its probability threshold: the cut that maximises TP / (TP + FP + FN)
at IoU 0.5, the figure cell papers compare.

Why a tuned cut instead of 0.5 for every model: a model's scores are not probabilities of being a
real cell. The built-in model keeps many faint specks between 0.5 and 0.85; on DSB2018 ``val/``, a cut
chosen on one half of the images and scored on the other (three random splits) gave TP/(TP+FP+FN)
0.711-0.721 against 0.678 at 0.5. COCO AP ranks every detection and gains nothing from a cut (it loses
a little), so ``export`` keeps its own ``--score-thresh``.

The network runs once per image, at the detector's floor; every candidate cut is scored on the same
results, so trying all of ``CUTS`` costs matching only.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from ..defaults import DETECTOR_SCORE_FLOOR, MASK_THRESH
from ..errors import DatasetError
from ..progress import Progress, StopCheck, stopped
from ..evaluation.metrics import matching
from ..io.coco import labels_to_results
from ..io.images import read_image
from .pipeline import samples_ground_truth, segment_image

CUTS = tuple(round(0.05 * k, 2) for k in range(2, 20))
"""The confidences tried: 0.10 to 0.95 in steps of 0.05 (finer steps only fit the images tuned on)."""
IOU = 0.5


@dataclass(frozen=True)
class Tuning:
    """The chosen cut and, for each cut tried, the matching figures it gave (``metrics.matching``)."""

    score_thresh: float
    figures: dict[float, dict[str, float]]
    images: int


def best_cut(gt: dict[str, Any], results: Sequence[dict[str, Any]], cuts: Sequence[float] = CUTS) -> Tuning:
    """The cut of ``cuts`` with the highest TP/(TP+FP+FN) at IoU 0.5 (the lowest such cut on a tie:
    it loses fewer cells); results are matched within their image and class."""
    if not gt["images"]:
        raise ValueError("no images with ground truth to tune the confidence on")
    figures = {float(c): matching(gt, results, IOU, float(c)) for c in cuts}
    best = max(figures, key=lambda c: (figures[c]["accuracy"], -c))
    return Tuning(best, figures, len(gt["images"]))


def iter_tune(
    model: Any,
    samples: Sequence[Any],
    class_names: Sequence[str],
    *,
    mask_thresh: float = MASK_THRESH,
    should_stop: StopCheck | None = None,
    **options: Any,
) -> Generator[Progress, None, Tuning | None]:
    """Segment each ground-truth sample once (``options``: ``segment_image``'s scale, diameter, tta,
    tile_size, device), then ``best_cut``; yields a ``Progress`` per image, None when stopped."""
    if not any(sample.mask_paths for sample in samples):
        raise DatasetError("no ground truth to tune on: none of the samples has a classK.tif")
    results: list[dict[str, Any]] = []
    for image_id, sample in enumerate(samples, start=1):
        if stopped(should_stop):
            return None
        labels, scores = segment_image(model, read_image(sample.image_path), score_thresh=DETECTOR_SCORE_FLOOR,
                                       mask_thresh=mask_thresh, **options)
        results += labels_to_results(labels, image_id, scores)
        yield Progress(image_id, len(samples), sample.name)
    return best_cut(samples_ground_truth(samples, class_names), results)


__all__ = ["CUTS", "Tuning", "best_cut", "iter_tune"]
