"""Tuning a model's confidence: the cut with the best TP/(TP+FP+FN), from one segmentation per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cellseg.errors import DatasetError
from napari_cellseg.evaluation import metrics
from napari_cellseg.inference import tuning
from napari_cellseg.inference.pipeline import samples_ground_truth
from napari_cellseg.io import coco
from napari_cellseg.io.samples import find_samples
from napari_cellseg.model.network import ModelConfig, build_model


def squares(n: int, offset: int = 0) -> np.ndarray:
    """``n`` separate 8 x 8 squares in a row, ids 1..n, starting ``offset`` squares along."""
    image = np.zeros((10, 10 * (n + offset)), np.int32)
    for i in range(n):
        left = 10 * (i + offset)
        image[1:9, left : left + 8] = i + 1
    return image


def hand_case() -> tuple[dict, list[dict]]:
    """Six cells found exactly, scored .9 .9 .8 .8 .7 .62, and three specks where there is none, scored
    .6 .55 .3: at 0.6, TP 6, FP 1, FN 0 (6/7); at 0.65, TP 5, FP 0, FN 1 (5/6); at 0.55, 6/8."""
    truth = np.concatenate([squares(6), np.zeros((10, 30), np.int32)], axis=1)
    found = squares(9)
    gt = coco.ground_truth([(1, "a.tif", {1: truth})], ["cell"])
    scores = dict(enumerate([0.9, 0.9, 0.8, 0.8, 0.7, 0.62, 0.6, 0.55, 0.3], start=1))
    return gt, coco.labels_to_results({1: found}, 1, scores)


def test_the_cut_with_the_best_accuracy_is_chosen_against_a_hand_computed_case() -> None:
    gt, results = hand_case()
    chosen = tuning.best_cut(gt, results)
    assert chosen.score_thresh == 0.6 and chosen.images == 1
    assert chosen.figures[0.6]["accuracy"] == pytest.approx(6 / 7)
    assert chosen.figures[0.65]["accuracy"] == pytest.approx(5 / 6)
    assert chosen.figures[0.55]["accuracy"] == pytest.approx(6 / 8)
    assert chosen.figures[0.1]["accuracy"] == pytest.approx(6 / 9)
    assert set(chosen.figures) == set(tuning.CUTS)


def test_on_a_tie_the_lowest_cut_wins_it_loses_fewer_cells() -> None:
    gt, results = hand_case()
    exact = [r for r in results if r["score"] >= 0.62]  # only the six real cells: every cut up to .6 is perfect
    assert tuning.best_cut(gt, exact).score_thresh == min(tuning.CUTS)


def test_no_images_is_an_error() -> None:
    with pytest.raises(ValueError, match="no images"):
        tuning.best_cut({"images": [], "annotations": [], "categories": []}, [])


def test_iter_tune_segments_each_sample_once_and_scores_every_cut(tiny_dataset, one_thread) -> None:
    from napari_cellseg.progress import drain

    torch.manual_seed(0)
    config = ModelConfig(arch="resnet18", class_names=["class1", "class2"], detections_per_img=20)
    model = build_model(config).eval()
    samples = find_samples(tiny_dataset / "val")
    steps = []
    chosen = drain(tuning.iter_tune(model, samples, config.class_names, scale=1.0), steps.append)
    assert [(p.done, p.total) for p in steps] == [(1, 2), (2, 2)]
    assert chosen.images == 2 and chosen.score_thresh in tuning.CUTS
    gt = samples_ground_truth(samples, config.class_names)
    best = max(f["accuracy"] for f in chosen.figures.values())
    assert chosen.figures[chosen.score_thresh]["accuracy"] == best
    assert chosen.figures[0.5]["fn"] + chosen.figures[0.5]["tp"] == len(gt["annotations"])
    assert drain(tuning.iter_tune(model, samples, config.class_names, should_stop=lambda: True)) is None


def test_samples_without_ground_truth_are_refused(tiny_dataset, tmp_path) -> None:
    import shutil

    folder = tmp_path / "no_truth"
    shutil.copytree(tiny_dataset / "val", folder)
    for mask in folder.glob("*/class*.tif"):
        mask.unlink()
    with pytest.raises(DatasetError, match="no ground truth"):
        next(tuning.iter_tune(None, find_samples(folder), ["class1"]))


def test_matching_at_the_chosen_cut_is_the_metrics_figure() -> None:
    gt, results = hand_case()
    chosen = tuning.best_cut(gt, results)
    assert chosen.figures[0.6] == metrics.matching(gt, results, 0.5, 0.6)
