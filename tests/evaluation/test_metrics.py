"""Tests for napari_cellseg.evaluation.metrics: COCO mask AP on tiny synthetic images."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from napari_cellseg.io import coco
from napari_cellseg.evaluation import metrics
from napari_cellseg.io.rle import decode_mask
from napari_cellseg.errors import DatasetError

CLASSES = ["fluo", "bright"]
Items = list[tuple[int, str, dict[int, np.ndarray]]]


def grid_labels(n: int, size: int = 8, per_row: int = 15) -> np.ndarray:
    """``n`` separate size x size squares, ids 1..n."""
    rows = -(-n // per_row)
    image = np.zeros((rows * (size + 2), per_row * (size + 2)), np.int32)
    for i in range(n):
        r, c = divmod(i, per_row)
        top, left = r * (size + 2), c * (size + 2)
        image[top : top + size, left : left + size] = i + 1
    return image


def two_images() -> Items:
    first = grid_labels(6, per_row=3)
    second = {1: grid_labels(2), 2: grid_labels(3)}
    return [(1, "a.tif", {1: first}), (2, "b.tif", second)]


def perfect(items: Items) -> list[dict]:
    return [r for image_id, _, labels in items for r in coco.labels_to_results(labels, image_id)]


def shift(items: Items, pixels: int) -> Items:
    """Every instance moved ``pixels`` to the right (the grids leave room at the right edge)."""
    return [
        (i, name, {k: np.roll(v, pixels, axis=1) for k, v in labels.items()})
        for i, name, labels in items
    ]


def test_perfect_prediction_scores_one() -> None:
    items = two_images()
    result = metrics.evaluate(coco.ground_truth(items, CLASSES), perfect(items))
    for key in ("AP", "AP50", "AP75", "AP@100", "AP50@100"):
        assert result[key] == pytest.approx(1.0), key
    assert result["AP_per_class"] == {"fluo": pytest.approx(1.0), "bright": pytest.approx(1.0)}
    assert (result["max_dets"], result["num_images"], result["num_detections"]) == (1000, 2, 11)
    json.dumps(result, allow_nan=False)


def test_shifted_prediction_lowers_ap() -> None:
    items = two_images()
    gt = coco.ground_truth(items, CLASSES)
    # One pixel right: IoU 56/72 = 0.78, a match at IoU thresholds 0.50..0.75 only (6 of 10).
    moved = metrics.evaluate(gt, perfect(shift(items, 1)))
    assert moved["AP"] == pytest.approx(0.6)
    assert moved["AP50"] == pytest.approx(1.0) and moved["AP75"] == pytest.approx(1.0)
    # Three pixels: IoU 40/88 = 0.45, no match at all.
    assert metrics.evaluate(gt, perfect(shift(items, 3)))["AP50"] == 0.0


def test_dense_image_is_understated_by_the_standard_cap() -> None:
    """150 nuclei, all found: the 100-detection cap can recall at most 2/3 of them."""
    items = [(1, "dense.tif", {1: grid_labels(150)})]
    result = metrics.evaluate(coco.ground_truth(items, CLASSES[:1]), perfect(items), max_dets=1000)
    assert result["AP"] == pytest.approx(1.0)
    assert result["AP@100"] < 0.7
    assert result["AP"] > result["AP@100"]


def test_empty_results_give_zeros() -> None:
    items = [(1, "a.tif", {1: grid_labels(4)})]
    result = metrics.evaluate(coco.ground_truth(items, CLASSES), [])
    for key in ("AP", "AP50", "AP75", "AP@100", "AP50@100"):
        assert result[key] == 0.0
    assert result["AP_per_class"] == {"fluo": 0.0, "bright": None}  # no bright nucleus to find
    assert result["num_detections"] == 0


def test_only_images_in_ground_truth_count_and_nothing_is_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    items = two_images()
    gt = coco.ground_truth(items[:1], CLASSES)
    before = copy.deepcopy(gt)
    result = metrics.evaluate(gt, perfect(items))
    assert result["AP"] == pytest.approx(1.0)
    assert (result["num_images"], result["num_detections"]) == (1, 6)
    assert capsys.readouterr().out == ""
    assert gt == before  # COCOeval writes into annotations: ours must be copies


def test_uncompressed_results_are_accepted() -> None:
    items = [(1, "a.tif", {1: grid_labels(3)})]
    results = perfect(items)
    for r in results:
        mask = decode_mask(r["segmentation"])
        flat = mask.T.ravel().astype(np.int8)
        changes = np.flatnonzero(np.diff(np.concatenate(([0], flat))))  # background run first
        edges = np.concatenate(([0], changes, [flat.size]))
        r["segmentation"] = {"size": list(mask.shape), "counts": np.diff(edges).tolist()}
    assert metrics.evaluate(coco.ground_truth(items, CLASSES), results)["AP"] == pytest.approx(1.0)


def test_result_of_the_wrong_size_is_a_dataset_error() -> None:
    items = [(1, "a.tif", {1: grid_labels(3)})]
    wrong = coco.labels_to_results({1: np.pad(grid_labels(3), 1)}, 1)
    with pytest.raises(DatasetError, match="a.tif"):
        metrics.evaluate(coco.ground_truth(items, CLASSES), wrong)


def test_max_dets_must_be_positive() -> None:
    with pytest.raises(ValueError):
        metrics.evaluate(coco.ground_truth(two_images(), CLASSES), [], max_dets=0)


def test_format_metrics_labels_every_figure() -> None:
    items = [(1, "a.tif", {1: grid_labels(4)})]
    result = metrics.evaluate(coco.ground_truth(items, CLASSES), perfect(items))
    text = metrics.format_metrics(result)
    lines = text.splitlines()
    assert "1 images" in lines[0] and "up to 1000 per image" in lines[0]
    assert any(line.split()[0] == "AP75" for line in lines[1:])
    assert any("standard cap, 100" in line and "1.0000" in line for line in lines)
    assert any("fluo" in line and "1.0000" in line for line in lines)
    assert any("bright" in line and "n/a" in line for line in lines)


def test_ap50_by_diameter_scores_each_nucleus_size_on_its_own() -> None:
    """Four 4 x 4 nuclei (diameter 4.5 px) all missed, three 20 x 20 (22.6 px) all found, and a small
    false detection ranked first: the large nuclei's AP50 is 1 (COCOeval ignores a detection outside
    the size range that matches nothing), the small ones' 0, sizes with no nuclei None."""
    small, large = grid_labels(4, size=4, per_row=4), grid_labels(3, size=20, per_row=3)
    image = np.zeros((40, 120), np.int32)
    image[:small.shape[0], :small.shape[1]] = small
    image[15:15 + large.shape[0], :large.shape[1]] = np.where(large > 0, large + 4, 0)
    gt = coco.ground_truth([(1, "a.tif", {1: image})], CLASSES[:1])
    found = coco.labels_to_results({1: np.where(image > 4, image, 0)}, 1, {k: 0.9 for k in range(5, 8)})
    false = np.zeros_like(image)
    false[0:4, 100:104] = 1
    result = metrics.evaluate(gt, found + coco.labels_to_results({1: false}, 1, {1: 1.0}))
    assert result["AP50_by_diameter"] == {"<8 px": 0.0, "8-16 px": None, "16-32 px": pytest.approx(1.0),
                                          ">=32 px": None}
    assert 0 < result["AP50"] < 1
    assert metrics.DIAMETER_BINS == (8, 16, 32)
    text = metrics.format_metrics(result)
    assert any("AP50 diameter 16-32 px" in line and "1.0000" in line for line in text.splitlines())


def test_class_agnostic_scores_objects_whatever_their_class() -> None:
    items = two_images()
    gt = coco.ground_truth(items, CLASSES)
    swapped = [dict(r, category_id=3 - r["category_id"]) for r in perfect(items)]  # every class wrong
    assert metrics.evaluate(gt, swapped)["AP50"] < 0.5
    merged_gt, merged = metrics.class_agnostic(gt, swapped, "nucleus")
    result = metrics.evaluate(merged_gt, merged)
    assert result["AP50"] == pytest.approx(1.0) and result["AP_per_class"] == {"nucleus": pytest.approx(1.0)}
    assert gt["categories"] == [{"id": 1, "name": "fluo"}, {"id": 2, "name": "bright"}]  # inputs untouched


def test_matching_counts_tp_fp_fn() -> None:
    items = two_images()  # 11 instances
    gt = coco.ground_truth(items, CLASSES)
    results = perfect(items)
    assert metrics.matching(gt, results)["accuracy"] == pytest.approx(1.0)
    dropped = results[1:]  # one missed: 10 / (10 + 0 + 1)
    extra = results + [results[0]]  # a duplicate: one object matches once, the copy is a false positive
    counts = ("accuracy", "tp", "fp", "fn", "iou", "score_thresh")

    def some(figures: dict) -> dict:
        return {k: figures[k] for k in counts}

    assert some(metrics.matching(gt, dropped)) == pytest.approx(
        {"accuracy": 10 / 11, "tp": 10, "fp": 0, "fn": 1, "iou": 0.5, "score_thresh": 0.5})
    assert some(metrics.matching(gt, extra)) == pytest.approx(
        {"accuracy": 11 / 12, "tp": 11, "fp": 1, "fn": 0, "iou": 0.5, "score_thresh": 0.5})
    low = [dict(r, score=0.1) for r in results]  # below the score threshold: all missed
    assert metrics.matching(gt, low)["fn"] == 11
    moved = perfect(shift(items, 5))  # 8 px squares moved 5 px: IoU 3/13 < 0.5, all wrong
    assert some(metrics.matching(gt, moved)) == pytest.approx(
        {"accuracy": 0.0, "tp": 0, "fp": 11, "fn": 11, "iou": 0.5, "score_thresh": 0.5})
    assert metrics.matching(gt, moved)["panoptic_quality"] == 0.0


def _hand_case() -> tuple[dict, list[dict]]:
    """Class 1: three 8 x 8 squares; found: the first exactly, the second moved 2 px (IoU 48 / 80 = 0.6),
    the third missed, one square where there is none. Class 2: one square, found exactly."""
    truth = np.zeros((40, 60), np.int32)
    truth[2:10, 2:10], truth[2:10, 20:28], truth[20:28, 2:10] = 1, 2, 3
    found = np.zeros_like(truth)
    found[2:10, 2:10], found[2:10, 22:30], found[30:38, 40:48] = 1, 2, 3
    other = np.zeros_like(truth)
    other[20:28, 40:48] = 1
    gt = coco.ground_truth([(1, "a.tif", {1: truth, 2: other})], CLASSES)
    return gt, coco.labels_to_results({1: found, 2: other}, 1)


def test_matching_figures_against_a_hand_computed_case() -> None:
    gt, results = _hand_case()
    per_class = metrics.matching_per_class(gt, results)
    # fluo: TP 2, FP 1, FN 1; PQ = (1 + 0.6) / (2 + 1/2 + 1/2)
    assert per_class["fluo"] == pytest.approx({
        "accuracy": 2 / 4, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "panoptic_quality": 1.6 / 3,
        "tp": 2, "fp": 1, "fn": 1, "iou": 0.5, "score_thresh": 0.5})
    assert per_class["bright"]["accuracy"] == 1.0 and per_class["bright"]["panoptic_quality"] == 1.0
    # class-agnostic: TP 3, FP 1, FN 1; PQ = (1 + 0.6 + 1) / (3 + 1/2 + 1/2)
    both = metrics.matching(*metrics.class_agnostic(gt, results))
    assert (both["accuracy"], both["f1"], both["panoptic_quality"]) == pytest.approx((3 / 5, 6 / 8, 2.6 / 4))
    assert metrics.matching(gt, results, iou=0.7)["tp"] == 2  # the moved square (IoU 0.6) no longer counts


def test_evaluation_reports_matching_next_to_coco_ap() -> None:
    from napari_cellseg.evaluation.evaluate import evaluate as evaluate_by_name

    gt, results = _hand_case()
    out = evaluate_by_name(results, {1: "a.tif"}, gt, class_names=CLASSES, score_thresh=0.5)
    assert out["matching"]["accuracy"] == pytest.approx(3 / 5)
    assert out["matching_per_class"]["fluo"]["panoptic_quality"] == pytest.approx(1.6 / 3)
    text = metrics.format_metrics(out)
    assert "TP/(TP+FP+FN) @IoU 0.5, score >= 0.5  0.6000" in text and "PQ fluo" in text and "F1 bright" in text
    strict = evaluate_by_name([dict(r, score=0.4) for r in results], {1: "a.tif"}, gt, score_thresh=0.5)
    assert strict["matching"]["tp"] == 0 and strict["AP50"] > 0  # confidence applies to matching, not to AP
