"""What each ``napari-cellseg`` subcommand does: calls into the core and reports on the terminal."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from .atomic import folder_problem
from .checkpoint import load_model
from .data import find_samples
from .engine import DoneEvent, EpochEvent, InfoEvent, StepEvent, TrainConfig, train as train_events
from .errors import DatasetError
from .images import read_image, write_labels
from .inference import resolve_device
from .evaluation import evaluate_file
from .metrics import format_metrics
from .pipeline import export_items, iter_export, image_files, segment_image
from .sample_data import SAMPLE_DATASET


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
    if done is not None and distributed_rank() == 0:
        print(f"last checkpoint: {done.last}\nbest checkpoint: {done.best}")
    return done


def distributed_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def predict(args: argparse.Namespace) -> int:
    out = Path(args.out)
    problem = folder_problem(out)
    if problem:
        raise DatasetError(f"output folder: {problem}")
    model, config = load_model(args.checkpoint, resolve_device(args.device))
    src = Path(args.images)
    files = image_files(src) if src.is_dir() else [src]
    with tqdm(files, desc="predict", unit="image") as bar:  # closed before any error line
        for path in bar:
            labels, _ = segment_image(model, read_image(path), score_thresh=args.score_thresh,
                                      mask_thresh=args.mask_thresh, tile_size=args.tile_size, flip=args.flip_tta)
            for class_id, image in labels.items():
                write_labels(out / f"{path.stem}_{config.class_names[class_id - 1]}.tif", image)
    print(f"wrote label images for {len(files)} image(s) to {out}")
    return 0


def export(args: argparse.Namespace) -> int:
    items = export_items(args.dataset, args.mapping)
    model, _ = load_model(args.checkpoint, resolve_device(args.device))
    written = _drain(
        iter_export(model, items, args.out, score_thresh=args.score_thresh, mask_thresh=args.mask_thresh,
                    tile_size=args.tile_size, flip=args.flip_tta, resume=not args.restart),
        "export",
    )
    print(f"wrote {written} instances for {len(items)} images to {args.out}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Results matched to the ground-truth samples by file name (``evaluation.evaluate_file``)."""
    metrics = evaluate_file(args.results, args.ground_truth, mapping=getattr(args, "mapping", None),
                            max_dets=args.max_dets)
    print(format_metrics(metrics))
    return 0


def demo(args: argparse.Namespace) -> int:
    """The README's first command: a light model on the shipped sample data, end to end."""
    out = Path(args.out)
    shutil.rmtree(out / "run", ignore_errors=True)
    print(f"training the light model for {args.steps} steps on the sample data in {SAMPLE_DATASET}")
    cfg = TrainConfig(
        dataset=str(SAMPLE_DATASET), out_dir=str(out / "run"), arch="resnet18",
        epochs=-(-args.steps // 6), val_every=10**6,  # 12 sample images = 6 steps an epoch; validate at the end
        max_steps=args.steps, batch_size=2, lr=1e-3, warmup_steps=min(50, args.steps), crop_size=256,
        device=args.device,
    )
    done = run_training(cfg)
    if done is None or done.last is None:
        raise DatasetError("training stopped before writing a checkpoint")
    device = resolve_device(args.device)
    model, config = load_model(done.last, device)
    submission = out / "test-results.json"
    items = export_items(SAMPLE_DATASET)
    _drain(iter_export(model, items, submission, resume=False), "export test_release")
    print(f"submission for {len(items)} test images: {submission}")
    val = find_samples(SAMPLE_DATASET / "val")
    val_json = out / "val-results.json"
    _drain(iter_export(model, export_items(SAMPLE_DATASET / "val"), val_json, score_thresh=0.05,
                       resume=False), "export val")
    metrics = evaluate_file(val_json, SAMPLE_DATASET / "val")
    print(format_metrics(metrics))
    print(f"demo AP50 on the {len(val)} sample val images: {metrics['AP50']:.3f}")
    return 0


def _drain(events, desc: str):
    """Run an (done, total, name) generator under a progress bar; return its return value."""
    bar = None
    try:
        while True:
            done, total, _ = next(events)
            if bar is None:
                bar = tqdm(total=total, desc=desc, unit="image")
            bar.n = done
            bar.refresh()
    except StopIteration as stop:
        return stop.value
    finally:
        if bar is not None:
            bar.close()


__all__ = ["train", "predict", "export", "evaluate", "demo"]
