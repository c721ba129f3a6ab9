"""Image -> labels -> COCO results: segmentation and folder export, shared by validation, the CLI,
the GUI and sharded export (the dataset layout and image ids are ``layout``'s).

Folder export streams image by image (memory does not grow with the folder) and appends each
finished image to ``<out>.partial.jsonl``, so an interrupted export resumes without redoing
finished images; the submission itself is written atomically at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import distributed as dist
from ..atomic import atomic_path, folder_problem, open_output, output_lock
from ..model.checkpoint import weights_digest
from ..io.coco import compact_json, ground_truth, labels_to_results, load_mapping
from ..io.samples import Sample, find_samples, read_sample
from ..defaults import MASK_THRESH, OVERLAP, SCORE_THRESH, TILE_SIZE
from ..errors import DatasetError, OutputError
from ..evaluation.evaluate import evaluate as evaluate_by_name
from .postprocess import instance_scores, to_labels
from ..progress import Progress, StopCheck, drain, stopped
from .scale import AUTO, iter_predict_scaled
from ..io.layout import MAPPING_NAME, TEST_FOLDER, ExportItem, image_files
from ..io.image_reader import item_image, mapped_items, split_plane_name


def segment_image(
    model,
    image: np.ndarray,
    *,
    device=None,
    score_thresh: float = SCORE_THRESH,
    mask_thresh: float = MASK_THRESH,
    tile_size: int = TILE_SIZE,
    overlap: int = OVERLAP,
    tta: bool = False,
    scale: float | str = AUTO,
    diameter: float | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """Labels for every class of the model (id -> score table alongside) for one RGB uint8 image,
    segmented at the scale ``scale.iter_predict_scaled`` picks from ``scale`` / ``diameter``."""
    raw = drain(iter_predict_scaled(model, image, device=device, tile_size=tile_size, overlap=overlap, tta=tta,
                                    scale=scale, diameter=diameter))
    num_classes = model.roi_heads.box_predictor.cls_score.out_features
    labels = to_labels(raw, score_thresh, mask_thresh, classes=range(1, num_classes))
    return labels, instance_scores(raw)


def validate(
    model,
    samples: Sequence[Sample],
    class_names: Sequence[str],
    *,
    device=None,
    score_thresh: float = 0.05,
    mask_thresh: float = 0.5,
    max_dets: int = 1000,
    should_stop: StopCheck | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """COCO mask AP of ``model`` on ground-truth samples; with several processes each takes a share
    and rank 0 evaluates the gathered results (the other ranks get ``{}``). At scale 1: training's
    validation measures the network as trained, at the cost of one pass per image."""
    results: list[dict] = []
    items: list[tuple[int, str, dict[int, np.ndarray]]] = []
    for image_id, sample in list(enumerate(samples, start=1))[rank::world_size]:
        if stopped(should_stop):
            return {}
        image, truth = read_sample(sample)
        truth = truth or _no_cells(image.shape)
        labels, scores = segment_image(
            model, image, device=device, score_thresh=score_thresh, mask_thresh=mask_thresh, scale=1.0
        )
        results += labels_to_results(labels, image_id, scores)
        items.append((image_id, sample.name, truth))
    all_results = [r for part in dist.gather(results, world_size) for r in part]
    all_items = [i for part in dist.gather(items, world_size) for i in part]
    if rank != 0:
        return {}
    gt = ground_truth(sorted(all_items, key=lambda item: item[0]), class_names)
    names = {image_id: name for image_id, name, _ in all_items}
    return evaluate_by_name(all_results, names, gt, class_names=class_names, max_dets=max_dets)


def sample_items(samples: Sequence[Sample]) -> list[ExportItem]:
    """Ground-truth samples numbered 1..n in order: the ids ``samples_ground_truth`` uses too."""
    return [ExportItem(i, s.name, s.image_path) for i, s in enumerate(samples, start=1)]


def samples_ground_truth(samples: Sequence[Sample], class_names: Sequence[str]) -> dict[str, Any]:
    """COCO ground truth of a folder of samples, image ids as in ``sample_items``."""
    return ground_truth(((i, s.name, _truth(s)) for i, s in enumerate(samples, start=1)), class_names)


def _truth(sample: Sample) -> dict[int, np.ndarray]:
    image, truth = read_sample(sample)
    return truth or _no_cells(image.shape)


def _no_cells(shape: tuple[int, ...]) -> dict[int, np.ndarray]:
    """The ground truth of a sample without any classK.tif (a cell-free image, legal in HW3): an empty
    class-1 label image, which carries the image's size and no instance."""
    return {1: np.zeros(shape[:2], np.int32)}


def export_items(
    dataset: str | Path, mapping_path: str | Path | None = None, *, allow_missing: bool = False,
    absent: list[str] | None = None,
) -> list[ExportItem]:
    """What ``export`` segments: a HW3 root (its test_release/ with the mapping file), a folder of
    ground-truth samples (such as val/, ids 1..n), or a folder of TIFFs with ``mapping_path``.

    A mapping row whose image is not in the folder is refused unless ``allow_missing``: a submission
    that silently lacks a test image scores as if every cell in it were missed; with it, their names
    are added to ``absent`` (when given) so the caller can say which."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise DatasetError(f"dataset folder not found: {dataset}")
    if mapping_path is None and (dataset / TEST_FOLDER).is_dir():
        dataset, mapping_path = dataset / TEST_FOLDER, dataset / MAPPING_NAME
    if mapping_path is None:
        return sample_items(find_samples(dataset))
    mapping = load_mapping(mapping_path)
    files = image_files(dataset)
    present = {f.name for f in files}

    def listed_file(key: str) -> str:
        name, plane = split_plane_name(key)
        return name if plane is not None and key not in present else key

    gone = [key for key in mapping if listed_file(key) not in present]
    if gone and not allow_missing:
        raise DatasetError(
            f"{len(gone)} image(s) listed in {mapping_path} are missing from {dataset}, e.g. {gone[0]}; "
            "the submission would lack them. Add --allow-missing to export without them"
        )
    if absent is not None:
        absent.extend(gone)
    return mapped_items(files, mapping, mapping_path)  # checks sizes before any image is segmented


def iter_export(
    model,
    items: Sequence[ExportItem],
    out_json: str | Path,
    *,
    device=None,
    score_thresh: float = SCORE_THRESH,
    mask_thresh: float = MASK_THRESH,
    tile_size: int = TILE_SIZE,
    tta: bool = False,
    scale: float | str = AUTO,
    diameter: float | None = None,
    resume: bool = True,
    should_stop: StopCheck | None = None,
) -> Iterator[Progress]:
    """Segment every item and write the submission ``out_json``.

    Yields ``Progress(done, total, name)`` after each image (``progress``'s contract). Returns
    (generator value) the number of results written, or None when stopped early (the partial file
    keeps finished images).
    """
    out_json = Path(out_json)
    if out_json.is_dir():
        raise OutputError(f"output {out_json} is a folder; give a file name such as test-results.json")
    problem = folder_problem(out_json.parent)
    if problem:
        raise OutputError(f"output {out_json}: {problem}")
    with output_lock(out_json):  # a second export to the same file is refused before any work
        return (yield from _export(model, items, out_json, device, score_thresh, mask_thresh, tile_size, tta,
                                   resume, should_stop, {"scale": scale, "diameter": diameter}))


def _export(model, items, out_json: Path, device, score_thresh, mask_thresh, tile_size, tta, resume,
            should_stop, scaling: dict[str, Any]) -> Iterator[Progress]:
    partial = out_json.with_name(out_json.name + ".partial.jsonl")
    # the model's weights are part of the settings: a resume with another model starts afresh
    settings = {"score_thresh": score_thresh, "mask_thresh": mask_thresh, "tile_size": tile_size, "tta": tta,
                **scaling, "model": weights_digest(model), "items": [[it.image_id, it.name] for it in items]}
    # name -> byte offset of its line in the partial file: results stay on disk, not in memory
    done = _read_partial(partial, settings) if resume else {}
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open_output(partial, "ab" if done else "wb") as log:
        if not done:
            log.write(_jsonl({"settings": settings}))
        for n, item in enumerate(items, start=1):
            if item.name not in done:
                if stopped(should_stop):
                    return None
                image = item_image(item)
                if item.shape is not None and tuple(image.shape[:2]) != tuple(item.shape):
                    raise DatasetError(
                        f"{item.path} is {image.shape[0]}x{image.shape[1]} but the mapping file says "
                        f"{item.shape[0]}x{item.shape[1]}"
                    )
                labels, scores = segment_image(
                    model, image, device=device, score_thresh=score_thresh, mask_thresh=mask_thresh,
                    tile_size=tile_size, tta=tta, **scaling,
                )
                done[item.name] = log.tell()
                log.write(_jsonl({"name": item.name, "results": labels_to_results(labels, item.image_id, scores)}))
                log.flush()
            yield Progress(n, len(items), item.name)
    count = _write_submission(out_json, partial, [done[it.name] for it in items])
    partial.unlink(missing_ok=True)
    return count


def _jsonl(obj: Any) -> bytes:
    return (compact_json(obj) + "\n").encode()


def _write_submission(out_json: Path, partial: Path, offsets: Sequence[int]) -> int:
    """Stream the images' results from the partial file, in item order, into one JSON list that
    appears whole or not at all; memory holds one image's results at a time. Returns the count."""
    count = 0
    with atomic_path(out_json) as tmp:
        with open(tmp, "w", encoding="utf-8") as out, open(partial, "rb") as log:
            out.write("[")
            for offset in offsets:
                log.seek(offset)
                for result in json.loads(log.readline())["results"]:
                    out.write(("," if count else "") + compact_json(result))
                    count += 1
            out.write("]")
    return count


def _read_partial(partial: Path, settings: dict[str, Any]) -> dict[str, int]:
    """Finished images of an interrupted export with the same settings (name -> byte offset of its
    line). A torn last line (killed mid-write) is cut off so the next line starts clean; a partial
    file made with other settings is not reused."""
    if not partial.exists():
        return {}
    done: dict[str, int] = {}
    with open_output(partial, "rb+") as f:
        try:
            if json.loads(f.readline()) != {"settings": settings}:
                return {}
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return {}
        good_end = f.tell()
        while line := f.readline():
            try:
                entry = json.loads(line)
                if not line.endswith(b"\n") or not isinstance(entry["results"], list):
                    break
                done[entry["name"]] = good_end
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
                break
            good_end = f.tell()
        f.truncate(good_end)
    return done
