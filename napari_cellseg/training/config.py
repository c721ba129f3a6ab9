"""``TrainConfig``: everything a training run needs, checked before any data is read; and the
learning-rate plan it implies (``LRSchedule``, ``scaled_warmup``).

Its fields are the ``train`` command's options by name (``cli.commands.train_config``) and are saved
in each checkpoint as ``train_args``; apart from ``engine`` so the config reads on one screen.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..atomic import folder_problem, output_lock
from ..model.network import MIN_SCALED_SIDE, ModelConfig


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
    detections_per_img: int | None = None
    """None: the ``init`` model's, else ``ModelConfig``'s default (likewise ``roi_samples``)."""
    image_scale: float = 1.0
    roi_samples: int | None = None
    augment: str = "standard"
    """``standard`` or ``strong`` (wider zoom, grey and inverted images): see ``transforms.train_augment``."""
    zoom: tuple[float, float] | None = None
    """The range training crops are zoomed in (log-uniform); None: the ``augment`` preset's. Shifted
    up, the network learns nuclei at the larger size ``inference.scale`` segments them at."""
    mosaic: float = 0.0
    """Share of training crops made of four crops of different images (``transforms.mosaic``): nuclei
    cut by a border with another image's texture beyond it, as in a mosaic or a stitched scan."""
    resume: str | None = None
    init: str | None = None
    """Start from these weights (a checkpoint or a built-in model such as ``nuclei``): a new run,
    fine-tuning; it keeps its classes, detections per image and RoI samples unless the dataset has
    more classes or those fields are set; class heads start from its (``checkpoint.init_model``)."""
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
        if self.zoom is not None and not (len(self.zoom) == 2 and 0.1 <= self.zoom[0] <= self.zoom[1] <= 8):
            raise ValueError(f"zoom must be two factors LOW <= HIGH between 0.1 and 8, got {self.zoom}")
        if not 0 <= self.mosaic <= 1:
            raise ValueError(f"mosaic must be a share between 0 and 1, got {self.mosaic}")
        problem = folder_problem(self.out_dir)
        if problem:
            raise ValueError(f"output folder: {problem}")
        model_config(self, ["class1"]).validate()  # detections, image scale...: before any data is read
        if self.crop_size * self.image_scale < MIN_SCALED_SIDE:
            raise ValueError(f"image scale {self.image_scale:g} shrinks the {self.crop_size} px training crops below "
                             f"the {MIN_SCALED_SIDE} px the network needs; raise --image-scale or --crop-size")
        existing = [name for name in ("last.pt", "best.pt") if (Path(self.out_dir) / name).exists()]
        if existing and not (self.overwrite or self.resume):
            raise ValueError(
                f"{self.out_dir} already holds the checkpoints of a run ({', '.join(existing)}); add --overwrite "
                f"to replace them, or --resume {Path(self.out_dir) / 'last.pt'} to continue that run"
            )


@contextlib.contextmanager
def run_folder_lock(cfg: TrainConfig) -> Iterator[None]:
    """One training run per folder: ``<out_dir>/.run.lock`` for the run's length (``output_lock``: a
    second run into the folder is refused at once, a killed run's lock taken over). The config is
    checked again under the lock, as a run that ended meanwhile left checkpoints to protect; a run
    that fails to start leaves no new empty folder behind."""
    folder = Path(cfg.out_dir)
    created = not folder.exists()
    try:
        with output_lock(folder / ".run"):
            cfg.validate()
            yield
    finally:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty


def model_config(cfg: TrainConfig, class_names: list[str]) -> ModelConfig:
    """The network part of the config, for ``class_names``."""
    return ModelConfig(
        arch=cfg.arch,
        class_names=class_names,
        anchor_sizes=tuple(cfg.anchor_sizes),
        detections_per_img=_or_default(cfg.detections_per_img, "detections_per_img"),
        image_scale=cfg.image_scale,
        roi_samples=_or_default(cfg.roi_samples, "roi_samples"),
    )


def _or_default(value: Any, name: str) -> Any:
    """``value``, or the ``ModelConfig`` default of field ``name`` when it is None (not given)."""
    return getattr(ModelConfig, name) if value is None else value


def plain(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain types (lists, not tuples) so checkpoints load with weights_only."""
    d = asdict(cfg)
    d["anchor_sizes"] = list(cfg.anchor_sizes)
    d["zoom"] = None if cfg.zoom is None else [float(z) for z in cfg.zoom]
    return d


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
