"""Evaluation by file name: the one function the CLI, the Export & Evaluate dock and training's
validation use to score results against ground truth.

A results file only holds numeric image ids, and two sets of images (test_release/ and val/) are
both numbered from 1, so numbers alone cannot tell a test prediction from a val one. Here each
result's image id is first turned into a file name (through the mapping file, the sample folder
names, or the image the GUI segmented), and that name must be an image of the ground truth; a
result whose name (or size) is not there is refused with a message, never scored as "all wrong".

Only the classes present (in the ground truth or the results) are reported, so a ground-truth
folder that lacks the highest class still scores a valid submission; absurd class ids (a stray
``class20000.tif``) are refused instead of giving thousands of rows. ``metrics.py`` keeps the
pycocotools wrapper.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..io.layout import class_name

MAX_CLASS_ID = 1000
"""Class ids above this are refused: no cell dataset has that many classes, a stray file does."""

_SUFFIXES = (".tif", ".tiff", ".png")
MAPPING_NAME = "test_image_name_to_ids.json"


def name_key(name: str) -> str:
    """How file names are compared: ``test_0.tif``, ``test_0`` and ``x/test_0.tif`` are one image."""
    base = Path(str(name).replace("\\", "/")).name
    return base[: -len(base.rsplit(".", 1)[-1]) - 1] if base.lower().endswith(_SUFFIXES) else base


def _short(name: str) -> str:
    """DSB2018 names are 64-character hashes: the start and end identify them in a message."""
    return name if len(name) <= 24 else f"{name[:10]}...{name[-8:]}"


def check_class_id(class_id: int, where: str) -> None:
    """Refuse a class number no dataset has (one line, naming where it came from)."""
    if not 1 <= int(class_id) <= MAX_CLASS_ID:
        raise DatasetError(f"{where}: class {class_id} is not a class number (1..{MAX_CLASS_ID}); remove or rename it.")


def samples_truth(samples: Sequence, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """COCO ground truth of HW3 samples, numbered 1..n in name order, file names = sample names."""
    from ..io.coco import ground_truth
    from ..io.samples import read_sample

    for sample in samples:
        for k, path in sample.mask_paths.items():
            check_class_id(k, str(path))
    top = max([len(class_names or ())] + [max(s.mask_paths, default=0) for s in samples])
    names = _names(class_names, range(1, top + 1), {})
    return ground_truth(((i, s.name, read_sample(s)[1]) for i, s in enumerate(samples, start=1)), names)


def evaluate(
    results: Sequence[Mapping[str, Any]],
    result_names: Mapping[int, str],
    truth: Mapping[str, Any],
    *,
    class_names: Sequence[str] | None = None,
    max_dets: int = 1000,
    only_matched: bool = False,
    class_agnostic: bool = False,
    score_thresh: float = 0.5,
    results_label: str = "the results",
    truth_label: str = "the ground truth",
) -> dict[str, Any]:
    """COCO mask AP of ``results`` against ``truth`` (COCO ground truth), matched by file name.

    ``result_names``: the results' image id -> file name. ``only_matched``: score only the
    images that have results (the GUI's "the images I segmented"); otherwise every ground-truth
    image counts, one without results as all cells missed. ``class_agnostic``: every class merged
    into one, which scores finding the cells, not naming their class (how the one-class built-in
    ``nuclei`` model is judged on data with several classes). Next to the COCO figures, ``matching``
    (class-agnostic) and ``matching_per_class`` hold TP/(TP+FP+FN), precision, recall, F1 and PQ at
    IoU 0.5 for the results at or above ``score_thresh``.
    """
    from .metrics import class_agnostic as merge_classes, evaluate as coco_evaluate, matching, matching_per_class

    images = {name_key(image["file_name"]): image for image in truth["images"]}
    if len(images) != len(truth["images"]):
        raise DatasetError(f"{truth_label} lists an image name twice")
    ids = sorted({int(r["image_id"]) for r in results})
    unnamed = [i for i in ids if i not in result_names]
    if unnamed:
        raise DatasetError(f"{results_label} hold image id {unnamed[0]}, which is not one of its images' numbers")
    foreign = [result_names[i] for i in ids if name_key(result_names[i]) not in images]
    if foreign:
        more = f" and {len(foreign) - 2} more" if len(foreign) > 2 else ""
        shown = ", ".join(_short(n) for n in foreign[:2]) + more
        raise DatasetError(
            f"{shown} ({len(foreign)} of the {len(ids)} images of {results_label}) not in {truth_label}: these results "
            f"were made for other images (a test-set prediction against val/?); evaluate against the ground truth "
            f"of the images that were segmented"
        )
    to_truth = {i: images[name_key(result_names[i])] for i in ids}
    moved = []
    for n, result in enumerate(results):
        image = to_truth[int(result["image_id"])]
        size = list(result["segmentation"]["size"])
        if size != [image["height"], image["width"]]:
            raise DatasetError(
                f"{results_label}, entry {n}: the mask for {result_names[int(result['image_id'])]} is "
                f"{size[0]} x {size[1]} but that image in {truth_label} is {image['height']} x {image['width']}; "
                "the results were made for other images"
            )
        check_class_id(result["category_id"], f"{results_label}, entry {n}")
        moved.append({**result, "image_id": image["id"]})
    gt = _present_classes(truth, moved, class_names, truth_label)
    if only_matched:
        kept = {image["id"] for image in to_truth.values()}
        gt = {**gt, "images": [i for i in gt["images"] if i["id"] in kept],
              "annotations": [a for a in gt["annotations"] if a["image_id"] in kept]}
    if class_agnostic:
        gt, moved = merge_classes(gt, moved, "all classes")
    metrics = coco_evaluate(gt, moved, max_dets=max_dets)
    metrics["matching"] = matching(*merge_classes(gt, moved, "all classes"), iou=0.5, score_thresh=score_thresh)
    metrics["matching_per_class"] = matching_per_class(gt, moved, iou=0.5, score_thresh=score_thresh)
    return metrics


def _names(class_names: Sequence[str] | None, ids, known: Mapping[int, str]) -> list[str]:
    names = list(class_names or ())
    return [names[k - 1] if k <= len(names) else known.get(k, class_name(k)) for k in ids]


def _present_classes(truth, results, class_names, truth_label: str) -> dict[str, Any]:
    """``truth`` with one category per class present in it or in the results, nothing else."""
    for ann in truth["annotations"]:
        check_class_id(ann["category_id"], truth_label)
    present = sorted({int(a["category_id"]) for a in truth["annotations"]} | {int(r["category_id"]) for r in results})
    known = {int(c["id"]): str(c["name"]) for c in truth.get("categories", [])}
    names = _names(class_names, present, known)
    return {**truth, "categories": [{"id": k, "name": name} for k, name in zip(present, names)]}


def evaluate_file(
    results_path: str | os.PathLike, truth_folder: str | os.PathLike, *, mapping: str | os.PathLike | None = None,
    max_dets: int = 1000, class_agnostic: bool = False, score_thresh: float = 0.5,
) -> dict[str, Any]:
    """The CLI's ``evaluate``: a results JSON against a folder of samples (``val/``).

    Without ``mapping`` the results' ids are the samples' numbers 1..n in name order (what
    ``export`` on a sample folder writes); with it, each id is the file name the mapping gives.
    """
    from ..io.coco import load_mapping, read_results
    from ..io.samples import find_samples

    truth_folder, results_path = Path(truth_folder), Path(results_path)
    samples = find_samples(truth_folder)
    gt = samples_truth(samples)
    results = read_results(results_path)
    if mapping is not None:
        names = {entry["id"]: file_name for file_name, entry in load_mapping(mapping).items()}
    else:
        names = {i: s.name for i, s in enumerate(samples, start=1)}
        _refuse_test_numbering(results, gt, truth_folder, results_path)
    return evaluate(results, names, gt, max_dets=max_dets, class_agnostic=class_agnostic, score_thresh=score_thresh,
                    results_label=str(results_path),
                    truth_label=f"{truth_folder} ({len(samples)} samples, numbered 1..{len(samples)} by name)")


def _refuse_test_numbering(results, gt, truth_folder: Path, results_path: Path) -> None:
    """Results numbered by the dataset's test mapping (their sizes fit it, not the samples) are
    a test submission, whatever their numbers: say so instead of scoring them."""
    from ..io.coco import load_mapping

    path = truth_folder.parent / MAPPING_NAME
    if not path.is_file():
        return
    try:
        tests = {e["id"]: (name, [e["height"], e["width"]]) for name, e in load_mapping(path).items()}
    except DatasetError:
        return
    sizes = {image["id"]: [image["height"], image["width"]] for image in gt["images"]}
    wrong = [r for r in results if sizes.get(int(r["image_id"])) != list(r["segmentation"]["size"])]
    sizes_fit = all(tests.get(int(r["image_id"]), (None, None))[1] == list(r["segmentation"]["size"]) for r in results)
    if wrong and sizes_fit:
        name = tests[int(wrong[0]["image_id"])][0]
        raise DatasetError(
            f"{results_path} is numbered like the test images of {path.name} (e.g. {name}), not like the samples "
            f"of {truth_folder}: a test-set prediction cannot be scored against {truth_folder.name}/"
        )
