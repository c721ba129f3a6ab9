"""Training as a generator of progress events, shared by the CLI, the napari widget and torchrun.

``train(config)`` yields a ``StepEvent`` after every optimisation step, an ``EpochEvent`` after
each epoch (with metrics when it was validated), and finally a ``DoneEvent``. The consumer cancels
by returning True from ``should_stop`` (checked every step) or by closing the generator; either way the current state
is saved as ``last.pt`` first, so nothing trained is lost.

``best.pt`` exists only with validation images; without, the run hands on its last weights.

Cut as torchvision's detection references cut it: ``_setup`` (data, model, optimizer, resume or
init), ``_train_one_epoch``, ``_validate_and_save``; ``_train`` only loops and keeps ``last.pt``.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._torch import torch
from .. import distributed as dist
from .amp import autocast_dtype
from ..model.checkpoint import (check_resumable, init_model, load_checkpoint, model_from_checkpoint,
                                save_checkpoint, unwrap)
from .dataset import CellDataset, check_class_count, collate, dataset_classes, split_samples
from ..devices import resolve_device
from ..errors import CellsegError, CheckpointError, TrainingError, without_worker_traceback
from ..io.layout import class_file, default_class_names
from ..model.network import ModelConfig, build_model
from ..inference.pipeline import validate
from ..progress import Progress
from .config import LRSchedule, TrainConfig, model_config, plain, run_folder_lock, scaled_warmup
from .transforms import train_augment


@dataclass
class StepEvent:
    epoch: int
    step: int
    total_steps: int
    losses: dict[str, float]
    lr: float
    images_per_s: float

    @property
    def progress(self) -> Progress:
        """The step as every long job reports progress (``progress.Progress``)."""
        return Progress(self.step, self.total_steps, f"epoch {self.epoch}")


@dataclass
class EpochEvent:
    """End of an epoch; ``metrics`` is empty on epochs without validation (see ``val_every``)."""

    epoch: int
    epochs: int
    metrics: dict[str, Any]
    checkpoint: Path | None  # last.pt when written after this epoch (``SAVE_EVERY_S``)
    best: bool
    val_images: int = 0  # 0: the run has no validation, hence no best


@dataclass
class InfoEvent:
    message: str


@dataclass
class DoneEvent:
    last: Path | None
    best: Path | None  # best on validation: None without validation images
    metrics: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False
    best_ap: float | None = None  # validation AP of best

    @property
    def model(self) -> Path | None:
        """The model the run hands on: best on validation, else its last weights."""
        return self.best or self.last


SAVE_EVERY_S = 60.0
"""Least seconds between two ``last.pt`` writes after epochs (a validation, the end and a cancel
always write): a few-image epoch is one step, and 200 MB a step was most of its time."""


Event = StepEvent | EpochEvent | InfoEvent | DoneEvent


def train(cfg: TrainConfig, should_stop: Callable[[], bool] | None = None) -> Iterator[Event]:
    """Train (or resume) a model; see the module docstring for the events and cancel contract."""
    cfg.validate()
    ctx = dist.setup(cfg.device)
    try:
        with run_folder_lock(cfg) if ctx.is_main else contextlib.nullcontext():  # one run per folder
            yield from _train(cfg, ctx, should_stop or (lambda: False))
    finally:
        dist.teardown(ctx)


@dataclass
class _Run:
    """What one training run carries from epoch to epoch (torchvision's references keep the same
    in the locals of ``main``): built by ``_setup``, advanced by ``_train_one_epoch``."""

    cfg: TrainConfig
    ctx: dist.Context
    device: Any
    model: Any
    model_cfg: ModelConfig
    dataset: CellDataset
    sampler: Any
    loader: Any
    val_samples: list
    params: list
    optimizer: Any
    schedule: LRSchedule
    scheduler: Any
    scaler: Any
    total_steps: int
    step_cap: int = 0
    """The planned steps before a time limit refits ``total_steps``."""
    ddp_model: Any = None
    start_epoch: int = 0
    step: int = 0
    best_ap: float = -1.0
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    run_steps: int = 0
    healthy: bool = True
    saved_ok: bool = True
    best_is_ours: bool = False
    saved_at: float = field(default_factory=lambda: time.perf_counter())

    @property
    def last(self) -> Path:
        return Path(self.cfg.out_dir) / "last.pt"

    @property
    def best(self) -> Path:
        return Path(self.cfg.out_dir) / "best.pt"

    def save(self, path: Path, epoch: int) -> Path:
        """best.pt holds what inference needs; last.pt also what resume needs."""
        self.saved_ok = False  # a failed save (full disk) is not retried on the way out
        state = dict(epoch=epoch, step=self.step, best_ap=self.best_ap, history=self.history,
                     train_args=plain(self.cfg))
        if path == self.last:
            state.update(optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler)
        save_checkpoint(path, self.model, self.model_cfg, **state)
        self.saved_ok, self.saved_at = True, time.perf_counter()
        return path


def _train(cfg: TrainConfig, ctx: dist.Context, should_stop: Callable[[], bool]) -> Iterator[Event]:
    """The epoch loop: train one epoch, validate and save; on cancel, close or error keep last.pt."""
    run = yield from _setup(cfg, ctx)
    epoch, metrics, completed = run.start_epoch, {}, False
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            if run.step >= run.total_steps:
                break
            yield from _train_one_epoch(run, epoch, should_stop)
            validated = yield from _validate_and_save(run, epoch, should_stop)
            metrics = metrics if validated is None else validated
        completed = True
    except _Cancelled:
        pass
    except CellsegError as exc:
        raise without_worker_traceback(exc) from None
    except torch.OutOfMemoryError:
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
        raise TrainingError(
            f"out of memory on {run.device}: lower the batch size (now {cfg.batch_size}) "
            f"or the crop size (now {cfg.crop_size})"
        ) from None
    finally:
        if not completed and run.healthy and run.saved_ok and ctx.is_main and run.step > 0:
            run.save(run.last, epoch)  # cancelled or closed: keep what was trained, resume redoes this epoch
    if ctx.is_main:
        best = run.best if run.best_is_ours and run.best.exists() else None
        yield DoneEvent(run.last if run.last.exists() else None, best, metrics, not completed,
                        run.best_ap if best is not None else None)


def _setup(cfg: TrainConfig, ctx: dist.Context) -> Generator[Event, None, _Run]:
    """Data, model (new, fine-tuned from ``init`` or resumed), AMP, loader, optimizer and schedule."""
    device = ctx.device or resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_samples, val_samples = split_samples(Path(cfg.dataset), cfg.val_fraction, cfg.seed)
    classes = dataset_classes(train_samples)
    if not classes:
        raise TrainingError(f"no class masks (classK.tif) found under {cfg.dataset}/train")
    check_class_count(train_samples + val_samples)
    ckpt = load_checkpoint(cfg.resume) if cfg.resume else None
    model, model_cfg = yield from _make_model(cfg, ctx, max(classes), ckpt)
    model.to(device)
    if ctx.is_main:  # only once the dataset and checkpoint are known good: a failed start leaves nothing
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    amp_dtype, note = autocast_dtype(device, cfg.amp)
    if note and ctx.is_main:
        yield InfoEvent(note)
    model.amp_dtype = amp_dtype
    dataset, sampler, loader = _make_loader(cfg, ctx, train_samples, device)
    val_samples = val_samples[: cfg.val_limit] if cfg.val_limit is not None else val_samples
    if not val_samples and ctx.is_main:
        yield InfoEvent("no validation images: the run hands on its last weights (last.pt); there is no best.pt")
    total_steps = len(loader) * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = LRSchedule(scaled_warmup(cfg.warmup_steps, total_steps), total_steps)
    run = _Run(cfg, ctx, device, model, model_cfg, dataset, sampler, loader, val_samples, params, optimizer,
               schedule, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
               torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16), total_steps)
    run.step_cap = total_steps
    if ckpt is not None:
        yield from _restore(run, ckpt)
    run.ddp_model = dist.wrap(model, ctx)
    run.best_is_ours = run.best.exists() and not cfg.overwrite  # an overwritten run's best.pt is not this run's
    return run


def _make_model(cfg: TrainConfig, ctx: dist.Context, num_classes: int, ckpt: dict | None):
    """The model to train: the checkpoint's (resume), ``init``'s weights (fine-tuning) or a new one."""
    names = default_class_names(num_classes)
    if ckpt is not None:
        model, model_cfg = model_from_checkpoint(ckpt, cfg.resume)
        if num_classes > len(model_cfg.class_names):
            raise CheckpointError(
                f"{cfg.resume} was trained for {len(model_cfg.class_names)} classes but {cfg.dataset} has "
                f"{class_file(num_classes)} masks; resume on the dataset it was trained on, or start a new run"
            )
        check_resumable(ckpt, cfg.resume)
    elif cfg.init:
        model, model_cfg, remade = init_model(
            cfg.init, names, detections_per_img=cfg.detections_per_img, roi_samples=cfg.roi_samples
        )
        if ctx.is_main:
            heads = (f"; its class heads were re-made for {len(names)} classes, each starting from its cells"
                     if remade else "")
            yield InfoEvent(f"starting from {cfg.init} ({model_cfg.arch}, classes: "
                            f"{', '.join(model_cfg.class_names)}){heads}")
    else:
        model_cfg = model_config(cfg, names)
        model = build_model(model_cfg, cfg.weights)
    return model, model_cfg


def _make_loader(cfg: TrainConfig, ctx: dist.Context, samples: list, device):
    """The augmented training set, its (distributed) sampler and loader."""
    augment = train_augment(cfg.crop_size, strong=cfg.augment == "strong", zoom=cfg.zoom)
    dataset = CellDataset(samples, augment=augment, seed=cfg.seed, mosaic=cfg.mosaic, mosaic_size=cfg.crop_size)
    sampler = torch.utils.data.DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
        collate_fn=collate, pin_memory=device.type == "cuda", drop_last=True,
        persistent_workers=cfg.workers > 0,  # workers keep their decoded-image cache across epochs
    )
    if len(loader) == 0:
        raise TrainingError(
            f"{len(samples)} training images are too few for batch size {cfg.batch_size}"
            + (f" on {ctx.world_size} processes" if ctx.world_size > 1 else "")
        )
    return dataset, sampler, loader


def _restore(run: _Run, ckpt: dict) -> Iterator[Event]:
    """Resume: optimizer, schedule, scaler, position and history from the checkpoint."""
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.schedule.total = run.total_steps  # this run's plan (more epochs, a new time limit) wins
    run.scaler.load_state_dict(ckpt["scaler"])
    run.start_epoch, run.step = ckpt["epoch"], ckpt["step"]
    run.best_ap, run.history = ckpt.get("best_ap", -1.0), list(ckpt.get("history", []))
    if run.ctx.is_main:
        yield InfoEvent(f"resumed from {run.cfg.resume} at epoch {run.start_epoch + 1}, step {run.step}")


def _train_one_epoch(run: _Run, epoch: int, should_stop: Callable[[], bool]) -> Iterator[Event]:
    """One pass over the loader (or up to the last step), a ``StepEvent`` after every step."""
    cfg, ctx = run.cfg, run.ctx
    run.sampler.set_epoch(epoch)
    run.dataset.set_epoch(epoch)
    run.ddp_model.train()
    tick = time.perf_counter()
    for images, targets in run.loader:
        if should_stop():
            raise _Cancelled
        images = [im.to(run.device, non_blocking=True) for im in images]
        targets = [{k: v.to(run.device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = _train_step(run.ddp_model, images, targets, run.optimizer, run.scaler, run.params,
                             cfg.clip_grad, ctx)
        with warnings.catch_warnings():  # GradScaler skips the first fp16 steps by design
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            run.scheduler.step()
        run.step += 1
        if not math.isfinite(losses["loss"]):
            run.healthy = False
            raise TrainingError(
                f"the loss became {losses['loss']} at epoch {epoch + 1}, step {run.step}; "
                f"the last good checkpoint is {run.last if run.last.exists() else 'not written yet'}. "
                "Lower the learning rate or train without AMP."
            )
        now = time.perf_counter()
        rate = len(images) * ctx.world_size / max(now - tick, 1e-9)
        run.train_seconds, run.run_steps, tick = run.train_seconds + now - tick, run.run_steps + 1, now
        if cfg.time_limit is not None:
            run.total_steps = run.schedule.total = _fit_to_time(run)
        if ctx.is_main:
            yield StepEvent(epoch + 1, run.step, run.total_steps, losses, run.scheduler.get_last_lr()[0], rate)
        if run.step >= run.total_steps:
            break


def _validate_and_save(run: _Run, epoch: int, should_stop) -> Generator[Event, None, dict[str, Any] | None]:
    """Validate when due, save last.pt (and best.pt when AP improved); the metrics, or None when
    this epoch was not validated."""
    cfg, ctx = run.cfg, run.ctx
    last_epoch = epoch + 1 == cfg.epochs or run.step >= run.total_steps
    improved, metrics, saved = False, None, None
    if run.val_samples and ((epoch + 1) % cfg.val_every == 0 or last_epoch):
        metrics = yield from _validate(
            unwrap(run.ddp_model), run.val_samples, run.model_cfg.class_names, run.device, cfg, ctx, should_stop
        )
        run.history.append({"epoch": epoch + 1, "step": run.step, **_headline(metrics)})
        improved = metrics.get("AP", 0.0) > run.best_ap
        run.best_ap = max(run.best_ap, metrics.get("AP", 0.0))
    if ctx.is_main:
        if last_epoch or metrics is not None or time.perf_counter() - run.saved_at >= SAVE_EVERY_S:
            saved = run.save(run.last, epoch + 1)
        if improved:
            run.save(run.best, epoch + 1)
            run.best_is_ours = True
        yield EpochEvent(epoch + 1, cfg.epochs, metrics or {}, saved, improved, len(run.val_samples))
    dist.barrier(ctx)
    return metrics


class _Cancelled(Exception):
    pass


def _fit_to_time(run: _Run) -> int:
    """The last step that fits the time limit at the speed so far (all ranks agree on it)."""
    ctx = run.ctx
    seconds = float(dist.mean(torch.tensor([run.train_seconds], device=ctx.device or "cpu"), ctx)[0])
    left = run.cfg.time_limit * 60 - seconds
    if left <= 0:
        return run.step
    return min(run.step_cap, run.step + int(left / (seconds / run.run_steps)))


def _train_step(model, images, targets, optimizer, scaler, params, clip_grad, ctx) -> dict[str, float]:
    loss_dict = model(images, targets)
    loss = sum(loss_dict.values())
    optimizer.zero_grad(set_to_none=True)
    if torch.isfinite(loss):
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
        scaler.step(optimizer)
        scaler.update()
    values = torch.stack([loss.detach().float()] + [v.detach().float() for v in loss_dict.values()])
    values = dist.mean(values, ctx)
    names = ["loss", *loss_dict.keys()]
    return {k: float(v) for k, v in zip(names, values.tolist())}


def _validate(model, samples, class_names, device, cfg: TrainConfig, ctx, should_stop) -> Iterator[Event]:
    """COCO AP on the validation samples, each process taking its share; rank 0 gets the metrics."""
    model.eval()
    if ctx.is_main:
        yield InfoEvent(f"validating on {len(samples)} images")
    metrics = validate(
        model, samples, class_names, device=device, score_thresh=cfg.val_score_thresh, mask_thresh=cfg.val_mask_thresh,
        should_stop=should_stop, rank=ctx.rank, world_size=ctx.world_size,
    )
    if should_stop():
        raise _Cancelled
    return metrics


def _headline(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k in ("AP", "AP50", "AP75")}


__all__ = [
    "TrainConfig", "train", "StepEvent", "EpochEvent", "InfoEvent", "DoneEvent", "Event", "LRSchedule", "scaled_warmup",
]
