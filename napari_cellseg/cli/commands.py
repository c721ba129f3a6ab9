"""What each ``napari-cellseg`` subcommand does: calls into the core and reports on the terminal."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from tqdm import tqdm

from ..atomic import folder_problem
from ..model.checkpoint import load_model
from ..io.samples import find_samples
from ..devices import resolve_device
from ..distributed import barrier, env_rank
from ..training.engine import DoneEvent, EpochEvent, InfoEvent, StepEvent, TrainConfig, train as train_events
from ..errors import DatasetError, OutputError
from ..evaluation.evaluate import evaluate_file
from ..io.images import write_labels
from ..io.layout import TEST_FOLDER, ids_file, image_files
from ..evaluation.metrics import format_metrics
from ..inference.pipeline import export_items, iter_export, segment_image
from ..inference.postprocess import model_confidence
from ..progress import Progress, drain
from ..sample_data import SAMPLE_DATASET


def train(args: argparse.Namespace) -> int:
    run_training(train_config(args))
    return 0


def train_config(args: argparse.Namespace) -> TrainConfig:
    """``TrainConfig`` from the parsed options: each option sets the field of its own name."""
    renamed = {"out": "out_dir", "detections": "detections_per_img"}
    values = {renamed.get(k, k): v for k, v in vars(args).items()}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in fields})


def run_training(cfg: TrainConfig) -> DoneEvent | None:
    """Drive the training generator with a progress bar (rank 0 only under torchrun)."""
    bar: tqdm | None = None
    done = None
    try:
        for event in train_events(cfg):
            if isinstance(event, StepEvent):
                if bar is None:
                    bar = tqdm(total=event.total_steps, initial=event.step - 1, desc="train", unit="step")
                bar.update(1)
                bar.set_postfix(epoch=event.epoch, loss=f"{event.losses['loss']:.3f}", lr=f"{event.lr:.1e}",
                                img_s=f"{event.images_per_s:.1f}")
            elif isinstance(event, EpochEvent) and event.metrics:
                m = event.metrics
                tqdm.write(
                    f"epoch {event.epoch}/{event.epochs}: AP {m.get('AP', 0):.3f}  AP50 {m.get('AP50', 0):.3f}  "
                    f"AP75 {m.get('AP75', 0):.3f}  (standard 100-detection cap: AP {m.get('AP@100', 0):.3f})  "
                    f"-> {event.checkpoint}{'  [best]' if event.best else ''}"
                )
            elif isinstance(event, InfoEvent):
                tqdm.write(event.message)
            elif isinstance(event, DoneEvent):
                done = event
    finally:  # closed before any error line, so the bar is never redrawn after it
        if bar is not None:
            bar.close()
    if done is not None and env_rank() == 0:
        best = (f"{done.best} (best validation AP {done.best_ap:.3f})" if done.best is not None
                else "none (no validation images, or none validated yet)")
        print(f"last checkpoint: {done.last}\nbest checkpoint: {best}\nmodel to use: {done.model}")
    return done


def predict(args: argparse.Namespace) -> int:
    """Label TIFFs per image and class; a stack gives ``(planes, H, W)`` label stacks. Under
    torchrun each process takes every N-th image (``sharding.my_share``)."""
    from ..inference.sharding import my_share, setup_sharding, teardown

    out = Path(args.out)
    problem = folder_problem(out)
    if problem:
        raise OutputError(f"output folder: {problem}")
    ctx = setup_sharding(args.device)
    try:
        model, config = load_model(args.checkpoint, ctx.device or resolve_device(args.device))
        if args.score_thresh is None:
            args.score_thresh = model_confidence(model)
        src = Path(args.images)
        files = image_files(src) if src.is_dir() else [src]
        _refuse_output_among_inputs(out, src)
        _refuse_same_stem(files)
        mine = my_share(files, ctx)
        with tqdm(mine, desc="predict", unit="image", disable=not ctx.is_main) as bar:  # closed before any error line
            for path in bar:
                _predict_file(model, config, path, out, args)
        barrier(ctx)
    finally:
        teardown(ctx)
    if ctx.is_main:
        print(f"wrote {', '.join(args.format)} for {len(files)} image(s) to {out}")
    return 0


def _predict_file(model, config, path: Path, out: Path, args: argparse.Namespace) -> None:
    """One image -> ``<stem>_<class>.tif`` per class; a stack is segmented plane by plane."""
    from ..inference.stacks import iter_predict_stack, link_over_time, stack_scores, to_stack_labels
    from ..io.image_reader import Stack, read, read_stack, write_stack_labels
    from ..inference.streaming import iter_segment_file, should_stream

    classes = range(1, len(config.class_names) + 1)
    formats = getattr(args, "format", ("labels",))
    channel = getattr(args, "channel", None)
    if not args.tta and channel is None and set(formats) == {"labels"} and should_stream(path):
        # large: tiles read from the file, labels written by tile
        outputs = {c: _inside(out, f"{path.stem}_{config.class_names[c - 1]}.tif") for c in classes}
        _drain(iter_segment_file(model, path, outputs, score_thresh=args.score_thresh, mask_thresh=args.mask_thresh,
                                 tile_size=args.tile_size), f"{path.name} tiles", unit="tile", show=env_rank() == 0)
        return
    stack = read_stack(path)
    if channel is not None and len(stack) > 1:  # every plane reduced to the chosen channel when read
        from ..io.channels import ChannelPlanes, channel_axis

        stack = Stack(ChannelPlanes(stack.data, channel_axis(stack.data.shape[1:]), channel), stack.axis)
    if len(stack) == 1:
        image = stack.plane(0) if channel is None else read(path, channel=channel)
        labels, scores = segment_image(model, image, score_thresh=args.score_thresh, mask_thresh=args.mask_thresh,
                                       tile_size=args.tile_size, tta=args.tta, scale=args.scale,
                                       diameter=args.diameter)
        for class_id, label_image in labels.items():
            if "labels" in formats:
                write_labels(_inside(out, f"{path.stem}_{config.class_names[class_id - 1]}.tif"), label_image)
    else:
        raw = _drain(iter_predict_stack(model, stack, tile_size=args.tile_size, tta=args.tta, scale=args.scale,
                                        diameter=args.diameter),
                     f"{path.name} planes", unit="plane", show=env_rank() == 0)
        labels, scores = to_stack_labels(raw, args.score_thresh, args.mask_thresh, classes), stack_scores(raw)
        if args.link:
            link_over_time(labels)
        for class_id, label_image in labels.items():
            if "labels" in formats:
                write_stack_labels(_inside(out, f"{path.stem}_{config.class_names[class_id - 1]}.tif"),
                                   label_image, stack.axis)
        image = None
    if set(formats) - {"labels"}:
        from ..export.cells import find_cells, write_cells

        # intensities measured on the planes as the model saw them; a stack's read one at a time
        cells = find_cells(labels, scores, config.class_names, stack.plane if image is None else image)
        write_cells(out, _inside(out, path.stem).name, cells, formats, stack.axis)


def _refuse_output_among_inputs(out: Path, src: Path) -> None:
    """Label images never land among the images: ``a.tif`` would write ``a_nucleus.tif`` over an
    input of that name, and every label image would be read as an image on the next run."""
    if src.is_dir() and out.is_dir() and os.path.samefile(out, src):
        raise OutputError(
            f"--out {out} is the image folder itself: the label images would be written among the images "
            "(over any of the same name) and read as images next time; give --out another folder"
        )


def _refuse_same_stem(files: list[Path]) -> None:
    """x.tif, x.TIF and x.tiff would all write x_<class>.tif: refuse before any work, naming them."""
    seen: dict[str, Path] = {}
    for path in files:
        other = seen.setdefault(path.stem.casefold(), path)
        if other != path:
            raise DatasetError(
                f"{other} and {path.name} would write the same label files ({path.stem}_<class>.tif); "
                "rename one of them or move it to another folder"
            )


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refused if it would lie elsewhere (the checkpoint validates class names
    at load; this guards the file name once more, as it comes from the image and the model)."""
    path = folder / name
    if Path(name).name != name or name in (".", ".."):
        raise OutputError(f"refused to write {path}: the name {name!r} is not a plain file name")
    return path


def export(args: argparse.Namespace) -> int:
    """The submission; under torchrun each process segments every N-th image and rank 0 writes it."""
    from ..inference.sharding import iter_sharded_export, setup_sharding, teardown

    absent: list[str] = []
    items = _export_items(args, absent)
    if getattr(args, "channel", None) is not None:
        items = [dataclasses.replace(item, channel=args.channel) for item in items]
    ctx = setup_sharding(args.device)
    try:
        model, _ = load_model(args.checkpoint, ctx.device or resolve_device(args.device))
        written = _drain(
            iter_sharded_export(model, items, args.out, ctx, score_thresh=args.score_thresh,
                                mask_thresh=args.mask_thresh, tile_size=args.tile_size, tta=args.tta,
                                scale=args.scale, diameter=args.diameter, resume=not args.restart),
            "export" if ctx.world_size == 1 else f"export (rank 0 of {ctx.world_size})", show=ctx.is_main,
        )
    finally:
        teardown(ctx)
    if ctx.is_main:
        print(f"wrote {written} instances for {len(items)} images to {args.out}")
        if absent:
            print(f"note: {len(absent)} image(s) of the mapping file were not found and have no results "
                  f"(--allow-missing): {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}")
    return 0


def _export_items(args: argparse.Namespace, absent: list[str]):
    """``export_items``; a folder of images without a mapping file gets one, numbered 1..n in name
    order (a stack's planes as ``<file>#<plane>``), written beside the results as ``<out>.images.json``."""
    from ..io.coco import write_json
    from ..io.image_reader import folder_mapping, mapped_items

    dataset = Path(args.dataset)
    if args.mapping is not None or (dataset / TEST_FOLDER).is_dir() or not dataset.is_dir():
        return export_items(dataset, args.mapping, allow_missing=args.allow_missing, absent=absent)
    try:
        files = image_files(dataset)
    except DatasetError:
        return export_items(dataset)  # a folder of samples (or the error that says what is missing)
    entries = folder_mapping(files)  # every process numbers the same headers the same way
    mapping = ids_file(args.out)
    if env_rank() == 0:
        write_json(mapping, entries)
    return mapped_items(files, {e["file_name"]: e for e in entries}, mapping)


def evaluate(args: argparse.Namespace) -> int:
    """Results matched to the ground-truth samples by file name (``evaluation.evaluate.evaluate_file``)."""
    metrics = evaluate_file(args.results, args.ground_truth, mapping=args.mapping, max_dets=args.max_dets,
                            class_agnostic=args.class_agnostic, score_thresh=args.score_thresh)
    print(format_metrics(metrics))
    return 0


def demo(args: argparse.Namespace) -> int:
    """The README's first command: the built-in model on the shipped sample data, no training needed."""
    out = Path(args.out)
    _claim_demo_folder(out)
    device = resolve_device(args.device)
    model, config = load_model(args.model, device)
    print(f"segmenting the sample data in {SAMPLE_DATASET} with the built-in model {args.model!r} (no training)")
    items = export_items(SAMPLE_DATASET)
    submission = out / "test-results.json"
    _drain(iter_export(model, items, submission, device=device, resume=False), "export test_release")
    print(f"submission for {len(items)} test images: {submission}")
    metrics = _demo_val(model, config.class_names, out / "val-results.json", device)
    print(f"demo AP50 on the {metrics['num_images']} sample val images (never trained on): {metrics['AP50']:.3f}")
    print(f"picture of the cells found (outlines on the image): {_demo_overlay(model, out / 'overlay.png')}")
    if args.fine_tune:
        count = len(find_samples(SAMPLE_DATASET / "train"))
        print(f"fine-tuning {args.model!r} for {args.fine_tune} steps on the {count} "
              "sample train images and their classes")
        cfg = TrainConfig(
            dataset=str(SAMPLE_DATASET), out_dir=str(out / "fine-tune"), init=args.model, epochs=args.fine_tune,
            max_steps=args.fine_tune, val_every=10**6, batch_size=2, lr=2e-4, crop_size=256, augment="strong",
            detections_per_img=config.detections_per_img, device=args.device,
            overwrite=True,  # the folder is the demo's own (checked above)
        )
        done = run_training(cfg)
        if done is None or done.model is None:
            raise DatasetError("fine-tuning stopped before writing a checkpoint")
        tuned, tuned_config = load_model(done.model, device)
        metrics = _demo_val(tuned, tuned_config.class_names, out / "val-results-fine-tuned.json", device)
        print(f"fine-tuned AP50 on the sample val images (per class): {metrics['AP50']:.3f}")
    return 0


def _demo_overlay(model, path: Path) -> Path:
    """The first sample val image with the outlines of the cells the model finds, as a PNG."""
    from ..io.samples import read_sample
    from ..export.overlay import write_overlay

    image, _ = read_sample(find_samples(SAMPLE_DATASET / "val")[0])
    labels, _ = segment_image(model, image)
    write_overlay(path, image, sum(labels.values()))
    return path


def _demo_val(model, class_names: list[str], out_json: Path, device) -> dict:
    """Export the sample val images and print their COCO figures; a one-class model is scored
    class-agnostic (ground truth classes merged), as it cannot tell them apart."""
    _drain(iter_export(model, export_items(SAMPLE_DATASET / "val"), out_json, device=device, score_thresh=0.05,
                       resume=False), "export val")
    metrics = evaluate_file(out_json, SAMPLE_DATASET / "val", class_agnostic=len(class_names) == 1)
    print(format_metrics(metrics))
    return metrics






DEMO_MARK = ".napari-cellseg-demo"
"""Left in a demo's folder so a later demo may replace what the earlier one wrote, and nothing else."""


def _claim_demo_folder(out: Path) -> None:
    """The demo writes only into a new or empty folder, or an earlier demo's; it never deletes a file."""
    problem = folder_problem(out)
    if problem:
        raise OutputError(f"output folder: {problem}")
    if out.is_dir() and any(out.iterdir()) and not (out / DEMO_MARK).is_file():
        raise OutputError(
            f"{out} already holds files the demo did not make; give --out a new or empty folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARK).touch()


def _drain(events, desc: str, unit: str = "image", show: bool = True):
    """``progress.drain`` under a progress bar: run a ``Progress`` generator, return its return value."""
    bar = None

    def show_progress(progress: Progress) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=progress.total, desc=desc, unit=unit, disable=not show, leave=unit == "image")
        bar.n = progress.done
        bar.refresh()

    try:
        return drain(events, show_progress)
    finally:
        if bar is not None:
            bar.close()


__all__ = ["train", "predict", "export", "evaluate", "demo"]
