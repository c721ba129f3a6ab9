"""Training as a generator of progress events, shared by the CLI, the napari widget and torchrun.

``train(config)`` yields a ``StepEvent`` after every optimisation step, an ``EpochEvent`` after
each validation, and finally a ``DoneEvent``. The consumer cancels by returning True from
``should_stop`` (checked every step) or by closing the generator; either way the current state
is saved as ``last.pt`` first, so nothing trained is lost.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._torch import torch
from . import distributed as dist
from .amp import autocast_dtype
from .atomic import folder_problem
from .checkpoint import check_resumable, init_model, load_checkpoint, model_from_checkpoint, save_checkpoint, unwrap
from .data import CellDataset, check_class_count, collate, dataset_classes, split_samples
from .devices import resolve_device
from .errors import CellsegError, CheckpointError, TrainingError
from .model import MIN_SCALED_SIDE, ModelConfig, build_model
from .pipeline import validate
from .transforms import train_augment


@dataclass
class TrainConfig:
    """Everything a training run needs; saved in each checkpoint as ``train_args``."""

    dataset: str
    out_dir: str = "runs/cellseg"
    arch: str = "resnet50_v2"
    weights: str = "none"
    epochs: int = 50
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    clip_grad: float = 10.0
    amp: bool | None = None
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    crop_size: int = 512
    max_steps: int | None = None
    val_fraction: float = 0.1
    val_limit: int | None = None
    val_every: int = 1
    time_limit: float | None = None
    """Minutes of training steps (validation not counted); the LR schedule is fitted to it."""
    val_score_thresh: float = 0.05
    val_mask_thresh: float = 0.5
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)
    detections_per_img: int = 200
    image_scale: float = 1.0
    roi_samples: int = 512
    augment: str = "standard"
    """``standard`` or ``strong`` (wider zoom, grey and inverted images): see ``transforms.train_augment``."""
    resume: str | None = None
    init: str | None = None
    """Start from these weights (a checkpoint or a built-in model such as ``nuclei``): a new run,
    fine-tuning; class-specific heads are re-made when the dataset has other classes."""
    overwrite: bool = False
    """Replace the checkpoints of an earlier run in ``out_dir``; without it (or ``resume``) that is refused."""

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "crop_size", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if self.time_limit is not None and not (0 < self.time_limit < math.inf):
            raise ValueError(f"time limit must be a positive number of minutes, got {self.time_limit}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max steps must be at least 1, got {self.max_steps}")
        if self.warmup_steps < 0 or self.clip_grad <= 0:
            raise ValueError("warm-up steps cannot be negative and gradient clipping must be positive")
        if self.resume and self.init:
            raise ValueError("choose either resume (continue a run) or init (start a new run from weights), not both")
        if self.workers < 0:
            raise ValueError("workers cannot be negative")
        problem = folder_problem(self.out_dir)
        if problem:
            raise ValueError(f"output folder: {problem}")
        _model_config(self, ["class1"]).validate()  # detections, image scale...: before any data is read
        if self.crop_size * self.image_scale < MIN_SCALED_SIDE:
            raise ValueError(f"image scale {self.image_scale:g} shrinks the {self.crop_size} px training crops below "
                             f"the {MIN_SCALED_SIDE} px the network needs; raise --image-scale or --crop-size")
        existing = [name for name in ("last.pt", "best.pt") if (Path(self.out_dir) / name).exists()]
        if existing and not (self.overwrite or self.resume):
            raise ValueError(
                f"{self.out_dir} already holds the checkpoints of a run ({', '.join(existing)}); add --overwrite "
                f"to replace them, or --resume {Path(self.out_dir) / 'last.pt'} to continue that run"
            )


@dataclass
class StepEvent:
    epoch: int
    step: int
    total_steps: int
    losses: dict[str, float]
    lr: float
    images_per_s: float


@dataclass
class EpochEvent:
    """End of an epoch; ``metrics`` is empty on epochs without validation (see ``val_every``)."""

    epoch: int
    epochs: int
    metrics: dict[str, Any]
    checkpoint: Path
    best: bool


@dataclass
class InfoEvent:
    message: str


@dataclass
class DoneEvent:
    last: Path | None
    best: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    cancelled: bool = False


Event = StepEvent | EpochEvent | InfoEvent | DoneEvent


class LRSchedule:
    """Linear warm-up, then cosine decay to 1% of the base rate at step ``total``.

    An object, not a closure: ``total`` is refitted while a time-limited run learns its speed,
    and LambdaLR saves the object's fields in the checkpoint.
    """

    def __init__(self, warmup: int, total: int) -> None:
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))


def scaled_warmup(warmup_steps: int, total_steps: int) -> int:
    """The warm-up a run of ``total_steps`` gets: at most a tenth of it, so a short run (a quick
    test, a few epochs on a small dataset) reaches its learning rate instead of ending mid warm-up."""
    return min(warmup_steps, total_steps // 10)


def _model_config(cfg: TrainConfig, class_names: list[str]) -> ModelConfig:
    return ModelConfig(
        arch=cfg.arch,
        class_names=class_names,
        anchor_sizes=tuple(cfg.anchor_sizes),
        detections_per_img=cfg.detections_per_img,
        image_scale=cfg.image_scale,
        roi_samples=cfg.roi_samples,
    )


def train(cfg: TrainConfig, should_stop: Callable[[], bool] | None = None) -> Iterator[Event]:
    """Train (or resume) a model; see the module docstring for the events and cancel contract."""
    cfg.validate()
    ctx = dist.setup(cfg.device)
    try:
        yield from _train(cfg, ctx, should_stop or (lambda: False))
    finally:
        dist.teardown(ctx)


def _train(cfg: TrainConfig, ctx: dist.Context, should_stop: Callable[[], bool]) -> Iterator[Event]:
    device = ctx.device or resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)

    train_samples, val_samples = split_samples(Path(cfg.dataset), cfg.val_fraction, cfg.seed)
    classes = dataset_classes(train_samples)
    if not classes:
        raise TrainingError(f"no class masks (classK.tif) found under {cfg.dataset}/train")
    check_class_count(train_samples + val_samples)
    ckpt = load_checkpoint(cfg.resume) if cfg.resume else None
    if ckpt is not None:
        model, model_cfg = model_from_checkpoint(ckpt, cfg.resume)
        if max(classes) > len(model_cfg.class_names):
            raise CheckpointError(
                f"{cfg.resume} was trained for {len(model_cfg.class_names)} classes but {cfg.dataset} has "
                f"class{max(classes)}.tif masks; resume on the dataset it was trained on, or start a new run"
            )
        check_resumable(ckpt, cfg.resume)
    elif cfg.init:
        names = [f"class{k}" for k in range(1, max(classes) + 1)]
        model, model_cfg, remade = init_model(
            cfg.init, names, detections_per_img=cfg.detections_per_img, roi_samples=cfg.roi_samples
        )
        if ctx.is_main:
            heads = f"; its class heads were re-made for {len(names)} classes" if remade else ""
            yield InfoEvent(f"starting from {cfg.init} ({model_cfg.arch}){heads}")
    else:
        model_cfg = _model_config(cfg, [f"class{k}" for k in range(1, max(classes) + 1)])
        model = build_model(model_cfg, cfg.weights)
    model.to(device)
    if ctx.is_main:  # only once the dataset and checkpoint are known good: a failed start leaves nothing
        out.mkdir(parents=True, exist_ok=True)

    amp_dtype, note = autocast_dtype(device, cfg.amp)
    if note and ctx.is_main:
        yield InfoEvent(note)
    model.amp_dtype = amp_dtype
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    dataset = CellDataset(train_samples, augment=train_augment(cfg.crop_size, strong=cfg.augment == "strong"), seed=cfg.seed)
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
            f"{len(train_samples)} training images are too few for batch size {cfg.batch_size}"
            + (f" on {ctx.world_size} processes" if ctx.world_size > 1 else "")
        )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = LRSchedule(scaled_warmup(cfg.warmup_steps, total_steps), total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start_epoch, step, best_ap, history = 0, 0, -1.0, []
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        schedule.total = total_steps  # this run's plan (more epochs, a new time limit) wins
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        best_ap, history = ckpt.get("best_ap", -1.0), list(ckpt.get("history", []))
        if ctx.is_main:
            yield InfoEvent(f"resumed from {cfg.resume} at epoch {start_epoch + 1}, step {step}")
    ddp_model = dist.wrap(model, ctx)

    last, best = out / "last.pt", out / "best.pt"

    def save(path: Path, epoch: int) -> Path:
        nonlocal saved_ok
        saved_ok = False  # a failed save (full disk) is not retried on the way out
        state = dict(epoch=epoch, step=step, best_ap=best_ap, history=history, train_args=_plain(cfg))
        if path == last:  # best.pt holds what inference needs; last.pt also what resume needs
            state.update(optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        save_checkpoint(path, model, model_cfg, **state)
        saved_ok = True
        return path

    saved_ok = True
    best_is_ours = best.exists() and not cfg.overwrite  # an overwritten run's best.pt is not this run's

    epoch = start_epoch
    metrics: dict[str, Any] = {}
    completed, healthy = False, True
    step_cap, train_seconds, run_steps = total_steps, 0.0, 0
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if step >= total_steps:
                break
            sampler.set_epoch(epoch)
            dataset.set_epoch(epoch)
            ddp_model.train()
            tick = time.perf_counter()
            for images, targets in loader:
                if should_stop():
                    raise _Cancelled
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
                losses = _train_step(ddp_model, images, targets, optimizer, scaler, params, cfg.clip_grad, ctx)
                with warnings.catch_warnings():  # GradScaler skips the first fp16 steps by design
                    warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
                    scheduler.step()
                step += 1
                if not math.isfinite(losses["loss"]):
                    healthy = False
                    raise TrainingError(
                        f"the loss became {losses['loss']} at epoch {epoch + 1}, step {step}; "
                        f"the last good checkpoint is {last if last.exists() else 'not written yet'}. "
                        "Lower the learning rate or train without AMP."
                    )
                now = time.perf_counter()
                rate = len(images) * ctx.world_size / max(now - tick, 1e-9)
                train_seconds, run_steps = train_seconds + now - tick, run_steps + 1
                tick = now
                if cfg.time_limit is not None:
                    total_steps = schedule.total = _fit_to_time(step, step_cap, train_seconds, run_steps, cfg, ctx)
                if ctx.is_main:
                    yield StepEvent(epoch + 1, step, total_steps, losses, scheduler.get_last_lr()[0], rate)
                if step >= total_steps:
                    break
            last_epoch = epoch + 1 == cfg.epochs or step >= total_steps
            improved, epoch_metrics = False, {}
            if (epoch + 1) % cfg.val_every == 0 or last_epoch:
                metrics = epoch_metrics = yield from _validate(
                    unwrap(ddp_model), val_samples, model_cfg.class_names, device, cfg, ctx, should_stop
                )
                history.append({"epoch": epoch + 1, "step": step, **_headline(metrics)})
                improved = metrics.get("AP", 0.0) > best_ap
                best_ap = max(best_ap, metrics.get("AP", 0.0))
            if ctx.is_main:
                save(last, epoch + 1)
                if improved:
                    save(best, epoch + 1)
                    best_is_ours = True
                yield EpochEvent(epoch + 1, cfg.epochs, epoch_metrics, last, improved)
            dist.barrier(ctx)
        completed = True
    except _Cancelled:
        pass
    except CellsegError as exc:
        raise _without_worker_traceback(exc) from None
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise TrainingError(
            f"out of memory on {device}: lower the batch size (now {cfg.batch_size}) "
            f"or the crop size (now {cfg.crop_size})"
        ) from None
    finally:
        if not completed and healthy and saved_ok and ctx.is_main and step > 0:
            save(last, epoch)  # cancelled or closed: keep what was trained, resume redoes this epoch
    if ctx.is_main:
        yield DoneEvent(last if last.exists() else None, best if best_is_ours and best.exists() else None,
                        metrics, not completed)


class _Cancelled(Exception):
    pass


def _fit_to_time(step: int, cap: int, seconds: float, run_steps: int, cfg: TrainConfig, ctx) -> int:
    """The last step that fits the time limit at the speed so far (all ranks agree on it)."""
    seconds = float(dist.mean(torch.tensor([seconds], device=ctx.device or "cpu"), ctx)[0])
    left = cfg.time_limit * 60 - seconds
    if left <= 0:
        return step
    return min(cap, step + int(left / (seconds / run_steps)))


def _without_worker_traceback(exc: CellsegError) -> CellsegError:
    """The error as the user should read it: a DataLoader worker re-raises a bad file's one line
    prefixed with the worker's whole traceback, whose last line is ``module.Class: message``."""
    text = str(exc)
    if "Original Traceback" not in text:
        return exc
    last = text.strip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return type(exc)(last[len(prefix):] if last.startswith(prefix) else last)


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
    if cfg.val_limit is not None:
        samples = samples[: cfg.val_limit]
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


def _plain(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain types (lists, not tuples) so checkpoints load with weights_only."""
    d = asdict(cfg)
    d["anchor_sizes"] = list(cfg.anchor_sizes)
    return d


__all__ = ["TrainConfig", "train", "StepEvent", "EpochEvent", "InfoEvent", "DoneEvent", "Event", "LRSchedule", "scaled_warmup"]
