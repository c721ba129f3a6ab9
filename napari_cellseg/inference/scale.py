"""The one place that decides the factor an image is segmented at, so nuclei look the size the model
learned: ``--scale auto|FACTOR`` and ``--diameter PX`` on the CLI, the Segment tab's nucleus
diameter, stacks, sharded export and the benchmarks all go through ``iter_predict_scaled``.

Why: a Mask R-CNN finds nuclei far smaller or larger than those it was trained on poorly (the same
model scored AP50 0.661 at scale 1 and 0.698 at 2x on small-nucleus images). ``auto`` runs a first
pass at scale 1, measures the median nucleus diameter it found and, when that is far from the
size the model segments best (``target_diameter``), segments again at ``target / measured`` (clamped
to ``AUTO_RANGE``: auto only enlarges, up to 4x). A factor near 1 (within ``NO_OP``) keeps the first pass:
auto costs nothing on images whose nuclei are that size or larger.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

import numpy as np

from ..defaults import OVERLAP, TILE_SIZE
from ..progress import Progress, StopCheck
from ..io.raw import RawInstances

AUTO = "auto"
DEFAULT_DIAMETER = 19.6
"""Median equivalent diameter (px) of the 19,724 nuclei of DSB2018 ``train/`` (what the built-in
``nuclei`` model learned on); used for a checkpoint whose config records no ``object_diameter``."""
AIM = 1.875
"""The model segments nuclei best at ``AIM`` times the median diameter it was trained at, not at it.
DSB2018 val, the built-in model (trained at 19.2 px), auto aiming at 1.0 / 1.25 / 1.46 / 1.67 /
**1.875** / 2.29 x: AP50 0.814 / 0.824 / 0.826 / 0.832 / **0.833** / 0.835, TP/(TP+FP+FN) with the
confidence tuned on other images 0.722 / 0.730 / 0.734 / 0.738 / **0.741** / 0.735, 1.3 / 1.9 / 1.5 /
1.8 / 2.1 / 2.6 s per image (one thread, the other core training: noisy). Why: training zooms
0.5-2x, so the model has seen nuclei up to twice that size, and its 28 x 28 masks outline larger
nuclei better. ``auto`` and ``--diameter`` both aim there."""
AUTO_RANGE = (1.0, 4.0)
"""``auto`` enlarges up to 4x and never shrinks: on DSB2018 val, enlarging the 34 images of small
nuclei raised their AP50 0.665 -> 0.710, shrinking the 28 of large nuclei lowered it 0.855 -> 0.828
(the model, trained with 0.5-2x zoom, already segments large nuclei well). Up to 2x, then 3x, then 4x
(round 9, aiming at 36 px, 44 of the 93 images wanting more than 2x, at most 3.7x): AP50 0.8369 /
0.8362 / 0.8373, TP/(TP+FP+FN) with the confidence tuned on other images 0.745 / 0.750 / **0.754**,
stained AP50 0.747 / 0.754 / 0.754; the 9 px nuclei of 256 px images no longer stay at 18 px. A
factor f costs f^2 the time of scale 1: ``--scale`` or ``--diameter`` fixes it where that matters."""
NO_OP = 1.25
"""Factors between 1 / NO_OP and NO_OP are taken as 1: no second pass."""
MAX_FACTOR = 8.0
"""The largest factor an image is segmented at (``--scale``, ``--diameter``, the enlarged view)."""
ZOOM_VIEW = 1.4
"""With ``tta``, one more view segments the image this much larger than the chosen factor. DSB2018
val, round 9, scale auto, views cached once and merged with ``tta.merge_views`` (class-agnostic):
AP50 / AP 0.837 / 0.525 with one view; 0.847 / 0.540 with a view at 1.4x added (0.853 / 0.543 at
1.7x, 0.836 / 0.520 at 0.7x); 0.849 / 0.558 with the four flips; **0.854 / 0.555** with the four
flips and the 1.4x view (0.854 / 0.554 with 1.7x). Small nuclei gain most: enlarged, more of them
reach the size the model finds best, and the views agreeing ranks spurious detections lower. (Measured
before ``predict.paste_masks`` followed training's geometry; since, the 1.4x view alone adds AP50 +0.001,
the five views +0.008: docs/model-nuclei.md, Masks pasted where training put them.)"""
MIN_CELLS = 3
"""Fewer confident first-pass cells than this measure nothing: the image is kept at scale 1."""
PROBE_SCORE = 0.5
"""First-pass detections at least this confident are measured (the confidence slider's default)."""


def model_diameter(model: Any) -> float:
    """The median nucleus (object) diameter, in px, a model (or its ``ModelConfig``) was trained at
    (``DEFAULT_DIAMETER`` when its checkpoint does not record one)."""
    value = float(getattr(model, "object_diameter", 0.0) or 0.0)
    return value if value > 0 else DEFAULT_DIAMETER


def target_diameter(model: Any) -> float:
    """The nucleus diameter, in px, ``model`` segments best (``AIM`` x ``model_diameter``): what
    ``auto`` and a given ``diameter`` bring the nuclei to."""
    return AIM * model_diameter(model)


def median_diameter(areas: np.ndarray | list[float]) -> float | None:
    """Median equivalent diameter sqrt(4 A / pi) of objects of pixel ``areas``; None without any."""
    areas = np.asarray(areas, dtype=np.float64)
    areas = areas[areas > 0]
    return float(np.median(np.sqrt(4 * areas / np.pi))) if areas.size else None


def label_areas(labels: np.ndarray) -> np.ndarray:
    """Pixel area of each instance of a label image (0 = background)."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64))[1:]
    return counts[counts > 0]


def found_diameter(raw: RawInstances, score: float = PROBE_SCORE, mask: float = 0.5) -> float | None:
    """Median diameter of the confident instances of a first pass; None when fewer than ``MIN_CELLS``."""
    level = round(mask * 255)
    areas = [int((m >= level).sum()) for m, s in zip(raw.masks, raw.scores) if s >= score]
    return median_diameter(areas) if len([a for a in areas if a > 0]) >= MIN_CELLS else None


def auto_factor(measured: float | None, target: float) -> float:
    """The factor that brings ``measured`` nuclei to ``target`` size, clamped to ``AUTO_RANGE``;
    1.0 when nothing was measured or the factor is within ``NO_OP`` of 1."""
    if not measured:
        return 1.0
    factor = min(max(target / measured, AUTO_RANGE[0]), AUTO_RANGE[1])
    return 1.0 if 1 / NO_OP < factor < NO_OP else round(factor, 3)


def fixed_factor(model: Any, scale: float | str = AUTO, diameter: float | None = None) -> float | None:
    """The factor asked for: from ``diameter`` (the user's nuclei, in px) when given, else ``scale``;
    None means ``auto``. Out-of-range values are refused with a message for the user."""
    if diameter is not None:
        if not 1 <= diameter <= 2000:
            raise ValueError(f"the nucleus diameter must be between 1 and 2000 pixels, got {diameter:g}")
        factor = target_diameter(model) / diameter
        if not 0.05 <= factor <= MAX_FACTOR:
            raise ValueError(f"a {diameter:g} px nucleus diameter needs scale {factor:.3g} for this model "
                             f"(best at {target_diameter(model):.3g} px); scales from 0.05 to {MAX_FACTOR:g} work")
        return factor
    if isinstance(scale, str):
        if scale.strip().lower() != AUTO:
            raise ValueError(f"scale must be 'auto' or a number, got {scale!r}")
        return None
    if not 0.05 <= float(scale) <= MAX_FACTOR:
        raise ValueError(f"the scale factor must be between 0.05 and {MAX_FACTOR:g}, got {scale:g}")
    return float(scale)


def parse_scale(text: str) -> float | str:
    """``--scale``'s value: ``auto`` or a positive number."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected 'auto' or a number such as 2, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"the scale must be a positive number, got {text!r}")
    return value


def iter_predict_scaled(
    model: Any,
    image: np.ndarray,
    *,
    scale: float | str = AUTO,
    diameter: float | None = None,
    tile_size: int = TILE_SIZE,
    overlap: int = OVERLAP,
    tta: bool = False,
    should_stop: StopCheck | None = None,
    **options: Any,
) -> Generator[Progress, None, RawInstances | None]:
    """``inference.predict.iter_predict`` at the factor ``fixed_factor`` or ``auto`` chooses; the result's
    ``scale`` says which. Tiles keep their size in network pixels (``tile_size / factor`` image px).

    ``auto`` yields the first pass's tiles as ``Progress(.., "measuring nuclei")``, then the second
    pass's, if any, as ``"tile"``. ``tta``: test-time augmentation (``tta.py``): the image is also
    segmented mirrored three ways at that factor (the first pass, when the image is kept at scale 1, is
    the unmirrored view) and once more enlarged ``ZOOM_VIEW`` times (``"enlarged view"``; not for a model
    that cannot resize), and the views are merged. ``options`` are ``iter_predict``'s (device, max_detections).
    """
    from .predict import iter_predict
    from .tta import merge_views

    factor = fixed_factor(model, scale, diameter)
    resizes = hasattr(getattr(model, "transform", None), "image_scale")
    if not resizes:
        factor = 1.0  # no resize to change (an ONNX graph's is fixed at export): as it is, flips only with tta
    probe = None
    if factor is None:  # measuring needs no augmentation; it runs once the scale is known
        probe = yield from _relabel(iter_predict(model, image, tile_size=tile_size, overlap=overlap,
                                                 should_stop=should_stop, **options), "measuring nuclei")
        if probe is None:
            return None
        factor = auto_factor(found_diameter(probe), target_diameter(model))
        if factor == 1.0 and not tta:
            return probe
    if factor == 1.0 and probe is not None:
        result = yield from iter_predict(model, image, tile_size=tile_size, overlap=overlap, flip=True,
                                         should_stop=should_stop, plain=probe, **options)
    else:
        result = yield from _at_factor(model, image, factor, tile_size, overlap, should_stop, flip=tta, **options)
    if result is None or not (tta and resizes):
        return result
    zoomed = yield from _relabel(_at_factor(model, image, min(MAX_FACTOR, factor * ZOOM_VIEW), tile_size, overlap,
                                            should_stop, **options), "enlarged view")
    if zoomed is None:
        return None
    merged = merge_views([result, zoomed])
    merged.scale, merged.capped_tiles = factor, result.capped_tiles + zoomed.capped_tiles
    return merged


def _at_factor(model: Any, image: np.ndarray, factor: float, tile_size: int, overlap: int,
               should_stop: StopCheck | None, **options: Any) -> Generator[Progress, None, RawInstances | None]:
    """``iter_predict`` at ``factor``, with tiles of ``tile_size`` network pixels."""
    from .predict import iter_predict

    size = max(64, round(tile_size / factor))
    lap = min(round(overlap / factor), size // 2)
    return (yield from iter_predict(model, image, tile_size=size, overlap=lap, scale=factor,
                                    should_stop=should_stop, **options))


def _relabel(steps: Generator[Progress, None, Any], name: str) -> Generator[Progress, None, Any]:
    """Pass a generator's progress on under another name; its return value."""
    while True:
        try:
            p = next(steps)
        except StopIteration as stop:
            return stop.value
        yield Progress(p.done, p.total, name)


def scale_note(raw: RawInstances) -> str:
    """What the status line and CLI say about a run: the scale chosen and any capped tiles."""
    notes = [f"segmented at scale {raw.scale:.2g}x"] if raw.scale != 1.0 else []
    if raw.capped_tiles:
        notes.append(f"{raw.capped_tiles} tile(s) hit the detection limit: some cells may be missing")
    return "; ".join(notes)


__all__ = ["AUTO", "AIM", "DEFAULT_DIAMETER", "MAX_FACTOR", "ZOOM_VIEW", "model_diameter", "target_diameter",
           "median_diameter", "label_areas", "found_diameter", "auto_factor", "fixed_factor", "parse_scale",
           "iter_predict_scaled", "scale_note"]
